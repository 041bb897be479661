//! Bad input is refused, not stored: every malformed safetensors file, unknown revision and
//! damaged blob gives a non-zero exit and an error that names the file (and the tensor) or the
//! revision or the blob, and leaves the store exactly as it was, byte for byte.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A store with one good model committed as `good` (so the lock, the index and some blobs all
/// exist before the bad input arrives), and its input.
fn store_with_a_model() -> (Sandbox, PathBuf) {
    let sb = Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 64);
    let file = sb.write("in/good/model.safetensors", &safetensors_bytes(&good_tensors(), &[]));
    sb.add_commit(&file, "good", None, "a good model");
    (sb, file)
}

fn good_tensors() -> Vec<Tensor> {
    vec![
        Tensor::random("embed.weight", "F32", &[16, 8], 1),
        Tensor::random("norm.weight", "BF16", &[8], 2),
        Tensor::random("head.weight", "F16", &[4, 8], 3),
    ]
}

/// Runs `args`, which must fail naming everything in `mentions`, without changing the store.
#[track_caller]
fn refused(sb: &Sandbox, args: &[&str], mentions: &[&str]) -> String {
    let before = store_snapshot(&sb.store());
    let run = sb.run(args);
    let stderr = run.failed().to_string();
    for m in mentions {
        assert!(
            stderr.contains(m),
            "`sparse {}`: the error should mention {m:?}:\n{stderr}",
            args.join(" ")
        );
    }
    assert!(run.stdout.trim().is_empty(), "nothing on stdout: {}", run.stdout);
    assert_unchanged(
        &before,
        &store_snapshot(&sb.store()),
        &format!("`sparse {}`", args.join(" ")),
    );
    stderr
}

/// Writes `bytes` as `in/NAME` and checks that adding it is refused, naming the file and `mentions`.
#[track_caller]
fn bad_file(name: &str, bytes: &[u8], mentions: &[&str]) -> String {
    let (sb, _) = store_with_a_model();
    let path = sb.write(&format!("in/{name}"), bytes);
    let mut all = vec![name];
    all.extend_from_slice(mentions);
    let stderr = refused(&sb, &["add", path.to_str().unwrap(), "--name", "bad"], &all);
    // Nothing was staged either.
    let status = sb.json(&["status"]);
    assert_eq!(status["staged"].as_array().map(Vec::len), Some(0), "{status}");
    stderr
}

/// A header of `json` (a JSON object of tensor entries) followed by `data` bytes.
fn with_header(json: &str, data: usize) -> Vec<u8> {
    raw_safetensors(json.as_bytes(), &vec![7u8; data])
}

#[test]
fn a_file_shorter_than_the_length_prefix_is_refused() {
    bad_file("short.safetensors", &[1, 0, 0, 0, 0], &["5 bytes"]);
    bad_file("empty.safetensors", &[], &["0 bytes"]);
}

#[test]
fn a_file_cut_in_the_middle_of_its_data_is_refused() {
    let full = safetensors_bytes(&good_tensors(), &[]);
    // Cut inside the data of the tensor laid out last (head.weight).
    let cut = &full[..full.len() - 10];
    bad_file("cut.safetensors", cut, &["head.weight"]);
    // Cut inside the header itself.
    bad_file("cut-header.safetensors", &full[..20], &["header"]);
}

#[test]
fn a_header_length_beyond_the_file_is_refused() {
    let mut bytes = safetensors_bytes(&good_tensors(), &[]);
    let n = bytes.len() as u64;
    bytes[..8].copy_from_slice(&(n + 100).to_le_bytes());
    bad_file("long-header.safetensors", &bytes, &["header length"]);
    // An absurd length, far beyond any limit.
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    bad_file("huge-header.safetensors", &bytes, &["header length"]);
}

#[test]
fn data_offsets_outside_the_buffer_are_refused() {
    let json = r#"{"inside":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"outside":{"dtype":"F32","shape":[100],"data_offsets":[4,404]}}"#;
    bad_file("outside.safetensors", &with_header(json, 40), &["\"outside\"", "404"]);
}

#[test]
fn overlapping_tensors_are_refused() {
    let json = r#"{"first":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"second":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    bad_file(
        "overlap.safetensors",
        &with_header(json, 12),
        &["second", "first", "overlap"],
    );
}

#[test]
fn a_hole_in_the_data_is_refused() {
    // Bytes 8..16 belong to no tensor.
    let json = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}"#;
    bad_file(
        "hole.safetensors",
        &with_header(json, 24),
        &["belong to no tensor", "8"],
    );
    // Trailing bytes after the last tensor.
    let json = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    bad_file("trailing.safetensors", &with_header(json, 13), &["belong to no tensor"]);
}

#[test]
fn duplicate_tensor_names_are_refused() {
    let json = r#"{"twice":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"twice":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#;
    bad_file(
        "dup.safetensors",
        &with_header(json, 4),
        &["\"twice\"", "twice in the header"],
    );
}

#[test]
fn a_header_that_is_not_utf8_is_refused() {
    let json = r#"{"name":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
    let mut bytes = with_header(json, 2);
    bytes[8 + 3] = 0xff; // inside "name"
    bad_file("latin1.safetensors", &bytes, &["UTF-8"]);
}

#[test]
fn an_unknown_dtype_is_refused() {
    let json = r#"{"weird":{"dtype":"F7","shape":[2],"data_offsets":[0,2]}}"#;
    bad_file("dtype.safetensors", &with_header(json, 2), &["\"weird\"", "F7"]);
}

#[test]
fn other_malformed_headers_are_refused() {
    let cases: &[(&str, &str, usize, &[&str])] = &[
        ("array.safetensors", "[1,2]", 0, &["JSON"]),
        ("garbage.safetensors", "{\"a\":", 0, &["JSON"]),
        (
            "size.safetensors",
            r#"{"wrong":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            8,
            &["\"wrong\"", "12"],
        ),
        (
            "meta.safetensors",
            r#"{"__metadata__":{"n":1},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
            1,
            &["__metadata__"],
        ),
        (
            "negative.safetensors",
            r#"{"neg":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}"#,
            1,
            &["\"neg\"", "shape"],
        ),
        (
            "backwards.safetensors",
            r#"{"back":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}"#,
            4,
            &["\"back\""],
        ),
        (
            "nibbles.safetensors",
            r#"{"half":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#,
            2,
            &["\"half\""],
        ),
    ];
    for (name, json, data, mentions) in cases {
        bad_file(name, &with_header(json, *data), mentions);
    }
}

#[test]
fn a_model_directory_with_one_bad_file_stores_nothing() {
    let (sb, _) = store_with_a_model();
    // Files are coded in path order: the good ones come first and are large enough to be
    // chunked into blobs before the bad one is reached.
    let good = safetensors_bytes(&[Tensor::random("w", "F32", &[64, 64], 9)], &[]);
    sb.write("in/dir/a-model.safetensors", &good);
    sb.write("in/dir/big.bin", &Lcg::new(3).bytes(5000));
    sb.write("in/dir/config.json", b"{}");
    let json = r#"{"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
    sb.write("in/dir/z-model.safetensors", &with_header(json, 3));
    let dir = sb.join("in/dir");
    let sb = sb.with_env("SPARSE_SMALL_FILE", 1000);
    refused(
        &sb,
        &["add", dir.to_str().unwrap(), "--name", "dir"],
        &["z-model.safetensors", "belong to no tensor"],
    );
}

#[test]
fn a_missing_source_and_a_bad_name_are_refused() {
    let (sb, file) = store_with_a_model();
    let missing = sb.join("in/nothing-here");
    refused(
        &sb,
        &["add", missing.to_str().unwrap(), "--name", "x"],
        &["nothing-here", "does not exist"],
    );
    for name in ["a b", "x~1", "a..b", "", "x:y", "with^caret", "x.lock", "/abs"] {
        let args = ["add", file.to_str().unwrap(), "--name", name];
        let before = store_snapshot(&sb.store());
        let run = sb.run(&args);
        run.failed();
        assert_unchanged(&before, &store_snapshot(&sb.store()), &format!("add --name {name:?}"));
    }
}

#[test]
fn unknown_revisions_are_refused() {
    let (sb, _) = store_with_a_model();
    let out = sb.join("out");
    for rev in ["nosuchname", "good~5", "deadbeef", "good~x", "abc"] {
        let stderr = refused(&sb, &["checkout", rev, "-o", out.to_str().unwrap()], &[rev]);
        assert!(!out.exists() || out.read_dir().unwrap().next().is_none(), "{stderr}");
        refused(&sb, &["show", rev], &[rev]);
        refused(&sb, &["log", rev], &[rev]);
        refused(&sb, &["--json", "show", rev], &[rev]);
    }
    refused(&sb, &["tag", "t", "nosuchname"], &["nosuchname"]);
    refused(&sb, &["branch", "b", "nosuchname"], &["nosuchname"]);
    refused(&sb, &["tag", "-d", "nosuchtag"], &["nosuchtag"]);
    refused(&sb, &["branch", "-d", "nosuchname"], &["nosuchname"]);
}

#[test]
fn a_base_not_in_the_store_is_refused() {
    let (sb, _) = store_with_a_model();
    let tuned: Vec<Tensor> = good_tensors().iter().map(|t| t.finetuned(0.2, 5)).collect();
    let file = sb.write("in/tuned/model.safetensors", &safetensors_bytes(&tuned, &[]));
    for base in ["nosuchbase", "good~1", "0000000000000000000000000000000000000000"] {
        refused(
            &sb,
            &["add", file.to_str().unwrap(), "--name", "tuned", "--base", base],
            &[base],
        );
    }
}

#[test]
fn commit_with_nothing_staged_is_refused() {
    let (sb, _) = store_with_a_model();
    let status = sb.json(&["status"]);
    let before = store_snapshot(&sb.store());
    let run = sb.run(&["commit", "-m", "nothing"]);
    assert!(run.failed().contains("nothing to commit"), "{}", run.stderr);
    // Reading the index (status, fsck, a refused commit) leaves its file as it was.
    assert_unchanged(&before, &store_snapshot(&sb.store()), "a refused commit");
    assert_eq!(sb.json(&["status"]), status);
    assert_unchanged(&before, &store_snapshot(&sb.store()), "status");
    sb.assert_fsck_ok();
    assert_unchanged(&before, &store_snapshot(&sb.store()), "fsck");
    assert_eq!(sb.json(&["log"])["commits"].as_array().map(Vec::len), Some(1));
}

#[test]
fn checkout_refuses_a_directory_that_is_not_empty() {
    let (sb, _) = store_with_a_model();
    let out = sb.write("out/keep.txt", b"mine");
    let dir = out.parent().unwrap().to_str().unwrap().to_string();
    refused(&sb, &["checkout", "good", "-o", &dir], &["not empty"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"mine");
}

/// The blob holding chunk 0 of tensor `tensor` in the committed `good` model, from its manifest.

#[test]
fn a_blob_with_one_flipped_bit_is_caught_by_checkout_and_fsck() {
    let (sb, _) = store_with_a_model();
    let key = blob_of(&sb, "norm.weight");
    let path = blob_path(&sb, &key);
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..4], b"SPB1", "blob files start with their magic");
    let at = 13 + (bytes.len() - 13) / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();

    let out = sb.join("out");
    let stderr = refused(&sb, &["checkout", "good", "-o", out.to_str().unwrap()], &[&key]);
    assert!(
        !out.join("model.safetensors").exists(),
        "no damaged model file is left behind: {stderr}"
    );
    fsck_fails_naming(&sb, &[&key]);
    // Other blobs are fine: fsck names only the damaged one as corrupt.
    let report = sb.run(&["--json", "fsck"]).json();
    assert_eq!(report["errors"].as_array().unwrap().len(), 1, "{report}");
}

#[test]
fn a_blob_with_a_damaged_header_is_caught_by_checkout_and_fsck() {
    let (sb, _) = store_with_a_model();
    let key = blob_of(&sb, "embed.weight");
    let path = blob_path(&sb, &key);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[6] ^= 0x01; // the declared length
    std::fs::write(&path, &bytes).unwrap();
    let out = sb.join("out");
    refused(&sb, &["checkout", "good", "-o", out.to_str().unwrap()], &[&key]);
    fsck_fails_naming(&sb, &[&key]);
}

#[test]
fn a_flipped_bit_names_the_tensor_it_belongs_to() {
    let (sb, _) = store_with_a_model();
    let key = blob_of(&sb, "head.weight");
    let path = blob_path(&sb, &key);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let out = sb.join("out");
    refused(
        &sb,
        &["checkout", "good", "-o", out.to_str().unwrap()],
        &["head.weight", "model.safetensors"],
    );
}

#[test]
fn a_missing_blob_is_caught_by_checkout_and_fsck() {
    let (sb, _) = store_with_a_model();
    let key = blob_of(&sb, "embed.weight");
    std::fs::remove_file(blob_path(&sb, &key)).unwrap();
    let out = sb.join("out");
    refused(
        &sb,
        &["checkout", "good", "-o", out.to_str().unwrap()],
        &[&key, "missing"],
    );
    fsck_fails_naming(&sb, &[&key, "missing"]);
}

#[test]
fn a_blob_of_a_base_damaged_breaks_its_fine_tune_loudly() {
    let (sb, good) = store_with_a_model();
    // Without its source file in place, the base's blobs are the only source of its bytes
    // (tests/copies.rs has the case with the file in place).
    std::fs::remove_file(good).unwrap();
    let tuned: Vec<Tensor> = good_tensors().iter().map(|t| t.finetuned(0.2, 5)).collect();
    let file = sb.write("in/tuned/model.safetensors", &safetensors_bytes(&tuned, &[]));
    sb.add_commit(&file, "tuned", Some("good"), "tuned");
    let key = blob_of(&sb, "embed.weight");
    let path = blob_path(&sb, &key);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x80;
    std::fs::write(&path, &bytes).unwrap();
    let out = sb.join("out");
    refused(&sb, &["checkout", "tuned", "-o", out.to_str().unwrap()], &[&key]);
    fsck_fails_naming(&sb, &[&key]);
}

#[test]
fn an_add_against_a_damaged_base_fails_and_removes_what_it_wrote() {
    let (sb, good) = store_with_a_model();
    std::fs::remove_file(good).unwrap();
    // Damage the base's blob of the tensor laid out last, so that the chunks of the other
    // tensors are coded and written before the damage is found.
    let key = blob_of(&sb, "head.weight");
    let path = blob_path(&sb, &key);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 1;
    bytes[at] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    let tuned: Vec<Tensor> = good_tensors().iter().map(|t| t.finetuned(0.3, 8)).collect();
    let file = sb.write("in/tuned/model.safetensors", &safetensors_bytes(&tuned, &[]));
    refused(
        &sb,
        &["add", file.to_str().unwrap(), "--name", "tuned", "--base", "good"],
        &["model.safetensors", &key],
    );
    assert_eq!(sb.git_ref("tuned"), None);
}

/// The index (`sparse/index.redb`) damaged: first its header overwritten, then one bit at a
/// time at seeded places among its live bytes (which bits matter depends on the layout, which
/// varies with the sandbox's paths). No command panics or dies of a signal, one that fails
/// exits 1 and names the index or the record it could not read, and `fsck --rebuild-index`
/// makes the store whole again: the names as they were, their models bit for bit, and adds
/// and commits that work.
#[test]
fn a_damaged_index_is_an_error_and_fsck_rebuilds_it() {
    let (sb, file) = store_with_a_model();
    let tuned: Vec<Tensor> = good_tensors().iter().map(|t| t.finetuned(0.2, 9)).collect();
    let next = sb.write("in/next/model.safetensors", &safetensors_bytes(&tuned, &[]));
    let next = next.to_str().unwrap();
    sb.run(&["add", next, "--name", "next", "--base", "good"]).ok();
    let store = sb.store();
    let clean = sb.join("clean-store");
    copy_dir(&store, &clean);
    let index = store.join("sparse/index.redb");
    let bytes = std::fs::read(&index).unwrap();
    let live: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] != 0).collect();
    let tip = sb.git_ref("good");

    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut failures = 0;
    for round in 0..24 {
        std::fs::remove_dir_all(&store).unwrap();
        copy_dir(&clean, &store);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let (at, bit) = (live[(rng % live.len() as u64) as usize], (rng >> 32) % 8);
        let mut damaged = bytes.clone();
        match round {
            0 => damaged[..512].fill(0xa5),
            _ => damaged[at] ^= 1 << bit,
        }
        std::fs::write(&index, &damaged).unwrap();
        let what = match round {
            0 => "the header overwritten".to_string(),
            _ => format!("round {round}, bit {bit} of byte {at}"),
        };

        for args in [
            &["status"][..],
            &["fsck"],
            &["add", next, "--name", "other", "--base", "good"],
            &["commit", "-m", "on a damaged index"],
            &["gc"],
        ] {
            let run = sb.run(args);
            assert!(
                !run.stderr.contains("panicked") && matches!(run.status.code(), Some(0 | 1)),
                "{what}: `sparse {}` ended with {:?}:\n{}",
                args.join(" "),
                run.status,
                run.stderr
            );
            assert!(
                round > 0 || !run.success(),
                "{what}: `sparse {}` succeeded",
                args.join(" ")
            );
            if !run.success() {
                failures += 1;
                let said = format!("{}{}", run.stderr, run.stdout);
                assert!(
                    said.contains("index.redb") || said.contains("the index") || said.contains("staging record"),
                    "{what}: `sparse {}` names what it could not read:\n{said}",
                    args.join(" ")
                );
            }
        }

        let rebuilt = sb.run(&["--json", "fsck", "--rebuild-index"]).json();
        assert_eq!(rebuilt["ok"], true, "{what}: {rebuilt}");
        if round == 0 {
            let lost = &rebuilt["rebuilt_index"];
            assert!(
                lost["unreadable"].is_string() && lost["staged"] == serde_json::json!([]),
                "{rebuilt}"
            );
        }
        assert_eq!(sb.git_ref("good"), tip, "{what}");
        let out = sb.checkout("good", &format!("out-{round}"));
        assert_eq!(
            sha256_file(&out.join("model.safetensors")),
            sha256_file(&file),
            "{what}"
        );
        sb.run(&["add", next, "--name", "again", "--base", "good"]).ok();
        sb.run(&["commit", "-m", "after the rebuild"]).ok();
        let out = sb.checkout("again", &format!("again-{round}"));
        assert_eq!(
            sha256_file(&out.join("model.safetensors")),
            sha256_file(Path::new(next)),
            "{what}"
        );
    }
    eprintln!("{failures} commands failed on 24 damaged indexes");
}

/// A missing or empty index is named, with the way to rebuild it; the rebuild says the
/// staged names are gone.
#[test]
fn a_missing_or_empty_index_is_named_and_rebuilt() {
    for empty in [false, true] {
        index_gone(empty);
    }
}

fn index_gone(empty: bool) {
    let (sb, file) = store_with_a_model();
    let index = sb.store().join("sparse/index.redb");
    match empty {
        true => std::fs::write(&index, b"").unwrap(),
        false => std::fs::remove_file(&index).unwrap(),
    }
    let before = store_snapshot(&sb.store());
    for args in [&["status"][..], &["fsck"], &["commit", "-m", "x"], &["gc"]] {
        let err = sb.run(args).failed().to_string();
        assert!(err.contains("index.redb") && err.contains("--rebuild-index"), "{err}");
    }
    assert_unchanged(
        &before,
        &store_snapshot(&sb.store()),
        "commands on a store without its index",
    );
    let rebuilt = sb.run(&["fsck", "--rebuild-index"]).ok().stdout.clone();
    assert!(
        rebuilt.contains("could not be read") && rebuilt.contains("ok:"),
        "{rebuilt}"
    );
    let out = sb.checkout("good", "out");
    assert_eq!(sha256_file(&out.join("model.safetensors")), sha256_file(&file));
    let full = sb.json(&["fsck"]);
    assert_eq!(full["ok"], true, "{full}");
}

/// An index another process holds open: a command waits `SPARSE_INDEX_WAIT` seconds for it,
/// then fails once, saying so, and works again once the other process lets go.
#[test]
fn an_index_held_by_another_process_is_waited_for_then_named() {
    let (sb, _) = store_with_a_model();
    let sb = sb.with_env("SPARSE_INDEX_WAIT", 1);
    let held = redb::Database::open(sb.store().join("sparse/index.redb")).expect("the test opens the index");
    for args in [&["status"][..], &["fsck"], &["gc"]] {
        let err = sb.run(args).failed().to_string();
        assert!(
            err.contains("index.redb") && err.contains("another process has held it open for 1 s"),
            "{args:?}: {err}"
        );
    }
    drop(held);
    sb.run(&["status"]).ok();
    sb.assert_fsck_ok();
}

/// A blob gone behind the store's back is not referred to by a later add: the index says
/// its chunk is stored whole, but `add` finds no such file, codes the chunk again, and the new
/// model checks out; `fsck` names the index rows that disagree with the files until
/// `--rebuild-index`.
#[test]
fn an_add_does_not_refer_to_a_blob_the_index_records_but_the_store_lacks() {
    let (sb, file) = store_with_a_model();
    let key = blob_of(&sb, "norm.weight");
    std::fs::remove_file(blob_path(&sb, &key)).unwrap();
    let report = sb.run(&["--json", "fsck"]).json();
    let errors = report["errors"].to_string();
    assert!(errors.contains(&key) && errors.contains("--rebuild-index"), "{report}");

    sb.run(&["add", file.to_str().unwrap(), "--name", "copy"]).ok();
    sb.run(&["commit", "-m", "the same model again"]).ok();
    let out = sb.checkout("copy", "out");
    assert_eq!(sha256_file(&out.join("model.safetensors")), sha256_file(&file));
    // The chunk was coded again into the same blob: the store is whole once more.
    assert!(blob_path(&sb, &key).exists());
    let report = sb.json(&["fsck"]);
    assert_eq!(report["ok"], true, "{report}");
}

/// A git object rewritten on disk with another object's valid bytes (a small file, or a
/// manifest that then describes another model) is caught by checkout, which names it, and by
/// fsck: a checkout never gives another file's content.
#[test]
fn a_git_object_with_another_object_s_bytes_is_caught() {
    let (sb, _) = store_with_a_model();
    let dir = sb.join("in/dir");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), br#"{"hidden_size": 8}"#).unwrap();
    std::fs::write(dir.join("vocab.txt"), b"[PAD]\n[UNK]\n").unwrap();
    let other: Vec<Tensor> = good_tensors().iter().map(|t| t.finetuned(0.5, 4)).collect();
    std::fs::write(dir.join("model.safetensors"), safetensors_bytes(&other, &[])).unwrap();
    sb.add_commit(&dir, "dir", None, "a model directory");

    let object = |rev: &str| {
        let out = git(&sb.store(), &["rev-parse", rev]);
        assert!(out.status.success(), "{rev}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let path = |id: &str| sb.store().join("objects").join(&id[..2]).join(&id[2..]);
    for (victim, donor, damaged, intact) in [
        ("dir:config.json", "dir:vocab.txt", "dir", "good"),
        ("good:model.safetensors", "dir:model.safetensors", "good", "dir"),
    ] {
        let (victim, donor) = (object(victim), object(donor));
        let saved = std::fs::read(path(&victim)).unwrap();
        let mut perms = std::fs::metadata(path(&victim)).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(path(&victim), perms).unwrap();
        std::fs::copy(path(&donor), path(&victim)).unwrap();

        let out = sb.join(&format!("out-{victim}"));
        let err = sb
            .run(&["checkout", damaged, "-o", out.to_str().unwrap()])
            .failed()
            .to_string();
        assert!(err.contains(&victim) && err.contains("damaged"), "{err}");
        sb.checkout(intact, &format!("intact-{victim}"));
        fsck_fails_naming(&sb, &[&victim]);
        std::fs::write(path(&victim), saved).unwrap();
    }
    sb.assert_fsck_ok();
}

/// The rows of an index, sorted.
#[derive(Debug, PartialEq)]
struct IndexRows {
    /// "key decoded stored"
    blobs: Vec<String>,
    /// "chunk blob"
    full: Vec<String>,
    staged: Vec<(String, Vec<u8>)>,
}

/// The rows of the index of the store at `store`.
fn index_rows(store: &Path) -> IndexRows {
    use sparse::store::{index::Index, Layout};
    let index = Index::open_read(&Layout::new(store)).expect("the index opens");
    let mut blobs: Vec<String> = index
        .blobs()
        .unwrap()
        .into_iter()
        .map(|(k, s)| format!("{k} {} {}", s.decoded, s.stored))
        .collect();
    let mut full: Vec<String> = index
        .full_chunks()
        .unwrap()
        .into_iter()
        .map(|(k, (b, _))| format!("{k} {b}"))
        .collect();
    blobs.sort();
    full.sort();
    IndexRows {
        blobs,
        full,
        staged: index.staged().unwrap(),
    }
}

/// Rebuilt from the files, an intact index holds the rows `add` and `commit` wrote: the same
/// blob sizes, the same chunks stored whole, the same staging records.
#[test]
fn rebuilding_an_intact_index_gives_the_rows_add_wrote() {
    let (sb, _) = store_with_a_model();
    let tuned: Vec<Tensor> = good_tensors().iter().map(|t| t.finetuned(0.3, 5)).collect();
    let file = sb.write("in/tuned/model.safetensors", &safetensors_bytes(&tuned, &[]));
    sb.add_commit(&file, "tuned", Some("good"), "a fine-tune");
    let next: Vec<Tensor> = tuned.iter().map(|t| t.finetuned(0.1, 6)).collect();
    let next = sb.write("in/next/model.safetensors", &safetensors_bytes(&next, &[]));
    sb.run(&["add", next.to_str().unwrap(), "--name", "next", "--base", "tuned"])
        .ok();

    let before = index_rows(&sb.store());
    assert!(
        !before.blobs.is_empty() && !before.full.is_empty() && before.staged.len() == 1,
        "{before:?}"
    );
    let report = sb.json(&["fsck", "--rebuild-index"]);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(index_rows(&sb.store()), before);

    // The same for the rows a clone recorded of what it received (the names' blobs, not
    // those of the staged snapshot, which stays behind).
    let dir = sb.join("clone");
    sb.run(&["clone", sb.store().to_str().unwrap(), dir.to_str().unwrap()])
        .ok();
    let cloned = index_rows(&dir.join(".sparse"));
    assert!(
        !cloned.blobs.is_empty() && cloned.blobs.len() < before.blobs.len(),
        "{cloned:?}"
    );
    assert!(cloned.blobs.iter().all(|row| before.blobs.contains(row)), "{cloned:?}");
    sb.run(&["-C", dir.to_str().unwrap(), "fsck", "--rebuild-index"]).ok();
    assert_eq!(index_rows(&dir.join(".sparse")), cloned);
}
