//! Errors of Hugging Face import and export, each naming the file (and tensor) involved.

use std::path::PathBuf;

/// Everything import or export can refuse.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    /// A file of the folder is missing, unreadable, truncated or malformed.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        msg: String,
    },
    /// One tensor is missing, unexpected, of the wrong shape or dtype.
    #[error("{path}: tensor `{tensor}`: {msg}")]
    Tensor {
        /// The file that holds (or should hold) it.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong.
        msg: String,
    },
    /// The model cannot be expressed exactly in the other format.
    #[error("{0}")]
    Refused(String),
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
    /// Data layer refusal (tokenizer).
    #[error(transparent)]
    Data(#[from] glass_data::DataError),
    /// Engine refusal.
    #[error(transparent)]
    Engine(#[from] glass_engine::EngineError),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, HfError>;

/// Attaches a path to an I/O error.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HfError {
    let path = path.into();
    move |source| HfError::Io { path, source }
}

/// A file-level error.
pub(crate) fn file_err(path: impl Into<PathBuf>, msg: impl Into<String>) -> HfError {
    HfError::File {
        path: path.into(),
        msg: msg.into(),
    }
}

/// A tensor-level error.
pub(crate) fn tensor_err(
    path: impl Into<PathBuf>,
    tensor: impl Into<String>,
    msg: impl Into<String>,
) -> HfError {
    HfError::Tensor {
        path: path.into(),
        tensor: tensor.into(),
        msg: msg.into(),
    }
}

impl From<glass_io::IoError> for HfError {
    fn from(e: glass_io::IoError) -> Self {
        HfError::Data(e.into())
    }
}
