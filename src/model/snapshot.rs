//! A committed or staged snapshot, loaded: its record, its files and its manifests.

use std::collections::HashMap;

use super::manifest::{
    Manifest, ParentRef, SnapshotMeta, MANIFEST_FORMAT, MANIFEST_FORMAT_GGUF, MANIFEST_FORMAT_RANGES,
    MANIFEST_FORMAT_RECORDS, MANIFEST_FORMAT_TABLE, META_FORMAT, META_PATH,
};
use crate::store::history::{self, History, ObjectId};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    History(#[from] history::Error),
    #[error("snapshot {tree}: no {META_PATH} record (not a sparse snapshot)")]
    NoMeta { tree: ObjectId },
    #[error("snapshot {tree}: {path}: {why}")]
    Invalid { tree: ObjectId, path: String, why: String },
}

/// A snapshot's tree, read and checked.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub tree: ObjectId,
    pub meta: SnapshotMeta,
    /// Every file of the snapshot (the record excluded) and its git blob.
    pub blobs: HashMap<String, ObjectId>,
    pub manifests: HashMap<String, Manifest>,
    /// Tensor name -> (file, segment index), for finding delta parents by name.
    pub tensors: HashMap<String, (String, usize)>,
}

impl Snapshot {
    pub fn load(history: &History, tree: ObjectId) -> Result<Snapshot, Error> {
        let invalid = |path: &str, why: String| Error::Invalid {
            tree,
            path: path.to_string(),
            why,
        };
        let mut blobs: HashMap<String, ObjectId> = history.tree_files(tree)?.into_iter().collect();
        let meta_id = blobs.remove(META_PATH).ok_or(Error::NoMeta { tree })?;
        let meta: SnapshotMeta =
            serde_json::from_slice(&history.read_blob(meta_id)?).map_err(|e| invalid(META_PATH, e.to_string()))?;
        if meta.format != META_FORMAT {
            return Err(invalid(META_PATH, format!("unknown format {:?}", meta.format)));
        }
        let mut manifests = HashMap::new();
        let mut tensors = HashMap::new();
        for entry in &meta.files {
            crate::model::rebuild::check_relative_path(&entry.path).map_err(|why| invalid(&entry.path, why))?;
            let id = blobs
                .get(&entry.path)
                .ok_or_else(|| invalid(&entry.path, "listed in the record but not in the tree".into()))?;
            if !entry.manifest {
                continue;
            }
            let manifest: Manifest = serde_json::from_slice(&history.read_blob(*id)?)
                .map_err(|e| invalid(&entry.path, format!("bad manifest: {e}")))?;
            validate(&manifest, entry.size).map_err(|why| invalid(&entry.path, why))?;
            for (i, seg) in manifest.segments.iter().enumerate() {
                if let Some(t) = &seg.tensor {
                    tensors.insert(t.name.clone(), (entry.path.clone(), i));
                }
            }
            manifests.insert(entry.path.clone(), manifest);
        }
        Ok(Snapshot {
            tree,
            meta,
            blobs,
            manifests,
            tensors,
        })
    }

    /// The commit this snapshot's deltas refer to.
    pub fn base(&self) -> Result<Option<ObjectId>, Error> {
        self.meta
            .base
            .as_deref()
            .map(|hex| {
                ObjectId::from_hex(hex.as_bytes()).map_err(|e| Error::Invalid {
                    tree: self.tree,
                    path: META_PATH.into(),
                    why: format!("bad base {hex:?}: {e}"),
                })
            })
            .transpose()
    }

    /// The segment a [`ParentRef`] to a tensor names, if this snapshot has it (none for a byte
    /// range).
    pub fn find(&self, parent: &ParentRef) -> Option<(&Manifest, usize)> {
        let manifest = self.manifests.get(&parent.file)?;
        let i = manifest
            .segments
            .iter()
            .position(|s| s.tensor.as_ref().is_some_and(|t| t.name == parent.tensor))?;
        Some((manifest, i))
    }

    pub fn raw_bytes(&self) -> u64 {
        self.meta.files.iter().map(|f| f.size).sum()
    }

    /// Bytes of coded chunks this snapshot's manifests refer to (before dedup across snapshots).
    pub fn stored_bytes(&self) -> u64 {
        self.manifests.values().map(Manifest::stored).sum()
    }
}

/// Checks that a manifest's segments tile its file and its chunks tile each segment.
pub fn validate(m: &Manifest, size: u64) -> Result<(), String> {
    if ![
        MANIFEST_FORMAT,
        MANIFEST_FORMAT_RECORDS,
        MANIFEST_FORMAT_TABLE,
        MANIFEST_FORMAT_RANGES,
        MANIFEST_FORMAT_GGUF,
    ]
    .contains(&m.format.as_str())
    {
        return Err(format!("unknown manifest format {:?}", m.format));
    }
    let ranges = Manifest::has_ranges(&m.segments);
    if ranges != (m.format == MANIFEST_FORMAT_RANGES) || (ranges && m.kind != "file") {
        return Err(format!(
            "a {} manifest of format {:?} {} segments coded against byte ranges",
            m.kind,
            m.format,
            if ranges { "has" } else { "has no" }
        ));
    }
    if (m.kind == "gguf") != (m.format == MANIFEST_FORMAT_GGUF) {
        return Err(format!("a {} manifest of format {:?}", m.kind, m.format));
    }
    if m.size != size {
        return Err(format!("manifest says {} bytes, the record {size}", m.size));
    }
    // A records file's segments tile its new bytes, not the file.
    let tiled = match (&m.records, &m.table, m.kind.as_str(), m.format.as_str()) {
        (Some(r), None, "records", MANIFEST_FORMAT_RECORDS) => r.added,
        (None, Some(t), "table", MANIFEST_FORMAT_TABLE) => t.new_bytes,
        (None, None, "records" | "table", _) | (Some(_), _, _, _) | (_, Some(_), _, _) => {
            return Err("a records or table manifest needs its piece table, and only it has one".into());
        }
        (None, None, _, _) => size,
    };
    let mut at = 0u64;
    for (i, s) in m.segments.iter().enumerate() {
        let name = s.tensor.as_ref().map(|t| t.name.as_str()).unwrap_or("(bytes)");
        if s.offset != at {
            return Err(format!("segment {i} ({name}) starts at {}, expected {at}", s.offset));
        }
        if s.width == 0 || s.width > 255 || s.chunk_size == 0 || s.chunk_size % s.width as u64 != 0 {
            return Err(format!(
                "segment {i} ({name}) has width {} and chunk size {}",
                s.width, s.chunk_size
            ));
        }
        if s.chunk_size > crate::store::cas::MAX_BLOB / 2 {
            return Err(format!(
                "segment {i} ({name}) has chunks of {} bytes, too large",
                s.chunk_size
            ));
        }
        if s.len % s.width as u64 != 0 {
            return Err(format!("segment {i} ({name}) is not whole elements"));
        }
        if let Some(t) = &s.tensor {
            // What reads tensors by their shape (candle tensors, device checkout) trusts it.
            let unknown = || format!("segment {i} ({name}) has unknown dtype {:?}", t.dtype);
            let bits = match m.kind.as_str() {
                "gguf" => {
                    let ty = super::gguf::type_by_name(&t.dtype).ok_or_else(unknown)?;
                    let elements = t.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
                    elements.and_then(|e| ty.bytes(e)).map(|b| u128::from(b) * 8)
                }
                _ => {
                    let dtype = super::safetensors::dtype_from_name(&t.dtype).ok_or_else(unknown)?;
                    (t.shape.iter()).try_fold(dtype.bitsize() as u128, |acc, &d| acc.checked_mul(u128::from(d)))
                }
            };
            if bits != Some(u128::from(s.len) * 8) {
                return Err(format!(
                    "segment {i} ({name}) holds {} bytes, not a {} tensor of shape {:?}",
                    s.len, t.dtype, t.shape
                ));
            }
        }
        if s.chunks.len() != super::manifest::Segment::chunk_count(s.len, s.chunk_size) {
            return Err(format!(
                "segment {i} ({name}) has {} chunks for {} bytes",
                s.chunks.len(),
                s.len
            ));
        }
        for (j, c) in s.chunks.iter().enumerate() {
            if c.codec.needs_parent() && s.parent.is_none() {
                return Err(format!(
                    "segment {i} ({name}) chunk {j} is {} without a parent",
                    c.codec
                ));
            }
            if c.codec.is_lossy() && s.lossy.is_none() {
                return Err(format!(
                    "segment {i} ({name}) chunk {j} is {} in a tensor not stored lossy",
                    c.codec
                ));
            }
            if c.codec == crate::codec::Codec::LowRank && s.lossy.as_ref().and_then(|l| l.factor).is_none() {
                return Err(format!(
                    "segment {i} ({name}) chunk {j} is lowrank without a factor blob"
                ));
            }
            if (c.codec == crate::codec::Codec::Same) == c.blob.is_some() {
                return Err(format!(
                    "segment {i} ({name}) chunk {j}: blob does not match codec {}",
                    c.codec
                ));
            }
        }
        at = at.checked_add(s.len).ok_or("segment lengths overflow")?;
    }
    if at != tiled {
        return Err(format!("segments cover {at} of {tiled} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::model::manifest::{Chunk, Segment, TensorMeta};
    use crate::store::cas::Key;

    fn manifest(dtype: &str, shape: &[u64], len: u64) -> Manifest {
        Manifest {
            format: super::super::manifest::MANIFEST_FORMAT.into(),
            kind: "safetensors".into(),
            size: len,
            segments: vec![Segment {
                offset: 0,
                len,
                width: 1,
                chunk_size: 1 << 20,
                tensor: Some(TensorMeta {
                    name: "w".into(),
                    dtype: dtype.into(),
                    shape: shape.to_vec(),
                }),
                parent: None,
                lossy: None,
                chunks: vec![Chunk {
                    codec: Codec::Full,
                    hash: Key::of(b""),
                    blob: Some(Key::of(b"")),
                    stored: 0,
                }],
            }],
            records: None,
            table: None,
        }
    }

    /// A tensor's dtype and shape must account for its segment's bytes exactly: readers that
    /// build tensors from the record (candle tensors, device checkout) trust them.
    #[test]
    fn a_shape_that_lies_about_the_bytes_is_refused() {
        assert_eq!(validate(&manifest("F32", &[2, 3], 24), 24), Ok(()));
        assert_eq!(validate(&manifest("F4", &[2, 3], 3), 3), Ok(()));
        for (dtype, shape) in [
            ("F32", vec![2u64, 4]),
            ("BF16", vec![2, 3]),
            ("F32", vec![u64::MAX, u64::MAX, 2]),
        ] {
            let e = validate(&manifest(dtype, &shape, 24), 24).unwrap_err();
            assert!(e.contains("not a") && e.contains(dtype), "{e}");
        }
        let e = validate(&manifest("Q5", &[6], 24), 24).unwrap_err();
        assert!(e.contains("unknown dtype"), "{e}");
    }

    /// A segment coded against a byte range of a base file needs format 4 and a plain file, so
    /// that no older reader takes it for a tensor's parent, and no format-4 manifest lacks one.
    #[test]
    fn byte_range_parents_go_with_format_4_and_plain_files_only() {
        let plain = |format: &str, kind: &str, offset: Option<u64>| {
            let mut m = manifest("F32", &[2, 3], 24);
            m.format = format.into();
            m.kind = kind.into();
            m.segments[0].tensor = None;
            m.segments[0].parent = offset.map(|at| ParentRef {
                file: "base.bin".into(),
                tensor: String::new(),
                offset: Some(at),
            });
            m
        };
        let ranges = super::super::manifest::MANIFEST_FORMAT_RANGES;
        assert_eq!(validate(&plain(ranges, "file", Some(8)), 24), Ok(()));
        assert_eq!(validate(&plain(MANIFEST_FORMAT, "file", None), 24), Ok(()));
        for (format, kind, offset) in [
            (MANIFEST_FORMAT, "file", Some(8)),
            (ranges, "file", None),
            (ranges, "safetensors", Some(0)),
        ] {
            let e = validate(&plain(format, kind, offset), 24).unwrap_err();
            assert!(e.contains("byte ranges"), "{format} {kind}: {e}");
        }
    }
}
