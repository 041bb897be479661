//! Known copies: files outside the store that held the exact bytes of a snapshot's file when
//! the store last saw them, the source of an `add` or the output of a `checkout`.
//!
//! Decoding a fine-tune needs its base's bytes. When the base's file is still where it was
//! added or checked out, reading it is far cheaper than decoding the base from its blobs. A
//! copy is only a hint: it is used while its size, inode, modification and change times are
//! the ones recorded, and every chunk made from it is checked against the hash its manifest
//! records, so a copy that changed behind the store's back costs time, never correctness.
//! Each record is a small JSON file `sparse/copies/<blake3 of "TREE\0PATH">`; deleting the
//! directory loses nothing but speed. Records are local: they are never pushed or pulled.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Layout;

/// The known copies of a store.
#[derive(Debug, Clone)]
pub struct Copies {
    dir: PathBuf,
    tmp: PathBuf,
}

/// What identifies a file's state: if any of it changed, the copy is not used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stat {
    size: u64,
    dev: u64,
    ino: u64,
    mtime: i64,
    mtime_ns: i64,
    ctime: i64,
    ctime_ns: i64,
}

impl Stat {
    fn of(m: &fs::Metadata) -> Stat {
        Stat {
            size: m.len(),
            dev: m.dev(),
            ino: m.ino(),
            mtime: m.mtime(),
            mtime_ns: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_ns: m.ctime_nsec(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The snapshot tree (hex) and file this is a copy of.
    tree: String,
    file: String,
    path: PathBuf,
    stat: Stat,
}

impl Copies {
    pub fn new(layout: &Layout) -> Copies {
        Copies {
            dir: layout.copies(),
            tmp: layout.tmp(),
        }
    }

    fn record_path(&self, tree: &str, file: &str) -> PathBuf {
        let key = blake3::hash(format!("{tree}\0{file}").as_bytes());
        self.dir.join(key.to_hex().as_str())
    }

    /// Remembers that `path` now holds file `file` of snapshot tree `tree` (hex). The caller
    /// has just written or read all of it.
    /// A copy already known and unchanged is kept: it may be the one the user keeps, while
    /// this one is a scratch output about to be deleted.
    pub fn record(&self, tree: &str, file: &str, path: &Path) -> std::io::Result<()> {
        let path = std::path::absolute(path)?;
        let stat = Stat::of(&fs::metadata(&path)?);
        if self.open(tree, file, stat.size).is_some() {
            return Ok(());
        }
        let record = Record {
            tree: tree.to_string(),
            file: file.to_string(),
            path,
            stat,
        };
        let json = serde_json::to_vec(&record).expect("records serialize");
        fs::create_dir_all(&self.dir)?;
        fs::create_dir_all(&self.tmp)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.tmp)?;
        tmp.write_all(&json)?;
        tmp.persist(self.record_path(tree, file)).map_err(|e| e.error)?;
        Ok(())
    }

    /// Deletes the records of trees for which `keep` is false, and unreadable ones; returns
    /// how many were deleted.
    pub fn prune(&self, keep: impl Fn(&str) -> bool) -> std::io::Result<usize> {
        let entries = match fs::read_dir(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            entries => entries?,
        };
        let mut removed = 0;
        for entry in entries {
            let path = entry?.path();
            let record: Option<Record> = fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
            if !record.is_some_and(|r| keep(&r.tree)) {
                fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The copy of file `file` of snapshot tree `tree`, opened, if one is known, still has
    /// `size` bytes and has not changed since it was recorded.
    pub fn open(&self, tree: &str, file: &str, size: u64) -> Option<File> {
        let record: Record = serde_json::from_slice(&fs::read(self.record_path(tree, file)).ok()?).ok()?;
        let f = File::open(&record.path).ok()?;
        let stat = Stat::of(&f.metadata().ok()?);
        (stat == record.stat && stat.size == size).then_some(f)
    }
}
