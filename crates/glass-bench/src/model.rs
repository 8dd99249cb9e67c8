//! `glass bench model`: a model's inference cost as the forward-only commands pay it —
//! bytes of weights, peak resident memory, prefill tokens/s and batched greedy decode
//! tokens/s (memorization-style: 32 rows, 32-token prompts, 32 new tokens), at 1 and N
//! threads, on a run's checkpoint (loaded as `glass eval` loads it: 16-bit weights stay
//! mapped) or a transformers folder with one `model.safetensors`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use glass_engine::{decode, CachedInput, DecodeStep, KvCache, Model};
use serde::Serialize;

use crate::error::{BenchError, Result};

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// A run directory, or a transformers folder (config.json + model.safetensors).
    pub source: PathBuf,
    /// Checkpoint of a run (default: the latest).
    pub checkpoint: Option<u32>,
    /// Thread counts to measure at (each in a pool of its own).
    pub threads: Vec<usize>,
    /// Rows decoded together.
    pub rows: usize,
    /// Prompt tokens per row.
    pub prompt: usize,
    /// Tokens generated per row.
    pub new_tokens: usize,
}

/// One thread count's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadFigures {
    /// Threads of the pool.
    pub threads: usize,
    /// Seconds to pack the weights for decoding (0 when the model is too large to pack).
    pub pack_s: f64,
    /// Seconds of the prefill: every row's prompt in one batched forward.
    pub prefill_s: f64,
    /// Prompt tokens per second.
    pub prefill_tokens_per_s: f64,
    /// Seconds of the decoding steps after the prefill.
    pub decode_s: f64,
    /// Generated tokens per second over those steps (rows × new tokens / decode_s).
    pub decode_tokens_per_s: f64,
    /// sha256 of the generated ids (equal for every thread count).
    pub tokens_sha256: String,
}

/// What [`run`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct ModelBench {
    /// The run or folder.
    pub source: PathBuf,
    /// `run` or `folder`.
    pub kind: &'static str,
    /// The run's checkpoint measured.
    pub checkpoint: Option<u32>,
    /// Weight dtype as held in memory (`bf16`, `f16` mapped in place; `f32`).
    pub dtype: String,
    /// Parameters.
    pub params: usize,
    /// Bytes of weights the model reads.
    pub weight_bytes: usize,
    /// Seconds to load (map, hash-check, find every tensor; or read and convert).
    pub load_s: f64,
    /// Resident memory right after loading, MiB.
    pub rss_after_load_mib: f64,
    /// Rows decoded together.
    pub rows: usize,
    /// Prompt tokens per row.
    pub prompt: usize,
    /// New tokens per row.
    pub new_tokens: usize,
    /// Per thread count.
    pub results: Vec<ThreadFigures>,
    /// Peak resident memory of the process (VmHWM), MiB: mapped weight pages count.
    pub peak_rss_mib: f64,
    /// GEMM micro-kernel.
    pub kernel: &'static str,
    /// What was timed.
    pub note: String,
    /// The prompts (for a reference implementation to run the same).
    #[serde(skip)]
    pub prompts: Vec<Vec<u32>>,
    /// The greedy continuation of every prompt (first thread count's).
    #[serde(skip)]
    pub generated: Vec<Vec<u32>>,
}

/// Loads the model of `o.source`: a run's checkpoint via [`glass_run::load_model`], or a
/// transformers folder (one `model.safetensors`: 16-bit weights mapped in place, f32
/// converted; other layouts through the importer, in f32).
fn load(o: &ModelOptions) -> Result<(Model, &'static str, Option<u32>)> {
    let src = &o.source;
    if src.join(glass_run::manifest::MANIFEST_FILE).exists() {
        let (m, k) = glass_run::load_model(src, o.checkpoint)?;
        return Ok((m, "run", Some(k)));
    }
    if o.checkpoint.is_some() {
        return Err(BenchError::Failed(format!(
            "{}: --checkpoint applies to a run; this is a folder",
            src.display()
        )));
    }
    let single = src.join("model.safetensors");
    if single.exists() {
        let (_, info) = glass_hf::import::read_config(src)?;
        let cfg = info.cfg.clone().expect("mapped");
        if let Some(m) = map_half(&single, &cfg)? {
            return Ok((m, "folder", None));
        }
    }
    let (m, ..) = glass_hf::load_folder(src)?;
    Ok((m, "folder", None))
}

/// A 16-bit `model.safetensors` (transformers names = Glass layout names) as a model
/// over the mapped file; `None` when its weights are f32.
fn map_half(path: &Path, cfg: &glass_engine::ModelConfig) -> Result<Option<Model>> {
    use safetensors::{Dtype, SafeTensors};
    let map = glass_io::open::open_regular(path)?
        .map()?
        .ok_or_else(|| BenchError::Failed(format!("{}: empty", path.display())))?;
    let bad = |m: String| BenchError::Failed(format!("{}: {m}", path.display()));
    let (ranges, kind) = {
        let st = SafeTensors::deserialize(&map)
            .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
        let layout = glass_engine::ParamLayout::new(cfg);
        let base = map.as_ptr() as usize;
        let mut ranges = Vec::new();
        let mut dtype = None;
        for t in layout.tensors() {
            let v = st
                .tensor(&t.name)
                .map_err(|_| bad(format!("no tensor `{}`", t.name)))?;
            if *dtype.get_or_insert(v.dtype()) != v.dtype() {
                return Err(bad(format!(
                    "tensor `{}` is {:?}; mixed dtypes",
                    t.name,
                    v.dtype()
                )));
            }
            let at = v.data().as_ptr() as usize - base;
            ranges.push((t.name.clone(), at..at + v.data().len()));
        }
        let kind = match dtype {
            Some(Dtype::BF16) => glass_engine::gemm::Half::Bf16,
            Some(Dtype::F16) => glass_engine::gemm::Half::F16,
            _ => return Ok(None),
        };
        (ranges, kind)
    };
    let bytes: glass_engine::weights::WeightBytes = Arc::new(map);
    let layout = glass_engine::ParamLayout::new(cfg);
    let half =
        glass_engine::HalfWeights::new(&layout, kind, bytes, &ranges, &path.display().to_string())?;
    Ok(Some(Model::from_half(cfg, half)?))
}

/// Deterministic prompt ids in `[0, vocab)`.
fn prompts(rows: usize, len: usize, vocab: usize) -> Vec<Vec<u32>> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    (0..rows)
        .map(|_| {
            (0..len)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s % vocab as u64) as u32
                })
                .collect()
        })
        .collect()
}

/// Times prefill and greedy decoding at the current pool's thread count.
fn measure(
    model: &Model,
    o: &ModelOptions,
    p: &[Vec<u32>],
) -> Result<(ThreadFigures, Vec<Vec<u32>>)> {
    let t = Instant::now();
    let packed = model.packed();
    let pack_s = if packed.is_packed() {
        t.elapsed().as_secs_f64()
    } else {
        0.0
    };
    let views: Vec<&[u32]> = p.iter().map(|r| r.as_slice()).collect();
    // Prefill alone: every prompt in one batched forward, last position's logits kept.
    let mut caches: Vec<KvCache> = p.iter().map(|_| KvCache::new(model)).collect();
    let t = Instant::now();
    {
        let mut items: Vec<CachedInput<'_>> = views
            .iter()
            .zip(caches.iter_mut())
            .map(|(tokens, cache)| CachedInput {
                tokens,
                cache,
                keep: 1,
            })
            .collect();
        packed.forward_cached_batch(&mut items)?;
    }
    let prefill_s = t.elapsed().as_secs_f64();
    // The decoding loop memorization runs: prefill, then every row one token per step.
    let t = Instant::now();
    let n = o.new_tokens;
    let out = decode(&packed, &views, &mut caches, |_, logits, so_far| {
        let tok = glass_engine::argmax_token(logits);
        Ok::<_, glass_engine::EngineError>(if so_far.len() + 1 >= n {
            DecodeStep::Last(tok)
        } else {
            DecodeStep::Next(tok)
        })
    })?;
    let total_s = t.elapsed().as_secs_f64();
    let decode_s = (total_s - prefill_s).max(1e-9);
    let generated: usize = out.iter().map(|r| r.len()).sum();
    let ids: Vec<u8> = out.iter().flatten().flat_map(|t| t.to_le_bytes()).collect();
    Ok((
        ThreadFigures {
            threads: rayon::current_num_threads(),
            pack_s,
            prefill_s,
            prefill_tokens_per_s: (o.rows * o.prompt) as f64 / prefill_s.max(1e-9),
            decode_s,
            decode_tokens_per_s: generated as f64 / decode_s,
            tokens_sha256: glass_io::atomic::sha256_hex(&ids),
        },
        out,
    ))
}

/// Loads the model and measures it at every thread count of `o.threads`.
pub fn run(o: &ModelOptions, progress: &mut dyn FnMut(&str)) -> Result<ModelBench> {
    if o.rows == 0 || o.prompt == 0 || o.new_tokens == 0 {
        return Err(BenchError::Failed(
            "--rows, --prompt and --new-tokens must be at least 1".into(),
        ));
    }
    let t = Instant::now();
    let (model, kind, checkpoint) = load(o)?;
    let load_s = t.elapsed().as_secs_f64();
    let rss_after_load_mib = current_rss_mib();
    let dtype = match model.half_weights().map(|h| h.kind()) {
        Some(glass_engine::gemm::Half::Bf16) => "bf16",
        Some(glass_engine::gemm::Half::F16) => "f16",
        None => "f32",
    };
    if o.prompt + o.new_tokens > model.cfg.max_seq_len {
        return Err(BenchError::Failed(format!(
            "--prompt {} + --new-tokens {} exceed the model's context of {}",
            o.prompt, o.new_tokens, model.cfg.max_seq_len
        )));
    }
    progress(&format!(
        "loaded {} ({dtype}, {:.3} GB of weights) in {load_s:.2} s",
        o.source.display(),
        model.weight_bytes() as f64 / 1e9
    ));
    let p = prompts(o.rows, o.prompt, model.cfg.vocab_size);
    let mut results = Vec::new();
    let mut generated = Vec::new();
    for &threads in &o.threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build()
            .map_err(BenchError::ThreadPool)?;
        let (r, out) = pool.install(|| measure(&model, o, &p))?;
        if generated.is_empty() {
            generated = out;
        }
        progress(&format!(
            "{} thread(s): prefill {:.1} tok/s, decode {:.1} tok/s",
            r.threads, r.prefill_tokens_per_s, r.decode_tokens_per_s
        ));
        results.push(r);
    }
    Ok(ModelBench {
        source: o.source.clone(),
        kind,
        checkpoint,
        dtype: dtype.into(),
        params: model.layout.total(),
        weight_bytes: model.weight_bytes(),
        load_s,
        rss_after_load_mib,
        rows: o.rows,
        prompt: o.prompt,
        new_tokens: o.new_tokens,
        results,
        peak_rss_mib: crate::train::peak_rss_mib(),
        kernel: glass_engine::gemm::active_kernel().name(),
        note: format!(
            "prefill: {r} prompts of {p} tokens in one batched KV-cached forward; decode: the batched greedy loop memorization runs ({r} rows, {n} new tokens each), timed without its prefill; peak RSS = VmHWM of this process (mapped weight pages count)",
            r = o.rows,
            p = o.prompt,
            n = o.new_tokens
        ),
        prompts: p,
        generated,
    })
}

/// Resident set size of this process now, MiB (Linux `VmRSS`; 0 elsewhere).
fn current_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
