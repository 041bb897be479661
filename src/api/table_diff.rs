//! Rows added, removed and modified, and columns added and removed, between two versions of a
//! Parquet or Arrow table, for `diff`. Rows are compared by the columns both sides have with the
//! same type (the identity of [`crate::model::table`], 8 bytes a row a side in memory); a
//! removed and an added row with the same value in the first of those columns are one modified
//! row. Each side is rebuilt to a scratch file and read batch by batch.

use std::path::Path;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use super::diff::{Error, Loaded};
use super::record_diff::RecordDiff;
use super::Repository;
use crate::model::rebuild;
use crate::model::table::io::{project, row_id, Reader, RowHasher};
use crate::model::table::{self, Format};

/// Called with each row: its identity, its key's identity, its batch and its index there.
type VisitRow<'a> = dyn FnMut(u64, Option<u64>, &RecordBatch, usize) + 'a;

/// One side: its table file (rebuilt to scratch) and format.
struct Side {
    _tmp: tempfile::TempPath,
    path: std::path::PathBuf,
    format: Format,
    schema: SchemaRef,
}

/// Compares table `path`; None when either side is not a Parquet or Arrow table.
pub(super) fn table_diff(
    repo: &Repository,
    a: &Loaded,
    b: &Loaded,
    path: &str,
    rows: usize,
) -> Result<Option<RecordDiff>, Error> {
    let (Some(sa), Some(sb)) = (side(repo, a, path)?, side(repo, b, path)?) else {
        return Ok(None);
    };
    let table_err = |l: &Loaded| {
        let rev = l.rev.clone();
        let file = path.to_string();
        move |source: table::Error| Error::Rebuild {
            rev: rev.clone(),
            source: Box::new(rebuild::Error::Table {
                file: file.clone(),
                source: Box::new(source),
            }),
        }
    };
    let names = |s: &SchemaRef| s.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>();
    let (na, nb) = (names(&sa.schema), names(&sb.schema));
    // The columns compared: b's that a has with the same type, in b's order.
    let shared: Vec<(usize, usize)> = sb
        .schema
        .fields()
        .iter()
        .enumerate()
        .filter_map(|(ib, f)| {
            let (ia, fa) = sa.schema.column_with_name(f.name())?;
            (fa.data_type() == f.data_type()).then_some((ia, ib))
        })
        .collect();
    let mut d = RecordDiff {
        columns_added: Some(nb.iter().filter(|n| !na.contains(n)).cloned().collect()),
        columns_removed: Some(na.iter().filter(|n| !nb.contains(n)).cloned().collect()),
        columns_retyped: Some(
            sb.schema
                .fields()
                .iter()
                .filter(|f| {
                    sa.schema
                        .column_with_name(f.name())
                        .is_some_and(|(_, fa)| fa.data_type() != f.data_type())
                })
                .map(|f| f.name().clone())
                .collect(),
        ),
        ..RecordDiff::default()
    };
    let compared = arrow::datatypes::Schema::new(
        shared
            .iter()
            .map(|&(_, ib)| sb.schema.field(ib).clone())
            .collect::<Vec<_>>(),
    );
    let compared: SchemaRef = std::sync::Arc::new(compared);
    let proj_a: Vec<usize> = shared.iter().map(|&(ia, _)| ia).collect();
    let proj_b: Vec<usize> = shared.iter().map(|&(_, ib)| ib).collect();
    let Some(hasher) = RowHasher::new(&compared) else {
        return Ok(None);
    };
    let key_hasher = match compared.fields().is_empty() {
        true => None,
        false => RowHasher::new(&std::sync::Arc::new(arrow::datatypes::Schema::new(vec![compared
            .field(0)
            .clone()]))),
    };
    // Each row of a side: its identity, its key's identity, and (for examples) its text.
    let each =
        |s: &Side, proj: &[usize], err: &dyn Fn(table::Error) -> Error, f: &mut VisitRow<'_>| -> Result<(), Error> {
            let mut reader = Reader::open(&s.path, s.format, 0).map_err(err)?;
            while let Some(batch) = reader.next_batch().map_err(err)? {
                let projected = project(&batch, proj, &compared).map_err(|e| err(invalid(&s.path, e)))?;
                let ids = hasher
                    .rows_of(projected.columns())
                    .map_err(|e| err(invalid(&s.path, e)))?;
                let keys = match &key_hasher {
                    Some(k) => Some(
                        k.rows_of(&projected.columns()[..1])
                            .map_err(|e| err(invalid(&s.path, e)))?,
                    ),
                    None => None,
                };
                for i in 0..batch.num_rows() {
                    let key = keys.as_ref().map(|k| row_id(k.row(i).as_ref()));
                    f(row_id(ids.row(i).as_ref()), key, &batch, i);
                }
            }
            Ok(())
        };
    let (err_a, err_b) = (table_err(a), table_err(b));
    let mut ha = Vec::new();
    each(&sa, &proj_a, &err_a, &mut |id, _, _, _| ha.push(id))?;
    ha.sort_unstable();
    let mut hb = Vec::new();
    each(&sb, &proj_b, &err_b, &mut |id, _, _, _| hb.push(id))?;
    hb.sort_unstable();
    d.records_a = ha.len() as u64;
    d.records_b = hb.len() as u64;
    let keyed = key_hasher.is_some();
    let (mut added_keys, mut removed_keys) = (Vec::new(), Vec::new());
    each(&sb, &proj_b, &err_b, &mut |id, key, _, _| match ha.binary_search(&id) {
        Ok(_) => d.unchanged += 1,
        Err(_) => {
            d.added += 1;
            added_keys.extend(key);
        }
    })?;
    each(&sa, &proj_a, &err_a, &mut |id, key, _, _| {
        if hb.binary_search(&id).is_err() {
            d.removed += 1;
            removed_keys.extend(key);
        }
    })?;
    removed_keys.sort_unstable();
    added_keys.sort_unstable();
    added_keys.dedup();
    let modified: Vec<u64> = added_keys
        .into_iter()
        .filter(|k| removed_keys.binary_search(k).is_ok())
        .collect();
    d.modified = modified.len() as u64;
    d.added -= d.modified.min(d.added);
    d.removed -= d.modified.min(d.removed);
    if rows == 0 {
        return Ok(Some(d));
    }
    // Examples, in file order: whole rows of each side, and the key of modified rows.
    let is_modified = |key: Option<u64>| keyed && key.is_some_and(|k| modified.binary_search(&k).is_ok());
    let (mut added, mut modified_rows) = (Vec::new(), Vec::new());
    each(&sb, &proj_b, &err_b, &mut |id, key, batch, i| {
        if ha.binary_search(&id).is_ok() {
            return;
        }
        if is_modified(key) {
            if modified_rows.len() < rows {
                let col = proj_b[0];
                modified_rows.push(format!(
                    "{}={}",
                    sb.schema.field(col).name(),
                    value(batch.column(col).as_ref(), i)
                ));
            }
        } else if added.len() < rows {
            added.push(row_text(batch, i));
        }
    })?;
    let mut removed = Vec::new();
    each(&sa, &proj_a, &err_a, &mut |id, key, batch, i| {
        if removed.len() < rows && hb.binary_search(&id).is_err() && !is_modified(key) {
            removed.push(row_text(batch, i));
        }
    })?;
    d.examples.added = added;
    d.examples.removed = removed;
    d.examples.modified = modified_rows;
    Ok(Some(d))
}

/// File `path` of one side as a table in a scratch file; None when it is not a table.
fn side(repo: &Repository, l: &Loaded, path: &str) -> Result<Option<Side>, Error> {
    let io = |source| Error::Rebuild {
        rev: l.rev.clone(),
        source: Box::new(rebuild::Error::Io {
            path: path.into(),
            source,
        }),
    };
    let tmp = repo.cas.scratch().map_err(io)?.into_temp_path();
    match l.snap.manifests.get(path) {
        Some(_) => {
            l.rebuilder
                .write_file(&l.snap, path, &tmp, &|_| {})
                .map_err(l.rebuild_err())?;
        }
        None => {
            let bytes = repo.history.read_blob(l.snap.blobs[path])?;
            std::fs::write(&tmp, bytes).map_err(io)?;
        }
    }
    let format = match l.snap.manifests.get(path).and_then(|m| m.table.as_ref()) {
        Some(t) => Format::from_name(&t.format),
        None => table::detect(path, &tmp).ok().flatten(),
    };
    let Some(format) = format else { return Ok(None) };
    let Ok(reader) = Reader::open(&tmp, format, 0) else {
        return Ok(None);
    };
    let schema = reader.schema().clone();
    Ok(Some(Side {
        path: tmp.to_path_buf(),
        _tmp: tmp,
        format,
        schema,
    }))
}

fn invalid(path: &Path, e: arrow::error::ArrowError) -> table::Error {
    table::Error::Invalid {
        path: path.to_owned(),
        why: format!("its rows cannot be compared: {e}"),
    }
}

/// A row as `name=value` pairs.
fn row_text(batch: &RecordBatch, i: usize) -> String {
    let schema = batch.schema();
    schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| format!("{}={}", f.name(), value(c.as_ref(), i)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn value(column: &dyn Array, i: usize) -> String {
    let options = FormatOptions::default().with_null("null");
    match ArrayFormatter::try_new(column, &options) {
        Ok(f) => f.value(i).to_string(),
        Err(_) => "?".into(),
    }
}
