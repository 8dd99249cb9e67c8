//! One trainer per run: an exclusive OS file lock on `RUN/.lock`, released by the
//! kernel when the process dies (so a `kill -9` never leaves a stale lock).

use std::fs::{File, TryLockError};
use std::path::Path;

use crate::error::{io, Result, RunError};

/// Holds the run lock until dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock or fails at once if another process holds it.
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(RunError::Locked(path)),
            Err(TryLockError::Error(e)) => Err(io(&path)(e)),
        }
    }
}
