//! `branch` and `tag`: names (model tips) and fixed labels, as git refs.

use serde::Serialize;

use super::rev::{self, check_name, HEADS, TAGS};
use super::Repository;
use crate::store::history::{self, Expect};
use crate::store::lock;

#[derive(Debug, Serialize)]
pub struct RefRow {
    pub name: String,
    pub commit: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Name(String),
    #[error("{kind} {name} already exists")]
    Exists { kind: &'static str, name: String },
    #[error("no {kind} named {name}")]
    Missing { kind: &'static str, name: String },
    #[error(transparent)]
    Rev(#[from] rev::Error),
    #[error(transparent)]
    History(#[from] history::Error),
    #[error(transparent)]
    Lock(#[from] lock::Error),
    #[error(transparent)]
    Names(#[from] rev::NameError),
}

/// Which kind of ref a verb works on.
#[derive(Debug, Clone, Copy)]
pub enum RefKind {
    Branch,
    Tag,
}

impl RefKind {
    fn prefix(self) -> &'static str {
        match self {
            RefKind::Branch => HEADS,
            RefKind::Tag => TAGS,
        }
    }
    fn noun(self) -> &'static str {
        match self {
            RefKind::Branch => "name",
            RefKind::Tag => "tag",
        }
    }
}

impl Repository {
    pub fn list_refs(&self, kind: RefKind) -> Result<Vec<RefRow>, Error> {
        Ok(self
            .history
            .refs(kind.prefix())?
            .into_iter()
            .map(|(name, id)| RefRow {
                name,
                commit: id.to_string(),
            })
            .collect())
    }

    /// Creates `name` pointing at revision `rev`.
    pub fn create_ref(&self, kind: RefKind, name: &str, rev: &str) -> Result<RefRow, Error> {
        check_name(name).map_err(Error::Name)?;
        let _lock = self.lock()?;
        if let (RefKind::Branch, Some(clash)) = (kind, self.nested_name(name)?) {
            return Err(Error::Name(clash));
        }
        let id = self.resolve(rev)?;
        let full = format!("{}{name}", kind.prefix());
        if self.history.find_ref(&full)?.is_some() {
            return Err(Error::Exists {
                kind: kind.noun(),
                name: name.into(),
            });
        }
        self.history.set_ref(
            &full,
            id,
            Expect::Absent,
            &format!("{}: created from {rev}", kind.noun()),
        )?;
        Ok(RefRow {
            name: name.into(),
            commit: id.to_string(),
        })
    }

    /// Deletes `name`. What only it reached is reclaimed by `gc`.
    pub fn delete_ref(&self, kind: RefKind, name: &str) -> Result<RefRow, Error> {
        let _lock = self.lock()?;
        let full = format!("{}{name}", kind.prefix());
        let id = self.history.find_ref(&full)?.ok_or_else(|| Error::Missing {
            kind: kind.noun(),
            name: name.into(),
        })?;
        self.history.delete_ref(&full, Expect::At(id))?;
        Ok(RefRow {
            name: name.into(),
            commit: id.to_string(),
        })
    }
}
