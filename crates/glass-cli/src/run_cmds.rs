//! `glass train`, `info`, `verify`, `metrics`: argument parsing and printing only.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use glass_run::{Metrics, TrainOptions};

/// Options of `glass train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Run directory (with glass.toml and prepared data).
    pub run: PathBuf,
    /// Branch: start from a checkpoint of another run (requires --checkpoint). Without
    /// --continue: continued pretraining (weights and AdamW state, then this run's own
    /// data from step 0 and its schedule from warm-up).
    #[arg(long, requires = "checkpoint")]
    pub from: Option<PathBuf>,
    /// Checkpoint of --from to start from: an index or `latest`.
    #[arg(long, requires = "from")]
    pub checkpoint: Option<glass_run::Checkpoint>,
    /// Continue the parent exactly: the checkpoint's whole state (step, schedule,
    /// skipped steps, guard history) and the parent's data stream from its step on, read
    /// by hash from the parent; this run's glass.toml says what changes (a controlled
    /// experiment; `glass init NEW --from RUN --checkpoint K` writes it).
    #[arg(long = "continue", requires = "from")]
    pub continue_stream: bool,
    /// Fault injection: make the loss NaN the first time step S runs (repeatable).
    #[arg(long = "inject-nan-at-step", value_name = "S")]
    pub inject_nan: Vec<u64>,
    /// Stop once this data step is reached (resume later with plain `glass train`).
    #[arg(long, value_name = "STEP")]
    pub until_step: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Under mpirun/srun: each rank keeps 1/W of the AdamW moments (ZeRO stage 1); the
    /// bits and checkpoint files are unchanged.
    #[arg(long)]
    pub shard_optimizer: bool,
}

/// Runs `glass train`.
pub fn train(a: TrainArgs) -> Result<()> {
    let from = match (a.from, a.checkpoint) {
        (Some(f), c) => {
            let k = c
                .unwrap_or(glass_run::Checkpoint::Latest)
                .index_in(&f)
                .with_context(|| format!("--from {}", f.display()))?;
            Some((f, k))
        }
        (None, _) => None,
    };
    let opts = TrainOptions {
        inject_nan_at: a.inject_nan,
        from,
        mode: if a.continue_stream {
            glass_run::BranchMode::Continue
        } else {
            glass_run::BranchMode::ContinuedPretraining
        },
        until_step: a.until_step,
        progress: !a.quiet,
        shard_optimizer: a.shard_optimizer,
    };
    let comm = crate::world::world("train")?;
    let r = crate::world::or_abort(
        &*comm,
        glass_run::train::train_on(&a.run, &opts, comm.clone()).map_err(Into::into),
    )?;
    if comm.rank() != 0 {
        return Ok(());
    }
    if r.world_size > 1 {
        println!(
            "{} ranks ({}), {} gradient groups per step{}; optimizer state {} per rank{}; {:.1} MiB sent per step per rank",
            r.world_size,
            comm.transport(),
            r.grad_groups,
            if comm.piece() < usize::MAX {
                format!("; messages of at most {} values", comm.piece())
            } else {
                String::new()
            },
            mib(r.optimizer_bytes_per_rank),
            if r.shard_optimizer {
                format!(
                    " (sharded: {} saved of {})",
                    mib(r.optimizer_bytes_unsharded - r.optimizer_bytes_per_rank),
                    mib(r.optimizer_bytes_unsharded)
                )
            } else {
                String::new()
            },
            r.bytes_sent_per_step as f64 / (1u64 << 20) as f64
        );
        if let Some(extra) = r.checkpoint_extra_bytes {
            println!(
                "rank 0 wrote the sharded moments ({}) piece by piece: at most {} of resident memory above its own state while writing a checkpoint",
                mib(r.optimizer_bytes_unsharded),
                mib(extra)
            );
        }
    }
    let resumed = r
        .resumed_from
        .map_or(String::new(), |k| format!(" (resumed from checkpoint {k})"));
    println!(
        "trained {} to step {}/{}{resumed}; {} checkpoints written; validation loss {}",
        a.run.display(),
        r.step,
        r.n_steps,
        r.checkpoints_written,
        r.final_val_loss.map_or("n/a".into(), |v| format!("{v:.4}"))
    );
    if !r.guard_skips.is_empty() {
        println!(
            "guard skipped steps {:?} (see `glass metrics {} --events`)",
            r.guard_skips,
            a.run.display()
        );
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// Runs `glass info`.
pub fn info(run: &Path, json: bool) -> Result<()> {
    let i = glass_run::info(run)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&i)?);
        return Ok(());
    }
    println!(
        "run {} (format v{}), config {}, data {}",
        i.run_id,
        i.format_version,
        short(&i.config_sha256),
        short(&i.data_manifest_sha256)
    );
    if let Some(p) = &i.parent {
        println!(
            "branched ({}) from {} checkpoint {}{} ({})",
            p.mode.as_str(),
            p.run_dir,
            p.checkpoint,
            p.step.map_or(String::new(), |s| format!(" at step {s}")),
            short(&p.checkpoint_sha256)
        );
    }
    if let Some(im) = &i.import {
        println!(
            "checkpoint 0 imported ({}) from {} (record import.json {})",
            im.format,
            im.source_dir,
            short(&im.record_sha256)
        );
    }
    if i.weights_only {
        println!(
            "weights only: checkpoints hold the weights in their stored dtype and no optimizer state (eval, generate, analyze, trace, serve, export, release; no train or --replay)"
        );
    }
    println!(
        "{:>5} {:>9} {:>12} {:>9} {:>5} {:>10}  {:<64}  dir",
        "ckpt", "step", "tokens", "val_loss", "dtype", "weights", "sha256"
    );
    for c in &i.checkpoints {
        let vl = c.val_loss.map_or("-".into(), |v| format!("{v:.4}"));
        let bytes = c
            .weights_bytes
            .map_or("?".into(), |b| format!("{:.3} GB", b as f64 / 1e9));
        println!(
            "{:>5} {:>9} {:>12} {:>9} {:>5} {:>10}  {:<64}  {}",
            c.index,
            c.step,
            c.tokens,
            vl,
            c.weights_dtype.as_deref().unwrap_or("?"),
            bytes,
            c.sha256,
            c.dir
        );
    }
    Ok(())
}

/// `glass verify` of a run over a suite's data: the data files as `glass data verify`
/// checks them, then each imported checkpoint's run, and that each still holds the
/// checkpoint `RUN/models/checkpoints.json` recorded.
fn verify_suite_run(run: &Path, json: bool) -> Result<()> {
    let data = glass_data::external::verify(run, &mut crate::suites::progress_bars())?;
    let listed = run.join(glass_analysis::checkpoints::SUITE_CHECKPOINTS);
    let list = if listed.exists() {
        glass_analysis::checkpoints::run_checkpoints(run)?
    } else {
        Vec::new()
    };
    let mut problems: Vec<String> = data
        .mismatches
        .iter()
        .map(|m| format!("{}: {}", m.path, m.problem))
        .collect();
    let mut checkpoints = Vec::new();
    for c in &list {
        let dir = c.model_run();
        let r = glass_run::verify_run(dir)?;
        let now = glass_run::RunManifest::require(dir)?
            .checkpoints
            .last()
            .map(|k| k.sha256.clone())
            .unwrap_or_default();
        for p in &r.problems {
            problems.push(format!("{}/{}: {}", dir.display(), p.path, p.problem));
        }
        if now != c.sha256 {
            problems.push(format!(
                "{}: checkpoint sha256 {now}, but {} records {}",
                dir.display(),
                listed.display(),
                c.sha256
            ));
        }
        checkpoints.push(serde_json::json!({
            "index": c.index,
            "step": c.step,
            "run": dir,
            "checkpoint_sha256": now,
            "report": r,
        }));
    }
    if json {
        let out =
            serde_json::json!({ "data": data, "checkpoints": checkpoints, "problems": problems });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for p in &problems {
            println!("MISMATCH {p}");
        }
        println!(
            "checked {} data files ({:.1} MB, read in place) and {} imported checkpoint(s)",
            data.checked,
            data.bytes as f64 / 1e6,
            list.len()
        );
    }
    if !problems.is_empty() {
        bail!("{} file(s) or checkpoint(s) do not match", problems.len());
    }
    Ok(())
}

/// Runs `glass verify`.
pub fn verify(run: &Path, replay: Option<glass_run::Checkpoint>, json: bool) -> Result<()> {
    if glass_data::external::is_external(run) && !run.join("manifest.json").exists() {
        if replay.is_some() {
            bail!(
                "{} reads a suite's training data in place: it holds no training history to replay (`glass verify RUN` checks its data and imported checkpoints)",
                run.display()
            );
        }
        return verify_suite_run(run, json);
    }
    if let Some(k) = replay {
        let k = k.index_in(run)?;
        let r = glass_run::replay(run, k)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            let from = match k {
                0 => "the parent's checkpoint".to_string(),
                k => format!("checkpoint {}", k - 1),
            };
            println!(
                "replayed steps {}..{} from {from} to checkpoint {k}:",
                r.from_step, r.to_step,
            );
            for (name, want, got) in &r.files {
                println!(
                    "  {name:<22} {} {}",
                    if want == got {
                        "identical"
                    } else {
                        "DIFFERS  "
                    },
                    got
                );
            }
        }
        if !r.identical {
            if k == 0 {
                bail!("checkpoint 0 is NOT what the parent's checkpoint gives");
            }
            bail!(
                "checkpoint {k} is NOT what checkpoint {} and the data produce",
                k - 1
            );
        }
        if !json {
            println!("checkpoint {k} is bit-identical to its replay");
        }
        return Ok(());
    }
    let mut r = glass_run::verify_run(run)?;
    if let Some(problem) = glass_analysis::index::index_problem(run) {
        r.problems.push(glass_run::verify::FileProblem {
            path: glass_analysis::index::INDEX_MANIFEST.into(),
            problem,
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for p in &r.problems {
            println!("MISMATCH {}: {}", p.path, p.problem);
        }
        for p in &r.data_problems {
            println!("MISMATCH {p}");
        }
        println!(
            "checked {} checkpoint files and {} data files",
            r.checkpoint_files, r.data_files
        );
        if r.index_files > 0 {
            println!("checked {} trace-index files (glass index)", r.index_files);
        }
    }
    if !r.ok() {
        bail!(
            "{} file(s) do not match the manifest",
            r.problems.len() + r.data_problems.len()
        );
    }
    if !json {
        println!("all files match the manifests");
    }
    Ok(())
}

/// Options of `glass metrics`.
#[derive(Args)]
pub struct MetricsArgs {
    /// Run directory.
    pub run: PathBuf,
    /// Print JSON.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV (per-step rows).
    #[arg(long)]
    pub csv: bool,
    /// Show the events table instead of steps.
    #[arg(long)]
    pub events: bool,
    /// Show per-checkpoint validation metrics instead of steps.
    #[arg(long)]
    pub checkpoints: bool,
    /// Show evaluation results (`glass eval`): one row per checkpoint, one column per
    /// task metric.
    #[arg(long, conflicts_with_all = ["events", "checkpoints"])]
    pub evals: bool,
    /// Show the memorization matrix (`glass analyze memorization`): checkpoint × chunk.
    #[arg(long, conflicts_with_all = ["events", "checkpoints", "evals"])]
    pub memorization: bool,
    /// Show the training dynamics (`glass analyze dynamics`): head scores and norms.
    #[arg(long, conflicts_with_all = ["events", "checkpoints", "evals", "memorization"])]
    pub dynamics: bool,
}

/// Runs `glass metrics`.
pub fn metrics(a: MetricsArgs) -> Result<()> {
    if !a.run.join(glass_run::metrics::METRICS_FILE).exists() {
        bail!(
            "{}: no metrics yet; run `glass train {}` first",
            a.run.display(),
            a.run.display()
        );
    }
    if a.memorization {
        return crate::analysis::metrics_matrix(&a.run, a.json);
    }
    let m = Metrics::open_read_only(&a.run)?;
    if a.dynamics {
        let rows = m.dynamics()?;
        if a.json {
            println!("{}", serde_json::to_string(&rows)?);
        } else if rows.is_empty() {
            println!(
                "no dynamics yet; run `glass analyze dynamics {}`",
                a.run.display()
            );
        } else {
            crate::analysis::print_dynamics(&rows);
        }
        return Ok(());
    }
    if a.evals {
        return evals(&m, a.json, a.csv);
    }
    if a.events {
        let ev = m.events()?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&ev)?);
        } else {
            println!("id,step,kind,detail,wall_time");
            for e in ev {
                println!(
                    "{},{},{},{},{:.3}",
                    e.id,
                    e.step.map_or(String::new(), |s| s.to_string()),
                    e.kind,
                    csv_field(&e.detail),
                    e.wall_time
                );
            }
        }
    } else if a.checkpoints {
        let rows = m.checkpoints()?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            println!("checkpoint,step,tokens,val_loss,val_bpb");
            for r in rows {
                let f = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
                println!(
                    "{},{},{},{},{}",
                    r.checkpoint,
                    r.step,
                    r.tokens,
                    f(r.val_loss),
                    f(r.val_bpb)
                );
            }
        }
    } else {
        let rows = m.steps()?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            println!("step,loss,lr,grad_norm,tokens,tokens_per_s,wall_time");
            for r in rows {
                println!(
                    "{},{:.6},{:.6e},{:.6},{},{:.1},{:.3}",
                    r.step, r.loss, r.lr, r.grad_norm, r.tokens, r.tokens_per_s, r.wall_time
                );
            }
        }
    }
    Ok(())
}

/// Prints the evaluation curves: checkpoint × (task, metric).
fn evals(m: &Metrics, json: bool, csv: bool) -> Result<()> {
    let rows = m.evals()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no evaluations yet; run `glass eval RUN`");
        return Ok(());
    }
    let steps: std::collections::BTreeMap<u32, u64> = m
        .checkpoints()?
        .into_iter()
        .map(|c| (c.checkpoint, c.step))
        .collect();
    let mut cols: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.task.clone(), r.metric.clone()))
        .collect();
    cols.sort();
    cols.dedup();
    let mut table: std::collections::BTreeMap<u32, Vec<Option<f64>>> = Default::default();
    for r in &rows {
        let i = cols
            .iter()
            .position(|c| c.0 == r.task && c.1 == r.metric)
            .expect("column exists");
        table
            .entry(r.checkpoint)
            .or_insert_with(|| vec![None; cols.len()])[i] = Some(r.value);
    }
    let names: Vec<String> = cols.iter().map(|(t, m)| format!("{t}/{m}")).collect();
    let step = |k: &u32| steps.get(k).map_or(String::new(), |s| s.to_string());
    if csv {
        println!("checkpoint,step,{}", names.join(","));
        for (k, vals) in &table {
            let v: Vec<String> = vals
                .iter()
                .map(|v| v.map_or(String::new(), |v| format!("{v:.6}")))
                .collect();
            println!("{k},{},{}", step(k), v.join(","));
        }
        return Ok(());
    }
    let w: Vec<usize> = names.iter().map(|n| n.len().max(10)).collect();
    print!("{:>5} {:>9}", "ckpt", "step");
    for (n, w) in names.iter().zip(&w) {
        print!("  {n:>w$}");
    }
    println!();
    for (k, vals) in &table {
        print!("{k:>5} {:>9}", step(k));
        for (v, w) in vals.iter().zip(&w) {
            let s = v.map_or("-".to_string(), |v| format!("{v:.4}"));
            print!("  {s:>w$}");
        }
        println!();
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

/// Options of `glass diff`.
#[derive(Args)]
pub struct DiffArgs {
    /// Run A (e.g. the parent).
    pub a: PathBuf,
    /// Run B (e.g. a branch of A).
    pub b: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `glass diff`.
pub fn diff(a: DiffArgs) -> Result<()> {
    let d = glass_run::diff(&a.a, &a.b)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(());
    }
    let c = &d.common;
    println!("A {} (run {})", d.a.run_dir, d.a.run_id);
    println!("B {} (run {})", d.b.run_dir, d.b.run_id);
    println!(
        "common checkpoint: A {} (step {}) = B's start {} (step {}), {}",
        c.a_checkpoint,
        c.a_step,
        c.b_checkpoint,
        c.b_step,
        short(&c.sha256)
    );
    if d.config_tables.is_empty() {
        println!("glass.toml: same values");
    } else {
        println!("glass.toml differs in: [{}]", d.config_tables.join("], ["));
    }
    let mut cols: Vec<String> = d
        .checkpoints
        .iter()
        .flat_map(|r| [&r.a, &r.b])
        .flatten()
        .flat_map(|s| s.evals.keys().cloned())
        .collect();
    cols.sort();
    cols.dedup();
    let memo = d
        .checkpoints
        .iter()
        .flat_map(|r| [&r.a, &r.b])
        .flatten()
        .any(|s| s.memorization_token_match.is_some());
    print!(
        "{:>7} {:>9} {:>9} {:>10} {:>10} {:>9}",
        "+steps", "A ckpt", "B ckpt", "A val", "B val", "B-A"
    );
    for c in &cols {
        print!("  {:>14} {:>14}", format!("A {c}"), format!("B {c}"));
    }
    if memo {
        print!("  {:>9} {:>9}", "A memo", "B memo");
    }
    println!("  bits");
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for r in &d.checkpoints {
        let (va, vb) = (
            r.a.as_ref().and_then(|s| s.val_loss),
            r.b.as_ref().and_then(|s| s.val_loss),
        );
        let delta = va.zip(vb).map(|(x, y)| y - x);
        let k = |s: &Option<glass_run::diff::DiffSide>| {
            s.as_ref()
                .map_or("-".to_string(), |s| format!("{}@{}", s.checkpoint, s.step))
        };
        print!(
            "{:>7} {:>9} {:>9} {:>10} {:>10} {:>9}",
            r.offset,
            k(&r.a),
            k(&r.b),
            f(va),
            f(vb),
            delta.map_or("-".to_string(), |d| format!("{d:+.4}"))
        );
        for c in &cols {
            let v = |s: &Option<glass_run::diff::DiffSide>| {
                f(s.as_ref().and_then(|s| s.evals.get(c).copied()))
            };
            print!("  {:>14} {:>14}", v(&r.a), v(&r.b));
        }
        if memo {
            let m = |s: &Option<glass_run::diff::DiffSide>| {
                f(s.as_ref().and_then(|s| s.memorization_token_match))
            };
            print!("  {:>9} {:>9}", m(&r.a), m(&r.b));
        }
        let bits = match (&r.a, &r.b) {
            (Some(_), Some(_)) if r.same_model && r.same_optimizer => "identical",
            (Some(_), Some(_)) => "differ",
            _ => "-",
        };
        println!("  {bits}");
    }
    let dd = &d.data;
    if dd.differing.is_empty() {
        println!(
            "data: the same rows at all {} steps compared",
            dd.steps_compared
        );
    } else {
        let ranges: Vec<String> = dd
            .differing
            .iter()
            .map(|[x, y]| {
                let (ax, bx) = (c.a_step + x, c.b_step + x);
                if y - x == 1 {
                    format!("+{x} (A step {ax}, B step {bx})")
                } else {
                    let n = y - 1 - x;
                    format!(
                        "+{x}..+{} (A steps {ax}..{}, B steps {bx}..{})",
                        y - 1,
                        ax + n,
                        bx + n
                    )
                }
            })
            .collect();
        println!(
            "data: {} of {} steps differ (steps since the common checkpoint: {}); A skipped {} of them, B {}",
            dd.differing_steps,
            dd.steps_compared,
            ranges.join(", "),
            dd.a_only_skipped,
            dd.b_only_skipped
        );
        let toks = |m: &std::collections::BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        println!("  tokens A trained on there: {}", toks(&dd.a_tokens));
        println!("  tokens B trained on there: {}", toks(&dd.b_tokens));
    }
    Ok(())
}
