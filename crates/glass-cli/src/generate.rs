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
    /// Checkpoint index (default: the latest).
    #[arg(long)]
    pub checkpoint: Option<u32>,
    /// Text to continue.
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus (top-p) mass.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Sampling seed: the same seed gives the same tokens.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the prompt's token ids and logits (`[tokens][vocab]`, f32) as JSON to
    /// this file, e.g. to compare with another implementation.
    #[arg(long, value_name = "FILE")]
    pub logits_out: Option<PathBuf>,
}

/// Runs `glass generate`, printing text as tokens are chosen.
pub fn run(a: GenerateArgs) -> Result<()> {
    let (model, k) = glass_run::load_model(&a.run, a.checkpoint)?;
    let tok = glass_run::run_tokenizer(&a.run)?;
    let prompt = tok.encode(&a.prompt)?;
    anyhow::ensure!(!prompt.is_empty(), "the prompt encodes to no tokens");
    if let Some(path) = &a.logits_out {
        let mut cache = glass_engine::KvCache::new(&model);
        let logits = model.forward_cached(&prompt, &mut cache)?;
        let vocab = model.cfg.vocab_size;
        let rows: Vec<&[f32]> = logits.chunks(vocab).collect();
        let doc =
            serde_json::json!({"checkpoint": k, "ids": prompt, "vocab": vocab, "logits": rows});
        glass_data::atomic::write_atomic(path, &serde_json::to_vec(&doc)?)
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
    model
        .generate(&prompt, a.max_tokens, &mut sampler, |t| {
            if Some(t) == eos {
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
    Ok(())
}
