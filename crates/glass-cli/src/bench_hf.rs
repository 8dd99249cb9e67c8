//! `glass bench hf`: weight export and import throughput on a preset-sized model, timing
//! the `glass-hf` functions that `glass export hf` and `glass import hf` run.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use glass_engine::{Model, ModelConfig};
use glass_hf::export::{model_tensors, write_weights, ExportDtype};
use glass_hf::hf_config::{to_hf, SpecialTokenIds};
use glass_hf::weights::{discover, load_into};
use serde::Serialize;

/// Result of [`bench`].
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

/// Exports a randomly initialised model of `cfg` as a transformers folder under `dir`
/// (a private temporary subdirectory), imports it back, and times both.
pub fn bench(dir: &Path, cfg: &ModelConfig, max_shard_bytes: u64) -> Result<HfBench> {
    let model = Model::new(cfg, 0)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix(".bench-hf-")
        .tempdir_in(dir)
        .with_context(|| format!("creating a scratch folder in {}", dir.display()))?;
    let out = scratch.path();
    let t = Instant::now();
    let (config, _) = to_hf(cfg, SpecialTokenIds::default(), "float32")?;
    glass_io::atomic::write_atomic(
        &out.join("config.json"),
        &serde_json::to_vec_pretty(&config)?,
    )?;
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
    for entry in std::fs::read_dir(out).with_context(|| format!("listing {}", out.display()))? {
        let path = entry?.path();
        let mut f =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        std::io::copy(&mut f, &mut std::io::sink())
            .with_context(|| format!("reading {}", path.display()))?;
    }
    let t = Instant::now();
    let files = discover(out)?;
    let mut back = Model::zeros(cfg)?;
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
