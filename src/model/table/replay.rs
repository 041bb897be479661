//! Playing a table's pieces: runs of the base table's rows and of the new-rows file, in order,
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

/// Plays `pieces` (counted in rows): copies from `base` (its columns `projection`, in order),
/// new rows from `new_rows`, each batch under `schema`.
pub fn replay(
    pieces: &[Piece],
    base: Option<(&mut Cursor<'_>, &[usize])>,
    new_rows: &mut Cursor<'_>,
    schema: &SchemaRef,
    take: &mut dyn FnMut(RecordBatch) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut base = base;
    let mut added = 0u64;
    for p in pieces {
        match *p {
            Piece::Copy { from, len } => {
                let Some((cursor, projection)) = base.as_mut() else {
                    return Err(Error::Invalid {
                        path: new_rows.path.to_owned(),
                        why: "its table copies rows but has no base table".into(),
                    });
                };
                let path = cursor.path.to_owned();
                cursor.read(from, len, &mut |b| {
                    let b = project(&b, projection, schema).map_err(|e| Error::Invalid {
                        path: path.clone(),
                        why: format!("its rows do not fit the table's schema: {e}"),
                    })?;
                    take(b)
                })?;
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
