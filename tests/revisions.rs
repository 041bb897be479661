//! Revisions and refs: NAME, NAME~N, tags, branches, commit id prefixes (unique, ambiguous,
//! unknown), `-C` finding the store from a subdirectory, global flags on either side of the
//! verb, and `status` before and after a commit.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// A store where `m` has three commits (v0, v1, v2, oldest first) and `other` one.
struct History {
    sb: Sandbox,
    /// (commit, input file) of m's versions, oldest first.
    versions: Vec<(String, PathBuf)>,
    other: String,
}

fn version(i: u64) -> Vec<Tensor> {
    let base = [
        Tensor::random("w", "F32", &[32, 8], 1),
        Tensor::random("b", "BF16", &[8], 2),
    ];
    base.iter().map(|t| t.finetuned(0.1 * i as f64, 10 + i)).collect()
}

fn history() -> History {
    let sb = Sandbox::new();
    let mut versions = Vec::new();
    for i in 0..3 {
        let file = sb.write(
            &format!("in/v{i}/model.safetensors"),
            &safetensors_bytes(&version(i), &[]),
        );
        let base = (i > 0).then_some("m");
        let id = sb.add_commit(&file, "m", base, &format!("v{i}"));
        versions.push((id, file));
    }
    let file = sb.write("in/other/model.safetensors", &safetensors_bytes(&version(7), &[]));
    let other = sb.add_commit(&file, "other", None, "other");
    History { sb, versions, other }
}

/// The commit `rev` resolves to, through `show --json`.
#[track_caller]
fn resolve(sb: &Sandbox, rev: &str) -> String {
    sb.json(&["show", rev])["commit"].as_str().unwrap().to_string()
}

/// Checks `rev` out and compares its model file with `input`.
#[track_caller]
fn assert_checks_out_as(sb: &Sandbox, rev: &str, input: &Path) {
    let out = sb.join(&format!("out/{}", sha256_bytes(rev.as_bytes())));
    sb.run(&["checkout", rev, "-o", out.to_str().unwrap()]).ok();
    assert_eq!(sha256_file(&out.join("model.safetensors")), sha256_file(input), "{rev}");
    std::fs::remove_dir_all(out).unwrap();
}

fn ref_rows(v: &Value) -> Vec<(String, String)> {
    v["refs"]
        .as_array()
        .expect("a list of refs")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["commit"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn name_tilde_n_walks_back_the_history() {
    let h = history();
    let sb = &h.sb;
    let ids: Vec<&str> = h.versions.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(resolve(sb, "m"), ids[2]);
    assert_eq!(resolve(sb, "m~0"), ids[2]);
    assert_eq!(resolve(sb, "m~1"), ids[1]);
    assert_eq!(resolve(sb, "m~"), ids[1], "NAME~ is NAME~1");
    assert_eq!(resolve(sb, "m~2"), ids[0]);
    assert_eq!(resolve(sb, "other"), h.other);
    for (i, (_, input)) in h.versions.iter().enumerate() {
        assert_checks_out_as(sb, &format!("m~{}", 2 - i), input);
    }
    let err = sb.run(&["show", "m~3"]).failed().to_string();
    assert!(err.contains("m~3") && err.contains("only 2"), "{err}");
    let err = sb.run(&["show", "m~-1"]).failed().to_string();
    assert!(err.contains("m~-1"), "{err}");

    // History parents and delta bases, as show and git see them.
    let show = sb.json(&["show", "m"]);
    assert_eq!(show["parents"], serde_json::json!([ids[1]]));
    assert_eq!(show["base"], ids[1], "v2 was added with --base m, then at v1");
    assert_eq!(sb.json(&["show", "m~2"])["parents"], serde_json::json!([]));
    let parent = git(&sb.store(), &["rev-parse", "m~1"]);
    assert_eq!(String::from_utf8_lossy(&parent.stdout).trim(), ids[1]);
}

/// The commit ids of a `log --json` report, in its order.
fn commit_ids(log: &serde_json::Value) -> Vec<&str> {
    log["commits"]
        .as_array()
        .expect("log reports its commits")
        .iter()
        .map(|c| c["commit"].as_str().expect("each commit has an id"))
        .collect()
}

#[test]
fn log_lists_a_name_s_history_and_every_name() {
    let h = history();
    let sb = &h.sb;
    let log = sb.json(&["log", "m"]);
    let commits = commit_ids(&log);
    let mut expected: Vec<&str> = h.versions.iter().map(|(id, _)| id.as_str()).collect();
    let mut sorted = commits.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "log m lists m's three commits");
    let all = sb.json(&["log"]);
    assert_eq!(all["commits"].as_array().unwrap().len(), 4, "{all}");
    assert_eq!(sb.json(&["log", "m~1"])["commits"].as_array().unwrap().len(), 2);
    let text = sb.run(&["log", "m"]).ok().stdout.clone();
    for (id, _) in &h.versions {
        assert!(text.contains(id.as_str()), "{text}");
    }
}

#[test]
fn log_lists_children_before_their_parents() {
    // Six commits with one timestamp, as quick successive commits (or SOURCE_DATE_EPOCH) give.
    let sb = Sandbox::new().with_env("SOURCE_DATE_EPOCH", 1_700_000_000);
    let mut ids = Vec::new();
    for i in 0..6u64 {
        let file = sb.write("in/model.safetensors", &safetensors_bytes(&version(i), &[]));
        ids.push(sb.add_commit(&file, "m", None, &format!("v{i}")));
    }
    ids.reverse();
    let log = sb.json(&["log", "m"]);
    let commits = commit_ids(&log);
    let by_git = git(&sb.store(), &["log", "--format=%H", "m"]);
    let by_git: Vec<String> = String::from_utf8_lossy(&by_git.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(by_git, ids, "git lists them newest first");
    assert_eq!(commits, ids, "newest first, as git log m shows them");
}

#[test]
fn tags_are_created_listed_resolved_and_deleted() {
    let h = history();
    let sb = &h.sb;
    let ids: Vec<&str> = h.versions.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ref_rows(&sb.json(&["tag"])), vec![]);

    let created = sb.json(&["tag", "v1.0", "m~1"]);
    assert_eq!(created["name"], "v1.0");
    assert_eq!(created["commit"], ids[1]);
    sb.run(&["tag", "release/first", "m~2"]).ok();
    assert_eq!(
        ref_rows(&sb.json(&["tag"])),
        vec![
            ("release/first".to_string(), ids[0].to_string()),
            ("v1.0".to_string(), ids[1].to_string())
        ]
    );
    assert!(sb.run(&["tag"]).ok().stdout.contains("v1.0"));
    assert_eq!(resolve(sb, "v1.0"), ids[1]);
    assert_eq!(resolve(sb, "v1.0~1"), ids[0]);
    assert_eq!(resolve(sb, "release/first"), ids[0]);
    assert_checks_out_as(sb, "v1.0", &h.versions[1].1);
    // Tags are git tags; names are not tags.
    let git_tags = git(&sb.store(), &["tag", "--list"]);
    assert_eq!(String::from_utf8_lossy(&git_tags.stdout), "release/first\nv1.0\n");
    let names: Vec<String> = ref_rows(&sb.json(&["branch"])).into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["m", "other"]);

    // A tag stays put while its name moves on.
    let file = sb.write("in/v3/model.safetensors", &safetensors_bytes(&version(3), &[]));
    let v3 = sb.add_commit(&file, "m", Some("v1.0"), "v3");
    assert_eq!(resolve(sb, "v1.0"), ids[1]);
    assert_eq!(resolve(sb, "m"), v3);
    assert_eq!(sb.json(&["show", "m"])["base"], ids[1], "--base accepts a tag");

    let err = sb.run(&["tag", "v1.0", "m"]).failed().to_string();
    assert!(err.contains("v1.0") && err.contains("already exists"), "{err}");
    assert_eq!(resolve(sb, "v1.0"), ids[1], "a refused tag changes nothing");

    let deleted = sb.json(&["tag", "-d", "v1.0"]);
    assert_eq!(deleted["commit"], ids[1]);
    assert_eq!(ref_rows(&sb.json(&["tag"])).len(), 1);
    let err = sb.run(&["show", "v1.0"]).failed().to_string();
    assert!(err.contains("unknown revision"), "{err}");
    let err = sb.run(&["tag", "-d", "v1.0"]).failed().to_string();
    assert!(err.contains("no tag named v1.0"), "{err}");
    // The commit it named is still there, through its name's history (m moved on to v3).
    assert_eq!(resolve(sb, "m~2"), ids[1]);
    sb.assert_fsck_ok();

    for bad in ["a b", "x~1", "x^", "x:y", "x..y"] {
        sb.run(&["tag", bad, "m"]).failed();
    }
    sb.run(&["tag", "only-a-name"]).failed();
}

#[test]
fn branches_are_created_listed_moved_and_deleted() {
    let h = history();
    let sb = &h.sb;
    let ids: Vec<&str> = h.versions.iter().map(|(id, _)| id.as_str()).collect();
    let rows = ref_rows(&sb.json(&["branch"]));
    assert_eq!(
        rows,
        vec![
            ("m".to_string(), ids[2].to_string()),
            ("other".to_string(), h.other.clone())
        ]
    );

    let created = sb.json(&["branch", "exp", "m~1"]);
    assert_eq!(created["commit"], ids[1]);
    assert_eq!(sb.git_ref("exp").as_deref(), Some(ids[1]));
    assert!(sb.run(&["branch"]).ok().stdout.contains("exp"));
    assert_eq!(sb.json(&["log", "exp"])["commits"].as_array().unwrap().len(), 2);

    // Committing to the new name moves it alone, on top of where it was.
    let file = sb.write("in/exp/model.safetensors", &safetensors_bytes(&version(5), &[]));
    let e = sb.add_commit(&file, "exp", Some("exp"), "experiment");
    assert_eq!(sb.json(&["show", "exp"])["parents"], serde_json::json!([ids[1]]));
    assert_eq!(resolve(sb, "m"), ids[2]);
    assert_eq!(resolve(sb, "exp~1"), ids[1]);
    assert_checks_out_as(sb, "exp", &file);
    let status = sb.json(&["status"]);
    let names: Vec<String> = ref_rows(&serde_json::json!({ "refs": status["names"] }))
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(names, ["exp", "m", "other"]);

    let err = sb.run(&["branch", "m", "exp"]).failed().to_string();
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(resolve(sb, "m"), ids[2], "a refused branch changes nothing");

    let deleted = sb.json(&["branch", "-d", "exp"]);
    assert_eq!(deleted["commit"], e);
    assert_eq!(sb.git_ref("exp"), None);
    assert_eq!(ref_rows(&sb.json(&["branch"])).len(), 2);
    let err = sb
        .run(&["checkout", "exp", "-o", sb.join("x").to_str().unwrap()])
        .failed()
        .to_string();
    assert!(err.contains("exp"), "{err}");
    // Its last commit, reachable from no name or tag now, no longer resolves by id either.
    let short = &e[..12];
    sb.run(&["show", short]).failed();
    sb.assert_fsck_ok();

    // A hierarchical name is one name.
    sb.run(&["branch", "team/a", "m"]).ok();
    assert_eq!(resolve(sb, "team/a"), ids[2]);
    sb.run(&["branch", "-d", "team/a"]).ok();
}

#[test]
fn a_commit_moves_every_staged_name_or_none() {
    let h = history();
    let sb = &h.sb;
    let ids: Vec<&str> = h.versions.iter().map(|(id, _)| id.as_str()).collect();
    let m_file = sb.write("in/m3/model.safetensors", &safetensors_bytes(&version(3), &[]));
    let other_file = sb.write("in/o2/model.safetensors", &safetensors_bytes(&version(8), &[]));
    let stage = |file: &Path, name: &str| {
        sb.run(&["add", file.to_str().unwrap(), "--name", name, "--base", name])
            .ok();
    };
    stage(&m_file, "m");
    stage(&other_file, "other");

    // `other` moves after it was staged: the commit refuses it, and `m`, staged beside it and
    // first in order, does not move either.
    sb.run(&["branch", "-d", "other"]).ok();
    sb.run(&["branch", "other", "m~1"]).ok();
    let before = sb.json(&["status"]);
    let err = sb.run(&["commit", "-m", "both"]).failed().to_string();
    assert!(err.contains("other moved since it was staged"), "{err}");
    assert_eq!(sb.json(&["status"]), before, "nothing was committed");
    assert_eq!(resolve(sb, "m"), ids[2]);
    assert_eq!(resolve(sb, "other"), ids[1]);
    sb.assert_fsck_ok();

    // Staged again, both commit together.
    stage(&other_file, "other");
    let report = sb.json(&["commit", "-m", "both"]);
    assert_eq!(report["commits"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(sb.json(&["show", "m"])["parents"], serde_json::json!([ids[2]]));
    assert_eq!(sb.json(&["show", "other"])["parents"], serde_json::json!([ids[1]]));
    assert_checks_out_as(sb, "m", &m_file);
    assert_checks_out_as(sb, "other", &other_file);
}

#[test]
fn a_name_that_cannot_move_puts_back_the_names_moved_before_it() {
    let sb = Sandbox::new();
    let a = sb.write("in/a/model.safetensors", &safetensors_bytes(&version(0), &[]));
    let z = sb.write("in/z/model.safetensors", &safetensors_bytes(&version(1), &[]));
    sb.run(&["add", a.to_str().unwrap(), "--name", "aaa"]).ok();
    sb.run(&["add", z.to_str().unwrap(), "--name", "zzz"]).ok();
    // A directory where zzz's ref file goes, holding a file that is no ref: git finds no
    // ref zzz, so the refs' transaction starts, moves aaa, and fails to put zzz in place.
    let stray = sb.store().join("refs/heads/zzz");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("x.lock"), b"").unwrap();
    let before = sb.json(&["status"]);
    let err = sb.run(&["commit", "-m", "both"]).failed().to_string();
    assert!(err.contains("refs/heads/zzz"), "{err}");
    assert_eq!(sb.json(&["status"]), before, "aaa was put back, both stay staged");
    assert_eq!(sb.git_ref("aaa"), None);

    std::fs::remove_dir_all(&stray).unwrap();
    let report = sb.json(&["commit", "-m", "both"]);
    assert_eq!(report["commits"].as_array().unwrap().len(), 2, "{report}");
    assert_checks_out_as(&sb, "aaa", &a);
    assert_checks_out_as(&sb, "zzz", &z);
    sb.assert_fsck_ok();
}

#[test]
fn a_name_cannot_be_a_folder_of_another() {
    let h = history();
    let sb = &h.sb;
    let file = sb.write("in/x/model.safetensors", &safetensors_bytes(&version(4), &[]));
    let file = file.to_str().unwrap();
    // Beside a committed name, and beside a staged one, either way round.
    let err = sb.run(&["add", file, "--name", "m/x"]).failed().to_string();
    assert!(err.contains("\"m/x\"") && err.contains("\"m\""), "{err}");
    sb.run(&["add", file, "--name", "team/a"]).ok();
    let err = sb.run(&["add", file, "--name", "team"]).failed().to_string();
    assert!(err.contains("\"team/a\""), "{err}");
    let err = sb.run(&["add", file, "--name", "team/a/b"]).failed().to_string();
    assert!(err.contains("\"team/a\""), "{err}");
    // A branch beside a staged name is refused too; a tag lives apart from names.
    let err = sb.run(&["branch", "team/a/c", "m"]).failed().to_string();
    assert!(err.contains("\"team/a\""), "{err}");
    sb.run(&["tag", "team/a/c", "m"]).ok();
    // Names that only share a beginning are fine, and everything staged commits.
    sb.run(&["add", file, "--name", "team-b"]).ok();
    sb.run(&["add", file, "--name", "mm"]).ok();
    let report = sb.json(&["commit", "-m", "three"]);
    assert_eq!(report["commits"].as_array().unwrap().len(), 3, "{report}");
}

/// The shortest prefix (at least 4 digits) of `id` that no other id in `all` shares.
fn unique_prefix<'a>(id: &'a str, all: &[String]) -> &'a str {
    (4..=id.len())
        .map(|n| &id[..n])
        .find(|p| all.iter().filter(|o| o.starts_with(p)).count() == 1)
        .unwrap()
}

#[test]
fn commit_id_prefixes_resolve() {
    let h = history();
    let sb = &h.sb;
    let all: Vec<String> = h
        .versions
        .iter()
        .map(|(id, _)| id.clone())
        .chain([h.other.clone()])
        .collect();
    for id in &all {
        assert_eq!(resolve(sb, id), *id, "a full id");
        assert_eq!(resolve(sb, &id[..12]), *id, "12 digits");
        let p = unique_prefix(id, &all);
        assert_eq!(resolve(sb, p), *id, "prefix {p}");
        assert_eq!(resolve(sb, &p.to_uppercase()), *id, "upper case {p}");
    }
    let (v0, input) = &h.versions[0];
    assert_checks_out_as(sb, &v0[..10], input);
    assert_eq!(sb.json(&["log", &v0[..10]])["commits"].as_array().unwrap().len(), 1);

    // Too short, not hex, or not a commit of this store.
    for rev in [&v0[..3], "zzzz", "0000000", "ffffffffffff"] {
        let err = sb.run(&["show", rev]).failed().to_string();
        assert!(err.contains("unknown revision") && err.contains(rev), "{rev}: {err}");
    }
    // A tree or blob id is not a revision.
    let tree = git(&sb.store(), &["rev-parse", &format!("{v0}^{{tree}}")]);
    let tree = String::from_utf8_lossy(&tree.stdout).trim().to_string();
    assert_eq!(tree.len(), 40);
    sb.run(&["show", &tree]).failed();
}

#[test]
fn an_ambiguous_prefix_is_refused_with_its_candidates() {
    let h = history();
    let sb = &h.sb;
    // Write commits (same snapshot, different messages) through the library until two ids
    // share their first 4 hex digits; a chain, so that all are reachable from one name.
    let (a, b) = {
        let repo = sparse::api::Repository::open(&sb.store()).expect("open the store");
        let tip = repo.resolve("m").unwrap();
        let tree = repo.history.commit_info(tip).unwrap().tree;
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut parent = tip;
        let mut pair = None;
        for i in 0..5000 {
            let id = repo
                .history
                .write_commit(tree, &[parent], &format!("chain {i}"))
                .unwrap();
            parent = id;
            let hex = id.to_string();
            if let Some(other) = seen.insert(hex[..4].to_string(), hex.clone()) {
                pair = Some((other, hex));
                break;
            }
        }
        let (a, b) = pair.expect("a 4-digit collision within 5000 commits");
        repo.history
            .set_ref(
                "refs/heads/chain",
                parent,
                sparse::store::history::Expect::Absent,
                "test",
            )
            .unwrap();
        (a, b)
    };
    let prefix = &a[..4];
    for args in [
        vec!["show", prefix],
        vec!["log", prefix],
        vec!["checkout", prefix, "-o", "out"],
        vec!["tag", "t", prefix],
    ] {
        let err = sb.run(&args).failed().to_string();
        assert!(err.contains("ambiguous") && err.contains(prefix), "{args:?}: {err}");
        assert!(err.contains(&a[..12]) && err.contains(&b[..12]), "lists both: {err}");
    }
    // One digit more that tells them apart resolves.
    let n = (4..40).find(|&n| a[..n] != b[..n]).unwrap() + 1;
    assert_eq!(resolve(sb, &a[..n]), a);
    assert_eq!(resolve(sb, &b[..n]), b);
    sb.assert_fsck_ok();
}

#[test]
fn names_take_precedence_over_id_prefixes() {
    let h = history();
    let sb = &h.sb;
    let v0 = &h.versions[0].0;
    let prefix = &v0[..8];
    sb.run(&["branch", prefix, "other"]).ok();
    assert_eq!(
        resolve(sb, prefix),
        h.other,
        "the name {prefix} wins over the id prefix"
    );
    assert_eq!(resolve(sb, &v0[..9]), *v0);
}

#[test]
fn dash_c_finds_the_store_in_a_parent_directory() {
    let h = history();
    let sb = &h.sb;
    let deep = sb.join("a/b/c");
    std::fs::create_dir_all(&deep).unwrap();
    let elsewhere = Sandbox::empty();
    let expected = sb.run(&["--json", "log"]).ok().stdout.clone();
    for c in [deep.clone(), sb.path().to_path_buf(), sb.store(), sb.join("a/b/../b")] {
        let run = run_in(elsewhere.path(), &["-C", c.to_str().unwrap(), "--json", "log"], &[]);
        assert_eq!(run.ok().stdout, expected, "-C {}", c.display());
    }
    // Started in a subdirectory, without -C.
    assert_eq!(run_in(&deep, &["--json", "log"], &[]).ok().stdout, expected);
    // A relative -C.
    assert_eq!(sb.run(&["-C", "a/b", "--json", "log"]).ok().stdout, expected);
    // status names the store it found.
    let status = run_in(
        elsewhere.path(),
        &["-C", deep.to_str().unwrap(), "--json", "status"],
        &[],
    );
    let store = status.ok().json()["store"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::canonicalize(store).unwrap(),
        std::fs::canonicalize(sb.store()).unwrap()
    );

    // No store there or above.
    let err = run_in(elsewhere.path(), &["log"], &[]).failed().to_string();
    assert!(err.contains("not in a sparse store"), "{err}");
    let err = sb
        .run(&["-C", elsewhere.path().to_str().unwrap(), "log"])
        .failed()
        .to_string();
    assert!(err.contains("not in a sparse store"), "{err}");

    // init with -C creates the store there; a second init is refused.
    let fresh = elsewhere.join("fresh");
    let err = run_in(elsewhere.path(), &["-C", fresh.to_str().unwrap(), "init"], &[])
        .failed()
        .to_string();
    assert!(err.contains("fresh"), "-C needs an existing directory, like git: {err}");
    std::fs::create_dir(&fresh).unwrap();
    run_in(elsewhere.path(), &["-C", fresh.to_str().unwrap(), "init"], &[]).ok();
    assert!(fresh.join(".sparse/HEAD").is_file());
    let err = run_in(&fresh, &["init"], &[]).failed().to_string();
    assert!(err.contains("already"), "{err}");
}

#[test]
fn init_creates_the_store_where_it_is_asked_to() {
    // (Once `init DIR` made DIR/DIR/.sparse: DIR and -C shared one clap id.)
    let sb = Sandbox::empty();
    std::fs::create_dir(sb.join("two")).unwrap();
    std::fs::create_dir(sb.join("three")).unwrap();
    for (args, store) in [
        (vec!["init", "one"], "one/.sparse"),
        (vec!["-C", "two", "init"], "two/.sparse"),
        (vec!["-C", "three", "init", "four"], "three/four/.sparse"),
    ] {
        let report = sb.run(&[&["--json"], args.as_slice()].concat()).ok().json();
        let expected = sb.join(store);
        assert!(expected.join("HEAD").is_file(), "{args:?} made no {store}: {report}");
        assert_eq!(report["store"], expected.to_str().unwrap(), "{args:?}");
    }
}

/// -C works like git's: relative paths in the arguments are taken from PATH too.
#[test]
fn dash_c_makes_relative_paths_relative_to_it() {
    let h = history();
    let sb = &h.sb;
    let elsewhere = Sandbox::empty();
    let c = sb.path().to_str().unwrap();
    run_in(
        elsewhere.path(),
        &["-C", c, "add", "in/v0/model.safetensors", "--name", "rel"],
        &[],
    )
    .ok();
    run_in(elsewhere.path(), &["-C", c, "commit", "-m", "rel"], &[]).ok();
    run_in(elsewhere.path(), &["-C", c, "checkout", "rel", "-o", "relout"], &[]).ok();
    assert!(sb.join("relout/model.safetensors").is_file());
    assert!(!elsewhere.join("relout").exists());
}

#[test]
fn global_flags_go_before_or_after_the_verb() {
    let h = history();
    let sb = &h.sb;
    let elsewhere = Sandbox::empty();
    let c = sb.path().to_str().unwrap();
    let variants: [&[&str]; 4] = [
        &["--json", "-C", c, "log", "m"],
        &["-C", c, "log", "m", "--json"],
        &["log", "--json", "m", "-C", c],
        &["--json", "log", "-C", c, "m"],
    ];
    let outputs: Vec<String> = variants
        .iter()
        .map(|args| run_in(elsewhere.path(), args, &[]).ok().stdout.clone())
        .collect();
    assert!(outputs.iter().all(|o| *o == outputs[0]), "{outputs:#?}");
    let v: Value = serde_json::from_str(&outputs[0]).unwrap();
    assert_eq!(v["commits"].as_array().unwrap().len(), 3);
    // Without --json the same verb prints text, not JSON.
    let text = run_in(elsewhere.path(), &["-C", c, "log", "m"], &[]);
    assert!(serde_json::from_str::<Value>(&text.ok().stdout).is_err());
    for args in [["status", "--json"], ["--json", "status"]] {
        let run = sb.run(&args);
        assert!(run.ok().json()["names"].is_array());
    }
}

#[test]
fn status_shows_what_is_staged_until_it_is_committed() {
    let sb = Sandbox::new();
    let status = sb.json(&["status"]);
    assert_eq!(status["staged"], serde_json::json!([]));
    assert_eq!(status["names"], serde_json::json!([]));
    assert!(sb.run(&["status"]).ok().stdout.contains("nothing staged"));

    let a = sb.write("in/a/model.safetensors", &safetensors_bytes(&version(0), &[]));
    let b = sb.write("in/b/model.safetensors", &safetensors_bytes(&version(1), &[]));
    sb.run(&["add", a.to_str().unwrap(), "--name", "alpha"]).ok();
    sb.run(&["add", b.to_str().unwrap(), "--name", "beta"]).ok();
    let status = sb.json(&["status"]);
    let staged = status["staged"].as_array().unwrap();
    let names: Vec<&str> = staged.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta"], "{status}");
    assert_eq!(staged[0]["source"], a.to_str().unwrap());
    assert_eq!(staged[0]["raw_bytes"], std::fs::metadata(&a).unwrap().len());
    assert!(staged[0]["parent"].is_null());
    let text = sb.run(&["status"]).ok().stdout.clone();
    assert!(
        text.contains("alpha") && text.contains("beta") && text.contains("staged"),
        "{text}"
    );
    assert_eq!(sb.git_ref("alpha"), None, "nothing is a commit before commit");

    // Re-adding a name replaces its staged snapshot.
    sb.run(&["add", b.to_str().unwrap(), "--name", "alpha"]).ok();
    let status = sb.json(&["status"]);
    assert_eq!(status["staged"].as_array().unwrap().len(), 2);
    assert_eq!(status["staged"][0]["source"], b.to_str().unwrap());

    // One commit records every staged name.
    let report = sb.json(&["commit", "-m", "both"]);
    assert_eq!(report["commits"].as_array().unwrap().len(), 2, "{report}");
    let status = sb.json(&["status"]);
    assert_eq!(status["staged"], serde_json::json!([]), "{status}");
    let names: Vec<String> = ref_rows(&serde_json::json!({ "refs": status["names"] }))
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert!(sb.run(&["status"]).ok().stdout.contains("nothing staged"));
    assert_checks_out_as(&sb, "alpha", &b);
    assert_checks_out_as(&sb, "beta", &b);
    // alpha and beta hold the same content: one snapshot tree, stored once.
    let (ta, tb) = (
        git(&sb.store(), &["rev-parse", "alpha^{tree}"]),
        git(&sb.store(), &["rev-parse", "beta^{tree}"]),
    );
    assert_eq!(ta.stdout, tb.stdout);
}
