//! `glass release`, `glass verify` on a release, `glass import release`: argument parsing
//! and printing only; the work is in `glass-release`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

/// Options of `glass release`.
#[derive(Args)]
pub struct ReleaseArgs {
    /// Run directory.
    pub run: PathBuf,
    /// Release directory (new, or an interrupted release of the same run to resume).
    pub out: PathBuf,
    /// Checkpoints to publish: all, latest, or indices K,K,...
    #[arg(long, default_value = "all")]
    pub checkpoints: glass_run::Selection,
    /// Weight dtype of the transformers folders: f32, bf16 or f16 (default: f32, or
    /// for a weights-only run the dtype its checkpoints store, written unchanged).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Also publish each checkpoint's optimizer state and training state (continued
    /// pretraining; `glass import release` needs it).
    #[arg(long)]
    pub with_optimizer: bool,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

/// Options of `glass import release`.
#[derive(Args)]
pub struct ImportReleaseArgs {
    /// Release directory (written by `glass release --with-optimizer`).
    pub release: PathBuf,
    /// New run directory.
    pub run: PathBuf,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

/// The dtype a release writes by default: f32, or for a weights-only run the dtype its
/// checkpoints store when they all store the same one (so their weights are published
/// unchanged; checkpoints of different dtypes are published in f32, which holds each
/// exactly).
fn stored_dtype(run: &Path) -> glass_hf::ExportDtype {
    let Ok(info) = glass_run::info(run) else {
        return glass_hf::ExportDtype::F32;
    };
    if !info.weights_only {
        return glass_hf::ExportDtype::F32;
    }
    let mut dtypes: Vec<Option<&str>> = info
        .checkpoints
        .iter()
        .map(|c| c.weights_dtype.as_deref())
        .collect();
    dtypes.dedup();
    match dtypes.as_slice() {
        [Some("bf16")] => glass_hf::ExportDtype::BF16,
        [Some("f16")] => glass_hf::ExportDtype::F16,
        _ => glass_hf::ExportDtype::F32,
    }
}

/// Runs `glass release`.
pub fn release(a: ReleaseArgs) -> Result<()> {
    let opts = glass_release::ReleaseOptions {
        checkpoints: a.checkpoints,
        dtype: match a.dtype.as_deref() {
            Some("f32" | "float32") => glass_hf::ExportDtype::F32,
            Some("bf16" | "bfloat16") => glass_hf::ExportDtype::BF16,
            Some("f16" | "float16") => glass_hf::ExportDtype::F16,
            Some(other) => bail!("--dtype {other}: use f32, bf16 or f16"),
            None => stored_dtype(&a.run),
        },
        with_optimizer: a.with_optimizer,
    };
    let r = glass_release::write_release(&a.run, &a.out, &opts, &mut |p| {
        eprintln!(
            "[{}/{}] {}: {}",
            p.done,
            p.total,
            p.part,
            if p.skipped {
                format!(
                    "kept from the interrupted release ({:.1} MB, verified)",
                    p.bytes as f64 / 1e6
                )
            } else {
                format!(
                    "{:.1} MB in {:.2} s ({:.0} MB/s)",
                    p.bytes as f64 / 1e6,
                    p.seconds,
                    p.bytes as f64 / 1e6 / p.seconds.max(1e-9)
                )
            }
        );
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "released {} to {}: {} checkpoint(s), {} data chunk(s), {} files, {:.3} GB ({:.3} GB written in {:.2} s, {:.3} GB/s)",
        a.run.display(),
        r.out.display(),
        r.checkpoints.len(),
        r.chunks,
        r.files,
        r.bytes as f64 / 1e9,
        r.written_bytes as f64 / 1e9,
        r.seconds,
        r.written_bytes as f64 / 1e9 / r.seconds.max(1e-9)
    );
    if !r.skipped_parts.is_empty() {
        println!(
            "  resumed: {} part(s) kept from the interrupted release",
            r.skipped_parts.len()
        );
    }
    println!("check it with: glass verify {}", r.out.display());
    Ok(())
}

/// Runs `glass verify` on a release directory.
pub fn verify(out: &Path, replay: Option<glass_run::Checkpoint>, json: bool) -> Result<()> {
    if replay.is_some() {
        bail!(
            "{} is a release; --replay works on runs: `glass import release {} RUN` first, then `glass verify RUN --replay K`",
            out.display(),
            out.display()
        );
    }
    let r = glass_release::verify_release(out)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for p in &r.problems {
            println!("{} {}: {}", p.kind.to_uppercase(), p.path, p.detail);
        }
        println!(
            "checked {} files ({:.3} GB) against manifest.json (sha256 {})",
            r.files,
            r.bytes as f64 / 1e9,
            r.manifest_sha256
        );
    }
    if !r.ok() {
        bail!(
            "{} problem(s): the release differs from its manifest",
            r.problems.len()
        );
    }
    if !json {
        println!("the release matches its manifest");
    }
    Ok(())
}

/// Runs `glass import release`.
pub fn import(a: ImportReleaseArgs) -> Result<()> {
    let r = glass_release::import_release(&a.release, &a.run, &mut |msg| eprintln!("{msg}"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "imported {} into {}: checkpoints {}..={} restored bit for bit ({} from transformers weights), data rebuilt (manifest {}), {} rows equal the release's JSONL, in {:.2} s",
        a.release.display(),
        r.run_dir.display(),
        r.checkpoints.first().copied().unwrap_or(0),
        r.checkpoints.last().copied().unwrap_or(0),
        r.converted_weights,
        &r.data_manifest_sha256[..16],
        r.rows_checked,
        r.seconds
    );
    println!(
        "next: glass verify {0} --replay K, glass train {0}",
        r.run_dir.display()
    );
    Ok(())
}

/// Options of `glass import llm360`.
#[derive(Args)]
pub struct ImportLlm360Args {
    /// Folder of data chunks `train_NNN.jsonl` (rows `{"token_ids": [...], "source": ...}`).
    #[arg(long)]
    pub data: PathBuf,
    /// Folder of checkpoint folders `ckpt_NNN` (transformers LLaMA; ckpt_NNN is the model
    /// after chunk NNN).
    #[arg(long)]
    pub checkpoints: PathBuf,
    /// Rows per optimizer step (the release's global batch); must divide every chunk's
    /// rows. The default, 1, makes each row its own step.
    #[arg(long, default_value_t = 1)]
    pub rows_per_step: usize,
    /// Checkpoints to import: all, latest, or indices K,K2,... (checkpoint K is ckpt_K,
    /// the model after train_K.jsonl; all chunks' data is imported either way).
    #[arg(long = "select-checkpoints", default_value = "all")]
    pub select: glass_run::Selection,
    /// The tokenizer.json (default: ckpt_000/tokenizer.json, else CHECKPOINTS/tokenizer.json).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Keep each checkpoint's weights in their stored dtype (bf16 stays bf16; sharded
    /// .bin is rewritten once as safetensors) and write no optimizer state: an Amber
    /// checkpoint costs about 13.5 GB instead of 80 GB. The run evaluates, generates, is
    /// analysed, served and exported, but does not train.
    #[arg(long)]
    pub weights_only: bool,
    /// New run directory.
    pub run: PathBuf,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

/// Runs `glass import llm360`.
pub fn import_llm360(a: ImportLlm360Args) -> Result<()> {
    let r = glass_release::import_llm360_with(
        &a.data,
        &a.checkpoints,
        a.tokenizer.as_deref(),
        a.rows_per_step,
        &a.select,
        a.weights_only,
        &a.run,
        &mut |msg| eprintln!("{msg}"),
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "imported {} chunks and {} checkpoints from {} and {} into {}: {} rows of {} tokens, {} steps of {} rows ({} per chunk), sources {}; data manifest {}, in {:.2} s",
        r.chunks.len(),
        r.checkpoints.len(),
        a.data.display(),
        a.checkpoints.display(),
        r.run_dir.display(),
        r.rows_per_chunk.iter().sum::<u64>(),
        r.row_len,
        r.n_steps,
        r.rows_per_step,
        r.steps_per_chunk,
        r.sources.join(", "),
        &r.data_manifest_sha256[..16],
        r.seconds
    );
    let ckpt_bytes: u64 = r.checkpoint_bytes.iter().sum();
    println!(
        "  checkpoints: {:.3} GB on disk{}",
        ckpt_bytes as f64 / 1e9,
        if r.weights_only {
            " (weights only, in their stored dtype; this run does not train)"
        } else {
            " (f32 weights + zero AdamW moments)"
        }
    );
    println!(
        "next: glass data show {0} --step N, glass eval {0} --checkpoints all, glass verify {0}",
        r.run_dir.display()
    );
    Ok(())
}
