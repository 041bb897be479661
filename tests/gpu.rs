//! GPU checkout (feature `cuda`). The kernels are compiled with NVRTC wherever its library
//! loads (the PyPI wheel nvidia-cuda-nvrtc provides it without a GPU); the tests that run them
//! need a CUDA device and say so when there is none. With `SPARSE_REQUIRE_GPU=1` (set by
//! scripts/gpu-run.sh on the GPU machine) a missing NVRTC or device fails the tests instead.
#![cfg(feature = "cuda")]

mod common;

use sparse::gpu::{kernels, Device, Slots};

/// Says why a test cannot run here: a notice, or a failure where a GPU is required.
fn skipped(why: &str) {
    if std::env::var_os("SPARSE_REQUIRE_GPU").is_some_and(|v| v == "1") {
        panic!("{why}, and SPARSE_REQUIRE_GPU=1");
    }
    eprintln!("{why}: test skipped");
}

#[test]
fn every_kernel_compiles_with_nvrtc() {
    if !kernels::nvrtc_present() {
        skipped("NVRTC not found (put libnvrtc on LD_LIBRARY_PATH)");
        return;
    }
    for source in kernels::SOURCES {
        for (major, minor) in [(7, 5), (8, 0), (9, 0)] {
            let ptx = kernels::compile(&source, major, minor)
                .unwrap_or_else(|e| panic!("{}, compute_{major}{minor}: {e}", source.file));
            let text = ptx.to_src();
            for f in source.functions {
                assert!(
                    text.contains(&format!(".entry {f}")),
                    "{}, compute_{major}{minor} lacks {f}",
                    source.file
                );
            }
        }
    }
}

/// The device to test on, or none (with a notice) where there is no usable CUDA device.
fn device() -> Option<Device> {
    match Device::open(0) {
        Ok(d) => Some(d),
        Err(e) => {
            skipped(&format!("no CUDA device ({e})"));
            None
        }
    }
}

#[test]
fn opening_without_a_driver_is_an_error_not_a_panic() {
    // Either a device opens, or a clear error names what is missing.
    if let Err(e) = Device::open(0) {
        assert!(!e.to_string().is_empty());
    }
    let _ = device();
}

/// Every transform, element width and context size, on chunks of awkward lengths (a partial
/// last tile, fewer elements than a warp), several jobs per batch, planes aligned or not, with
/// the default grouped tiles and with tiles of 100 elements (walks that start mid-warp): the
/// device's result equals the host decoder's, byte for byte.
#[test]
fn kernels_apply_every_transform_like_the_host() {
    use sparse::codec::chunk::{decode, decode_planes, encode, Transform};
    use sparse::gpu::{Job, Op};
    let Some(dev) = device() else { return };
    let mut rng = common::Lcg::new(7);
    let mut cases = Vec::new();
    for width in [1usize, 2, 4, 8] {
        let mut transforms = vec![Transform::Full, Transform::Xor, Transform::Sub];
        if width > 1 {
            for bits in [1u8, 5, 8, 10, 11, 12, 15] {
                transforms.push(Transform::SubCtx { bits });
            }
        }
        for t in transforms {
            for elements in [1usize, 31, 33, 16384, 40000, 3 * 16384 + 8] {
                let dtype = match width {
                    1 => "U8",
                    2 => "BF16",
                    4 => "F32",
                    _ => "F64",
                };
                let parent = common::Tensor::random("p", dtype, &[elements as u64], rng.next_u64()).data;
                let data = common::finetune_bytes(&parent, width, 0.5, rng.next_u64());
                cases.push((t, width, parent, data));
            }
        }
    }
    let mut stage = dev.stage(64 << 20).unwrap();
    for tile in [dev.grouped_tile(), 100] {
        dev.set_grouped_tile(tile);
        for (b, batch) in cases.chunks(9).enumerate() {
            let mut jobs = Vec::new();
            let mut buffers = Vec::new();
            let host = stage.host().unwrap();
            let mut at = 0usize;
            for (t, width, parent, data) in batch {
                // Every other batch's planes start 16-byte aligned (the kernels' wide loads),
                // the rest wherever the previous job's end.
                if b % 2 == 0 {
                    at = at.next_multiple_of(16);
                }
                let coded = encode(*t, data, Some(parent), *width, 3);
                let got = decode_planes(&coded, *width, &mut host[at..at + data.len()]).unwrap();
                assert_eq!(got, (*t, vec![data.len()]), "one block: chunks here are below a block");
                let p = dev.alloc(parent.len()).unwrap();
                dev.write(&p, 0, parent).unwrap();
                let out = dev.alloc(data.len()).unwrap();
                let op = match t {
                    Transform::Full => Op::Full,
                    Transform::Xor => Op::Xor,
                    Transform::Sub => Op::Sub,
                    Transform::SubCtx { bits } => Op::SubCtx { bits: *bits },
                };
                jobs.push(Job {
                    op,
                    width: *width,
                    len: data.len(),
                    out: out.addr(0),
                    parent: p.addr(0),
                    planes: at,
                });
                at += data.len();
                buffers.push((p, out));
            }
            // Each batch applied without kept slots, then twice with every slot kept (the
            // second time from the kept ones), then with a budget for about half of them.
            // Slots live no longer than the parents they were counted from.
            // `before` jobs are submitted first with the same slots (then the batch has kept
            // and new slots side by side).
            let mut check = |mut slots: Option<&mut Slots>, before: usize, how: &str| {
                for (_, out) in &buffers {
                    dev.write(out, 0, &vec![0; out.len()]).unwrap();
                }
                if before > 0 {
                    dev.submit(&mut stage, at, &jobs[..before], slots.as_deref_mut())
                        .unwrap();
                    dev.synchronize().unwrap();
                }
                dev.submit(&mut stage, at, &jobs, slots).unwrap();
                let timing = dev.synchronize().unwrap();
                for ((t, width, parent, data), (_, out)) in batch.iter().zip(&buffers) {
                    let mut back = vec![0; data.len()];
                    dev.read(out, 0, &mut back).unwrap();
                    let mut host_decoded = vec![0; data.len()];
                    decode(
                        &encode(*t, data, Some(parent), *width, 3),
                        Some(parent),
                        *width,
                        &mut host_decoded,
                    )
                    .unwrap();
                    assert_eq!(host_decoded, *data);
                    assert!(
                        back == *data,
                        "{t:?}, width {width}, {} bytes, grouped tiles of {tile}, {how}: the device's result differs",
                        data.len()
                    );
                }
                (timing.counted, timing.reused)
            };
            let grouped = batch
                .iter()
                .filter(|(t, ..)| matches!(t, Transform::SubCtx { .. }))
                .count();
            assert_eq!(check(None, 0, "no slots kept"), (grouped, 0));
            let keepable = batch
                .iter()
                .filter(|(t, ..)| matches!(t, Transform::SubCtx { bits } if *bits <= 11))
                .count();
            let mut all = Slots::new(u64::MAX);
            assert_eq!(check(Some(&mut all), 0, "slots counted and kept"), (grouped, 0));
            assert_eq!(all.len(), keepable);
            let held = all.bytes();
            assert_eq!(
                check(Some(&mut all), 0, "slots from the kept ones"),
                (grouped - keepable, keepable)
            );
            assert_eq!((all.len(), all.bytes()), (keepable, held));
            let mut half = Slots::new(held / 2);
            let _ = check(Some(&mut half), 0, "half the slots kept");
            let _ = check(Some(&mut half), 0, "half the slots from the kept ones");
            assert!(half.bytes() <= held / 2);
            // Slots kept for the first half of the jobs, then a batch of them all: kept and
            // new slots side by side.
            let mut mixed = Slots::new(u64::MAX);
            let kept_before = batch[..jobs.len() / 2]
                .iter()
                .filter(|(t, ..)| matches!(t, Transform::SubCtx { bits } if *bits <= 11))
                .count();
            assert_eq!(
                check(
                    Some(&mut mixed),
                    jobs.len() / 2,
                    "slots kept for half the jobs, the rest counted"
                ),
                (grouped - kept_before, kept_before)
            );
            assert_eq!(mixed.len(), keepable);
        }
    }
}

/// A family with every dtype, odd shapes, an empty tensor, unchanged and unrelated tensors, a
/// chain of two fine-tunes and chunks small enough to cut tensors mid-element-run: every
/// revision checked out on the device equals the CPU checkout, file by file; without -o it is
/// rebuilt and checked in device memory.
#[test]
fn device_checkout_equals_cpu_checkout() {
    if device().is_none() {
        return;
    }
    let sb = common::Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 4096);
    let dtypes = [
        "F32", "F64", "BF16", "F16", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL",
    ];
    let mut base: Vec<common::Tensor> = dtypes
        .iter()
        .enumerate()
        .map(|(i, d)| common::Tensor::random(&format!("t{i}.{d}"), d, &[37, 29 + i as u64], i as u64))
        .collect();
    base.push(common::Tensor::random("empty", "F32", &[0, 8], 99));
    base.push(common::Tensor::random("kept", "BF16", &[3000], 98));
    let tune = |from: &[common::Tensor], seed: u64| -> Vec<common::Tensor> {
        from.iter()
            .map(|t| match t.name.as_str() {
                "kept" => t.clone(),
                "t0.F32" if seed == 2 => common::Tensor::random(&t.name, "F32", &t.shape, 1234),
                _ => t.finetuned(0.3, seed),
            })
            .collect()
    };
    let ft1 = tune(&base, 1);
    let ft2 = tune(&ft1, 2);
    let mut revs = Vec::new();
    for (name, tensors, parent) in [
        ("base", &base, None),
        ("ft1", &ft1, Some("base")),
        ("ft2", &ft2, Some("ft1")),
    ] {
        // A second file whose tensor names repeat the first's with other shapes.
        let other: Vec<common::Tensor> = tensors
            .iter()
            .take(3)
            .map(|t| common::Tensor::random(&t.name, "F32", &[5, 7], t.data.len() as u64))
            .collect();
        sb.write(
            &format!("{name}/other.safetensors"),
            &common::safetensors_bytes(&other, &[]),
        );
        let file = sb.write(
            &format!("{name}/model.safetensors"),
            &common::safetensors_bytes(tensors, &[]),
        );
        sb.write(&format!("{name}/config.json"), b"{\"hidden\": 8}");
        sb.add_commit(file.parent().unwrap(), name, parent, name);
        revs.push(name);
    }
    for rev in revs {
        let cpu = sb.checkout(rev, &format!("cpu-{rev}"));
        let gpu = sb.join(&format!("gpu-{rev}"));
        let run = sb.run(&["checkout", rev, "--device", "cuda", "-o", gpu.to_str().unwrap()]);
        run.ok();
        assert!(run.stdout.contains("every chunk verified"), "{}", run.stdout);
        assert_eq!(common::tree_hashes(&gpu), common::tree_hashes(&cpu), "{rev}");
        let report = sb.json(&["checkout", rev, "--device", "cuda:0"]);
        assert_eq!(report["verified"], true, "{report}");
        assert_eq!(report["tensors"], base.len() + 3, "{report}");
    }
}

/// A resident base: fine-tunes swap in (down a chain too) and out again, the base's memory
/// untouched; what is on the device always equals the CPU checkout.
#[test]
fn resident_base_swaps_fine_tunes_in_and_out() {
    let Some(dev) = device() else { return };
    let sb = common::Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 8192);
    let base = common::small_model(1);
    let ft1 = common::small_finetune(2);
    let ft2: Vec<_> = ft1.iter().map(|t| t.finetuned(0.2, 3)).collect();
    for (name, tensors, parent) in [
        ("base", &base, None),
        ("ft1", &ft1, Some("base")),
        ("ft2", &ft2, Some("ft1")),
    ] {
        let file = sb.write(&format!("{name}.safetensors"), &common::safetensors_bytes(tensors, &[]));
        sb.add_commit(&file, name, parent, name);
    }
    let repo = sparse::api::Repository::discover(sb.path()).unwrap();
    let mut resident = repo.resident("base", &dev).unwrap();
    let on_device = |model: &sparse::model::device::DeviceModel, name: &str| -> Vec<u8> {
        let t = model.named(name).expect("one tensor of that name");
        let mut out = vec![0; t.buffer.len()];
        dev.read(&t.buffer, 0, &mut out).unwrap();
        out
    };
    let check = |model: &sparse::model::device::DeviceModel, expected: &[common::Tensor]| {
        for t in expected {
            assert!(on_device(model, &t.name) == t.data, "{}", t.name);
        }
    };
    check(resident.model(), &base);
    for _ in 0..2 {
        let swap = resident.swap_in(&repo, "ft1", true).unwrap();
        assert!(swap.verified);
        check(resident.model(), &ft1);
        check(resident.base(), &base);
        resident.swap_in(&repo, "ft2", false).unwrap();
        check(resident.model(), &ft2);
        resident.swap_out();
        check(resident.model(), &base);
    }
}

/// `t` with `delta` added to every float element: the differences of its bit patterns follow
/// each element's exponent, so the codec groups them (`subctx`).
fn shifted(t: &common::Tensor, delta: f32) -> common::Tensor {
    let data = match t.dtype.as_str() {
        "F32" => t
            .data
            .chunks(4)
            .flat_map(|c| (f32::from_le_bytes(c.try_into().unwrap()) + delta).to_le_bytes())
            .collect(),
        "BF16" => t
            .data
            .chunks(2)
            .flat_map(|c| {
                half::bf16::from_f32(half::bf16::from_le_bytes(c.try_into().unwrap()).to_f32() + delta).to_le_bytes()
            })
            .collect(),
        other => panic!("no shift for {other}"),
    };
    common::Tensor { data, ..t.clone() }
}

/// A resident base keeps the slots of its grouped chunks: the first swap counts them, later
/// swaps (of the same fine-tune, another one, one down a chain) take them from there; what
/// the budget could not keep is counted again each time; with no budget or other tiles, every
/// swap counts afresh. The model on the device always equals its tensors.
#[test]
fn resident_base_keeps_the_slots_of_its_grouped_chunks() {
    use common::Tensor;
    let Some(dev) = device() else { return };
    let sb = common::Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 16384);
    let base = vec![
        Tensor::random("w", "F32", &[512, 40], 1),
        Tensor::random("v", "BF16", &[300, 70], 2),
    ];
    let ft: Vec<Tensor> = base.iter().map(|t| shifted(t, 1e-4)).collect();
    let other: Vec<Tensor> = base.iter().map(|t| shifted(t, -3e-4)).collect();
    let next: Vec<Tensor> = ft.iter().map(|t| t.finetuned(0.3, 9)).collect();
    for (name, tensors, parent) in [
        ("base", &base, None),
        ("ft", &ft, Some("base")),
        ("other", &other, Some("base")),
        ("next", &next, Some("ft")),
    ] {
        let file = sb.write(&format!("{name}.safetensors"), &common::safetensors_bytes(tensors, &[]));
        sb.add_commit(&file, name, parent, name);
    }
    let show = sb.json(&["show", "ft"]);
    for t in show["tensors"].as_array().unwrap() {
        assert_eq!(t["codec"], "subctx", "the fixture groups every chunk: {t}");
    }
    let repo = sparse::api::Repository::discover(sb.path()).unwrap();
    let mut resident = repo.resident("base", &dev).unwrap();
    let check = |resident: &sparse::api::device::Resident, expected: &[Tensor], what: &str| {
        for t in expected {
            let on = resident.model().named(&t.name).expect("one tensor of that name");
            let mut back = vec![0; on.buffer.len()];
            dev.read(&on.buffer, 0, &mut back).unwrap();
            assert!(back == t.data, "{what}: {}", t.name);
        }
    };
    assert!(resident.slots().is_empty());
    let first = resident.swap_in(&repo, "ft", false).unwrap();
    check(&resident, &ft, "ft, slots counted");
    let grouped = first.slots_counted;
    let kept = resident.slots().len();
    assert_eq!(first.slots_reused, 0);
    // The f32 tensor's blocks, grouped by more context bits than the bf16's, take more slots
    // than the budget holds.
    assert!(
        0 < kept && kept < grouped,
        "the default budget, an eighth of this base, keeps some of its {grouped} blocks' slots, not all: {kept}"
    );
    assert!(resident.slots().bytes() <= resident.slots().budget());
    for (rev, tensors) in [("ft", &ft), ("other", &other), ("next", &next), ("ft", &ft)] {
        resident.swap_out();
        let swap = resident.swap_in(&repo, rev, true).unwrap();
        assert!(swap.verified);
        check(&resident, tensors, rev);
        if rev == "ft" {
            assert_eq!((swap.slots_counted, swap.slots_reused), (grouped - kept, kept), "{rev}");
        }
    }
    assert!(resident.slots().len() >= kept);
    // Tiles of 100 elements: many tiles per block, every slot kept (the default budget, an
    // eighth of this small base, would hold none of them).
    dev.set_grouped_tile(100);
    resident.set_slots_budget(u64::MAX);
    for round in 0..2 {
        let swap = resident.swap_in(&repo, "ft", true).unwrap();
        check(&resident, &ft, &format!("ft, tiles of 100, round {round}"));
        let expected = if round == 0 { (grouped, 0) } else { (0, grouped) };
        assert_eq!((swap.slots_counted, swap.slots_reused), expected, "round {round}");
    }
    resident.set_slots_budget(0);
    for (rev, tensors) in [("ft", &ft), ("next", &next)] {
        resident.swap_in(&repo, rev, true).unwrap();
        check(&resident, tensors, &format!("{rev}, no slots kept"));
    }
    assert!(resident.slots().is_empty());
    resident.swap_out();
    check(&resident, &base, "the base, after every swap");
}

/// BLAKE3 on the device equals `blake3::hash` of the same bytes: empty ranges, the edges of
/// blocks (64 bytes) and chunks (1024), several MiB, unaligned addresses, many ranges a call.
#[test]
fn device_blake3_equals_the_host() {
    let Some(dev) = device() else { return };
    let mut rng = common::Lcg::new(11);
    let lens = [
        0usize,
        1,
        63,
        64,
        65,
        1023,
        1024,
        1025,
        2048,
        3073,
        8192,
        100_000,
        (4 << 20) + 17,
        7 * 1024 + 5,
    ];
    let mut at = 0;
    let mut ranges = Vec::new();
    for (i, len) in lens.iter().enumerate() {
        at += i % 3;
        ranges.push((at, *len));
        at += len;
    }
    let bytes: Vec<u8> = (0..at).map(|_| rng.next_u64() as u8).collect();
    let buffer = dev.alloc(bytes.len()).unwrap();
    dev.write(&buffer, 0, &bytes).unwrap();
    let on_device: Vec<(u64, usize)> = ranges.iter().map(|&(at, len)| (buffer.addr(at as u64), len)).collect();
    let expected: Vec<[u8; 32]> = ranges
        .iter()
        .map(|&(at, len)| *blake3::hash(&bytes[at..at + len]).as_bytes())
        .collect();
    assert_eq!(dev.blake3(&on_device).unwrap(), expected);
    for (range, hash) in on_device.iter().zip(&expected) {
        assert_eq!(dev.blake3(&[*range]).unwrap(), vec![*hash], "{range:?} alone");
    }
    assert!(dev.blake3(&[]).unwrap().is_empty());
}

/// Lossy revisions (int8, low rank) and a lossless one on top of a lossy one rebuild on the
/// device to the bytes the CPU rebuilds: every float format, subnormal halves, NaNs and
/// infinities in the parent, chunks that cut matrix rows; in a checkout and in swaps.
#[test]
fn lossy_revisions_rebuild_on_the_device_like_the_cpu() {
    use common::Tensor;
    let Some(dev) = device() else { return };
    let sb = common::Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 1000);
    let mut special = Tensor::random("h", "F16", &[33, 17], 3);
    // A quiet NaN with a payload, a signalling NaN, an infinity, the largest subnormal.
    for (i, bits) in [0x7e01u16, 0xfd00, 0x7c00, 0x03ff].iter().enumerate() {
        special.data[2 * i..2 * i + 2].copy_from_slice(&bits.to_le_bytes());
    }
    let base = vec![
        Tensor::random("w", "F32", &[64, 48], 1),
        Tensor::random("v", "BF16", &[40, 3, 8], 2),
        special,
        Tensor::random("norm", "F32", &[48], 4),
        Tensor::random("ids", "I64", &[16, 2], 5),
    ];
    let ft: Vec<Tensor> = base.iter().map(|t| t.finetuned(0.5, 6)).collect();
    let ft2: Vec<Tensor> = ft.iter().map(|t| t.finetuned(0.5, 7)).collect();
    let write = |name: &str, t: &[Tensor]| sb.write(&format!("{name}.safetensors"), &common::safetensors_bytes(t, &[]));
    sb.add_commit(&write("base", &base), "base", None, "base");
    let ft_file = write("ft", &ft);
    let ft2_file = write("ft2", &ft2);
    let add = |source: &std::path::Path, name: &str, base: &str, extra: &[&str]| {
        let mut args = vec!["add", source.to_str().unwrap(), "--name", name, "--base", base];
        args.extend_from_slice(extra);
        sb.run(&args).ok();
        sb.run(&["commit", "-m", name]).ok();
    };
    add(&ft_file, "int8", "base", &["--lossy", "int8"]);
    add(&ft_file, "low", "base", &["--lossy", "lowrank", "--rank", "3"]);
    add(&ft2_file, "next", "low", &[]);
    // A target that buys no rank: every matrix comes back as its parent's bytes.
    let within = [
        "add",
        ft_file.to_str().unwrap(),
        "--name",
        "none",
        "--base",
        "base",
        "--lossy",
        "lowrank",
        "--target-size",
    ];
    let exact = sb.json(&[&within[..], &["50%"]].concat())["ranks"]["exact"].to_string();
    add(
        &ft_file,
        "none",
        "base",
        &["--lossy", "lowrank", "--target-size", &exact],
    );
    let revs = ["int8", "low", "next", "none"];
    for rev in revs {
        let cpu = sb.checkout(rev, &format!("cpu-{rev}"));
        let gpu = sb.join(&format!("gpu-{rev}"));
        let run = sb.run(&["checkout", rev, "--device", "cuda", "-o", gpu.to_str().unwrap()]);
        run.ok();
        assert_eq!(run.stdout.contains("LOSSY"), rev != "next", "{}", run.stdout);
        assert_eq!(common::tree_hashes(&gpu), common::tree_hashes(&cpu), "{rev}");
        let report = sb.json(&["checkout", rev, "--device", "cuda"]);
        assert_eq!(report["verified"], true, "{report}");
    }
    let repo = sparse::api::Repository::discover(sb.path()).unwrap();
    let mut resident = repo.resident("base", &dev).unwrap();
    for rev in revs {
        let swap = resident.swap_in(&repo, rev, true).unwrap();
        assert!(swap.verified, "{rev}");
    }
}
