//! Remotes that are another store on a path: `remote add/remove/list`, `push`, `fetch`,
//! `pull` and `clone` (docs/PROTOCOL.md, "Path remotes").
//!
//! A transfer walks what the given commits reach in the sending store
//! ([`Repository::reachable_from`]) and sends what the receiving store lacks: blob files
//! first (each decoded and re-hashed before it is written, by temporary file and rename),
//! then git objects (re-hashed on read, checked on write), then the blobs' sizes in the
//! receiver's index, and only then moves refs, by compare-and-swap. An interrupted transfer
//! leaves whole objects and unmoved refs, so running it again sends only what is missing.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::rev::{check_name, HEADS, REMOTES, TAGS};
use super::{reach, OpenError, Repository};
use crate::store::cas::{self, Key};
use crate::store::history::{self, Expect, ObjectId};
use crate::store::index;
use crate::store::{lock, DIR_NAME};

/// `sparse/remotes.json`: remote names and the stores they name.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Config {
    remotes: BTreeMap<String, PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct RemoteRow {
    pub name: String,
    pub path: PathBuf,
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
    #[error("remote store {path}: {source}")]
    Open { path: PathBuf, source: OpenError },
    #[error("cannot create the clone: {0}")]
    Init(OpenError),
    #[error("no name {name} in {store}")]
    NoName { name: String, store: PathBuf },
    #[error("{what} {name} in {store} is at {theirs}, which is not an ancestor of {ours}: not a fast-forward (use --force to overwrite)")]
    NotFastForward {
        what: &'static str,
        name: String,
        store: PathBuf,
        theirs: ObjectId,
        ours: ObjectId,
    },
    #[error("nothing was sent: walking what is to be sent failed: {0}")]
    Reach(#[from] reach::Error),
    /// A blob of the sending store that cannot be read or does not hash to its key (the
    /// error names the blob and its file).
    #[error("refused a blob of {from}: {source} (nothing was written for it)")]
    Blob { from: PathBuf, source: Box<cas::Error> },
    #[error("cannot store a blob in {to}: {source}")]
    Store { to: PathBuf, source: Box<cas::Error> },
    /// A git object that cannot be read and verified in the sender or written to the
    /// receiver (the error names the store).
    #[error("cannot copy git object {id}: {source}")]
    Object { id: ObjectId, source: Box<history::Error> },
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
    /// Bytes of the blob files and (zlib-compressed, loose) git objects written.
    pub bytes_sent: u64,
    /// Blobs and git objects the receiving store had already.
    pub objects_skipped: usize,
    pub refs: Vec<RefUpdate>,
}

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
            .map(|(name, path)| RemoteRow { name, path })
            .collect())
    }

    /// Adds remote `name` for the store at `path` (a store, or a directory holding one).
    pub fn remote_add(&self, name: &str, path: &Path) -> Result<RemoteRow, ConfigError> {
        check_name(name).map_err(ConfigError::Name)?;
        if name.contains('/') {
            return Err(ConfigError::Name(format!("remote name {name:?} must not contain '/'")));
        }
        let store = store_dir(path)?;
        let _lock = self.lock()?;
        let mut config = self.read_config()?;
        if config.remotes.contains_key(name) {
            return Err(ConfigError::Exists(name.into()));
        }
        config.remotes.insert(name.into(), store.clone());
        self.write_config(&config)?;
        Ok(RemoteRow {
            name: name.into(),
            path: store,
        })
    }

    /// Removes remote `name` and its remote-tracking names.
    pub fn remote_remove(&self, name: &str) -> Result<RemoteRow, ConfigError> {
        let _lock = self.lock()?;
        let mut config = self.read_config()?;
        let path = config
            .remotes
            .remove(name)
            .ok_or_else(|| ConfigError::Missing(name.into()))?;
        self.write_config(&config)?;
        let prefix = format!("{REMOTES}{name}/");
        for (short, id) in self.history.refs(&prefix)? {
            self.history.delete_ref(&format!("{prefix}{short}"), Expect::At(id))?;
        }
        Ok(RemoteRow {
            name: name.into(),
            path,
        })
    }

    /// The store a remote names: a configured remote name, else a path.
    fn open_remote(&self, remote: &str) -> Result<Repository, SyncError> {
        let config = self.read_config()?;
        let path = match config.remotes.get(remote) {
            Some(p) => p.clone(),
            None if Path::new(remote).exists() => store_dir(Path::new(remote))?,
            None => return Err(ConfigError::Missing(remote.into()).into()),
        };
        Repository::open(&path).map_err(|source| SyncError::Open { path, source })
    }

    /// Sends `names` (all names and tags when empty) and what they reach to `remote`, then
    /// moves the remote's names: fast-forwards only, unless `force`.
    pub fn push(&self, remote: &str, names: &[String], force: bool) -> Result<SyncReport, SyncError> {
        let dst = self.open_remote(remote)?;
        let _locks = lock_both(self, &dst)?;
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
                    store: self.layout.root.clone(),
                })?;
                wanted.push((full, id));
            }
        }
        // Decide every ref move before sending anything: a refused push writes nothing.
        let mut moves = Vec::new();
        for (full, id) in &wanted {
            let theirs = dst.history.find_ref(full)?;
            moves.push(plan(self, &dst, full, theirs, *id, force)?);
        }
        let mut report = transfer(self, &dst, &wanted)?;
        report.remote = remote.into();
        report.refs = apply(&dst, moves)?;
        Ok(report)
    }

    /// Receives every name and tag of `remote` and what they reach; records the remote's
    /// names as `refs/remotes/REMOTE/NAME` and creates the tags this store lacks.
    pub fn fetch(&self, remote: &str) -> Result<SyncReport, SyncError> {
        let src = self.open_remote(remote)?;
        let _locks = lock_both(self, &src)?;
        self.fetch_locked(&src, remote)
    }

    fn fetch_locked(&self, src: &Repository, remote: &str) -> Result<SyncReport, SyncError> {
        let heads = src.history.refs(HEADS)?;
        let tags = src.history.refs(TAGS)?;
        let roots: Vec<(String, ObjectId)> = heads
            .iter()
            .map(|(n, id)| (format!("{HEADS}{n}"), *id))
            .chain(tags.iter().map(|(n, id)| (format!("{TAGS}{n}"), *id)))
            .collect();
        let mut report = transfer(src, self, &roots)?;
        report.remote = remote.into();
        let mut moves = Vec::new();
        for (name, id) in &heads {
            let full = format!("{REMOTES}{remote}/{name}");
            let old = self.history.find_ref(&full)?;
            moves.push(Move {
                name: full,
                expect: old,
                new: *id,
                status: if old.is_none() { "created" } else { "forced" },
            });
        }
        for (name, id) in &tags {
            let full = format!("{TAGS}{name}");
            if self.history.find_ref(&full)?.is_none() {
                moves.push(Move {
                    name: full,
                    expect: None,
                    new: *id,
                    status: "created",
                });
            }
        }
        report.refs = apply(self, moves)?;
        Ok(report)
    }

    /// Fetches `remote`, then moves the local `names` (every name of the remote when empty)
    /// to the remote's tips: fast-forwards only, unless `force`.
    pub fn pull(&self, remote: &str, names: &[String], force: bool) -> Result<SyncReport, SyncError> {
        let src = self.open_remote(remote)?;
        let _locks = lock_both(self, &src)?;
        let heads: BTreeMap<String, ObjectId> = src.history.refs(HEADS)?.into_iter().collect();
        let names: Vec<String> = if names.is_empty() {
            heads.keys().cloned().collect()
        } else {
            names.to_vec()
        };
        let mut tips = Vec::new();
        for name in &names {
            let id = heads.get(name).ok_or_else(|| SyncError::NoName {
                name: name.clone(),
                store: src.layout.root.clone(),
            })?;
            tips.push((format!("{HEADS}{name}"), *id));
        }
        let mut report = self.fetch_locked(&src, remote)?;
        let mut moves = Vec::new();
        for (full, id) in &tips {
            let ours = self.history.find_ref(full)?;
            // The remote's history is here now, so ancestry is checked locally.
            moves.push(plan(self, self, full, ours, *id, force)?);
        }
        report.refs.extend(apply(self, moves)?);
        Ok(report)
    }

    /// Creates a store in `dir`, fetches everything from the store at `path` (remembered as
    /// remote `origin`) and creates a local name for every name of it.
    pub fn clone_from(path: &Path, dir: &Path) -> Result<(Repository, SyncReport), SyncError> {
        let store = store_dir(path)?;
        let src = Repository::open(&store).map_err(|source| SyncError::Open {
            path: store.clone(),
            source,
        })?;
        let repo = Repository::init(dir).map_err(SyncError::Init)?;
        repo.remote_add("origin", &store)?;
        let report = {
            let _locks = lock_both(&repo, &src)?;
            let mut report = repo.fetch_locked(&src, "origin")?;
            let mut moves = Vec::new();
            for (name, id) in src.history.refs(HEADS)? {
                moves.push(Move {
                    name: format!("{HEADS}{name}"),
                    expect: None,
                    new: id,
                    status: "created",
                });
            }
            report.refs.extend(apply(&repo, moves)?);
            report
        };
        Ok((repo, report))
    }
}

/// The store directory `path` names: itself, or the `.sparse` in it; made absolute.
fn store_dir(path: &Path) -> Result<PathBuf, ConfigError> {
    let abs = std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned());
    for candidate in [abs.clone(), abs.join(DIR_NAME)] {
        if crate::store::Layout::is_store(&candidate) {
            return Ok(candidate);
        }
    }
    Err(ConfigError::NotStore { path: abs })
}

/// Decides how ref `full` of store `dst` moves from `theirs` to `ours`; `history` is a store
/// holding `ours` and its ancestors. Refuses what is not a fast-forward unless `force`.
fn plan(
    history: &Repository,
    dst: &Repository,
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
                store: dst.layout.root.clone(),
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
fn is_ancestor(repo: &Repository, ancestor: ObjectId, tip: ObjectId) -> Result<bool, SyncError> {
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

/// Moves refs in `dst`, each by compare-and-swap against the value planned with.
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
        out.push(RefUpdate {
            name: m.name,
            old: m.expect.map(|id| id.to_string()),
            new: m.new.to_string(),
            status: m.status,
        });
    }
    Ok(out)
}

/// The write locks of both stores of a transfer, so that neither a gc nor a ref change on the
/// sending side can pull objects away mid-transfer. Taken in the order of their paths, so that
/// two transfers between the same stores in opposite directions cannot wait on each other.
fn lock_both(a: &Repository, b: &Repository) -> Result<Vec<lock::WriteLock>, SyncError> {
    let path = |r: &Repository| std::fs::canonicalize(&r.layout.root).unwrap_or_else(|_| r.layout.root.clone());
    let (pa, pb) = (path(a), path(b));
    if pa == pb {
        return Ok(vec![a.lock()?]);
    }
    let (first, second) = if pa < pb { (a, b) } else { (b, a) };
    let held = first.lock()?;
    Ok(vec![held, second.lock()?])
}

/// Copies what `roots` reach in `src` and `dst` lacks: blobs, then git objects, then the
/// blobs' sizes and the chunks stored whole in `dst`'s index. The caller holds `dst`'s write lock and moves refs after.
fn transfer(src: &Repository, dst: &Repository, roots: &[(String, ObjectId)]) -> Result<SyncReport, SyncError> {
    let reach = src.reachable_from(roots.iter().map(|(name, id)| (*id, name.clone())).collect())?;
    let mut report = SyncReport::default();
    let mut sizes = Vec::new();
    let mut blobs: Vec<Key> = reach.blobs.into_iter().collect();
    blobs.sort();
    let recorded: HashSet<Key> = dst.index_read()?.blobs()?.into_iter().map(|(k, _)| k).collect();
    for key in blobs {
        if dst.cas.contains(&key) {
            report.objects_skipped += 1;
            if !recorded.contains(&key) {
                // Sent by a transfer that stopped before it recorded the sizes.
                let found = dst.cas.sizes(&key).map_err(|source| SyncError::Store {
                    to: dst.layout.root.clone(),
                    source: Box::new(source),
                })?;
                sizes.push((key, found));
            }
            continue;
        }
        let (file, found) = src.cas.read_file_verified(&key).map_err(|source| SyncError::Blob {
            from: src.layout.root.clone(),
            source: Box::new(source),
        })?;
        dst.cas.put_file(key, &file).map_err(|source| SyncError::Store {
            to: dst.layout.root.clone(),
            source: Box::new(source),
        })?;
        report.objects_sent += 1;
        report.blobs_sent += 1;
        report.bytes_sent += found.stored;
        sizes.push((key, found));
    }
    let mut objects: Vec<ObjectId> = reach.objects.into_iter().collect();
    // Commits last, so that a commit present means its tree is too (not relied upon: every
    // transfer walks the whole history of what it sends).
    objects.sort_by_key(|id| (reach.commits.contains(id), *id));
    for id in objects {
        if dst.history.has_object(id) {
            report.objects_skipped += 1;
            continue;
        }
        let fail = |source| SyncError::Object {
            id,
            source: Box::new(source),
        };
        let (kind, data) = src.history.read_verified(id).map_err(fail)?;
        dst.history.write_raw(id, kind, &data).map_err(fail)?;
        report.objects_sent += 1;
        report.bytes_sent += dst.history.loose_size(id)?;
    }
    if !sizes.is_empty() {
        // The chunks stored whole among the blobs recorded: a later add on the receiver refers
        // to them rather than storing them again (index table `full`).
        let recorded: HashSet<Key> = sizes.iter().map(|(k, _)| *k).collect();
        let full: Vec<(Key, Key)> = src
            .index_read()?
            .full_chunks()?
            .into_iter()
            .filter(|(_, (blob, _))| recorded.contains(blob))
            .map(|(chunk, (blob, _))| (chunk, blob))
            .collect();
        dst.index()?.add_blobs(&sizes, &full)?;
    }
    Ok(report)
}
