//! The decoder: parameters, preallocated activations, forward and backward passes.
//!
//! Buffer layout (rows = batch · seq_len, one row per token):
//! - `resid[l]` `[rows, D]`: residual stream entering block `l`; `resid[L]` leaves the last.
//! - per block: `ln1`, `ln2` `[rows, D]` normalised inputs (+ row mean/rstd), `qkv`
//!   `[rows, (H+2KV)·hd]` after RoPE, `att` `[rows, H·hd]`, `lse` `[batch·H·seq]`,
//!   `xmid` `[rows, D]` residual after attention, `gu` `[rows, 2F]`, `h` `[rows, F]`.
//! - backward scratch shared by all blocks: `dres`, `dln`, `datt`, `dqkv`, `dh`, `dgu`.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::config::{BlockKind, MlpKind, ModelConfig};
use crate::layout::{BlockOffsets, ParamGroup, ParamLayout};
use crate::ops::attention::{self, AttnDims};
use crate::ops::lm_head::{self, HeadDims};
use crate::ops::rope::Rope;
use crate::ops::{embedding, gelu, linear, norm, swiglu};
use crate::optim::AdamW;
use crate::profile::{span, Phase};
use crate::weights::{HalfWeights, Params};
use crate::EngineError;

/// Standard deviation of the LLaMA initialiser (`initializer_range`), the default of
/// `mup.init_std`.
pub const INIT_STD: f32 = 0.02;

/// Initial standard deviation of a matrix (see [`Model::new`]).
pub fn init_std(cfg: &ModelConfig, t: &crate::layout::TensorView) -> f32 {
    let base = cfg.mup.init_std as f64;
    let std = match t.group {
        ParamGroup::Embedding | ParamGroup::Norm => base,
        ParamGroup::Hidden | ParamGroup::Output => {
            let s = base * cfg.mup.width_scale(cfg.d_model).sqrt();
            let residual_out =
                t.name.ends_with(".o_proj.weight") || t.name.ends_with(".down_proj.weight");
            if residual_out && cfg.mup.scale_residual_init {
                s / (2.0 * cfg.n_layers as f64).sqrt()
            } else {
                s
            }
        }
    };
    std as f32
}

/// Saved activations of one block.
#[derive(Debug, Default)]
struct BlockActs {
    ln1: Vec<f32>,
    ln1_mean: Vec<f32>,
    ln1_rstd: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    lse: Vec<f32>,
    xmid: Vec<f32>,
    ln2: Vec<f32>,
    ln2_mean: Vec<f32>,
    ln2_rstd: Vec<f32>,
    gu: Vec<f32>,
    h: Vec<f32>,
}

impl BlockActs {
    fn resize(&mut self, cfg: &ModelConfig, n: usize) {
        let (d, f, hd) = (cfg.d_model, cfg.ffn_hidden, cfg.head_dim());
        let w = (cfg.n_heads + 2 * cfg.n_kv_heads) * hd;
        for (b, len) in [
            (&mut self.ln1, n * d),
            (&mut self.ln1_mean, n),
            (&mut self.ln1_rstd, n),
            (&mut self.qkv, n * w),
            (&mut self.att, n * cfg.n_heads * hd),
            (&mut self.lse, n * cfg.n_heads),
            (&mut self.xmid, n * d),
            (&mut self.ln2, n * d),
            (&mut self.ln2_mean, n),
            (&mut self.ln2_rstd, n),
            (&mut self.gu, n * cfg.mlp_in()),
            (&mut self.h, n * f),
        ] {
            b.resize(len, 0.0);
        }
    }
}

/// Activations of the layer stack for a stack of token rows: the one forward pass that
/// training, validation, evaluation and KV-cache decoding all run.
///
/// Training keeps every block's activations for the backward pass (`L + 1` residual
/// buffers, `L` blocks); inference keeps one block and two residual buffers that the
/// layers take turns in, so its memory does not grow with depth.
#[derive(Debug, Default)]
pub(crate) struct Trunk {
    tokens: Vec<u32>,
    resid: Vec<Vec<f32>>,
    blocks: Vec<BlockActs>,
    lnf: Vec<f32>,
    lnf_mean: Vec<f32>,
    lnf_rstd: Vec<f32>,
    /// Head-major attention scratch (see [`attention::forward_seqs`]).
    hm: Vec<f32>,
}

impl Trunk {
    /// Buffers that keep every block's activations (training).
    fn for_training(cfg: &ModelConfig) -> Self {
        Trunk {
            resid: (0..=cfg.n_layers).map(|_| Vec::new()).collect(),
            blocks: (0..cfg.n_layers).map(|_| BlockActs::default()).collect(),
            ..Default::default()
        }
    }

    /// Buffers that keep only what the next layer needs (inference).
    pub(crate) fn for_inference() -> Self {
        Trunk {
            resid: vec![Vec::new(), Vec::new()],
            blocks: vec![BlockActs::default()],
            ..Default::default()
        }
    }

    /// Sizes every buffer for `n` rows. Shrinking keeps the allocation, so alternating
    /// shapes (a short last micro-batch, validation) never reallocate.
    pub(crate) fn resize(&mut self, cfg: &ModelConfig, n: usize) {
        let d = cfg.d_model;
        self.tokens.resize(n, 0);
        for r in &mut self.resid {
            r.resize(n * d, 0.0);
        }
        for a in &mut self.blocks {
            a.resize(cfg, n);
        }
        self.lnf.resize(n * d, 0.0);
        self.lnf_mean.resize(n, 0.0);
        self.lnf_rstd.resize(n, 0.0);
        self.hm.resize(n * cfg.n_heads * cfg.head_dim(), 0.0);
    }

    /// Token ids of the rows (set before [`Model::run_trunk`]).
    pub(crate) fn tokens_mut(&mut self) -> &mut [u32] {
        &mut self.tokens
    }

    /// The final-norm output `[rows, D]`, input of the output head.
    pub(crate) fn final_norm(&self) -> &[f32] {
        &self.lnf
    }
}

/// What an inspection sees of block `layer` after it ran (see [`Model::forward_probed`]).
pub struct BlockView<'a> {
    /// The block's index.
    pub layer: usize,
    /// Residual stream entering the block, `[rows, D]` (block 0: the scaled embedding).
    pub input: &'a [f32],
    /// Residual stream leaving the block, `[rows, D]`.
    pub output: &'a [f32],
    /// q, k (after QK-norm and RoPE) and v rows, `[rows, (H + 2·KV)·hd]`.
    pub qkv: &'a [f32],
    /// MLP activations (`silu(gate)·up`, or `gelu(up)`), `[rows, F]`.
    pub mlp: &'a [f32],
}

/// Called after every block by an inspecting forward pass.
pub type Probe<'a> = dyn FnMut(&BlockView<'_>) + 'a;

/// Attention of one block: gets the layer index, the rotated `qkv` rows, and writes
/// `att`, the log-sum-exp buffer and uses the head-major scratch.
pub(crate) type Attend<'a> = dyn FnMut(usize, &[f32], &mut [f32], &mut [f32], &mut [f32]) + 'a;

/// Every activation and scratch buffer for one micro-batch shape, allocated once.
#[derive(Debug)]
struct Workspace {
    batch: usize,
    seq: usize,
    trunk: Trunk,
    losses: Vec<f32>,
    logits_buf: Vec<f32>,
    dres: Vec<f32>,
    dln: Vec<f32>,
    datt: Vec<f32>,
    dqkv: Vec<f32>,
    dh: Vec<f32>,
    dgu: Vec<f32>,
    attn: attention::BackwardScratch,
}

impl Workspace {
    fn new(cfg: &ModelConfig) -> Self {
        Workspace {
            batch: 0,
            seq: 0,
            trunk: Trunk::for_training(cfg),
            losses: Vec::new(),
            logits_buf: Vec::new(),
            dres: Vec::new(),
            dln: Vec::new(),
            datt: Vec::new(),
            dqkv: Vec::new(),
            dh: Vec::new(),
            dgu: Vec::new(),
            attn: Default::default(),
        }
    }

    /// Sizes the buffers for `batch × seq` tokens; the backward buffers only when
    /// `backward` (a forward-only validation batch never grows them).
    fn reshape(&mut self, cfg: &ModelConfig, batch: usize, seq: usize, backward: bool) {
        let n = batch * seq;
        let (d, f, hd) = (cfg.d_model, cfg.ffn_hidden, cfg.head_dim());
        let w = (cfg.n_heads + 2 * cfg.n_kv_heads) * hd;
        (self.batch, self.seq) = (batch, seq);
        self.trunk.resize(cfg, n);
        self.losses.resize(n, 0.0);
        if backward {
            for (b, len) in [
                (&mut self.dres, n * d),
                (&mut self.dln, n * d),
                (&mut self.datt, n * cfg.n_heads * hd),
                (&mut self.dqkv, n * w),
                (&mut self.dh, n * f),
                (&mut self.dgu, n * cfg.mlp_in()),
            ] {
                b.resize(len, 0.0);
            }
        }
    }
}

/// Loss and gradient statistics of one optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy over the step's tokens.
    pub loss: f64,
    /// Global L2 norm of the gradient before clipping.
    pub grad_norm: f64,
}

/// A LLaMA-family model with its parameters, gradients and activation buffers.
#[derive(Debug)]
pub struct Model {
    /// Shapes and numerics.
    pub cfg: ModelConfig,
    /// Where each named tensor lives in `params` / `grads`.
    pub layout: ParamLayout,
    /// All parameters, one flat buffer.
    pub params: Vec<f32>,
    /// Gradients, same layout as `params`; accumulated over micro-batches.
    pub grads: Vec<f32>,
    /// 16-bit weights for inference (then `params` and `grads` are empty).
    half: Option<HalfWeights>,
    rope: Rope,
    ws: Option<Workspace>,
}

impl Model {
    /// Creates a model with the LLaMA initialisation, width-scaled as muP prescribes:
    /// the embedding ~ N(0, init_std²), hidden matrices and the untied head ~
    /// N(0, (init_std · sqrt(base_width / d_model))²), residual outputs (`o_proj`,
    /// `down_proj`) additionally divided by sqrt(2 · n_layers) when
    /// `scale_residual_init`; norm weights 1, biases 0. Plain LLaMA (no muP keys) is
    /// N(0, 0.02²) everywhere. Each tensor draws from its own ChaCha8 stream of `seed`,
    /// so initialisation is parallel and still deterministic.
    pub fn new(cfg: &ModelConfig, seed: u64) -> Result<Self, EngineError> {
        let mut m = Self::zeros(cfg)?;
        let layout = m.layout.clone();
        let mut slices: Vec<(usize, &mut [f32])> = Vec::new();
        let mut rest: &mut [f32] = &mut m.params;
        let mut pos = 0;
        for (i, t) in layout.tensors().iter().enumerate() {
            let (_, tail) = rest.split_at_mut(t.offset - pos);
            let (mine, tail) = tail.split_at_mut(t.len());
            slices.push((i, mine));
            rest = tail;
            pos = t.offset + t.len();
        }
        slices.into_par_iter().for_each(|(i, s)| {
            let t = &layout.tensors()[i];
            if t.group == ParamGroup::Norm {
                s.fill(if t.name.ends_with(".bias") { 0.0 } else { 1.0 });
            } else {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(i as u64);
                s.iter_mut().for_each(|x| {
                    *x = init_std(cfg, t) * crate::ops::fastmath::standard_normal(&mut rng)
                });
            }
        });
        Ok(m)
    }

    /// Creates a model with all parameters zero (to be filled from a checkpoint).
    pub fn zeros(cfg: &ModelConfig) -> Result<Self, EngineError> {
        cfg.validate()?;
        cfg.ensure_fits_memory(8)?; // params + grads, checked before allocating
        let layout = ParamLayout::new(cfg);
        let n = layout.total();
        Ok(Model {
            cfg: cfg.clone(),
            rope: Rope::new(cfg),
            params: vec![0.0; n],
            grads: vec![0.0; n],
            half: None,
            layout,
            ws: None,
        })
    }

    /// A model for inference over 16-bit weights left in their buffer (see
    /// [`crate::weights`]): it evaluates, scores and generates with the bits of the f32
    /// model over the same weights widened, holds no f32 copy of them and no gradients,
    /// and refuses to train.
    pub fn from_half(cfg: &ModelConfig, weights: HalfWeights) -> Result<Self, EngineError> {
        cfg.validate()?;
        Ok(Model {
            cfg: cfg.clone(),
            rope: Rope::new(cfg),
            params: Vec::new(),
            grads: Vec::new(),
            half: Some(weights),
            layout: ParamLayout::new(cfg),
            ws: None,
        })
    }

    /// The 16-bit weights, when this is an inference model over them.
    pub fn half_weights(&self) -> Option<&HalfWeights> {
        self.half.as_ref()
    }

    /// Bytes of the weights this model reads (f32 params, or the 16-bit tensors).
    pub fn weight_bytes(&self) -> usize {
        match &self.half {
            Some(h) => h.weight_bytes(),
            None => self.params.len() * 4,
        }
    }

    /// Where the weights are read from.
    pub(crate) fn weights(&self) -> Params<'_> {
        match &self.half {
            Some(h) => Params::Half(h),
            None => Params::F32(&self.params),
        }
    }

    fn ensure_trainable(&self) -> Result<(), EngineError> {
        if self.half.is_some() {
            return Err(crate::weights::inference_only());
        }
        self.cfg.arch.trainable().map_err(EngineError::Input)
    }

    /// What [`run_trunk`] needs from the model (used by KV-cache decoding).
    pub(crate) fn trunk_parts(&self) -> (&ModelConfig, Params<'_>, &ParamLayout, &Rope) {
        (&self.cfg, self.weights(), &self.layout, &self.rope)
    }

    /// Sets every gradient to zero (start of an optimizer step).
    pub fn zero_grads(&mut self) {
        self.grads.par_iter_mut().for_each(|g| *g = 0.0);
    }

    fn check_tokens(&self, tokens: &[u32], what: &str) -> Result<(), EngineError> {
        if let Some((i, &t)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= self.cfg.vocab_size)
        {
            return Err(EngineError::Input(format!(
                "{what} token {t} at position {i} is outside the vocabulary (size {})",
                self.cfg.vocab_size
            )));
        }
        Ok(())
    }

    fn prepare(
        &mut self,
        inputs: &[u32],
        batch: usize,
        seq: usize,
        backward: bool,
    ) -> Result<(), EngineError> {
        if seq == 0 || batch == 0 || inputs.len() != batch * seq {
            return Err(EngineError::Input(format!(
                "expected {batch}×{seq} input tokens, got {}",
                inputs.len()
            )));
        }
        if seq > self.rope.max_positions() {
            return Err(EngineError::Input(format!(
                "sequence length {seq} exceeds max_seq_len {}",
                self.cfg.max_seq_len
            )));
        }
        self.check_tokens(inputs, "input")?;
        let ws = self.ws.get_or_insert_with(|| Workspace::new(&self.cfg));
        ws.reshape(&self.cfg, batch, seq, backward);
        ws.trunk.tokens.copy_from_slice(inputs);
        Ok(())
    }

    fn head_dims(&self) -> HeadDims {
        HeadDims::new(&self.cfg)
    }

    /// Runs the blocks and the final norm over the workspace's micro-batch, saving every
    /// activation.
    fn forward_trunk(&mut self) {
        let ws = self.ws.as_mut().expect("prepared");
        let dims = AttnDims::new(&self.cfg, ws.batch, ws.seq);
        let seq = ws.seq;
        let p = match &self.half {
            Some(h) => Params::Half(h),
            None => Params::F32(&self.params),
        };
        run_trunk(
            &self.cfg,
            p,
            &self.layout,
            &self.rope,
            &mut ws.trunk,
            &|r| r % seq,
            &mut |_, qkv, att, lse, hm| attention::forward(dims, qkv, att, lse, hm),
            None,
            None,
        );
    }

    /// Forward and backward of one micro-batch (`batch` sequences of `seq` tokens),
    /// adding its gradients into [`Model::grads`]. `grad_scale` multiplies every row's
    /// loss gradient: use `1 / tokens_in_step` so accumulated micro-batches give the
    /// gradient of the step's mean loss. Returns the *sum* of the row losses.
    pub fn forward_backward(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        batch: usize,
        seq: usize,
        grad_scale: f32,
    ) -> Result<f64, EngineError> {
        self.ensure_trainable()?;
        self.prepare(inputs, batch, seq, true)?;
        if targets.len() != inputs.len() {
            return Err(EngineError::Input(format!(
                "{} targets for {} inputs",
                targets.len(),
                inputs.len()
            )));
        }
        if let Some((i, &t)) = targets
            .iter()
            .enumerate()
            .find(|(_, &t)| t != lm_head::IGNORE && t as usize >= self.cfg.vocab_size)
        {
            return Err(EngineError::Input(format!(
                "target token {t} at position {i} is outside the vocabulary (size {})",
                self.cfg.vocab_size
            )));
        }
        self.forward_trunk();
        self.backward(targets, grad_scale);
        let ws = self.ws.as_ref().expect("prepared");
        Ok(ws.losses.iter().map(|&l| l as f64).sum())
    }

    /// Forward only: per-position cross-entropy (natural log) for `targets`, `0` where a
    /// target is [`lm_head::IGNORE`]. Used for validation loss and evaluation.
    pub fn forward_losses(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        batch: usize,
        seq: usize,
    ) -> Result<Vec<f32>, EngineError> {
        self.prepare(inputs, batch, seq, false)?;
        if let Some((i, &t)) = targets
            .iter()
            .enumerate()
            .find(|(_, &t)| t != lm_head::IGNORE && t as usize >= self.cfg.vocab_size)
        {
            return Err(EngineError::Input(format!(
                "target token {t} at position {i} is outside the vocabulary"
            )));
        }
        self.forward_trunk();
        let hdims = self.head_dims();
        let head_off = self.layout.head;
        let p = match &self.half {
            Some(h) => Params::Half(h),
            None => Params::F32(&self.params),
        };
        let ws = self.ws.as_mut().expect("prepared");
        lm_head::forward_by(
            hdims,
            &ws.trunk.lnf,
            &|x, n, out| p.head_logits(head_off, hdims, x, None, n, out),
            targets,
            &mut ws.losses,
            &mut ws.logits_buf,
        );
        Ok(ws.losses.clone())
    }

    /// Forward only: the full logits `[batch·seq, vocab]` (tests and small evaluations).
    pub fn forward_logits(
        &mut self,
        inputs: &[u32],
        batch: usize,
        seq: usize,
    ) -> Result<Vec<f32>, EngineError> {
        self.prepare(inputs, batch, seq, false)?;
        self.forward_trunk();
        let hdims = self.head_dims();
        let ws = self.ws.as_ref().expect("prepared");
        let mut out = vec![0.0f32; batch * seq * hdims.vocab];
        self.weights().head_logits(
            self.layout.head,
            hdims,
            &ws.trunk.lnf,
            None,
            batch * seq,
            &mut out,
        );
        Ok(out)
    }

    fn backward(&mut self, targets: &[u32], grad_scale: f32) {
        let cfg = &self.cfg;
        let p = &self.params;
        let g = &mut self.grads;
        let lay = &self.layout;
        let ws = self.ws.as_mut().expect("prepared");
        let (batch, seq) = (ws.batch, ws.seq);
        let n = batch * seq;
        let (d, f, hd) = (cfg.d_model, cfg.ffn_hidden, cfg.head_dim());
        let (nh, nkv) = (cfg.n_heads, cfg.n_kv_heads);
        let w = (nh + 2 * nkv) * hd;
        let dims = AttnDims::new(cfg, batch, seq);
        let hdims = HeadDims::new(cfg);
        let vd = cfg.vocab_size * d;

        // Head + loss → dL/d(lnf) in `dln`.
        {
            let _t = span(Phase::HeadLoss);
            let (head, dhead) = (&p[lay.head..lay.head + vd], &mut g[lay.head..lay.head + vd]);
            lm_head::forward_backward(
                hdims,
                &ws.trunk.lnf,
                head,
                targets,
                grad_scale,
                &mut ws.losses,
                &mut ws.dln,
                dhead,
                &mut ws.logits_buf,
            );
        }
        ws.dres.par_iter_mut().for_each(|x| *x = 0.0);
        let t = span(Phase::NormBwd);
        norm_backward(
            cfg,
            p,
            g,
            lay.norm_f_w,
            lay.norm_f_b,
            &ws.trunk.resid[cfg.n_layers],
            &ws.trunk.lnf_mean,
            &ws.trunk.lnf_rstd,
            &ws.dln,
            &mut ws.dres,
        );

        drop(t);
        for (l, bo) in lay.blocks.iter().enumerate().rev() {
            let BlockOffsets {
                qkv,
                o,
                gate_up,
                down,
                ..
            } = *bo;
            let a = &ws.trunk.blocks[l];
            let mi = cfg.mlp_in();
            // x_next = xmid + h·Wdownᵀ (+ b)
            let t = span(Phase::Elementwise);
            bias_grad(g, bo.down_b, &ws.dres, d);
            drop(t);
            let t = span(Phase::DownBwd);
            linear::backward(
                &ws.dres,
                &a.h,
                &p[down..down + d * f],
                &mut ws.dh,
                &mut g[down..down + d * f],
                n,
                f,
                d,
            );
            drop(t);
            let t = span(Phase::ActBwd);
            swiglu::backward(&a.gu, &ws.dh, &mut ws.dgu, f);
            drop(t);
            let t = span(Phase::Elementwise);
            bias_grad(g, bo.gate_up_b, &ws.dgu, mi);
            drop(t);
            let t = span(Phase::MlpInBwd);
            linear::backward(
                &ws.dgu,
                &a.ln2,
                &p[gate_up..gate_up + mi * d],
                &mut ws.dln,
                &mut g[gate_up..gate_up + mi * d],
                n,
                d,
                mi,
            );
            drop(t);
            let t = span(Phase::NormBwd);
            norm_backward(
                cfg,
                p,
                g,
                bo.norm2_w,
                bo.norm2_b,
                &a.xmid,
                &a.ln2_mean,
                &a.ln2_rstd,
                &ws.dln,
                &mut ws.dres,
            );
            // xmid = x + att·Woᵀ (+ b)
            let ad = nh * hd;
            drop(t);
            let t = span(Phase::Elementwise);
            bias_grad(g, bo.o_b, &ws.dres, d);
            drop(t);
            let t = span(Phase::OBwd);
            linear::backward(
                &ws.dres,
                &a.att,
                &p[o..o + d * ad],
                &mut ws.datt,
                &mut g[o..o + d * ad],
                n,
                ad,
                d,
            );
            drop(t);
            let t = span(Phase::AttnBwd);
            attention::backward(
                dims,
                &a.qkv,
                &a.att,
                &a.lse,
                &ws.datt,
                &mut ws.dqkv,
                &mut ws.trunk.hm,
                &mut ws.attn,
            );
            drop(t);
            let t = span(Phase::RopeBwd);
            let rope = &self.rope;
            ws.dqkv.par_chunks_mut(w).enumerate().for_each(|(r, row)| {
                let pos = r % seq;
                rope.rotate(row, nh, hd, pos, true);
                rope.rotate(&mut row[nh * hd..], nkv, hd, pos, true);
            });
            drop(t);
            let t = span(Phase::Elementwise);
            bias_grad(g, bo.qkv_b, &ws.dqkv, w);
            drop(t);
            let t = span(Phase::QkvBwd);
            linear::backward(
                &ws.dqkv,
                &a.ln1,
                &p[qkv..qkv + w * d],
                &mut ws.dln,
                &mut g[qkv..qkv + w * d],
                n,
                d,
                w,
            );
            drop(t);
            let _t = span(Phase::NormBwd);
            norm_backward(
                cfg,
                p,
                g,
                bo.norm1_w,
                bo.norm1_b,
                &ws.trunk.resid[l],
                &a.ln1_mean,
                &a.ln1_rstd,
                &ws.dln,
                &mut ws.dres,
            );
        }
        let _t = span(Phase::Embedding);
        embedding::backward(
            &mut g[lay.embed..lay.embed + vd],
            &ws.trunk.tokens,
            &ws.dres,
            d,
            cfg.mup.embedding_multiplier,
        );
    }

    /// Forward and backward over `rows` (packed rows of `seq + 1` tokens) as
    /// micro-batches of `micro_batch` rows; gradients are zeroed first and then hold the
    /// gradient of the mean loss over every target token. Returns that mean loss. This is
    /// the one-group case of [`Model::accumulate_grouped`] (the training loop uses the
    /// configured number of gradient groups).
    pub fn accumulate_gradients(
        &mut self,
        rows: &[u32],
        seq: usize,
        micro_batch: usize,
    ) -> Result<f64, EngineError> {
        let tokens = rows.len() / (seq + 1) * seq;
        let loss = self.accumulate_grouped(
            &mut crate::grad_tree::GradTree::new(),
            rows,
            seq,
            micro_batch,
            1,
            tokens,
        )?;
        Ok(loss / tokens as f64)
    }

    /// One full optimizer step: [`Model::accumulate_gradients`] then AdamW at `lr`
    /// (scaled per group by the config's muP multipliers).
    pub fn train_step(
        &mut self,
        opt: &mut AdamW,
        rows: &[u32],
        seq: usize,
        micro_batch: usize,
        lr: f32,
    ) -> Result<StepStats, EngineError> {
        let loss = self.accumulate_gradients(rows, seq, micro_batch)?;
        let grad_norm = self.apply_optimizer(opt, lr);
        Ok(StepStats { loss, grad_norm })
    }

    /// Clips and applies the accumulated gradients; returns the pre-clip gradient norm.
    pub fn apply_optimizer(&mut self, opt: &mut AdamW, lr: f32) -> f64 {
        let _t = span(Phase::Optimizer);
        let mult = self.cfg.mup.lr_multipliers;
        opt.step(&mut self.params, &mut self.grads, &self.layout, lr, &mult)
    }

    /// [`Model::apply_optimizer`] with the pre-clip norm of [`Model::grads`] already
    /// computed by the caller ([`AdamW::grad_norm`]), so it is not computed twice.
    pub fn apply_optimizer_with_norm(&mut self, opt: &mut AdamW, lr: f32, grad_norm: f64) {
        let _t = span(Phase::Optimizer);
        let mult = self.cfg.mup.lr_multipliers;
        opt.step_with_norm(
            &mut self.params,
            &mut self.grads,
            &self.layout,
            lr,
            &mult,
            grad_norm,
        );
    }

    /// Mean loss of the last micro-batch's rows (diagnostics).
    pub fn last_losses(&self) -> &[f32] {
        self.ws.as_ref().map_or(&[], |w| &w.losses)
    }
}

/// The layer stack: embedding, every block, final norm, over the rows of `tr`.
///
/// This is the only implementation of the decoder's forward math. `pos(r)` is the
/// position of row `r` (RoPE); `attend` runs attention of block `l` (training attends
/// within each sequence, KV-cache decoding appends to the caches and attends to them).
/// Block `l` reads residual buffer `l` and writes `l + 1` (modulo the buffers kept) and
/// saves into block buffer `l` (modulo the blocks kept). `packed` holds the linear
/// weights packed beforehand (generation); it changes no bit.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_trunk(
    cfg: &ModelConfig,
    p: Params<'_>,
    lay: &ParamLayout,
    rope: &Rope,
    tr: &mut Trunk,
    pos: &(dyn Fn(usize) -> usize + Sync),
    attend: &mut Attend<'_>,
    packed: Option<&crate::packed::PackedWeights>,
    mut probe: Option<&mut Probe<'_>>,
) {
    let n = tr.tokens.len();
    let (d, f, hd) = (cfg.d_model, cfg.ffn_hidden, cfg.head_dim());
    let (nh, nkv) = (cfg.n_heads, cfg.n_kv_heads);
    let w = (nh + 2 * nkv) * hd;
    let mi = cfg.mlp_in();
    let arch = cfg.arch;
    let post = arch.block == BlockKind::PostNorm;
    {
        let _t = span(Phase::Embedding);
        p.embed(
            lay.embed,
            cfg.vocab_size,
            &tr.tokens,
            &mut tr.resid[0],
            d,
            cfg.mup.embedding_multiplier,
        );
    }
    let (nr, nb) = (tr.resid.len(), tr.blocks.len());
    for (l, bo) in lay.blocks.iter().enumerate() {
        let (x, x_next) = pair_mut(&mut tr.resid, l % nr, (l + 1) % nr);
        let a = &mut tr.blocks[l % nb];
        // Attention reads norm1(x) (pre-norm, parallel) or x itself (post-norm).
        let t = span(Phase::NormFwd);
        if post {
            a.ln1.copy_from_slice(x);
        } else {
            norm_forward(
                cfg,
                p,
                bo.norm1_w,
                bo.norm1_b,
                x,
                &mut a.ln1,
                &mut a.ln1_mean,
                &mut a.ln1_rstd,
            );
        }
        drop(t);
        let pk = packed.map(|pw| &pw.blocks[l]);
        let t = span(Phase::QkvFwd);
        p.linear(
            bo.qkv,
            pk.map(|b| &b.qkv),
            &a.ln1,
            &mut a.qkv,
            n,
            d,
            w,
            false,
        );
        add_bias(p, bo.qkv_b, &mut a.qkv, w);
        drop(t);
        let t = span(Phase::RopeFwd);
        let qk_norm = bo
            .q_norm
            .zip(bo.k_norm)
            .map(|(q, k)| (p.vec(q, nh * hd), p.vec(k, nkv * hd)));
        a.qkv.par_chunks_mut(w).enumerate().for_each(|(r, row)| {
            if let Some(c) = arch.qkv_clip {
                for v in row.iter_mut() {
                    *v = v.clamp(-c, c);
                }
            }
            if let Some((qw, kw)) = qk_norm {
                let (q, rest) = row.split_at_mut(nh * hd);
                norm::forward_in_place(cfg.norm, cfg.norm_eps, q, qw);
                norm::forward_in_place(cfg.norm, cfg.norm_eps, &mut rest[..nkv * hd], kw);
            }
            let pos = pos(r);
            rope.rotate(row, nh, hd, pos, false);
            rope.rotate(&mut row[nh * hd..], nkv, hd, pos, false);
        });
        drop(t);
        let t = span(Phase::AttnFwd);
        attend(l, &a.qkv, &mut a.att, &mut a.lse, &mut tr.hm);
        drop(t);
        let t = span(Phase::OFwd);
        if post {
            // xmid = x + norm1(att·Woᵀ + b)
            p.linear(
                bo.o,
                pk.map(|b| &b.o),
                &a.att,
                &mut a.ln2,
                n,
                nh * hd,
                d,
                false,
            );
            add_bias(p, bo.o_b, &mut a.ln2, d);
            norm_forward(
                cfg,
                p,
                bo.norm1_w,
                bo.norm1_b,
                &a.ln2,
                &mut a.xmid,
                &mut a.ln1_mean,
                &mut a.ln1_rstd,
            );
            add_into(&mut a.xmid, x);
        } else {
            // xmid = x + att·Woᵀ + b
            a.xmid.copy_from_slice(x);
            p.linear(
                bo.o,
                pk.map(|b| &b.o),
                &a.att,
                &mut a.xmid,
                n,
                nh * hd,
                d,
                true,
            );
            add_bias(p, bo.o_b, &mut a.xmid, d);
        }
        drop(t);
        let t = span(Phase::NormFwd);
        // The MLP reads norm2(xmid) (pre-norm), norm2(x) (parallel) or xmid (post-norm).
        match arch.block {
            BlockKind::PreNorm => norm_forward(
                cfg,
                p,
                bo.norm2_w,
                bo.norm2_b,
                &a.xmid,
                &mut a.ln2,
                &mut a.ln2_mean,
                &mut a.ln2_rstd,
            ),
            BlockKind::Parallel => norm_forward(
                cfg,
                p,
                bo.norm2_w,
                bo.norm2_b,
                x,
                &mut a.ln2,
                &mut a.ln2_mean,
                &mut a.ln2_rstd,
            ),
            BlockKind::PostNorm => a.ln2.copy_from_slice(&a.xmid),
        }
        drop(t);
        let t = span(Phase::MlpInFwd);
        p.linear(
            bo.gate_up,
            pk.map(|b| &b.gate_up),
            &a.ln2,
            &mut a.gu,
            n,
            d,
            mi,
            false,
        );
        add_bias(p, bo.gate_up_b, &mut a.gu, mi);
        drop(t);
        let t = span(Phase::ActFwd);
        match arch.mlp {
            MlpKind::Swiglu => swiglu::forward(&a.gu, &mut a.h, f),
            MlpKind::Gelu => gelu::forward(&a.gu, &mut a.h),
        }
        drop(t);
        let t = span(Phase::DownFwd);
        if post {
            // out = xmid + norm2(h·Wdownᵀ + b); `ln1` is free scratch by now.
            p.linear(
                bo.down,
                pk.map(|b| &b.down),
                &a.h,
                &mut a.ln1,
                n,
                f,
                d,
                false,
            );
            add_bias(p, bo.down_b, &mut a.ln1, d);
            norm_forward(
                cfg,
                p,
                bo.norm2_w,
                bo.norm2_b,
                &a.ln1,
                x_next,
                &mut a.ln2_mean,
                &mut a.ln2_rstd,
            );
            add_into(x_next, &a.xmid);
        } else {
            // out = xmid + h·Wdownᵀ + b
            x_next.copy_from_slice(&a.xmid);
            p.linear(bo.down, pk.map(|b| &b.down), &a.h, x_next, n, f, d, true);
            add_bias(p, bo.down_b, x_next, d);
        }
        drop(t);
        if let Some(pr) = probe.as_mut() {
            pr(&BlockView {
                layer: l,
                input: x,
                output: x_next,
                qkv: &a.qkv,
                mlp: &a.h,
            });
        }
    }
    let x = &tr.resid[cfg.n_layers % nr];
    let _t = span(Phase::NormFwd);
    norm_forward(
        cfg,
        p,
        lay.norm_f_w,
        lay.norm_f_b,
        x,
        &mut tr.lnf,
        &mut tr.lnf_mean,
        &mut tr.lnf_rstd,
    );
}

/// Adds the bias at layout offset `b` (if any) to every row of `y` (width `width`).
fn add_bias(p: Params<'_>, b: Option<usize>, y: &mut [f32], width: usize) {
    if let Some(b) = b {
        linear::bias_forward(y, p.vec(b, width));
    }
}

/// Adds the gradient of the bias at layout offset `b` (if any): the column sums of `dy`.
fn bias_grad(g: &mut [f32], b: Option<usize>, dy: &[f32], width: usize) {
    if let Some(b) = b {
        linear::bias_backward(dy, &mut g[b..b + width]);
    }
}

/// `y += x` element-wise (a residual add).
fn add_into(y: &mut [f32], x: &[f32]) {
    y.par_chunks_mut(4096)
        .zip(x.par_chunks(4096))
        .for_each(|(yc, xc)| {
            for (a, &b) in yc.iter_mut().zip(xc) {
                *a += b;
            }
        });
}

/// Element `i` shared and element `o` mutable (`i != o`).
fn pair_mut(v: &mut [Vec<f32>], i: usize, o: usize) -> (&Vec<f32>, &mut Vec<f32>) {
    if i < o {
        let (a, b) = v.split_at_mut(o);
        (&a[i], &mut b[0])
    } else {
        let (a, b) = v.split_at_mut(i);
        (&b[0], &mut a[o])
    }
}

/// Norm forward with the weight/bias vectors of the model's weights.
#[allow(clippy::too_many_arguments)]
fn norm_forward(
    cfg: &ModelConfig,
    p: Params<'_>,
    w_off: Option<usize>,
    b_off: Option<usize>,
    x: &[f32],
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let d = cfg.d_model;
    norm::forward(
        cfg.norm,
        cfg.norm_eps,
        x,
        w_off.map(|o| p.vec(o, d)),
        b_off.map(|o| p.vec(o, d)),
        y,
        mean,
        rstd,
        d,
    );
}

/// Norm backward with the weight/bias gradient slices cut out of the flat buffer.
#[allow(clippy::too_many_arguments)]
fn norm_backward(
    cfg: &ModelConfig,
    p: &[f32],
    g: &mut [f32],
    w_off: Option<usize>,
    b_off: Option<usize>,
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) {
    let d = cfg.d_model;
    // Training runs affine norms only (`ArchConfig::trainable`).
    let w_off = w_off.expect("a trainable model's norms have weights");
    let w = &p[w_off..w_off + d];
    // Weight and bias are adjacent in the layout (bias right after weight).
    let (dw, rest) = g[w_off..].split_at_mut(d);
    let db = b_off.map(|o| {
        debug_assert_eq!(o, w_off + d);
        &mut rest[..d]
    });
    norm::backward(cfg.norm, x, w, mean, rstd, dy, dx, dw, db, d);
}

/// Splits packed rows of `seq + 1` tokens into model inputs and shifted targets.
pub fn split_rows(rows: &[u32], seq: usize) -> (Vec<u32>, Vec<u32>) {
    let n = rows.len() / (seq + 1);
    let mut inputs = Vec::with_capacity(n * seq);
    let mut targets = Vec::with_capacity(n * seq);
    for r in rows.chunks_exact(seq + 1) {
        inputs.extend_from_slice(&r[..seq]);
        targets.extend_from_slice(&r[1..]);
    }
    (inputs, targets)
}
