//! Content-addressed blobs: bytes keyed by the blake3 hash of their decoded content, stored
//! zstd-compressed or raw, one file each, written to a temporary file and renamed into place.
//!
//! Blob file layout (docs/FORMAT.md, "Blob"):
//! ```text
//! 0   4  magic "SPB1"
//! 4   1  mode: 0 raw, 1 zstd
//! 5   8  decoded length, little-endian
//! 13  …  the bytes (raw, or one zstd frame)
//! ```
//! Every read re-hashes the decoded bytes and refuses a blob whose hash is not its key.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::index::BlobSizes;
use super::Layout;

const MAGIC: &[u8; 4] = b"SPB1";
/// Bytes of a blob file before its body.
pub const HEADER: usize = 13;
/// The largest blob this store writes or reads back; refusing larger declared sizes keeps a
/// corrupt or hostile blob from allocating without bound.
pub const MAX_BLOB: u64 = 1 << 30;

/// A blake3 hash naming a blob.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl Key {
    pub fn of(bytes: &[u8]) -> Key {
        Key(*blake3::hash(bytes).as_bytes())
    }
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", &self.to_hex()[..12])
    }
}

impl FromStr for Key {
    type Err = String;
    fn from_str(s: &str) -> Result<Key, String> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(format!("blob key {s:?} is not 64 hex digits"));
        }
        let mut key = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| format!("blob key {s:?} is not hex"))?;
            key[i] = u8::from_str_radix(hex, 16).map_err(|_| format!("blob key {s:?} is not hex"))?;
        }
        Ok(Key(key))
    }
}

impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether to zstd-compress a blob. Coded chunks are compressed already and go in raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compress {
    No,
    Zstd(i32),
}

/// What [`Cas::put`] did.
#[derive(Debug, Clone, Copy)]
pub struct Put {
    pub key: Key,
    /// Size of the blob file.
    pub stored: u64,
    /// False when the blob was already present (nothing written).
    pub new: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("blob {key} is missing from the store ({path})")]
    Missing { key: Key, path: PathBuf },
    #[error("blob {key} is corrupt ({path}): {why}")]
    Corrupt { key: Key, path: PathBuf, why: String },
    #[error("cannot write blob {key} to {path}: {source}")]
    Write {
        key: Key,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read blob {key} at {path}: {source}")]
    Read {
        key: Key,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The blob store of one `.sparse/` directory.
#[derive(Debug, Clone)]
pub struct Cas {
    dir: PathBuf,
    tmp: PathBuf,
}

impl Cas {
    pub fn new(layout: &Layout) -> Self {
        Cas {
            dir: layout.cas(),
            tmp: layout.tmp(),
        }
    }

    /// `cas/<64 hex digits>`: one flat directory. A git-style fan-out of 256 subdirectories
    /// adds a 4 KiB directory per prefix, which on a small store outweighs whole tensors.
    pub fn path(&self, key: &Key) -> PathBuf {
        self.dir.join(key.to_hex())
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.path(key).is_file()
    }

    /// Stores `bytes` unless a blob with their hash exists.
    pub fn put(&self, bytes: &[u8], compress: Compress) -> Result<Put, Error> {
        let key = Key::of(bytes);
        self.put_keyed(key, bytes, compress)
    }

    /// The store's temporary directory, where scratch files are made.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// A scratch file in the store's temporary directory, deleted when dropped.
    pub fn scratch(&self) -> std::io::Result<tempfile::NamedTempFile> {
        fs::create_dir_all(&self.tmp)?;
        tempfile::NamedTempFile::new_in(&self.tmp)
    }

    /// Stores `bytes` whose hash the caller already computed as `key`.
    pub fn put_keyed(&self, key: Key, bytes: &[u8], compress: Compress) -> Result<Put, Error> {
        debug_assert_eq!(key, Key::of(bytes));
        assert!(bytes.len() as u64 <= MAX_BLOB, "blobs are chunks, far below MAX_BLOB");
        let path = self.path(&key);
        // Only a blob known to be absent is written (and then counted as this writer's).
        match fs::metadata(&path) {
            Ok(meta) => {
                return Ok(Put {
                    key,
                    stored: meta.len(),
                    new: false,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Read { key, path, source }),
        }
        let (mode, body) = match compress {
            Compress::No => (0u8, None),
            Compress::Zstd(level) => {
                let z = zstd::bulk::compress(bytes, level).expect("zstd compresses in memory");
                if z.len() < bytes.len() {
                    (1u8, Some(z))
                } else {
                    (0u8, None)
                }
            }
        };
        let body = body.as_deref().unwrap_or(bytes);
        let write_err = |source| Error::Write {
            key,
            path: path.clone(),
            source,
        };
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(MAGIC);
        header[4] = mode;
        header[5..].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        fs::create_dir_all(&self.tmp).map_err(write_err)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.tmp).map_err(write_err)?;
        tmp.write_all(&header).map_err(write_err)?;
        tmp.write_all(body).map_err(write_err)?;
        super::start_writeback(tmp.as_file());
        tmp.persist(&path).map_err(|e| write_err(e.error))?;
        Ok(Put {
            key,
            stored: (HEADER + body.len()) as u64,
            new: true,
        })
    }

    /// The blob file of `key` as it lies on disk (compressed or not), for a transfer to
    /// another store, after decoding it and checking that its content hashes to `key`.
    /// Returns the file and the blob's sizes.
    pub fn read_file_verified(&self, key: &Key) -> Result<(Vec<u8>, BlobSizes), Error> {
        let path = self.path(key);
        let mut file = fs::read(&path).map_err(read_error(key, &path))?;
        let corrupt = |why: String| Error::Corrupt {
            key: *key,
            path: path.clone(),
            why,
        };
        let stored = file.len() as u64;
        // A raw body is checked where it lies; only a compressed one is decoded into a copy.
        let raw = file.get(4) == Some(&0);
        let mut decoded = if raw { std::mem::take(&mut file) } else { file.clone() };
        let body = decode_body(&mut decoded).map_err(corrupt)?;
        let actual = Key::of(&decoded[body.clone()]);
        if actual != *key {
            return Err(corrupt(format!("its content hashes to {actual}")));
        }
        let sizes = BlobSizes {
            decoded: body.len() as u64,
            stored,
        };
        Ok((if raw { decoded } else { file }, sizes))
    }

    /// Stores a blob file that [`Cas::read_file_verified`] read from another store, as it is,
    /// by temporary file and rename. Nothing is written when the blob is present.
    pub fn put_file(&self, key: Key, file: &[u8]) -> Result<(), Error> {
        let path = self.path(&key);
        if path.is_file() {
            return Ok(());
        }
        let write_err = |source| Error::Write {
            key,
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&self.tmp).map_err(write_err)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.tmp).map_err(write_err)?;
        tmp.write_all(file).map_err(write_err)?;
        tmp.persist(&path).map_err(|e| write_err(e.error))?;
        Ok(())
    }

    /// Checks a blob file received from another store (framing, a decoded size within what
    /// its header declares and [`MAX_BLOB`], the content's hash) and stores it as it is, by
    /// temporary file and rename. Nothing is written for a file that fails. Returns its sizes.
    pub fn put_file_verified(&self, key: Key, file: &[u8]) -> Result<BlobSizes, Error> {
        let path = self.path(&key);
        let stored = file.len() as u64;
        let corrupt = |why: String| Error::Corrupt {
            key,
            path: path.clone(),
            why,
        };
        let mut decoded = file.to_vec();
        let body = decode_body(&mut decoded).map_err(corrupt)?;
        let actual = Key::of(&decoded[body.clone()]);
        if actual != key {
            return Err(corrupt(format!("its content hashes to {actual}")));
        }
        let sizes = BlobSizes {
            decoded: body.len() as u64,
            stored,
        };
        drop(decoded);
        self.put_file(key, file)?;
        Ok(sizes)
    }

    /// The sizes of a stored blob, from its file's header.
    pub fn sizes(&self, key: &Key) -> Result<BlobSizes, Error> {
        use std::io::Read;
        let path = self.path(key);
        let read_err = |source| Error::Read {
            key: *key,
            path: path.clone(),
            source,
        };
        let mut f = fs::File::open(&path).map_err(read_err)?;
        let stored = f.metadata().map_err(read_err)?.len();
        let mut header = [0u8; HEADER];
        f.read_exact(&mut header).map_err(read_err)?;
        if &header[..4] != MAGIC {
            return Err(Error::Corrupt {
                key: *key,
                path: path.clone(),
                why: "not a blob file (bad magic)".into(),
            });
        }
        let decoded = u64::from_le_bytes(header[5..HEADER].try_into().expect("8 bytes"));
        Ok(BlobSizes { decoded, stored })
    }

    /// Reads, decodes and verifies a blob.
    pub fn get(&self, key: &Key) -> Result<Vec<u8>, Error> {
        let mut buf = Vec::new();
        let body = self.read_unverified(key, &mut buf)?;
        let actual = Key::of(&buf[body.clone()]);
        if actual != *key {
            return Err(Error::Corrupt {
                key: *key,
                path: self.path(key),
                why: format!("its content hashes to {actual}"),
            });
        }
        buf.truncate(body.end);
        buf.drain(..body.start);
        Ok(buf)
    }

    /// Reads and decodes a blob into a buffer the caller reuses, checking its framing but not
    /// its hash: for callers that verify what they make of it (a rebuilt chunk is checked
    /// against its own blake3, which a damaged blob cannot pass), so that checkout hashes each
    /// byte once. Returns where in `buf` the blob's content lies; `buf` is overwritten.
    pub fn read_unverified(&self, key: &Key, buf: &mut Vec<u8>) -> Result<std::ops::Range<usize>, Error> {
        use std::io::Read;
        let path = self.path(key);
        let read_err = read_error(key, &path);
        buf.clear();
        // read_to_end fills the spare capacity without zeroing it first.
        fs::File::open(&path)
            .and_then(|mut f| f.read_to_end(buf))
            .map_err(read_err)?;
        decode_body(buf).map_err(|why| Error::Corrupt {
            key: *key,
            path: path.clone(),
            why,
        })
    }

    /// Every key with a blob file, in no particular order. Files that are not blobs are skipped.
    pub fn keys(&self) -> std::io::Result<Vec<Key>> {
        let mut keys = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
            Err(e) => return Err(e),
        };
        for entry in entries {
            if let Ok(key) = entry?.file_name().to_string_lossy().parse() {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// Removes a blob's file (for gc).
    pub fn remove(&self, key: &Key) -> std::io::Result<()> {
        fs::remove_file(self.path(key))
    }
}

/// Maps an error reading blob `key`'s file at `path`: a missing file is a missing blob.
fn read_error<'a>(key: &'a Key, path: &'a std::path::Path) -> impl Fn(std::io::Error) -> Error + 'a {
    move |source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::Missing {
            key: *key,
            path: path.to_owned(),
        },
        _ => Error::Read {
            key: *key,
            path: path.to_owned(),
            source,
        },
    }
}

/// Checks a blob file's framing and returns where its content lies in `file`. A compressed
/// body is decompressed and replaces `file`.
fn decode_body(file: &mut Vec<u8>) -> Result<std::ops::Range<usize>, String> {
    if file.len() < HEADER || &file[..4] != MAGIC {
        return Err("not a blob file (bad magic or truncated header)".into());
    }
    let len = u64::from_le_bytes(file[5..HEADER].try_into().expect("8 bytes"));
    if len > MAX_BLOB {
        return Err(format!("declares {len} bytes, more than the {MAX_BLOB} allowed"));
    }
    let body = &file[HEADER..];
    match file[4] {
        0 if body.len() as u64 == len => Ok(HEADER..file.len()),
        0 => Err(format!("holds {} bytes, declares {len}", body.len())),
        1 => {
            let mut out = vec![0u8; len as usize];
            let n = zstd::bulk::decompress_to_buffer(body, &mut out).map_err(|e| format!("zstd: {e}"))?;
            if n as u64 != len {
                return Err(format!("decompresses to {n} bytes, declares {len}"));
            }
            *file = out;
            Ok(0..file.len())
        }
        m => Err(format!("unknown mode {m}")),
    }
}
