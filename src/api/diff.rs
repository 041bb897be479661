//! `diff`: what changed between two revisions, file by file and tensor by tensor.
//!
//! Tensors are paired by name across all files of the two snapshots, so a model sharded
//! differently on each side still pairs up. A pair with the same dtype and shape is compared
//! element by element: the fraction of elements whose bit patterns differ (every dtype) and,
//! for F64, F32, F16 and BF16, the L2 norm of the change `||b - a||` and its size relative to
//! `||a||`, summed in f64. Chunks are decoded a pair at a time, in parallel, so memory stays at a
//! few chunks whatever the size of the model; tensors whose chunk hashes all match are not
//! decoded at all, and chunk pairs with equal hashes are not compared.

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;
use serde::Serialize;

use super::record_diff::{record_diff, RecordDiff};
use super::rev;
use super::table_diff::table_diff;
use super::Repository;
use crate::model::gguf;
use crate::model::manifest::{Manifest, Segment, TensorMeta};
use crate::model::rebuild::{self, first, with_buffer, Rebuilder};
use crate::model::safetensors::{dtype_from_name, Dtype};
use crate::model::snapshot::{self, Snapshot};
use crate::store::cas::Key;
use crate::store::history;

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
    #[error("revision {rev}: tensor {tensor:?} has unknown dtype {dtype:?}")]
    UnknownDtype { rev: String, tensor: String, dtype: String },
    #[error("tensor {tensor:?}: the same dtype and shape, but {len_a} bytes in {rev_a} and {len_b} in {rev_b}")]
    Length {
        tensor: String,
        rev_a: String,
        len_a: u64,
        rev_b: String,
        len_b: u64,
    },
}

/// How a file or tensor differs from one revision to the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Changed,
    Unchanged,
    /// Another dtype: not compared element by element.
    Retyped,
    /// The same dtype, another shape: not compared element by element.
    Reshaped,
}

/// One side of the comparison.
#[derive(Debug, Serialize)]
pub struct Revision {
    pub rev: String,
    pub commit: String,
}

#[derive(Debug, Serialize)]
pub struct FileDiff {
    pub path: String,
    pub change: Change,
    pub size_a: Option<u64>,
    pub size_b: Option<u64>,
    /// For a changed text file (lines, CSV, TSV): its records added, removed and modified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<RecordDiff>,
}

/// Where a tensor is on one side, and what it is.
#[derive(Debug, Serialize)]
pub struct TensorSide {
    pub file: String,
    pub dtype: String,
    pub shape: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub struct TensorDiff {
    pub name: String,
    pub change: Change,
    pub a: Option<TensorSide>,
    pub b: Option<TensorSide>,
    /// Elements compared (the product of the shape); null unless compared (changed, unchanged).
    pub elements: Option<u64>,
    /// Elements whose bit patterns differ.
    pub changed_elements: Option<u64>,
    /// `changed_elements / elements`; null for an empty tensor.
    pub changed_fraction: Option<f64>,
    /// `||b - a||_2` over the decoded values (F64, F32, F16, BF16 only).
    pub l2: Option<f64>,
    /// `||b - a||_2 / ||a||_2`; null where `||a||_2` is 0 (then `l2` is the absolute change).
    pub relative_l2: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct TensorCounts {
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
    pub unchanged: usize,
    pub retyped: usize,
    pub reshaped: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct FileCounts {
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
    pub unchanged: usize,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub tensors: TensorCounts,
    pub files: FileCounts,
    /// Elements of the tensors compared element by element (changed and unchanged).
    pub elements: u64,
    pub changed_elements: u64,
    /// `changed_elements / elements`; null when nothing was compared.
    pub changed_fraction: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub a: Revision,
    pub b: Revision,
    /// Files added, removed and changed (and unchanged ones when asked for), by path.
    pub files: Vec<FileDiff>,
    /// Tensors added, removed, changed, retyped and reshaped (and unchanged ones when asked
    /// for), by name.
    pub tensors: Vec<TensorDiff>,
    pub summary: Summary,
}

/// A loaded revision and the rebuilder for its chunks.
pub(super) struct Loaded<'r> {
    pub(super) rev: String,
    commit: history::ObjectId,
    pub(super) snap: Snapshot,
    pub(super) rebuilder: Rebuilder<'r>,
}

impl Loaded<'_> {
    pub(super) fn rebuild_err(&self) -> impl Fn(rebuild::Error) -> Error + '_ {
        |source| Error::Rebuild {
            rev: self.rev.clone(),
            source: Box::new(source),
        }
    }

    /// Where the tensor `key` names is, and what it is: by name alone, wherever it is (shards
    /// cut differently), or by file and name.
    fn tensor(&self, key: &TensorKey) -> Option<(&str, usize, &TensorMeta)> {
        let (file, seg) = match &key.file {
            None => self.snap.tensors.get(&key.name).map(|(f, s)| (f.as_str(), *s))?,
            Some(f) => {
                let (path, m) = self.snap.manifests.get_key_value(f)?;
                let s = (m.segments.iter()).position(|s| s.tensor.as_ref().is_some_and(|t| t.name == key.name))?;
                (path.as_str(), s)
            }
        };
        let t = (self.segment(file, seg).tensor.as_ref()).expect("indexed segments are tensors");
        Some((file, seg, t))
    }

    fn segment(&self, file: &str, seg: usize) -> &Segment {
        &self.snap.manifests[file].segments[seg]
    }

    /// Reads bytes `start .. start + out.len()` of segment `seg` of `file`, decoding the chunks
    /// that hold them (any number, each checked against its hash).
    fn read(&self, file: &str, seg: usize, start: u64, out: &mut [u8]) -> Result<(), rebuild::Error> {
        let segment = self.segment(file, seg);
        let end = start + out.len() as u64;
        let mut at = start;
        while at < end {
            let c = (at / segment.chunk_size) as usize;
            let (c_start, c_end) = segment.chunk_range(c);
            let upto = c_end.min(end);
            let dest = &mut out[(at - start) as usize..(upto - start) as usize];
            if at == c_start && upto == c_end {
                self.rebuilder.chunk(&self.snap, file, seg, c, dest)?;
            } else {
                with_buffer(|buf| {
                    let chunk = first(buf, (c_end - c_start) as usize);
                    self.rebuilder.chunk(&self.snap, file, seg, c, chunk)?;
                    dest.copy_from_slice(&chunk[(at - c_start) as usize..(upto - c_start) as usize]);
                    Ok::<(), rebuild::Error>(())
                })?;
            }
            at = upto;
        }
        Ok(())
    }
}

/// Which tensors of two revisions pair up: by name, or by file and name where a name is in
/// more than one file of either (a folder of GGUF files, one per quantization of one model).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct TensorKey {
    name: String,
    file: Option<String>,
}

/// The keys of the tensors of `sides`, in name order.
fn tensor_keys(sides: [&Snapshot; 2]) -> BTreeSet<TensorKey> {
    // Per name, the files that hold it on each side.
    let mut files: BTreeMap<&str, [BTreeSet<&str>; 2]> = BTreeMap::new();
    for (side, snap) in sides.iter().enumerate() {
        for (path, m) in &snap.manifests {
            for t in m.segments.iter().filter_map(|s| s.tensor.as_ref()) {
                files.entry(&t.name).or_default()[side].insert(path);
            }
        }
    }
    let mut keys = BTreeSet::new();
    for (name, [a, b]) in files {
        if a.len() > 1 || b.len() > 1 {
            keys.extend(a.union(&b).map(|path| TensorKey {
                name: name.to_string(),
                file: Some(path.to_string()),
            }));
        } else {
            keys.insert(TensorKey {
                name: name.to_string(),
                file: None,
            });
        }
    }
    keys
}

/// A tensor present on both sides with the same dtype and shape.
struct Pair<'a> {
    /// Index into the report's tensor list.
    row: usize,
    /// How its elements are read.
    dtype: Dtype,
    /// A block-quantized GGUF tensor: compared as bytes (`dtype` U8), reported changed or not,
    /// with no count of elements.
    blocks: bool,
    a: (&'a str, usize),
    b: (&'a str, usize),
}

/// A byte range of a pair's segments, compared as one job.
struct Window {
    pair: usize,
    start: u64,
    end: u64,
    /// Both sides are this one chunk, with equal hashes: no bits differ.
    same: bool,
}

/// Sums over a window.
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    changed: u64,
    /// Sum of (b - a)^2.
    d2: f64,
    /// Sum of a^2.
    a2: f64,
}

impl Repository {
    /// Compares revision `rev_b` with revision `rev_a`. `all` lists unchanged files and tensors
    /// too (they are always counted in the summary).
    /// Compares two revisions; `rows` records of each kind are listed for changed text files.
    pub fn diff(&self, rev_a: &str, rev_b: &str, all: bool, rows: usize) -> Result<Report, Error> {
        let a = self.load(rev_a)?;
        let b = self.load(rev_b)?;

        // Files.
        let mut files = Vec::new();
        let mut file_counts = FileCounts::default();
        let entries = |l: &Loaded| -> BTreeMap<String, u64> {
            l.snap.meta.files.iter().map(|f| (f.path.clone(), f.size)).collect()
        };
        let (fa, fb) = (entries(&a), entries(&b));
        let paths: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
        for path in paths {
            let (size_a, size_b) = (fa.get(path).copied(), fb.get(path).copied());
            let change = match (size_a, size_b) {
                (None, _) => Change::Added,
                (_, None) => Change::Removed,
                _ if self.same_file(&a, &b, path)? => Change::Unchanged,
                _ => Change::Changed,
            };
            match change {
                Change::Added => file_counts.added += 1,
                Change::Removed => file_counts.removed += 1,
                Change::Unchanged => file_counts.unchanged += 1,
                _ => file_counts.changed += 1,
            }
            if all || change != Change::Unchanged {
                let is_model = |l: &Loaded| {
                    (l.snap.manifests.get(path)).is_some_and(|m| m.kind == "safetensors" || m.kind == "gguf")
                };
                let records = match change {
                    Change::Changed if !is_model(&a) && !is_model(&b) => {
                        let is_table = |l: &Loaded| l.snap.manifests.get(path).is_some_and(|m| m.table.is_some());
                        match table_diff(self, &a, &b, path, rows)? {
                            Some(d) => Some(d),
                            // A table rebuilt from rows has no byte ranges to compare.
                            None if is_table(&a) || is_table(&b) => None,
                            None => record_diff(self, &a, &b, path, rows)?,
                        }
                    }
                    _ => None,
                };
                files.push(FileDiff {
                    path: path.clone(),
                    change,
                    size_a,
                    size_b,
                    records,
                });
            }
        }

        // Tensors: pair by name, classify, and collect the pairs to compare.
        let keys = tensor_keys([&a.snap, &b.snap]);
        let mut tensor_rows = Vec::new();
        let mut pairs = Vec::new();
        let describe = |(file, _, t): (&str, usize, &TensorMeta)| TensorSide {
            file: file.to_string(),
            dtype: t.dtype.clone(),
            shape: t.shape.clone(),
        };
        for key in &keys {
            let name = &key.name;
            let (sa, sb) = (a.tensor(key), b.tensor(key));
            let change = match (sa, sb) {
                (None, _) => Change::Added,
                (_, None) => Change::Removed,
                (Some((_, _, ta)), Some((_, _, tb))) if ta.dtype != tb.dtype => Change::Retyped,
                (Some((_, _, ta)), Some((_, _, tb))) if ta.shape != tb.shape => Change::Reshaped,
                (Some((fa, ia, ta)), Some((fb, ib, _))) => {
                    // A GGUF tensor of a block-quantized type (its blocks mix scales and
                    // packed codes) is compared as bytes.
                    let (dtype, blocks) = match (dtype_from_name(&ta.dtype), gguf::type_by_name(&ta.dtype)) {
                        (Some(dtype), _) => (dtype, false),
                        (None, Some(_)) => (Dtype::U8, true),
                        (None, None) => {
                            return Err(Error::UnknownDtype {
                                rev: a.rev.clone(),
                                tensor: name.clone(),
                                dtype: ta.dtype.clone(),
                            })
                        }
                    };
                    let (sega, segb) = (a.segment(fa, ia), b.segment(fb, ib));
                    if sega.len != segb.len {
                        return Err(Error::Length {
                            tensor: name.clone(),
                            rev_a: a.rev.clone(),
                            len_a: sega.len,
                            rev_b: b.rev.clone(),
                            len_b: segb.len,
                        });
                    }
                    pairs.push(Pair {
                        row: tensor_rows.len(),
                        dtype,
                        blocks,
                        a: (fa, ia),
                        b: (fb, ib),
                    });
                    Change::Changed // until compared
                }
            };
            tensor_rows.push(TensorDiff {
                name: name.clone(),
                change,
                a: sa.map(describe),
                b: sb.map(describe),
                elements: None,
                changed_elements: None,
                changed_fraction: None,
                l2: None,
                relative_l2: None,
            });
        }

        // Compare the pairs: one job per window, every job in parallel, summed per pair in
        // window order (so the sums, and the report, are the same on every run).
        let mut windows = Vec::new();
        for (p, pair) in pairs.iter().enumerate() {
            let (sega, segb) = (a.segment(pair.a.0, pair.a.1), b.segment(pair.b.0, pair.b.1));
            let same_geometry = sega.chunk_size == segb.chunk_size;
            // Equal hashes throughout: unchanged, and not decoded at all unless listed (then
            // side a alone, for the norm its relative change is measured against).
            let equal = same_geometry && sega.chunks.iter().zip(&segb.chunks).all(|(x, y)| x.hash == y.hash);
            if equal && !(all && is_float(pair.dtype)) {
                continue;
            }
            // Windows follow side a's chunks, their edges moved down to whole groups of
            // elements (dtypes below a byte: F6 packs 4 elements in 3 bytes).
            let group = group_bytes(pair.dtype);
            let mut edges: Vec<u64> = (0..sega.chunks.len())
                .map(|c| sega.chunk_range(c).0 / group * group)
                .collect();
            edges.push(sega.len);
            edges.dedup();
            for (c, w) in edges.windows(2).enumerate() {
                let same = same_geometry
                    && sega.chunks.len() == edges.len() - 1
                    && sega.chunk_range(c) == (w[0], w[1])
                    && sega.chunks[c].hash == segb.chunks[c].hash;
                windows.push(Window {
                    pair: p,
                    start: w[0],
                    end: w[1],
                    same,
                });
            }
        }
        let sums: Vec<Sums> = windows
            .par_iter()
            .map(|w| compare_window(&a, &b, &pairs[w.pair], w))
            .collect::<Result<_, _>>()?;
        let mut totals = vec![Sums::default(); pairs.len()];
        for (w, s) in windows.iter().zip(&sums) {
            let t = &mut totals[w.pair];
            t.changed += s.changed;
            t.d2 += s.d2;
            t.a2 += s.a2;
        }

        let (mut elements, mut changed_elements) = (0u64, 0u64);
        for (p, pair) in pairs.iter().enumerate() {
            let row = &mut tensor_rows[pair.row];
            let n: u64 = row.a.as_ref().expect("paired").shape.iter().product();
            let float = is_float(pair.dtype);
            let t = totals[p];
            row.change = if t.changed == 0 {
                Change::Unchanged
            } else {
                Change::Changed
            };
            if pair.blocks {
                continue;
            }
            row.elements = Some(n);
            row.changed_elements = Some(t.changed);
            row.changed_fraction = (n > 0).then(|| t.changed as f64 / n as f64);
            if float {
                let l2 = t.d2.sqrt();
                row.l2 = Some(l2);
                row.relative_l2 = (t.a2 > 0.0).then(|| l2 / t.a2.sqrt());
            }
            elements += n;
            changed_elements += t.changed;
        }

        let mut tensor_counts = TensorCounts::default();
        for r in &tensor_rows {
            *match r.change {
                Change::Added => &mut tensor_counts.added,
                Change::Removed => &mut tensor_counts.removed,
                Change::Changed => &mut tensor_counts.changed,
                Change::Unchanged => &mut tensor_counts.unchanged,
                Change::Retyped => &mut tensor_counts.retyped,
                Change::Reshaped => &mut tensor_counts.reshaped,
            } += 1;
        }
        if !all {
            tensor_rows.retain(|r| r.change != Change::Unchanged);
        }
        Ok(Report {
            a: Revision {
                rev: a.rev.clone(),
                commit: a.commit.to_string(),
            },
            b: Revision {
                rev: b.rev.clone(),
                commit: b.commit.to_string(),
            },
            files,
            tensors: tensor_rows,
            summary: Summary {
                tensors: tensor_counts,
                files: file_counts,
                elements,
                changed_elements,
                changed_fraction: (elements > 0).then(|| changed_elements as f64 / elements as f64),
            },
        })
    }

    fn load(&self, rev: &str) -> Result<Loaded<'_>, Error> {
        let commit = self.resolve(rev)?;
        let info = self.history.commit_info(commit)?;
        let snapshot_err = |source| Error::Snapshot {
            rev: rev.into(),
            source,
        };
        let snap = Snapshot::load(&self.history, info.tree).map_err(snapshot_err)?;
        let base = snap.base().map_err(snapshot_err)?;
        let rebuilder = Rebuilder::new(&self.history, &self.cas, base).map_err(|source| Error::Rebuild {
            rev: rev.into(),
            source: Box::new(source),
        })?;
        Ok(Loaded {
            rev: rev.into(),
            commit,
            snap,
            rebuilder,
        })
    }

    /// Whether file `path`, present on both sides, has the same content: git blob ids for files
    /// kept verbatim, chunk hashes for manifests (decoding only where the two were cut into
    /// chunks differently).
    fn same_file(&self, a: &Loaded, b: &Loaded, path: &str) -> Result<bool, Error> {
        let (ma, mb) = (a.snap.manifests.get(path), b.snap.manifests.get(path));
        match (ma, mb) {
            (None, None) => Ok(a.snap.blobs[path] == b.snap.blobs[path]),
            // Tables rebuilt from rows: the same rows (their hash) and format; else changed.
            (Some(ma), Some(mb)) if ma.table.is_some() || mb.table.is_some() => Ok(ma
                .table
                .as_ref()
                .zip(mb.table.as_ref())
                .is_some_and(|(x, y)| x.hash == y.hash && x.rows == y.rows && x.format == y.format)),
            (Some(m), None) | (None, Some(m)) if m.table.is_some() => Ok(false),
            // A records file's segments hold only its new bytes: compare the bytes.
            (Some(ma), Some(mb)) if copies(ma) || copies(mb) => same_bytes(a, b, path, ma.size, mb.size),
            (Some(ma), Some(mb)) => same_manifest(a, ma, mb, path),
            // Kept verbatim on one side only (another small-file threshold): hash the verbatim
            // content the way the manifest's chunks cut it.
            (Some(m), None) | (None, Some(m)) => {
                let verbatim = if ma.is_none() { a } else { b };
                let content = self.history.read_blob(verbatim.snap.blobs[path])?;
                if content.len() as u64 != m.size {
                    return Ok(false);
                }
                Ok(m.segments.iter().all(|s| {
                    (0..s.chunks.len()).all(|c| {
                        let (start, end) = s.chunk_range(c);
                        Key::of(&content[(s.offset + start) as usize..(s.offset + end) as usize]) == s.chunks[c].hash
                    })
                }))
            }
        }
    }
}

fn copies(m: &Manifest) -> bool {
    m.records.is_some()
}

/// Whether file `path` has the same bytes on both sides, read in windows of a few MiB.
fn same_bytes(a: &Loaded, b: &Loaded, path: &str, size_a: u64, size_b: u64) -> Result<bool, Error> {
    const WINDOW: u64 = 4 << 20;
    if size_a != size_b {
        return Ok(false);
    }
    let mut at = 0;
    while at < size_a {
        let n = WINDOW.min(size_a - at) as usize;
        let (mut x, mut y) = (vec![0u8; n], vec![0u8; n]);
        a.rebuilder
            .read_range(&a.snap, path, at, &mut x)
            .map_err(a.rebuild_err())?;
        b.rebuilder
            .read_range(&b.snap, path, at, &mut y)
            .map_err(b.rebuild_err())?;
        if x != y {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Whether two manifests describe the same bytes. The segments are cut from the content
/// (header, then one per tensor), so equal files have equal segments; chunks of equal size
/// compare by hash, and a segment cut into chunks of another size is decoded on side a and
/// hashed along side b's chunks.
fn same_manifest(a: &Loaded, ma: &Manifest, mb: &Manifest, path: &str) -> Result<bool, Error> {
    if ma.size != mb.size || ma.segments.len() != mb.segments.len() {
        return Ok(false);
    }
    for (i, (sa, sb)) in ma.segments.iter().zip(&mb.segments).enumerate() {
        if sa.offset != sb.offset || sa.len != sb.len {
            return Ok(false);
        }
        if sa.chunk_size == sb.chunk_size {
            if sa.chunks.iter().zip(&sb.chunks).any(|(x, y)| x.hash != y.hash) {
                return Ok(false);
            }
            continue;
        }
        let equal = (0..sb.chunks.len())
            .into_par_iter()
            .map(|c| {
                let (start, end) = sb.chunk_range(c);
                with_buffer(|buf| {
                    let bytes = first(buf, (end - start) as usize);
                    a.read(path, i, start, bytes).map_err(a.rebuild_err())?;
                    Ok(Key::of(bytes) == sb.chunks[c].hash)
                })
            })
            .collect::<Result<Vec<bool>, Error>>()?;
        if equal.contains(&false) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Compares one window of a pair: decodes both sides (side a alone where the hashes say they
/// are equal and its norm is needed; nothing where not even that) and sums.
fn compare_window(a: &Loaded, b: &Loaded, pair: &Pair, w: &Window) -> Result<Sums, Error> {
    let float = is_float(pair.dtype);
    if w.same && !float {
        return Ok(Sums::default());
    }
    let len = (w.end - w.start) as usize;
    with_buffer(|buf_a| {
        let bytes_a = first(buf_a, len);
        a.read(pair.a.0, pair.a.1, w.start, bytes_a).map_err(a.rebuild_err())?;
        if let (true, Some(value)) = (w.same, float_reader(pair.dtype)) {
            let a2 = bytes_a
                .chunks_exact(pair.dtype.bitsize() / 8)
                .map(|e| value(e).powi(2))
                .sum();
            return Ok(Sums { a2, ..Sums::default() });
        }
        with_buffer(|buf_b| {
            let bytes_b = first(buf_b, len);
            b.read(pair.b.0, pair.b.1, w.start, bytes_b).map_err(b.rebuild_err())?;
            Ok(sums(pair.dtype, bytes_a, bytes_b))
        })
    })
}

/// Bytes that hold a whole number of elements of `dtype` (3 for the 6-bit floats).
fn group_bytes(dtype: Dtype) -> u64 {
    let bits = dtype.bitsize() as u64;
    let lcm = bits * 8 / gcd(bits, 8);
    lcm / 8
}

fn gcd(mut x: u64, mut y: u64) -> u64 {
    while y != 0 {
        (x, y) = (y, x % y);
    }
    x
}

fn is_float(dtype: Dtype) -> bool {
    float_reader(dtype).is_some()
}

/// How to read one little-endian element of `dtype` as f64 (float dtypes only).
fn float_reader(dtype: Dtype) -> Option<fn(&[u8]) -> f64> {
    Some(match dtype {
        Dtype::F64 => |e| f64::from_le_bytes(e.try_into().expect("8 bytes")),
        Dtype::F32 => |e| f32::from_le_bytes(e.try_into().expect("4 bytes")).into(),
        Dtype::F16 => |e| half::f16::from_le_bytes(e.try_into().expect("2 bytes")).to_f64(),
        Dtype::BF16 => |e| half::bf16::from_le_bytes(e.try_into().expect("2 bytes")).to_f64(),
        _ => return None,
    })
}

/// Sums over two windows of equal length holding whole elements of `dtype`.
fn sums(dtype: Dtype, a: &[u8], b: &[u8]) -> Sums {
    let mut s = Sums::default();
    let bits = dtype.bitsize();
    if bits.is_multiple_of(8) {
        let w = bits / 8;
        s.changed = a.chunks_exact(w).zip(b.chunks_exact(w)).filter(|(x, y)| x != y).count() as u64;
    } else {
        // Elements below a byte, packed from the lowest bit of the first byte up.
        let n = a.len() * 8 / bits;
        s.changed = (0..n)
            .filter(|e| packed(a, e * bits, bits) != packed(b, e * bits, bits))
            .count() as u64;
    }
    if let Some(value) = float_reader(dtype) {
        let w = bits / 8;
        for (x, y) in a.chunks_exact(w).zip(b.chunks_exact(w)) {
            let (x, y) = (value(x), value(y));
            s.d2 += (y - x) * (y - x);
            s.a2 += x * x;
        }
    }
    s
}

/// `len` bits (at most 8) of `bytes` from bit `at` on, the lowest bit of each byte first.
fn packed(bytes: &[u8], at: usize, len: usize) -> u16 {
    let byte = at / 8;
    let word = u16::from(bytes[byte]) | bytes.get(byte + 1).map_or(0, |&x| u16::from(x) << 8);
    (word >> (at % 8)) & ((1 << len) - 1)
}
