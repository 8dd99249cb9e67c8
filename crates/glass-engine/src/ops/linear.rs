//! Linear layers in the Hugging Face layout (`W` is `[out, in]`, row-major), forward and
//! backward, as two thin wrappers over the one GEMM entry point.

use crate::gemm::{matmul, matmul_packed, Mat, PackedB, Threads};

/// `y[n, out] = x[n, in] · Wᵀ`, or `y += …` when `accumulate` (residual adds).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    n: usize,
    d_in: usize,
    d_out: usize,
    accumulate: bool,
) {
    matmul(
        Threads::Pool,
        n,
        d_out,
        d_in,
        Mat::n(x, d_in),
        Mat::t(w, d_in),
        y,
        d_out,
        1.0,
        accumulate,
    );
}

/// [`forward`] with `Wᵀ` packed beforehand when `packed` is given (same bits).
#[allow(clippy::too_many_arguments)]
pub fn forward_with(
    x: &[f32],
    w: &[f32],
    packed: Option<&PackedB>,
    y: &mut [f32],
    n: usize,
    d_in: usize,
    d_out: usize,
    accumulate: bool,
) {
    match packed {
        Some(pb) => {
            debug_assert_eq!((pb.rows(), pb.cols()), (d_in, d_out));
            matmul_packed(
                Threads::Pool,
                n,
                Mat::n(x, d_in),
                pb,
                y,
                d_out,
                1.0,
                accumulate,
            )
        }
        None => forward(x, w, y, n, d_in, d_out, accumulate),
    }
}

/// `dx[n, in] = dy · W` (overwritten) and `dW[out, in] += dyᵀ · x` (accumulated over
/// micro-batches).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
    n: usize,
    d_in: usize,
    d_out: usize,
) {
    matmul(
        Threads::Pool,
        n,
        d_in,
        d_out,
        Mat::n(dy, d_out),
        Mat::n(w, d_in),
        dx,
        d_in,
        1.0,
        false,
    );
    matmul(
        Threads::Pool,
        d_out,
        d_in,
        n,
        Mat::t(dy, d_out),
        Mat::n(x, d_in),
        dw,
        d_in,
        1.0,
        true,
    );
}

/// Columns reduced together by one task in [`bias_forward`] / [`bias_backward`].
const COL_BLOCK: usize = 64;

/// `y[r, j] += b[j]` for every row of width `b.len()`.
pub fn bias_forward(y: &mut [f32], b: &[f32]) {
    use rayon::prelude::*;
    y.par_chunks_mut(b.len()).for_each(|yr| {
        for (v, &bj) in yr.iter_mut().zip(b) {
            *v += bj;
        }
    });
}

/// `db[j] += Σ_rows dy[r, j]`, summed in f64 in row order per column block, so the
/// result does not depend on the thread count.
pub fn bias_backward(dy: &[f32], db: &mut [f32]) {
    use rayon::prelude::*;
    let c = db.len();
    let rows = dy.len() / c;
    db.par_chunks_mut(COL_BLOCK)
        .enumerate()
        .for_each(|(blk, dbb)| {
            let j0 = blk * COL_BLOCK;
            let mut acc = [0.0f64; COL_BLOCK];
            for r in 0..rows {
                let dyr = &dy[r * c + j0..r * c + j0 + dbb.len()];
                for (a, &v) in acc.iter_mut().zip(dyr) {
                    *a += v as f64;
                }
            }
            for (d, a) in dbb.iter_mut().zip(acc) {
                *d += a as f32;
            }
        });
}
