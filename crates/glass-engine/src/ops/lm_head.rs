//! LM head fused with softmax cross-entropy: logits, loss and dlogits in one pass.
//!
//! Rows are processed in chunks of [`ROW_CHUNK`], so only `ROW_CHUNK × vocab` logits
//! exist at a time (262 MB would be needed for a 2048-token batch at vocab 32000). The
//! head's weight gradient accumulates chunk after chunk in a fixed order.

use rayon::prelude::*;

use super::fastmath;
use crate::gemm::{matmul, Mat, Threads};

/// Rows per logits chunk.
pub const ROW_CHUNK: usize = 256;

/// Target id that contributes neither loss nor gradient (padding in evaluation batches).
pub const IGNORE: u32 = u32::MAX;

/// Shapes and scalars of the head.
#[derive(Debug, Clone, Copy)]
pub struct HeadDims {
    /// Model width.
    pub d: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// muP output-logit multiplier.
    pub mult: f32,
}

/// Per-row log-softmax pieces: `(logsumexp, logit of target)`.
fn row_lse(z: &[f32]) -> f32 {
    let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let s: f32 = z.iter().map(|&x| fastmath::exp(x - m)).sum();
    m + s.ln()
}

/// Computes the logits of `x` rows into `logits` (`[rows, vocab]`).
pub fn logits(dims: HeadDims, x: &[f32], w: &[f32], rows: usize, logits: &mut [f32]) {
    matmul(
        Threads::Pool,
        rows,
        dims.vocab,
        dims.d,
        Mat::n(x, dims.d),
        Mat::t(w, dims.d),
        logits,
        dims.vocab,
        dims.mult,
        false,
    );
}

/// Forward only: writes each row's cross-entropy (0 for ignored targets) into `losses`.
pub fn forward(
    dims: HeadDims,
    x: &[f32],
    w: &[f32],
    targets: &[u32],
    losses: &mut [f32],
    buf: &mut Vec<f32>,
) {
    let (d, v) = (dims.d, dims.vocab);
    for (ci, tchunk) in targets.chunks(ROW_CHUNK).enumerate() {
        let n = tchunk.len();
        let r0 = ci * ROW_CHUNK;
        buf.resize(n * v, 0.0);
        logits(dims, &x[r0 * d..(r0 + n) * d], w, n, buf);
        buf.par_chunks(v)
            .zip(tchunk.par_iter())
            .zip(losses[r0..r0 + n].par_iter_mut())
            .for_each(|((z, &t), l)| {
                *l = if t == IGNORE {
                    0.0
                } else {
                    row_lse(z) - z[t as usize]
                };
            });
    }
}

/// Forward and backward: writes row losses, overwrites `dx` with the gradient w.r.t. `x`
/// and adds the head weight gradient into `dw`. `grad_scale` is d(total loss)/d(row loss)
/// (1 / tokens in the optimizer step, for a mean).
#[allow(clippy::too_many_arguments)]
pub fn forward_backward(
    dims: HeadDims,
    x: &[f32],
    w: &[f32],
    targets: &[u32],
    grad_scale: f32,
    losses: &mut [f32],
    dx: &mut [f32],
    dw: &mut [f32],
    buf: &mut Vec<f32>,
) {
    let (d, v) = (dims.d, dims.vocab);
    for (ci, tchunk) in targets.chunks(ROW_CHUNK).enumerate() {
        let n = tchunk.len();
        let r0 = ci * ROW_CHUNK;
        buf.resize(n * v, 0.0);
        let xc = &x[r0 * d..(r0 + n) * d];
        logits(dims, xc, w, n, buf);
        // dz = softmax − onehot; d(x·Wᵀ) = mult · dz.
        let g = grad_scale * dims.mult;
        buf.par_chunks_mut(v)
            .zip(tchunk.par_iter())
            .zip(losses[r0..r0 + n].par_iter_mut())
            .for_each(|((z, &t), l)| {
                if t == IGNORE {
                    *l = 0.0;
                    z.fill(0.0);
                    return;
                }
                let lse = row_lse(z);
                *l = lse - z[t as usize];
                for zj in z.iter_mut() {
                    *zj = fastmath::exp(*zj - lse) * g;
                }
                z[t as usize] -= g;
            });
        matmul(
            Threads::Pool,
            n,
            d,
            v,
            Mat::n(buf, v),
            Mat::n(w, d),
            &mut dx[r0 * d..(r0 + n) * d],
            d,
            1.0,
            false,
        );
        matmul(
            Threads::Pool,
            v,
            d,
            n,
            Mat::t(buf, v),
            Mat::n(xc, d),
            dw,
            d,
            1.0,
            true,
        );
    }
}
