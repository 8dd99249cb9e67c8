//! `glass generate`: stream a continuation from any checkpoint with the KV cache.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use glass_engine::{Sampler, SamplingConfig};

/// Options of `glass generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// Run directory.
    pub run: PathBuf,
    /// Checkpoint: an index or `latest` (default).
    #[arg(long)]
    pub checkpoint: Option<glass_run::Checkpoint>,
    /// Text to continue.
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0, value_parser = temperature)]
    pub temperature: f32,
    /// Nucleus (top-p) mass, in (0, 1].
    #[arg(long, default_value_t = 1.0, value_parser = top_p)]
    pub top_p: f32,
    /// Sampling seed: the same seed gives the same tokens.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the prompt's token ids and logits (`[tokens][vocab]`, f32) as JSON to
    /// this file, e.g. to compare with another implementation.
    #[arg(long, value_name = "FILE")]
    pub logits_out: Option<PathBuf>,
}

/// `--temperature`: a finite number >= 0.
fn temperature(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        _ => Err(format!(
            "`{s}` is not a temperature: use a finite number >= 0 (0 is greedy)"
        )),
    }
}

/// `--top-p`: a finite number in (0, 1].
fn top_p(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(p) if p.is_finite() && p > 0.0 && p <= 1.0 => Ok(p),
        _ => Err(format!(
            "`{s}` is not a top-p mass: use a number in (0, 1] (1 keeps every token)"
        )),
    }
}

/// Runs `glass generate`, printing text as tokens are chosen.
pub fn run(a: GenerateArgs) -> Result<()> {
    let k = a.checkpoint.map(|c| c.index_in(&a.run)).transpose()?;
    let (model, k) = glass_run::load_model(&a.run, k)?;
    let tok = glass_run::run_tokenizer(&a.run)?;
    let prompt = tok.encode(&a.prompt)?;
    anyhow::ensure!(!prompt.is_empty(), "the prompt encodes to no tokens");
    model.cfg.ensure_kv_cache_fits()?;
    let ctx = model.cfg.max_seq_len;
    anyhow::ensure!(
        prompt.len() <= ctx,
        "the prompt is {} tokens but the model's context is {ctx} tokens ([model] max_seq_len); shorten the prompt",
        prompt.len()
    );
    if let Some(path) = &a.logits_out {
        let mut cache = glass_engine::KvCache::new(&model);
        let logits = model.forward_cached(&prompt, &mut cache)?;
        let vocab = model.cfg.vocab_size;
        let rows: Vec<&[f32]> = logits.chunks(vocab).collect();
        let doc =
            serde_json::json!({"checkpoint": k, "ids": prompt, "vocab": vocab, "logits": rows});
        glass_io::atomic::write_atomic(path, &serde_json::to_vec(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        if a.max_tokens == 0 {
            return Ok(());
        }
    }
    let eos = Some(tok.specials().eos);
    eprintln!("checkpoint {k}, {} prompt tokens", prompt.len());
    let mut sampler = Sampler::new(SamplingConfig {
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
    });
    let mut ids = Vec::new();
    let mut printed = 0usize;
    let mut out = std::io::stdout().lock();
    write!(out, "{}", a.prompt)?;
    let mut err = None;
    let mut ended = false;
    let out_ids = model
        .generate(&prompt, a.max_tokens, &mut sampler, |t| {
            if Some(t) == eos {
                ended = true;
                return false;
            }
            ids.push(t);
            // Print the newly complete text (byte-level BPE can split a character).
            match tok.decode(&ids) {
                Ok(text) if text.len() > printed && !text.ends_with('\u{fffd}') => {
                    let _ = write!(out, "{}", &text[printed..]);
                    let _ = out.flush();
                    printed = text.len();
                }
                Ok(_) => {}
                Err(e) => err = Some(e),
            }
            true
        })
        .context("generation failed")?;
    if let Some(e) = err {
        return Err(e.into());
    }
    writeln!(out)?;
    if !ended && out_ids.len() < a.max_tokens {
        eprintln!(
            "stopped after {} of {} tokens: the context is full ({ctx} tokens, [model] max_seq_len)",
            out_ids.len(),
            a.max_tokens
        );
    }
    Ok(())
}
