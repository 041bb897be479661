//! `fsck --rebuild-index`: a new index (`sparse/index.redb`) made from what the store holds.
//! The blob files and the manifests are the truth; the index caches their sizes (`blobs`) and
//! the chunks stored whole (`full`), and holds the staging records. A damaged index is
//! rebuilt from the blobs that the names, tags and staged snapshots reach, keeping every
//! staging record that can still be read; the old file stays whole until the new one replaces
//! it.

use serde::Serialize;

use super::{reach, Repository};
use crate::store::cas::Key;
use crate::store::index::{self, Index, Rows};
use crate::store::lock;

#[derive(Debug, Serialize)]
pub struct Report {
    /// Blob sizes recorded.
    pub blobs: usize,
    /// Chunks stored whole recorded.
    pub full: usize,
    /// Staged names kept.
    pub staged: Vec<String>,
    /// Staged names whose records could not be read: add them again.
    pub lost: Vec<String>,
    /// Why the old index's staging records could not be read at all, if they could not.
    pub unreadable: Option<String>,
    /// Blobs that snapshots name and the store lacks or cannot read (`fsck` lists them).
    pub missing: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Lock(#[from] lock::Error),
    #[error("cannot rebuild the index: {0}")]
    Reach(#[from] reach::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
}

impl Repository {
    /// Replaces the index with one rebuilt from the blobs and manifests.
    pub fn rebuild_index(&self) -> Result<Report, Error> {
        let _lock = self.lock()?;
        // The staging records the old index still yields; an index that cannot be read for
        // another reason than damage (another process holding it) is not replaced.
        let (records, unreadable) = match self.index_read().and_then(|index| index.staged()) {
            Ok(records) => (records, None),
            Err(e) if e.damaged => (Vec::new(), Some(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        let (staged, lost): (Vec<_>, Vec<_>) = records
            .into_iter()
            .partition(|(name, record)| self.usable(name, record));
        let reach = self.reachable_with(&staged)?;

        let mut rows = Rows {
            staged,
            ..Rows::default()
        };
        let mut missing = 0;
        let mut blobs: Vec<Key> = reach.blobs.into_iter().collect();
        blobs.sort();
        for key in blobs {
            // A blob that is missing, or whose header cannot be read, gets no row; fsck names it.
            match self.cas.sizes(&key) {
                Ok(sizes) => rows.blobs.push((key, sizes)),
                Err(_) => missing += 1,
            }
        }
        let present: std::collections::HashSet<Key> = rows.blobs.iter().map(|(k, _)| *k).collect();
        rows.full = reach
            .full
            .into_iter()
            .filter(|(_, blob)| present.contains(blob))
            .collect();
        rows.full.sort();
        Index::rebuild(&self.layout, &rows)?;
        Ok(Report {
            blobs: rows.blobs.len(),
            full: rows.full.len(),
            staged: rows.staged.into_iter().map(|(name, _)| name).collect(),
            lost: lost.into_iter().map(|(name, _)| name).collect(),
            unreadable,
            missing,
        })
    }

    /// Whether a staging record parses, and what it reaches (its snapshot, its parent and
    /// base with their history) can be read.
    fn usable(&self, name: &str, record: &[u8]) -> bool {
        self.reachable_staged(name, record).is_ok()
    }
}
