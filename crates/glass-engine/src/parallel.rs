//! Deterministic parallel helpers.
//!
//! Work is split into chunks whose boundaries depend only on the problem size, never on
//! the number of threads, and partial results are combined in chunk order. That is what
//! makes every reduction in the engine bit-identical for 1 or N threads.
//!
//! Parallel writers always get disjoint slices (`par_chunks_mut`, `split_at_mut`): the
//! engine has no shared mutable pointers, and no `unsafe` outside the GEMM.

use rayon::prelude::*;

/// Fixed chunk length for reductions over the flat parameter buffer.
pub const REDUCE_CHUNK: usize = 1 << 16;

/// Sum of squares of `xs` in f64, combined in a thread-count-independent order.
pub fn sum_squares(xs: &[f32]) -> f64 {
    let partials: Vec<f64> = xs
        .par_chunks(REDUCE_CHUNK)
        .map(|c| c.iter().map(|&x| x as f64 * x as f64).sum::<f64>())
        .collect();
    partials.iter().sum()
}
