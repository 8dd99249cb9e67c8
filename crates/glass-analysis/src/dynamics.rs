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
//!   against the run's previous checkpoint; **update cosine**: `cos(W_k, W_{k−1})`;
//! - **per-source held-out loss** (`source_nats_per_token`, `source_bits_per_byte`): on
//!   each source's held-out documents ([`glass_data::heldout`]: `[data.heldout]`'s, or the
//!   validation sources' chosen by the same rule), `−Σ log p / Σ tokens` and
//!   `−Σ log p / (ln 2 · Σ bytes)`, the log-likelihoods being `glass eval`'s rolling
//!   ones (the harness's `loglikelihood_rolling`), computed by the same scorer, so the
//!   bits per byte equal `glass eval`'s `bits_per_byte` on the same documents.
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

/// One source's held-out loss at one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceLoss {
    /// Source name.
    pub name: String,
    /// Documents scored.
    pub docs: usize,
    /// Tokens scored.
    pub tokens: usize,
    /// UTF-8 bytes scored.
    pub bytes: usize,
    /// `−Σ log p / Σ tokens` (natural log).
    pub nats_per_token: f64,
    /// `glass eval`'s `bits_per_byte`: `−Σ log p / (ln 2 · Σ bytes)`.
    pub bits_per_byte: f64,
}

/// Every source's held-out loss under `model`: each source's documents scored as
/// `glass eval` scores a `loglikelihood_rolling` task whose documents are their texts
/// (same scorer, same document groups, same aggregation), so the figures equal that
/// task's `bits_per_byte` bit for bit.
pub fn source_losses(
    model: &Model,
    tok: &glass_data::GlassTokenizer,
    heldout: &glass_data::heldout::HeldoutFile,
) -> Result<Vec<SourceLoss>> {
    use glass_eval::results::{aggregate, samples};
    use glass_eval::task::Metric;
    let sp = tok.specials();
    let packed = model.packed();
    let scorer = glass_eval::Scorer {
        model,
        packed: Some(&packed),
        tokenizer: tok,
        prefix_token: sp.bos.unwrap_or(sp.eos),
        max_length: model.cfg.max_seq_len,
    };
    let mut out = Vec::new();
    for src in &heldout.sources {
        let prepared: Vec<glass_eval::Prepared> = src
            .docs
            .iter()
            .map(|d| glass_eval::Prepared::Rolling {
                text: d.text.clone(),
            })
            .collect();
        let scored = scorer.score_all(&prepared, &|_| {})?;
        let samples = samples(&prepared, &scored);
        let ll: f64 = samples.iter().filter_map(|s| s.loglikelihood).sum();
        let tokens: usize = samples.iter().filter_map(|s| s.tokens).sum();
        let bytes: usize = samples.iter().filter_map(|s| s.bytes).sum();
        let bpb = aggregate(&[Metric::BitsPerByte], &samples)[0].value;
        out.push(SourceLoss {
            name: src.name.clone(),
            docs: samples.len(),
            tokens,
            bytes,
            nats_per_token: -ll / tokens.max(1) as f64,
            bits_per_byte: bpb,
        });
    }
    Ok(out)
}

/// What one checkpoint's analysis produced.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CheckpointDynamics {
    /// Checkpoint index.
    pub checkpoint: u32,
    /// Its step.
    pub step: u64,
    /// Every value stored.
    pub rows: Vec<glass_run::metrics::DynamicsRow>,
    /// Seconds it took.
    pub seconds: f64,
    /// The settings stored with the rows (head-score sequences, held-out documents).
    #[serde(skip)]
    settings: String,
}

/// A run's held-out documents and the tokenizer that scores them.
type Heldout = (glass_data::heldout::HeldoutFile, glass_data::GlassTokenizer);

/// The held-out documents of a run and its tokenizer, or `None` (with the reason) when
/// the run has none to score.
fn heldout_of(run_dir: &Path) -> Result<(Option<Heldout>, Option<String>)> {
    let manifest = run_dir
        .join("data")
        .join(glass_data::manifest::MANIFEST_FILE);
    if !manifest.exists() || glass_data::external::is_external(run_dir) {
        return Ok((
            None,
            Some(format!(
                "no per-source held-out loss: {} has no data prepared by `glass data prepare`",
                run_dir.display()
            )),
        ));
    }
    let h = glass_data::heldout::for_run(run_dir)?;
    if h.sources.is_empty() {
        return Ok((
            None,
            Some("no per-source held-out loss: the run has neither [data.heldout] nor [data.validation] sources".into()),
        ));
    }
    // The tokenizer `glass eval` scores with.
    let tok = glass_run::run_tokenizer(run_dir)?;
    Ok((Some((h, tok)), None))
}

/// Analyses the checkpoints `sel` of `run_dir` and stores each in `metrics.sqlite`.
/// `progress` gets one line per checkpoint.
pub fn analyze_dynamics(
    run_dir: &Path,
    sel: &glass_run::Selection,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<CheckpointDynamics>> {
    analyze_dynamics_on(run_dir, sel, progress, &glass_dist::Solo)
}

/// [`analyze_dynamics`] as one rank of `comm` (under mpirun): checkpoint `i` of the
/// selection is analysed by rank `i mod W`; rank 0 gathers every result and stores them
/// in checkpoint order, the same rows one process stores, and returns them all (other
/// ranks return their own).
pub fn analyze_dynamics_on(
    run_dir: &Path,
    sel: &glass_run::Selection,
    progress: &mut dyn FnMut(&str),
    comm: &dyn glass_dist::Collective,
) -> Result<Vec<CheckpointDynamics>> {
    let manifest = glass_run::RunManifest::require(run_dir)?;
    let entries = sel.checkpoints(&manifest)?;
    let (heldout, note) = heldout_of(run_dir)?;
    if let Some(n) = note {
        progress(&n);
    }
    let (w, me) = (comm.size(), comm.rank());
    let parallel = w > 1;
    let mut metrics = if me == 0 {
        Some(glass_run::Metrics::open(run_dir)?)
    } else {
        None
    };
    let mut mine: Vec<CheckpointDynamics> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if i % w != me {
            continue;
        }
        let c = analyze_checkpoint(run_dir, &manifest, e, heldout.as_ref())?;
        if !parallel {
            // One process: store each checkpoint as soon as it is done.
            store(metrics.as_mut().expect("rank 0"), &c, progress)?;
        }
        mine.push(c);
    }
    if !parallel {
        return Ok(mine);
    }
    let b = serde_json::to_vec(&mine.iter().map(|c| (c, &c.settings)).collect::<Vec<_>>())
        .expect("json");
    let all = comm.all_gather_bytes(&b).map_err(|e| {
        AnalysisError::Input(format!("gathering the dynamics of every rank failed: {e}"))
    })?;
    let Some(metrics) = metrics.as_mut() else {
        return Ok(mine);
    };
    let mut got: Vec<CheckpointDynamics> = Vec::new();
    for (rank, b) in all.iter().enumerate() {
        let part: Vec<(CheckpointDynamics, String)> = serde_json::from_slice(b).map_err(|e| {
            AnalysisError::Input(format!("rank {rank} sent malformed dynamics: {e}"))
        })?;
        got.extend(part.into_iter().map(|(mut c, s)| {
            c.settings = s;
            c
        }));
    }
    // Checkpoint order, as one process stores them.
    let order = |k: u32| entries.iter().position(|e| e.index == k);
    got.sort_by_key(|c| order(c.checkpoint));
    if got.len() != entries.len() || got.iter().any(|c| order(c.checkpoint).is_none()) {
        return Err(AnalysisError::Input(format!(
            "the ranks returned {} checkpoints' dynamics for {} selected",
            got.len(),
            entries.len()
        )));
    }
    for c in &got {
        store(metrics, c, progress)?;
    }
    Ok(got)
}

fn store(
    metrics: &mut glass_run::Metrics,
    c: &CheckpointDynamics,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    metrics.record_dynamics(c.checkpoint, &c.settings, &c.rows, c.seconds)?;
    progress(&format!(
        "checkpoint {} (step {}): {} values in {:.2} s",
        c.checkpoint,
        c.step,
        c.rows.len(),
        c.seconds
    ));
    Ok(())
}

/// Every value of one checkpoint.
fn analyze_checkpoint(
    run_dir: &Path,
    manifest: &glass_run::RunManifest,
    e: &glass_run::manifest::CheckpointEntry,
    heldout: Option<&Heldout>,
) -> Result<CheckpointDynamics> {
    let t0 = std::time::Instant::now();
    let (model, k) = glass_run::load_model(run_dir, Some(e.index))?;
    let s = DynamicsSettings::for_model(&model.cfg);
    let scores = head_scores(&model, &repeated_batch(model.cfg.vocab_size, &s))?;
    let heads = model.cfg.n_heads;
    let mut rows = Vec::new();
    for (i, (&ind, &prev)) in scores.induction.iter().zip(&scores.prev_token).enumerate() {
        let name = format!("L{}.H{}", i / heads, i % heads);
        rows.push(row(k, "induction", &name, ind));
        rows.push(row(k, "prev_token", &name, prev));
    }
    if let Some((h, tok)) = heldout {
        for l in source_losses(&model, tok, h)? {
            rows.push(row(k, "source_nats_per_token", &l.name, l.nats_per_token));
            rows.push(row(k, "source_bits_per_byte", &l.name, l.bits_per_byte));
        }
    }
    drop(model);
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
    let mut settings = serde_json::to_value(s).expect("json");
    if let Some((h, _)) = heldout {
        settings["heldout"] = h.summary();
    }
    Ok(CheckpointDynamics {
        checkpoint: k,
        step: e.step,
        rows,
        seconds: t0.elapsed().as_secs_f64(),
        settings: settings.to_string(),
    })
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
