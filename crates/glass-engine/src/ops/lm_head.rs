//! LM head fused with softmax cross-entropy: logits, loss and dlogits in one pass.
//!
//! Rows are processed in chunks of [`row_chunk`] rows, so only about [`LOGITS_BUDGET`] logits
//! exist at a time (262 MB would be needed for a 2048-token batch at vocab 32000). The
//! head's weight gradient accumulates chunk after chunk in a fixed order.

use rayon::prelude::*;

use super::{fastmath, reduce};
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

/// Rows of logits turned into losses (and softmax gradients) together: the sums of
/// their exponentials run side by side ([`reduce::sums`]).
const ROW_GROUP: usize = 8;

/// Softmax cross-entropy of a group of logits rows `z` (`[rows, vocab]`) with `targets`:
/// writes each row's loss (0 for [`IGNORE`]) and, when `grad` is `Some(g)`, replaces the
/// row by `g · (softmax − onehot)` (zeros for ignored rows); otherwise the row is
/// scratch.
///
/// Per row: `m = max z`, `e = exp(z − m)` (one vectorised pass), `Σ e` left to right,
/// loss `m + ln Σ − z_t`.
fn rows_loss(z: &mut [f32], v: usize, targets: &[u32], losses: &mut [f32], grad: Option<f32>) {
    let mut stats = [(0.0f32, 0.0f32); ROW_GROUP];
    for ((zr, &t), st) in z.chunks_exact_mut(v).zip(targets).zip(&mut stats) {
        if t == IGNORE {
            continue;
        }
        let zt = zr[t as usize];
        let m = reduce::max(zr);
        super::wide::wide(
            #[inline(always)]
            || {
                for x in zr.iter_mut() {
                    *x = fastmath::exp(*x - m);
                }
            },
        );
        *st = (m, zt);
    }
    let mut rows: [&[f32]; ROW_GROUP] = [&[]; ROW_GROUP];
    let n = z.len() / v;
    for (r, zr) in rows.iter_mut().zip(z.chunks_exact(v)) {
        *r = zr;
    }
    let mut sums = [0.0f32; ROW_GROUP];
    reduce::sums(&rows[..n], &mut sums[..n]);
    for (((zr, &t), l), (&(m, zt), &sum)) in z
        .chunks_exact_mut(v)
        .zip(targets)
        .zip(losses)
        .zip(stats.iter().zip(&sums))
    {
        if t == IGNORE {
            *l = 0.0;
            if grad.is_some() {
                zr.fill(0.0);
            }
            continue;
        }
        *l = m + fastmath::ln(sum) - zt;
        if let Some(g) = grad {
            // softmax = exp(z − max) / Σ.
            let scale = g / sum;
            super::wide::wide(
                #[inline(always)]
                || {
                    for x in zr.iter_mut() {
                        *x *= scale;
                    }
                },
            );
            zr[t as usize] -= g;
        }
    }
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
        buf.par_chunks_mut(ROW_GROUP * v)
            .zip(tchunk.par_chunks(ROW_GROUP))
            .zip(losses[r0..r0 + n].par_chunks_mut(ROW_GROUP))
            .for_each(|((z, t), l)| rows_loss(z, v, t, l, None));
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
        buf.par_chunks_mut(ROW_GROUP * v)
            .zip(tchunk.par_chunks(ROW_GROUP))
            .zip(losses[r0..r0 + n].par_chunks_mut(ROW_GROUP))
            .for_each(|((z, t), l)| rows_loss(z, v, t, l, Some(g)));
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
