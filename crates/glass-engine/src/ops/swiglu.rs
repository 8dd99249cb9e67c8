//! SwiGLU activation `h = silu(gate) · up`, fused over the `[gate | up]` GEMM output.

use rayon::prelude::*;

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + super::fastmath::exp(-x))
}

/// `gu` rows are `[gate (f) | up (f)]`; writes `h` rows of width `f`.
pub fn forward(gu: &[f32], h: &mut [f32], f: usize) {
    h.par_chunks_mut(f)
        .zip(gu.par_chunks(2 * f))
        .for_each(|(hr, gur)| {
            let (g, u) = gur.split_at(f);
            super::wide::wide(
                #[inline(always)]
                || {
                    for ((h, &gj), &uj) in hr.iter_mut().zip(g).zip(u) {
                        *h = gj * sigmoid(gj) * uj;
                    }
                },
            );
        });
}

/// Writes `dgu = [dgate | dup]` from `dh`.
pub fn backward(gu: &[f32], dh: &[f32], dgu: &mut [f32], f: usize) {
    dgu.par_chunks_mut(2 * f)
        .zip(gu.par_chunks(2 * f).zip(dh.par_chunks(f)))
        .for_each(|(dr, (gur, dhr))| {
            let (g, u) = gur.split_at(f);
            let (dg, du) = dr.split_at_mut(f);
            super::wide::wide(
                #[inline(always)]
                || {
                    for j in 0..f {
                        let s = sigmoid(g[j]);
                        let silu = g[j] * s;
                        du[j] = dhr[j] * silu;
                        dg[j] = dhr[j] * u[j] * s * (1.0 + g[j] * (1.0 - s));
                    }
                },
            );
        });
}
