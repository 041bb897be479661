//! Remotes that are another store on a path: `remote`, `push`, `fetch`, `pull`, `clone`.
//! Transfers send only what the other store lacks, verify every blob, move refs last and
//! only by fast-forward unless forced.

mod common;

use std::collections::BTreeSet;

use common::*;

fn sandbox() -> Sandbox {
    Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 4096)
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("UTF-8 paths")
}

fn blob_names(sb: &Sandbox) -> BTreeSet<String> {
    cas_blobs(&sb.store()).into_iter().map(|(k, _)| k).collect()
}

#[test]
fn push_then_clone_gives_every_model_bit_exact() {
    let local = sandbox();
    let remote = sandbox();
    let [base, ft, _] = sources(&local);
    let base_id = local.add_commit(&base, "base", None, "base");
    let ft_id = local.add_commit(&ft, "tuned", Some("base"), "fine-tune");
    local.run(&["tag", "v1", "base"]).ok();

    local.run(&["remote", "add", "origin", path(remote.path())]).ok();
    let list = local.json(&["remote", "list"]);
    assert_eq!(list["remotes"][0]["name"], "origin", "{list}");
    assert!(local.store().join("sparse/remotes.json").is_file());

    let pushed = local.json(&["push", "origin"]);
    assert!(pushed["objects_sent"].as_u64().unwrap() > 0, "{pushed}");
    assert_eq!(pushed["objects_skipped"], 0, "{pushed}");
    assert_eq!(remote.git_ref("base").as_deref(), Some(base_id.as_str()));
    assert_eq!(remote.git_ref("tuned").as_deref(), Some(ft_id.as_str()));
    assert_eq!(blob_names(&remote), blob_names(&local), "every blob sent");
    remote.assert_fsck_ok();

    let clone = Sandbox {
        env: local.env.clone(),
        ..Sandbox::empty()
    };
    let cloned = local.json(&["clone", path(remote.path()), path(clone.path())]);
    assert_eq!(
        cloned["objects_sent"], pushed["objects_sent"],
        "a clone receives what the push sent: {cloned}"
    );
    clone.assert_fsck_ok();
    for (rev, src) in [("base", &base), ("tuned", &ft), ("v1", &base)] {
        assert_bit_exact(&clone, rev, &sha256_file(src));
    }
    let names = clone.json(&["branch"]);
    assert_eq!(names["refs"].as_array().unwrap().len(), 2, "{names}");
    let tracking = git(&clone.store(), &["rev-parse", "refs/remotes/origin/tuned"]);
    assert_eq!(String::from_utf8_lossy(&tracking.stdout).trim(), ft_id);
    // gc in the clone keeps everything.
    let gc = clone.json(&["gc"]);
    assert_eq!(gc["blobs_removed"], 0, "{gc}");

    local.run(&["remote", "remove", "origin"]).ok();
    assert_eq!(local.json(&["remote", "list"])["remotes"].as_array().unwrap().len(), 0);

    // By path: pull moves local names and records no tracking names; fetch needs a remote's
    // name to record them under, and says so.
    let other = sandbox();
    let pulled = other.run(&["pull", path(remote.path()), "tuned"]);
    pulled.ok();
    assert_eq!(other.git_ref("tuned").as_deref(), Some(ft_id.as_str()));
    assert_bit_exact(&other, "tuned", &sha256_file(&ft));
    let refs = git(&other.store(), &["for-each-ref", "refs/remotes"]);
    assert!(refs.stdout.is_empty(), "{}", String::from_utf8_lossy(&refs.stdout));
    let fetch = other.run(&["fetch", path(remote.path())]);
    assert!(fetch.failed().contains("sparse remote add"), "{}", fetch.stderr);
}

#[test]
fn pushes_send_only_what_the_remote_lacks() {
    let local = sandbox();
    let remote = sandbox();
    let [base, ft, _] = sources(&local);
    local.add_commit(&base, "base", None, "base");
    local.run(&["remote", "add", "origin", path(&remote.store())]).ok();
    let first = local.json(&["push", "origin", "base"]);
    assert!(first["objects_sent"].as_u64().unwrap() > 0, "{first}");

    let again = local.json(&["push", "origin"]);
    assert_eq!(again["objects_sent"], 0, "nothing new: {again}");
    assert_eq!(again["bytes_sent"], 0, "{again}");

    let before = blob_names(&local);
    let added = local.json(&["add", path(&ft), "--name", "tuned", "--base", "base"]);
    local.run(&["commit", "-m", "fine-tune"]).ok();
    let new: Vec<String> = blob_names(&local).difference(&before).cloned().collect();
    assert!(!new.is_empty());
    let new_bytes: u64 = new
        .iter()
        .map(|k| std::fs::metadata(local.store().join("cas").join(k)).unwrap().len())
        .sum();
    let stored = added["stored_bytes"].as_u64().unwrap();

    let second = local.json(&["push", "origin", "tuned"]);
    assert_eq!(second["blobs_sent"].as_u64().unwrap() as usize, new.len(), "{second}");
    let sent = second["bytes_sent"].as_u64().unwrap();
    assert!(
        sent >= new_bytes && sent < new_bytes + 8192,
        "{sent} vs {new_bytes}: {second}"
    );
    assert!(
        sent < stored + 8192,
        "only the fine-tune's own blobs ({stored} stored bytes): {second}"
    );
    assert!(second["objects_skipped"].as_u64().unwrap() > 0, "{second}");
    remote.assert_fsck_ok();
    assert_bit_exact(&remote, "tuned", &sha256_file(&ft));
}

#[test]
fn an_interrupted_push_completes_and_sends_only_the_rest() {
    let local = sandbox();
    let remote = sandbox();
    let [base, ft, _] = sources(&local);
    local.add_commit(&base, "base", None, "base");
    local.add_commit(&ft, "tuned", Some("base"), "fine-tune");
    let first = local.json(&["push", path(remote.path())]);

    // As if the push had stopped partway: some blob files and git objects written, no refs.
    let blobs = cas_blobs(&remote.store());
    let gone: Vec<_> = blobs.iter().step_by(2).collect();
    for (_, p) in &gone {
        std::fs::remove_file(p).unwrap();
    }
    let tuned_commit = remote.git_ref("tuned").unwrap();
    let object = remote
        .store()
        .join("objects")
        .join(&tuned_commit[..2])
        .join(&tuned_commit[2..]);
    std::fs::remove_file(object).unwrap();
    for name in ["base", "tuned"] {
        std::fs::remove_file(remote.store().join("refs/heads").join(name)).unwrap();
    }
    assert_eq!(remote.git_ref("tuned"), None);

    let again = local.json(&["push", path(remote.path())]);
    assert_eq!(
        again["objects_sent"].as_u64().unwrap() as usize,
        gone.len() + 1,
        "the missing blobs and the commit: {again}"
    );
    assert_eq!(again["blobs_sent"].as_u64().unwrap() as usize, gone.len(), "{again}");
    assert_eq!(
        again["objects_skipped"].as_u64().unwrap() + again["objects_sent"].as_u64().unwrap(),
        first["objects_sent"].as_u64().unwrap(),
        "{first} {again}"
    );
    remote.assert_fsck_ok();
    assert_bit_exact(&remote, "base", &sha256_file(&base));
    assert_bit_exact(&remote, "tuned", &sha256_file(&ft));
}

#[test]
fn a_push_that_is_not_a_fast_forward_is_refused_unless_forced() {
    let local = sandbox();
    let remote = sandbox();
    let [base, ft, ft2] = sources(&local);
    local.add_commit(&base, "base", None, "base");
    local.run(&["remote", "add", "r", path(remote.path())]).ok();
    local.json(&["push", "r"]);

    // The remote's name moves on: a new fine-tune committed on it there.
    remote.add_commit(&ft, "base", Some("base"), "moved on the remote");
    let theirs = remote.git_ref("base").unwrap();
    // Locally, the name moves elsewhere.
    let ours = local.add_commit(&ft2, "base", Some("base"), "moved locally");
    assert_ne!(theirs, ours);

    let refused = local.run(&["push", "r", "base"]);
    assert!(!refused.success(), "{}", refused.stdout);
    assert!(refused.stderr.contains("fast-forward"), "{}", refused.stderr);
    assert_eq!(remote.git_ref("base").as_deref(), Some(theirs.as_str()), "unchanged");

    // Pulling the remote's name over the local one is refused the same way.
    let pulled = local.run(&["pull", "r", "base"]);
    assert!(!pulled.success(), "pull refuses too: {}", pulled.stdout);

    let forced = local.json(&["push", "r", "base", "--force"]);
    assert_eq!(forced["refs"][0]["status"], "forced", "{forced}");
    assert_eq!(remote.git_ref("base").as_deref(), Some(ours.as_str()));
    remote.assert_fsck_ok();
    assert_bit_exact(&remote, "base", &sha256_file(&ft2));

    // A later local commit on top is a fast-forward.
    let next = local.add_commit(&ft, "base", Some("base"), "on top");
    let ff = local.json(&["push", "r", "base"]);
    assert_eq!(ff["refs"][0]["status"], "fast-forward", "{ff}");
    assert_eq!(remote.git_ref("base").as_deref(), Some(next.as_str()));

    // Pull in the other direction: a fresh store fast-forwards to the remote.
    let other = sandbox();
    other.run(&["remote", "add", "r", path(remote.path())]).ok();
    let pull = other.json(&["pull", "r"]);
    assert_eq!(
        pull["refs"].as_array().unwrap().len(),
        2,
        "tracking and local name: {pull}"
    );
    assert_eq!(other.git_ref("base").as_deref(), Some(next.as_str()));
    other.assert_fsck_ok();
}

#[test]
fn a_corrupt_blob_is_refused_and_not_written() {
    let local = sandbox();
    let remote = sandbox();
    let [base, _, _] = sources(&local);
    local.add_commit(&base, "base", None, "base");
    let (key, file) = cas_blobs(&local.store()).into_iter().next().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&file, bytes).unwrap();

    let run = local.run(&["push", path(remote.path())]);
    assert!(!run.success(), "{}", run.stdout);
    assert!(run.stderr.contains(&key), "names the blob: {}", run.stderr);
    assert!(
        !remote.store().join("cas").join(&key).exists(),
        "nothing written for it"
    );
    assert_eq!(remote.git_ref("base"), None, "no ref moved");
    let tmp: Vec<_> = std::fs::read_dir(remote.store().join("sparse/tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "no temporary file left");
}

#[test]
fn a_clone_refers_to_the_chunks_it_received_when_it_adds_them_again() {
    // Default chunks: the manifest stays small beside the tensor.
    let origin = Sandbox::new();
    let t = Tensor::random("w", "F32", &[256, 256], 3);
    let a = origin.write(
        "in/a/model.safetensors",
        &safetensors_bytes(std::slice::from_ref(&t), &[]),
    );
    let c = origin.write(
        "in/c/model.safetensors",
        &safetensors_bytes(&[t.finetuned(0.3, 4)], &[]),
    );
    origin.add_commit(&a, "a", None, "a");
    origin.add_commit(&c, "c", None, "c");
    let other = Sandbox::new();
    let dir = other.join("clone");
    other.run(&["clone", path(&origin.store()), path(&dir)]).ok();
    // In the clone, `a`'s bytes again, coded against `c`: a delta would cost something, a
    // reference to the chunks the clone received (its `full` table) nothing.
    let b = other.write(
        "in/b/model.safetensors",
        &safetensors_bytes(std::slice::from_ref(&t), &[]),
    );
    let report = sbjson_in(&other, &dir, &["add", path(&b), "--name", "b", "--base", "c"]);
    let raw = report["raw_bytes"].as_u64().unwrap();
    assert!(
        report["stored_bytes"].as_u64().unwrap() * 50 < raw,
        "the clone knows these chunks: {report}"
    );
}

/// `sparse --json ARGS` run in `dir` with `sb`'s environment.
fn sbjson_in(sb: &Sandbox, dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    run_in(dir, &all, &sb.env).ok().json()
}

#[test]
fn pushes_between_two_stores_in_both_directions_at_once_both_finish() {
    let a = sandbox();
    let b = sandbox();
    let [base, _, _] = sources(&a);
    a.add_commit(&base, "from-a", None, "a's model");
    let other = b.write("in/other/model.safetensors", &safetensors_bytes(&small_model(40), &[]));
    b.add_commit(&other, "from-b", None, "b's model");
    // Each push holds both stores' locks; taken in one order, neither waits on the other.
    std::thread::scope(|s| {
        for _ in 0..3 {
            let ab = s.spawn(|| a.run(&["push", path(&b.store()), "from-a"]));
            let ba = s.spawn(|| b.run(&["push", path(&a.store()), "from-b"]));
            ab.join().unwrap().ok();
            ba.join().unwrap().ok();
        }
    });
    assert_bit_exact(&a, "from-b", &sha256_file(&other));
    assert_bit_exact(&b, "from-a", &sha256_file(&base));
    a.assert_fsck_ok();
    b.assert_fsck_ok();
}
