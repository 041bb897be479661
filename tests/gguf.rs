//! GGUF files (llama.cpp's models): each tensor is a segment coded against the base's tensor of
//! the same name, wherever the two files put it. A fine-tune's header names the fine-tune, so it
//! is seldom as long as its base's, and every tensor moves. Covered: the real pair written as
//! GGUF in F32 and in Q8_0, every GGML type of fixed size, empty tensors, another alignment,
//! tensors stored out of order; bad headers are refused naming the file and leave the store as
//! it was; tensors of a type sparse does not know leave the file stored as plain bytes. Needs
//! the real test data (scripts/fetch-testdata.sh); the real-pair tests fail, never skip,
//! without it.

mod common;

use std::path::Path;

use candle_core::quantized::{GgmlDType, QTensor};
use common::*;

/// A tensor to write: name, GGML type id, shape (outermost first, as safetensors has it) and
/// its bytes.
struct GgufTensor {
    name: String,
    ty: u32,
    shape: Vec<u64>,
    data: Vec<u8>,
}

fn gguf_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A GGUF v3 file: `general.name` = `name`, `general.alignment` if given, the tensor infos in
/// the order given, their data in `data_order` (indices into `tensors`), each at the next
/// multiple of the alignment.
fn gguf_bytes(name: &str, alignment: Option<u32>, tensors: &[GgufTensor], data_order: &[usize]) -> Vec<u8> {
    gguf_with_vocab(name, alignment, 0, tensors, data_order)
}

/// [`gguf_bytes`] with a `tokenizer.ggml.tokens` array of `vocab` tokens after the name, as
/// llama.cpp's models have (the same tokens for every `vocab`).
fn gguf_with_vocab(
    name: &str,
    alignment: Option<u32>,
    vocab: usize,
    tensors: &[GgufTensor],
    data_order: &[usize],
) -> Vec<u8> {
    let align = u64::from(alignment.unwrap_or(32));
    let mut offsets = vec![0u64; tensors.len()];
    let mut at = 0u64;
    for &i in data_order {
        offsets[i] = at;
        at = (at + tensors[i].data.len() as u64).next_multiple_of(align);
    }
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(1 + u64::from(alignment.is_some()) + u64::from(vocab > 0)).to_le_bytes());
    gguf_string(&mut out, "general.name");
    out.extend_from_slice(&8u32.to_le_bytes());
    gguf_string(&mut out, name);
    if vocab > 0 {
        gguf_string(&mut out, "tokenizer.ggml.tokens");
        out.extend_from_slice(&9u32.to_le_bytes());
        out.extend_from_slice(&8u32.to_le_bytes());
        out.extend_from_slice(&(vocab as u64).to_le_bytes());
        let mut rng = Lcg::new(7);
        for i in 0..vocab {
            let len = 1 + rng.below(9) as usize;
            let token: String = (0..len).map(|_| (b'a' + rng.below(26) as u8) as char).collect();
            gguf_string(&mut out, &format!("{token}{i}"));
        }
    }
    if let Some(a) = alignment {
        gguf_string(&mut out, "general.alignment");
        out.extend_from_slice(&4u32.to_le_bytes());
        out.extend_from_slice(&a.to_le_bytes());
    }
    for (t, offset) in tensors.iter().zip(&offsets) {
        gguf_string(&mut out, &t.name);
        out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in t.shape.iter().rev() {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ty.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
    }
    let data_start = (out.len() as u64).next_multiple_of(align);
    for &i in data_order {
        out.resize((data_start + offsets[i]) as usize, 0);
        out.extend_from_slice(&tensors[i].data);
    }
    out
}

/// The tensors of the real safetensors file `path`, as GGUF tensors of type `ty` (matrices
/// whose rows are whole blocks of it; everything else F32, as llama.cpp's converters keep
/// vectors), in name order.
fn real_tensors(path: &Path, ty: GgmlDType) -> Vec<GgufTensor> {
    let mut tensors: Vec<_> = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .expect("the real model loads")
        .into_iter()
        .filter(|(_, t)| t.dtype() == candle_core::DType::F32)
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
        .into_iter()
        .map(|(name, t)| {
            let fits = t.dims().len() >= 2 && t.dims().last().is_some_and(|&d| d % ty.block_size() == 0);
            let ty = if fits { ty } else { GgmlDType::F32 };
            let q = QTensor::quantize(&t, ty).expect("quantizes");
            GgufTensor {
                name,
                ty: match ty {
                    GgmlDType::F32 => 0,
                    GgmlDType::Q8_0 => 8,
                    other => panic!("not used here: {other:?}"),
                },
                shape: t.dims().iter().map(|&d| d as u64).collect(),
                data: q.data().expect("its bytes").into_owned(),
            }
        })
        .collect()
}

fn growth(sb: &Sandbox, source: &Path, name: &str, base: Option<&str>) -> f64 {
    let before = dir_bytes(&sb.store()) as f64;
    sb.add_commit(source, name, base, name);
    (dir_bytes(&sb.store()) as f64 - before) / std::fs::metadata(source).expect("the source").len() as f64
}

/// Stores the real pair written as GGUF of type `ty`: the fine-tune under its own, longer name
/// and with its tensors' data in reverse order, so that no tensor lies where the base's does.
/// Returns the fine-tune's growth of the store over its size.
fn real_pair(ty: GgmlDType) -> f64 {
    let data = real_data();
    let base = real_tensors(&data.join("base.safetensors"), ty);
    let tuned = real_tensors(&data.join("finetune.safetensors"), ty);
    let forward: Vec<usize> = (0..base.len()).collect();
    let backward: Vec<usize> = (0..tuned.len()).rev().collect();
    let base = gguf_bytes("all-MiniLM-L6-v2", None, &base, &forward);
    let tuned = gguf_bytes(
        "all-MiniLM-L6-v2 fine-tuned for SRE embeddings",
        None,
        &tuned,
        &backward,
    );
    let sb = Sandbox::new();
    let b = sb.write("base/model.gguf", &base);
    let t = sb.write("tuned/model.gguf", &tuned);
    growth(&sb, &b, "base", None);
    let estimate = sb.json(&["estimate", t.to_str().unwrap(), "--base", "base"]);
    assert_eq!(estimate["matched_tensors"], 103, "{estimate}");
    let delta = growth(&sb, &t, "tuned", Some("base"));
    // The estimate codes samples of the tensors as add codes them.
    let expected = estimate["bytes"].as_f64().unwrap() / tuned.len() as f64;
    assert!(
        (expected - delta).abs() < 0.25 * delta,
        "estimated {expected:.4}, stored {delta:.4}"
    );
    let show = sb.json(&["show", "tuned"]);
    let tensors = show["tensors"].as_array().expect("a tensor list");
    assert_eq!(tensors.len(), 103, "{show}");
    for t in tensors {
        assert_eq!(t["parent"], t["name"], "paired by name: {t}");
    }
    let out = sb.checkout("tuned", "out");
    assert_eq!(sha256_file(&out.join("model.gguf")), sha256_bytes(&tuned));
    let out = sb.checkout("base", "out-base");
    assert_eq!(sha256_file(&out.join("model.gguf")), sha256_bytes(&base));
    sb.assert_fsck_ok();
    delta
}

#[test]
fn the_real_pair_as_f32_gguf_stores_as_its_safetensors_do() {
    let delta = real_pair(GgmlDType::F32);
    eprintln!("F32 GGUF fine-tune on its base: {delta:.4} of raw");
    // The bar of tests/real_pair.rs for the same weights as safetensors.
    assert!(delta <= 0.36, "the fine-tune grew the store by {delta:.4} of its size");
}

#[test]
fn the_real_pair_as_q8_0_gguf_stores_as_a_delta() {
    let delta = real_pair(GgmlDType::Q8_0);
    eprintln!("Q8_0 GGUF fine-tune on its base: {delta:.4} of raw");
    // zstd -19 of the fine-tune alone keeps 0.96 of it, zstd --patch-from 0.42 (docs/PERFORMANCE.md).
    assert!(delta <= 0.2, "the fine-tune grew the store by {delta:.4} of its size");
}

/// Tensors of every fixed-size GGML type sparse reads as numbers, an empty one, and two
/// block-quantized ones (coded as bytes and as whole blocks), with data from `seed`.
fn every_type(seed: u64) -> Vec<GgufTensor> {
    let mut rng = Lcg::new(seed);
    // (name, type id, elements per block, bytes per block, shape)
    let kinds: [(&str, u32, u64, u64, Vec<u64>); 11] = [
        ("f32", 0, 1, 4, vec![33, 7]),
        ("f16", 1, 1, 2, vec![5, 3, 11]),
        ("bf16", 30, 1, 2, vec![129]),
        ("f64", 28, 1, 8, vec![2, 2, 2, 9]),
        ("i8", 24, 1, 1, vec![1001]),
        ("i16", 25, 1, 2, vec![17, 3]),
        ("i32", 26, 1, 4, vec![64]),
        ("i64", 27, 1, 8, vec![3, 5]),
        ("empty", 0, 1, 4, vec![0, 384]),
        ("q4_k", 12, 256, 144, vec![3, 512]),
        ("q4_0", 2, 32, 18, vec![5, 64]),
    ];
    kinds
        .into_iter()
        .map(|(name, ty, block, size, shape)| {
            let elements: u64 = shape.iter().product();
            let bytes = elements / block * size;
            GgufTensor {
                name: format!("blk.0.{name}.weight"),
                ty,
                shape,
                data: rng.bytes(bytes as usize),
            }
        })
        .collect()
}

#[test]
fn every_type_shape_and_layout_round_trips_and_pairs_by_name() {
    let sb = Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 256);
    let base = every_type(1);
    let order: Vec<usize> = (0..base.len()).collect();
    let base_bytes = gguf_bytes("base", None, &base, &order);
    // The fine-tune: a few bytes of each tensor changed, another alignment, its data in
    // another order than its infos.
    let mut tuned = every_type(1);
    for (i, t) in tuned.iter_mut().enumerate() {
        for k in (i..t.data.len()).step_by(13) {
            t.data[k] ^= 1;
        }
    }
    let shuffled: Vec<usize> = [3, 9, 0, 8, 10, 1, 7, 2, 6, 4, 5].to_vec();
    let tuned_bytes = gguf_bytes("a fine-tune of base", Some(64), &tuned, &shuffled);
    let b = sb.write("b/model.gguf", &base_bytes);
    let t = sb.write("t/model.gguf", &tuned_bytes);
    sb.add_commit(&b, "base", None, "base");
    sb.add_commit(&t, "tuned", Some("base"), "tuned");
    let show = sb.json(&["show", "tuned"]);
    let tensors = show["tensors"].as_array().expect("a tensor list");
    assert_eq!(tensors.len(), base.len(), "{show}");
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        assert_eq!(t["parent"], t["name"], "{t}");
        let dtype = t["dtype"].as_str().unwrap();
        let expected = match name.split('.').nth(2).unwrap() {
            "empty" => "F32",
            other => other,
        };
        assert_eq!(dtype, expected.to_uppercase(), "{t}");
        if name.contains("f64") {
            assert_eq!(t["shape"], serde_json::json!([2, 2, 2, 9]), "outermost first: {t}");
        }
    }
    let out = sb.checkout("tuned", "out");
    assert_eq!(sha256_file(&out.join("model.gguf")), sha256_bytes(&tuned_bytes));
    let out = sb.checkout("base", "out-base");
    assert_eq!(sha256_file(&out.join("model.gguf")), sha256_bytes(&base_bytes));
    sb.assert_fsck_ok();
    // The diff pairs tensors by name too: every one but the empty tensor changed.
    let diff = sb.json(&["diff", "base", "tuned"]);
    let changed = diff["tensors"]
        .as_array()
        .expect("tensors")
        .iter()
        .filter(|t| t["change"] == "changed")
        .count();
    assert_eq!(changed, base.len() - 1, "{diff}");
}

#[test]
fn a_fine_tunes_header_costs_little_when_only_its_name_changed() {
    // 40,000 tokens (about 470 KB of metadata), after names of different lengths.
    let tensors = every_type(6);
    let order: Vec<usize> = (0..tensors.len()).collect();
    let base = gguf_with_vocab("base", None, 40_000, &tensors, &order);
    let tuned = gguf_with_vocab("a fine-tune of base, named at length", None, 40_000, &tensors, &order);
    let sb = Sandbox::new();
    sb.add_commit(&sb.write("b/model.gguf", &base), "base", None, "base");
    let before = dir_bytes(&sb.store());
    sb.add_commit(&sb.write("t/model.gguf", &tuned), "tuned", Some("base"), "tuned");
    let grown = dir_bytes(&sb.store()) - before;
    // The tensors are the base's. The vocabulary's chunks are too (stored whole, found by
    // their hash): what the fine-tune adds is its first pair, the tensor infos, and the
    // commit with its manifest.
    let alone = Sandbox::new();
    alone.add_commit(&alone.write("t/model.gguf", &tuned), "tuned", None, "tuned");
    eprintln!(
        "the fine-tune grew the store by {grown} bytes; alone a store takes {}",
        dir_bytes(&alone.store())
    );
    assert!(grown < 16 << 10, "the fine-tune grew the store by {grown} bytes");
    let out = sb.checkout("tuned", "out");
    assert_eq!(sha256_file(&out.join("model.gguf")), sha256_bytes(&tuned));
}

#[test]
fn lossy_tiers_leave_gguf_tensors_exact_and_say_so() {
    let sb = Sandbox::new();
    let order: Vec<usize> = (0..11).collect();
    sb.add_commit(
        &sb.write("b/model.gguf", &gguf_bytes("b", None, &every_type(8), &order)),
        "base",
        None,
        "b",
    );
    let mut tuned = every_type(8);
    tuned[0].data[0] ^= 1;
    let bytes = gguf_bytes("t", None, &tuned, &order);
    let t = sb.write("t/model.gguf", &bytes);
    let args = [
        "add",
        t.to_str().unwrap(),
        "--name",
        "t",
        "--base",
        "base",
        "--lossy",
        "int8",
    ];
    let text = sb.run(&args).ok().stdout.clone();
    assert!(text.contains("stored exactly: model.gguf"), "{text}");
    let mut json = vec!["--json"];
    json.extend_from_slice(&args);
    let report = sb.run(&json).ok().json();
    assert_eq!(report["lossless"], serde_json::json!(["model.gguf"]), "{report}");
    assert!(report.get("lossy").is_none(), "{report}");
    sb.run(&["commit", "-m", "t"]).ok();
    let out = sb.checkout("t", "out");
    assert_eq!(sha256_file(&out.join("model.gguf")), sha256_bytes(&bytes));
}

#[test]
fn bad_gguf_headers_are_refused_naming_the_file_and_leave_the_store_as_it_was() {
    let good = gguf_bytes("base", None, &every_type(2), &(0..11).collect::<Vec<_>>());
    let sb = Sandbox::new();
    sb.add_commit(&sb.write("ok/model.gguf", &good), "good", None, "good");
    let refused = |name: &str, bytes: &[u8], mention: &str| {
        let path = sb.write(&format!("bad/{name}.gguf"), bytes);
        let before = store_snapshot(&sb.store());
        let run = sb.run(&["add", path.to_str().unwrap(), "--name", "bad"]);
        let err = run.failed();
        assert!(err.contains(&format!("{name}.gguf")), "names the file: {err}");
        assert!(err.contains(mention), "mentions {mention:?}: {err}");
        assert_unchanged(&before, &store_snapshot(&sb.store()), name);
    };
    // Cut inside the metadata, the tensor infos, and the data.
    refused("cut-metadata", &good[..30], "ends at byte 30");
    refused("cut-infos", &good[..120], "GGUF header");
    refused("cut-data", &good[..good.len() - 1], "beyond the");
    // A tensor count, a string length and an array length far beyond the file.
    let mut count = good.clone();
    count[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    refused("count", &count, "do not fit");
    let mut string = good.clone();
    string[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    refused("string", &string, "ends at byte");
    let mut array = b"GGUF".to_vec();
    array.extend_from_slice(&3u32.to_le_bytes());
    array.extend_from_slice(&0u64.to_le_bytes());
    array.extend_from_slice(&1u64.to_le_bytes());
    gguf_string(&mut array, "tokenizer.ggml.scores");
    array.extend_from_slice(&9u32.to_le_bytes());
    array.extend_from_slice(&6u32.to_le_bytes());
    array.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
    refused("array", &array, "tokenizer.ggml.scores");
    // Two tensors over the same bytes.
    let mut two = every_type(3);
    two.truncate(2);
    two[1].data = two[0].data.clone();
    two[1].ty = 0;
    two[1].shape = two[0].shape.clone();
    let mut overlap = gguf_bytes("x", None, &two, &[0, 1]);
    let at = overlap
        .windows(13)
        .position(|w| w == b"blk.0.f16.wei")
        .expect("the second info");
    let offset_at = at + "blk.0.f16.weight".len() + 4 + 8 * two[1].shape.len() + 4;
    overlap[offset_at..offset_at + 8].copy_from_slice(&0u64.to_le_bytes());
    refused("overlap", &overlap, "overlaps tensor");
    // A tensor whose elements are not whole blocks of its type.
    let mut ragged = every_type(4);
    ragged[9].shape = vec![3, 500];
    refused(
        "ragged",
        &gguf_bytes("x", None, &ragged, &(0..11).collect::<Vec<_>>()),
        "whole Q4_K blocks",
    );
}

#[test]
fn gguf_files_sparse_does_not_read_are_stored_as_plain_bytes() {
    let mut tensors = every_type(5);
    tensors[0].ty = 250;
    let future = gguf_bytes("future", None, &tensors, &(0..11).collect::<Vec<_>>());
    let mut v1 = gguf_bytes("old", None, &every_type(5), &(0..11).collect::<Vec<_>>());
    v1[4] = 1;
    let pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 4368\n".to_vec();
    for (name, bytes) in [
        ("future", future),
        ("v1", v1),
        ("pointer", pointer),
        ("empty", Vec::new()),
    ] {
        let sb = Sandbox::new();
        sb.add_commit(&sb.write("in/model.gguf", &bytes), "m", None, "m");
        let show = sb.json(&["show", "m"]);
        assert_eq!(show["tensors"].as_array().map(Vec::len), Some(0), "{name}: {show}");
        if !bytes.is_empty() {
            assert_eq!(show["files"][0]["kind"], "file", "{name}: {show}");
        }
        let out = sb.checkout("m", "out");
        assert_eq!(sha256_file(&out.join("model.gguf")), sha256_bytes(&bytes), "{name}");
    }
}

/// Tensors named as in one model, in `ty` (2: Q4_0, 8: Q8_0), with random blocks from `seed`.
fn quantized(ty: u32, seed: u64) -> Vec<GgufTensor> {
    let block_bytes = if ty == 2 { 18 } else { 34 };
    let mut rng = Lcg::new(seed);
    (0..4)
        .map(|i| GgufTensor {
            name: format!("blk.{i}.ffn_up.weight"),
            ty,
            shape: vec![64, 256],
            data: rng.bytes(64 * 256 / 32 * block_bytes),
        })
        .collect()
}

#[test]
fn a_folder_of_quantizations_pairs_each_file_with_its_own() {
    let sb = Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 4096);
    let order: Vec<usize> = (0..4).collect();
    for (dir, seed) in [("base", 1), ("tuned", 1)] {
        for ty in [2, 8] {
            let mut tensors = quantized(ty, seed + u64::from(ty));
            if dir == "tuned" {
                // Every tensor but the first changes in a few bytes.
                for t in &mut tensors[1..] {
                    for k in (0..t.data.len()).step_by(97) {
                        t.data[k] ^= 4;
                    }
                }
            }
            let name = if ty == 2 { "m.Q4_0.gguf" } else { "m.Q8_0.gguf" };
            sb.write(&format!("{dir}/{name}"), &gguf_bytes(dir, None, &tensors, &order));
        }
    }
    sb.add_commit(&sb.join("base"), "base", None, "base");
    let before = dir_bytes(&sb.store());
    sb.add_commit(&sb.join("tuned"), "tuned", Some("base"), "tuned");
    let grown = (dir_bytes(&sb.store()) - before) as f64;
    let raw = (dir_bytes(&sb.join("tuned"))) as f64;
    let show = sb.json(&["show", "tuned"]);
    let tensors = show["tensors"].as_array().expect("tensors");
    assert_eq!(tensors.len(), 8, "{show}");
    for t in tensors {
        assert_eq!(t["parent"], t["name"], "every tensor has a parent: {t}");
    }
    // Random blocks with one byte in 97 changed: a third of raw at most (as whole: all of it).
    assert!(
        grown < 0.35 * raw,
        "the fine-tune grew the store by {grown} of {raw} bytes"
    );
    // The diff pairs each file's tensors with the same file's: three changed in each.
    let diff = sb.json(&["diff", "base", "tuned", "--all"]);
    let rows = diff["tensors"].as_array().expect("tensors");
    assert_eq!(rows.len(), 8, "{diff}");
    for r in rows {
        let first = r["name"] == "blk.0.ffn_up.weight";
        let expected = if first { "unchanged" } else { "changed" };
        assert_eq!(r["change"], expected, "{r}");
        assert_eq!(r["a"]["file"], r["b"]["file"], "{r}");
    }
    let out = sb.checkout("tuned", "out");
    assert_eq!(tree_hashes(&out), tree_hashes(&sb.join("tuned")));
}

#[test]
fn quantized_tensors_stored_in_other_chunk_sizes_diff_as_unchanged() {
    let sb = Sandbox::new();
    let bytes = gguf_bytes("m", None, &quantized(8, 3), &[0, 1, 2, 3]);
    let path = sb.write("in/m.gguf", &bytes);
    let p = path.to_str().unwrap();
    for (name, chunk) in [("small", "4096"), ("large", "8192")] {
        run_in(
            sb.path(),
            &["add", p, "--name", name],
            &[("SPARSE_CHUNK_SIZE", chunk.to_string())],
        )
        .ok();
        sb.run(&["commit", "-m", name]).ok();
    }
    let diff = sb.json(&["diff", "small", "large", "--all"]);
    let rows = diff["tensors"].as_array().expect("tensors");
    assert_eq!(rows.len(), 4, "{diff}");
    assert!(rows.iter().all(|r| r["change"] == "unchanged"), "{diff}");
}
