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
    sum_squares_partials(xs).iter().sum()
}

/// The per-chunk partials of [`sum_squares`], chunk `i` covering elements
/// `[i·REDUCE_CHUNK, (i+1)·REDUCE_CHUNK)`. Processes holding chunk-aligned slices of a
/// buffer concatenate their partials and add them in order to get [`sum_squares`]'s bits.
pub fn sum_squares_partials(xs: &[f32]) -> Vec<f64> {
    // Eight chunks per task, summed side by side (`ops::reduce`): each chunk's sum is
    // still one left-to-right chain, so the partials keep their bits.
    const GROUP: usize = 8;
    let groups: Vec<Vec<f64>> = xs
        .par_chunks(GROUP * REDUCE_CHUNK)
        .map(|g| {
            let chunks: Vec<&[f32]> = g.chunks(REDUCE_CHUNK).collect();
            let mut out = vec![0.0; chunks.len()];
            crate::ops::reduce::sums_of_squares(&chunks, &mut out);
            out
        })
        .collect();
    groups.concat()
}
