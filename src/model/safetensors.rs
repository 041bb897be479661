//! Reading and validating a safetensors header, keeping its exact bytes.
//!
//! A safetensors file is an 8-byte little-endian header length `n`, `n` bytes of JSON (a map
//! from tensor name to dtype, shape and data offsets, plus an optional `__metadata__` map), then
//! the tensor data. Validation is stricter than the format needs for reading, because storing a
//! file whose parts do not tile it exactly could not give it back byte for byte.

use std::fmt;
use std::path::{Path, PathBuf};

pub use safetensors::Dtype;
use serde::de::{Deserializer, MapAccess, Visitor};

/// Headers larger than this are refused (the reference implementation's limit).
pub const MAX_HEADER: u64 = 100_000_000;

/// One tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Byte range of its data in the whole file (header included).
    pub begin: u64,
    pub end: u64,
}

impl TensorInfo {
    pub fn len(&self) -> u64 {
        self.end - self.begin
    }
    pub fn is_empty(&self) -> bool {
        self.begin == self.end
    }
}

/// A validated header.
#[derive(Debug, Clone)]
pub struct Header {
    /// Bytes before the tensor data: the 8-byte length and the JSON.
    pub len: u64,
    /// Tensors in file order (by data offset); their ranges tile `len..file size` exactly.
    pub tensors: Vec<TensorInfo>,
    /// The `__metadata__` map, if the header has one.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The bytes of one element for byte-plane coding: the dtype's size, or 1 for dtypes packed
/// below a byte (F4, F6), which are coded as plain bytes.
pub fn plane_width(dtype: Dtype) -> usize {
    let bits = dtype.bitsize();
    if bits.is_multiple_of(8) {
        bits / 8
    } else {
        1
    }
}

#[derive(Debug, thiserror::Error)]
pub struct HeaderError {
    pub file: PathBuf,
    pub tensor: Option<String>,
    pub kind: HeaderErrorKind,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(t) = &self.tensor {
            write!(f, "tensor {t:?}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HeaderErrorKind {
    #[error("cannot read the header: {0}")]
    Io(String),
    #[error("file is {0} bytes, too short for a safetensors header")]
    TooShort(u64),
    #[error("header length {header} goes beyond the end of the {file}-byte file")]
    HeaderBeyondFile { header: u64, file: u64 },
    #[error("header length {0} is larger than the {MAX_HEADER}-byte limit")]
    HeaderTooLarge(u64),
    #[error("header is not UTF-8")]
    NotUtf8,
    #[error("header is not a JSON object: {0}")]
    NotJson(String),
    #[error("name appears twice in the header")]
    Duplicate,
    #[error("unknown dtype {0}")]
    UnknownDtype(String),
    #[error("bad entry: {0}")]
    BadEntry(String),
    #[error("shape {shape:?} of {dtype:?} needs {expected} bytes, data_offsets give {found}")]
    SizeMismatch {
        shape: Vec<u64>,
        dtype: Dtype,
        expected: u128,
        found: u64,
    },
    #[error("data ends at {end}, beyond the {available} bytes of tensor data")]
    OutOfBounds { end: u64, available: u64 },
    #[error("data overlaps tensor {0:?}")]
    Overlap(String),
    #[error("{len} bytes at data offset {at} belong to no tensor")]
    Hole { at: u64, len: u64 },
}

/// Parses and validates the header of `bytes` (the whole file, usually memory-mapped).
pub fn parse(file: &Path, bytes: &[u8]) -> Result<Header, HeaderError> {
    parse_prefix(file, bytes, bytes.len() as u64)
}

/// Reads and validates the header of the safetensors file at `path` without reading its
/// tensor data. Returns the header and its exact bytes (the 8-byte length and the JSON).
pub fn read(path: &Path) -> Result<(Header, Vec<u8>), HeaderError> {
    use std::io::Read;
    let fail = |kind| HeaderError {
        file: path.to_owned(),
        tensor: None,
        kind,
    };
    let io = |e: std::io::Error| fail(HeaderErrorKind::Io(e.to_string()));
    let mut file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut prefix = [0u8; 8];
    if size < 8 {
        return Err(fail(HeaderErrorKind::TooShort(size)));
    }
    file.read_exact(&mut prefix).map_err(io)?;
    let n = u64::from_le_bytes(prefix);
    if n > MAX_HEADER {
        return Err(fail(HeaderErrorKind::HeaderTooLarge(n)));
    }
    if n > size - 8 {
        return Err(fail(HeaderErrorKind::HeaderBeyondFile { header: n, file: size }));
    }
    let mut bytes = prefix.to_vec();
    bytes.resize(8 + n as usize, 0);
    file.read_exact(&mut bytes[8..]).map_err(io)?;
    let header = parse_prefix(path, &bytes, size)?;
    Ok((header, bytes))
}

/// Parses a header from `bytes`, which start the file and hold at least its whole header, for a
/// file of `size` bytes.
fn parse_prefix(file: &Path, bytes: &[u8], size: u64) -> Result<Header, HeaderError> {
    let fail = |tensor: Option<&str>, kind| HeaderError {
        file: file.to_owned(),
        tensor: tensor.map(str::to_owned),
        kind,
    };
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| fail(None, HeaderErrorKind::TooShort(size)))?;
    if n > MAX_HEADER {
        return Err(fail(None, HeaderErrorKind::HeaderTooLarge(n)));
    }
    if n > size - 8 {
        return Err(fail(None, HeaderErrorKind::HeaderBeyondFile { header: n, file: size }));
    }
    let json = bytes.get(8..8 + n as usize).expect("callers pass the whole header");
    let json = std::str::from_utf8(json).map_err(|_| fail(None, HeaderErrorKind::NotUtf8))?;
    let mut de = serde_json::Deserializer::from_str(json);
    let entries = de
        .deserialize_map(EntriesVisitor)
        .and_then(|e| de.end().map(|()| e))
        .map_err(|e| fail(None, HeaderErrorKind::NotJson(e.to_string())))?;

    let data_len = size - 8 - n;
    let mut seen = std::collections::HashSet::new();
    let mut tensors = Vec::with_capacity(entries.len());
    let mut metadata = None;
    for (name, value) in entries {
        if !seen.insert(name.clone()) {
            return Err(fail(Some(&name), HeaderErrorKind::Duplicate));
        }
        if name == "__metadata__" {
            let ok = value.as_object().is_some_and(|m| m.values().all(|v| v.is_string()));
            if !ok {
                return Err(fail(
                    Some(&name),
                    HeaderErrorKind::BadEntry("must map strings to strings".into()),
                ));
            }
            metadata = value.as_object().cloned();
            continue;
        }
        let info = tensor_entry(&value, data_len).map_err(|kind| fail(Some(&name), kind))?;
        let (begin, end) = info.2;
        tensors.push(TensorInfo {
            name,
            dtype: info.0,
            shape: info.1,
            begin: 8 + n + begin,
            end: 8 + n + end,
        });
    }

    // Sort by data offset; empty tensors first at equal offsets so ranges stay ordered.
    tensors.sort_by(|a, b| (a.begin, a.end, &a.name).cmp(&(b.begin, b.end, &b.name)));
    let mut cursor = 8 + n;
    let mut last_name: Option<&str> = None;
    for t in &tensors {
        if t.begin < cursor {
            let other = last_name.unwrap_or_default().to_string();
            return Err(fail(Some(&t.name), HeaderErrorKind::Overlap(other)));
        }
        if t.begin > cursor {
            return Err(fail(
                None,
                HeaderErrorKind::Hole {
                    at: cursor - 8 - n,
                    len: t.begin - cursor,
                },
            ));
        }
        cursor = t.end;
        if !t.is_empty() {
            last_name = Some(&t.name);
        }
    }
    if cursor != size {
        return Err(fail(
            None,
            HeaderErrorKind::Hole {
                at: cursor - 8 - n,
                len: size - cursor,
            },
        ));
    }
    Ok(Header {
        len: 8 + n,
        tensors,
        metadata,
    })
}

type Entry = (Dtype, Vec<u64>, (u64, u64));

fn tensor_entry(value: &serde_json::Value, data_len: u64) -> Result<Entry, HeaderErrorKind> {
    let bad = |why: &str| HeaderErrorKind::BadEntry(why.to_string());
    let obj = value.as_object().ok_or_else(|| bad("not a JSON object"))?;
    let dtype_name = obj
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or_else(|| bad("no dtype string"))?;
    let dtype = dtype_from_name(dtype_name).ok_or_else(|| HeaderErrorKind::UnknownDtype(dtype_name.to_string()))?;
    let shape = obj
        .get("shape")
        .and_then(|s| s.as_array())
        .and_then(|a| a.iter().map(|d| d.as_u64()).collect::<Option<Vec<_>>>())
        .ok_or_else(|| bad("shape is not a list of non-negative integers"))?;
    let offsets = obj
        .get("data_offsets")
        .and_then(|s| s.as_array())
        .and_then(|a| a.iter().map(|d| d.as_u64()).collect::<Option<Vec<_>>>())
        .filter(|a| a.len() == 2)
        .ok_or_else(|| bad("data_offsets is not two non-negative integers"))?;
    let (begin, end) = (offsets[0], offsets[1]);
    if begin > end {
        return Err(bad("data_offsets end before they begin"));
    }
    if end > data_len {
        return Err(HeaderErrorKind::OutOfBounds {
            end,
            available: data_len,
        });
    }
    let bits = shape
        .iter()
        .try_fold(dtype.bitsize() as u128, |acc, &d| acc.checked_mul(d as u128))
        .ok_or_else(|| bad("shape overflows"))?;
    if bits % 8 != 0 {
        return Err(bad("shape does not fill whole bytes"));
    }
    if bits / 8 != (end - begin) as u128 {
        return Err(HeaderErrorKind::SizeMismatch {
            shape,
            dtype,
            expected: bits / 8,
            found: end - begin,
        });
    }
    Ok((dtype, shape, (begin, end)))
}

/// One tensor of a header being written: name, dtype (as safetensors spells it), shape and byte
/// length. Tensors are laid out back to back in the order given.
pub struct NewTensor<'a> {
    pub name: &'a str,
    pub dtype: &'a str,
    pub shape: &'a [u64],
    pub len: u64,
}

/// The bytes of a safetensors header listing `tensors` (and `metadata` as `__metadata__`): the
/// 8-byte length and the JSON, padded with spaces to a multiple of 8 bytes as safetensors
/// writers do, so that the data that follows stays aligned.
pub fn header_bytes(
    tensors: &[NewTensor<'_>],
    metadata: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Vec<u8> {
    let mut json = String::from("{");
    let mut sep = "";
    if let Some(m) = metadata {
        json.push_str("\"__metadata__\":");
        json.push_str(&to_json(m));
        sep = ",";
    }
    let mut offset = 0u64;
    for t in tensors {
        json.push_str(&format!(
            "{sep}{}:{{\"dtype\":{},\"shape\":{},\"data_offsets\":[{offset},{}]}}",
            to_json(t.name),
            to_json(t.dtype),
            to_json(t.shape),
            offset + t.len
        ));
        sep = ",";
        offset += t.len;
    }
    json.push('}');
    while !json.len().is_multiple_of(8) {
        json.push(' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("strings, numbers and maps serialize")
}

/// Collects a JSON object's entries in order, keeping duplicates (serde_json's maps drop them).
struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Vec<(String, serde_json::Value)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
            out.push(entry);
        }
        Ok(out)
    }
}

/// The dtype safetensors spells `name`, if it knows one.
pub fn dtype_from_name(name: &str) -> Option<Dtype> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

/// The canonical name of a dtype, as safetensors writes it.
pub fn dtype_name(dtype: Dtype) -> String {
    serde_json::to_value(dtype)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{dtype:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str, data: usize) -> Vec<u8> {
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(json.as_bytes());
        out.resize(out.len() + data, 7);
        out
    }

    fn kind(bytes: &[u8]) -> HeaderErrorKind {
        parse(Path::new("t.safetensors"), bytes)
            .expect_err("must be refused")
            .kind
    }

    #[test]
    fn a_valid_file_tiles_exactly() {
        let f = file(
            r#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"__metadata__":{"x":"y"}}"#,
            12,
        );
        let h = parse(Path::new("t"), &f).unwrap();
        assert_eq!(
            h.tensors.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(h.tensors[1].end, f.len() as u64);
        assert_eq!(h.metadata.unwrap()["x"], "y");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        std::fs::write(&path, &f).unwrap();
        let (read, bytes) = read(&path).unwrap();
        assert_eq!(read.tensors, h.tensors);
        assert_eq!(bytes, f[..read.len as usize]);
        std::fs::write(&path, &f[..f.len() - 1]).unwrap();
        assert!(matches!(
            super::read(&path).unwrap_err().kind,
            HeaderErrorKind::Hole { .. } | HeaderErrorKind::OutOfBounds { .. }
        ));
    }

    #[test]
    fn written_headers_parse_back() {
        let shape = [2u64, 3];
        let tensors = [
            NewTensor {
                name: "a \"quoted\" name",
                dtype: "BF16",
                shape: &shape,
                len: 12,
            },
            NewTensor {
                name: "b",
                dtype: "F32",
                shape: &[],
                len: 4,
            },
        ];
        let meta: serde_json::Map<String, serde_json::Value> = serde_json::from_str(r#"{"format":"pt"}"#).unwrap();
        let mut file = header_bytes(&tensors, Some(&meta));
        assert_eq!(file.len() % 8, 0);
        let header_len = file.len() as u64;
        file.resize(file.len() + 16, 0);
        let h = parse(Path::new("t"), &file).unwrap();
        assert_eq!(h.len, header_len);
        assert_eq!(h.tensors[0].name, "a \"quoted\" name");
        assert_eq!(
            (h.tensors[1].begin, h.tensors[1].end),
            (header_len + 12, header_len + 16)
        );
        assert_eq!(h.metadata.unwrap()["format"], "pt");
    }

    #[test]
    fn bad_headers_are_refused_with_the_reason() {
        assert!(matches!(kind(&[1, 2, 3]), HeaderErrorKind::TooShort(3)));
        let mut f = file("{}", 0);
        f[0] = 200;
        assert!(matches!(kind(&f), HeaderErrorKind::HeaderBeyondFile { .. }));
        assert!(matches!(kind(&file("[1]", 0)), HeaderErrorKind::NotJson(_)));
        let mut f = file("{\"\u{e9}\":1}", 0);
        f[10] = 0xff;
        assert!(matches!(kind(&f), HeaderErrorKind::NotUtf8));
        let dup = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
        assert!(matches!(kind(&file(dup, 2)), HeaderErrorKind::Duplicate));
        let unknown = r#"{"a":{"dtype":"F7","shape":[1],"data_offsets":[0,1]}}"#;
        assert!(matches!(kind(&file(unknown, 1)), HeaderErrorKind::UnknownDtype(_)));
        let beyond = r#"{"a":{"dtype":"U8","shape":[9],"data_offsets":[0,9]}}"#;
        assert!(matches!(kind(&file(beyond, 4)), HeaderErrorKind::OutOfBounds { .. }));
        let overlap = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#;
        assert!(matches!(kind(&file(overlap, 3)), HeaderErrorKind::Overlap(_)));
        let hole = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
        assert!(matches!(kind(&file(hole, 5)), HeaderErrorKind::Hole { at: 2, len: 3 }));
        let size = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        assert!(matches!(kind(&file(size, 8)), HeaderErrorKind::SizeMismatch { .. }));
    }
}
