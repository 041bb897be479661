//! The store's write lock: one writer at a time (add, commit, ref changes); readers never wait.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::Layout;

const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the store lock {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("the store is busy: another sparse process holds {path} (waited {} s)", WAIT.as_secs())]
    Busy { path: PathBuf },
}

/// Held while a process writes to the store; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct WriteLock {
    _file: File,
}

impl WriteLock {
    pub fn acquire(layout: &Layout) -> Result<WriteLock, Error> {
        let path = layout.lock();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Open {
                path: path.clone(),
                source,
            })?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(WriteLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < WAIT => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Busy { path }),
                Err(std::fs::TryLockError::Error(source)) => return Err(Error::Open { path, source }),
            }
        }
    }
}
