//! Remotes over HTTP: `sparse serve` started from the test on 127.0.0.1, pushed to, fetched,
//! pulled and cloned from with tokens; and what a hostile client or server sends is refused
//! with nothing stored.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};

use common::*;

const WRITE: &str = "write-token-0123456789";
const READ: &str = "read-token-0123456789";

fn sandbox() -> Sandbox {
    Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 4096)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 paths")
}

/// A `sparse serve` process, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sparse serve` on the store of `sb`, on a free port, with a token file granting
/// [`WRITE`] and [`READ`], and `extra` arguments.
fn serve(sb: &Sandbox, extra: &[&str]) -> Server {
    let tokens = sb.write(
        "tokens",
        format!("# test tokens\nwrite {WRITE}\nread {READ}\n").as_bytes(),
    );
    let mut args = vec!["serve", "--bind", "127.0.0.1:0", "--token-file", path(&tokens)];
    args.extend_from_slice(extra);
    let mut child = command(sb.path(), &args, &sb.env)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sparse serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("read the address");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("no address from sparse serve: {line:?}"))
        .to_string();
    Server { child, url }
}

/// Runs `args` in `sb`'s directory with `env` instead of its own.
fn run_with(sb: &Sandbox, env: &[(&'static str, String)], args: &[&str]) -> Run {
    run_in(sb.path(), args, env)
}

fn json_with(sb: &Sandbox, env: &[(&'static str, String)], args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    run_with(sb, env, &all).ok().json()
}

fn token_env(sb: &Sandbox, token: &str) -> Vec<(&'static str, String)> {
    let mut env = sb.env.clone();
    env.push(("SPARSE_TOKEN", token.to_string()));
    env
}

fn blob_names(store: &Path) -> BTreeSet<String> {
    cas_blobs(store).into_iter().map(|(k, _)| k).collect()
}

#[test]
fn push_and_clone_over_http_send_only_what_is_missing_and_check_out_bit_exact() {
    let local = sandbox();
    let remote = sandbox();
    let server = serve(&remote, &[]);
    let [base, ft, ft2] = sources(&local);
    local.add_commit(&base, "base", None, "base");
    local.add_commit(&ft, "tuned", Some("base"), "fine-tune");
    local.run(&["tag", "v1", "base"]).ok();
    local.run(&["remote", "add", "origin", &server.url]).ok();
    let w = token_env(&local, WRITE);

    let first = json_with(&local, &w, &["push", "origin"]);
    assert!(first["objects_sent"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(first["objects_skipped"], 0, "{first}");
    assert_eq!(
        blob_names(&remote.store()),
        blob_names(&local.store()),
        "every blob sent"
    );
    assert_eq!(remote.git_ref("tuned"), local.git_ref("tuned"));
    remote.assert_fsck_ok();

    let again = json_with(&local, &w, &["push", "origin"]);
    assert_eq!(again["objects_sent"], 0, "nothing new: {again}");
    assert_eq!(again["bytes_sent"], 0, "{again}");
    let blob_bytes: u64 = cas_blobs(&local.store())
        .iter()
        .map(|(_, p)| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(again["bytes_skipped"], blob_bytes, "every blob file was there: {again}");

    // A fine-tune whose base the remote has: only its own blobs travel.
    let before = blob_names(&local.store());
    local.add_commit(&ft2, "tuned2", Some("base"), "another fine-tune");
    let new: Vec<String> = blob_names(&local.store()).difference(&before).cloned().collect();
    let new_bytes: u64 = new
        .iter()
        .map(|k| std::fs::metadata(local.store().join("cas").join(k)).unwrap().len())
        .sum();
    let delta = json_with(&local, &w, &["push", "origin", "tuned2"]);
    assert_eq!(delta["blobs_sent"].as_u64().unwrap() as usize, new.len(), "{delta}");
    let sent = delta["bytes_sent"].as_u64().unwrap();
    assert!(
        sent >= new_bytes && sent < new_bytes + 8192,
        "{sent} vs {new_bytes}: {delta}"
    );
    assert!(
        delta["bytes_skipped"].as_u64().unwrap() > new_bytes,
        "the base stayed: {delta}"
    );

    // Clone with a read-only token; every model comes back bit-exact.
    let other = Sandbox::empty();
    let dir = other.join("clone");
    let r = token_env(&local, READ);
    let cloned = json_with(&other, &r, &["clone", &server.url, path(&dir)]);
    assert_eq!(
        cloned["blobs_sent"].as_u64().unwrap() as usize,
        blob_names(&local.store()).len(),
        "{cloned}"
    );
    let clone = Sandbox {
        dir: tempfile::tempdir_in(&dir).unwrap(),
        env: local.env.clone(),
    };
    let clone_store = dir.join(".sparse");
    assert_eq!(blob_names(&clone_store), blob_names(&local.store()));
    for (rev, src) in [("base", &base), ("tuned", &ft), ("tuned2", &ft2), ("v1", &base)] {
        assert_bit_exact(&clone, rev, &sha256_file(src));
    }
    clone.assert_fsck_ok();

    // A fetch with nothing new receives nothing.
    let fetched = json_with(&clone, &r, &["fetch", "origin"]);
    assert_eq!(fetched["objects_sent"], 0, "{fetched}");
    assert_eq!(fetched["bytes_sent"], 0, "{fetched}");
}

#[test]
fn a_pull_of_one_name_fetches_only_what_its_chain_needs() {
    let origin = sandbox();
    let [base, ft, _] = sources(&origin);
    let other_model = origin.write("in/other/model.safetensors", &safetensors_bytes(&small_model(70), &[]));
    origin.add_commit(&base, "base", None, "base");
    origin.add_commit(&ft, "tuned", Some("base"), "fine-tune");
    origin.add_commit(&other_model, "other", None, "unrelated");
    let server = serve(&origin, &["--anonymous-read"]);

    // What base and tuned alone store, built the same way elsewhere.
    let expected = sandbox();
    let [b2, f2, _] = sources(&expected);
    expected.add_commit(&b2, "base", None, "base");
    expected.add_commit(&f2, "tuned", Some("base"), "fine-tune");

    let local = sandbox();
    local.run(&["remote", "add", "r", &server.url]).ok();
    let pulled = local.json(&["pull", "r", "tuned"]);
    assert_eq!(local.git_ref("tuned"), origin.git_ref("tuned"), "{pulled}");
    assert_eq!(local.git_ref("other"), None);
    assert_eq!(
        blob_names(&local.store()),
        blob_names(&expected.store()),
        "only tuned's chain: {pulled}"
    );
    assert_bit_exact(&local, "tuned", &sha256_file(&ft));
    local.assert_fsck_ok();
    // Anonymous reads may not write.
    let [_, _, ft2] = sources(&local);
    local.add_commit(&ft2, "tuned", Some("tuned"), "more");
    let refused = local.run(&["push", "r", "tuned"]);
    assert!(refused.failed().contains("401"), "{}", refused.stderr);
}

#[test]
fn pushes_without_a_token_or_with_a_read_token_are_refused_and_change_nothing() {
    let local = sandbox();
    let remote = sandbox();
    let server = serve(&remote, &[]);
    let [base, _, _] = sources(&local);
    local.add_commit(&base, "base", None, "base");
    let before = store_snapshot(&remote.store());
    let none = local.run(&["push", &server.url]);
    let err = none.failed();
    assert!(err.contains("401") && err.contains(&server.url), "{err}");
    let read = run_with(&local, &token_env(&local, READ), &["push", &server.url]);
    let err = read.failed();
    assert!(err.contains("403"), "{err}");
    let wrong = run_with(&local, &token_env(&local, "not-a-token"), &["push", &server.url]);
    assert!(wrong.failed().contains("401"));
    assert_unchanged(&before, &store_snapshot(&remote.store()), "refused pushes");
    // Without a token nothing can be read either (no --anonymous-read).
    let other = Sandbox::empty();
    let clone = run_in(other.path(), &["clone", &server.url, "c"], &other.env);
    assert!(clone.failed().contains("401"));
    assert!(!other.join("c").exists(), "a failed clone leaves nothing");
}

#[test]
fn an_interrupted_push_over_http_completes_and_sends_only_the_rest() {
    let local = sandbox();
    let remote = sandbox();
    let server = serve(&remote, &[]);
    let [base, ft, _] = sources(&local);
    local.add_commit(&base, "base", None, "base");
    local.add_commit(&ft, "tuned", Some("base"), "fine-tune");
    // How many objects a whole push sends, measured on a fresh store by path.
    let measure = sandbox();
    let whole = local.json(&["push", path(&measure.store())]);
    let total = whole["objects_sent"].as_u64().unwrap();
    assert!(total > 10, "{whole}");

    let mut env = token_env(&local, WRITE);
    env.push(("SPARSE_TEST_FAIL_AFTER", "7".into()));
    let stopped = run_with(&local, &env, &["push", &server.url]);
    assert!(stopped.failed().contains("stopped after 7"), "{}", stopped.stderr);
    assert_eq!(remote.git_ref("base"), None, "no ref moved");
    assert_eq!(cas_blobs(&remote.store()).len(), 7, "seven objects arrived");

    let rest = json_with(&local, &token_env(&local, WRITE), &["push", &server.url]);
    assert_eq!(rest["objects_skipped"], 7, "{rest}");
    assert_eq!(rest["objects_sent"].as_u64().unwrap(), total - 7, "{rest}");
    remote.assert_fsck_ok();
    assert_bit_exact(&remote, "base", &sha256_file(&base));
    assert_bit_exact(&remote, "tuned", &sha256_file(&ft));
}

#[test]
fn of_two_concurrent_pushes_to_one_name_one_wins_and_the_other_is_refused() {
    let remote = sandbox();
    let server = serve(&remote, &[]);
    for round in 0..2u64 {
        let a = sandbox();
        let b = sandbox();
        let name = format!("m{round}");
        let sa = a.write(
            "in/a/model.safetensors",
            &safetensors_bytes(&small_model(100 + round), &[]),
        );
        let sb_ = b.write(
            "in/b/model.safetensors",
            &safetensors_bytes(&small_model(200 + round), &[]),
        );
        let ida = a.add_commit(&sa, &name, None, "a");
        let idb = b.add_commit(&sb_, &name, None, "b");
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| run_with(&a, &token_env(&a, WRITE), &["push", &server.url]));
            let tb = s.spawn(|| run_with(&b, &token_env(&b, WRITE), &["push", &server.url]));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        let winner = race_winner(&ra, &rb, ida, idb);
        assert_eq!(remote.git_ref(&name), Some(winner));
    }
    remote.assert_fsck_ok();
}

// ---------------------------------------------------------------------------------------------
// A hostile client

/// A raw HTTP/1.1 request to the server; returns the status code.
fn request(url: &str, method: &str, target: &str, token: Option<&str>, body: &[u8]) -> u16 {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body.
    let _ = s.write_all(body);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status: {text}"))
}

/// A blob file (mode 1, zstd) declaring `declared` decoded bytes around `body`.
fn blob_file(mode: u8, declared: u64, body: &[u8]) -> Vec<u8> {
    let mut f = b"SPB1".to_vec();
    f.push(mode);
    f.extend_from_slice(&declared.to_le_bytes());
    f.extend_from_slice(body);
    f
}

fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[test]
fn a_hostile_client_is_refused_and_nothing_is_stored() {
    let remote = sandbox();
    let server = serve(&remote, &["--max-body", "65536"]);
    let [base, _, _] = sources(&remote);
    let tip = remote.add_commit(&base, "base", None, "base");
    let before = store_snapshot(&remote.store());
    let url = &server.url;
    let w = Some(WRITE);

    // A blob whose bytes do not hash to its key.
    let content = b"some bytes".to_vec();
    let wrong_key = blake3_hex(b"other bytes");
    assert_eq!(
        request(
            url,
            "PUT",
            &format!("/v1/blobs/{wrong_key}"),
            w,
            &blob_file(0, 10, &content)
        ),
        422
    );
    // A zstd bomb: 64 MiB of zeros in a few kB, declaring 16 bytes; and one declaring 2 GiB.
    let zeros = vec![0u8; 64 << 20];
    let bomb = zstd::bulk::compress(&zeros, 19).unwrap();
    assert!(bomb.len() < 65536);
    let key = blake3_hex(&zeros[..16]);
    assert_eq!(
        request(url, "PUT", &format!("/v1/blobs/{key}"), w, &blob_file(1, 16, &bomb)),
        422
    );
    let key = blake3_hex(&zeros);
    assert_eq!(
        request(
            url,
            "PUT",
            &format!("/v1/blobs/{key}"),
            w,
            &blob_file(1, 2 << 30, &bomb)
        ),
        422
    );
    // Names that are not keys: nothing becomes a path.
    for target in [
        "/v1/blobs/..%2F..%2Fescape",
        "/v1/blobs/../../escape",
        "/v1/objects/..%2Fx",
    ] {
        let code = request(url, "PUT", target, w, &blob_file(0, 1, b"x"));
        assert!(code == 400 || code == 404, "{target}: {code}");
    }
    // A git object whose content does not hash to its id.
    let id = "0123456789012345678901234567890123456789";
    assert_eq!(
        request(url, "PUT", &format!("/v1/objects/{id}"), w, b"blob 3\0abc"),
        422
    );
    // A body over --max-body.
    let big = vec![7u8; 100_000];
    assert_eq!(
        request(url, "PUT", &format!("/v1/blobs/{}", blake3_hex(&big)), w, &big),
        413
    );
    // Refs: a name with `..`, a name outside refs/heads and refs/tags, a commit not here.
    for name in [
        "refs/heads/../../../../tmp/x",
        "HEAD",
        "refs/heads/a/../b",
        "/etc/passwd",
    ] {
        let body = format!(r#"{{"name":"{name}","expect":null,"new":"{tip}"}}"#);
        assert_eq!(request(url, "POST", "/v1/refs", w, body.as_bytes()), 400, "{name}");
    }
    let body = format!(r#"{{"name":"refs/heads/x","expect":null,"new":"{id}"}}"#);
    assert_eq!(request(url, "POST", "/v1/refs", w, body.as_bytes()), 422);
    // A move that is not compare-and-swap against the current value.
    let body = format!(r#"{{"name":"refs/heads/base","expect":null,"new":"{tip}"}}"#);
    assert_eq!(request(url, "POST", "/v1/refs", w, body.as_bytes()), 409);
    // Writes with a read token or none.
    let body = blob_file(0, 10, &content);
    let good = blake3_hex(&content);
    assert_eq!(
        request(url, "PUT", &format!("/v1/blobs/{good}"), Some(READ), &body),
        403
    );
    assert_eq!(request(url, "PUT", &format!("/v1/blobs/{good}"), None, &body), 401);
    assert_eq!(request(url, "GET", "/v1/refs", None, b""), 401);

    assert_unchanged(&before, &store_snapshot(&remote.store()), "hostile requests");
    remote.assert_fsck_ok();
    // And a well-formed blob is taken.
    assert_eq!(request(url, "PUT", &format!("/v1/blobs/{good}"), w, &body), 201);
    assert!(remote.store().join("cas").join(&good).is_file());
}

// ---------------------------------------------------------------------------------------------
// A hostile server

/// What a fake server does to the answers of a real one it stands in front of.
#[derive(Clone, Copy)]
enum Tamper {
    /// Flips a byte in every blob file.
    BadBlob,
    /// Sends blob files as a zstd bomb declaring their true size.
    Bomb,
    /// Adds a ref with a name that climbs out of the store.
    EvilRef,
    /// Sends a different object than the one asked for.
    BadObject,
}

/// Starts a fake server in front of `real`: it forwards each request and tampers with the
/// answers. Returns its URL; it serves until the test process ends.
fn hostile(real: &str, tamper: Tamper) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let real = real.to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let real = real.clone();
            std::thread::spawn(move || {
                let _ = proxy(conn, &real, tamper);
            });
        }
    });
    url
}

fn proxy(mut conn: TcpStream, real: &str, tamper: Tamper) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        let (status, mut answer) = forward(real, &method, &target, &body);
        if status == 200 {
            answer = match tamper {
                Tamper::BadBlob if target.starts_with("/v1/blobs/") => {
                    let last = answer.len() - 1;
                    answer[last] ^= 0x40;
                    answer
                }
                Tamper::Bomb if target.starts_with("/v1/blobs/") => {
                    let declared = u64::from_le_bytes(answer[5..13].try_into().unwrap());
                    blob_file(1, declared, bomb())
                }
                Tamper::EvilRef if target == "/v1/refs" && method == "GET" => {
                    let mut v: serde_json::Value = serde_json::from_slice(&answer).unwrap();
                    let id = v["refs"][0][1].clone();
                    v["refs"]
                        .as_array_mut()
                        .unwrap()
                        .push(serde_json::json!(["refs/heads/../../../evil", id]));
                    serde_json::to_vec(&v).unwrap()
                }
                Tamper::BadObject if target.starts_with("/v1/objects/") => b"blob 5\0hello".to_vec(),
                _ => answer,
            };
        }
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
            answer.len()
        );
        conn.write_all(head.as_bytes())?;
        conn.write_all(&answer)?;
    }
}

/// 256 MiB of zeros, zstd-compressed (a few kB), made once.
fn bomb() -> &'static [u8] {
    static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BOMB.get_or_init(|| zstd::bulk::compress(&vec![0u8; 256 << 20], 3).unwrap())
}

/// One request to the real server, with the read token.
fn forward(real: &str, method: &str, target: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let addr = real.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {READ}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").expect("an answer head") + 4;
    let head = String::from_utf8_lossy(&all[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let mut body = all[split..].to_vec();
    if chunked {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&data[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}

#[test]
fn a_hostile_server_is_refused_and_nothing_is_stored() {
    let origin = sandbox();
    let [base, ft, _] = sources(&origin);
    origin.add_commit(&base, "base", None, "base");
    origin.add_commit(&ft, "tuned", Some("base"), "fine-tune");
    let server = serve(&origin, &[]);

    for (tamper, mentions) in [
        (Tamper::BadBlob, "hashes to"),
        (Tamper::Bomb, "zstd"),
        (Tamper::EvilRef, "evil"),
        (Tamper::BadObject, "hashes to"),
    ] {
        let fake = hostile(&server.url, tamper);
        // A clone fails and leaves no store.
        let other = Sandbox::empty();
        let run = run_in(other.path(), &["clone", &fake, "c"], &other.env);
        let err = run.failed();
        assert!(err.contains(mentions) && err.contains(&fake), "{err}");
        assert!(!other.join("c").exists(), "nothing stored: {err}");

        // A fetch into a store that has names fails, moves no ref, keeps the store sound.
        let local = sandbox();
        let own = local.write("in/own/model.safetensors", &safetensors_bytes(&small_model(50), &[]));
        let own_id = local.add_commit(&own, "own", None, "own");
        local.run(&["remote", "add", "bad", &fake]).ok();
        let refs_before = git(&local.store(), &["for-each-ref"]).stdout;
        let blobs_before = blob_names(&local.store());
        let fetch = local.run(&["fetch", "bad"]);
        assert!(fetch.failed().contains(mentions), "{}", fetch.stderr);
        assert_eq!(
            git(&local.store(), &["for-each-ref"]).stdout,
            refs_before,
            "no ref moved"
        );
        assert_eq!(local.git_ref("own"), Some(own_id));
        local.assert_fsck_ok();
        if matches!(tamper, Tamper::BadBlob | Tamper::Bomb) {
            assert_eq!(
                blob_names(&local.store()),
                blobs_before,
                "no blob of the bad server kept"
            );
        }
    }
}

#[test]
fn an_interrupted_pull_over_http_completes_and_receives_only_the_rest() {
    let origin = sandbox();
    let [base, ft, _] = sources(&origin);
    origin.add_commit(&base, "base", None, "base");
    origin.add_commit(&ft, "tuned", Some("base"), "fine-tune");
    let server = serve(&origin, &["--anonymous-read"]);
    // How many objects a whole pull receives, measured by a clone.
    let measure = Sandbox::empty();
    let whole = json_with(&measure, &measure.env, &["clone", &server.url, "c"]);
    let total = whole["objects_sent"].as_u64().unwrap();

    let local = sandbox();
    local.run(&["remote", "add", "r", &server.url]).ok();
    let mut env = local.env.clone();
    env.push(("SPARSE_TEST_FAIL_AFTER", "5".into()));
    let stopped = run_with(&local, &env, &["pull", "r"]);
    assert!(stopped.failed().contains("stopped after 5"), "{}", stopped.stderr);
    assert_eq!(local.git_ref("tuned"), None, "no ref moved");

    let rest = local.json(&["pull", "r"]);
    assert_eq!(rest["objects_skipped"], 5, "{rest}");
    assert_eq!(rest["objects_sent"].as_u64().unwrap(), total - 5, "{rest}");
    assert_eq!(local.git_ref("tuned"), origin.git_ref("tuned"));
    local.assert_fsck_ok();
    assert_bit_exact(&local, "tuned", &sha256_file(&ft));
}
