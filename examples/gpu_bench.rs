//! GPU checkout benchmark (feature `cuda`; run by benches/gpu.sh on a machine with a GPU).
//!
//! ```text
//! gpu_bench --store DIR --base REV --finetune REV [--lossy REV] [--runs 5] [--cpu-out DIR]
//!           [--grouped-tiles N,N,...]
//! ```
//!
//! On one device, in one run, medians of `--runs` (min–max):
//! - the floors: pinned host-to-device copy and device-to-device copy of the fine-tune's size;
//! - swap of the fine-tune on a resident base: the device-side apply (kernel time), the whole
//!   swap from the store (host page cache), and the same with every chunk hashed on the device
//!   and checked (the base keeps its grouped chunks' slots from the first swap on); the first
//!   swap, which counts them; the device-side apply with no slots kept, at the default tile
//!   size and at each of `--grouped-tiles`; with `--lossy`, the swap of that (lossy) revision
//!   of the fine-tune;
//! - checkout of the fine-tune to device memory with no base resident (rebuilt down the chain),
//!   checked;
//! - checkout of the fine-tune on the CPU into `--cpu-out` (the base's copy known, as after a
//!   checkout of the base), for comparison.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use sparse::api::Repository;
use sparse::gpu::Device;

type Error = Box<dyn std::error::Error>;

struct Args {
    store: PathBuf,
    base: String,
    finetune: String,
    runs: usize,
    cpu_out: Option<PathBuf>,
    lossy: Option<String>,
    grouped_tiles: Vec<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        store: PathBuf::from("."),
        base: String::new(),
        finetune: String::new(),
        runs: 5,
        cpu_out: None,
        lossy: None,
        grouped_tiles: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--store" => args.store = value()?.into(),
            "--base" => args.base = value()?,
            "--finetune" => args.finetune = value()?,
            "--runs" => args.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--cpu-out" => args.cpu_out = Some(value()?.into()),
            "--lossy" => args.lossy = Some(value()?),
            "--grouped-tiles" => {
                args.grouped_tiles = value()?
                    .split(',')
                    .map(|n| n.parse().map_err(|e| format!("--grouped-tiles: {n}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if args.base.is_empty() || args.finetune.is_empty() {
        return Err(
            "usage: gpu_bench --store DIR --base REV --finetune REV [--lossy REV] [--runs N] [--cpu-out DIR]".into(),
        );
    }
    Ok(args)
}

/// Median, min and max of `xs` in seconds.
fn stats(xs: &[f64]) -> String {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let med = match v.len() {
        0 => return "-".into(),
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    format!("{:.4} ({:.4}–{:.4})", med, v[0], v[v.len() - 1])
}

fn time(f: impl FnOnce() -> Result<(), Error>) -> Result<f64, Error> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

fn run(args: &Args) -> Result<(), Error> {
    let repo = Repository::discover(&args.store)?;
    let device = Device::open(0)?;
    let runs = args.runs.max(1);
    println!("device: {}", device.describe());

    // The fine-tune once, to learn its size and warm everything up.
    let (model, first) = repo.checkout_device(&args.finetune, &device, None, false)?;
    let bytes = model.bytes() as usize;
    drop(model);
    println!(
        "fine-tune {}: {} tensors, {:.3} GB; first device checkout {:.3} s",
        args.finetune,
        first.tensors,
        bytes as f64 / 1e9,
        first.seconds.rebuild + first.seconds.verify
    );

    // Floors: pinned host-to-device and device-to-device copies of `bytes`.
    let mut stage = device.stage(256 << 20)?;
    let piece = stage.capacity();
    let target = device.alloc(piece)?;
    let (mut h2d, mut d2d) = (Vec::new(), Vec::new());
    {
        let whole_a = device.alloc(bytes)?;
        let whole_b = device.alloc(bytes)?;
        for _ in 0..runs {
            let host = stage.host()?;
            let mut left = bytes;
            let t = time(|| {
                while left > 0 {
                    let n = left.min(piece);
                    device.write(&target, 0, &host[..n])?;
                    left -= n;
                }
                Ok(())
            })?;
            h2d.push(t);
            let t = time(|| {
                device.copy(&whole_a, &whole_b, bytes)?;
                device.synchronize()?;
                Ok(())
            })?;
            d2d.push(t);
        }
    }
    drop(target);
    drop(stage);

    // Resident base, swaps.
    let mut resident = repo.resident(&args.base, &device)?;
    println!(
        "resident base {}: loaded in {:.3} s",
        args.base,
        resident.loaded.seconds.rebuild + resident.loaded.seconds.verify
    );
    let (mut apply, mut swap, mut swap_checked, mut swap_out) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut decode, mut wait, mut count, mut scan) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // The first swap allocates the second set of buffers, and counts the slots of the grouped
    // chunks that the base keeps for every later swap.
    let first = resident.swap_in(&repo, &args.finetune, false)?;
    let budget = resident.slots().budget();
    let (kept_blocks, kept_bytes) = (resident.slots().len(), resident.slots().bytes());
    for _ in 0..runs {
        swap_out.push(time(|| {
            resident.swap_out();
            Ok(())
        })?);
        let s = resident.swap_in(&repo, &args.finetune, false)?;
        apply.push(s.seconds.kernels);
        count.push(s.seconds.count);
        scan.push(s.seconds.scan);
        swap.push(s.seconds.rebuild);
        decode.push(s.seconds.decode);
        wait.push(s.seconds.wait);
        resident.swap_out();
        let s = resident.swap_in(&repo, &args.finetune, true)?;
        swap_checked.push(s.seconds.rebuild + s.seconds.verify);
    }
    // The apply with no slots kept (every swap counts its grouped chunks), and with other
    // grouped tiles, counted each time too: (tile, kernels, count, scan).
    let mut by_tile = Vec::new();
    let default_tile = device.grouped_tile();
    resident.set_slots_budget(0);
    for &tile in std::iter::once(&default_tile).chain(&args.grouped_tiles) {
        device.set_grouped_tile(tile);
        // One unmeasured swap sizes the counts for this tile.
        resident.swap_out();
        resident.swap_in(&repo, &args.finetune, false)?;
        let (mut k, mut c, mut s) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            resident.swap_out();
            let r = resident.swap_in(&repo, &args.finetune, false)?;
            k.push(r.seconds.kernels);
            c.push(r.seconds.count);
            s.push(r.seconds.scan);
        }
        by_tile.push((tile, k, c, s));
    }
    device.set_grouped_tile(default_tile);
    resident.set_slots_budget(budget);
    let (mut lossy_apply, mut lossy_swap) = (Vec::new(), Vec::new());
    if let Some(rev) = &args.lossy {
        resident.swap_in(&repo, rev, true)?;
        for _ in 0..runs {
            resident.swap_out();
            let s = resident.swap_in(&repo, rev, false)?;
            lossy_apply.push(s.seconds.kernels);
            lossy_swap.push(s.seconds.rebuild);
        }
    }
    drop(resident);

    // Checkout to the device, no base resident.
    let mut to_device = Vec::new();
    for _ in 0..runs {
        let (model, r) = repo.checkout_device(&args.finetune, &device, None, false)?;
        drop(model);
        to_device.push(r.seconds.rebuild + r.seconds.verify);
    }

    // The CPU checkout, for comparison.
    let mut cpu = Vec::new();
    if let Some(dir) = &args.cpu_out {
        let base_dir = dir.join("base");
        repo.checkout(&args.base, &base_dir, true, None, &|_, _| {})?;
        for _ in 0..runs {
            let out = dir.join("finetune");
            let _ = std::fs::remove_dir_all(&out);
            cpu.push(time(|| {
                repo.checkout(&args.finetune, &out, true, None, &|_, _| {})?;
                Ok(())
            })?);
        }
    }

    let gbps = |xs: &[f64]| {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        bytes as f64 / v[v.len() / 2] / 1e9
    };
    println!();
    println!(
        "| what ({:.2} GB bf16 fine-tune, {} runs) | seconds: median (min–max) |",
        bytes as f64 / 1e9,
        runs
    );
    println!("|---|---|");
    println!(
        "| floor: pinned host-to-device copy ({:.1} GB/s) | {} |",
        gbps(&h2d),
        stats(&h2d)
    );
    println!(
        "| floor: device-to-device copy ({:.0} GB/s) | {} |",
        gbps(&d2d),
        stats(&d2d)
    );
    println!(
        "| swap on the resident base: device-side apply (kernels) | {} |",
        stats(&apply)
    );
    println!("| of which counting keys (ctx_count) | {} |", stats(&count));
    println!("| of which scanning the counts (ctx_scan) | {} |", stats(&scan));
    println!(
        "| the first swap, which counts the slots the base keeps ({kept_blocks} blocks, {:.1} MB of a {:.1} MB budget): all / ctx_count / ctx_scan | {:.4} / {:.4} / {:.4} (once) |",
        kept_bytes as f64 / 1e6,
        budget as f64 / 1e6,
        first.seconds.kernels,
        first.seconds.count,
        first.seconds.scan
    );
    for (tile, k, c, s) in &by_tile {
        println!(
            "| device-side apply, no slots kept, grouped tiles of {tile} elements: all / ctx_count / ctx_scan | {} / {} / {} |",
            stats(k),
            stats(c),
            stats(s)
        );
    }
    println!(
        "| swap on the resident base: whole swap from the store | {} |",
        stats(&swap)
    );
    println!("| of which the host decoding planes (all cores) | {} |", stats(&decode));
    println!("| of which the host waiting for the device | {} |", stats(&wait));
    println!(
        "| swap on the resident base, every chunk hashed on the device and checked | {} |",
        stats(&swap_checked)
    );
    if let Some(rev) = &args.lossy {
        println!(
            "| lossy swap ({rev}): device-side apply (kernels) | {} |",
            stats(&lossy_apply)
        );
        println!(
            "| lossy swap ({rev}): whole swap from the store | {} |",
            stats(&lossy_swap)
        );
    }
    println!("| swap out (back to the base) | {} |", stats(&swap_out));
    println!(
        "| checkout to device memory, no base resident, checked | {} |",
        stats(&to_device)
    );
    if !cpu.is_empty() {
        println!(
            "| checkout on the CPU to a file (base's copy known) | {} |",
            stats(&cpu)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
