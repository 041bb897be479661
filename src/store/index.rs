//! The redb index `sparse/index.redb` (docs/FORMAT.md, "Index"):
//!
//! | table    | key                  | value                                   |
//! |----------|----------------------|-----------------------------------------|
//! | `blobs`  | blob key (32 bytes)  | (decoded length, stored file size), u64 |
//! | `staged` | model name (str)     | the staged snapshot, JSON bytes         |
//!
//! The blob files are the truth about what is stored; `blobs` records what committed or staged
//! snapshots use and how big it is, written in the same transaction as the staging record.
//! redb allows one process at a time, so the index is opened late and closed early.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::cas::Key;
use super::Layout;

const BLOBS: TableDefinition<[u8; 32], (u64, u64)> = TableDefinition::new("blobs");
const STAGED: TableDefinition<&str, &[u8]> = TableDefinition::new("staged");

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
    db: Database,
    path: PathBuf,
}

/// Sizes recorded for one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobSizes {
    pub decoded: u64,
    pub stored: u64,
}

impl Index {
    /// Opens (or creates) the index, waiting while another process has it open.
    pub fn open(layout: &Layout) -> Result<Index, Error> {
        let path = layout.index();
        let started = Instant::now();
        loop {
            match Database::create(&path) {
                Ok(db) => {
                    let index = Index { db, path };
                    index.ensure_tables()?;
                    return Ok(index);
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < OPEN_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(Error {
                        path,
                        message: e.to_string(),
                    })
                }
            }
        }
    }

    fn err(&self, e: impl Into<redb::Error>) -> Error {
        Error {
            path: self.path.clone(),
            message: e.into().to_string(),
        }
    }

    fn ensure_tables(&self) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.open_table(BLOBS).map_err(|e| self.err(e))?;
        txn.open_table(STAGED).map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))
    }

    /// Records `blobs` and sets (or, with `None`, removes) the staging record of `name`, atomically.
    pub fn record(&self, blobs: &[(Key, BlobSizes)], name: &str, staged: Option<&[u8]>) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
            for (key, sizes) in blobs {
                table
                    .insert(key.0, (sizes.decoded, sizes.stored))
                    .map_err(|e| self.err(e))?;
            }
            let mut table = txn.open_table(STAGED).map_err(|e| self.err(e))?;
            match staged {
                Some(bytes) => table.insert(name, bytes).map(drop),
                None => table.remove(name).map(drop),
            }
            .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Every staging record, by name.
    pub fn staged(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(STAGED).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The sizes recorded for `key`, if any.
    pub fn blob(&self, key: &Key) -> Result<Option<BlobSizes>, Error> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
        let row = table.get(key.0).map_err(|e| self.err(e))?;
        Ok(row.map(|v| {
            let (decoded, stored) = v.value();
            BlobSizes { decoded, stored }
        }))
    }

    /// Every recorded blob.
    pub fn blobs(&self) -> Result<Vec<(Key, BlobSizes)>, Error> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
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
