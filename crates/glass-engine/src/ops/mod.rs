//! Forward and backward of each layer kind, one function each.
//!
//! Buffer convention: activations are row-major `[rows, width]` with one row per token
//! (`rows = batch · seq_len`); a backward function *adds* into gradient buffers that are
//! shared across micro-batches and overwrites scratch buffers it owns.

pub mod attention;
pub mod embedding;
pub mod fastmath;
pub mod gelu;
pub mod linear;
pub mod lm_head;
pub mod norm;
pub mod reduce;
pub mod rope;
pub mod swiglu;
pub mod wide;
