//! Glass engine: the LLaMA-family pretraining math on CPU, written out layer by layer.
//!
//! One forward and one backward function per layer (the llm.c way), activations and
//! gradients in buffers allocated once, matrix products through one swappable GEMM
//! function, and every reduction in a fixed order so results are bit-identical for any
//! thread count.

pub mod argmax;
pub mod config;
pub mod gemm;
pub mod generate;
pub mod grad_tree;
pub mod inspect;
pub mod layout;
pub mod model;
pub mod ops;
pub mod optim;
pub mod packed;
pub mod parallel;
pub mod profile;
pub mod weights;

pub use argmax::{argmax, argmax_token};
pub use config::{
    ArchConfig, AttentionScale, BlockKind, LrMultipliers, MlpKind, ModelConfig, MupConfig,
    NormKind, PRESETS,
};
pub use generate::{decode, CachedInput, DecodeStep, KvCache, Sampler, SamplingConfig};
pub use grad_tree::GradTree;
pub use layout::{ParamGroup, ParamLayout, TensorView};
pub use model::{BlockView, Model, Probe, StepStats};
pub use optim::{AdamW, AdamWConfig};
pub use packed::PackedModel;
pub use weights::HalfWeights;

/// Version of the engine's numerics: bumped whenever any kernel's rounding changes
/// (operation order, GEMM accumulation order or k-block, exp approximation). Two engines
/// with the same numerics version produce the same bits; a checkpoint can only be
/// replayed bit for bit by an engine with the version that wrote it.
///
/// 2: grouped-query attention sums a KV head's gradient over its query heads after
/// computing each head's share (was: accumulated head after head).
///
/// 3: portable. The GEMM has a fixed accumulation order ([`gemm`]), every
/// transcendental is a fixed software sequence ([`ops::fastmath`]) and nothing dispatches
/// on the CPU in a way that changes rounding, so the bits are the same on every x86-64
/// CPU (AVX-512, AVX2+FMA or neither) and on aarch64, for any thread count.
pub const NUMERICS_VERSION: u32 = 3;

/// The numerics contract a checkpoint records: what must match for a bit-identical
/// replay. It names no machine: any CPU the contract covers reproduces the bits.
pub fn numerics_contract() -> String {
    format!("numerics {NUMERICS_VERSION}: portable")
}

/// A string naming this engine and its numerics contract, recorded in every checkpoint.
pub fn engine_id() -> String {
    format!(
        "glass-engine {} {}",
        env!("CARGO_PKG_VERSION"),
        numerics_contract()
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
