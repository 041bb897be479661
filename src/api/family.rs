//! `family`: the models of the store as a tree of delta bases, with what each one costs: its
//! raw size, and the bytes of blobs it added that no model before it in the tree uses.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::rev::{HEADS, TAGS};
use super::Repository;
use crate::model::snapshot::{self, Snapshot};
use crate::store::cas::Key;
use crate::store::history::{self, ObjectId};
use crate::store::index;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    History(#[from] history::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
    #[error("commit {commit}: {source}")]
    Snapshot {
        commit: ObjectId,
        source: Box<snapshot::Error>,
    },
    #[error("no model named {0:?}")]
    Unknown(String),
}

/// One model: a commit that a name or tag points at, or that another model is coded against.
#[derive(Debug, Serialize)]
pub struct Member {
    /// The names and tags at this commit; empty for a base known only as a base.
    pub names: Vec<String>,
    pub commit: String,
    /// Its delta base (commit, hex).
    pub base: Option<String>,
    /// How many bases its chain has.
    pub depth: usize,
    pub raw_bytes: u64,
    /// Bytes of blobs this model uses that no model listed before it uses: what it costs.
    pub stored_bytes: u64,
    pub children: Vec<Member>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub roots: Vec<Member>,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
}

impl Repository {
    /// The tree of every model, or with `name`, of the family `name` belongs to.
    pub fn family(&self, name: Option<&str>) -> Result<Report, Error> {
        let mut names: HashMap<ObjectId, Vec<String>> = HashMap::new();
        for (prefix, label) in [(HEADS, ""), (TAGS, "tag ")] {
            for (n, id) in self.history.refs(prefix)? {
                names.entry(id).or_default().push(format!("{label}{n}"));
            }
        }
        // Every named commit and the chain of bases behind it.
        let mut snaps: HashMap<ObjectId, Snapshot> = HashMap::new();
        let mut todo: Vec<ObjectId> = names.keys().copied().collect();
        while let Some(id) = todo.pop() {
            if snaps.contains_key(&id) {
                continue;
            }
            let snap = self.snapshot_of(id)?;
            if let Some(base) = snap.base().map_err(|source| Error::Snapshot {
                commit: id,
                source: Box::new(source),
            })? {
                todo.push(base);
            }
            snaps.insert(id, snap);
        }
        let base_of = |id: &ObjectId| snaps[id].base().ok().flatten();
        let mut children: BTreeMap<ObjectId, Vec<ObjectId>> = BTreeMap::new();
        let mut roots = Vec::new();
        for id in snaps.keys() {
            match base_of(id) {
                Some(b) => children.entry(b).or_default().push(*id),
                None => roots.push(*id),
            }
        }
        if let Some(n) = name {
            let start = self
                .history
                .find_ref(&format!("{HEADS}{n}"))?
                .or(self.history.find_ref(&format!("{TAGS}{n}"))?)
                .ok_or_else(|| Error::Unknown(n.to_string()))?;
            let mut root = start;
            while let Some(b) = base_of(&root) {
                root = b;
            }
            roots = vec![root];
        }
        let label = |id: &ObjectId| {
            let mut v = names.get(id).cloned().unwrap_or_default();
            v.sort();
            v
        };
        roots.sort_by_key(|id| (label(id), *id));
        let sizes: HashMap<Key, u64> = self
            .index_read()?
            .blobs()?
            .into_iter()
            .map(|(k, s)| (k, s.stored))
            .collect();
        let mut counted = HashSet::new();
        let mut build = Builder {
            snaps: &snaps,
            children: &children,
            sizes: &sizes,
            counted: &mut counted,
            label: &label,
        };
        let roots: Vec<Member> = roots.iter().map(|r| build.member(*r, 0)).collect();
        let (raw_bytes, stored_bytes) = totals(&roots);
        Ok(Report {
            roots,
            raw_bytes,
            stored_bytes,
        })
    }

    fn snapshot_of(&self, commit: ObjectId) -> Result<Snapshot, Error> {
        let info = self.history.commit_info(commit)?;
        Snapshot::load(&self.history, info.tree).map_err(|source| Error::Snapshot {
            commit,
            source: Box::new(source),
        })
    }
}

struct Builder<'a> {
    snaps: &'a HashMap<ObjectId, Snapshot>,
    children: &'a BTreeMap<ObjectId, Vec<ObjectId>>,
    sizes: &'a HashMap<Key, u64>,
    counted: &'a mut HashSet<Key>,
    label: &'a dyn Fn(&ObjectId) -> Vec<String>,
}

impl Builder<'_> {
    /// A member and its subtree; a base is listed (and pays for its blobs) before its children.
    fn member(&mut self, id: ObjectId, depth: usize) -> Member {
        let snap = &self.snaps[&id];
        let mut stored = 0;
        for m in snap.manifests.values() {
            for blob in m.blobs() {
                if self.counted.insert(blob) {
                    stored += self.sizes.get(&blob).copied().unwrap_or(0);
                }
            }
        }
        let mut kids = self.children.get(&id).cloned().unwrap_or_default();
        kids.sort_by_key(|k| ((self.label)(k), *k));
        Member {
            names: (self.label)(&id),
            commit: id.to_string(),
            base: snap.base().ok().flatten().map(|b| b.to_string()),
            depth,
            raw_bytes: snap.raw_bytes(),
            stored_bytes: stored,
            children: kids.into_iter().map(|k| self.member(k, depth + 1)).collect(),
        }
    }
}

fn totals(members: &[Member]) -> (u64, u64) {
    members.iter().fold((0, 0), |(r, s), m| {
        let (cr, cs) = totals(&m.children);
        (r + m.raw_bytes + cr, s + m.stored_bytes + cs)
    })
}
