//! Deterministic parallel helpers.
//!
//! Work is split into chunks whose boundaries depend only on the problem size, never on
//! the number of threads, and partial results are combined in chunk order. That is what
//! makes every reduction in the engine bit-identical for 1 or N threads.

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
    xs.par_chunks(REDUCE_CHUNK)
        .map(|c| c.iter().map(|&x| x as f64 * x as f64).sum::<f64>())
        .collect()
}

/// A raw pointer that may cross threads. Callers guarantee that concurrent tasks write
/// disjoint elements (e.g. different attention heads of the same activation row).
#[derive(Clone, Copy)]
pub struct SharedMut(*mut f32, usize);

// SAFETY: only used for disjoint writes, documented at each use.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// Wraps a slice for disjoint concurrent writes.
    pub fn new(s: &mut [f32]) -> Self {
        SharedMut(s.as_mut_ptr(), s.len())
    }
    /// Reborrows the whole buffer.
    ///
    /// # Safety
    /// Concurrent users must touch disjoint elements.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0, self.1)
    }
}
