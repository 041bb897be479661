//! Tables: Parquet and Arrow IPC files stored as row-level deltas on the table at the same path
//! in their base (docs/FORMAT.md, "Tables"). A row is identified by the blake3 of its encoding
//! in arrow's row format, over the columns of the new table; runs of rows found in the base, in
//! order, become copies of the base's rows, the rest go to a new-rows Parquet file (zstd) that
//! is coded like a plain file. Checkout writes the same schema, values and row order, not the
//! same bytes: a Parquet or Arrow file stored whole (no base, or too little in common with it)
//! keeps its bytes.
//!
//! Everything streams record batch by record batch; planning keeps 12 bytes per base row.

pub mod check;
pub mod convert;
pub mod io;
pub mod json_array;
pub mod plan;
pub mod replay;

use std::path::{Path, PathBuf};

/// Errors reading or writing a table, naming the file and where in it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: not a readable {format} file: {source}")]
    Open {
        path: PathBuf,
        format: Format,
        source: BoxError,
    },
    #[error("{path}: {at}: {source}")]
    Read {
        path: PathBuf,
        at: String,
        source: BoxError,
    },
    #[error("{path}: writing {format}: {source}")]
    Write {
        path: PathBuf,
        format: Format,
        source: BoxError,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The table file formats stored with row deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    /// Arrow IPC file (Feather v2).
    ArrowFile,
    /// Arrow IPC stream.
    ArrowStream,
}

impl Format {
    /// The name a [`crate::model::manifest::TableRef`] records.
    pub fn name(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::ArrowFile => "arrow",
            Format::ArrowStream => "arrows",
        }
    }

    pub fn from_name(name: &str) -> Option<Format> {
        match name {
            "parquet" => Some(Format::Parquet),
            "arrow" => Some(Format::ArrowFile),
            "arrows" => Some(Format::ArrowStream),
            _ => None,
        }
    }

    /// The format a file name's extension claims.
    pub fn for_path(path: &str) -> Option<Format> {
        let lower = path.to_ascii_lowercase();
        match lower.rsplit_once('.').map(|(_, ext)| ext) {
            Some("parquet" | "pq") => Some(Format::Parquet),
            Some("arrow" | "feather" | "ipc") => Some(Format::ArrowFile),
            Some("arrows") => Some(Format::ArrowStream),
            _ => None,
        }
    }

    /// The format `head` and `tail` (a file's first and last 8 bytes, or fewer) show, if any.
    pub fn sniff(head: &[u8], tail: &[u8]) -> Option<Format> {
        if head.starts_with(b"PAR1") && tail.ends_with(b"PAR1") {
            Some(Format::Parquet)
        } else if head.starts_with(b"ARROW1") && tail.ends_with(b"ARROW1") {
            Some(Format::ArrowFile)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Parquet => "Parquet",
            Format::ArrowFile => "Arrow IPC",
            Format::ArrowStream => "Arrow IPC stream",
        })
    }
}

/// The table format of the file at `abs` (named `path` in its snapshot): by extension, else
/// by its magic bytes. None for any other file.
pub fn detect(path: &str, abs: &Path) -> Result<Option<Format>, Error> {
    let by_name = Format::for_path(path);
    if matches!(by_name, Some(Format::Parquet | Format::ArrowStream)) {
        return Ok(by_name);
    }
    let (head, tail) = ends(abs).map_err(|source| Error::Io {
        path: abs.to_owned(),
        source,
    })?;
    Ok(match by_name {
        // `.arrow`, `.feather` and `.ipc` name streams too: a stream starts with a message
        // (its continuation marker), a file with its magic.
        Some(_) if !head.starts_with(b"ARROW1") && head.starts_with(&[0xFF; 4]) => Some(Format::ArrowStream),
        Some(f) => Some(f),
        None => Format::sniff(&head, &tail),
    })
}

/// A file's first and last 8 bytes.
fn ends(abs: &Path) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(abs)?;
    let size = file.metadata()?.len();
    let n = size.min(8) as usize;
    let mut head = vec![0u8; n];
    let mut tail = vec![0u8; n];
    file.read_exact_at(&mut head, 0)?;
    file.read_exact_at(&mut tail, size - n as u64)?;
    Ok((head, tail))
}
