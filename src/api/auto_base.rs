//! `--base auto`: the committed model a source is closest to. Models whose tensors share names,
//! dtypes and shapes with at least half of the source's tensor bytes are candidates; the few
//! that share the most are each sampled ([`crate::model::sample`]) and the one whose sample
//! codes smallest is chosen, unless storing the source alone would be smaller still.

use std::collections::HashSet;

use serde::Serialize;

use super::add::AUTO;
use super::rev::{self, HEADS};
use super::Repository;
use crate::model::encode::{self, Base};
use crate::model::rebuild::{self, Rebuilder};
use crate::model::sample::{self, SampleSize};
use crate::model::source::SourceFile;
use crate::model::Options;
use crate::store::copies::Copies;
use crate::store::history::{self, ObjectId};

/// Candidates sampled after the cheap comparison of names and shapes.
const SAMPLED: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    History(#[from] history::Error),
    #[error("candidate {name}: {source}")]
    Candidate { name: String, source: Box<rebuild::Error> },
    #[error(transparent)]
    Sample(#[from] encode::Error),
}

/// One committed model considered as a base.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub name: String,
    pub commit: String,
    pub tensors: usize,
    /// Tensors of the source with a tensor of the same name, dtype and shape in this model.
    pub matched_tensors: usize,
    pub matched_bytes: u64,
    /// Of `matched_bytes`, those of plain files paired with this model's files.
    pub paired_bytes: u64,
    /// Expected bytes to store against it, for the candidates that were sampled.
    pub estimated_bytes: Option<u64>,
}

/// What `--base auto` chose and what it compared.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    pub chosen: Option<Candidate>,
    /// Expected bytes to store the source without a base.
    pub alone_bytes: u64,
    /// Every model considered, the chosen one first, then by expected size and shared bytes.
    pub candidates: Vec<Candidate>,
}

impl Choice {
    /// The commit to code against, if any.
    pub fn commit(&self) -> Option<ObjectId> {
        self.chosen
            .as_ref()
            .map(|c| ObjectId::from_hex(c.commit.as_bytes()).expect("written from an ObjectId"))
    }
}

/// Why the base asked for by `add` or `estimate` could not be found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error("base {rev:?}: {source}")]
    Rev { rev: String, source: Box<rev::Error> },
    #[error("base {rev:?}: {source}")]
    Snapshot { rev: String, source: Box<rebuild::Error> },
    #[error("--base auto: {0}")]
    Auto(#[from] Error),
}

/// The base asked for, resolved.
pub struct ResolvedBase<'a> {
    /// Its commit; none when no base was asked for or `auto` chose none.
    pub commit: Option<ObjectId>,
    /// What `auto` compared and chose.
    pub choice: Option<Choice>,
    /// Loaded with the base's chain and its known copies.
    pub rebuilder: Rebuilder<'a>,
}

impl Repository {
    /// Resolves `--base`: a revision, [`AUTO`] (see [`Repository::choose_base`]) or none.
    pub fn resolve_base(
        &self,
        base: Option<&str>,
        files: &[SourceFile],
        opts: &Options,
    ) -> Result<ResolvedBase<'_>, BaseError> {
        let mut choice = None;
        let commit = match base {
            Some(AUTO) => {
                let chosen = self.choose_base(files, opts)?;
                let commit = chosen.commit();
                choice = Some(chosen);
                commit
            }
            Some(rev) => Some(self.resolve(rev).map_err(|source| BaseError::Rev {
                rev: rev.into(),
                source: Box::new(source),
            })?),
            None => None,
        };
        let rebuilder = Rebuilder::new(&self.history, &self.cas, commit)
            .map_err(|source| BaseError::Snapshot {
                rev: base.unwrap_or_default().into(),
                source: Box::new(source),
            })?
            .with_copies(&Copies::new(&self.layout));
        Ok(ResolvedBase {
            commit,
            choice,
            rebuilder,
        })
    }

    /// Chooses the base for `files` among the tips of all names.
    pub fn choose_base(&self, files: &[SourceFile], opts: &Options) -> Result<Choice, Error> {
        let copies = Copies::new(&self.layout);
        let mut seen = HashSet::new();
        let mut candidates = Vec::new();
        for (name, commit) in self.history.refs(HEADS)? {
            if !seen.insert(commit) {
                continue;
            }
            let rebuilder = self.rebuilder_for(&name, commit, &copies)?;
            let est = sample::estimate(files, Some(&base(&rebuilder, commit)), opts, SampleSize::none())?;
            candidates.push(Candidate {
                name,
                commit: commit.to_string(),
                tensors: est.tensors,
                matched_tensors: est.matched_tensors,
                matched_bytes: est.matched_bytes,
                paired_bytes: est.paired_bytes,
                estimated_bytes: None,
            });
        }
        let alone = sample::estimate(files, None, opts, SampleSize::default())?;
        let tensor_bytes = alone.raw_bytes - alone.other_bytes;
        candidates.sort_by(|a, b| b.matched_bytes.cmp(&a.matched_bytes).then(a.name.cmp(&b.name)));
        for c in candidates
            .iter_mut()
            .filter(|c| c.matched_bytes > 0 && 2 * c.matched_bytes >= tensor_bytes)
            .take(SAMPLED)
        {
            let commit = ObjectId::from_hex(c.commit.as_bytes()).expect("written from an ObjectId");
            let rebuilder = self.rebuilder_for(&c.name, commit, &copies)?;
            let est = sample::estimate(files, Some(&base(&rebuilder, commit)), opts, SampleSize::default())?;
            c.estimated_bytes = Some(est.bytes);
        }
        candidates.sort_by_key(|c| (c.estimated_bytes.unwrap_or(u64::MAX), u64::MAX - c.matched_bytes));
        let chosen = candidates
            .first()
            .filter(|c| c.estimated_bytes.is_some_and(|b| b < alone.alone_bytes))
            .cloned();
        Ok(Choice {
            chosen,
            alone_bytes: alone.alone_bytes,
            candidates,
        })
    }

    fn rebuilder_for(&self, name: &str, commit: ObjectId, copies: &Copies) -> Result<Rebuilder<'_>, Error> {
        Ok(Rebuilder::new(&self.history, &self.cas, Some(commit))
            .map_err(|source| Error::Candidate {
                name: name.to_string(),
                source: Box::new(source),
            })?
            .with_copies(copies))
    }
}

fn base<'a>(rebuilder: &'a Rebuilder<'a>, commit: ObjectId) -> Base<'a> {
    Base {
        snapshot: rebuilder.base(&commit).expect("the rebuilder loaded its base"),
        rebuilder,
    }
}
