//! Errors of run management, each naming the file or key involved and the fix.

use std::path::PathBuf;

/// Everything a run operation can refuse.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `glass.toml` is missing, malformed, or has an unknown / invalid key.
    #[error("{path}: {msg}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        msg: String,
    },
    /// A file's bytes do not match the hash recorded in the manifest.
    #[error("{path}: sha256 {actual} does not match the manifest's {expected}; the file was modified or truncated — restore it from a copy, or re-run the interval")]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// Recorded hash.
        expected: String,
        /// Hash of the bytes on disk.
        actual: String,
    },
    /// A checkpoint or state file is unreadable or inconsistent.
    #[error("{path}: {msg}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The run directory was written by a newer Glass.
    #[error("{path}: run format version {found} is newer than this glass supports ({supported}); upgrade glass")]
    NewerFormat {
        /// The manifest.
        path: PathBuf,
        /// Version on disk.
        found: u32,
        /// Version this build writes.
        supported: u32,
    },
    /// Another process holds the run's lock.
    #[error("{0}: another glass process is training this run (remove the lock file only if no such process exists)")]
    Locked(PathBuf),
    /// Any other precondition (missing checkpoint, nothing to do, ...).
    #[error("{0}")]
    Invalid(String),
    /// Filesystem error with the path it happened on.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Metrics database error.
    #[error("metrics database {path}: {source}")]
    Sql {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// Engine refusal (bad shapes, tokens out of range).
    #[error(transparent)]
    Engine(#[from] glass_engine::EngineError),
    /// Data layer refusal.
    #[error(transparent)]
    Data(#[from] glass_data::DataError),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, RunError>;

/// Attaches a path to an I/O error.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RunError {
    let path = path.into();
    move |source| RunError::Io { path, source }
}

impl From<glass_io::IoError> for RunError {
    fn from(e: glass_io::IoError) -> Self {
        RunError::Data(e.into())
    }
}
