//! `sparse diff`: on the real pair it agrees with the same numbers computed here from the two
//! files (read with the safetensors crate); on tiny models of every float dtype, an integer
//! tensor, an empty, a reshaped and a retyped tensor, it gives the values worked out by hand,
//! also when the two sides were cut into chunks of different sizes; a bad revision fails and
//! names it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use serde_json::Value;

/// Rows of a report list, by `field`.
fn rows(report: &Value, key: &str, field: &str) -> BTreeMap<String, Value> {
    report[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} list: {report}"))
        .iter()
        .map(|r| (r[field].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

/// Within `1e-9` of `expected`, relative: sums of squares taken in another order.
#[track_caller]
fn assert_close(found: &Value, expected: f64, what: &str) {
    assert_within(found, expected, 1e-9, what);
}

/// Equal to `expected` but for the last bit: serde_json's default float parser may round the
/// printed number to a neighbour of the value that was printed.
#[track_caller]
fn assert_exact(found: &Value, expected: f64, what: &str) {
    assert_within(found, expected, 4.0 * f64::EPSILON, what);
}

#[track_caller]
fn assert_within(found: &Value, expected: f64, relative: f64, what: &str) {
    let found = found
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {found} is not a number"));
    let tolerance = relative * expected.abs().max(f64::MIN_POSITIVE);
    assert!((found - expected).abs() <= tolerance, "{what}: {found} != {expected}");
}

#[test]
fn diff_of_the_real_pair_agrees_with_the_safetensors_crate() {
    let data = real_data();
    let (base, tuned) = (data.join("base.safetensors"), data.join("finetune.safetensors"));
    let sb = Sandbox::new();
    sb.add_commit(&base, "base", None, "base");
    sb.add_commit(&tuned, "finetune", Some("base"), "fine-tune");

    let (bytes_a, bytes_b) = (std::fs::read(&base).unwrap(), std::fs::read(&tuned).unwrap());
    let st_a = safetensors::SafeTensors::deserialize(&bytes_a).unwrap();
    let st_b = safetensors::SafeTensors::deserialize(&bytes_b).unwrap();
    let names_a: std::collections::BTreeSet<String> = st_a.names().into_iter().map(str::to_string).collect();
    let names_b: std::collections::BTreeSet<String> = st_b.names().into_iter().map(str::to_string).collect();
    assert!(names_a.contains("embeddings.position_ids") && !names_b.contains("embeddings.position_ids"));

    let report = sb.json(&["diff", "base", "finetune", "--all"]);
    let tensors = rows(&report, "tensors", "name");
    assert_eq!(
        tensors.keys().cloned().collect::<std::collections::BTreeSet<_>>(),
        &names_a | &names_b,
        "--all lists every tensor"
    );
    let (mut elements, mut changed_elements, mut changed, mut unchanged) = (0u64, 0u64, 0, 0);
    for name in names_a.difference(&names_b) {
        assert_eq!(tensors[name]["change"], "removed", "{name}");
    }
    for name in names_b.difference(&names_a) {
        assert_eq!(tensors[name]["change"], "added", "{name}");
    }
    for name in names_a.intersection(&names_b) {
        let (ta, tb) = (st_a.tensor(name).unwrap(), st_b.tensor(name).unwrap());
        assert_eq!(ta.dtype(), safetensors::Dtype::F32, "{name}");
        assert_eq!((tb.dtype(), tb.shape()), (ta.dtype(), ta.shape()), "{name}");
        let values = |d: &[u8]| -> Vec<f32> {
            d.chunks_exact(4)
                .map(|e| f32::from_le_bytes(e.try_into().unwrap()))
                .collect()
        };
        let (va, vb) = (values(ta.data()), values(tb.data()));
        let n = va.len() as u64;
        let differ = va.iter().zip(&vb).filter(|(x, y)| x.to_bits() != y.to_bits()).count() as u64;
        let norm_a: f64 = va.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        let norm_d: f64 = va
            .iter()
            .zip(&vb)
            .map(|(&x, &y)| (f64::from(y) - f64::from(x)).powi(2))
            .sum::<f64>()
            .sqrt();

        let row = &tensors[name];
        assert_eq!(
            row["change"],
            if differ > 0 { "changed" } else { "unchanged" },
            "{name}"
        );
        assert_eq!(row["elements"], n, "{name}");
        assert_eq!(row["changed_elements"], differ, "{name}");
        assert_exact(&row["changed_fraction"], differ as f64 / n as f64, name);
        assert_close(&row["l2"], norm_d, &format!("{name} l2"));
        if norm_a > 0.0 {
            assert_close(&row["relative_l2"], norm_d / norm_a, &format!("{name} relative_l2"));
        } else {
            // All zeros in the base (pooler.dense.bias): no relative change, the absolute one.
            assert!(row["relative_l2"].is_null(), "{name}: {row}");
        }
        assert_eq!(row["a"]["file"], "base.safetensors");
        assert_eq!(row["b"]["file"], "finetune.safetensors");
        elements += n;
        changed_elements += differ;
        if differ > 0 {
            changed += 1;
        } else {
            unchanged += 1;
        }
    }

    let summary = &report["summary"];
    assert_eq!(summary["elements"], elements);
    assert_eq!(summary["changed_elements"], changed_elements);
    assert_exact(
        &summary["changed_fraction"],
        changed_elements as f64 / elements as f64,
        "summary",
    );
    assert_eq!(summary["tensors"]["changed"], changed);
    assert_eq!(summary["tensors"]["unchanged"], unchanged);
    assert_eq!(summary["tensors"]["removed"], names_a.difference(&names_b).count());
    assert_eq!(summary["tensors"]["added"], names_b.difference(&names_a).count());
    // One file each, under its own name.
    let files = rows(&report, "files", "path");
    assert_eq!(files["base.safetensors"]["change"], "removed");
    assert_eq!(files["finetune.safetensors"]["change"], "added");

    // Without --all, the unchanged tensors are only counted.
    let short = sb.json(&["diff", "base", "finetune"]);
    assert_eq!(
        short["tensors"].as_array().unwrap().len(),
        tensors.len() - unchanged,
        "{}",
        short["summary"]
    );
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn tensor(name: &str, dtype: &str, shape: &[u64], data: Vec<u8>) -> Tensor {
    Tensor {
        name: name.into(),
        dtype: dtype.into(),
        shape: shape.to_vec(),
        data,
    }
}

/// Side a of the tiny pair: `model.safetensors` and three small files.
fn tiny_a(dir: &Path) {
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    let bf16 = |v: f32| half::bf16::from_f32(v).to_le_bytes();
    let model = [
        tensor("f32", "F32", &[4], f32s(&[1.0, 2.0, 2.0, 4.0])),
        tensor(
            "f64",
            "F64",
            &[3],
            [3.0f64, 0.0, 4.0].iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        tensor("f16", "F16", &[2], [f16(0.0), f16(0.0)].concat()),
        tensor("bf16", "BF16", &[8], [bf16(1.0); 8].concat()),
        tensor(
            "i64",
            "I64",
            &[3],
            [1i64, 2, 3].iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        tensor("empty", "F32", &[2, 0], Vec::new()),
        tensor("reshaped", "F32", &[2, 2], f32s(&[1.0, 2.0, 3.0, 4.0])),
        tensor("retyped", "F32", &[2], f32s(&[1.0, 2.0])),
        tensor("unchanged", "F32", &[4], f32s(&[5.0, 6.0, 7.0, 8.0])),
        tensor("removed", "F32", &[1], f32s(&[1.0])),
    ];
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), safetensors_bytes(&model, &[])).unwrap();
    std::fs::write(dir.join("config.json"), b"{\"v\": 1}").unwrap();
    std::fs::write(dir.join("removed.txt"), b"gone").unwrap();
    std::fs::write(dir.join("same.txt"), [b'x'; 100]).unwrap();
}

/// Side b: the same tensors changed by hand, `i64` and a new tensor moved to another file.
fn tiny_b(dir: &Path) {
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    let bf16 = |v: f32| half::bf16::from_f32(v).to_le_bytes();
    let mut b16 = [bf16(1.0); 8];
    b16[7] = bf16(3.0);
    let model = [
        tensor("f32", "F32", &[4], f32s(&[1.0, 2.0, 5.0, 0.0])),
        tensor(
            "f64",
            "F64",
            &[3],
            [3.0f64, 0.0, 4.5].iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        tensor("f16", "F16", &[2], [f16(-0.0), f16(0.5)].concat()),
        tensor("bf16", "BF16", &[8], b16.concat()),
        tensor("empty", "F32", &[2, 0], Vec::new()),
        tensor("reshaped", "F32", &[4], f32s(&[1.0, 2.0, 3.0, 4.0])),
        tensor("retyped", "F16", &[2], [f16(1.0), f16(2.0)].concat()),
        tensor("unchanged", "F32", &[4], f32s(&[5.0, 6.0, 7.0, 8.0])),
    ];
    let extra = [
        tensor(
            "i64",
            "I64",
            &[3],
            [1i64, 2, -3].iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        tensor("added", "F32", &[2], f32s(&[1.0, 1.0])),
    ];
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), safetensors_bytes(&model, &[])).unwrap();
    std::fs::write(dir.join("extra.safetensors"), safetensors_bytes(&extra, &[])).unwrap();
    std::fs::write(dir.join("config.json"), b"{\"v\": 2}").unwrap();
    std::fs::write(dir.join("same.txt"), [b'x'; 100]).unwrap();
}

/// `add` then `commit` with extra environment (another chunk size).
fn add_commit_with(sb: &Sandbox, env: &[(&str, String)], source: &Path, name: &str) {
    let mut all: Vec<(&str, String)> = sb.env.clone();
    all.extend(env.iter().cloned());
    run_in(sb.path(), &["add", source.to_str().unwrap(), "--name", name], &all).ok();
    run_in(sb.path(), &["commit", "-m", name], &all).ok();
}

/// The tensors of a tiny diff, checked against the values worked out by hand.
#[track_caller]
fn check_tiny_tensors(report: &Value) {
    let t = rows(report, "tensors", "name");
    let expect = |name: &str, change: &str, n: u64, changed: u64, l2: Option<f64>, rel: Option<f64>| {
        let row = &t[name];
        assert_eq!(row["change"], change, "{name}: {row}");
        assert_eq!(row["elements"], n, "{name}: {row}");
        assert_eq!(row["changed_elements"], changed, "{name}: {row}");
        assert_eq!(
            row["changed_fraction"].as_f64(),
            Some(changed as f64 / n as f64),
            "{name}: {row}"
        );
        assert_eq!(row["l2"].as_f64(), l2, "{name}: {row}");
        assert_eq!(row["relative_l2"].as_f64(), rel, "{name}: {row}");
    };
    // [1, 2, 2, 4] -> [1, 2, 5, 0]: change [0, 0, 3, -4], norm 5 of a norm 5.
    expect("f32", "changed", 4, 2, Some(5.0), Some(1.0));
    // [3, 0, 4] -> [3, 0, 4.5]: 0.5 of 5.
    expect("f64", "changed", 3, 1, Some(0.5), Some(0.1));
    // [0, 0] -> [-0, 0.5]: both bit patterns differ, a has norm 0, so only the absolute 0.5.
    expect("f16", "changed", 2, 2, Some(0.5), None);
    // Eight ones, the last -> 3: 2 of sqrt(8); the first chunk (at 8-byte chunks) is equal.
    expect("bf16", "changed", 8, 1, Some(2.0), Some(2.0 / 8f64.sqrt()));
    // Integers: bit patterns only.
    expect("i64", "changed", 3, 1, None, None);
    expect("unchanged", "unchanged", 4, 0, Some(0.0), Some(0.0));
    let empty = &t["empty"];
    assert_eq!(empty["change"], "unchanged", "{empty}");
    assert_eq!(empty["elements"], 0, "{empty}");
    assert!(empty["changed_fraction"].is_null(), "{empty}");
    assert_eq!(empty["l2"].as_f64(), Some(0.0), "{empty}");
    assert!(empty["relative_l2"].is_null(), "{empty}");

    let reshaped = &t["reshaped"];
    assert_eq!(reshaped["change"], "reshaped", "{reshaped}");
    assert_eq!(reshaped["a"]["shape"], serde_json::json!([2, 2]));
    assert_eq!(reshaped["b"]["shape"], serde_json::json!([4]));
    assert!(
        reshaped["changed_elements"].is_null() && reshaped["l2"].is_null(),
        "{reshaped}"
    );
    let retyped = &t["retyped"];
    assert_eq!(retyped["change"], "retyped", "{retyped}");
    assert_eq!(
        (&retyped["a"]["dtype"], &retyped["b"]["dtype"]),
        (&"F32".into(), &"F16".into())
    );
    assert!(
        retyped["changed_elements"].is_null() && retyped["relative_l2"].is_null(),
        "{retyped}"
    );
    assert_eq!(t["removed"]["change"], "removed");
    assert!(t["removed"]["b"].is_null());
    assert_eq!(t["added"]["change"], "added");
    assert_eq!(t["added"]["b"]["file"], "extra.safetensors");
    assert_eq!(t["i64"]["a"]["file"], "model.safetensors");
    assert_eq!(t["i64"]["b"]["file"], "extra.safetensors");

    let s = &report["summary"];
    assert_eq!(
        s["tensors"],
        serde_json::json!({"added": 1, "removed": 1, "changed": 5, "unchanged": 2, "retyped": 1, "reshaped": 1})
    );
    // Compared: f32 4, f64 3, f16 2, bf16 8, i64 3, unchanged 4, empty 0; changed 2+1+2+1+1.
    assert_eq!(s["elements"], 24);
    assert_eq!(s["changed_elements"], 7);
    assert_eq!(s["changed_fraction"].as_f64(), Some(7.0 / 24.0));
}

#[test]
fn diff_of_tiny_models_gives_the_values_worked_out_by_hand() {
    // 8-byte chunks: most tensors span several; small files above 64 bytes get manifests.
    let sb = Sandbox::new()
        .with_env("SPARSE_CHUNK_SIZE", 8)
        .with_env("SPARSE_SMALL_FILE", 64);
    tiny_a(&sb.join("a"));
    tiny_b(&sb.join("b"));
    sb.add_commit(&sb.join("a"), "a", None, "a");
    sb.add_commit(&sb.join("b"), "b", Some("a"), "b");

    let report = sb.json(&["diff", "a", "b", "--all"]);
    check_tiny_tensors(&report);
    let files = rows(&report, "files", "path");
    let change = |p: &str| files[p]["change"].as_str().unwrap().to_string();
    assert_eq!(change("extra.safetensors"), "added");
    assert_eq!(change("removed.txt"), "removed");
    assert_eq!(change("config.json"), "changed");
    assert_eq!(change("model.safetensors"), "changed");
    assert_eq!(change("same.txt"), "unchanged");
    assert_eq!(files["removed.txt"]["size_a"], 4);
    assert!(files["removed.txt"]["size_b"].is_null());
    assert_eq!(
        report["summary"]["files"],
        serde_json::json!({"added": 1, "removed": 1, "changed": 2, "unchanged": 1})
    );

    // Without --all: unchanged files and tensors are counted, not listed.
    let short = sb.json(&["diff", "a", "b"]);
    assert_eq!(short["summary"], report["summary"]);
    let listed = rows(&short, "tensors", "name");
    assert!(!listed.contains_key("unchanged") && !listed.contains_key("empty"));
    assert_eq!(listed.len(), 9);
    assert!(!rows(&short, "files", "path").contains_key("same.txt"));

    // The same b, stored again without base at 16-byte chunks: the two sides are cut
    // differently, and every number stays the same; b against itself is unchanged throughout.
    add_commit_with(&sb, &[("SPARSE_CHUNK_SIZE", "16".into())], &sb.join("b"), "b16");
    check_tiny_tensors(&sb.json(&["diff", "a", "b16", "--all"]));
    let same = sb.json(&["diff", "b", "b16"]);
    assert_eq!(same["tensors"], serde_json::json!([]), "{same}");
    assert_eq!(same["files"], serde_json::json!([]), "{same}");
    assert_eq!(same["summary"]["tensors"]["unchanged"], 10);
    assert_eq!(same["summary"]["files"]["unchanged"], 4);
    assert_eq!(same["summary"]["changed_elements"], 0);

    // Text: one line per change, and the counts.
    let text = sb.run(&["diff", "a", "b"]).ok().stdout.clone();
    for line in [
        "+ extra.safetensors",
        "- removed.txt",
        "~ config.json",
        "T retyped",
        "S reshaped",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    assert!(text.contains("5 changed, 2 unchanged, 1 added, 1 removed"), "{text}");
    sb.assert_fsck_ok();
}

#[test]
fn diff_of_an_unknown_revision_fails_naming_it_and_leaves_the_store_unchanged() {
    let sb = Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 8);
    tiny_a(&sb.join("a"));
    sb.add_commit(&sb.join("a"), "a", None, "a");
    let before = store_snapshot(&sb.store());
    for args in [["diff", "a", "no-such-model"], ["diff", "no-such-model", "a"]] {
        let run = sb.run(&args);
        let err = run.failed();
        assert!(err.contains("no-such-model"), "{err}");
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
    let err = sb.run(&["diff", "a~5", "a"]).failed().to_string();
    assert!(err.contains("a~5"), "{err}");
    assert_unchanged(&before, &store_snapshot(&sb.store()), "a failed diff");
}
