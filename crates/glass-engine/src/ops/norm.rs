//! RMSNorm (LLaMA, Amber, OLMo 2) and LayerNorm (CrystalCoder, GPT-NeoX; OLMo's without
//! weights), forward and backward.
//!
//! Row statistics are accumulated in f64 for accuracy; parameter gradients are reduced
//! per column over all rows in row order, so the result is thread-count independent.

use rayon::prelude::*;

use crate::config::NormKind;

/// Columns reduced together by one task in the parameter-gradient pass.
const COL_BLOCK: usize = 64;

/// `y = norm(x)·w (+ b)` for each row of width `c`; saves `mean` (LayerNorm) and `rstd`.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    kind: NormKind,
    eps: f32,
    x: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    c: usize,
) {
    y.par_chunks_mut(c)
        .zip(x.par_chunks(c))
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .for_each(|((yr, xr), (mu, rs))| {
            let (m, r) = row_stats(kind, eps, xr);
            *mu = m;
            *rs = r;
            match w {
                Some(w) => {
                    for j in 0..c {
                        let xhat = (xr[j] - m) * r;
                        yr[j] = xhat * w[j] + b.map_or(0.0, |b| b[j]);
                    }
                }
                // Non-parametric (OLMo): no scale, no shift.
                None => {
                    for j in 0..c {
                        yr[j] = (xr[j] - m) * r;
                    }
                }
            }
        });
}

/// `row = norm(row)·w` in place for each row of width `w.len()` (QK-norm over a slice of
/// every projected row).
pub fn forward_in_place(kind: NormKind, eps: f32, row: &mut [f32], w: &[f32]) {
    let (m, r) = row_stats(kind, eps, row);
    for (v, &wj) in row.iter_mut().zip(w) {
        *v = ((*v - m) * r) * wj;
    }
}

/// Mean (0 for RMSNorm) and reciprocal standard deviation of one row.
pub fn row_stats(kind: NormKind, eps: f32, xr: &[f32]) -> (f32, f32) {
    let n = xr.len() as f64;
    match kind {
        NormKind::RmsNorm => {
            let ms = xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n;
            (0.0, (1.0 / (ms + eps as f64).sqrt()) as f32)
        }
        NormKind::LayerNorm => {
            let mu = xr.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = xr
                .iter()
                .map(|&v| (v as f64 - mu) * (v as f64 - mu))
                .sum::<f64>()
                / n;
            (mu as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
        }
    }
}

/// Backward: adds the input gradient into `dx` and the parameter gradients into
/// `dw` (and `db`).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    kind: NormKind,
    x: &[f32],
    w: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    c: usize,
) {
    dx.par_chunks_mut(c)
        .zip(x.par_chunks(c).zip(dy.par_chunks(c)))
        .zip(mean.par_iter().zip(rstd.par_iter()))
        .for_each(|((dxr, (xr, dyr)), (&m, &r))| {
            // dxhat = dy·w; dx = r·(dxhat − mean(dxhat) − xhat·mean(dxhat·xhat)), the
            // mean(dxhat) term only for LayerNorm.
            let mut s_d = 0.0f64;
            let mut s_dx = 0.0f64;
            for j in 0..c {
                let dxhat = (dyr[j] * w[j]) as f64;
                let xhat = ((xr[j] - m) * r) as f64;
                s_d += dxhat;
                s_dx += dxhat * xhat;
            }
            let inv = 1.0 / c as f64;
            let mean_d = if kind == NormKind::LayerNorm {
                (s_d * inv) as f32
            } else {
                0.0
            };
            let mean_dx = (s_dx * inv) as f32;
            for j in 0..c {
                let dxhat = dyr[j] * w[j];
                let xhat = (xr[j] - m) * r;
                dxr[j] += r * (dxhat - mean_d - xhat * mean_dx);
            }
        });
    param_grads(x, mean, rstd, dy, dw, db, c);
}

/// `dw[j] += Σ_rows dy·xhat`, `db[j] += Σ_rows dy`, reduced per column block.
fn param_grads(
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    c: usize,
) {
    let rows = rstd.len();
    let mut db_blocks: Vec<Option<&mut [f32]>> = match db {
        Some(d) => d.chunks_mut(COL_BLOCK).map(Some).collect(),
        None => (0..c.div_ceil(COL_BLOCK)).map(|_| None).collect(),
    };
    dw.par_chunks_mut(COL_BLOCK)
        .zip(db_blocks.par_iter_mut())
        .enumerate()
        .for_each(|(blk, (dwb, dbb))| {
            let j0 = blk * COL_BLOCK;
            let width = dwb.len();
            let mut acc_w = [0.0f64; COL_BLOCK];
            let mut acc_b = [0.0f64; COL_BLOCK];
            for r in 0..rows {
                let (m, s) = (mean[r], rstd[r]);
                let xr = &x[r * c + j0..r * c + j0 + width];
                let dyr = &dy[r * c + j0..r * c + j0 + width];
                for j in 0..width {
                    acc_w[j] += (dyr[j] * ((xr[j] - m) * s)) as f64;
                    acc_b[j] += dyr[j] as f64;
                }
            }
            for j in 0..width {
                dwb[j] += acc_w[j] as f32;
            }
            if let Some(dbb) = dbb.as_deref_mut() {
                for j in 0..width {
                    dbb[j] += acc_b[j] as f32;
                }
            }
        });
}
