//! `validate`: how far a revision's tensors are from a source's, tensor by tensor: what a lossy
//! tier cost. Tensors are compared by name, as f64, one chunk-sized piece at a time. With
//! sentences, also how far the model's outputs are: the source, the revision and the
//! revision's base embed each sentence ([`crate::model::bert`]), and the revision's and the
//! base's embeddings are compared with the source's.

use std::path::PathBuf;

use serde::Serialize;

use super::rev;
use super::Repository;
use crate::codec::lossy::Float;
use crate::model::bert;
use crate::model::encode::{is_safetensors, map_file, Error as EncodeError};
use crate::model::rebuild::{self, Rebuilder};
use crate::model::safetensors::{self, dtype_name, HeaderError};
use crate::model::snapshot::{self, Snapshot};
use crate::model::source::{self, SourceFile};
use crate::store::history;

/// Errors of `validate`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Rev(#[from] rev::Error),
    #[error(transparent)]
    History(#[from] history::Error),
    #[error(transparent)]
    Source(#[from] source::Error),
    #[error(transparent)]
    Read(#[from] EncodeError),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("revision {rev}: {source}")]
    Snapshot { rev: String, source: snapshot::Error },
    #[error("revision {rev}: {source}")]
    Rebuild { rev: String, source: Box<rebuild::Error> },
    #[error("{path}: no safetensors file to compare")]
    NoTensors { path: PathBuf },
    #[error(transparent)]
    Model(#[from] bert::Error),
    #[error("revision {rev}: no file {path} to run the model of")]
    NoModel { rev: String, path: String },
    #[error("no sentences to run the model on in {files}")]
    NoSentences { files: String },
}

/// How alike two models' sentence embeddings are: the cosine similarity of each sentence's.
#[derive(Debug, Serialize)]
pub struct Similarity {
    pub mean: f64,
    pub min: f64,
}

/// The model-level check: the source's model and the revision's (and its base's) run on the
/// same sentences, mean-pooled.
#[derive(Debug, Serialize)]
pub struct ModelCheck {
    /// The safetensors file run (its path in the source and the revision).
    pub file: String,
    pub sentences: usize,
    /// The revision's embeddings against the source's.
    pub revision: Similarity,
    /// The revision's base's against the source's: what the fine-tune changed (None without a
    /// base).
    pub base: Option<Similarity>,
    /// The commit of that base.
    pub base_commit: Option<String>,
}

/// The error of one tensor of the revision against the source's tensor of the same name.
#[derive(Debug, Serialize)]
pub struct TensorError {
    pub file: String,
    pub name: String,
    pub dtype: String,
    /// The codec the revision stores it with (`mixed` when its chunks differ).
    pub codec: String,
    pub max_abs: f64,
    pub mean_abs: f64,
    /// ||revision - source|| / ||source|| (Frobenius norms; 0 when both are zero).
    pub rel_frobenius: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub commit: String,
    pub lossy: Option<String>,
    pub tensors: Vec<TensorError>,
    /// Float tensors of the source the revision lacks, or holds with another dtype or shape.
    pub unmatched: Vec<String>,
    /// Over every compared tensor: ||revision - source|| / ||source||.
    pub rel_frobenius: f64,
    /// Tensors that are bit-identical to the source.
    pub exact: usize,
    /// With sentences: the model-level check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelCheck>,
}

/// Sums of one comparison.
#[derive(Default)]
struct Sums {
    max: f64,
    abs: f64,
    diff2: f64,
    norm2: f64,
    count: u64,
    differ: bool,
}

impl Repository {
    /// Compares every float tensor of revision `rev` with the same-named tensor of `source`.
    pub fn validate(&self, rev: &str, source: &str) -> Result<Report, Error> {
        let commit = self.resolve(rev)?;
        let (snap, rebuilder) = self.rebuildable(rev, commit)?;
        let rebuild_err = |source| Error::Rebuild {
            rev: rev.into(),
            source: Box::new(source),
        };
        let files = source::resolve(source)?;
        let mut report = Report {
            commit: commit.to_string(),
            lossy: snap.meta.lossy.clone(),
            tensors: Vec::new(),
            unmatched: Vec::new(),
            rel_frobenius: 0.0,
            exact: 0,
            model: None,
        };
        let (mut diff2, mut norm2) = (0f64, 0f64);
        let mut any = false;
        for file in files.iter().filter(|f| is_safetensors(f)) {
            any = true;
            let map = map_file(file)?;
            let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
            let header = safetensors::parse(&file.abs, bytes)?;
            for t in &header.tensors {
                let dtype = dtype_name(t.dtype);
                let Some(float) = Float::of_dtype(&dtype) else { continue };
                // The tensor of that name in the file of the same path, else in any file.
                let same_path = snap.manifests.get_key_value(&file.path).and_then(|(f, m)| {
                    let seg = m
                        .segments
                        .iter()
                        .find(|s| s.tensor.as_ref().is_some_and(|x| x.name == t.name))?;
                    Some((f, seg))
                });
                let found = same_path
                    .or_else(|| {
                        let (f, s) = snap.tensors.get(&t.name)?;
                        let (f, m) = snap.manifests.get_key_value(f)?;
                        Some((f, &m.segments[*s]))
                    })
                    .filter(|(_, seg)| {
                        seg.len == t.len()
                            && seg
                                .tensor
                                .as_ref()
                                .is_some_and(|meta| meta.dtype == dtype && meta.shape == t.shape)
                    });
                let Some((rev_file, seg)) = found else {
                    report.unmatched.push(t.name.clone());
                    continue;
                };
                let mut sums = Sums::default();
                let src = &bytes[t.begin as usize..t.end as usize];
                let step = (seg.chunk_size as usize).max(float.width());
                let mut buf = vec![0u8; step.min(src.len())];
                let mut at = 0;
                while at < src.len() {
                    let n = step.min(src.len() - at);
                    let got = &mut buf[..n];
                    if !rebuilder
                        .read_range(&snap, rev_file, seg.offset + at as u64, got)
                        .map_err(rebuild_err)?
                    {
                        return Err(rebuild_err(rebuild::Error::BadPath {
                            path: rev_file.clone(),
                            why: format!("has no bytes for tensor {:?}", t.name),
                        }));
                    }
                    let piece = &src[at..at + n];
                    sums.differ |= piece != &got[..];
                    for (a, b) in float.to_f32(got).iter().zip(float.to_f32(piece)) {
                        let (a, b) = (f64::from(*a), f64::from(b));
                        let d = (a - b).abs();
                        sums.max = sums.max.max(d);
                        sums.abs += d;
                        sums.diff2 += d * d;
                        sums.norm2 += b * b;
                        sums.count += 1;
                    }
                    at += n;
                }
                diff2 += sums.diff2;
                norm2 += sums.norm2;
                report.exact += usize::from(!sums.differ);
                report.tensors.push(TensorError {
                    file: rev_file.clone(),
                    name: t.name.clone(),
                    dtype,
                    codec: seg.codec_summary(),
                    max_abs: sums.max,
                    mean_abs: sums.abs / sums.count.max(1) as f64,
                    rel_frobenius: relative(sums.diff2, sums.norm2),
                });
            }
        }
        if !any {
            return Err(Error::NoTensors { path: source.into() });
        }
        report.rel_frobenius = relative(diff2, norm2);
        Ok(report)
    }
}

impl Repository {
    /// Runs the BERT model of `source` (its safetensors file, with `config.json` and
    /// `tokenizer.json` beside it), the same file of revision `rev` and of its base, on
    /// `sentences`, and compares their mean-pooled embeddings with the source's.
    pub fn validate_model(&self, rev: &str, source: &str, sentences: &[String]) -> Result<ModelCheck, Error> {
        if sentences.is_empty() {
            return Err(Error::NoSentences {
                files: "the list given".into(),
            });
        }
        let files = source::resolve(source)?;
        // The model's own weights: the safetensors file with a tokenizer beside it (a
        // sentence-transformers folder also holds the weights of its extra layers).
        let models: Vec<&SourceFile> = files.iter().filter(|f| is_safetensors(f)).collect();
        let has_tokenizer = |f: &&&SourceFile| bert::companions(&f.abs).is_ok_and(|(_, tokenizer)| tokenizer.is_file());
        let file = *models
            .iter()
            .find(has_tokenizer)
            .or(models.first())
            .ok_or_else(|| Error::NoTensors { path: source.into() })?;
        let (config, tokenizer) = bert::companions(&file.abs)?;
        let arch = bert::Architecture::load(&config, &tokenizer)?;
        let weights = std::fs::read(&file.abs).map_err(|source| bert::Error::Io {
            path: file.abs.clone(),
            source,
        })?;
        let original = arch.model(weights, &file.abs.display().to_string())?.embed(sentences)?;

        let commit = self.resolve(rev)?;
        let (revision, base_commit) = self.rebuild_model_file(rev, commit, file)?;
        let revision = arch
            .model(revision, &format!("revision {rev}: {}", file.path))?
            .embed(sentences)?;
        let base = match base_commit {
            Some(b) => {
                let name = format!("{rev}'s base {b}");
                let (bytes, _) = self.rebuild_model_file(&name, b, file)?;
                Some(arch.model(bytes, &format!("{name}: {}", file.path))?.embed(sentences)?)
            }
            None => None,
        };
        let similarity = |other: &[Vec<f32>]| {
            let c: Vec<f64> = original.iter().zip(other).map(|(a, b)| bert::cosine(a, b)).collect();
            Similarity {
                mean: c.iter().sum::<f64>() / c.len() as f64,
                min: c.iter().copied().fold(f64::INFINITY, f64::min),
            }
        };
        Ok(ModelCheck {
            file: file.path.clone(),
            sentences: sentences.len(),
            revision: similarity(&revision),
            base: base.as_deref().map(similarity),
            base_commit: base_commit.map(|b| b.to_string()),
        })
    }

    /// The snapshot of `commit` (named `rev` in errors) and a rebuilder of its files.
    fn rebuildable(&self, rev: &str, commit: history::ObjectId) -> Result<(Snapshot, Rebuilder<'_>), Error> {
        let snap_err = |source| Error::Snapshot {
            rev: rev.into(),
            source,
        };
        let info = self.history.commit_info(commit)?;
        let snap = Snapshot::load(&self.history, info.tree).map_err(snap_err)?;
        let rebuilder = Rebuilder::new(&self.history, &self.cas, snap.base().map_err(snap_err)?).map_err(|source| {
            Error::Rebuild {
                rev: rev.into(),
                source: Box::new(source),
            }
        })?;
        Ok((snap, rebuilder))
    }

    /// The bytes of `file`'s path in `commit` (or of its only safetensors file), rebuilt into a
    /// scratch file and read back, and the commit's base.
    fn rebuild_model_file(
        &self,
        rev: &str,
        commit: history::ObjectId,
        file: &SourceFile,
    ) -> Result<(Vec<u8>, Option<history::ObjectId>), Error> {
        let (snap, rebuilder) = self.rebuildable(rev, commit)?;
        let path = match snap.manifests.contains_key(&file.path) {
            true => Some(file.path.clone()),
            false => {
                let mut models = snap.manifests.iter().filter(|(_, m)| m.kind == "safetensors");
                match (models.next(), models.next()) {
                    (Some((p, _)), None) => Some(p.clone()),
                    _ => None,
                }
            }
        };
        let path = path.ok_or_else(|| Error::NoModel {
            rev: rev.into(),
            path: file.path.clone(),
        })?;
        let io = |path: &std::path::Path| {
            let path = path.to_owned();
            move |source| bert::Error::Io { path, source }
        };
        let tmp = self.cas.scratch().map_err(io(self.cas.tmp_dir()))?.into_temp_path();
        rebuilder
            .write_file(&snap, &path, &tmp, &|_| {})
            .map_err(|source| Error::Rebuild {
                rev: rev.into(),
                source: Box::new(source),
            })?;
        let bytes = std::fs::read(&tmp).map_err(io(&tmp))?;
        let base = snap.base().map_err(|source| Error::Snapshot {
            rev: rev.into(),
            source,
        })?;
        Ok((bytes, base))
    }
}

fn relative(diff2: f64, norm2: f64) -> f64 {
    match (diff2, norm2) {
        (0.0, _) => 0.0,
        (_, 0.0) => f64::INFINITY,
        (d, n) => (d / n).sqrt(),
    }
}
