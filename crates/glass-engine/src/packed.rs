//! Weights packed once for generation: at a few rows per product (one new token per
//! sequence), packing a weight for the GEMM costs about as much as the arithmetic, so a
//! decoding loop packs every weight once instead of at every step. Packing only moves
//! values, so a [`PackedModel`] computes exactly the bits of its [`Model`].
//!
//! The packed copy borrows the model: its weights cannot change while it exists.

use crate::gemm::{Mat, PackedB};
use crate::weights::Params;
use crate::Model;

/// Largest total of packed weights (bytes of f32). Packing doubles an f32 model's weight
/// memory while it lives (triples a 16-bit one's); above this a model computes with
/// per-product packing.
pub const MAX_PACKED_BYTES: usize = 4 << 30;

/// One block's linear weights, packed as `Wᵀ` operands.
pub(crate) struct BlockPacks {
    pub qkv: PackedB,
    pub o: PackedB,
    pub gate_up: PackedB,
    pub down: PackedB,
}

/// Every linear weight of a model, packed.
pub(crate) struct PackedWeights {
    pub blocks: Vec<BlockPacks>,
    pub head: PackedB,
}

/// A model with its linear weights packed for the GEMM (see the module docs).
pub struct PackedModel<'m> {
    model: &'m Model,
    weights: Option<PackedWeights>,
}

impl Model {
    /// This model with its weights packed for repeated KV-cached forwards (generation,
    /// memorization, scoring); models over [`MAX_PACKED_BYTES`] of weights are not packed.
    pub fn packed(&self) -> PackedModel<'_> {
        // Packed weights are f32: twice the bytes of 16-bit weights.
        let packed_bytes = match self.half_weights() {
            Some(h) => 2 * h.weight_bytes(),
            None => self.params.len() * 4,
        };
        let weights = (packed_bytes <= MAX_PACKED_BYTES).then(|| pack(self));
        PackedModel {
            model: self,
            weights,
        }
    }
}

impl<'m> PackedModel<'m> {
    /// The model it packs.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Whether the weights were packed (false above [`MAX_PACKED_BYTES`]).
    pub fn is_packed(&self) -> bool {
        self.weights.is_some()
    }

    pub(crate) fn weights(&self) -> Option<&PackedWeights> {
        self.weights.as_ref()
    }
}

fn pack(model: &Model) -> PackedWeights {
    let (cfg, p, lay, _) = model.trunk_parts();
    let (d, f, hd) = (cfg.d_model, cfg.ffn_hidden, cfg.head_dim());
    let (nh, nkv) = (cfg.n_heads, cfg.n_kv_heads);
    let w = (nh + 2 * nkv) * hd;
    // `y = x · Wᵀ` with W `[out, in]` row-major: B = Wᵀ is `[in, out]`.
    let wt = |off: usize, d_in: usize, d_out: usize| match p {
        Params::F32(p) => PackedB::new(d_in, d_out, Mat::t(&p[off..off + d_in * d_out], d_in)),
        Params::Half(h) => {
            let w = h.widen_rows(off, d_in, d_out);
            PackedB::new(d_in, d_out, Mat::t(&w, d_in))
        }
    };
    let blocks = lay
        .blocks
        .iter()
        .map(|bo| BlockPacks {
            qkv: wt(bo.qkv, d, w),
            o: wt(bo.o, nh * hd, d),
            gate_up: wt(bo.gate_up, d, cfg.mlp_in()),
            down: wt(bo.down, f, d),
        })
        .collect();
    PackedWeights {
        blocks,
        head: wt(lay.head, d, cfg.vocab_size),
    }
}
