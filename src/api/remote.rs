//! Remotes: `remote add/remove/list`, `push`, `fetch`, `pull` and `clone`, over any transport
//! (a store on a path, a `sparse serve` server, an S3 bucket: docs/PROTOCOL.md).
//!
//! A push walks what the given commits reach in this store ([`Repository::reachable_from`]),
//! asks the remote in batches which blobs and git objects it lacks, sends those in parallel
//! streams (blob files first, re-hashed before they leave, then git objects, commits last),
//! has the remote record the blobs' sizes, and only then moves refs, by compare-and-swap. A
//! fetch walks the remote's history from the wanted tips, receiving each git object this store
//! lacks (re-hashed on arrival), then receives the blobs the walk names that are missing here
//! (decoded within their declared size and re-hashed before they are stored). An interrupted
//! transfer leaves whole objects and unmoved refs, so running it again sends only the rest.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::rev::{check_name, HEADS, REMOTES, TAGS};
use super::{reach, OpenError, Repository};
use crate::model::snapshot::{self, Snapshot};
use crate::store::cas::{self, Key};
use crate::store::history::{self, Expect, ObjectId};
use crate::store::index::{self, BlobSizes};
use crate::store::{lock, Layout, DIR_NAME};
use crate::transport::{self, path::store_dir, RefChange, Remote};

/// Parallel streams of a transfer unless `SPARSE_STREAMS` says otherwise.
const STREAMS: usize = 8;

/// `sparse/remotes.json`: remote names and the stores they name (a path or a URL).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Config {
    remotes: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct RemoteRow {
    pub name: String,
    /// The store's path, or its `http(s)://` or `s3://` URL.
    pub url: String,
}

/// Errors of `remote add`, `remote remove` and `remote list`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Name(String),
    #[error("remote {0} already exists")]
    Exists(String),
    #[error("no remote named {0}")]
    Missing(String),
    #[error("{path} is not a sparse store (no store there nor {DIR_NAME} in it)")]
    NotStore { path: PathBuf },
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error(transparent)]
    Lock(#[from] lock::Error),
    #[error(transparent)]
    History(#[from] history::Error),
}

/// Errors of `push`, `fetch`, `pull` and `clone`.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Remote(#[from] transport::Error),
    #[error("cannot create the clone: {0}")]
    Init(OpenError),
    #[error("no name {name} in {store}")]
    NoName { name: String, store: String },
    #[error("{0} is not a remote of this store: fetch records a remote's names under its name (`sparse remote add NAME {0}`); `sparse pull {0} [NAMES]` takes names from it directly")]
    FetchUnnamed(String),
    #[error("{what} {name} in {store} is at {theirs}, which is not an ancestor of {ours}: not a fast-forward (use --force to overwrite)")]
    NotFastForward {
        what: &'static str,
        name: String,
        store: String,
        theirs: ObjectId,
        ours: ObjectId,
    },
    #[error("nothing was sent: walking what is to be sent failed: {0}")]
    Reach(#[from] reach::Error),
    #[error("snapshot {tree} from {url}: {source}")]
    Snapshot {
        tree: ObjectId,
        url: String,
        source: Box<snapshot::Error>,
    },
    /// A blob of the sending store that cannot be read or does not hash to its key (the
    /// error names the blob and its file).
    #[error("refused a blob of {from}: {source} (nothing was written for it)")]
    Blob { from: String, source: Box<cas::Error> },
    #[error("cannot store a blob in {to}: {source}")]
    Store { to: PathBuf, source: Box<cas::Error> },
    /// A git object that cannot be read and verified in the sender or written to the
    /// receiver (the error names the store).
    #[error("cannot copy git object {id} from {from}: {source}")]
    Object {
        id: ObjectId,
        from: String,
        source: Box<history::Error>,
    },
    #[error("ref {name} from {url}: {why}; no ref was moved")]
    BadRef { name: String, url: String, why: String },
    #[error("stopped after {0} objects (SPARSE_TEST_FAIL_AFTER)")]
    Stopped(usize),
    #[error(transparent)]
    History(#[from] history::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
    #[error(transparent)]
    Lock(#[from] lock::Error),
}

/// What one ref did in a transfer.
#[derive(Debug, Serialize)]
pub struct RefUpdate {
    /// The full ref name in the store it was set in.
    pub name: String,
    pub old: Option<String>,
    pub new: String,
    /// `created`, `fast-forward`, `forced` or `up-to-date`.
    pub status: &'static str,
}

/// What a push, fetch, pull or clone sent and moved.
#[derive(Debug, Default, Serialize)]
pub struct SyncReport {
    pub remote: String,
    /// Blobs and git objects written into the receiving store.
    pub objects_sent: usize,
    pub blobs_sent: usize,
    /// Bytes of the blob files and git objects (canonical encoding) sent.
    pub bytes_sent: u64,
    /// Blobs and git objects the receiving store had already.
    pub objects_skipped: usize,
    /// Bytes of the blob files the receiving store had already.
    pub bytes_skipped: u64,
    pub refs: Vec<RefUpdate>,
}

/// How far a transfer is: (objects done, objects to send).
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// A ref to move in the receiving store: (full name, the value it must have now, new value).
struct Move {
    name: String,
    expect: Option<ObjectId>,
    new: ObjectId,
    status: &'static str,
}

impl Repository {
    fn remotes_path(&self) -> PathBuf {
        self.layout.root.join("sparse").join("remotes.json")
    }

    fn read_config(&self) -> Result<Config, ConfigError> {
        let path = self.remotes_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ConfigError::File {
                path,
                why: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(ConfigError::File {
                path,
                why: e.to_string(),
            }),
        }
    }

    /// Writes the remotes file by temporary file and rename.
    fn write_config(&self, config: &Config) -> Result<(), ConfigError> {
        let path = self.remotes_path();
        let fail = |e: std::io::Error| ConfigError::File {
            path: path.clone(),
            why: e.to_string(),
        };
        let mut tmp = self.cas.scratch().map_err(fail)?;
        let json = serde_json::to_vec_pretty(config).expect("the remotes serialize");
        std::io::Write::write_all(&mut tmp, &json).map_err(fail)?;
        tmp.as_file().sync_all().map_err(fail)?;
        tmp.persist(&path).map_err(|e| fail(e.error))?;
        Ok(())
    }

    pub fn remotes(&self) -> Result<Vec<RemoteRow>, ConfigError> {
        Ok(self
            .read_config()?
            .remotes
            .into_iter()
            .map(|(name, url)| RemoteRow { name, url })
            .collect())
    }

    /// Adds remote `name` for `url`: an `http(s)://` or `s3://` URL, or the path of a store
    /// (a store, or a directory holding one).
    pub fn remote_add(&self, name: &str, url: &str) -> Result<RemoteRow, ConfigError> {
        check_name(name).map_err(ConfigError::Name)?;
        if name.contains('/') {
            return Err(ConfigError::Name(format!("remote name {name:?} must not contain '/'")));
        }
        let url = if transport::is_url(url) {
            url.trim_end_matches('/').to_string()
        } else {
            let store = store_dir(Path::new(url)).map_err(|path| ConfigError::NotStore { path })?;
            store.display().to_string()
        };
        let _lock = self.lock()?;
        let mut config = self.read_config()?;
        if config.remotes.contains_key(name) {
            return Err(ConfigError::Exists(name.into()));
        }
        config.remotes.insert(name.into(), url.clone());
        self.write_config(&config)?;
        Ok(RemoteRow { name: name.into(), url })
    }

    /// Removes remote `name` and its remote-tracking names.
    pub fn remote_remove(&self, name: &str) -> Result<RemoteRow, ConfigError> {
        let _lock = self.lock()?;
        let mut config = self.read_config()?;
        let url = config
            .remotes
            .remove(name)
            .ok_or_else(|| ConfigError::Missing(name.into()))?;
        self.write_config(&config)?;
        let prefix = format!("{REMOTES}{name}/");
        for (short, id) in self.history.refs(&prefix)? {
            self.history.delete_ref(&format!("{prefix}{short}"), Expect::At(id))?;
        }
        Ok(RemoteRow { name: name.into(), url })
    }

    /// The remote `remote` names: a configured remote name, else a URL or a path.
    /// The store `remote` names: a remote of this store's config (then also the name its
    /// remote-tracking names go under), a store's path or a URL.
    fn open_remote<'r>(&self, remote: &'r str) -> Result<(Box<dyn Remote>, Option<&'r str>), SyncError> {
        let config = self.read_config()?;
        let (url, named) = match config.remotes.get(remote) {
            Some(url) => (url.clone(), Some(remote)),
            None if transport::is_url(remote) || Path::new(remote).exists() => (remote.to_string(), None),
            None => return Err(ConfigError::Missing(remote.into()).into()),
        };
        Ok((transport::open(&url)?, named))
    }

    /// Sends `names` (all names and tags when empty) and what they reach to `remote`, then
    /// moves the remote's names: fast-forwards only, unless `force`.
    pub fn push(
        &self,
        remote: &str,
        names: &[String],
        force: bool,
        progress: Progress,
    ) -> Result<SyncReport, SyncError> {
        let (dst, _) = self.open_remote(remote)?;
        let _locks = lock_with(self, dst.as_ref())?;
        let mut wanted: Vec<(String, ObjectId)> = Vec::new();
        if names.is_empty() {
            for prefix in [HEADS, TAGS] {
                for (name, id) in self.history.refs(prefix)? {
                    wanted.push((format!("{prefix}{name}"), id));
                }
            }
        } else {
            for name in names {
                let full = format!("{HEADS}{name}");
                let id = self.history.find_ref(&full)?.ok_or_else(|| SyncError::NoName {
                    name: name.clone(),
                    store: self.layout.root.display().to_string(),
                })?;
                wanted.push((full, id));
            }
        }
        // Decide every ref move before sending anything: a refused push writes nothing.
        let theirs: BTreeMap<String, ObjectId> = dst.refs()?.into_iter().collect();
        let mut moves = Vec::new();
        for (full, id) in &wanted {
            moves.push(plan(self, dst.url(), full, theirs.get(full).copied(), *id, force)?);
        }
        let mut report = send(self, dst.as_ref(), &wanted, progress)?;
        report.remote = remote.into();
        let mut updates = Vec::new();
        for m in moves {
            if m.status != "up-to-date" {
                dst.set_ref(&RefChange {
                    name: m.name.clone(),
                    expect: m.expect,
                    new: m.new,
                    force: m.status == "forced",
                })?;
            }
            updates.push(update(m));
        }
        report.refs = updates;
        Ok(report)
    }

    /// Receives every name and tag of `remote` (a remote of the config) and what they reach;
    /// records its names as `refs/remotes/REMOTE/NAME` and creates the tags this store lacks.
    /// A path or URL is refused: nothing would keep what it fetched.
    pub fn fetch(&self, remote: &str, progress: Progress) -> Result<SyncReport, SyncError> {
        let (src, named) = self.open_remote(remote)?;
        if named.is_none() {
            return Err(SyncError::FetchUnnamed(remote.into()));
        }
        let _locks = lock_with(self, src.as_ref())?;
        let refs = remote_refs(src.as_ref())?;
        self.fetch_locked(src.as_ref(), remote, named, &refs, true, progress)
    }

    /// Receives what `refs` (full names, of `src`, which the user called `remote`) reach;
    /// sets the tracking names of its names under `tracking`, if given, and, with `tags`,
    /// creates the tags this store lacks.
    fn fetch_locked(
        &self,
        src: &dyn Remote,
        remote: &str,
        tracking: Option<&str>,
        refs: &[(String, ObjectId)],
        tags: bool,
        progress: Progress,
    ) -> Result<SyncReport, SyncError> {
        let mut report = receive(self, src, refs, progress)?;
        report.remote = remote.into();
        let mut moves = Vec::new();
        for (full, id) in refs {
            if let (Some(name), Some(remote)) = (full.strip_prefix(HEADS), tracking) {
                let tracking = format!("{REMOTES}{remote}/{name}");
                let old = self.history.find_ref(&tracking)?;
                moves.push(Move {
                    name: tracking,
                    expect: old,
                    new: *id,
                    status: if old.is_none() { "created" } else { "forced" },
                });
            } else if tags && full.starts_with(TAGS) && self.history.find_ref(full)?.is_none() {
                moves.push(Move {
                    name: full.clone(),
                    expect: None,
                    new: *id,
                    status: "created",
                });
            }
        }
        report.refs = apply(self, moves)?;
        Ok(report)
    }

    /// Fetches `names` (every name and tag of the remote when empty) and only what they
    /// reach, then moves the local names to the remote's tips: fast-forwards only, unless
    /// `force`.
    pub fn pull(
        &self,
        remote: &str,
        names: &[String],
        force: bool,
        progress: Progress,
    ) -> Result<SyncReport, SyncError> {
        let (src, named) = self.open_remote(remote)?;
        let _locks = lock_with(self, src.as_ref())?;
        let all = remote_refs(src.as_ref())?;
        let heads: BTreeMap<String, ObjectId> = all
            .iter()
            .filter_map(|(n, id)| n.strip_prefix(HEADS).map(|s| (s.to_string(), *id)))
            .collect();
        let names: Vec<String> = if names.is_empty() {
            heads.keys().cloned().collect()
        } else {
            names.to_vec()
        };
        let mut tips = Vec::new();
        for name in &names {
            let id = heads.get(name).ok_or_else(|| SyncError::NoName {
                name: name.clone(),
                store: src.url().to_string(),
            })?;
            tips.push((format!("{HEADS}{name}"), *id));
        }
        let fetch_all = names.len() == heads.len() && tips.iter().all(|(n, _)| all.iter().any(|(m, _)| m == n));
        let wanted = if fetch_all { all } else { tips.clone() };
        let mut report = self.fetch_locked(src.as_ref(), remote, named, &wanted, fetch_all, progress)?;
        let mut moves = Vec::new();
        for (full, id) in &tips {
            let ours = self.history.find_ref(full)?;
            // The remote's history is here now, so ancestry is checked locally.
            moves.push(plan(
                self,
                &self.layout.root.display().to_string(),
                full,
                ours,
                *id,
                force,
            )?);
        }
        report.refs.extend(apply(self, moves)?);
        Ok(report)
    }

    /// Creates a store in `dir`, fetches everything from `url` (a store's path or a URL,
    /// remembered as remote `origin`) and creates a local name for every name of it. A clone
    /// that fails leaves no store behind.
    pub fn clone_from(url: &str, dir: &Path, progress: Progress) -> Result<(Repository, SyncReport), SyncError> {
        let src = transport::open(url)?;
        // The directories this clone creates, deepest first: a failed clone removes them.
        let created: Vec<&Path> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .collect();
        let remove_created = || {
            for d in &created {
                // Best effort: only empty directories go.
                let _ = std::fs::remove_dir(d);
            }
        };
        let repo = Repository::init(dir).map_err(|e| {
            remove_created();
            SyncError::Init(e)
        })?;
        let result = clone_into(&repo, url, src.as_ref(), progress);
        match result {
            Ok(report) => Ok((repo, report)),
            Err(e) => {
                let root = repo.layout.root.clone();
                drop(repo);
                // Best effort: the store was created by this clone and holds nothing else.
                let _ = std::fs::remove_dir_all(&root);
                remove_created();
                Err(e)
            }
        }
    }
}

fn clone_into(repo: &Repository, url: &str, src: &dyn Remote, progress: Progress) -> Result<SyncReport, SyncError> {
    let shown = src.local_store().map_or(url.to_string(), |p| p.display().to_string());
    repo.remote_add("origin", &shown)?;
    let _locks = lock_with(repo, src)?;
    let refs = remote_refs(src)?;
    let mut report = repo.fetch_locked(src, "origin", Some("origin"), &refs, true, progress)?;
    let mut moves = Vec::new();
    for (full, id) in &refs {
        if full.starts_with(HEADS) {
            moves.push(Move {
                name: full.clone(),
                expect: None,
                new: *id,
                status: "created",
            });
        }
    }
    report.refs.extend(apply(repo, moves)?);
    Ok(report)
}

/// The remote's names and tags, each name checked (a remote is not trusted with paths).
fn remote_refs(src: &dyn Remote) -> Result<Vec<(String, ObjectId)>, SyncError> {
    let refs = src.refs()?;
    for (name, _) in &refs {
        transport::check_ref_name(name).map_err(|why| SyncError::BadRef {
            name: name.clone(),
            url: src.url().to_string(),
            why,
        })?;
    }
    Ok(refs)
}

/// Decides how ref `full` of store `store` moves from `theirs` to `ours`; `history` is a store
/// holding `ours` and its ancestors. Refuses what is not a fast-forward unless `force`.
fn plan(
    history: &Repository,
    store: &str,
    full: &str,
    theirs: Option<ObjectId>,
    ours: ObjectId,
    force: bool,
) -> Result<Move, SyncError> {
    let status = match theirs {
        None => "created",
        Some(t) if t == ours => "up-to-date",
        // A tag never moves on its own; a name moves when the old tip is in the new history.
        Some(t) if !full.starts_with(TAGS) && is_ancestor(history, t, ours)? => "fast-forward",
        Some(_) if force => "forced",
        Some(t) => {
            let (what, name) = match full.strip_prefix(TAGS) {
                Some(tag) => ("tag", tag),
                None => ("name", full.strip_prefix(HEADS).unwrap_or(full)),
            };
            return Err(SyncError::NotFastForward {
                what,
                name: name.into(),
                store: store.into(),
                theirs: t,
                ours,
            });
        }
    };
    Ok(Move {
        name: full.into(),
        expect: theirs,
        new: ours,
        status,
    })
}

/// Whether `ancestor` is `tip` or reached from it through history parents.
pub fn is_ancestor(repo: &Repository, ancestor: ObjectId, tip: ObjectId) -> Result<bool, history::Error> {
    let mut seen = HashSet::new();
    let mut todo = vec![tip];
    while let Some(id) = todo.pop() {
        if id == ancestor {
            return Ok(true);
        }
        if seen.insert(id) {
            todo.extend(repo.history.commit_info(id)?.parents);
        }
    }
    Ok(false)
}

fn update(m: Move) -> RefUpdate {
    RefUpdate {
        name: m.name,
        old: m.expect.map(|id| id.to_string()),
        new: m.new.to_string(),
        status: m.status,
    }
}

/// Moves refs in this store, each by compare-and-swap against the value planned with.
fn apply(dst: &Repository, moves: Vec<Move>) -> Result<Vec<RefUpdate>, SyncError> {
    let mut out = Vec::new();
    for m in moves {
        if m.status != "up-to-date" {
            let expect = match m.expect {
                Some(id) => Expect::At(id),
                None => Expect::Absent,
            };
            dst.history
                .set_ref(&m.name, m.new, expect, &format!("transfer: {}", m.status))?;
        }
        out.push(update(m));
    }
    Ok(out)
}

/// This store's write lock and, for a remote that is a store on this machine, its lock too,
/// so that neither a gc nor a ref change on either side can interleave with the transfer.
/// Taken in the order of their paths, so that two transfers between the same stores in
/// opposite directions cannot wait on each other.
fn lock_with(repo: &Repository, remote: &dyn Remote) -> Result<Vec<lock::WriteLock>, SyncError> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let ours = canon(&repo.layout.root);
    let Some(theirs) = remote.local_store().map(|p| canon(&p)) else {
        return Ok(vec![repo.lock()?]);
    };
    if ours == theirs {
        return Ok(vec![repo.lock()?]);
    }
    let acquire = |p: &Path| lock::WriteLock::acquire(&Layout::new(p));
    let (first, second) = if ours < theirs { (ours, theirs) } else { (theirs, ours) };
    let held = acquire(&first)?;
    Ok(vec![held, acquire(&second)?])
}

/// Runs `f` over `items` in parallel streams; stops at the first error. Results in order.
fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> Result<R, SyncError> + Sync) -> Result<Vec<R>, SyncError> {
    match parallel_partial(items, f) {
        (done, None) => Ok(done),
        (_, Some(e)) => Err(e),
    }
}

/// Runs `f` over `items` in parallel streams, stopping at the first error; returns the results
/// of the items that finished (in order) and the error, so that a caller can keep what arrived.
fn parallel_partial<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, SyncError> + Sync,
) -> (Vec<R>, Option<SyncError>) {
    let streams = std::env::var("SPARSE_STREAMS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(STREAMS)
        .min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let first_error: Mutex<Option<SyncError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..streams {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    match f(item) {
                        Ok(r) => results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    let done = results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect();
    (done, first_error.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// Counts objects sent and stops a transfer after `SPARSE_TEST_FAIL_AFTER` of them, as a
/// killed one would (for the tests of interrupted transfers).
struct Budget {
    done: AtomicU64,
    total: u64,
    stop_after: Option<usize>,
}

impl Budget {
    fn new(total: usize) -> Budget {
        Budget {
            done: AtomicU64::new(0),
            total: total as u64,
            stop_after: std::env::var("SPARSE_TEST_FAIL_AFTER")
                .ok()
                .and_then(|s| s.parse().ok()),
        }
    }

    /// Takes a turn to send one object, or fails when the test limit is reached.
    fn take(&self) -> Result<u64, SyncError> {
        let n = self.done.fetch_add(1, Ordering::SeqCst);
        match self.stop_after {
            Some(limit) if n >= limit as u64 => Err(SyncError::Stopped(limit)),
            _ => Ok(n + 1),
        }
    }
}

/// The sizes of a blob file in `repo`.
fn stored_size(repo: &Repository, key: &Key) -> u64 {
    std::fs::metadata(repo.cas.path(key)).map_or(0, |m| m.len())
}

/// Sends what `roots` reach in `src` and `dst` lacks: blobs, then git objects (commits last),
/// then has `dst` record the blobs' sizes and `full` rows. Refs are the caller's.
fn send(
    src: &Repository,
    dst: &dyn Remote,
    roots: &[(String, ObjectId)],
    progress: Progress,
) -> Result<SyncReport, SyncError> {
    let reach = src.reachable_from(roots.iter().map(|(name, id)| (*id, name.clone())).collect())?;
    let mut report = SyncReport::default();
    let mut blobs: Vec<Key> = reach.blobs.into_iter().collect();
    blobs.sort();
    let mut objects: Vec<ObjectId> = reach.objects.into_iter().collect();
    // Commits last, so that a commit present means its tree is too (not relied upon: every
    // transfer walks the whole history of what it sends).
    objects.sort_by_key(|id| (reach.commits.contains(id), *id));
    let (mut lack_blobs, mut lack_objects) = (Vec::new(), Vec::new());
    for i in 0..blobs.len().max(objects.len()).div_ceil(transport::BATCH) {
        let part = |n: usize| i * transport::BATCH..((i + 1) * transport::BATCH).min(n);
        let b = blobs.get(part(blobs.len())).unwrap_or(&[]);
        let o = objects.get(part(objects.len())).unwrap_or(&[]);
        let (lb, lo) = dst.missing(b, o)?;
        // Only what was asked about, once each, whatever the remote answers.
        let (lb, lo): (HashSet<Key>, HashSet<ObjectId>) = (lb.into_iter().collect(), lo.into_iter().collect());
        lack_blobs.extend(b.iter().filter(|k| lb.contains(*k)));
        lack_objects.extend(o.iter().filter(|id| lo.contains(*id)));
    }
    let lacking: HashSet<Key> = lack_blobs.iter().copied().collect();
    for key in blobs.iter().filter(|k| !lacking.contains(k)) {
        report.bytes_skipped += stored_size(src, key);
    }
    report.objects_skipped = blobs.len() - lack_blobs.len() + objects.len() - lack_objects.len();
    let budget = Budget::new(lack_blobs.len() + lack_objects.len());
    let sent = AtomicU64::new(0);
    let from = src.layout.root.display().to_string();
    let cas = &src.cas;
    parallel(&lack_blobs, |key| {
        let n = budget.take()?;
        let (file, _) = cas.read_file_verified(key).map_err(|source| SyncError::Blob {
            from: from.clone(),
            source: Box::new(source),
        })?;
        dst.put_blob(key, &file)?;
        sent.fetch_add(file.len() as u64, Ordering::Relaxed);
        progress(n, budget.total);
        Ok(())
    })?;
    report.blobs_sent = lack_blobs.len();
    // The receiver records the sizes of every blob it has unrecorded: those sent now and any
    // a stopped transfer sent before. With them go the chunks stored whole among the blobs
    // sent: a later add on the receiver refers to them rather than storing them again (index
    // table `full`).
    let full: Vec<(Key, Key)> = if lack_blobs.is_empty() {
        Vec::new()
    } else {
        src.index_read()?
            .full_chunks()?
            .into_iter()
            .filter(|(_, (blob, _))| lacking.contains(blob))
            .map(|(chunk, (blob, _))| (chunk, blob))
            .collect()
    };
    for part in blobs.chunks(transport::BATCH) {
        let keys: HashSet<&Key> = part.iter().collect();
        let rows: Vec<(Key, Key)> = full.iter().filter(|(_, b)| keys.contains(b)).copied().collect();
        dst.record(part, &rows)?;
    }
    // Git objects are read here (gix is not shared between threads), sent in parallel:
    // trees and files first, then commits.
    let split = lack_objects.partition_point(|id| !reach.commits.contains(id));
    for group in [&lack_objects[..split], &lack_objects[split..]] {
        for part in group.chunks(256) {
            let mut canonical = Vec::new();
            for id in part {
                let bytes = src.history.read_canonical(*id).map_err(|source| SyncError::Object {
                    id: *id,
                    from: from.clone(),
                    source: Box::new(source),
                })?;
                canonical.push((*id, bytes));
            }
            parallel(&canonical, |(id, bytes)| {
                let n = budget.take()?;
                dst.put_object(*id, bytes)?;
                sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                progress(n, budget.total);
                Ok(())
            })?;
        }
    }
    report.objects_sent = lack_blobs.len() + lack_objects.len();
    report.bytes_sent = sent.into_inner();
    Ok(report)
}

/// Receives what `roots` reach in `src` and this store lacks: the git objects of the history
/// first (each re-hashed on arrival), walked from the tips through parents, trees and delta
/// bases, then the blobs the walk names (each decoded within its declared size and re-hashed
/// before it is stored), then their sizes and `full` rows in the index.
fn receive(
    dst: &Repository,
    src: &dyn Remote,
    roots: &[(String, ObjectId)],
    progress: Progress,
) -> Result<SyncReport, SyncError> {
    let mut report = SyncReport::default();
    let budget = Budget::new(0);
    let sent = AtomicU64::new(0);
    let url = src.url().to_string();
    // Receives the objects of `ids` this store lacks; returns how many it had.
    let fetch = |ids: &[ObjectId], report: &mut SyncReport| -> Result<(), SyncError> {
        let lack: Vec<ObjectId> = ids.iter().filter(|id| !dst.history.has_object(**id)).copied().collect();
        report.objects_skipped += ids.len() - lack.len();
        let (got, failed) = parallel_partial(&lack, |id| {
            budget.take()?;
            let bytes = src.get_object(*id)?;
            sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            Ok((*id, bytes))
        });
        // What arrived is kept even when another object failed: run again, the fetch asks
        // only for the rest.
        for (id, bytes) in got {
            dst.history
                .write_canonical(id, &bytes)
                .map_err(|source| SyncError::Object {
                    id,
                    from: url.clone(),
                    source: Box::new(source),
                })?;
        }
        if let Some(e) = failed {
            return Err(e);
        }
        report.objects_sent += lack.len();
        Ok(())
    };
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut commits: Vec<ObjectId> = roots.iter().map(|(_, id)| *id).filter(|id| seen.insert(*id)).collect();
    while !commits.is_empty() {
        fetch(&commits, &mut report)?;
        let mut next = Vec::new();
        let mut trees = Vec::new();
        for id in &commits {
            let info = dst.history.commit_info(*id)?;
            next.extend(info.parents.iter().copied().filter(|p| seen.insert(*p)));
            trees.push(info.tree);
        }
        let mut level: Vec<ObjectId> = trees.iter().copied().filter(|t| seen.insert(*t)).collect();
        while !level.is_empty() {
            fetch(&level, &mut report)?;
            let mut subtrees = Vec::new();
            let mut files = Vec::new();
            for tree in &level {
                for (id, is_tree) in dst.history.tree_entries(*tree)? {
                    if seen.insert(id) {
                        if is_tree {
                            subtrees.push(id);
                        } else {
                            files.push(id);
                        }
                    }
                }
            }
            fetch(&files, &mut report)?;
            level = subtrees;
        }
        for tree in trees {
            let snap = Snapshot::load(&dst.history, tree)
                .and_then(|s| s.base())
                .map_err(|source| SyncError::Snapshot {
                    tree,
                    url: url.clone(),
                    source: Box::new(source),
                })?;
            next.extend(snap.filter(|b| seen.insert(*b)));
        }
        commits = next;
    }
    // The history is all here now: the blobs it names are found by the local walk.
    let reach = dst.reachable_from(roots.iter().map(|(name, id)| (*id, format!("{url} {name}"))).collect())?;
    let mut blobs: Vec<Key> = reach.blobs.into_iter().collect();
    blobs.sort();
    let recorded: HashSet<Key> = dst.index_read()?.blobs()?.into_iter().map(|(k, _)| k).collect();
    let mut sizes: Vec<(Key, BlobSizes)> = Vec::new();
    let mut lack = Vec::new();
    for key in blobs {
        if !dst.cas.contains(&key) {
            lack.push(key);
            continue;
        }
        report.objects_skipped += 1;
        report.bytes_skipped += stored_size(dst, &key);
        if !recorded.contains(&key) {
            // Received by a transfer that stopped before it recorded the sizes.
            let found = dst.cas.sizes(&key).map_err(|source| SyncError::Store {
                to: dst.layout.root.clone(),
                source: Box::new(source),
            })?;
            sizes.push((key, found));
        }
    }
    let total = lack.len() as u64;
    let cas = &dst.cas;
    let got = parallel(&lack, |key| {
        let n = budget.take()?;
        let file = src.get_blob(key)?;
        let found = cas.put_file_verified(*key, &file).map_err(|source| SyncError::Blob {
            from: url.clone(),
            source: Box::new(source),
        })?;
        sent.fetch_add(file.len() as u64, Ordering::Relaxed);
        progress(n.min(total), total);
        Ok((*key, found))
    })?;
    report.blobs_sent = got.len();
    report.objects_sent += got.len();
    sizes.extend(got);
    if !sizes.is_empty() {
        let keys: Vec<Key> = sizes.iter().map(|(k, _)| *k).collect();
        let mut full = Vec::new();
        for part in keys.chunks(transport::BATCH) {
            full.extend(src.full_rows(part)?);
        }
        let wanted: HashSet<Key> = keys.into_iter().collect();
        full.retain(|(_, blob)| wanted.contains(blob));
        dst.index()?.add_blobs(&sizes, &full)?;
    }
    report.bytes_sent = sent.into_inner();
    Ok(report)
}
