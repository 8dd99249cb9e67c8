//! The one error type of the benchmarks: the other crates' errors as they are, and I/O
//! failures with what was being done to which file.

use std::path::Path;

/// Everything a benchmark can refuse or fail on.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An I/O failure; `what` names the action and the file (the OS error is the source).
    #[error("{what}")]
    Io {
        /// What was being done, to which file (`creating target/bench-hf`).
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// JSON that could not be read or written; `what` says which.
    #[error("{what}")]
    Json {
        /// Which document.
        what: String,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// Another crate's error, with what was being done when it happened.
    #[error("{what}")]
    Context {
        /// What was being done (`reading the prepared manifest`).
        what: String,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The worker pool a benchmark runs on could not be built.
    #[error("thread pool")]
    ThreadPool(#[source] rayon::ThreadPoolBuildError),
    /// A benchmark precondition or check that failed, or a helper process that did.
    #[error("{0}")]
    Failed(String),
    /// From the engine.
    #[error(transparent)]
    Engine(#[from] glass_engine::EngineError),
    /// From the data layer.
    #[error(transparent)]
    Data(#[from] glass_data::DataError),
    /// From the run layer (checkpoints, metrics, data-parallel steps).
    #[error(transparent)]
    Run(#[from] glass_run::RunError),
    /// From Hugging Face export and import.
    #[error(transparent)]
    Hf(#[from] glass_hf::HfError),
    /// From the trace index.
    #[error(transparent)]
    Analysis(#[from] glass_analysis::AnalysisError),
    /// From an atomic write.
    #[error(transparent)]
    File(#[from] glass_io::IoError),
    /// Serialising the benchmark's own config.
    #[error(transparent)]
    Toml(#[from] toml::ser::Error),
}

/// Result alias of this crate.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// Wraps another crate's error with what was being done.
pub(crate) fn context<E: std::error::Error + Send + Sync + 'static>(
    what: &str,
) -> impl FnOnce(E) -> BenchError + '_ {
    move |e| BenchError::Context {
        what: what.to_string(),
        source: Box::new(e),
    }
}

/// Wraps an `io::Error` with what was being done: `io("opening", path)`.
pub(crate) fn io(action: &str, path: &Path) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = format!("{action} {}", path.display());
    move |source| BenchError::Io { what, source }
}
