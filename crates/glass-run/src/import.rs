//! Runs whose checkpoint 0 comes from elsewhere (`glass import hf`), and the run-level
//! tokenizer that generation and evaluation use before any data is prepared.
//!
//! An imported run is a normal run: checkpoint 0 is published with the usual files (the
//! imported weights, zero AdamW moments, a state at step 0) plus `import.json`, the
//! provenance record that names every source file with its sha256. It is created before
//! any data exists, so its manifest's `data_manifest_sha256` is empty; the first
//! `glass train` after `glass data prepare` adopts the prepared data (see
//! [`adopts_data`]), and from then on the usual resume checks apply unchanged.

use std::path::Path;

use glass_data::{DataConfig, GlassTokenizer, PreparedData};
use glass_engine::{AdamW, Model};
use glass_io::atomic::{sha256_hex, sync_dir, write_atomic};
use serde_json::json;

use crate::checkpoint::{self, CheckpointState, FileEntry};
use crate::config::RunConfig;
use crate::error::{io, Result, RunError};
use crate::manifest::{CheckpointEntry, ImportSource, RunManifest, FORMAT_VERSION};
use crate::metrics::{CheckpointRow, Metrics};

/// File name of the provenance record of an imported run.
pub const IMPORT_FILE: &str = "import.json";

/// The run's tokenizer: the prepared data's when `glass data prepare` has run (it may
/// have added FIM sentinels), else the `tokenizer.json` that `[data.tokenizer] path`
/// names. Generation and evaluation need only this, not prepared data.
///
/// This is where the run's tokenizer meets its model, so its vocabulary is checked
/// against the model's (`[model] vocab_size`, which every checkpoint's embedding rows
/// match on load): more ids than rows could not be fed to the model, fewer would make
/// ids the model produces decode to nothing. Fewer is allowed only for an imported run
/// (a Hugging Face model whose embedding is padded past its tokenizer, which
/// `glass import hf` reports).
pub fn run_tokenizer(run_dir: &Path) -> Result<GlassTokenizer> {
    // The tokenizer is data: it must be the one the run's checkpoints pin.
    let manifest = RunManifest::load(run_dir)?;
    if let Some(m) = &manifest {
        if let Some(p) = crate::integrity::data_problem(run_dir, m) {
            if run_dir.join("data").join("manifest.json").exists() {
                return Err(RunError::Checkpoint {
                    path: run_dir.join(&p.path),
                    msg: p.problem,
                });
            }
        }
    }
    let (tok, path) = if run_dir.join("data").join("manifest.json").exists() {
        let data = PreparedData::open(run_dir)?;
        (data.tokenizer()?, data.tokenizer_path())
    } else {
        let cfg = DataConfig::load(run_dir)?;
        match &cfg.tokenizer.path {
            Some(p) => {
                let path = run_dir.join(p);
                (GlassTokenizer::from_file(&path, &cfg.tokenizer)?, path)
            }
            None => {
                return Err(RunError::Invalid(format!(
                    "{}: the run's tokenizer is trained by `glass data prepare {}`, which has not run yet",
                    run_dir.display(),
                    run_dir.display()
                )))
            }
        }
    };
    let imported = manifest.as_ref().is_some_and(|m| m.import.is_some());
    let rows = RunConfig::load(run_dir)?.model.vocab_size;
    let ids = tok.vocab_size();
    if ids > rows || (ids < rows && !imported) {
        let consequence = if ids > rows {
            format!("ids from {rows} up could not be fed to the model")
        } else {
            format!("ids the model produces from {ids} up would decode to nothing")
        };
        return Err(RunError::Checkpoint {
            path,
            msg: format!(
                "the tokenizer has {ids} ids but the model has {rows} ({} `[model] vocab_size`, the rows of every checkpoint's embedding): {consequence}. This is not the run's tokenizer — restore the run's tokenizer.json (or re-run `glass data prepare`)",
                RunConfig::path(run_dir).display()
            ),
        });
    }
    Ok(tok)
}

/// Path of the run's `tokenizer.json` (the one [`run_tokenizer`] loads).
pub fn run_tokenizer_path(run_dir: &Path) -> Result<std::path::PathBuf> {
    if run_dir.join("data").join("manifest.json").exists() {
        return Ok(PreparedData::open(run_dir)?.tokenizer_path());
    }
    let cfg = DataConfig::load(run_dir)?;
    cfg.tokenizer.path.map(|p| run_dir.join(p)).ok_or_else(|| {
        RunError::Invalid(format!(
            "{}: the run's tokenizer is trained by `glass data prepare {}`, which has not run yet",
            run_dir.display(),
            run_dir.display()
        ))
    })
}

/// True when `m` is an imported run that has not trained yet and so binds itself to the
/// data prepared for it at its first `glass train`. Only the imported checkpoint 0 may be
/// published, so no trained checkpoint can ever change the data it was trained on.
pub fn adopts_data(m: &RunManifest) -> bool {
    m.import.is_some()
        && m.data_manifest_sha256.is_empty()
        && m.checkpoints.len() == 1
        && m.checkpoints[0].index == 0
}

/// What an imported run starts from.
pub struct ImportedRun<'a> {
    /// Complete `glass.toml` text; its `[model]` must equal `model.cfg`.
    pub config_text: &'a str,
    /// The converted weights.
    pub model: &'a Model,
    /// `tokenizer.json` bytes, written as `RUN/tokenizer.json`.
    pub tokenizer_json: &'a [u8],
    /// The provenance record, written as `RUN/import.json`.
    pub record_json: &'a [u8],
    /// Source folder as given on the command line.
    pub source_dir: &'a str,
}

/// Creates `run_dir` with checkpoint 0 = `run.model` and returns its manifest. The run is
/// assembled in a temporary sibling directory and renamed into place, so a failure
/// leaves nothing behind and the run appears complete or not at all.
pub fn create_imported_run(run_dir: &Path, run: &ImportedRun<'_>) -> Result<RunManifest> {
    let parts = Parts {
        config_text: run.config_text,
        tokenizer_json: run.tokenizer_json,
        record_json: run.record_json,
        source_dir: run.source_dir,
    };
    assemble(
        run_dir,
        &parts,
        &run.model.cfg,
        false,
        &mut |dir, cfg, state| {
            let opt = AdamW::new(cfg.optim.adamw, run.model.params.len());
            checkpoint::write(dir, run.model, &opt, state)
        },
    )
}

/// What a weights-only imported run starts from (`glass import hf --weights-only`).
pub struct WeightsOnlyRun<'a> {
    /// Complete `glass.toml` text; its `[model]` must equal `model`.
    pub config_text: &'a str,
    /// The model the weights are for.
    pub model: &'a glass_engine::ModelConfig,
    /// Every tensor of the model's layout, by its layout name, in the source's dtype
    /// (f32, bf16 or f16; one dtype for all).
    pub tensors: &'a [glass_io::safetensors::TensorBytes<'a>],
    /// `tokenizer.json` bytes, written as `RUN/tokenizer.json`.
    pub tokenizer_json: &'a [u8],
    /// The provenance record, written as `RUN/import.json`.
    pub record_json: &'a [u8],
    /// Source folder as given on the command line.
    pub source_dir: &'a str,
}

/// Creates the weights-only run `run_dir` (manifest `weights_only`) whose checkpoint 0
/// holds `run.tensors` as stored, and no optimizer state
/// ([`crate::weights::write_weights_only`]); atomically, as [`create_imported_run`].
pub fn create_weights_only_run(run_dir: &Path, run: &WeightsOnlyRun<'_>) -> Result<RunManifest> {
    let parts = Parts {
        config_text: run.config_text,
        tokenizer_json: run.tokenizer_json,
        record_json: run.record_json,
        source_dir: run.source_dir,
    };
    let layout = glass_engine::ParamLayout::new(run.model);
    assemble(run_dir, &parts, run.model, true, &mut |dir, _, state| {
        crate::weights::write_weights_only(dir, &layout, run.tensors, state)
    })
}

/// The files of an imported run besides its checkpoint.
struct Parts<'a> {
    config_text: &'a str,
    tokenizer_json: &'a [u8],
    record_json: &'a [u8],
    source_dir: &'a str,
}

type WriteCheckpoint<'a> =
    dyn FnMut(&Path, &RunConfig, &mut CheckpointState) -> Result<(Vec<FileEntry>, String)> + 'a;

/// Assembles an imported run in a temporary sibling directory, `write` publishing its
/// checkpoint 0, and renames it into place.
fn assemble(
    run_dir: &Path,
    run: &Parts<'_>,
    model: &glass_engine::ModelConfig,
    weights_only: bool,
    write: &mut WriteCheckpoint<'_>,
) -> Result<RunManifest> {
    if run_dir.exists()
        && std::fs::read_dir(run_dir)
            .map_err(io(run_dir))?
            .next()
            .is_some()
    {
        return Err(RunError::Invalid(format!(
            "{} already exists and is not empty; import into a new run directory",
            run_dir.display()
        )));
    }
    let cfg = RunConfig::parse(run.config_text, &RunConfig::path(run_dir))?;
    if cfg.model != *model {
        return Err(RunError::Invalid(
            "internal: the generated [model] differs from the imported weights' config".into(),
        ));
    }
    let parent = match run_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let name = run_dir
        .file_name()
        .map_or("run".into(), |n| n.to_string_lossy().into_owned());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.import-"))
        .tempdir_in(&parent)
        .map_err(io(&parent))?;
    let dir = tmp.path();
    write_atomic(
        &dir.join(crate::config::CONFIG_FILE),
        run.config_text.as_bytes(),
    )?;
    write_atomic(&dir.join("tokenizer.json"), run.tokenizer_json)?;
    write_atomic(&dir.join(IMPORT_FILE), run.record_json)?;
    let config_sha = sha256_hex(run.config_text.as_bytes());
    let record_sha = sha256_hex(run.record_json);
    let mut state = CheckpointState {
        format_version: FORMAT_VERSION,
        engine: glass_engine::engine_id(),
        index: 0,
        step: 0,
        tokens: 0,
        lr: 0.0,
        optimizer_step: 0,
        init_seed: cfg.run.seed,
        skipped_steps: vec![],
        recent_losses: vec![],
        config_sha256: config_sha.clone(),
        data_manifest_sha256: String::new(),
        parent_checkpoint_sha256: None,
        model_sha256: String::new(),
        optimizer_sha256: String::new(),
        val_loss: None,
        val_bpb: None,
        grad_groups: None,
    };
    let (mut files, sha) = write(dir, &cfg, &mut state)?;
    files.push(FileEntry {
        path: IMPORT_FILE.into(),
        sha256: record_sha.clone(),
        bytes: run.record_json.len() as u64,
    });
    let manifest = RunManifest {
        format_version: FORMAT_VERSION,
        run_id: sha256_hex(format!("{config_sha}:{record_sha}").as_bytes())[..16].to_string(),
        config_sha256: config_sha,
        data_manifest_sha256: String::new(),
        parent: None,
        checkpoints: vec![CheckpointEntry {
            index: 0,
            step: 0,
            tokens: 0,
            sha256: sha,
            val_loss: None,
            files,
        }],
        import: Some(ImportSource {
            format: "huggingface".into(),
            source_dir: run.source_dir.to_string(),
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
            json!({"format": "huggingface", "source_dir": run.source_dir, "record_sha256": record_sha}),
        )?;
        metrics.checkpoint(&CheckpointRow {
            checkpoint: 0,
            step: 0,
            tokens: 0,
            val_loss: None,
            val_bpb: None,
        })?;
    }
    sync_dir(dir)?;
    if run_dir.exists() {
        std::fs::remove_dir(run_dir).map_err(io(run_dir))?;
    }
    let dir = tmp.keep();
    std::fs::rename(&dir, run_dir).map_err(|e| {
        let _ = std::fs::remove_dir_all(&dir);
        io(run_dir)(e)
    })?;
    sync_dir(&parent)?;
    Ok(manifest)
}
