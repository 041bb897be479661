//! Parquet and Arrow IPC tables with row-level deltas: a new version of a table stores the rows
//! it shares with its base as copies of the base's rows, and only its new rows; checkout writes
//! back the same schema, values and row order.

mod common;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, Float32Array, Float64Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray,
    StructArray,
};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Fields, Int32Type, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use common::*;

/// The schema of the generated tables: integers, Unicode text, nullable floats, binary, a list
/// and a struct.
fn schema() -> SchemaRef {
    let point = Fields::from(vec![
        Field::new("x", DataType::Float32, false),
        Field::new("y", DataType::Float32, true),
    ]);
    Arc::new(
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
            Field::new("blob", DataType::Binary, true),
            Field::new_list("tags", Field::new_list_field(DataType::Int32, true), true),
            Field::new_struct("point", point, true),
        ])
        .with_metadata(std::collections::HashMap::from([(
            "source".to_string(),
            "tables.rs".to_string(),
        )])),
    )
}

/// Row `id` of the generated table; `version` changes its values (a modified row).
fn rows(ids: &[i64], version: u64) -> RecordBatch {
    let words = ["naïve", "東京", "ŝparse", "café", "Ωmega", "zürich", "🙂ok", "plain"];
    let name: StringArray = ids
        .iter()
        .map(|&i| (i % 13 != 0).then(|| format!("{} #{i} v{version}", words[(i as usize) % words.len()])))
        .collect();
    let score: Float64Array = ids
        .iter()
        .map(|&i| (i % 7 != 0).then_some(i as f64 * 0.37 + version as f64))
        .collect();
    let blob: BinaryArray = ids
        .iter()
        .map(|&i| (i % 11 != 0).then(|| (i as u64 ^ version).to_le_bytes().repeat(1 + (i as usize % 3))))
        .collect();
    let tags = ListArray::from_iter_primitive::<Int32Type, _, _>(ids.iter().map(|&i| {
        (i % 5 != 0).then(|| {
            (0..(i % 4))
                .map(|k| (k as i32 != 2).then_some(i as i32 + k as i32))
                .collect::<Vec<_>>()
        })
    }));
    let x = Float32Array::from_iter_values(ids.iter().map(|&i| i as f32 / 3.0));
    let y: Float32Array = ids.iter().map(|&i| (i % 3 != 0).then_some(-(i as f32))).collect();
    let Some(DataType::Struct(point_fields)) = schema().field_with_name("point").ok().map(|f| f.data_type().clone())
    else {
        unreachable!("point is a struct")
    };
    let point = StructArray::new(
        point_fields,
        vec![Arc::new(x) as ArrayRef, Arc::new(y)],
        Some(ids.iter().map(|&i| i % 17 != 0).collect()),
    );
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.to_vec())),
        Arc::new(name),
        Arc::new(score),
        Arc::new(blob),
        Arc::new(tags),
        Arc::new(point),
    ];
    RecordBatch::try_new(schema(), columns).expect("columns fit the schema")
}

fn write_parquet(path: &Path, batches: &[RecordBatch]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap()))
        .set_max_row_group_row_count(Some(20_000))
        .build();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), batches[0].schema(), Some(props)).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

fn write_arrow(path: &Path, batches: &[RecordBatch]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = arrow::ipc::writer::FileWriter::try_new(File::create(path).unwrap(), &batches[0].schema()).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
}

/// A table file's schema and all its rows in one batch.
fn read_table(path: &Path) -> RecordBatch {
    let name = path.to_str().unwrap();
    let (schema, batches): (SchemaRef, Vec<RecordBatch>) = if name.ends_with(".parquet") || name.ends_with(".data") {
        let r = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        let schema = r.schema().clone();
        (schema, r.build().unwrap().map(Result::unwrap).collect())
    } else if name.ends_with(".arrows") || name.ends_with(".ipc") {
        let r = arrow::ipc::reader::StreamReader::try_new(File::open(path).unwrap(), None).unwrap();
        let schema = r.schema();
        (schema, r.map(Result::unwrap).collect())
    } else {
        let r = arrow::ipc::reader::FileReader::try_new(File::open(path).unwrap(), None).unwrap();
        let schema = r.schema();
        (schema, r.map(Result::unwrap).collect())
    };
    concat_batches(&schema, &batches).unwrap()
}

#[track_caller]
fn assert_same_table(out: &Path, expected: &Path) {
    let (a, b) = (read_table(out), read_table(expected));
    assert_eq!(a.schema(), b.schema(), "{} and {}", out.display(), expected.display());
    assert_eq!(
        a.num_rows(),
        b.num_rows(),
        "{} and {}",
        out.display(),
        expected.display()
    );
    assert!(
        a == b,
        "{} and {} hold different rows",
        out.display(),
        expected.display()
    );
}

/// Growth of `.sparse` when `source` is added and committed (0 if it shrank).
fn add_measured(sb: &Sandbox, source: &Path, name: &str, base: Option<&str>) -> u64 {
    let before = dir_bytes(&sb.store());
    sb.add_commit(source, name, base, name);
    // The index file can shrink by more than a small add grows the rest.
    dir_bytes(&sb.store()).saturating_sub(before)
}

/// The manifest `file` of revision `rev`, read with git.
fn manifest(sb: &Sandbox, rev: &str, file: &str) -> serde_json::Value {
    let out = git(&sb.store(), &["show", &format!("{rev}:{file}")]);
    assert!(out.status.success(), "git show {rev}:{file}");
    serde_json::from_slice(&out.stdout).expect("a JSON manifest")
}

/// Ids 0..n with every 50th deleted, every 40th modified and new rows inserted every 1000.
fn derived(n: i64) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for lo in (0..n).step_by(10_000) {
        let kept: Vec<i64> = (lo..(lo + 10_000).min(n)).filter(|i| i % 50 != 1).collect();
        let mut ids = Vec::new();
        for &i in &kept {
            ids.push(i);
            if i % 1000 == 999 {
                ids.push(1_000_000 + i);
            }
        }
        // Modified rows (every 40th): the same id, other values.
        let batch_rows: Vec<RecordBatch> = ids.iter().map(|&i| rows(&[i], (i % 40 == 3) as u64)).collect();
        out.push(concat_batches(&schema(), &batch_rows).unwrap());
    }
    out
}

#[test]
fn derived_parquet_stores_about_its_new_rows_and_both_versions_check_out_table_identical() {
    let sb = Sandbox::new();
    let n = 60_000;
    let base: Vec<RecordBatch> = (0..n)
        .step_by(10_000)
        .map(|lo| rows(&(lo..lo + 10_000).collect::<Vec<_>>(), 0))
        .collect();
    let v1 = sb.join("v1/t.parquet");
    write_parquet(&v1, &base);
    let v2 = sb.join("v2/t.parquet");
    write_parquet(&v2, &derived(n));
    let size = std::fs::metadata(&v2).unwrap().len();
    assert!(size > 1 << 20, "the table should be over the small-file limit: {size}");

    sb.add_commit(&v1, "t", None, "v1");
    // estimate plans the rows as add does.
    let est = sb.json(&["estimate", v2.to_str().unwrap(), "--base", "t"]);
    let expected = est["bytes"].as_u64().expect("an estimate");
    assert_eq!(est["record_files"], 1, "{est}");
    let growth = add_measured(&sb, &v2, "t", Some("t"));
    assert!(
        expected < size / 10 && expected * 2 > growth,
        "estimate {expected}, stored {growth}"
    );
    let m = manifest(&sb, "t", "t.parquet");
    assert_eq!(m["kind"], "table", "{m}");
    assert_eq!(m["table"]["rows"], read_table(&v2).num_rows(), "{m}");
    // 1.5% new + 2.5% modified rows: the store grows by a small fraction of the file.
    assert!(growth * 10 < size, "v2 added {growth} bytes for a {size}-byte table");

    let out2 = sb.join("out-v2");
    let report = sb.json(&["checkout", "t", "-o", out2.to_str().unwrap()]);
    assert_eq!(report["tables"], serde_json::json!(["t.parquet"]), "{report}");
    let out1 = sb.join("out-v1");
    let report = sb.json(&["checkout", "t~1", "-o", out1.to_str().unwrap()]);
    assert!(report.get("tables").is_none(), "stored whole, not a delta: {report}");
    assert_same_table(&out2.join("t.parquet"), &v2);

    // diff: every 50th row removed, 60 inserted, every 40th modified (the same id), except
    // where the new version's values are all the same (every column that changes is null).
    let modified = (3..n).step_by(40).filter(|&i| rows(&[i], 1) != rows(&[i], 0)).count();
    assert!(modified < 1500 && modified > 1400, "{modified}");
    let diff = sb.json(&["diff", "t~1", "t", "--rows", "2"]);
    let d = &diff["files"][0]["records"];
    assert_eq!(d["records_a"], 60_000, "{d}");
    assert_eq!(d["records_b"], 60_000 - 1200 + 60, "{d}");
    assert_eq!(d["removed"], 1200, "{d}");
    assert_eq!(d["added"], 60, "{d}");
    assert_eq!(d["modified"], modified, "{d}");
    assert_eq!(d["unchanged"], 60_000 - 1200 - modified, "{d}");
    assert_eq!(d["columns_added"], serde_json::json!([]), "{d}");
    assert_eq!(d["examples"]["modified"], serde_json::json!(["id=3", "id=43"]), "{d}");
    assert!(
        d["examples"]["removed"][0].as_str().unwrap().starts_with("id=1, name="),
        "{d}"
    );
    assert!(
        d["examples"]["added"][0].as_str().unwrap().starts_with("id=1000999, "),
        "{d}"
    );
    let text = sb.run(&["diff", "t~1", "t"]).ok().stdout.clone();
    assert!(
        text.contains(&format!("rows: 60 added, 1200 removed, {modified} modified")),
        "{text}"
    );
    // Stored whole (no base): byte for byte.
    assert_eq!(sha256_file(&out1.join("t.parquet")), sha256_file(&v1));

    // A third version on the second: its base's table is itself rebuilt from rows.
    let mut third = derived(n);
    third.push(rows(&[7_000_000, 7_000_001], 5));
    let v3 = sb.join("v3/t.parquet");
    write_parquet(&v3, &third[1..]);
    let growth = add_measured(&sb, &v3, "t", Some("t"));
    assert_eq!(manifest(&sb, "t", "t.parquet")["kind"], "table");
    assert!(growth * 20 < size, "v3 added {growth} bytes");
    assert_same_table(&sb.checkout("t", "out-v3").join("t.parquet"), &v3);
    assert_same_table(&sb.checkout("t~1", "out-v2-again").join("t.parquet"), &v2);
    sb.assert_fsck_ok();
}

#[test]
fn a_split_resharded_into_more_files_copies_rows_from_every_shard_of_its_base() {
    // The Hugging Face layout: data/{split}-{shard}-of-{count}.parquet.
    let sb = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let n = 40_000;
    let batch = |lo: i64, hi: i64, v: u64| rows(&(lo..hi).collect::<Vec<_>>(), v);
    let v1 = sb.join("v1/data");
    write_parquet(&v1.join("train-00000-of-00002.parquet"), &[batch(0, 20_000, 0)]);
    write_parquet(&v1.join("train-00001-of-00002.parquet"), &[batch(20_000, n, 0)]);
    write_parquet(&v1.join("test-00000-of-00001.parquet"), &[batch(500_000, 505_000, 0)]);
    // v2: the train rows, derived (removed, modified and new rows), cut into three shards at
    // other places; the test split unchanged under its old name.
    let train = concat_batches(&schema(), &derived(n)).unwrap();
    let v2 = sb.join("v2/data");
    let cuts = [0, 13_000, 27_000, train.num_rows()];
    for k in 0..3 {
        let part = train.slice(cuts[k], cuts[k + 1] - cuts[k]);
        write_parquet(&v2.join(format!("train-0000{k}-of-00003.parquet")), &[part]);
    }
    std::fs::copy(
        v1.join("test-00000-of-00001.parquet"),
        v2.join("test-00000-of-00001.parquet"),
    )
    .unwrap();
    let v2_bytes = dir_bytes(&v2);

    sb.add_commit(&sb.join("v1"), "ds", None, "v1");
    let growth = add_measured(&sb, &sb.join("v2"), "ds", Some("ds"));
    // 1.5% new and 2.5% modified rows: a small fraction of the files, though no shard of v2
    // has a file of the same name in v1.
    assert!(growth * 10 < v2_bytes, "v2 added {growth} bytes for {v2_bytes}");
    // Each new shard lists the old train shards it copies rows from (never the test split):
    // the first new shard's rows lie in the first old one, the middle one's in both, the last
    // one's in the second.
    let train_shards = ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"];
    for (k, expected) in [&train_shards[..1], &train_shards[..], &train_shards[1..]]
        .iter()
        .enumerate()
    {
        let file = format!("data/train-0000{k}-of-00003.parquet");
        let m = manifest(&sb, "ds", &file);
        assert_eq!(m["kind"], "table", "{file}: {m}");
        let tables = m["table"]["base_tables"]
            .as_array()
            .unwrap_or_else(|| panic!("{file} copies from tables at other paths: {m}"));
        let from: Vec<&str> = tables.iter().map(|b| b["path"].as_str().unwrap()).collect();
        assert_eq!(&from, expected, "{file}");
        assert!(tables.iter().all(|b| b["rows"] == 20_000), "{m}");
    }

    let out = sb.checkout("ds", "out-v2");
    for entry in std::fs::read_dir(&v2).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        assert_same_table(&out.join("data").join(name), &path);
    }
    // The first version, stored whole, comes back byte for byte.
    let out = sb.checkout("ds~1", "out-v1");
    for name in ["train-00000-of-00002.parquet", "test-00000-of-00001.parquet"] {
        assert_eq!(sha256_file(&out.join("data").join(name)), sha256_file(&v1.join(name)));
    }
    sb.assert_fsck_ok();
}

#[test]
fn arrow_ipc_files_round_trip_with_nulls_nested_binary_and_unicode_and_a_derived_version() {
    let sb = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let base = vec![rows(&(0..3000).collect::<Vec<_>>(), 0)];
    let v1 = sb.join("v1/t.arrow");
    write_arrow(&v1, &base);
    let v2 = sb.join("v2/t.arrow");
    let mut ids: Vec<i64> = (0..3000).filter(|i| i % 10 != 0).collect();
    ids.extend(5000..5100);
    write_arrow(&v2, &[rows(&ids, 0), rows(&[7, 8], 3)]);
    sb.add_commit(&v1, "t", None, "v1");
    let growth = add_measured(&sb, &v2, "t", Some("t"));
    assert_eq!(manifest(&sb, "t", "t.arrow")["kind"], "table");
    let size = std::fs::metadata(&v2).unwrap().len();
    assert!(growth * 4 < size, "v2 added {growth} bytes for a {size}-byte table");
    let out = sb.checkout("t", "out");
    assert_same_table(&out.join("t.arrow"), &v2);
    let out1 = sb.checkout("t~1", "out1");
    assert_eq!(sha256_file(&out1.join("t.arrow")), sha256_file(&v1));

    // An IPC stream (.arrows) likewise.
    let write_stream = |path: &Path, batches: &[RecordBatch]| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = File::create(path).unwrap();
        let mut w = arrow::ipc::writer::StreamWriter::try_new(file, &batches[0].schema()).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    };
    let s1 = sb.join("s1/t.arrows");
    write_stream(&s1, &base);
    let s2 = sb.join("s2/t.arrows");
    write_stream(&s2, &[rows(&ids, 0)]);
    sb.add_commit(&s1, "s", None, "s1");
    sb.add_commit(&s2, "s", Some("s"), "s2");
    assert_eq!(manifest(&sb, "s", "t.arrows")["kind"], "table");
    assert_eq!(manifest(&sb, "s", "t.arrows")["table"]["format"], "arrows");
    assert_same_table(&sb.checkout("s", "out-s").join("t.arrows"), &s2);
    // A stream named .ipc is found to be a stream by its first bytes.
    let i1 = sb.join("i1/t.ipc");
    write_stream(&i1, &base);
    let i2 = sb.join("i2/t.ipc");
    write_stream(&i2, &[rows(&ids, 0)]);
    sb.add_commit(&i1, "i", None, "i1");
    sb.add_commit(&i2, "i", Some("i"), "i2");
    assert_eq!(manifest(&sb, "i", "t.ipc")["table"]["format"], "arrows");
    assert_same_table(&sb.checkout("i", "out-i").join("t.ipc"), &i2);
}

/// Tables compressed as pyarrow and pandas write them by default or on request: Feather (Arrow
/// IPC) with LZ4 or zstd buffers, Parquet with gzip, LZ4 (raw, or framed as Hadoop wrote it) or
/// Brotli pages. Each is read, stored
/// as its new rows, and checks out table-identical, compressed as it was.
#[test]
fn compressed_feather_and_parquet_are_read_and_stored_as_row_deltas() {
    use arrow::ipc::writer::{FileWriter, IpcWriteOptions};
    use arrow::ipc::CompressionType;
    use parquet::basic::{BrotliLevel, GzipLevel};
    let sb = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let base = vec![rows(&(0..3000).collect::<Vec<_>>(), 0)];
    let mut ids: Vec<i64> = (0..3000).filter(|i| i % 10 != 0).collect();
    ids.extend(5000..5100);
    let derived = vec![rows(&ids, 0), rows(&[7, 8], 3)];
    let feather = |path: &Path, batches: &[RecordBatch], codec: CompressionType| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let options = IpcWriteOptions::default().try_with_compression(Some(codec)).unwrap();
        let mut w =
            FileWriter::try_new_with_options(File::create(path).unwrap(), &batches[0].schema(), options).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    };
    let parquet = |path: &Path, batches: &[RecordBatch], codec: Compression| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let props = WriterProperties::builder().set_compression(codec).build();
        let mut w = ArrowWriter::try_new(File::create(path).unwrap(), batches[0].schema(), Some(props)).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.close().unwrap();
    };
    let files = [
        "lz4.feather",
        "zstd.feather",
        "gzip.parquet",
        "lz4.parquet",
        "brotli.parquet",
        "lz4-hadoop.parquet",
    ];
    for (dir, batches) in [("v1", &base), ("v2", &derived)] {
        let at = |f: &str| sb.join(&format!("{dir}/{f}"));
        feather(&at(files[0]), batches, CompressionType::LZ4_FRAME);
        feather(&at(files[1]), batches, CompressionType::ZSTD);
        parquet(&at(files[2]), batches, Compression::GZIP(GzipLevel::default()));
        parquet(&at(files[3]), batches, Compression::LZ4_RAW);
        parquet(&at(files[4]), batches, Compression::BROTLI(BrotliLevel::default()));
        parquet(&at(files[5]), batches, Compression::LZ4);
    }
    sb.add_commit(&sb.join("v1"), "t", None, "v1");
    sb.add_commit(&sb.join("v2"), "t", Some("t"), "v2");
    let out = sb.checkout("t", "out");
    for f in files {
        assert_eq!(manifest(&sb, "t", f)["kind"], "table", "{f}");
        let source = sb.join(&format!("v2/{f}"));
        assert_same_table(&out.join(f), &source);
        // Feather comes back compressed as it was (uncompressed, it is twice the size or more).
        if f.ends_with(".feather") {
            let (got, was) = (
                std::fs::metadata(out.join(f)).unwrap().len(),
                std::fs::metadata(&source).unwrap().len(),
            );
            assert!(got * 4 < was * 5, "{f}: {got} bytes checked out, {was} added");
        } else {
            // The codec; Parquet does not record its level.
            let codec = |path: &Path| {
                let reader = parquet::file::reader::SerializedFileReader::new(File::open(path).unwrap()).unwrap();
                parquet::file::reader::FileReader::metadata(&reader)
                    .row_group(0)
                    .column(0)
                    .compression()
            };
            let (got, was) = (codec(&out.join(f)), codec(&source));
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(&was),
                "{f}: pages checked out as {got:?}, added as {was:?}"
            );
        }
    }
    sb.assert_fsck_ok();
}

/// A compressed Arrow IPC buffer declaring more bytes than the machine has is refused, naming
/// the file, before arrow allocates them (a failed allocation would abort the process), with or
/// without a base to compare rows with; the store is left as it was.
#[test]
fn a_compressed_arrow_buffer_declaring_too_much_is_refused() {
    use arrow::ipc::writer::{FileWriter, IpcWriteOptions};
    use arrow::ipc::CompressionType;
    let sb = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let write = |path: &Path, batch: &RecordBatch| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::LZ4_FRAME))
            .unwrap();
        let mut w = FileWriter::try_new_with_options(File::create(path).unwrap(), &batch.schema(), options).unwrap();
        w.write(batch).unwrap();
        w.finish().unwrap();
    };
    let v1 = sb.join("v1/t.feather");
    write(&v1, &rows(&(0..2000).collect::<Vec<_>>(), 0));
    sb.add_commit(&v1, "t", None, "v1");
    let v2 = sb.join("v2/t.feather");
    write(&v2, &rows(&(0..2100).collect::<Vec<_>>(), 0));
    // Each LZ4 frame (magic 04 22 4d 18) follows the 8-byte length it decompresses to.
    let mut bytes = std::fs::read(&v2).unwrap();
    let frame = bytes
        .windows(4)
        .position(|w| w == [0x04, 0x22, 0x4d, 0x18])
        .expect("an LZ4 frame");
    bytes[frame - 8..frame].copy_from_slice(&(1i64 << 50).to_le_bytes());
    std::fs::write(&v2, &bytes).unwrap();
    let before = store_snapshot(&sb.store());
    for base in [&["--base", "t"][..], &[]] {
        let mut args = vec!["add", v2.to_str().unwrap(), "--name", "t2"];
        args.extend_from_slice(base);
        let run = sb.run(&args);
        let err = run.failed();
        assert!(
            err.contains("t.feather") && err.contains("declares 1125899906842624 bytes uncompressed"),
            "{err}"
        );
    }
    assert_eq!(store_snapshot(&sb.store()), before, "nothing written");
}

#[test]
fn empty_tables_round_trip() {
    let sb = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let empty = rows(&[], 0);
    let p = sb.join("e/t.parquet");
    write_parquet(&p, std::slice::from_ref(&empty));
    let a = sb.join("e/t.arrow");
    write_arrow(&a, &[empty]);
    sb.add_commit(&sb.join("e"), "e", None, "empty");
    // A second version with rows, on the empty one, and an empty one on that.
    let full = sb.join("f/t.parquet");
    write_parquet(&full, &[rows(&(0..500).collect::<Vec<_>>(), 0)]);
    std::fs::copy(&a, sb.join("f/t.arrow")).unwrap();
    sb.add_commit(&sb.join("f"), "e", Some("e"), "rows");
    sb.add_commit(&sb.join("e"), "e", Some("e"), "empty again");
    for (rev, dir) in [("e~2", "e"), ("e~1", "f"), ("e", "e")] {
        let out = sb.checkout(rev, &format!("out-{}", rev.replace('~', "-")));
        for f in ["t.parquet", "t.arrow"] {
            assert_same_table(&out.join(f), &sb.join(dir).join(f));
        }
    }
}

#[test]
fn a_removed_column_still_copies_rows_and_an_added_one_stores_the_table_whole() {
    let sb = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let ids: Vec<i64> = (0..20_000).collect();
    let full = rows(&ids, 0);
    let v1 = sb.join("v1/t.parquet");
    write_parquet(&v1, std::slice::from_ref(&full));
    sb.add_commit(&v1, "t", None, "v1");

    // Without `blob`, and columns reordered: rows compare by the columns the new table has.
    let keep = ["point", "id", "name", "score", "tags"];
    let projected = full.project(&keep.map(|c| full.schema().index_of(c).unwrap())).unwrap();
    let v2 = sb.join("v2/t.parquet");
    write_parquet(&v2, &[projected.slice(100, 19_900)]);
    let growth = add_measured(&sb, &v2, "t", Some("t"));
    assert_eq!(manifest(&sb, "t", "t.parquet")["kind"], "table");
    let size = std::fs::metadata(&v2).unwrap().len();
    assert!(growth * 10 < size, "v2 added {growth} bytes for a {size}-byte table");
    assert_same_table(&sb.checkout("t", "out2").join("t.parquet"), &v2);
    let diff = sb.json(&["diff", "t~1", "t"]);
    let d = &diff["files"][0]["records"];
    assert_eq!(d["columns_removed"], serde_json::json!(["blob"]), "{d}");
    assert_eq!(
        (d["removed"].as_u64(), d["added"].as_u64()),
        (Some(100), Some(0)),
        "{d}"
    );
    assert_eq!(d["unchanged"], 19_900, "{d}");

    // An added column: no row of the base has it, so the table is stored whole, byte for byte.
    let extra = Arc::new(Int32Array::from_iter_values(0..19_900)) as ArrayRef;
    let mut fields: Vec<Field> = projected.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("extra", DataType::Int32, false));
    let mut columns = projected.slice(100, 19_900).columns().to_vec();
    columns.push(extra);
    let widened = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let v3 = sb.join("v3/t.parquet");
    write_parquet(&v3, &[widened]);
    sb.add_commit(&v3, "t", Some("t"), "v3");
    assert_eq!(manifest(&sb, "t", "t.parquet")["kind"], "file");
    let out3 = sb.checkout("t", "out3");
    assert_eq!(sha256_file(&out3.join("t.parquet")), sha256_file(&v3));
    // A retyped column: likewise.
    let retyped = arrow::compute::cast(projected.column(1), &DataType::Int32).unwrap();
    let mut columns = projected.columns().to_vec();
    columns[1] = retyped;
    let mut fields: Vec<Field> = projected.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[1] = Field::new("id", DataType::Int32, false);
    let v4 = sb.join("v4/t.parquet");
    write_parquet(
        &v4,
        &[RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()],
    );
    sb.add_commit(&v4, "t", Some("t~2"), "v4");
    assert_eq!(manifest(&sb, "t", "t.parquet")["kind"], "file");
    let diff = sb.json(&["diff", "t~1", "t"]);
    let d = &diff["files"][0]["records"];
    assert_eq!(d["columns_retyped"], serde_json::json!(["id"]), "{d}");
    assert_eq!(d["columns_removed"], serde_json::json!(["extra"]), "{d}");
    sb.assert_fsck_ok();
}

/// penguins.csv as Parquet, through arrow's CSV reader.
fn penguins_parquet(out: &Path) -> RecordBatch {
    let csv = real_data().join("palmerpenguins-0.1.6/palmerpenguins/data/penguins.csv");
    let format = arrow::csv::reader::Format::default().with_header(true);
    let (schema, _) = format.infer_schema(File::open(&csv).unwrap(), None).unwrap();
    let reader = arrow::csv::ReaderBuilder::new(Arc::new(schema))
        .with_format(format)
        .build(File::open(&csv).unwrap())
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    write_parquet(out, &batches);
    concat_batches(&batches[0].schema(), &batches).unwrap()
}

#[test]
fn palmerpenguins_as_parquet_and_a_filtered_derivative_round_trip() {
    let sb = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let v1 = sb.join("v1/penguins.parquet");
    let all = penguins_parquet(&v1);
    assert_eq!(all.num_rows(), 344);
    // The derivative: the rows of one island dropped.
    let island = all.column(all.schema().index_of("island").unwrap());
    let keep = arrow::compute::kernels::cmp::neq(island, &StringArray::new_scalar("Dream")).unwrap();
    let filtered = arrow::compute::filter_record_batch(&all, &keep).unwrap();
    assert!(filtered.num_rows() > 200 && filtered.num_rows() < 344);
    let v2 = sb.join("v2/penguins.parquet");
    write_parquet(&v2, &[filtered]);
    sb.add_commit(&v1, "penguins", None, "all");
    sb.add_commit(&v2, "penguins", Some("penguins"), "without Dream");
    let m = manifest(&sb, "penguins", "penguins.parquet");
    assert_eq!(m["kind"], "table", "{m}");
    assert_eq!(m["table"]["added"], 0, "a filter adds no rows: {m}");
    assert_same_table(&sb.checkout("penguins", "out2").join("penguins.parquet"), &v2);
    assert_same_table(&sb.checkout("penguins~1", "out1").join("penguins.parquet"), &v1);
    sb.assert_fsck_ok();
}

/// Runs `args`, which must fail naming everything in `mentions`, leaving the store as it was.
#[track_caller]
fn refused(sb: &Sandbox, args: &[&str], mentions: &[&str]) {
    let before = store_snapshot(&sb.store());
    let run = sb.run(args);
    let stderr = run.failed().to_string();
    for m in mentions {
        assert!(
            stderr.contains(m),
            "`sparse {}` should mention {m:?}:\n{stderr}",
            args.join(" ")
        );
    }
    assert_unchanged(&before, &store_snapshot(&sb.store()), &args.join(" "));
}

#[test]
fn bad_tables_are_refused_naming_the_file_and_line_or_row_group_and_the_store_is_unchanged() {
    let sb = Sandbox::new();
    let good = sb.write("good/a.csv", b"x,y\n1,2\n");
    sb.add_commit(&good, "good", None, "good");

    let ragged = sb.write("in/ragged.csv", b"a,b,c\n1,2,3\n\"x,\ny\",5,6\n7,8\n9,10,11\n");
    refused(
        &sb,
        &["add", ragged.to_str().unwrap(), "--name", "r"],
        &["ragged.csv", "line 5", "2 fields"],
    );
    let tsv = sb.write("in/ragged.tsv", b"a\tb\n1\t2\t3\n");
    refused(
        &sb,
        &["add", tsv.to_str().unwrap(), "--name", "r"],
        &["ragged.tsv", "line 2"],
    );
    let open = sb.write("in/open.csv", b"a,b\n1,\"2\n3,4\n");
    refused(
        &sb,
        &["add", open.to_str().unwrap(), "--name", "r"],
        &["open.csv", "line 2", "never closes"],
    );
    let json = sb.write("in/broken.jsonl", b"{\"a\": 1}\n{\"a\": 2}\n\n{\"a\": \n{\"a\": 4}\n");
    refused(
        &sb,
        &["add", json.to_str().unwrap(), "--name", "j"],
        &["broken.jsonl", "line 4, column 6", "not JSON"],
    );
    // In a directory, a bad file refuses the whole source.
    sb.write("in/dir/ok.csv", b"a\n1\n");
    sb.write("in/dir/bad.jsonl", b"[1,\n");
    refused(
        &sb,
        &["add", sb.join("in/dir").to_str().unwrap(), "--name", "d"],
        &["bad.jsonl", "line 1"],
    );
    // --kind text stores such files as they are, byte for byte.
    sb.run(&["add", ragged.to_str().unwrap(), "--name", "r", "--kind", "text"])
        .ok();
    sb.run(&["commit", "-m", "as text"]).ok();
    let out = sb.checkout("r", "out-r");
    assert_eq!(
        std::fs::read(out.join("ragged.csv")).unwrap(),
        std::fs::read(&ragged).unwrap()
    );

    // A Parquet file whose footer is damaged, or cut short.
    let table = sb.join("in/t.parquet");
    write_parquet(&table, &[rows(&(0..2000).collect::<Vec<_>>(), 0)]);
    let mut bytes = std::fs::read(&table).unwrap();
    let n = bytes.len();
    bytes[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let footer = sb.write("in/footer.parquet", &bytes);
    refused(
        &sb,
        &["add", footer.to_str().unwrap(), "--name", "p"],
        &["footer.parquet", "Parquet"],
    );
    let cut = sb.write("in/cut.parquet", &bytes[..n / 2]);
    refused(
        &sb,
        &["add", cut.to_str().unwrap(), "--name", "p"],
        &["cut.parquet", "Parquet"],
    );
    // A file named .parquet that is not one, and one that --kind table finds no table in.
    let fake = sb.write("in/fake.parquet", b"not parquet at all, just text\n");
    refused(&sb, &["add", fake.to_str().unwrap(), "--name", "p"], &["fake.parquet"]);
    refused(
        &sb,
        &["add", good.to_str().unwrap(), "--name", "p", "--kind", "table"],
        &["a.csv", "not a Parquet or Arrow"],
    );
    let arrow = sb.write("in/bad.arrow", b"ARROW1\0\0garbage-garbage-ARROW1");
    refused(
        &sb,
        &["add", arrow.to_str().unwrap(), "--name", "p"],
        &["bad.arrow", "Arrow IPC"],
    );
}

#[test]
fn a_damaged_row_group_of_a_new_version_is_refused_naming_it() {
    let sb = Sandbox::new();
    let ids: Vec<i64> = (0..60_000).collect();
    let v1 = sb.join("v1/t.parquet");
    write_parquet(&v1, &[rows(&ids, 0)]);
    sb.add_commit(&v1, "t", None, "v1");
    // Row groups of 20,000 rows: damage the bytes of the last one's pages.
    let v2 = sb.join("v2/t.parquet");
    write_parquet(&v2, &[rows(&ids, 0)]);
    let meta = ParquetRecordBatchReaderBuilder::try_new(File::open(&v2).unwrap())
        .unwrap()
        .metadata()
        .clone();
    let last = meta.row_group(2);
    let (start, len) = last.column(0).byte_range();
    let mut bytes = std::fs::read(&v2).unwrap();
    for b in &mut bytes[start as usize..(start + len) as usize] {
        *b = 0xA5;
    }
    std::fs::write(&v2, &bytes).unwrap();
    refused(
        &sb,
        &["add", v2.to_str().unwrap(), "--name", "t", "--base", "t"],
        &["t.parquet", "row group 2"],
    );
}

/// A CSV or JSON Lines file read back with arrow, its schema inferred over the whole file.
fn read_text_table(path: &Path) -> RecordBatch {
    let batches: Vec<RecordBatch> = if path.extension().unwrap() == "csv" {
        let format = arrow::csv::reader::Format::default().with_header(true);
        let (schema, _) = format.infer_schema(File::open(path).unwrap(), None).unwrap();
        arrow::csv::ReaderBuilder::new(Arc::new(schema))
            .with_format(format)
            .build(File::open(path).unwrap())
            .unwrap()
            .map(Result::unwrap)
            .collect()
    } else {
        let mut file = std::io::BufReader::new(File::open(path).unwrap());
        let (schema, _) = arrow::json::reader::infer_json_schema(&mut file, None).unwrap();
        arrow::json::ReaderBuilder::new(Arc::new(schema))
            .build(std::io::BufReader::new(File::open(path).unwrap()))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    concat_batches(&batches[0].schema(), &batches).unwrap()
}

#[test]
fn checkout_format_converts_tables_both_ways_and_refuses_nested_columns_as_csv() {
    let sb = Sandbox::new();
    // penguins.csv, stored as text, checked out as Parquet: arrow's reading of the CSV.
    let csv = real_data().join("palmerpenguins-0.1.6/palmerpenguins/data/penguins.csv");
    sb.add_commit(&csv, "csv", None, "csv");
    let out = sb.join("as-parquet");
    let report = sb.json(&["checkout", "csv", "-o", out.to_str().unwrap(), "--format", "parquet"]);
    assert_eq!(report["converted"][0][1], "penguins.parquet", "{report}");
    assert!(!out.join("penguins.csv").exists());
    let expected = penguins_parquet(&sb.join("ref/penguins.parquet"));
    let got = read_table(&out.join("penguins.parquet"));
    assert!(got == expected, "penguins.parquet holds other rows than penguins.csv");

    // A Parquet table checked out as CSV and as JSON Lines reads back as the same rows.
    let pq = sb.join("pq/penguins.parquet");
    penguins_parquet(&pq);
    sb.add_commit(&pq, "pq", None, "pq");
    for (format, file) in [("csv", "penguins.csv"), ("jsonl", "penguins.jsonl")] {
        let out = sb.join(&format!("as-{format}"));
        sb.run(&["checkout", "pq", "-o", out.to_str().unwrap(), "--format", format])
            .ok();
        assert!(!out.join("penguins.parquet").exists());
        let back = read_text_table(&out.join(file));
        assert_eq!(back.num_rows(), expected.num_rows(), "{file}");
        for (i, f) in expected.schema().fields().iter().enumerate() {
            let col = back.column(back.schema().index_of(f.name()).unwrap());
            let col = arrow::compute::cast(col, f.data_type()).unwrap();
            assert_eq!(&col, expected.column(i), "{file}: column {}", f.name());
        }
    }

    // Nested columns: CSV cannot hold them, JSON Lines can.
    let nested = sb.join("nested/t.parquet");
    write_parquet(&nested, &[rows(&(0..100).collect::<Vec<_>>(), 0)]);
    sb.add_commit(&nested, "nested", None, "nested");
    let out = sb.join("nested-csv");
    let run = sb.run(&["checkout", "nested", "-o", out.to_str().unwrap(), "--format", "csv"]);
    let stderr = run.failed();
    assert!(stderr.contains("t.parquet") && stderr.contains("\"tags\""), "{stderr}");
    let out = sb.join("nested-jsonl");
    sb.run(&["checkout", "nested", "-o", out.to_str().unwrap(), "--format", "jsonl"])
        .ok();
    let text = std::fs::read_to_string(out.join("t.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 100);
    assert!(text.contains("\"point\":{\"x\":"), "{}", &text[..200]);

    // The same records as a JSON array: converted to the same table as the JSON Lines.
    let lines: Vec<&str> = text.lines().collect();
    sb.write("json/t.jsonl", text.as_bytes());
    sb.write("json/a.json", format!("[\n  {}\n]\n", lines.join(",\n  ")).as_bytes());
    sb.write("json/empty.json", b" [ ]\n");
    // An array of anything but records is not a table: written as it is.
    sb.write("json/labels.json", b"[\"positive\", \"negative\"]\n");
    sb.add_commit(&sb.join("json"), "json", None, "json");
    let out = sb.join("json-parquet");
    sb.run(&["checkout", "json", "-o", out.to_str().unwrap(), "--format", "parquet"])
        .ok();
    let (from_array, from_lines) = (read_table(&out.join("a.parquet")), read_table(&out.join("t.parquet")));
    assert_eq!(from_array.num_rows(), 100);
    assert!(
        from_array == from_lines,
        "the JSON array and the JSON Lines give other tables"
    );
    assert_eq!(read_table(&out.join("empty.parquet")).num_rows(), 0);
    assert_eq!(
        std::fs::read(out.join("labels.json")).unwrap(),
        b"[\"positive\", \"negative\"]\n"
    );
    assert!(!out.join("labels.parquet").exists());
    // A JSON array that breaks off: an error naming the file and the byte.
    sb.write("broken/b.json", format!("[{},", lines[0]).as_bytes());
    sb.add_commit(&sb.join("broken"), "broken", None, "broken");
    let out = sb.join("broken-parquet");
    let run = sb.run(&["checkout", "broken", "-o", out.to_str().unwrap(), "--format", "parquet"]);
    let stderr = run.failed();
    assert!(stderr.contains("b.json") && stderr.contains("not closed"), "{stderr}");
}

#[test]
fn an_arrow_table_parquet_cannot_hold_is_stored_whole_and_checks_out_byte_identical() {
    use arrow::array::UnionArray;
    use arrow::datatypes::UnionFields;
    let sb = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let table = |n: i32| {
        let fields = UnionFields::try_new(
            vec![0, 1],
            vec![
                Field::new("i", DataType::Int32, false),
                Field::new("f", DataType::Float64, false),
            ],
        )
        .unwrap();
        let type_ids: Vec<i8> = (0..n).map(|i| (i % 2) as i8).collect();
        let ints = Int32Array::from_iter_values((0..n).filter(|i| i % 2 == 0));
        let floats = Float64Array::from_iter_values((0..n).filter(|i| i % 2 == 1).map(f64::from));
        let offsets: Vec<i32> = (0..n).map(|i| i / 2).collect();
        let union = UnionArray::try_new(
            fields.clone(),
            type_ids.into(),
            Some(offsets.into()),
            vec![Arc::new(ints) as ArrayRef, Arc::new(floats)],
        )
        .unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("u", DataType::Union(fields, arrow::datatypes::UnionMode::Dense), false),
        ]));
        let columns: Vec<ArrayRef> = vec![Arc::new(Int32Array::from_iter_values(0..n)), Arc::new(union)];
        RecordBatch::try_new(schema, columns).unwrap()
    };
    let v1 = sb.join("v1/u.arrow");
    write_arrow(&v1, &[table(1000)]);
    let v2 = sb.join("v2/u.arrow");
    write_arrow(&v2, &[table(1001)]);
    sb.add_commit(&v1, "u", None, "v1");
    sb.add_commit(&v2, "u", Some("u"), "v2");
    assert_eq!(manifest(&sb, "u", "u.arrow")["kind"], "file");
    let out = sb.checkout("u", "out");
    assert_eq!(sha256_file(&out.join("u.arrow")), sha256_file(&v2));
    // Nor can it be converted to Parquet: an error, not a crash.
    let out = sb.join("as-parquet");
    let run = sb.run(&["checkout", "u", "-o", out.to_str().unwrap(), "--format", "parquet"]);
    let stderr = run.failed();
    assert!(stderr.contains("u.arrow") && stderr.contains("union"), "{stderr}");
}

#[test]
fn damaged_parquet_bytes_anywhere_give_an_error_or_a_table_never_a_crash() {
    let sb = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let v1 = sb.join("v1/p.parquet");
    penguins_parquet(&v1);
    sb.add_commit(&v1, "p", None, "v1");
    let bytes = std::fs::read(&v1).unwrap();
    let mut rng = Lcg::new(7);
    for k in 0..24 {
        let mut damaged = bytes.clone();
        let at = rng.below(bytes.len() as u64) as usize;
        for b in &mut damaged[at..(at + 8).min(bytes.len())] {
            *b ^= rng.next_u64() as u8 | 1;
        }
        let path = sb.write(&format!("d{k}/p.parquet"), &damaged);
        let before = store_snapshot(&sb.store());
        let run = sb.run(&["add", path.to_str().unwrap(), "--name", "p", "--base", "p"]);
        let code = run.status.code();
        assert!(
            matches!(code, Some(0) | Some(1)),
            "damage at {at}: exit {code:?}\n{}",
            run.stderr
        );
        if !run.success() {
            assert!(run.stderr.contains("p.parquet"), "damage at {at}: {}", run.stderr);
            assert_unchanged(&before, &store_snapshot(&sb.store()), &format!("damage at {at}"));
        }
    }
}

#[test]
fn a_shuffled_table_is_stored_whole_rather_than_as_thousands_of_jumps() {
    let sb = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let ids: Vec<i64> = (0..20_000).collect();
    let v1 = sb.join("v1/t.parquet");
    write_parquet(&v1, &[rows(&ids, 0)]);
    sb.add_commit(&v1, "t", None, "v1");
    let mut shuffled = ids.clone();
    let mut rng = Lcg::new(3);
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let v2 = sb.join("v2/t.parquet");
    write_parquet(&v2, &[rows(&shuffled, 0)]);
    sb.add_commit(&v2, "t", Some("t"), "shuffled");
    assert_eq!(manifest(&sb, "t", "t.parquet")["kind"], "file");
    assert_eq!(
        sha256_file(&sb.checkout("t", "out").join("t.parquet")),
        sha256_file(&v2)
    );
    // Sorted the other way round: one jump back per row as well.
    let v3 = sb.join("v3/t.parquet");
    write_parquet(&v3, &[rows(&ids.iter().rev().copied().collect::<Vec<_>>(), 0)]);
    sb.add_commit(&v3, "t", Some("t~1"), "reversed");
    assert_eq!(manifest(&sb, "t", "t.parquet")["kind"], "file");
    // Two halves swapped: one jump, rows copied.
    let v4 = sb.join("v4/t.parquet");
    let swapped: Vec<i64> = (10_000..20_000).chain(0..10_000).collect();
    write_parquet(&v4, &[rows(&swapped, 0)]);
    sb.add_commit(&v4, "t", Some("t~2"), "halves swapped");
    assert_eq!(manifest(&sb, "t", "t.parquet")["kind"], "table");
    assert_same_table(&sb.checkout("t", "out4").join("t.parquet"), &v4);
}

#[test]
fn tables_are_found_by_their_bytes_and_kind_bytes_stores_them_as_plain_files() {
    let sb = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let ids: Vec<i64> = (0..5000).collect();
    // No table extension: found by PAR1 at both ends.
    let v1 = sb.join("v1/table.data");
    write_parquet(&v1, &[rows(&ids, 0)]);
    let v2 = sb.join("v2/table.data");
    write_parquet(&v2, &[rows(&ids[10..], 0)]);
    sb.add_commit(&v1, "t", None, "v1");
    sb.add_commit(&v2, "t", Some("t"), "v2");
    let m = manifest(&sb, "t", "table.data");
    assert_eq!(
        (m["kind"].as_str(), m["table"]["format"].as_str()),
        (Some("table"), Some("parquet"))
    );
    assert_same_table(&sb.checkout("t", "out").join("table.data"), &v2);
    // --kind table finds it the same way; --kind bytes stores it as bytes.
    let add_as = |kind: &str| {
        sb.run(&[
            "add",
            v2.to_str().unwrap(),
            "--name",
            "k",
            "--base",
            "t~1",
            "--kind",
            kind,
        ])
        .ok();
        sb.run(&["commit", "-m", &format!("as {kind}")]).ok();
        manifest(&sb, "k", "table.data")["kind"].clone()
    };
    assert_eq!(add_as("table"), "table");
    assert_eq!(add_as("bytes"), "file");
    assert_eq!(
        sha256_file(&sb.checkout("k", "out-k").join("table.data")),
        sha256_file(&v2)
    );
}

#[test]
fn gc_keeps_a_tables_piece_table_and_fsck_and_checkout_name_it_when_it_is_missing() {
    let sb = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let ids: Vec<i64> = (0..4000).collect();
    let v1 = sb.join("v1/t.parquet");
    write_parquet(&v1, &[rows(&ids, 0)]);
    let v2 = sb.join("v2/t.parquet");
    write_parquet(&v2, &[rows(&ids[..3900], 0), rows(&[9999], 0)]);
    sb.add_commit(&v1, "t", None, "v1");
    sb.add_commit(&v2, "t", Some("t"), "v2");
    let m = manifest(&sb, "t", "t.parquet");
    let key = m["table"]["pieces"].as_str().unwrap().to_string();
    let report = sb.json(&["gc"]);
    assert_eq!(report["blobs_removed"], 0, "gc keeps the piece table: {report}");
    assert_same_table(&sb.checkout("t", "after-gc").join("t.parquet"), &v2);
    std::fs::remove_file(sb.store().join("cas").join(&key)).unwrap();
    fsck_fails_naming(&sb, &[&key, "piece table"]);
    let out = sb.join("refused");
    let err = sb
        .run(&["checkout", "t", "-o", out.to_str().unwrap()])
        .failed()
        .to_string();
    assert!(err.contains(&key) && err.contains("t.parquet"), "{err}");
    assert!(!out.join("t.parquet").exists(), "no partial file");
    // The first version does not need it.
    assert_eq!(
        sha256_file(&sb.checkout("t~1", "out-v1").join("t.parquet")),
        sha256_file(&v1)
    );
}

#[test]
fn a_table_delta_pushed_and_cloned_checks_out_table_identical() {
    let local = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let remote = Sandbox::new();
    let ids: Vec<i64> = (0..4000).collect();
    let v1 = local.join("v1/t.parquet");
    write_parquet(&v1, &[rows(&ids, 0)]);
    let v2 = local.join("v2/t.parquet");
    write_parquet(&v2, &[rows(&ids[100..], 0), rows(&[7777, 8888], 2)]);
    local.add_commit(&v1, "t", None, "v1");
    local.add_commit(&v2, "t", Some("t"), "v2");
    assert_eq!(manifest(&local, "t", "t.parquet")["kind"], "table");
    let remote_path = remote.path().to_str().unwrap();
    local.run(&["remote", "add", "origin", remote_path]).ok();
    local.run(&["push", "origin"]).ok();
    remote.assert_fsck_ok();
    let clone = Sandbox::empty();
    let clone_path = clone.path().join("c");
    local.run(&["clone", remote_path, clone_path.to_str().unwrap()]).ok();
    let out = clone.path().join("out");
    run_in(&clone_path, &["checkout", "t", "-o", out.to_str().unwrap()], &[]).ok();
    assert_same_table(&out.join("t.parquet"), &v2);
}
