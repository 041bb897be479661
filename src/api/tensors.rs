//! A revision's tensors in memory as candle-core tensors: the CPU counterpart of checkout into
//! device memory ([`super::device`], feature `cuda`), for a program that wants the model, not
//! its files.
//!
//! Every chunk is rebuilt on all cores and checked against its hash ([`Rebuilder::segment`]),
//! as a checkout does; one tensor's bytes are held twice at most (rebuilt, then copied into
//! candle's storage).

use candle_core::{DType, Device, Tensor};

use super::rev;
use super::Repository;
use crate::model::rebuild::{self, Rebuilder};
use crate::model::snapshot::{self, Snapshot};
use crate::store::copies::Copies;
use crate::store::history::{self, ObjectId};

/// One tensor of a revision: its safetensors file, its name, and its values.
#[derive(Debug, Clone)]
pub struct NamedTensor {
    pub file: String,
    pub name: String,
    pub tensor: Tensor,
}

/// Errors of [`Repository::tensors`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Rev(#[from] rev::Error),
    #[error(transparent)]
    History(#[from] history::Error),
    #[error("revision {rev}: {source}")]
    Snapshot { rev: String, source: snapshot::Error },
    #[error("revision {rev}: {source}")]
    Rebuild { rev: String, source: Box<rebuild::Error> },
    #[error("revision {rev}: {file}: tensor {tensor}: dtype {dtype} has no candle-core equivalent")]
    Dtype {
        rev: String,
        file: String,
        tensor: String,
        dtype: String,
    },
    #[error("revision {rev}: {file}: tensor {tensor}: {source}")]
    Candle {
        rev: String,
        file: String,
        tensor: String,
        source: Box<candle_core::Error>,
    },
}

/// candle-core's type for a safetensors dtype name, where it has one.
pub fn candle_dtype(dtype: &str) -> Option<DType> {
    Some(match dtype {
        "U8" => DType::U8,
        "U32" => DType::U32,
        "I16" => DType::I16,
        "I32" => DType::I32,
        "I64" => DType::I64,
        "BF16" => DType::BF16,
        "F16" => DType::F16,
        "F32" => DType::F32,
        "F64" => DType::F64,
        "F8_E4M3" => DType::F8E4M3,
        _ => return None,
    })
}

impl Repository {
    /// Rebuilds every tensor of revision `rev`'s safetensors files in memory, on the CPU, as
    /// candle-core tensors, in file and offset order. Fails, naming the tensor, on a dtype
    /// candle-core does not have (see [`candle_dtype`]) before rebuilding anything.
    pub fn tensors(&self, rev: &str) -> Result<Vec<NamedTensor>, Error> {
        let commit: ObjectId = self.resolve(rev)?;
        let info = self.history.commit_info(commit)?;
        let snap = Snapshot::load(&self.history, info.tree).map_err(|source| Error::Snapshot {
            rev: rev.into(),
            source,
        })?;
        let rebuild_err = |source| Error::Rebuild {
            rev: rev.into(),
            source: Box::new(source),
        };
        let base = snap.base().map_err(|source| Error::Snapshot {
            rev: rev.into(),
            source,
        })?;
        let mut files: Vec<_> = snap.manifests.iter().filter(|(_, m)| m.kind == "safetensors").collect();
        files.sort_by(|a, b| a.0.cmp(b.0));
        // Every tensor with its candle type, checked before any work.
        let mut wanted = Vec::new();
        for (file, m) in &files {
            for (seg, segment) in m.segments.iter().enumerate() {
                let Some(t) = &segment.tensor else { continue };
                let dtype = candle_dtype(&t.dtype).ok_or_else(|| Error::Dtype {
                    rev: rev.into(),
                    file: file.to_string(),
                    tensor: t.name.clone(),
                    dtype: t.dtype.clone(),
                })?;
                wanted.push((file.as_str(), seg, segment, t, dtype));
            }
        }
        let copies = Copies::new(&self.layout);
        let rebuilder = Rebuilder::new(&self.history, &self.cas, base)
            .map_err(rebuild_err)?
            .with_copies(&copies);
        let mut out = Vec::with_capacity(wanted.len());
        for (file, seg, segment, t, dtype) in wanted {
            let mut bytes = vec![0u8; segment.len as usize];
            rebuilder.segment(&snap, file, seg, &mut bytes).map_err(rebuild_err)?;
            let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
            let tensor =
                Tensor::from_raw_buffer(&bytes, dtype, &shape, &Device::Cpu).map_err(|source| Error::Candle {
                    rev: rev.into(),
                    file: file.to_string(),
                    tensor: t.name.clone(),
                    source: Box::new(source),
                })?;
            out.push(NamedTensor {
                file: file.to_string(),
                name: t.name.clone(),
                tensor,
            });
        }
        Ok(out)
    }
}
