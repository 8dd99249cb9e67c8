//! Checkpoint weights in the dtype they are stored in, and weights-only runs.
//!
//! A trained run's `model.safetensors` holds f32 weights. A run imported with
//! `--weights-only` keeps each checkpoint's weights in the source's dtype (f32, bf16 or
//! f16) and writes no optimizer state (docs/run-format.md, "Weights-only runs"). Such a
//! checkpoint is opened here: mapped read-only, every layout tensor found in it, and its
//! sha256 checked from the same pages. A 16-bit checkpoint becomes an inference model
//! over the mapped bytes ([`glass_engine::HalfWeights`]) with no f32 copy: a 7B bf16
//! checkpoint costs its 13.5 GB, not 27 GB.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use glass_engine::gemm::Half;
use glass_engine::{HalfWeights, Model, ModelConfig, ParamLayout};
use glass_io::atomic::{sync_dir, write_atomic};
use glass_io::safetensors::{write_safetensors, TensorBytes};
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};

use crate::checkpoint::{self, CheckpointState, FileEntry, MODEL_FILE, STATE_FILE};
use crate::error::{io, Result, RunError};
use crate::manifest::RunManifest;

/// The name Glass gives a weight dtype (`f32`, `bf16`, `f16`).
pub fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "f32",
        Dtype::BF16 => "bf16",
        Dtype::F16 => "f16",
        Dtype::F64 => "f64",
        _ => "other",
    }
}

/// Bytes per value of a weight dtype (f32, bf16, f16).
pub fn dtype_size(d: Dtype) -> usize {
    match d {
        Dtype::BF16 | Dtype::F16 => 2,
        Dtype::F64 => 8,
        _ => 4,
    }
}

fn half_kind(d: Dtype) -> Option<Half> {
    match d {
        Dtype::BF16 => Some(Half::Bf16),
        Dtype::F16 => Some(Half::F16),
        _ => None,
    }
}

/// The index of the first NaN or infinite value among the little-endian `dtype` values
/// of `data` (f32, bf16 or f16), if any.
pub fn first_non_finite(dtype: Dtype, data: &[u8]) -> Option<usize> {
    const CHUNK: usize = 1 << 16;
    let size = dtype_size(dtype);
    let half = half_kind(dtype);
    let bad = |b: &[u8]| -> bool {
        match half {
            Some(h) => !h.is_finite(u16::from_le_bytes([b[0], b[1]])),
            None => !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite(),
        }
    };
    data.par_chunks(CHUNK * size)
        .enumerate()
        .find_map_first(|(c, chunk)| {
            chunk
                .chunks_exact(size)
                .position(bad)
                .map(|i| c * CHUNK + i)
        })
}

/// Widens little-endian `dtype` values (f32, bf16, f16) into `out` (exact).
pub fn widen(dtype: Dtype, data: &[u8], out: &mut [f32]) {
    const CHUNK: usize = 1 << 16;
    let size = dtype_size(dtype);
    let half = half_kind(dtype);
    out.par_chunks_mut(CHUNK)
        .zip(data.par_chunks(CHUNK * size))
        .for_each(|(o, b)| {
            for (x, v) in o.iter_mut().zip(b.chunks_exact(size)) {
                *x = match half {
                    Some(h) => h.widen(u16::from_le_bytes([v[0], v[1]])),
                    None => f32::from_le_bytes([v[0], v[1], v[2], v[3]]),
                };
            }
        });
}

/// Where each layout tensor lies in the safetensors bytes `map` (read from `path`), and
/// the one dtype (f32, bf16 or f16) they all have, after checking names and shapes.
fn layout_ranges(
    path: &Path,
    map: &[u8],
    layout: &ParamLayout,
) -> Result<(Dtype, Vec<Range<usize>>)> {
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
    let mut dtype = None;
    let mut ranges = Vec::with_capacity(layout.tensors().len());
    for t in layout.tensors() {
        let v = st
            .tensor(&t.name)
            .map_err(|_| err(format!("missing tensor `{}`", t.name)))?;
        if !matches!(v.dtype(), Dtype::F32 | Dtype::BF16 | Dtype::F16) {
            return Err(err(format!(
                "tensor `{}` is {:?}; checkpoint weights are F32, BF16 or F16",
                t.name,
                v.dtype()
            )));
        }
        let d = *dtype.get_or_insert(v.dtype());
        if v.dtype() != d || v.shape() != t.shape.as_slice() {
            return Err(err(format!(
                "tensor `{}` is {:?} {:?}, expected {d:?} {:?} (one dtype for every tensor)",
                t.name,
                v.dtype(),
                v.shape(),
                t.shape
            )));
        }
        let at = v.data().as_ptr() as usize - base;
        ranges.push(at..at + v.data().len());
    }
    Ok((dtype.unwrap_or(Dtype::F32), ranges))
}

/// A checkpoint's weights file, mapped read-only in whatever dtype it stores (f32, bf16
/// or f16), checked against the model layout; its hash is checked from the same pages
/// ([`StoredWeights::verify`]).
pub struct StoredWeights {
    path: PathBuf,
    expected_sha256: String,
    map: Arc<memmap2::Mmap>,
    layout: ParamLayout,
    dtype: Dtype,
    ranges: Vec<Range<usize>>,
}

impl StoredWeights {
    /// Maps the weights file listed in `files` and finds every tensor of `layout` in it
    /// (the hash is not checked yet: see [`StoredWeights::verify`]).
    pub fn open(run_dir: &Path, files: &[FileEntry], layout: &ParamLayout) -> Result<Self> {
        let f = checkpoint::model_entry(files)?;
        let path = checkpoint::entry_path(run_dir, f)?;
        let map = checkpoint::map_file(run_dir, &path, f.bytes)?;
        let mut w = Self {
            path,
            expected_sha256: f.sha256.clone(),
            map: Arc::new(map),
            layout: layout.clone(),
            dtype: Dtype::F32,
            ranges: Vec::new(),
        };
        match layout_ranges(&w.path, &w.map, layout) {
            Ok((d, r)) => {
                w.dtype = d;
                w.ranges = r;
            }
            // A file that does not parse is most often a damaged one: say so by its hash
            // first, as `glass verify` would.
            Err(e) => return Err(w.verify().err().unwrap_or(e)),
        }
        Ok(w)
    }

    /// The stored dtype (F32, BF16 or F16).
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of tensor values (the weights' size in this dtype).
    pub fn weight_bytes(&self) -> u64 {
        self.ranges.iter().map(|r| (r.end - r.start) as u64).sum()
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

    /// The tensors' bytes in the stored dtype, named and shaped as the layout says, in
    /// layout order.
    pub fn tensors(&self) -> Vec<TensorBytes<'_>> {
        self.layout
            .tensors()
            .iter()
            .zip(&self.ranges)
            .map(|(t, r)| TensorBytes {
                name: t.name.clone(),
                dtype: self.dtype,
                shape: t.shape.clone(),
                data: &self.map[r.clone()],
            })
            .collect()
    }

    /// Writes the weights, widened to f32 where stored in 16 bits (exact), into `params`
    /// (laid out as the layout says).
    pub fn widen_into(&self, params: &mut [f32]) {
        for (t, r) in self.layout.tensors().iter().zip(&self.ranges) {
            widen(self.dtype, &self.map[r.clone()], &mut params[t.range()]);
        }
    }

    /// The model for evaluation and generation, hash-checked beside the reading: f32
    /// weights are copied into a trainable model; 16-bit weights stay in the mapped file
    /// ([`Model::from_half`]), widened as they are used.
    pub fn into_model(self, cfg: &ModelConfig) -> Result<Model> {
        match half_kind(self.dtype) {
            None => self.into_f32_model(cfg),
            Some(kind) => {
                let names: Vec<(String, Range<usize>)> = self
                    .layout
                    .tensors()
                    .iter()
                    .zip(&self.ranges)
                    .map(|(t, r)| (t.name.clone(), r.clone()))
                    .collect();
                let bytes: glass_engine::weights::WeightBytes = self.map.clone();
                let what = self.path.display().to_string();
                let (verified, half) = rayon::join(
                    || self.verify(),
                    || HalfWeights::new(&self.layout, kind, bytes, &names, &what),
                );
                verified?;
                Ok(Model::from_half(cfg, half?)?)
            }
        }
    }

    /// The weights widened into a trainable f32 model (exact), hash-checked beside the
    /// reading, every value checked finite (as [`HalfWeights::new`] checks 16-bit ones);
    /// a damaged or forged file never reaches the model.
    pub fn into_f32_model(self, cfg: &ModelConfig) -> Result<Model> {
        let mut model = Model::zeros(cfg)?;
        let mut params = vec![0.0f32; model.params.len()];
        let (verified, ()) = rayon::join(|| self.verify(), || self.widen_into(&mut params));
        verified?;
        for t in self.layout.tensors() {
            let xs = &params[t.range()];
            if let Some(i) = checkpoint::first_bad(xs, checkpoint::ValueRule::Finite) {
                return Err(checkpoint::bad_value(
                    &self.path,
                    &t.name,
                    i,
                    xs[i],
                    checkpoint::ValueRule::Finite,
                ));
            }
        }
        model.params = params;
        Ok(model)
    }
}

/// The dtype and size of a checkpoint's weights, from its file's header (nothing else is
/// read): `glass info` shows them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WeightsFileInfo {
    /// `f32`, `bf16`, `f16` (or `mixed`).
    pub dtype: String,
    /// Bytes of the file.
    pub bytes: u64,
}

/// [`WeightsFileInfo`] of the weights file listed in `files`.
pub fn weights_file_info(run_dir: &Path, files: &[FileEntry]) -> Result<WeightsFileInfo> {
    let f = checkpoint::model_entry(files)?;
    let path = checkpoint::entry_path(run_dir, f)?;
    let map = checkpoint::map_file(run_dir, &path, f.bytes)?;
    let (_, meta) = SafeTensors::read_metadata(&map).map_err(|e| RunError::Checkpoint {
        path: path.clone(),
        msg: format!("not a valid safetensors file ({e}); the file is truncated or corrupt"),
    })?;
    let mut dtypes: Vec<&str> = meta
        .tensors()
        .values()
        .map(|t| dtype_name(t.dtype))
        .collect();
    dtypes.sort();
    dtypes.dedup();
    let dtype = match dtypes.as_slice() {
        [one] => one.to_string(),
        _ => "mixed".to_string(),
    };
    Ok(WeightsFileInfo {
        dtype,
        bytes: f.bytes,
    })
}

/// Writes a weights-only checkpoint directory atomically: `model.safetensors` holding
/// `tensors` (every tensor of `layout`, by its name and shape, all in one dtype: f32,
/// bf16 or f16) with the metadata of [`checkpoint::write`]'s model file (so f32 weights
/// give the same bytes), and `state.json` pinning it, with an empty optimizer hash: there
/// is no optimizer file. Returns its files (relative to `run_dir`) and the checkpoint
/// hash (sha256 of `state.json`).
pub fn write_weights_only(
    run_dir: &Path,
    layout: &ParamLayout,
    tensors: &[TensorBytes<'_>],
    state: &mut CheckpointState,
) -> Result<(Vec<FileEntry>, String)> {
    let refuse = |msg: String| {
        RunError::Invalid(format!(
            "refusing to publish checkpoint {} (step {}): {msg}",
            state.index, state.step
        ))
    };
    if tensors.len() != layout.tensors().len() {
        return Err(refuse(format!(
            "{} tensors given, the layout has {}",
            tensors.len(),
            layout.tensors().len()
        )));
    }
    let dtype = tensors.first().map_or(Dtype::F32, |t| t.dtype);
    for t in layout.tensors() {
        let Some(x) = tensors.iter().find(|x| x.name == t.name) else {
            return Err(refuse(format!("no tensor `{}`", t.name)));
        };
        if !matches!(x.dtype, Dtype::F32 | Dtype::BF16 | Dtype::F16)
            || x.dtype != dtype
            || x.shape != t.shape
            || x.data.len() != t.len() * dtype_size(dtype)
        {
            return Err(refuse(format!(
                "tensor `{}` is {:?} {:?} ({} bytes); expected {dtype:?} {:?}",
                t.name,
                x.dtype,
                x.shape,
                x.data.len(),
                t.shape
            )));
        }
        if let Some(i) = first_non_finite(dtype, x.data) {
            return Err(refuse(format!(
                "tensor `{}` holds a NaN or infinite value (element {i})",
                t.name
            )));
        }
    }
    let ckpt_root = run_dir.join("checkpoints");
    let name = checkpoint::dir_name(state.index, state.step);
    let final_dir = ckpt_root.join(&name);
    let tmp_dir = ckpt_root.join(format!(".{name}.tmp"));
    glass_io::open::check_write_beneath(run_dir, &tmp_dir)?;
    glass_io::open::check_write_beneath(run_dir, &final_dir)?;
    std::fs::create_dir_all(&ckpt_root).map_err(io(&ckpt_root))?;
    for d in [&tmp_dir, &final_dir] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(io(d))?;
        }
    }
    std::fs::create_dir_all(&tmp_dir).map_err(io(&tmp_dir))?;
    let (model_sha, model_len) = write_safetensors(
        &tmp_dir.join(MODEL_FILE),
        tensors,
        &checkpoint::file_meta("model", String::new()),
    )?;
    state.model_sha256 = model_sha;
    state.optimizer_sha256 = String::new();
    let state_bytes = serde_json::to_vec_pretty(state).expect("state serialises");
    write_atomic(&tmp_dir.join(STATE_FILE), &state_bytes)?;
    sync_dir(&tmp_dir)?;
    std::fs::rename(&tmp_dir, &final_dir).map_err(io(&final_dir))?;
    sync_dir(&ckpt_root)?;
    let rel = |f: &str| format!("checkpoints/{name}/{f}");
    let state_sha = glass_io::atomic::sha256_hex(&state_bytes);
    Ok((
        vec![
            FileEntry {
                path: rel(MODEL_FILE),
                sha256: state.model_sha256.clone(),
                bytes: model_len,
            },
            FileEntry {
                path: rel(STATE_FILE),
                sha256: state_sha.clone(),
                bytes: state_bytes.len() as u64,
            },
        ],
        state_sha,
    ))
}

/// Why `what` (`glass train`, `glass verify --replay`, a branch) refuses the weights-only
/// run `run_dir`, and how to get a trainable run.
pub fn weights_only_refusal(run_dir: &Path, what: &str) -> RunError {
    RunError::Invalid(format!(
        "{}: {what} needs a trainable run, but this run was imported with --weights-only (its checkpoints hold the weights in their source dtype and no optimizer state); it evaluates, generates, traces, serves, exports and releases its weights. For training, import the source again without --weights-only (f32 weights and zero AdamW moments): `glass import hf DIR NEW` or `glass import llm360 ... NEW`",
        run_dir.display()
    ))
}

/// Refuses with [`weights_only_refusal`] when `run_dir` is a weights-only run, and
/// when its model's block has no backward pass in Glass (GPT-NeoX, OLMo: forward only).
pub fn ensure_trainable(run_dir: &Path, what: &str) -> Result<()> {
    if let Some(m) = RunManifest::load(run_dir)? {
        if m.weights_only {
            return Err(weights_only_refusal(run_dir, what));
        }
    }
    if let Ok(cfg) = crate::config::RunConfig::load(run_dir) {
        cfg.model.arch.trainable().map_err(|why| {
            RunError::Invalid(format!("{}: {what} refused: {why}", run_dir.display()))
        })?;
    }
    Ok(())
}
