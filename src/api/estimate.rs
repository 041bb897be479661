//! `estimate`: the expected stored size of a source, from a sample, before anything is written.

use serde::Serialize;

use super::auto_base::{BaseError, Choice, ResolvedBase};
use super::Repository;
use crate::model::encode::{self, Base};
use crate::model::sample::{self, Estimate, SampleSize};
use crate::model::source;
use crate::model::Options;

#[derive(Debug, Serialize)]
pub struct Report {
    pub source: String,
    /// The base estimated against (commit, hex), if any.
    pub base: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_choice: Option<Choice>,
    #[serde(flatten)]
    pub estimate: Estimate,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Source(#[from] source::Error),
    #[error(transparent)]
    Base(#[from] BaseError),
    #[error(transparent)]
    Sample(#[from] encode::Error),
}

impl Repository {
    /// Estimates what `add SOURCE [--base BASE]` would store, coding `size` of it in memory.
    pub fn estimate(
        &self,
        source: &str,
        base: Option<&str>,
        opts: &Options,
        size: SampleSize,
    ) -> Result<Report, Error> {
        let started = std::time::Instant::now();
        let files = source::resolve(source)?;
        let ResolvedBase {
            commit,
            choice: base_choice,
            rebuilder,
        } = self.resolve_base(base, &files, opts)?;
        let base_ref = commit.map(|id| Base {
            snapshot: rebuilder.base(&id).expect("the rebuilder loaded its base"),
            rebuilder: &rebuilder,
        });
        let estimate = sample::estimate(&files, base_ref.as_ref(), opts, size)?;
        Ok(Report {
            source: source.to_string(),
            base: commit.map(|c| c.to_string()),
            base_choice,
            estimate,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}
