//! The redb index `sparse/index.redb` (docs/FORMAT.md, "Index"):
//!
//! | table    | key                  | value                                   |
//! |----------|----------------------|-----------------------------------------|
//! | `blobs`  | blob key (32 bytes)  | (decoded length, stored file size), u64 |
//! | `staged` | model name (str)     | the staged snapshot, JSON bytes         |
//! | `full`   | blake3 of (chunk hash, element width u32 LE), 32 bytes | blob key (32 bytes) of a `full` coding of that chunk |
//!
//! The blob files are the truth about what is stored; `blobs` records what committed or staged
//! snapshots use and how big it is, written in the same transaction as the staging record.
//! `full` lets `add` store a chunk that exists anywhere in the store, whatever its tensor, file
//! or model, as a reference to the blob that already holds it, without coding it again.
//! redb allows one process at a time, so the index is opened late and closed early.
//!
//! A damaged file (a flipped bit, a torn page) can make redb panic where it trusts its own
//! pages; every call into it here runs under [`guarded`], which turns such a panic into an
//! [`Error`] that says the index is damaged and how to rebuild it ([`Index::rebuild`]).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition};

use super::cas::Key;
use super::Layout;

const BLOBS: TableDefinition<[u8; 32], (u64, u64)> = TableDefinition::new("blobs");
const STAGED: TableDefinition<&str, &[u8]> = TableDefinition::new("staged");
const FULL: TableDefinition<[u8; 32], [u8; 32]> = TableDefinition::new("full");

/// How long to wait for another process to close the index, unless `SPARSE_INDEX_WAIT`
/// (seconds) says otherwise.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

fn open_timeout() -> Duration {
    std::env::var("SPARSE_INDEX_WAIT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(OPEN_TIMEOUT, Duration::from_secs)
}

#[derive(Debug, thiserror::Error)]
#[error("index {path}: {message}")]
pub struct Error {
    pub path: PathBuf,
    pub message: String,
    /// The file is damaged; [`Index::rebuild`] (`sparse fsck --rebuild-index`) makes it anew.
    pub damaged: bool,
}

/// An open index; dropping it closes the database.
pub struct Index {
    /// `Some` until dropped: [`Drop`] closes it under [`guarded`].
    db: Option<Db>,
    path: PathBuf,
}

enum Db {
    Write(Database),
    Read(ReadOnlyDatabase),
}

/// Sizes recorded for one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobSizes {
    pub decoded: u64,
    pub stored: u64,
}

/// Every row of an index, for [`Index::rebuild`].
#[derive(Debug, Default)]
pub struct Rows {
    pub blobs: Vec<(Key, BlobSizes)>,
    pub full: Vec<(Key, Key)>,
    pub staged: Vec<(String, Vec<u8>)>,
}

impl Index {
    /// Creates the index with its tables (when the store is created).
    pub fn create(layout: &Layout) -> Result<Index, Error> {
        Index::create_at(layout.index(), &Rows::default())
    }

    /// Creates an index at `path` holding `rows`.
    fn create_at(path: PathBuf, rows: &Rows) -> Result<Index, Error> {
        let db = guarded(&path, || {
            let db = Database::create(&path).map_err(|e| err(&path, e))?;
            let txn = db.begin_write().map_err(|e| err(&path, e))?;
            insert_blobs(&path, &txn, &rows.blobs, &rows.full)?;
            {
                let mut table = txn.open_table(STAGED).map_err(|e| err(&path, e))?;
                for (name, record) in &rows.staged {
                    table
                        .insert(name.as_str(), record.as_slice())
                        .map_err(|e| err(&path, e))?;
                }
            }
            txn.commit().map_err(|e| err(&path, e))?;
            Ok(db)
        })?;
        Ok(Index {
            db: Some(Db::Write(db)),
            path,
        })
    }

    /// Replaces the index of `layout` by a new one holding `rows`: written beside it in
    /// `sparse/tmp`, flushed, then renamed over it, so that the old file stays whole until the
    /// new one is. The caller holds the store's write lock.
    pub fn rebuild(layout: &Layout, rows: &Rows) -> Result<(), Error> {
        let path = layout.index();
        let fresh = layout.tmp().join("index.redb.new");
        let io = |what: &str, e: std::io::Error| Error {
            path: fresh.clone(),
            message: format!("{what}: {e}"),
            damaged: false,
        };
        match std::fs::remove_file(&fresh) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove an earlier attempt", e)),
        }
        let written = Index::create_at(fresh.clone(), rows).map(drop).and_then(|()| {
            let file = std::fs::File::open(&fresh).map_err(|e| io("open", e))?;
            file.sync_all().map_err(|e| io("flush", e))?;
            std::fs::rename(&fresh, &path).map_err(|e| io(&format!("rename to {}", path.display()), e))?;
            super::sync_dir(&layout.root).map_err(|e| io("flush the store", e))
        });
        if written.is_err() {
            let _ = std::fs::remove_file(&fresh);
        }
        written
    }

    /// Opens the index for writing, waiting while another process has it open.
    pub fn open(layout: &Layout) -> Result<Index, Error> {
        let path = layout.index();
        present(&path)?;
        let db = guarded(&path, || retry(|| Database::open(&path)).map_err(|e| err(&path, e)))?;
        Ok(Index {
            db: Some(Db::Write(db)),
            path,
        })
    }

    /// Opens the index for reading only; the file is not touched. An index left open by a
    /// killed process needs a repair first, which only a writer can do: then it is opened
    /// for writing instead.
    pub fn open_read(layout: &Layout) -> Result<Index, Error> {
        let path = layout.index();
        present(&path)?;
        match guarded(&path, || Ok(retry(|| ReadOnlyDatabase::open(&path))))? {
            Ok(db) => Ok(Index {
                db: Some(Db::Read(db)),
                path,
            }),
            Err(redb::DatabaseError::RepairAborted) => Index::open(layout),
            Err(e) => Err(err(&path, e)),
        }
    }

    fn read(&self) -> Result<redb::ReadTransaction, Error> {
        match self.db.as_ref().expect("open until dropped") {
            Db::Write(db) => db.begin_read(),
            Db::Read(db) => db.begin_read(),
        }
        .map_err(|e| self.err(e))
    }

    /// Runs `f` in one write transaction, committed if `f` succeeds.
    fn write(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<(), Error>) -> Result<(), Error> {
        let Some(Db::Write(db)) = &self.db else {
            panic!("records are written through an index opened with Index::open");
        };
        guarded(&self.path, || {
            let txn = db.begin_write().map_err(|e| self.err(e))?;
            f(&txn)?;
            txn.commit().map_err(|e| self.err(e))
        })
    }

    fn err(&self, e: impl Into<redb::Error>) -> Error {
        err(&self.path, e)
    }

    /// Records `blobs` and the chunks stored `full` (their key, blob), and sets the staging
    /// record of `name`, atomically.
    pub fn record(
        &self,
        blobs: &[(Key, BlobSizes)],
        full: &[(Key, Key)],
        name: &str,
        staged: &[u8],
    ) -> Result<(), Error> {
        self.write(|txn| {
            insert_blobs(&self.path, txn, blobs, full)?;
            let mut table = txn.open_table(STAGED).map_err(|e| self.err(e))?;
            table.insert(name, staged).map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    /// Removes the staging records of `names`, atomically: all or none.
    pub fn unstage(&self, names: &[&str]) -> Result<(), Error> {
        self.write(|txn| {
            let mut table = txn.open_table(STAGED).map_err(|e| self.err(e))?;
            for name in names {
                table.remove(*name).map_err(|e| self.err(e))?;
            }
            Ok(())
        })
    }

    /// Records the sizes of blobs received from another store (push, fetch).
    pub fn add_blobs(&self, blobs: &[(Key, BlobSizes)], full: &[(Key, Key)]) -> Result<(), Error> {
        self.write(|txn| insert_blobs(&self.path, txn, blobs, full))
    }

    /// Forgets blobs that were deleted (gc): their sizes and the chunks they held.
    pub fn forget(&self, keys: &[Key]) -> Result<(), Error> {
        self.write(|txn| {
            let mut table = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
            for key in keys {
                table.remove(key.0).map_err(|e| self.err(e))?;
            }
            let gone: std::collections::HashSet<[u8; 32]> = keys.iter().map(|k| k.0).collect();
            let mut table = txn.open_table(FULL).map_err(|e| self.err(e))?;
            table.retain(|_, blob| !gone.contains(&blob)).map_err(|e| self.err(e))
        })
    }

    /// Every staging record, by name.
    pub fn staged(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        guarded(&self.path, || {
            let txn = self.read()?;
            let table = txn.open_table(STAGED).map_err(|e| self.err(e))?;
            let mut out = Vec::new();
            for row in table.iter().map_err(|e| self.err(e))? {
                let (k, v) = row.map_err(|e| self.err(e))?;
                out.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// Every chunk stored `full` somewhere: its key (chunk hash and width) -> its blob and the
    /// blob's sizes.
    pub fn full_chunks(&self) -> Result<std::collections::HashMap<Key, (Key, BlobSizes)>, Error> {
        guarded(&self.path, || {
            let txn = self.read()?;
            let full = match txn.open_table(FULL) {
                Ok(t) => t,
                // A store made before the table existed has none yet.
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Default::default()),
                Err(e) => return Err(self.err(e)),
            };
            let blobs = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
            let mut out = std::collections::HashMap::new();
            for row in full.iter().map_err(|e| self.err(e))? {
                let (chunk, blob) = row.map_err(|e| self.err(e))?;
                let blob = blob.value();
                if let Some(sizes) = blobs.get(blob).map_err(|e| self.err(e))? {
                    let (decoded, stored) = sizes.value();
                    out.insert(Key(chunk.value()), (Key(blob), BlobSizes { decoded, stored }));
                }
            }
            Ok(out)
        })
    }

    /// The sizes recorded for `key`, if any.
    pub fn blob(&self, key: &Key) -> Result<Option<BlobSizes>, Error> {
        guarded(&self.path, || {
            let txn = self.read()?;
            let table = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
            let row = table.get(key.0).map_err(|e| self.err(e))?;
            Ok(row.map(|v| {
                let (decoded, stored) = v.value();
                BlobSizes { decoded, stored }
            }))
        })
    }

    /// Every recorded blob.
    pub fn blobs(&self) -> Result<Vec<(Key, BlobSizes)>, Error> {
        guarded(&self.path, || {
            let txn = self.read()?;
            let table = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
            let mut out = Vec::new();
            for row in table.iter().map_err(|e| self.err(e))? {
                let (k, v) = row.map_err(|e| self.err(e))?;
                let (decoded, stored) = v.value();
                out.push((Key(k.value()), BlobSizes { decoded, stored }));
            }
            Ok(out)
        })
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        // Closing writes to the file; a damaged one can make that panic too.
        let db = self.db.take();
        let _ = guarded(&self.path, || {
            drop(db);
            Ok(())
        });
    }
}

/// Writes blob sizes and chunks stored whole in transaction `txn`.
fn insert_blobs(
    path: &Path,
    txn: &redb::WriteTransaction,
    blobs: &[(Key, BlobSizes)],
    full: &[(Key, Key)],
) -> Result<(), Error> {
    let mut table = txn.open_table(BLOBS).map_err(|e| err(path, e))?;
    for (key, sizes) in blobs {
        table
            .insert(key.0, (sizes.decoded, sizes.stored))
            .map_err(|e| err(path, e))?;
    }
    let mut table = txn.open_table(FULL).map_err(|e| err(path, e))?;
    for (chunk, blob) in full {
        table.insert(chunk.0, blob.0).map_err(|e| err(path, e))?;
    }
    Ok(())
}

/// What to do about a damaged index, said with the error.
const REBUILD: &str =
    "`sparse fsck --rebuild-index` rebuilds it from the blobs and manifests, keeping the staged names it can still read";

fn err(path: &Path, e: impl Into<redb::Error>) -> Error {
    let e = e.into();
    // Not a redb file at all (empty, or another magic number) is damage too.
    let damaged = match &e {
        redb::Error::Corrupted(_) => true,
        redb::Error::Io(io) => io.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    };
    Error {
        path: path.to_owned(),
        message: if damaged {
            format!("{e}; {REBUILD}")
        } else if matches!(e, redb::Error::DatabaseAlreadyOpen) {
            format!("another process has held it open for {} s", open_timeout().as_secs())
        } else {
            e.to_string()
        },
        damaged,
    }
}

thread_local! {
    /// Set while [`guarded`] runs: a panic then is reported as an error, not printed.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, a call into redb on the file at `path`, turning a panic inside it into an error
/// that says the file is damaged. The panic hook stays quiet for such a panic; any other
/// panic is printed as before.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let outer = GUARDED.with(|g| g.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    result.unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "an inconsistent page".into());
        Err(Error {
            path: path.to_owned(),
            message: format!("the file is damaged ({why}); {REBUILD}"),
            damaged: true,
        })
    })
}

/// An error saying how to make the index anew, unless its file exists.
fn present(path: &Path) -> Result<(), Error> {
    match path.try_exists() {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error {
            path: path.to_owned(),
            message: format!("missing; {REBUILD}"),
            damaged: true,
        }),
        Err(e) => Err(Error {
            path: path.to_owned(),
            message: e.to_string(),
            damaged: false,
        }),
    }
}

/// Calls `open` until the database is not held by another process, for up to [`open_timeout`].
fn retry<T>(open: impl Fn() -> Result<T, redb::DatabaseError>) -> Result<T, redb::DatabaseError> {
    let started = Instant::now();
    let timeout = open_timeout();
    loop {
        match open() {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(20));
            }
            opened => return opened,
        }
    }
}
