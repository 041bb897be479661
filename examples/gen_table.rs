//! Writes a seeded CSV table of ROWS rows and, with --next, the version after it: every 100th
//! row fixed, every 1000th removed, and 1% new rows appended. Streams; memory stays flat.
//!
//!   cargo run --release --example gen_table -- --out v1.csv --rows 10000000
//!   cargo run --release --example gen_table -- --out v2.csv --rows 10000000 --next

use std::io::{BufWriter, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(out), Some(rows)) = (value("--out"), value("--rows").and_then(|r| r.parse::<u64>().ok())) else {
        eprintln!("usage: gen_table --out FILE --rows N [--next] [--seed S]");
        std::process::exit(2);
    };
    let next = args.iter().any(|a| a == "--next");
    let seed: u64 = value("--seed").and_then(|s| s.parse().ok()).unwrap_or(1);
    let file = std::fs::File::create(&out).unwrap_or_else(|e| panic!("cannot create {out}: {e}"));
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut written = 0u64;
    writeln!(w, "id,name,score,note").expect("write");
    for i in 0..rows {
        if next && i % 1000 == 999 {
            continue; // removed in the next version
        }
        let fixed = next && i % 100 == 42;
        row(&mut w, i, seed, fixed);
        written += 1;
    }
    if next {
        for i in rows..rows + rows / 100 {
            row(&mut w, i, seed, false);
            written += 1;
        }
    }
    w.flush().expect("flush");
    eprintln!("wrote {out}: {written} rows");
}

fn row(w: &mut impl Write, i: u64, seed: u64, fixed: bool) {
    let mut x = (i ^ seed.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    let name = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"][(x % 6) as usize];
    let score = (x >> 8) % 100_000;
    let note = match (x >> 40) % 5 {
        0 => "\"has, a comma\"".to_string(),
        1 => "\"two\nlines\"".to_string(),
        _ => format!("n{}", (x >> 20) % 997),
    };
    let score = if fixed { score + 1 } else { score };
    writeln!(w, "{i},{name},{}.{:02},{note}", score / 100, score % 100).expect("write");
}
