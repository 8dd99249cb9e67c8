//! Memorization of every checkpoint × every data chunk, by Analysis360's protocol: take
//! rows of a chunk, feed each row's first `prompt_tokens` tokens, greedy-decode
//! `continuation_tokens` tokens and compare them with the row's next tokens.
//!
//! **Sample rule.** For a chunk of `n` rows and `s` samples, the rows are
//! `⌊j·n/s⌋` for `j = 0..s` (every row when `s ≥ n`): evenly spaced over the chunk,
//! hence over its steps, with no seed to record.
//!
//! Decoding is batched (at most [`DECODE_BATCH`] rows in sample order, fewer when their KV
//! caches would exceed [`DECODE_MEMORY_BUDGET`]) and
//! KV-cached through the engine's `forward_cached_batch`, whose results do not depend on
//! the thread count; argmax is the engine's one rule ([`glass_engine::argmax`]: the first
//! maximum, as `torch.argmax`).
//!
//! Results: `RUN/analysis/memorization/ckpt-KKKK/chunk-CCCCC.json` (atomic) and the
//! `memorization` table of `RUN/metrics.sqlite`; a pair already computed with the same
//! settings, checkpoint and chunk file is reused.

use std::path::Path;
use std::time::Instant;

use glass_data::rows::{RowChunk, RowOrigin, TrainingRows};
use glass_engine::{DecodeStep, KvCache, Model};
use glass_io::atomic::sha256_hex;
use glass_run::metrics::{MemorizationRow, Metrics};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::checkpoints::{run_checkpoints, RunCheckpoint};
use crate::error::{AnalysisError, Result};
use crate::query::Index;

/// Rows decoded together. Fixed (never derived from the thread count), so results are
/// the same bits on any machine size.
pub const DECODE_BATCH: usize = 32;
/// Memory that decoding may hold beyond the weights: KV caches and activations of the
/// batches in flight. Keeps `glass analyze memorization` on a 7B bf16 weights-only run
/// within its weights plus 2 GiB (the rest is the process). Batches are made smaller, and
/// fewer run side by side, to stay under it; neither changes a bit (every GEMM output
/// element is computed the same way whatever the number of rows, docs/numerics.md).
pub const DECODE_MEMORY_BUDGET: u64 = 3 << 29;

/// Bytes one row of a decoding batch holds: its KV cache for `prompt + n_new` positions
/// and its share of the prefill's activations and logits.
pub fn decode_row_bytes(cfg: &glass_engine::ModelConfig, prompt: usize, n_new: usize) -> u64 {
    let (d, f) = (cfg.d_model as u64, cfg.ffn_hidden as u64);
    let kv = 2 * cfg.n_layers as u64 * cfg.kv_dim() as u64 * (prompt + n_new) as u64;
    let w = ((cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim()) as u64;
    let per_token = 7 * d + w + cfg.mlp_in() as u64 + f;
    4 * (kv + per_token * prompt as u64 + cfg.vocab_size as u64)
}

/// `(rows per batch, batches side by side)` for decoding `prompt + n_new` tokens on
/// `threads` threads within [`DECODE_MEMORY_BUDGET`]: at most [`DECODE_BATCH`] rows, at
/// least one.
pub fn decode_plan(
    cfg: &glass_engine::ModelConfig,
    prompt: usize,
    n_new: usize,
    threads: usize,
) -> (usize, usize) {
    let row = decode_row_bytes(cfg, prompt, n_new).max(1);
    let rows = (DECODE_MEMORY_BUDGET / row).clamp(1, DECODE_BATCH as u64) as usize;
    let side = (DECODE_MEMORY_BUDGET / (row * rows as u64)).clamp(1, threads.max(1) as u64);
    (rows, side as usize)
}

/// Version of the protocol; part of every result's settings hash.
pub const PROTOCOL: &str = "glass-memorization-v1";

/// Which checkpoints or chunks to analyse: the run's one selection.
pub use glass_run::Selection;

/// Options of [`analyze`].
#[derive(Debug, Clone)]
pub struct MemoOptions {
    /// Checkpoints.
    pub checkpoints: Selection,
    /// Chunks.
    pub chunks: Selection,
    /// Rows per chunk.
    pub samples: usize,
    /// Prompt length.
    pub prompt_tokens: usize,
    /// Continuation length compared.
    pub continuation_tokens: usize,
    /// Keep per-row results in the JSON.
    pub log_samples: bool,
    /// Recompute pairs already stored.
    pub force: bool,
    /// Join each row with the index: occurrences of its continuation before the checkpoint.
    pub with_exposure: bool,
}

impl Default for MemoOptions {
    fn default() -> Self {
        MemoOptions {
            checkpoints: Selection::All,
            chunks: Selection::All,
            samples: 1000,
            prompt_tokens: 32,
            continuation_tokens: 32,
            log_samples: false,
            force: false,
            with_exposure: false,
        }
    }
}

/// What defines a result; a stored pair is reused only when all of it is equal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// [`PROTOCOL`].
    pub protocol: String,
    /// Rows asked for.
    pub samples: usize,
    /// Prompt length.
    pub prompt_tokens: usize,
    /// Continuation length.
    pub continuation_tokens: usize,
    /// The row rule (human-readable).
    pub sample_rule: String,
    /// Per-row results kept.
    pub log_samples: bool,
    /// Exposure joined.
    pub with_exposure: bool,
    /// sha256 of the checkpoint (its state.json).
    pub checkpoint_sha256: String,
    /// sha256 of the chunk token file (external data: of the data manifest, hashes left
    /// out, and the chunk's step range; see `glass_data::rows::TrainingRows::chunk_pin`).
    pub chunk_tokens_sha256: String,
}

/// One row's result (`--log-samples`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleLog {
    /// Row index within the chunk.
    pub row: u64,
    /// Matching positions.
    pub matches: usize,
    /// 1 where the generated token equals the row's token.
    pub matched: Vec<u8>,
    /// The generated tokens.
    pub generated: Vec<u32>,
    /// Occurrences of the row's true continuation in training before the checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposure: Option<u64>,
    /// External data: the row's step, slot and place in the suite's files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<RowOrigin>,
}

/// Memorization of rows grouped by how often their continuation was seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExposureBucket {
    /// Fewest occurrences in the bucket.
    pub min: u64,
    /// Most occurrences in the bucket.
    pub max: u64,
    /// Rows.
    pub rows: usize,
    /// Mean fraction of matching positions.
    pub token_match: f64,
    /// Fraction of rows matching completely.
    pub full_match: f64,
}

/// The result of one (checkpoint, chunk) pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairResult {
    /// Checkpoint index.
    pub checkpoint: u32,
    /// Its step.
    pub step: u64,
    /// Chunk index.
    pub chunk: u64,
    /// The chunk's first step (the chunk was trained on before `step` iff
    /// `chunk_first_step < step`).
    pub chunk_first_step: u64,
    /// Rows evaluated.
    pub n: usize,
    /// Mean over rows of the fraction of continuation positions reproduced (0..1).
    pub token_match: f64,
    /// Fraction of rows whose whole continuation is reproduced (0..1).
    pub full_match: f64,
    /// Settings.
    pub settings: Settings,
    /// Exposure buckets (`--with-exposure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<Vec<ExposureBucket>>,
    /// Per-row results (`--log-samples`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<Vec<SampleLog>>,
    /// Seconds spent decoding (metadata).
    pub seconds: f64,
}

/// Progress reports of [`analyze`].
pub enum MemoEvent<'a> {
    /// A pair is starting (`rows` rows).
    Start {
        /// Checkpoint.
        checkpoint: u32,
        /// Chunk.
        chunk: u64,
        /// Rows.
        rows: usize,
    },
    /// Rows decoded so far in the current pair.
    Rows(usize),
    /// A pair finished (`reused`: loaded from a stored result).
    Done(&'a PairResult, bool),
}

/// The rows of a chunk of `n_rows` rows that `samples` samples take.
pub fn sample_rows(n_rows: u64, samples: usize) -> Vec<u64> {
    let s = samples as u64;
    if s >= n_rows {
        return (0..n_rows).collect();
    }
    (0..s)
        .map(|j| ((j as u128 * n_rows as u128) / s as u128) as u64)
        .collect()
}

/// Greedy continuations of `prompts` (`n_new` tokens each), decoded in batches of
/// [`DECODE_BATCH`] with a KV cache per sequence. `on_rows` is told the rows done.
///
/// With several batches and threads, batches run side by side, each on one thread: a
/// decode step's products (32 rows) are too small to share between threads without
/// most of the time going to hand-offs. A batch's tokens do not depend on the thread
/// count, so the result is the same either way.
pub fn greedy(
    model: &Model,
    prompts: &[Vec<u32>],
    n_new: usize,
    on_rows: &mut dyn FnMut(usize),
) -> Result<Vec<Vec<u32>>> {
    if prompts.iter().any(|p| p.is_empty()) {
        return Err(AnalysisError::Input("empty prompt".into()));
    }
    // Every decoding step multiplies a few rows by every weight: pack the weights once.
    let packed = model.packed();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let (rows, side) = decode_plan(&model.cfg, longest, n_new, rayon::current_num_threads());
    let batches: Vec<&[Vec<u32>]> = prompts.chunks(rows).collect();
    let threads = side;
    let mut out = Vec::with_capacity(prompts.len());
    // A batch runs inside a one-thread pool: its many small row-parallel steps then stay
    // on that thread instead of each being handed to a pool and waited for.
    let one_thread = || {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(|e| AnalysisError::Input(format!("cannot start a thread: {e}")))
    };
    if threads < 2 || batches.len() < 2 {
        let one = one_thread()?;
        for batch in batches {
            out.extend(one.install(|| greedy_batch(&packed, batch, n_new))?);
            on_rows(out.len());
        }
        return Ok(out);
    }
    for wave in batches.chunks(threads) {
        let done: Vec<Result<Vec<Vec<u32>>>> = wave
            .par_iter()
            .map(|batch| one_thread()?.install(|| greedy_batch(&packed, batch, n_new)))
            .collect();
        for d in done {
            out.extend(d?);
        }
        on_rows(out.len());
    }
    Ok(out)
}

/// Greedy continuations of one batch of prompts, decoded together by the engine's one
/// decoding loop.
fn greedy_batch(
    packed: &glass_engine::PackedModel<'_>,
    batch: &[Vec<u32>],
    n_new: usize,
) -> Result<Vec<Vec<u32>>> {
    let model = packed.model();
    let mut caches: Vec<KvCache> = batch.iter().map(|_| KvCache::new(model)).collect();
    let prompts: Vec<&[u32]> = batch.iter().map(Vec::as_slice).collect();
    glass_engine::decode(packed, &prompts, &mut caches, |_, logits, out| {
        let t = glass_engine::argmax_token(logits);
        Ok(if out.len() + 1 >= n_new {
            DecodeStep::Last(t)
        } else {
            DecodeStep::Next(t)
        })
    })
}

/// Result file of a pair, relative to the run.
pub fn result_path(checkpoint: u32, chunk: u64) -> String {
    format!("analysis/memorization/ckpt-{checkpoint:04}/chunk-{chunk:05}.json")
}

/// Runs the protocol for every selected (checkpoint, chunk) pair, skipping pairs stored
/// with the same settings unless `force`.
pub fn analyze(
    run_dir: &Path,
    opts: &MemoOptions,
    progress: &mut dyn FnMut(MemoEvent<'_>),
) -> Result<Vec<PairResult>> {
    analyze_on(run_dir, opts, progress, &glass_dist::Solo)
}

/// One (checkpoint, chunk) pair still to compute: its place in the one-process order.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    slot: usize,
    checkpoint: u32,
    chunk: u64,
}

/// [`analyze`] as one rank of `comm`: rank 0 decides which pairs need computing, pair
/// `i` of that list is computed by rank `i mod W`, and rank 0 receives every result and
/// stores it (JSON file, then SQLite row) in the one-process order. Greedy decoding does
/// not depend on which rank (or how many threads) computed it, so the stored results
/// equal one process's; only the `seconds` metadata differs. Ranks other than 0 return
/// the results they computed.
pub fn analyze_on(
    run_dir: &Path,
    opts: &MemoOptions,
    progress: &mut dyn FnMut(MemoEvent<'_>),
    comm: &dyn glass_dist::Collective,
) -> Result<Vec<PairResult>> {
    if opts.samples == 0 || opts.prompt_tokens == 0 || opts.continuation_tokens == 0 {
        return Err(AnalysisError::Input(
            "--samples, --prompt-tokens and --continuation-tokens must be at least 1".into(),
        ));
    }
    let checkpoints = run_checkpoints(run_dir)?;
    let data = TrainingRows::open(run_dir)?;
    let chunks = data.chunks();
    let need = opts.prompt_tokens + opts.continuation_tokens;
    if need > data.row_len() {
        return Err(AnalysisError::Input(format!(
            "--prompt-tokens {} + --continuation-tokens {} = {need} is more than a row holds ({} tokens)",
            opts.prompt_tokens, opts.continuation_tokens, data.row_len()
        )));
    }
    let ck_ids: Vec<u64> = checkpoints.iter().map(|c| c.index as u64).collect();
    let checkpoint = |k: u32| -> &RunCheckpoint {
        checkpoints
            .iter()
            .find(|c| c.index == k)
            .expect("picked from the list")
    };
    let ch_ids: Vec<u64> = chunks.iter().map(|c| c.index).collect();
    let cks = opts.checkpoints.pick(&ck_ids, "checkpoint")?;
    let chs = opts.chunks.pick(&ch_ids, "chunk")?;
    let index = if opts.with_exposure {
        Some(Index::open(run_dir)?)
    } else {
        None
    };
    let shard = |c: u64| -> &RowChunk {
        chunks
            .iter()
            .find(|d| d.index == c)
            .expect("picked from the list")
    };
    let mut pins = std::collections::HashMap::new();
    for &c in &chs {
        pins.insert(c, data.chunk_pin(shard(c))?);
    }
    let settings_of = |entry: &RunCheckpoint, c: u64| Settings {
        protocol: PROTOCOL.into(),
        samples: opts.samples,
        prompt_tokens: opts.prompt_tokens,
        continuation_tokens: opts.continuation_tokens,
        sample_rule: "rows floor(j*n_rows/samples), j < samples (all rows when samples >= n_rows)"
            .into(),
        log_samples: opts.log_samples,
        with_exposure: opts.with_exposure,
        checkpoint_sha256: entry.sha256.clone(),
        chunk_tokens_sha256: pins[&c].clone(),
    };
    let root = comm.rank() == 0;
    let parallel = comm.size() > 1;
    // Only rank 0 touches the metrics database; it says which pairs need computing.
    let db = if root {
        Some(Metrics::open(run_dir)?)
    } else {
        None
    };
    let mut slots: Vec<Option<PairResult>> = Vec::new();
    let mut todo: Vec<Job> = Vec::new();
    if let Some(db) = &db {
        for &k in &cks {
            let entry = checkpoint(k as u32);
            for &c in &chs {
                let settings = settings_of(entry, c);
                let settings_sha = sha256_hex(&serde_json::to_vec(&settings).expect("json"));
                let rel = result_path(entry.index, c);
                let stored = match opts.force {
                    true => None,
                    false => reusable(db, run_dir, entry.index, c, &settings_sha, &rel)?,
                };
                if let Some(r) = &stored {
                    progress(MemoEvent::Done(r, true));
                } else {
                    todo.push(Job {
                        slot: slots.len(),
                        checkpoint: entry.index,
                        chunk: c,
                    });
                }
                slots.push(stored);
            }
        }
    }
    if parallel {
        let mut b = serde_json::to_vec(&todo).expect("json");
        comm.broadcast_bytes(0, &mut b).map_err(dist_err)?;
        todo = serde_json::from_slice(&b)
            .map_err(|e| AnalysisError::Input(format!("rank 0 sent a malformed work list: {e}")))?;
    }
    let (w, me) = (comm.size(), comm.rank());
    let mut mine: Vec<(usize, PairResult)> = Vec::new();
    let mut loaded: Option<(u32, Model)> = None;
    // Each chunk's sampled rows are read once for all checkpoints (a Pythia row costs a
    // read of its whole step).
    let mut sampled: std::collections::HashMap<u64, Sampled> = Default::default();
    for (i, job) in todo.iter().enumerate() {
        if i % w != me {
            continue;
        }
        let entry = checkpoint(job.checkpoint);
        if loaded.as_ref().is_none_or(|(k, _)| *k != entry.index) {
            drop(loaded.take()); // free the previous checkpoint first
            loaded = Some((entry.index, entry.load()?));
        }
        let model = &loaded.as_ref().expect("loaded").1;
        let ctx = PairContext {
            opts,
            index: index.as_ref(),
            data: &data,
        };
        let result = ctx.compute(
            &mut sampled,
            model,
            entry,
            shard(job.chunk),
            settings_of(entry, job.chunk),
            progress,
        )?;
        if !parallel {
            // One process: store each pair as soon as it is done (an interrupted
            // analysis keeps what it finished).
            let db = db.as_ref().expect("rank 0");
            store(run_dir, db, &result)?;
            progress(MemoEvent::Done(&result, false));
        }
        mine.push((job.slot, result));
    }
    if !parallel {
        for (slot, r) in mine {
            slots[slot] = Some(r);
        }
        return Ok(slots.into_iter().flatten().collect());
    }
    let b = serde_json::to_vec(&mine).expect("json");
    let all = comm.all_gather_bytes(&b).map_err(dist_err)?;
    let Some(db) = &db else {
        return Ok(mine.into_iter().map(|(_, r)| r).collect());
    };
    for (rank, b) in all.iter().enumerate() {
        let got: Vec<(usize, PairResult)> = serde_json::from_slice(b).map_err(|e| {
            AnalysisError::Input(format!("rank {rank} sent malformed results: {e}"))
        })?;
        for (slot, r) in got {
            if slot >= slots.len() {
                return Err(AnalysisError::Input(format!(
                    "rank {rank} sent a result for unknown pair {slot}"
                )));
            }
            slots[slot] = Some(r);
        }
    }
    // Stored in the one-process order.
    for job in &todo {
        let r = slots[job.slot].as_ref().ok_or_else(|| {
            AnalysisError::Input(format!(
                "no rank sent the result of checkpoint {} chunk {}",
                job.checkpoint, job.chunk
            ))
        })?;
        store(run_dir, db, r)?;
        progress(MemoEvent::Done(r, false));
    }
    Ok(slots.into_iter().flatten().collect())
}

fn dist_err(e: glass_dist::DistError) -> AnalysisError {
    AnalysisError::Input(format!("collective communication failed: {e}"))
}

/// Writes a pair's result file and its SQLite row.
fn store(run_dir: &Path, db: &Metrics, r: &PairResult) -> Result<()> {
    let settings_sha256 = sha256_hex(&serde_json::to_vec(&r.settings).expect("json"));
    let rel = result_path(r.checkpoint, r.chunk);
    let bytes = serde_json::to_vec_pretty(r).expect("json");
    glass_io::atomic::write_atomic_beneath(run_dir, &run_dir.join(&rel), &bytes)?;
    db.record_memorization(&MemorizationRow {
        checkpoint: r.checkpoint,
        chunk: r.chunk,
        step: r.step,
        samples: r.settings.samples as u64,
        prompt_tokens: r.settings.prompt_tokens as u64,
        continuation_tokens: r.settings.continuation_tokens as u64,
        n: r.n as u64,
        token_match: r.token_match,
        full_match: r.full_match,
        settings_sha256,
        result_path: rel,
        result_sha256: sha256_hex(&bytes),
        seconds: Some(r.seconds),
        wall_time: Some(glass_run::metrics::now()),
    })?;
    Ok(())
}

/// The sampled rows of a chunk, split into prompts and true continuations, with their
/// origins when they are logged for external data.
struct Sampled {
    prompts: Vec<Vec<u32>>,
    truth: Vec<Vec<u32>>,
    origins: Vec<Option<RowOrigin>>,
}

/// What computing one pair needs besides the model.
struct PairContext<'a> {
    opts: &'a MemoOptions,
    index: Option<&'a Index>,
    data: &'a TrainingRows,
}

impl PairContext<'_> {
    /// Greedy-decodes the sampled rows of chunk `ds` with `m` (checkpoint `entry`).
    fn compute(
        &self,
        cache: &mut std::collections::HashMap<u64, Sampled>,
        m: &Model,
        entry: &RunCheckpoint,
        ds: &RowChunk,
        settings: Settings,
        progress: &mut dyn FnMut(MemoEvent<'_>),
    ) -> Result<PairResult> {
        let opts = self.opts;
        let need = opts.prompt_tokens + opts.continuation_tokens;
        let c = ds.index;
        let rows = sample_rows(ds.n_rows, opts.samples);
        progress(MemoEvent::Start {
            checkpoint: entry.index,
            chunk: c,
            rows: rows.len(),
        });
        let t0 = Instant::now();
        if let std::collections::hash_map::Entry::Vacant(e) = cache.entry(c) {
            let mut s = Sampled {
                prompts: Vec::with_capacity(rows.len()),
                truth: Vec::with_capacity(rows.len()),
                origins: Vec::with_capacity(rows.len()),
            };
            let mut buf = Vec::new();
            // A row is used as the prompt and continuation it starts with, whatever its
            // length (Pythia's rows hold 2049 tokens).
            for &r in &rows {
                buf.clear();
                self.data.read_range(ds.first_row + r, 1, &mut buf)?;
                s.prompts.push(buf[..opts.prompt_tokens].to_vec());
                s.truth.push(buf[opts.prompt_tokens..need].to_vec());
                s.origins
                    .push(match opts.log_samples && self.data.is_external() {
                        true => {
                            let global = ds.first_row + r;
                            let b = self.data.rows_per_step();
                            Some(self.data.row(global / b, global % b)?.origin)
                        }
                        false => None,
                    });
            }
            e.insert(s);
        }
        let Sampled {
            prompts,
            truth,
            origins,
        } = &cache[&c];
        let gen = greedy(m, prompts, opts.continuation_tokens, &mut |n| {
            progress(MemoEvent::Rows(n))
        })?;
        let mut logs = Vec::with_capacity(rows.len());
        for (((&row, g), t), origin) in rows.iter().zip(&gen).zip(truth).zip(origins) {
            let matched: Vec<u8> = g.iter().zip(t).map(|(a, b)| (a == b) as u8).collect();
            let exposure = match self.index {
                Some(ix) => Some(ix.count_before(t, entry.step)?),
                None => None,
            };
            logs.push(SampleLog {
                row,
                matches: matched.iter().map(|&x| x as usize).sum(),
                matched,
                generated: g.clone(),
                exposure,
                origin: origin.clone(),
            });
        }
        let (tm, fm) = summarize(&logs, opts.continuation_tokens);
        Ok(PairResult {
            checkpoint: entry.index,
            step: entry.step,
            chunk: c,
            chunk_first_step: ds.first_step,
            n: logs.len(),
            token_match: tm,
            full_match: fm,
            settings,
            exposure: opts
                .with_exposure
                .then(|| buckets(&logs, opts.continuation_tokens)),
            samples: opts.log_samples.then(|| logs.clone()),
            seconds: t0.elapsed().as_secs_f64(),
        })
    }
}

fn summarize(logs: &[SampleLog], c: usize) -> (f64, f64) {
    if logs.is_empty() {
        return (0.0, 0.0);
    }
    let n = logs.len() as f64;
    let tm = logs
        .iter()
        .map(|l| l.matches as f64 / c as f64)
        .sum::<f64>()
        / n;
    let fm = logs.iter().filter(|l| l.matches == c).count() as f64 / n;
    (tm, fm)
}

/// Rows grouped by exposure: 0, 1, 2–3, 4–7, … (powers of two).
fn buckets(logs: &[SampleLog], c: usize) -> Vec<ExposureBucket> {
    let mut out = Vec::new();
    let mut lo = 0u64;
    let max = logs.iter().filter_map(|l| l.exposure).max().unwrap_or(0);
    loop {
        let hi = if lo == 0 { 0 } else { 2 * lo - 1 };
        let group: Vec<SampleLog> = logs
            .iter()
            .filter(|l| l.exposure.is_some_and(|e| e >= lo && e <= hi))
            .cloned()
            .collect();
        if !group.is_empty() {
            let (tm, fm) = summarize(&group, c);
            out.push(ExposureBucket {
                min: lo,
                max: hi,
                rows: group.len(),
                token_match: tm,
                full_match: fm,
            });
        }
        if hi >= max {
            break;
        }
        lo = if lo == 0 { 1 } else { 2 * lo };
    }
    out
}

/// Every stored pair of a run (empty when none). Reads only: the database is opened
/// read-only, so this never creates a file or blocks a run that is training.
pub fn stored(run_dir: &Path) -> Result<Vec<MemorizationRow>> {
    match Metrics::open_if_exists(run_dir)? {
        Some(m) => Ok(m.memorization(None)?),
        None => Ok(vec![]),
    }
}

/// The stored result of a pair if it has these settings and its file is intact.
fn reusable(
    db: &Metrics,
    run_dir: &Path,
    k: u32,
    c: u64,
    settings_sha: &str,
    rel: &str,
) -> Result<Option<PairResult>> {
    let Some(row) = db.memorization(Some((k, c)))?.pop() else {
        return Ok(None);
    };
    let p = run_dir.join(rel);
    if row.settings_sha256 != settings_sha {
        return Ok(None);
    }
    // Read once, beneath the run, and checked against the recorded hash.
    let Ok(bytes) = glass_io::open::read_beneath(run_dir, &p, glass_io::open::MAX_RECORD_BYTES)
    else {
        return Ok(None);
    };
    if sha256_hex(&bytes) != row.result_sha256 {
        return Ok(None);
    }
    Ok(serde_json::from_slice(&bytes).ok())
}

#[cfg(test)]
mod tests {

    #[test]
    fn decoding_at_7b_stays_within_the_memory_budget() {
        let amber = glass_engine::ModelConfig::preset("amber-7b").unwrap();
        let row = decode_row_bytes(&amber, 32, 32);
        // 64 positions of f32 keys and values in 32 layers: 64 MiB, plus the prefill.
        assert!(row > 64 << 20 && row < 80 << 20, "{row}");
        let (rows, side) = decode_plan(&amber, 32, 32, 2);
        assert_eq!(side, 1);
        assert!((16..DECODE_BATCH).contains(&rows));
        assert!(rows as u64 * row <= DECODE_MEMORY_BUDGET);
        // A small model keeps the full batch, one per thread.
        let tiny = glass_engine::ModelConfig::preset("tiny").unwrap();
        assert_eq!(decode_plan(&tiny, 32, 32, 2), (DECODE_BATCH, 2));
    }

    use super::*;

    #[test]
    fn sample_rule_is_evenly_spaced_and_ties_go_to_the_lowest_id() {
        assert_eq!(sample_rows(10, 4), vec![0, 2, 5, 7]);
        assert_eq!(sample_rows(3, 10), vec![0, 1, 2]);
        assert_eq!(sample_rows(1_000_000, 3), vec![0, 333_333, 666_666]);
    }
}
