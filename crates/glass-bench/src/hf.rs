//! `glass bench hf`: weight export and import throughput on a preset-sized model, timing
//! the `glass-hf` functions that `glass export hf` and `glass import hf` run.

use std::path::PathBuf;
use std::time::Instant;

use glass_engine::{Model, ModelConfig};
use glass_hf::export::{model_tensors, write_weights, ExportDtype};
use glass_hf::hf_config::{to_hf, SpecialTokenIds};
use glass_hf::weights::{discover, load_into};
use serde::Serialize;

use crate::error::io;
use crate::{BenchError, Result};

/// What to time.
#[derive(Debug, Clone)]
pub struct HfOptions {
    /// Model preset.
    pub preset: String,
    /// Directory to write the folder in (a private subdirectory, removed afterwards).
    pub dir: PathBuf,
    /// Shard size as `glass export hf` takes it (e.g. 5GB, 200MB).
    pub max_shard_size: String,
}

/// Result of [`run`].
#[derive(Debug, Clone, Serialize)]
pub struct HfBench {
    /// Weight bytes written and read.
    pub bytes: u64,
    /// Export: f32 safetensors written and fsynced, GB/s.
    pub export_gb_s: f64,
    /// Import: mapped, converted into the flat buffer, GB/s (page cache warm).
    pub import_gb_s: f64,
    /// The re-imported weights equal the exported ones bit for bit.
    pub identical: bool,
}

/// Exports a randomly initialised model of the preset as a transformers folder under
/// `dir` (a private temporary subdirectory), imports it back, and times both.
pub fn run(o: &HfOptions) -> Result<HfBench> {
    let cfg = ModelConfig::preset(&o.preset)?;
    let max_shard_bytes = glass_hf::parse_size(&o.max_shard_size)?;
    let dir = &o.dir;
    let model = Model::new(&cfg, 0)?;
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let scratch = tempfile::Builder::new()
        .prefix(".bench-hf-")
        .tempdir_in(dir)
        .map_err(io("creating a scratch folder in", dir))?;
    let out = scratch.path();
    let t = Instant::now();
    let (config, _) = to_hf(&cfg, SpecialTokenIds::default(), "float32")?;
    let config = serde_json::to_vec_pretty(&config).map_err(|source| BenchError::Json {
        what: "writing config.json".into(),
        source,
    })?;
    glass_io::atomic::write_atomic(&out.join("config.json"), &config)?;
    write_weights(
        out,
        &model_tensors(&model),
        ExportDtype::F32,
        max_shard_bytes,
    )?;
    let export_s = t.elapsed().as_secs_f64();
    let bytes = (model.params.len() * 4) as u64;
    // Large files are written past the page cache (`O_DIRECT`): read them once so the
    // import is timed warm, as it says.
    for entry in std::fs::read_dir(out).map_err(io("listing", out))? {
        let path = entry.map_err(io("listing", out))?.path();
        let mut f = std::fs::File::open(&path).map_err(io("opening", &path))?;
        std::io::copy(&mut f, &mut std::io::sink()).map_err(io("reading", &path))?;
    }
    let t = Instant::now();
    let files = discover(out)?;
    let mut back = Model::zeros(&cfg)?;
    load_into(&files, &mut back)?;
    let import_s = t.elapsed().as_secs_f64();
    let identical = back
        .params
        .iter()
        .zip(&model.params)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    Ok(HfBench {
        bytes,
        export_gb_s: bytes as f64 / export_s / 1e9,
        import_gb_s: bytes as f64 / import_s / 1e9,
        identical,
    })
}
