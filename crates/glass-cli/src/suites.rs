//! `glass import pythia` and `glass import olmo`: runs over the Pythia and OLMo suites'
//! training data, read in place (argument parsing, progress and printing only; the work is
//! in `glass_data::external`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use glass_data::external::{self, ImportCommon, OlmoImport, Progress, PythiaImport};

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
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
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

/// A progress sink drawing indicatif bars on stderr.
pub fn progress_bars() -> impl FnMut(Progress) {
    let mut bar: Option<glass_io::progress::ProgressBar> = None;
    move |p| match p {
        Progress::Begin { label, total } => {
            let b = glass_io::progress::bar(
                total,
                true,
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            );
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

fn report(r: &external::ExternalImportReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
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
    let r = external::import_pythia(&o, &a.run, &mut progress_bars())?;
    report(&r, a.common.json)
}

/// Runs `glass import olmo`.
pub fn import_olmo(a: ImportOlmoArgs) -> Result<()> {
    let o = OlmoImport {
        config: a.config,
        data: a.data,
        global_indices: a.global_indices,
        common: common(&a.common, true),
    };
    let r = external::import_olmo(&o, &a.run, &mut progress_bars())?;
    report(&r, a.common.json)
}
