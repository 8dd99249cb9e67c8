//! Tokenize-and-pack throughput on the embedded English corpus, and the same corpus
//! through the HF `tokenizers` Python package (`bench/hf_tokenizers_reference.py`) for
//! comparison: same tokenizer.json, same bytes, same machine, checked to give the same ids.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic::write_atomic;
use crate::config::DataConfig;
use crate::embedded::{embedded_set, EmbeddedSet};
use crate::error::{DataError, Result};
use crate::tokenizer::{train_bpe, GlassTokenizer};

/// Options of `glass bench data`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchDataArgs {
    /// tokenizer.json to use (default: train the default 4096-id BPE on the embedded corpus).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Folder for the corpus copy, tokenizer.json and results.
    #[arg(long, default_value = "target/bench-data")]
    pub out: PathBuf,
    /// Timed repetitions (the best is reported).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Python interpreter with `tokenizers` installed, to run the reference script.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The reference script.
    #[arg(long, default_value = "bench/hf_tokenizers_reference.py")]
    pub script: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One measured configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Tokens produced per pass.
    pub tokens: u64,
    /// Best seconds per pass.
    pub seconds: f64,
    /// Tokens per second.
    pub tokens_per_s: f64,
    /// Input bytes per second.
    pub bytes_per_s: f64,
    /// sha256 of all ids as little-endian u32, documents in name order.
    pub ids_sha256: String,
}

/// The benchmark's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Documents (files) in the corpus.
    pub docs: usize,
    /// Corpus bytes.
    pub bytes: u64,
    /// Threads used.
    pub threads: usize,
    /// Glass tokenize-and-pack (fast byte-level path).
    pub glass: Throughput,
    /// Glass with HF's own encoder inside (fast path off).
    pub glass_hf_encoder: Throughput,
    /// The Python reference, when run.
    pub python_reference: Option<Throughput>,
    /// `glass.tokens_per_s / python_reference.tokens_per_s`.
    pub ratio: Option<f64>,
}

fn measure(
    tok: &GlassTokenizer,
    docs: &[(&str, &str)],
    eos: u32,
    row_len: usize,
    iters: usize,
) -> Result<Throughput> {
    let bytes: u64 = docs.iter().map(|d| d.1.len() as u64).sum();
    let mut best = f64::INFINITY;
    let mut ids_sha = String::new();
    let mut n_tokens = 0;
    for _ in 0..iters.max(1) {
        let t0 = Instant::now();
        let encoded: Vec<Vec<u32>> = docs
            .par_iter()
            .map(|d| tok.encode(d.1))
            .collect::<Result<_>>()?;
        // Pack: documents back to back with EOS, cut into rows of row_len.
        let total: usize = encoded.iter().map(|e| e.len() + 1).sum();
        let mut stream = Vec::with_capacity(total);
        for e in &encoded {
            stream.extend_from_slice(e);
            stream.push(eos);
        }
        let rows: Vec<&[u32]> = stream.chunks_exact(row_len).collect();
        std::hint::black_box(&rows);
        best = best.min(t0.elapsed().as_secs_f64());
        n_tokens = encoded.iter().map(|e| e.len() as u64).sum();
        let mut h = Sha256::new();
        for e in &encoded {
            for id in e {
                h.update(id.to_le_bytes());
            }
        }
        ids_sha = hex::encode(h.finalize());
    }
    Ok(Throughput {
        tokens: n_tokens,
        seconds: best,
        tokens_per_s: n_tokens as f64 / best,
        bytes_per_s: bytes as f64 / best,
        ids_sha256: ids_sha,
    })
}

/// Runs the benchmark: writes the corpus and tokenizer under `args.out`, measures Glass,
/// and runs the Python reference when `args.python` is set.
pub fn run_bench(args: &BenchDataArgs) -> Result<BenchReport> {
    let go = || -> Result<BenchReport> {
        let cfg = DataConfig::default_demo();
        let docs = embedded_set(EmbeddedSet::EnglishAll);
        let corpus_dir = args.out.join("corpus");
        for (name, text) in &docs {
            write_atomic(&corpus_dir.join(name), text.as_bytes())?;
        }
        let tok_path = args.out.join("tokenizer.json");
        let json = match &args.tokenizer {
            Some(p) => std::fs::read(p)
                .map_err(|e| DataError::Tokenizer(format!("{}: {e}", p.display())))?,
            None => train_bpe(
                &cfg.tokenizer,
                embedded_set(EmbeddedSet::English)
                    .into_iter()
                    .map(|(_, t)| t.to_string()),
            )?,
        };
        write_atomic(&tok_path, &json)?;
        let mut tok = GlassTokenizer::from_json(&json, &cfg.tokenizer)?;
        let eos = tok.specials().eos;
        let row_len = cfg.seq_len + 1;
        // Warm-up pass so both paths start with warm caches, as in steady-state prepare.
        measure(&tok, &docs, eos, row_len, 1)?;
        let glass = measure(&tok, &docs, eos, row_len, args.iters)?;
        tok.set_fast_path(false);
        let glass_hf_encoder = measure(&tok, &docs, eos, row_len, args.iters.min(3))?;
        let python_reference = match &args.python {
            Some(py) => Some(run_python(
                py,
                &args.script,
                &tok_path,
                &corpus_dir,
                args.iters,
            )?),
            None => None,
        };
        if let Some(p) = &python_reference {
            if p.ids_sha256 != glass.ids_sha256 {
                return Err(DataError::Tokenizer(
                    "the Python reference produced different ids".into(),
                ));
            }
        }
        Ok(BenchReport {
            docs: docs.len(),
            bytes: docs.iter().map(|d| d.1.len() as u64).sum(),
            threads: rayon::current_num_threads(),
            ratio: python_reference
                .as_ref()
                .map(|p| glass.tokens_per_s / p.tokens_per_s),
            glass,
            glass_hf_encoder,
            python_reference,
        })
    };
    match args.threads {
        Some(t) => rayon::ThreadPoolBuilder::new()
            .num_threads(t.max(1))
            .build()
            .map_err(|e| DataError::Config(format!("thread pool: {e}")))?
            .install(go),
        None => go(),
    }
}

fn run_python(
    py: &Path,
    script: &Path,
    tok: &Path,
    corpus: &Path,
    iters: usize,
) -> Result<Throughput> {
    let out = std::process::Command::new(py)
        .arg(script)
        .arg("--tokenizer")
        .arg(tok)
        .arg("--corpus")
        .arg(corpus)
        .arg("--iters")
        .arg(iters.to_string())
        .output()
        .map_err(|e| DataError::Tokenizer(format!("running {}: {e}", py.display())))?;
    if !out.status.success() {
        return Err(DataError::Tokenizer(format!(
            "reference script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| DataError::Tokenizer(format!("reference script output: {e}")))
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "corpus: {} documents, {:.1} MB; {} threads",
            self.docs,
            self.bytes as f64 / 1e6,
            self.threads
        )?;
        let line = |f: &mut std::fmt::Formatter<'_>, name: &str, t: &Throughput| {
            writeln!(
                f,
                "{name:<28} {:>8.2} M tok/s {:>8.1} MB/s ({} tokens in {:.3} s)",
                t.tokens_per_s / 1e6,
                t.bytes_per_s / 1e6,
                t.tokens,
                t.seconds
            )
        };
        line(f, "glass tokenize+pack", &self.glass)?;
        line(f, "glass with HF encoder", &self.glass_hf_encoder)?;
        if let Some(p) = &self.python_reference {
            line(f, "HF tokenizers (Python)", p)?;
        }
        if let Some(r) = self.ratio {
            writeln!(
                f,
                "ratio glass / python: {r:.2}x (same ids: {})",
                self.glass.ids_sha256
                    == self
                        .python_reference
                        .as_ref()
                        .map_or(String::new(), |p| p.ids_sha256.clone())
            )?;
        }
        Ok(())
    }
}
