//! Glass analysis: what a run's model memorized, and where in training it saw a text.
//!
//! Glass records the exact token at every (step, row, position) of training, so two
//! questions get exact answers: which training steps held a span of text, and how much of
//! each data chunk every checkpoint reproduces verbatim. The pieces:
//!
//! - [`index`]: a suffix array per data chunk (plus one for validation rows) under
//!   `RUN/index/`, over the chunk token files themselves (no copy of the text);
//! - [`query`]: counting and locating token sequences in the index, never across rows;
//! - [`trace`]: OLMoTrace-style maximal matching spans of a text, with the steps, rows,
//!   documents and source text of their occurrences;
//! - [`contamination`]: which benchmark items' 13-token windows occur in training rows;
//! - [`memorization`]: Analysis360's memorization protocol for every checkpoint × chunk.
//! - [`checkpoints`]: the checkpoints analyses evaluate, a run's own or a suite's imported
//!   ones.
//!
//! Training rows are read through [`glass_data::rows::TrainingRows`]: a prepared run's
//! chunks, or a suite's data read in place (`glass import pythia|olmo|crystalcoder`).
//!
//! The method and its differences from Analysis360 and OLMoTrace are in `docs/analysis.md`.

#![warn(missing_docs)]

pub mod checkpoints;
pub mod contamination;
pub mod dynamics;
pub mod error;
pub mod index;
pub mod inspect;
pub mod memorization;
pub mod query;
pub mod trace;

pub use error::{AnalysisError, Result};
pub use index::{build_index, IndexReport};
pub use query::Index;
