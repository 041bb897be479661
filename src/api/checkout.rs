//! `checkout`: write every file of a revision into a directory, byte for byte as it was added
//! (tables stored as row deltas: the same schema, values and row order).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::rev;
use super::{progress, Repository};
use crate::model::rebuild::{self, destination, Rebuilder};
use crate::model::snapshot::{self, Snapshot};
use crate::model::table::{
    self,
    convert::{convert, Target},
};
use crate::store::copies::Copies;
use crate::store::history;

#[derive(Debug, Serialize)]
pub struct Report {
    pub commit: String,
    pub dir: PathBuf,
    pub files: usize,
    pub bytes: u64,
    /// The lossy tier of the revision, if it stores tensors lossy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lossy: Option<String>,
    /// Tables rebuilt from row deltas: the same schema, values and row order as added, not
    /// necessarily the same bytes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Tables written in another format (`--format`): the file's path, and the path written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub converted: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Rev(#[from] rev::Error),
    #[error(transparent)]
    History(#[from] history::Error),
    #[error("revision {rev}: {source}")]
    Snapshot { rev: String, source: snapshot::Error },
    #[error("revision {rev}: {source}")]
    Rebuild { rev: String, source: Box<rebuild::Error> },
    #[error("output directory {0} is not empty (use --force to write into it)")]
    NotEmpty(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("revision {rev}: converting {file}: {source}")]
    Convert {
        rev: String,
        file: String,
        source: Box<table::Error>,
    },
}

impl Repository {
    /// Writes revision `rev` into `dir`. `progress` gets (bytes done, bytes in all).
    pub fn checkout(
        &self,
        rev: &str,
        dir: &Path,
        force: bool,
        format: Option<Target>,
        progress: progress::Report<'_>,
    ) -> Result<Report, Error> {
        let commit = self.resolve(rev)?;
        let info = self.history.commit_info(commit)?;
        let snap = Snapshot::load(&self.history, info.tree).map_err(|source| Error::Snapshot {
            rev: rev.into(),
            source,
        })?;
        let rebuild_err = |source: rebuild::Error| Error::Rebuild {
            rev: rev.into(),
            source: Box::new(source),
        };
        let base = snap.base().map_err(|source| Error::Snapshot {
            rev: rev.into(),
            source,
        })?;
        let copies = Copies::new(&self.layout);
        let rebuilder = Rebuilder::new(&self.history, &self.cas, base)
            .map_err(rebuild_err)?
            .with_copies(&copies);

        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path, source }
        };
        if !force && dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
            return Err(Error::NotEmpty(dir.to_owned()));
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;

        let total = snap.raw_bytes();
        let counter = progress::Counter::new(total, progress);
        let tick = |n: u64| counter.add(n);
        let mut bytes = 0;
        let mut tables = Vec::new();
        let mut converted_files = Vec::new();
        for entry in &snap.meta.files {
            let dest = destination(dir, &entry.path).map_err(rebuild_err)?;
            let parent = dest.parent().expect("inside dir");
            std::fs::create_dir_all(parent).map_err(io(parent))?;
            if entry.manifest {
                bytes += rebuilder
                    .write_file(&snap, &entry.path, &dest, &tick)
                    .map_err(rebuild_err)?;
                if snap.manifests[&entry.path].table.is_some() {
                    tables.push(entry.path.clone());
                } else {
                    // A hint only: later checkouts of models based on this one read it from here.
                    let _ = copies.record(&snap.tree.to_string(), &entry.path, &dest);
                }
            } else {
                let content = self.history.read_blob(snap.blobs[&entry.path])?;
                if content.len() as u64 != entry.size {
                    return Err(rebuild_err(rebuild::Error::BadPath {
                        path: entry.path.clone(),
                        why: format!(
                            "stored file has {} bytes, the record says {}",
                            content.len(),
                            entry.size
                        ),
                    }));
                }
                write_atomically(&dest, &content).map_err(io(&dest))?;
                tick(content.len() as u64);
                bytes += content.len() as u64;
            }
            if let Some(target) = format {
                let converted = convert(&entry.path, &dest, target).map_err(|source| Error::Convert {
                    rev: rev.into(),
                    file: entry.path.clone(),
                    source: Box::new(source),
                })?;
                if let Some(to) = converted {
                    let to = to.strip_prefix(dir).unwrap_or(&to).to_string_lossy().into_owned();
                    converted_files.push((entry.path.clone(), to));
                }
            }
        }
        Ok(Report {
            commit: commit.to_string(),
            dir: dir.to_owned(),
            files: snap.meta.files.len(),
            bytes,
            lossy: snap.meta.lossy.clone(),
            tables,
            converted: converted_files,
        })
    }
}

pub(crate) fn write_atomically(dest: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = rebuild::output_file(dest.parent().expect("inside dir"))?;
    tmp.write_all(content)?;
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(())
}
