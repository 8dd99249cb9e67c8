//! `glass import pythia`, `glass import olmo` and `glass import crystalcoder`: runs over
//! the Pythia, OLMo and CrystalCoder training data, read in place (argument parsing, progress and printing only; the work is
//! in `glass_data::external`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use glass_data::external::{
    self, CrystalCoderImport, ImportCommon, OlmoImport, Progress, PythiaImport,
};

/// Options both imports share.
#[derive(Args)]
pub struct SuiteCommon {
    /// A tokenizer.json (Pythia and OLMo: EleutherAI's 20B_tokenizer.json) copied into the
    /// run, so `glass data show` prints each row's text.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Record file lengths only and hash nothing now; `glass data verify RUN` hashes every
    /// file and records the hashes on its first pass (Pythia's data is over 600 GB).
    #[arg(long)]
    pub defer_hash: bool,
    /// Folder of checkpoint folders (Pythia: step0 … step143000; OLMo: stepN-tokensMB),
    /// each a transformers folder imported with `glass import hf` into RUN/models/NAME.
    #[arg(long)]
    pub checkpoints: Option<PathBuf>,
    /// With --checkpoints: keep each checkpoint's weights in their stored dtype and write
    /// no optimizer state (as `glass import hf --weights-only`).
    #[arg(long)]
    pub weights_only: bool,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

/// A checkpoint folder of a suite: `stepN`, optionally `-tokensM` with a unit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SuiteCheckpoint {
    /// Folder name.
    pub name: String,
    /// Optimizer steps the model was trained for (it saw data steps `0..step`).
    pub step: u64,
    /// OLMo's token count as the name gives it (`4B`), if any.
    pub tokens: Option<String>,
    /// The folder it was imported from.
    pub source: String,
    /// The imported run, relative to RUN.
    pub run: String,
    /// Its checkpoint 0's sha256.
    pub checkpoint_sha256: String,
}

/// Parses `stepN` or `stepN-tokensM[KMBT]`.
fn parse_step_name(name: &str) -> Option<(u64, Option<String>)> {
    let rest = name.strip_prefix("step")?;
    let (n, tokens) = match rest.split_once("-tokens") {
        Some((n, t)) => {
            let digits = t.trim_end_matches(['K', 'M', 'B', 'T']);
            if digits.is_empty()
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || t.len() - digits.len() > 1
            {
                return None;
            }
            (n, Some(t.to_string()))
        }
        None => (rest, None),
    };
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((n.parse().ok()?, tokens))
}

/// A checkpoint folder: step, OLMo's token count, folder name, path.
type Folder = (u64, Option<String>, String, PathBuf);

/// The checkpoint folders under `dir`, by step.
fn checkpoint_folders(dir: &std::path::Path) -> Result<Vec<Folder>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.path().is_dir() {
            continue;
        }
        if let Some((step, tokens)) = parse_step_name(&name) {
            out.push((step, tokens, name, e.path()));
        }
    }
    out.sort();
    if out.is_empty() {
        anyhow::bail!(
            "{}: no checkpoint folders (stepN or stepN-tokensM) here",
            dir.display()
        );
    }
    if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
        anyhow::bail!(
            "{}: two checkpoint folders for step {}: {} and {}",
            dir.display(),
            w[0].0,
            w[0].2,
            w[1].2
        );
    }
    Ok(out)
}

/// Imports every checkpoint folder into `RUN/models/NAME` and lists them in
/// `RUN/models/checkpoints.json`; on any failure the whole run is removed.
fn import_checkpoints(
    c: &SuiteCommon,
    run: &std::path::Path,
    n_steps: u64,
) -> Result<Vec<SuiteCheckpoint>> {
    let Some(dir) = &c.checkpoints else {
        return Ok(Vec::new());
    };
    let folders = checkpoint_folders(dir)?;
    let result = (|| -> Result<Vec<SuiteCheckpoint>> {
        let mut out = Vec::new();
        for (step, tokens, name, path) in folders {
            if step > n_steps {
                eprintln!("note: {name} is past the {n_steps} steps of data imported");
            }
            eprintln!("checkpoint {name}: glass import hf {}", path.display());
            let rel = format!("models/{name}");
            let r = glass_hf::import_with(
                &path,
                &run.join(&rel),
                &glass_hf::ImportOptions {
                    weights_only: c.weights_only,
                },
            )
            .with_context(|| format!("importing checkpoint {}", path.display()))?;
            out.push(SuiteCheckpoint {
                name,
                step,
                tokens,
                source: path.display().to_string(),
                run: rel,
                checkpoint_sha256: r.checkpoint_sha256,
            });
        }
        let json = serde_json::to_vec_pretty(&out)?;
        glass_io::atomic::write_atomic(&run.join("models/checkpoints.json"), &json)?;
        Ok(out)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(run);
    }
    result
}

/// Options of `glass import pythia`.
#[derive(Args)]
pub struct ImportPythiaArgs {
    /// Folder holding the Megatron `.idx` and its `.bin`, whole or as pieces
    /// `STEM-00000-of-000NN.bin` … (read in place, never joined or copied).
    #[arg(long)]
    pub data: PathBuf,
    /// The `.idx` file, when the folder holds several.
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// Rows per optimizer step (Pythia: 1024).
    #[arg(long, default_value_t = 1024)]
    pub rows_per_step: u64,
    /// Context length; each row holds seq_len + 1 tokens (Pythia: 2048).
    #[arg(long, default_value_t = 2048)]
    pub seq_len: u64,
    /// Check only the `.idx` header and lengths, not every record (O(sequences)).
    #[arg(long)]
    pub skip_validation: bool,
    #[command(flatten)]
    pub common: SuiteCommon,
    /// New run directory.
    pub run: PathBuf,
}

/// Options of `glass import olmo`.
#[derive(Args)]
pub struct ImportOlmoArgs {
    /// The run's config.yaml (as saved with its checkpoints: data.paths, data.memmap_dtype,
    /// model.max_sequence_length, global_train_batch_size).
    #[arg(long)]
    pub config: PathBuf,
    /// Folder holding local copies of the config's data files (each found by its URL path
    /// with the scheme dropped, then with leading folders dropped).
    #[arg(long)]
    pub data: PathBuf,
    /// The data order (default: DATA/global_indices.npy, else next to the config).
    #[arg(long)]
    pub global_indices: Option<PathBuf>,
    #[command(flatten)]
    pub common: SuiteCommon,
    /// New run directory.
    pub run: PathBuf,
}

/// Options of `glass import crystalcoder`.
#[derive(Args)]
pub struct ImportCrystalCoderArgs {
    /// Folder of stage folders (e.g. stage1, stage2, stage3), each holding the modelzoo's
    /// `.h5` files (root dataset `data` of [n_examples, 3, max_seq_length]); a folder of
    /// `.h5` files alone is one stage. Read in place, never copied.
    #[arg(long)]
    pub data: PathBuf,
    /// Stage folders in training order, comma-separated (default: every sub-folder
    /// holding `.h5` files, in natural name order).
    #[arg(long, value_delimiter = ',')]
    pub stages: Vec<String>,
    /// Rows per optimizer step: the global batch size of the training config (required:
    /// the published data does not record it; docs/suites.md).
    #[arg(long)]
    pub rows_per_step: u64,
    /// Tokens per row, checked against every file (default: the first file's).
    #[arg(long)]
    pub seq_len: Option<u64>,
    /// A tokenizer.json (CrystalCoder's, from its model repository) copied into the run,
    /// so `glass data show` prints each row's text.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Record file lengths only and hash nothing now; `glass data verify RUN` hashes every
    /// file and records the hashes on its first pass.
    #[arg(long)]
    pub defer_hash: bool,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
    /// New run directory.
    pub run: PathBuf,
}

/// A progress sink drawing indicatif bars on stderr.
pub fn progress_bars() -> impl FnMut(Progress) {
    let mut bar: Option<glass_io::progress::ProgressBar> = None;
    move |p| match p {
        Progress::Begin { label, total } => {
            // Hashing counts bytes; checking an index counts records, HDF5 headers files.
            let template = if label == "sha256" {
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}"
            } else if label.contains(".h5") {
                "{prefix} [{bar:30}] {pos}/{len} files ETA {eta}"
            } else {
                "{prefix} [{bar:30}] {pos}/{len} records ETA {eta}"
            };
            let b = glass_io::progress::bar(total, true, template);
            b.set_prefix(label);
            bar = Some(b);
        }
        Progress::At(n) => {
            if let Some(b) = &bar {
                b.set_position(n);
            }
        }
        Progress::End => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
        }
    }
}

fn common(c: &SuiteCommon, validate: bool) -> ImportCommon {
    ImportCommon {
        tokenizer: c.tokenizer.clone(),
        hash: !c.defer_hash,
        validate,
    }
}

fn report(r: &external::ExternalImportReport, ckpts: &[SuiteCheckpoint], json: bool) -> Result<()> {
    if json {
        let mut v = serde_json::to_value(r)?;
        v["checkpoints"] = serde_json::to_value(ckpts)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "imported {} data into {}: {} files ({:.3} GB, {}) read in place; {} rows of {} tokens, {} steps of {} rows; data manifest {}",
        r.suite,
        r.run_dir.display(),
        r.files,
        r.bytes as f64 / 1e9,
        if r.hashed { "hashed" } else { "hashes deferred to `glass data verify`" },
        r.rows,
        r.row_len,
        r.n_steps,
        r.rows_per_step,
        &r.manifest_sha256[..16]
    );
    for c in ckpts {
        println!(
            "  checkpoint {} (step {}): {}/{} ({})",
            c.name,
            c.step,
            r.run_dir.display(),
            c.run,
            &c.checkpoint_sha256[..16.min(c.checkpoint_sha256.len())]
        );
    }
    println!(
        "next: glass data show {0} --step N [--json], glass data verify {0}",
        r.run_dir.display()
    );
    Ok(())
}

/// Runs `glass import pythia`.
pub fn import_pythia(a: ImportPythiaArgs) -> Result<()> {
    let o = PythiaImport {
        data: a.data,
        index: a.index,
        rows_per_step: a.rows_per_step,
        seq_len: a.seq_len,
        common: common(&a.common, !a.skip_validation),
    };
    if let Some(c) = &a.common.checkpoints {
        checkpoint_folders(c)?;
    }
    let r = external::import_pythia(&o, &a.run, &mut progress_bars())?;
    let ckpts = import_checkpoints(&a.common, &a.run, r.n_steps)?;
    report(&r, &ckpts, a.common.json)
}

/// Runs `glass import olmo`.
pub fn import_olmo(a: ImportOlmoArgs) -> Result<()> {
    let o = OlmoImport {
        config: a.config,
        data: a.data,
        global_indices: a.global_indices,
        common: common(&a.common, true),
    };
    if let Some(c) = &a.common.checkpoints {
        checkpoint_folders(c)?;
    }
    let r = external::import_olmo(&o, &a.run, &mut progress_bars())?;
    let ckpts = import_checkpoints(&a.common, &a.run, r.n_steps)?;
    report(&r, &ckpts, a.common.json)
}

/// Runs `glass import crystalcoder`.
pub fn import_crystalcoder(a: ImportCrystalCoderArgs) -> Result<()> {
    let o = CrystalCoderImport {
        data: a.data,
        stages: a.stages,
        rows_per_step: a.rows_per_step,
        seq_len: a.seq_len,
        common: ImportCommon {
            tokenizer: a.tokenizer,
            hash: !a.defer_hash,
            validate: true,
        },
    };
    let r = external::import_crystalcoder(&o, &a.run, &mut progress_bars())
        .context("glass import crystalcoder")?;
    report(&r, &[], a.json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suite_checkpoint_names() {
        assert_eq!(parse_step_name("step143000"), Some((143000, None)));
        assert_eq!(
            parse_step_name("step1000-tokens4B"),
            Some((1000, Some("4B".into())))
        );
        assert_eq!(
            parse_step_name("step0-tokens0"),
            Some((0, Some("0".into())))
        );
        for bad in [
            "step",
            "stepx",
            "ckpt_000",
            "step1-tokens",
            "step1-tokensBB",
            "step-1",
        ] {
            assert_eq!(parse_step_name(bad), None, "{bad}");
        }
    }
}
