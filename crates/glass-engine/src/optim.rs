//! AdamW with decoupled weight decay and global-norm gradient clipping, fused over the
//! flat parameter buffer. The update order follows `torch.optim.AdamW` (decay, moments,
//! bias-corrected step) so results match PyTorch to rounding.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::LrMultipliers;
use crate::layout::{ParamGroup, ParamLayout};
use crate::ops::fastmath::powi_f64;
use crate::parallel::{sum_squares, REDUCE_CHUNK};

/// Optimizer hyperparameters (Amber: betas 0.9/0.95, eps 1e-8, wd 0.1, clip 1.0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator epsilon.
    pub eps: f32,
    /// Decoupled weight decay (multiplied by the learning rate).
    pub weight_decay: f32,
    /// Global gradient-norm clip; `0` disables clipping.
    pub grad_clip: f32,
    /// Also decay the embedding (LLaMA recipes usually do not).
    pub decay_embeddings: bool,
    /// Also decay norm weights and biases.
    pub decay_norms: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: 1.0,
            decay_embeddings: false,
            decay_norms: false,
        }
    }
}

/// AdamW state: first and second moments in the parameter layout, and the step count.
#[derive(Debug, Clone)]
pub struct AdamW {
    /// Hyperparameters.
    pub cfg: AdamWConfig,
    /// First moments.
    pub m: Vec<f32>,
    /// Second moments.
    pub v: Vec<f32>,
    /// Completed optimizer steps.
    pub step: u64,
}

impl AdamW {
    /// Fresh state for `n_params` parameters.
    pub fn new(cfg: AdamWConfig, n_params: usize) -> Self {
        AdamW {
            cfg,
            m: vec![0.0; n_params],
            v: vec![0.0; n_params],
            step: 0,
        }
    }

    /// Global L2 norm of `grads`, summed in a thread-count-independent order.
    pub fn grad_norm(grads: &[f32]) -> f64 {
        sum_squares(grads).sqrt()
    }

    fn decays(&self, group: ParamGroup) -> bool {
        match group {
            ParamGroup::Hidden | ParamGroup::Output => true,
            ParamGroup::Embedding => self.cfg.decay_embeddings,
            ParamGroup::Norm => self.cfg.decay_norms,
        }
    }

    /// Clips `grads` to the configured global norm and applies one AdamW update with base
    /// learning rate `lr` scaled per group by `mult`. Returns the pre-clip gradient norm.
    pub fn step(
        &mut self,
        params: &mut [f32],
        grads: &mut [f32],
        layout: &ParamLayout,
        lr: f32,
        mult: &LrMultipliers,
    ) -> f64 {
        let norm = Self::grad_norm(grads);
        self.step_slice(params, grads, 0, layout, lr, mult, norm);
        norm
    }

    /// [`AdamW::step`] with the pre-clip gradient norm already computed (by
    /// [`AdamW::grad_norm`] on the same `grads`), so a caller that inspects the norm
    /// before stepping does not sum the squares of every gradient twice.
    pub fn step_with_norm(
        &mut self,
        params: &mut [f32],
        grads: &mut [f32],
        layout: &ParamLayout,
        lr: f32,
        mult: &LrMultipliers,
        norm: f64,
    ) {
        self.step_slice(params, grads, 0, layout, lr, mult, norm);
    }

    /// The update of [`AdamW::step`] restricted to the elements `[offset, offset +
    /// params.len())` of the flat parameter buffer, with the global pre-clip gradient
    /// `norm` computed by the caller. `self.m` / `self.v` hold exactly that slice: this is
    /// how a data-parallel rank updates its shard of the optimizer state (ZeRO stage 1).
    /// The update is element-wise, so any split of the buffer gives the same bits.
    #[allow(clippy::too_many_arguments)]
    pub fn step_slice(
        &mut self,
        params: &mut [f32],
        grads: &mut [f32],
        offset: usize,
        layout: &ParamLayout,
        lr: f32,
        mult: &LrMultipliers,
        norm: f64,
    ) {
        assert_eq!(params.len(), grads.len());
        assert_eq!(params.len(), self.m.len(), "moments hold the updated slice");
        let coef = if self.cfg.grad_clip > 0.0 {
            (self.cfg.grad_clip as f64 / (norm + 1e-6)).min(1.0) as f32
        } else {
            1.0
        };
        self.step += 1;
        let t = self.step;
        let (b1, b2, eps) = (self.cfg.beta1, self.cfg.beta2, self.cfg.eps);
        // The numerics contract's own `powi` (not `f64::powi`, whose bits Rust does not
        // promise across platforms).
        let bc1 = 1.0 - powi_f64(b1 as f64, t);
        let bc2_sqrt = (1.0 - powi_f64(b2 as f64, t)).sqrt() as f32;
        let end = offset + params.len();
        for tv in layout.tensors() {
            let full = tv.range();
            let (a, b) = (full.start.max(offset), full.end.min(end));
            if a >= b {
                continue;
            }
            let gm = match tv.group {
                ParamGroup::Embedding => mult.embedding,
                ParamGroup::Hidden => mult.hidden,
                ParamGroup::Norm => mult.norm,
                ParamGroup::Output => mult.output,
            };
            let glr = lr * gm;
            let decay = if self.decays(tv.group) {
                1.0 - glr * self.cfg.weight_decay
            } else {
                1.0
            };
            let step_size = (glr as f64 / bc1) as f32;
            let r = a - offset..b - offset;
            params[r.clone()]
                .par_chunks_mut(REDUCE_CHUNK)
                .zip(grads[r.clone()].par_chunks_mut(REDUCE_CHUNK))
                .zip(
                    self.m[r.clone()]
                        .par_chunks_mut(REDUCE_CHUNK)
                        .zip(self.v[r].par_chunks_mut(REDUCE_CHUNK)),
                )
                .for_each(|((p, g), (m, v))| {
                    // Element-wise, so as wide as the CPU allows (`ops::wide`), same bits.
                    crate::ops::wide::wide(
                        #[inline(always)]
                        || {
                            for i in 0..p.len() {
                                let gi = g[i] * coef;
                                g[i] = gi;
                                p[i] *= decay;
                                m[i] += (1.0 - b1) * (gi - m[i]);
                                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                                let denom = v[i].sqrt() / bc2_sqrt + eps;
                                p[i] -= step_size * m[i] / denom;
                            }
                        },
                    )
                });
        }
    }
}
