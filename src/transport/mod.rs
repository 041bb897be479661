//! The other end of a transfer: another store on a path, a `sparse serve` server over HTTP, or
//! a bucket of an S3-compatible object store (docs/PROTOCOL.md). Each answers the same few
//! questions (its refs, which of these objects it lacks) and moves the same things (blob files,
//! git objects in their canonical encoding, index rows, refs by compare-and-swap); what they
//! mean for a model is decided above, in `api/remote.rs`.
//!
//! A transport checks nothing it is handed for the caller: whoever receives bytes verifies
//! them (`Cas::put_file_verified`, `History::write_canonical`) before they are stored.

pub mod http;
pub mod path;
pub mod s3;

use std::path::PathBuf;

use crate::store::cas::Key;
use crate::store::history::ObjectId;

/// The most keys one "which do you lack" request carries.
pub const BATCH: usize = 2000;
/// The largest blob file or git object a transfer accepts: the largest blob and its header.
pub const MAX_OBJECT: u64 = crate::store::cas::MAX_BLOB + 64;

/// What went wrong talking to a remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A network or storage failure.
    Failed,
    /// The token is missing (401) or may not do this (403).
    Denied,
    /// A ref was not where the update expected it (compare-and-swap lost), or the move is not
    /// a fast-forward.
    Conflict,
    /// The remote refused what was sent, or sent what cannot be right.
    Refused,
    /// The remote has no such object.
    Missing,
}

#[derive(Debug, thiserror::Error)]
#[error("{url}: {what}: {why}")]
pub struct Error {
    pub url: String,
    pub what: String,
    pub why: String,
    pub kind: Kind,
}

impl Error {
    pub fn new(url: &str, what: impl Into<String>, why: impl ToString, kind: Kind) -> Error {
        Error {
            url: url.into(),
            what: what.into(),
            why: why.to_string(),
            kind,
        }
    }
}

/// A ref move asked of a remote: `name` (full, `refs/heads/..` or `refs/tags/..`) from
/// `expect` (absent when `None`) to `new`.
#[derive(Debug, Clone)]
pub struct RefChange {
    pub name: String,
    pub expect: Option<ObjectId>,
    pub new: ObjectId,
    /// Whether the mover allows a move that is not a fast-forward.
    pub force: bool,
}

/// One end of a transfer.
pub trait Remote: Sync {
    /// The URL or path it was opened with, for messages.
    fn url(&self) -> &str;
    /// The store's directory when the remote is a store on this machine (its write lock is
    /// then held through a transfer).
    fn local_store(&self) -> Option<PathBuf> {
        None
    }
    /// Every name and tag, as (full ref name, commit).
    fn refs(&self) -> Result<Vec<(String, ObjectId)>, Error>;
    /// Which of these blobs and git objects the remote lacks (at most [`BATCH`] of each).
    fn missing(&self, blobs: &[Key], objects: &[ObjectId]) -> Result<(Vec<Key>, Vec<ObjectId>), Error>;
    /// A blob file as stored (header and body), not yet verified.
    fn get_blob(&self, key: &Key) -> Result<Vec<u8>, Error>;
    fn put_blob(&self, key: &Key, file: &[u8]) -> Result<(), Error>;
    /// A git object in canonical encoding, not yet verified.
    fn get_object(&self, id: ObjectId) -> Result<Vec<u8>, Error>;
    fn put_object(&self, id: ObjectId, canonical: &[u8]) -> Result<(), Error>;
    /// The remote's `full` index rows (chunk, blob) for these blobs; empty where it keeps none.
    fn full_rows(&self, blobs: &[Key]) -> Result<Vec<(Key, Key)>, Error>;
    /// Records the sizes of those of these blobs it has but has not recorded (read from their
    /// files: a transfer that stopped before recording leaves such blobs), and the `full` rows
    /// of the blobs it records.
    fn record(&self, blobs: &[Key], full: &[(Key, Key)]) -> Result<(), Error>;
    /// Moves a ref by compare-and-swap.
    fn set_ref(&self, change: &RefChange) -> Result<(), Error>;
}

/// Checks a ref name that came from a remote: `refs/heads/NAME` or `refs/tags/NAME`, with a
/// name that is a valid model name (no `..`, no leading `/`, no control characters).
pub fn check_ref_name(name: &str) -> Result<(), String> {
    let short = name
        .strip_prefix("refs/heads/")
        .or_else(|| name.strip_prefix("refs/tags/"))
        .ok_or_else(|| format!("ref {name:?} is neither refs/heads/.. nor refs/tags/.."))?;
    if short.is_empty()
        || short.starts_with('/')
        || short.ends_with('/')
        || short
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        || short.contains("..")
        || short.chars().any(|c| c.is_control() || c == '\\')
    {
        return Err(format!("ref {name:?} is not a safe name"));
    }
    let valid: Result<&gix::refs::FullNameRef, _> = name.try_into();
    valid.map_err(|e| format!("ref {name:?} is not a valid name: {e}"))?;
    Ok(())
}

/// Opens the remote `url` names: `http://` or `https://` (a `sparse serve`), `s3://BUCKET/PREFIX`,
/// else a path to a store.
pub fn open(url: &str) -> Result<Box<dyn Remote>, Error> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(Box::new(http::Http::new(url)?))
    } else if url.starts_with("s3://") {
        Ok(Box::new(s3::S3::new(url)?))
    } else {
        Ok(Box::new(path::PathRemote::open(std::path::Path::new(url))?))
    }
}

/// Whether `url` names a remote that is not a path.
pub fn is_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://") || url.starts_with("s3://")
}

/// Hex of a list of keys, for request bodies.
pub fn hex_keys(keys: &[Key]) -> Vec<String> {
    keys.iter().map(Key::to_hex).collect()
}

/// Parses hex keys from a remote's answer.
pub fn parse_keys(url: &str, list: &[String]) -> Result<Vec<Key>, Error> {
    list.iter()
        .map(|s| {
            s.parse()
                .map_err(|e| Error::new(url, "read an answer", e, Kind::Refused))
        })
        .collect()
}

/// Parses hex object ids from a remote's answer.
pub fn parse_ids(url: &str, list: &[String]) -> Result<Vec<ObjectId>, Error> {
    list.iter()
        .map(|s| {
            ObjectId::from_hex(s.as_bytes())
                .map_err(|e| Error::new(url, "read an answer", format!("{s:?}: {e}"), Kind::Refused))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::check_ref_name;

    #[test]
    fn ref_names_from_a_remote_stay_inside_refs() {
        for good in ["refs/heads/base", "refs/heads/team/chat-v2", "refs/tags/v1.0"] {
            assert_eq!(check_ref_name(good), Ok(()), "{good}");
        }
        for bad in [
            "refs/heads/../../etc/passwd",
            "refs/heads/a/../b",
            "refs/heads/./a",
            "refs/heads//a",
            "refs/heads/",
            "refs/heads/a/",
            "refs/remotes/origin/x",
            "/etc/passwd",
            "HEAD",
            "refs/tags/a\\b",
            "refs/heads/a\nb",
            "refs/heads/a..b",
        ] {
            assert!(check_ref_name(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
