//! Helpers shared by the integration tests: a small safetensors writer, seeded pseudo-random
//! tensor data, fine-tunes of it, running the `sparse` binary in a temporary directory, and
//! hashes of files, trees and whole store directories.
//!
//! Every test binary includes this module with `mod common;` and uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use sha2::{Digest, Sha256};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sparse");

/// Environment variables the binary reads; cleared for every run so the caller's shell cannot
/// change what a test sees.
const SPARSE_VARS: &[&str] = &[
    "SPARSE_CHUNK_SIZE",
    "SPARSE_ZSTD_LEVEL",
    "SPARSE_SMALL_FILE",
    "SPARSE_AUTHOR_NAME",
    "SPARSE_AUTHOR_EMAIL",
    "SPARSE_TOKEN",
    "SPARSE_STREAMS",
    "SPARSE_TEST_FAIL_AFTER",
    "SOURCE_DATE_EPOCH",
    "HF_HUB_CACHE",
    "HF_HOME",
];

// ---------------------------------------------------------------------------------------------
// Pseudo-random numbers

/// A 64-bit linear congruential generator (Knuth's MMIX constants): deterministic, no crates.
#[derive(Debug, Clone)]
pub struct Lcg(pub u64);

impl Lcg {
    pub fn new(seed: u64) -> Lcg {
        // Mix the seed so that seeds 0, 1, 2 ... do not start on related sequences.
        let mut l = Lcg(seed ^ 0x9e37_79b9_7f4a_7c15);
        l.next_u64();
        l
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // The high bits of an LCG are the good ones.
        let x = self.0;
        (x >> 32) ^ (x << 32) ^ (x >> 17)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        (self.next_u64() >> 11) % n
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 24) as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// safetensors

/// Every dtype of safetensors 0.8 (`safetensors::Dtype`), with its size in bits.
pub const DTYPES: &[(&str, u64)] = &[
    ("BOOL", 8),
    ("F4", 4),
    ("F6_E2M3", 6),
    ("F6_E3M2", 6),
    ("U8", 8),
    ("I8", 8),
    ("F8_E5M2", 8),
    ("F8_E4M3", 8),
    ("F8_E8M0", 8),
    ("F8_E4M3FNUZ", 8),
    ("F8_E5M2FNUZ", 8),
    ("I16", 16),
    ("U16", 16),
    ("F16", 16),
    ("BF16", 16),
    ("I32", 32),
    ("U32", 32),
    ("F32", 32),
    ("C64", 64),
    ("F64", 64),
    ("I64", 64),
    ("U64", 64),
];

/// Bits of one element of `dtype`.
pub fn dtype_bits(dtype: &str) -> u64 {
    DTYPES
        .iter()
        .find(|(d, _)| *d == dtype)
        .unwrap_or_else(|| panic!("unknown dtype {dtype}"))
        .1
}

/// The width in bytes the store codes a dtype's elements with: its size, or 1 below a byte.
pub fn element_width(dtype: &str) -> usize {
    let bits = dtype_bits(dtype);
    if bits.is_multiple_of(8) {
        (bits / 8) as usize
    } else {
        1
    }
}

/// One tensor: name, dtype, shape and its raw little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

impl Tensor {
    /// Bytes a tensor of this dtype and shape occupies.
    pub fn byte_len(dtype: &str, shape: &[u64]) -> usize {
        let bits = shape.iter().product::<u64>() * dtype_bits(dtype);
        assert!(bits.is_multiple_of(8), "{dtype}{shape:?} does not fill whole bytes");
        (bits / 8) as usize
    }

    /// A tensor of seeded pseudo-random content: weight-like values (small, mostly within
    /// +-0.1) for the float types a model stores its weights in, uniform bytes otherwise.
    pub fn random(name: &str, dtype: &str, shape: &[u64], seed: u64) -> Tensor {
        let len = Tensor::byte_len(dtype, shape);
        let mut rng = Lcg::new(seed);
        let n = shape.iter().product::<u64>() as usize;
        let weight = |rng: &mut Lcg| ((rng.unit() * 2.0 - 1.0) * (rng.unit() * 0.1)) as f32;
        let data: Vec<u8> = match dtype {
            "F32" => (0..n).flat_map(|_| weight(&mut rng).to_le_bytes()).collect(),
            "F64" => (0..n).flat_map(|_| (weight(&mut rng) as f64).to_le_bytes()).collect(),
            "F16" => (0..n)
                .flat_map(|_| half::f16::from_f32(weight(&mut rng)).to_le_bytes())
                .collect(),
            "BF16" => (0..n)
                .flat_map(|_| half::bf16::from_f32(weight(&mut rng)).to_le_bytes())
                .collect(),
            "BOOL" => (0..n).map(|_| (rng.next_u64() >> 40) as u8 & 1).collect(),
            _ => rng.bytes(len),
        };
        assert_eq!(data.len(), len);
        Tensor {
            name: name.into(),
            dtype: dtype.into(),
            shape: shape.to_vec(),
            data,
        }
    }

    /// A fine-tune of this tensor: about `fraction` of its elements moved by a small amount
    /// (a few units in the last place of their bit pattern, either way), seeded.
    pub fn finetuned(&self, fraction: f64, seed: u64) -> Tensor {
        Tensor {
            data: finetune_bytes(&self.data, element_width(&self.dtype), fraction, seed),
            ..self.clone()
        }
    }
}

/// Moves about `fraction` of the `width`-byte little-endian elements of `data` by +-1..=8 in
/// their integer bit pattern (wrapping), the way a fine-tune nudges weights. Booleans-like
/// one-byte data flips its lowest bit instead. At least one element changes when `data` is
/// not empty and `fraction > 0`.
pub fn finetune_bytes(data: &[u8], width: usize, fraction: f64, seed: u64) -> Vec<u8> {
    assert!(width > 0 && data.len().is_multiple_of(width));
    let mut rng = Lcg::new(seed);
    let mut out = data.to_vec();
    let n = data.len() / width;
    let mut changed = false;
    for i in 0..n {
        let last = i + 1 == n && !changed;
        if !(rng.unit() < fraction || (last && fraction > 0.0)) {
            continue;
        }
        changed = true;
        let el = &mut out[i * width..(i + 1) * width];
        if width == 1 {
            el[0] ^= 1 << rng.below(2);
            continue;
        }
        let mut buf = [0u8; 8];
        buf[..width].copy_from_slice(el);
        let v = u64::from_le_bytes(buf);
        let step = 1 + rng.below(8);
        let moved = if rng.below(2) == 0 {
            v.wrapping_add(step)
        } else {
            v.wrapping_sub(step)
        };
        el.copy_from_slice(&moved.to_le_bytes()[..width]);
    }
    out
}

/// A safetensors file holding `tensors`, data laid out in the given order, with an optional
/// `__metadata__` map. Header entries are sorted by name (as the reference implementation
/// writes them), so the header's order is not the data's. The header JSON is padded with
/// spaces to a multiple of 8 bytes, as the reference implementation does.
pub fn safetensors_bytes(tensors: &[Tensor], metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut parts = Vec::new();
    if !metadata.is_empty() {
        let m: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
            .collect();
        parts.push((String::new(), format!("\"__metadata__\":{{{}}}", m.join(","))));
    }
    let mut at = 0usize;
    for t in tensors {
        assert_eq!(t.data.len(), Tensor::byte_len(&t.dtype, &t.shape), "{}", t.name);
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        let entry = format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            json_str(&t.name),
            t.dtype,
            shape.join(","),
            at,
            at + t.data.len()
        );
        parts.push((t.name.clone(), entry));
        at += t.data.len();
    }
    parts.sort();
    let parts: Vec<String> = parts.into_iter().map(|(_, p)| p).collect();
    header.push_str(&parts.join(","));
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = raw_safetensors(header.as_bytes(), &[]);
    for t in tensors {
        out.extend_from_slice(&t.data);
    }
    out
}

/// Panics unless the reference implementation (the `safetensors` crate) reads `bytes` as a
/// file of exactly `tensors`: a check of the writer above, not of sparse.
#[track_caller]
pub fn assert_reference_reads(bytes: &[u8], tensors: &[Tensor]) {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .unwrap_or_else(|e| panic!("the safetensors crate refuses the file: {e:?}"));
    assert_eq!(st.len(), tensors.len());
    for t in tensors {
        let view = st.tensor(&t.name).unwrap_or_else(|e| panic!("{}: {e:?}", t.name));
        assert_eq!(view.dtype().to_string(), t.dtype, "{}", t.name);
        let shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
        assert_eq!(shape, t.shape, "{}", t.name);
        assert_eq!(view.data(), &t.data[..], "{}", t.name);
    }
}

/// The bytes of a safetensors file from a header (used as is) and data.
pub fn raw_safetensors(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

// ---------------------------------------------------------------------------------------------
// Running the binary

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with the whole output unless the run succeeded.
    #[track_caller]
    pub fn ok(&self) -> &Run {
        assert!(
            self.status.success(),
            "`sparse {}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.args.join(" "),
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the run failed with exit code 1 and no panic; returns stderr.
    #[track_caller]
    pub fn failed(&self) -> &str {
        assert!(
            !self.status.success(),
            "`sparse {}` should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.args.join(" "),
            self.stdout,
            self.stderr
        );
        assert!(
            self.status.code().is_some(),
            "`sparse {}` was killed by a signal: {}\n{}",
            self.args.join(" "),
            self.status,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "`sparse {}` panicked instead of reporting an error:\n{}",
            self.args.join(" "),
            self.stderr
        );
        &self.stderr
    }

    /// stdout parsed as JSON (for runs with `--json`).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`sparse {}` did not print JSON ({e}):\n{}\nstderr:\n{}",
                self.args.join(" "),
                self.stdout,
                self.stderr
            )
        })
    }
}

/// A command for the binary, started in `cwd`, with a clean `SPARSE_*` environment plus `env`.
pub fn command(cwd: &Path, args: &[&str], env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    for v in SPARSE_VARS {
        cmd.env_remove(v);
    }
    cmd.env("SPARSE_AUTHOR_NAME", "sparse tests");
    cmd.env("SPARSE_AUTHOR_EMAIL", "tests@example.invalid");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs the binary in `cwd` and collects its output.
pub fn run_in(cwd: &Path, args: &[&str], env: &[(&str, String)]) -> Run {
    let out = command(cwd, args, env)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A temporary directory with a store in it (after [`Sandbox::init`]) and the environment
/// every run of the binary gets.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub env: Vec<(&'static str, String)>,
}

impl Sandbox {
    /// An empty temporary directory, no store yet.
    pub fn empty() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("sparse-test-")
                .tempdir()
                .expect("a temporary directory"),
            env: Vec::new(),
        }
    }

    /// A temporary directory with an initialized store.
    pub fn new() -> Sandbox {
        let s = Sandbox::empty();
        s.run(&["init"]).ok();
        assert!(s.store().join("HEAD").is_file(), "init made no store");
        s
    }

    /// Sets an environment variable for every later run.
    pub fn with_env(mut self, key: &'static str, value: impl ToString) -> Sandbox {
        self.env.push((key, value.to_string()));
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The store directory (`.sparse`).
    pub fn store(&self) -> PathBuf {
        self.path().join(".sparse")
    }

    /// A path inside the sandbox.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    /// Runs the binary in the sandbox.
    pub fn run(&self, args: &[&str]) -> Run {
        run_in(self.path(), args, &self.env)
    }

    /// Runs the binary in the sandbox with `--json` (before the verb) and parses its output;
    /// panics unless it succeeds.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.run(&all).ok().json()
    }

    /// Writes `bytes` to `rel` in the sandbox (creating directories) and returns its path.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.join(rel);
        std::fs::create_dir_all(p.parent().expect("a parent")).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// `add SOURCE --name NAME [--base BASE]` then `commit -m MSG`; returns the commit id.
    #[track_caller]
    pub fn add_commit(&self, source: &Path, name: &str, base: Option<&str>, message: &str) -> String {
        let src = source.to_str().expect("UTF-8 paths");
        let mut args = vec!["add", src, "--name", name];
        if let Some(b) = base {
            args.extend(["--base", b]);
        }
        self.run(&args).ok();
        let report = self.json(&["commit", "-m", message]);
        let id = report["commit"].as_str().expect("commit reports its id").to_string();
        assert_eq!(id.len(), 40, "a full commit id: {report}");
        id
    }

    /// Checks `rev` out into a new directory `rel` and returns its path.
    #[track_caller]
    pub fn checkout(&self, rev: &str, rel: &str) -> PathBuf {
        let out = self.join(rel);
        self.run(&["checkout", rev, "-o", out.to_str().unwrap()]).ok();
        out
    }

    /// The commit `refs/heads/NAME` points at, read by git itself (None when absent).
    pub fn git_ref(&self, name: &str) -> Option<String> {
        let out = git(
            &self.store(),
            &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{name}")],
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs `fsck --json` and panics unless the store is consistent.
    #[track_caller]
    pub fn assert_fsck_ok(&self) -> serde_json::Value {
        let run = self.run(&["--json", "fsck"]);
        assert!(
            run.success(),
            "fsck failed: {}\n{}\n{}",
            run.status,
            run.stdout,
            run.stderr
        );
        let report = run.json();
        assert_eq!(report["ok"], true, "fsck: {report}");
        assert_eq!(report["errors"].as_array().map(Vec::len), Some(0), "fsck: {report}");
        report
    }
}

/// Runs `git --git-dir GIT_DIR ARGS` with a neutral configuration.
pub fn git(git_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::null())
        .output()
        .expect("git is installed")
}

// ---------------------------------------------------------------------------------------------
// Hashes, trees and store snapshots

/// The sha256 of `bytes`, in hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The sha256 of a file, in hex (streamed, so large files need no large buffer).
pub fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every regular file below `root` (symlinks followed), as relative `/`-separated path ->
/// sha256. Directories are not listed.
pub fn tree_hashes(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (rel, kind) in walk(root) {
        if kind == Kind::File {
            out.insert(rel.clone(), sha256_file(&root.join(&rel)));
        }
    }
    out
}

/// What [`store_snapshot`] records of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Other,
}

fn walk(root: &Path) -> Vec<(String, Kind)> {
    let mut out = Vec::new();
    let mut todo = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = todo.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = format!("{prefix}{name}");
            let meta = std::fs::metadata(e.path());
            match meta {
                Ok(m) if m.is_dir() => {
                    out.push((rel.clone(), Kind::Dir));
                    todo.push((e.path(), format!("{rel}/")));
                }
                Ok(m) if m.is_file() => out.push((rel, Kind::File)),
                _ => out.push((rel, Kind::Other)),
            }
        }
    }
    out.sort();
    out
}

/// The whole content of a directory (every file's path, size and sha256, and every entry that
/// is neither file nor directory), to show that a failed command left a store exactly as it
/// was. Directories themselves are not compared: an emptied directory holds no bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSnapshot(pub BTreeMap<String, String>);

/// Records every file (size and sha256) and other non-directory entry below `root`.
pub fn store_snapshot(root: &Path) -> DirSnapshot {
    let mut out = BTreeMap::new();
    for (rel, kind) in walk(root) {
        let v = match kind {
            Kind::Dir => continue,
            Kind::Other => "other".to_string(),
            Kind::File => {
                let p = root.join(&rel);
                format!(
                    "{} bytes, sha256 {}",
                    std::fs::metadata(&p).unwrap().len(),
                    sha256_file(&p)
                )
            }
        };
        out.insert(rel, v);
    }
    DirSnapshot(out)
}

impl DirSnapshot {
    /// A readable list of what differs from `after`.
    pub fn diff(&self, after: &DirSnapshot) -> String {
        let mut lines = Vec::new();
        for (k, v) in &self.0 {
            match after.0.get(k) {
                None => lines.push(format!("removed {k} ({v})")),
                Some(w) if w != v => lines.push(format!("changed {k}: {v} -> {w}")),
                _ => {}
            }
        }
        for (k, v) in &after.0 {
            if !self.0.contains_key(k) {
                lines.push(format!("added {k} ({v})"));
            }
        }
        lines.join("\n")
    }
}

/// Panics with the differences unless the two snapshots are equal.
#[track_caller]
pub fn assert_unchanged(before: &DirSnapshot, after: &DirSnapshot, what: &str) {
    assert!(before == after, "{what} changed the store:\n{}", before.diff(after));
}

/// Total bytes of the files below `root` (apparent sizes, like `du -sb` without directories).
pub fn dir_bytes(root: &Path) -> u64 {
    walk(root)
        .into_iter()
        .filter(|(_, k)| *k == Kind::File)
        .map(|(rel, _)| std::fs::metadata(root.join(rel)).unwrap().len())
        .sum()
}

/// Every blob file below `.sparse/cas`, as (key in hex, path).
pub fn cas_blobs(store: &Path) -> Vec<(String, PathBuf)> {
    let cas = store.join("cas");
    let mut out: Vec<(String, PathBuf)> = walk(&cas)
        .into_iter()
        .filter(|(_, k)| *k == Kind::File)
        .map(|(rel, _)| (rel.clone(), cas.join(&rel)))
        .collect();
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Real data

/// The directory of the real test data: `$SPARSE_TESTDATA`, else `~/.cache/sparse-testdata`.
/// Panics (never skips) when it has not been fetched.
pub fn real_data() -> PathBuf {
    let dir = match std::env::var_os("SPARSE_TESTDATA").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache").join("sparse-testdata")
        }
    };
    assert!(
        dir.join("base.safetensors").is_file(),
        "no real test data in {} (base.safetensors is missing): run scripts/fetch-testdata.sh first",
        dir.display()
    );
    dir
}
/// The blob of the first chunk of `tensor` in `good:model.safetensors`.
pub fn blob_of(sb: &Sandbox, tensor: &str) -> String {
    let out = git(&sb.store(), &["show", "good:model.safetensors"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let seg = manifest["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tensor"]["name"] == tensor)
        .unwrap_or_else(|| panic!("no segment for {tensor}: {manifest}"));
    seg["chunks"][0]["blob"].as_str().expect("a stored chunk").to_string()
}

pub fn blob_path(sb: &Sandbox, key: &str) -> PathBuf {
    sb.store().join("cas").join(key)
}

#[track_caller]
pub fn fsck_fails_naming(sb: &Sandbox, mentions: &[&str]) {
    let run = sb.run(&["--json", "fsck"]);
    assert_eq!(
        run.status.code(),
        Some(1),
        "fsck must fail: {}\n{}",
        run.stdout,
        run.stderr
    );
    let report = run.json();
    assert_eq!(report["ok"], false, "{report}");
    let errors = report["errors"].to_string();
    for m in mentions {
        assert!(errors.contains(m), "fsck errors should mention {m}: {report}");
    }
    let text = sb.run(&["fsck"]);
    assert_eq!(text.status.code(), Some(1), "{}", text.stdout);
    assert!(text.stdout.contains("FAILED"), "{}", text.stdout);
}

/// A small model of three tensors (F32, BF16, F16), seeded.
pub fn small_model(seed: u64) -> Vec<Tensor> {
    vec![
        Tensor::random("embed.weight", "F32", &[256, 32], seed),
        Tensor::random("norm.weight", "BF16", &[32], seed + 1),
        Tensor::random("head.weight", "F16", &[64, 32], seed + 2),
    ]
}

/// A fine-tune of `small_model(1)`: 40% of its elements moved, seeded.
pub fn small_finetune(seed: u64) -> Vec<Tensor> {
    small_model(1).iter().map(|t| t.finetuned(0.4, seed)).collect()
}

/// Checks `rev` out into a fresh directory and compares its `model.safetensors` with `sha256`.
#[track_caller]
pub fn assert_bit_exact(sb: &Sandbox, rev: &str, sha256: &str) {
    static OUTPUTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = OUTPUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = sb.checkout(rev, &format!("out-{n}"));
    assert_eq!(sha256_file(&out.join("model.safetensors")), sha256, "{rev}");
}

/// Sources for a base and two fine-tunes of it, written under `sb`'s `in/`.
pub fn sources(sb: &Sandbox) -> [PathBuf; 3] {
    [
        sb.write("in/base/model.safetensors", &safetensors_bytes(&small_model(1), &[])),
        sb.write(
            "in/tuned/model.safetensors",
            &safetensors_bytes(&small_finetune(5), &[]),
        ),
        sb.write(
            "in/tuned2/model.safetensors",
            &safetensors_bytes(&small_finetune(9), &[]),
        ),
    ]
}

/// Of two pushes `ra` and `rb` of commits `ida` and `idb` that raced for one ref: exactly one
/// won and the other was refused cleanly. Returns the winner's commit.
pub fn race_winner(ra: &Run, rb: &Run, ida: String, idb: String) -> String {
    assert!(
        ra.success() != rb.success(),
        "exactly one wins:\n{}\n{}",
        ra.stderr,
        rb.stderr
    );
    let (winner, loser) = if ra.success() { (ida, rb) } else { (idb, ra) };
    let err = loser.failed();
    assert!(
        err.contains("fast-forward") || err.contains("changed meanwhile"),
        "refused cleanly: {err}"
    );
    winner
}

/// Copies directory `from` to `to` (which must not exist), as `cp -a` does.
pub fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp runs");
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}
