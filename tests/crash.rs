//! Crash safety: `sparse add` and `sparse commit` killed (SIGKILL) at seeded random moments.
//! After every kill the store passes `fsck`, and the name points either where it pointed
//! before or at a commit that checks out exactly as the new input; in the end a plain
//! add + commit works and checks out bit for bit.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;

const ITERATIONS: u64 = 20;
/// Small chunks: thousands of blob files, so that `add` runs long enough to be killed inside.
const CHUNK_SIZE: u64 = 16384;

/// A model of 2 MiB of weight-like F32 tensors.
fn base_model() -> Vec<Tensor> {
    (0..8)
        .map(|i| Tensor::random(&format!("layers.{i}.weight"), "F32", &[256, 256], 40 + i))
        .collect()
}

/// How a supervised run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Exited(bool),
    Killed,
}

/// Runs `args` until it exits or `deadline`, when it is killed. Returns how it ended.
fn run_until(sb: &Sandbox, args: &[&str], deadline: Instant) -> End {
    let mut child: Child = command(sb.path(), args, &sb.env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the binary starts");
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return End::Exited(status.success());
        }
        if Instant::now() >= deadline {
            // Only the child we started, by its own handle.
            child.kill().expect("kill the child");
            child.wait().expect("reap the child");
            return End::Killed;
        }
        std::thread::sleep(Duration::from_micros(300));
    }
}

/// Checks the store after an interruption: fsck passes, status works, and the name points at
/// `old` or at a commit whose checkout is `input`.
fn check_after(sb: &Sandbox, old: &Option<String>, input: &Path, i: u64, what: &str) -> Option<String> {
    let fsck = sb.run(&["--json", "fsck"]);
    assert!(
        fsck.success(),
        "iteration {i} ({what}): fsck failed after the kill:\n{}\n{}",
        fsck.stdout,
        fsck.stderr
    );
    assert_eq!(fsck.json()["ok"], true, "iteration {i} ({what}): {}", fsck.stdout);
    sb.run(&["status"]).ok();

    let now = sb.git_ref("m");
    let via_log = if now.is_some() {
        let log = sb.json(&["log", "m"]);
        let tips: Vec<&serde_json::Value> = log["commits"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["names"].as_array().unwrap().iter().any(|n| n == "m"))
            .collect();
        assert_eq!(tips.len(), 1, "one commit is the tip of m: {log}");
        Some(tips[0]["commit"].as_str().unwrap().to_string())
    } else {
        None
    };
    assert_eq!(via_log, now, "sparse and git agree on the tip");
    if now != *old {
        let id = now.as_deref().expect("a name is never removed by add or commit");
        let out = sb.join(&format!("out/{i}"));
        sb.run(&["checkout", id, "-o", out.to_str().unwrap()]).ok();
        assert_eq!(
            sha256_file(&out.join("model.safetensors")),
            sha256_file(input),
            "iteration {i} ({what}): the name moved to a commit that is not the new input"
        );
        std::fs::remove_dir_all(&out).unwrap();
        // The new commit's history parent is the old tip.
        let parents = sb.json(&["show", id])["parents"].clone();
        let expected: Vec<String> = old.iter().cloned().collect();
        assert_eq!(parents, serde_json::json!(expected), "iteration {i}");
    }
    now
}

#[test]
fn add_and_commit_survive_being_killed_at_random_moments() {
    let sb = Sandbox::new().with_env("SPARSE_CHUNK_SIZE", CHUNK_SIZE);
    let base = base_model();
    let input = sb.join("in/m/model.safetensors");
    let src = input.to_str().unwrap().to_string();

    // Calibrate: how long does a whole add take here (debug build, loaded machine)?
    sb.write("in/m/model.safetensors", &safetensors_bytes(&base, &[]));
    // (The second of two adds of distinct content, so that caches are warm but nothing dedups.)
    sb.run(&["add", &src, "--name", "m"]).ok();
    let other: Vec<Tensor> = base.iter().map(|t| t.finetuned(0.02, 7777)).collect();
    sb.write("in/m/model.safetensors", &safetensors_bytes(&other, &[]));
    let started = Instant::now();
    sb.run(&["add", &src, "--name", "m"]).ok();
    let add_time = started.elapsed();
    let started = Instant::now();
    sb.run(&["commit", "-m", "first"]).ok();
    let commit_time = started.elapsed();
    let mut tip = sb.git_ref("m");
    assert!(tip.is_some());

    let mut rng = Lcg::new(2024);
    let mut kills = [0u32; 2];
    // Killed commits after which the name had moved anyway (the kill came after the ref update).
    let mut moved_anyway = 0;
    let suite = Instant::now();
    for i in 0..ITERATIONS {
        let tuned: Vec<Tensor> = base
            .iter()
            .enumerate()
            .map(|(k, t)| t.finetuned(0.02, i * 100 + k as u64))
            .collect();
        sb.write("in/m/model.safetensors", &safetensors_bytes(&tuned, &[]));
        let message = format!("iteration {i}");
        let mut add_args = vec!["add", src.as_str(), "--name", "m"];
        if i % 2 == 1 {
            add_args.extend(["--base", "m"]);
        }

        // Even iterations aim inside add, odd ones inside commit (which takes milliseconds).
        let (delay, what) = if i % 2 == 0 {
            (add_time.mul_f64(rng.unit() * 0.8), "add")
        } else {
            (commit_time.mul_f64(rng.unit()), "commit")
        };
        let end = if what == "add" {
            run_until(&sb, &add_args, Instant::now() + delay)
        } else {
            // Not meant to be interrupted: a deadline no loaded machine reaches.
            let end = run_until(
                &sb,
                &add_args,
                Instant::now() + add_time * 20 + Duration::from_secs(120),
            );
            assert_eq!(end, End::Exited(true), "iteration {i}: add, not interrupted, succeeds");
            run_until(&sb, &["commit", "-m", &message], Instant::now() + delay)
        };
        match end {
            End::Killed => kills[usize::from(what == "commit")] += 1,
            End::Exited(ok) => assert!(ok, "iteration {i}: {what} ran to its end and failed"),
        }
        let now = check_after(&sb, &tip, &input, i, what);
        if what == "add" && end != End::Killed {
            // add completed: what it staged commits, on top of the old tip.
            sb.run(&["commit", "-m", &message]).ok();
            let now = check_after(&sb, &tip, &input, i, "commit after add");
            assert_ne!(now, tip, "iteration {i}: the commit moved the name");
            tip = now;
        } else if what == "commit" && end == End::Killed {
            // Either the staging record is still there (retrying the commit finishes the job:
            // one new commit, or only the record removed when the name had moved already), or
            // the name has moved (the record goes only after the ref update).
            moved_anyway += u32::from(now != tip);
            let staged = sb.json(&["status"])["staged"].as_array().unwrap().len();
            assert!(staged == 1 || now != tip, "iteration {i}: the staged input vanished");
            if staged == 1 {
                sb.run(&["commit", "-m", &message]).ok();
                let retried = check_after(&sb, &tip, &input, i, "commit retried");
                assert_ne!(retried, tip, "iteration {i}: the retried commit moved the name");
                if now != tip {
                    assert_eq!(retried, now, "iteration {i}: the retry made no second commit");
                }
                tip = retried;
            } else {
                tip = now;
            }
        } else {
            tip = now;
        }
    }
    assert!(
        kills[0] >= 3 && kills[1] >= 2,
        "the loop interrupted add {} and commit {} times; the delays do not reach inside them",
        kills[0],
        kills[1]
    );
    eprintln!(
        "killed add {} and commit {} times ({moved_anyway} after the name moved) in {:?} (a whole add took {add_time:?}, a commit {commit_time:?})",
        kills[0],
        kills[1],
        suite.elapsed()
    );

    // Finally a plain add + commit of a new input succeeds and checks out bit for bit.
    let last: Vec<Tensor> = base.iter().map(|t| t.finetuned(0.05, 999)).collect();
    sb.write("in/m/model.safetensors", &safetensors_bytes(&last, &[]));
    let id = sb.add_commit(&input, "m", Some("m"), "after the crashes");
    assert_eq!(sb.git_ref("m").as_deref(), Some(id.as_str()));
    let out = sb.checkout("m", "out/final");
    assert_eq!(sha256_file(&out.join("model.safetensors")), sha256_file(&input));
    let status = sb.json(&["status"]);
    assert_eq!(status["staged"].as_array().map(Vec::len), Some(0), "{status}");
    sb.assert_fsck_ok();
}

#[test]
fn a_ref_lock_left_by_a_killed_commit_does_not_block_the_next_one() {
    let sb = Sandbox::new();
    let model = sb.write("in/model.safetensors", &safetensors_bytes(&base_model(), &[]));
    let first = sb.add_commit(&model, "m", None, "first");
    // What a commit killed between taking the ref's lock and renaming it into place leaves.
    std::fs::write(sb.store().join("refs/heads/m.lock"), format!("{first}\n")).unwrap();
    let tuned: Vec<Tensor> = base_model().iter().map(|t| t.finetuned(0.1, 5)).collect();
    let model = sb.write("in/model.safetensors", &safetensors_bytes(&tuned, &[]));
    let second = sb.add_commit(&model, "m", Some("m"), "second");
    assert_eq!(sb.git_ref("m"), Some(second));
    assert!(!sb.store().join("refs/heads/m.lock").exists());
    sb.assert_fsck_ok();
}
