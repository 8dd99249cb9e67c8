//! `RUN/manifest.json`: the list of published checkpoints with the sha256 of every file,
//! plus the run's identity and lineage. Rewritten atomically after each checkpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::FileEntry;
use crate::error::{Result, RunError};

/// Run directory format version written by this build (see docs/run-format.md).
pub const FORMAT_VERSION: u32 = 1;

/// File name of the run manifest.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Where a branched run came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parent {
    /// Parent run id.
    pub run_id: String,
    /// Parent run directory as given on the command line.
    pub run_dir: String,
    /// Checkpoint index in the parent.
    pub checkpoint: u32,
    /// Hash of that checkpoint (sha256 of its state.json).
    pub checkpoint_sha256: String,
    /// What the branch takes from the checkpoint (absent in older manifests:
    /// continued pretraining).
    #[serde(default)]
    pub mode: BranchMode,
    /// The step the parent checkpoint is at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
}

/// How a branch starts from its parent's checkpoint (docs/run-format.md, "Branching").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BranchMode {
    /// Weights, AdamW moments and step counter; then the branch's own data from step 0
    /// and its own schedule from warm-up.
    #[default]
    ContinuedPretraining,
    /// The whole training state (step, schedule position, skipped steps, guard history
    /// too), then the parent's data stream from the checkpoint's step on, changed only
    /// where the branch's config says so: a controlled experiment.
    Continue,
}

impl BranchMode {
    /// The name written in manifests and shown by `glass info`.
    pub fn as_str(self) -> &'static str {
        match self {
            BranchMode::ContinuedPretraining => "continued-pretraining",
            BranchMode::Continue => "continue",
        }
    }
}

/// One published checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointEntry {
    /// Position in the plan.
    pub index: u32,
    /// Data step reached.
    pub step: u64,
    /// Tokens consumed.
    pub tokens: u64,
    /// Checkpoint hash (sha256 of state.json).
    pub sha256: String,
    /// Held-out loss at this checkpoint.
    pub val_loss: Option<f64>,
    /// Its files.
    pub files: Vec<FileEntry>,
}

/// The run manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    /// Format version.
    pub format_version: u32,
    /// Stable id: derived from the config hash and the parent.
    pub run_id: String,
    /// sha256 of glass.toml when the run started.
    pub config_sha256: String,
    /// sha256 of the data manifest.
    pub data_manifest_sha256: String,
    /// Lineage of a branched run.
    pub parent: Option<Parent>,
    /// Published checkpoints in order.
    pub checkpoints: Vec<CheckpointEntry>,
    /// Where checkpoint 0 came from when the run was created by `glass import hf`
    /// (absent for runs that initialised their own weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportSource>,
    /// The run holds weights only (`glass import hf|llm360 --weights-only`): each
    /// checkpoint is `model.safetensors` in the source's dtype (f32, bf16 or f16) and
    /// `state.json`, with no optimizer state, so it evaluates, generates and is analysed
    /// but does not train or replay (docs/run-format.md, "Weights-only runs").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub weights_only: bool,
}

/// Provenance of an imported run: checkpoint 0 holds weights converted from a folder
/// written elsewhere. The full record (every source file's sha256) is `import.json`,
/// which checkpoint 0 lists among its files, so `glass verify` re-hashes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportSource {
    /// Format of the source (`"huggingface"`).
    pub format: String,
    /// The source folder as given on the command line.
    pub source_dir: String,
    /// sha256 of `import.json`.
    pub record_sha256: String,
}

impl RunManifest {
    /// Path of the manifest in `run_dir`.
    pub fn path(run_dir: &Path) -> PathBuf {
        run_dir.join(MANIFEST_FILE)
    }

    /// Loads the manifest if the run has started.
    pub fn load(run_dir: &Path) -> Result<Option<Self>> {
        let path = Self::path(run_dir);
        let bytes =
            match glass_io::open::read_beneath(run_dir, &path, glass_io::open::MAX_RECORD_BYTES) {
                Ok(b) => b,
                Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            };
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let v: Version = serde_json::from_slice(&bytes).map_err(|e| RunError::Checkpoint {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        if v.format_version > FORMAT_VERSION {
            return Err(RunError::NewerFormat {
                path,
                found: v.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let m = serde_json::from_slice(&bytes).map_err(|e| RunError::Checkpoint {
            path,
            msg: e.to_string(),
        })?;
        Ok(Some(m))
    }

    /// Loads the manifest or explains that the run has not trained yet.
    pub fn require(run_dir: &Path) -> Result<Self> {
        if !run_dir.is_dir() {
            return Err(RunError::Invalid(format!(
                "{}: no such run directory",
                run_dir.display()
            )));
        }
        if !run_dir.join(crate::config::CONFIG_FILE).exists() && !Self::path(run_dir).exists() {
            return Err(RunError::Invalid(format!(
                "{}: not a glass run (no glass.toml or manifest.json); create one with `glass init {}`",
                run_dir.display(),
                run_dir.display()
            )));
        }
        Self::load(run_dir)?.ok_or_else(|| {
            RunError::Invalid(format!(
                "{}: no checkpoints yet; run `glass train {}` first",
                run_dir.display(),
                run_dir.display()
            ))
        })
    }

    /// Writes the manifest atomically.
    pub fn save(&self, run_dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("manifest serialises");
        glass_io::atomic::write_atomic_beneath(run_dir, &Self::path(run_dir), &bytes)?;
        Ok(())
    }

    /// The entry for checkpoint `index`.
    pub fn checkpoint(&self, index: u32) -> Result<&CheckpointEntry> {
        self.checkpoints
            .iter()
            .find(|c| c.index == index)
            .ok_or_else(|| match self.checkpoints.last() {
                Some(last) => RunError::Invalid(format!(
                    "no published checkpoint {index}; this run has checkpoints 0..={}",
                    last.index
                )),
                None => RunError::Invalid(format!(
                    "no published checkpoint {index}; this run has no checkpoints"
                )),
            })
    }
}
