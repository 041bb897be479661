//! Playing a table's pieces: runs of the base tables' rows and of the new-rows file, in order,
//! as record batches of the table's schema.

use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::io::{project, Reader};
use super::{Error, Format};
use crate::codec::rows::Piece;

/// A table read from any row on: reopened when asked for a row behind it or far ahead of it.
pub struct Cursor<'a> {
    path: &'a Path,
    format: Format,
    reader: Option<Reader>,
    /// The row the next batch of `pending` starts at, and what is left of the current batch.
    at: u64,
    pending: Option<RecordBatch>,
}

/// Skipping this many rows or more reopens a Parquet file at the row instead of reading them.
const REOPEN_AHEAD: u64 = 1 << 16;

impl<'a> Cursor<'a> {
    pub fn new(path: &'a Path, format: Format) -> Cursor<'a> {
        Cursor {
            path,
            format,
            reader: None,
            at: 0,
            pending: None,
        }
    }

    /// The schema of the table.
    pub fn schema(&mut self) -> Result<SchemaRef, Error> {
        if self.reader.is_none() {
            self.reader = Some(Reader::open(self.path, self.format, 0)?);
            self.at = 0;
        }
        Ok(self.reader.as_ref().expect("opened above").schema().clone())
    }

    /// Calls `take` with rows `from .. from + len`, in batches.
    pub fn read(
        &mut self,
        from: u64,
        len: u64,
        take: &mut dyn FnMut(RecordBatch) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let reopen = match &self.reader {
            None => true,
            Some(_) => from < self.at || (self.format == Format::Parquet && from - self.at >= REOPEN_AHEAD),
        };
        if reopen {
            self.reader = Some(Reader::open(self.path, self.format, from)?);
            self.at = from;
            self.pending = None;
        }
        let reader = self.reader.as_mut().expect("opened above");
        let mut left = len;
        while left > 0 {
            let batch = match self.pending.take() {
                Some(b) => b,
                None => reader.next_batch()?.ok_or_else(|| Error::Invalid {
                    path: self.path.to_owned(),
                    why: format!("has no row {}", self.at),
                })?,
            };
            let n = batch.num_rows() as u64;
            if self.at < from {
                // Rows before the piece: dropped.
                let drop = (from - self.at).min(n);
                self.at += drop;
                if drop < n {
                    self.pending = Some(batch.slice(drop as usize, (n - drop) as usize));
                }
                continue;
            }
            let used = left.min(n);
            take(batch.slice(0, used as usize))?;
            if used < n {
                self.pending = Some(batch.slice(used as usize, (n - used) as usize));
            }
            self.at += used;
            left -= used;
        }
        Ok(())
    }
}

/// One table of the base that copied rows come from: rows `start .. start + rows` of the
/// numbering the pieces use (the base's tables one after another), its columns `projection`.
pub struct Part<'a> {
    pub cursor: Cursor<'a>,
    pub start: u64,
    /// `u64::MAX` for a lone base table, whose count is not recorded.
    pub rows: u64,
    pub projection: Vec<usize>,
}

impl Part<'_> {
    /// The parts over `cursors` (each with its row count and projection), numbered in order.
    pub fn numbered<'a>(cursors: Vec<(Cursor<'a>, u64, Vec<usize>)>) -> Vec<Part<'a>> {
        let mut start = 0u64;
        cursors
            .into_iter()
            .map(|(cursor, rows, projection)| {
                let part = Part {
                    cursor,
                    start,
                    rows,
                    projection,
                };
                start = start.saturating_add(rows);
                part
            })
            .collect()
    }
}

/// Plays `pieces` (counted in rows): copies from the `base` tables (each through its
/// projection), new rows from `new_rows`, each batch under `schema`.
pub fn replay(
    pieces: &[Piece],
    base: &mut [Part<'_>],
    new_rows: &mut Cursor<'_>,
    schema: &SchemaRef,
    take: &mut dyn FnMut(RecordBatch) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut added = 0u64;
    for p in pieces {
        match *p {
            Piece::Copy { from, len } => {
                let end = from.checked_add(len).ok_or_else(|| Error::Invalid {
                    path: new_rows.path.to_owned(),
                    why: format!("its table copies rows {from}+{len}, past any table"),
                })?;
                let mut at = from;
                while at < end {
                    let Some(part) = base.iter_mut().find(|b| b.start <= at && at - b.start < b.rows) else {
                        return Err(Error::Invalid {
                            path: new_rows.path.to_owned(),
                            why: format!("its table copies row {at}, which no base table has"),
                        });
                    };
                    let n = (end - at).min(part.rows - (at - part.start));
                    let path = part.cursor.path.to_owned();
                    let projection = &part.projection;
                    part.cursor.read(at - part.start, n, &mut |b| {
                        let b = project(&b, projection, schema).map_err(|e| Error::Invalid {
                            path: path.clone(),
                            why: format!("its rows do not fit the table's schema: {e}"),
                        })?;
                        take(b)
                    })?;
                    at += n;
                }
            }
            Piece::New { len } => {
                let path = new_rows.path.to_owned();
                new_rows.read(added, len, &mut |b| {
                    let b = RecordBatch::try_new(schema.clone(), b.columns().to_vec()).map_err(|e| Error::Invalid {
                        path: path.clone(),
                        why: format!("its rows do not fit the table's schema: {e}"),
                    })?;
                    take(b)
                })?;
                added += len;
            }
        }
    }
    Ok(())
}

/// The columns of `base` that make up `schema`, in its order: each field by name, with the
/// same data type. None when some column of `schema` is not in `base` (added or retyped).
pub fn projection(schema: &SchemaRef, base: &SchemaRef) -> Option<Vec<usize>> {
    schema
        .fields()
        .iter()
        .map(|f| {
            let (i, bf) = base.column_with_name(f.name())?;
            (bf.data_type() == f.data_type()).then_some(i)
        })
        .collect()
}
