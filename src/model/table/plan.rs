//! Planning a table against the table at the same path in its base: each row of the new table
//! is looked up by its identity (the hash of its row format, over the new table's columns) among
//! the base's rows; runs found in order become copies, the rest are written to a new-rows
//! Parquet file. The plan is then played back and its rows' hash compared with the new table's,
//! so that a hash collision costs space (the table is stored whole), never correctness.

use arrow::array::RecordBatch;

use super::io::{project, row_id, ParquetStyle, Reader, RowHasher, Writer};
use super::replay::{projection, replay, Cursor};
use super::{Error, Format};
use crate::codec::rows::Piece;
use crate::model::encode::{self, Base};
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
    pub style: ParquetStyle,
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
/// returned scratch file; None when the base has no table at its path, its columns do not hold
/// the new table's, most rows are new, or its rows are the base's reordered (more than
/// [`MAX_BACKWARD_JUMPS`] copies go back in the base, each a reopening of it at checkout): the
/// table is then stored whole, byte for byte.
/// A new table that cannot be read is an error naming the file and row group.
pub fn plan(
    file: &SourceFile,
    format: Format,
    base: Option<&Base<'_>>,
    cas: &Cas,
) -> Result<Option<(Planned, tempfile::NamedTempFile)>, encode::Error> {
    let Some(b) = base else { return Ok(None) };
    let Some(parent) = b.snapshot.manifests.get(&file.path) else {
        return Ok(None);
    };
    if parent.kind == "safetensors" || parent.kind == "records" {
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

    // 1. The base's table, rebuilt to a scratch file, and its rows' identities.
    let base_path = cas.scratch().map_err(io)?.into_temp_path();
    b.rebuilder
        .write_file(b.snapshot, &file.path, &base_path, &|_| {})
        .map_err(|e| encode::Error::Parent {
            path: file.abs.clone(),
            source: Box::new(e),
        })?;
    let base_format = match parent.table.as_ref().and_then(|t| Format::from_name(&t.format)) {
        Some(f) => f,
        None => match super::detect(&file.path, &base_path)? {
            Some(f) => f,
            None => return Ok(None),
        },
    };
    let Ok(mut base_reader) = Reader::open(&base_path, base_format, 0) else {
        return Ok(None);
    };
    let Some(proj) = projection(&schema, base_reader.schema()) else {
        return Ok(None);
    };
    let Some(base_rows) = RowHasher::new(&schema) else {
        return Ok(None);
    };
    let mut ids = Vec::new();
    while let Some(batch) = base_reader.next_batch()? {
        let Ok(batch) = project(&batch, &proj, &schema) else {
            return Ok(None);
        };
        let rows = base_rows.rows_of(batch.columns()).map_err(|e| invalid(&base_path, e))?;
        ids.extend(rows.iter().map(|r| row_id(r.as_ref())));
    }
    drop(base_reader);
    if ids.len() > u32::MAX as usize {
        return Ok(None);
    }
    let mut by_id: Vec<u32> = (0..ids.len() as u32).collect();
    by_id.sort_by_key(|&i| (ids[i as usize], i));
    let index = Index { ids, by_id };

    // 2. The new table's rows, looked up; a run goes on while the next row is the base's next.
    let new_rows = cas.scratch().map_err(io)?;
    let zstd = ParquetStyle {
        compression: Some("zstd".into()),
        row_group_rows: None,
    };
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

    // 3. Played back, the plan must give the table's rows exactly.
    let hash = hasher.finish();
    let mut check = RowHasher::new(&schema).expect("the same schema as above");
    let mut base_cursor = Cursor::new(&base_path, base_format);
    let mut new_cursor = Cursor::new(new_rows.path(), Format::Parquet);
    let played = replay(
        &pieces,
        Some((&mut base_cursor, &proj)),
        &mut new_cursor,
        &schema,
        &mut |b| check.add(&b).map_err(|e| invalid(&file.abs, e)),
    );
    if played.is_err() || check.rows != rows || check.finish() != hash {
        return Ok(None);
    }
    let style = match format {
        Format::Parquet => ParquetStyle::of(&file.abs),
        _ => ParquetStyle::default(),
    };
    Ok(Some((
        Planned {
            format,
            pieces,
            rows,
            added,
            hash,
            style,
        },
        new_rows,
    )))
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
