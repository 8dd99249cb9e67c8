//! Where a model's weights are read from: the flat f32 buffer of a trainable model, or
//! 16-bit (bf16 / f16) tensors left in their file for inference.
//!
//! A 7B model stored in bf16 is 13.5 GB; widened to f32 it would be 27 GB. For every
//! forward-only use (evaluation, generation, memorization, tracing) the matrices stay in
//! the caller's buffer — normally a read-only memory map of the checkpoint — and are
//! widened to f32 as the GEMM packs them ([`crate::gemm::HalfMat`]); embedding rows are
//! widened as they are looked up, and the norm vectors (a few thousand values) once, at
//! load. Widening is exact and every product keeps the GEMM contract, so a forward over
//! 16-bit weights has the bits of the f32 forward over the same weights widened.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use crate::gemm::{Half, HalfMat};
use crate::layout::{ParamGroup, ParamLayout};
use crate::EngineError;

/// Bytes a caller lends the model (a memory map, or a buffer in tests).
pub type WeightBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A model's weights in 16 bits, borrowed from a byte buffer (see the module docs).
pub struct HalfWeights {
    kind: Half,
    bytes: WeightBytes,
    /// Element range (in 16-bit units from the buffer's start) of each layout tensor,
    /// by the tensor's offset in the flat layout.
    mats: HashMap<usize, Range<usize>>,
    /// Norm weights and biases widened to f32, in runs of adjacent tensors (a fused
    /// projection's biases are one vector): run start → values.
    small: HashMap<usize, Vec<f32>>,
    /// Offset of every small tensor → (its run's start, its first index in the run).
    small_at: HashMap<usize, (usize, usize)>,
}

impl std::fmt::Debug for HalfWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HalfWeights")
            .field("kind", &self.kind)
            .field("bytes", &self.bytes().len())
            .field("tensors", &self.mats.len())
            .finish()
    }
}

impl HalfWeights {
    /// Weights of `layout` stored as `kind` in `bytes`: `ranges` gives, for every tensor
    /// name of the layout, the byte range of its values (row-major, little-endian, the
    /// layout's shape). Checks that every tensor is there once with the right length,
    /// 2-byte aligned, and that no value is NaN or infinite (a NaN weight would make
    /// every score NaN, far from the file that caused it). `what` names the source in
    /// errors (a file path).
    pub fn new(
        layout: &ParamLayout,
        kind: Half,
        bytes: WeightBytes,
        ranges: &[(String, Range<usize>)],
        what: &str,
    ) -> Result<Self, EngineError> {
        let data: &[u8] = (*bytes).as_ref();
        if !(data.as_ptr() as usize).is_multiple_of(2) {
            return Err(EngineError::Tensor(format!(
                "{what}: the weight buffer is not 2-byte aligned"
            )));
        }
        let by_name: HashMap<&str, &Range<usize>> =
            ranges.iter().map(|(n, r)| (n.as_str(), r)).collect();
        let mut mats = HashMap::new();
        let mut small: HashMap<usize, Vec<f32>> = HashMap::new();
        let mut small_at = HashMap::new();
        // The run the next adjacent small tensor extends: (start, end offset).
        let mut run: Option<(usize, usize)> = None;
        for t in layout.tensors() {
            let r = by_name
                .get(t.name.as_str())
                .ok_or_else(|| EngineError::Tensor(format!("{what}: no tensor `{}`", t.name)))?;
            let want = 2 * t.len();
            if r.end < r.start || r.end - r.start != want || r.end > data.len() {
                return Err(EngineError::Tensor(format!(
                    "{what}: tensor `{}` spans bytes {}..{} of {}, but {:?} needs {want} bytes ({} values of 16 bits)",
                    t.name,
                    r.start,
                    r.end,
                    data.len(),
                    t.shape,
                    t.len()
                )));
            }
            if !r.start.is_multiple_of(2) {
                return Err(EngineError::Tensor(format!(
                    "{what}: tensor `{}` starts at odd byte {}; 16-bit values must be 2-byte aligned",
                    t.name, r.start
                )));
            }
            let vals = as_u16(&data[(*r).clone()]);
            if let Some(i) = vals.iter().position(|&x| !finite(kind, x)) {
                return Err(EngineError::Tensor(format!(
                    "{what}: tensor `{}` holds a NaN or infinite value (element {i}); the weights are damaged",
                    t.name
                )));
            }
            if t.group == ParamGroup::Norm {
                let wide = vals.iter().map(|&x| widen(kind, x));
                match run {
                    Some((start, end)) if end == t.offset => {
                        let v = small.get_mut(&start).expect("run");
                        small_at.insert(t.offset, (start, v.len()));
                        v.extend(wide);
                        run = Some((start, t.offset + t.len()));
                    }
                    _ => {
                        small.insert(t.offset, wide.collect());
                        small_at.insert(t.offset, (t.offset, 0));
                        run = Some((t.offset, t.offset + t.len()));
                    }
                }
            }
            mats.insert(t.offset, r.start / 2..r.end / 2);
        }
        Ok(HalfWeights {
            kind,
            bytes,
            mats,
            small,
            small_at,
        })
    }

    /// The encoding.
    pub fn kind(&self) -> Half {
        self.kind
    }

    fn bytes(&self) -> &[u8] {
        (*self.bytes).as_ref()
    }

    /// The 16-bit values of the tensor at layout offset `off`.
    fn values(&self, off: usize) -> &[u16] {
        let r = self.mats[&off].clone();
        &as_u16(self.bytes())[r]
    }

    /// The `[out, in]` weight at layout offset `off` as the GEMM's `Wᵀ` operand.
    pub(crate) fn mat_t(&self, off: usize, d_in: usize) -> HalfMat<'_> {
        HalfMat::t(self.values(off), d_in, self.kind)
    }

    /// The `d_out` rows of `[out, in]` weights from layout offset `off` on, as the layout
    /// stores fused projections (q, k, v; gate, up: consecutive tensors), one `(Wᵀ view,
    /// rows)` per tensor: in a file they need not be adjacent (safetensors sorts by name).
    pub(crate) fn parts_t(
        &self,
        off: usize,
        d_in: usize,
        d_out: usize,
    ) -> Vec<(HalfMat<'_>, usize)> {
        let mut parts = Vec::new();
        let (mut at, mut rows) = (off, 0);
        while rows < d_out {
            let v = self.values(at);
            let r = v.len() / d_in;
            parts.push((HalfMat::t(v, d_in, self.kind), r));
            rows += r;
            at += v.len();
        }
        parts
    }

    /// The `d_out` rows from layout offset `off` on, widened into one f32 `[out, in]`
    /// matrix (for packing a fused projection once).
    pub(crate) fn widen_rows(&self, off: usize, d_in: usize, d_out: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(d_in * d_out);
        let mut at = off;
        while out.len() < d_in * d_out {
            let v = self.values(at);
            out.extend(v.iter().map(|&x| widen(self.kind, x)));
            at += v.len();
        }
        out
    }

    /// Row `row` (of width `d`) of the matrix at layout offset `off`, widened.
    pub(crate) fn row_into(&self, off: usize, row: usize, d: usize, out: &mut [f32]) {
        let v = &self.values(off)[row * d..(row + 1) * d];
        for (o, &x) in out.iter_mut().zip(v) {
            *o = widen(self.kind, x);
        }
    }

    /// The norm vector at layout offset `off`, widened.
    pub(crate) fn small(&self, off: usize) -> &[f32] {
        let (start, at) = self.small_at[&off];
        &self.small[&start][at..]
    }

    /// Bytes of 16-bit values the model reads (its weights' size).
    pub fn weight_bytes(&self) -> usize {
        self.mats.values().map(|r| 2 * (r.end - r.start)).sum()
    }
}

/// Views little-endian 16-bit values (the caller checked alignment and even length).
fn as_u16(b: &[u8]) -> &[u16] {
    debug_assert!((b.as_ptr() as usize).is_multiple_of(2) && b.len().is_multiple_of(2));
    // SAFETY: the pointer is 2-byte aligned and the length even (checked by the callers
    // in `HalfWeights::new`); every bit pattern is a valid u16; the slice borrows `b`.
    // The values are little-endian as safetensors stores them, which is the byte order
    // of every target Glass builds for.
    unsafe { std::slice::from_raw_parts(b.as_ptr().cast::<u16>(), b.len() / 2) }
}

fn widen(kind: Half, x: u16) -> f32 {
    kind.widen(x)
}

fn finite(kind: Half, x: u16) -> bool {
    kind.is_finite(x)
}

/// Where run-time code reads weights: the flat f32 buffer, or 16-bit weights.
#[derive(Clone, Copy)]
pub(crate) enum Params<'a> {
    F32(&'a [f32]),
    Half(&'a HalfWeights),
}

impl<'a> Params<'a> {
    /// A norm vector (weight or bias) of width `len` at layout offset `off`.
    pub(crate) fn vec(&self, off: usize, len: usize) -> &'a [f32] {
        match self {
            Params::F32(p) => &p[off..off + len],
            Params::Half(h) => &h.small(off)[..len],
        }
    }
}

impl Params<'_> {
    /// `y[n, out] = x · Wᵀ` (or `y += …`) for the weight at layout offset `off`, through
    /// `packed` when the weights were packed beforehand (same bits either way).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn linear(
        &self,
        off: usize,
        packed: Option<&crate::gemm::PackedB>,
        x: &[f32],
        y: &mut [f32],
        n: usize,
        d_in: usize,
        d_out: usize,
        accumulate: bool,
    ) {
        use crate::ops::linear;
        if packed.is_some() {
            return linear::forward_with(x, &[], packed, y, n, d_in, d_out, accumulate);
        }
        match self {
            Params::F32(p) => linear::forward(
                x,
                &p[off..off + d_in * d_out],
                y,
                n,
                d_in,
                d_out,
                accumulate,
            ),
            Params::Half(h) => {
                // A fused projection is one product per stored tensor, each into its own
                // columns of `y`: every output element keeps its contract order.
                let mut col = 0;
                for (w, rows) in h.parts_t(off, d_in, d_out) {
                    crate::gemm::matmul_half(
                        crate::gemm::Threads::Pool,
                        n,
                        rows,
                        d_in,
                        crate::gemm::Mat::n(x, d_in),
                        w,
                        &mut y[col..],
                        d_out,
                        1.0,
                        accumulate,
                    );
                    col += rows;
                }
            }
        }
    }

    /// `x[r] = E[tokens[r]] · mult` for the embedding at layout offset `off`.
    pub(crate) fn embed(
        &self,
        off: usize,
        vocab: usize,
        tokens: &[u32],
        x: &mut [f32],
        d: usize,
        mult: f32,
    ) {
        use rayon::prelude::*;
        match self {
            Params::F32(p) => {
                crate::ops::embedding::forward(&p[off..off + vocab * d], tokens, x, d, mult)
            }
            Params::Half(h) => x
                .par_chunks_mut(d)
                .zip(tokens.par_iter())
                .for_each(|(xr, &t)| {
                    h.row_into(off, t as usize, d, xr);
                    for v in xr.iter_mut() {
                        *v *= mult;
                    }
                }),
        }
    }

    /// The head's logits `[rows, vocab]` of `x` (head weight at layout offset `off`).
    pub(crate) fn head_logits(
        &self,
        off: usize,
        dims: crate::ops::lm_head::HeadDims,
        x: &[f32],
        packed: Option<&crate::gemm::PackedB>,
        rows: usize,
        out: &mut [f32],
    ) {
        use crate::ops::lm_head;
        match (self, packed) {
            (Params::F32(p), _) => lm_head::logits_with(
                dims,
                x,
                &p[off..off + dims.vocab * dims.d],
                packed,
                rows,
                out,
            ),
            (Params::Half(_), Some(_)) => lm_head::logits_with(dims, x, &[], packed, rows, out),
            (Params::Half(h), None) => {
                lm_head::logits_half(dims, x, h.mat_t(off, dims.d), rows, out)
            }
        }
    }
}

/// Why a 16-bit model refuses to train.
pub(crate) fn inference_only() -> EngineError {
    EngineError::Input(
        "this model holds 16-bit weights for inference only (evaluation, generation, analysis); training needs f32 master weights"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finiteness_and_widening_of_both_encodings() {
        assert!(finite(Half::Bf16, half::bf16::from_f32(1.5).to_bits()));
        assert!(!finite(Half::Bf16, half::bf16::INFINITY.to_bits()));
        assert!(!finite(Half::Bf16, half::bf16::NAN.to_bits()));
        assert!(finite(Half::F16, half::f16::from_f32(-65504.0).to_bits()));
        assert!(!finite(Half::F16, half::f16::NEG_INFINITY.to_bits()));
        assert!(!finite(Half::F16, half::f16::NAN.to_bits()));
        for x in [0.0f32, -1.25, 3.0e-5, 1.0e30] {
            let b = half::bf16::from_f32(x);
            assert_eq!(widen(Half::Bf16, b.to_bits()), b.to_f32());
            let h = half::f16::from_f32(x);
            assert_eq!(
                widen(Half::F16, h.to_bits()).to_bits(),
                h.to_f32().to_bits()
            );
        }
    }
}
