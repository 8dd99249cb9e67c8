//! Evaluating checkpoints of a run: load each (hash-checked), score every task, write
//! `RUN/evals/ckpt-KKKK/<task>.json` atomically and record the metrics in
//! `metrics.sqlite`; a (checkpoint, task) pair already evaluated with the same task
//! definition, few-shot settings and limit is skipped unless forced.

use std::path::{Path, PathBuf};
use std::time::Instant;

use glass_dist::{Collective, Solo};
use glass_io::atomic::{sha256_hex, write_atomic};
use glass_run::metrics::{EvalRow, EvalRunRow};
use glass_run::{Metrics, RunManifest};
use serde::Serialize;

use crate::contamination_report::{task_figure, Figure, TaskFigure};

use crate::prompts::{prepare, Prepared};
use crate::results::{aggregate, samples, MetricValue, Sample};
use crate::score::{Scored, Scorer};
use crate::task::{TaskData, TaskDef};
use crate::EvalError;

/// Which checkpoints to evaluate: the run's one checkpoint selection.
pub type CheckpointSel = glass_run::Selection;

/// Options of [`evaluate_run`].
pub struct EvalOptions {
    /// Checkpoints.
    pub checkpoints: CheckpointSel,
    /// Tasks (parsed definitions).
    pub tasks: Vec<TaskDef>,
    /// Evaluate only the first N documents of each task.
    pub limit: Option<usize>,
    /// Override every task's `num_fewshot`.
    pub num_fewshot: Option<usize>,
    /// Few-shot seed.
    pub fewshot_seed: u64,
    /// Re-evaluate pairs already stored.
    pub force: bool,
    /// Store per-document log-likelihoods in the result JSON.
    pub log_samples: bool,
    /// Where generated programs run (code tasks); `None`: `python3` on `PATH` in the
    /// system's temporary directory.
    pub code: Option<crate::code::CodeRunner>,
}

/// Progress reports.
pub enum EvalProgress<'a> {
    /// Starting a (checkpoint, task) pair of `docs` documents.
    Start {
        /// Checkpoint.
        checkpoint: u32,
        /// Task.
        task: &'a str,
        /// Documents.
        docs: usize,
    },
    /// Documents of the current pair finished so far.
    Docs(usize),
    /// A pair finished (or was skipped).
    Done(&'a TaskResult),
    /// Something the user should know that does not stop the evaluation.
    Warning(&'a str),
}

/// One task's results at one checkpoint: what `RUN/evals/ckpt-KKKK/<task>.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    /// Checkpoint index.
    pub checkpoint: u32,
    /// Its data step.
    pub step: u64,
    /// sha256 of the checkpoint (its state.json), as in the manifest.
    pub checkpoint_sha256: String,
    /// Task name.
    pub task: String,
    /// Where the task definition came from.
    pub task_source: String,
    /// sha256 over the YAML and every data file.
    pub task_sha256: String,
    /// sha256 of the YAML text.
    pub yaml_sha256: String,
    /// sha256 of each data file, per split.
    pub data_sha256: std::collections::BTreeMap<String, Vec<String>>,
    /// Few-shot examples per document.
    pub num_fewshot: usize,
    /// Few-shot seed.
    pub fewshot_seed: u64,
    /// Document limit.
    pub limit: Option<usize>,
    /// Documents evaluated.
    pub n: usize,
    /// Metrics.
    pub metrics: Vec<MetricValue>,
    /// The task's contamination, when `glass data contamination` computed it for this
    /// task definition and the run's current training stream (`RUN/analysis/
    /// contamination.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contamination: Option<TaskFigure>,
    /// Per-document outcomes (with `--log-samples`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<Vec<Sample>>,
    /// The engine that scored.
    pub engine: String,
    /// Seconds spent scoring (metadata; not part of the result's meaning).
    pub seconds: f64,
    /// True when this pair was already stored and not recomputed.
    #[serde(skip)]
    pub skipped: bool,
}

/// `RUN/evals/ckpt-KKKK/<task>.json`, relative to the run.
pub fn result_path(checkpoint: u32, task: &str) -> String {
    format!("evals/ckpt-{checkpoint:04}/{task}.json")
}

struct Loaded {
    def: TaskDef,
    data: TaskData,
    prepared: Vec<Prepared>,
    num_fewshot: usize,
    contamination: Option<TaskFigure>,
}

/// Evaluates `opts.tasks` on the selected checkpoints of `run_dir`.
pub fn evaluate_run(
    run_dir: &Path,
    opts: &EvalOptions,
    progress: &(dyn Fn(EvalProgress) + Sync),
) -> Result<Vec<TaskResult>, EvalError> {
    evaluate_run_on(run_dir, opts, progress, &Solo)
}

/// [`evaluate_run`] as one rank of `comm`: rank 0 decides which (checkpoint, task) pairs
/// need scoring, pair `i` is scored by rank `i mod W`, and rank 0 receives every result
/// and stores it (JSON files, then SQLite rows) in the one-process order. Scores do not
/// depend on which rank computed them, so the stored results equal one process's (only
/// the `seconds` metadata differs). Ranks other than 0 return their own pairs' results.
pub fn evaluate_run_on(
    run_dir: &Path,
    opts: &EvalOptions,
    progress: &(dyn Fn(EvalProgress) + Sync),
    comm: &dyn Collective,
) -> Result<Vec<TaskResult>, EvalError> {
    let root = comm.rank() == 0;
    if opts.limit == Some(0) {
        return Err(EvalError::Invalid("--limit must be at least 1".into()));
    }
    let manifest = RunManifest::require(run_dir)?;
    if manifest.checkpoints.is_empty() {
        return Err(EvalError::Invalid(format!(
            "{}: the run has no checkpoint yet; run `glass train` first",
            run_dir.display()
        )));
    }
    let selected = opts.checkpoints.checkpoints(&manifest)?;
    let entries: Vec<_> = selected.iter().collect();
    let mut names = std::collections::BTreeSet::new();
    for t in &opts.tasks {
        if !names.insert(t.name.clone()) {
            return Err(EvalError::Invalid(format!(
                "task `{}` is listed twice",
                t.name
            )));
        }
    }
    // Prompts do not depend on the checkpoint: build them once.
    let mut tasks = Vec::new();
    for def in &opts.tasks {
        let mut def = def.clone();
        if let Some(k) = opts.num_fewshot {
            def.num_fewshot = k;
        }
        let data = def.load()?;
        let prepared = prepare(&def, &data, opts.limit, opts.fewshot_seed)?;
        let unmatched = prepared
            .iter()
            .filter(|p| {
                matches!(
                    p,
                    crate::prompts::Prepared::MultipleChoice { gold: None, .. }
                )
            })
            .count();
        if unmatched > 0 {
            progress(EvalProgress::Warning(&format!(
                "task {}: {unmatched} of {} documents have a label (doc_to_target) that is not one of their choices; they are scored as wrong, as lm-evaluation-harness does — check the data file",
                def.name,
                prepared.len()
            )));
        }
        let contamination = match task_figure(run_dir, &def.name, &data.task_sha256) {
            Figure::Current(f) => Some(f),
            Figure::Absent => None,
            Figure::Stale(why) => {
                if root {
                    progress(EvalProgress::Warning(&format!(
                        "task {}: contamination not shown: {why}",
                        def.name
                    )));
                }
                None
            }
        };
        tasks.push(Loaded {
            num_fewshot: def.num_fewshot,
            def,
            data,
            prepared,
            contamination,
        });
    }
    let generative = tasks
        .iter()
        .any(|t| t.def.output_type == crate::task::OutputType::GenerateUntil);
    let runner = match (&opts.code, generative) {
        (_, false) => None,
        (Some(r), true) => Some(r.clone()),
        (None, true) => Some(crate::code::CodeRunner::new(
            crate::code::find_python().ok_or_else(|| {
                EvalError::Invalid(
                    "code tasks run generated Python: no python3 on PATH (pass --python PATH)"
                        .into(),
                )
            })?,
        )),
    };
    if let Some(r) = &runner {
        r.check()?;
    }
    // The run's tokenizer, also for imported runs whose data is not prepared yet.
    let tok = glass_run::run_tokenizer(run_dir)?;
    let sp = tok.specials();
    let prefix_token = sp.bos.unwrap_or(sp.eos);
    // Only rank 0 touches the metrics database; it says which pairs need scoring.
    let mut metrics = if root {
        Some(Metrics::open(run_dir)?)
    } else {
        None
    };
    let mut out = Vec::new();
    let mut todo: Vec<(usize, usize)> = Vec::new();
    if let Some(metrics) = &mut metrics {
        for (e, entry) in entries.iter().enumerate() {
            for (ti, t) in tasks.iter().enumerate() {
                let prev = metrics.eval_run(entry.index, &t.def.name)?;
                let same = prev.as_ref().is_some_and(|p| {
                    p.task_sha256 == t.data.task_sha256
                        && p.num_fewshot == t.num_fewshot as u64
                        && p.fewshot_seed == opts.fewshot_seed
                        && p.limit == opts.limit.map(|l| l as u64)
                        && stored_result_ok(run_dir, p)
                });
                if same && !opts.force {
                    let p = prev.expect("checked");
                    let mut r = read_result(run_dir, &p.result_path)?;
                    if r.contamination != t.contamination {
                        // The stored result carries the figure as it is now (computed,
                        // recomputed or gone stale since it was scored).
                        r.contamination = t.contamination.clone();
                        let mut json = serde_json::to_vec_pretty(&r).expect("serializable");
                        json.push(b'\n');
                        store_result(run_dir, metrics, &r, &json)?;
                    }
                    r.samples = None;
                    r.skipped = true;
                    progress(EvalProgress::Done(&r));
                    out.push(r);
                } else {
                    todo.push((e, ti));
                }
            }
        }
    }
    if comm.size() > 1 {
        let mut b = serde_json::to_vec(&todo).expect("serializable");
        comm.broadcast_bytes(0, &mut b).map_err(dist_err)?;
        todo = serde_json::from_slice(&b)
            .map_err(|e| EvalError::Invalid(format!("rank 0 sent a malformed work list: {e}")))?;
    }
    // Pair i is scored by rank i mod W; a rank loads each checkpoint it needs once.
    let (w, me) = (comm.size(), comm.rank());
    let mut mine: Vec<(usize, Vec<u8>)> = Vec::new();
    let my_pairs: Vec<usize> = (0..todo.len()).filter(|i| i % w == me).collect();
    // Consecutive pairs of one checkpoint share its loaded model and one packing of its
    // weights (packing every weight per product would cost a fifth of the time on a
    // small model with short tasks).
    for run_of in my_pairs.chunk_by(|&a, &b| todo[a].0 == todo[b].0) {
        let model = glass_run::load_model(run_dir, Some(entries[todo[run_of[0]].0].index))?.0;
        let packed = model.packed();
        for &i in run_of {
            let (e, ti) = todo[i];
            let (entry, t) = (entries[e], &tasks[ti]);
            let scorer = Scorer {
                model: &model,
                packed: Some(&packed),
                tokenizer: &tok,
                prefix_token,
                max_length: model.cfg.max_seq_len,
            };
            progress(EvalProgress::Start {
                checkpoint: entry.index,
                task: &t.def.name,
                docs: t.prepared.len(),
            });
            let t0 = Instant::now();
            let generative = t.def.output_type == crate::task::OutputType::GenerateUntil;
            let scored = if generative {
                let runner = runner.as_ref().expect("set for generate_until tasks");
                generate_and_execute(&scorer, runner, &t.prepared, progress)?
            } else {
                scorer.score_all(&t.prepared, &|d| progress(EvalProgress::Docs(d)))?
            };
            let mut s = samples(&t.prepared, &scored);
            if t.def.metrics.contains(&crate::task::Metric::AccMutualInfo) {
                let aux = crate::results::unconditional(&t.prepared);
                let u = scorer.score_all(&aux, &|_| {})?;
                crate::results::add_mutual_info(&mut s, &u);
            }
            let seconds = t0.elapsed().as_secs_f64();
            let mv = aggregate(&t.def.metrics, &s);
            let r = TaskResult {
                checkpoint: entry.index,
                step: entry.step,
                checkpoint_sha256: entry.sha256.clone(),
                task: t.def.name.clone(),
                task_source: t.def.source.clone(),
                task_sha256: t.data.task_sha256.clone(),
                yaml_sha256: t.data.yaml_sha256.clone(),
                data_sha256: t.data.file_sha256.clone(),
                num_fewshot: t.num_fewshot,
                fewshot_seed: opts.fewshot_seed,
                limit: opts.limit,
                n: s.len(),
                metrics: mv,
                contamination: t.contamination.clone(),
                // A code task's programs and their results are always kept.
                samples: (opts.log_samples || generative).then_some(s),
                engine: glass_engine::engine_id(),
                seconds,
                skipped: false,
            };
            let mut json = serde_json::to_vec_pretty(&r).expect("serializable");
            json.push(b'\n');
            if let Some(metrics) = &mut metrics {
                store_result(run_dir, metrics, &r, &json)?;
                progress(EvalProgress::Done(&r));
            } else {
                mine.push((i, json));
            }
            out.push(r);
        }
    }
    if w > 1 {
        // Every other rank's results to rank 0, stored in the one-process order.
        let mut b = Vec::new();
        for (i, json) in &mine {
            b.extend_from_slice(&(*i as u64).to_le_bytes());
            b.extend_from_slice(&(json.len() as u64).to_le_bytes());
            b.extend_from_slice(json);
        }
        let all = comm.all_gather_bytes(&b).map_err(dist_err)?;
        if let Some(metrics) = &mut metrics {
            let mut received = Vec::new();
            for b in all.iter().skip(1) {
                let mut pos = 0;
                while pos + 16 <= b.len() {
                    let i = u64::from_le_bytes(b[pos..pos + 8].try_into().expect("8")) as usize;
                    let n =
                        u64::from_le_bytes(b[pos + 8..pos + 16].try_into().expect("8")) as usize;
                    received.push((i, b[pos + 16..pos + 16 + n].to_vec()));
                    pos += 16 + n;
                }
            }
            received.sort_by_key(|(i, _)| *i);
            for (i, json) in received {
                let (e, ti) = todo[i];
                let mut r =
                    parse_result(&json, &result_path(entries[e].index, &tasks[ti].def.name))?;
                store_result(run_dir, metrics, &r, &json)?;
                r.skipped = false;
                progress(EvalProgress::Done(&r));
                out.push(r);
            }
        }
    }
    out.sort_by_key(|r| {
        (
            entries.iter().position(|e| e.index == r.checkpoint),
            tasks.iter().position(|t| t.def.name == r.task),
        )
    });
    Ok(out)
}

/// Generates every document's completion, builds its program (the task's filter, then
/// `code_eval`'s concatenation) and runs it in the sandbox.
fn generate_and_execute(
    scorer: &Scorer,
    runner: &crate::code::CodeRunner,
    prepared: &[Prepared],
    progress: &(dyn Fn(EvalProgress) + Sync),
) -> Result<Vec<Scored>, EvalError> {
    let generated = scorer.generate_all(prepared, &|d| progress(EvalProgress::Docs(d)))?;
    let programs: Vec<String> = prepared
        .iter()
        .zip(&generated)
        .map(|(p, g)| match p {
            Prepared::Generate {
                reference,
                prediction_prefix,
                ..
            } => crate::code::program(&format!("{prediction_prefix}{}", g.completion), reference),
            _ => unreachable!("a generate_until task prepares generation requests"),
        })
        .collect();
    let results = runner.run_all(&programs)?;
    Ok(generated
        .into_iter()
        .zip(programs)
        .zip(results)
        .map(|((g, program), result)| Scored::Generated {
            completion: g.completion,
            tokens: g.tokens,
            program,
            result,
        })
        .collect())
}

fn dist_err(e: glass_dist::DistError) -> EvalError {
    EvalError::Invalid(e.to_string())
}

/// Writes one result file atomically and records it in the metrics database.
fn store_result(
    run_dir: &Path,
    metrics: &mut Metrics,
    r: &TaskResult,
    json: &[u8],
) -> Result<(), EvalError> {
    let rel = result_path(r.checkpoint, &r.task);
    let path = run_dir.join(&rel);
    // Inside the run, through no link: `evals/` (or a checkpoint's folder) replaced by a
    // link pointing elsewhere is refused, not written through.
    glass_io::open::check_write_beneath(run_dir, &path)?;
    let dir = path.parent().expect("has a parent");
    std::fs::create_dir_all(dir).map_err(|e| EvalError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    write_atomic(&path, json)?;
    let rows: Vec<EvalRow> = r
        .metrics
        .iter()
        .map(|m| EvalRow {
            checkpoint: r.checkpoint,
            task: r.task.clone(),
            metric: m.metric.clone(),
            value: m.value,
            stderr: m.stderr,
            n: m.n as u64,
        })
        .collect();
    metrics.record_eval(
        &EvalRunRow {
            checkpoint: r.checkpoint,
            task: r.task.clone(),
            task_sha256: r.task_sha256.clone(),
            num_fewshot: r.num_fewshot as u64,
            fewshot_seed: r.fewshot_seed,
            limit: r.limit.map(|l| l as u64),
            n: r.n as u64,
            result_path: rel,
            result_sha256: sha256_hex(json),
            seconds: r.seconds,
            wall_time: glass_run::metrics::now(),
        },
        &rows,
    )?;
    Ok(())
}

fn stored_result_ok(run_dir: &Path, p: &EvalRunRow) -> bool {
    glass_io::open::read_beneath(
        run_dir,
        &run_dir.join(&p.result_path),
        glass_io::open::MAX_RECORD_BYTES,
    )
    .is_ok_and(|b| sha256_hex(&b) == p.result_sha256)
}

#[derive(serde::Deserialize)]
struct StoredResult {
    checkpoint: u32,
    step: u64,
    checkpoint_sha256: String,
    task: String,
    task_source: String,
    task_sha256: String,
    yaml_sha256: String,
    data_sha256: std::collections::BTreeMap<String, Vec<String>>,
    num_fewshot: usize,
    fewshot_seed: u64,
    limit: Option<usize>,
    n: usize,
    metrics: Vec<StoredMetric>,
    #[serde(default)]
    contamination: Option<TaskFigure>,
    #[serde(default)]
    samples: Option<Vec<Sample>>,
    engine: String,
    seconds: f64,
}

#[derive(serde::Deserialize)]
struct StoredMetric {
    metric: String,
    value: f64,
    stderr: Option<f64>,
    n: usize,
}

fn read_result(run_dir: &Path, rel: &str) -> Result<TaskResult, EvalError> {
    let path: PathBuf = run_dir.join(rel);
    let bytes = glass_io::open::read_beneath(run_dir, &path, glass_io::open::MAX_RECORD_BYTES)?;
    parse_result(&bytes, &path.display().to_string())
}

/// A stored result file's fields; `what` labels errors.
fn parse_result(bytes: &[u8], what: &str) -> Result<TaskResult, EvalError> {
    let s: StoredResult = serde_json::from_slice(bytes)
        .map_err(|e| EvalError::Invalid(format!("{what}: unreadable result: {e}")))?;
    Ok(TaskResult {
        checkpoint: s.checkpoint,
        step: s.step,
        checkpoint_sha256: s.checkpoint_sha256,
        task: s.task,
        task_source: s.task_source,
        task_sha256: s.task_sha256,
        yaml_sha256: s.yaml_sha256,
        data_sha256: s.data_sha256,
        num_fewshot: s.num_fewshot,
        fewshot_seed: s.fewshot_seed,
        limit: s.limit,
        n: s.n,
        metrics: s
            .metrics
            .into_iter()
            .map(|m| MetricValue {
                metric: m.metric,
                value: m.value,
                stderr: m.stderr,
                n: m.n,
            })
            .collect(),
        contamination: s.contamination,
        samples: s.samples,
        engine: s.engine,
        seconds: s.seconds,
        skipped: true,
    })
}
