//! Glass evaluation: lm-evaluation-harness-compatible multiple-choice and perplexity
//! tasks, scored on every checkpoint of a run with the harness's exact semantics
//! (prompts, few-shot sampling, tokenisation, truncation, metrics), a KV-cached shared
//! context per question and documents in parallel, results stored in the run.
//!
//! See `docs/eval.md`.

pub mod bundled;
pub mod bundled_files;
pub mod code;
pub mod contamination_report;
pub mod datasets;
pub mod generate;
pub mod groups;
pub mod include;
pub mod index;
pub mod process;
pub mod prompts;
pub mod pyrandom;
pub mod results;
pub mod run;
pub mod sandbox;
pub mod score;
pub mod source;
pub mod suite;
pub mod task;
pub mod template;
pub mod yaml;

pub use prompts::{prepare, Prepared};
pub use results::{MetricValue, Sample};
pub use run::{
    evaluate_run, evaluate_run_on, CheckpointSel, EvalOptions, EvalProgress, TaskResult,
};
pub use score::{Scored, Scorer};
pub use task::{TaskData, TaskDef};

/// The harness's default few-shot seed (`--fewshot_random_seed`).
pub const DEFAULT_FEWSHOT_SEED: u64 = 1234;

/// Everything evaluation can refuse, naming the file, line or row and the fix.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A task definition is invalid or uses an unsupported feature.
    #[error("task definition {0}")]
    Task(String),
    /// A dataset row is malformed or lacks a field a template needs.
    #[error("dataset {0}")]
    Data(String),
    /// Scoring failed (tokenizer, model limits).
    #[error("scoring: {0}")]
    Score(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The run refused (unknown checkpoint, failed hash check, database).
    #[error(transparent)]
    Run(#[from] glass_run::RunError),
    /// The run's prepared data (tokenizer) could not be opened, or a write failed.
    #[error(transparent)]
    RunData(#[from] glass_data::DataError),
    /// Bad options.
    #[error("{0}")]
    Invalid(String),
    /// The code sandbox cannot be built here, or a program could not be started in it.
    #[error("{0}")]
    Sandbox(String),
}

impl From<glass_io::IoError> for EvalError {
    fn from(e: glass_io::IoError) -> Self {
        EvalError::RunData(e.into())
    }
}
