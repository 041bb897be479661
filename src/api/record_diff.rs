//! Records added, removed and modified between two versions of a text table (a line file, CSV
//! or TSV), for `diff`. Records are compared by their bytes: one present on both sides is
//! unchanged wherever it moved. A removed and an added record with the same key (the first
//! field of a CSV or TSV record, the first word of a line elsewhere; JSON lines have none) are
//! one modified record. Both files stream in windows; memory is 8 bytes a
//! record a side.

use serde::Serialize;

use super::diff::{Error, Loaded};
use super::Repository;
use crate::codec::rows::{self, record_hash, Records, Splitter};

/// Window in which each side's file is read.
const WINDOW: u64 = 4 << 20;

#[derive(Debug, Default, Serialize)]
pub struct RecordDiff {
    pub records_a: u64,
    pub records_b: u64,
    pub unchanged: u64,
    pub added: u64,
    pub removed: u64,
    /// Removed and added records that share their key.
    pub modified: u64,
    /// The first records of each kind (as many as asked for), as text.
    pub examples: Examples,
    /// For a table (Parquet, Arrow): the columns only the second, or only the first, side has.
    /// Rows are compared by the columns both have with the same type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns_added: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns_removed: Option<Vec<String>>,
    /// Columns both sides have with another type: not compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns_retyped: Option<Vec<String>>,
}

#[derive(Debug, Default, Serialize)]
pub struct Examples {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The keys of modified records (for a table: `column=value` of its first compared column).
    pub modified: Vec<String>,
}

/// Compares file `path` record by record; None when either side is not text.
pub(super) fn record_diff(
    repo: &Repository,
    a: &Loaded,
    b: &Loaded,
    path: &str,
    rows: usize,
) -> Result<Option<RecordDiff>, Error> {
    let records = Records::for_path(path);
    let (Some(ha), Some(hb)) = (hashes(repo, a, path, records)?, hashes(repo, b, path, records)?) else {
        return Ok(None);
    };
    let mut d = RecordDiff {
        records_a: ha.len() as u64,
        records_b: hb.len() as u64,
        ..RecordDiff::default()
    };
    // The key of a record: its first field (CSV, TSV) or word (other line files, such as
    // dictionaries); JSON lines have none.
    let lower = path.to_ascii_lowercase();
    let separators: &[u8] = match lower.rsplit('.').next() {
        Some("csv") => b",",
        Some("tsv") => b"\t",
        Some("jsonl" | "ndjson" | "json") => b"",
        _ => b" \t",
    };
    let keyed = !separators.is_empty();
    let key = |r: &[u8]| -> Vec<u8> { r.split(|c| separators.contains(c)).next().unwrap_or_default().to_vec() };
    // Records of one side missing from the other, and their keys.
    let mut added_keys = Vec::new();
    let mut removed_keys = Vec::new();
    each_record(repo, b, path, records, |r| match ha.binary_search(&record_hash(r)) {
        Ok(_) => d.unchanged += 1,
        Err(_) => {
            d.added += 1;
            if keyed {
                added_keys.push(key(r));
            }
        }
    })?;
    each_record(repo, a, path, records, |r| {
        if hb.binary_search(&record_hash(r)).is_err() {
            d.removed += 1;
            if keyed {
                removed_keys.push(key(r));
            }
        }
    })?;
    removed_keys.sort();
    added_keys.sort();
    added_keys.dedup();
    let modified: Vec<Vec<u8>> = added_keys
        .into_iter()
        .filter(|k| removed_keys.binary_search(k).is_ok())
        .collect();
    d.modified = modified.len() as u64;
    d.added -= d.modified.min(d.added);
    d.removed -= d.modified.min(d.removed);
    if rows == 0 {
        return Ok(Some(d));
    }
    // Examples: a second pass over each side, in file order.
    let is_modified = |r: &[u8]| keyed && modified.binary_search(&key(r)).is_ok();
    d.examples.modified = modified.iter().take(rows).map(|k| text(k)).collect();
    let mut added = Vec::new();
    each_record(repo, b, path, records, |r| {
        if added.len() < rows && ha.binary_search(&record_hash(r)).is_err() && !is_modified(r) {
            added.push(text(r));
        }
    })?;
    let mut removed = Vec::new();
    each_record(repo, a, path, records, |r| {
        if removed.len() < rows && hb.binary_search(&record_hash(r)).is_err() && !is_modified(r) {
            removed.push(text(r));
        }
    })?;
    d.examples.added = added;
    d.examples.removed = removed;
    Ok(Some(d))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches(['\n', '\r'])
        .to_string()
}

/// The sorted record hashes of `path` on one side, or None if it is not text.
fn hashes(repo: &Repository, l: &Loaded, path: &str, records: Records) -> Result<Option<Vec<u64>>, Error> {
    let mut out = Vec::new();
    let mut text = true;
    let mut first = true;
    each_window(repo, l, path, |w| {
        if first {
            text = rows::is_text(w);
            first = false;
        }
    })?;
    if !text {
        return Ok(None);
    }
    each_record(repo, l, path, records, |r| out.push(record_hash(r)))?;
    out.sort_unstable();
    Ok(Some(out))
}

/// Calls `f` with every record of `path` on one side, in order.
fn each_record(
    repo: &Repository,
    l: &Loaded,
    path: &str,
    records: Records,
    mut f: impl FnMut(&[u8]),
) -> Result<(), Error> {
    let mut splitter = Splitter::new(records);
    let mut carry: Vec<u8> = Vec::new();
    each_window(repo, l, path, |w| {
        let mut from = 0;
        splitter.feed(w, |end| {
            if carry.is_empty() {
                f(&w[from..end]);
            } else {
                carry.extend_from_slice(&w[from..end]);
                f(&carry);
                carry.clear();
            }
            from = end;
        });
        carry.extend_from_slice(&w[from..]);
    })?;
    if !carry.is_empty() {
        f(&carry);
    }
    Ok(())
}

/// Calls `f` with the bytes of `path` on one side, window by window.
fn each_window(repo: &Repository, l: &Loaded, path: &str, mut f: impl FnMut(&[u8])) -> Result<(), Error> {
    let Some(m) = l.snap.manifests.get(path) else {
        let bytes = repo.history.read_blob(l.snap.blobs[path])?;
        f(&bytes);
        return Ok(());
    };
    let mut buf = vec![0u8; WINDOW.min(m.size) as usize];
    let mut at = 0;
    while at < m.size {
        let n = WINDOW.min(m.size - at) as usize;
        l.rebuilder
            .read_range(&l.snap, path, at, &mut buf[..n])
            .map_err(l.rebuild_err())?;
        f(&buf[..n]);
        at += n as u64;
    }
    Ok(())
}
