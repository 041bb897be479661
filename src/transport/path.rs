//! A remote that is another store on this machine. The caller holds its write lock (see
//! [`Remote::local_store`]) for the whole transfer.

use std::path::{Path, PathBuf};

use super::{Error, Kind, RefChange, Remote};
use crate::store::cas::{self, Cas, Key};
use crate::store::history::{Expect, History, ObjectId};
use crate::store::index::Index;
use crate::store::{Layout, DIR_NAME};

pub struct PathRemote {
    url: String,
    layout: Layout,
    cas: Cas,
}

/// The store directory `path` names: itself, or the `.sparse` in it; made absolute.
pub fn store_dir(path: &Path) -> Result<PathBuf, PathBuf> {
    let abs = std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned());
    for candidate in [abs.clone(), abs.join(DIR_NAME)] {
        if Layout::is_store(&candidate) {
            return Ok(candidate);
        }
    }
    Err(abs)
}

impl PathRemote {
    pub fn open(path: &Path) -> Result<PathRemote, Error> {
        let shown = path.display().to_string();
        let root = store_dir(path).map_err(|abs| {
            Error::new(
                &shown,
                "open the remote store",
                format!(
                    "{} is not a sparse store (no store there nor {DIR_NAME} in it)",
                    abs.display()
                ),
                Kind::Failed,
            )
        })?;
        let url = root.display().to_string();
        History::open(&root).map_err(|e| Error::new(&url, "open the remote store", e, Kind::Failed))?;
        let layout = Layout::new(&root);
        Ok(PathRemote {
            cas: Cas::new(&layout),
            layout,
            url,
        })
    }

    /// Whether git object `id` is here.
    pub fn has(&self, id: ObjectId) -> bool {
        self.history().is_ok_and(|h| h.has_object(id))
    }

    /// The store's git history, opened for one request (gix's handle stays on one thread).
    fn history(&self) -> Result<History, Error> {
        History::open(&self.layout.root).map_err(|e| self.fail("open the store's history", e))
    }

    fn fail(&self, what: impl Into<String>, why: impl ToString) -> Error {
        Error::new(&self.url, what, why, Kind::Failed)
    }
}

impl Remote for PathRemote {
    fn url(&self) -> &str {
        &self.url
    }

    fn local_store(&self) -> Option<PathBuf> {
        Some(self.layout.root.clone())
    }

    fn refs(&self) -> Result<Vec<(String, ObjectId)>, Error> {
        let history = self.history()?;
        let mut out = Vec::new();
        for prefix in ["refs/heads/", "refs/tags/"] {
            let refs = history.refs(prefix).map_err(|e| self.fail("list refs", e))?;
            out.extend(refs.into_iter().map(|(n, id)| (format!("{prefix}{n}"), id)));
        }
        Ok(out)
    }

    fn missing(&self, blobs: &[Key], objects: &[ObjectId]) -> Result<(Vec<Key>, Vec<ObjectId>), Error> {
        let history = self.history()?;
        Ok((
            blobs.iter().filter(|k| !self.cas.contains(k)).copied().collect(),
            objects.iter().filter(|id| !history.has_object(**id)).copied().collect(),
        ))
    }

    fn get_blob(&self, key: &Key) -> Result<Vec<u8>, Error> {
        std::fs::read(self.cas.path(key)).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                Kind::Missing
            } else {
                Kind::Failed
            };
            Error::new(&self.url, format!("read blob {key}"), e, kind)
        })
    }

    fn put_blob(&self, key: &Key, file: &[u8]) -> Result<(), Error> {
        self.cas.put_file_verified(*key, file).map(drop).map_err(|e| {
            // A blob that fails its checks is the sender's fault; one that cannot be
            // written (a full disk), this store's.
            let kind = match e {
                cas::Error::Corrupt { .. } => Kind::Refused,
                _ => Kind::Failed,
            };
            Error::new(&self.url, format!("store blob {key}"), e, kind)
        })
    }

    fn get_object(&self, id: ObjectId) -> Result<Vec<u8>, Error> {
        self.history()?
            .read_canonical(id)
            .map_err(|e| self.fail(format!("read object {id}"), e))
    }

    fn put_object(&self, id: ObjectId, canonical: &[u8]) -> Result<(), Error> {
        self.history()?.write_canonical(id, canonical).map(drop).map_err(|e| {
            let kind = if e.refused { Kind::Refused } else { Kind::Failed };
            Error::new(&self.url, format!("store object {id}"), e, kind)
        })
    }

    fn full_rows(&self, blobs: &[Key]) -> Result<Vec<(Key, Key)>, Error> {
        let wanted: std::collections::HashSet<&Key> = blobs.iter().collect();
        let index = Index::open_read(&self.layout).map_err(|e| self.fail("read the index", e))?;
        let rows = index.full_chunks().map_err(|e| self.fail("read the index", e))?;
        Ok(rows
            .into_iter()
            .filter(|(_, (blob, _))| wanted.contains(blob))
            .map(|(chunk, (blob, _))| (chunk, blob))
            .collect())
    }

    fn record(&self, blobs: &[Key], full: &[(Key, Key)]) -> Result<(), Error> {
        let recorded: std::collections::HashSet<Key> = {
            let index = Index::open_read(&self.layout).map_err(|e| self.fail("read the index", e))?;
            let rows = index.blobs().map_err(|e| self.fail("read the index", e))?;
            rows.into_iter().map(|(k, _)| k).collect()
        };
        let mut sizes = Vec::new();
        for key in blobs {
            if !recorded.contains(key) && self.cas.contains(key) {
                let found = self.cas.sizes(key).map_err(|e| self.fail("record blob sizes", e))?;
                sizes.push((*key, found));
            }
        }
        let present: std::collections::HashSet<Key> = sizes.iter().map(|(k, _)| *k).collect();
        let full: Vec<(Key, Key)> = full.iter().filter(|(_, b)| present.contains(b)).copied().collect();
        if sizes.is_empty() {
            return Ok(());
        }
        let index = Index::open(&self.layout).map_err(|e| self.fail("open the index", e))?;
        index
            .add_blobs(&sizes, &full)
            .map_err(|e| self.fail("record blob sizes", e))
    }

    fn set_ref(&self, change: &RefChange) -> Result<(), Error> {
        super::check_ref_name(&change.name).map_err(|e| Error::new(&self.url, "move a ref", e, Kind::Refused))?;
        let history = self.history()?;
        let now = history
            .find_ref(&change.name)
            .map_err(|e| self.fail(format!("read ref {}", change.name), e))?;
        if now != change.expect {
            return Err(Error::new(
                &self.url,
                format!("move ref {}", change.name),
                format!(
                    "it is at {} now, not {} (changed meanwhile)",
                    now.map_or("nothing".into(), |i| i.to_string()),
                    change.expect.map_or("nothing".into(), |i| i.to_string())
                ),
                Kind::Conflict,
            ));
        }
        let expect = change.expect.map_or(Expect::Absent, Expect::At);
        history
            .set_ref(&change.name, change.new, expect, "transfer")
            .map_err(|e| Error::new(&self.url, format!("move ref {}", change.name), e, Kind::Conflict))
    }
}
