//! `glass export hf` and `glass import hf`: argument parsing and printing only; the work
//! is in `glass-hf`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

/// Formats `glass export` writes.
#[derive(Subcommand)]
pub enum ExportCommand {
    /// A checkpoint as a transformers LlamaForCausalLM folder (config, safetensors,
    /// tokenizer, model card).
    Hf(ExportHfArgs),
}

/// Formats `glass import` reads.
#[derive(Subcommand)]
pub enum ImportCommand {
    /// A transformers LLaMA folder (safetensors or PyTorch .bin, single or sharded,
    /// f32/f16/bf16) as a new run whose checkpoint 0 is its weights.
    Hf(ImportHfArgs),
    /// A release written by `glass release --with-optimizer` as a run that replays and
    /// continues training bit for bit.
    Release(crate::release::ImportReleaseArgs),
    /// A release in LLM360's published layout (data chunks train_NNN.jsonl, checkpoint
    /// folders ckpt_NNN) as a run whose chunk NNN is that file's rows and whose
    /// checkpoint NNN is the model after it.
    Llm360(crate::release::ImportLlm360Args),
    /// Pythia's training data (a Megatron .bin/.idx, whole or in pieces) as a run whose
    /// step N is the exact batch Pythia trained on, read in place.
    Pythia(crate::suites::ImportPythiaArgs),
    /// OLMo's training data (the config's token memmaps in global_indices.npy order) as a
    /// run whose step N is the exact batch OLMo trained on, read in place.
    Olmo(crate::suites::ImportOlmoArgs),
    /// CrystalCoder's training data (the Cerebras modelzoo's HDF5 files, one folder per
    /// stage) as a run whose step N is rows [N·B, (N+1)·B) of its stage, read in place.
    Crystalcoder(crate::suites::ImportCrystalCoderArgs),
    /// A llama.cpp GGUF file of a LLaMA model (F32/F16/BF16/Q4_0/Q4_1/Q8_0 tensors) as a
    /// new run whose checkpoint 0 is its weights, dequantized exactly as transformers
    /// loads them.
    Gguf(ImportGgufArgs),
}

/// Options of `glass import gguf`.
#[derive(Args)]
pub struct ImportGgufArgs {
    /// The .gguf file.
    pub file: PathBuf,
    /// New run directory.
    pub run: PathBuf,
    /// Use this tokenizer.json instead of rebuilding the file's own (needed for
    /// tokenizers other than byte-level BPE).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Also keep the transformers folder the file is converted to (f32 safetensors,
    /// config, tokenizer) here; it must not exist.
    #[arg(long)]
    pub hf_out: Option<PathBuf>,
    /// Write no optimizer state (the run evaluates, generates, is analysed, but does
    /// not train).
    #[arg(long)]
    pub weights_only: bool,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

/// Options of `glass export hf`.
#[derive(Args)]
pub struct ExportHfArgs {
    /// Run directory.
    pub run: PathBuf,
    /// Output folder (must not exist; it appears complete or not at all).
    pub out: PathBuf,
    /// Checkpoint: an index or `latest` (default).
    #[arg(long)]
    pub checkpoint: Option<glass_run::Checkpoint>,
    /// Weight dtype: f32, bf16 or f16 (default: the checkpoint's own, written
    /// unchanged: f32 for a trained run, bf16/f16 for a weights-only import of such weights).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Split weights into shards of at most this size (e.g. 5GB, 500MB).
    #[arg(long, default_value = "5GB")]
    pub max_shard_size: String,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

/// Options of `glass import hf`.
#[derive(Args)]
pub struct ImportHfArgs {
    /// Hugging Face model folder (config.json, tokenizer.json, weights).
    pub dir: PathBuf,
    /// New run directory.
    pub run: PathBuf,
    /// Keep the weights in their stored dtype (bf16 stays bf16) and write no optimizer
    /// state: about a sixth of the bytes for bf16 weights; the run evaluates, generates,
    /// is analysed, served and exported, but does not train.
    #[arg(long)]
    pub weights_only: bool,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

/// Runs `glass export …`.
pub fn export(cmd: ExportCommand) -> Result<()> {
    let ExportCommand::Hf(a) = cmd;
    let opts = glass_hf::ExportOptions {
        checkpoint: a.checkpoint.map(|c| c.index_in(&a.run)).transpose()?,
        dtype: a
            .dtype
            .as_deref()
            .map(glass_hf::ExportDtype::parse)
            .transpose()?,
        max_shard_bytes: glass_hf::parse_size(&a.max_shard_size)?,
    };
    let r = glass_hf::export(&a.run, &a.out, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "exported {} checkpoint {} (step {}) to {}: {} files, {:.3} GB of weights in {:.2} s ({:.2} GB/s)",
        a.run.display(),
        r.checkpoint,
        r.step,
        r.out.display(),
        r.files.len() + 1,
        r.weight_bytes as f64 / 1e9,
        r.seconds,
        r.weight_bytes as f64 / 1e9 / r.seconds.max(1e-9)
    );
    for f in &r.folds {
        println!("  {f}");
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// Runs `glass import …`.
pub fn import(cmd: ImportCommand) -> Result<()> {
    let a = match cmd {
        ImportCommand::Hf(a) => a,
        ImportCommand::Release(a) => return crate::release::import(a),
        ImportCommand::Llm360(a) => return crate::release::import_llm360(a),
        ImportCommand::Pythia(a) => return crate::suites::import_pythia(a),
        ImportCommand::Olmo(a) => return crate::suites::import_olmo(a),
        ImportCommand::Crystalcoder(a) => return crate::suites::import_crystalcoder(a),
        ImportCommand::Gguf(a) => return import_gguf(a),
    };
    let r = glass_hf::import_with(
        &a.dir,
        &a.run,
        &glass_hf::ImportOptions {
            weights_only: a.weights_only,
        },
    )?;
    print_import(&a.dir, &r, a.json)
}

/// `glass import gguf`: the file becomes a transformers folder (kept with --hf-out, else
/// a temporary one beside the run), which is imported as `glass import hf` does.
fn import_gguf(a: ImportGgufArgs) -> Result<()> {
    eprintln!("converting {} …", a.file.display());
    let (conv, r) = glass_hf::gguf::import(
        &a.file,
        &a.run,
        &glass_hf::gguf::ConvertOptions {
            tokenizer: a.tokenizer.clone(),
        },
        &glass_hf::ImportOptions {
            weights_only: a.weights_only,
        },
        a.hf_out.as_deref(),
    )?;
    if !a.json {
        let types: Vec<String> = conv
            .tensor_types
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect();
        println!(
            "{}: {} parameters in {} tensors ({}), dequantized to f32{}",
            a.file.display(),
            conv.parameters,
            r.tensors,
            types.join(", "),
            if conv.tokenizer_from_file {
                "; tokenizer rebuilt from the file"
            } else {
                ""
            }
        );
        if let Some(d) = &a.hf_out {
            println!("  transformers folder kept at {}", d.display());
        }
    }
    print_import(&a.file, &r, a.json)
}

fn print_import(src: &std::path::Path, r: &glass_hf::ImportReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "imported {} ({}, {} file(s), {} tensors, {}) into {}: checkpoint 0 {} — {:.3} GB in {:.2} s ({:.2} GB/s)",
        src.display(),
        r.format,
        r.shards,
        r.tensors,
        r.dtypes.join("/"),
        r.run_dir.display(),
        &r.checkpoint_sha256[..16],
        r.tensor_bytes as f64 / 1e9,
        r.seconds,
        r.tensor_bytes as f64 / 1e9 / r.seconds.max(1e-9)
    );
    if !r.ignored_config_keys.is_empty() {
        println!(
            "  config.json keys that do not change the function, not mapped: {}",
            r.ignored_config_keys.join(", ")
        );
    }
    if !r.skipped_tensors.is_empty() {
        println!(
            "  not imported (recomputed or tied): {}",
            r.skipped_tensors.join(", ")
        );
    }
    if let Some(n) = &r.vocab_note {
        println!("  note: {n}");
    }
    println!(
        "  checkpoint 0: {} weights, {:.3} GB on disk{}",
        r.checkpoint_dtype,
        r.checkpoint_bytes as f64 / 1e9,
        if r.weights_only {
            " (weights only, no optimizer state)"
        } else {
            " (f32 weights + zero AdamW moments)"
        }
    );
    if r.weights_only {
        println!(
            "next: glass generate {0} --prompt …, glass eval {0}; this run does not train (import again without --weights-only for that)",
            r.run_dir.display()
        );
    } else {
        println!(
            "next: glass generate {0} --prompt …; for continued pretraining edit [data] in {0}/glass.toml, then glass data prepare {0} && glass train {0}",
            r.run_dir.display()
        );
    }
    Ok(())
}
