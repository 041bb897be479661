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
/// The format of a `records` manifest ([`RecordsRef`]), which readers of version 1 cannot rebuild.
pub const MANIFEST_FORMAT_RECORDS: &str = "sparse-manifest/2";
/// The format of a `table` manifest ([`TableRef`]), which readers of versions 1 and 2 cannot rebuild.
pub const MANIFEST_FORMAT_TABLE: &str = "sparse-manifest/3";
/// The format of a `file` manifest whose segments are coded against byte ranges of a base file
/// ([`ParentRef::offset`]), which readers of versions 1 to 3 cannot rebuild.
pub const MANIFEST_FORMAT_RANGES: &str = "sparse-manifest/4";
/// The format of a `gguf` manifest (tensors of a GGUF file, dtypes named as GGML types), which
/// readers of versions 1 to 4 cannot read.
pub const MANIFEST_FORMAT_GGUF: &str = "sparse-manifest/5";

/// What a snapshot is, where its delta parent is, and which of its files are manifests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotMeta {
    pub format: String,
    pub kind: String,
    /// The commit this snapshot's deltas refer to (hex), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Set when tensors are stored lossy: the tier, as `int8`, `lowrank rank R` or `lowrank
    /// within N bytes`. Checkout
    /// then gives back an approximation of what was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lossy: Option<String>,
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
    /// `safetensors` (header segment, then one segment per tensor), `gguf` (one segment per
    /// tensor, with the header and the padding between tensors as plain segments), `file`
    /// (plain bytes) or
    /// `records` (pieces of the base's file and new bytes, see [`RecordsRef`]).
    pub kind: String,
    pub size: u64,
    /// The segments that tile the file; for `records`, its new bytes.
    pub segments: Vec<Segment>,
    /// For kind `records`: how the file is pieced together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<RecordsRef>,
    /// For kind `table`: the rows of the base's table it copies, and its new rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableRef>,
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
    /// Set when this tensor is stored lossy (its chunks are then `int8` or `lowrank`, or `same`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lossy: Option<Lossy>,
    pub chunks: Vec<Chunk>,
}

/// How a tensor is stored lossy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lossy {
    /// `int8` or `lowrank`.
    pub tier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
    /// For `lowrank`: the blob of the tensor's B factor (rank x columns bf16), and its stored size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<Key>,
    #[serde(default)]
    pub factor_stored: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TensorMeta {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
}

impl TensorMeta {
    /// The rows and columns of the tensor read as a matrix: its first dimension by the rest
    /// (saturating on a shape no valid tensor has).
    pub fn matrix(&self) -> (usize, usize) {
        let rows = self.shape.first().copied().unwrap_or(1).max(1);
        let all = (self.shape.iter())
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .unwrap_or(u64::MAX);
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        (size(rows), size(all / rows))
    }
}

/// What a segment is coded against in the base snapshot: a tensor, by its file and name, or
/// (for a segment of a plain file) the bytes of a file from an offset, as many as the segment has.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct ParentRef {
    pub file: String,
    /// The tensor's name; empty for a byte range.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tensor: String,
    /// Where the byte range starts in `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// How a `records` file is rebuilt: its bytes are pieces, each copied from `base_file` in the
/// base snapshot or taken from the file's new bytes, which the manifest's segments tile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordsRef {
    /// The file of the base snapshot that copies come from.
    pub base_file: String,
    /// The blob of the piece table (docs/FORMAT.md, "Records"), how many pieces it has, and
    /// the size of the blob's file.
    pub pieces: Key,
    pub count: u64,
    pub pieces_stored: u64,
    /// Bytes of the new records, in file order: what the segments tile.
    pub added: u64,
    /// blake3 of the whole file, checked when it is rebuilt.
    pub hash: Key,
}

/// One of the base's tables that a table's copied rows are numbered over.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BaseTable {
    pub path: String,
    pub rows: u64,
}

impl TableRef {
    /// The base's files that copied rows come from, in row order, with their row counts
    /// (`None`: a lone base table, whose count is not recorded).
    pub fn base_parts(&self) -> Vec<(&str, Option<u64>)> {
        match self.base_tables.as_slice() {
            [] => vec![(self.base_file.as_str(), None)],
            parts => parts.iter().map(|b| (b.path.as_str(), Some(b.rows))).collect(),
        }
    }
}

/// How a `table` file (Parquet or Arrow IPC) is rebuilt: its rows are pieces, each a run of rows
/// of the base snapshot's tables ([`TableRef::base_parts`]) or of the new-rows Parquet file that the manifest's
/// segments tile. The rebuilt file holds the same schema, values and row order (docs/FORMAT.md,
/// "Tables"), not necessarily the same bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableRef {
    /// `parquet`, `arrow` (IPC file) or `arrows` (IPC stream): what checkout writes.
    pub format: String,
    /// The file of the base snapshot that copied rows come from.
    pub base_file: String,
    /// When rows are copied from several tables of the base (a split whose rows the new
    /// version put into other shard files): each of them with its row count, in the order
    /// their rows are numbered; `base_file` is the first. Empty: `base_file` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base_tables: Vec<BaseTable>,
    /// Rows of the table.
    pub rows: u64,
    /// The blob of the piece table (the records piece table, counted in rows), its piece count,
    /// and the size of the blob's file.
    pub pieces: Key,
    pub count: u64,
    pub pieces_stored: u64,
    /// Rows that are new: the rows of the new-rows file.
    pub added: u64,
    /// Bytes of the new-rows Parquet file: what the segments tile.
    pub new_bytes: u64,
    /// blake3 of the table's rows in arrow's row format, each preceded by its length (u32 LE),
    /// checked when the table is rebuilt.
    pub hash: Key,
    /// The source's compression (Parquet: `zstd`, `snappy`, `uncompressed`; Arrow IPC: `lz4`,
    /// `zstd`) and, for Parquet, rows per row group, which checkout writes again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_group_rows: Option<u64>,
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
        self.chunks.iter().map(|c| c.stored).sum::<u64>() + self.lossy.as_ref().map_or(0, |l| l.factor_stored)
    }

    /// How many chunks coding this segment makes.
    pub fn chunks_needed(&self) -> usize {
        Segment::chunk_count(self.len, self.chunk_size)
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
    /// Whether any of `segments` is coded against a byte range of a base file, which makes a
    /// manifest of format [`MANIFEST_FORMAT_RANGES`].
    pub fn has_ranges(segments: &[Segment]) -> bool {
        segments
            .iter()
            .any(|s| s.parent.as_ref().is_some_and(|p| p.offset.is_some()))
    }

    /// The chunks stored whole (codec `full`): (their [`super::encode::full_key`], blob), the
    /// rows the index's `full` table keeps so that later adds refer to them.
    pub fn full_chunks(&self) -> impl Iterator<Item = (Key, Key)> + '_ {
        self.segments.iter().flat_map(|s| {
            s.chunks
                .iter()
                .filter(|c| c.codec == Codec::Full)
                .filter_map(|c| Some((super::encode::full_key(&c.hash, s.width), c.blob?)))
        })
    }

    /// Every blob the manifest uses: its chunks', and a records file's piece table.
    pub fn blobs(&self) -> impl Iterator<Item = Key> + '_ {
        let chunks = self
            .segments
            .iter()
            .flat_map(|s| s.chunks.iter().filter_map(|c| c.blob));
        let factors = self
            .segments
            .iter()
            .filter_map(|s| s.lossy.as_ref().and_then(|l| l.factor));
        chunks
            .chain(factors)
            .chain(self.records.as_ref().map(|r| r.pieces))
            .chain(self.table.as_ref().map(|t| t.pieces))
    }

    pub fn stored(&self) -> u64 {
        let table =
            self.records.as_ref().map_or(0, |r| r.pieces_stored) + self.table.as_ref().map_or(0, |t| t.pieces_stored);
        self.segments.iter().map(Segment::stored).sum::<u64>() + table
    }
}
