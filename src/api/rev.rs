//! Revisions: `NAME` (its tip), `NAME~N`, a tag, or a commit id prefix of 4 or more hex digits.

use std::collections::HashSet;

use super::Repository;
use crate::store::history::{self, ObjectId};

pub const HEADS: &str = "refs/heads/";
pub const TAGS: &str = "refs/tags/";
/// Remote-tracking names: `refs/remotes/REMOTE/NAME`, the tips a fetch last saw.
pub const REMOTES: &str = "refs/remotes/";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown revision {0:?}: no such name, tag or commit")]
    Unknown(String),
    #[error("revision {rev:?} is ambiguous: {candidates}")]
    Ambiguous { rev: String, candidates: String },
    #[error("revision {rev:?}: history has only {depth} commits before it")]
    TooFar { rev: String, depth: usize },
    #[error("revision {0:?}: bad ~N suffix")]
    BadSuffix(String),
    #[error(transparent)]
    History(#[from] history::Error),
}

/// What [`Repository::nested_name`] could not read.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error(transparent)]
    History(#[from] history::Error),
    #[error(transparent)]
    Index(#[from] crate::store::index::Error),
}

/// Checks a model or tag name: git's ref-name rules, as git would apply them to a branch.
pub fn check_name(name: &str) -> Result<(), String> {
    let full = format!("{HEADS}{name}");
    let valid: Result<&gix::refs::FullNameRef, _> = full.as_str().try_into();
    if name.is_empty() || valid.is_err() || name.contains('~') || name.contains('^') || name.contains(':') {
        return Err(format!(
            "{name:?} is not a valid name (use letters, digits, '.', '-', '_', '/')"
        ));
    }
    Ok(())
}

impl Repository {
    /// Why `name` cannot be a model name beside the names committed and staged, if it cannot:
    /// git keeps names as files, so `m` and `m/x` cannot both be.
    pub(super) fn nested_name(&self, name: &str) -> Result<Option<String>, NameError> {
        let below = |x: &str, y: &str| x.len() > y.len() && x.starts_with(y) && x.as_bytes()[y.len()] == b'/';
        let names = self.history.refs(HEADS)?.into_iter().map(|(n, _)| n);
        let staged = self.index_read()?.staged()?.into_iter().map(|(n, _)| n);
        Ok(names
            .chain(staged)
            .find(|other| below(name, other) || below(other, name))
            .map(|other| format!("{name:?} cannot be a name beside {other:?}: one would be a folder of the other")))
    }

    /// Resolves a revision to a commit.
    pub fn resolve(&self, rev: &str) -> Result<ObjectId, Error> {
        let (head, steps) = match rev.split_once('~') {
            Some((h, "")) => (h, 1),
            Some((h, n)) => (h, n.parse::<usize>().map_err(|_| Error::BadSuffix(rev.into()))?),
            None => (rev, 0),
        };
        let mut id = self.resolve_plain(head)?.ok_or_else(|| Error::Unknown(rev.into()))?;
        for depth in 0..steps {
            let info = self.history.commit_info(id)?;
            id = *info.parents.first().ok_or(Error::TooFar { rev: rev.into(), depth })?;
        }
        Ok(id)
    }

    fn resolve_plain(&self, name: &str) -> Result<Option<ObjectId>, Error> {
        if check_name(name).is_ok() {
            for prefix in [HEADS, TAGS] {
                if let Some(id) = self.history.find_ref(&format!("{prefix}{name}"))? {
                    return Ok(Some(id));
                }
            }
        }
        let hex = name.to_ascii_lowercase();
        if hex.len() < 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let matches: Vec<ObjectId> = self
            .all_commits()?
            .into_iter()
            .filter(|id| id.to_string().starts_with(&hex))
            .collect();
        match matches.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => Err(Error::Ambiguous {
                rev: name.into(),
                candidates: many
                    .iter()
                    .map(|id| id.to_string()[..12].to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Every commit reachable from a name or tag through history parents.
    pub fn all_commits(&self) -> Result<Vec<ObjectId>, Error> {
        let mut todo: Vec<ObjectId> = self.history.refs(HEADS)?.into_iter().map(|(_, id)| id).collect();
        todo.extend(self.history.refs(TAGS)?.into_iter().map(|(_, id)| id));
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        while let Some(id) = todo.pop() {
            if !seen.insert(id) {
                continue;
            }
            out.push(id);
            todo.extend(self.history.commit_info(id)?.parents);
        }
        Ok(out)
    }
}
