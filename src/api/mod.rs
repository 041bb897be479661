//! The library's verbs, as the command line uses them: [`Repository`] opens a store and each
//! submodule is one verb with its own report and error type.

pub mod add;
pub mod auto_base;
pub mod checkout;
pub mod commit;
#[cfg(feature = "cuda")]
pub mod device;
pub mod diff;
pub mod estimate;
pub mod family;
pub mod fsck;
pub mod gc;
pub mod log;
pub mod progress;
pub mod reach;
pub mod record_diff;
pub mod refs;
pub mod reindex;
pub mod remote;
pub mod rev;
pub mod status;
pub mod table_diff;
pub mod tensors;
pub mod validate;

use std::path::{Path, PathBuf};

use crate::store::cas::Cas;
use crate::store::history::{self, History};
use crate::store::index::{self, Index};
use crate::store::lock::{self, WriteLock};
use crate::store::{Layout, DIR_NAME};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("not in a sparse store (no {DIR_NAME} here or in any parent of {0}); run `sparse init`")]
    NotFound(PathBuf),
    #[error("{0} is already a sparse store")]
    Exists(PathBuf),
    #[error("cannot create the store at {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    History(#[from] history::Error),
}

/// An open store.
pub struct Repository {
    pub layout: Layout,
    pub history: History,
    pub cas: Cas,
}

impl Repository {
    /// Creates `dir/.sparse` (creating `dir` if needed).
    pub fn init(dir: &Path) -> Result<Repository, OpenError> {
        let root = dir.join(DIR_NAME);
        if root.exists() {
            return Err(OpenError::Exists(root));
        }
        let create = |source| OpenError::Create {
            path: root.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(create)?;
        // Build in a temporary directory and rename, so a store is either whole or absent.
        let tmp = tempfile::Builder::new()
            .prefix(".sparse-init")
            .tempdir_in(dir)
            .map_err(create)?;
        History::init(tmp.path())?;
        let layout = Layout::new(tmp.path());
        for d in [layout.cas(), layout.tmp()] {
            std::fs::create_dir_all(d).map_err(create)?;
        }
        std::fs::File::create(layout.lock()).map_err(create)?;
        drop(Index::create(&layout).map_err(|e| create(std::io::Error::other(e)))?);
        // Dropped on failure, the temporary directory goes with it.
        std::fs::rename(tmp.path(), &root).map_err(create)?;
        let _ = tmp.keep();
        Repository::open(&root)
    }

    /// Opens the store at `root` (a `.sparse` directory).
    pub fn open(root: &Path) -> Result<Repository, OpenError> {
        if !Layout::is_store(root) {
            return Err(OpenError::NotFound(root.to_owned()));
        }
        let layout = Layout::new(root);
        let history = History::open(root)?;
        let cas = Cas::new(&layout);
        Ok(Repository { layout, history, cas })
    }

    /// Finds the store for `start`: `start` itself if it is one, else `.sparse` in it or in
    /// the nearest parent that has one, like git.
    pub fn discover(start: &Path) -> Result<Repository, OpenError> {
        let start = std::path::absolute(start).unwrap_or_else(|_| start.to_owned());
        if Layout::is_store(&start) {
            return Repository::open(&start);
        }
        for dir in start.ancestors() {
            let candidate = dir.join(DIR_NAME);
            if Layout::is_store(&candidate) {
                return Repository::open(&candidate);
            }
        }
        Err(OpenError::NotFound(start))
    }

    /// The index, for writing (waits while another process has it open).
    pub fn index(&self) -> Result<Index, index::Error> {
        Index::open(&self.layout)
    }

    /// The index, for reading only: the file is left as it is.
    pub fn index_read(&self) -> Result<Index, index::Error> {
        Index::open_read(&self.layout)
    }

    pub fn lock(&self) -> Result<WriteLock, lock::Error> {
        WriteLock::acquire(&self.layout)
    }
}
