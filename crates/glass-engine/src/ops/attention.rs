//! Causal multi-head / grouped-query attention, memory-efficient.
//!
//! Queries are processed in blocks of [`Q_BLOCK`] rows: the forward pass keeps only the
//! row log-sum-exp, and the backward pass recomputes each block's probabilities, so no
//! more than `Q_BLOCK × seq_len` scores per head ever exist. Work is split over
//! (sequence, head) in the forward and (sequence, kv head) in the backward, so each task
//! owns the rows it writes and every sum keeps the same order for any thread count.
//!
//! `qkv` rows are `[q (H·hd) | k (KV·hd) | v (KV·hd)]`, already rotated.

use rayon::prelude::*;

use super::fastmath;
use crate::gemm::{matmul, Mat, Threads};
use crate::parallel::SharedMut;

/// Query rows per block.
pub const Q_BLOCK: usize = 64;

/// Shapes shared by the attention kernels.
#[derive(Debug, Clone, Copy)]
pub struct AttnDims {
    /// Sequences in the micro-batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Dimensions per head.
    pub hd: usize,
    /// Score multiplier.
    pub scale: f32,
}

impl AttnDims {
    /// The attention shapes of `cfg` for a micro-batch of `batch × seq` tokens.
    pub fn new(cfg: &crate::ModelConfig, batch: usize, seq: usize) -> Self {
        AttnDims {
            batch,
            seq,
            heads: cfg.n_heads,
            kv_heads: cfg.n_kv_heads,
            hd: cfg.head_dim(),
            scale: cfg.attention_scale(),
        }
    }

    /// Width of one `qkv` row.
    pub fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.hd
    }
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// One head over `n_q` queries at positions `pos0..pos0+n_q` against keys
/// `0..pos0+n_q`: writes the outputs and each query's log-sum-exp.
///
/// Shared by training (pos0 = 0) and KV-cache decoding (pos0 = cached length).
#[allow(clippy::too_many_arguments)]
pub fn head_forward(
    q: Mat<'_>,
    k: Mat<'_>,
    v: Mat<'_>,
    out: &mut [f32],
    out_ld: usize,
    lse: &mut [f32],
    n_q: usize,
    pos0: usize,
    hd: usize,
    scale: f32,
    scores: &mut Vec<f32>,
) {
    let mut i0 = 0;
    while i0 < n_q {
        let bq = Q_BLOCK.min(n_q - i0);
        let nk = pos0 + i0 + bq;
        scores.resize(bq * nk, 0.0);
        let s = &mut scores[..bq * nk];
        let qb = Mat {
            data: &q.data[i0 * q.ld..],
            ..q
        };
        matmul(Threads::Single, bq, nk, hd, qb, k, s, nk, scale, false);
        for (ii, row) in s.chunks_exact_mut(nk).enumerate() {
            let valid = pos0 + i0 + ii + 1;
            let m = row[..valid]
                .iter()
                .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            // Exponentiate in one pass (vectorised), sum in a second (fixed order).
            for x in &mut row[..valid] {
                *x = fastmath::exp(*x - m);
            }
            let sum: f32 = row[..valid].iter().sum();
            let inv = 1.0 / sum;
            for x in &mut row[..valid] {
                *x *= inv;
            }
            row[valid..].fill(0.0);
            lse[i0 + ii] = m + fastmath::ln(sum);
        }
        matmul(
            Threads::Single,
            bq,
            hd,
            nk,
            Mat::n(s, nk),
            v,
            &mut out[i0 * out_ld..],
            out_ld,
            1.0,
            false,
        );
        i0 += bq;
    }
}

/// Training forward: `att[b·T + t, h·hd..]` and `lse[(b·H + h)·T + t]`.
pub fn forward(dims: AttnDims, qkv: &[f32], att: &mut [f32], lse: &mut [f32]) {
    let AttnDims {
        seq: t,
        heads: nh,
        kv_heads: nkv,
        hd,
        ..
    } = dims;
    let w = dims.qkv_width();
    let att_ld = nh * hd;
    let att_ptr = SharedMut::new(att);
    lse.par_chunks_mut(t)
        .enumerate()
        .for_each_init(Vec::new, |scores, (idx, lse_bh)| {
            let (b, h) = (idx / nh, idx % nh);
            let g = h / dims.group();
            let base = b * t * w;
            let q = Mat::n(&qkv[base + h * hd..], w);
            let k = Mat::t(&qkv[base + (nh + g) * hd..], w);
            let v = Mat::n(&qkv[base + (nh + nkv + g) * hd..], w);
            // SAFETY: task (b, h) writes only rows b·T.. and columns h·hd..(h+1)·hd of `att`.
            let att_all = unsafe { att_ptr.slice() };
            let out = &mut att_all[b * t * att_ld + h * hd..];
            head_forward(q, k, v, out, att_ld, lse_bh, t, 0, hd, dims.scale, scores);
        });
}

/// Training backward: overwrites `dqkv` with the gradients of q, k and v.
pub fn backward(
    dims: AttnDims,
    qkv: &[f32],
    att: &[f32],
    lse: &[f32],
    datt: &[f32],
    dqkv: &mut [f32],
) {
    let AttnDims {
        batch,
        seq: t,
        heads: nh,
        kv_heads: nkv,
        hd,
        scale,
    } = dims;
    let w = dims.qkv_width();
    let att_ld = nh * hd;
    let dptr = SharedMut::new(dqkv);
    (0..batch * nkv).into_par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |(p_buf, dp_buf), idx| {
            let (b, g) = (idx / nkv, idx % nkv);
            let base = b * t * w;
            // SAFETY: task (b, g) writes rows b·T..(b+1)·T, columns of q heads in group g
            // and of kv head g only.
            let dall = unsafe { dptr.slice() };
            let (kc, vc) = ((nh + g) * hd, (nh + nkv + g) * hd);
            for r in 0..t {
                dall[base + r * w + kc..base + r * w + kc + hd].fill(0.0);
                dall[base + r * w + vc..base + r * w + vc + hd].fill(0.0);
            }
            let kmat = &qkv[base + kc..];
            let vmat = &qkv[base + vc..];
            for h in g * dims.group()..(g + 1) * dims.group() {
                let qc = h * hd;
                let lse_bh = &lse[(b * nh + h) * t..(b * nh + h + 1) * t];
                let mut i0 = 0;
                while i0 < t {
                    let bq = Q_BLOCK.min(t - i0);
                    let nk = i0 + bq;
                    p_buf.resize(bq * nk, 0.0);
                    dp_buf.resize(bq * nk, 0.0);
                    let p = &mut p_buf[..bq * nk];
                    let dp = &mut dp_buf[..bq * nk];
                    let qblk = &qkv[base + i0 * w + qc..];
                    let oblk = &att[(b * t + i0) * att_ld + qc..];
                    let doblk = &datt[(b * t + i0) * att_ld + qc..];
                    // P = exp(scale·Q Kᵀ − lse), causal.
                    matmul(
                        Threads::Single,
                        bq,
                        nk,
                        hd,
                        Mat::n(qblk, w),
                        Mat::t(kmat, w),
                        p,
                        nk,
                        scale,
                        false,
                    );
                    // dP = dO Vᵀ.
                    matmul(
                        Threads::Single,
                        bq,
                        nk,
                        hd,
                        Mat::n(doblk, att_ld),
                        Mat::t(vmat, w),
                        dp,
                        nk,
                        1.0,
                        false,
                    );
                    for ii in 0..bq {
                        let valid = i0 + ii + 1;
                        let prow = &mut p[ii * nk..(ii + 1) * nk];
                        let dprow = &mut dp[ii * nk..(ii + 1) * nk];
                        let (o, d_o) = (
                            &oblk[ii * att_ld..ii * att_ld + hd],
                            &doblk[ii * att_ld..ii * att_ld + hd],
                        );
                        // D = rowsum(dO ∘ O) = Σ_j P·dP.
                        let dsum: f32 = o.iter().zip(d_o).map(|(a, b)| a * b).sum();
                        let l = lse_bh[i0 + ii];
                        for j in 0..valid {
                            let pj = fastmath::exp(prow[j] - l);
                            prow[j] = pj;
                            dprow[j] = scale * pj * (dprow[j] - dsum);
                        }
                        prow[valid..].fill(0.0);
                        dprow[valid..].fill(0.0);
                    }
                    // dQ = dS K ; dK += dSᵀ Q ; dV += Pᵀ dO.
                    let dq = &mut dall[base + i0 * w + qc..];
                    matmul(
                        Threads::Single,
                        bq,
                        hd,
                        nk,
                        Mat::n(dp, nk),
                        Mat::n(kmat, w),
                        dq,
                        w,
                        1.0,
                        false,
                    );
                    let dk = &mut dall[base + kc..];
                    matmul(
                        Threads::Single,
                        nk,
                        hd,
                        bq,
                        Mat::t(dp, nk),
                        Mat::n(qblk, w),
                        dk,
                        w,
                        1.0,
                        true,
                    );
                    let dv = &mut dall[base + vc..];
                    matmul(
                        Threads::Single,
                        nk,
                        hd,
                        bq,
                        Mat::t(p, nk),
                        Mat::n(doblk, att_ld),
                        dv,
                        w,
                        1.0,
                        true,
                    );
                    i0 += bq;
                }
            }
        },
    );
}
