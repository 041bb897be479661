//! Checks a source file against the kind it is stored as, before anything is written: a table
//! file must open (its footer and schema read), a CSV or TSV must have as many fields in every
//! row as in its header, and every line of a JSON Lines file must be JSON. An error names the
//! file and the line.

use std::io::{BufRead, BufReader};
use std::path::Path;

use super::io::Reader;
use super::{Error, Format};
use crate::model::source::SourceFile;

/// How `add` takes a source's files (`--kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Tables by extension or magic bytes, text tables by extension, checked; other text files
    /// as records, the rest as bytes.
    #[default]
    Auto,
    /// Every file must be a Parquet or Arrow IPC table (found by its magic bytes).
    Table,
    /// Text compared record by record, never parsed as a table nor checked.
    Text,
    /// Plain bytes: no records, no tables, no checks.
    Bytes,
}

/// The table format `file` is stored as under `kind`, if it is a table.
pub fn format(file: &SourceFile, kind: Kind) -> Result<Option<Format>, Error> {
    match kind {
        Kind::Auto => super::detect(&file.path, &file.abs),
        Kind::Table => match super::detect("", &file.abs)?.or(Format::for_path(&file.path)) {
            Some(f) => Ok(Some(f)),
            None => Err(Error::Invalid {
                path: file.abs.clone(),
                why: "is not a Parquet or Arrow IPC file (--kind table)".into(),
            }),
        },
        Kind::Text | Kind::Bytes => Ok(None),
    }
}

/// Checks `file` as `kind` says it is to be stored.
pub fn check(file: &SourceFile, kind: Kind) -> Result<(), Error> {
    if let Some(f) = format(file, kind)? {
        Reader::open(&file.abs, f, 0)?;
        return Ok(());
    }
    if kind != Kind::Auto {
        return Ok(());
    }
    let lower = file.path.to_ascii_lowercase();
    match lower.rsplit_once('.').map(|(_, ext)| ext) {
        Some("csv") => delimited(&file.abs, b','),
        Some("tsv") => delimited(&file.abs, b'\t'),
        Some("jsonl" | "ndjson") => json_lines(&file.abs),
        _ => Ok(()),
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Every row of a CSV or TSV has as many fields as its first (double quotes enclose
/// delimiters and newlines; blank lines are skipped, as CSV readers do).
fn delimited(path: &Path, delim: u8) -> Result<(), Error> {
    let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(path).map_err(io_err(path))?);
    let mut quoted = false;
    let (mut line, mut start_line) = (1u64, 1u64);
    let (mut fields, mut bytes) = (1u64, 0u64);
    let mut expected: Option<u64> = None;
    let mut end_record = |fields: u64, bytes: u64, start_line: u64| -> Result<(), Error> {
        if bytes == 0 {
            return Ok(());
        }
        match expected {
            None => expected = Some(fields),
            Some(e) if e != fields => {
                return Err(Error::Invalid {
                    path: path.to_owned(),
                    why: format!("line {start_line} has {fields} fields, the header (line 1) {e}: a ragged row"),
                })
            }
            Some(_) => {}
        }
        Ok(())
    };
    loop {
        let buf = reader.fill_buf().map_err(io_err(path))?;
        if buf.is_empty() {
            break;
        }
        for &b in buf {
            match b {
                b'"' => {
                    quoted = !quoted;
                    bytes += 1;
                }
                b'\n' => {
                    line += 1;
                    if !quoted {
                        end_record(fields, bytes, start_line)?;
                        (fields, bytes, start_line) = (1, 0, line);
                    } else {
                        bytes += 1;
                    }
                }
                b'\r' if !quoted => {}
                b if b == delim && !quoted => {
                    fields += 1;
                    bytes += 1;
                }
                _ => bytes += 1,
            }
        }
        let n = buf.len();
        reader.consume(n);
    }
    if quoted {
        return Err(Error::Invalid {
            path: path.to_owned(),
            why: format!("line {start_line} opens a quoted field that never closes"),
        });
    }
    end_record(fields, bytes, start_line)
}

/// Every line that is not blank is one JSON value.
fn json_lines(path: &Path) -> Result<(), Error> {
    let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(path).map_err(io_err(path))?);
    let mut line = Vec::new();
    let mut n = 0u64;
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(io_err(path))?;
        if read == 0 {
            return Ok(());
        }
        n += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(text) {
            // serde's own position is within the line: say it once, as the file's.
            let message = e.to_string();
            let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(m, _)| m);
            return Err(Error::Invalid {
                path: path.to_owned(),
                why: format!("line {n}, column {}: not JSON: {message}", e.column()),
            });
        }
    }
}
