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
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use crate::config::ModelConfig;
use crate::layout::{BlockOffsets, ParamGroup, ParamLayout};
use crate::ops::attention::{self, AttnDims};
use crate::ops::lm_head::{self, HeadDims};
use crate::ops::rope::Rope;
use crate::ops::{embedding, linear, norm, swiglu};
use crate::optim::AdamW;
use crate::EngineError;

/// Standard deviation of the LLaMA initialiser (`initializer_range`).
pub const INIT_STD: f32 = 0.02;

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

/// Every activation and scratch buffer for one micro-batch shape, allocated once.
#[derive(Debug)]
struct Workspace {
    batch: usize,
    seq: usize,
    tokens: Vec<u32>,
    resid: Vec<Vec<f32>>,
    blocks: Vec<BlockActs>,
    lnf: Vec<f32>,
    lnf_mean: Vec<f32>,
    lnf_rstd: Vec<f32>,
    losses: Vec<f32>,
    logits_buf: Vec<f32>,
    dres: Vec<f32>,
    dln: Vec<f32>,
    datt: Vec<f32>,
    dqkv: Vec<f32>,
    dh: Vec<f32>,
    dgu: Vec<f32>,
}

impl Workspace {
    fn new(cfg: &ModelConfig, batch: usize, seq: usize) -> Self {
        let n = batch * seq;
        let (d, f, hd) = (cfg.d_model, cfg.ffn_hidden, cfg.head_dim());
        let w = (cfg.n_heads + 2 * cfg.n_kv_heads) * hd;
        let z = |len: usize| vec![0.0f32; len];
        let blocks = (0..cfg.n_layers)
            .map(|_| BlockActs {
                ln1: z(n * d),
                ln1_mean: z(n),
                ln1_rstd: z(n),
                qkv: z(n * w),
                att: z(n * cfg.n_heads * hd),
                lse: z(batch * cfg.n_heads * seq),
                xmid: z(n * d),
                ln2: z(n * d),
                ln2_mean: z(n),
                ln2_rstd: z(n),
                gu: z(n * 2 * f),
                h: z(n * f),
            })
            .collect();
        Workspace {
            batch,
            seq,
            tokens: vec![0; n],
            resid: (0..=cfg.n_layers).map(|_| z(n * d)).collect(),
            blocks,
            lnf: z(n * d),
            lnf_mean: z(n),
            lnf_rstd: z(n),
            losses: z(n),
            logits_buf: Vec::new(),
            dres: z(n * d),
            dln: z(n * d),
            datt: z(n * cfg.n_heads * hd),
            dqkv: z(n * w),
            dh: z(n * f),
            dgu: z(n * 2 * f),
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
    rope: Rope,
    ws: Option<Workspace>,
}

impl Model {
    /// Creates a model with the LLaMA initialisation: matrices ~ N(0, 0.02²), norm
    /// weights 1, biases 0. Each tensor draws from its own ChaCha8 stream of `seed`, so
    /// initialisation is parallel and still deterministic.
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
                let normal = Normal::new(0.0f32, INIT_STD).expect("valid std");
                s.iter_mut().for_each(|x| *x = normal.sample(&mut rng));
            }
        });
        Ok(m)
    }

    /// Creates a model with all parameters zero (to be filled from a checkpoint).
    pub fn zeros(cfg: &ModelConfig) -> Result<Self, EngineError> {
        cfg.validate()?;
        let layout = ParamLayout::new(cfg);
        let n = layout.total();
        Ok(Model {
            cfg: cfg.clone(),
            rope: Rope::new(cfg),
            params: vec![0.0; n],
            grads: vec![0.0; n],
            layout,
            ws: None,
        })
    }

    /// The RoPE tables (shared with KV-cache decoding).
    pub(crate) fn rope(&self) -> &Rope {
        &self.rope
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

    fn prepare(&mut self, inputs: &[u32], batch: usize, seq: usize) -> Result<(), EngineError> {
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
        if !matches!(&self.ws, Some(w) if w.batch == batch && w.seq == seq) {
            self.ws = None; // free the old shape before allocating the new one
            self.ws = Some(Workspace::new(&self.cfg, batch, seq));
        }
        self.ws
            .as_mut()
            .expect("workspace")
            .tokens
            .copy_from_slice(inputs);
        Ok(())
    }

    fn head_dims(&self) -> HeadDims {
        HeadDims::new(&self.cfg)
    }

    /// Runs the blocks and the final norm, saving every activation.
    fn forward_trunk(&mut self) {
        let cfg = &self.cfg;
        let p = &self.params;
        let lay = &self.layout;
        let ws = self.ws.as_mut().expect("prepared");
        let (batch, seq) = (ws.batch, ws.seq);
        let n = batch * seq;
        let (d, f, hd) = (cfg.d_model, cfg.ffn_hidden, cfg.head_dim());
        let (nh, nkv) = (cfg.n_heads, cfg.n_kv_heads);
        let w = (nh + 2 * nkv) * hd;
        let dims = AttnDims::new(cfg, batch, seq);
        let wte = &p[lay.embed..lay.embed + cfg.vocab_size * d];
        embedding::forward(
            wte,
            &ws.tokens,
            &mut ws.resid[0],
            d,
            cfg.mup.embedding_multiplier,
        );
        for (l, bo) in lay.blocks.iter().enumerate() {
            let (before, after) = ws.resid.split_at_mut(l + 1);
            let x = &before[l];
            let x_next = &mut after[0];
            let a = &mut ws.blocks[l];
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
            linear::forward(
                &a.ln1,
                &p[bo.qkv..bo.qkv + w * d],
                &mut a.qkv,
                n,
                d,
                w,
                false,
            );
            let rope = &self.rope;
            a.qkv.par_chunks_mut(w).enumerate().for_each(|(r, row)| {
                let pos = r % seq;
                rope.rotate(row, nh, hd, pos, false);
                rope.rotate(&mut row[nh * hd..], nkv, hd, pos, false);
            });
            attention::forward(dims, &a.qkv, &mut a.att, &mut a.lse);
            a.xmid.copy_from_slice(x);
            linear::forward(
                &a.att,
                &p[bo.o..bo.o + d * nh * hd],
                &mut a.xmid,
                n,
                nh * hd,
                d,
                true,
            );
            norm_forward(
                cfg,
                p,
                bo.norm2_w,
                bo.norm2_b,
                &a.xmid,
                &mut a.ln2,
                &mut a.ln2_mean,
                &mut a.ln2_rstd,
            );
            linear::forward(
                &a.ln2,
                &p[bo.gate_up..bo.gate_up + 2 * f * d],
                &mut a.gu,
                n,
                d,
                2 * f,
                false,
            );
            swiglu::forward(&a.gu, &mut a.h, f);
            x_next.copy_from_slice(&a.xmid);
            linear::forward(&a.h, &p[bo.down..bo.down + d * f], x_next, n, f, d, true);
        }
        let x = &ws.resid[cfg.n_layers];
        norm_forward(
            cfg,
            p,
            lay.norm_f_w,
            lay.norm_f_b,
            x,
            &mut ws.lnf,
            &mut ws.lnf_mean,
            &mut ws.lnf_rstd,
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
        self.prepare(inputs, batch, seq)?;
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
        self.prepare(inputs, batch, seq)?;
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
        let head = &self.params[self.layout.head..self.layout.head + hdims.vocab * hdims.d];
        let ws = self.ws.as_mut().expect("prepared");
        lm_head::forward(
            hdims,
            &ws.lnf,
            head,
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
        self.prepare(inputs, batch, seq)?;
        self.forward_trunk();
        let hdims = self.head_dims();
        let head = &self.params[self.layout.head..self.layout.head + hdims.vocab * hdims.d];
        let ws = self.ws.as_ref().expect("prepared");
        let mut out = vec![0.0f32; batch * seq * hdims.vocab];
        lm_head::logits(hdims, &ws.lnf, head, batch * seq, &mut out);
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
            let (head, dhead) = (&p[lay.head..lay.head + vd], &mut g[lay.head..lay.head + vd]);
            lm_head::forward_backward(
                hdims,
                &ws.lnf,
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
        norm_backward(
            cfg,
            p,
            g,
            lay.norm_f_w,
            lay.norm_f_b,
            &ws.resid[cfg.n_layers],
            &ws.lnf_mean,
            &ws.lnf_rstd,
            &ws.dln,
            &mut ws.dres,
        );

        for (l, bo) in lay.blocks.iter().enumerate().rev() {
            let BlockOffsets {
                qkv,
                o,
                gate_up,
                down,
                ..
            } = *bo;
            let a = &ws.blocks[l];
            // x_next = xmid + h·Wdownᵀ
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
            swiglu::backward(&a.gu, &ws.dh, &mut ws.dgu, f);
            linear::backward(
                &ws.dgu,
                &a.ln2,
                &p[gate_up..gate_up + 2 * f * d],
                &mut ws.dln,
                &mut g[gate_up..gate_up + 2 * f * d],
                n,
                d,
                2 * f,
            );
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
            // xmid = x + att·Woᵀ
            let ad = nh * hd;
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
            attention::backward(dims, &a.qkv, &a.att, &a.lse, &ws.datt, &mut ws.dqkv);
            let rope = &self.rope;
            ws.dqkv.par_chunks_mut(w).enumerate().for_each(|(r, row)| {
                let pos = r % seq;
                rope.rotate(row, nh, hd, pos, true);
                rope.rotate(&mut row[nh * hd..], nkv, hd, pos, true);
            });
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
            norm_backward(
                cfg,
                p,
                g,
                bo.norm1_w,
                bo.norm1_b,
                &ws.resid[l],
                &a.ln1_mean,
                &a.ln1_rstd,
                &ws.dln,
                &mut ws.dres,
            );
        }
        embedding::backward(
            &mut g[lay.embed..lay.embed + vd],
            &ws.tokens,
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
        let mult = self.cfg.mup.lr_multipliers;
        opt.step(&mut self.params, &mut self.grads, &self.layout, lr, &mult)
    }

    /// Mean loss of the last micro-batch's rows (diagnostics).
    pub fn last_losses(&self) -> &[f32] {
        self.ws.as_ref().map_or(&[], |w| &w.losses)
    }
}

/// Norm forward with the weight/bias slices cut out of the flat buffer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn norm_forward(
    cfg: &ModelConfig,
    p: &[f32],
    w_off: usize,
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
        &p[w_off..w_off + d],
        b_off.map(|o| &p[o..o + d]),
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
    w_off: usize,
    b_off: Option<usize>,
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) {
    let d = cfg.d_model;
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
