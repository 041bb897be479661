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

use std::path::PathBuf;
use std::time::{Duration, Instant};

use redb::{Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition};

use super::cas::Key;
use super::Layout;

const BLOBS: TableDefinition<[u8; 32], (u64, u64)> = TableDefinition::new("blobs");
const STAGED: TableDefinition<&str, &[u8]> = TableDefinition::new("staged");
const FULL: TableDefinition<[u8; 32], [u8; 32]> = TableDefinition::new("full");

/// How long to wait for another process to close the index.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
#[error("index {path}: {message}")]
pub struct Error {
    pub path: PathBuf,
    pub message: String,
}

/// An open index; dropping it closes the database.
pub struct Index {
    db: Db,
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

impl Index {
    /// Creates the index with its tables (when the store is created).
    pub fn create(layout: &Layout) -> Result<Index, Error> {
        let path = layout.index();
        let db = Database::create(&path).map_err(|e| Error {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let txn = db.begin_write().map_err(|e| err(&path, e))?;
        txn.open_table(BLOBS).map_err(|e| err(&path, e))?;
        txn.open_table(STAGED).map_err(|e| err(&path, e))?;
        txn.open_table(FULL).map_err(|e| err(&path, e))?;
        txn.commit().map_err(|e| err(&path, e))?;
        Ok(Index {
            db: Db::Write(db),
            path,
        })
    }

    /// Opens the index for writing, waiting while another process has it open.
    pub fn open(layout: &Layout) -> Result<Index, Error> {
        let path = layout.index();
        let db = retry(&path, || Database::open(&path))?;
        Ok(Index {
            db: Db::Write(db),
            path,
        })
    }

    /// Opens the index for reading only; the file is not touched. An index left open by a
    /// killed process needs a repair first, which only a writer can do: then it is opened
    /// for writing instead.
    pub fn open_read(layout: &Layout) -> Result<Index, Error> {
        let path = layout.index();
        match retry(&path, || ReadOnlyDatabase::open(&path)) {
            Ok(db) => Ok(Index { db: Db::Read(db), path }),
            Err(_) => Index::open(layout),
        }
    }

    fn read(&self) -> Result<redb::ReadTransaction, Error> {
        match &self.db {
            Db::Write(db) => db.begin_read(),
            Db::Read(db) => db.begin_read(),
        }
        .map_err(|e| self.err(e))
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
        let Db::Write(db) = &self.db else {
            panic!("records are written through an index opened with Index::open");
        };
        let txn = db.begin_write().map_err(|e| self.err(e))?;
        {
            self.insert_blobs(&txn, blobs, full)?;
            let mut table = txn.open_table(STAGED).map_err(|e| self.err(e))?;
            table.insert(name, staged).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Removes the staging records of `names`, atomically: all or none.
    pub fn unstage(&self, names: &[&str]) -> Result<(), Error> {
        let Db::Write(db) = &self.db else {
            panic!("records are removed through an index opened with Index::open");
        };
        let txn = db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(STAGED).map_err(|e| self.err(e))?;
            for name in names {
                table.remove(*name).map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Writes blob sizes and chunks stored whole in transaction `txn`.
    fn insert_blobs(
        &self,
        txn: &redb::WriteTransaction,
        blobs: &[(Key, BlobSizes)],
        full: &[(Key, Key)],
    ) -> Result<(), Error> {
        let mut table = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
        for (key, sizes) in blobs {
            table
                .insert(key.0, (sizes.decoded, sizes.stored))
                .map_err(|e| self.err(e))?;
        }
        let mut table = txn.open_table(FULL).map_err(|e| self.err(e))?;
        for (chunk, blob) in full {
            table.insert(chunk.0, blob.0).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Records the sizes of blobs received from another store (push, fetch).
    pub fn add_blobs(&self, blobs: &[(Key, BlobSizes)], full: &[(Key, Key)]) -> Result<(), Error> {
        let Db::Write(db) = &self.db else {
            panic!("records are written through an index opened with Index::open");
        };
        let txn = db.begin_write().map_err(|e| self.err(e))?;
        {
            self.insert_blobs(&txn, blobs, full)?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Forgets blobs that were deleted (gc): their sizes and the chunks they held.
    pub fn forget(&self, keys: &[Key]) -> Result<(), Error> {
        let Db::Write(db) = &self.db else {
            panic!("records are written through an index opened with Index::open");
        };
        let txn = db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
            for key in keys {
                table.remove(key.0).map_err(|e| self.err(e))?;
            }
            let gone: std::collections::HashSet<[u8; 32]> = keys.iter().map(|k| k.0).collect();
            let mut table = txn.open_table(FULL).map_err(|e| self.err(e))?;
            table.retain(|_, blob| !gone.contains(&blob)).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Every staging record, by name.
    pub fn staged(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let txn = self.read()?;
        let table = txn.open_table(STAGED).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Every chunk stored `full` somewhere: its key (chunk hash and width) -> its blob and the
    /// blob's sizes.
    pub fn full_chunks(&self) -> Result<std::collections::HashMap<Key, (Key, BlobSizes)>, Error> {
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
    }

    /// The sizes recorded for `key`, if any.
    pub fn blob(&self, key: &Key) -> Result<Option<BlobSizes>, Error> {
        let txn = self.read()?;
        let table = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
        let row = table.get(key.0).map_err(|e| self.err(e))?;
        Ok(row.map(|v| {
            let (decoded, stored) = v.value();
            BlobSizes { decoded, stored }
        }))
    }

    /// Every recorded blob.
    pub fn blobs(&self) -> Result<Vec<(Key, BlobSizes)>, Error> {
        let txn = self.read()?;
        let table = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let (decoded, stored) = v.value();
            out.push((Key(k.value()), BlobSizes { decoded, stored }));
        }
        Ok(out)
    }
}

fn err(path: &std::path::Path, e: impl Into<redb::Error>) -> Error {
    Error {
        path: path.to_owned(),
        message: e.into().to_string(),
    }
}

/// Calls `open` until the database is not held by another process, for up to [`OPEN_TIMEOUT`].
fn retry<T>(path: &std::path::Path, open: impl Fn() -> Result<T, redb::DatabaseError>) -> Result<T, Error> {
    let started = Instant::now();
    loop {
        match open() {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < OPEN_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(Error {
                    path: path.to_owned(),
                    message: e.to_string(),
                })
            }
        }
    }
}
