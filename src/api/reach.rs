//! What the store's names reach: every commit reachable from a name, a tag or the staging area
//! through history parents and delta bases, the git objects of their snapshots, and the blobs
//! their manifests use. `gc` keeps exactly this.

use std::collections::HashSet;

use super::add::Staged;
use super::rev::{HEADS, REMOTES, TAGS};
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
    #[error("snapshot {tree} ({from}): {source}")]
    Snapshot {
        tree: ObjectId,
        from: String,
        source: Box<snapshot::Error>,
    },
    #[error(
        "staged {name}: unreadable staging record: {why}; add it again, or `sparse fsck --rebuild-index` drops it"
    )]
    Staged { name: String, why: String },
}

/// Everything reachable, by kind.
#[derive(Debug, Default)]
pub struct Reachable {
    pub commits: HashSet<ObjectId>,
    /// Git objects: commits, trees, and the files and manifests in them.
    pub objects: HashSet<ObjectId>,
    pub blobs: HashSet<Key>,
    /// Chunks stored whole, as the index's `full` rows ([`crate::model::manifest::Manifest::full_chunks`]).
    pub full: HashSet<(Key, Key)>,
}

impl Repository {
    /// Walks every name, tag, remote-tracking name and staged snapshot. Fails rather than
    /// guess when anything on the way cannot be read, so that nothing is ever taken for
    /// unreachable by mistake.
    pub fn reachable(&self) -> Result<Reachable, Error> {
        self.reachable_with(&self.index_read()?.staged()?)
    }

    /// [`Repository::reachable`], with `staged` (name, staging record) for the staging area.
    pub fn reachable_with(&self, staged: &[(String, Vec<u8>)]) -> Result<Reachable, Error> {
        let mut todo: Vec<(ObjectId, String)> = Vec::new();
        for prefix in [HEADS, TAGS, REMOTES] {
            todo.extend(
                self.history
                    .refs(prefix)?
                    .into_iter()
                    .map(|(name, id)| (id, format!("{prefix}{name}"))),
            );
        }
        let mut reach = Reachable::default();
        for (name, record) in staged {
            todo.extend(self.visit_staged(name, record, &mut reach)?);
        }
        self.walk(todo, &mut reach)?;
        Ok(reach)
    }

    /// What the staged snapshot `record` of `name` reaches: its snapshot, and its parent and
    /// delta base with their history.
    pub fn reachable_staged(&self, name: &str, record: &[u8]) -> Result<Reachable, Error> {
        let mut reach = Reachable::default();
        let roots = self.visit_staged(name, record, &mut reach)?;
        self.walk(roots, &mut reach)?;
        Ok(reach)
    }

    /// Adds the staged snapshot's git objects and blobs; returns the commits it leads to (its
    /// parent, its delta base).
    fn visit_staged(&self, name: &str, record: &[u8], reach: &mut Reachable) -> Result<Vec<(ObjectId, String)>, Error> {
        let bad = |why: String| Error::Staged {
            name: name.to_string(),
            why,
        };
        let staged: Staged = serde_json::from_slice(record).map_err(|e| bad(e.to_string()))?;
        let hex = |h: &str| ObjectId::from_hex(h.as_bytes()).map_err(|e| bad(e.to_string()));
        let mut roots = Vec::new();
        if let Some(parent) = &staged.parent {
            roots.push((hex(parent)?, format!("parent of staged {name}")));
        }
        if let Some(base) = self.visit_tree(hex(&staged.tree)?, &format!("staged {name}"), reach)? {
            roots.push((base, format!("base of staged {name}")));
        }
        Ok(roots)
    }

    /// What the commits `roots` (commit, where it came from) reach through history parents
    /// and delta bases: what a push or fetch of those commits must send.
    pub fn reachable_from(&self, roots: Vec<(ObjectId, String)>) -> Result<Reachable, Error> {
        let mut reach = Reachable::default();
        self.walk(roots, &mut reach)?;
        Ok(reach)
    }

    fn walk(&self, mut todo: Vec<(ObjectId, String)>, reach: &mut Reachable) -> Result<(), Error> {
        while let Some((id, from)) = todo.pop() {
            if !reach.commits.insert(id) {
                continue;
            }
            reach.objects.insert(id);
            let info = self.history.commit_info(id)?;
            todo.extend(info.parents.iter().map(|p| (*p, format!("parent of {id}"))));
            if let Some(base) = self.visit_tree(info.tree, &from, reach)? {
                todo.push((base, format!("base of {id}")));
            }
        }
        Ok(())
    }

    /// Adds a snapshot's git objects and blobs; returns its delta base.
    fn visit_tree(&self, tree: ObjectId, from: &str, reach: &mut Reachable) -> Result<Option<ObjectId>, Error> {
        if reach.objects.contains(&tree) {
            // Its objects and blobs are in already; only its base is needed again.
            return self.snapshot_at(tree, from)?.base().map_err(|source| Error::Snapshot {
                tree,
                from: from.to_string(),
                source: Box::new(source),
            });
        }
        reach.objects.extend(self.history.subtrees(tree)?);
        reach
            .objects
            .extend(self.history.tree_files(tree)?.into_iter().map(|(_, id)| id));
        let snap = self.snapshot_at(tree, from)?;
        for m in snap.manifests.values() {
            reach.blobs.extend(m.blobs());
            reach.full.extend(m.full_chunks());
        }
        snap.base().map_err(|source| Error::Snapshot {
            tree,
            from: from.to_string(),
            source: Box::new(source),
        })
    }

    fn snapshot_at(&self, tree: ObjectId, from: &str) -> Result<Snapshot, Error> {
        Snapshot::load(&self.history, tree).map_err(|source| Error::Snapshot {
            tree,
            from: from.to_string(),
            source: Box::new(source),
        })
    }
}
