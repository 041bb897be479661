//! `gc`: delete the blobs and git objects that no name, tag or staged snapshot reaches
//! ([`Repository::reachable`]). Runs under the write lock, so an `add` or `commit` in progress
//! finishes before gc looks, and its blobs are reachable by then.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{reach, Repository};
use crate::store::copies::Copies;
use crate::store::history::ObjectId;
use crate::store::{history, index, lock};

/// Files in `sparse/tmp` older than this belong to processes that died.
const STALE_TMP: Duration = Duration::from_secs(3600);

#[derive(Debug, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub blobs_kept: usize,
    pub blobs_removed: usize,
    /// Bytes of the blob files removed (or that would be).
    pub blob_bytes: u64,
    pub objects_removed: usize,
    pub object_bytes: u64,
    /// Leftover temporary files of processes that died.
    pub tmp_removed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Lock(#[from] lock::Error),
    #[error("gc deleted nothing: {0}")]
    Reach(#[from] reach::Error),
    #[error(transparent)]
    History(#[from] history::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl Repository {
    /// Deletes what nothing reaches; with `dry_run`, only counts it.
    pub fn gc(&self, dry_run: bool) -> Result<Report, Error> {
        let _lock = self.lock()?;
        let reach = self.reachable()?;
        let io = |path: std::path::PathBuf| move |source| Error::Io { path, source };

        let mut report = Report {
            dry_run,
            blobs_kept: 0,
            blobs_removed: 0,
            blob_bytes: 0,
            objects_removed: 0,
            object_bytes: 0,
            tmp_removed: 0,
        };
        let mut removed = Vec::new();
        for key in self.cas.keys().map_err(io(self.layout.cas()))? {
            if reach.blobs.contains(&key) {
                report.blobs_kept += 1;
                continue;
            }
            let path = self.cas.path(&key);
            report.blob_bytes += std::fs::metadata(&path).map_err(io(path.clone()))?.len();
            report.blobs_removed += 1;
            if !dry_run {
                self.cas.remove(&key).map_err(io(path))?;
                removed.push(key);
            }
        }
        if !removed.is_empty() {
            self.index()?.forget(&removed)?;
        }
        for id in self.history.loose_objects()? {
            if reach.objects.contains(&id) {
                continue;
            }
            report.objects_removed += 1;
            report.object_bytes += self.history.loose_size(id)?;
            if !dry_run {
                self.history.remove_loose(id)?;
            }
        }
        if !dry_run {
            let copies = Copies::new(&self.layout);
            let reachable =
                |tree: &str| ObjectId::from_hex(tree.as_bytes()).is_ok_and(|id| reach.objects.contains(&id));
            copies.prune(reachable).map_err(io(self.layout.copies()))?;
        }
        let tmp = self.layout.tmp();
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            let now = SystemTime::now();
            for entry in entries.flatten() {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_TMP);
                if old {
                    report.tmp_removed += 1;
                    if !dry_run {
                        std::fs::remove_file(entry.path()).map_err(io(entry.path()))?;
                    }
                }
            }
        }
        Ok(report)
    }
}
