//! The committed tiny model and its fine-tune (fixtures/): added as base and `--base` fine-tune,
//! both directories check out file for file; tensors whose name and shape match are coded
//! against the base, the rest (added, reshaped) stand alone.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

fn rows(show: &Value, key: &str, field: &str) -> BTreeMap<String, Value> {
    show[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[field].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

fn round_trip(sb: &Sandbox, small_files_verbatim: bool) {
    let (base, tuned) = (fixture("tiny-model"), fixture("tiny-finetune"));
    let base_id = sb.add_commit(&base, "tiny", None, "tiny base");
    let tuned_id = sb.add_commit(&tuned, "tiny-ft", Some("tiny"), "tiny fine-tune");
    for (rev, src, dir) in [("tiny", &base, "out/base"), ("tiny-ft", &tuned, "out/ft")] {
        let out = sb.checkout(rev, dir);
        assert_eq!(tree_hashes(&out), tree_hashes(src), "{rev} checks out file for file");
    }
    let checkout = sb.json(&["checkout", "tiny-ft", "-o", sb.join("out/json").to_str().unwrap()]);
    assert_eq!(checkout["commit"], tuned_id.as_str());
    assert_eq!(checkout["files"], 3);
    assert_eq!(checkout["bytes"], dir_bytes(&tuned));

    let show = sb.json(&["show", "tiny-ft"]);
    assert_eq!(show["base"], base_id.as_str());
    let files = rows(&show, "files", "path");
    // Coded, a text file with a counterpart in the base is stored as records when it shares
    // most of them, else as plain bytes.
    for f in ["config.json", "tokenizer.json"] {
        let kind = files[f]["kind"].as_str().unwrap();
        match small_files_verbatim {
            true => assert_eq!(kind, "git", "{f}"),
            false => assert!(["file", "records"].contains(&kind), "{f}: {kind}"),
        }
    }
    assert_eq!(files["model.safetensors"]["kind"], "safetensors");

    let tensors = rows(&show, "tensors", "name");
    assert_eq!(tensors.len(), 9);
    assert!(!tensors.contains_key("pooler.dense.weight"));
    for (name, row) in &tensors {
        let codec = row["codec"].as_str().unwrap();
        match name.as_str() {
            // New, or reshaped: nothing in the base to be a delta against.
            "classifier.weight" | "embeddings.word_embeddings.weight" => {
                assert!(row["parent"].is_null(), "{row}");
                assert_eq!(codec, "full", "{row}");
            }
            "embeddings.position_ids" | "attention.mask_template" => {
                assert_eq!(row["parent"], name.as_str(), "{row}");
                assert_eq!(codec, "same", "{row}");
                assert_eq!(row["stored_bytes"], 0, "{row}");
            }
            _ => {
                assert_eq!(row["parent"], name.as_str(), "{row}");
                assert!(["sub", "subctx", "xor", "mixed"].contains(&codec), "{row}");
            }
        }
    }
    let log = sb.json(&["log"]);
    assert_eq!(log["commits"].as_array().unwrap().len(), 2);
    sb.assert_fsck_ok();
}

#[test]
fn the_tiny_fine_tune_round_trips_on_its_base() {
    round_trip(&Sandbox::new(), true);
}

#[test]
fn the_tiny_fine_tune_round_trips_with_small_chunks_and_every_file_coded() {
    // Every file gets a manifest (even the JSON files), and tensors span many chunks.
    let sb = Sandbox::new()
        .with_env("SPARSE_CHUNK_SIZE", 40)
        .with_env("SPARSE_SMALL_FILE", 0)
        .with_env("SPARSE_ZSTD_LEVEL", 19);
    round_trip(&sb, false);
}

#[test]
fn the_tiny_model_added_twice_stores_nothing_new() {
    let sb = Sandbox::new();
    sb.add_commit(&fixture("tiny-model"), "one", None, "one");
    let report = sb.json(&["add", fixture("tiny-model").to_str().unwrap(), "--name", "two"]);
    assert_eq!(report["stored_bytes"], 0, "the same files dedup entirely: {report}");
    let one = git(&sb.store(), &["rev-parse", "one^{tree}"]);
    sb.run(&["commit", "-m", "two"]).ok();
    let two = git(&sb.store(), &["rev-parse", "two^{tree}"]);
    assert_eq!(one.stdout, two.stdout, "one snapshot tree");
}
