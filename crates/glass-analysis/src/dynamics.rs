//! `glass analyze dynamics`: how the inside of the model changes over training, for every
//! checkpoint of a run, stored in `metrics.sqlite` (`dynamics` table).
//!
//! Definitions (docs/analysis.md, "Training dynamics"):
//! - **induction score** of head `(l, h)` (Olsson et al. 2022, "In-context Learning and
//!   Induction Heads"): on sequences of `T` random tokens followed by the same `T`
//!   tokens, the mean attention a query at position `i ∈ [T, 2T)` puts on position
//!   `i − T + 1`, the token after the previous occurrence of the current token;
//! - **previous-token score**: on the same sequences, the mean attention a query at
//!   `i ∈ [1, 2T)` puts on position `i − 1`;
//! - **weight norm** of a parameter group (the embedding, each block, the final norm,
//!   the untied head): the L2 norm of all its values; **update norm**: `‖W_k − W_{k−1}‖`
//!   against the run's previous checkpoint; **update cosine**: `cos(W_k, W_{k−1})`.
//!
//! The sequences are a pure function of the seed ([`repeated_batch`]), so every checkpoint
//! (and a reference implementation: bench/induction_reference.py) sees the same tokens.

use std::path::Path;

use glass_engine::Model;
use serde::Serialize;

use crate::error::{AnalysisError, Result};

/// Settings of the head scores.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct DynamicsSettings {
    /// Sequences.
    pub batch: usize,
    /// Random tokens before the repeat (`T`); each sequence is `2T` tokens.
    pub half_len: usize,
    /// Seed of the token generator.
    pub seed: u64,
}

impl DynamicsSettings {
    /// 4 sequences of `2T` tokens with `T = min(64, max_seq_len / 2)`, seed 1234.
    pub fn for_model(cfg: &glass_engine::ModelConfig) -> Self {
        DynamicsSettings {
            batch: 4,
            half_len: 64.min(cfg.max_seq_len / 2),
            seed: 1234,
        }
    }
}

/// The sequences of the head scores: `batch` times (`half_len` tokens drawn by xorshift64
/// from `seed`, uniform over `[0, vocab)` by `x mod vocab`, then the same tokens again).
/// The generator: `x ^= x << 13; x ^= x >> 7; x ^= x << 17`, started at
/// `seed · 0x9E3779B97F4A7C15 | 1`, one draw per token, sequence after sequence.
pub fn repeated_batch(vocab: usize, s: &DynamicsSettings) -> Vec<Vec<u32>> {
    let mut x = s.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..s.batch)
        .map(|_| {
            let half: Vec<u32> = (0..s.half_len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % vocab as u64) as u32
                })
                .collect();
            let mut seq = half.clone();
            seq.extend_from_slice(&half);
            seq
        })
        .collect()
}

/// Induction and previous-token scores, each `[layers · heads]` (layer-major).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadScores {
    /// Induction score per head.
    pub induction: Vec<f64>,
    /// Previous-token score per head.
    pub prev_token: Vec<f64>,
}

/// The head scores of `model` on `seqs` (each `2T` tokens, the second half repeating the
/// first).
pub fn head_scores(model: &Model, seqs: &[Vec<u32>]) -> Result<HeadScores> {
    let (layers, heads) = (model.cfg.n_layers, model.cfg.n_heads);
    let mut induction = vec![0.0f64; layers * heads];
    let mut prev_token = vec![0.0f64; layers * heads];
    let pm = model.packed();
    for seq in seqs {
        let n = seq.len();
        let t = n / 2;
        if t < 2 || n % 2 != 0 {
            return Err(AnalysisError::Input(
                "head scores need sequences of 2T tokens with T ≥ 2".into(),
            ));
        }
        pm.forward_probed(seq, &mut |b| {
            for h in 0..heads {
                let a = model.attention_probs(b.qkv, h);
                let ind: f64 = (t..n).map(|i| a[i * n + i - t + 1] as f64).sum::<f64>();
                let prev: f64 = (1..n).map(|i| a[i * n + i - 1] as f64).sum::<f64>();
                induction[b.layer * heads + h] += ind / (n - t) as f64;
                prev_token[b.layer * heads + h] += prev / (n - 1) as f64;
            }
        })?;
    }
    let k = seqs.len().max(1) as f64;
    induction.iter_mut().for_each(|x| *x /= k);
    prev_token.iter_mut().for_each(|x| *x /= k);
    Ok(HeadScores {
        induction,
        prev_token,
    })
}

/// The parameter group of a tensor name: `embed`, `layer.{l}`, `final_norm`, `head`.
pub fn group_of(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("model.layers.") {
        let l = rest.split('.').next().unwrap_or("");
        return format!("layer.{l}");
    }
    match name {
        "model.embed_tokens.weight" => "embed".into(),
        "lm_head.weight" => "head".into(),
        _ => "final_norm".into(),
    }
}

/// Per group: `(name, Σw², Σ(w−p)², Σw·p)` of checkpoint `k`'s weights against `prev`'s
/// (`None`: only `Σw²`), reading both mapped files tensor by tensor (never a whole f32
/// model in memory), in f64 in layout order.
fn weight_sums(run_dir: &Path, k: u32, prev: Option<u32>) -> Result<Vec<(String, f64, f64, f64)>> {
    let (w, _) = glass_run::map_stored_weights(run_dir, Some(k))?;
    w.verify()?;
    let p = match prev {
        Some(j) => {
            let (p, _) = glass_run::map_stored_weights(run_dir, Some(j))?;
            p.verify()?;
            Some(p)
        }
        None => None,
    };
    let wt = w.tensors();
    let pt = p.as_ref().map(|p| p.tensors());
    let mut out: Vec<(String, f64, f64, f64)> = Vec::new();
    const CHUNK: usize = 1 << 16;
    let (mut a, mut b) = (vec![0.0f32; CHUNK], vec![0.0f32; CHUNK]);
    for (i, t) in wt.iter().enumerate() {
        let g = group_of(&t.name);
        if out.last().map(|o| &o.0) != Some(&g) {
            out.push((g, 0.0, 0.0, 0.0));
        }
        let size = glass_run::weights::dtype_size(t.dtype);
        let n = t.data.len() / size;
        let acc = out.last_mut().expect("pushed");
        let mut at = 0;
        while at < n {
            let m = CHUNK.min(n - at);
            glass_run::weights::widen(t.dtype, &t.data[at * size..(at + m) * size], &mut a[..m]);
            acc.1 += a[..m].iter().map(|&x| x as f64 * x as f64).sum::<f64>();
            if let Some(pt) = &pt {
                let q = &pt[i];
                let qs = glass_run::weights::dtype_size(q.dtype);
                glass_run::weights::widen(q.dtype, &q.data[at * qs..(at + m) * qs], &mut b[..m]);
                for (&x, &y) in a[..m].iter().zip(&b[..m]) {
                    let (x, y) = (x as f64, y as f64);
                    acc.2 += (x - y) * (x - y);
                    acc.3 += x * y;
                }
            }
            at += m;
        }
    }
    Ok(out)
}

/// What one checkpoint's analysis produced.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointDynamics {
    /// Checkpoint index.
    pub checkpoint: u32,
    /// Its step.
    pub step: u64,
    /// Every value stored.
    pub rows: Vec<glass_run::metrics::DynamicsRow>,
    /// Seconds it took.
    pub seconds: f64,
}

/// Analyses the checkpoints `sel` of `run_dir` and stores each in `metrics.sqlite`.
/// `progress` gets one line per checkpoint.
pub fn analyze_dynamics(
    run_dir: &Path,
    sel: &glass_run::Selection,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<CheckpointDynamics>> {
    let manifest = glass_run::RunManifest::require(run_dir)?;
    let entries = sel.checkpoints(&manifest)?;
    let mut metrics = glass_run::Metrics::open(run_dir)?;
    let mut out = Vec::new();
    for e in entries {
        let t0 = std::time::Instant::now();
        let (model, k) = glass_run::load_model(run_dir, Some(e.index))?;
        let s = DynamicsSettings::for_model(&model.cfg);
        let scores = head_scores(&model, &repeated_batch(model.cfg.vocab_size, &s))?;
        let heads = model.cfg.n_heads;
        drop(model);
        let mut rows = Vec::new();
        for (i, (&ind, &prev)) in scores.induction.iter().zip(&scores.prev_token).enumerate() {
            let name = format!("L{}.H{}", i / heads, i % heads);
            rows.push(row(k, "induction", &name, ind));
            rows.push(row(k, "prev_token", &name, prev));
        }
        let prev = manifest
            .checkpoints
            .iter()
            .rev()
            .find(|c| c.index < k)
            .map(|c| c.index);
        for (g, ww, dd, wp) in weight_sums(run_dir, k, prev)? {
            rows.push(row(k, "weight_norm", &g, ww.sqrt()));
            if prev.is_some() {
                rows.push(row(k, "update_norm", &g, dd.sqrt()));
                // |w − p|² = |w|² − 2·w·p + |p|², so |p|² = |w − p|² − |w|² + 2·w·p.
                let pp = dd - ww + 2.0 * wp;
                let cos = if ww > 0.0 && pp > 0.0 {
                    wp / (ww.sqrt() * pp.sqrt())
                } else {
                    0.0
                };
                rows.push(row(k, "update_cosine", &g, cos));
            }
        }
        let seconds = t0.elapsed().as_secs_f64();
        let settings = serde_json::to_string(&s).expect("json");
        metrics.record_dynamics(k, &settings, &rows, seconds)?;
        progress(&format!(
            "checkpoint {k} (step {}): {} values in {seconds:.2} s",
            e.step,
            rows.len()
        ));
        out.push(CheckpointDynamics {
            checkpoint: k,
            step: e.step,
            rows,
            seconds,
        });
    }
    Ok(out)
}

fn row(checkpoint: u32, kind: &str, name: &str, value: f64) -> glass_run::metrics::DynamicsRow {
    glass_run::metrics::DynamicsRow {
        checkpoint,
        kind: kind.into(),
        name: name.into(),
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_batch_repeats_and_is_a_pure_function_of_the_seed() {
        let s = DynamicsSettings {
            batch: 2,
            half_len: 5,
            seed: 7,
        };
        let a = repeated_batch(100, &s);
        assert_eq!(a, repeated_batch(100, &s));
        for seq in &a {
            assert_eq!(seq.len(), 10);
            assert_eq!(seq[..5], seq[5..]);
            assert!(seq.iter().all(|&t| t < 100));
        }
        assert_ne!(a[0], a[1]);
    }

    #[test]
    fn groups_follow_the_layout_names() {
        assert_eq!(group_of("model.layers.12.mlp.up_proj.weight"), "layer.12");
        assert_eq!(group_of("model.embed_tokens.weight"), "embed");
        assert_eq!(group_of("model.norm.weight"), "final_norm");
        assert_eq!(group_of("lm_head.weight"), "head");
    }
}
