//! `validate`: how far a revision's tensors are from a source's, tensor by tensor: what a lossy
//! tier cost. Tensors are compared by name, as f64, one chunk-sized piece at a time.

use std::path::PathBuf;

use serde::Serialize;

use super::rev;
use super::Repository;
use crate::codec::lossy::Float;
use crate::model::encode::{is_safetensors, map_file, Error as EncodeError};
use crate::model::rebuild::{self, Rebuilder};
use crate::model::safetensors::{self, dtype_name, HeaderError};
use crate::model::snapshot::{self, Snapshot};
use crate::model::source;
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
        let info = self.history.commit_info(commit)?;
        let snap_err = |source| Error::Snapshot {
            rev: rev.into(),
            source,
        };
        let snap = Snapshot::load(&self.history, info.tree).map_err(snap_err)?;
        let rebuild_err = |source| Error::Rebuild {
            rev: rev.into(),
            source: Box::new(source),
        };
        let rebuilder =
            Rebuilder::new(&self.history, &self.cas, snap.base().map_err(snap_err)?).map_err(rebuild_err)?;
        let files = source::resolve(source)?;
        let mut report = Report {
            commit: commit.to_string(),
            lossy: snap.meta.lossy.clone(),
            tensors: Vec::new(),
            unmatched: Vec::new(),
            rel_frobenius: 0.0,
            exact: 0,
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

fn relative(diff2: f64, norm2: f64) -> f64 {
    match (diff2, norm2) {
        (0.0, _) => 0.0,
        (_, 0.0) => f64::INFINITY,
        (d, n) => (d / n).sqrt(),
    }
}
