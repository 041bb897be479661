//! `log` and `show`: history of names, and what one revision holds.

use serde::Serialize;

use super::rev::{self, HEADS};
use super::Repository;
use crate::model::snapshot::{self, Snapshot};
use crate::store::history::{self, CommitInfo};

#[derive(Debug, Serialize)]
pub struct Entry {
    pub commit: String,
    pub names: Vec<String>,
    pub parents: Vec<String>,
    pub base: Option<String>,
    /// The lossy tier, when the snapshot stores some tensors lossy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lossy: Option<String>,
    pub author: String,
    pub time: i64,
    pub message: String,
    pub raw_bytes: u64,
    /// Size of the snapshot's own encoding (coded chunks and verbatim files).
    pub coded_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct FileRow {
    pub path: String,
    pub size: u64,
    /// `git` for files kept verbatim, else the manifest kind (`safetensors`, `file`).
    pub kind: String,
    pub stored_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct TensorRow {
    pub file: String,
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub codec: String,
    pub parent: Option<String>,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Show {
    #[serde(flatten)]
    pub entry: Entry,
    pub files: Vec<FileRow>,
    pub tensors: Vec<TensorRow>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Rev(#[from] rev::Error),
    #[error(transparent)]
    History(#[from] history::Error),
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
}

impl Repository {
    /// Commits of `name` (or of every name), newest first.
    pub fn log(&self, name: Option<&str>) -> Result<Vec<Entry>, Error> {
        let heads = self.history.refs(HEADS)?;
        let tips: Vec<_> = match name {
            Some(n) => vec![self.resolve(n)?],
            None => heads.iter().map(|(_, id)| *id).collect(),
        };
        let mut seen = std::collections::HashSet::new();
        let mut infos = Vec::new();
        let mut todo = tips;
        while let Some(id) = todo.pop() {
            if seen.insert(id) {
                let info = self.history.commit_info(id)?;
                todo.extend(info.parents.iter().copied());
                infos.push(info);
            }
        }
        topological(infos)
            .into_iter()
            .map(|info| self.entry(info, &heads))
            .collect()
    }

    fn entry(&self, info: CommitInfo, heads: &[(String, history::ObjectId)]) -> Result<Entry, Error> {
        let snap = Snapshot::load(&self.history, info.tree)?;
        Ok(Entry {
            commit: info.id.to_string(),
            names: heads
                .iter()
                .filter(|(_, id)| *id == info.id)
                .map(|(n, _)| n.clone())
                .collect(),
            parents: info.parents.iter().map(|p| p.to_string()).collect(),
            base: snap.meta.base.clone(),
            lossy: snap.meta.lossy.clone(),
            author: info.author,
            time: info.time,
            message: info.message.trim_end().to_string(),
            raw_bytes: snap.raw_bytes(),
            coded_bytes: snap.stored_bytes()
                + snap
                    .meta
                    .files
                    .iter()
                    .filter(|f| !f.manifest)
                    .map(|f| f.size)
                    .sum::<u64>(),
        })
    }

    /// One revision: its commit, files and tensors with codec and sizes.
    pub fn show(&self, rev: &str) -> Result<Show, Error> {
        let id = self.resolve(rev)?;
        let info = self.history.commit_info(id)?;
        let snap = Snapshot::load(&self.history, info.tree)?;
        let heads = self.history.refs(HEADS)?;
        let mut files = Vec::new();
        let mut tensors = Vec::new();
        for f in &snap.meta.files {
            let Some(m) = snap.manifests.get(&f.path).filter(|_| f.manifest) else {
                files.push(FileRow {
                    path: f.path.clone(),
                    size: f.size,
                    kind: "git".into(),
                    stored_bytes: f.size,
                });
                continue;
            };
            files.push(FileRow {
                path: f.path.clone(),
                size: f.size,
                kind: m.kind.clone(),
                stored_bytes: m.stored(),
            });
            for seg in &m.segments {
                if let Some(t) = &seg.tensor {
                    tensors.push(TensorRow {
                        file: f.path.clone(),
                        name: t.name.clone(),
                        dtype: t.dtype.clone(),
                        shape: t.shape.clone(),
                        codec: seg.codec_summary(),
                        parent: seg.parent.as_ref().map(|p| p.tensor.clone()),
                        raw_bytes: seg.len,
                        stored_bytes: seg.stored(),
                    });
                }
            }
        }
        Ok(Show {
            entry: self.entry(info, &heads)?,
            files,
            tensors,
        })
    }
}

/// Orders commits so that every commit comes before its parents (as git log does), the newest
/// first among those that are ready; commits made within one second keep their history order.
fn topological(infos: Vec<CommitInfo>) -> Vec<CommitInfo> {
    use std::collections::HashMap;
    let mut children: HashMap<history::ObjectId, usize> = HashMap::new();
    for info in &infos {
        for p in &info.parents {
            *children.entry(*p).or_default() += 1;
        }
    }
    let mut by_id: HashMap<history::ObjectId, CommitInfo> = infos.into_iter().map(|i| (i.id, i)).collect();
    let mut ready: Vec<history::ObjectId> = by_id.keys().filter(|id| !children.contains_key(*id)).copied().collect();
    let mut out = Vec::with_capacity(by_id.len());
    while !ready.is_empty() {
        // The newest ready commit next (ties by id, for a stable order).
        let (i, _) = ready
            .iter()
            .enumerate()
            .max_by_key(|(_, id)| (by_id[*id].time, std::cmp::Reverse(**id)))
            .expect("not empty");
        let info = by_id.remove(&ready.swap_remove(i)).expect("each commit once");
        for p in &info.parents {
            let left = children.get_mut(p).expect("counted above");
            *left -= 1;
            if *left == 0 && by_id.contains_key(p) {
                ready.push(*p);
            }
        }
        out.push(info);
    }
    out
}
