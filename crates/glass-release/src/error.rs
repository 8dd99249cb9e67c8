//! Errors of writing, verifying and importing releases, each naming the file involved.

use std::path::PathBuf;

/// Everything a release operation can refuse.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// A file of the release is missing, malformed or inconsistent.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        msg: String,
    },
    /// A precondition does not hold (bad option, wrong directory, ...).
    #[error("{0}")]
    Invalid(String),
    /// Filesystem error with its path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Run layer refusal.
    #[error(transparent)]
    Run(#[from] glass_run::RunError),
    /// Data layer refusal.
    #[error(transparent)]
    Data(#[from] glass_data::DataError),
    /// Hugging Face export/import refusal.
    #[error(transparent)]
    Hf(#[from] glass_hf::HfError),
    /// Engine refusal.
    #[error(transparent)]
    Engine(#[from] glass_engine::EngineError),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ReleaseError>;

/// Attaches a path to an I/O error.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ReleaseError {
    let path = path.into();
    move |source| ReleaseError::Io { path, source }
}

/// A file-level error.
pub(crate) fn file_err(path: impl Into<PathBuf>, msg: impl Into<String>) -> ReleaseError {
    ReleaseError::File {
        path: path.into(),
        msg: msg.into(),
    }
}

impl From<glass_io::IoError> for ReleaseError {
    fn from(e: glass_io::IoError) -> Self {
        ReleaseError::Data(e.into())
    }
}
