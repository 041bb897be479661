//! The store `.sparse/`: a bare git repository ([`history`]) beside a content-addressed blob
//! store ([`cas`]) and a redb index ([`index`]). It knows bytes, git objects and refs, never
//! tensors. The layout on disk is described in docs/FORMAT.md.

pub mod cas;
pub mod copies;
pub mod history;
pub mod index;
pub mod lock;

use std::path::{Path, PathBuf};

/// The name of a store directory, like `.git`.
pub const DIR_NAME: &str = ".sparse";

/// Paths of the parts of a store, all below its directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }
    /// Blobs: `cas/<key>`, the blake3 key in 64 hex digits.
    pub fn cas(&self) -> PathBuf {
        self.root.join("cas")
    }
    /// Files being written, renamed into place when complete.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("sparse").join("tmp")
    }
    pub fn index(&self) -> PathBuf {
        self.root.join("sparse").join("index.redb")
    }
    /// Records of known copies of snapshot files outside the store ([`copies`]).
    pub fn copies(&self) -> PathBuf {
        self.root.join("sparse").join("copies")
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("sparse").join("lock")
    }
    /// Whether `dir` looks like a store (a git directory with our own folder beside it).
    pub fn is_store(dir: &Path) -> bool {
        dir.join("HEAD").is_file() && dir.join("sparse").is_dir() && dir.join("cas").is_dir()
    }
}

/// Starts writing `file`'s dirty pages to disk now, without waiting for them: the [`sync_dir`]
/// that ends an operation then finds less left to write. Errors surface there.
pub fn start_writeback(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range reads no memory of ours; the descriptor is open for the call.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Flushes everything written below `dir` to stable storage (one `syncfs`, not one fsync per file).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(dir)?;
    rustix::fs::syncfs(&f)?;
    Ok(())
}
