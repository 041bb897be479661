//! Remotes in an S3 bucket, against a real S3-compatible server on loopback: s3s-fs, which
//! checks request signatures and honours conditional puts. The binary is found through
//! `SPARSE_S3S_FS` or on PATH (`cargo install s3s-fs@0.14.1 --features binary --locked`); when
//! it is absent these tests print a notice and pass without running (CI installs it).

mod common;

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ACCESS: &str = "sparse-test-access";
const SECRET: &str = "sparse-test-secret-0123456789";
const BUCKET: &str = "models";

/// An s3s-fs process over a temporary directory, killed when dropped.
struct S3Server {
    child: Child,
    endpoint: String,
    root: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3s_fs() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SPARSE_S3S_FS").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
}

/// Starts s3s-fs with bucket [`BUCKET`], or says why not and returns None.
fn start() -> Option<S3Server> {
    let Some(bin) = s3s_fs() else {
        eprintln!("NOTICE: s3s-fs not found (set SPARSE_S3S_FS or put it on PATH); S3 test skipped");
        return None;
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join(BUCKET)).unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = std::process::Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS, "--secret-key", SECRET])
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let server = S3Server {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        root,
    };
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "s3s-fs did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(server)
}

/// A sandbox whose runs reach `server` with the given secret.
fn sandbox(server: &S3Server, secret: &str) -> Sandbox {
    let mut sb = Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 4096);
    sb.env.extend([
        ("AWS_ACCESS_KEY_ID", ACCESS.to_string()),
        ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", server.endpoint.clone()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ]);
    sb
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 paths")
}

fn blob_names(store: &Path) -> BTreeSet<String> {
    cas_blobs(store).into_iter().map(|(k, _)| k).collect()
}

fn bucket_files(server: &S3Server) -> DirSnapshot {
    store_snapshot(&server.root.path().join(BUCKET))
}

#[test]
fn push_and_clone_through_a_bucket_send_only_what_is_missing_and_check_out_bit_exact() {
    let Some(server) = start() else { return };
    let local = sandbox(&server, SECRET);
    let base = local.write("in/base/model.safetensors", &safetensors_bytes(&small_model(1), &[]));
    let ft = local.write("in/ft/model.safetensors", &safetensors_bytes(&small_finetune(5), &[]));
    let ft2 = local.write("in/ft2/model.safetensors", &safetensors_bytes(&small_finetune(9), &[]));
    local.add_commit(&base, "base", None, "base");
    local.add_commit(&ft, "tuned", Some("base"), "fine-tune");
    local.run(&["tag", "v1", "base"]).ok();
    let url = format!("s3://{BUCKET}/team/store");
    local.run(&["remote", "add", "s3", &url]).ok();

    let first = local.json(&["push", "s3"]);
    assert_eq!(
        first["blobs_sent"].as_u64().unwrap() as usize,
        cas_blobs(&local.store()).len(),
        "{first}"
    );
    let layout = server.root.path().join(BUCKET).join("team/store");
    assert_eq!(blob_names(&layout), blob_names(&local.store()), "blobs keyed by hash");
    assert!(layout.join("refs/heads/tuned").is_file() && layout.join("refs/tags/v1").is_file());

    let again = local.json(&["push", "s3"]);
    assert_eq!(again["objects_sent"], 0, "{again}");
    assert_eq!(again["bytes_sent"], 0, "{again}");

    let before = blob_names(&local.store());
    local.add_commit(&ft2, "tuned2", Some("base"), "another");
    let new: Vec<String> = blob_names(&local.store()).difference(&before).cloned().collect();
    let new_bytes: u64 = new
        .iter()
        .map(|k| std::fs::metadata(local.store().join("cas").join(k)).unwrap().len())
        .sum();
    let delta = local.json(&["push", "s3", "tuned2"]);
    assert_eq!(delta["blobs_sent"].as_u64().unwrap() as usize, new.len(), "{delta}");
    let sent = delta["bytes_sent"].as_u64().unwrap();
    assert!(
        sent >= new_bytes && sent < new_bytes + 8192,
        "{sent} vs {new_bytes}: {delta}"
    );

    let other = sandbox(&server, SECRET);
    let dir = other.join("clone");
    let cloned = other.json(&["clone", &url, path(&dir)]);
    assert_eq!(
        cloned["blobs_sent"].as_u64().unwrap() as usize,
        blob_names(&local.store()).len(),
        "{cloned}"
    );
    let clone = Sandbox {
        dir: tempfile::tempdir_in(&dir).unwrap(),
        env: other.env.clone(),
    };
    for (rev, src) in [("base", &base), ("tuned", &ft), ("tuned2", &ft2), ("v1", &base)] {
        assert_bit_exact(&clone, rev, &sha256_file(src));
    }
    clone.assert_fsck_ok();

    // The clone moves `base` in the bucket; the local `base`, moved elsewhere, is not
    // overwritten without --force, and with it, by conditional put on the ref's ETag.
    let theirs = clone.add_commit(&ft2, "base", Some("base"), "moved through the clone");
    clone.json(&["push", "origin", "base"]);
    let ours = local.add_commit(&ft, "base", Some("base"), "moved locally");
    let refused = local.run(&["push", "s3", "base"]);
    assert!(refused.failed().contains("fast-forward"), "{}", refused.stderr);
    let tip = || {
        std::fs::read_to_string(layout.join("refs/heads/base"))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(tip(), theirs, "unchanged");
    let forced = local.json(&["push", "s3", "base", "--force"]);
    assert_eq!(forced["refs"][0]["status"], "forced", "{forced}");
    assert_eq!(tip(), ours);
    let pulled = clone.json(&["pull", "origin", "base", "--force"]);
    let head = git(&dir.join(".sparse"), &["rev-parse", "refs/heads/base"]);
    assert_eq!(String::from_utf8_lossy(&head.stdout).trim(), ours, "{pulled}");
    assert_bit_exact(&clone, "base", &sha256_file(&ft));
}

#[test]
fn an_interrupted_push_to_a_bucket_completes_and_sends_only_the_rest() {
    let Some(server) = start() else { return };
    let local = sandbox(&server, SECRET);
    let base = local.write("in/base/model.safetensors", &safetensors_bytes(&small_model(1), &[]));
    local.add_commit(&base, "base", None, "base");
    let url = format!("s3://{BUCKET}/p");
    let mut env = local.env.clone();
    env.push(("SPARSE_TEST_FAIL_AFTER", "4".into()));
    let stopped = run_in(local.path(), &["push", &url], &env);
    assert!(stopped.failed().contains("stopped after 4"), "{}", stopped.stderr);
    assert!(
        !server.root.path().join(BUCKET).join("p/refs").exists(),
        "no ref written"
    );

    let rest = local.json(&["push", &url]);
    assert_eq!(rest["objects_skipped"], 4, "{rest}");
    let other = sandbox(&server, SECRET);
    other.run(&["clone", &url, "c"]).ok();
    let clone = Sandbox {
        dir: tempfile::tempdir_in(other.join("c")).unwrap(),
        env: other.env.clone(),
    };
    assert_bit_exact(&clone, "base", &sha256_file(&base));
}

#[test]
fn of_two_concurrent_pushes_to_one_name_in_a_bucket_a_winner_holds_the_ref() {
    let Some(server) = start() else { return };
    let url = format!("s3://{BUCKET}/race");
    let a = sandbox(&server, SECRET);
    let b = sandbox(&server, SECRET);
    let sa = a.write("in/a/model.safetensors", &safetensors_bytes(&small_model(100), &[]));
    let sb_ = b.write("in/b/model.safetensors", &safetensors_bytes(&small_model(200), &[]));
    let ida = a.add_commit(&sa, "m", None, "a");
    let idb = b.add_commit(&sb_, "m", None, "b");
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.run(&["push", &url]));
        let tb = s.spawn(|| b.run(&["push", &url]));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    // s3s-fs checks `If-None-Match: *` before it writes an object, not in one step with the
    // write as S3 does, so two creates that overlap can both succeed there, the later write
    // standing. What holds on any server: at least one push wins, a losing one is refused
    // cleanly, and the ref is a winner's commit. (tests/serve.rs holds `sparse serve` to
    // exactly one winner.)
    let winners = match ra.success() && rb.success() {
        true => vec![ida, idb],
        false => vec![race_winner(&ra, &rb, ida, idb)],
    };
    let other = sandbox(&server, SECRET);
    other.run(&["clone", &url, "c"]).ok();
    let head = git(&other.join("c/.sparse"), &["rev-parse", "refs/heads/m"]);
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert!(winners.contains(&head), "the ref {head} is a winner's: {winners:?}");
    run_in(&other.join("c"), &["fsck"], &other.env).ok();
}

#[test]
fn wrong_credentials_are_refused_and_the_bucket_is_unchanged() {
    let Some(server) = start() else { return };
    let local = sandbox(&server, "not-the-secret");
    let base = local.write("in/base/model.safetensors", &safetensors_bytes(&small_model(1), &[]));
    local.add_commit(&base, "base", None, "base");
    let before = bucket_files(&server);
    let url = format!("s3://{BUCKET}/x");
    let run = local.run(&["push", &url]);
    assert!(run.failed().contains(&url), "names the remote: {}", run.stderr);
    assert_eq!(before, bucket_files(&server), "nothing written");
    let clone = local.run(&["clone", &url, "c"]);
    clone.failed();
    assert!(!local.join("c").exists());
}

/// Bytes changed in the bucket behind the stores' back, in a blob or in a git object, are
/// refused by the store that receives them, naming the blob or object: a clone leaves no
/// directory, a pull into an existing store leaves its names as they were and `fsck` clean.
#[test]
fn bytes_changed_in_a_bucket_are_refused_by_clone_and_pull() {
    let Some(server) = start() else { return };
    let local = sandbox(&server, SECRET);
    let base = local.write("in/base/model.safetensors", &safetensors_bytes(&small_model(1), &[]));
    let ft = local.write("in/ft/model.safetensors", &safetensors_bytes(&small_finetune(5), &[]));
    local.add_commit(&base, "base", None, "base");
    local.add_commit(&ft, "tuned", Some("base"), "fine-tune");
    let url = format!("s3://{BUCKET}/store");
    local.json(&["push", &url]);
    let layout = server.root.path().join(BUCKET).join("store");

    // A store of its own to pull into, made anew for each change, which lacks the blob and
    // the object changed below.
    let store_of_its_own = || {
        let into = sandbox(&server, SECRET);
        let mine = into.write("in/mine/model.safetensors", &safetensors_bytes(&small_model(7), &[]));
        into.add_commit(&mine, "mine", None, "a store of its own");
        into
    };
    let into = store_of_its_own();
    let blob = blob_names(&layout)
        .difference(&blob_names(&into.store()))
        .next()
        .cloned()
        .expect("a blob in the bucket that the other store lacks");
    let object = std::fs::read_dir(layout.join("objects"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|id| git(&into.store(), &["cat-file", "-e", id]).status.code() != Some(0))
        .min()
        .expect("an object in the bucket that the other store lacks");
    for (file, name) in [
        (layout.join("cas").join(&blob), &blob),
        (layout.join("objects").join(&object), &object),
    ] {
        let saved = std::fs::read(&file).unwrap();
        let mut bytes = saved.clone();
        let at = bytes.len() - 1;
        bytes[at] ^= 0x01;
        std::fs::write(&file, &bytes).unwrap();

        let other = sandbox(&server, SECRET);
        let dir = other.join("clone");
        let err = other.run(&["clone", &url, path(&dir)]).failed().to_string();
        assert!(err.contains(name.as_str()), "the error names {name}: {err}");
        assert!(!dir.exists(), "a failed clone leaves nothing");

        let into = store_of_its_own();
        let names = into.json(&["status"])["names"].clone();
        let err = into.run(&["pull", &url, "tuned"]).failed().to_string();
        assert!(err.contains(name.as_str()), "the error names {name}: {err}");
        assert_eq!(into.json(&["status"])["names"], names);
        into.assert_fsck_ok();

        std::fs::write(&file, &saved).unwrap();
    }
    // Put back, the bucket clones whole.
    let other = sandbox(&server, SECRET);
    let dir = other.join("clone");
    other.run(&["clone", &url, path(&dir)]).ok();
    other.run(&["-C", path(&dir), "fsck"]).ok();
}
