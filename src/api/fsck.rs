//! `fsck`: re-hash every blob, and check every reference of every snapshot reachable from a
//! name, a tag or the staging area: git objects, manifests, chunk blobs and delta parents.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use serde::Serialize;

use super::add::Staged;
use super::{progress, Repository};
use crate::model::snapshot::Snapshot;
use crate::store::cas::Key;
use crate::store::history::ObjectId;
use crate::store::index;

#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    /// Blobs re-hashed.
    pub objects: usize,
    /// Commits and staged snapshots checked.
    pub snapshots: usize,
    pub errors: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot list the blobs: {0}")]
    List(std::io::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
}

impl Repository {
    pub fn fsck(&self, progress: progress::Report<'_>) -> Result<Report, Error> {
        let mut errors = Vec::new();

        // 1. Every blob re-hashed.
        let cas = &self.cas;
        let keys = cas.keys().map_err(Error::List)?;
        let counter = progress::Counter::new(keys.len() as u64, progress);
        let mut bad: Vec<String> = keys
            .par_iter()
            .filter_map(|key| {
                counter.add(1);
                cas.get(key).err().map(|e| e.to_string())
            })
            .collect();
        bad.sort();
        errors.extend(bad);
        let present: HashSet<Key> = keys.iter().copied().collect();
        // The index agrees with the files: the sizes it records, the chunks it says are
        // stored whole.
        let index = self.index_read()?;
        let before = errors.len();
        for (key, recorded) in index.blobs()? {
            if !present.contains(&key) {
                errors.push(format!("index records blob {key}, which is missing"));
            } else if let Ok(sizes) = cas.sizes(&key) {
                if sizes != recorded {
                    errors.push(format!(
                        "index records blob {key} as {} bytes ({} decoded), its file holds {} ({})",
                        recorded.stored, recorded.decoded, sizes.stored, sizes.decoded
                    ));
                }
            }
        }
        for (chunk, (blob, _)) in index.full_chunks()? {
            if !present.contains(&blob) {
                errors.push(format!(
                    "index says chunk {chunk} is stored whole in blob {blob}, which is missing"
                ));
            }
        }
        if errors.len() > before {
            errors.push("the index disagrees with the blob files: `sparse fsck --rebuild-index` rebuilds it".into());
        }

        // 2. Every snapshot reachable from refs (through parents and bases) and the staging area.
        let mut todo: Vec<(String, ObjectId)> = Vec::new();
        for prefix in [super::rev::HEADS, super::rev::TAGS] {
            match self.history.refs(prefix) {
                Ok(refs) => todo.extend(refs.into_iter().map(|(n, id)| (format!("{prefix}{n}"), id))),
                Err(e) => errors.push(e.to_string()),
            }
        }
        let mut snapshots: HashMap<ObjectId, Option<Snapshot>> = HashMap::new();
        let mut checked = 0;
        while let Some((from, id)) = todo.pop() {
            if snapshots.contains_key(&id) {
                continue;
            }
            let snap = match self.check_commit(id, &present, &mut errors) {
                Ok((snap, parents)) => {
                    todo.extend(parents.into_iter().map(|p| (format!("parent of {id}"), p)));
                    if let Ok(Some(base)) = snap.base() {
                        todo.push((format!("base of {id}"), base));
                    }
                    Some(snap)
                }
                Err(e) => {
                    errors.push(format!("commit {id} ({from}): {e}"));
                    None
                }
            };
            checked += 1;
            snapshots.insert(id, snap);
        }
        for (name, record) in index.staged()? {
            checked += 1;
            let staged: Result<Staged, _> = serde_json::from_slice(&record);
            let tree = staged.ok().and_then(|s| ObjectId::from_hex(s.tree.as_bytes()).ok());
            match tree.map(|t| self.check_tree(t, &present, &mut errors)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => errors.push(format!("staged {name}: {e}")),
                None => errors.push(format!(
                    "staged {name}: its staging record in the index is unreadable; add it again, \
                     or `sparse fsck --rebuild-index` drops it"
                )),
            }
        }

        // 3. Every delta parent exists in its snapshot's base with the same geometry.
        for (id, snap) in &snapshots {
            let Some(snap) = snap else { continue };
            let base = snap
                .base()
                .ok()
                .flatten()
                .and_then(|b| snapshots.get(&b))
                .and_then(Option::as_ref);
            for (path, m) in &snap.manifests {
                if let Some(r) = &m.records {
                    if base.and_then(|b| b.manifests.get(&r.base_file)).is_none() {
                        errors.push(format!(
                            "commit {id}: {path}: copies records of {:?}, which its base does not have",
                            r.base_file
                        ));
                    }
                }
                if let Some(t) = m.table.as_ref().filter(|t| t.added < t.rows) {
                    let parts = t.base_parts();
                    if parts.len() > crate::model::table::plan::MAX_SHARDS {
                        errors.push(format!(
                            "commit {id}: {path}: copies rows of {} base tables, more than {}",
                            parts.len(),
                            crate::model::table::plan::MAX_SHARDS
                        ));
                    }
                    for (from, rows) in parts {
                        match base.and_then(|b| b.manifests.get(from)) {
                            None => errors.push(format!(
                                "commit {id}: {path}: copies rows of {from:?}, which its base does not have"
                            )),
                            // A base table stored as rows records its count: it must agree.
                            Some(bm) => {
                                if let (Some(rows), Some(bt)) = (rows, &bm.table) {
                                    if bt.rows != rows {
                                        errors.push(format!(
                                            "commit {id}: {path}: counts {rows} rows in {from:?}, which has {}",
                                            bt.rows
                                        ));
                                    }
                                }
                            }
                        }
                    }
                }
                for seg in &m.segments {
                    let Some(p) = &seg.parent else { continue };
                    if let Some(at) = p.offset {
                        // A byte range: the base's file must hold it.
                        let size = base.and_then(|b| b.manifests.get(&p.file)).map(|pm| pm.size);
                        if size.is_none_or(|size| at.checked_add(seg.len).is_none_or(|end| end > size)) {
                            errors.push(format!(
                                "commit {id}: {path}: bytes {at}.. refer to {} bytes of {:?}, not in its base",
                                seg.len, p.file
                            ));
                        }
                        continue;
                    }
                    let found = base.and_then(|b| b.find(p)).map(|(pm, i)| &pm.segments[i]);
                    let fits = found.is_some_and(|ps| {
                        ps.len == seg.len && ps.chunk_size == seg.chunk_size && ps.width == seg.width
                    });
                    if !fits {
                        errors.push(format!(
                            "commit {id}: {path}: tensor {:?} refers to {:?} in {:?}, not in its base",
                            seg.tensor.as_ref().map(|t| t.name.as_str()).unwrap_or_default(),
                            p.tensor,
                            p.file
                        ));
                    }
                }
            }
        }

        Ok(Report {
            ok: errors.is_empty(),
            objects: keys.len(),
            snapshots: checked,
            errors,
        })
    }

    fn check_commit(
        &self,
        id: ObjectId,
        present: &HashSet<Key>,
        errors: &mut Vec<String>,
    ) -> Result<(Snapshot, Vec<ObjectId>), String> {
        self.history.verify(id).map_err(|e| e.to_string())?;
        let info = self.history.commit_info(id).map_err(|e| e.to_string())?;
        let snap = self.check_tree(info.tree, present, errors)?;
        Ok((snap, info.parents))
    }

    /// Loads a snapshot, verifies its git objects and that every chunk's blob is present.
    fn check_tree(&self, tree: ObjectId, present: &HashSet<Key>, errors: &mut Vec<String>) -> Result<Snapshot, String> {
        let snap = Snapshot::load(&self.history, tree).map_err(|e| e.to_string())?;
        for (path, id) in &snap.blobs {
            if let Err(e) = self.history.verify(*id) {
                errors.push(format!("tree {tree}: {path}: {e}"));
            }
        }
        for (path, m) in &snap.manifests {
            let pieces = m
                .records
                .as_ref()
                .map(|r| r.pieces)
                .or(m.table.as_ref().map(|t| t.pieces));
            if let Some(p) = pieces.filter(|p| !present.contains(p)) {
                errors.push(format!(
                    "tree {tree}: {path}: its piece table is blob {p}, which is missing"
                ));
            }
            for seg in &m.segments {
                for (i, chunk) in seg.chunks.iter().enumerate() {
                    if let Some(blob) = chunk.blob.filter(|b| !present.contains(b)) {
                        errors.push(format!(
                            "tree {tree}: {path}: chunk {i} needs blob {blob}, which is missing"
                        ));
                    }
                }
            }
        }
        Ok(snap)
    }
}
