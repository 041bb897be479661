//! `commit`: turn every staged snapshot into a commit on its name's ref, all of them or none.
//!
//! Crash safety: every name is checked first (a name moved since it was staged stops the
//! commit before anything is written); then the commit objects are written and flushed, the
//! refs move together with compare-and-swap, and the staging records are removed in one index
//! transaction. A process killed between the last two steps leaves staging records whose
//! commits already exist; the next `commit` sees each ref's tip holds exactly that snapshot
//! and only removes the record. If the refs cannot all move, or the records cannot be removed
//! and are, read again, still there, every name that moved is put back before the error is
//! reported, so a failed `commit` leaves the names as it found them (the commit objects stay,
//! unreachable, for `gc`); only if that fails too, or the index cannot be read, is the state
//! the one a kill leaves. Records that are gone when read again despite the error (the
//! transaction landed before a later write failed) make the commit a success.

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
    #[error("staging record of {name} is unreadable: {why}; add it again, or `sparse fsck --rebuild-index` drops it")]
    BadRecord { name: String, why: String },
    #[error(transparent)]
    History(#[from] history::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
    #[error(transparent)]
    Lock(#[from] lock::Error),
    #[error("cannot flush the store to disk: {0}")]
    Sync(std::io::Error),
    #[error("{source}; left moved: {left}, and `sparse commit` finishes the commit")]
    Unfinished {
        /// Each name that could not be put back, with the commit it was left at.
        left: String,
        source: Box<Error>,
    },
}

/// `source`, and that moving the names of `steps[failed]` back failed too.
fn unfinished(steps: &[Step], failed: &[usize], source: impl Into<Error>) -> Error {
    let left: Vec<String> = failed
        .iter()
        .map(|&i| format!("{} at {}", steps[i].name, steps[i].commit()))
        .collect();
    Error::Unfinished {
        left: left.join(", "),
        source: Box::new(source.into()),
    }
}

fn parse_id(hex: &str, name: &str) -> Result<ObjectId, Error> {
    ObjectId::from_hex(hex.as_bytes()).map_err(|e| Error::BadRecord {
        name: name.into(),
        why: e.to_string(),
    })
}

/// One staged name on its way to a commit.
struct Step {
    name: String,
    record: Vec<u8>,
    staged: Staged,
    refname: String,
    tree: ObjectId,
    parent: Option<ObjectId>,
    /// The commit the name ends at; `None` until written.
    commit: Option<ObjectId>,
}

impl Step {
    fn commit(&self) -> ObjectId {
        self.commit.expect("every commit is written before the names move")
    }
}

impl Repository {
    pub fn commit(&self, message: &str) -> Result<Report, Error> {
        let _lock = self.lock()?;
        if self.index_read()?.staged()?.is_empty() {
            return Err(Error::NothingStaged);
        }
        let index = self.index()?;
        let mut steps = index
            .staged()?
            .into_iter()
            .map(|(name, record)| self.step(name, record))
            .collect::<Result<Vec<_>, _>>()?;

        // The names to move: those whose commit is not already their tip.
        let mut moving = Vec::new();
        for (i, step) in steps.iter_mut().enumerate() {
            if step.commit.is_none() {
                step.commit = Some(self.history.write_commit(step.tree, step.parent.as_slice(), message)?);
                moving.push(i);
            }
        }
        if !moving.is_empty() {
            sync_dir(&self.layout.root).map_err(Error::Sync)?;
        }
        let moves: Vec<(&str, ObjectId, Expect)> = moving
            .iter()
            .map(|&i| {
                let s = &steps[i];
                (
                    s.refname.as_str(),
                    s.commit(),
                    s.parent.map(Expect::At).unwrap_or(Expect::Absent),
                )
            })
            .collect();
        if let Err(e) = self.history.set_refs(&moves, &format!("commit: {message}")) {
            return Err(match self.put_back(&steps, &moving, &e.to_string()) {
                Ok(()) => e.into(),
                Err(failed) => unfinished(&steps, &failed, e),
            });
        }

        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        if let Err(e) = index.unstage(&names) {
            // A transaction whose last flush failed may still have landed. Read again, the
            // records are all gone (the commit is done), all there (the names go back), or
            // unreadable: then the store is as a kill leaves it, and the next `commit`
            // finishes this one; so too if moving a name back fails.
            drop(index);
            let now: Vec<Option<bool>> = steps.iter().map(|s| self.staged_now(&s.name, &s.record)).collect();
            if now.iter().any(|n| *n != Some(false)) {
                if now.iter().all(|n| *n == Some(true)) {
                    if let Err(failed) = self.put_back(&steps, &moving, &e.to_string()) {
                        return Err(unfinished(&steps, &failed, e));
                    }
                }
                return Err(e.into());
            }
        }

        let commits: Vec<Committed> = steps
            .into_iter()
            .map(|s| Committed {
                commit: s.commit().to_string(),
                name: s.name,
                raw_bytes: s.staged.raw_bytes,
                stored_bytes: s.staged.stored_bytes,
            })
            .collect();
        Ok(Report {
            commit: commits.last().expect("at least one").commit.clone(),
            raw_bytes: commits.iter().map(|c| c.raw_bytes).sum(),
            stored_bytes: commits.iter().map(|c| c.stored_bytes).sum(),
            commits,
        })
    }

    /// Reads the staging record of `name` and checks its name against its ref: the ref is
    /// still at the staged parent (a commit to write), or already at a commit of exactly
    /// this snapshot (an earlier `commit` was stopped after moving it).
    fn step(&self, name: String, record: Vec<u8>) -> Result<Step, Error> {
        let staged: Staged = serde_json::from_slice(&record).map_err(|e| Error::BadRecord {
            name: name.clone(),
            why: e.to_string(),
        })?;
        let tree = parse_id(&staged.tree, &name)?;
        let parent = staged.parent.as_deref().map(|p| parse_id(p, &name)).transpose()?;
        let refname = format!("{HEADS}{name}");
        let tip = self.history.find_ref(&refname)?;
        let commit = if tip == parent {
            None
        } else {
            let done = tip
                .map(|t| self.history.commit_info(t))
                .transpose()?
                .filter(|info| info.tree == tree && info.parents.first().copied() == parent);
            match done {
                Some(info) => Some(info.id),
                None => {
                    return Err(Error::Moved {
                        name,
                        staged: staged.parent.unwrap_or_else(|| "nothing".into()),
                        now: tip.map(|t| t.to_string()).unwrap_or_else(|| "deleted".into()),
                    })
                }
            }
        };
        Ok(Step {
            name,
            record,
            staged,
            refname,
            tree,
            parent,
            commit,
        })
    }

    /// Puts every name of `moving` that is at its new commit back where it was staged from
    /// (or deletes it, for a new name). The names that could not be put back (or read), if any.
    fn put_back(&self, steps: &[Step], moving: &[usize], why: &str) -> Result<(), Vec<usize>> {
        let mut failed = Vec::new();
        for &i in moving {
            let s = &steps[i];
            match self.history.find_ref(&s.refname) {
                Ok(Some(tip)) if tip == s.commit() => {}
                Ok(_) => continue,
                Err(_) => {
                    failed.push(i);
                    continue;
                }
            }
            let undone = match s.parent {
                Some(p) => self.history.set_ref(
                    &s.refname,
                    p,
                    Expect::At(s.commit()),
                    &format!("commit: undone ({why})"),
                ),
                None => self.history.delete_ref(&s.refname, Expect::At(s.commit())),
            };
            if undone.is_err() {
                failed.push(i);
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed)
        }
    }
}
