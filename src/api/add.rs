//! `add`: code a model source against an optional base and stage it under a name.

use serde::{Deserialize, Serialize};

use super::auto_base::{BaseError, Choice, ResolvedBase};
use super::rev::{check_name, HEADS};
use super::{progress, Repository};
use std::sync::Mutex;

use crate::codec::lossy::{Target, Tier};
use crate::model::budget;
use crate::model::encode::{self, check_header, encode_file, is_model, Base, KnownChunks};
use crate::model::manifest::{FileEntry, SnapshotMeta, META_FORMAT, META_PATH};
use crate::model::source::{self, SourceFile};
use crate::model::table;
use crate::model::Options;
use crate::store::cas::Key;
use crate::store::copies::Copies;
use crate::store::history::{self, ObjectId};
use crate::store::{index, lock, sync_dir};

/// A snapshot waiting for `commit`, as recorded in the index's `staged` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Staged {
    pub name: String,
    pub source: String,
    /// The snapshot's git tree (hex).
    pub tree: String,
    /// The delta base commit (hex), if any.
    pub base: Option<String>,
    /// The tip of `name` when the snapshot was staged (hex); the commit's history parent.
    pub parent: Option<String>,
    pub raw_bytes: u64,
    /// Size of the snapshot's own encoding: its coded chunks and verbatim files.
    pub coded_bytes: u64,
    /// Bytes this add wrote to the store (what the store grew by; shared parts count once).
    pub stored_bytes: u64,
    /// The lossy tier some tensors were stored in (`int8`, `lowrank rank R`, `lowrank within N
    /// bytes`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lossy: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub staged: Staged,
    pub files: usize,
    pub tensors: usize,
    /// What `--base auto` compared and chose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_choice: Option<Choice>,
    /// Set when the base asked for would have made the chain of bases longer than allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebased: Option<Rebased>,
    /// Under `--lossy`, the files whose tensors it does not reach (GGUF files), stored exactly.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lossless: Vec<String>,
    /// Under `--target-size`: how the target was spent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranks: Option<RankReport>,
}

/// How `--target-size` was spent on ranks ([`budget::ranks`]).
#[derive(Debug, Clone, Serialize)]
pub struct RankReport {
    /// The target, in bytes.
    pub target: u64,
    /// What the tensors kept exact take, coded.
    pub exact: u64,
    /// What the factors at the chosen ranks were expected to take, coded.
    pub factors: u64,
    /// Matrices stored lossy, and the least, greatest and summed rank among them.
    pub matrices: usize,
    pub min: u32,
    pub max: u32,
    pub sum: u64,
}

impl RankReport {
    fn of(plan: &budget::Plan) -> RankReport {
        let ranks = plan.ranks.values();
        RankReport {
            target: plan.target,
            exact: plan.exact,
            factors: plan.factors,
            matrices: plan.ranks.len(),
            min: ranks.clone().copied().min().unwrap_or(0),
            max: ranks.clone().copied().max().unwrap_or(0),
            sum: ranks.map(|&r| r as u64).sum(),
        }
    }
}

/// The base was replaced by an ancestor of it, to keep the chain within `max_depth`.
#[derive(Debug, Clone, Serialize)]
pub struct Rebased {
    /// The base asked for (commit, hex), and how many bases its own chain has.
    pub asked: String,
    pub asked_depth: usize,
    /// The ancestor used instead, if any (none: stored without a base).
    pub used: Option<String>,
    pub max_depth: usize,
}

/// The value of `--base` that asks for [`Repository::choose_base`].
pub const AUTO: &str = "auto";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Name(String),
    #[error(transparent)]
    Source(#[from] source::Error),
    #[error(transparent)]
    Base(#[from] BaseError),
    #[error(transparent)]
    Encode(#[from] encode::Error),
    #[error(transparent)]
    Table(#[from] table::Error),
    #[error("{path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    History(#[from] history::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
    #[error(transparent)]
    Lock(#[from] lock::Error),
    #[error(transparent)]
    Names(#[from] super::rev::NameError),
    #[error("cannot flush the store to disk: {0}")]
    Sync(std::io::Error),
}

impl Repository {
    /// Codes `source` (against `base`, a revision, when given) and stages it as `name`.
    pub fn add(
        &self,
        source: &str,
        name: &str,
        base: Option<&str>,
        opts: &Options,
        progress: progress::Report<'_>,
    ) -> Result<Report, Error> {
        check_name(name).map_err(Error::Name)?;
        let files = source::resolve(source)?;
        let _lock = self.lock()?;
        // A staged name that could never be committed would stop every commit.
        if let Some(clash) = self.nested_name(name)? {
            return Err(Error::Name(clash));
        }
        let ResolvedBase {
            commit: asked,
            choice: base_choice,
            rebuilder,
        } = self.resolve_base(base, &files, opts)?;
        // The new snapshot's chain is its base's plus one: past the bound, take the nearest
        // ancestor of the base that keeps it within.
        let chain = rebuilder.chain();
        let (base_id, rebased) = match asked {
            Some(id) if chain.len() > opts.max_depth => {
                let used = chain.get(chain.len() - opts.max_depth).copied();
                let note = Rebased {
                    asked: id.to_string(),
                    asked_depth: chain.len() - 1,
                    used: used.map(|u| u.to_string()),
                    max_depth: opts.max_depth,
                };
                (used, Some(note))
            }
            other => (other, None),
        };
        let base_snapshot = base_id.map(|id| rebuilder.base(&id).expect("the rebuilder loaded its base"));
        let base_ref = base_snapshot.map(|snapshot| Base {
            snapshot,
            rebuilder: &rebuilder,
        });

        let total: u64 = files.iter().map(|f| f.size).sum();
        let counter = progress::Counter::new(total, progress);
        let tick = |n: u64| counter.add(n);

        // Every header is checked before anything is written: bad input leaves the store as it was.
        for file in &files {
            if is_model(file) {
                check_header(file)?;
            } else {
                // Tables open, text tables have whole rows: or nothing is stored.
                table::check::check(file, opts.kind)?;
            }
        }
        // A target size is spent on ranks before any coding.
        let planned;
        let mut rank_report = None;
        let opts = match (opts.lossy, base_ref.as_ref()) {
            (Some(Tier::LowRankWithin { target }), Some(b)) => {
                let plan = budget::ranks(&files, opts, b, target)?;
                rank_report = Some(RankReport::of(&plan));
                planned = Options {
                    lossy: Some(Tier::LowRankWithin {
                        target: Target::Bytes(plan.target),
                    }),
                    ranks: Some(std::sync::Arc::new(plan.ranks)),
                    ..opts.clone()
                };
                &planned
            }
            _ => opts,
        };
        let written = Mutex::new(Vec::new());
        // Any chunk already stored whole, in any model, is referred to rather than coded again.
        let known = self.index_read()?.full_chunks()?;
        let coded = self.code_files(&files, opts, base_ref.as_ref(), &known, &written, &tick);
        // Whatever fails from here on (a full disk), the blobs this add wrote go, unless its
        // staging record may have landed: nothing else refers to them, as the
        // lock kept other writers out. What is left is at most git objects that nothing
        // reaches, which `gc` removes.
        let mut recorded: Option<Vec<u8>> = None;
        let staged = coded.and_then(|coded| -> Result<Report, Error> {
            let mut tree = Vec::new();
            let mut entries = Vec::new();
            let mut blobs = Vec::new();
            let mut full = Vec::new();
            let (mut coded_bytes, mut stored_bytes, mut tensors) = (0u64, 0u64, 0usize);
            let mut lossy = false;
            let mut lossless = Vec::new();
            for (file, content) in files.iter().zip(coded) {
                let (bytes, manifest) = match content {
                    Content::Verbatim(bytes) => {
                        coded_bytes += bytes.len() as u64;
                        (bytes, false)
                    }
                    Content::Coded(coded) => {
                        coded_bytes += coded.manifest.stored();
                        stored_bytes += coded.new_bytes;
                        tensors += coded.manifest.segments.iter().filter(|s| s.tensor.is_some()).count();
                        lossy |= coded.approximate;
                        if opts.lossy.is_some() && coded.manifest.kind == "gguf" {
                            lossless.push(file.path.clone());
                        }
                        blobs.extend(coded.blobs);
                        full.extend(coded.full);
                        (
                            serde_json::to_vec_pretty(&coded.manifest).expect("manifests serialize"),
                            true,
                        )
                    }
                };
                let (id, added) = self.history.write_blob(&bytes)?;
                stored_bytes += added;
                tree.push((file.path.clone(), id));
                entries.push(FileEntry {
                    path: file.path.clone(),
                    size: file.size,
                    manifest,
                });
            }
            let meta = SnapshotMeta {
                format: META_FORMAT.into(),
                kind: "model".into(),
                base: base_id.map(|id| id.to_string()),
                lossy: opts.lossy.filter(|_| lossy).map(|t| t.to_string()),
                files: entries,
            };
            let (meta_id, added) = self
                .history
                .write_blob(&serde_json::to_vec_pretty(&meta).expect("records serialize"))?;
            stored_bytes += added;
            tree.push((META_PATH.to_string(), meta_id));
            let tree_id: ObjectId = self.history.write_tree(&tree)?;

            // Everything the staging record points at is on disk before the record exists.
            sync_dir(&self.layout.root).map_err(Error::Sync)?;
            let staged = Staged {
                name: name.into(),
                source: source.into(),
                tree: tree_id.to_string(),
                base: meta.base.clone(),
                parent: self
                    .history
                    .find_ref(&format!("{HEADS}{name}"))?
                    .map(|id| id.to_string()),
                raw_bytes: total,
                coded_bytes,
                stored_bytes,
                lossy: meta.lossy.clone(),
            };
            let record = serde_json::to_vec(&staged).expect("records serialize");
            recorded = Some(record.clone());
            // (The index is closed before it is read again below.)
            let outcome = self.index()?.record(&blobs, &full, name, &record);
            if let Err(e) = outcome {
                // A transaction whose last flush failed may still have landed: if the index,
                // read again, holds the record, the add is done.
                if self.staged_now(name, &record) != Some(true) {
                    return Err(e.into());
                }
            }
            // The source files are copies of what was just stored, for later deltas against it
            // (not when it was stored lossy: checkout gives back something else).
            let copies = Copies::new(&self.layout);
            for (file, entry) in files.iter().zip(&meta.files) {
                if entry.manifest && meta.lossy.is_none() {
                    // A hint only: without it, the base is decoded from its blobs.
                    let _ = copies.record(&staged.tree, &file.path, &file.abs);
                }
            }
            Ok(Report {
                staged,
                files: files.len(),
                tensors,
                base_choice,
                rebased,
                lossless,
                ranks: rank_report,
            })
        });
        // A transaction whose last flush fails may still have landed: unless the index, read
        // again, shows the record is not there, the blobs it refers to stay.
        let may_be_staged = recorded.is_some_and(|r| self.staged_now(name, &r).unwrap_or(true));
        if staged.is_err() && !may_be_staged {
            for key in written.into_inner().expect("no panics while holding it") {
                let _ = self.cas.remove(&key);
            }
        }
        staged
    }

    /// Whether the index, read afresh, holds `record` staged for `name` (None: unreadable).
    pub(super) fn staged_now(&self, name: &str, record: &[u8]) -> Option<bool> {
        let staged = self.index_read().and_then(|index| index.staged()).ok()?;
        Some(staged.iter().any(|(n, r)| n == name && r.as_slice() == record))
    }

    /// Codes every file that gets a manifest and reads the ones kept verbatim.
    fn code_files(
        &self,
        files: &[SourceFile],
        opts: &Options,
        base: Option<&Base<'_>>,
        known: &KnownChunks,
        written: &Mutex<Vec<Key>>,
        tick: &(dyn Fn(u64) + Sync),
    ) -> Result<Vec<Content>, Error> {
        files
            .iter()
            .map(|file| {
                if is_model(file) || file.size >= opts.small_file {
                    Ok(Content::Coded(Box::new(encode_file(
                        file, &self.cas, opts, base, known, written, tick,
                    )?)))
                } else {
                    let bytes = std::fs::read(&file.abs).map_err(|source| Error::Read {
                        path: file.abs.clone(),
                        source,
                    })?;
                    tick(bytes.len() as u64);
                    Ok(Content::Verbatim(bytes))
                }
            })
            .collect()
    }
}

/// A source file, ready for the snapshot tree.
enum Content {
    /// Small files go into git as they are.
    Verbatim(Vec<u8>),
    /// Large files are coded into blobs and described by a manifest.
    Coded(Box<encode::Encoded>),
}
