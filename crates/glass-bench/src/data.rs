//! `glass bench data`: the real `glass data prepare` against a Python pipeline doing the
//! same job, plus tokenizer-only throughput against the HF `tokenizers` package.
//!
//! The pipeline figure times whole fresh processes on both sides: `glass data prepare`
//! (read, tokenize, mix, shuffle, FIM, write chunks and segments, hash, manifest) on a
//! run whose `[data]` table is the demo's with its embedded sources written out as files,
//! and `bench/data_pipeline_reference.py` (HF `tokenizers` `encode_batch`, numpy packing
//! and shuffling, `.npy` arrays, sha256) on the same run, each with the same thread count.
//! The tokenizer-only figure encodes the embedded English corpus in process on both sides
//! and checks both produced the same ids.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use glass_data::config::{SourceConfig, SourceKind};
use glass_data::embedded::{embedded_set, EmbeddedSet};
use glass_data::tokenizer::{train_bpe, GlassTokenizer};
use glass_data::{DataConfig, Manifest};
use glass_io::atomic::write_atomic;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{context, io};
use crate::{BenchError, Result};

/// What to run and compare.
#[derive(Debug, Clone)]
pub struct DataOptions {
    /// The `glass` binary whose `data prepare` is timed (a fresh process per run).
    pub glass: PathBuf,
    /// Folder for the run, corpus copy, tokenizer.json and outputs.
    pub out: PathBuf,
    /// Timed repetitions of each side (the best is reported).
    pub iters: usize,
    /// Python interpreter with `tokenizers` and `numpy`, to run the reference scripts.
    pub python: Option<PathBuf>,
    /// The reference pipeline script.
    pub pipeline_script: PathBuf,
    /// The reference tokenizer-only script.
    pub tokenizer_script: PathBuf,
    /// Worker threads for both sides (default: the current pool's).
    pub threads: Option<usize>,
}

/// Wall-clock seconds of fresh processes doing the whole preparation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineTimes {
    /// Best run, seconds.
    pub best_s: f64,
    /// Every run, seconds.
    pub runs_s: Vec<f64>,
}

/// The `glass data prepare` comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineReport {
    /// What was timed.
    pub measured: String,
    /// Training steps prepared.
    pub steps: u64,
    /// Tokens in the training rows (steps × rows × row length).
    pub tokens: u64,
    /// `glass data prepare` in a fresh process.
    pub glass: PipelineTimes,
    /// The Python pipeline in a fresh process, when run.
    pub python: Option<PipelineTimes>,
    /// `python.best_s / glass.best_s` (above 1: Glass is faster).
    pub speedup: Option<f64>,
}

/// Tokenizer throughput of one configuration.
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

/// The tokenizer-only comparison (in process, warm).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenizerReport {
    /// What was timed.
    pub measured: String,
    /// Documents (files) in the corpus.
    pub docs: usize,
    /// Corpus bytes.
    pub bytes: u64,
    /// Glass tokenize-and-pack (fast byte-level path).
    pub glass: Throughput,
    /// Glass with HF's own encoder inside (fast path off).
    pub glass_hf_encoder: Throughput,
    /// The Python reference, when run.
    pub python_reference: Option<Throughput>,
    /// `glass.tokens_per_s / python_reference.tokens_per_s`.
    pub speedup: Option<f64>,
}

/// Everything `glass bench data` measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataBench {
    /// Threads given to both sides.
    pub threads: usize,
    /// Whole preparation, fresh processes.
    pub pipeline: PipelineReport,
    /// Tokenizer only.
    pub tokenizer: TokenizerReport,
}

/// Runs both comparisons on a pool of the chosen size; `progress` hears which timed run
/// is starting (the pipeline runs take seconds each).
pub fn run(o: &DataOptions, progress: &mut (dyn FnMut(&str) + Send)) -> Result<DataBench> {
    let threads = o.threads.unwrap_or_else(rayon::current_num_threads).max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(BenchError::ThreadPool)?;
    pool.install(|| bench(o, threads, progress))
}

fn bench(
    o: &DataOptions,
    threads: usize,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<DataBench> {
    let out = &o.out;
    let tok_json = train_bpe(
        &DataConfig::default_demo().tokenizer,
        embedded_set(EmbeddedSet::English)
            .into_iter()
            .map(|(_, t)| t.to_string()),
    )?;
    let run_dir = out.join("run");
    write_run(&run_dir, &tok_json)?;
    let pipeline = bench_pipeline(o, &run_dir, threads, progress)?;
    let tokenizer = bench_tokenizer(o, &out.join("tokenizer-corpus"), &tok_json, threads)?;
    Ok(DataBench {
        threads,
        pipeline,
        tokenizer,
    })
}

/// The demo's `[data]` table with each source's documents written out as files, one file
/// per document (so the Python side reads exactly the documents Glass reads: the demo's
/// `works`/`exclude` selections, `head_bytes` cuts and `piece_bytes` pieces are applied
/// here, once, by Glass's own source reader), and the tokenizer given as a file (so
/// neither side trains).
fn write_run(run_dir: &Path, tok_json: &[u8]) -> Result<()> {
    let mut cfg = DataConfig::default_demo();
    for s in &mut cfg.sources {
        let kind = match s.embedded {
            Some(EmbeddedSet::Code) => SourceKind::Code,
            Some(_) => SourceKind::Text,
            None => {
                return Err(BenchError::Failed(format!(
                    "the demo data has an unexpected source `{}`",
                    s.name
                )))
            }
        };
        let dir = format!("corpus/{}", s.name);
        let mut n = 0usize;
        for unit in glass_data::sources::list_units(s, run_dir)? {
            glass_data::sources::read_unit(s, &unit, &mut |doc| {
                n += 1;
                let path = run_dir.join(&dir).join(format!("{n:05}.txt"));
                write_atomic(&path, doc.text.as_bytes())?;
                Ok(())
            })?;
        }
        *s = SourceConfig {
            kind,
            paths: vec![dir],
            extensions: vec!["txt".to_string()],
            embedded: None,
            works: Vec::new(),
            exclude: Vec::new(),
            head_bytes: None,
            piece_bytes: None,
            ..s.clone()
        };
    }
    cfg.tokenizer.path = Some("tokenizer.json".into());
    cfg.tokenizer.vocab_size = None;
    cfg.tokenizer.train_sources = None;
    write_atomic(&run_dir.join("tokenizer.json"), tok_json)?;
    #[derive(Serialize)]
    struct RunToml<'a> {
        data: &'a DataConfig,
    }
    let text = toml::to_string(&RunToml { data: &cfg })?;
    DataConfig::from_run_toml(&text).map_err(context("the benchmark's [data] table"))?;
    write_atomic(&run_dir.join("glass.toml"), text.as_bytes())?;
    Ok(())
}

/// Runs `cmd` to completion and returns its wall time; fails with its stderr.
fn time_process(cmd: &mut Command, what: &str) -> Result<(f64, Vec<u8>)> {
    let t = Instant::now();
    let out = cmd.output().map_err(|source| BenchError::Io {
        what: format!("starting {what}"),
        source,
    })?;
    let s = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(BenchError::Failed(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok((s, out.stdout))
}

fn best(runs: Vec<f64>) -> PipelineTimes {
    PipelineTimes {
        best_s: runs.iter().copied().fold(f64::INFINITY, f64::min),
        runs_s: runs,
    }
}

fn bench_pipeline(
    o: &DataOptions,
    run_dir: &Path,
    threads: usize,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<PipelineReport> {
    let data_dir = run_dir.join("data");
    let mut glass = Vec::new();
    for i in 0..o.iters.max(1) {
        progress(&format!(
            "glass data prepare, run {}/{}",
            i + 1,
            o.iters.max(1)
        ));
        // Nothing may be reused from the previous run.
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir).map_err(io("removing", &data_dir))?;
        }
        let (s, _) = time_process(
            Command::new(&o.glass)
                .arg("--threads")
                .arg(threads.to_string())
                .args(["data", "prepare"])
                .arg(run_dir)
                .arg("--threads")
                .arg(threads.to_string()),
            "glass data prepare",
        )?;
        glass.push(s);
    }
    let m = Manifest::load(run_dir).map_err(context("reading the prepared manifest"))?;
    let tokens = m.n_steps * (m.config.rows_per_step * m.row_len) as u64;
    let python = match &o.python {
        Some(py) => {
            let py_out = o.out.join("python-out");
            let mut runs = Vec::new();
            for i in 0..o.iters.max(1) {
                progress(&format!(
                    "python pipeline, run {}/{}",
                    i + 1,
                    o.iters.max(1)
                ));
                if py_out.exists() {
                    std::fs::remove_dir_all(&py_out).map_err(io("removing", &py_out))?;
                }
                let (s, _) = time_process(
                    Command::new(py)
                        .arg(&o.pipeline_script)
                        .arg("--run")
                        .arg(run_dir)
                        .arg("--out")
                        .arg(&py_out)
                        .arg("--threads")
                        .arg(threads.to_string())
                        .env("RAYON_RS_NUM_THREADS", threads.to_string())
                        .env("OMP_NUM_THREADS", threads.to_string()),
                    "the Python pipeline",
                )?;
                runs.push(s);
            }
            Some(best(runs))
        }
        None => None,
    };
    let glass = best(glass);
    Ok(PipelineReport {
        measured: format!(
            "wall time of a fresh process preparing the demo data ({} steps) from files, \
             {threads} threads each, nothing reused; best of {}",
            m.n_steps,
            o.iters.max(1)
        ),
        steps: m.n_steps,
        tokens,
        speedup: python.as_ref().map(|p| p.best_s / glass.best_s),
        glass,
        python,
    })
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
            .collect::<glass_data::Result<_>>()?;
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

fn bench_tokenizer(
    o: &DataOptions,
    corpus_dir: &Path,
    json: &[u8],
    threads: usize,
) -> Result<TokenizerReport> {
    let cfg = DataConfig::default_demo();
    let docs = embedded_set(EmbeddedSet::EnglishAll);
    for (name, text) in &docs {
        write_atomic(&corpus_dir.join(name), text.as_bytes())?;
    }
    let tok_path = corpus_dir.join("tokenizer.json");
    write_atomic(&tok_path, json)?;
    let mut tok = GlassTokenizer::from_json(json, &cfg.tokenizer)?;
    let eos = tok.specials().eos;
    let row_len = cfg.seq_len + 1;
    // Warm-up pass so both paths start with warm caches, as in steady-state prepare.
    measure(&tok, &docs, eos, row_len, 1)?;
    let iters = o.iters.max(3);
    let glass = measure(&tok, &docs, eos, row_len, iters)?;
    tok.set_fast_path(false);
    let glass_hf_encoder = measure(&tok, &docs, eos, row_len, iters)?;
    let python_reference = match &o.python {
        Some(py) => {
            let (_, stdout) = time_process(
                Command::new(py)
                    .arg(&o.tokenizer_script)
                    .arg("--tokenizer")
                    .arg(&tok_path)
                    .arg("--corpus")
                    .arg(corpus_dir)
                    .arg("--iters")
                    .arg(iters.to_string())
                    .env("RAYON_RS_NUM_THREADS", threads.to_string()),
                "the tokenizer reference script",
            )?;
            let t: Throughput =
                serde_json::from_slice(&stdout).map_err(|source| BenchError::Json {
                    what: "reading the reference script's output".into(),
                    source,
                })?;
            if t.ids_sha256 != glass.ids_sha256 {
                return Err(BenchError::Failed(
                    "the Python reference produced different ids than Glass".into(),
                ));
            }
            Some(t)
        }
        None => None,
    };
    Ok(TokenizerReport {
        measured: format!(
            "in-process encode (+ pack for Glass) of the embedded English corpus, warm, \
             {threads} threads, best of {iters}"
        ),
        docs: docs.len(),
        bytes: docs.iter().map(|d| d.1.len() as u64).sum(),
        speedup: python_reference
            .as_ref()
            .map(|p| glass.tokens_per_s / p.tokens_per_s),
        glass,
        glass_hf_encoder,
        python_reference,
    })
}
