//! `glass import llm360`: a release in LLM360's published layout (Amber's) as a Glass run.
//!
//! - `DATA/train_NNN.jsonl`: one training row per line, `{"token_ids": [...], "source":
//!   "..."}`, chunk NNN of the training stream in order. Imported as prepared data by
//!   [`glass_data::pretokenized`] (streamed line by line): chunk NNN of the run is
//!   exactly that file's rows.
//! - `CHECKPOINTS/ckpt_NNN/`: a transformers LLaMA folder (sharded `.bin` or safetensors)
//!   holding the model after chunk NNN, read with glass-hf's reader and published as run
//!   checkpoint NNN at step `(rows of chunks 0..=NNN) / rows_per_step`.
//!
//! Every chunk is imported; every checkpoint, or those chosen (`--select-checkpoints`), each
//! of which must be present. The run is assembled in a temporary sibling
//! directory and renamed into place, so it appears complete or not at all; `import.json`
//! records every source file with its sha256.

use std::path::{Path, PathBuf};
use std::time::Instant;

use glass_data::config::{FimTokens, TokenizerConfig};
use glass_data::pretokenized::{import_pretokenized, PretokenizedInput};
use glass_engine::AdamW;
use glass_io::atomic::{sha256_file, sha256_hex, sync_dir, write_atomic};
use glass_run::checkpoint::{self, CheckpointState, FileEntry};
use glass_run::manifest::{CheckpointEntry, ImportSource, RunManifest, FORMAT_VERSION};
use glass_run::metrics::CheckpointRow;
use glass_run::{Metrics, RunConfig};
use serde::Serialize;
use serde_json::json;

use crate::error::{file_err, io, ReleaseError, Result};
use crate::write::CheckpointSelection;

/// What [`import_llm360`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Llm360Report {
    /// The new run.
    pub run_dir: PathBuf,
    /// Chunk indices imported.
    pub chunks: Vec<u32>,
    /// Checkpoint indices imported (checkpoint K = the model after chunk K).
    pub checkpoints: Vec<u32>,
    /// Rows of each chunk.
    pub rows_per_chunk: Vec<u64>,
    /// Tokens per row.
    pub row_len: usize,
    /// Rows per step used.
    pub rows_per_step: usize,
    /// Steps per chunk.
    pub steps_per_chunk: u64,
    /// Steps in all.
    pub n_steps: u64,
    /// Source names, in config order.
    pub sources: Vec<String>,
    /// sha256 of `data/manifest.json`.
    pub data_manifest_sha256: String,
    /// sha256 (of `state.json`) of each checkpoint.
    pub checkpoint_sha256: Vec<String>,
    /// Checkpoints hold the weights as stored, with no optimizer state.
    pub weights_only: bool,
    /// Bytes of each checkpoint's files (weights, plus optimizer state unless
    /// weights-only).
    pub checkpoint_bytes: Vec<u64>,
    /// Wall time.
    pub seconds: f64,
}

/// A checkpoint folder's weights: converted to f32, or as stored (`--weights-only`).
enum Loaded {
    Model(
        Box<(
            glass_engine::Model,
            glass_hf::weights::LoadStats,
            glass_hf::hf_config::HfModelInfo,
            glass_hf::weights::WeightFiles,
        )>,
    ),
    Stored(Box<glass_hf::import::StoredFolder>),
}

/// Files `DIR/PREFIXNNN[SUFFIX]` by NNN, sorted; names that do not fit are ignored.
fn numbered(dir: &Path, prefix: &str, suffix: &str, want_dir: bool) -> Result<Vec<(u32, PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if e.path().is_dir() == want_dir {
            v.push((n, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

/// Creates `run_dir` from LLM360-layout `data_dir` and `ckpt_dir`. `tokenizer` overrides
/// where `tokenizer.json` comes from (default: `ckpt_000/`, else `CHECKPOINTS/`).
/// `progress` receives one line per stage of the work.
pub fn import_llm360(
    data_dir: &Path,
    ckpt_dir: &Path,
    tokenizer: Option<&Path>,
    rows_per_step: usize,
    select: &CheckpointSelection,
    run_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Llm360Report> {
    import_llm360_with(
        data_dir,
        ckpt_dir,
        tokenizer,
        rows_per_step,
        select,
        false,
        run_dir,
        progress,
    )
}

/// [`import_llm360`], with `weights_only`: each checkpoint keeps its weights in the
/// source dtype (bf16 stays bf16) and no optimizer state is written (a run that
/// evaluates and is analysed but does not train; docs/llm360.md).
#[allow(clippy::too_many_arguments)]
pub fn import_llm360_with(
    data_dir: &Path,
    ckpt_dir: &Path,
    tokenizer: Option<&Path>,
    rows_per_step: usize,
    select: &CheckpointSelection,
    weights_only: bool,
    run_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Llm360Report> {
    let t0 = Instant::now();
    let chunks = numbered(data_dir, "train_", ".jsonl", false)?;
    if chunks.is_empty() {
        return Err(file_err(data_dir, "holds no train_NNN.jsonl files"));
    }
    for (i, (n, p)) in chunks.iter().enumerate() {
        if *n as usize != i {
            return Err(file_err(
                p,
                format!("chunks must be numbered 0, 1, 2, ... without gaps; expected train_{i:03}.jsonl here"),
            ));
        }
    }
    let last = chunks.len() as u32 - 1;
    let available: Vec<u64> = (0..=last as u64).collect();
    let wanted: Vec<u32> = select
        .pick(&available, "checkpoint")
        .map_err(|e| {
            ReleaseError::Invalid(format!(
                "--select-checkpoints: {e}; {} holds chunks 0..={last} (checkpoint NNN is the model after train_NNN.jsonl)",
                data_dir.display()
            ))
        })?
        .into_iter()
        .map(|k| k as u32)
        .collect();
    let ckpts = numbered(ckpt_dir, "ckpt_", "", true)?;
    let mut ckpt_of = Vec::new();
    for &n in &wanted {
        let p = &chunks[n as usize].1;
        let c = ckpts.iter().find(|c| c.0 == n).ok_or_else(|| {
            file_err(
                p,
                format!(
                    "has no checkpoint: {} holds no ckpt_{n:03} (the model after this chunk); download it, or choose checkpoints with --select-checkpoints K,K2,..",
                    ckpt_dir.display()
                ),
            )
        })?;
        ckpt_of.push(c.1.clone());
    }
    if run_dir.exists()
        && std::fs::read_dir(run_dir)
            .map_err(io(run_dir))?
            .next()
            .is_some()
    {
        return Err(file_err(
            run_dir,
            "already exists and is not empty; import into a new run directory",
        ));
    }

    // The tokenizer and the architecture (from the first checkpoint's config.json).
    let tok_path = match tokenizer {
        Some(p) => p.to_path_buf(),
        None => [ckpt_of[0].join("tokenizer.json"), ckpt_dir.join("tokenizer.json")]
            .into_iter()
            .find(|p| p.exists())
            .ok_or_else(|| {
                file_err(
                    ckpt_of[0].join("tokenizer.json"),
                    "not found (nor in the checkpoints folder); pass --tokenizer FILE (in Python: AutoTokenizer.from_pretrained(\"LLM360/Amber\").save_pretrained(DIR) writes DIR/tokenizer.json)",
                )
            })?,
    };
    let tok_json = glass_io::open::open_regular(&tok_path)
        .and_then(|f| f.read_all(glass_io::open::MAX_RECORD_BYTES))?;
    let tok_folder = tok_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    // config.json only: the weights are read once, in the checkpoint loop below.
    let cp = ckpt_of[0].join("config.json");
    let v: serde_json::Value = serde_json::from_slice(
        &glass_io::open::open_regular(&cp)
            .and_then(|f| f.read_all(glass_io::open::MAX_RECORD_BYTES))?,
    )
    .map_err(|e| file_err(&cp, format!("not valid JSON: {e}")))?;
    let info = glass_hf::hf_config::from_hf(&v, &cp)?;
    let model_cfg = info.cfg.clone().expect("mapped");
    let sp =
        glass_hf::import::specials(&tok_folder, &tok_json, info.bos_token_id, info.eos_token_id)?;
    let tcfg = TokenizerConfig {
        path: Some("tokenizer.json".into()),
        vocab_size: None,
        train_sources: None,
        min_frequency: 2,
        eos: sp.eos.clone(),
        add_eos: true,
        bos: sp.bos.clone(),
        add_bos: sp.add_bos,
        fim: FimTokens::default(),
    };

    let (parent, tmp) = crate::import::staging_dir(run_dir)?;
    let name = run_dir
        .file_name()
        .map_or("run".into(), |n| n.to_string_lossy().into_owned());
    let dir = tmp.path();

    // Data.
    let files: Vec<PathBuf> = chunks.iter().map(|c| c.1.clone()).collect();
    let mut last_shown = (usize::MAX, Instant::now());
    let data = import_pretokenized(
        dir,
        &PretokenizedInput {
            files: &files,
            rows_per_step,
            max_vocab: model_cfg.vocab_size,
            tokenizer_json: &tok_json,
            tokenizer: tcfg,
            origin: data_dir.display().to_string(),
        },
        &mut |k, rows, bytes| {
            if last_shown.0 != k || last_shown.1.elapsed().as_secs_f64() > 2.0 {
                last_shown = (k, Instant::now());
                progress(&format!(
                    "data {}/{}: {} — {rows} rows, {:.1} MB read",
                    k + 1,
                    files.len(),
                    files[k].display(),
                    bytes as f64 / 1e6
                ));
            }
        },
    )?;
    if data.row_len - 1 > model_cfg.max_seq_len {
        return Err(file_err(
            &files[0],
            format!(
                "rows of {} tokens need a context of {}, more than the model's max_position_embeddings {}",
                data.row_len,
                data.row_len - 1,
                model_cfg.max_seq_len
            ),
        ));
    }

    // glass.toml: the model section as `glass import hf` writes it, [data] as imported.
    let hf_text = glass_hf::import::run_toml(&name, &ckpt_of[0], &model_cfg, &sp);
    let body = hf_text
        .find("[run]")
        .and_then(|a| hf_text.find("\n[data]\n").map(|b| &hf_text[a..b + 1]))
        .ok_or_else(|| ReleaseError::Invalid("internal: unexpected run config layout".into()))?;
    // Micro-batches must divide the release's step (one row per step by default).
    let micro = (1..=4usize)
        .rev()
        .find(|m| rows_per_step.is_multiple_of(*m))
        .expect("1 divides");
    let body = body.replace(
        "\nmicro_batch_rows = 4\n",
        &format!("\nmicro_batch_rows = {micro}\n"),
    );
    #[derive(Serialize)]
    struct DataTable<'a> {
        data: &'a glass_data::DataConfig,
    }
    let data_toml = toml::to_string(&DataTable { data: &data.config })
        .map_err(|e| ReleaseError::Invalid(format!("internal: [data] as TOML: {e}")))?;
    let config_text = format!(
        "# Glass run imported from an LLM360-layout release by `glass import llm360`.\n\
         # Checkpoint NNN is {ck}/ckpt_NNN, the model after data chunk NNN\n\
         # ({dd}/train_NNN.jsonl = data/chunks/chunk-NNNNN); import.json records every\n\
         # source file's sha256. The data cannot be rebuilt by `glass data prepare`.\n\n{body}\n{data_toml}",
        ck = ckpt_dir.display(),
        dd = data_dir.display(),
    );
    let cfg = RunConfig::parse(&config_text, &RunConfig::path(dir))?;
    write_atomic(
        &dir.join(glass_run::config::CONFIG_FILE),
        config_text.as_bytes(),
    )?;
    write_atomic(&dir.join("tokenizer.json"), &tok_json)?;
    let config_sha = sha256_hex(config_text.as_bytes());

    // Checkpoints.
    let mut entries = Vec::new();
    let mut rows_meta = Vec::new();
    let mut ckpt_records = Vec::new();
    let mut parent_sha = None;
    for (i, (&k, path)) in wanted.iter().zip(&ckpt_of).enumerate() {
        let k = k as usize;
        progress(&format!(
            "checkpoint {k} ({}/{}): {}",
            i + 1,
            ckpt_of.len(),
            path.display()
        ));
        let loaded = if weights_only {
            Loaded::Stored(Box::new(glass_hf::import::open_stored_folder(path)?))
        } else {
            Loaded::Model(Box::new(glass_hf::load_folder(path)?))
        };
        let this_cfg = match &loaded {
            Loaded::Model(m) => &m.0.cfg,
            Loaded::Stored(f) => &f.cfg,
        };
        if *this_cfg != model_cfg {
            return Err(file_err(
                path.join("config.json"),
                format!(
                    "describes another architecture than {}",
                    ckpt_of[0].join("config.json").display()
                ),
            ));
        }
        let step = data.rows_per_file[..=k].iter().sum::<u64>() / rows_per_step as u64;
        let tokens = step * rows_per_step as u64 * (data.row_len as u64 - 1);
        let mut state = CheckpointState {
            format_version: FORMAT_VERSION,
            engine: glass_engine::engine_id(),
            index: k as u32,
            step,
            tokens,
            lr: 0.0,
            optimizer_step: step,
            init_seed: 0,
            skipped_steps: vec![],
            recent_losses: vec![],
            config_sha256: config_sha.clone(),
            data_manifest_sha256: data.manifest_sha256.clone(),
            parent_checkpoint_sha256: parent_sha.clone(),
            model_sha256: String::new(),
            optimizer_sha256: String::new(),
            val_loss: None,
            val_bpb: None,
            grad_groups: None,
        };
        let (files, sha, stats, wf) = match &loaded {
            Loaded::Model(m) => {
                let (model, stats, _, wf) = &**m;
                let opt = AdamW::new(cfg.optim.adamw, model.params.len());
                let (files, sha) = checkpoint::write(dir, model, &opt, &mut state)?;
                (files, sha, stats.clone(), wf.clone())
            }
            Loaded::Stored(f) => {
                let (tensors, stats) = glass_hf::import::stored_folder_tensors(f)?;
                let views = glass_hf::import::tensor_views(&tensors);
                let layout = glass_engine::ParamLayout::new(&f.cfg);
                let (files, sha) =
                    glass_run::weights::write_weights_only(dir, &layout, &views, &mut state)?;
                (files, sha, stats, f.files.clone())
            }
        };
        drop(loaded);
        let mut src_files = Vec::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io(path))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        for p in names {
            let (s, b) = sha256_file(&p)?;
            src_files.push(json!({"path": p.file_name().map(|n| n.to_string_lossy().into_owned()), "sha256": s, "bytes": b}));
        }
        ckpt_records.push(json!({
            "checkpoint": k, "dir": path.display().to_string(), "step": step,
            "weights": format!("{:?}", wf.format), "tensors": stats.tensors, "dtypes": stats.dtypes,
            "files": src_files,
        }));
        rows_meta.push(CheckpointRow {
            checkpoint: k as u32,
            step,
            tokens,
            val_loss: None,
            val_bpb: None,
        });
        entries.push((k as u32, step, tokens, sha.clone(), files));
        parent_sha = Some(sha);
    }

    let record = json!({
        "format": "llm360",
        "data_dir": data_dir.display().to_string(),
        "checkpoints_dir": ckpt_dir.display().to_string(),
        "rows_per_step": rows_per_step,
        "weights_only": weights_only,
        "tokenizer": {"file": tok_path.display().to_string(), "sha256": sha256_hex(&tok_json)},
        "chunks": files.iter().zip(&data.file_hashes).zip(&data.rows_per_file).map(|((p, h), r)| json!({
            "file": p.display().to_string(), "sha256": h.0, "bytes": h.1, "rows": r,
        })).collect::<Vec<_>>(),
        "checkpoints": ckpt_records,
        "glass_version": env!("CARGO_PKG_VERSION"),
    });
    let mut record_bytes = serde_json::to_vec_pretty(&record).expect("json");
    record_bytes.push(b'\n');
    write_atomic(&dir.join(glass_run::import::IMPORT_FILE), &record_bytes)?;
    let record_sha = sha256_hex(&record_bytes);
    let mut checkpoints = Vec::new();
    for (i, (index, step, tokens, sha, mut files)) in entries.into_iter().enumerate() {
        if i == 0 {
            files.push(FileEntry {
                path: glass_run::import::IMPORT_FILE.into(),
                sha256: record_sha.clone(),
                bytes: record_bytes.len() as u64,
            });
        }
        checkpoints.push(CheckpointEntry {
            index,
            step,
            tokens,
            sha256: sha,
            val_loss: None,
            files,
        });
    }
    let manifest = RunManifest {
        format_version: FORMAT_VERSION,
        run_id: sha256_hex(format!("{config_sha}:{record_sha}").as_bytes())[..16].to_string(),
        config_sha256: config_sha,
        data_manifest_sha256: data.manifest_sha256.clone(),
        parent: None,
        checkpoints,
        import: Some(ImportSource {
            format: "llm360".into(),
            source_dir: data_dir.display().to_string(),
            record_sha256: record_sha.clone(),
        }),
        weights_only,
    };
    manifest.save(dir)?;
    {
        let metrics = Metrics::open(dir)?;
        metrics.event(
            Some(0),
            "import",
            json!({"format": "llm360", "data_dir": data_dir.display().to_string(),
                   "checkpoints_dir": ckpt_dir.display().to_string(), "record_sha256": record_sha}),
        )?;
        for r in &rows_meta {
            metrics.checkpoint(r)?;
        }
    }
    sync_dir(dir)?;
    if run_dir.exists() {
        std::fs::remove_dir(run_dir).map_err(io(run_dir))?;
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, run_dir).map_err(|e| {
        let _ = std::fs::remove_dir_all(&kept);
        io(run_dir)(e)
    })?;
    sync_dir(&parent)?;
    Ok(Llm360Report {
        run_dir: run_dir.to_path_buf(),
        chunks: chunks.iter().map(|c| c.0).collect(),
        checkpoints: wanted.clone(),
        rows_per_chunk: data.rows_per_file.clone(),
        row_len: data.row_len,
        rows_per_step,
        steps_per_chunk: data.steps_per_chunk,
        n_steps: data.n_steps,
        sources: data.config.sources.iter().map(|s| s.name.clone()).collect(),
        data_manifest_sha256: data.manifest_sha256,
        checkpoint_sha256: manifest
            .checkpoints
            .iter()
            .map(|c| c.sha256.clone())
            .collect(),
        weights_only,
        checkpoint_bytes: manifest
            .checkpoints
            .iter()
            .map(|c| {
                c.files
                    .iter()
                    .filter(|f| f.path.starts_with("checkpoints/"))
                    .map(|f| f.bytes)
                    .sum()
            })
            .collect(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}
