//! Checkpoints: weights and optimizer state as safetensors, plus a JSON state file.
//!
//! A checkpoint directory is written under a temporary name and renamed into place only
//! when every file is complete and fsynced; it counts as published once the run manifest
//! lists it with its hashes. The checkpoint's identity is the sha256 of its `state.json`,
//! which itself records the sha256 of the two tensor files.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use glass_engine::layout::ParamLayout;
use glass_engine::{AdamW, Model};
use glass_io::atomic::{sha256_file, sync_dir, write_atomic};
use glass_io::safetensors::{file_order, write_safetensors, SafetensorsWriter, TensorBytes, TensorHeader};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::error::{io, Result, RunError};

/// Weights file name inside a checkpoint directory.
pub const MODEL_FILE: &str = "model.safetensors";
/// Optimizer-state file name.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// State file name.
pub const STATE_FILE: &str = "state.json";

/// Everything besides tensors that a bit-identical resume needs, plus provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointState {
    /// Run format version that wrote it.
    pub format_version: u32,
    /// Engine and numerics version that computed it ([`glass_engine::engine_id`]).
    pub engine: String,
    /// Position in the checkpoint plan (0 = initial weights).
    pub index: u32,
    /// Optimizer steps of the data stream completed (the data cursor: next step to run).
    pub step: u64,
    /// Training tokens consumed (skipped steps included: their data was seen and dropped).
    pub tokens: u64,
    /// Learning rate of the last completed step.
    pub lr: f32,
    /// AdamW's step counter (bias correction), which excludes skipped steps.
    pub optimizer_step: u64,
    /// Seed of the weight initialisation. Training itself draws no random numbers (no
    /// dropout) and the data order is a pure function of `[data]`, so this is the whole
    /// RNG state.
    pub init_seed: u64,
    /// Steps skipped so far (configured or by the guard).
    pub skipped_steps: Vec<u64>,
    /// Recent losses for the guard's spike rule.
    pub recent_losses: Vec<f64>,
    /// sha256 of `glass.toml`.
    pub config_sha256: String,
    /// sha256 of the data manifest.
    pub data_manifest_sha256: String,
    /// Hash of the checkpoint this one continues from (`None` for a fresh index 0).
    pub parent_checkpoint_sha256: Option<String>,
    /// sha256 of `model.safetensors`.
    pub model_sha256: String,
    /// sha256 of `optimizer.safetensors`.
    pub optimizer_sha256: String,
    /// Held-out loss (nats per token) at this checkpoint.
    pub val_loss: Option<f64>,
    /// Held-out bits per UTF-8 byte.
    pub val_bpb: Option<f64>,
    /// Gradient groups whose pairwise tree made each step's gradient (the reduction rule
    /// of docs/run-format.md); absent in imported checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_groups: Option<u32>,
}

/// A file of a checkpoint with its hash, as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the run directory.
    pub path: String,
    /// Hex sha256.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// One of AdamW's two moments, as the optimizer file names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// First moment (`exp_avg.<name>`).
    ExpAvg,
    /// Second moment (`exp_avg_sq.<name>`).
    ExpAvgSq,
}

impl Moment {
    /// Both, in the order the optimizer file holds them.
    pub const BOTH: [Moment; 2] = [Moment::ExpAvg, Moment::ExpAvgSq];

    /// Tensor-name prefix in `optimizer.safetensors`.
    pub fn prefix(self) -> &'static str {
        match self {
            Moment::ExpAvg => "exp_avg.",
            Moment::ExpAvgSq => "exp_avg_sq.",
        }
    }

    /// This moment's buffer in `opt`.
    pub fn of(self, opt: &AdamW) -> &[f32] {
        match self {
            Moment::ExpAvg => &opt.m,
            Moment::ExpAvgSq => &opt.v,
        }
    }

    /// This moment's buffer in `opt`, writable.
    pub fn of_mut(self, opt: &mut AdamW) -> &mut Vec<f32> {
        match self {
            Moment::ExpAvg => &mut opt.m,
            Moment::ExpAvgSq => &mut opt.v,
        }
    }
}

/// Where a checkpoint's AdamW moments come from while its optimizer file is written: the
/// whole optimizer of this process ([`WholeMoments`]), or moments sharded over ranks and
/// gathered piece by piece (`glass_run::dist::ShardedMoments`).
pub trait MomentSource {
    /// AdamW's step counter.
    fn adamw_step(&self) -> u64;
    /// Whether every value of the second moment is finite (a checkpoint that holds a
    /// non-finite moment is never published).
    fn finite(&self) -> bool;
    /// Hands `sink` the values of `moment` over the flat parameter range `range`, in
    /// order, in pieces of any length.
    fn stream(
        &mut self,
        moment: Moment,
        range: std::ops::Range<usize>,
        sink: &mut dyn FnMut(&[f32]) -> Result<()>,
    ) -> Result<()>;
}

/// The moments of an optimizer held whole by this process.
pub struct WholeMoments<'a>(pub &'a AdamW);

impl MomentSource for WholeMoments<'_> {
    fn adamw_step(&self) -> u64 {
        self.0.step
    }
    fn finite(&self) -> bool {
        crate::integrity::all_finite(&self.0.v)
    }
    fn stream(
        &mut self,
        moment: Moment,
        range: std::ops::Range<usize>,
        sink: &mut dyn FnMut(&[f32]) -> Result<()>,
    ) -> Result<()> {
        sink(&moment.of(self.0)[range])
    }
}

/// The optimizer file's tensors (headers in layout order) and the (moment, flat
/// parameter range) of each in the order the file holds their bytes.
fn optimizer_stream(layout: &ParamLayout) -> (Vec<TensorHeader>, Vec<(Moment, std::ops::Range<usize>)>) {
    let mut headers = Vec::new();
    let mut parts = Vec::new();
    for moment in Moment::BOTH {
        for t in layout.tensors() {
            headers.push(TensorHeader {
                name: format!("{}{}", moment.prefix(), t.name),
                dtype: Dtype::F32,
                shape: t.shape.clone(),
                bytes: 4 * t.len(),
            });
            parts.push((moment, t.range()));
        }
    }
    let order = file_order(&headers)
        .into_iter()
        .map(|i| parts[i].clone())
        .collect();
    (headers, order)
}

/// What a rank that holds part of a sharded optimizer does while rank 0 writes a
/// checkpoint ([`write_with`]): asks `moments` for the same ranges in the same order, so
/// that each collective rank 0's source makes finds this rank in it. Refuses, as rank 0
/// does, when the moments are not finite (every rank knows: see
/// [`MomentSource::finite`]).
pub fn serve_optimizer(
    layout: &ParamLayout,
    moments: &mut dyn MomentSource,
    state: &CheckpointState,
) -> Result<()> {
    if !moments.finite() {
        return Err(non_finite(state, "optimizer state"));
    }
    for (moment, range) in optimizer_stream(layout).1 {
        moments.stream(moment, range, &mut |_| Ok(()))?;
    }
    Ok(())
}

/// A published checkpoint's `optimizer.safetensors`, opened (its hash checked by the
/// caller) and its tensors found, to read ranges of the moments from without holding
/// them: rank 0 of a sharded optimizer reads one piece at a time and sends it to the rank
/// that owns it.
pub struct OptimizerFile {
    path: PathBuf,
    file: File,
    /// Tensor extents in the flat parameter buffer, in layout order.
    extents: Vec<std::ops::Range<usize>>,
    /// Byte offset in the file of each tensor, per moment ([`Moment::BOTH`] order).
    at: [Vec<u64>; 2],
}

impl OptimizerFile {
    /// Opens `path` and finds every tensor of `layout` in it (dtype and shape checked).
    pub fn open(path: &Path, layout: &ParamLayout) -> Result<Self> {
        let map = map_file(path)?;
        let mut at: [Vec<u64>; 2] = Default::default();
        for (i, moment) in Moment::BOTH.into_iter().enumerate() {
            at[i] = tensor_ranges(path, &map, layout, moment.prefix())?
                .into_iter()
                .map(|r| r.start as u64)
                .collect();
        }
        Ok(Self {
            path: path.to_path_buf(),
            file: File::open(path).map_err(io(path))?,
            extents: layout.tensors().iter().map(|t| t.range()).collect(),
            at,
        })
    }

    /// Reads the values of `moment` over the flat parameter range `range` into `out`
    /// (`range.len()` values), tensor by tensor.
    pub fn read(
        &self,
        moment: Moment,
        range: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let at = &self.at[moment as usize];
        let first = self.extents.partition_point(|e| e.end <= range.start);
        for (e, &base) in self.extents[first..].iter().zip(&at[first..]) {
            if e.start >= range.end {
                break;
            }
            let (a, b) = (range.start.max(e.start), range.end.min(e.end));
            let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut out[a - range.start..b - range.start]);
            self.file
                .read_exact_at(dst, base + 4 * (a - e.start) as u64)
                .map_err(|e| RunError::Checkpoint {
                    path: self.path.clone(),
                    msg: format!("{e}; the checkpoint is incomplete"),
                })?;
        }
        Ok(())
    }
}

/// Writes named views of `buffers` (one per prefix) as one safetensors file, fsynced;
/// returns its (sha256, bytes).
fn write_tensors(
    path: &Path,
    model: &Model,
    buffers: &[(&str, &[f32])],
    meta: HashMap<String, String>,
) -> Result<(String, u64)> {
    let mut tensors = Vec::new();
    for (prefix, buf) in buffers {
        for t in model.layout.tensors() {
            tensors.push(TensorBytes {
                name: format!("{prefix}{}", t.name),
                dtype: Dtype::F32,
                shape: t.shape.clone(),
                data: bytemuck::cast_slice(&buf[t.range()]),
            });
        }
    }
    Ok(write_safetensors(path, &tensors, &meta)?)
}

/// Where each layout tensor named `prefix + layout name` lies in the safetensors bytes
/// `map` (read from `path`), in layout order, after checking its dtype (F32) and shape.
fn tensor_ranges(
    path: &Path,
    map: &[u8],
    layout: &ParamLayout,
    prefix: &str,
) -> Result<Vec<std::ops::Range<usize>>> {
    let err = |msg: String| RunError::Checkpoint {
        path: path.into(),
        msg,
    };
    let st = SafeTensors::deserialize(map).map_err(|e| {
        err(format!(
            "not a valid safetensors file ({e}); the file is truncated or corrupt"
        ))
    })?;
    let base = map.as_ptr() as usize;
    layout
        .tensors()
        .iter()
        .map(|t| {
            let name = format!("{prefix}{}", t.name);
            let v = st
                .tensor(&name)
                .map_err(|_| err(format!("missing tensor `{name}`")))?;
            if v.dtype() != Dtype::F32 || v.shape() != t.shape.as_slice() {
                return Err(err(format!(
                    "tensor `{name}` is {:?} {:?}, expected F32 {:?}",
                    v.dtype(),
                    v.shape(),
                    t.shape
                )));
            }
            let at = v.data().as_ptr() as usize - base;
            Ok(at..at + v.data().len())
        })
        .collect()
}

/// Maps a file read-only.
fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let file = File::open(path).map_err(io(path))?;
    // SAFETY: the map is read-only and no `&mut` to it exists. Glass never rewrites a
    // checkpoint file in place (it writes a temp name and renames), so its bytes do not
    // change while mapped; another program writing into it would only corrupt the values
    // read, which the hash check detects, and one truncating it would stop this process
    // with SIGBUS, as it would any reader of a mapped file.
    unsafe { memmap2::Mmap::map(&file) }.map_err(io(path))
}

/// Copies the tensors found at `ranges` of `map` ([`tensor_ranges`]) into `dst`, laid
/// out as `layout` says.
fn copy_ranges(
    map: &[u8],
    layout: &ParamLayout,
    ranges: &[std::ops::Range<usize>],
    dst: &mut [f32],
) {
    for (t, r) in layout.tensors().iter().zip(ranges) {
        let out: &mut [u8] = bytemuck::cast_slice_mut(&mut dst[t.range()]);
        out.copy_from_slice(&map[r.clone()]);
    }
}

/// Copies the tensors named `prefix + layout name` from a safetensors file into `dst`.
fn read_tensors(path: &Path, model: &Model, dsts: &mut [(&str, &mut [f32])]) -> Result<()> {
    let map = map_file(path)?;
    for (prefix, dst) in dsts.iter_mut() {
        let ranges = tensor_ranges(path, &map, &model.layout, prefix)?;
        copy_ranges(&map, &model.layout, &ranges, dst);
    }
    Ok(())
}

/// A checkpoint's weights file, mapped read-only and checked against the model layout:
/// its tensors are read in place, with no copy into a model (an exact export writes them
/// straight out), and its hash is checked from the same pages.
pub struct MappedWeights {
    path: PathBuf,
    expected_sha256: String,
    map: memmap2::Mmap,
    layout: ParamLayout,
    /// Where each layout tensor's bytes lie in the map, in layout order.
    ranges: Vec<std::ops::Range<usize>>,
}

impl MappedWeights {
    /// Maps the weights file listed in `files` and finds every tensor of `layout` in it
    /// (the hash is not checked yet: see [`MappedWeights::verify`]).
    pub fn open(run_dir: &Path, files: &[FileEntry], layout: &ParamLayout) -> Result<Self> {
        let f = model_entry(files)?;
        let path = entry_path(run_dir, f)?;
        let map = map_file(&path)?;
        let mut weights = Self {
            path,
            expected_sha256: f.sha256.clone(),
            map,
            layout: layout.clone(),
            ranges: Vec::new(),
        };
        match tensor_ranges(&weights.path, &weights.map, layout, "") {
            Ok(ranges) => weights.ranges = ranges,
            // A file that does not parse is most often a damaged one: say so by its hash
            // first, as `glass verify` would.
            Err(e) => return Err(weights.verify().err().unwrap_or(e)),
        }
        Ok(weights)
    }

    /// Checks the file's sha256 against the manifest's.
    pub fn verify(&self) -> Result<()> {
        let actual = glass_io::atomic::sha256_hex(&self.map);
        if actual != self.expected_sha256 {
            return Err(RunError::HashMismatch {
                path: self.path.clone(),
                expected: self.expected_sha256.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// The tensors as F32 bytes, named and shaped as the layout says, in layout order.
    pub fn tensors(&self) -> Vec<TensorBytes<'_>> {
        self.layout
            .tensors()
            .iter()
            .zip(&self.ranges)
            .map(|(t, r)| TensorBytes {
                name: t.name.clone(),
                dtype: Dtype::F32,
                shape: t.shape.clone(),
                data: &self.map[r.clone()],
            })
            .collect()
    }

    /// Copies the weights into `params` (laid out as the layout says).
    pub fn copy_into(&self, params: &mut [f32]) {
        copy_ranges(&self.map, &self.layout, &self.ranges, params);
    }
}

/// The weights file of a checkpoint's manifest entry.
fn model_entry(files: &[FileEntry]) -> Result<&FileEntry> {
    files
        .iter()
        .find(|f| f.path.ends_with(MODEL_FILE))
        .ok_or_else(|| RunError::Invalid("manifest entry lacks the model file".into()))
}

/// Writes `model`'s weights as a checkpoint's `model.safetensors` at `path` (fsynced),
/// byte for byte as [`write`] does: a checkpoint rebuilt from the same weights elsewhere
/// (e.g. from a release's transformers folder) has the same sha256. Returns its
/// (sha256, bytes).
pub fn write_model_file(path: &Path, model: &Model) -> Result<(String, u64)> {
    write_tensors(
        path,
        model,
        &[("", &model.params)],
        HashMap::from([("glass".to_string(), "{\"kind\":\"model\"}".to_string())]),
    )
}

/// Directory name of checkpoint `index` at `step`.
pub fn dir_name(index: u32, step: u64) -> String {
    format!("ckpt-{index:04}-step-{step:08}")
}

/// Writes a complete checkpoint directory atomically and returns its files (relative to
/// `run_dir`) and the checkpoint hash (sha256 of `state.json`). `state`'s file hashes
/// are filled in here.
pub fn write(
    run_dir: &Path,
    model: &Model,
    opt: &AdamW,
    state: &mut CheckpointState,
) -> Result<(Vec<FileEntry>, String)> {
    write_with(run_dir, model, &mut WholeMoments(opt), state)
}

/// Refuses to publish checkpoint `state` because its `what` holds non-finite values.
pub fn non_finite(state: &CheckpointState, what: &str) -> RunError {
    RunError::Invalid(format!(
        "refusing to publish checkpoint {} (step {}): its {what} hold non-finite values",
        state.index, state.step
    ))
}

/// [`write`] with the AdamW moments streamed from `moments` (whole in this process, or
/// gathered piece by piece from the ranks that hold them): the same files, byte for byte.
pub fn write_with(
    run_dir: &Path,
    model: &Model,
    moments: &mut dyn MomentSource,
    state: &mut CheckpointState,
) -> Result<(Vec<FileEntry>, String)> {
    if !crate::integrity::all_finite(&model.params) {
        return Err(non_finite(state, "weights"));
    }
    if !moments.finite() {
        return Err(non_finite(state, "optimizer state"));
    }
    let ckpt_root = run_dir.join("checkpoints");
    std::fs::create_dir_all(&ckpt_root).map_err(io(&ckpt_root))?;
    let name = dir_name(state.index, state.step);
    let final_dir = ckpt_root.join(&name);
    let tmp_dir = ckpt_root.join(format!(".{name}.tmp"));
    if tmp_dir.exists() {
        std::fs::remove_dir_all(&tmp_dir).map_err(io(&tmp_dir))?;
    }
    if final_dir.exists() {
        // Left by a crash after the rename but before the manifest listed it: never
        // published, so it is rebuilt from the same bits.
        std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
    }
    std::fs::create_dir_all(&tmp_dir).map_err(io(&tmp_dir))?;
    // One metadata key only: safetensors writes the metadata map in hash order, so
    // several keys would make the file bytes differ from run to run.
    let meta = |kind: &str, extra: String| {
        // No step either: identical tensors give identical files (and hashes).
        HashMap::from([(
            "glass".to_string(),
            format!("{{\"kind\":\"{kind}\"{extra}}}"),
        )])
    };
    let (model_sha, model_len) = write_model_file(&tmp_dir.join(MODEL_FILE), model)?;
    crate::fault::point("after-model-write");
    let opt_meta = meta(
        "optimizer",
        format!(",\"adamw_step\":{}", moments.adamw_step()),
    );
    let (headers, order) = optimizer_stream(&model.layout);
    let mut out = SafetensorsWriter::create(&tmp_dir.join(OPTIMIZER_FILE), &headers, &opt_meta)?;
    for (moment, range) in order {
        moments.stream(moment, range, &mut |values| {
            Ok(out.write(bytemuck::cast_slice(values))?)
        })?;
    }
    let (opt_sha, opt_len) = out.commit()?;
    crate::fault::point("after-optimizer-write");
    state.model_sha256 = model_sha;
    state.optimizer_sha256 = opt_sha;
    let state_bytes = serde_json::to_vec_pretty(state).expect("state serialises");
    write_atomic(&tmp_dir.join(STATE_FILE), &state_bytes)?;
    sync_dir(&tmp_dir)?;
    std::fs::rename(&tmp_dir, &final_dir).map_err(io(&final_dir))?;
    sync_dir(&ckpt_root)?;
    crate::fault::point("after-checkpoint-rename");
    let rel = |f: &str| format!("checkpoints/{name}/{f}");
    let state_sha = glass_io::atomic::sha256_hex(&state_bytes);
    let files = vec![
        FileEntry {
            path: rel(MODEL_FILE),
            sha256: state.model_sha256.clone(),
            bytes: model_len,
        },
        FileEntry {
            path: rel(OPTIMIZER_FILE),
            sha256: state.optimizer_sha256.clone(),
            bytes: opt_len,
        },
        FileEntry {
            path: rel(STATE_FILE),
            sha256: state_sha.clone(),
            bytes: state_bytes.len() as u64,
        },
    ];
    Ok((files, state_sha))
}

/// Verifies `files` against their recorded hashes.
pub fn verify_files(run_dir: &Path, files: &[FileEntry]) -> Result<()> {
    use rayon::prelude::*;
    files.par_iter().try_for_each(|f| verify_file(run_dir, f))
}

/// Where a manifest entry's file is, refusing paths that leave the run.
fn entry_path(run_dir: &Path, f: &FileEntry) -> Result<PathBuf> {
    if !glass_io::paths::is_inside(&f.path) {
        return Err(RunError::Checkpoint {
            path: crate::manifest::RunManifest::path(run_dir),
            msg: format!(
                "lists `{}`, a path outside the run (absolute or with `..`); refusing to read it",
                f.path
            ),
        });
    }
    Ok(run_dir.join(&f.path))
}

fn verify_file(run_dir: &Path, f: &FileEntry) -> Result<()> {
    let p = entry_path(run_dir, f)?;
    let (sha, _) = sha256_file(&p).map_err(|e| RunError::Checkpoint {
        path: p.clone(),
        msg: format!("{e}; the checkpoint is incomplete"),
    })?;
    if sha != f.sha256 {
        return Err(RunError::HashMismatch {
            path: p,
            expected: f.sha256.clone(),
            actual: sha,
        });
    }
    Ok(())
}

/// Loads a checkpoint directory into `model` and `opt` after checking every file's hash
/// against `files` (from the manifest). Returns its state.
pub fn load(
    run_dir: &Path,
    files: &[FileEntry],
    model: &mut Model,
    opt: &mut AdamW,
) -> Result<CheckpointState> {
    verify_files(run_dir, files)?;
    let find = |name: &str| -> Result<PathBuf> {
        files
            .iter()
            .find(|f| f.path.ends_with(name))
            .map(|f| run_dir.join(&f.path))
            .ok_or_else(|| RunError::Invalid(format!("manifest entry lacks {name}")))
    };
    let state_path = find(STATE_FILE)?;
    let state: CheckpointState = serde_json::from_slice(
        &std::fs::read(&state_path).map_err(io(&state_path))?,
    )
    .map_err(|e| RunError::Checkpoint {
        path: state_path.clone(),
        msg: e.to_string(),
    })?;
    let mut params = std::mem::take(&mut model.params);
    let r = read_tensors(&find(MODEL_FILE)?, model, &mut [("", &mut params)]);
    model.params = params;
    r?;
    let (mut m, mut v) = (std::mem::take(&mut opt.m), std::mem::take(&mut opt.v));
    let r = read_tensors(
        &find(OPTIMIZER_FILE)?,
        model,
        &mut [("exp_avg.", &mut m), ("exp_avg_sq.", &mut v)],
    );
    opt.m = m;
    opt.v = v;
    r?;
    opt.step = state.optimizer_step;
    Ok(state)
}

/// [`load`] without reading the AdamW moments into memory: checks every file's hash,
/// loads the weights into `model` and returns the state with the optimizer file opened
/// for reading in pieces ([`OptimizerFile`]; the AdamW step is the state's
/// `optimizer_step`). Rank 0 of a sharded optimizer loads this way.
pub fn load_model(
    run_dir: &Path,
    files: &[FileEntry],
    model: &mut Model,
) -> Result<(CheckpointState, OptimizerFile)> {
    verify_files(run_dir, files)?;
    let find = |name: &str| -> Result<PathBuf> {
        files
            .iter()
            .find(|f| f.path.ends_with(name))
            .map(|f| run_dir.join(&f.path))
            .ok_or_else(|| RunError::Invalid(format!("manifest entry lacks {name}")))
    };
    let state_path = find(STATE_FILE)?;
    let state: CheckpointState = serde_json::from_slice(
        &std::fs::read(&state_path).map_err(io(&state_path))?,
    )
    .map_err(|e| RunError::Checkpoint {
        path: state_path.clone(),
        msg: e.to_string(),
    })?;
    let mut params = std::mem::take(&mut model.params);
    let r = read_tensors(&find(MODEL_FILE)?, model, &mut [("", &mut params)]);
    model.params = params;
    r?;
    let opt = OptimizerFile::open(&find(OPTIMIZER_FILE)?, &model.layout)?;
    Ok((state, opt))
}

/// Loads only the weights of a checkpoint (evaluation, export), hash-checked. Only the
/// model file is hashed: the optimizer state (twice its size) plays no part in the
/// weights, and `glass verify` checks every file.
pub fn load_weights(run_dir: &Path, files: &[FileEntry], model: &mut Model) -> Result<()> {
    let weights = MappedWeights::open(run_dir, files, &model.layout)?;
    // Hash and copy side by side (both read the mapped file); the weights are taken only
    // if the hash matches, so a damaged file never reaches the model.
    let mut params = vec![0.0f32; model.params.len()];
    let (verified, ()) = rayon::join(|| weights.verify(), || weights.copy_into(&mut params));
    verified?;
    model.params = params;
    Ok(())
}
