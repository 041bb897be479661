//! Known copies (src/store/copies.rs): a base's file left where it was added or checked out
//! serves its bytes instead of its blobs, and a copy that lies never changes what comes out.

mod common;

use std::path::Path;

use common::*;

fn tensors() -> Vec<Tensor> {
    vec![
        Tensor::random("embed.weight", "F32", &[64, 16], 1),
        Tensor::random("norm.weight", "BF16", &[16], 2),
        Tensor::random("head.weight", "F16", &[32, 16], 3),
    ]
}

/// A store with `good` (its source file returned) and `tuned` on it, committed.
fn store_with_a_pair() -> (Sandbox, std::path::PathBuf, std::path::PathBuf) {
    let sb = Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 256);
    let good = sb.write("in/good/model.safetensors", &safetensors_bytes(&tensors(), &[]));
    sb.add_commit(&good, "good", None, "base");
    let tuned: Vec<Tensor> = tensors().iter().map(|t| t.finetuned(0.3, 7)).collect();
    let tuned = sb.write("in/tuned/model.safetensors", &safetensors_bytes(&tuned, &[]));
    sb.add_commit(&tuned, "tuned", Some("good"), "fine-tune");
    (sb, good, tuned)
}

fn damage_blob(sb: &Sandbox, tensor: &str) -> String {
    let key = blob_of(sb, tensor);
    let path = blob_path(sb, &key);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 2;
    bytes[at] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    key
}

#[track_caller]
fn assert_checks_out(sb: &Sandbox, rev: &str, expected: &Path) {
    let out = sb.checkout(rev, &format!("out-{rev}"));
    assert_eq!(
        sha256_file(&out.join("model.safetensors")),
        sha256_file(expected),
        "checkout of {rev} must be bit-exact"
    );
}

#[test]
fn the_source_file_of_a_base_serves_its_fine_tune_and_fsck_still_sees_the_damage() {
    let (sb, _good, tuned) = store_with_a_pair();
    let key = damage_blob(&sb, "embed.weight");
    // The base's file is where it was added: the fine-tune needs nothing from the damaged blob.
    assert_checks_out(&sb, "tuned", &tuned);
    fsck_fails_naming(&sb, &[&key]);
}

#[test]
fn a_checkout_becomes_a_copy_of_what_it_wrote() {
    let (sb, good, tuned) = store_with_a_pair();
    // While the source is in place it stays the known copy; once it is gone, a checkout is.
    std::fs::remove_file(&good).unwrap();
    let base_copy = sb.checkout("good", "checked-out-base");
    let scratch = sb.checkout("good", "scratch");
    std::fs::remove_dir_all(scratch).unwrap();
    damage_blob(&sb, "embed.weight");
    assert_checks_out(&sb, "tuned", &tuned);
    // Once that copy changes, the damaged blob is the only source left, and checkout says so.
    let file = base_copy.join("model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let out = sb.join("refused");
    let err = sb
        .run(&["checkout", "tuned", "-o", out.to_str().unwrap()])
        .failed()
        .to_string();
    assert!(err.contains("embed.weight"), "{err}");
}

#[test]
fn a_copy_whose_bytes_changed_without_its_stat_is_caught_by_the_hashes() {
    let (sb, good, tuned) = store_with_a_pair();
    // Change the base's file, then make its record claim the new state: the worst case, a
    // file rewritten within one tick of the clock, same size, same inode.
    let original = std::fs::read(&good).unwrap();
    let mut bytes = original.clone();
    let n = bytes.len();
    for b in &mut bytes[n - 600..] {
        *b = b.wrapping_add(3);
    }
    std::fs::write(&good, &bytes).unwrap();
    let copies = sb.store().join("sparse").join("copies");
    let mut rewritten = 0;
    for entry in std::fs::read_dir(&copies).unwrap() {
        let path = entry.unwrap().path();
        let mut record: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if record["path"] != good.to_str().unwrap() {
            continue;
        }
        record["stat"] = stat_json(&good);
        std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        rewritten += 1;
    }
    assert_eq!(rewritten, 1, "one record for the base's file");

    assert_checks_out(&sb, "tuned", &tuned);
    // A delta coded against the lying copy would be wrong forever: add checks the parent's bytes.
    let again: Vec<Tensor> = tensors().iter().map(|t| t.finetuned(0.2, 9)).collect();
    let again = sb.write("in/again/model.safetensors", &safetensors_bytes(&again, &[]));
    let expected = sha256_file(&again);
    sb.add_commit(&again, "again", Some("good"), "another fine-tune");
    std::fs::remove_file(&again).unwrap();
    // Restored, the base's file no longer matches its record: checkout decodes the base.
    std::fs::write(&good, &original).unwrap();
    let out = sb.checkout("again", "out-again");
    assert_eq!(sha256_file(&out.join("model.safetensors")), expected);
}

fn stat_json(path: &Path) -> serde_json::Value {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    serde_json::json!({
        "size": m.len(), "dev": m.dev(), "ino": m.ino(),
        "mtime": m.mtime(), "mtime_ns": m.mtime_nsec(),
        "ctime": m.ctime(), "ctime_ns": m.ctime_nsec(),
    })
}
