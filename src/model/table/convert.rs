//! Converting a checked-out table to another format (`checkout --format`): Parquet and Arrow
//! IPC tables to CSV or JSON Lines, CSV, TSV, JSON Lines and JSON arrays of records to Parquet
//! (their schema inferred by arrow over the whole file). Batch by batch, through arrow's readers
//! and writers.

use std::fs::File;
use std::io::{BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};

use super::io::{Reader, Style, Writer, BATCH_ROWS};
use super::json_array;
use super::{BoxError, Error, Format};

/// What `checkout --format` writes tables as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Parquet,
    Csv,
    Jsonl,
}

impl Target {
    pub fn extension(self) -> &'static str {
        match self {
            Target::Parquet => "parquet",
            Target::Csv => "csv",
            Target::Jsonl => "jsonl",
        }
    }
}

/// A table format a file can be read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Binary(Format),
    Delimited(u8),
    JsonLines,
    /// A `.json` file whose first byte other than whitespace is `[`.
    JsonArray,
}

/// What `path` (the file `name` of a snapshot) is read as, if it is a table.
fn source(name: &str, path: &Path) -> Result<Option<Source>, Error> {
    if let Some(f) = super::detect(name, path)? {
        return Ok(Some(Source::Binary(f)));
    }
    let lower = name.to_ascii_lowercase();
    Ok(match lower.rsplit_once('.').map(|(_, ext)| ext) {
        Some("csv") => Some(Source::Delimited(b',')),
        Some("tsv") => Some(Source::Delimited(b'\t')),
        Some("jsonl" | "ndjson") => Some(Source::JsonLines),
        Some("json") => {
            let mut head = [0u8; 4096];
            let n = read_head(path, &mut head).map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?;
            let first = head[..n].iter().find(|b| !b.is_ascii_whitespace());
            (first == Some(&b'[')).then_some(Source::JsonArray)
        }
        _ => None,
    })
}

/// Reads the start of `path` into `buf`; returns how many bytes.
fn read_head(path: &Path, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Takes each batch, then None at the end.
type Sink<'a> = Box<dyn FnMut(Option<&RecordBatch>) -> Result<(), Error> + 'a>;

/// Batches of a table, from any of the readable formats.
enum Batches {
    Binary(Box<Reader>),
    Arrow(Box<dyn Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>>>),
}

/// Converts the table at `path` (file `name` of a snapshot) to `target`, written next to it
/// with the target's extension; returns the new file, or None when `path` is not a table or
/// already is `target`. The new file appears only when complete; `path` is then removed.
pub fn convert(name: &str, path: &Path, target: Target) -> Result<Option<PathBuf>, Error> {
    let Some(src) = source(name, path)? else {
        return Ok(None);
    };
    let same = matches!(
        (src, target),
        (Source::Binary(Format::Parquet), Target::Parquet)
            | (Source::Delimited(b','), Target::Csv)
            | (Source::JsonLines, Target::Jsonl)
    );
    if same {
        return Ok(None);
    }
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let read_err = |source: arrow::error::ArrowError| Error::Read {
        path: path.to_owned(),
        at: "reading it".into(),
        source: source.into(),
    };
    let (schema, mut batches): (SchemaRef, Batches) = match src {
        Source::Binary(f) => {
            let r = Reader::open(path, f, 0)?;
            (r.schema().clone(), Batches::Binary(Box::new(r)))
        }
        Source::Delimited(delim) => {
            let format = arrow::csv::reader::Format::default()
                .with_header(true)
                .with_delimiter(delim);
            let (schema, _) = format
                .infer_schema(BufReader::new(File::open(path).map_err(io)?), None)
                .map_err(read_err)?;
            let schema = Arc::new(schema);
            let reader = arrow::csv::ReaderBuilder::new(schema.clone())
                .with_format(format)
                .with_batch_size(BATCH_ROWS)
                .build(BufReader::new(File::open(path).map_err(io)?))
                .map_err(read_err)?;
            (schema, Batches::Arrow(Box::new(reader)))
        }
        Source::JsonLines => {
            let mut file = BufReader::new(File::open(path).map_err(io)?);
            let (schema, _) = arrow::json::reader::infer_json_schema(&mut file, None).map_err(read_err)?;
            file.rewind().map_err(io)?;
            let schema = Arc::new(schema);
            let reader = arrow::json::ReaderBuilder::new(schema.clone())
                .with_batch_size(BATCH_ROWS)
                .build(file)
                .map_err(read_err)?;
            (schema, Batches::Arrow(Box::new(reader)))
        }
        Source::JsonArray => {
            let open = || File::open(path).map(|f| json_array::Elements::new(BufReader::new(f)));
            let mut elements = open().map_err(io)?;
            let mut element = Vec::new();
            // An array of anything but objects (labels, numbers) is not a table: left as it is.
            let mut records = true;
            let values = std::iter::from_fn(|| match elements.next_into(&mut element) {
                Ok(true) => match serde_json::from_slice::<serde_json::Value>(&element) {
                    Ok(v) if v.is_object() => Some(Ok(v)),
                    Ok(_) => {
                        records = false;
                        None
                    }
                    Err(e) => Some(Err(arrow::error::ArrowError::JsonError(format!(
                        "the element at byte {}: {e}",
                        elements.last_start()
                    )))),
                },
                Ok(false) => None,
                Err(why) => Some(Err(arrow::error::ArrowError::JsonError(why))),
            });
            let schema = arrow::json::reader::infer_json_schema_from_iterator(values).map_err(read_err)?;
            if !records {
                return Ok(None);
            }
            let schema = Arc::new(schema);
            let decoder = arrow::json::ReaderBuilder::new(schema.clone())
                .with_batch_size(BATCH_ROWS)
                .build_decoder()
                .map_err(read_err)?;
            let batches = json_array::Batches::new(open().map_err(io)?, decoder, BATCH_ROWS);
            (schema, Batches::Arrow(Box::new(batches)))
        }
    };
    if target == Target::Csv {
        if let Some(f) = schema.fields().iter().find(|f| nested(f.data_type())) {
            return Err(Error::Invalid {
                path: path.to_owned(),
                why: format!(
                    "column {:?} is {}, which CSV cannot hold (use --format jsonl or parquet)",
                    f.name(),
                    f.data_type()
                ),
            });
        }
    }

    let dest = path.with_extension(target.extension());
    let dir = path.parent().expect("checked-out files are in a directory");
    let tmp = tempfile::Builder::new()
        .prefix(".sparse-convert-")
        .tempfile_in(dir)
        .map_err(io)?;
    let file = tmp.reopen().map_err(io)?;
    let write_err = |source: BoxError| Error::Invalid {
        path: dest.clone(),
        why: format!("writing {}: {source}", target.extension()),
    };
    let mut sink: Sink<'_> = match target {
        Target::Parquet => {
            let style = Style::zstd();
            let mut w = Some(Writer::new(file, &dest, Format::Parquet, &schema, &style)?);
            Box::new(move |b| match b {
                Some(b) => w.as_mut().expect("written until the end").write(b),
                None => w.take().expect("finished once").finish(),
            })
        }
        Target::Csv => {
            let mut w = Some(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(std::io::BufWriter::new(file)),
            );
            Box::new(move |b| match b {
                Some(b) => w
                    .as_mut()
                    .expect("written until the end")
                    .write(b)
                    .map_err(|e| write_err(e.into())),
                None => {
                    let mut out = w.take().expect("finished once").into_inner();
                    out.flush().map_err(|e| write_err(e.into()))
                }
            })
        }
        Target::Jsonl => {
            let mut w = Some(arrow::json::LineDelimitedWriter::new(std::io::BufWriter::new(file)));
            Box::new(move |b| match b {
                Some(b) => w
                    .as_mut()
                    .expect("written until the end")
                    .write(b)
                    .map_err(|e| write_err(e.into())),
                None => {
                    let mut w = w.take().expect("finished once");
                    w.finish().map_err(|e| write_err(e.into()))?;
                    w.into_inner().flush().map_err(|e| write_err(e.into()))
                }
            })
        }
    };
    loop {
        let batch = match &mut batches {
            Batches::Binary(r) => r.next_batch()?,
            Batches::Arrow(it) => it.next().transpose().map_err(read_err)?,
        };
        match batch {
            Some(b) => sink(Some(&b))?,
            None => break,
        }
    }
    sink(None)?;
    drop(sink);
    tmp.persist(&dest).map_err(|e| io(e.error))?;
    if dest != path {
        std::fs::remove_file(path).map_err(io)?;
    }
    Ok(Some(dest))
}

/// Whether a column of this type holds values inside values (which CSV cannot).
fn nested(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::Struct(_)
            | DataType::Map(..)
            | DataType::Union(..)
    )
}
