//! Times grouping by context (`codec::context`) on a real pair, chunk by chunk.
//!
//!     cargo run --release --example context_bench -- BASE FT WIDTH BITS [CHUNK_BYTES]
//!
//! BASE and FT are files of equal layout (for instance the MiniLM pair, or the pair rounded to
//! bf16 by `to_bf16`); both are read whole into memory, then cut into chunks of CHUNK_BYTES
//! (default 1 MiB) after the first 1 MiB. Prints the median of 7 passes over every chunk, in
//! nanoseconds per element, for `group_sub` and `ungroup_add`, after checking the round trip.

use std::time::Instant;

use sparse::codec::context::{group_sub, ungroup_add};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: context_bench BASE FT WIDTH BITS [CHUNK_BYTES]");
        std::process::exit(2);
    }
    let read = |p: &str| std::fs::read(p).unwrap_or_else(|e| panic!("reading {p}: {e}"));
    let (base, ft) = (read(&args[1]), read(&args[2]));
    let width: usize = args[3].parse().expect("WIDTH: 2, 4 or 8");
    let bits: u32 = args[4].parse().expect("BITS: 1 to 16");
    let chunk: usize = args.get(5).map_or(1 << 20, |c| c.parse().expect("CHUNK_BYTES")) / width * width;
    let skip = 1 << 20;
    let len = (base.len().min(ft.len()) - skip) / chunk * chunk;
    let (parent, data) = (&base[skip..skip + len], &ft[skip..skip + len]);
    let mut grouped = vec![0u8; len];
    let mut back = vec![0u8; len];
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // Seconds for `f` over every chunk of `input` and `parent`, writing `out`.
    let pass = |input: &[u8], out: &mut [u8], f: fn(&[u8], &[u8], usize, u32, &mut [u8])| {
        let t = Instant::now();
        for ((i, p), o) in input.chunks(chunk).zip(parent.chunks(chunk)).zip(out.chunks_mut(chunk)) {
            f(i, p, width, bits, o);
        }
        t.elapsed().as_secs_f64()
    };
    let (mut g, mut u) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        g.push(pass(data, &mut grouped, group_sub));
        u.push(pass(&grouped, &mut back, ungroup_add));
    }
    assert!(back == data, "ungrouping gives back the fine-tune");
    let per = |s: f64| s * 1e9 / (len / width) as f64;
    println!(
        "{} elements of {width} bytes, {bits} bits, chunks of {chunk} bytes: group_sub {:.2} ns/element, ungroup_add {:.2} ns/element",
        len / width,
        per(median(g)),
        per(median(u))
    );
}
