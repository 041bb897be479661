//! A size target spent on low-rank ranks (`add --lossy lowrank --target-size`): instead of one
//! rank for every matrix, each matrix stored lossy gets the rank that its share of the target
//! buys ([`lossy::allocate_ranks`]): rank steps are taken, across all the matrices of the
//! source, in the order of the squared error each removes per stored byte, until the target is
//! spent. So the ranks go where the fine-tune's change is large and cheap to keep.
//!
//! The target covers the tensors of the source's safetensors files: the tensors kept exact
//! (vectors, tensors the base lacks), coded here once to learn their size, the headers of the
//! lossy tensors' factor blobs, and the factors of the matrices stored lossy, at what a rank of
//! each costs once coded (measured on its factors at the largest rank it may take, [`MAX_RANK`]
//! or its smaller side), with the headers of their chunks from their first rank on (a matrix
//! with none keeps its parent's chunks, which store nothing). The safetensors headers and other
//! files are outside it. The stored size lands near the target, not exactly on it: a rank's coded cost is
//! an average over the ranks.
//!
//! Planning reads each matrix and its parent once, one matrix at a time, for its singular values
//! and rank cost; the factors are then computed at the chosen ranks as for a fixed rank.

use std::collections::HashMap;

use rayon::prelude::*;

use super::encode::{is_safetensors, map_file, plan_model, svd_seed, tensor_delta, Base, Error};
use super::manifest::Segment;
use super::source::SourceFile;
use super::Options;
use crate::codec::lossy::{Contender, Target};
use crate::codec::{self, lossy};
use crate::store::cas;

/// The rank of each matrix stored lossy: by (file path in the snapshot, tensor name).
pub type Ranks = HashMap<(String, String), u32>;

/// The most rank any one matrix takes under a target.
pub const MAX_RANK: usize = 256;

/// The ranks chosen for a target, and what the target was spent on.
#[derive(Debug)]
pub struct Plan {
    pub ranks: Ranks,
    /// The target, in bytes.
    pub target: u64,
    /// Bytes of the tensors kept exact, coded, and of the headers of the lossy ones' factors.
    pub exact: u64,
    /// Bytes the factors at the chosen ranks are expected to take, coded, with the headers of
    /// the chunks of the matrices that have a rank (one with none keeps its parent's).
    pub factors: u64,
}

/// Chooses the rank of every matrix of `files` that `opts` stores lossy against `base`, so
/// that the tensors fit `target`.
pub fn ranks(files: &[SourceFile], opts: &Options, base: &Base<'_>, target: Target) -> Result<Plan, Error> {
    let mut names = Vec::new();
    let mut contenders = Vec::new();
    let (mut raw, mut exact) = (0u64, 0u64);
    for file in files.iter().filter(|f| is_safetensors(f)) {
        let map = map_file(file)?;
        let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
        let Some((_, segments)) = plan_model(file, bytes, opts, Some(base))? else {
            continue;
        };
        for seg in &segments {
            let Some(meta) = &seg.tensor else { continue };
            raw += seg.len;
            if seg.lossy.is_none() {
                exact += coded_size(file, bytes, seg, base, opts)?;
                continue;
            }
            // The factor is a blob whatever the rank; the chunks, once the matrix has a rank.
            exact += cas::HEADER as u64;
            let (rows, cols) = meta.matrix();
            let delta = tensor_delta(file, bytes, seg, base)?;
            let contender = if delta.iter().all(|&d| d == 0.0) {
                // Unchanged: nothing to keep.
                Contender {
                    rank_cost: 1,
                    first_cost: 0,
                    spectrum: Vec::new(),
                }
            } else {
                let cap = MAX_RANK.min(rows).min(cols);
                let (factors, spectrum) = lossy::factors_and_spectrum(&delta, rows, cols, cap, svd_seed(&meta.name));
                Contender {
                    rank_cost: factors.coded_rank_cost(opts.level),
                    first_cost: (seg.chunks_needed() * (lossy::LOWRANK_OVERHEAD + cas::HEADER)) as u64,
                    spectrum,
                }
            };
            drop(delta);
            contenders.push(contender);
            names.push((file.path.clone(), meta.name.clone()));
        }
    }
    let bytes = target.bytes(raw);
    if bytes < exact {
        return Err(Error::TargetTooSmall {
            target: match target {
                Target::Share { ppm } => format!("{}% of {raw} bytes of tensors: {bytes} bytes", ppm as f64 / 1e4),
                Target::Bytes(_) => format!("{bytes} bytes"),
            },
            exact,
        });
    }
    let target = bytes;
    let chosen = lossy::allocate_ranks(&contenders, target - exact);
    let factors = contenders.iter().zip(&chosen).map(|(c, &r)| c.cost(r)).sum();
    Ok(Plan {
        ranks: names.into_iter().zip(chosen).collect(),
        target,
        exact,
        factors,
    })
}

/// Bytes the chunks of tensor `seg` of `file` take coded losslessly against their parents.
fn coded_size(file: &SourceFile, bytes: &[u8], seg: &Segment, base: &Base<'_>, opts: &Options) -> Result<u64, Error> {
    (0..seg.chunks_needed())
        .into_par_iter()
        .map(|c| {
            let (start, end) = seg.chunk_range(c);
            let data = &bytes[(seg.offset + start) as usize..(seg.offset + end) as usize];
            let mut parent = Vec::new();
            if seg.parent.is_some() {
                parent.resize(data.len(), 0);
                base.rebuilder
                    .parent_of(base.snapshot, &file.path, seg, c, &mut parent)
                    .map_err(|e| Error::Parent {
                        path: file.abs.clone(),
                        source: Box::new(e),
                    })?;
            }
            let parent = seg.parent.as_ref().map(|_| &parent[..]);
            let coded = codec::encode_best(data, parent, seg.width as usize, opts.level);
            Ok(coded.bytes.map_or(0, |b| b.len() as u64))
        })
        .sum()
}
