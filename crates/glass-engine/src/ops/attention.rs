//! Causal multi-head / grouped-query attention, memory-efficient.
//!
//! Queries are processed in blocks of [`Q_BLOCK`] rows: the forward pass keeps only the
//! row log-sum-exp, and the backward pass recomputes each block's probabilities, so no
//! more than `Q_BLOCK × seq_len` scores per head ever exist.
//!
//! Work is split over (sequence, query head) in both directions. Each task writes its own
//! contiguous `[rows, hd]` block of a head-major scratch buffer (disjoint slices handed
//! out by `split_at_mut`/`chunks_mut`, so no two tasks ever hold overlapping `&mut`), and
//! a second row-parallel pass moves the blocks into the row-major activations. In the
//! backward pass every query head produces its own key/value gradient; the heads of a
//! group are then summed in ascending head order, so every sum has the same order for any
//! thread count, and MQA at micro-batch 1 still has one task per query head.
//!
//! `qkv` rows are `[q (H·hd) | k (KV·hd) | v (KV·hd)]`, already rotated.

use rayon::prelude::*;

use super::{fastmath, reduce};
use crate::gemm::{matmul, matmul_packed_part, Mat, PackedB, Threads};

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

/// Per-task scratch of [`head_forward`]: one block's scores, and the keys and values
/// packed once for all of a head's query blocks.
#[derive(Debug)]
pub struct HeadScratch {
    scores: Vec<f32>,
    keys: PackedB,
    values: PackedB,
}

impl Default for HeadScratch {
    fn default() -> Self {
        HeadScratch {
            scores: Vec::new(),
            keys: PackedB::empty(),
            values: PackedB::empty(),
        }
    }
}

/// One head over `n_q` queries at positions `pos0..pos0+n_q` against keys
/// `0..pos0+n_q`: writes the outputs and each query's log-sum-exp.
///
/// With more than one block of queries, the keys (as `Kᵀ`) and values are packed once and
/// every block multiplies by its leading part: each block would otherwise pack them
/// again, which cost about as much as the arithmetic (same bits either way, by the GEMM
/// contract).
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
    scratch: &mut HeadScratch,
) {
    let HeadScratch {
        scores,
        keys,
        values,
    } = scratch;
    let packed = n_q > Q_BLOCK;
    if packed {
        keys.repack(hd, pos0 + n_q, k);
        values.repack(pos0 + n_q, hd, v);
    }
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
        if packed {
            matmul_packed_part(Threads::Single, bq, nk, hd, qb, keys, s, nk, scale, false);
        } else {
            matmul(Threads::Single, bq, nk, hd, qb, k, s, nk, scale, false);
        }
        causal_softmax(s, nk, pos0 + i0 + 1, &mut lse[i0..i0 + bq]);
        let (p, o) = (Mat::n(s, nk), &mut out[i0 * out_ld..]);
        if packed {
            matmul_packed_part(
                Threads::Single,
                bq,
                hd,
                nk,
                p,
                values,
                o,
                out_ld,
                1.0,
                false,
            );
        } else {
            matmul(Threads::Single, bq, hd, nk, p, v, o, out_ld, 1.0, false);
        }
        i0 += bq;
    }
}

/// Row `ii` of the `[rows, nk]` scores `s` keeps keys `0..first_valid + ii` (causal):
/// each row becomes its softmax (zeros past the last valid key) and `lse[ii]` its
/// log-sum-exp. The one normalisation of attention scores (forward pass and
/// [`head_probs`]).
fn causal_softmax(s: &mut [f32], nk: usize, first_valid: usize, lse: &mut [f32]) {
    // Groups of rows: each row's exponentials in one vectorised pass, then the group's
    // sums side by side (each row still summed left to right, `reduce::sums`).
    const GROUP: usize = 8;
    for (g, rows) in s.chunks_mut(GROUP * nk).enumerate() {
        let first = first_valid + g * GROUP;
        let mut maxes = [0.0f32; GROUP];
        for (ii, row) in rows.chunks_exact_mut(nk).enumerate() {
            let valid = &mut row[..first + ii];
            let m = reduce::max(valid);
            super::wide::wide(
                #[inline(always)]
                || {
                    for x in valid.iter_mut() {
                        *x = fastmath::exp(*x - m);
                    }
                },
            );
            maxes[ii] = m;
        }
        let n = rows.len() / nk;
        let mut valid: [&[f32]; GROUP] = [&[]; GROUP];
        for (ii, (v, row)) in valid.iter_mut().zip(rows.chunks_exact(nk)).enumerate() {
            *v = &row[..first + ii];
        }
        let mut sums = [0.0f32; GROUP];
        reduce::sums(&valid[..n], &mut sums[..n]);
        for (ii, row) in rows.chunks_exact_mut(nk).enumerate() {
            let (valid, past) = row.split_at_mut(first + ii);
            let inv = 1.0 / sums[ii];
            super::wide::wide(
                #[inline(always)]
                || {
                    for x in valid.iter_mut() {
                        *x *= inv;
                    }
                },
            );
            past.fill(0.0);
            lse[g * GROUP + ii] = maxes[ii] + fastmath::ln(sums[ii]);
        }
    }
}

/// The attention probabilities of query head `h` over one sequence of `n` rotated `qkv`
/// rows (`[q | k | v]`, width `(heads + 2·kv_heads)·hd`), computed exactly as the
/// forward pass computes them: `[n, n]`, row `i` over keys `0..=i`, zeros above the
/// diagonal. For inspection (`glass inspect`); the forward pass never stores them.
#[allow(clippy::too_many_arguments)]
pub fn head_probs(
    heads: usize,
    kv_heads: usize,
    hd: usize,
    scale: f32,
    qkv: &[f32],
    n: usize,
    h: usize,
) -> Vec<f32> {
    let w = (heads + 2 * kv_heads) * hd;
    let g = h / (heads / kv_heads);
    let q = Mat::n(&qkv[h * hd..], w);
    let k = Mat::t(&qkv[(heads + g) * hd..], w);
    let mut out = vec![0.0f32; n * n];
    let mut lse = vec![0.0f32; Q_BLOCK];
    let mut scores = Vec::new();
    let mut i0 = 0;
    while i0 < n {
        let bq = Q_BLOCK.min(n - i0);
        let nk = i0 + bq;
        scores.resize(bq * nk, 0.0);
        let s = &mut scores[..bq * nk];
        let qb = Mat {
            data: &q.data[i0 * q.ld..],
            ..q
        };
        matmul(Threads::Single, bq, nk, hd, qb, k, s, nk, scale, false);
        causal_softmax(s, nk, i0 + 1, &mut lse[..bq]);
        for (ii, row) in s.chunks_exact(nk).enumerate() {
            out[(i0 + ii) * n..(i0 + ii) * n + nk].copy_from_slice(row);
        }
        i0 += bq;
    }
    out
}

/// Where one sequence of an attention call finds its keys and values.
///
/// The sequences of a call are stacked: the first owns `qkv` rows `0..rows`, the next the
/// following `rows`, and so on. Its queries sit at positions `pos0..pos0 + rows`; keys
/// and values of positions `0..pos0 + rows` are rows of `k` / `v` (leading dimension
/// `ld`, KV head `g` at columns `g·hd..`), unless [`KeyLayout::Columns`] says the keys
/// are stored transposed. Training passes the `qkv` buffer itself (`pos0 = 0`); KV-cache
/// decoding passes the cache.
#[derive(Debug, Clone, Copy)]
pub struct SeqKv<'a> {
    /// Query rows of this sequence.
    pub rows: usize,
    /// Position of its first query.
    pub pos0: usize,
    /// Keys, laid out as `keys` says.
    pub k: &'a [f32],
    /// How `k` is stored.
    pub keys: KeyLayout,
    /// Values, `[pos0 + rows, ld]`.
    pub v: &'a [f32],
    /// Leading dimension of `k` and `v`.
    pub ld: usize,
}

/// How a sequence's keys are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLayout {
    /// One row per position (`[pos0 + rows, ld]`, the [`SeqKv`]'s `ld`), like the values.
    Rows,
    /// Transposed: row `c` holds key dimension `c` of every position (KV head `g` owns
    /// rows `g·hd..(g+1)·hd`), with this leading dimension. Decoding keeps its cache so:
    /// a one-row query product then reads the keys in place instead of packing them
    /// (same bits, by the GEMM contract).
    Columns(usize),
}

/// Splits `buf` into consecutive pieces of the given lengths (disjoint `&mut`).
fn split_lengths(mut buf: &mut [f32], lens: impl Iterator<Item = usize>) -> Vec<&mut [f32]> {
    let mut out = Vec::new();
    for len in lens {
        let (mine, rest) = std::mem::take(&mut buf).split_at_mut(len);
        out.push(mine);
        buf = rest;
    }
    out
}

/// Causal attention of stacked sequences.
///
/// Writes `att` (`[rows, H·hd]`, row-major) and the log-sum-exp of every query, stored
/// head-major per sequence (sequence `i` with first row `r0`: head `h`, query `r` at
/// `r0·H + h·rows_i + r`; for a uniform batch that is `(b·H + h)·T + t`). `hm` is scratch
/// of at least `rows · H · hd` elements.
#[allow(clippy::too_many_arguments)]
pub fn forward_seqs(
    heads: usize,
    kv_heads: usize,
    hd: usize,
    scale: f32,
    qkv: &[f32],
    seqs: &[SeqKv<'_>],
    att: &mut [f32],
    lse: &mut [f32],
    hm: &mut [f32],
) {
    let w = (heads + 2 * kv_heads) * hd;
    let ad = heads * hd;
    let group = heads / kv_heads;
    let n: usize = seqs.iter().map(|s| s.rows).sum();
    let mut row0 = Vec::with_capacity(seqs.len() + 1);
    row0.push(0usize);
    for s in seqs {
        row0.push(row0.last().copied().unwrap_or(0) + s.rows);
    }
    let job_lens = || {
        seqs.iter()
            .flat_map(move |s| std::iter::repeat_n(s.rows, heads))
    };
    let outs = split_lengths(&mut hm[..n * ad], job_lens().map(|r| r * hd));
    let lses = split_lengths(&mut lse[..n * heads], job_lens());
    outs.into_par_iter().zip(lses).enumerate().for_each_init(
        HeadScratch::default,
        |scratch, (job, (out, lse))| {
            let (i, h) = (job / heads, job % heads);
            let s = seqs[i];
            if s.rows == 0 {
                return;
            }
            let g = h / group;
            head_forward(
                Mat::n(&qkv[row0[i] * w + h * hd..], w),
                match s.keys {
                    KeyLayout::Rows => Mat::t(&s.k[g * hd..], s.ld),
                    KeyLayout::Columns(ld) => Mat::n(&s.k[g * hd * ld..], ld),
                },
                Mat::n(&s.v[g * hd..], s.ld),
                out,
                hd,
                lse,
                s.rows,
                s.pos0,
                hd,
                scale,
                scratch,
            );
        },
    );
    // Head-major blocks → row-major rows.
    let hm = &hm[..n * ad];
    att[..n * ad]
        .par_chunks_mut(ad)
        .enumerate()
        .for_each(|(r, row)| {
            let i = row0.partition_point(|&x| x <= r) - 1;
            let (r0, rows) = (row0[i], seqs[i].rows);
            for (h, dst) in row.chunks_exact_mut(hd).enumerate() {
                let src = (r0 * heads + h * rows + (r - r0)) * hd;
                dst.copy_from_slice(&hm[src..src + hd]);
            }
        });
}

/// Training forward: `att[b·T + t, h·hd..]` and `lse[(b·H + h)·T + t]`; `hm` is scratch
/// of `att.len()` elements.
pub fn forward(dims: AttnDims, qkv: &[f32], att: &mut [f32], lse: &mut [f32], hm: &mut [f32]) {
    let (t, w) = (dims.seq, dims.qkv_width());
    let (kc, vc) = (dims.heads * dims.hd, (dims.heads + dims.kv_heads) * dims.hd);
    let seqs: Vec<SeqKv<'_>> = (0..dims.batch)
        .map(|b| SeqKv {
            rows: t,
            pos0: 0,
            k: &qkv[b * t * w + kc..],
            keys: KeyLayout::Rows,
            v: &qkv[b * t * w + vc..],
            ld: w,
        })
        .collect();
    forward_seqs(
        dims.heads,
        dims.kv_heads,
        dims.hd,
        dims.scale,
        qkv,
        &seqs,
        att,
        lse,
        hm,
    );
}

/// Scratch for [`backward`]: the per-query-head key and value gradients, head-major,
/// `att.len()` elements each.
#[derive(Debug, Default)]
pub struct BackwardScratch {
    dk: Vec<f32>,
    dv: Vec<f32>,
}

impl BackwardScratch {
    /// Sizes both buffers to `len` elements (keeps the allocation when shrinking).
    pub fn resize(&mut self, len: usize) {
        for b in [&mut self.dk, &mut self.dv] {
            b.resize(len, 0.0);
        }
    }
}

/// Training backward: overwrites `dqkv` with the gradients of q, k and v. `dq` is
/// head-major scratch of at least `att.len()` elements (the forward pass's `hm` buffer,
/// free again by the time the backward pass runs).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dims: AttnDims,
    qkv: &[f32],
    att: &[f32],
    lse: &[f32],
    datt: &[f32],
    dqkv: &mut [f32],
    dq: &mut [f32],
    scratch: &mut BackwardScratch,
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
    let group = dims.group();
    let len = batch * t * att_ld;
    scratch.resize(len);
    let BackwardScratch { dk, dv } = scratch;
    // Task (b, h): dQ of head h, and head h's share of dK and dV of its KV head.
    dq[..len]
        .par_chunks_mut(t * hd)
        .zip(dk[..len].par_chunks_mut(t * hd))
        .zip(dv[..len].par_chunks_mut(t * hd))
        .enumerate()
        .for_each_init(
            || {
                let packed: [PackedB; 3] = std::array::from_fn(|_| PackedB::empty());
                (Vec::new(), Vec::new(), packed)
            },
            |(p_buf, dp_buf, [kt, vt, kn]), (idx, ((dq, dk), dv))| {
                let (b, h) = (idx / nh, idx % nh);
                let g = h / group;
                let base = b * t * w;
                let (qc, kc, vc) = (h * hd, (nh + g) * hd, (nh + nkv + g) * hd);
                dk.fill(0.0);
                dv.fill(0.0);
                let kmat = &qkv[base + kc..];
                let vmat = &qkv[base + vc..];
                let lse_bh = &lse[(b * nh + h) * t..(b * nh + h + 1) * t];
                // Kᵀ, Vᵀ and K packed once for all query blocks (as in `head_forward`).
                let packed = t > Q_BLOCK;
                if packed {
                    kt.repack(hd, t, Mat::t(kmat, w));
                    vt.repack(hd, t, Mat::t(vmat, w));
                    kn.repack(t, hd, Mat::n(kmat, w));
                }
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
                    // One product, from the operands packed once or packed here.
                    let prod = |m: usize,
                                n: usize,
                                k: usize,
                                a: Mat<'_>,
                                (bp, b): (&PackedB, Mat<'_>),
                                c: &mut [f32],
                                ldc: usize,
                                alpha: f32| {
                        if packed {
                            matmul_packed_part(
                                Threads::Single,
                                m,
                                n,
                                k,
                                a,
                                bp,
                                c,
                                ldc,
                                alpha,
                                false,
                            );
                        } else {
                            matmul(Threads::Single, m, n, k, a, b, c, ldc, alpha, false);
                        }
                    };
                    // P = exp(scale·Q Kᵀ − lse), causal.
                    let q_a = Mat::n(qblk, w);
                    prod(bq, nk, hd, q_a, (kt, Mat::t(kmat, w)), p, nk, scale);
                    // dP = dO Vᵀ.
                    let do_a = Mat::n(doblk, att_ld);
                    prod(bq, nk, hd, do_a, (vt, Mat::t(vmat, w)), dp, nk, 1.0);
                    super::wide::wide(
                        #[inline(always)]
                        || {
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
                        },
                    );
                    // dQ = dS K ; dK_h += dSᵀ Q ; dV_h += Pᵀ dO.
                    let ds_a = Mat::n(dp, nk);
                    prod(
                        bq,
                        hd,
                        nk,
                        ds_a,
                        (kn, Mat::n(kmat, w)),
                        &mut dq[i0 * hd..],
                        hd,
                        1.0,
                    );
                    matmul(
                        Threads::Single,
                        nk,
                        hd,
                        bq,
                        Mat::t(dp, nk),
                        Mat::n(qblk, w),
                        dk,
                        hd,
                        1.0,
                        true,
                    );
                    matmul(
                        Threads::Single,
                        nk,
                        hd,
                        bq,
                        Mat::t(p, nk),
                        Mat::n(doblk, att_ld),
                        dv,
                        hd,
                        1.0,
                        true,
                    );
                    i0 += bq;
                }
            },
        );
    // Gather into rows; a KV head's gradient is the sum of its query heads' shares in
    // ascending head order.
    let (dq, dk, dv) = (&dq[..len], &dk[..len], &dv[..len]);
    dqkv[..batch * t * w]
        .par_chunks_mut(w)
        .enumerate()
        .for_each(|(r, row)| {
            let (b, tt) = (r / t, r % t);
            let at = |h: usize| ((b * nh + h) * t + tt) * hd;
            let (q, kv) = row.split_at_mut(nh * hd);
            let (k, v) = kv.split_at_mut(nkv * hd);
            for (h, dst) in q.chunks_exact_mut(hd).enumerate() {
                dst.copy_from_slice(&dq[at(h)..at(h) + hd]);
            }
            for (g, (kd, vd)) in k
                .chunks_exact_mut(hd)
                .zip(v.chunks_exact_mut(hd))
                .enumerate()
            {
                let h0 = g * group;
                kd.copy_from_slice(&dk[at(h0)..at(h0) + hd]);
                vd.copy_from_slice(&dv[at(h0)..at(h0) + hd]);
                for h in h0 + 1..h0 + group {
                    for (x, y) in kd.iter_mut().zip(&dk[at(h)..at(h) + hd]) {
                        *x += y;
                    }
                    for (x, y) in vd.iter_mut().zip(&dv[at(h)..at(h) + hd]) {
                        *x += y;
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, salt: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ salt) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// Direct softmax attention of one head: query rows at positions pos0.., keys 0..=pos.
    fn naive(q: &[f32], k: &[f32], v: &[f32], pos0: usize, hd: usize, scale: f32) -> Vec<f32> {
        let mut out = Vec::new();
        for (r, qr) in q.chunks(hd).enumerate() {
            let n = pos0 + r + 1;
            let s: Vec<f32> = (0..n)
                .map(|j| scale * (0..hd).map(|x| qr[x] * k[j * hd + x]).sum::<f32>())
                .collect();
            let m = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let e: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f32 = e.iter().sum();
            for x in 0..hd {
                out.push((0..n).map(|j| e[j] / z * v[j * hd + x]).sum::<f32>());
            }
        }
        out
    }

    /// Stacked sequences with their own caches (positions after cached keys) give each
    /// head the direct softmax attention.
    #[test]
    fn stacked_sequences_match_direct_attention() {
        let (heads, kv_heads, hd) = (4, 2, 4);
        let w = (heads + 2 * kv_heads) * hd;
        let kvd = kv_heads * hd;
        let rows = [3usize, 0, 5];
        let pos0 = [2usize, 1, 0];
        let n: usize = rows.iter().sum();
        let qkv = data(n * w, 7);
        let caches: Vec<(Vec<f32>, Vec<f32>)> = (0..3)
            .map(|i| {
                let len = (pos0[i] + rows[i]) * kvd;
                (data(len, 11 + i as u32), data(len, 23 + i as u32))
            })
            .collect();
        let seqs: Vec<SeqKv<'_>> = (0..3)
            .map(|i| SeqKv {
                rows: rows[i],
                pos0: pos0[i],
                k: &caches[i].0,
                keys: KeyLayout::Rows,
                v: &caches[i].1,
                ld: kvd,
            })
            .collect();
        let mut att = vec![0.0; n * heads * hd];
        let mut lse = vec![0.0; n * heads];
        let mut hm = vec![0.0; n * heads * hd];
        forward_seqs(
            heads, kv_heads, hd, 0.5, &qkv, &seqs, &mut att, &mut lse, &mut hm,
        );
        let mut r0 = 0;
        for i in 0..3 {
            for h in 0..heads {
                let g = h / (heads / kv_heads);
                let col = |src: &[f32], ld: usize, off: usize, rows: usize| -> Vec<f32> {
                    (0..rows)
                        .flat_map(|r| src[r * ld + off..r * ld + off + hd].to_vec())
                        .collect()
                };
                let q = col(&qkv[r0 * w..], w, h * hd, rows[i]);
                let len = pos0[i] + rows[i];
                let k = col(&caches[i].0, kvd, g * hd, len);
                let v = col(&caches[i].1, kvd, g * hd, len);
                let want = naive(&q, &k, &v, pos0[i], hd, 0.5);
                let got = col(&att[r0 * heads * hd..], heads * hd, h * hd, rows[i]);
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "seq {i} head {h}: {a} vs {b}");
                }
            }
            r0 += rows[i];
        }
        // The same keys stored transposed (decoding's cache layout, with spare columns)
        // give the same bits: the GEMM contract does not depend on the operand layout.
        let ldt: Vec<usize> = (0..3).map(|i| pos0[i] + rows[i] + 3).collect();
        let kt: Vec<Vec<f32>> = (0..3)
            .map(|i| {
                let mut t = vec![f32::NAN; kvd * ldt[i]];
                for pos in 0..pos0[i] + rows[i] {
                    for c in 0..kvd {
                        t[c * ldt[i] + pos] = caches[i].0[pos * kvd + c];
                    }
                }
                t
            })
            .collect();
        let seqs_t: Vec<SeqKv<'_>> = (0..3)
            .map(|i| SeqKv {
                k: &kt[i],
                keys: KeyLayout::Columns(ldt[i]),
                ..seqs[i]
            })
            .collect();
        let (mut att_t, mut lse_t) = (vec![0.0; att.len()], vec![0.0; lse.len()]);
        forward_seqs(
            heads, kv_heads, hd, 0.5, &qkv, &seqs_t, &mut att_t, &mut lse_t, &mut hm,
        );
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&att_t), bits(&att));
        assert_eq!(bits(&lse_t), bits(&lse));
    }

    /// Grouped-query backward: a KV head's gradient is the sum of its query heads' shares,
    /// i.e. exactly what MHA gives for the same keys duplicated per query head, summed.
    #[test]
    fn grouped_backward_sums_the_heads_of_a_group() {
        let (batch, t, hd) = (2, 70, 4);
        let gqa = AttnDims {
            batch,
            seq: t,
            heads: 2,
            kv_heads: 1,
            hd,
            scale: 0.3,
        };
        let mha = AttnDims { kv_heads: 2, ..gqa };
        let (wg, wm) = (gqa.qkv_width(), mha.qkv_width());
        let n = batch * t;
        let qkv_g = data(n * wg, 5);
        // MHA copy: q heads as in GQA, both KV heads equal to GQA's single KV head.
        let mut qkv_m = vec![0.0; n * wm];
        for r in 0..n {
            let (src, dst) = (
                &qkv_g[r * wg..(r + 1) * wg],
                &mut qkv_m[r * wm..(r + 1) * wm],
            );
            dst[..2 * hd].copy_from_slice(&src[..2 * hd]);
            for j in 0..2 {
                dst[(2 + j) * hd..(3 + j) * hd].copy_from_slice(&src[2 * hd..3 * hd]);
                dst[(4 + j) * hd..(5 + j) * hd].copy_from_slice(&src[3 * hd..4 * hd]);
            }
        }
        let ad = 2 * hd;
        let datt = data(n * ad, 9);
        let run = |dims: AttnDims, qkv: &[f32]| {
            let mut att = vec![0.0; n * ad];
            let mut lse = vec![0.0; n * 2];
            let mut hm = vec![0.0; n * ad];
            forward(dims, qkv, &mut att, &mut lse, &mut hm);
            let mut dqkv = vec![f32::NAN; n * dims.qkv_width()];
            let mut scratch = BackwardScratch::default();
            backward(
                dims,
                qkv,
                &att,
                &lse,
                &datt,
                &mut dqkv,
                &mut hm,
                &mut scratch,
            );
            (att, dqkv)
        };
        let (att_g, d_g) = run(gqa, &qkv_g);
        let (att_m, d_m) = run(mha, &qkv_m);
        assert_eq!(att_g, att_m);
        for r in 0..n {
            let (g, m) = (&d_g[r * wg..(r + 1) * wg], &d_m[r * wm..(r + 1) * wm]);
            assert_eq!(&g[..2 * hd], &m[..2 * hd], "dq row {r}");
            for x in 0..hd {
                assert_eq!(g[2 * hd + x], m[2 * hd + x] + m[3 * hd + x], "dk row {r}");
                assert_eq!(g[3 * hd + x], m[4 * hd + x] + m[5 * hd + x], "dv row {r}");
            }
        }
    }
}
