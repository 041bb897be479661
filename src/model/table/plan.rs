//! Planning a table against its base's tables: the table at the same path and the other shards
//! of its split ([`shards`]). Each row of the new table is looked up by its identity (the hash
//! of its row format, over the new table's columns) among those tables' rows, numbered one table
//! after another; runs found in order become copies, the rest are written to a new-rows Parquet
//! file. The plan is then played back and its rows' hash compared with the new table's,
//! so that a hash collision costs space (the table is stored whole), never correctness.

use arrow::array::RecordBatch;

use super::io::{project, row_id, Reader, RowHasher, Style, Writer};
use super::replay::{projection, replay, Cursor, Part};
use super::{Error, Format};
use crate::codec::rows::Piece;
use crate::model::encode::{self, Base};
use crate::model::manifest::BaseTable;
use crate::model::snapshot::Snapshot;
use crate::model::source::SourceFile;
use crate::store::cas::{Cas, Key};

/// A table as runs of its base's rows and of its own new rows.
pub struct Planned {
    pub format: Format,
    /// Counted in rows.
    pub pieces: Vec<Piece>,
    pub rows: u64,
    /// Rows of the new pieces: the rows of `new_rows`.
    pub added: u64,
    /// [`RowHasher::finish`] of the whole table.
    pub hash: Key,
    pub style: Style,
    /// The base's tables that rows are copied from, when not only the one at the table's path.
    pub base_tables: Vec<BaseTable>,
}

/// The base's row identities in row order, and their indices sorted by identity.
struct Index {
    ids: Vec<u64>,
    by_id: Vec<u32>,
}

impl Index {
    fn find(&self, id: u64) -> Option<usize> {
        let at = self.by_id.partition_point(|&i| self.ids[i as usize] < id);
        self.by_id.get(at).map(|&i| i as usize).filter(|&i| self.ids[i] == id)
    }
}

/// The pieces of table `file` (in `format`) and its new rows, written as Parquet to the
/// returned scratch file; None when the base has no table at its path nor shards of its split,
/// their columns do not hold the new table's, most rows are new, or its rows are the base's
/// reordered (more than [`MAX_BACKWARD_JUMPS`] copies go back in the base, each a reopening of
/// it at checkout): the table is then stored whole, byte for byte.
/// A new table that cannot be read is an error naming the file and row group.
pub fn plan(
    file: &SourceFile,
    format: Format,
    base: Option<&Base<'_>>,
    cas: &Cas,
) -> Result<Option<(Planned, tempfile::NamedTempFile)>, encode::Error> {
    let Some(b) = base else { return Ok(None) };
    let candidates = shards(&file.path, b.snapshot);
    if candidates.is_empty() {
        return Ok(None);
    }
    let io = |source| Error::Io {
        path: file.abs.clone(),
        source,
    };
    let mut reader = Reader::open(&file.abs, format, 0)?;
    let schema = reader.schema().clone();
    let Some(mut hasher) = RowHasher::new(&schema) else {
        return Ok(None);
    };

    // 1. The base's tables, each rebuilt to a scratch file, and their rows' identities. A
    //    table whose columns do not hold the new table's is left out.
    let mut parts: Vec<(String, tempfile::TempPath, Format, u64, Vec<usize>)> = Vec::new();
    let mut ids = Vec::new();
    for path in candidates {
        let rows_before = ids.len();
        match base_table(&path, b, &schema, cas, &file.abs, &mut ids)? {
            Some((tmp, format, proj)) => {
                let rows = (ids.len() - rows_before) as u64;
                parts.push((path, tmp, format, rows, proj));
            }
            None => ids.truncate(rows_before),
        }
    }
    if parts.is_empty() || ids.len() > u32::MAX as usize {
        return Ok(None);
    }
    let mut by_id: Vec<u32> = (0..ids.len() as u32).collect();
    by_id.sort_by_key(|&i| (ids[i as usize], i));
    let index = Index { ids, by_id };

    // 2. The new table's rows, looked up; a run goes on while the next row is the base's next.
    let new_rows = cas.scratch().map_err(io)?;
    let zstd = Style::zstd();
    // A table Parquet cannot hold (some Arrow IPC types) is stored whole.
    let out = new_rows.reopen().map_err(io)?;
    let Ok(mut writer) = Writer::new(out, new_rows.path(), Format::Parquet, &schema, &zstd) else {
        return Ok(None);
    };
    let mut pieces: Vec<Piece> = Vec::new();
    let mut next: Option<usize> = None;
    let mut writable = true;
    let mut write_new = |batch: &RecordBatch, lo: usize, hi: usize| {
        if hi > lo && writable {
            writable = writer.write(&batch.slice(lo, hi - lo)).is_ok();
        }
    };
    while let Some(batch) = reader.next_batch()? {
        let rows = hasher.rows_of(batch.columns()).map_err(|e| invalid(&file.abs, e))?;
        hasher.add_rows(&rows);
        let mut run: Option<usize> = None;
        for (i, row) in rows.iter().enumerate() {
            let id = row_id(row.as_ref());
            let j = match next {
                Some(j) if index.ids.get(j) == Some(&id) => Some(j),
                _ => index.find(id),
            };
            match j {
                Some(j) => {
                    if let Some(lo) = run.take() {
                        write_new(&batch, lo, i);
                    }
                    push(&mut pieces, Piece::Copy { from: j as u64, len: 1 });
                    next = Some(j + 1);
                }
                None => {
                    run.get_or_insert(i);
                    push(&mut pieces, Piece::New { len: 1 });
                    next = None;
                }
            }
        }
        if let Some(lo) = run {
            write_new(&batch, lo, batch.num_rows());
        }
    }
    if !writable || writer.finish().is_err() {
        return Ok(None);
    }
    drop(index);
    let rows = hasher.rows;
    let added: u64 = pieces
        .iter()
        .filter(|p| matches!(p, Piece::New { .. }))
        .map(Piece::len)
        .sum();
    if rows == 0 || (rows - added) * 2 < rows || backward_jumps(&pieces) > MAX_BACKWARD_JUMPS {
        return Ok(None);
    }
    keep_used(&mut parts, &mut pieces);

    // 3. Played back, the plan must give the table's rows exactly.
    let hash = hasher.finish();
    let mut check = RowHasher::new(&schema).expect("the same schema as above");
    let mut base_parts = Part::numbered(
        parts
            .iter()
            .map(|(_, tmp, f, rows, proj)| (Cursor::new(tmp, *f), *rows, proj.clone()))
            .collect(),
    );
    let mut new_cursor = Cursor::new(new_rows.path(), Format::Parquet);
    let played = replay(&pieces, &mut base_parts, &mut new_cursor, &schema, &mut |b| {
        check.add(&b).map_err(|e| invalid(&file.abs, e))
    });
    if played.is_err() || check.rows != rows || check.finish() != hash {
        return Ok(None);
    }
    let base_tables = match parts.as_slice() {
        [(path, ..)] if *path == file.path => Vec::new(),
        _ => parts
            .iter()
            .map(|(path, _, _, rows, _)| BaseTable {
                path: path.clone(),
                rows: *rows,
            })
            .collect(),
    };
    let style = Style::of(&file.abs, format);
    Ok(Some((
        Planned {
            format,
            pieces,
            rows,
            added,
            hash,
            style,
            base_tables,
        },
        new_rows,
    )))
}

/// Base tables beyond this many shards of a split are not read: the table at the same path
/// alone is planned against.
pub const MAX_SHARDS: usize = 16;

/// The base's files a table at `path` may share rows with, in path order: the file at `path`
/// and the other shards of its split, files in the same folder whose names are the same once
/// their digits are dropped (`train-00000-of-00002.parquet` and `train-00001-of-00003.parquet`;
/// `train/0000.parquet` and `train/0001.parquet`). Models and records files are not tables.
pub fn shards(path: &str, base: &Snapshot) -> Vec<String> {
    let is_table = |p: &str| {
        base.manifests
            .get(p)
            .is_some_and(|m| !matches!(m.kind.as_str(), "safetensors" | "gguf" | "records"))
    };
    let key = shard_key(path);
    let mut found: Vec<String> = base
        .manifests
        .keys()
        .filter(|p| shard_key(p) == key && is_table(p))
        .cloned()
        .collect();
    found.sort();
    if found.len() > MAX_SHARDS {
        found.retain(|p| p == path);
    }
    found
}

/// Drops the base tables no copy reads from, and numbers the copies' rows over the rest: a
/// checkout rebuilds only the tables it needs.
fn keep_used<T>(parts: &mut Vec<(String, T, Format, u64, Vec<usize>)>, pieces: &mut [Piece]) {
    let mut starts = Vec::with_capacity(parts.len());
    let mut at = 0u64;
    for p in parts.iter() {
        starts.push(at);
        at += p.3;
    }
    let part_of = |row: u64| starts.partition_point(|&s| s <= row) - 1;
    let mut used = vec![false; parts.len()];
    for p in pieces.iter() {
        if let Piece::Copy { from, len } = *p {
            for u in &mut used[part_of(from)..=part_of(from + len - 1)] {
                *u = true;
            }
        }
    }
    let mut new_starts = Vec::with_capacity(parts.len());
    let mut at = 0u64;
    for (p, &u) in parts.iter().zip(&used) {
        new_starts.push(at);
        if u {
            at += p.3;
        }
    }
    for p in pieces.iter_mut() {
        if let Piece::Copy { from, .. } = p {
            let k = part_of(*from);
            *from = *from - starts[k] + new_starts[k];
        }
    }
    let mut keep = used.into_iter();
    parts.retain(|_| keep.next().expect("one flag a part"));
}

/// A file's folder and its name without digits, nor a hash that ends its stem
/// (`train-00000-of-00002-5f2a3b4c.parquet`: `train--of-.parquet`).
fn shard_key(path: &str) -> (&str, String) {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let (stem, ext) = name.split_once('.').map_or((name, ""), |(s, e)| (s, e));
    let stem = match stem.rsplit_once('-') {
        Some((head, hash)) if hash.len() >= 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => head,
        _ => stem,
    };
    let key = format!("{stem}.{ext}")
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .collect();
    (dir, key)
}

type BaseRows = (tempfile::TempPath, Format, Vec<usize>);

/// Base table `path` rebuilt to a scratch file, with its format and the projection of its
/// columns onto `schema`; its rows' identities are appended to `ids`. None when it is not a
/// table or its columns do not hold `schema`'s.
fn base_table(
    path: &str,
    b: &Base<'_>,
    schema: &arrow::datatypes::SchemaRef,
    cas: &Cas,
    source: &std::path::Path,
    ids: &mut Vec<u64>,
) -> Result<Option<BaseRows>, encode::Error> {
    let io = |e| Error::Io {
        path: source.to_owned(),
        source: e,
    };
    let tmp = cas.scratch().map_err(io)?.into_temp_path();
    b.rebuilder
        .write_file(b.snapshot, path, &tmp, &|_| {})
        .map_err(|e| encode::Error::Parent {
            path: source.to_owned(),
            source: Box::new(e),
        })?;
    let manifest = &b.snapshot.manifests[path];
    let format = match manifest.table.as_ref().and_then(|t| Format::from_name(&t.format)) {
        Some(f) => f,
        None => match super::detect(path, &tmp)? {
            Some(f) => f,
            None => return Ok(None),
        },
    };
    let Ok(mut reader) = Reader::open(&tmp, format, 0) else {
        return Ok(None);
    };
    let Some(proj) = projection(schema, reader.schema()) else {
        return Ok(None);
    };
    let Some(rows) = RowHasher::new(schema) else {
        return Ok(None);
    };
    while let Some(batch) = reader.next_batch()? {
        let Ok(batch) = project(&batch, &proj, schema) else {
            return Ok(None);
        };
        let r = rows.rows_of(batch.columns()).map_err(|e| invalid(&tmp, e))?;
        ids.extend(r.iter().map(|r| row_id(r.as_ref())));
    }
    drop(reader);
    Ok(Some((tmp, format, proj)))
}

/// Copies that go back in the base: each one reopens the base's table when played.
const MAX_BACKWARD_JUMPS: usize = 1024;

/// How many copies start before the end of the copy played before them (rows reordered).
fn backward_jumps(pieces: &[Piece]) -> usize {
    let mut end = 0;
    let mut jumps = 0;
    for p in pieces {
        if let Piece::Copy { from, len } = *p {
            jumps += usize::from(from < end);
            end = from + len;
        }
    }
    jumps
}

/// Appends `p`, joining it to the last piece when it continues it.
fn push(pieces: &mut Vec<Piece>, p: Piece) {
    match (pieces.last_mut(), p) {
        (Some(Piece::New { len }), Piece::New { len: more }) => *len += more,
        (Some(Piece::Copy { from, len }), Piece::Copy { from: f, len: more }) if *from + *len == f => *len += more,
        _ => pieces.push(p),
    }
}

fn invalid(path: &std::path::Path, e: arrow::error::ArrowError) -> Error {
    Error::Invalid {
        path: path.to_owned(),
        why: format!("its rows cannot be encoded: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_of_a_split_share_a_key_and_other_splits_do_not() {
        let key = |p| shard_key(p);
        assert_eq!(
            key("data/train-00000-of-00002.parquet"),
            key("data/train-00002-of-00003.parquet")
        );
        assert_eq!(
            key("data/train-00000-of-00002-5f2a3b4c.parquet"),
            key("data/train-00001-of-00003-9d1e0a77.parquet")
        );
        assert_eq!(key("train/0000.parquet"), key("train/0001.parquet"));
        assert_ne!(
            key("data/train-00000-of-00002.parquet"),
            key("data/test-00000-of-00001.parquet")
        );
        assert_ne!(key("train/0000.parquet"), key("test/0000.parquet"));
        assert_ne!(key("data/t1.parquet"), key("data/t1.arrow"));
    }

    #[test]
    fn tables_no_copy_reads_are_dropped_and_copies_renumbered() {
        // Three base tables of 10, 5 and 20 rows; copies read the first and the last only, one
        // of them across nothing but the third table's start.
        let mut parts: Vec<(String, (), Format, u64, Vec<usize>)> = [10, 5, 20]
            .iter()
            .enumerate()
            .map(|(i, &r)| (format!("t{i}"), (), Format::Parquet, r, vec![]))
            .collect();
        let mut pieces = vec![
            Piece::Copy { from: 2, len: 8 },
            Piece::New { len: 3 },
            Piece::Copy { from: 15, len: 20 },
        ];
        keep_used(&mut parts, &mut pieces);
        let names: Vec<&str> = parts.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(names, ["t0", "t2"]);
        assert_eq!(
            pieces,
            [
                Piece::Copy { from: 2, len: 8 },
                Piece::New { len: 3 },
                Piece::Copy { from: 10, len: 20 }
            ]
        );
    }
}
