//! Turning one source file into a manifest: the file is memory-mapped, cut into segments
//! (safetensors header, tensors; or plain bytes), each segment into chunks, and every chunk is
//! coded in parallel against the same chunk of its parent tensor (found by name in the base)
//! and written to the blob store. Pages already coded are dropped from the mapping, so memory
//! stays bounded by the chunks in flight, whatever the file's size.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;

use memmap2::{Mmap, UncheckedAdvice};
use rayon::prelude::*;

use super::gguf;
use super::manifest::{
    Chunk, Lossy, Manifest, ParentRef, RecordsRef, Segment, TableRef, TensorMeta, MANIFEST_FORMAT,
    MANIFEST_FORMAT_GGUF, MANIFEST_FORMAT_RANGES, MANIFEST_FORMAT_RECORDS, MANIFEST_FORMAT_TABLE,
};
use super::rebuild::{self, Rebuilder};
use super::records;
use super::safetensors::{self, dtype_name, plane_width, HeaderError};
use super::snapshot::Snapshot;
use super::source::SourceFile;
use super::table;
use super::Options;
use crate::codec::lossy::{self, Factors, Float, Tier};
use crate::codec::rows::{self, Piece};
use crate::codec::{self, Codec};
use crate::store::cas::{self, Cas, Compress, Key};
use crate::store::index::BlobSizes;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(transparent)]
    Gguf(#[from] gguf::HeaderError),
    #[error("{path}: decoding the base's tensor: {source}")]
    Parent { path: PathBuf, source: Box<rebuild::Error> },
    #[error(transparent)]
    Blob(#[from] cas::Error),
    #[error(transparent)]
    Table(#[from] super::table::Error),
    #[error("{path} changed while it was being added (now {now} bytes, was {was})")]
    Changed { path: PathBuf, now: u64, was: u64 },
    #[error("the target size ({target}) is less than the {exact} bytes that the tensors kept exact (vectors, other dtypes, tensors the base lacks) and the lossy tensors' factor headers take")]
    TargetTooSmall { target: String, exact: u64 },
}

/// Chunks stored `full` anywhere in the store, by [`full_key`]: their blob and its sizes
/// ([`crate::store::index::Index::full_chunks`]).
pub type KnownChunks = std::collections::HashMap<Key, (Key, BlobSizes)>;

/// What identifies a `full` chunk for reuse: its bytes and its element width (a coded chunk
/// records the width, so the same bytes as another dtype need their own coding).
pub fn full_key(hash: &Key, width: u32) -> Key {
    let mut bytes = [0u8; 36];
    bytes[..32].copy_from_slice(&hash.0);
    bytes[32..].copy_from_slice(&width.to_le_bytes());
    Key::of(&bytes)
}

/// A file coded and stored.
#[derive(Debug)]
pub struct Encoded {
    pub manifest: Manifest,
    /// Every blob the manifest uses, with its sizes.
    pub blobs: Vec<(Key, BlobSizes)>,
    /// Chunks stored `full`: ([`full_key`], blob), for reuse by later adds.
    pub full: Vec<(Key, Key)>,
    /// Bytes of blobs this call wrote (those not already in the store).
    pub new_bytes: u64,
    /// Whether some chunk gives back other bytes than the source's (a lossy tier changed it).
    pub approximate: bool,
}

/// A blob a chunk was stored in, and whether this call wrote it.
struct StoredBlob {
    key: Key,
    sizes: BlobSizes,
    new: bool,
}

/// Where delta parents come from: the base snapshot and what can decode its chunks.
pub struct Base<'a> {
    pub snapshot: &'a Snapshot,
    pub rebuilder: &'a Rebuilder<'a>,
}

/// Whether `file` is coded as a safetensors file.
pub fn is_safetensors(file: &SourceFile) -> bool {
    file.path.ends_with(".safetensors")
}

/// Whether `file` is read as a GGUF file (its header then decides whether it parses).
pub fn is_gguf(file: &SourceFile) -> bool {
    file.path.ends_with(".gguf")
}

/// Whether `file` is of a format whose tensors sparse reads by name (safetensors, GGUF): such
/// files are coded whatever their size, and their headers checked before anything is stored.
pub fn is_model(file: &SourceFile) -> bool {
    is_safetensors(file) || is_gguf(file)
}

/// The kind and segments of a model file's manifest (safetensors, or a GGUF file whose tensor
/// types are all known), tensors paired by name with `base`'s; `None` for any other file.
pub fn plan_model(
    file: &SourceFile,
    bytes: &[u8],
    opts: &Options,
    base: Option<&Base<'_>>,
) -> Result<Option<(&'static str, Vec<Segment>)>, Error> {
    if is_safetensors(file) {
        let header = safetensors::parse(&file.abs, bytes)?;
        return Ok(Some(("safetensors", plan_safetensors(&header, &file.path, opts, base))));
    }
    if is_gguf(file) {
        if let Some(header) = gguf::parse(&file.abs, bytes)? {
            let size = bytes.len() as u64;
            return Ok(Some(("gguf", plan_gguf(&header, &file.path, size, opts, base))));
        }
    }
    Ok(None)
}

/// Maps `file` read-only (`None` when it is empty), checking it still has the size it was listed with.
pub fn map_file(file: &SourceFile) -> Result<Option<Mmap>, Error> {
    let io = |source| Error::Io {
        path: file.abs.clone(),
        source,
    };
    let handle = File::open(&file.abs).map_err(io)?;
    let size = handle.metadata().map_err(io)?.len();
    if size != file.size {
        return Err(Error::Changed {
            path: file.abs.clone(),
            now: size,
            was: file.size,
        });
    }
    // SAFETY: the map is read-only; a source modified while it is being added can yield a chunk
    // whose bytes changed between reads, which its recorded hash then reports at checkout.
    (size > 0)
        .then(|| unsafe { Mmap::map(&handle) })
        .transpose()
        .map_err(io)
}

/// Validates the header of a model source (safetensors, GGUF) without storing anything.
pub fn check_header(file: &SourceFile) -> Result<(), Error> {
    let map = map_file(file)?;
    plan_model(file, map.as_deref().unwrap_or(&[]), &Options::default(), None)?;
    Ok(())
}

/// Codes `file` and stores its chunks. `progress` is called with bytes done; the key of every
/// blob this call writes is pushed to `written` as soon as it exists, so that a caller whose
/// add fails later can remove them again.
pub fn encode_file(
    file: &SourceFile,
    cas: &Cas,
    opts: &Options,
    base: Option<&Base<'_>>,
    known: &KnownChunks,
    written: &Mutex<Vec<Key>>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Encoded, Error> {
    let map = map_file(file)?;
    let bytes: &[u8] = map.as_deref().unwrap_or(&[]);

    let mut planned = None;
    let mut tabled = None;
    let model = plan_model(file, bytes, opts, base)?;
    let table_format = match is_model(file) {
        true => None,
        false => table::check::format(file, opts.kind)?,
    };
    let (kind, mut segments) = if let Some(found) = model {
        found
    } else if let Some((t, scratch)) = match table_format {
        Some(f) => table::plan::plan(file, f, base, cas)?,
        None => None,
    } {
        let len = scratch.as_file().metadata().map_err(|source| Error::Io {
            path: scratch.path().to_owned(),
            source,
        })?;
        let segments = vec![plain(0, len.len(), 1, opts, None, None)];
        // Rows copied from the base cost no coding: counted as done.
        progress(file.size.saturating_sub(len.len()));
        tabled = Some((t, scratch, len.len()));
        ("table", segments)
    } else if let Some(p) = match opts.kind {
        table::check::Kind::Bytes => None,
        _ => records::plan(file, bytes, opts, base, &|lo, hi| release(&map, lo, hi))?,
    } {
        let segments = vec![plain(0, p.added, 1, opts, None, None)];
        planned = Some(p);
        ("records", segments)
    } else {
        (
            "file",
            super::plain::plan(file, bytes, opts, base, &|lo, hi| release(&map, lo, hi)),
        )
    };
    // A records file codes only its new bytes, gathered into a scratch file first.
    let added = match (&planned, &tabled) {
        (Some(p), _) => {
            let (scratch, m) = gather_new(file, bytes, &p.pieces, cas, &|lo, hi| release(&map, lo, hi))?;
            Some((Some(scratch), m))
        }
        (None, Some((_, scratch, len))) => Some((None, map_scratch(scratch, *len)?)),
        (None, None) => None,
    };
    let (map, bytes): (&Option<Mmap>, &[u8]) = match &added {
        Some((_, m)) => (m, m.as_deref().unwrap_or(&[])),
        None => (&map, bytes),
    };

    let (factors, factor_blobs) = lowrank_factors(file, bytes, &mut segments, base, cas, written)?;
    let jobs: Vec<(usize, usize)> = segments
        .iter()
        .enumerate()
        .flat_map(|(s, seg)| (0..seg.chunks_needed()).map(move |c| (s, c)))
        .collect();
    // Each chunk, its blob, and whether it gives back the source's bytes.
    let coded: Vec<(Chunk, Option<StoredBlob>, bool)> = jobs
        .par_iter()
        .map(|&(s, c)| {
            let seg = &segments[s];
            let (start, end) = seg.chunk_range(c);
            let (lo, hi) = ((seg.offset + start) as usize, (seg.offset + end) as usize);
            let data = &bytes[lo..hi];
            let code = || -> Result<(Chunk, Option<StoredBlob>, bool), Error> {
                let hash = Key::of(data);
                // A tensor's parent chunk has its hash in the base's manifest (a byte range's
                // bytes are compared once read).
                let parent_hash = seg.parent.as_ref().zip(base).and_then(|(p, b)| {
                    let (pm, pseg) = b.snapshot.find(p)?;
                    Some(pm.segments[pseg].chunks[c].hash)
                });
                if parent_hash == Some(hash) {
                    // Unchanged: known from the parent's manifest, without decoding the parent.
                    let chunk = Chunk {
                        codec: Codec::Same,
                        hash,
                        blob: None,
                        stored: 0,
                    };
                    return Ok((chunk, None, true));
                }
                // Stored whole somewhere already: refer to it, without coding anything, if
                // its file is there as the index says (a damaged index must not lead a new
                // snapshot to a blob that is not).
                let stored_whole = known
                    .get(&full_key(&hash, seg.width))
                    .filter(|(blob, sizes)| cas.sizes(blob).is_ok_and(|s| s == *sizes));
                if let Some(&(blob, sizes)) = stored_whole {
                    let chunk = Chunk {
                        codec: Codec::Full,
                        hash,
                        blob: Some(blob),
                        stored: sizes.stored,
                    };
                    return Ok((
                        chunk,
                        Some(StoredBlob {
                            key: blob,
                            sizes,
                            new: false,
                        }),
                        true,
                    ));
                }
                // A matrix stored at rank 0 keeps its parent's chunk, exactly (adding a zero
                // product would turn -0.0 into +0.0), known from the parent's manifest.
                if let Some(parent_hash) = parent_hash.filter(|_| factors.get(&s).is_some_and(|(f, _)| f.rank == 0)) {
                    let chunk = Chunk {
                        codec: Codec::Same,
                        hash: parent_hash,
                        blob: None,
                        stored: 0,
                    };
                    return Ok((chunk, None, false));
                }
                let encoded = rebuild::with_buffer(|buf| {
                    let parent = match (&seg.parent, base) {
                        (Some(_), Some(b)) => {
                            let buf = rebuild::first(buf, data.len());
                            b.rebuilder
                                .parent_of(b.snapshot, &file.path, seg, c, buf)
                                .map_err(|e| Error::Parent {
                                    path: file.abs.clone(),
                                    source: Box::new(e),
                                })?;
                            Some(&*buf)
                        }
                        _ => None,
                    };
                    let Some(lossy) = &seg.lossy else {
                        return Ok::<_, Error>((
                            codec::encode_best(data, parent, seg.width as usize, opts.level),
                            None,
                        ));
                    };
                    // Lossy: the chunk's hash is that of what decoding gives back.
                    let parent = parent.expect("lossy segments have a parent");
                    let float = Float::of_dtype(&seg.tensor.as_ref().expect("a tensor").dtype).expect("a float");
                    let (code, b) = match factors.get(&s) {
                        Some((f, b)) => {
                            let first = start / seg.width as u64;
                            (
                                lossy::encode_lowrank(data.len(), first, f, float, opts.level),
                                Some(&b[..]),
                            )
                        }
                        None => (lossy::encode_int8(data, parent, float, opts.level), None),
                    };
                    let mut back = vec![0u8; data.len()];
                    let codec = lossy::decode(&code, parent, seg.width as usize, &mut back, b)
                        .expect("a lossy chunk decodes as it was coded");
                    debug_assert_eq!(codec.as_str(), lossy.tier);
                    let encoded = codec::Encoded {
                        codec,
                        bytes: Some(code),
                    };
                    Ok((encoded, Some(Key::of(&back))))
                })?;
                let (encoded, lossy_hash) = encoded;
                let exact = lossy_hash.is_none_or(|h| h == hash);
                let hash = lossy_hash.unwrap_or(hash);
                let (chunk, blob) = match encoded.bytes {
                    None => (
                        Chunk {
                            codec: Codec::Same,
                            hash,
                            blob: None,
                            stored: 0,
                        },
                        None,
                    ),
                    Some(code) => {
                        let put = cas.put(&code, Compress::No)?;
                        if put.new {
                            written.lock().expect("no panics while holding it").push(put.key);
                        }
                        let sizes = BlobSizes {
                            decoded: code.len() as u64,
                            stored: put.stored,
                        };
                        let chunk = Chunk {
                            codec: encoded.codec,
                            hash,
                            blob: Some(put.key),
                            stored: put.stored,
                        };
                        (
                            chunk,
                            Some(StoredBlob {
                                key: put.key,
                                sizes,
                                new: put.new,
                            }),
                        )
                    }
                };
                Ok((chunk, blob, exact))
            };
            let result = code();
            release(map, lo, hi);
            progress(data.len() as u64);
            result
        })
        .collect::<Result<_, Error>>()?;

    let mut blobs = Vec::new();
    let mut full = Vec::new();
    let mut new_bytes = 0;
    for b in factor_blobs {
        new_bytes += if b.new { b.sizes.stored } else { 0 };
        blobs.push((b.key, b.sizes));
    }
    let mut approximate = false;
    let mut coded = coded.into_iter();
    for seg in &mut segments {
        for _ in 0..seg.chunks_needed() {
            let (chunk, blob, exact) = coded.next().expect("one result per job");
            approximate |= !exact;
            if let Some(b) = blob {
                new_bytes += if b.new { b.sizes.stored } else { 0 };
                blobs.push((b.key, b.sizes));
                if chunk.codec == Codec::Full {
                    full.push((full_key(&chunk.hash, seg.width), b.key));
                }
            }
            seg.chunks.push(chunk);
        }
    }
    let table = match tabled {
        Some((t, _, rows_bytes)) => {
            let (key, stored) = put_pieces(&t.pieces, cas, written, &mut new_bytes, &mut blobs)?;
            Some(TableRef {
                format: t.format.name().into(),
                base_file: t
                    .base_tables
                    .first()
                    .map_or_else(|| file.path.clone(), |b| b.path.clone()),
                base_tables: t.base_tables,
                rows: t.rows,
                pieces: key,
                count: t.pieces.len() as u64,
                pieces_stored: stored,
                added: t.added,
                new_bytes: rows_bytes,
                hash: t.hash,
                compression: t.style.compression,
                row_group_rows: t.style.row_group_rows,
            })
        }
        None => None,
    };
    let records = match planned {
        Some(p) => {
            let (key, stored) = put_pieces(&p.pieces, cas, written, &mut new_bytes, &mut blobs)?;
            Some(RecordsRef {
                base_file: file.path.clone(),
                pieces: key,
                count: p.pieces.len() as u64,
                pieces_stored: stored,
                added: p.added,
                hash: p.hash,
            })
        }
        None => None,
    };
    let manifest = Manifest {
        format: match (&records, &table) {
            (Some(_), _) => MANIFEST_FORMAT_RECORDS.into(),
            (None, Some(_)) => MANIFEST_FORMAT_TABLE.into(),
            (None, None) if Manifest::has_ranges(&segments) => MANIFEST_FORMAT_RANGES.into(),
            (None, None) if kind == "gguf" => MANIFEST_FORMAT_GGUF.into(),
            (None, None) => MANIFEST_FORMAT.into(),
        },
        kind: kind.into(),
        size: file.size,
        segments,
        records,
        table,
    };
    Ok(Encoded {
        manifest,
        blobs,
        full,
        new_bytes,
        approximate,
    })
}

/// Segments of a safetensors file (at `path` in the snapshot): its header as bytes, then its
/// tensors in file order, each paired with the base's tensor of the same name when dtype and
/// shape match ([`Parents`]).
pub fn plan_safetensors(
    header: &safetensors::Header,
    path: &str,
    opts: &Options,
    base: Option<&Base<'_>>,
) -> Vec<Segment> {
    let parents = Parents::new(path, base);
    let mut segments = vec![plain(0, header.len, 1, opts, None, None)];
    for t in &header.tensors {
        let meta = TensorMeta {
            name: t.name.clone(),
            dtype: dtype_name(t.dtype),
            shape: t.shape.clone(),
        };
        let parent = parents.of(&meta, t.len(), plane_width(t.dtype));
        let lossy = match (opts.lossy, &parent) {
            (Some(tier), Some(_)) if lossy_eligible(&meta) => Some(Lossy {
                tier: tier.codec().to_string(),
                rank: match tier {
                    Tier::LowRank { rank } => Some(rank),
                    // As planned for the target (model::budget), which plans with none yet.
                    Tier::LowRankWithin { .. } => Some(opts.ranks.as_ref().map_or(0, |r| {
                        *r.get(&(path.to_string(), meta.name.clone()))
                            .expect("the plan has a rank for every lossy matrix")
                    })),
                    Tier::Int8 => None,
                },
                factor: None,
                factor_stored: 0,
            }),
            _ => None,
        };
        let mut segment = plain(t.begin, t.len(), plane_width(t.dtype), opts, Some(meta), parent);
        segment.lossy = lossy;
        segments.push(segment);
    }
    segments
}

/// Where the tensors of a model file (at `path` in the snapshot) find their parents in the
/// base: one of the same name, dtype, shape and width, in the base's file at the same path if
/// it has one (a folder of several quantizations of one model has the same names in every
/// file), else anywhere in the base (shards cut differently).
struct Parents<'p, 'b> {
    base: Option<&'p Base<'b>>,
    path: &'p str,
    /// The tensors of the base's file at `path`, by name: segment indices.
    same_file: HashMap<&'b str, usize>,
}

impl<'p, 'b> Parents<'p, 'b> {
    fn new(path: &'p str, base: Option<&'p Base<'b>>) -> Self {
        let manifest = base.and_then(|b| b.snapshot.manifests.get(path));
        let same_file = (manifest.iter().flat_map(|m| m.segments.iter().enumerate()))
            .filter_map(|(i, s)| Some((s.tensor.as_ref()?.name.as_str(), i)))
            .collect();
        Parents { base, path, same_file }
    }

    /// The parent of a tensor described by `meta`, of `len` bytes coded `width` bytes an
    /// element, and the parent's chunk size.
    fn of(&self, meta: &TensorMeta, len: u64, width: usize) -> Option<(ParentRef, u64)> {
        let b = self.base?;
        let near = self.same_file.get(meta.name.as_str()).map(|&s| (self.path, s));
        let far = b.snapshot.tensors.get(&meta.name).map(|(f, s)| (f.as_str(), *s));
        near.into_iter().chain(far).find_map(|(file, s)| {
            let seg = &b.snapshot.manifests[file].segments[s];
            let fits = seg.tensor.as_ref() == Some(meta) && seg.len == len && seg.width as usize == width;
            fits.then(|| {
                (
                    ParentRef {
                        file: file.to_string(),
                        tensor: meta.name.clone(),
                        offset: None,
                    },
                    seg.chunk_size,
                )
            })
        })
    }
}

/// The segments of a GGUF file of `size` bytes: each tensor, coded against the base's tensor
/// of the same name, type and shape, whatever its offset (a fine-tune's header, holding its own
/// name, is seldom as long as its base's); the header and the padding between tensors as
/// plain bytes, each large metadata pair a segment of its own, so that its chunks start where
/// it starts and are found stored already when the base had the same pair. GGUF tensors are
/// always stored lossless.
pub fn plan_gguf(
    header: &gguf::Header,
    path: &str,
    size: u64,
    opts: &Options,
    base: Option<&Base<'_>>,
) -> Vec<Segment> {
    let parents = Parents::new(path, base);
    let cuts: Vec<u64> = header
        .large_pairs
        .iter()
        .flat_map(|&(start, end)| [start, end])
        .collect();
    let mut segments = Vec::new();
    // Bytes `from..to` that no tensor holds, cut where a large pair starts or ends.
    let gap = |from: u64, to: u64, segments: &mut Vec<Segment>| {
        let mut at = from;
        for &cut in cuts.iter().filter(|&&c| from < c && c < to).chain([&to]) {
            if cut > at {
                segments.push(plain(at, cut - at, 1, opts, None, None));
                at = cut;
            }
        }
    };
    let mut at = 0;
    for t in &header.tensors {
        if t.begin > at {
            gap(at, t.begin, &mut segments);
        }
        let meta = TensorMeta {
            name: t.name.clone(),
            dtype: t.ty.name.to_string(),
            shape: t.shape.clone(),
        };
        let len = t.end - t.begin;
        let parent = parents.of(&meta, len, t.ty.width);
        segments.push(plain(t.begin, len, t.ty.width, opts, Some(meta), parent));
        at = t.end;
    }
    if size > at {
        gap(at, size, &mut segments);
    }
    segments
}

/// Whether a tensor may be stored lossy: a float matrix (at least two dimensions, not empty).
/// Vectors (biases, norms) and integer tensors stay lossless.
fn lossy_eligible(meta: &TensorMeta) -> bool {
    Float::of_dtype(&meta.dtype).is_some()
        && meta.shape.len() >= 2
        && meta.shape.iter().all(|&d| d > 0)
        && u32::try_from(meta.matrix().1).is_ok()
}

/// By segment index: the low-rank factors of a `lowrank` tensor and its B factor's bytes.
type SegmentFactors = HashMap<usize, (Factors, Vec<u8>)>;

/// Low-rank factors of every `lowrank` segment's delta: the whole tensor and its parent are
/// read (one tensor at a time), the B factor is stored as a blob and named in the segment.
fn lowrank_factors(
    file: &SourceFile,
    bytes: &[u8],
    segments: &mut [Segment],
    base: Option<&Base<'_>>,
    cas: &Cas,
    written: &Mutex<Vec<Key>>,
) -> Result<(SegmentFactors, Vec<StoredBlob>), Error> {
    let mut out = HashMap::new();
    let mut stored = Vec::new();
    for (s, seg) in segments.iter_mut().enumerate() {
        let (Some(rank), Some(meta), Some(b)) = (seg.lossy.as_ref().and_then(|l| l.rank), &seg.tensor, base) else {
            continue;
        };
        let (rows, cols) = meta.matrix();
        let f = match rank {
            // Kept as the parent's, without reading the tensor.
            0 => Factors {
                rows,
                cols,
                rank: 0,
                a: Vec::new(),
                b: Vec::new(),
            },
            _ => {
                let delta = tensor_delta(file, bytes, seg, b)?;
                lossy::factors(&delta, rows, cols, rank as usize, svd_seed(&meta.name))
            }
        };
        let b_bytes = f.b_bytes();
        let put = cas.put(&b_bytes, Compress::Zstd(3))?;
        if put.new {
            written.lock().expect("no panics while holding it").push(put.key);
        }
        let lossy = seg.lossy.as_mut().expect("matched above");
        lossy.rank = Some(f.rank as u32);
        lossy.factor = Some(put.key);
        lossy.factor_stored = put.stored;
        stored.push(StoredBlob {
            key: put.key,
            sizes: BlobSizes {
                decoded: b_bytes.len() as u64,
                stored: put.stored,
            },
            new: put.new,
        });
        out.insert(s, (f, b_bytes));
    }
    Ok((out, stored))
}

/// The change of the lossy tensor `seg` of `file` (mapped as `bytes`) from its parent in
/// `base`, in f32: the whole tensor and its parent are read.
pub(super) fn tensor_delta(file: &SourceFile, bytes: &[u8], seg: &Segment, base: &Base<'_>) -> Result<Vec<f32>, Error> {
    let meta = seg.tensor.as_ref().expect("lossy segments are tensors");
    let p = seg.parent.as_ref().expect("lossy segments have a parent");
    let float = Float::of_dtype(&meta.dtype).expect("eligible tensors are floats");
    let (_, pseg) = base.snapshot.find(p).expect("parents are planned from the base");
    let mut parent = vec![0u8; seg.len as usize];
    for c in 0..seg.chunks_needed() {
        let (start, end) = seg.chunk_range(c);
        base.rebuilder
            .chunk(
                base.snapshot,
                &p.file,
                pseg,
                c,
                &mut parent[start as usize..end as usize],
            )
            .map_err(|e| Error::Parent {
                path: file.abs.clone(),
                source: Box::new(e),
            })?;
    }
    let data = &bytes[seg.offset as usize..(seg.offset + seg.len) as usize];
    Ok(float
        .to_f32(data)
        .iter()
        .zip(float.to_f32(&parent))
        .map(|(n, o)| n - o)
        .collect())
}

/// The seed of a tensor's randomized SVD: from its name, so that an add gives the same factors
/// every time.
pub(super) fn svd_seed(name: &str) -> u64 {
    u64::from_le_bytes(Key::of(name.as_bytes()).0[..8].try_into().expect("8 bytes"))
}

/// zstd level of piece tables: small, and worth compressing well.
pub const PIECES_LEVEL: i32 = 19;

/// Writes the new pieces of `bytes` one after another to a scratch file and maps it, releasing
/// the source's pages as they are copied.
fn gather_new(
    file: &SourceFile,
    bytes: &[u8],
    pieces: &[Piece],
    cas: &Cas,
    release: &dyn Fn(usize, usize),
) -> Result<(tempfile::NamedTempFile, Option<Mmap>), Error> {
    use std::io::Write;
    let io = |source| Error::Io {
        path: file.abs.clone(),
        source,
    };
    let mut scratch = cas.scratch().map_err(io)?;
    let mut at = 0usize;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, scratch.as_file_mut());
        for p in pieces {
            let len = p.len() as usize;
            if let Piece::New { .. } = p {
                w.write_all(&bytes[at..at + len]).map_err(io)?;
                release(at, at + len);
            }
            at += len;
        }
        w.flush().map_err(io)?;
    }
    let len = scratch.as_file().metadata().map_err(io)?.len();
    let map = match len {
        0 => None,
        // SAFETY: a private scratch file, read only, that nothing else writes while mapped.
        _ => Some(unsafe { Mmap::map(scratch.as_file()) }.map_err(io)?),
    };
    Ok((scratch, map))
}

/// Stores a piece table (zstd-compressed), recording its blob: its key and stored size.
fn put_pieces(
    pieces: &[Piece],
    cas: &Cas,
    written: &Mutex<Vec<Key>>,
    new_bytes: &mut u64,
    blobs: &mut Vec<(Key, BlobSizes)>,
) -> Result<(Key, u64), Error> {
    let table = rows::encode_pieces(pieces);
    let put = cas.put(&table, Compress::Zstd(PIECES_LEVEL))?;
    if put.new {
        written.lock().expect("no panics while holding it").push(put.key);
        *new_bytes += put.stored;
    }
    let sizes = BlobSizes {
        decoded: table.len() as u64,
        stored: put.stored,
    };
    blobs.push((put.key, sizes));
    Ok((put.key, put.stored))
}

/// Maps a scratch file of `len` bytes (None when empty).
fn map_scratch(scratch: &tempfile::NamedTempFile, len: u64) -> Result<Option<Mmap>, Error> {
    match len {
        0 => Ok(None),
        // SAFETY: a private scratch file, read only, that nothing else writes while mapped.
        _ => unsafe { Mmap::map(scratch.as_file()) }
            .map(Some)
            .map_err(|source| Error::Io {
                path: scratch.path().to_owned(),
                source,
            }),
    }
}

/// Drops the pages of `lo..hi` of a source's mapping: resident memory stays at what is in use.
fn release(map: &Option<Mmap>, lo: usize, hi: usize) {
    if let Some(map) = map {
        if hi > lo {
            // SAFETY: a read-only file mapping: dropped pages are read again from the file
            // if touched later, so no thread can observe different bytes.
            let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, lo, hi - lo) };
        }
    }
}

/// A segment with no chunks yet; its chunk size is the parent's, or the option's rounded to
/// whole elements.
pub(crate) fn plain(
    offset: u64,
    len: u64,
    width: usize,
    opts: &Options,
    tensor: Option<TensorMeta>,
    parent: Option<(ParentRef, u64)>,
) -> Segment {
    let w = width as u64;
    let (parent, chunk_size) = match parent {
        Some((p, cs)) => (Some(p), cs),
        None => (None, (opts.chunk_size / w).max(1) * w),
    };
    Segment {
        offset,
        len,
        width: width as u32,
        chunk_size,
        tensor,
        parent,
        lossy: None,
        chunks: Vec::new(),
    }
}
