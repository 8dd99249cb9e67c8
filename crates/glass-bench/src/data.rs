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

/// Runs `f` on a pool of `threads` (default: the current pool's size), telling it the size.
fn on_pool<R: Send>(
    threads: Option<usize>,
    f: impl FnOnce(usize) -> Result<R> + Send,
) -> Result<R> {
    let threads = threads.unwrap_or_else(rayon::current_num_threads).max(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(BenchError::ThreadPool)?
        .install(|| f(threads))
}

/// Runs both comparisons on a pool of the chosen size; `progress` hears which timed run
/// is starting (the pipeline runs take seconds each).
pub fn run(o: &DataOptions, progress: &mut (dyn FnMut(&str) + Send)) -> Result<DataBench> {
    on_pool(o.threads, |threads| bench(o, threads, progress))
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

/// What `glass bench data --corpus` runs.
#[derive(Debug, Clone)]
pub struct CorpusOptions {
    /// The `glass` binary whose `data prepare` is timed (a fresh process per run).
    pub glass: PathBuf,
    /// Folder for the corpus, the two runs and the Python side's outputs.
    pub out: PathBuf,
    /// Timed runs of each of the four commands (the median is reported).
    pub iters: usize,
    /// Approximate corpus size in MB of text.
    pub megabytes: usize,
    /// Python interpreter with `pyarrow`, `zstandard`, `tokenizers`, `numpy` and
    /// `datatrove`, to run the reference.
    pub python: Option<PathBuf>,
    /// The reference script (`bench/dedup_reference.py`).
    pub script: PathBuf,
    /// Worker threads for both sides (default: the current pool's).
    pub threads: Option<usize>,
}

/// Seconds of fresh processes: every run and the median.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Runs {
    /// Median, seconds.
    pub median_s: f64,
    /// Every run in the order run, seconds.
    pub runs_s: Vec<f64>,
}

fn runs(v: Vec<f64>) -> Runs {
    let mut s = v.clone();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    let median_s = if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    };
    Runs {
        median_s,
        runs_s: v,
    }
}

/// One side's two preparations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideTimes {
    /// Read, tokenize, pack and write, no deduplication.
    pub plain: Runs,
    /// The same with exact + MinHash deduplication before packing.
    pub dedup: Runs,
    /// Documents kept by deduplication (of [`CorpusBench::docs`]).
    pub docs_kept: u64,
}

/// The real-corpus comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorpusBench {
    /// What was timed.
    pub measured: String,
    /// Threads given to both sides.
    pub threads: usize,
    /// Documents in the corpus (half Parquet, half `.jsonl.zst`).
    pub docs: u64,
    /// Text bytes.
    pub bytes: u64,
    /// Input file bytes (compressed).
    pub file_bytes: u64,
    /// Planted exact copies and near copies.
    pub planted: (u64, u64),
    /// Training tokens prepared (steps × rows × row length).
    pub tokens: u64,
    /// `glass data prepare`.
    pub glass: SideTimes,
    /// The Python pipeline, when run.
    pub python: Option<SideTimes>,
    /// Python's median over Glass's: whole preparation without and with deduplication,
    /// and the deduplication alone (with minus without).
    pub speedup: Option<(f64, f64, f64)>,
}

/// A deterministic xorshift64* stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The generated corpus: documents of 30–90 lines drawn at random from the embedded
/// English works (so distinct documents share few 5-word shingles), 3% exact copies of an
/// earlier document (whitespace changed) and 10% near copies (2% of words replaced,
/// Jaccard ≈ 0.8: MinHash finds most). Returns the texts and the planted counts.
fn corpus_docs(megabytes: usize) -> (Vec<String>, u64, u64) {
    let lines: Vec<&str> = embedded_set(EmbeddedSet::EnglishAll)
        .into_iter()
        .flat_map(|(_, t)| t.lines())
        .map(str::trim)
        .filter(|l| l.len() >= 20)
        .collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let target = megabytes as u64 * 1_000_000;
    let (mut docs, mut bytes, mut exact, mut near) = (Vec::<String>::new(), 0u64, 0, 0);
    while bytes < target {
        let r = rng.below(100);
        let doc = if docs.len() > 10 && r < 3 {
            exact += 1;
            let j = rng.below(docs.len() as u64) as usize;
            docs[j].replace('\n', " \n")
        } else if docs.len() > 10 && r < 13 {
            near += 1;
            let j = rng.below(docs.len() as u64) as usize;
            let words: Vec<String> = docs[j]
                .split(' ')
                .map(|w| {
                    if rng.below(50) == 0 {
                        format!("edit{}", rng.below(100_000))
                    } else {
                        w.to_string()
                    }
                })
                .collect();
            words.join(" ")
        } else {
            let n = 30 + rng.below(61) as usize;
            let picked: Vec<&str> = (0..n)
                .map(|_| lines[rng.below(lines.len() as u64) as usize])
                .collect();
            picked.join("\n")
        };
        bytes += doc.len() as u64;
        docs.push(doc);
    }
    (docs, exact, near)
}

/// Shards per source.
const SHARDS: usize = 4;

/// Writes even documents as Parquet shards (`corpus/web`, Snappy, as hub shards are) and
/// odd ones as `.jsonl.zst` shards (`corpus/books`); returns the files' bytes.
fn write_corpus(dir: &Path, docs: &[String]) -> Result<u64> {
    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    use std::sync::Arc;
    let mut file_bytes = 0;
    type Numbered<'a> = Vec<(usize, &'a String)>;
    let (web, books): (Numbered, Numbered) = docs.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    for (k, part) in web.chunks(web.len().div_ceil(SHARDS)).enumerate() {
        let texts = StringArray::from_iter_values(part.iter().map(|(_, t)| t.as_str()));
        let ids = StringArray::from_iter_values(part.iter().map(|(i, _)| format!("doc-{i}")));
        let batch = RecordBatch::try_from_iter([
            ("text", Arc::new(texts) as ArrayRef),
            ("id", Arc::new(ids) as ArrayRef),
        ])
        .map_err(|e| BenchError::Failed(format!("building a record batch: {e}")))?;
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .set_max_row_group_row_count(Some(1024))
            .build();
        let mut buf = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), Some(props))
            .map_err(|e| BenchError::Failed(format!("writing Parquet: {e}")))?;
        w.write(&batch)
            .and_then(|_| w.close().map(|_| ()))
            .map_err(|e| BenchError::Failed(format!("writing Parquet: {e}")))?;
        file_bytes += buf.len() as u64;
        write_atomic(&dir.join(format!("web/part-{k:05}.parquet")), &buf)?;
    }
    for (k, part) in books.chunks(books.len().div_ceil(SHARDS)).enumerate() {
        let mut jsonl = Vec::new();
        for (i, t) in part {
            serde_json::to_writer(
                &mut jsonl,
                &serde_json::json!({"text": t, "id": format!("doc-{i}")}),
            )
            .expect("json");
            jsonl.push(b'\n');
        }
        let z = zstd::bulk::compress(&jsonl, 3).map_err(io("compressing", dir))?;
        file_bytes += z.len() as u64;
        write_atomic(&dir.join(format!("books/part-{k:05}.jsonl.zst")), &z)?;
    }
    Ok(file_bytes)
}

/// The run's `glass.toml` and tokenizer: the two sources over its `corpus/` folder (source
/// paths lie inside the run), one stage of `tokens`, `[data.dedup]` with its defaults
/// when `dedup`.
fn corpus_run(run: &Path, tok_json: &[u8], tokens: u64, dedup: bool) -> Result<()> {
    let text = format!(
        r#"[data]
seed = 1
seq_len = 1023
rows_per_step = 16
steps_per_chunk = 64

[data.tokenizer]
path = "tokenizer.json"

[[data.sources]]
name = "web"
kind = "parquet"
paths = ["corpus/web"]
text_field = "text"

[[data.sources]]
name = "books"
kind = "jsonl"
paths = ["corpus/books"]
text_field = "text"

[[data.stages]]
name = "all"
tokens = {tokens}
weights = {{ web = 0.5, books = 0.5 }}
{}"#,
        if dedup { "\n[data.dedup]\n" } else { "" }
    );
    DataConfig::from_run_toml(&text).map_err(context("the corpus benchmark's [data] table"))?;
    write_atomic(&run.join("glass.toml"), text.as_bytes())?;
    write_atomic(&run.join("tokenizer.json"), tok_json)?;
    Ok(())
}

/// Runs the real-corpus comparison on a pool of the chosen size.
pub fn run_corpus(
    o: &CorpusOptions,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<CorpusBench> {
    on_pool(o.threads, |threads| bench_corpus(o, threads, progress))
}

fn bench_corpus(
    o: &CorpusOptions,
    threads: usize,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<CorpusBench> {
    progress(&format!("generating a {} MB corpus", o.megabytes));
    let (docs, exact, near) = corpus_docs(o.megabytes);
    let bytes: u64 = docs.iter().map(|d| d.len() as u64).sum();
    let tok_json = train_bpe(
        &DataConfig::default_demo().tokenizer,
        embedded_set(EmbeddedSet::English)
            .into_iter()
            .map(|(_, t)| t.to_string()),
    )?;
    // About one epoch of the corpus (3.5 bytes a token).
    let tokens = bytes * 2 / 7;
    let mut file_bytes = 0;
    let plain = o.out.join("run-plain");
    let dedup = o.out.join("run-dedup");
    for (run, d) in [(&plain, false), (&dedup, true)] {
        if run.exists() {
            std::fs::remove_dir_all(run).map_err(io("removing", run))?;
        }
        file_bytes = write_corpus(&run.join("corpus"), &docs)?;
        corpus_run(run, &tok_json, tokens, d)?;
    }
    let iters = o.iters.max(1);
    let mut times: [Vec<f64>; 4] = Default::default();
    let mut py_kept = None;
    for i in 0..iters {
        for (k, run) in [&plain, &dedup].into_iter().enumerate() {
            progress(&format!(
                "glass data prepare {}, run {}/{iters}",
                ["without dedup", "with dedup"][k],
                i + 1
            ));
            let data_dir = run.join("data");
            if data_dir.exists() {
                std::fs::remove_dir_all(&data_dir).map_err(io("removing", &data_dir))?;
            }
            let (s, _) = time_process(
                Command::new(&o.glass)
                    .arg("--threads")
                    .arg(threads.to_string())
                    .args(["data", "prepare"])
                    .arg(run),
                "glass data prepare",
            )?;
            times[k].push(s);
            if let Some(py) = &o.python {
                progress(&format!(
                    "python pipeline {}, run {}/{iters}",
                    ["without dedup", "with dedup"][k],
                    i + 1
                ));
                let py_out = o.out.join(["python-plain", "python-dedup"][k]);
                if py_out.exists() {
                    std::fs::remove_dir_all(&py_out).map_err(io("removing", &py_out))?;
                }
                let mut cmd = Command::new(py);
                cmd.arg(&o.script)
                    .arg("--run")
                    .arg(run)
                    .arg("--out")
                    .arg(&py_out)
                    .arg("--threads")
                    .arg(threads.to_string())
                    .env("RAYON_RS_NUM_THREADS", threads.to_string())
                    .env("OMP_NUM_THREADS", threads.to_string());
                if k == 1 {
                    cmd.arg("--dedup");
                }
                let (s, out) = time_process(&mut cmd, "the Python pipeline")?;
                times[2 + k].push(s);
                if k == 1 {
                    let v: serde_json::Value =
                        serde_json::from_slice(&out).map_err(|source| BenchError::Json {
                            what: "reading the reference script's output".into(),
                            source,
                        })?;
                    py_kept = v["docs_kept"].as_u64();
                }
            }
        }
    }
    let m = Manifest::load(&dedup).map_err(context("reading the prepared manifest"))?;
    let tokens = m.n_steps * (m.config.rows_per_step * m.row_len) as u64;
    let stats = glass_data::dedup::read_removed(&dedup, &dedup.join("data/dedup_removed.jsonl"))
        .map_err(context("reading data/dedup_removed.jsonl"))?;
    let [gp, gd, pp, pd] = times;
    let glass = SideTimes {
        plain: runs(gp),
        dedup: runs(gd),
        docs_kept: docs.len() as u64 - stats.docs.len() as u64,
    };
    let python = o.python.as_ref().map(|_| SideTimes {
        plain: runs(pp),
        dedup: runs(pd),
        docs_kept: py_kept.unwrap_or(0),
    });
    let speedup = python.as_ref().map(|p| {
        (
            p.plain.median_s / glass.plain.median_s,
            p.dedup.median_s / glass.dedup.median_s,
            (p.dedup.median_s - p.plain.median_s) / (glass.dedup.median_s - glass.plain.median_s),
        )
    });
    Ok(CorpusBench {
        measured: format!(
            "wall time of fresh processes preparing a generated corpus ({} MB of text in \
             {SHARDS} Parquet and {SHARDS} .jsonl.zst shards) without and with \
             deduplication, {threads} threads each, nothing reused; median of {iters}, \
             the four commands alternating",
            bytes / 1_000_000
        ),
        threads,
        docs: docs.len() as u64,
        bytes,
        file_bytes,
        planted: (exact, near),
        tokens,
        glass,
        python,
        speedup,
    })
}
