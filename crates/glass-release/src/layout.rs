//! The release directory: file names and `manifest.json` (see `docs/release.md`).
//!
//! ```text
//! OUT/
//!   README.md                       model and data card
//!   manifest.json                   ReleaseManifest: facts + sha256 of every other file (written last)
//!   tokenizer.json                  the tokenizer every row was made with
//!   checkpoints/ckpt_KKK/           transformers folder of Glass checkpoint K (glass export hf)
//!   checkpoints/ckpt_KKK/glass/     --with-optimizer: state.json, optimizer.safetensors
//!                                   (+ model.safetensors when the folder's weights are not exact)
//!   data/train_NNN.jsonl            rows of chunk N in training order: {"token_ids", "source"}
//!   data/train_NNN.segments.jsonl   one line per row: documents, token and byte ranges
//!   metrics/*.csv, metrics/*.json   steps, checkpoints, evals, events
//!   glass/                          the run's own records (glass.toml, manifests, ...)
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{file_err, Result};

/// Format tag of a release manifest.
pub const RELEASE_FORMAT: &str = "glass-release-v1";
/// The release manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// Where an unfinished release keeps the record of each completed part.
pub const PARTIAL_DIR: &str = ".release-partial";
/// Subfolder of a checkpoint folder with Glass's exact training state.
pub const GLASS_STATE_DIR: &str = "glass";
/// Run-level files copied into `OUT/glass/` (those the run has).
pub const RUN_FILES: &[&str] = &[
    "glass.toml",
    "manifest.json",
    "guard-skips.json",
    "tokenizer.json",
    "import.json",
];

/// Folder of checkpoint `k`, relative to the release.
pub fn ckpt_dir(k: u32) -> String {
    format!("checkpoints/ckpt_{k:03}")
}

/// JSONL rows of chunk `c`, relative to the release (LLM360's name).
pub fn train_file(c: u64) -> String {
    format!("data/train_{c:03}.jsonl")
}

/// Segment sidecar of chunk `c`, relative to the release.
pub fn segments_file(c: u64) -> String {
    format!("data/train_{c:03}.segments.jsonl")
}

/// One file of the release with its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseFile {
    /// Path relative to the release, `/`-separated.
    pub path: String,
    /// Hex sha256.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// One released checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleasedCheckpoint {
    /// Glass checkpoint index.
    pub index: u32,
    /// Data step reached (the model has trained on steps `[0, step)`).
    pub step: u64,
    /// Training tokens consumed.
    pub tokens: u64,
    /// The run's checkpoint hash (sha256 of its state.json).
    pub checkpoint_sha256: String,
    /// Held-out loss (nats/token).
    pub val_loss: Option<f64>,
    /// Folder, relative to the release.
    pub dir: String,
    /// True when `dir/glass/` holds the optimizer state for continued training.
    pub with_optimizer: bool,
}

/// One released data chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleasedChunk {
    /// Chunk index.
    pub chunk: u64,
    /// First step.
    pub first_step: u64,
    /// Steps in the chunk.
    pub n_steps: u64,
    /// Rows (`n_steps · rows_per_step`).
    pub n_rows: u64,
    /// JSONL rows.
    pub file: String,
    /// Segment sidecar.
    pub segments: String,
}

/// `OUT/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseManifest {
    /// `glass-release-v1`.
    pub format: String,
    /// Glass version that wrote the release.
    pub glass_version: String,
    /// Run name.
    pub run_name: String,
    /// Run id.
    pub run_id: String,
    /// sha256 of the run's glass.toml.
    pub config_sha256: String,
    /// sha256 of the run's data manifest.
    pub data_manifest_sha256: String,
    /// Weight dtype of the transformers folders.
    pub dtype: String,
    /// Rows per step (global batch).
    pub rows_per_step: u64,
    /// Tokens per row (`seq_len + 1`).
    pub row_len: u64,
    /// Released checkpoints.
    pub checkpoints: Vec<ReleasedCheckpoint>,
    /// Released data chunks.
    pub chunks: Vec<ReleasedChunk>,
    /// Every other file of the release (this manifest excluded), sorted by path.
    pub files: Vec<ReleaseFile>,
}

impl ReleaseManifest {
    /// Reads `OUT/manifest.json`, refusing anything that is not a Glass release.
    pub fn load(out: &Path) -> Result<Self> {
        let p = out.join(MANIFEST);
        let b = glass_io::open::read_beneath(out, &p, glass_io::open::MAX_RECORD_BYTES)?;
        let v: serde_json::Value =
            serde_json::from_slice(&b).map_err(|e| file_err(&p, format!("not valid JSON: {e}")))?;
        if v.get("format").and_then(|f| f.as_str()) != Some(RELEASE_FORMAT) {
            return Err(file_err(
                &p,
                format!("not a Glass release manifest (`format` is not `{RELEASE_FORMAT}`)"),
            ));
        }
        serde_json::from_value(v).map_err(|e| file_err(&p, e.to_string()))
    }
}

/// True when `dir` holds a Glass release (a `manifest.json` with the release format tag),
/// as opposed to a run.
pub fn is_release(dir: &Path) -> bool {
    glass_io::open::read_beneath(dir, &dir.join(MANIFEST), glass_io::open::MAX_RECORD_BYTES)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v.get("format").and_then(|f| f.as_str()) == Some(RELEASE_FORMAT))
}

/// `rel` under `root`, for `/`-separated relative paths.
pub fn join(root: &Path, rel: &str) -> PathBuf {
    rel.split('/').fold(root.to_path_buf(), |p, c| p.join(c))
}
