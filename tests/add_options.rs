//! `sparse add --zstd-level` and `--chunk-size`: smaller or finer settings a flag away, still
//! bit-exact.

mod common;

use common::*;

fn model(seed: u64) -> Vec<Tensor> {
    (0..3)
        .map(|i| Tensor::random(&format!("layers.{i}.weight"), "BF16", &[128, 64], seed + i))
        .collect()
}

#[test]
fn a_higher_level_stores_no_more_and_a_chunk_size_reaches_the_manifest() {
    let sb = Sandbox::new();
    let base = sb.write("base/model.safetensors", &safetensors_bytes(&model(1), &[]));
    sb.add_commit(&base, "base", None, "base");
    let tuned: Vec<Tensor> = model(1).iter().map(|t| t.finetuned(0.3, 9)).collect();
    let file = sb.write("tuned/model.safetensors", &safetensors_bytes(&tuned, &[]));
    let src = file.to_str().unwrap();

    let fast = sb.json(&["add", src, "--name", "fast", "--base", "base"]);
    let small = sb.json(&["add", src, "--name", "small", "--base", "base", "--zstd-level", "19"]);
    // Without a base: a tensor coded against a parent keeps the parent's chunk size.
    sb.json(&["add", src, "--name", "fine", "--chunk-size", "4096"]);
    sb.run(&["commit", "-m", "three settings"]).ok();
    assert!(
        small["coded_bytes"].as_u64() <= fast["coded_bytes"].as_u64(),
        "level 19 {small} against level 3 {fast}"
    );

    let manifest = git(&sb.store(), &["show", "fine:model.safetensors"]);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).expect("a JSON manifest");
    let sizes: Vec<u64> = manifest["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s.get("tensor").is_some())
        .map(|s| s["chunk_size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [4096, 4096, 4096], "{manifest}");

    for name in ["fast", "small", "fine"] {
        let out = sb.checkout(name, &format!("out-{name}"));
        assert_eq!(
            sha256_file(&out.join("model.safetensors")),
            sha256_file(&file),
            "{name}"
        );
    }
    let bad = sb.run(&["add", src, "--name", "x", "--zstd-level", "23"]);
    assert!(bad.failed().contains("zstd-level"), "{}", bad.stderr);
    sb.assert_fsck_ok();
}
