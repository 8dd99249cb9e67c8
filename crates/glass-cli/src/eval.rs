//! `glass eval`: evaluate checkpoints of a run on harness-compatible tasks and store
//! the results in the run. Argument parsing and printing only; the work is glass-eval's.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use clap::Args;
use glass_eval::groups::GroupResult;
use glass_eval::index::{self, Selection, TaskIndex};
use glass_eval::{CheckpointSel, EvalOptions, EvalProgress, TaskDef, TaskResult};

/// Options of `glass eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Run directory.
    pub run: PathBuf,
    /// Checkpoints: all, latest, or indices K,K2,...
    #[arg(long, default_value = "all")]
    pub checkpoints: CheckpointSel,
    /// Tasks: bundled task names (glass_cloze, glass_heldout, glass_code_heldout), paths to
    /// lm-evaluation-harness task or group YAML files, or task/group/tag names from the
    /// harness's task files (bundled: arc_easy, arc_challenge, hellaswag, mmlu, mmlu_*,
    /// truthfulqa_mc1, truthfulqa_mc2, humaneval, mbpp; more with --include-path),
    /// comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "glass_cloze,glass_heldout"
    )]
    pub tasks: Vec<String>,
    /// A standard suite with its standard shot counts: `leaderboard` (ARC-Challenge
    /// 25-shot, HellaSwag 10-shot, MMLU 5-shot, TruthfulQA MC2 0-shot) or `code`
    /// (HumanEval 0-shot, MBPP 3-shot; pass@1, generated code run in a sandbox).
    #[arg(long, conflicts_with = "tasks")]
    pub suite: Option<String>,
    /// More directories of harness task YAML files, searched for task, group and tag
    /// names before the bundled copies (the harness's --include_path).
    #[arg(long = "include-path", value_name = "DIR")]
    pub include_path: Vec<PathBuf>,
    /// Where hub datasets are: DIR/<dataset_path>/<dataset_name>/<split>.{jsonl,json,
    /// parquet,arrow} or the hub's <split>-00000-of-00001.parquet (repeatable); the
    /// Hugging Face datasets cache is searched after these.
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Vec<PathBuf>,
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
    /// Python interpreter that runs generated programs (code tasks); default:
    /// /usr/bin/python3, else python3 on PATH.
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

/// Resolves task names, YAML paths and suites into tasks and groups.
pub fn load_tasks(
    names: &[String],
    data_files: &[String],
    include_path: &[PathBuf],
    data_dirs: &[PathBuf],
) -> Result<Selection> {
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
    let mut dirs: Vec<PathBuf> = include_path.to_vec();
    dirs.push(glass_eval::source::bundled_lm_eval_dir());
    let mut index: Option<TaskIndex> = None;
    let mut sel = Selection::default();
    for name in names {
        let name = name.trim();
        if let Some(t) = glass_eval::bundled::bundled(name) {
            if !files.is_empty() {
                bail!("--data-files applies to YAML task files, not the bundled task `{name}`");
            }
            sel.tasks.push(t?);
            continue;
        }
        let path = Path::new(name);
        if path.is_file() {
            if index::is_group_file(path)? {
                let mut d = vec![path.parent().unwrap_or(Path::new(".")).to_path_buf()];
                d.extend(dirs.iter().cloned());
                TaskIndex::build(&d)?.group_file(path, &mut sel)?;
            } else {
                sel.tasks.push(TaskDef::from_file(
                    path,
                    (!files.is_empty()).then_some(&files),
                )?);
            }
            continue;
        }
        if index.is_none() {
            index = Some(TaskIndex::build(&dirs)?);
        }
        let ix = index.as_ref().expect("built");
        if !ix.knows(name) {
            let bundled: Vec<&str> = glass_eval::bundled::BUNDLED.iter().map(|b| b.0).collect();
            bail!(
                "task `{name}` is neither a bundled task ({}), a YAML file, nor a task, group or tag in the harness's task files (bundled, or add a folder with --include-path)",
                bundled.join(", ")
            );
        }
        ix.select(name, &mut sel)?;
    }
    for t in &mut sel.tasks {
        t.data_dirs = data_dirs.to_vec();
    }
    Ok(sel)
}

/// The tasks of a suite, each with the suite's shot count.
pub fn load_suite(
    suite: &str,
    include_path: &[PathBuf],
    data_dirs: &[PathBuf],
) -> Result<Selection> {
    let entries = glass_eval::suite::suite(suite)
        .with_context(|| format!("unknown suite `{suite}` (available: leaderboard, code)"))?;
    let mut sel = Selection::default();
    for (name, shots, _) in entries {
        let part = load_tasks(&[name.to_string()], &[], include_path, data_dirs)?;
        for mut t in part.tasks {
            t.num_fewshot = *shots;
            if !sel.tasks.iter().any(|x| x.name == t.name) {
                sel.tasks.push(t);
            }
        }
        sel.groups.extend(part.groups);
    }
    Ok(sel)
}

/// Runs `glass eval`.
pub fn run(a: EvalArgs) -> Result<()> {
    let suite_run =
        glass_data::external::is_external(&a.run) && !a.run.join("manifest.json").exists();
    // A run over a suite's data: its checkpoints are runs of their own (listed first, so a
    // run without any is refused before the tasks load).
    let suite_ckpts = if suite_run {
        Some(glass_analysis::checkpoints::run_checkpoints(&a.run)?)
    } else {
        None
    };
    let sel = match &a.suite {
        Some(s) => {
            if !a.data_files.is_empty() {
                bail!("--data-files does not apply to a suite; use --data-dir DIR");
            }
            load_suite(s, &a.include_path, &a.data_dir)?
        }
        None => load_tasks(&a.tasks, &a.data_files, &a.include_path, &a.data_dir)?,
    };
    let opts = EvalOptions {
        checkpoints: a.checkpoints.clone(),
        tasks: sel.tasks,
        limit: a.limit,
        num_fewshot: a.num_fewshot,
        fewshot_seed: a.fewshot_seed,
        force: a.force,
        log_samples: a.log_samples,
        code: a
            .python
            .as_ref()
            .map(|p| glass_eval::code::CodeRunner::new(p.clone())),
    };
    if let Some(list) = suite_ckpts {
        let (results, groups) = evaluate_suite_checkpoints(&a, &list, opts, &sel.groups)?;
        return print_results(&a, &results, &groups);
    }
    let comm = crate::world::world("eval")?;
    let results = crate::world::or_abort(
        &*comm,
        evaluate_on(&a.run, &opts, a.quiet || comm.rank() != 0, &*comm),
    )?;
    if comm.rank() != 0 {
        return Ok(());
    }
    let groups = glass_eval::groups::store_groups(&a.run, &sel.groups, &results)?;
    print_results(&a, &results, &groups)
}

/// Prints results and group scores as a table, or as JSON with `--json`.
fn print_results(a: &EvalArgs, results: &[TaskResult], groups: &[GroupResult]) -> Result<()> {
    if a.json {
        let mut all: Vec<serde_json::Value> = results
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()?;
        for g in groups {
            all.push(serde_json::to_value(g)?);
        }
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        print_table(results, groups);
    }
    Ok(())
}

/// `glass eval` on a run over a suite's data: each selected checkpoint of
/// `RUN/models/checkpoints.json` is evaluated in its own run (results stored there, as
/// `glass eval RUN/models/NAME` stores them) and reported under the suite's checkpoint
/// number and step.
fn evaluate_suite_checkpoints(
    a: &EvalArgs,
    list: &[glass_analysis::checkpoints::RunCheckpoint],
    opts: EvalOptions,
    groups: &[glass_eval::groups::GroupDef],
) -> Result<(Vec<TaskResult>, Vec<GroupResult>)> {
    let available: Vec<u64> = list.iter().map(|c| c.index as u64).collect();
    let picked = a.checkpoints.pick(&available, "checkpoint")?;
    let opts = EvalOptions {
        checkpoints: CheckpointSel::Latest,
        ..opts
    };
    let (mut out, mut scores) = (Vec::new(), Vec::new());
    for k in picked {
        let c = &list[k as usize];
        if !a.quiet {
            eprintln!(
                "checkpoint {} (step {}): {}",
                c.index,
                c.step,
                c.model_run().display()
            );
        }
        let results = evaluate(c.model_run(), &opts, a.quiet)?;
        for mut g in glass_eval::groups::store_groups(c.model_run(), groups, &results)? {
            (g.checkpoint, g.step) = (c.index, c.step);
            scores.push(g);
        }
        for mut r in results {
            (r.checkpoint, r.step) = (c.index, c.step);
            out.push(r);
        }
    }
    Ok((out, scores))
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

/// `contaminated/checked (percent)` at n tokens, or `-` when not computed.
fn contamination_cell(f: Option<&glass_analysis::contamination::TaskFigure>) -> String {
    f.map_or("-".into(), |f| {
        format!(
            "{}/{} {:.1}% @{}",
            f.contaminated,
            f.checked,
            100.0 * f.fraction,
            f.ngram
        )
    })
}

fn print_table(results: &[TaskResult], groups: &[GroupResult]) {
    println!(
        "{:>5} {:>9}  {:<16} {:<16} {:>10} {:>9} {:>6}  contaminated",
        "ckpt", "step", "task", "metric", "value", "stderr", "n"
    );
    for r in results {
        for m in &r.metrics {
            println!(
                "{:>5} {:>9}  {:<16} {:<16} {:>10.4} {:>9} {:>6}  {}",
                r.checkpoint,
                r.step,
                r.task,
                m.metric,
                m.value,
                m.stderr.map_or("-".into(), |s| format!("{s:.4}")),
                m.n,
                contamination_cell(r.contamination.as_ref())
            );
        }
    }
    for g in groups {
        for m in &g.metrics {
            println!(
                "{:>5} {:>9}  {:<16} {:<16} {:>10.4} {:>9} {:>6}  -",
                g.checkpoint,
                g.step,
                format!("{} (group)", g.group),
                m.metric,
                m.value,
                m.stderr.map_or("-".into(), |s| format!("{s:.4}")),
                m.n
            );
        }
    }
}
