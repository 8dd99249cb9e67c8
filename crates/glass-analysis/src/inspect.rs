//! `glass inspect`: inside one checkpoint on one sequence — the logit lens of every
//! layer's residual stream, attention probabilities per layer and head, and (for
//! `--save`) every residual stream, attention map and MLP activation as safetensors.
//!
//! Definitions (docs/analysis.md, "Inside the model"):
//! - residual stream `l` (0 ≤ l ≤ L): the input of block `l` (`0`: the scaled token
//!   embedding), `L`: the output of the last block;
//! - logit lens of residual `l`: `softmax(head(final_norm(resid_l)) · output multiplier)`,
//!   the model's own unembedding applied early; for each position its top-k tokens and
//!   the rank (1 = top) and probability of the token that actually comes next;
//! - attention `l, h`: the probabilities block `l`'s head `h` puts on each earlier
//!   position (`[n, n]`, causal), exactly as the forward pass computes them.

use std::collections::HashMap;
use std::path::Path;

use glass_engine::Model;
use serde::Serialize;

use crate::error::{AnalysisError, Result};

/// What to compute besides the logit lens.
#[derive(Debug, Clone, Default)]
pub struct InspectOptions {
    /// Tokens per position in the lens.
    pub top_k: usize,
    /// Attention maps to return: `(layer, head)` pairs.
    pub attention: Vec<(usize, usize)>,
    /// Keep every tensor for [`save`].
    pub keep_tensors: bool,
}

/// One candidate of the lens at one position.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Candidate {
    /// Token id.
    pub token: u32,
    /// Probability.
    pub prob: f32,
}

/// The lens at one position of one residual stream.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LensCell {
    /// The `top_k` most probable next tokens.
    pub top: Vec<Candidate>,
    /// The token that follows in the sequence (absent at the last position).
    pub next: Option<u32>,
    /// Its rank among all tokens (1 = most probable).
    pub next_rank: Option<u32>,
    /// Its probability.
    pub next_prob: Option<f32>,
}

/// One attention map.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AttentionMap {
    /// Block.
    pub layer: usize,
    /// Query head.
    pub head: usize,
    /// `[n][n]` probabilities, row = query position.
    pub probs: Vec<Vec<f32>>,
}

/// Everything `glass inspect` reports for one checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// Token ids of the sequence.
    pub tokens: Vec<u32>,
    /// Blocks.
    pub layers: usize,
    /// `lens[l][p]`: residual stream `l` (0 = embedding, `layers` = last block's output)
    /// at position `p`.
    pub lens: Vec<Vec<LensCell>>,
    /// The maps asked for.
    pub attention: Vec<AttentionMap>,
    /// Every tensor, for [`save`] (not serialized).
    #[serde(skip)]
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// The lens cells of one residual stream's logits `[n, V]`, positions in parallel. The
/// rank compares logits (softmax is monotone); probabilities are `exp(l - max) / Σ`,
/// the sum in f64 in token order.
fn lens_cells(logits: &[f32], vocab: usize, tokens: &[u32], top_k: usize) -> Vec<LensCell> {
    use glass_engine::ops::fastmath::exp;
    use glass_engine::ops::wide::wide;
    use rayon::prelude::*;
    logits
        .par_chunks_exact(vocab)
        .enumerate()
        .map_init(
            || vec![0.0f32; vocab],
            |scratch, (p, row)| {
                // Short loops compiled for the GEMM kernel's vector width (`wide`): the same
                // operations in the same order, so the same bits on every CPU.
                // The maximum in 16 fixed lanes (max is exact: any order gives the same).
                let m = wide(|| {
                    let mut mx = [f32::NEG_INFINITY; 16];
                    let chunks = row.chunks_exact(16);
                    let rest = chunks.remainder();
                    for c in chunks {
                        for (a, &x) in mx.iter_mut().zip(c) {
                            *a = a.max(x);
                        }
                    }
                    rest.iter()
                        .chain(&mx)
                        .fold(f32::NEG_INFINITY, |a, &b| a.max(b))
                });
                // exp(z − m) per logit, then Σ in 8 fixed lanes in f64.
                wide(|| {
                    for (e, &x) in scratch.iter_mut().zip(row) {
                        *e = exp(x - m);
                    }
                });
                let sum = wide(|| {
                    let mut lanes = [0.0f64; 8];
                    let chunks = scratch.chunks_exact(8);
                    let tail = chunks.remainder();
                    for c in chunks {
                        for (acc, &e) in lanes.iter_mut().zip(c) {
                            *acc += e as f64;
                        }
                    }
                    lanes.iter().sum::<f64>() + tail.iter().map(|&e| e as f64).sum::<f64>()
                });
                let prob = |t: u32| (exp(row[t as usize] - m) as f64 / sum) as f32;
                // Highest logit first; ties by lower id (deterministic): `a` before `b`.
                let before = |a: u32, b: u32| {
                    let (x, y) = (row[a as usize], row[b as usize]);
                    x > y || (x == y && a < b)
                };
                // The top k in one pass, kept sorted (k is small); most logits fall below the
                // current k-th and cost one comparison.
                let k = top_k.min(vocab);
                let mut best: Vec<u32> = Vec::with_capacity(k + 1);
                if k > 0 {
                    let mut floor = f32::NEG_INFINITY;
                    for (t, &x) in row.iter().enumerate() {
                        if best.len() == k
                            && x <= floor
                            && (x < floor || !before(t as u32, best[k - 1]))
                        {
                            continue;
                        }
                        let t = t as u32;
                        let at = best.partition_point(|&b| before(b, t));
                        best.insert(at, t);
                        best.truncate(k);
                        if best.len() == k {
                            floor = row[best[k - 1] as usize];
                        }
                    }
                }
                let top = best
                    .iter()
                    .map(|&t| Candidate {
                        token: t,
                        prob: prob(t),
                    })
                    .collect();
                let next = tokens.get(p + 1).copied();
                let (next_rank, next_prob) = match next {
                    Some(t) => {
                        let lt = row[t as usize];
                        let above = row.iter().filter(|&&q| q > lt).count()
                            + row[..t as usize].iter().filter(|&&q| q == lt).count();
                        (Some(above as u32 + 1), Some(prob(t)))
                    }
                    None => (None, None),
                };
                LensCell {
                    top,
                    next,
                    next_rank,
                    next_prob,
                }
            },
        )
        .collect()
}

/// Inspects `model` on `tokens` (one sequence, at most the context).
pub fn inspect(model: &Model, tokens: &[u32], opts: &InspectOptions) -> Result<Inspection> {
    let cfg = &model.cfg;
    let (layers, heads) = (cfg.n_layers, cfg.n_heads);
    for &(l, h) in &opts.attention {
        if l >= layers {
            return Err(AnalysisError::Input(format!(
                "layer {l} is out of range: the model has {layers} layers (0..={})",
                layers - 1
            )));
        }
        if h >= heads {
            return Err(AnalysisError::Input(format!(
                "head {h} is out of range: the model has {heads} heads per layer (0..={})",
                heads - 1
            )));
        }
    }
    let n = tokens.len();
    let vocab = cfg.vocab_size;
    let mut lens = Vec::with_capacity(layers + 1);
    let mut attention = Vec::new();
    let mut tensors = Vec::new();
    let (d, f) = (cfg.d_model, cfg.ffn_hidden);
    // Weights packed once: the lens multiplies by the head L + 1 times, into one buffer.
    let pm = model.packed();
    let mut buf = vec![0.0f32; n * vocab];
    let logits = pm.forward_probed(tokens, &mut |b| {
        if b.layer == 0 {
            pm.lens_logits_into(b.input, &mut buf);
            lens.push(lens_cells(&buf, vocab, tokens, opts.top_k));
            if opts.keep_tensors {
                tensors.push(("resid.0".to_string(), vec![n, d], b.input.to_vec()));
            }
        }
        // The last block's lens is the model's output (computed below, same bits).
        if b.layer + 1 < layers {
            pm.lens_logits_into(b.output, &mut buf);
            lens.push(lens_cells(&buf, vocab, tokens, opts.top_k));
        }
        for &(l, h) in &opts.attention {
            if l == b.layer {
                let p = model.attention_probs(b.qkv, h);
                attention.push(AttentionMap {
                    layer: l,
                    head: h,
                    probs: p.chunks_exact(n).map(|r| r.to_vec()).collect(),
                });
            }
        }
        if opts.keep_tensors {
            let l = b.layer;
            tensors.push((format!("resid.{}", l + 1), vec![n, d], b.output.to_vec()));
            let mut att = Vec::with_capacity(heads * n * n);
            for h in 0..heads {
                att.extend(model.attention_probs(b.qkv, h));
            }
            tensors.push((format!("attn.{l}"), vec![heads, n, n], att));
            tensors.push((format!("mlp.{l}"), vec![n, f], b.mlp.to_vec()));
        }
    })?;
    lens.push(lens_cells(&logits, vocab, tokens, opts.top_k));
    if opts.keep_tensors {
        tensors.push(("logits".to_string(), vec![n, vocab], logits));
    }
    Ok(Inspection {
        tokens: tokens.to_vec(),
        layers,
        lens,
        attention,
        tensors,
    })
}

/// Writes an inspection's tensors (and the token ids) as safetensors at `path`,
/// atomically. Names: `tokens` (u32 `[n]`), `resid.{l}` (`[n, D]`, l = 0..=L),
/// `attn.{l}` (`[H, n, n]`), `mlp.{l}` (`[n, F]`), `logits` (`[n, V]`), all f32.
pub fn save(ins: &Inspection, path: &Path, meta: HashMap<String, String>) -> Result<(String, u64)> {
    if ins.tensors.is_empty() {
        return Err(AnalysisError::Input(
            "the inspection kept no tensors (InspectOptions::keep_tensors)".into(),
        ));
    }
    let tok_bytes: Vec<u8> = ins.tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    let mut views = vec![glass_io::safetensors::TensorBytes {
        name: "tokens".into(),
        dtype: safetensors::Dtype::U32,
        shape: vec![ins.tokens.len()],
        data: &tok_bytes,
    }];
    for (name, shape, v) in &ins.tensors {
        views.push(glass_io::safetensors::TensorBytes {
            name: name.clone(),
            dtype: safetensors::Dtype::F32,
            shape: shape.clone(),
            data: bytemuck::cast_slice(v),
        });
    }
    Ok(glass_io::safetensors::write_safetensors(
        path, &views, &meta,
    )?)
}
