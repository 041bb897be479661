//! Writes a seeded CSV table of ROWS rows and, with --next, the version after it: every 100th
//! row fixed, every 1000th removed, and 1% new rows appended. Streams; memory stays flat.
//! With --parquet, the same rows as a Parquet table (id Int64, name, score Float64, note;
//! zstd, row groups of 1 Mi rows), written in batches of 64 Ki rows.
//!
//!   cargo run --release --example gen_table -- --out v1.csv --rows 10000000
//!   cargo run --release --example gen_table -- --out v2.csv --rows 10000000 --next
//!   cargo run --release --example gen_table -- --out v1.parquet --rows 10000000 --parquet

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
    if args.iter().any(|a| a == "--parquet") {
        let written = parquet_table(&out, rows, seed, next);
        eprintln!("wrote {out}: {written} rows");
        return;
    }
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

/// Row `i`: its name, its score in hundredths, and its note (quoted as CSV needs).
fn fields(i: u64, seed: u64, fixed: bool) -> (&'static str, u64, String) {
    let mut x = (i ^ seed.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    let name = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"][(x % 6) as usize];
    let score = (x >> 8) % 100_000;
    let note = match (x >> 40) % 5 {
        0 => "\"has, a comma\"".to_string(),
        1 => "\"two\nlines\"".to_string(),
        _ => format!("n{}", (x >> 20) % 997),
    };
    (name, if fixed { score + 1 } else { score }, note)
}

fn row(w: &mut impl Write, i: u64, seed: u64, fixed: bool) {
    let (name, score, note) = fields(i, seed, fixed);
    writeln!(w, "{i},{name},{}.{:02},{note}", score / 100, score % 100).expect("write");
}

/// The same rows as Parquet; returns how many were written.
fn parquet_table(out: &str, rows: u64, seed: u64, next: bool) -> u64 {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder};
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;

    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
        Field::new("note", DataType::Utf8, false),
    ]));
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("a level")))
        .set_max_row_group_row_count(Some(1 << 20))
        .build();
    let file = std::fs::File::create(out).unwrap_or_else(|e| panic!("cannot create {out}: {e}"));
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props)).expect("a writer");
    let ids = (0..rows)
        .filter(|i| !(next && i % 1000 == 999))
        .map(|i| (i, next && i % 100 == 42))
        .chain((rows..rows + if next { rows / 100 } else { 0 }).map(|i| (i, false)));
    let mut written = 0u64;
    let mut batch: Vec<(u64, bool)> = Vec::with_capacity(1 << 16);
    let mut flush = |batch: &mut Vec<(u64, bool)>| {
        let (mut id, mut name, mut score, mut note) = (
            Int64Builder::new(),
            StringBuilder::new(),
            Float64Builder::new(),
            StringBuilder::new(),
        );
        for &(i, fixed) in batch.iter() {
            let (n, s, t) = fields(i, seed, fixed);
            id.append_value(i as i64);
            name.append_value(n);
            score.append_value(s as f64 / 100.0);
            note.append_value(t.trim_matches('"'));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(id.finish()),
            Arc::new(name.finish()),
            Arc::new(score.finish()),
            Arc::new(note.finish()),
        ];
        w.write(&RecordBatch::try_new(schema.clone(), columns).expect("columns fit"))
            .expect("write");
        written += batch.len() as u64;
        batch.clear();
    };
    for r in ids {
        batch.push(r);
        if batch.len() == 1 << 16 {
            flush(&mut batch);
        }
    }
    if !batch.is_empty() {
        flush(&mut batch);
    }
    w.close().expect("close");
    written
}
