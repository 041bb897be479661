//! The readable records a snapshot's git tree holds (docs/FORMAT.md, "Snapshot tree"):
//! `.sparse.json` at the root ([`SnapshotMeta`]) and, at the path of each large file, its
//! [`Manifest`]: the segments that tile the file and the chunks of each segment.

use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::store::cas::Key;

/// The file at the root of every snapshot tree.
pub const META_PATH: &str = ".sparse.json";
pub const META_FORMAT: &str = "sparse-snapshot/1";
pub const MANIFEST_FORMAT: &str = "sparse-manifest/1";
/// The format of a manifest with [`CopyRef`] segments, which readers of version 1 cannot rebuild.
pub const MANIFEST_FORMAT_COPIES: &str = "sparse-manifest/2";

/// What a snapshot is, where its delta parent is, and which of its files are manifests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotMeta {
    pub format: String,
    pub kind: String,
    /// The commit this snapshot's deltas refer to (hex), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    /// True when the tree holds a [`Manifest`] at `path`; false when it holds the file itself.
    pub manifest: bool,
}

/// How one large file is stored: segments that tile it, in order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: String,
    /// `safetensors` (header segment, then one segment per tensor) or `file` (plain bytes).
    pub kind: String,
    pub size: u64,
    pub segments: Vec<Segment>,
}

/// A contiguous run of a file's bytes: the safetensors header, one tensor, or a plain file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Segment {
    pub offset: u64,
    pub len: u64,
    /// Element width in bytes, the number of byte planes per chunk.
    pub width: u32,
    /// Bytes per chunk (a multiple of `width`); chunk i covers `i*chunk_size ..` up to `len`.
    pub chunk_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensor: Option<TensorMeta>,
    /// The tensor of the snapshot's base this one is coded against, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// Bytes copied from a file of the snapshot's base: then the segment has no chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyRef>,
    pub chunks: Vec<Chunk>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TensorMeta {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
}

/// A tensor in the base snapshot: the file that holds it and its name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct ParentRef {
    pub file: String,
    pub tensor: String,
}

/// A segment's bytes are the bytes of `file` in the base snapshot at `offset`, `len` of them
/// (the segment's length), whose blake3 is `hash`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CopyRef {
    pub file: String,
    pub offset: u64,
    pub hash: Key,
}

/// One chunk: how it is coded, the blake3 of its decoded bytes, and the blob holding the code.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Chunk {
    pub codec: Codec,
    pub hash: Key,
    /// None for [`Codec::Same`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<Key>,
    /// Bytes of the coded chunk (0 for `same`).
    pub stored: u64,
}

impl Segment {
    /// The byte range of chunk `i` within the segment.
    pub fn chunk_range(&self, i: usize) -> (u64, u64) {
        let start = i as u64 * self.chunk_size;
        (start, (start + self.chunk_size).min(self.len))
    }

    /// How many chunks a segment of `len` bytes has at `chunk_size`.
    pub fn chunk_count(len: u64, chunk_size: u64) -> usize {
        len.div_ceil(chunk_size) as usize
    }

    pub fn stored(&self) -> u64 {
        self.chunks.iter().map(|c| c.stored).sum()
    }

    /// How many chunks coding this segment makes: none for bytes copied from the base.
    pub fn coded_chunks(&self) -> usize {
        match self.copy {
            Some(_) => 0,
            None => Segment::chunk_count(self.len, self.chunk_size),
        }
    }

    /// The codec of the segment: the one all chunks share, or `mixed`.
    pub fn codec_summary(&self) -> String {
        let mut codecs = self.chunks.iter().map(|c| c.codec);
        match codecs.next() {
            None => "empty".into(),
            Some(first) if codecs.all(|c| c == first) => first.to_string(),
            Some(_) => "mixed".into(),
        }
    }
}

impl Manifest {
    pub fn stored(&self) -> u64 {
        self.segments.iter().map(Segment::stored).sum()
    }
}
