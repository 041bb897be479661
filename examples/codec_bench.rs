//! Times the lossless codec on a pair of safetensors files, on one core, in one process: no
//! store, no files written, no page faults of a fresh process, so two builds can be compared to
//! a few percent where `sparse add` and `checkout` swing by a third on a shared VM.
//!
//!     cargo run --release --example codec_bench -- BASE FT [RUNS]
//!
//! Tensors of FT are paired by name with BASE's tensors of the same dtype and byte length, and
//! cut into chunks of the chunk size `add` uses. Every pass codes each chunk against its parent
//! with `codec::encode_best` at `add`'s zstd level (both honour `SPARSE_CHUNK_SIZE` and
//! `SPARSE_ZSTD_LEVEL` as `add` does), then decodes the coded chunks back (what `checkout`
//! does, but the hashes); then every decoded chunk is checked against FT. Prints the minimum and
//! median of RUNS passes (default 7) of each, and the bytes coded.

use std::time::Instant;

use sparse::codec::{decode, encode_best};
use sparse::model::safetensors::plane_width;
use sparse::model::Options;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: codec_bench BASE FT [RUNS]");
        std::process::exit(2);
    }
    let read = |p: &str| std::fs::read(p).unwrap_or_else(|e| panic!("reading {p}: {e}"));
    let (base, ft) = (read(&args[1]), read(&args[2]));
    let runs: usize = args.get(3).map_or(7, |r| r.parse().expect("RUNS: a count"));
    assert!(runs > 0, "RUNS: at least one pass");
    let opts = Options::from_env();
    let chunk = opts.chunk_size as usize;

    let tensors = |bytes: &[u8], path: &str| {
        let (header, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .unwrap_or_else(|e| panic!("{path}: not a safetensors file: {e}"));
        let start = 8 + header;
        let mut all: Vec<(String, safetensors::Dtype, usize, usize)> = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let (lo, hi) = info.data_offsets;
                (name, info.dtype, start + lo, start + hi)
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    };
    let parents = tensors(&base, &args[1]);
    // (chunk of FT, the same bytes of its parent, element width)
    let mut pairs: Vec<(&[u8], &[u8], usize)> = Vec::new();
    for (name, dtype, lo, hi) in tensors(&ft, &args[2]) {
        let Some((_, _, plo, phi)) = parents
            .iter()
            .find(|(n, d, plo, phi)| *n == name && *d == dtype && phi - plo == hi - lo)
        else {
            continue;
        };
        let width = plane_width(dtype);
        let per = (chunk / width).max(1) * width;
        for (c, p) in ft[lo..hi].chunks(per).zip(base[*plo..*phi].chunks(per)) {
            pairs.push((c, p, width));
        }
    }

    let summary = |mut times: Vec<f64>| {
        times.sort_by(f64::total_cmp);
        format!("min {:.1} ms, median {:.1} ms", times[0], times[times.len() / 2])
    };
    let mut coded = Vec::new();
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        coded = pairs
            .iter()
            .map(|&(data, parent, width)| encode_best(data, Some(parent), width, opts.level))
            .collect();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let bytes: usize = coded.iter().filter_map(|e| e.bytes.as_ref()).map(Vec::len).sum();
    let raw: usize = pairs.iter().map(|(data, _, _)| data.len()).sum();
    println!("{} chunks, {raw} bytes paired", pairs.len());
    println!(
        "code:   {}, {bytes} bytes ({:.4} of raw)",
        summary(times),
        bytes as f64 / raw as f64
    );

    let mut out = Vec::new();
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        for (&(data, parent, width), e) in pairs.iter().zip(&coded) {
            let Some(bytes) = &e.bytes else { continue };
            out.resize(data.len(), 0);
            decode(bytes, Some(parent), width, &mut out).expect("decodes what was coded");
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    for (&(data, parent, width), e) in pairs.iter().zip(&coded) {
        let Some(bytes) = &e.bytes else { continue };
        out.resize(data.len(), 0);
        decode(bytes, Some(parent), width, &mut out).expect("decodes what was coded");
        assert!(out == data, "a chunk decoded to other bytes");
    }
    println!("decode: {} (then every chunk compared with FT)", summary(times));
}
