//! The one error of this crate: an I/O failure with the path it happened on (a bare
//! `io::Error` names no file). Each format owner turns it into its own error type.

use std::path::PathBuf;

/// An I/O failure on a named file or directory.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct IoError {
    /// The file or directory being read or written.
    pub path: PathBuf,
    /// The underlying error.
    pub source: std::io::Error,
}

/// Result alias of this crate.
pub type Result<T, E = IoError> = std::result::Result<T, E>;

/// Attaches a path to an `io::Error`.
pub trait IoContext<T> {
    /// Wraps the error with `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| IoError {
            path: path.into(),
            source,
        })
    }
}
