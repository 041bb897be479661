//! Rebuilding files from snapshots: each chunk decoded against its parent's chunk (recursively
//! along the chain of bases), checked against its hash, and written in place at its offset.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::manifest::{Manifest, RecordsRef, TableRef};
use super::snapshot::{self, Snapshot};
use super::table::io::{RowHasher, Style, Writer};
use super::table::replay::{replay, Cursor, Part};
use super::table::{self, Format};
use crate::codec::rows::{self, Piece};
use crate::codec::{self, Codec};
use crate::store::cas::{self, Cas, Key};
use crate::store::copies::Copies;
use crate::store::history::{History, ObjectId};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
    #[error(transparent)]
    History(#[from] crate::store::history::Error),
    #[error("{file}: {what}, chunk {chunk}: {source}")]
    Blob {
        file: String,
        what: String,
        chunk: usize,
        source: Box<cas::Error>,
    },
    #[error("{file}: {what}, its low-rank factor: {source}")]
    Factor {
        file: String,
        what: String,
        source: Box<cas::Error>,
    },
    #[error("{file}: {what} refers to {tensor:?} in base {base}, which has no such tensor of that size")]
    MissingParent {
        file: String,
        what: String,
        tensor: String,
        base: String,
    },
    #[error("{file}: {what} has a delta parent but its snapshot has no base")]
    NoBase { file: String, what: String },
    #[error("{file}: copies bytes {offset}..{end} of {from:?} in base {base}, which has no such bytes")]
    MissingCopy {
        file: String,
        from: String,
        offset: u64,
        end: u64,
        base: String,
    },
    #[error("{file}: its piece table {why}")]
    Pieces { file: String, why: String },
    #[error("{file}: {what}, chunk {chunk} (blob {blob}): {source}")]
    Decode {
        file: String,
        what: String,
        chunk: usize,
        blob: Key,
        source: codec::Error,
    },
    #[error("{file}: {what}, chunk {chunk}{mismatch}")]
    Hash {
        file: String,
        what: String,
        chunk: usize,
        mismatch: Box<Mismatch>,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("refusing to write {path:?}: {why}")]
    BadPath { path: String, why: String },
    #[error("{file}: {source}")]
    Table {
        file: String,
        source: Box<super::table::Error>,
    },
    #[error("base chain is deeper than {0} snapshots (a cycle?)")]
    TooDeep(usize),
}

/// A decoded chunk whose hash is not the one its manifest records.
#[derive(Debug)]
pub struct Mismatch {
    /// The blob it was decoded from (none for `same`).
    pub blob: Option<Key>,
    pub found: Key,
    pub expected: Key,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(b) = self.blob {
            write!(f, " (blob {b})")?;
        }
        write!(f, ": decoded bytes hash to {}, expected {}", self.found, self.expected)
    }
}

/// Which decoded chunks have their hash computed and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// The chunk asked for, not its parents: a wrong parent makes a wrong chunk.
    This,
    /// None (a parent, whose child is checked).
    None,
    /// Every chunk down the chain: to name the damaged one.
    All,
}

/// Bytes of a records file rebuilt per job.
const RECORDS_WINDOW: u64 = 4 << 20;

/// blake3 of the first `size` bytes of `file`, read in windows.
fn hash_file(file: &File, size: u64) -> std::io::Result<Key> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; RECORDS_WINDOW.min(size) as usize];
    let mut at = 0;
    while at < size {
        let n = RECORDS_WINDOW.min(size - at) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(Key(*hasher.finalize().as_bytes()))
}

/// Gives the output file `file` its `size`, with its blocks allocated up front where the file
/// system can: a full disk is refused before anything is decoded, and the writes then skip the
/// file system's reservation of each page (on ext4, checkout of the real fp32 fine-tune took 78
/// -> 69 ms, docs/PERFORMANCE.md). Elsewhere the file is sized sparse.
fn presize(file: &File, size: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if size > 0 {
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::NOSPC) => return Err(rustix::io::Errno::NOSPC.into()),
            Err(_) => {} // not supported by this file system
        }
    }
    file.set_len(size)
}

/// Decoded chunks that may wait for the writer: bounds the memory of a checkout.
const WRITES_QUEUED: usize = 4;

/// Deepest chain of bases followed before giving up (protects against cycles).
const MAX_DEPTH: usize = 1000;

/// The snapshots a rebuild may need, by commit, and the blobs to read chunks from.
pub struct Rebuilder<'a> {
    cas: &'a Cas,
    bases: HashMap<ObjectId, Snapshot>,
    /// The chain of bases: the first base, its base, and so on.
    chain: Vec<ObjectId>,
    /// Known copies of the bases' files, by tree and path ([`Rebuilder::with_copies`]).
    copies: HashMap<ObjectId, HashMap<String, File>>,
    /// Piece tables of records files read so far, by tree and path.
    pieces: Mutex<HashMap<(ObjectId, String), PieceTable>>,
}

/// A records file's pieces, in file order.
type PieceTable = Arc<Vec<Placed>>;

/// A piece of a records file, where it starts in the file and, for new bytes, in the new bytes.
#[derive(Debug, Clone, Copy)]
struct Placed {
    start: u64,
    added_at: u64,
    piece: Piece,
}

impl<'a> Rebuilder<'a> {
    /// Loads the chain of bases starting at commit `base` (none for a snapshot without base).
    pub fn new(history: &History, cas: &'a Cas, base: Option<ObjectId>) -> Result<Self, Error> {
        let mut bases = HashMap::new();
        let mut chain = Vec::new();
        let mut next = base;
        while let Some(commit) = next {
            if bases.contains_key(&commit) {
                break;
            }
            if bases.len() >= MAX_DEPTH {
                return Err(Error::TooDeep(MAX_DEPTH));
            }
            let info = history.commit_info(commit)?;
            let snap = Snapshot::load(history, info.tree)?;
            next = snap.base()?;
            bases.insert(commit, snap);
            chain.push(commit);
        }
        Ok(Rebuilder {
            cas,
            bases,
            chain,
            copies: HashMap::new(),
            pieces: Mutex::new(HashMap::new()),
        })
    }

    /// Reads the bases' chunks from their known copies where those are unchanged, instead of
    /// decoding them (see [`crate::store::copies`]).
    pub fn with_copies(mut self, copies: &Copies) -> Self {
        for snap in self.bases.values() {
            let files: HashMap<String, File> = snap
                .manifests
                .iter()
                // A table's segments tile its new rows, not the file: a copy has no chunk of them.
                .filter(|(_, m)| m.table.is_none())
                .filter_map(|(path, m)| Some((path.clone(), copies.open(&snap.tree.to_string(), path, m.size)?)))
                .collect();
            if !files.is_empty() {
                self.copies.insert(snap.tree, files);
            }
        }
        self
    }

    /// Reads chunk `i` of segment `seg` of `file` in `snap` from a known copy into `out`; false
    /// if there is none or it cannot be read.
    fn read_copy(&self, snap: &Snapshot, file: &str, seg: usize, i: usize, out: &mut [u8]) -> bool {
        let Some(copy) = self.copies.get(&snap.tree).and_then(|files| files.get(file)) else {
            return false;
        };
        let segment = &snap.manifests[file].segments[seg];
        let (start, _) = segment.chunk_range(i);
        copy.read_exact_at(out, segment.offset + start).is_ok()
    }

    /// The blob store it reads from.
    pub fn cas(&self) -> &'a Cas {
        self.cas
    }

    /// The chain of bases it loaded, from the first base down to a snapshot without one.
    pub fn chain(&self) -> &[ObjectId] {
        &self.chain
    }

    /// The loaded snapshot of base commit `commit`.
    pub fn base(&self, commit: &ObjectId) -> Option<&Snapshot> {
        self.bases.get(commit)
    }

    /// Decodes chunk `i` of segment `seg` of `file` in `snap` into `out` (its exact length),
    /// and checks its hash.
    ///
    /// Only the requested chunk's hash is computed: a wrong parent chunk anywhere down the chain
    /// yields a wrong chunk here, which the check catches. Only then is the chain decoded again
    /// with every level checked, to name the damaged blob.
    pub fn chunk(&self, snap: &Snapshot, file: &str, seg: usize, i: usize, out: &mut [u8]) -> Result<(), Error> {
        match self.decode(snap, file, seg, i, out, Check::This) {
            Err(Error::Hash { .. }) if snap.manifests[file].segments[seg].chunks[i].codec.needs_parent() => {
                self.decode(snap, file, seg, i, out, Check::All)
            }
            result => result,
        }
    }

    /// Decodes every chunk of segment `seg` of `file` in `snap` into `out` (the segment's
    /// length), in parallel, each checked as [`Rebuilder::chunk`] checks it.
    pub fn segment(&self, snap: &Snapshot, file: &str, seg: usize, out: &mut [u8]) -> Result<(), Error> {
        let segment = &snap.manifests[file].segments[seg];
        let mut pieces = Vec::with_capacity(segment.chunks.len());
        let mut rest = out;
        for i in 0..segment.chunks.len() {
            let (start, end) = segment.chunk_range(i);
            let (piece, after) = std::mem::take(&mut rest).split_at_mut((end - start) as usize);
            pieces.push((i, piece));
            rest = after;
        }
        pieces
            .into_par_iter()
            .try_for_each(|(i, piece)| self.chunk(snap, file, seg, i, piece))
    }

    /// Reads `out.len()` bytes of `file` in `snap` from `offset`, decoding (and checking) the
    /// chunks that hold them. False if the file has no such bytes.
    pub fn read_range(&self, snap: &Snapshot, file: &str, offset: u64, out: &mut [u8]) -> Result<bool, Error> {
        let Some(manifest) = snap.manifests.get(file) else {
            return Ok(false);
        };
        if manifest.table.is_some() {
            return Err(Error::BadPath {
                path: file.to_string(),
                why: "a table is rebuilt whole, not read by byte range".into(),
            });
        }
        if offset
            .checked_add(out.len() as u64)
            .is_none_or(|end| end > manifest.size)
        {
            return Ok(false);
        }
        match &manifest.records {
            Some(records) => self.read_records(snap, file, records, offset, out),
            None => self.read_segments(snap, file, offset, out),
        }
    }

    /// [`Rebuilder::read_range`] of a records file: each piece from the base's file or from the
    /// file's own new bytes.
    fn read_records(
        &self,
        snap: &Snapshot,
        file: &str,
        records: &RecordsRef,
        offset: u64,
        out: &mut [u8],
    ) -> Result<bool, Error> {
        let pieces = self.pieces(snap, file, records)?;
        let end = offset + out.len() as u64;
        let first = pieces.partition_point(|p| p.start + p.piece.len() <= offset);
        for p in &pieces[first..] {
            if p.start >= end {
                break;
            }
            let (lo, hi) = (p.start.max(offset), (p.start + p.piece.len()).min(end));
            let dst = &mut out[(lo - offset) as usize..(hi - offset) as usize];
            let found = match p.piece {
                Piece::Copy { from, .. } => {
                    let base_id = snap.base()?.ok_or_else(|| Error::NoBase {
                        file: file.to_string(),
                        what: "its records".into(),
                    })?;
                    let base = self.bases.get(&base_id);
                    let at = from + (lo - p.start);
                    match base {
                        Some(b) => self.read_range(b, &records.base_file, at, dst)?,
                        None => false,
                    }
                    .then_some(())
                    .ok_or_else(|| Error::MissingCopy {
                        file: file.to_string(),
                        from: records.base_file.clone(),
                        offset: at,
                        end: at + dst.len() as u64,
                        base: base_id.to_string(),
                    })?;
                    true
                }
                Piece::New { .. } => self.read_segments(snap, file, p.added_at + (lo - p.start), dst)?,
            };
            if !found {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The piece table of records file `file` in `snap`, read once and checked.
    fn pieces(&self, snap: &Snapshot, file: &str, records: &RecordsRef) -> Result<PieceTable, Error> {
        let key = (snap.tree, file.to_string());
        if let Some(p) = self.pieces.lock().expect("no panics while holding it").get(&key) {
            return Ok(Arc::clone(p));
        }
        let bad = |why: String| Error::Pieces {
            file: file.to_string(),
            why,
        };
        let bytes = self.cas.get(&records.pieces).map_err(|source| Error::Blob {
            file: file.to_string(),
            what: "its piece table".into(),
            chunk: 0,
            source: Box::new(source),
        })?;
        let size = snap.manifests[file].size;
        let table = rows::decode_pieces(&bytes, records.count, size)
            .ok_or_else(|| bad(format!("does not describe {} pieces of {size} bytes", records.count)))?;
        let (mut start, mut added_at) = (0, 0);
        let mut placed = Vec::with_capacity(table.len());
        for piece in table {
            placed.push(Placed { start, added_at, piece });
            start += piece.len();
            if let Piece::New { len } = piece {
                added_at += len;
            }
        }
        if added_at != records.added {
            return Err(bad(format!("has {added_at} new bytes, the manifest {}", records.added)));
        }
        let placed = Arc::new(placed);
        self.pieces
            .lock()
            .expect("no panics while holding it")
            .insert(key, Arc::clone(&placed));
        Ok(placed)
    }

    /// Reads bytes `offset..` of what the segments of `file` tile (the file, or a records file's
    /// new bytes). False if the segments end first.
    fn read_segments(&self, snap: &Snapshot, file: &str, offset: u64, out: &mut [u8]) -> Result<bool, Error> {
        let manifest = &snap.manifests[file];
        let end = offset + out.len() as u64;
        let tiled = manifest.segments.last().map_or(0, |s| s.offset + s.len);
        if end > tiled {
            return Ok(false);
        }
        for (si, seg) in manifest.segments.iter().enumerate() {
            let (lo, hi) = (seg.offset.max(offset), (seg.offset + seg.len).min(end));
            if lo >= hi {
                continue;
            }
            for c in 0..seg.chunks.len() {
                let (cs, ce) = seg.chunk_range(c);
                let (clo, chi) = ((seg.offset + cs).max(lo), (seg.offset + ce).min(hi));
                if clo >= chi {
                    continue;
                }
                let dst = &mut out[(clo - offset) as usize..(chi - offset) as usize];
                let from = (clo - seg.offset - cs) as usize;
                let id = ChunkId {
                    tree: snap.tree,
                    file: file.to_string(),
                    seg: si,
                    chunk: c,
                };
                cached_chunk(id, (ce - cs) as usize, dst, from, |buf| {
                    self.chunk(snap, file, si, c, buf)
                })?;
            }
        }
        Ok(true)
    }

    /// Decodes a chunk into `out`, checking the hashes `check` asks for.
    fn decode(
        &self,
        snap: &Snapshot,
        file: &str,
        seg: usize,
        i: usize,
        out: &mut [u8],
        check: Check,
    ) -> Result<(), Error> {
        let manifest = &snap.manifests[file];
        let segment = &manifest.segments[seg];
        let chunk = &segment.chunks[i];
        let what = || segment_name(manifest, seg);
        let from_copy = check != Check::All && self.read_copy(snap, file, seg, i, out);
        match (chunk.codec, chunk.blob) {
            // Unchecked bytes of a copy are checked through the chunk made from them.
            _ if from_copy && (check == Check::None || Key::of(out) == chunk.hash) => return Ok(()),
            (Codec::Same, _) => self.parent_chunk(snap, file, seg, i, out, check)?,
            (codec, Some(blob)) => with_buffer(|parent| {
                let parent = match codec.needs_parent() {
                    true => {
                        let parent = first(parent, out.len());
                        self.parent_chunk(snap, file, seg, i, parent, check)?;
                        Some(&*parent)
                    }
                    false => None,
                };
                with_buffer(|coded| {
                    let body = self.cas.read_unverified(&blob, coded).map_err(|source| Error::Blob {
                        file: file.to_string(),
                        what: what(),
                        chunk: i,
                        source: Box::new(source),
                    })?;
                    let decode_err = |source| Error::Decode {
                        file: file.to_string(),
                        what: what(),
                        chunk: i,
                        blob,
                        source,
                    };
                    let width = segment.width as usize;
                    if !codec.is_lossy() {
                        return codec::decode(&coded[body], parent, width, out).map_err(decode_err);
                    }
                    let parent = parent.ok_or(Error::NoBase {
                        file: file.to_string(),
                        what: what(),
                    })?;
                    let factor = match segment.lossy.as_ref().and_then(|l| l.factor) {
                        Some(key) => Some(self.cas.get(&key).map_err(|source| Error::Blob {
                            file: file.to_string(),
                            what: what(),
                            chunk: i,
                            source: Box::new(source),
                        })?),
                        None => None,
                    };
                    codec::lossy::decode(&coded[body], parent, width, out, factor.as_deref()).map_err(decode_err)
                })?;
                Ok::<(), Error>(())
            })?,
            (_, None) => unreachable!("validated: only `same` chunks have no blob"),
        }
        if check == Check::None {
            return Ok(());
        }
        let found = Key::of(out);
        if found != chunk.hash {
            return Err(Error::Hash {
                file: file.to_string(),
                what: what(),
                chunk: i,
                mismatch: Box::new(Mismatch {
                    blob: chunk.blob,
                    found,
                    expected: chunk.hash,
                }),
            });
        }
        Ok(())
    }

    /// Decodes the parent's chunk `i` of the segment `seg` of `file` in `snap`: checked only
    /// under [`Check::All`].
    fn parent_chunk(
        &self,
        snap: &Snapshot,
        file: &str,
        seg: usize,
        i: usize,
        out: &mut [u8],
        check: Check,
    ) -> Result<(), Error> {
        let segment = &snap.manifests[file].segments[seg];
        let what = || segment_name(&snap.manifests[file], seg);
        let parent = segment.parent.as_ref().expect("validated: delta chunks have a parent");
        let base_id = snap.base()?.ok_or_else(|| Error::NoBase {
            file: file.to_string(),
            what: what(),
        })?;
        let missing = || Error::MissingParent {
            file: file.to_string(),
            what: what(),
            tensor: parent.tensor.clone(),
            base: base_id.to_string(),
        };
        let base = self.bases.get(&base_id).ok_or_else(missing)?;
        if parent.offset.is_some() {
            return self.parent_range(base, file, segment, i, out);
        }
        let (pm, pseg) = base.find(parent).ok_or_else(missing)?;
        let ps = &pm.segments[pseg];
        if ps.len != segment.len || ps.chunk_size != segment.chunk_size || ps.width != segment.width {
            return Err(missing());
        }
        let check = match check {
            Check::All => Check::All,
            Check::This | Check::None => Check::None,
        };
        self.decode(base, &parent.file, pseg, i, out, check)
    }

    /// Decodes into `out` what chunk `i` of `segment` (of file `file`, to be coded against
    /// `base`) is coded against: the same chunk of its parent tensor, or for a byte-range parent
    /// ([`Rebuilder::parent_range`]) the base file's bytes. Panics on a segment with no parent
    /// or one not planned from `base` (what `add` and `estimate` plan always are).
    pub fn parent_of(
        &self,
        base: &Snapshot,
        file: &str,
        segment: &super::manifest::Segment,
        i: usize,
        out: &mut [u8],
    ) -> Result<(), Error> {
        let parent = segment.parent.as_ref().expect("a segment with a parent");
        if parent.offset.is_some() {
            return self.parent_range(base, file, segment, i, out);
        }
        let (_, pseg) = base.find(parent).expect("parents are planned from the base");
        self.chunk(base, &parent.file, pseg, i, out)
    }

    /// Reads into `out` what chunk `i` of `segment` (of file `file`, a plain file's segment whose
    /// parent is a byte range of a file of `base`) is coded against: the parent file's bytes from
    /// the range's offset plus the chunk's. Each chunk of the base they come from is checked.
    pub fn parent_range(
        &self,
        base: &Snapshot,
        file: &str,
        segment: &super::manifest::Segment,
        i: usize,
        out: &mut [u8],
    ) -> Result<(), Error> {
        let parent = segment.parent.as_ref().expect("a segment with a parent");
        // Saturating: a hostile offset finds no such bytes.
        let at = parent
            .offset
            .expect("a byte range")
            .saturating_add(segment.chunk_range(i).0);
        match self.read_range(base, &parent.file, at, out)? {
            true => Ok(()),
            false => Err(Error::MissingCopy {
                file: file.to_string(),
                from: parent.file.clone(),
                offset: at,
                end: at.saturating_add(out.len() as u64),
                base: base.tree.to_string(),
            }),
        }
    }

    /// Writes file `path` of `snap` (a manifest) to `dest`, chunks decoded in parallel and
    /// written in place; the file appears at `dest` only when complete and verified.
    pub fn write_file(
        &self,
        snap: &Snapshot,
        path: &str,
        dest: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64, Error> {
        let manifest = &snap.manifests[path];
        if let Some(t) = &manifest.table {
            return self.write_table(snap, path, t, dest, progress);
        }
        let io = |source| Error::Io {
            path: dest.to_owned(),
            source,
        };
        let parent = dest.parent().expect("destinations are inside the output directory");
        let tmp = output_file(parent).map_err(io)?;
        presize(tmp.as_file(), manifest.size).map_err(io)?;
        let file: &File = tmp.as_file();
        // Jobs: (segment, chunk), or for a records file (none, window of the file).
        let jobs: Vec<(Option<usize>, usize)> = match &manifest.records {
            None => manifest
                .segments
                .iter()
                .enumerate()
                .flat_map(|(s, seg)| (0..seg.chunks.len()).map(move |c| (Some(s), c)))
                .collect(),
            Some(_) => (0..manifest.size.div_ceil(RECORDS_WINDOW) as usize)
                .map(|w| (None, w))
                .collect(),
        };
        // Workers decode chunks into pooled buffers and hand them to one writer thread: the
        // kernel takes the file's lock for each write, so parallel writes would only wait on
        // each other, while the writer lets decoding go on during the copy.
        let pool = Mutex::new(Vec::new());
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(WRITES_QUEUED);
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                for (offset, buf) in rx {
                    file.write_all_at(&buf, offset).map_err(io)?;
                    progress(buf.len() as u64);
                    pool.lock().expect("no panics while holding it").push(buf);
                }
                Ok::<(), Error>(())
            });
            let decoded = jobs.par_iter().try_for_each_with(tx, |tx, &(s, c)| {
                let (at, len) = match s {
                    Some(s) => {
                        let seg = &manifest.segments[s];
                        let (start, end) = seg.chunk_range(c);
                        (seg.offset + start, end - start)
                    }
                    None => {
                        let at = c as u64 * RECORDS_WINDOW;
                        (at, RECORDS_WINDOW.min(manifest.size - at))
                    }
                };
                let mut buf = pool
                    .lock()
                    .expect("no panics while holding it")
                    .pop()
                    .unwrap_or_default();
                buf.resize(len as usize, 0);
                match s {
                    Some(s) => self.chunk(snap, path, s, c, &mut buf)?,
                    None => {
                        if !self.read_range(snap, path, at, &mut buf)? {
                            return Err(Error::Pieces {
                                file: path.to_string(),
                                why: format!("has no bytes at {at}"),
                            });
                        }
                    }
                }
                // A closed channel means the writer failed: stop, and report the writer's error.
                tx.send((at, buf))
                    .map_err(|_| io(std::io::ErrorKind::BrokenPipe.into()))
            });
            let written = writer.join().expect("the writer does not panic");
            written.and(decoded)
        })?;
        if let Some(records) = &manifest.records {
            // Every piece came from checked chunks; the whole file is checked once more.
            let found = hash_file(file, manifest.size).map_err(io)?;
            if found != records.hash {
                return Err(Error::Hash {
                    file: path.to_string(),
                    what: "the whole file".into(),
                    chunk: 0,
                    mismatch: Box::new(Mismatch {
                        blob: None,
                        found,
                        expected: records.hash,
                    }),
                });
            }
        }
        tmp.persist(dest).map_err(|e| io(e.error))?;
        Ok(manifest.size)
    }
}

impl Rebuilder<'_> {
    /// Writes table `path` of `snap` to `dest`: its base's tables (each rebuilt to a scratch
    /// file) and its new rows, played as its pieces say, in the table's format; the rows' hash
    /// is checked before the file appears. Returns the bytes written.
    fn write_table(
        &self,
        snap: &Snapshot,
        path: &str,
        t: &TableRef,
        dest: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64, Error> {
        let io = |source| Error::Io {
            path: dest.to_owned(),
            source,
        };
        let table_err = |source: table::Error| Error::Table {
            file: path.to_string(),
            source: Box::new(source),
        };
        let bad = |why: String| Error::Pieces {
            file: path.to_string(),
            why,
        };
        let parent = dest.parent().expect("destinations are inside the output directory");
        let format = Format::from_name(&t.format).ok_or_else(|| bad(format!("names table format {:?}", t.format)))?;
        let bytes = self.cas.get(&t.pieces).map_err(|source| Error::Blob {
            file: path.to_string(),
            what: "its piece table".into(),
            chunk: 0,
            source: Box::new(source),
        })?;
        let pieces = rows::decode_pieces(&bytes, t.count, t.rows)
            .ok_or_else(|| bad(format!("does not describe {} pieces of {} rows", t.count, t.rows)))?;
        let added: u64 = pieces
            .iter()
            .filter(|p| matches!(p, Piece::New { .. }))
            .map(Piece::len)
            .sum();
        if added != t.added {
            return Err(bad(format!("has {added} new rows, the manifest {}", t.added)));
        }

        // The new rows: the file the segments tile.
        let new_rows = output_file(parent).map_err(io)?;
        let mut buf = Vec::new();
        let mut at = 0;
        while at < t.new_bytes {
            let n = RECORDS_WINDOW.min(t.new_bytes - at);
            buf.resize(n as usize, 0);
            if !self.read_segments(snap, path, at, &mut buf)? {
                return Err(bad(format!("has no new-rows bytes at {at}")));
            }
            new_rows.as_file().write_all_at(&buf, at).map_err(io)?;
            at += n;
        }
        let mut new_cursor = Cursor::new(new_rows.path(), Format::Parquet);
        let schema = new_cursor.schema().map_err(table_err)?;

        // The base's tables, when rows are copied from them: each rebuilt to a scratch file.
        let copies = pieces.iter().any(|p| matches!(p, Piece::Copy { .. }));
        let mut base_files = Vec::new();
        if copies {
            let commit = snap.base()?.ok_or_else(|| Error::NoBase {
                file: path.to_string(),
                what: "its table".into(),
            })?;
            let base = self.base(&commit).ok_or_else(|| Error::NoBase {
                file: path.to_string(),
                what: "its table".into(),
            })?;
            let parts = t.base_parts();
            if parts.len() > table::plan::MAX_SHARDS {
                return Err(bad(format!(
                    "copies rows of {} base tables, more than {}",
                    parts.len(),
                    table::plan::MAX_SHARDS
                )));
            }
            for (from, rows) in parts {
                let Some(manifest) = base.manifests.get(from) else {
                    return Err(Error::MissingCopy {
                        file: path.to_string(),
                        from: from.to_string(),
                        offset: 0,
                        end: 0,
                        base: commit.to_string(),
                    });
                };
                let tmp = output_file(parent).map_err(io)?.into_temp_path();
                self.write_file(base, from, &tmp, &|_| {})?;
                let format = match manifest.table.as_ref() {
                    Some(bt) => Format::from_name(&bt.format),
                    None => table::detect(from, &tmp).map_err(table_err)?,
                };
                let format = format.ok_or_else(|| bad(format!("copies rows of {from}, which is not a table")))?;
                base_files.push((from, tmp, format, rows.unwrap_or(u64::MAX)));
            }
        }
        let mut cursors = Vec::with_capacity(base_files.len());
        for (from, tmp, format, rows) in &base_files {
            let mut cursor = Cursor::new(tmp, *format);
            let base_schema = cursor.schema().map_err(table_err)?;
            let projection = table::replay::projection(&schema, &base_schema)
                .ok_or_else(|| bad(format!("copies rows of {from}, whose columns do not hold the table's")))?;
            cursors.push((cursor, *rows, projection));
        }
        let mut base_parts = Part::numbered(cursors);

        let out = output_file(parent).map_err(io)?;
        let style = Style {
            compression: t.compression.clone(),
            row_group_rows: t.row_group_rows,
        };
        let mut writer = Writer::new(out.reopen().map_err(io)?, dest, format, &schema, &style).map_err(table_err)?;
        let mut hasher =
            RowHasher::new(&schema).ok_or_else(|| bad("has columns arrow's row format cannot encode".into()))?;
        replay(&pieces, &mut base_parts, &mut new_cursor, &schema, &mut |b| {
            hasher.add(&b).map_err(|e| table::Error::Invalid {
                path: dest.to_owned(),
                why: format!("its rows cannot be encoded: {e}"),
            })?;
            writer.write(&b)
        })
        .map_err(table_err)?;
        writer.finish().map_err(table_err)?;
        let found = hasher.finish();
        if hasher.rows != t.rows || found != t.hash {
            return Err(Error::Hash {
                file: path.to_string(),
                what: format!("the table's {} rows", hasher.rows),
                chunk: 0,
                mismatch: Box::new(Mismatch {
                    blob: None,
                    found,
                    expected: t.hash,
                }),
            });
        }
        let size = out.as_file().metadata().map_err(io)?.len();
        out.persist(dest).map_err(|e| io(e.error))?;
        progress(snap.manifests[path].size);
        Ok(size)
    }
}

thread_local! {
    /// Chunk-sized buffers reused along chains of parents, by every chunk decoded on this thread.
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Which chunk: of segment `seg` of `file` in snapshot `tree`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChunkId {
    tree: ObjectId,
    file: String,
    seg: usize,
    chunk: usize,
}

thread_local! {
    /// The chunks this thread decoded last for [`Rebuilder::read_range`], most recent first:
    /// a records file reads many small runs, alternately from its base's chunks and its own.
    static LAST: RefCell<Vec<(ChunkId, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
}

/// Chunks [`LAST`] keeps per thread.
const CACHED_CHUNKS: usize = 4;

/// Copies `dst.len()` bytes from `from` of chunk `id` (`len` bytes, decoded by `decode`) into
/// `dst`, decoding it only if it is not among the ones this thread decoded last.
fn cached_chunk(
    id: ChunkId,
    len: usize,
    dst: &mut [u8],
    from: usize,
    decode: impl FnOnce(&mut [u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let hit = LAST.with_borrow_mut(|last| {
        let i = last.iter().position(|(c, _)| *c == id)?;
        let entry = last.remove(i);
        dst.copy_from_slice(&entry.1[from..from + dst.len()]);
        last.insert(0, entry);
        Some(())
    });
    if hit.is_some() {
        return Ok(());
    }
    // Reuse the least recent buffer when the cache is full.
    let mut bytes = LAST
        .with_borrow_mut(|last| (last.len() >= CACHED_CHUNKS).then(|| last.pop()).flatten())
        .map(|(_, b)| b)
        .unwrap_or_default();
    bytes.resize(len, 0);
    decode(&mut bytes)?;
    dst.copy_from_slice(&bytes[from..from + dst.len()]);
    LAST.with_borrow_mut(|last| last.insert(0, (id, bytes)));
    Ok(())
}

/// Runs `f` on a reused buffer of this thread, whose content is unspecified.
pub fn with_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = BUFFERS.with_borrow_mut(Vec::pop).unwrap_or_default();
    let result = f(&mut buf);
    BUFFERS.with_borrow_mut(|pool| pool.push(buf));
    result
}

/// The first `len` bytes of `buf`, grown (never shrunk, never cleared) to hold them.
pub fn first(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buf.len() < len {
        buf.resize(len, 0);
    }
    &mut buf[..len]
}

/// A human name for a segment: its tensor, or what it is.
pub fn segment_name(manifest: &Manifest, seg: usize) -> String {
    match (&manifest.segments[seg].tensor, manifest.kind.as_str()) {
        (Some(t), _) => format!("tensor {:?}", t.name),
        (None, "safetensors") => "header".to_string(),
        (None, _) => "bytes".to_string(),
    }
}

/// Refuses paths that could leave the output directory: absolute, `..`, empty parts.
pub fn check_relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return Err("not a relative path".into());
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!("has a {part:?} component"));
        }
    }
    Ok(())
}

/// The destination of `path` below `dir`, checked.
pub fn destination(dir: &Path, path: &str) -> Result<PathBuf, Error> {
    check_relative_path(path).map_err(|why| Error::BadPath {
        path: path.to_string(),
        why,
    })?;
    Ok(dir.join(path))
}

/// A new temporary file in `dir` with the permissions of a normally created file (0644),
/// renamed into place once complete.
pub fn output_file(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(".sparse-")
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
}
