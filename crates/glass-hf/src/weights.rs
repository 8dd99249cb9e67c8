//! Reading a transformers weight folder tensor by tensor into Glass's flat f32 buffer.
//!
//! Four layouts, tried in transformers' order of preference: `model.safetensors.index.json`
//! (sharded safetensors), `model.safetensors`, `pytorch_model.bin.index.json` (sharded
//! PyTorch pickles) and `pytorch_model.bin`. Each shard is memory-mapped and each tensor
//! converted (f32/f16/bf16/f64, any strides) straight into its view of the flat buffer, so
//! peak memory is the model plus one mapped shard.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use glass_engine::gemm::Half;
use glass_engine::Model;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};

use crate::error::{file_err, tensor_err, Result};

/// Element type of a source tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrcDtype {
    /// IEEE single.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE double (rounded to f32 on import).
    F64,
}

impl SrcDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            SrcDtype::F32 => 4,
            SrcDtype::F16 | SrcDtype::BF16 => 2,
            SrcDtype::F64 => 8,
        }
    }
}

/// One tensor of a source file: a strided view of little-endian bytes.
#[derive(Debug, Clone)]
pub struct SrcTensor<'a> {
    /// Its name in the state dict.
    pub name: String,
    /// Element type.
    pub dtype: SrcDtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Strides in elements.
    pub stride: Vec<usize>,
    /// First element.
    pub offset: usize,
    /// The storage (or, for safetensors, the tensor's own bytes).
    pub bytes: &'a [u8],
}

/// Row-major strides of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

#[inline]
fn elem(dtype: SrcDtype, b: &[u8], i: usize) -> f32 {
    match dtype {
        SrcDtype::F32 => f32::from_le_bytes(b[4 * i..4 * i + 4].try_into().expect("4")),
        SrcDtype::F16 => Half::F16.widen(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])),
        SrcDtype::BF16 => Half::Bf16.widen(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])),
        SrcDtype::F64 => f64::from_le_bytes(b[8 * i..8 * i + 8].try_into().expect("8")) as f32,
    }
}

fn convert_contiguous(dtype: SrcDtype, src: &[u8], dst: &mut [f32]) {
    match dtype {
        SrcDtype::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes(s.try_into().expect("4"));
            }
        }
        SrcDtype::F16 | SrcDtype::BF16 => {
            let h = if dtype == SrcDtype::F16 {
                Half::F16
            } else {
                Half::Bf16
            };
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = h.widen(u16::from_le_bytes([s[0], s[1]]));
            }
        }
        SrcDtype::F64 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(8)) {
                *d = f64::from_le_bytes(s.try_into().expect("8")) as f32;
            }
        }
    }
}

impl SrcTensor<'_> {
    /// Elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Writes the tensor's values, in row-major order, into `dst` (`numel` long).
    pub fn convert_into(&self, dst: &mut [f32]) {
        debug_assert_eq!(dst.len(), self.numel());
        let size = self.dtype.size();
        if self.stride == contiguous_strides(&self.shape) || self.numel() <= 1 {
            let src = &self.bytes[self.offset * size..(self.offset + dst.len()) * size];
            const CHUNK: usize = 1 << 16;
            dst.par_chunks_mut(CHUNK)
                .zip(src.par_chunks(CHUNK * size))
                .for_each(|(d, s)| convert_contiguous(self.dtype, s, d));
            return;
        }
        // Strided view (e.g. a transposed tensor saved as is): walk its indices.
        let nd = self.shape.len();
        let mut idx = vec![0usize; nd];
        for d in dst.iter_mut() {
            let at = self.offset
                + idx
                    .iter()
                    .zip(&self.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            *d = elem(self.dtype, self.bytes, at);
            for k in (0..nd).rev() {
                idx[k] += 1;
                if idx[k] < self.shape[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
    }
}

/// The tensors of one safetensors file, borrowing `map`.
pub fn read_safetensors<'a>(map: &'a [u8], path: &Path) -> Result<Vec<SrcTensor<'a>>> {
    let st = SafeTensors::deserialize(map).map_err(|e| {
        file_err(
            path,
            format!("not a valid safetensors file ({e}); the file is truncated or corrupt"),
        )
    })?;
    let mut out = Vec::new();
    for (name, v) in st.tensors() {
        let dtype = match v.dtype() {
            Dtype::F32 => SrcDtype::F32,
            Dtype::F16 => SrcDtype::F16,
            Dtype::BF16 => SrcDtype::BF16,
            Dtype::F64 => SrcDtype::F64,
            other => {
                return Err(tensor_err(
                    path,
                    name,
                    format!(
                    "dtype {other:?} is not a float type glass can import (f32, f16, bf16, f64)"
                ),
                ))
            }
        };
        out.push(SrcTensor {
            stride: contiguous_strides(v.shape()),
            shape: v.shape().to_vec(),
            name,
            dtype,
            offset: 0,
            bytes: v.data(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Which of the four layouts a folder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// safetensors, one file or index + shards.
    Safetensors,
    /// PyTorch zip pickles, one file or index + shards.
    PytorchBin,
}

/// The weight files of a folder.
#[derive(Debug, Clone)]
pub struct WeightFiles {
    /// File format.
    pub format: WeightFormat,
    /// The index file when sharded.
    pub index: Option<PathBuf>,
    /// Shards (or the one file), in name order.
    pub shards: Vec<PathBuf>,
    /// tensor name → shard file name, when sharded.
    pub weight_map: Option<BTreeMap<String, String>>,
}

/// Finds the weights of a transformers folder.
pub fn discover(dir: &Path) -> Result<WeightFiles> {
    for (format, single, index) in [
        (
            WeightFormat::Safetensors,
            "model.safetensors",
            "model.safetensors.index.json",
        ),
        (
            WeightFormat::PytorchBin,
            "pytorch_model.bin",
            "pytorch_model.bin.index.json",
        ),
    ] {
        let ip = dir.join(index);
        if ip.exists() {
            let v: serde_json::Value = serde_json::from_slice(
                &glass_io::open::open_regular(&ip)
                    .and_then(|f| f.read_all(glass_io::open::MAX_RECORD_BYTES))?,
            )
            .map_err(|e| file_err(&ip, format!("not valid JSON: {e}")))?;
            let wm = v
                .get("weight_map")
                .and_then(|w| w.as_object())
                .ok_or_else(|| file_err(&ip, "has no `weight_map` object"))?;
            let mut map = BTreeMap::new();
            for (k, f) in wm {
                let f = f
                    .as_str()
                    .ok_or_else(|| tensor_err(&ip, k, "weight_map value is not a file name"))?;
                if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                    return Err(tensor_err(
                        &ip,
                        k,
                        format!("shard `{f}` is not a plain file name in this folder"),
                    ));
                }
                map.insert(k.clone(), f.to_string());
            }
            let mut shards: Vec<String> = map.values().cloned().collect();
            shards.sort();
            shards.dedup();
            for s in &shards {
                if !dir.join(s).exists() {
                    return Err(file_err(
                        &ip,
                        format!("lists shard `{s}`, which is missing from the folder"),
                    ));
                }
            }
            return Ok(WeightFiles {
                format,
                index: Some(ip),
                shards: shards.iter().map(|s| dir.join(s)).collect(),
                weight_map: Some(map),
            });
        }
        let sp = dir.join(single);
        if sp.exists() {
            return Ok(WeightFiles {
                format,
                index: None,
                shards: vec![sp],
                weight_map: None,
            });
        }
    }
    Err(file_err(
        dir,
        "no weights found: expected model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json",
    ))
}

/// What [`load_into`] read.
#[derive(Debug, Clone, Default)]
pub struct LoadStats {
    /// Tensors converted.
    pub tensors: usize,
    /// Source bytes of those tensors.
    pub bytes: u64,
    /// Source dtypes seen.
    pub dtypes: Vec<String>,
    /// Tensors deliberately not imported (recomputed RoPE buffers), by name.
    pub skipped: Vec<String>,
}

/// RoPE inverse frequencies that older transformers saved as buffers; they are a pure
/// function of the config, which Glass recomputes.
fn is_rope_buffer(name: &str) -> bool {
    name.ends_with(".self_attn.rotary_emb.inv_freq")
}

/// Compares the shape of every tensor `files` hold (headers only, nothing converted)
/// with what `cfg` implies, so a `config.json` that disagrees with the weights — or
/// describes an absurd model — is refused before the model's buffers are allocated.
pub fn check_shapes(files: &WeightFiles, cfg: &glass_engine::ModelConfig) -> Result<()> {
    let layout = glass_engine::ParamLayout::new(cfg);
    let shapes: BTreeMap<&str, &[usize]> = layout
        .tensors()
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice()))
        .collect();
    for shard in &files.shards {
        // A regular file only (a FIFO or device is refused, not read forever), mapped
        // read-only by the one mapping helper.
        let map = glass_io::open::open_regular(shard)?
            .map()?
            .ok_or_else(|| file_err(shard, "is empty"))?;
        let tensors = match files.format {
            WeightFormat::Safetensors => read_safetensors(&map, shard)?,
            WeightFormat::PytorchBin => crate::torch_bin::read(&map, shard)?,
        };
        for t in tensors {
            let name = if cfg.tie_embeddings && t.name == "lm_head.weight" {
                "model.embed_tokens.weight"
            } else {
                t.name.as_str()
            };
            if let Some(want) = shapes.get(name) {
                if t.shape != *want {
                    return Err(tensor_err(
                        shard,
                        &t.name,
                        format!(
                            "has shape {:?}, but config.json implies {:?}; the config does not describe these weights",
                            t.shape, want
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Converts every tensor of `files` into `model.params`, checking names, shapes and
/// completeness against the model's layout.
pub fn load_into(files: &WeightFiles, model: &mut Model) -> Result<LoadStats> {
    let layout = model.layout.clone();
    let by_name: BTreeMap<&str, usize> = layout
        .tensors()
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let tied = model.cfg.tie_embeddings;
    let mut filled = vec![false; layout.tensors().len()];
    let mut stats = LoadStats::default();
    let mut tied_head: Option<(PathBuf, Vec<f32>)> = None;
    for shard in &files.shards {
        // A regular file only (a FIFO or device is refused, not read forever), mapped
        // read-only by the one mapping helper.
        let map = glass_io::open::open_regular(shard)?
            .map()?
            .ok_or_else(|| file_err(shard, "is empty"))?;
        let tensors = match files.format {
            WeightFormat::Safetensors => read_safetensors(&map, shard)?,
            WeightFormat::PytorchBin => crate::torch_bin::read(&map, shard)?,
        };
        let shard_name = shard
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for t in tensors {
            if let (Some(wm), Some(ip)) = (&files.weight_map, &files.index) {
                match wm.get(&t.name) {
                    Some(f) if *f == shard_name => {}
                    Some(f) => {
                        return Err(tensor_err(
                            shard,
                            &t.name,
                            format!("is stored here but {} maps it to `{f}`", ip.display()),
                        ))
                    }
                    None if is_rope_buffer(&t.name) => {}
                    None => {
                        return Err(tensor_err(
                            ip,
                            &t.name,
                            format!("has no entry in the index, but `{shard_name}` holds it; the index is incomplete"),
                        ))
                    }
                }
            }
            let dt = format!("{:?}", t.dtype).to_lowercase();
            if !stats.dtypes.contains(&dt) {
                stats.dtypes.push(dt);
            }
            if is_rope_buffer(&t.name) {
                stats.skipped.push(t.name.clone());
                continue;
            }
            if tied && t.name == "lm_head.weight" {
                if t.shape != layout.tensors()[0].shape {
                    return Err(tensor_err(
                        shard,
                        &t.name,
                        format!(
                            "has shape {:?}, but the tied embedding is {:?}",
                            t.shape,
                            layout.tensors()[0].shape
                        ),
                    ));
                }
                let mut v = vec![0.0f32; t.numel()];
                t.convert_into(&mut v);
                tied_head = Some((shard.clone(), v));
                continue;
            }
            let Some(&i) = by_name.get(t.name.as_str()) else {
                return Err(tensor_err(
                    shard,
                    &t.name,
                    "is not a parameter of the LLaMA model config.json describes (unknown architecture, biases, or a config that does not match the weights)",
                ));
            };
            let view = &layout.tensors()[i];
            if t.shape != view.shape {
                return Err(tensor_err(
                    shard,
                    &t.name,
                    format!(
                        "has shape {:?}, but config.json implies {:?}",
                        t.shape, view.shape
                    ),
                ));
            }
            if filled[i] {
                return Err(tensor_err(shard, &t.name, "appears twice"));
            }
            t.convert_into(&mut model.params[view.range()]);
            filled[i] = true;
            stats.tensors += 1;
            stats.bytes += (t.numel() * t.dtype.size()) as u64;
        }
    }
    for (i, t) in layout.tensors().iter().enumerate() {
        if !filled[i] {
            let (path, why) = match (&files.index, &files.weight_map) {
                (Some(ip), Some(wm)) if !wm.contains_key(&t.name) => {
                    (ip.clone(), "has no entry in the index")
                }
                (Some(_), Some(wm)) => (
                    shards_dir(files).join(&wm[&t.name]),
                    "is listed in the index but missing from its shard",
                ),
                _ => (files.shards[0].clone(), "is missing"),
            };
            return Err(tensor_err(path, &t.name, why));
        }
    }
    if let Some((path, head)) = tied_head {
        let e = &model.params[layout.tensors()[0].range()];
        if head.len() != e.len() || head.iter().zip(e).any(|(a, b)| a.to_bits() != b.to_bits()) {
            return Err(tensor_err(
                path,
                "lm_head.weight",
                "differs from model.embed_tokens.weight, but config.json sets tie_word_embeddings",
            ));
        }
        stats
            .skipped
            .push("lm_head.weight (tied, equal to the embedding)".into());
    }
    Ok(stats)
}

fn shards_dir(files: &WeightFiles) -> PathBuf {
    files.shards[0]
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// One tensor of a weights-only import: a layout tensor's values in the source dtype,
/// row-major (borrowed from the mapped file when stored so, else gathered once).
#[derive(Debug, Clone)]
pub struct StoredTensor<'a> {
    /// Glass layout name (transformers' name).
    pub name: String,
    /// Source dtype (f32, bf16 or f16).
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major little-endian values.
    pub data: std::borrow::Cow<'a, [u8]>,
}

/// Maps every shard of `files` read-only (regular files only), in `files.shards` order.
pub fn map_shards(files: &WeightFiles) -> Result<Vec<memmap2::Mmap>> {
    files
        .shards
        .iter()
        .map(|shard| {
            glass_io::open::open_regular(shard)?
                .map()?
                .ok_or_else(|| file_err(shard, "is empty"))
        })
        .collect()
}

/// The safetensors dtype of a source dtype.
pub fn st_dtype(d: SrcDtype) -> Dtype {
    match d {
        SrcDtype::F32 => Dtype::F32,
        SrcDtype::F16 => Dtype::F16,
        SrcDtype::BF16 => Dtype::BF16,
        SrcDtype::F64 => Dtype::F64,
    }
}

/// The dtype a transformers `config.json` names (`torch_dtype`, or transformers 5's
/// `dtype`): `float32`, `bfloat16` or `float16`; `None` when absent or another name.
pub fn config_dtype(config: &serde_json::Value) -> Option<(Dtype, String)> {
    let name = config
        .get("torch_dtype")
        .or_else(|| config.get("dtype"))
        .and_then(|v| v.as_str())?;
    let d = match name {
        "float32" => Dtype::F32,
        "bfloat16" => Dtype::BF16,
        "float16" => Dtype::F16,
        _ => return None,
    };
    Some((d, name.to_string()))
}

/// A tensor's values row-major: borrowed when contiguous, else gathered element by
/// element (bytes copied as they are, no conversion).
fn row_major<'a>(t: &SrcTensor<'a>) -> std::borrow::Cow<'a, [u8]> {
    let size = t.dtype.size();
    let n = t.numel();
    if t.stride == contiguous_strides(&t.shape) || n <= 1 {
        return std::borrow::Cow::Borrowed(&t.bytes[t.offset * size..(t.offset + n) * size]);
    }
    let nd = t.shape.len();
    let mut idx = vec![0usize; nd];
    let mut out = Vec::with_capacity(n * size);
    for _ in 0..n {
        let at = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        out.extend_from_slice(&t.bytes[at * size..(at + 1) * size]);
        for k in (0..nd).rev() {
            idx[k] += 1;
            if idx[k] < t.shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The tensors of `files` (mapped as `maps`, from [`map_shards`]) for a weights-only
/// import, in the layout order of `cfg`, each in its source dtype, with the checks of
/// [`load_into`] (names, shapes, index, duplicates, completeness, a tied head equal to
/// the embedding) and these: every tensor has one dtype, f32, bf16 or f16 (mixed dtypes
/// across tensors or shards are refused, naming both, unless `mixed_dtypes`); that dtype
/// is the one `config.json` names when it names one (`want`, with the config's
/// spelling); no value is NaN or infinite. A non-LLaMA `family`'s tensors are moved
/// into the Glass layout ([`crate::families::to_glass`]) on the way.
#[allow(clippy::too_many_arguments)]
pub fn stored_tensors<'a>(
    files: &WeightFiles,
    maps: &'a [memmap2::Mmap],
    cfg: &glass_engine::ModelConfig,
    want: Option<(Dtype, String)>,
    config_path: &Path,
    family: crate::families::Family,
    mixed_dtypes: bool,
) -> Result<(Vec<StoredTensor<'a>>, LoadStats)> {
    let layout = glass_engine::ParamLayout::new(cfg);
    let by_name: BTreeMap<&str, usize> = layout
        .tensors()
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut slots: Vec<Option<StoredTensor<'a>>> = vec![None; layout.tensors().len()];
    let mut stats = LoadStats::default();
    let mut first: Option<(Dtype, PathBuf, String)> = None;
    let mut tied_head: Option<(PathBuf, std::borrow::Cow<'a, [u8]>, Dtype)> = None;
    for (shard, map) in files.shards.iter().zip(maps) {
        let tensors = match files.format {
            WeightFormat::Safetensors => read_safetensors(map, shard)?,
            WeightFormat::PytorchBin => crate::torch_bin::read(map, shard)?,
        };
        let shard_name = shard
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for t in tensors {
            if let (Some(wm), Some(ip)) = (&files.weight_map, &files.index) {
                match wm.get(&t.name) {
                    Some(f) if *f == shard_name => {}
                    Some(f) => {
                        return Err(tensor_err(
                            shard,
                            &t.name,
                            format!("is stored here but {} maps it to `{f}`", ip.display()),
                        ))
                    }
                    None if is_rope_buffer(&t.name) || family.is_buffer(&t.name) => {}
                    None => {
                        return Err(tensor_err(
                            ip,
                            &t.name,
                            format!("has no entry in the index, but `{shard_name}` holds it; the index is incomplete"),
                        ))
                    }
                }
            }
            if is_rope_buffer(&t.name) || family.is_buffer(&t.name) {
                stats.skipped.push(t.name.clone());
                continue;
            }
            let src_dt = format!("{:?}", t.dtype).to_lowercase();
            if !stats.dtypes.contains(&src_dt) {
                stats.dtypes.push(src_dt);
            }
            // f64 (no Glass weight dtype) is rounded to f32, as the f32 import does.
            let dtype = match t.dtype {
                SrcDtype::F64 => Dtype::F32,
                d => st_dtype(d),
            };
            let dt = glass_run::weights::dtype_name(dtype);
            if let Some((w, name)) = &want {
                if dtype != *w {
                    return Err(tensor_err(
                        shard,
                        &t.name,
                        format!(
                            "is {dt}, but {} says the weights are {name}; the config does not describe this file (fix its torch_dtype, or the file)",
                            config_path.display()
                        ),
                    ));
                }
            }
            match &first {
                None => first = Some((dtype, shard.clone(), t.name.clone())),
                Some((d, p, n)) if *d != dtype && !mixed_dtypes => {
                    return Err(tensor_err(
                        shard,
                        &t.name,
                        format!(
                            "is {dt}, but `{n}` in {} is {}; a weights-only checkpoint keeps one dtype (import without --weights-only to convert every tensor to f32)",
                            p.display(),
                            dtype_lower(*d)
                        ),
                    ))
                }
                Some(_) => {}
            }
            let data = if t.dtype == SrcDtype::F64 {
                let mut v = vec![0.0f32; t.numel()];
                t.convert_into(&mut v);
                std::borrow::Cow::Owned(bytemuck::cast_slice(&v).to_vec())
            } else {
                row_major(&t)
            };
            if let Some(i) = glass_run::weights::first_non_finite(dtype, &data) {
                return Err(tensor_err(
                    shard,
                    &t.name,
                    format!("holds a NaN or infinite value (element {i}); the weights are damaged"),
                ));
            }
            let es = glass_run::weights::dtype_size(dtype);
            let moved = crate::families::to_glass(family, cfg, &t.name, &t.shape, data, es)
                .map_err(|m| tensor_err(shard, &t.name, m))?;
            for m in moved {
                let (name, shape, data) = (m.name, m.shape, m.data);
                if cfg.tie_embeddings && name == "lm_head.weight" {
                    if shape != layout.tensors()[0].shape {
                        return Err(tensor_err(
                            shard,
                            &t.name,
                            format!(
                                "has shape {:?}, but the tied embedding is {:?}",
                                shape,
                                layout.tensors()[0].shape
                            ),
                        ));
                    }
                    tied_head = Some((shard.clone(), data, dtype));
                    continue;
                }
                let Some(&i) = by_name.get(name.as_str()) else {
                    return Err(tensor_err(
                        shard,
                        &t.name,
                        "is not a parameter of the model config.json describes (unknown architecture, biases, or a config that does not match the weights)",
                    ));
                };
                let view = &layout.tensors()[i];
                if shape != view.shape {
                    return Err(tensor_err(
                        shard,
                        &t.name,
                        format!(
                            "has shape {:?}, but config.json implies {:?}",
                            shape, view.shape
                        ),
                    ));
                }
                if slots[i].is_some() {
                    return Err(tensor_err(shard, &t.name, "appears twice"));
                }
                stats.tensors += 1;
                stats.bytes += data.len() as u64;
                slots[i] = Some(StoredTensor {
                    name: view.name.clone(),
                    dtype,
                    shape: view.shape.clone(),
                    data,
                });
            }
        }
    }
    let mut out = Vec::with_capacity(slots.len());
    for (t, slot) in layout.tensors().iter().zip(slots) {
        let Some(s) = slot else {
            let (path, why) = match (&files.index, &files.weight_map) {
                (Some(ip), Some(wm)) if !wm.contains_key(&t.name) => {
                    (ip.clone(), "has no entry in the index")
                }
                (Some(_), Some(wm)) => (
                    shards_dir(files).join(&wm[&t.name]),
                    "is listed in the index but missing from its shard",
                ),
                _ => (files.shards[0].clone(), "is missing"),
            };
            return Err(tensor_err(path, &t.name, why));
        };
        out.push(s);
    }
    if let Some((path, head, dtype)) = tied_head {
        if dtype != out[0].dtype || head != out[0].data {
            return Err(tensor_err(
                path,
                "lm_head.weight",
                "differs from model.embed_tokens.weight, but config.json sets tie_word_embeddings",
            ));
        }
        stats
            .skipped
            .push("lm_head.weight (tied, equal to the embedding)".into());
    }
    Ok((out, stats))
}

/// The lowercase name of a safetensors float dtype (`f32`, `bf16`, `f16`).
pub fn dtype_lower(d: Dtype) -> &'static str {
    glass_run::weights::dtype_name(d)
}

/// Widens stored values (f32, bf16 or f16 bytes) into `out`.
pub fn stored_to_f32(dtype: Dtype, data: &[u8], out: &mut [f32]) {
    if dtype == Dtype::F32 {
        for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
            *o = f32::from_le_bytes(b.try_into().expect("four bytes"));
        }
    } else {
        glass_run::weights::widen(dtype, data, out);
    }
}
