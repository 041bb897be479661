//! Reading and validating a GGUF header (llama.cpp's model file), down to where each tensor's
//! data lies.
//!
//! A GGUF file (versions 2 and 3, little-endian) is the magic `GGUF`, a u32 version, a u64
//! tensor count and a u64 count of metadata pairs; the metadata (a string key, a u32 value
//! type, the value; strings are a u64 length and UTF-8 bytes, arrays a u32 element type, a u64
//! count and the elements); then per tensor its name, a u32 count of dimensions (at most 4),
//! the u64 dimensions (innermost first), a u32 GGML type and the u64 offset of its data from
//! the start of the data section. The data section starts at the first multiple of the
//! alignment (`general.alignment`, a u32 power of two, else 32) after the tensor infos.
//!
//! Every length in the header is checked against the bytes left before anything is read, and
//! metadata is skipped, never copied: what a header can make this hold is a list of at most
//! [`MAX_TENSORS`] tensors. A file that is not GGUF of version 2 or 3 (another version, the
//! big-endian variant, a Git LFS pointer named `.gguf`), or that has a tensor of a GGML type
//! this table does not know, is unparsed (`Ok(None)`): it is then stored as a plain file, still
//! losslessly. A GGUF file of version 2 or 3 that does not hold together is refused.
//!
//! Two checks are looser than llama.cpp's, neither of which matters to storing the bytes: a
//! tensor must be whole blocks of its type in all, not in its innermost dimension, and an empty
//! array's element type is not checked.

use std::fmt;
use std::path::{Path, PathBuf};

/// The alignment of the data section when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;

/// Dimensions per tensor at most (GGML_MAX_DIMS).
const MAX_DIMS: u32 = 4;

/// Nesting of arrays in metadata at most.
const MAX_DEPTH: usize = 16;

/// Tensors per file at most (the largest mixture-of-experts models have a few thousand).
pub const MAX_TENSORS: u64 = 1 << 20;

/// Metadata pairs at least this long get a segment of their own ([`Header::large_pairs`]).
pub const LARGE_PAIR: u64 = 64 << 10;

/// A GGML tensor type: its name as llama.cpp prints it, the elements per block and the bytes
/// per block, and the width its data is coded with: the element's size for float and integer
/// types; for a type of 32-element blocks (a scale or two, then the packed codes) the whole
/// block, so that each plane holds one field of every block; plain bytes for the 256-element
/// super-blocks (K-quants and the rest), whose scales are themselves packed. On the real pair
/// (tests/gguf.rs, docs/PERFORMANCE.md) whole blocks took Q4_0 from 0.105 of raw to 0.086,
/// Q4_1 0.122 to 0.095, Q5_1 0.133 to 0.108, Q8_0 0.159 to 0.153; they took Q4_K from 0.110 to
/// 0.141, Q6_K 0.142 to 0.175.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType {
    pub id: u32,
    pub name: &'static str,
    pub block: u64,
    pub block_bytes: u64,
    pub width: usize,
}

const fn t(id: u32, name: &'static str, block: u64, block_bytes: u64, width: usize) -> GgmlType {
    GgmlType {
        id,
        name,
        block,
        block_bytes,
        width,
    }
}

/// The GGML types of ggml.h (ids 4, 5 and 31 to 33, 36 to 38 were removed from the format).
pub const TYPES: &[GgmlType] = &[
    t(0, "F32", 1, 4, 4),
    t(1, "F16", 1, 2, 2),
    t(2, "Q4_0", 32, 18, 18),
    t(3, "Q4_1", 32, 20, 20),
    t(6, "Q5_0", 32, 22, 22),
    t(7, "Q5_1", 32, 24, 24),
    t(8, "Q8_0", 32, 34, 34),
    t(9, "Q8_1", 32, 36, 36),
    t(10, "Q2_K", 256, 84, 1),
    t(11, "Q3_K", 256, 110, 1),
    t(12, "Q4_K", 256, 144, 1),
    t(13, "Q5_K", 256, 176, 1),
    t(14, "Q6_K", 256, 210, 1),
    t(15, "Q8_K", 256, 292, 1),
    t(16, "IQ2_XXS", 256, 66, 1),
    t(17, "IQ2_XS", 256, 74, 1),
    t(18, "IQ3_XXS", 256, 98, 1),
    t(19, "IQ1_S", 256, 50, 1),
    t(20, "IQ4_NL", 32, 18, 18),
    t(21, "IQ3_S", 256, 110, 1),
    t(22, "IQ2_S", 256, 82, 1),
    t(23, "IQ4_XS", 256, 136, 1),
    t(24, "I8", 1, 1, 1),
    t(25, "I16", 1, 2, 2),
    t(26, "I32", 1, 4, 4),
    t(27, "I64", 1, 8, 8),
    t(28, "F64", 1, 8, 8),
    t(29, "IQ1_M", 256, 56, 1),
    t(30, "BF16", 1, 2, 2),
    t(34, "TQ1_0", 256, 54, 1),
    t(35, "TQ2_0", 256, 66, 1),
    t(39, "MXFP4", 32, 17, 17),
];

/// The GGML type of id `id`, if known.
pub fn type_by_id(id: u32) -> Option<&'static GgmlType> {
    TYPES.iter().find(|t| t.id == id)
}

/// The GGML type named `name` (as a manifest records it), if known.
pub fn type_by_name(name: &str) -> Option<&'static GgmlType> {
    TYPES.iter().find(|t| t.name == name)
}

impl GgmlType {
    /// Bytes of a tensor of this type with `elements` elements; `None` unless they are whole
    /// blocks (or on overflow).
    pub fn bytes(&self, elements: u64) -> Option<u64> {
        elements
            .is_multiple_of(self.block)
            .then(|| (elements / self.block).checked_mul(self.block_bytes))
            .flatten()
    }
}

/// One tensor of a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: &'static GgmlType,
    /// Outermost dimension first, as safetensors and numpy write shapes (GGUF stores them
    /// innermost first).
    pub shape: Vec<u64>,
    /// Byte range of its data in the whole file.
    pub begin: u64,
    pub end: u64,
}

/// A validated header.
#[derive(Debug, Clone)]
pub struct Header {
    /// Where the data section starts.
    pub data_start: u64,
    /// Tensors in file order (by data offset), none overlapping. The bytes between them (the
    /// header, padding) belong to no tensor.
    pub tensors: Vec<TensorInfo>,
    /// Byte ranges of the metadata pairs of at least [`LARGE_PAIR`] bytes, in file order: a
    /// tokenizer's vocabulary and merges, which a fine-tune keeps byte for byte, but after a
    /// `general.name` of another length.
    pub large_pairs: Vec<(u64, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub struct HeaderError {
    pub file: PathBuf,
    pub tensor: Option<String>,
    pub why: String,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: GGUF header: ", self.file.display())?;
        if let Some(t) = &self.tensor {
            write!(f, "tensor {t:?}: ")?;
        }
        write!(f, "{}", self.why)
    }
}

/// A cursor over the header's bytes; every read checks the bytes left.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let left = (self.bytes.len() - self.at) as u64;
        if n > left {
            return Err(format!(
                "the file ends at byte {}, inside a field of {n} bytes at byte {}",
                self.bytes.len(),
                self.at
            ));
        }
        let out = &self.bytes[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    /// A string's bytes: metadata strings are taken as they are (a tokenizer's tokens need not
    /// be valid UTF-8).
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u64()?;
        self.take(n)
    }
    /// A string that must be UTF-8: a tensor's name, which manifests record.
    fn string(&mut self) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "a name is not UTF-8".to_string())
    }
    /// Skips a value of type `ty`; returns it when it is a u32 (what `general.alignment` is).
    fn value(&mut self, ty: u32, depth: usize) -> Result<Option<u32>, String> {
        let fixed = |ty: u32| match ty {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        match ty {
            4 => Ok(Some(self.u32()?)),
            8 => self.bytes().map(|_| None),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(format!("arrays nested deeper than {MAX_DEPTH}"));
                }
                let elem = self.u32()?;
                let n = self.u64()?;
                match fixed(elem) {
                    // Checked against the bytes left before anything is skipped.
                    Some(size) => self.take(n.checked_mul(size).ok_or("an array too long")?).map(|_| None),
                    None => {
                        for _ in 0..n {
                            self.value(elem, depth + 1)?;
                        }
                        Ok(None)
                    }
                }
            }
            _ => match fixed(ty) {
                Some(size) => self.take(size).map(|_| None),
                None => Err(format!("unknown metadata value type {ty}")),
            },
        }
    }
}

/// Parses and validates the GGUF header of `bytes` (the whole file, usually memory-mapped).
/// `Ok(None)` when it is not GGUF of version 2 or 3, or when a tensor has a GGML type this
/// reader does not know.
pub fn parse(file: &Path, bytes: &[u8]) -> Result<Option<Header>, HeaderError> {
    let fail = |tensor: Option<&str>, why: String| HeaderError {
        file: file.to_owned(),
        tensor: tensor.map(str::to_owned),
        why,
    };
    let version = bytes
        .get(4..8)
        .map(|v| u32::from_le_bytes(v.try_into().expect("4 bytes")));
    if !bytes.starts_with(b"GGUF") || !matches!(version, Some(2 | 3)) {
        return Ok(None);
    }
    let mut r = Reader { bytes, at: 8 };
    let (tensors, pairs) = (|| Ok::<_, String>((r.u64()?, r.u64()?)))().map_err(|why| fail(None, why))?;
    let mut alignment = DEFAULT_ALIGNMENT;
    let mut large_pairs = Vec::new();
    for i in 0..pairs {
        let start = r.at as u64;
        let mut pair = || -> Result<(), String> {
            let key = r.bytes()?;
            let ty = r.u32()?;
            let value = r
                .value(ty, 0)
                .map_err(|e| format!("{:?}: {e}", String::from_utf8_lossy(key)))?;
            if key == b"general.alignment" {
                alignment = value
                    .filter(|a| a.is_power_of_two())
                    .ok_or("general.alignment is not a u32 power of two")?
                    .into();
            }
            Ok(())
        };
        pair().map_err(|why| fail(None, format!("metadata pair {i}: {why}")))?;
        if r.at as u64 - start >= LARGE_PAIR {
            large_pairs.push((start, r.at as u64));
        }
    }
    // Each tensor info takes at least 24 bytes: a count beyond what is left is a lie.
    if tensors > (bytes.len() - r.at) as u64 / 24 {
        return Err(fail(None, format!("{tensors} tensors do not fit in the file")));
    }
    if tensors > MAX_TENSORS {
        return Err(fail(None, format!("{tensors} tensors, more than {MAX_TENSORS}")));
    }
    let mut infos = Vec::with_capacity(tensors as usize);
    let mut names = std::collections::HashSet::new();
    let mut unknown = false;
    for i in 0..tensors {
        let name = r.string().map_err(|why| fail(None, format!("tensor {i}: {why}")))?;
        if !names.insert(name) {
            return Err(fail(Some(name), "name appears twice".into()));
        }
        let mut info = || -> Result<(Vec<u64>, u32, u64), String> {
            let dims = r.u32()?;
            if dims > MAX_DIMS {
                return Err(format!("{dims} dimensions, at most {MAX_DIMS}"));
            }
            let mut shape = (0..dims).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
            shape.reverse();
            Ok((shape, r.u32()?, r.u64()?))
        };
        let (shape, ty, offset) = info().map_err(|why| fail(Some(name), why))?;
        match type_by_id(ty) {
            Some(ty) => infos.push((name, ty, shape, offset)),
            None => unknown = true,
        }
    }
    if unknown {
        return Ok(None);
    }
    let data_start = (r.at as u64).next_multiple_of(alignment);
    let size = bytes.len() as u64;
    let mut out = Vec::with_capacity(infos.len());
    for (name, ty, shape, offset) in infos {
        let bad = |why: String| fail(Some(name), why);
        if !offset.is_multiple_of(alignment) {
            return Err(bad(format!("data offset {offset} is not a multiple of {alignment}")));
        }
        let elements = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let len = elements
            .and_then(|e| ty.bytes(e))
            .ok_or_else(|| bad(format!("shape {shape:?} is not whole {} blocks", ty.name)))?;
        let begin = data_start.checked_add(offset);
        let end = begin.and_then(|b| b.checked_add(len)).filter(|&e| e <= size);
        let (Some(begin), Some(end)) = (begin, end) else {
            return Err(bad(format!(
                "{len} bytes at data offset {offset} go beyond the {size}-byte file"
            )));
        };
        out.push(TensorInfo {
            name: name.to_string(),
            ty,
            shape,
            begin,
            end,
        });
    }
    out.sort_by(|a, b| (a.begin, a.end, &a.name).cmp(&(b.begin, b.end, &b.name)));
    let mut cursor = data_start.min(size);
    let mut last: Option<&str> = None;
    for t in &out {
        if t.begin < cursor {
            let why = match last {
                Some(other) => format!("data overlaps tensor {other:?}"),
                None => "data starts inside the header".to_string(),
            };
            return Err(fail(Some(&t.name), why));
        }
        cursor = t.end;
        if t.begin < t.end {
            last = Some(&t.name);
        }
    }
    Ok(Some(Header {
        data_start,
        tensors: out,
        large_pairs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    /// A GGUF file of one F32 tensor "w" of shape [2, 3] (6 elements) after a name pair.
    fn file(name: &str, ty: u32) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&1u64.to_le_bytes());
        out.extend_from_slice(&1u64.to_le_bytes());
        string(&mut out, "general.name");
        out.extend_from_slice(&8u32.to_le_bytes());
        string(&mut out, name);
        string(&mut out, "w");
        out.extend_from_slice(&2u32.to_le_bytes());
        out.extend_from_slice(&3u64.to_le_bytes());
        out.extend_from_slice(&2u64.to_le_bytes());
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.resize(out.len().next_multiple_of(32), 0);
        out.extend((0..24u8).map(|i| i.wrapping_mul(37)));
        out
    }

    #[test]
    fn a_tensor_is_found_after_headers_of_any_length() {
        for name in ["a", "a longer name", "x".repeat(40).as_str()] {
            let bytes = file(name, 0);
            let h = parse(Path::new("m.gguf"), &bytes).unwrap().expect("known types");
            assert_eq!(h.data_start % 32, 0);
            assert_eq!(h.tensors.len(), 1);
            let t = &h.tensors[0];
            assert_eq!((t.name.as_str(), t.ty.name, t.shape.clone()), ("w", "F32", vec![2, 3]));
            assert_eq!((t.begin, t.end), (h.data_start, h.data_start + 24));
            assert_eq!(t.end, bytes.len() as u64);
        }
    }

    #[test]
    fn every_cut_of_the_header_is_refused_and_unknown_types_are_unparsed() {
        let bytes = file("base", 0);
        let data_start = parse(Path::new("m.gguf"), &bytes).unwrap().unwrap().data_start as usize;
        for cut in 0..8 {
            assert!(
                parse(Path::new("m.gguf"), &bytes[..cut]).unwrap().is_none(),
                "cut at {cut}"
            );
        }
        for cut in 8..data_start {
            assert!(parse(Path::new("m.gguf"), &bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(parse(Path::new("m.gguf"), &file("base", 99)).unwrap().is_none());
        // Six elements are not whole blocks of 32.
        let err = parse(Path::new("m.gguf"), &file("base", 8)).unwrap_err();
        assert!(err.to_string().contains("\"w\""), "{err}");
    }

    #[test]
    fn metadata_strings_may_be_any_bytes_tensor_names_must_be_utf8() {
        let mut bytes = file("zz", 0);
        let at = bytes.windows(2).position(|w| w == b"zz").expect("the name's value");
        bytes[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
        assert!(parse(Path::new("m.gguf"), &bytes).unwrap().is_some());
        let name = bytes.iter().rposition(|&b| b == b'w').expect("the tensor's name");
        bytes[name] = 0xff;
        let err = parse(Path::new("m.gguf"), &bytes).unwrap_err();
        assert!(err.to_string().contains("tensor 0: a name is not UTF-8"), "{err}");
    }

    #[test]
    fn type_sizes_are_whole_blocks() {
        let q4k = type_by_name("Q4_K").unwrap();
        assert_eq!(q4k.bytes(512), Some(288));
        assert_eq!(q4k.bytes(100), None);
        assert_eq!(type_by_id(30).unwrap().name, "BF16");
        let ids: std::collections::HashSet<u32> = TYPES.iter().map(|t| t.id).collect();
        assert_eq!(ids.len(), TYPES.len(), "ids are unique");
        // The types candle-core reads, with their ids in ggml.h.
        use candle_core::quantized::GgmlDType as G;
        let candle = [
            (0, G::F32),
            (1, G::F16),
            (2, G::Q4_0),
            (3, G::Q4_1),
            (6, G::Q5_0),
            (7, G::Q5_1),
            (8, G::Q8_0),
            (9, G::Q8_1),
            (10, G::Q2K),
            (11, G::Q3K),
            (12, G::Q4K),
            (13, G::Q5K),
            (14, G::Q6K),
            (15, G::Q8K),
            (30, G::BF16),
        ];
        for (id, g) in candle {
            let t = type_by_id(id).unwrap();
            assert_eq!(
                (t.block, t.block_bytes),
                (g.block_size() as u64, g.type_size() as u64),
                "{}",
                t.name
            );
        }
    }

    #[test]
    fn files_that_are_not_gguf_2_or_3_are_unparsed() {
        let mut v1 = file("x", 0);
        v1[4] = 1;
        let mut big_endian = file("x", 0);
        big_endian[4..8].copy_from_slice(&3u32.to_be_bytes());
        let lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n".to_vec();
        for bytes in [v1, big_endian, lfs, Vec::new()] {
            assert!(parse(Path::new("m.gguf"), &bytes).unwrap().is_none());
        }
    }
}
