//! Git history through gix: blobs, trees, commits and refs of the bare repository that is the
//! store directory itself, so `git --git-dir .sparse log --all` shows every commit.

use std::path::{Path, PathBuf};

use gix::bstr::ByteSlice;
use gix::objs::tree::EntryKind;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::refs::Target;

pub use gix::ObjectId;

#[derive(Debug, thiserror::Error)]
#[error("git history in {dir}: {what}: {message}")]
pub struct Error {
    pub dir: PathBuf,
    pub what: String,
    pub message: String,
    /// The bytes given were refused (an object that is not what its id says), as opposed to
    /// the history failing (a full disk, a damaged file).
    pub refused: bool,
}

/// One commit, decoded.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub id: ObjectId,
    pub tree: ObjectId,
    pub parents: Vec<ObjectId>,
    pub message: String,
    pub author: String,
    /// Seconds since the Unix epoch.
    pub time: i64,
}

/// How a ref update treats the ref's current value (compare-and-swap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The ref must not exist yet.
    Absent,
    /// The ref must point at this commit.
    At(ObjectId),
    /// Whatever it points at (forced).
    Any,
}

pub struct History {
    repo: gix::Repository,
    dir: PathBuf,
}

impl History {
    /// Creates a bare repository at `dir`.
    pub fn init(dir: &Path) -> Result<History, Error> {
        let repo = gix::init_bare(dir).map_err(|e| err(dir, "create a bare repository", e))?;
        Ok(History {
            repo,
            dir: dir.to_owned(),
        })
    }

    pub fn open(dir: &Path) -> Result<History, Error> {
        let repo = gix::open(dir).map_err(|e| err(dir, "open the repository", e))?;
        Ok(History {
            repo,
            dir: dir.to_owned(),
        })
    }

    /// `what` failed with `e` (and the errors under it).
    fn err(&self, what: impl Into<String>, e: impl std::error::Error) -> Error {
        err(&self.dir, what, e)
    }

    /// `what` failed for the reason `why`, a fault of what was asked or given.
    fn fail(&self, what: impl Into<String>, why: impl std::fmt::Display) -> Error {
        Error {
            dir: self.dir.clone(),
            what: what.into(),
            message: why.to_string(),
            refused: true,
        }
    }

    /// Writes a blob; returns its id and the bytes it added to the store (0 if it existed).
    pub fn write_blob(&self, bytes: &[u8]) -> Result<(ObjectId, u64), Error> {
        let id = gix::objs::compute_hash(self.repo.object_hash(), gix::objs::Kind::Blob, bytes)
            .map_err(|e| self.err("hash a blob", e))?;
        if self.repo.has_object(id) {
            return Ok((id, 0));
        }
        let written = self.repo.write_blob(bytes).map_err(|e| self.err("write a blob", e))?;
        let hex = id.to_string();
        let loose = self.dir.join("objects").join(&hex[..2]).join(&hex[2..]);
        let size = std::fs::metadata(loose).map(|m| m.len()).unwrap_or(bytes.len() as u64);
        Ok((written.detach(), size))
    }

    pub fn read_blob(&self, id: ObjectId) -> Result<Vec<u8>, Error> {
        Ok(self.find(id, Some(gix::objs::Kind::Blob))?.detach().data)
    }

    /// Object `id`, which must be of `kind` (if given) and hash to `id`: an object whose
    /// bytes were changed on disk (still valid zlib) is an error, never another file's content
    /// or a manifest that says something else.
    fn find(&self, id: ObjectId, kind: Option<gix::objs::Kind>) -> Result<gix::Object<'_>, Error> {
        let what = format!("read object {id}");
        let object = self.repo.find_object(id).map_err(|e| self.err(&what, e))?;
        if kind.is_some_and(|k| k != object.kind) {
            return Err(self.fail(what, format!("it is a {}", object.kind)));
        }
        let actual = gix::objs::compute_hash(self.repo.object_hash(), object.kind, &object.data)
            .map_err(|e| self.err(&what, e))?;
        if actual != id {
            return Err(self.fail(what, format!("its content hashes to {actual}: the object is damaged")));
        }
        Ok(object)
    }

    /// Tree `id`, checked as [`History::find`] does.
    fn find_tree(&self, id: ObjectId) -> Result<gix::Tree<'_>, Error> {
        Ok(self.find(id, Some(gix::objs::Kind::Tree))?.into_tree())
    }

    /// Writes the tree (with its subtrees) holding `files`, given as `a/b/name` paths.
    pub fn write_tree(&self, files: &[(String, ObjectId)]) -> Result<ObjectId, Error> {
        let mut editor = self.repo.empty_tree().edit().map_err(|e| self.err("edit a tree", e))?;
        for (path, id) in files {
            editor
                .upsert(path.as_str(), EntryKind::Blob, *id)
                .map_err(|e| self.err(format!("add {path} to a tree"), e))?;
        }
        let id = editor.write().map_err(|e| self.err("write a tree", e))?;
        Ok(id.detach())
    }

    /// Every blob below `tree`, as `a/b/name` paths, in git's order.
    pub fn tree_files(&self, tree: ObjectId) -> Result<Vec<(String, ObjectId)>, Error> {
        let mut out = Vec::new();
        self.collect_tree(tree, "", &mut out)?;
        Ok(out)
    }

    fn collect_tree(&self, tree: ObjectId, prefix: &str, out: &mut Vec<(String, ObjectId)>) -> Result<(), Error> {
        let tree_obj = self.find_tree(tree)?;
        let decoded = tree_obj
            .decode()
            .map_err(|e| self.err(format!("decode tree {tree}"), e))?;
        for entry in &decoded.entries {
            let name = entry
                .filename
                .to_str()
                .map_err(|_| self.fail(format!("read tree {tree}"), "a file name is not UTF-8"))?;
            let path = format!("{prefix}{name}");
            if entry.mode.is_tree() {
                self.collect_tree(entry.oid.to_owned(), &format!("{path}/"), out)?;
            } else {
                out.push((path, entry.oid.to_owned()));
            }
        }
        Ok(())
    }

    /// `tree` and every tree below it.
    pub fn subtrees(&self, tree: ObjectId) -> Result<Vec<ObjectId>, Error> {
        let mut out = vec![tree];
        let mut i = 0;
        while i < out.len() {
            let id = out[i];
            let tree_obj = self.find_tree(id)?;
            let decoded = tree_obj
                .decode()
                .map_err(|e| self.err(format!("decode tree {id}"), e))?;
            out.extend(
                decoded
                    .entries
                    .iter()
                    .filter(|e| e.mode.is_tree())
                    .map(|e| e.oid.to_owned()),
            );
            i += 1;
        }
        Ok(out)
    }

    /// Every loose object (`objects/xx/...`), the only kind this store writes.
    pub fn loose_objects(&self) -> Result<Vec<ObjectId>, Error> {
        let objects = self.dir.join("objects");
        let list = |e: std::io::Error| self.err("list loose objects", e);
        let mut out = Vec::new();
        for fan in std::fs::read_dir(&objects).map_err(list)? {
            let fan = fan.map_err(list)?;
            let prefix = fan.file_name().to_string_lossy().into_owned();
            if prefix.len() != 2 || !fan.path().is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(fan.path()).map_err(list)? {
                let rest = entry.map_err(list)?.file_name().to_string_lossy().into_owned();
                if let Ok(id) = ObjectId::from_hex(format!("{prefix}{rest}").as_bytes()) {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }

    fn loose_path(&self, id: ObjectId) -> PathBuf {
        let hex = id.to_string();
        self.dir.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    /// The size of loose object `id`'s file.
    pub fn loose_size(&self, id: ObjectId) -> Result<u64, Error> {
        let meta = std::fs::metadata(self.loose_path(id));
        Ok(meta.map_err(|e| self.err(format!("read object {id}"), e))?.len())
    }

    /// Deletes loose object `id` (for gc).
    pub fn remove_loose(&self, id: ObjectId) -> Result<(), Error> {
        std::fs::remove_file(self.loose_path(id)).map_err(|e| self.err(format!("remove object {id}"), e))
    }

    /// Writes a commit object (no ref moves).
    pub fn write_commit(&self, tree: ObjectId, parents: &[ObjectId], message: &str) -> Result<ObjectId, Error> {
        let signature = signature();
        let commit = gix::objs::Commit {
            tree,
            parents: parents.iter().copied().collect(),
            author: signature.clone(),
            committer: signature,
            encoding: None,
            message: message.into(),
            extra_headers: Vec::new(),
        };
        let id = self
            .repo
            .write_object(&commit)
            .map_err(|e| self.err("write a commit", e))?;
        Ok(id.detach())
    }

    pub fn commit_info(&self, id: ObjectId) -> Result<CommitInfo, Error> {
        let commit = self.find(id, Some(gix::objs::Kind::Commit))?.into_commit();
        let decoded = commit
            .decode()
            .map_err(|e| self.err(format!("decode commit {id}"), e))?;
        let author = decoded
            .author()
            .map_err(|e| self.err(format!("decode commit {id}"), e))?;
        Ok(CommitInfo {
            id,
            tree: decoded.tree(),
            parents: decoded.parents().collect(),
            message: decoded.message.to_str_lossy().into_owned(),
            author: format!("{} <{}>", author.name, author.email),
            time: author.time().map(|t| t.seconds).unwrap_or(0),
        })
    }

    /// Re-hashes object `id` and checks the result is `id`.
    pub fn verify(&self, id: ObjectId) -> Result<(), Error> {
        self.read_verified(id).map(drop)
    }

    /// Object `id` as (kind, content), re-hashed and checked against `id`: what a transfer
    /// reads from the sending store.
    pub fn read_verified(&self, id: ObjectId) -> Result<(gix::objs::Kind, Vec<u8>), Error> {
        let object = self.find(id, None)?;
        Ok((object.kind, object.detach().data))
    }

    /// Writes an object read from another store and checks that it is stored as `id`.
    pub fn write_raw(&self, id: ObjectId, kind: gix::objs::Kind, data: &[u8]) -> Result<(), Error> {
        use gix::objs::Write as _;
        let written = self
            .repo
            .objects
            .write_buf(kind, data)
            .map_err(|e| self.err(format!("write object {id}"), e))?;
        if written != id {
            return Err(self.fail(format!("write object {id}"), format!("it was stored as {written}")));
        }
        Ok(())
    }

    /// Object `id` in git's canonical encoding (`KIND SIZE\0DATA`, what its id hashes),
    /// re-hashed and checked: what a transfer sends.
    pub fn read_canonical(&self, id: ObjectId) -> Result<Vec<u8>, Error> {
        let (kind, data) = self.read_verified(id)?;
        let mut out = format!("{} {}\0", kind, data.len()).into_bytes();
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Stores an object received in git's canonical encoding after checking that it hashes
    /// to `id`; nothing is written for one that does not. Returns the kind written.
    pub fn write_canonical(&self, id: ObjectId, bytes: &[u8]) -> Result<gix::objs::Kind, Error> {
        let bad = |why: &str| self.fail(format!("receive object {id}"), why);
        let nul = bytes
            .iter()
            .position(|b| *b == 0)
            .filter(|n| *n <= 32)
            .ok_or_else(|| bad("no object header"))?;
        let header = std::str::from_utf8(&bytes[..nul]).map_err(|_| bad("a header that is not text"))?;
        let (kind, size) = header.split_once(' ').ok_or_else(|| bad("a malformed header"))?;
        let kind = gix::objs::Kind::from_bytes(kind.as_bytes()).map_err(|_| bad("an unknown object kind"))?;
        let data = &bytes[nul + 1..];
        if size.parse::<usize>().ok() != Some(data.len()) {
            return Err(bad("a size that is not its length"));
        }
        let actual = gix::objs::compute_hash(self.repo.object_hash(), kind, data)
            .map_err(|e| self.err(format!("hash object {id}"), e))?;
        if actual != id {
            return Err(self.fail(
                format!("receive object {id}"),
                format!("its content hashes to {actual}"),
            ));
        }
        if !self.has_object(id) {
            self.write_raw(id, kind, data)?;
        }
        Ok(kind)
    }

    /// The direct entries of `tree`: (id, whether it is a tree).
    pub fn tree_entries(&self, tree: ObjectId) -> Result<Vec<(ObjectId, bool)>, Error> {
        let tree_obj = self.find_tree(tree)?;
        let decoded = tree_obj
            .decode()
            .map_err(|e| self.err(format!("decode tree {tree}"), e))?;
        Ok(decoded
            .entries
            .iter()
            .map(|e| (e.oid.to_owned(), e.mode.is_tree()))
            .collect())
    }

    pub fn has_object(&self, id: ObjectId) -> bool {
        self.repo.has_object(id)
    }

    /// The commit a ref (full name, e.g. `refs/heads/x`) points at, if it exists.
    pub fn find_ref(&self, name: &str) -> Result<Option<ObjectId>, Error> {
        let found = self
            .repo
            .try_find_reference(name)
            .map_err(|e| self.err(format!("read ref {name}"), e))?;
        Ok(found.and_then(|r| r.target().try_id().map(|id| id.to_owned())))
    }

    /// Every ref below `prefix` (e.g. `refs/heads/`), as (name without prefix, commit).
    pub fn refs(&self, prefix: &str) -> Result<Vec<(String, ObjectId)>, Error> {
        let platform = self.repo.references().map_err(|e| self.err("list refs", e))?;
        let iter = platform
            .prefixed(prefix)
            .map_err(|e| self.err(format!("list refs below {prefix}"), e))?;
        let mut out = Vec::new();
        for r in iter {
            let r = r.map_err(|e| self.err(format!("list refs below {prefix}"), e))?;
            let name = r.name().as_bstr().to_str_lossy().into_owned();
            if let Some(id) = r.target().try_id() {
                let short = name.strip_prefix(prefix).unwrap_or(&name).to_string();
                out.push((short, id.to_owned()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Points ref `name` at `new`, if its current value is what `expect` says (atomic). The
    /// caller holds the store's write lock.
    pub fn set_ref(&self, name: &str, new: ObjectId, expect: Expect, log: &str) -> Result<(), Error> {
        self.set_refs(&[(name, new, expect)], log)
    }

    /// Points each ref of `moves` (name, new value, expected value) at its new value, in one
    /// transaction: if any ref is not what its `expect` says, or its new value cannot be
    /// written, none moves. A failure while they are being put in place in turn (by name: a
    /// ref file that cannot replace what is at its path) leaves the ones before it moved: the
    /// caller reads them back to put them back.
    /// The caller holds the store's write lock.
    pub fn set_refs(&self, moves: &[(&str, ObjectId, Expect)], log: &str) -> Result<(), Error> {
        let edits = moves
            .iter()
            .map(|&(name, new, expect)| {
                Ok(RefEdit {
                    change: Change::Update {
                        log: LogChange {
                            mode: RefLog::AndReference,
                            force_create_reflog: false,
                            message: log.into(),
                        },
                        expected: previous(expect),
                        new: Target::Object(new),
                    },
                    name: name
                        .try_into()
                        .map_err(|e| self.err(format!("name a ref {name:?}"), e))?,
                    deref: false,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let names: Vec<&str> = moves.iter().map(|m| m.0).collect();
        self.edit(edits, &names)
    }

    /// Deletes ref `name`, if its current value is what `expect` says. The caller holds the
    /// store's write lock.
    pub fn delete_ref(&self, name: &str, expect: Expect) -> Result<(), Error> {
        let edit = RefEdit {
            change: Change::Delete {
                expected: previous(expect),
                log: RefLog::AndReference,
            },
            name: name
                .try_into()
                .map_err(|e| self.err(format!("name a ref {name:?}"), e))?,
            deref: false,
        };
        self.edit(vec![edit], &[name])
    }

    fn edit(&self, edits: Vec<RefEdit>, names: &[&str]) -> Result<(), Error> {
        for name in names {
            self.remove_stale_locks(name)?;
        }
        let signature = signature();
        self.repo
            .edit_references_as(edits, Some(signature.to_ref(&mut gix::date::parse::TimeBuf::default())))
            .map_err(|e| self.err(format!("update ref {}", names.join(", ")), e))?;
        Ok(())
    }
}

impl History {
    /// Removes lock files that a process killed while moving ref `name` left behind. Refs are
    /// only edited while the store's write lock is held, so any such file is stale: without
    /// this, git's rules would refuse every later update of the ref.
    fn remove_stale_locks(&self, name: &str) -> Result<(), Error> {
        for lock in [format!("{name}.lock"), "packed-refs.lock".to_string()] {
            let path = self.dir.join(&lock);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.err(format!("remove the stale lock {}", path.display()), e)),
            }
        }
        Ok(())
    }
}

fn previous(expect: Expect) -> PreviousValue {
    match expect {
        Expect::Absent => PreviousValue::MustNotExist,
        Expect::At(id) => PreviousValue::MustExistAndMatch(Target::Object(id)),
        Expect::Any => PreviousValue::Any,
    }
}

/// `e` and the errors under it: gix's errors say what failed, their sources why (a full disk,
/// a permission).
fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let why = s.to_string();
        if !message.contains(&why) {
            message = format!("{message}: {why}");
        }
        source = s.source();
    }
    message
}

fn err(dir: &Path, what: impl Into<String>, e: impl std::error::Error) -> Error {
    Error {
        dir: dir.to_owned(),
        what: what.into(),
        message: chain(&e),
        refused: false,
    }
}

/// The author and committer of new commits: `SPARSE_AUTHOR_NAME`/`SPARSE_AUTHOR_EMAIL`, else
/// git's `GIT_AUTHOR_NAME`/`GIT_AUTHOR_EMAIL`, else the user name; the time is now, or
/// `SOURCE_DATE_EPOCH` for reproducible stores.
fn signature() -> gix::actor::Signature {
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    let name = var(&["SPARSE_AUTHOR_NAME", "GIT_AUTHOR_NAME", "USER"]).unwrap_or_else(|| "sparse".into());
    let email = var(&["SPARSE_AUTHOR_EMAIL", "GIT_AUTHOR_EMAIL"]).unwrap_or_else(|| format!("{name}@localhost"));
    let seconds = var(&["SOURCE_DATE_EPOCH"])
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    gix::actor::Signature {
        name: name.into(),
        email: email.into(),
        time: gix::date::Time { seconds, offset: 0 },
    }
}
