//! `glass export hf`: one checkpoint of a run as a transformers `LlamaForCausalLM` folder.
//!
//! The folder is assembled in a temporary sibling directory (every file fsynced) and
//! renamed into place, so it appears complete or not at all. `glass-export.json` and the
//! model card list the sha256 of every file, and the card states exactly which run,
//! checkpoint, step, tokens and data this is.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use glass_engine::Model;
use glass_io::atomic::{sync_dir, write_atomic, write_atomic_all};
use glass_io::safetensors::{write_safetensors, TensorBytes};
use glass_run::checkpoint::CheckpointState;
use glass_run::{RunConfig, RunManifest};
use rayon::prelude::*;
use safetensors::Dtype;
use serde::Serialize;
use serde_json::json;

use crate::error::{file_err, io, HfError, Result};
use crate::hf_config::{to_hf, Folds, SpecialTokenIds};

/// Weight dtype of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportDtype {
    /// f32: the checkpoint's values exactly (unless scales were folded).
    F32,
    /// bfloat16, rounded to nearest even.
    BF16,
    /// IEEE half, rounded to nearest even.
    F16,
}

impl ExportDtype {
    /// Parses `f32`, `bf16` or `f16`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::BF16),
            "f16" | "float16" => Ok(Self::F16),
            _ => Err(HfError::Refused(format!(
                "unknown dtype `{s}`; use f32, bf16 or f16"
            ))),
        }
    }
    /// The dtype name transformers uses (`torch_dtype`).
    pub fn torch_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::BF16 => "bfloat16",
            Self::F16 => "float16",
        }
    }
    fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            _ => 2,
        }
    }
    fn st(self) -> Dtype {
        match self {
            Self::F32 => Dtype::F32,
            Self::BF16 => Dtype::BF16,
            Self::F16 => Dtype::F16,
        }
    }
    /// The export dtype that keeps weights stored as `d` (f32, bf16 or f16) unchanged.
    pub fn of_stored(d: Dtype) -> Self {
        match d {
            Dtype::BF16 => Self::BF16,
            Dtype::F16 => Self::F16,
            _ => Self::F32,
        }
    }
}

/// Parses a shard size like `5GB`, `500MB`, `40KB`, `2GiB` or a plain byte count.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| HfError::Refused(format!("cannot parse size `{s}` (e.g. 5GB, 500MB)")))?;
    let mult: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        u => {
            return Err(HfError::Refused(format!(
                "unknown size unit `{u}` in `{s}` (B, KB, MB, GB, KiB, MiB, GiB)"
            )))
        }
    };
    let b = (n * mult).round();
    if b < 1.0 {
        return Err(HfError::Refused(format!("size `{s}` must be positive")));
    }
    Ok(b as u64)
}

/// Options of [`export`].
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Checkpoint index (default: the latest).
    pub checkpoint: Option<u32>,
    /// Weight dtype; `None`: the checkpoint's own (f32 for a trained run; bf16 or f16
    /// for a weights-only run imported so), written without conversion.
    pub dtype: Option<ExportDtype>,
    /// Largest weight shard in bytes before splitting (transformers' default is 5 GB).
    pub max_shard_bytes: u64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            checkpoint: None,
            dtype: None,
            max_shard_bytes: 5_000_000_000,
        }
    }
}

/// One file of an export.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ExportedFile {
    /// Name inside the folder.
    pub path: String,
    /// Hex sha256.
    pub sha256: String,
    /// Size.
    pub bytes: u64,
}

/// What [`export`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// The folder.
    pub out: PathBuf,
    /// Checkpoint index.
    pub checkpoint: u32,
    /// Its step.
    pub step: u64,
    /// Every file with its hash.
    pub files: Vec<ExportedFile>,
    /// Bytes of weight files.
    pub weight_bytes: u64,
    /// Scales folded into the weights (empty when none).
    pub folds: Vec<String>,
    /// Things the user should know (e.g. the config changed since the checkpoint).
    pub warnings: Vec<String>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// `v`, values of `src` (f32, bf16 or f16), in `dtype`: the same bytes when the dtypes
/// agree, else widened (exact) and rounded once to nearest even.
fn encode<'a>(v: &'a [u8], src: Dtype, dtype: ExportDtype) -> (Dtype, Cow<'a, [u8]>) {
    if src == dtype.st() {
        return (src, Cow::Borrowed(v));
    }
    if src != Dtype::F32 {
        let mut wide = vec![0.0f32; v.len() / glass_run::weights::dtype_size(src)];
        glass_run::weights::widen(src, v, &mut wide);
        let (d, out) = encode(bytemuck::cast_slice(&wide), Dtype::F32, dtype);
        return (d, Cow::Owned(out.into_owned()));
    }
    let values = || {
        v.par_chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("four bytes")))
    };
    match dtype {
        ExportDtype::F32 => (Dtype::F32, Cow::Borrowed(v)),
        ExportDtype::BF16 => {
            let out: Vec<u16> = values()
                .map(|x| half::bf16::from_f32(x).to_bits())
                .collect();
            (Dtype::BF16, Cow::Owned(bytemuck::cast_slice(&out).to_vec()))
        }
        ExportDtype::F16 => {
            let out: Vec<u16> = values().map(|x| half::f16::from_f32(x).to_bits()).collect();
            (Dtype::F16, Cow::Owned(bytemuck::cast_slice(&out).to_vec()))
        }
    }
}

/// Multiplies the folded scales into `model.params` (see [`Folds`]).
pub fn apply_folds(model: &mut Model, f: &Folds) {
    let lay = model.layout.clone();
    let cfg = model.cfg.clone();
    let scale = |p: &mut [f32], s: f32| {
        if s != 1.0 {
            p.iter_mut().for_each(|x| *x *= s);
        }
    };
    let d = cfg.d_model;
    scale(
        &mut model.params[lay.embed..lay.embed + cfg.vocab_size * d],
        f.embed,
    );
    if !cfg.tie_embeddings {
        scale(
            &mut model.params[lay.head..lay.head + cfg.vocab_size * d],
            f.head,
        );
    }
    if let Some(w) = lay.norm_f_w {
        scale(&mut model.params[w..w + d], f.final_norm);
    }
    let q_len = cfg.n_heads * cfg.head_dim() * d;
    for b in &lay.blocks {
        scale(&mut model.params[b.qkv..b.qkv + q_len], f.q);
    }
}

/// A model's weights as F32 tensors named as transformers names them, for
/// [`write_weights`].
pub fn model_tensors(model: &Model) -> Vec<TensorBytes<'_>> {
    model
        .layout
        .tensors()
        .iter()
        .map(|t| TensorBytes {
            name: t.name.clone(),
            dtype: Dtype::F32,
            shape: t.shape.clone(),
            data: bytemuck::cast_slice(&model.params[t.range()]),
        })
        .collect()
}

/// Writes `tensors` (f32, bf16 or f16 values, named as transformers names them) as
/// safetensors in `dtype` (sharded above `max_shard_bytes`) into `dir`; returns the files written with
/// their hashes (index last when sharded). Each shard is hashed as it is written
/// (`write_safetensors`), never read back.
pub fn write_weights(
    dir: &Path,
    tensors: &[TensorBytes<'_>],
    dtype: ExportDtype,
    max_shard_bytes: u64,
) -> Result<Vec<ExportedFile>> {
    let mut shards: Vec<Vec<usize>> = vec![vec![]];
    let mut size = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        let n = (t.data.len() / glass_run::weights::dtype_size(t.dtype) * dtype.size()) as u64;
        if !shards.last().expect("one").is_empty() && size + n > max_shard_bytes {
            shards.push(vec![]);
            size = 0;
        }
        shards.last_mut().expect("one").push(i);
        size += n;
    }
    let total = shards.len();
    let mut files = Vec::new();
    let mut weight_map = serde_json::Map::new();
    let mut total_size = 0u64;
    // One metadata key: safetensors writes its metadata map in hash order, so a single
    // key keeps the bytes deterministic. transformers requires `format`.
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    for (s, idx) in shards.iter().enumerate() {
        let name = if total == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{total:05}.safetensors", s + 1)
        };
        let encoded: Vec<(Dtype, Cow<[u8]>)> = idx
            .iter()
            .map(|&i| encode(tensors[i].data, tensors[i].dtype, dtype))
            .collect();
        let shard: Vec<TensorBytes> = idx
            .iter()
            .zip(&encoded)
            .map(|(&i, (dt, data))| {
                let t = &tensors[i];
                total_size += data.len() as u64;
                weight_map.insert(t.name.clone(), json!(name));
                TensorBytes {
                    name: t.name.clone(),
                    dtype: *dt,
                    shape: t.shape.clone(),
                    data,
                }
            })
            .collect();
        let (sha256, bytes) = write_safetensors(&dir.join(&name), &shard, &meta)?;
        files.push(ExportedFile {
            path: name,
            sha256,
            bytes,
        });
    }
    if total > 1 {
        let index = json!({"metadata": {"total_size": total_size}, "weight_map": weight_map});
        let name = "model.safetensors.index.json";
        let bytes = json_bytes(&index);
        write_atomic(&dir.join(name), &bytes)?;
        files.push(exported(name, &bytes));
    }
    Ok(files)
}

/// Pretty JSON with a final newline, as every JSON file of an export is written.
fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("json");
    b.push(b'\n');
    b
}

/// Writes small files of `dir` together, their fsyncs side by side (`write_atomic_all`).
fn write_all(dir: &Path, files: &[(&str, Vec<u8>)]) -> Result<()> {
    let paths: Vec<PathBuf> = files.iter().map(|(n, _)| dir.join(n)).collect();
    let batch: Vec<(&Path, &[u8])> = paths
        .iter()
        .zip(files)
        .map(|(p, (_, b))| (p.as_path(), b.as_slice()))
        .collect();
    write_atomic_all(&batch)?;
    Ok(())
}

/// The manifest entry of a file written from memory.
fn exported(name: &str, bytes: &[u8]) -> ExportedFile {
    ExportedFile {
        path: name.to_string(),
        sha256: glass_io::atomic::sha256_hex(bytes),
        bytes: bytes.len() as u64,
    }
}

/// Exports checkpoint `opts.checkpoint` (default: latest) of `run_dir` to the new folder
/// `out`, refusing architectures transformers cannot express exactly.
pub fn export(run_dir: &Path, out: &Path, opts: &ExportOptions) -> Result<ExportReport> {
    let t0 = Instant::now();
    if out.exists() {
        return Err(file_err(out, "already exists; export into a new directory"));
    }
    let cfg = RunConfig::load(run_dir)?;
    let manifest = RunManifest::require(run_dir)?;
    let entry = match opts.checkpoint {
        Some(k) => manifest.checkpoint(k)?.clone(),
        None => manifest
            .checkpoints
            .last()
            .cloned()
            .ok_or_else(|| HfError::Refused("the run has no checkpoint".into()))?,
    };
    let tok_path = glass_run::run_tokenizer_path(run_dir)?;
    let tok = glass_run::run_tokenizer(run_dir)?;
    let sp = tok.specials();
    if tok.vocab_size() > cfg.model.vocab_size {
        return Err(HfError::Refused(format!(
            "{}: the tokenizer has {} ids but the model only {}; fix [model] vocab_size",
            tok_path.display(),
            tok.vocab_size(),
            cfg.model.vocab_size
        )));
    }
    let ids = SpecialTokenIds {
        bos: sp.bos,
        eos: Some(sp.eos),
    };
    // The checkpoint's weights as stored (f32, or bf16/f16 in a weights-only run).
    let (weights, k) = glass_run::map_stored_weights(run_dir, Some(entry.index))?;
    let stored = weights.dtype();
    let dtype = opts.dtype.unwrap_or(ExportDtype::of_stored(stored));
    let family = crate::families::Family::of_model(&cfg.model);
    let (config_json, folds) = if family == crate::families::Family::Llama {
        to_hf(&cfg.model, ids, dtype.torch_name())?
    } else {
        (
            crate::families::to_hf(family, &cfg.model, ids.bos, ids.eos, dtype.torch_name())?,
            crate::hf_config::Folds::none(),
        )
    };
    let state_file = entry
        .files
        .iter()
        .find(|f| f.path.ends_with(glass_run::checkpoint::STATE_FILE))
        .ok_or_else(|| {
            HfError::Refused(format!("checkpoint {} lists no state.json", entry.index))
        })?;
    let state_path = run_dir.join(&state_file.path);
    let state: CheckpointState = serde_json::from_slice(&glass_io::open::read_beneath(
        run_dir,
        &state_path,
        state_file.bytes,
    )?)
    .map_err(|e| file_err(&state_path, e.to_string()))?;
    let config_now = glass_io::atomic::sha256_hex(cfg.text.as_bytes());
    let mut warnings = Vec::new();
    if config_now != state.config_sha256 {
        warnings.push(format!(
            "glass.toml changed since checkpoint {} was written (sha256 {} then, {} now); the exported architecture is read from the current file",
            entry.index, state.config_sha256, config_now
        ));
    }
    // The checkpoint's values, unchanged (f32, or a weights-only run's bf16/f16 in the
    // same dtype), are written straight from the mapped file (hashed beside the writing;
    // nothing counts unless it matches). Folded scales need the weights in memory, in f32.
    let exact = folds.is_identity();

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let name = out
        .file_name()
        .map_or("export".into(), |n| n.to_string_lossy().into_owned());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.export-"))
        .tempdir_in(&parent)
        .map_err(io(&parent))?;
    let dir = tmp.path();
    let (mut files, k) = if exact {
        // The check on a thread of its own: the writing mostly waits for the disk.
        let (verified, written) = std::thread::scope(|s| {
            let check = s.spawn(|| weights.verify());
            let stored = weights.tensors();
            // The family's names and layouts: byte moves of the stored values.
            let dt = stored.first().map_or(Dtype::F32, |t| t.dtype);
            let moved = crate::families::from_glass(
                family,
                &cfg.model,
                stored
                    .iter()
                    .map(|t| crate::families::Moved {
                        name: t.name.clone(),
                        shape: t.shape.clone(),
                        data: Cow::Borrowed(t.data),
                    })
                    .collect(),
                glass_run::weights::dtype_size(dt),
            );
            let views: Vec<TensorBytes> = moved
                .iter()
                .map(|m| TensorBytes {
                    name: m.name.clone(),
                    dtype: dt,
                    shape: m.shape.clone(),
                    data: &m.data,
                })
                .collect();
            let written = write_weights(dir, &views, dtype, opts.max_shard_bytes);
            (
                check
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
                written,
            )
        });
        verified?;
        (written?, k)
    } else {
        drop(weights);
        let (mut model, k) = glass_run::load_model_f32(run_dir, Some(entry.index))?;
        apply_folds(&mut model, &folds);
        let files = write_weights(dir, &model_tensors(&model), dtype, opts.max_shard_bytes)?;
        (files, k)
    };
    let weight_names: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
    let tok_bytes = glass_io::open::open_regular(&tok_path)
        .and_then(|f| f.read_all(glass_io::open::MAX_RECORD_BYTES))?;
    let token = |id: Option<u32>| id.and_then(|i| tok.hf().id_to_token(i));
    let small = [
        ("config.json", json_bytes(&config_json)),
        (
            "generation_config.json",
            json_bytes(
                &json!({"bos_token_id": sp.bos, "eos_token_id": sp.eos, "pad_token_id": null}),
            ),
        ),
        ("tokenizer.json", tok_bytes),
        (
            "tokenizer_config.json",
            json_bytes(&json!({
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": token(sp.bos),
                "eos_token": token(Some(sp.eos)),
                "pad_token": null,
                "unk_token": null,
                "add_bos_token": false,
                "add_eos_token": false,
                "clean_up_tokenization_spaces": false,
                "model_max_length": cfg.model.max_seq_len,
            })),
        ),
    ];
    write_all(dir, &small)?;
    files.extend(small.iter().map(|(name, bytes)| exported(name, bytes)));
    let card = crate::card::model_card(&crate::card::CardInput {
        run_name: &cfg.run.name,
        manifest: &manifest,
        entry: &entry,
        state: &state,
        model: &cfg.model,
        dtype: dtype.torch_name(),
        folds: &folds,
        files: &files,
        config_sha256_now: &config_now,
    });
    files.push(exported("README.md", card.as_bytes()));
    let weight_bytes = files
        .iter()
        .filter(|f| weight_names.contains(&f.path))
        .map(|f| f.bytes)
        .sum();
    let record = json!({
        "format_version": 1,
        "glass_version": env!("CARGO_PKG_VERSION"),
        "engine": glass_engine::engine_id(),
        "run_id": manifest.run_id,
        "run_name": cfg.run.name,
        "checkpoint": entry.index,
        "step": entry.step,
        "tokens": entry.tokens,
        "checkpoint_sha256": entry.sha256,
        "config_sha256": state.config_sha256,
        "config_sha256_now": config_now,
        "data_manifest_sha256": state.data_manifest_sha256,
        "val_loss": entry.val_loss,
        "val_bpb": state.val_bpb,
        "dtype": dtype.torch_name(),
        "folded": folds.notes,
        "files": files,
    });
    // The card and the record together; the batch fsyncs the folder last.
    write_all(
        dir,
        &[
            ("README.md", card.into_bytes()),
            ("glass-export.json", json_bytes(&record)),
        ],
    )?;
    let kept = tmp.keep();
    std::fs::rename(&kept, out).map_err(|e| {
        let _ = std::fs::remove_dir_all(&kept);
        io(out)(e)
    })?;
    sync_dir(&parent)?;
    let folded = if folds.is_identity() {
        vec![]
    } else {
        folds
            .notes
            .into_iter()
            .filter(|n| n.contains("folded"))
            .collect()
    };
    Ok(ExportReport {
        out: out.to_path_buf(),
        checkpoint: k,
        step: entry.step,
        files,
        weight_bytes,
        folds: folded,
        warnings,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::View;

    struct Bytes<'a> {
        dtype: Dtype,
        shape: Vec<usize>,
        data: Cow<'a, [u8]>,
    }

    impl View for Bytes<'_> {
        fn dtype(&self) -> Dtype {
            self.dtype
        }
        fn shape(&self) -> &[usize] {
            &self.shape
        }
        fn data(&self) -> Cow<'_, [u8]> {
            Cow::Borrowed(&self.data)
        }
        fn data_len(&self) -> usize {
            self.data.len()
        }
    }

    #[test]
    fn sizes_parse_like_transformers() {
        assert_eq!(parse_size("5GB").unwrap(), 5_000_000_000);
        assert_eq!(parse_size("40KB").unwrap(), 40_000);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("0").is_err());
    }

    /// The streamed shards are byte for byte what `safetensors::serialize_to_file` writes
    /// for the same tensors, in one shard and in several (the `tiny` preset's 4 MiB
    /// embedding is above the size where `AtomicFile` hashes on a second thread), in
    /// f32 and bf16; and the hashes returned are of the files' bytes.
    #[test]
    fn streamed_shards_equal_the_crates_own_files() {
        let cfg = glass_engine::ModelConfig::preset("tiny").unwrap();
        let model = Model::new(&cfg, 5).unwrap();
        let meta = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
        for dtype in [ExportDtype::F32, ExportDtype::BF16] {
            for max_shard in [u64::MAX, 3_000_000] {
                let dir = tempfile::tempdir().unwrap();
                let files =
                    write_weights(dir.path(), &model_tensors(&model), dtype, max_shard).unwrap();
                let shards: Vec<&ExportedFile> = files
                    .iter()
                    .filter(|f| f.path.ends_with(".safetensors"))
                    .collect();
                assert_eq!(shards.len() > 1, max_shard != u64::MAX);
                let tensors = model.layout.tensors();
                let mut seen = 0;
                for f in &shards {
                    let bytes = std::fs::read(dir.path().join(&f.path)).unwrap();
                    assert_eq!(f.sha256, glass_io::atomic::sha256_hex(&bytes));
                    assert_eq!(f.bytes, bytes.len() as u64);
                    // The same tensors, written by the crate.
                    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
                    let names: Vec<String> = st.names().into_iter().cloned().collect();
                    seen += names.len();
                    let views: Vec<(String, Bytes)> = tensors
                        .iter()
                        .filter(|t| names.contains(&t.name))
                        .map(|t| {
                            let (dt, data) = encode(
                                bytemuck::cast_slice(&model.params[t.range()]),
                                Dtype::F32,
                                dtype,
                            );
                            let shape = t.shape.clone();
                            (
                                t.name.clone(),
                                Bytes {
                                    dtype: dt,
                                    shape,
                                    data,
                                },
                            )
                        })
                        .collect();
                    let reference = dir.path().join("reference.safetensors");
                    safetensors::serialize_to_file(views, &meta, &reference).unwrap();
                    assert!(
                        std::fs::read(&reference).unwrap() == bytes,
                        "{} ({dtype:?}) differs from the crate's own file",
                        f.path
                    );
                }
                assert_eq!(seen, tensors.len());
            }
        }
    }
}
