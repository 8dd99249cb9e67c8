//! The one error type of the data layer: every bad input gets a message that names the
//! file, line, key or source at fault, instead of a panic or a silently different dataset.

use std::path::PathBuf;

/// Everything that can go wrong while configuring, preparing or reading a run's data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O failure, with the path it happened on (a bare `io::Error` names no file).
    #[error("{path}: {source}")]
    Io {
        /// The file or directory being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The `[data]` table (or the run config around it) is invalid.
    #[error("config: {0}")]
    Config(String),
    /// A source could not be read as declared (missing, empty, malformed, bad UTF-8).
    #[error("source `{source_name}`: {message}")]
    Source {
        /// The source's configured name.
        source_name: String,
        /// What is wrong, naming file and line where there is one.
        message: String,
    },
    /// Loading, training or using the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A prepared-data file is missing, malformed or does not match the manifest.
    #[error("prepared data: {0}")]
    Format(String),
    /// A request outside what the prepared data holds (step, rank, world size).
    #[error("{0}")]
    Range(String),
    /// A Parquet or Arrow IPC file is malformed or lacks a column (the message names
    /// the file, and the row where there is one).
    #[error("{0}")]
    Columnar(String),
    /// A file of an external training-data layout (Megatron `.bin`/`.idx`, numpy `.npy`,
    /// OLMo memmaps and configs) is malformed or disagrees with another; names the file
    /// and, where there is one, the byte offset.
    #[error("{}", layout_message(path, *offset, message))]
    Layout {
        /// The file at fault.
        path: PathBuf,
        /// Byte offset in it, where the problem has one.
        offset: Option<u64>,
        /// What is wrong.
        message: String,
    },
}

fn layout_message(path: &std::path::Path, offset: Option<u64>, message: &str) -> String {
    match offset {
        Some(o) => format!("{} (byte {o}): {message}", path.display()),
        None => format!("{}: {message}", path.display()),
    }
}

impl DataError {
    /// A [`DataError::Layout`] for `path`, with an optional byte offset.
    pub fn layout(
        path: impl Into<PathBuf>,
        offset: Option<u64>,
        message: impl Into<String>,
    ) -> Self {
        DataError::Layout {
            path: path.into(),
            offset,
            message: message.into(),
        }
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Attaches a path to an `io::Error`, because the bare error names no file.
pub(crate) trait IoContext<T> {
    /// Wraps the error with `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| DataError::Io {
            path: path.into(),
            source,
        })
    }
}

impl From<glass_io::IoError> for DataError {
    fn from(e: glass_io::IoError) -> Self {
        DataError::Io {
            path: e.path,
            source: e.source,
        }
    }
}
