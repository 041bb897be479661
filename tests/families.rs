//! Model families: `--base auto`, chains of fine-tunes and their depth bound, store-wide reuse
//! of identical chunks, `estimate` and `family`.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn sha(p: &Path) -> String {
    sha256_file(p)
}

#[track_caller]
fn assert_checks_out(sb: &Sandbox, rev: &str, file: &str, sha256: &str) {
    let out = sb.checkout(rev, &format!("out-{}", rev.replace('~', "-")));
    assert_eq!(sha(&out.join(file)), sha256, "{rev} must check out bit-exact");
}

/// The real base's header with seeded noise for data: same names, dtypes and shapes, nothing
/// else in common.
fn lookalike(sb: &Sandbox, base: &Path, seed: u64) -> PathBuf {
    let bytes = std::fs::read(base).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize + 8;
    let mut out = bytes[..n].to_vec();
    out.extend(Lcg::new(seed).bytes(bytes.len() - n));
    sb.write(&format!("in/lookalike-{seed}/model.safetensors"), &out)
}

#[test]
fn base_auto_picks_the_real_base_among_unrelated_models() {
    let data = real_data();
    let sb = Sandbox::new();
    let base = data.join("base.safetensors");
    let ft = data.join("finetune.safetensors");
    sb.add_commit(&lookalike(&sb, &base, 1), "lookalike", None, "same shapes, random data");
    sb.add_commit(
        &lookalike(&sb, &base, 2),
        "lookalike-2",
        None,
        "same shapes, random data",
    );
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    sb.add_commit(&fixtures.join("tiny-model"), "tiny", None, "unrelated");
    sb.add_commit(&fixtures.join("tiny-finetune"), "tiny-ft", None, "unrelated");
    let minilm = sb.add_commit(&base, "minilm", None, "the real base");

    let report = sb.json(&["add", ft.to_str().unwrap(), "--name", "ft", "--base", "auto"]);
    let choice = &report["base_choice"];
    assert_eq!(choice["chosen"]["name"], "minilm", "{choice}");
    assert_eq!(report["base"], minilm.as_str(), "{report}");
    let candidates = choice["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 5, "every name is considered: {choice}");
    let estimate = |name: &str| {
        candidates.iter().find(|c| c["name"] == name).unwrap()["estimated_bytes"]
            .as_u64()
            .unwrap_or(u64::MAX)
    };
    assert!(estimate("minilm") * 2 < estimate("lookalike"), "{choice}");
    for c in candidates
        .iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with("tiny"))
    {
        assert_eq!(c["matched_tensors"], 0, "no shared tensor: {c}");
    }
    sb.run(&["commit", "-m", "fine-tune"]).ok();
    assert_checks_out(&sb, "ft", "finetune.safetensors", &sha(&ft));
}

#[test]
fn base_auto_stores_alone_when_nothing_is_close() {
    let sb = Sandbox::new();
    let a = sb.write(
        "in/a/model.safetensors",
        &safetensors_bytes(&[Tensor::random("w", "F32", &[64, 64], 1)], &[]),
    );
    let b = sb.write(
        "in/b/model.safetensors",
        &safetensors_bytes(&[Tensor::random("v", "F32", &[64, 64], 2)], &[]),
    );
    sb.add_commit(&a, "a", None, "a");
    let report = sb.json(&["add", b.to_str().unwrap(), "--name", "b", "--base", "auto"]);
    assert!(report["base_choice"]["chosen"].is_null(), "{report}");
    assert!(report["base"].is_null(), "{report}");
}

#[test]
fn a_byte_identical_copy_under_another_name_costs_almost_nothing() {
    let data = real_data();
    let sb = Sandbox::new();
    let base = data.join("base.safetensors");
    sb.add_commit(&base, "base", None, "base");
    let before = dir_bytes(&sb.store());
    sb.add_commit(&base, "copy", None, "the same bytes again");
    let growth = dir_bytes(&sb.store()) - before;
    let raw = std::fs::metadata(&base).unwrap().len();
    assert!(growth * 1000 < raw, "a copy added {growth} bytes of {raw}");
}

#[test]
fn an_identical_tensor_is_stored_once_whatever_its_name_or_model() {
    let sb = Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 4096);
    let shared = Tensor::random("shared.weight", "F32", &[128, 64], 9);
    let a = sb.write(
        "in/a/model.safetensors",
        &safetensors_bytes(&[shared.clone(), Tensor::random("a.weight", "F32", &[64], 1)], &[]),
    );
    sb.add_commit(&a, "a", None, "a");
    // Another model, coded against an unrelated base, holds the same tensor under another name.
    let c = sb.write(
        "in/c/model.safetensors",
        &safetensors_bytes(&[Tensor::random("x", "F32", &[128, 64], 3)], &[]),
    );
    sb.add_commit(&c, "c", None, "c");
    let renamed = Tensor {
        name: "x".into(),
        ..shared.clone()
    };
    let b = sb.write("in/b/model.safetensors", &safetensors_bytes(&[renamed], &[]));
    let report = sb.json(&["add", b.to_str().unwrap(), "--name", "b", "--base", "c"]);
    let raw = shared.data.len() as u64;
    assert!(
        report["stored_bytes"].as_u64().unwrap() * 10 < raw,
        "the tensor is in the store already: {report}"
    );
    sb.run(&["commit", "-m", "b"]).ok();
    std::fs::remove_file(&a).unwrap();
    assert_checks_out(&sb, "b", "model.safetensors", &sha(&b));
    sb.assert_fsck_ok();
}

/// Eight versions, each a fine-tune of the one before: v0 (alone), v1 on v0, ... v7 on v6.
fn chain(sb: &Sandbox, versions: usize) -> Vec<(PathBuf, String)> {
    let mut tensors = vec![
        Tensor::random("embed.weight", "F32", &[512, 32], 1),
        Tensor::random("norm.weight", "BF16", &[32], 2),
        Tensor::random("head.weight", "F16", &[256, 32], 3),
    ];
    let mut out = Vec::new();
    for v in 0..versions {
        if v > 0 {
            tensors = tensors.iter().map(|t| t.finetuned(0.3, 100 + v as u64)).collect();
        }
        let file = sb.write(&format!("in/v{v}/model.safetensors"), &safetensors_bytes(&tensors, &[]));
        let base = (v > 0).then(|| format!("v{}", v - 1));
        let commit = sb.add_commit(&file, &format!("v{v}"), base.as_deref(), &format!("version {v}"));
        out.push((file, commit));
    }
    out
}

#[test]
fn a_chain_of_eight_versions_checks_out_bit_exact_at_every_depth() {
    let sb = Sandbox::new()
        .with_env("SPARSE_CHUNK_SIZE", 8192)
        .with_env("SPARSE_MAX_DEPTH", 8);
    let versions = chain(&sb, 8);
    let family = sb.json(&["family"]);
    let mut node = &family["roots"][0];
    for (v, (_, commit)) in versions.iter().enumerate() {
        assert_eq!(node["commit"], commit.as_str(), "v{v} at depth {v}: {family}");
        assert_eq!(node["depth"], v, "{node}");
        assert_eq!(node["names"][0], format!("v{v}"));
        node = &node["children"][0];
    }
    // No source file left: every version is decoded through its whole chain from blobs.
    let shas: Vec<String> = versions.iter().map(|(f, _)| sha(f)).collect();
    for (f, _) in &versions {
        std::fs::remove_file(f).unwrap();
    }
    for (v, s) in shas.iter().enumerate() {
        assert_checks_out(&sb, &format!("v{v}"), "model.safetensors", s);
    }
    sb.assert_fsck_ok();
}

#[test]
fn past_the_depth_bound_a_fine_tune_is_coded_against_a_nearer_ancestor() {
    let sb = Sandbox::new()
        .with_env("SPARSE_CHUNK_SIZE", 8192)
        .with_env("SPARSE_MAX_DEPTH", 3);
    let versions = chain(&sb, 4); // v3 is at depth 3, the most allowed
    let v4: Vec<Tensor> = vec![
        Tensor::random("embed.weight", "F32", &[512, 32], 1).finetuned(0.5, 7),
        Tensor::random("norm.weight", "BF16", &[32], 2),
        Tensor::random("head.weight", "F16", &[256, 32], 3),
    ];
    let file = sb.write("in/v4/model.safetensors", &safetensors_bytes(&v4, &[]));
    let report = sb.json(&["add", file.to_str().unwrap(), "--name", "v4", "--base", "v3"]);
    let rebased = &report["rebased"];
    assert_eq!(rebased["asked"], versions[3].1.as_str(), "{report}");
    assert_eq!(rebased["asked_depth"], 3, "{report}");
    assert_eq!(
        rebased["used"],
        versions[2].1.as_str(),
        "on v2, v4 is at depth 3: {report}"
    );
    assert_eq!(report["base"], versions[2].1.as_str());
    sb.run(&["commit", "-m", "v4"]).ok();
    let text = sb.run(&["add", file.to_str().unwrap(), "--name", "v4b", "--base", "v3"]);
    assert!(text.stdout.contains("at most 3 allowed"), "{}", text.stdout);
    let expected = sha(&file);
    for (f, _) in &versions {
        std::fs::remove_file(f).unwrap();
    }
    std::fs::remove_file(&file).unwrap();
    assert_checks_out(&sb, "v4", "model.safetensors", &expected);
}

#[test]
fn estimate_is_close_to_what_add_stores_and_writes_nothing() {
    let data = real_data();
    let sb = Sandbox::new();
    let base = data.join("base.safetensors");
    let ft = data.join("finetune.safetensors");
    sb.add_commit(&base, "base", None, "base");
    let before = store_snapshot(&sb.store());
    let est: Value = sb.json(&["estimate", ft.to_str().unwrap(), "--base", "base"]);
    assert_unchanged(&before, &store_snapshot(&sb.store()), "estimate");
    let report = sb.json(&["add", ft.to_str().unwrap(), "--name", "ft", "--base", "base"]);
    let (expected, stored) = (est["bytes"].as_f64().unwrap(), report["stored_bytes"].as_f64().unwrap());
    assert!(
        (expected / stored - 1.0).abs() < 0.15,
        "estimate {expected} against {stored} stored"
    );
    let alone = est["alone_bytes"].as_f64().unwrap();
    assert!(alone > 2.0 * stored, "alone {alone}, as a delta {stored}");
}

#[test]
fn family_shows_each_model_with_what_it_costs() {
    let sb = Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 8192);
    let versions = chain(&sb, 3);
    let other = sb.write(
        "in/other/model.safetensors",
        &safetensors_bytes(&[Tensor::random("z", "F32", &[300], 5)], &[]),
    );
    sb.add_commit(&other, "other", None, "other");
    sb.run(&["tag", "release", "v1"]).ok();
    let family = sb.json(&["family"]);
    let roots = family["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 2, "{family}");
    let v0 = roots.iter().find(|r| r["names"][0] == "v0").unwrap();
    let v1 = &v0["children"][0];
    assert_eq!(v1["names"], serde_json::json!(["tag release", "v1"]), "{v1}");
    assert_eq!(v1["base"], versions[0].1.as_str());
    // What each costs adds up to the blobs in the store.
    let blob_bytes: u64 = cas_blobs(&sb.store())
        .iter()
        .map(|(_, p)| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(family["stored_bytes"].as_u64().unwrap(), blob_bytes, "{family}");
    assert!(
        v1["stored_bytes"].as_u64().unwrap() < v0["stored_bytes"].as_u64().unwrap() / 2,
        "{family}"
    );
    let one = sb.json(&["family", "v2"]);
    assert_eq!(one["roots"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one["roots"][0]["names"][0], "v0");
    let text = sb.run(&["family"]).ok().stdout.clone();
    assert!(text.contains("└─ v2"), "{text}");
    assert!(sb.run(&["family", "nope"]).failed().contains("nope"));
}
