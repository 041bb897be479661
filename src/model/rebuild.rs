//! Rebuilding files from snapshots: each chunk decoded against its parent's chunk (recursively
//! along the chain of bases), checked against its hash, and written in place at its offset.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::manifest::Manifest;
use super::snapshot::{self, Snapshot};
use crate::codec::{self, Codec};
use crate::store::cas::{self, Cas, Key};
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
    #[error("{file}: {what} refers to {tensor:?} in base {base}, which has no such tensor of that size")]
    MissingParent {
        file: String,
        what: String,
        tensor: String,
        base: String,
    },
    #[error("{file}: {what} has a delta parent but its snapshot has no base")]
    NoBase { file: String, what: String },
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

/// Deepest chain of bases followed before giving up (protects against cycles).
const MAX_DEPTH: usize = 1000;

/// The snapshots a rebuild may need, by commit, and the blobs to read chunks from.
pub struct Rebuilder<'a> {
    cas: &'a Cas,
    bases: HashMap<ObjectId, Snapshot>,
}

impl<'a> Rebuilder<'a> {
    /// Loads the chain of bases starting at commit `base` (none for a snapshot without base).
    pub fn new(history: &History, cas: &'a Cas, base: Option<ObjectId>) -> Result<Self, Error> {
        let mut bases = HashMap::new();
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
        }
        Ok(Rebuilder { cas, bases })
    }

    /// The loaded snapshot of base commit `commit`.
    pub fn base(&self, commit: &ObjectId) -> Option<&Snapshot> {
        self.bases.get(commit)
    }

    /// Decodes chunk `i` of segment `seg` of `file` in `snap` into `out` (its exact length),
    /// and checks its hash.
    pub fn chunk(&self, snap: &Snapshot, file: &str, seg: usize, i: usize, out: &mut [u8]) -> Result<(), Error> {
        let manifest = &snap.manifests[file];
        let segment = &manifest.segments[seg];
        let chunk = &segment.chunks[i];
        let what = || segment_name(manifest, seg);
        let parent = if chunk.codec.needs_parent() {
            let mut buf = vec![0u8; out.len()];
            self.parent_chunk(snap, file, seg, i, &mut buf)?;
            Some(buf)
        } else {
            None
        };
        match (chunk.codec, chunk.blob) {
            (Codec::Same, _) => out.copy_from_slice(parent.as_deref().expect("same needs a parent")),
            (_, Some(blob)) => {
                // The decoded chunk's hash, checked below, also catches a damaged blob.
                let coded = self.cas.get_unverified(&blob).map_err(|source| Error::Blob {
                    file: file.to_string(),
                    what: what(),
                    chunk: i,
                    source: Box::new(source),
                })?;
                codec::decode(&coded, parent.as_deref(), segment.width as usize, out).map_err(|source| {
                    Error::Decode {
                        file: file.to_string(),
                        what: what(),
                        chunk: i,
                        blob,
                        source,
                    }
                })?;
            }
            (_, None) => unreachable!("validated: only `same` chunks have no blob"),
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

    /// Decodes the parent's chunk `i` of the segment `seg` of `file` in `snap`.
    fn parent_chunk(&self, snap: &Snapshot, file: &str, seg: usize, i: usize, out: &mut [u8]) -> Result<(), Error> {
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
        let (pm, pseg) = base.find(parent).ok_or_else(missing)?;
        let ps = &pm.segments[pseg];
        if ps.len != segment.len || ps.chunk_size != segment.chunk_size || ps.width != segment.width {
            return Err(missing());
        }
        self.chunk(base, &parent.file, pseg, i, out)
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
        let io = |source| Error::Io {
            path: dest.to_owned(),
            source,
        };
        let parent = dest.parent().expect("destinations are inside the output directory");
        let tmp = output_file(parent).map_err(io)?;
        tmp.as_file().set_len(manifest.size).map_err(io)?;
        let file: &File = tmp.as_file();
        let jobs: Vec<(usize, usize)> = manifest
            .segments
            .iter()
            .enumerate()
            .flat_map(|(s, seg)| (0..seg.chunks.len()).map(move |c| (s, c)))
            .collect();
        // One output buffer per worker, reused: fresh 4 MiB buffers cost a page fault per page.
        jobs.par_iter().try_for_each_init(Vec::new, |buf, &(s, c)| {
            let seg = &manifest.segments[s];
            let (start, end) = seg.chunk_range(c);
            buf.clear();
            buf.resize((end - start) as usize, 0);
            self.chunk(snap, path, s, c, buf)?;
            file.write_all_at(buf, seg.offset + start).map_err(io)?;
            progress(buf.len() as u64);
            Ok::<(), Error>(())
        })?;
        tmp.persist(dest).map_err(|e| io(e.error))?;
        Ok(manifest.size)
    }
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
