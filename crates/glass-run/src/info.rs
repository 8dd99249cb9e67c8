//! `glass init` and `glass info`.

use std::path::Path;

use glass_io::atomic::write_atomic;
use serde::Serialize;

use crate::config::{init_toml, RunConfig, CONFIG_FILE};
use crate::error::{io, Result, RunError};
use crate::manifest::{Parent, RunManifest};

/// Creates `run_dir` with a complete, commented `glass.toml` for `preset` and the
/// default embedded-data curriculum. Refuses to overwrite an existing config.
pub fn init(run_dir: &Path, preset: &str) -> Result<()> {
    let path = run_dir.join(CONFIG_FILE);
    if path.exists() {
        return Err(RunError::Invalid(format!(
            "{} already exists; choose a new run directory",
            path.display()
        )));
    }
    let name = run_dir
        .file_name()
        .map_or("glass-run".into(), |n| n.to_string_lossy().into_owned());
    // Everything is checked before the directory is created, so a refusal (an unknown
    // preset) leaves nothing behind.
    let demo = glass_data::default_demo_toml();
    let data = glass_data::DataConfig::from_run_toml(&demo)?;
    let mut text = init_toml(preset, &name, data.rows_per_step)?;
    text.push_str(&demo);
    // The model's vocabulary must match the tokenizer the [data] table trains.
    if let Some(v) = data.tokenizer.vocab_size {
        text = text.replacen(
            &format!("preset = \"{preset}\"\n"),
            &format!("preset = \"{preset}\"\nvocab_size = {v}\n"),
            1,
        );
    }
    RunConfig::parse(&text, &path)?;
    std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
    write_atomic(&path, text.as_bytes())?;
    Ok(())
}

/// Creates `run_dir` as a branch of `parent` at checkpoint `k` (default: the latest):
/// its `glass.toml` is the parent's, byte for byte, under a comment saying what a
/// controlled experiment may change. Returns the checkpoint's index and step.
pub fn init_branch(run_dir: &Path, parent: &Path, k: Option<u32>) -> Result<(u32, u64)> {
    let path = run_dir.join(CONFIG_FILE);
    if path.exists() {
        return Err(RunError::Invalid(format!(
            "{} already exists; choose a new run directory",
            path.display()
        )));
    }
    let m = RunManifest::require(parent)?;
    if m.weights_only {
        return Err(crate::weights::weights_only_refusal(parent, "a branch"));
    }
    let k = match k {
        Some(k) => k,
        None => {
            m.checkpoints
                .last()
                .ok_or_else(|| RunError::Invalid("the parent has no checkpoint".into()))?
                .index
        }
    };
    let (e, _) = crate::integrity::checked_entry(parent, &m, k)?;
    let ppath = RunConfig::path(parent);
    let text = String::from_utf8(glass_io::open::read_beneath(
        parent,
        &ppath,
        glass_io::open::MAX_RECORD_BYTES,
    )?)
    .map_err(|_| RunError::Config {
        path: ppath.clone(),
        msg: "not UTF-8".into(),
    })?;
    let (new, old) = (run_dir.display(), parent.display());
    let header = format!(
        r#"# Branch of {old} at checkpoint {k} (step {step}, sha256 {sha}).
# `glass train {new} --from {old} --checkpoint {k} --continue` starts at step {step}
# with the checkpoint's whole state and trains on {old}'s rows from there on; left
# as it is, this file reproduces {old}'s later checkpoints bit for bit. Every change
# applies to steps >= {step} only (docs/run-format.md, "Branching"):
#   [optim]  lr, min_lr, warmup_steps, decay_end_step (an earlier decay), beta1,
#            beta2, eps, weight_decay, grad_clip, decay_embeddings, decay_norms
#   [guard]  skip_steps, skip_chunks (data consumed, no update), spike_factor,
#            spike_window, skip
#   [run]    name
#   [[data.stages]] weights, fim_rate: re-weight or drop a source for the rest of the
#            stream (branch at a chunk boundary; rows before step {step} stay the parent's)
# [model], [train] and the rest of [data] stay as they are ([train] grad_groups and
# micro_batch_rows may change, but then no step reproduces the parent's bits).
# Without --continue, `glass train {new} --from {old} --checkpoint {k}` is continued
# pretraining: the weights and AdamW state, then this file's own data from step 0 and
# its schedule from warm-up (prepare the data first: `glass data prepare {new}`).

"#,
        step = e.step,
        sha = e.sha256
    );
    // A branch of a branch: the parent's own branch note is replaced by this one.
    let text = match text.strip_prefix("# Branch of ") {
        Some(rest) => rest.split_once("\n\n").map_or(text.as_str(), |x| x.1),
        None => text.as_str(),
    };
    let text = format!("{header}{text}");
    RunConfig::parse(&text, &path)?;
    std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
    write_atomic(&path, text.as_bytes())?;
    Ok((k, e.step))
}

/// One checkpoint as `glass info` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointInfo {
    /// Index.
    pub index: u32,
    /// Step.
    pub step: u64,
    /// Tokens.
    pub tokens: u64,
    /// Held-out loss.
    pub val_loss: Option<f64>,
    /// Directory relative to the run.
    pub dir: String,
    /// Checkpoint hash (sha256 of state.json).
    pub sha256: String,
    /// Files with their hashes.
    pub files: Vec<crate::checkpoint::FileEntry>,
    /// The weights' dtype (`f32`, `bf16`, `f16`), from the weights file's header;
    /// `None` when the file cannot be read (`glass verify` says why).
    pub weights_dtype: Option<String>,
    /// Bytes of the weights file.
    pub weights_bytes: Option<u64>,
}

/// `glass info` output.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// Run id.
    pub run_id: String,
    /// Format version.
    pub format_version: u32,
    /// sha256 of glass.toml at start.
    pub config_sha256: String,
    /// sha256 of the data manifest.
    pub data_manifest_sha256: String,
    /// Lineage.
    pub parent: Option<Parent>,
    /// Where checkpoint 0 was imported from (`glass import hf`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import: Option<crate::manifest::ImportSource>,
    /// Checkpoints hold weights only (`--weights-only` import): no optimizer state, no
    /// training.
    pub weights_only: bool,
    /// Checkpoints.
    pub checkpoints: Vec<CheckpointInfo>,
}

/// Summarises a run's published checkpoints.
pub fn info(run_dir: &Path) -> Result<RunInfo> {
    let m = RunManifest::require(run_dir)?;
    let checkpoints = m
        .checkpoints
        .iter()
        .map(|c| {
            let w = crate::weights::weights_file_info(run_dir, &c.files).ok();
            CheckpointInfo {
                index: c.index,
                step: c.step,
                tokens: c.tokens,
                val_loss: c.val_loss,
                dir: c.files.first().map_or(String::new(), |f| {
                    f.path.rsplit_once('/').map_or("", |x| x.0).to_string()
                }),
                sha256: c.sha256.clone(),
                files: c.files.clone(),
                weights_dtype: w.as_ref().map(|w| w.dtype.clone()),
                weights_bytes: w.map(|w| w.bytes),
            }
        })
        .collect();
    Ok(RunInfo {
        run_id: m.run_id,
        format_version: m.format_version,
        config_sha256: m.config_sha256,
        data_manifest_sha256: m.data_manifest_sha256,
        parent: m.parent,
        import: m.import,
        weights_only: m.weights_only,
        checkpoints,
    })
}

/// Loads the weights of checkpoint `index` (default: the latest) of a run, hash-checked,
/// for evaluation and generation. Returns the model and the checkpoint's index.
///
/// f32 weights are copied into the model; bf16 and f16 weights (a weights-only run) stay
/// in the mapped file and the model reads them in place ([`glass_engine::Model::from_half`]:
/// the same bits as the f32 model over the weights widened, at half the memory).
pub fn load_model(run_dir: &Path, index: Option<u32>) -> Result<(glass_engine::Model, u32)> {
    let cfg = RunConfig::load(run_dir)?;
    let (weights, k) = map_stored_weights(run_dir, index)?;
    Ok((weights.into_model(&cfg.model)?, k))
}

/// [`load_model`] with the weights always in f32 (16-bit weights widened, exactly): for
/// callers that change them (folding scales into an export).
pub fn load_model_f32(run_dir: &Path, index: Option<u32>) -> Result<(glass_engine::Model, u32)> {
    let cfg = RunConfig::load(run_dir)?;
    let (weights, k) = map_stored_weights(run_dir, index)?;
    Ok((weights.into_f32_model(&cfg.model)?, k))
}

/// Checkpoint `index` (default: the latest)'s weights file mapped in place in its stored
/// dtype (f32, bf16 or f16), after the checks [`load_model`] makes. The caller checks its
/// hash ([`crate::weights::StoredWeights::verify`]) before anything made from it counts.
pub fn map_stored_weights(
    run_dir: &Path,
    index: Option<u32>,
) -> Result<(crate::weights::StoredWeights, u32)> {
    let cfg = RunConfig::load(run_dir)?;
    cfg.model.validate()?;
    let (entry, _) = published_entry(run_dir, index)?;
    let layout = glass_engine::ParamLayout::new(&cfg.model);
    let weights = crate::weights::StoredWeights::open(run_dir, &entry.files, &layout)?;
    Ok((weights, entry.index))
}

/// Checkpoint `index` (default: the latest)'s weights file mapped in place, after the
/// checks [`load_model`] makes, against the layout of the run's current `[model]`. The
/// caller checks its hash ([`crate::checkpoint::MappedWeights::verify`]) before anything
/// made from it counts. Returns the weights and the checkpoint's index.
pub fn map_weights(
    run_dir: &Path,
    index: Option<u32>,
) -> Result<(crate::checkpoint::MappedWeights, u32)> {
    let cfg = RunConfig::load(run_dir)?;
    cfg.model.validate()?;
    let (entry, _) = published_entry(run_dir, index)?;
    let layout = glass_engine::ParamLayout::new(&cfg.model);
    let weights = crate::checkpoint::MappedWeights::open(run_dir, &entry.files, &layout)?;
    Ok((weights, entry.index))
}

/// The manifest entry of checkpoint `index` (default: the latest), with its state and
/// chain checked ([`crate::integrity::checked_entry`]).
fn published_entry(
    run_dir: &Path,
    index: Option<u32>,
) -> Result<(
    crate::manifest::CheckpointEntry,
    crate::checkpoint::CheckpointState,
)> {
    let m = RunManifest::require(run_dir)?;
    let k = match index {
        Some(k) => k,
        None => {
            m.checkpoints
                .last()
                .ok_or_else(|| RunError::Invalid("the run has no checkpoint".into()))?
                .index
        }
    };
    crate::integrity::checked_entry(run_dir, &m, k)
}
