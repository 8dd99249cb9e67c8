//! `glass eval`: evaluate checkpoints of a run on harness-compatible tasks and store
//! the results in the run. Argument parsing and printing only; the work is glass-eval's.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use clap::Args;
use glass_eval::{CheckpointSel, EvalOptions, EvalProgress, TaskDef, TaskResult};

/// Options of `glass eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Run directory.
    pub run: PathBuf,
    /// Checkpoints: all, latest, or indices K,K2,...
    #[arg(long, default_value = "all")]
    pub checkpoints: CheckpointSel,
    /// Tasks: bundled task names (glass_cloze, glass_heldout) or paths to
    /// lm-evaluation-harness task YAML files, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "glass_cloze,glass_heldout"
    )]
    pub tasks: Vec<String>,
    /// Evaluate only the first N documents of each task.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Few-shot examples per document (overrides the task's num_fewshot).
    #[arg(long)]
    pub num_fewshot: Option<usize>,
    /// Seed of the few-shot sampler (the harness's --fewshot_random_seed).
    #[arg(long, default_value_t = glass_eval::DEFAULT_FEWSHOT_SEED)]
    pub fewshot_seed: u64,
    /// Local data for YAML tasks: SPLIT=FILE (JSON Lines or a JSON array), repeatable;
    /// replaces the YAML's dataset (e.g. point the harness's arc_easy.yaml at a local copy).
    #[arg(long = "data-files", value_name = "SPLIT=FILE")]
    pub data_files: Vec<String>,
    /// Re-evaluate (checkpoint, task) pairs already stored.
    #[arg(long)]
    pub force: bool,
    /// Store per-document log-likelihoods in the result JSON files.
    #[arg(long)]
    pub log_samples: bool,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

/// Resolves task names and YAML paths.
pub fn load_tasks(names: &[String], data_files: &[String]) -> Result<Vec<TaskDef>> {
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for df in data_files {
        let (split, path) = df.split_once('=').with_context(|| {
            format!("--data-files `{df}`: expected SPLIT=FILE, e.g. test=arc_easy_test.jsonl")
        })?;
        files
            .entry(split.to_string())
            .or_default()
            .push(PathBuf::from(path));
    }
    let mut out = Vec::new();
    for name in names {
        let name = name.trim();
        if let Some(t) = glass_eval::bundled::bundled(name) {
            if !files.is_empty() {
                bail!("--data-files applies to YAML task files, not the bundled task `{name}`");
            }
            out.push(t?);
            continue;
        }
        let path = Path::new(name);
        if !path.exists() {
            let bundled: Vec<&str> = glass_eval::bundled::BUNDLED.iter().map(|b| b.0).collect();
            bail!(
                "task `{name}` is neither a bundled task ({}) nor a YAML file",
                bundled.join(", ")
            );
        }
        out.push(TaskDef::from_file(
            path,
            (!files.is_empty()).then_some(&files),
        )?);
    }
    Ok(out)
}

/// Runs `glass eval`.
pub fn run(a: EvalArgs) -> Result<()> {
    let tasks = load_tasks(&a.tasks, &a.data_files)?;
    let opts = EvalOptions {
        checkpoints: a.checkpoints.clone(),
        tasks,
        limit: a.limit,
        num_fewshot: a.num_fewshot,
        fewshot_seed: a.fewshot_seed,
        force: a.force,
        log_samples: a.log_samples,
    };
    let comm = crate::world::world("eval")?;
    let results = crate::world::or_abort(
        &*comm,
        evaluate_on(&a.run, &opts, a.quiet || comm.rank() != 0, &*comm),
    )?;
    if comm.rank() != 0 {
        return Ok(());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print_table(&results);
    }
    Ok(())
}

/// Evaluates with progress on stderr (unless `quiet`).
pub fn evaluate(run: &Path, opts: &EvalOptions, quiet: bool) -> Result<Vec<TaskResult>> {
    evaluate_on(run, opts, quiet, &glass_dist::Solo)
}

/// [`evaluate`] as one rank of `comm` (pairs split over ranks; rank 0 stores).
pub fn evaluate_on(
    run: &Path,
    opts: &EvalOptions,
    quiet: bool,
    comm: &dyn glass_dist::Collective,
) -> Result<Vec<TaskResult>> {
    let tty = std::io::stderr().is_terminal();
    let state = Mutex::new((0u32, String::new(), 0usize));
    let progress = |p: EvalProgress| {
        if quiet {
            return;
        }
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        match p {
            EvalProgress::Start {
                checkpoint,
                task,
                docs,
            } => {
                *st = (checkpoint, task.to_string(), docs);
            }
            EvalProgress::Docs(d) => {
                if tty && (d % 16 == 0 || d == st.2) {
                    let _ = write!(err, "\r  checkpoint {} {}: {d}/{} docs", st.0, st.1, st.2);
                    let _ = err.flush();
                }
            }
            EvalProgress::Warning(w) => {
                let _ = writeln!(err, "{}warning: {w}", if tty { "\r" } else { "" });
            }
            EvalProgress::Done(r) => {
                let what = if r.skipped {
                    "already evaluated".to_string()
                } else {
                    format!("{} docs in {:.1}s", r.n, r.seconds)
                };
                let m: Vec<String> = r
                    .metrics
                    .iter()
                    .map(|m| format!("{} {:.4}", m.metric, m.value))
                    .collect();
                let _ = writeln!(
                    err,
                    "{}  checkpoint {} {}: {} ({what})",
                    if tty { "\r" } else { "" },
                    r.checkpoint,
                    r.task,
                    m.join(", ")
                );
            }
        }
    };
    Ok(glass_eval::evaluate_run_on(run, opts, &progress, comm)?)
}

fn print_table(results: &[TaskResult]) {
    println!(
        "{:>5} {:>9}  {:<16} {:<16} {:>10} {:>9} {:>6}",
        "ckpt", "step", "task", "metric", "value", "stderr", "n"
    );
    for r in results {
        for m in &r.metrics {
            println!(
                "{:>5} {:>9}  {:<16} {:<16} {:>10.4} {:>9} {:>6}",
                r.checkpoint,
                r.step,
                r.task,
                m.metric,
                m.value,
                m.stderr.map_or("-".into(), |s| format!("{s:.4}")),
                m.n
            );
        }
    }
}
