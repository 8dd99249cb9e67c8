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
        use std::os::unix::fs::OpenOptionsExt;
        let path = run_dir.join(".lock");
        // Never through a link (O_NOFOLLOW), and a FIFO does not block the open
        // (O_NONBLOCK): the lock file is the run's own regular file or nothing.
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    RunError::Invalid(format!(
                        "{}: is a symbolic link; Glass follows no link inside a run (remove it)",
                        path.display()
                    ))
                } else {
                    io(&path)(e)
                }
            })?;
        if !file.metadata().map_err(io(&path))?.is_file() {
            return Err(RunError::Invalid(format!(
                "{}: not a regular file; remove it",
                path.display()
            )));
        }
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(RunError::Locked(path)),
            Err(TryLockError::Error(e)) => Err(io(&path)(e)),
        }
    }
}
