//! Checkpoints: weights and optimizer state as safetensors, plus a JSON state file.
//!
//! A checkpoint directory is written under a temporary name and renamed into place only
//! when every file is complete and fsynced; it counts as published once the run manifest
//! lists it with its hashes. The checkpoint's identity is the sha256 of its `state.json`,
//! which itself records the sha256 of the two tensor files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use glass_io::open::FileIdentity;

use glass_engine::layout::ParamLayout;
use glass_engine::{AdamW, Model};
use glass_io::atomic::{sync_dir, write_atomic};
use glass_io::safetensors::{write_safetensors, SafetensorsWriter, TensorBytes};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::error::{io, Result, RunError};
use crate::moments::{MomentSource, OptimizerFile, WholeMoments};

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

/// Writes named views of `buffers` (one per prefix) as one safetensors file, fsynced;
/// returns its (sha256, bytes).
pub(crate) fn write_tensors(
    path: &Path,
    model: &Model,
    buffers: &[(&str, &[f32])],
    meta: HashMap<String, String>,
) -> Result<(String, u64)> {
    Ok(write_safetensors(
        path,
        &tensor_views(model, buffers),
        &meta,
    )?)
}

/// Named views of `buffers` (one per prefix), in layout order.
fn tensor_views<'a>(model: &Model, buffers: &[(&str, &'a [f32])]) -> Vec<TensorBytes<'a>> {
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
    tensors
}

/// The one metadata key of a checkpoint file (several keys would be written in hash
/// order, making the bytes differ from run to run; no step, so identical tensors give
/// identical files).
pub(crate) fn file_meta(kind: &str, extra: String) -> HashMap<String, String> {
    HashMap::from([(
        "glass".to_string(),
        format!("{{\"kind\":\"{kind}\"{extra}}}"),
    )])
}

/// The sha256 of each file [`write`] would write for this state (`model.safetensors`,
/// `optimizer.safetensors`, `state.json`, whose tensor hashes are filled in here), and
/// the checkpoint's hash, computed without writing anything: `glass verify --replay`
/// compares them with the published ones and leaves the run untouched.
pub fn hashes(
    model: &Model,
    opt: &AdamW,
    state: &mut CheckpointState,
) -> (Vec<(&'static str, String)>, String) {
    let (model_sha, _) = glass_io::safetensors::hash_safetensors(
        &tensor_views(model, &[("", &model.params)]),
        &file_meta("model", String::new()),
    );
    let (opt_sha, _) = glass_io::safetensors::hash_safetensors(
        &tensor_views(model, &[("exp_avg.", &opt.m), ("exp_avg_sq.", &opt.v)]),
        &file_meta("optimizer", format!(",\"adamw_step\":{}", opt.step)),
    );
    state.model_sha256 = model_sha.clone();
    state.optimizer_sha256 = opt_sha.clone();
    let state_bytes = serde_json::to_vec_pretty(state).expect("state serialises");
    let state_sha = glass_io::atomic::sha256_hex(&state_bytes);
    (
        vec![
            (MODEL_FILE, model_sha),
            (OPTIMIZER_FILE, opt_sha),
            (STATE_FILE, state_sha.clone()),
        ],
        state_sha,
    )
}

/// Where each layout tensor named `prefix + layout name` lies in the safetensors bytes
/// `map` (read from `path`), in layout order, after checking its dtype (F32) and shape.
pub(crate) fn tensor_ranges(
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

/// Maps a checkpoint file read-only: a regular file beneath `run_dir` (no link followed)
/// with the length the manifest records ([`glass_io::open`]).
pub(crate) fn map_file(run_dir: &Path, path: &Path, want: u64) -> Result<memmap2::Mmap> {
    let f = glass_io::open::open_beneath(run_dir, path)?;
    f.expect_len(want)?;
    f.map()?.ok_or_else(|| RunError::Checkpoint {
        path: path.into(),
        msg: "empty; the checkpoint is incomplete".into(),
    })
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

/// What every value of a loaded tensor must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueRule {
    /// Finite (weights, AdamW's first moments).
    Finite,
    /// Finite and not negative (AdamW's second moments, running averages of squares:
    /// a negative one makes the update's square root NaN).
    FiniteNonNegative,
}

impl ValueRule {
    /// Whether `x` obeys the rule (−0.0 counts as not negative).
    #[inline]
    fn holds(self, x: f32) -> bool {
        match self {
            ValueRule::Finite => x.is_finite(),
            ValueRule::FiniteNonNegative => x.is_finite() && x >= 0.0,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ValueRule::Finite => "finite",
            ValueRule::FiniteNonNegative => "finite and not negative",
        }
    }
}

/// Elements checked per piece: small enough that a piece just copied is still in cache
/// when it is checked, so the check adds no pass over memory.
const CHECK_PIECE: usize = 1 << 14;

/// Index of the first element of `xs` that breaks `rule`. Written as a branch-free fold
/// per piece, so it vectorises; the exact index is looked for only in a bad piece.
pub(crate) fn first_bad(xs: &[f32], rule: ValueRule) -> Option<usize> {
    let mut at = 0;
    for piece in xs.chunks(CHECK_PIECE) {
        let ok = match rule {
            ValueRule::Finite => piece.iter().fold(true, |a, x| a & x.is_finite()),
            ValueRule::FiniteNonNegative => piece
                .iter()
                .fold(true, |a, &x| a & (x.is_finite() & (x >= 0.0))),
        };
        if !ok {
            return piece.iter().position(|&x| !rule.holds(x)).map(|i| at + i);
        }
        at += piece.len();
    }
    None
}

/// The error for element `i` of tensor `name` in `path` breaking `rule`.
pub(crate) fn bad_value(path: &Path, name: &str, i: usize, x: f32, rule: ValueRule) -> RunError {
    RunError::Checkpoint {
        path: path.into(),
        msg: format!(
            "tensor `{name}` holds {x} at element {i}, but its values must be {}; Glass never publishes such a checkpoint, so the file was damaged or forged — restore it from a copy, or resume from an earlier checkpoint",
            rule.describe()
        ),
    }
}

/// [`copy_ranges`] that also checks every value against `rule`, piece by piece right
/// after copying it; the first bad value is an error naming the file, the tensor
/// (`prefix` + layout name) and the element.
fn copy_ranges_checked(
    path: &Path,
    map: &[u8],
    layout: &ParamLayout,
    ranges: &[std::ops::Range<usize>],
    dst: &mut [f32],
    prefix: &str,
    rule: ValueRule,
) -> Result<()> {
    for (t, r) in layout.tensors().iter().zip(ranges) {
        let out = &mut dst[t.range()];
        let src = &map[r.clone()];
        for (k, piece) in out.chunks_mut(CHECK_PIECE).enumerate() {
            let bytes = piece.len() * 4;
            let from = k * CHECK_PIECE * 4;
            bytemuck::cast_slice_mut::<f32, u8>(piece).copy_from_slice(&src[from..from + bytes]);
            if let Some(i) = first_bad(piece, rule) {
                let i = k * CHECK_PIECE + i;
                return Err(bad_value(
                    path,
                    &format!("{prefix}{}", t.name),
                    i,
                    out[i],
                    rule,
                ));
            }
        }
    }
    Ok(())
}

/// Copies the tensors named `prefix + layout name` from a checkpoint's safetensors file
/// (listed as `f`) into `dst`, checking every value against the rule given with each
/// destination.
fn read_tensors(
    run_dir: &Path,
    f: &FileEntry,
    model: &Model,
    dsts: &mut [(&str, &mut [f32], ValueRule)],
) -> Result<()> {
    let path = entry_path(run_dir, f)?;
    let map = map_file(run_dir, &path, f.bytes)?;
    for (prefix, dst, rule) in dsts.iter_mut() {
        let ranges = tensor_ranges(&path, &map, &model.layout, prefix)?;
        copy_ranges_checked(&path, &map, &model.layout, &ranges, dst, prefix, *rule)?;
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
        let map = map_file(run_dir, &path, f.bytes)?;
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

    /// Checks the file's sha256 against the manifest's and, in the same pass over the
    /// mapped pages, that every weight is finite: an exact export or a release streams
    /// these bytes out as they are, so a forged non-finite weight must stop here. A hash
    /// mismatch is reported first (it says more about what happened).
    pub fn verify(&self) -> Result<()> {
        use sha2::{Digest, Sha256};
        const BLOCK: usize = 1 << 20;
        let mut hasher = Sha256::new();
        let mut bad = None;
        for (b, block) in self.map.chunks(BLOCK).enumerate() {
            hasher.update(block);
            if bad.is_none() {
                bad = self.first_bad_in(b * BLOCK..b * BLOCK + block.len());
            }
        }
        let actual = hex::encode(hasher.finalize());
        if actual != self.expected_sha256 {
            return Err(RunError::HashMismatch {
                path: self.path.clone(),
                expected: self.expected_sha256.clone(),
                actual,
            });
        }
        match bad {
            Some((t, i, x)) => Err(bad_value(
                &self.path,
                &self.layout.tensors()[t].name,
                i,
                x,
                ValueRule::Finite,
            )),
            None => Ok(()),
        }
    }

    /// The first non-finite weight whose first byte lies in `bytes` of the map, as
    /// (tensor in layout order, element, value).
    fn first_bad_in(&self, bytes: std::ops::Range<usize>) -> Option<(usize, usize, f32)> {
        for (t, r) in self.ranges.iter().enumerate() {
            let n = (r.end - r.start) / 4;
            // Elements starting in `bytes` (an element may end in the next block).
            let first = bytes.start.saturating_sub(r.start).div_ceil(4).min(n);
            let end = bytes.end.saturating_sub(r.start).div_ceil(4).min(n);
            if first >= end {
                continue;
            }
            let data = &self.map[r.start + 4 * first..r.start + 4 * end];
            let value = |c: &[u8]| f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let ok = data
                .chunks_exact(4)
                .fold(true, |ok, c| ok & value(c).is_finite());
            if !ok {
                let (i, x) = data
                    .chunks_exact(4)
                    .map(value)
                    .enumerate()
                    .find(|(_, x)| !x.is_finite())?;
                return Some((t, first + i, x));
            }
        }
        None
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
pub(crate) fn model_entry(files: &[FileEntry]) -> Result<&FileEntry> {
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
        file_meta("model", String::new()),
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
    let name = dir_name(state.index, state.step);
    let final_dir = ckpt_root.join(&name);
    let tmp_dir = ckpt_root.join(format!(".{name}.tmp"));
    // Never through a link: `checkpoints/` (or a leftover folder) pointing elsewhere is
    // refused before anything is removed or written.
    glass_io::open::check_write_beneath(run_dir, &tmp_dir)?;
    glass_io::open::check_write_beneath(run_dir, &final_dir)?;
    std::fs::create_dir_all(&ckpt_root).map_err(io(&ckpt_root))?;
    if tmp_dir.exists() {
        std::fs::remove_dir_all(&tmp_dir).map_err(io(&tmp_dir))?;
    }
    if final_dir.exists() {
        // Left by a crash after the rename but before the manifest listed it: never
        // published, so it is rebuilt from the same bits.
        std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
    }
    std::fs::create_dir_all(&tmp_dir).map_err(io(&tmp_dir))?;
    let (model_sha, model_len) = write_model_file(&tmp_dir.join(MODEL_FILE), model)?;
    crate::fault::point("after-model-write");
    let opt_meta = file_meta(
        "optimizer",
        format!(",\"adamw_step\":{}", moments.adamw_step()),
    );
    let (headers, order) = crate::moments::optimizer_stream(&model.layout);
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

/// Verifies `files` against their recorded lengths and hashes.
pub fn verify_files(run_dir: &Path, files: &[FileEntry]) -> Result<()> {
    verify_files_until(run_dir, files, &AtomicBool::new(false)).map(|_| ())
}

/// [`verify_files`] that stops (with an error) soon after `stop` is set: a long-lived
/// caller (the dashboard) bounds its work by it. Returns the identities of the files as
/// hashed, for an in-memory cache of results ([`file_identities`]).
pub fn verify_files_until(
    run_dir: &Path,
    files: &[FileEntry],
    stop: &AtomicBool,
) -> Result<Vec<FileIdentity>> {
    use rayon::prelude::*;
    files
        .par_iter()
        .map(|f| verify_file(run_dir, f, stop))
        .collect()
}

/// The identities of `files` as they are now (opened beneath the run, lengths compared
/// with the manifest's, nothing read): equal to those [`verify_files_until`] returned
/// means the files were not written since.
pub fn file_identities(run_dir: &Path, files: &[FileEntry]) -> Result<Vec<FileIdentity>> {
    files
        .iter()
        .map(|f| {
            let o = glass_io::open::open_beneath(run_dir, &entry_path(run_dir, f)?)?;
            o.expect_len(f.bytes)?;
            Ok(o.identity())
        })
        .collect()
}

/// Where a manifest entry's file is, refusing paths that leave the run.
pub(crate) fn entry_path(run_dir: &Path, f: &FileEntry) -> Result<PathBuf> {
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

/// Hashes one listed file: a regular file beneath the run (no link followed) whose length
/// is the recorded one, else it is not read at all.
fn verify_file(run_dir: &Path, f: &FileEntry, stop: &AtomicBool) -> Result<FileIdentity> {
    let p = entry_path(run_dir, f)?;
    let bad = |e: glass_io::IoError| RunError::Checkpoint {
        path: p.clone(),
        msg: format!("{}; the checkpoint is incomplete or was replaced", e.source),
    };
    let opened = glass_io::open::open_beneath(run_dir, &p).map_err(bad)?;
    opened.expect_len(f.bytes).map_err(bad)?;
    let identity = opened.identity();
    let (sha, _) = opened.sha256_cancellable(stop).map_err(bad)?;
    if sha != f.sha256 {
        return Err(RunError::HashMismatch {
            path: p,
            expected: f.sha256.clone(),
            actual: sha,
        });
    }
    Ok(identity)
}

/// Checks every value of a checkpoint's weights or optimizer state (F32 tensors) at
/// `path` beneath `run_dir`, `bytes` long: finite, and AdamW's second moments
/// (`exp_avg_sq.*`) not negative. A hash proves the file is the one listed, not that its
/// numbers are ones Glass would have written. `glass verify` runs it after the hashes;
/// loaders need not, as they check each value while copying it.
pub fn check_values(run_dir: &Path, path: &Path, bytes: u64) -> Result<()> {
    let map = map_file(run_dir, path, bytes)?;
    let st = SafeTensors::deserialize(&map).map_err(|e| RunError::Checkpoint {
        path: path.into(),
        msg: format!("not a valid safetensors file ({e}); the file is truncated or corrupt"),
    })?;
    let mut tensors = st.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, view) in tensors {
        if view.dtype() != Dtype::F32 {
            continue;
        }
        let rule = if name.starts_with("exp_avg_sq.") {
            ValueRule::FiniteNonNegative
        } else {
            ValueRule::Finite
        };
        // Piece by piece through one small buffer: no copy of a whole tensor.
        let mut piece = vec![0f32; CHECK_PIECE];
        for (k, bytes) in view.data().chunks(CHECK_PIECE * 4).enumerate() {
            let n = bytes.len() / 4;
            for (x, c) in piece[..n].iter_mut().zip(bytes.chunks_exact(4)) {
                *x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            if let Some(i) = first_bad(&piece[..n], rule) {
                return Err(bad_value(path, &name, k * CHECK_PIECE + i, piece[i], rule));
            }
        }
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
    let find = |name: &str| -> Result<&FileEntry> {
        files
            .iter()
            .find(|f| f.path.ends_with(name))
            .ok_or_else(|| RunError::Invalid(format!("manifest entry lacks {name}")))
    };
    let state_entry = find(STATE_FILE)?;
    let state_path = entry_path(run_dir, state_entry)?;
    let state: CheckpointState = serde_json::from_slice(&glass_io::open::read_beneath(
        run_dir,
        &state_path,
        state_entry.bytes,
    )?)
    .map_err(|e| RunError::Checkpoint {
        path: state_path.clone(),
        msg: e.to_string(),
    })?;
    // Every value is checked as it is copied: a forged or damaged checkpoint whose
    // hashes were rewritten to match must not train on, replay, or be republished.
    let mut params = std::mem::take(&mut model.params);
    let r = read_tensors(
        run_dir,
        find(MODEL_FILE)?,
        model,
        &mut [("", &mut params, ValueRule::Finite)],
    );
    model.params = params;
    r?;
    let (mut m, mut v) = (std::mem::take(&mut opt.m), std::mem::take(&mut opt.v));
    let r = read_tensors(
        run_dir,
        find(OPTIMIZER_FILE)?,
        model,
        &mut [
            ("exp_avg.", &mut m, ValueRule::Finite),
            ("exp_avg_sq.", &mut v, ValueRule::FiniteNonNegative),
        ],
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
    let find = |name: &str| -> Result<&FileEntry> {
        files
            .iter()
            .find(|f| f.path.ends_with(name))
            .ok_or_else(|| RunError::Invalid(format!("manifest entry lacks {name}")))
    };
    let state_entry = find(STATE_FILE)?;
    let state_path = entry_path(run_dir, state_entry)?;
    let state: CheckpointState = serde_json::from_slice(&glass_io::open::read_beneath(
        run_dir,
        &state_path,
        state_entry.bytes,
    )?)
    .map_err(|e| RunError::Checkpoint {
        path: state_path.clone(),
        msg: e.to_string(),
    })?;
    let mut params = std::mem::take(&mut model.params);
    let r = read_tensors(
        run_dir,
        find(MODEL_FILE)?,
        model,
        &mut [("", &mut params, ValueRule::Finite)],
    );
    model.params = params;
    r?;
    let opt = OptimizerFile::open(run_dir, find(OPTIMIZER_FILE)?, &model.layout)?;
    Ok((state, opt))
}

/// Loads only the weights of a checkpoint (evaluation, export), hash-checked and every
/// weight checked finite ([`MappedWeights::verify`]). Only the model file is hashed: the optimizer state (twice its
/// size) plays no part in the weights, and `glass verify` checks every file.
pub fn load_weights(run_dir: &Path, files: &[FileEntry], model: &mut Model) -> Result<()> {
    let weights = MappedWeights::open(run_dir, files, &model.layout)?;
    // Hash (and check every value) and copy side by side (both read the mapped file);
    // the weights are taken only if both checks pass, so a damaged or forged file never
    // reaches the model.
    let mut params = vec![0.0f32; model.params.len()];
    let (verified, ()) = rayon::join(|| weights.verify(), || weights.copy_into(&mut params));
    verified?;
    model.params = params;
    Ok(())
}
