//! Estimating what a source will cost before anything is written: a few tensors of each file
//! are coded in memory, alone and against their parent tensor in a base, and the two ratios
//! are extrapolated over the bytes of the tensors that have a parent and those that do not.
//!
//! Sampled tensors are spread evenly over each file; from each, the start of its first chunk
//! is coded exactly as `add` would code it (same chunk pairing, same codec choice), so the
//! estimate errs only where a tensor's start is not typical of the rest of it.

use super::encode::{self, is_model, map_file, plan_model, Base};
use super::manifest::Segment;
use super::records;
use super::source::SourceFile;
use super::table;
use super::Options;
use crate::codec;
use crate::codec::rows::{self, Piece};

/// How much to code: up to `tensors` tensors per file, `bytes` from each.
#[derive(Debug, Clone, Copy)]
pub struct SampleSize {
    pub tensors: usize,
    pub bytes: u64,
}

impl SampleSize {
    /// Nothing coded: counts of tensors and of those with a parent only.
    pub fn none() -> Self {
        SampleSize { tensors: 0, bytes: 0 }
    }
}

impl Default for SampleSize {
    fn default() -> Self {
        SampleSize {
            tensors: 16,
            bytes: 4 << 20,
        }
    }
}

/// The expected stored size of a source.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Estimate {
    pub raw_bytes: u64,
    pub tensors: usize,
    /// Tensors with a parent of the same name, dtype and shape in the base.
    pub matched_tensors: usize,
    pub matched_bytes: u64,
    /// Of `matched_bytes`, those of plain files' runs paired with bytes of the base's files.
    pub paired_bytes: u64,
    /// Bytes that are not tensors with a parent: other tensors, headers, other files.
    pub other_bytes: u64,
    /// Bytes coded to make the estimate.
    pub sampled_bytes: u64,
    /// Coded size over raw size of the sample, alone.
    pub alone_ratio: f64,
    /// Coded size over raw size of the sampled tensors that have a parent, against it.
    pub delta_ratio: Option<f64>,
    /// Expected bytes to store, against the base when there is one.
    pub bytes: u64,
    /// Expected bytes to store without a base.
    pub alone_bytes: u64,
    /// Text tables stored as records of their base's file of the same path, and Parquet and
    /// Arrow tables stored as rows of their base's table: how many, their bytes, the bytes of
    /// the records the base lacks (for tables: of the new-rows Parquet file), and the expected
    /// bytes to store them.
    pub record_files: usize,
    pub record_bytes: u64,
    pub new_record_bytes: u64,
    pub records_stored: u64,
}

/// Coded size over raw size of each sample so far: alone, and for those with a parent,
/// against it; for those without, alone again.
#[derive(Default)]
struct Tally {
    raw: u64,
    alone: Vec<f64>,
    delta: Vec<f64>,
    other: Vec<f64>,
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Estimates the stored size of `files` (as `add` resolves them), against `base` if given.
pub fn estimate(
    files: &[SourceFile],
    base: Option<&Base<'_>>,
    opts: &Options,
    size: SampleSize,
) -> Result<Estimate, encode::Error> {
    let mut est = Estimate::default();
    let mut tally = Tally::default();
    for file in files {
        est.raw_bytes += file.size;
        let model_map = is_model(file).then(|| map_file(file)).transpose()?;
        let model = match &model_map {
            Some(map) => plan_model(file, map.as_deref().unwrap_or(&[]), opts, base)?,
            None => None,
        };
        let Some((_, segments)) = model else {
            if file.size >= opts.small_file || is_model(file) {
                // A GGUF file that did not parse is mapped already.
                let map = match model_map {
                    Some(map) => map,
                    None => map_file(file)?,
                };
                let bytes = map.as_deref().unwrap_or(&[]);
                // A text table with a counterpart in the base: its records are all compared
                // (exact, and the bulk of the time), and a sample of its new bytes is coded.
                // Not when nothing is to be coded (the quick count `--base auto` makes).
                // A table with a counterpart in the base: planned as add plans it (its new rows
                // written to a scratch file, removed again), the new rows counted as stored.
                let tabled = match (size.tensors, base) {
                    (0, _) | (_, None) => None,
                    (_, Some(b)) => match table::check::format(file, opts.kind)? {
                        Some(f) => table::plan::plan(file, f, base, b.rebuilder.cas())?,
                        None => None,
                    },
                };
                if let Some((t, scratch)) = tabled {
                    let new_bytes = scratch.as_file().metadata().map_or(0, |m| m.len());
                    est.record_files += 1;
                    est.record_bytes += file.size;
                    est.new_record_bytes += new_bytes;
                    let table = rows::encode_pieces(&t.pieces);
                    let table = zstd::bulk::compress(&table, encode::PIECES_LEVEL).map_or(table.len(), |t| t.len());
                    est.records_stored += new_bytes + table as u64;
                    let n = size.bytes.min(file.size) as usize;
                    tally
                        .alone
                        .push(coded_len(&bytes[..n], None, 1, opts) as f64 / n.max(1) as f64);
                    continue;
                }
                let planned = match size.tensors {
                    0 => None,
                    _ => records::plan(file, bytes, opts, base, &|_, _| {})?,
                };
                if let Some(planned) = planned {
                    est.record_files += 1;
                    est.record_bytes += file.size;
                    est.new_record_bytes += planned.added;
                    let sample = new_bytes(bytes, &planned.pieces, size.bytes as usize);
                    let ratio = match sample.is_empty() {
                        true => 0.0,
                        false => coded_len(&sample, None, 1, opts) as f64 / sample.len() as f64,
                    };
                    // The piece table is small: compressed as add stores it.
                    let table = rows::encode_pieces(&planned.pieces);
                    let table = zstd::bulk::compress(&table, encode::PIECES_LEVEL).map_or(table.len(), |t| t.len());
                    est.records_stored += (planned.added as f64 * ratio) as u64 + table as u64;
                    let alone = coded_len(&bytes[..(size.bytes.min(file.size)) as usize], None, 1, opts);
                    tally.alone.push(alone as f64 / size.bytes.min(file.size).max(1) as f64);
                    continue;
                }
                // A plain file: its runs sampled as tensors are, against the base's bytes they
                // pair with.
                let segments = super::plain::plan(file, bytes, opts, base, &|_, _| {});
                for seg in &segments {
                    match seg.parent {
                        Some(_) => {
                            est.matched_bytes += seg.len;
                            est.paired_bytes += seg.len;
                        }
                        None => est.other_bytes += seg.len,
                    }
                }
                sample_runs(
                    file,
                    bytes,
                    &segments.iter().collect::<Vec<_>>(),
                    base,
                    opts,
                    size,
                    &mut tally,
                )?;
            } else {
                // Kept verbatim in git.
                est.other_bytes += file.size;
            }
            continue;
        };
        let bytes = model_map.as_ref().and_then(|m| m.as_deref()).unwrap_or(&[]);
        // Headers and padding.
        est.other_bytes += segments
            .iter()
            .filter(|s| s.tensor.is_none())
            .map(|s| s.len)
            .sum::<u64>();
        let tensors: Vec<_> = segments.iter().filter(|s| s.tensor.is_some()).collect();
        for seg in &tensors {
            est.tensors += 1;
            if seg.parent.is_some() {
                est.matched_tensors += 1;
                est.matched_bytes += seg.len;
            } else {
                est.other_bytes += seg.len;
            }
        }
        sample_runs(file, bytes, &tensors, base, opts, size, &mut tally)?;
    }
    est.sampled_bytes = tally.raw;
    est.alone_ratio = mean(&tally.alone).unwrap_or(1.0);
    est.delta_ratio = mean(&tally.delta);
    est.alone_bytes = (est.raw_bytes as f64 * est.alone_ratio) as u64;
    let other_ratio = mean(&tally.other).unwrap_or(est.alone_ratio);
    // Matched tensors that happened not to be sampled count at the ratio of those that were.
    est.bytes = est.records_stored
        + match est.delta_ratio {
            Some(d) => (est.matched_bytes as f64 * d + est.other_bytes as f64 * other_ratio) as u64,
            None => ((est.raw_bytes - est.record_bytes) as f64 * est.alone_ratio) as u64,
        };
    Ok(est)
}

/// Samples `runs` (a file's tensors, or the runs of a plain file) of `file`, whose bytes are
/// `bytes`, into `tally`: up to `size.tensors` chunk starts at positions spread evenly over their
/// bytes, so that every byte is as likely to be represented and each sample stands for an equal
/// share of them.
#[allow(clippy::too_many_arguments)]
fn sample_runs(
    file: &SourceFile,
    bytes: &[u8],
    tensors: &[&Segment],
    base: Option<&Base<'_>>,
    opts: &Options,
    size: SampleSize,
    tally: &mut Tally,
) -> Result<(), encode::Error> {
    let total: u64 = tensors.iter().map(|t| t.len).sum();
    let picks = size.tensors.min(tensors.len()) as u64;
    // Two positions in one chunk count it twice, as they stand for twice the bytes.
    let mut last: Option<((u64, usize), Option<Ratios>)> = None;
    for k in 0..picks {
        let mut at = (2 * k + 1) * total / (2 * picks);
        let Some(seg) = tensors.iter().find(|t| {
            let inside = at < t.len;
            at = at.saturating_sub(if inside { 0 } else { t.len });
            inside
        }) else {
            continue;
        };
        let c = (at / seg.chunk_size) as usize;
        let ratios = match last {
            Some((at, r)) if at == (seg.offset, c) => r,
            _ => {
                let r = sample_chunk(file, bytes, seg, c, base, opts, size, &mut tally.raw)?;
                last = Some(((seg.offset, c), r));
                r
            }
        };
        let Some(r) = ratios else { continue };
        tally.alone.push(r.alone);
        match r.delta {
            Some(d) => tally.delta.push(d),
            None => tally.other.push(r.alone),
        }
    }
    Ok(())
}

/// Up to `max` of the new bytes of `bytes`, in order.
fn new_bytes(bytes: &[u8], pieces: &[Piece], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0usize;
    for p in pieces {
        let len = p.len() as usize;
        if let Piece::New { .. } = p {
            let take = len.min(max - out.len());
            out.extend_from_slice(&bytes[at..at + take]);
            if out.len() == max {
                break;
            }
        }
        at += len;
    }
    out
}

/// Coded size over raw size of one sampled chunk, alone and against its parent's chunk.
#[derive(Debug, Clone, Copy)]
struct Ratios {
    alone: f64,
    delta: Option<f64>,
}

/// Codes the start of chunk `c` of `seg` (up to `size.bytes`), alone and against its parent's
/// chunk if it has one (none if the chunk is empty). Adds the bytes coded to `raw`.
#[allow(clippy::too_many_arguments)]
fn sample_chunk(
    file: &SourceFile,
    bytes: &[u8],
    seg: &Segment,
    c: usize,
    base: Option<&Base<'_>>,
    opts: &Options,
    size: SampleSize,
    raw: &mut u64,
) -> Result<Option<Ratios>, encode::Error> {
    let (start, end) = seg.chunk_range(c);
    let w = u64::from(seg.width);
    let n = (end - start).min(size.bytes.max(w)) / w * w;
    if n == 0 {
        return Ok(None);
    }
    let width = seg.width as usize;
    let from = (seg.offset + start) as usize;
    let data = &bytes[from..from + n as usize];
    *raw += n;
    let alone = coded_len(data, None, width, opts) as f64 / n as f64;
    let (Some(_), Some(b)) = (&seg.parent, base) else {
        return Ok(Some(Ratios { alone, delta: None }));
    };
    super::rebuild::with_buffer(|buf| {
        let buf = super::rebuild::first(buf, (end - start) as usize);
        b.rebuilder
            .parent_of(b.snapshot, &file.path, seg, c, buf)
            .map_err(|e| encode::Error::Parent {
                path: file.abs.clone(),
                source: Box::new(e),
            })?;
        let delta = coded_len(data, Some(&buf[..n as usize]), width, opts) as f64 / n as f64;
        Ok(Some(Ratios {
            alone,
            delta: Some(delta),
        }))
    })
}

fn coded_len(data: &[u8], parent: Option<&[u8]>, width: usize, opts: &Options) -> u64 {
    let coded = codec::encode_best(data, parent, width, opts.level);
    coded.bytes.map_or(0, |b| b.len() as u64)
}
