//! Glass runs: a pretraining run is a directory that holds its own release — config,
//! data, every checkpoint with optimizer state, metrics, events — with a manifest of
//! hashes that anyone can verify, down to replaying an interval bit for bit.
//!
//! The layout is specified in `docs/run-format.md`.

pub mod checkpoint;
pub mod config;
pub mod diff;
pub mod dist;
pub mod error;
pub mod fault;
pub mod import;
pub mod info;
pub mod integrity;
pub mod lock;
pub mod manifest;
pub mod metrics;
pub mod moments;
pub mod select;
pub mod train;
pub mod verify;
pub mod weights;

pub use config::{init_toml, lr_at, RunConfig};
pub use diff::{diff, DiffReport};
pub use error::{Result, RunError};
pub use import::{
    create_imported_run, create_weights_only_run, run_tokenizer, run_tokenizer_path, ImportedRun,
    WeightsOnlyRun,
};
pub use info::{
    info, init, init_branch, load_model, load_model_f32, map_stored_weights, map_weights, RunInfo,
};
pub use manifest::{BranchMode, ImportSource, Parent, RunManifest};
pub use metrics::Metrics;
pub use select::{Checkpoint, Selection};
pub use train::{checkpoint_plan, train, TrainOptions, TrainReport};
pub use verify::{replay, verify_run, ReplayReport, RunVerifyReport};
