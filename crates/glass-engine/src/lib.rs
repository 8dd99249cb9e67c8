//! Glass engine: the LLaMA-family pretraining math on CPU, written out layer by layer.
//!
//! One forward and one backward function per layer (the llm.c way), activations and
//! gradients in buffers allocated once, matrix products through one swappable GEMM
//! function, and every reduction in a fixed order so results are bit-identical for any
//! thread count.

pub mod bench;
pub mod config;
pub mod gemm;
pub mod generate;
pub mod grad_tree;
pub mod layout;
pub mod model;
pub mod ops;
pub mod optim;
pub mod parallel;

pub use config::{AttentionScale, LrMultipliers, ModelConfig, MupConfig, NormKind, PRESETS};
pub use generate::{CachedInput, KvCache, Sampler, SamplingConfig};
pub use grad_tree::GradTree;
pub use layout::{ParamGroup, ParamLayout, TensorView};
pub use model::{Model, StepStats};
pub use optim::{AdamW, AdamWConfig};

/// Version of the engine's numerics: bumped whenever any kernel's rounding changes
/// (operation order, GEMM backend or tiling, exp approximation). Two engines with the
/// same numerics version produce the same bits; a checkpoint can only be replayed bit for
/// bit by an engine with the version that wrote it.
pub const NUMERICS_VERSION: u32 = 1;

/// A string naming this engine and its numerics, recorded in every checkpoint.
pub fn engine_id() -> String {
    format!(
        "glass-engine {} numerics {NUMERICS_VERSION}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Everything the engine can refuse, with enough context to fix it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A configuration value is missing, unknown or inconsistent.
    #[error("invalid model config: {0}")]
    Config(String),
    /// Inputs do not fit the model (token id out of range, sequence too long, ...).
    #[error("invalid input: {0}")]
    Input(String),
    /// A tensor has the wrong name, shape or length.
    #[error("tensor mismatch: {0}")]
    Tensor(String),
}
