//! Model sources: the local Hugging Face cache (`hf:ORG/NAME[@REV]`) and sharded models whose
//! fine-tune is cut into shards differently from its base.

mod common;

use std::path::Path;

use common::{safetensors_bytes, sha256_file, Sandbox, Tensor};

/// Lays out `files` as the Hugging Face hub cache does: blobs named by hash, snapshot entries
/// linking to them, and `refs/main` naming the snapshot's commit.
fn hf_cache(root: &Path, repo: &str, commit: &str, files: &[(&str, Vec<u8>)]) {
    let dir = root.join(format!("models--{}", repo.replace('/', "--")));
    let snapshot = dir.join("snapshots").join(commit);
    std::fs::create_dir_all(dir.join("blobs")).unwrap();
    std::fs::create_dir_all(dir.join("refs")).unwrap();
    std::fs::write(dir.join("refs/main"), commit).unwrap();
    for (name, bytes) in files {
        let blob = dir.join("blobs").join(common::sha256_bytes(bytes));
        std::fs::write(&blob, bytes).unwrap();
        let link = snapshot.join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&blob, &link).unwrap();
    }
}

fn model(seed: u64) -> Vec<Tensor> {
    vec![
        Tensor::random("embed.weight", "BF16", &[64, 16], seed),
        Tensor::random("layers.0.weight", "F32", &[16, 16], seed + 1),
        Tensor::random("layers.1.weight", "F32", &[16, 16], seed + 2),
        Tensor::random("norm.bias", "F16", &[16], seed + 3),
    ]
}

#[test]
fn hf_cache_sources_resolve_by_branch_and_by_commit() {
    let s = Sandbox::new();
    let cache = s.join("hub");
    let weights = safetensors_bytes(&model(1), &[]);
    let config = br#"{"model_type": "tiny"}"#.to_vec();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    hf_cache(
        &cache,
        "acme/tiny",
        commit,
        &[("model.safetensors", weights.clone()), ("config.json", config.clone())],
    );
    let s = s.with_env("HF_HUB_CACHE", cache.display());

    s.run(&["add", "hf:acme/tiny", "--name", "tiny"]).ok();
    s.run(&["commit", "-m", "from the cache"]).ok();
    let out = s.checkout("tiny", "out");
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), weights);
    assert_eq!(std::fs::read(out.join("config.json")).unwrap(), config);

    s.run(&["add", &format!("hf:acme/tiny@{commit}"), "--name", "pinned"])
        .ok();
    s.run(&["add", "hf:acme/tiny@nope", "--name", "x"]).failed();
    let err = s.run(&["add", "hf:acme/absent", "--name", "x"]).failed().to_string();
    assert!(err.contains("hf:acme/absent"), "names the source: {err}");
}

#[test]
fn hf_home_is_used_when_hf_hub_cache_is_unset() {
    let s = Sandbox::new();
    let home = s.join("hfhome");
    let weights = safetensors_bytes(&model(5), &[]);
    hf_cache(
        &home.join("hub"),
        "acme/other",
        "feedface",
        &[("model.safetensors", weights.clone())],
    );
    let s = s.with_env("HF_HOME", home.display()).with_env("HF_HUB_CACHE", "");
    s.run(&["add", "hf:acme/other", "--name", "other"]).ok();
    s.run(&["commit", "-m", "x"]).ok();
    let out = s.checkout("other", "out");
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), weights);
}

#[test]
fn sharded_fine_tune_pairs_tensors_across_differently_cut_shards() {
    let s = Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 200);
    let base = model(10);
    let tuned: Vec<Tensor> = base.iter().map(|t| t.finetuned(0.3, 99)).collect();
    // Base: two shards; fine-tune: three, cut elsewhere, plus the index file.
    let index = |shards: &[(&str, &[Tensor])]| {
        let map: Vec<String> = shards
            .iter()
            .flat_map(|(f, ts)| ts.iter().map(move |t| format!("{:?}: {:?}", t.name, f)))
            .collect();
        format!("{{\"metadata\": {{}}, \"weight_map\": {{{}}}}}", map.join(", "))
    };
    let base_shards: [(&str, &[Tensor]); 2] = [
        ("model-00001-of-00002.safetensors", &base[..1]),
        ("model-00002-of-00002.safetensors", &base[1..]),
    ];
    let tuned_shards: [(&str, &[Tensor]); 3] = [
        ("model-00001-of-00003.safetensors", &tuned[..2]),
        ("model-00002-of-00003.safetensors", &tuned[2..3]),
        ("model-00003-of-00003.safetensors", &tuned[3..]),
    ];
    for (dir, shards) in [("base", &base_shards[..]), ("tuned", &tuned_shards[..])] {
        for (file, tensors) in shards {
            s.write(&format!("{dir}/{file}"), &safetensors_bytes(tensors, &[]));
        }
        s.write(&format!("{dir}/model.safetensors.index.json"), index(shards).as_bytes());
    }

    s.add_commit(&s.join("base"), "base", None, "base");
    s.add_commit(&s.join("tuned"), "tuned", Some("base"), "tuned");
    let show = s.json(&["show", "tuned"]);
    let tensors = show["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 4);
    for t in tensors {
        assert_eq!(t["parent"], t["name"], "every tensor pairs with its namesake: {t}");
        assert_ne!(t["codec"], "full", "coded as a delta: {t}");
    }
    for (dir, rev) in [("base", "base"), ("tuned", "tuned")] {
        let out = s.checkout(rev, &format!("out-{rev}"));
        for entry in std::fs::read_dir(s.join(dir)).unwrap() {
            let name = entry.unwrap().file_name();
            assert_eq!(
                sha256_file(&out.join(&name)),
                sha256_file(&s.join(dir).join(&name)),
                "{name:?}"
            );
        }
    }
    s.assert_fsck_ok();
}
