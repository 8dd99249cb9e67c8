//! The one error type of the analysis crate: every refusal says what is wrong and how to
//! fix it (which command builds the missing index, which file is stale).

use std::path::PathBuf;

/// Everything indexing, tracing and memorization analysis can refuse.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The run has no index yet.
    #[error("{0}")]
    NoIndex(String),
    /// The index no longer matches the run's data.
    #[error("{0}")]
    Stale(String),
    /// An index or result file is malformed.
    #[error("{path}: {msg}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A request that cannot be answered (empty text, query longer than a row, ...).
    #[error("{0}")]
    Input(String),
    /// Suffix-array construction failed.
    #[error("suffix array construction failed: {0}")]
    Build(String),
    /// From the data layer.
    #[error(transparent)]
    Data(#[from] glass_data::DataError),
    /// From the run layer (checkpoints, manifests).
    #[error(transparent)]
    Run(#[from] glass_run::RunError),
    /// From the engine.
    #[error(transparent)]
    Engine(#[from] glass_engine::EngineError),
    /// From evaluation (held-out loss is scored by `glass eval`'s scorer).
    #[error(transparent)]
    Eval(#[from] glass_eval::EvalError),
}

/// Result alias of the crate.
pub type Result<T, E = AnalysisError> = std::result::Result<T, E>;

impl From<glass_io::IoError> for AnalysisError {
    fn from(e: glass_io::IoError) -> Self {
        AnalysisError::Data(e.into())
    }
}
