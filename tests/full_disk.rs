//! A disk that fills up: `add`, `commit` (of one name, and of two), `checkout`, `push`, `pull` and `clone` run with a limit on the size of any
//! file they write (RLIMIT_FSIZE, with SIGXFSZ ignored, so that a write past it fails with an
//! error as a write to a full disk does), at limits from nothing to more than a blob. Each
//! either succeeds or fails with a clear error and a non-zero exit, leaving the store as it
//! was: the same blobs, objects and refs (a failed `add` or `commit` may leave git objects
//! that nothing reaches, as git does, and `gc` removes them), nothing staged that was not,
//! `fsck` clean, and the same command without the limit then succeeds, bit for bit.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;

use common::{copy_dir, safetensors_bytes, sha256_file, store_snapshot, DirSnapshot, Run, Sandbox, Tensor};

/// Limits on the size of a written file, in bytes: nothing, less than a ref, less than a
/// small blob, and up past the largest blob of the fixture.
const LIMITS: [u64; 9] = [0, 30, 200, 2_000, 9_000, 40_000, 120_000, 400_000, 2_000_000];

fn base() -> Vec<Tensor> {
    vec![
        Tensor::random("embed.weight", "F32", &[512, 96], 1),
        Tensor::random("layer.0.weight", "BF16", &[384, 128], 2),
        Tensor::random("layer.0.bias", "F32", &[384], 3),
        Tensor::random("head.weight", "F16", &[96, 256], 4),
    ]
}

/// Runs the binary in `sb` with no file allowed past `limit` bytes.
fn limited(sb: &Sandbox, args: &[&str], limit: u64) -> Run {
    let mut cmd = common::command(sb.path(), args, &sb.env);
    // SAFETY: between fork and exec the closure makes only async-signal-safe calls (signal,
    // setrlimit) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("the binary starts");
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The store's files but its index, whose database may hold the pages of a transaction that
/// failed (its committed state is compared through `status` instead).
fn files_but_index(sb: &Sandbox) -> DirSnapshot {
    let mut s = store_snapshot(&sb.store());
    s.0.retain(|k, _| !k.ends_with("index.redb"));
    s
}

/// What the store holds as its user sees it: names, what is staged, and a clean fsck.
fn state(sb: &Sandbox) -> (serde_json::Value, DirSnapshot) {
    sb.assert_fsck_ok();
    (sb.json(&["status"]), files_but_index(sb))
}

#[track_caller]
fn failed_cleanly(run: &Run, limit: u64) {
    let err = run.failed();
    assert!(
        err.contains("too large") && err.contains('/'),
        "limit {limit}: the error names the file it could not write: {err}"
    );
    assert!(!err.contains("panicked"), "limit {limit}: {err}");
}

/// Asserts that `sb` is in the state `before` but for git objects that were not there (a
/// commit object written before its name could move, unreachable), and, once `gc` has run,
/// without them too.
#[track_caller]
fn same_state(before: &(serde_json::Value, DirSnapshot), sb: &Sandbox, what: &str) {
    let mut after = state(sb);
    assert_eq!(before.0, after.0, "{what}: status changed");
    after
        .1
         .0
        .retain(|k, _| !k.starts_with("objects/") || before.1 .0.contains_key(k));
    common::assert_unchanged(&before.1, &after.1, what);
    sb.run(&["gc"]).ok();
    common::assert_unchanged(&before.1, &state(sb).1, &format!("{what}, then gc"));
}

#[test]
fn every_writing_command_on_a_full_disk_fails_cleanly_and_changes_nothing() {
    let tuned: Vec<Tensor> = base().iter().map(|t| t.finetuned(0.3, 7)).collect();
    let mut outcomes = Vec::new();
    for limit in LIMITS {
        let sb = Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 65536);
        let base_file = sb.write("in/base/model.safetensors", &safetensors_bytes(&base(), &[]));
        sb.add_commit(base_file.parent().expect("a directory"), "base", None, "base");
        let file = sb.write("in/tuned/model.safetensors", &safetensors_bytes(&tuned, &[]));
        let source = file.parent().expect("a directory").to_str().expect("UTF-8");

        let before = state(&sb);
        let add = limited(&sb, &["add", source, "--name", "tuned", "--base", "base"], limit);
        if !add.success() {
            failed_cleanly(&add, limit);
            same_state(&before, &sb, &format!("add at a limit of {limit} bytes"));
            sb.run(&["add", source, "--name", "tuned", "--base", "base"]).ok();
        }

        let commit = commit_on_full_disk(&sb, limit, &["tuned"]);

        let before = state(&sb);
        let out = sb.join("out");
        let checkout = limited(&sb, &["checkout", "tuned", "-o", out.to_str().expect("UTF-8")], limit);
        if !checkout.success() {
            failed_cleanly(&checkout, limit);
            same_state(&before, &sb, &format!("checkout at a limit of {limit} bytes"));
            assert!(
                !out.exists() || is_empty(&out),
                "limit {limit}: a failed checkout leaves no file behind"
            );
        }
        let here = sb.path().to_str().expect("UTF-8");
        assert_checks_out(&sb, here, &file, &format!("limit {limit}"));

        // A push into another store on the full disk: this store stays as it was, the other
        // keeps its names and a clean fsck; without the limit the push completes.
        let remote = new_store(&sb, "remote");
        let remote = remote.as_str();
        let before = state(&sb);
        let push = limited(&sb, &["push", remote, "tuned"], limit);
        if !push.success() {
            failed_cleanly(&push, limit);
            same_state(&before, &sb, &format!("push at a limit of {limit} bytes"));
            sb.run(&["-C", remote, "log", "tuned"]).failed();
            sb.run(&["-C", remote, "fsck"]).ok();
            sb.run(&["push", remote, "tuned"]).ok();
        }
        assert_checks_out(&sb, remote, &file, &format!("pushed, limit {limit}"));

        // A pull into another store on the full disk: that store keeps its names and a clean
        // fsck (objects received before the failure may stay, unreachable, as git leaves
        // them); without the limit the pull completes.
        let local = new_store(&sb, "local");
        let local = local.as_str();
        let store = sb.store();
        let store = store.to_str().expect("UTF-8");
        let pull = limited(&sb, &["-C", local, "pull", store, "tuned"], limit);
        if !pull.success() {
            failed_cleanly(&pull, limit);
            sb.run(&["-C", local, "log", "tuned"]).failed();
            sb.run(&["-C", local, "fsck"]).ok();
            sb.run(&["-C", local, "pull", store, "tuned"]).ok();
        }
        assert_checks_out(&sb, local, &file, &format!("pulled, limit {limit}"));

        // A clone on the full disk leaves no directory behind, not even the ones it made
        // on the way.
        let copy = sb.join("copies/of/store");
        let clone = limited(&sb, &["clone", store, copy.to_str().expect("UTF-8")], limit);
        if !clone.success() {
            failed_cleanly(&clone, limit);
            assert!(
                !sb.join("copies").exists(),
                "limit {limit}: a failed clone leaves nothing"
            );
        }
        // A second commit of the name, with a new name staged beside it, on the full disk
        // leaves both where they were: a commit moves every staged name or none.
        let next: Vec<Tensor> = tuned.iter().map(|t| t.finetuned(0.1, 8)).collect();
        let next_file = sb.write("in/next/model.safetensors", &safetensors_bytes(&next, &[]));
        let next_source = next_file.parent().expect("a directory").to_str().expect("UTF-8");
        sb.run(&["add", next_source, "--name", "tuned", "--base", "tuned"]).ok();
        sb.run(&["add", next_source, "--name", "other", "--base", "base"]).ok();
        let again = commit_on_full_disk(&sb, limit, &["other", "tuned"]);
        for name in ["tuned", "other"] {
            let next_out = sb.checkout(name, &format!("next-out-{name}"));
            assert_eq!(
                sha256_file(&next_out.join("model.safetensors")),
                sha256_file(&next_file),
                "limit {limit}, {name}"
            );
        }
        outcomes.push((
            limit,
            [
                add.success(),
                commit,
                checkout.success(),
                push.success(),
                pull.success(),
                clone.success(),
                again,
            ],
        ));
    }
    // No room at all fails every step; the largest limit lets every one through.
    assert_eq!(outcomes[0].1, [false; 7], "{outcomes:?}");
    assert_eq!(outcomes[LIMITS.len() - 1].1, [true; 7], "{outcomes:?}");
    eprintln!("(limit, [add, commit, checkout, push, pull, clone, second commit] succeeded): {outcomes:?}");
}

/// The index unable to grow past each of many sizes around its own while `add`, and then
/// `commit` of two names, write to it: redb's transaction fails at each of its writes in
/// turn, some of them after its commit point (then a later writer finds it landed). Each
/// command succeeds, all of it, or fails and leaves the store as it was: never an error with
/// the work done, or done in part.
#[test]
fn add_and_commit_with_the_index_failing_at_each_of_its_writes() {
    // The small models of fixtures/: every blob and git object fits below the limits, and
    // only the index grows past them.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let (base, tuned) = (fixtures.join("tiny-model"), fixtures.join("tiny-finetune"));
    let (base, tuned) = (base.to_str().expect("UTF-8"), tuned.to_str().expect("UTF-8"));
    let sb = Sandbox::new();
    sb.run(&["add", base, "--name", "base"]).ok();
    sb.run(&["commit", "-m", "base"]).ok();
    let store = sb.store();
    let clean = sb.join("clean-store");
    copy_dir(&store, &clean);
    // The sizes the index passes through: where it starts, and the most it holds after the
    // adds and the commit run without a limit (in between, redb grows the file to about
    // twice its size and then trims it).
    let index_size = || {
        std::fs::metadata(store.join("sparse/index.redb"))
            .expect("an index")
            .len()
    };
    let start = index_size();
    sb.run(&["add", tuned, "--name", "tuned", "--base", "base"]).ok();
    sb.run(&["add", base, "--name", "other"]).ok();
    let most = index_size();
    sb.run(&["commit", "-m", "tuned"]).ok();
    let most = most.max(index_size());

    let restore = || {
        std::fs::remove_dir_all(&store).expect("remove the store");
        copy_dir(&clean, &store);
    };
    let mut outcomes = std::collections::BTreeMap::new();
    for limit in (start.saturating_sub(16384)..2 * most + 16384).step_by(512) {
        restore();
        let before = state(&sb);
        let add = limited(&sb, &["add", tuned, "--name", "tuned", "--base", "base"], limit);
        if add.success() {
            assert_eq!(sb.json(&["status"])["staged"][0]["name"], "tuned", "limit {limit}");
        } else {
            failed_cleanly(&add, limit);
            same_state(&before, &sb, &format!("add at a limit of {limit} bytes"));
        }

        restore();
        sb.run(&["add", tuned, "--name", "tuned", "--base", "base"]).ok();
        sb.run(&["add", base, "--name", "other"]).ok();
        let commit = commit_on_full_disk(&sb, limit, &["other", "tuned"]);
        *outcomes.entry((add.success(), commit)).or_insert(0) += 1;
    }
    eprintln!("(add succeeded, commit succeeded): times {outcomes:?}");
    assert!(outcomes.len() > 1, "the limits reach the index's writes: {outcomes:?}");
}

/// Commits what is staged, the names `names`, with writes failing past `limit`: if that
/// fails, the store is as it was and every name where it was; the commit is then made
/// without the limit. Whether the first try succeeded.
#[track_caller]
fn commit_on_full_disk(sb: &Sandbox, limit: u64, names: &[&str]) -> bool {
    let tips: Vec<Option<String>> = names.iter().map(|n| sb.git_ref(n)).collect();
    let before = state(sb);
    let commit = limited(sb, &["commit", "-m", "tuned"], limit);
    if !commit.success() {
        failed_cleanly(&commit, limit);
        same_state(&before, sb, &format!("commit of {names:?} at a limit of {limit} bytes"));
        for (name, tip) in names.iter().zip(&tips) {
            assert_eq!(&sb.git_ref(name), tip, "limit {limit}: {name} did not move");
        }
        sb.run(&["commit", "-m", "tuned"]).ok();
    }
    for (name, tip) in names.iter().zip(&tips) {
        assert_ne!(&sb.git_ref(name), tip, "limit {limit}: {name} moved");
    }
    commit.success()
}

/// A new, empty store in `rel` under `sb`; the path of its directory.
fn new_store(sb: &Sandbox, rel: &str) -> String {
    let dir = sb.join(rel);
    std::fs::create_dir(&dir).expect("a fresh directory");
    let dir = dir.to_str().expect("UTF-8").to_string();
    sb.run(&["-C", &dir, "init"]).ok();
    dir
}

/// Asserts that `tuned` of the store in `dir` checks out byte for byte as `file`.
#[track_caller]
fn assert_checks_out(sb: &Sandbox, dir: &str, file: &Path, what: &str) {
    static OUTPUTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = OUTPUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = sb.join(&format!("checked-{n}"));
    sb.run(&["-C", dir, "checkout", "tuned", "-o", out.to_str().expect("UTF-8")])
        .ok();
    assert_eq!(sha256_file(&out.join("model.safetensors")), sha256_file(file), "{what}");
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).expect("a directory").next().is_none()
}
