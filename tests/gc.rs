//! `sparse gc`: deleting a name frees what only it used, and nothing any remaining name,
//! tag, delta chain or staged model needs.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Writes the sources once, so that every store below codes the same bytes.
fn sources_with_other(sb: &Sandbox) -> [PathBuf; 3] {
    [
        sb.write("in/base/model.safetensors", &safetensors_bytes(&small_model(1), &[])),
        sb.write(
            "in/tuned/model.safetensors",
            &safetensors_bytes(&small_finetune(5), &[]),
        ),
        sb.write("in/other/model.safetensors", &safetensors_bytes(&small_model(40), &[])),
    ]
}

fn sandbox() -> Sandbox {
    Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 4096)
}

/// Bytes of a store's blobs and git objects: what models take (the index keeps freed pages
/// for reuse, and refs and their logs are bookkeeping).
fn store_bytes(store: &Path) -> u64 {
    dir_bytes(&store.join("cas")) + dir_bytes(&store.join("objects"))
}

#[test]
fn deleting_a_name_and_gc_leave_what_the_remaining_names_need() {
    let sb = sandbox();
    let [base, ft, other] = sources_with_other(&sb);
    sb.add_commit(&base, "base", None, "base");
    sb.add_commit(&ft, "tuned", Some("base"), "fine-tune");
    let needed = store_bytes(&sb.store());
    sb.add_commit(&other, "other", None, "unrelated");
    assert!(
        store_bytes(&sb.store()) > needed + 20_000,
        "the unrelated model takes space"
    );

    sb.run(&["branch", "-d", "other"]).ok();
    let report = sb.json(&["gc"]);
    assert!(report["blobs_removed"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["objects_removed"].as_u64().unwrap() >= 3,
        "commit, tree, manifest: {report}"
    );
    assert_eq!(store_bytes(&sb.store()), needed, "back to what base and tuned need");
    sb.assert_fsck_ok();
    assert_bit_exact(&sb, "base", &sha256_file(&base));
    assert_bit_exact(&sb, "tuned", &sha256_file(&ft));

    // A second gc finds nothing left to delete.
    let again = sb.json(&["gc"]);
    assert_eq!(again["blobs_removed"], 0, "{again}");
    assert_eq!(again["objects_removed"], 0, "{again}");

    // The deleted model's chunks are forgotten too: adding it again stores them again.
    sb.add_commit(&other, "other", None, "again");
    sb.assert_fsck_ok();
    assert_bit_exact(&sb, "other", &sha256_file(&other));
}

#[test]
fn a_base_whose_name_is_gone_stays_while_a_fine_tune_needs_it() {
    let sb = sandbox();
    let [base, ft, _] = sources_with_other(&sb);
    sb.add_commit(&base, "base", None, "base");
    sb.add_commit(&ft, "tuned", Some("base"), "fine-tune");
    std::fs::remove_file(&base).unwrap(); // no known copy: the blobs are the only source
    let before = store_bytes(&sb.store());
    sb.run(&["branch", "-d", "base"]).ok();
    let report = sb.json(&["gc"]);
    assert_eq!(report["blobs_removed"], 0, "{report}");
    assert_eq!(store_bytes(&sb.store()), before);
    sb.assert_fsck_ok();
    assert_bit_exact(&sb, "tuned", &sha256_file(&ft));
}

#[test]
fn tags_and_staged_models_are_kept() {
    let sb = sandbox();
    let [base, ft, other] = sources_with_other(&sb);
    sb.add_commit(&base, "base", None, "base");
    sb.run(&["tag", "v1", "base"]).ok();
    sb.run(&["branch", "-d", "base"]).ok();
    // Staged, not committed, against a base reachable only through a tag.
    sb.run(&["add", ft.to_str().unwrap(), "--name", "tuned", "--base", "v1"])
        .ok();
    sb.run(&["add", other.to_str().unwrap(), "--name", "other"]).ok();
    let report = sb.json(&["gc"]);
    assert_eq!(report["blobs_removed"], 0, "{report}");
    sb.run(&["commit", "-m", "now"]).ok();
    let base_sha = sha256_file(&base);
    std::fs::remove_file(&base).unwrap();
    sb.assert_fsck_ok();
    assert_bit_exact(&sb, "v1", &base_sha);
    assert_bit_exact(&sb, "tuned", &sha256_file(&ft));
    assert_bit_exact(&sb, "other", &sha256_file(&other));
}

#[test]
fn a_dry_run_changes_nothing() {
    let sb = sandbox();
    let [base, _, other] = sources_with_other(&sb);
    sb.add_commit(&base, "base", None, "base");
    sb.add_commit(&other, "other", None, "other");
    sb.run(&["branch", "-d", "other"]).ok();
    let before = store_snapshot(&sb.store());
    let report = sb.json(&["gc", "--dry-run"]);
    assert!(report["blobs_removed"].as_u64().unwrap() > 0, "{report}");
    assert!(report["blob_bytes"].as_u64().unwrap() > 20_000, "{report}");
    assert_unchanged(&before, &store_snapshot(&sb.store()), "gc --dry-run");
}

#[test]
fn gc_during_an_add_keeps_what_the_add_writes() {
    let sb = sandbox();
    let [base, ft, other] = sources_with_other(&sb);
    sb.add_commit(&other, "other", None, "other");
    sb.run(&["branch", "-d", "other"]).ok();
    // Several adds and gcs at once: the write lock orders them, and no add loses a blob.
    std::thread::scope(|s| {
        let adds = s.spawn(|| {
            sb.add_commit(&base, "base", None, "base");
            sb.add_commit(&ft, "tuned", Some("base"), "fine-tune");
        });
        for _ in 0..4 {
            sb.run(&["gc"]).ok();
        }
        adds.join().unwrap();
    });
    sb.run(&["gc"]).ok();
    std::fs::remove_file(&base).unwrap();
    sb.assert_fsck_ok();
    assert_bit_exact(&sb, "tuned", &sha256_file(&ft));
}
