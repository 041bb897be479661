//! `commit`: turn every staged snapshot into a commit on its name's ref.
//!
//! Crash safety: the commit object is written and flushed, then the ref moves with
//! compare-and-swap, then the staging record is removed. A process killed between the last two
//! steps leaves a staging record whose commit already exists; the next `commit` sees the ref's
//! tip holds exactly that snapshot and only removes the record. A record that cannot be
//! removed (a full disk) and is, read again, still there puts the ref back where it was before
//! the error is reported, so a failed `commit` leaves the name as it found it (the commit
//! object stays, unreachable, for `gc`); only if that fails too, or the index cannot be read,
//! is the state the one a kill leaves. Names committed earlier in the same run stay committed.

use serde::Serialize;

use super::add::Staged;
use super::rev::HEADS;
use super::Repository;
use crate::store::history::{self, Expect, ObjectId};
use crate::store::{index, lock, sync_dir};

#[derive(Debug, Serialize)]
pub struct Committed {
    pub name: String,
    pub commit: String,
    pub raw_bytes: u64,
    /// What this snapshot added to the store.
    pub stored_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// The last commit made (the only one, when one name was staged).
    pub commit: String,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub commits: Vec<Committed>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("nothing to commit (use `sparse add SOURCE --name NAME` first)")]
    NothingStaged,
    #[error("{name} moved since it was staged (was {staged}, now {now}); add it again")]
    Moved { name: String, staged: String, now: String },
    #[error("staging record of {name} is unreadable: {why}")]
    BadRecord { name: String, why: String },
    #[error(transparent)]
    History(#[from] history::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
    #[error(transparent)]
    Lock(#[from] lock::Error),
    #[error("cannot flush the store to disk: {0}")]
    Sync(std::io::Error),
    #[error("{source}; {name} was left at {commit}, and `sparse commit` finishes the commit")]
    Unfinished {
        name: String,
        commit: String,
        source: index::Error,
    },
}

fn parse_id(hex: &str, name: &str) -> Result<ObjectId, Error> {
    ObjectId::from_hex(hex.as_bytes()).map_err(|e| Error::BadRecord {
        name: name.into(),
        why: e.to_string(),
    })
}

impl Repository {
    pub fn commit(&self, message: &str) -> Result<Report, Error> {
        let _lock = self.lock()?;
        if self.index_read()?.staged()?.is_empty() {
            return Err(Error::NothingStaged);
        }
        let index = self.index()?;
        let staged = index.staged()?;
        let mut commits = Vec::new();
        for (name, record) in staged {
            let s: Staged = serde_json::from_slice(&record).map_err(|e| Error::BadRecord {
                name: name.clone(),
                why: e.to_string(),
            })?;
            let tree = parse_id(&s.tree, &name)?;
            let parent = s.parent.as_deref().map(|p| parse_id(p, &name)).transpose()?;
            let refname = format!("{HEADS}{name}");
            let tip = self.history.find_ref(&refname)?;
            let (commit, moved) = if tip == parent {
                let commit = self.history.write_commit(tree, parent.as_slice(), message)?;
                sync_dir(&self.layout.root).map_err(Error::Sync)?;
                let expect = parent.map(Expect::At).unwrap_or(Expect::Absent);
                self.history
                    .set_ref(&refname, commit, expect, &format!("commit: {message}"))?;
                (commit, true)
            } else {
                // Either an earlier `commit` was stopped after moving the ref, or the name moved.
                let done = tip
                    .map(|t| self.history.commit_info(t))
                    .transpose()?
                    .filter(|info| info.tree == tree && info.parents.first().copied() == parent);
                match done {
                    Some(info) => (info.id, false),
                    None => {
                        return Err(Error::Moved {
                            name,
                            staged: s.parent.unwrap_or_else(|| "nothing".into()),
                            now: tip.map(|t| t.to_string()).unwrap_or_else(|| "deleted".into()),
                        })
                    }
                }
            };
            if let Err(e) = index.record(&[], &[], &name, None) {
                // A transaction whose last flush failed may have landed: the name goes back
                // only if the record, read again, is still there. If it is, and moving the
                // name back fails too, the store is as a kill leaves it, and the next
                // `commit` finishes this one.
                drop(index);
                if moved && self.staged_now(&name, &record).unwrap_or(false) {
                    let undone = match parent {
                        Some(p) => {
                            self.history
                                .set_ref(&refname, p, Expect::At(commit), &format!("commit: undone ({e})"))
                        }
                        None => self.history.delete_ref(&refname, Expect::At(commit)),
                    };
                    if undone.is_err() {
                        return Err(Error::Unfinished {
                            name,
                            commit: commit.to_string(),
                            source: e,
                        });
                    }
                }
                return Err(e.into());
            }
            commits.push(Committed {
                name,
                commit: commit.to_string(),
                raw_bytes: s.raw_bytes,
                stored_bytes: s.stored_bytes,
            });
        }
        Ok(Report {
            commit: commits.last().expect("at least one").commit.clone(),
            raw_bytes: commits.iter().map(|c| c.raw_bytes).sum(),
            stored_bytes: commits.iter().map(|c| c.stored_bytes).sum(),
            commits,
        })
    }
}
