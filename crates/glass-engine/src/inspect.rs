//! Looking inside the model: the one forward pass run over a sequence with a probe after
//! every block, the logit lens, and attention probabilities recomputed from the saved
//! rotated q and k (the forward pass never stores them). The engine's side of `glass
//! inspect`; memory is that of inference (two residual buffers and one block), plus
//! whatever the probe keeps.

use crate::model::{run_trunk, BlockView, Trunk};
use crate::ops::attention::{self, AttnDims};
use crate::ops::lm_head::HeadDims;
use crate::ops::norm;
use crate::{EngineError, Model, PackedModel};

impl PackedModel<'_> {
    /// Runs one sequence through the model, calling `probe` after every block with its
    /// input and output residual, rotated qkv and MLP activations; returns the logits
    /// `[n, V]`. Computes the bits of [`Model::forward_logits`] (packing changes no bit).
    pub fn forward_probed(
        &self,
        tokens: &[u32],
        probe: &mut dyn FnMut(&BlockView<'_>),
    ) -> Result<Vec<f32>, EngineError> {
        let n = tokens.len();
        if n == 0 {
            return Err(EngineError::Input("empty sequence".into()));
        }
        let model = self.model();
        let (cfg, p, lay, rope) = model.trunk_parts();
        if n > cfg.max_seq_len {
            return Err(EngineError::Input(format!(
                "{n} tokens exceed the model's context (max_seq_len {})",
                cfg.max_seq_len
            )));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(EngineError::Input(format!(
                "token {t} is outside the vocabulary (size {})",
                cfg.vocab_size
            )));
        }
        let packed = self.weights();
        let dims = AttnDims::new(cfg, 1, n);
        let mut tr = Trunk::for_inference();
        tr.resize(cfg, n);
        tr.tokens_mut().copy_from_slice(tokens);
        run_trunk(
            cfg,
            p,
            lay,
            rope,
            &mut tr,
            &|r| r,
            &mut |_, qkv, att, lse, hm| attention::forward(dims, qkv, att, lse, hm),
            packed,
            Some(probe),
        );
        let mut logits = vec![0.0f32; n * cfg.vocab_size];
        p.head_logits(
            lay.head,
            HeadDims::new(cfg),
            tr.final_norm(),
            packed.map(|w| &w.head),
            n,
            &mut logits,
        );
        Ok(logits)
    }

    /// The logit lens: the final norm and the output head (with its muP multiplier)
    /// applied to residual rows `x` (`[n, D]`, any layer's), giving `[n, V]` logits.
    pub fn lens_logits(&self, x: &[f32]) -> Vec<f32> {
        let n = x.len() / self.model().cfg.d_model;
        let mut logits = vec![0.0f32; n * self.model().cfg.vocab_size];
        self.lens_logits_into(x, &mut logits);
        logits
    }

    /// [`Self::lens_logits`] into `logits` (`[n, V]`), so that a caller lensing every
    /// stream reuses one buffer instead of faulting in fresh pages for each.
    pub fn lens_logits_into(&self, x: &[f32], logits: &mut [f32]) {
        let (cfg, p, lay, _) = self.model().trunk_parts();
        let d = cfg.d_model;
        let n = x.len() / d;
        let mut y = vec![0.0f32; n * d];
        let (mut mean, mut rstd) = (vec![0.0f32; n], vec![0.0f32; n]);
        norm::forward(
            cfg.norm,
            cfg.norm_eps,
            x,
            lay.norm_f_w.map(|o| p.vec(o, d)),
            lay.norm_f_b.map(|o| p.vec(o, d)),
            &mut y,
            &mut mean,
            &mut rstd,
            d,
        );
        let head = self.weights().map(|w| &w.head);
        p.head_logits(lay.head, HeadDims::new(cfg), &y, head, n, logits);
    }
}

impl Model {
    /// The attention probabilities `[n, n]` of query head `head` in a block, from the
    /// block's rotated `qkv` rows (a [`BlockView`]'s), as the forward pass computes them.
    pub fn attention_probs(&self, qkv: &[f32], head: usize) -> Vec<f32> {
        let cfg = &self.cfg;
        let w = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim();
        attention::head_probs(
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.head_dim(),
            cfg.attention_scale(),
            qkv,
            qkv.len() / w,
            head,
        )
    }
}
