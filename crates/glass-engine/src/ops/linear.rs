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
