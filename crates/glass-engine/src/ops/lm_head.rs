//! LM head fused with softmax cross-entropy: logits, loss and dlogits in one pass.
//!
//! Rows are processed in chunks of [`row_chunk`] rows, so only about [`LOGITS_BUDGET`] logits
//! exist at a time (262 MB would be needed for a 2048-token batch at vocab 32000). The
//! head's weight gradient accumulates chunk after chunk in a fixed order.

use rayon::prelude::*;

use super::fastmath;
use crate::gemm::{matmul, Mat, Threads};

impl HeadDims {
    /// The head shapes of `cfg`.
    pub fn new(cfg: &crate::ModelConfig) -> Self {
        HeadDims {
            d: cfg.d_model,
            vocab: cfg.vocab_size,
            mult: cfg.mup.output_logit_multiplier,
        }
    }
}

/// Logits held at once (64 MiB of f32): large chunks keep the head GEMMs efficient and
/// the weight-gradient accumulation passes few; the bound keeps memory flat in vocab.
pub const LOGITS_BUDGET: usize = 1 << 24;

/// Rows per logits chunk: a function of the vocabulary only (never of threads), a
/// multiple of 64.
pub fn row_chunk(vocab: usize) -> usize {
    ((LOGITS_BUDGET / vocab.max(1)) / 64 * 64).max(64)
}

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

/// Replaces the row `z` by `exp(z − max)` and returns `(max, Σ exp(z − max))`.
///
/// One exponential per logit, in a vectorisable loop; the sum runs in a second,
/// fixed-order loop.
fn exp_shifted(z: &mut [f32]) -> (f32, f32) {
    let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for x in z.iter_mut() {
        *x = fastmath::exp(*x - m);
    }
    (m, z.iter().sum())
}

/// Cross-entropy of target `t` for logits `z` (which it overwrites with scratch).
fn row_loss(z: &mut [f32], t: u32) -> f32 {
    let zt = z[t as usize];
    let (m, sum) = exp_shifted(z);
    m + fastmath::ln(sum) - zt
}

/// Computes the logits of `x` rows into `logits` (`[rows, vocab]`).
pub fn logits(dims: HeadDims, x: &[f32], w: &[f32], rows: usize, logits: &mut [f32]) {
    logits_with(dims, x, w, None, rows, logits)
}

/// [`logits`] with the head's `Wᵀ` packed beforehand when `packed` is given (same bits).
pub fn logits_with(
    dims: HeadDims,
    x: &[f32],
    w: &[f32],
    packed: Option<&crate::gemm::PackedB>,
    rows: usize,
    logits: &mut [f32],
) {
    if let Some(pb) = packed {
        crate::gemm::matmul_packed(
            Threads::Pool,
            rows,
            Mat::n(x, dims.d),
            pb,
            logits,
            dims.vocab,
            dims.mult,
            false,
        );
        return;
    }
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

/// [`logits`] with the head stored in 16 bits (`w` its `Wᵀ` view): the bits of
/// [`logits`] on the widened head.
pub fn logits_half(
    dims: HeadDims,
    x: &[f32],
    w: crate::gemm::HalfMat<'_>,
    rows: usize,
    logits: &mut [f32],
) {
    crate::gemm::matmul_half(
        Threads::Pool,
        rows,
        dims.vocab,
        dims.d,
        Mat::n(x, dims.d),
        w,
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
    forward_by(
        dims,
        x,
        &|xc, n, out| logits(dims, xc, w, n, out),
        targets,
        losses,
        buf,
    )
}

/// Computes the logits `[n, vocab]` of `n` rows of `x` into the last argument.
pub type HeadFn<'a> = dyn Fn(&[f32], usize, &mut [f32]) + Sync + 'a;

/// [`forward`] with the logits of `n` rows of `x` computed by `head` (whatever the
/// head's storage).
pub fn forward_by(
    dims: HeadDims,
    x: &[f32],
    head: &HeadFn<'_>,
    targets: &[u32],
    losses: &mut [f32],
    buf: &mut Vec<f32>,
) {
    let (d, v) = (dims.d, dims.vocab);
    let chunk = row_chunk(v);
    for (ci, tchunk) in targets.chunks(chunk).enumerate() {
        let n = tchunk.len();
        let r0 = ci * chunk;
        buf.resize(n * v, 0.0);
        head(&x[r0 * d..(r0 + n) * d], n, buf);
        buf.par_chunks_mut(v)
            .zip(tchunk.par_iter())
            .zip(losses[r0..r0 + n].par_iter_mut())
            .for_each(|((z, &t), l)| {
                *l = if t == IGNORE { 0.0 } else { row_loss(z, t) };
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
    forward_backward_chunked(
        row_chunk(dims.vocab),
        dims,
        x,
        w,
        targets,
        grad_scale,
        losses,
        dx,
        dw,
        buf,
    );
}

#[allow(clippy::too_many_arguments)]
fn forward_backward_chunked(
    chunk: usize,
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
    for (ci, tchunk) in targets.chunks(chunk).enumerate() {
        let n = tchunk.len();
        let r0 = ci * chunk;
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
                let zt = z[t as usize];
                let (m, sum) = exp_shifted(z);
                *l = m + fastmath::ln(sum) - zt;
                // softmax = exp(z − max) / Σ.
                let scale = g / sum;
                for zj in z.iter_mut() {
                    *zj *= scale;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunk: usize, threads: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let dims = HeadDims {
            d: 8,
            vocab: 50,
            mult: 0.7,
        };
        let rows = 200;
        let x: Vec<f32> = (0..rows * 8)
            .map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let w: Vec<f32> = (0..50 * 8)
            .map(|i| ((i * 13 % 11) as f32 - 5.0) / 5.0)
            .collect();
        let t: Vec<u32> = (0..rows).map(|i| (i * 7 % 50) as u32).collect();
        let (mut l, mut dx, mut dw) = (vec![0.0; rows], vec![0.0; rows * 8], vec![0.0; 50 * 8]);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            forward_backward_chunked(
                chunk,
                dims,
                &x,
                &w,
                &t,
                0.01,
                &mut l,
                &mut dx,
                &mut dw,
                &mut Vec::new(),
            )
        });
        (l, dx, dw)
    }

    #[test]
    fn chunking_changes_only_rounding_and_threads_change_nothing() {
        let whole = run(200, 2);
        let chunked = run(64, 2);
        for (a, b) in whole.2.iter().zip(&chunked.2) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        assert_eq!(whole.0, chunked.0);
        let one = run(64, 1);
        assert!(one
            .2
            .iter()
            .zip(&chunked.2)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
