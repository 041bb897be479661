//! Every safetensors dtype, empty tensors, scalars and odd shapes survive add, commit and
//! checkout bit for bit, as a base and as a fine-tune coded against it, with chunks small
//! enough that every tensor spans many chunks and ends on a partial one.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;

/// One tensor of every dtype plus the awkward cases: empty (a 0 in the shape), scalars
/// (shape []) and shapes that are neither powers of two nor multiples of a chunk.
fn model(seed: u64) -> Vec<Tensor> {
    let mut tensors = Vec::new();
    for (i, (dtype, bits)) in DTYPES.iter().enumerate() {
        let shape: &[u64] = match bits {
            // Sub-byte types need element counts that fill whole bytes.
            4 => &[10, 7],
            6 => &[4, 9],
            _ => &[10, 13],
        };
        tensors.push(Tensor::random(
            &format!("t.{}", dtype.to_lowercase()),
            dtype,
            shape,
            seed + i as u64,
        ));
    }
    let odd: &[(&str, &str, &[u64])] = &[
        ("empty.f32", "F32", &[0]),
        ("empty.bf16", "BF16", &[3, 0, 2]),
        ("empty.f4", "F4", &[0, 5]),
        ("empty.c64", "C64", &[7, 0]),
        ("scalar.f64", "F64", &[]),
        ("scalar.u8", "U8", &[]),
        ("scalar.c64", "C64", &[]),
        ("scalar.bf16", "BF16", &[]),
        ("odd.f32", "F32", &[3, 5, 7]),
        ("odd.i16", "I16", &[1, 1, 1, 13]),
        ("odd.f8", "F8_E4M3", &[5, 1, 3]),
        ("odd.f64", "F64", &[1, 1]),
        ("odd.f6", "F6_E3M2", &[4, 1, 1]),
    ];
    for (i, (name, dtype, shape)) in odd.iter().enumerate() {
        tensors.push(Tensor::random(name, dtype, shape, seed + 100 + i as u64));
    }
    tensors
}

/// The name of the one tensor the fine-tune leaves exactly as it was.
const UNCHANGED: &str = "t.i32";

fn finetune(base: &[Tensor]) -> Vec<Tensor> {
    let mut out: Vec<Tensor> = base
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.name == UNCHANGED {
                t.clone()
            } else {
                t.finetuned(0.3, 1000 + i as u64)
            }
        })
        .collect();
    // A different data layout from the base: parents are found by name, not by position.
    out.reverse();
    out
}

fn tensors_of(show: &Value) -> BTreeMap<String, Value> {
    show["tensors"]
        .as_array()
        .expect("show lists tensors")
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t.clone()))
        .collect()
}

/// Adds the all-dtypes model and its fine-tune at `chunk_size` and checks everything.
fn round_trip(chunk_size: Option<u64>) {
    let mut sb = Sandbox::new();
    if let Some(cs) = chunk_size {
        sb = sb.with_env("SPARSE_CHUNK_SIZE", cs);
    }
    let base = model(7);
    let tuned = finetune(&base);
    assert_eq!(base.len(), tuned.len());
    let (base_bytes, tuned_bytes) = (
        safetensors_bytes(&base, &[("format", "pt")]),
        safetensors_bytes(&tuned, &[]),
    );
    assert_reference_reads(&base_bytes, &base);
    assert_reference_reads(&tuned_bytes, &tuned);
    let base_file = sb.write("in/base/model.safetensors", &base_bytes);
    let tuned_file = sb.write("in/tuned/model.safetensors", &tuned_bytes);
    let changed: Vec<&str> = base
        .iter()
        .filter(|b| tuned.iter().any(|t| t.name == b.name && t.data != b.data))
        .map(|b| b.name.as_str())
        .collect();
    assert!(changed.len() > 20, "the fine-tune changes most tensors: {changed:?}");

    let base_id = sb.add_commit(&base_file, "allbase", None, "every dtype");
    let tuned_id = sb.add_commit(&tuned_file, "alltuned", Some("allbase"), "every dtype, tuned");
    assert_ne!(base_id, tuned_id);

    for (rev, input, dir) in [
        ("allbase", &base_file, "out/base"),
        ("alltuned", &tuned_file, "out/tuned"),
    ] {
        let out = sb.checkout(rev, dir);
        assert_eq!(
            sha256_file(&out.join("model.safetensors")),
            sha256_file(input),
            "{rev} checks out bit for bit (chunk size {chunk_size:?})"
        );
        assert_eq!(tree_hashes(&out).len(), 1, "only the model file is written");
    }

    // show --json: every tensor listed with its dtype, shape and codec.
    let show_base = sb.json(&["show", "allbase"]);
    let show_tuned = sb.json(&["show", "alltuned"]);
    assert_eq!(show_base["commit"], base_id);
    assert_eq!(show_tuned["commit"], tuned_id);
    assert_eq!(show_tuned["base"], base_id, "the fine-tune records its base");
    assert!(show_base["base"].is_null());
    let (bt, tt) = (tensors_of(&show_base), tensors_of(&show_tuned));
    for (tensors, input) in [(&bt, &base), (&tt, &tuned)] {
        assert_eq!(tensors.len(), input.len(), "one row per tensor");
        for t in input.iter() {
            let row = &tensors[&t.name];
            assert_eq!(row["dtype"], t.dtype.as_str(), "{}", t.name);
            assert_eq!(row["shape"], serde_json::json!(t.shape), "{}", t.name);
            assert_eq!(row["raw_bytes"], t.data.len() as u64, "{}", t.name);
        }
    }
    for t in &base {
        let row = &bt[&t.name];
        let expected = if t.data.is_empty() { "empty" } else { "full" };
        assert_eq!(row["codec"], expected, "base tensor {} has no parent: {row}", t.name);
        assert!(row["parent"].is_null(), "{row}");
    }
    for t in &tuned {
        let row = &tt[&t.name];
        assert_eq!(
            row["parent"],
            t.name.as_str(),
            "{} is coded against its base: {row}",
            t.name
        );
        let codec = row["codec"].as_str().unwrap();
        if t.data.is_empty() {
            assert_eq!(codec, "empty", "{row}");
        } else if t.name == UNCHANGED {
            assert_eq!(codec, "same", "an unchanged tensor stores nothing: {row}");
            assert_eq!(row["stored_bytes"], 0, "{row}");
        } else if changed.contains(&t.name.as_str()) {
            assert!(
                ["sub", "subctx", "xor", "mixed"].contains(&codec),
                "a changed tensor is stored as a delta: {row}"
            );
        }
    }
    let codecs: Vec<&str> = tt.values().map(|r| r["codec"].as_str().unwrap()).collect();
    assert!(codecs.contains(&"same") && codecs.contains(&"empty"), "{codecs:?}");

    // The manifest in the snapshot tree (read with git itself) cuts every tensor into chunks of
    // whole elements no larger than the chunk size asked for.
    let manifest = git(&sb.store(), &["show", &format!("{tuned_id}:model.safetensors")]);
    assert!(
        manifest.status.success(),
        "{}",
        String::from_utf8_lossy(&manifest.stderr)
    );
    let manifest: Value = serde_json::from_slice(&manifest.stdout).expect("a JSON manifest");
    let segments = manifest["segments"].as_array().expect("segments");
    assert_eq!(segments.len(), tuned.len() + 1, "a header segment, then one per tensor");
    let mut multi = 0;
    for seg in segments {
        let (len, cs, width) = (
            seg["len"].as_u64().unwrap(),
            seg["chunk_size"].as_u64().unwrap(),
            seg["width"].as_u64().unwrap(),
        );
        assert!(cs > 0 && cs % width == 0, "{seg}");
        if let Some(limit) = chunk_size {
            assert!(
                cs <= limit && cs + width > limit,
                "chunks of {limit} bytes, in whole elements: {seg}"
            );
        }
        assert_eq!(
            seg["chunks"].as_array().unwrap().len() as u64,
            len.div_ceil(cs),
            "{seg}"
        );
        if let Some(t) = seg["tensor"].as_object() {
            assert_eq!(width as usize, element_width(t["dtype"].as_str().unwrap()), "{seg}");
        }
        multi += usize::from(len > cs);
    }
    if chunk_size.is_some() {
        assert!(multi > 20, "most tensors span several chunks");
    }

    let report = sb.assert_fsck_ok();
    assert!(report["objects"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn every_dtype_round_trips_with_24_byte_chunks() {
    round_trip(Some(24));
}

#[test]
fn every_dtype_round_trips_with_13_byte_chunks() {
    // 13 is no multiple of any element width: chunks round down to 8, 12 or 13 bytes.
    round_trip(Some(13));
}

#[test]
fn every_dtype_round_trips_with_the_default_chunk_size() {
    round_trip(None);
}

#[test]
fn a_model_with_only_empty_tensors_round_trips() {
    let sb = Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 8);
    let tensors = vec![
        Tensor::random("a", "F32", &[0], 1),
        Tensor::random("b", "U8", &[2, 0], 2),
    ];
    let file = sb.write("in/empty.safetensors", &safetensors_bytes(&tensors, &[]));
    sb.add_commit(&file, "empty", None, "empty tensors only");
    let out = sb.checkout("empty", "out");
    assert_eq!(sha256_file(&out.join("empty.safetensors")), sha256_file(&file));
    sb.assert_fsck_ok();
}

#[test]
fn a_model_without_tensors_round_trips() {
    let sb = Sandbox::new();
    let file = sb.write("in/none.safetensors", &safetensors_bytes(&[], &[("k", "v")]));
    sb.add_commit(&file, "none", None, "no tensors");
    let out = sb.checkout("none", "out");
    assert_eq!(sha256_file(&out.join("none.safetensors")), sha256_file(&file));
    let show = sb.json(&["show", "none"]);
    assert_eq!(show["tensors"].as_array().map(Vec::len), Some(0), "{show}");
    sb.assert_fsck_ok();
}
