//! `glass data contamination`: which benchmark items occur in a run's training stream.
//! Loads the tasks as `glass eval` does, turns each evaluated item into the text checked,
//! and prints glass-analysis's report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use glass_analysis::contamination::{
    contamination, BenchItem, ContaminationOptions, ContaminationReport, Method,
    CONTAMINATION_FILE, DEFAULT_NGRAM,
};
use glass_eval::Prepared;

/// Options of `glass data contamination`.
#[derive(Debug, Clone, Args)]
pub struct ContaminationArgs {
    /// Run directory (prepared data).
    pub run: PathBuf,
    /// Tasks, as `glass eval --tasks` takes them: bundled task names, harness YAML
    /// files, or task/group names (hub data via --data-dir or --data-files),
    /// comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "glass_cloze,glass_heldout,glass_code_heldout"
    )]
    pub tasks: Vec<String>,
    /// A standard suite, as `glass eval --suite` takes it: `leaderboard` (ARC-Challenge,
    /// HellaSwag, MMLU, TruthfulQA MC2) or `code` (HumanEval, MBPP); hub data via
    /// --data-dir.
    #[arg(long, conflicts_with = "tasks")]
    pub suite: Option<String>,
    /// More directories of harness task YAML files.
    #[arg(long = "include-path", value_name = "DIR")]
    pub include_path: Vec<PathBuf>,
    /// Where hub datasets are (as for `glass eval`).
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Vec<PathBuf>,
    /// Local data for YAML tasks: SPLIT=FILE, repeatable.
    #[arg(long = "data-files", value_name = "SPLIT=FILE")]
    pub data_files: Vec<String>,
    /// Check only the first N items of each task.
    #[arg(long)]
    pub limit: Option<usize>,
    /// How the rows are searched: `index` (suffix arrays; `glass index RUN` first),
    /// `scan` (one pass over every row) or `auto` (the index when built).
    #[arg(long, default_value = "auto")]
    pub method: Method,
    /// N-gram length in tokens.
    #[arg(long, default_value_t = DEFAULT_NGRAM)]
    pub ngram: usize,
    /// Places listed per contaminated item (all are counted).
    #[arg(long, default_value_t = 5)]
    pub max_hits: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The text checked for one evaluated item: the zero-shot context and, for multiple
/// choice, the gold continuation; a rolling task's text; a generation task's prompt.
fn item_text(p: &Prepared) -> String {
    match p {
        Prepared::MultipleChoice {
            context,
            continuations,
            gold,
            ..
        } => {
            let gold = gold.and_then(|g| continuations.get(g)).map_or("", |s| s);
            format!("{context}{gold}")
        }
        Prepared::Rolling { text } => text.clone(),
        Prepared::Generate { context, .. } => context.clone(),
    }
}

/// The evaluated items of the selected tasks (zero-shot, at most `limit` per task), in
/// task order, as checked for contamination, and each task's `task_sha256` (as
/// `glass eval` records it).
pub fn bench_items(
    sel: &glass_eval::index::Selection,
    limit: Option<usize>,
) -> Result<(Vec<BenchItem>, BTreeMap<String, String>)> {
    let mut items = Vec::new();
    let mut hashes = BTreeMap::new();
    for t in &sel.tasks {
        let mut t = t.clone();
        t.num_fewshot = 0;
        let data = t
            .load()
            .with_context(|| format!("loading task {}", t.name))?;
        let prepared = glass_eval::prepare(&t, &data, limit, glass_eval::DEFAULT_FEWSHOT_SEED)
            .with_context(|| format!("task {}", t.name))?;
        hashes.insert(t.name.clone(), data.task_sha256.clone());
        let docs = &data.splits[t.eval_split()?];
        for (p, d) in prepared.iter().zip(docs) {
            items.push(BenchItem {
                task: t.name.clone(),
                id: d.origin.clone(),
                text: item_text(p),
            });
        }
    }
    Ok((items, hashes))
}

/// The items of the `[data] decontaminate` tasks of `run`'s config (`None` when it names
/// none). Tasks are resolved as `glass eval --tasks` resolves them, YAML paths and
/// `decontaminate_data_dir` relative to the run directory; every item is checked. Items
/// read from files inside the run are named by paths relative to it.
pub fn decontaminate_items(run: &Path) -> Result<Option<Vec<BenchItem>>> {
    let cfg = glass_data::DataConfig::load(run)
        .with_context(|| format!("reading {}", run.join("glass.toml").display()))?;
    if cfg.decontaminate.is_empty() {
        return Ok(None);
    }
    let names: Vec<String> = cfg
        .decontaminate
        .iter()
        .map(|n| {
            let p = run.join(n.trim());
            if glass_eval::bundled::bundled(n.trim()).is_none() && p.is_file() {
                p.to_string_lossy().into_owned()
            } else {
                n.clone()
            }
        })
        .collect();
    let dirs: Vec<PathBuf> = cfg
        .decontaminate_data_dir
        .iter()
        .map(|d| run.join(d))
        .collect();
    let sel = crate::eval::load_tasks(&names, &[], &[], &dirs)
        .context("loading the [data] decontaminate tasks")?;
    let (mut items, _) =
        bench_items(&sel, None).context("loading the [data] decontaminate tasks")?;
    // Items of files inside the run are named relative to it, so the record does not
    // depend on where the run lies.
    let prefix = format!("{}{}", run.display(), std::path::MAIN_SEPARATOR);
    for it in &mut items {
        if let Some(rest) = it.id.strip_prefix(&prefix) {
            it.id = rest.to_string();
        }
    }
    Ok(Some(items))
}

/// Runs `glass data contamination`.
pub fn run(a: ContaminationArgs) -> Result<()> {
    let sel = match &a.suite {
        Some(s) => {
            if !a.data_files.is_empty() {
                bail!("--data-files does not apply to a suite; use --data-dir DIR");
            }
            crate::eval::load_suite(s, &a.include_path, &a.data_dir)?
        }
        None => crate::eval::load_tasks(&a.tasks, &a.data_files, &a.include_path, &a.data_dir)?,
    };
    let (items, task_sha256) = bench_items(&sel, a.limit)?;
    let opts = ContaminationOptions {
        method: a.method,
        n: a.ngram,
        max_hits: a.max_hits,
        progress: !a.json,
        limit: a.limit,
        task_sha256,
    };
    let r = contamination(&a.run, &items, &opts)
        .with_context(|| format!("checking {}", a.run.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_report(&r, &a.run);
    }
    Ok(())
}

fn print_report(r: &ContaminationReport, run: &std::path::Path) {
    println!(
        "{}-token overlap with {} training steps ({} tokens, by {}); stored in {}",
        r.ngram,
        r.steps,
        r.tokens,
        match r.method {
            Method::Index => "index",
            _ => "scan",
        },
        run.join(CONTAMINATION_FILE).display()
    );
    println!(
        "{:<28} {:>8} {:>10} {:>13} {:>8}",
        "task", "items", "too short", "contaminated", "share"
    );
    for t in &r.tasks {
        let checked = t.items - t.too_short;
        println!(
            "{:<28} {:>8} {:>10} {:>13} {:>7.1}%",
            t.task,
            t.items,
            t.too_short,
            t.contaminated,
            100.0 * t.contaminated as f64 / checked.max(1) as f64
        );
    }
    for t in &r.tasks {
        for it in &t.contaminated_items {
            println!(
                "{} {}: {}/{} n-grams in training, {} occurrences",
                t.task, it.id, it.matched_ngrams, it.ngrams, it.occurrences
            );
            for h in &it.hits {
                println!(
                    "    step {} row {} pos {}: {} doc {} {}",
                    h.step, h.slot, h.pos, h.source, h.doc, h.doc_id
                );
            }
        }
    }
}
