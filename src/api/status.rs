//! `status`: what is staged, and the names in the store.

use serde::Serialize;

use super::add::Staged;
use super::refs::{self, RefKind, RefRow};
use super::Repository;
use crate::store::index;

#[derive(Debug, Serialize)]
pub struct Report {
    pub store: std::path::PathBuf,
    pub staged: Vec<Staged>,
    pub names: Vec<RefRow>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Index(#[from] index::Error),
    #[error(transparent)]
    Refs(#[from] refs::Error),
    #[error("staging record of {name} is unreadable: {why}; add it again, or `sparse fsck --rebuild-index` drops it")]
    BadRecord { name: String, why: String },
}

impl Repository {
    pub fn status(&self) -> Result<Report, Error> {
        let staged = self
            .index_read()?
            .staged()?
            .into_iter()
            .map(|(name, bytes)| {
                serde_json::from_slice(&bytes).map_err(|e| Error::BadRecord {
                    name,
                    why: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Report {
            store: self.layout.root.clone(),
            staged,
            names: self.list_refs(RefKind::Branch)?,
        })
    }
}
