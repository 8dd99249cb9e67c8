//! Routes: the pages, the embedded assets and the JSON API (`docs/serve.md`). Every
//! handler looks its run up in the fixed [`Runs`] table and reads with the run
//! libraries' own readers on a blocking thread; nothing here writes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use glass_run::metrics::{StepColumn, StepSeries};
use glass_run::{Metrics, RunManifest};
use serde::Serialize;
use serde_json::{json, Value};

use crate::assets;
use crate::downsample::{keep, Spacing};
use crate::error::ApiError;
use crate::internals::{self, uint, InspectRequest};
use crate::runs::{Runs, ServedRun};

type Shared = Arc<Runs>;
type Params = Query<HashMap<String, String>>;
type ApiResult<T> = std::result::Result<T, ApiError>;

/// Most buckets a curve may ask for (a 8K screen's width).
pub const MAX_WIDTH: usize = 8192;
/// Longest text the trace box accepts, in bytes.
pub const MAX_TRACE_BYTES: usize = 16 * 1024;

/// The whole service over `runs`: pages, `/assets/…` and `/api/…`.
pub fn router(runs: Runs) -> Router {
    let state: Shared = Arc::new(runs);
    Router::new()
        .route("/", get(index_page))
        .route("/runs/{id}", get(run_page))
        .route("/assets/{name}", get(asset))
        .route("/api/runs", get(api_runs))
        .route("/api/runs/{id}", get(api_run))
        .route("/api/runs/{id}/series/{metric}", get(api_series))
        .route("/api/runs/{id}/events", get(api_events))
        .route("/api/runs/{id}/checkpoints", get(api_checkpoints))
        .route("/api/runs/{id}/checkpoints/{k}/verify", get(api_verify))
        .route("/api/runs/{id}/evals", get(api_evals))
        .route("/api/runs/{id}/memorization", get(api_memorization))
        .route("/api/runs/{id}/data", get(api_data))
        .route("/api/runs/{id}/trace", get(api_trace))
        .route("/api/runs/{id}/dynamics", get(api_dynamics))
        .route("/api/runs/{id}/inspect", get(api_inspect))
        .route("/api/runs/{id}/contamination", get(api_contamination))
        .fallback(|| async { ApiError::not_found("no such page") })
        .with_state(state)
}

/// Headers every page gets: scripts and styles from this server only.
fn html(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn index_page(State(runs): State<Shared>) -> Response {
    match runs.list() {
        [one] => Redirect::to(&format!("/runs/{}", one.id)).into_response(),
        _ => html(assets::INDEX_HTML),
    }
}

async fn run_page(State(runs): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    match runs.get(&id) {
        Some(_) => html(assets::RUN_HTML),
        None => ApiError::not_found(format!("no run `{id}` is served")).into_response(),
    }
}

async fn asset(UrlPath(name): UrlPath<String>) -> Response {
    match assets::get(&name) {
        Some(a) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(a.content_type),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            a.bytes,
        )
            .into_response(),
        None => ApiError::not_found("no such asset").into_response(),
    }
}

/// Runs `f` on the blocking pool with the run `id`, and answers with its JSON.
async fn with_run<T, F>(runs: Shared, id: String, f: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&ServedRun) -> ApiResult<T> + Send + 'static,
{
    let Some(run) = runs.get(&id).cloned() else {
        return ApiError::not_found(format!("no run `{id}` is served")).into_response();
    };
    match tokio::task::spawn_blocking(move || f(&run)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => ApiError::run(format!("internal error: {e}")).into_response(),
    }
}

fn open_metrics(run: &ServedRun) -> ApiResult<Metrics> {
    Metrics::open_read_only(&run.dir).map_err(ApiError::run)
}

fn manifest(run: &ServedRun) -> ApiResult<Option<RunManifest>> {
    RunManifest::load(&run.dir).map_err(ApiError::run)
}

/// The served id of the run `run_id` (a parent or a branch), if it is served.
fn served_ids(runs: &Runs) -> HashMap<String, String> {
    runs.list()
        .iter()
        .filter_map(|r| {
            RunManifest::load(&r.dir)
                .ok()
                .flatten()
                .map(|m| (m.run_id, r.id.clone()))
        })
        .collect()
}

/// Lineage of every served run: (its manifest's parent with the parent's served id).
fn lineage(runs: &Runs) -> Vec<Value> {
    let ids = served_ids(runs);
    runs.list()
        .iter()
        .map(|r| {
            let m = RunManifest::load(&r.dir);
            let mut o = json!({ "id": r.id, "dir": r.dir.display().to_string() });
            match m {
                Ok(Some(m)) => {
                    o["run_id"] = m.run_id.clone().into();
                    o["checkpoints"] = m.checkpoints.len().into();
                    if let Some(l) = m.checkpoints.last() {
                        o["last_checkpoint"] =
                            json!({"index": l.index, "step": l.step, "tokens": l.tokens});
                    }
                    if let Some(p) = &m.parent {
                        o["parent"] = json!({
                            "run_id": p.run_id, "run_dir": p.run_dir, "checkpoint": p.checkpoint,
                            "step": p.step, "mode": p.mode.as_str(),
                            "checkpoint_sha256": p.checkpoint_sha256,
                            "served_id": ids.get(&p.run_id),
                        });
                    }
                }
                Ok(None) => o["run_id"] = Value::Null,
                Err(e) => o["error"] = e.to_string().into(),
            }
            o
        })
        .collect()
}

async fn api_runs(State(runs): State<Shared>) -> Response {
    let r = runs.clone();
    match tokio::task::spawn_blocking(move || lineage(&r)).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => ApiError::run(format!("internal error: {e}")).into_response(),
    }
}

async fn api_run(State(runs): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    let all = runs.clone();
    with_run(runs, id, move |run| {
        let lin = lineage(&all);
        let me = lin
            .iter()
            .find(|o| o["id"] == run.id.as_str())
            .cloned()
            .unwrap_or(Value::Null);
        let branches: Vec<Value> = lin
            .iter()
            .filter(|o| o["parent"]["served_id"] == run.id.as_str())
            .map(|o| json!({"id": o["id"], "checkpoint": o["parent"]["checkpoint"], "step": o["parent"]["step"], "mode": o["parent"]["mode"]}))
            .collect();
        let mut o = json!({
            "id": run.id, "dir": run.dir.display().to_string(), "run": me, "branches": branches,
            "has_index": has_index(&run.dir),
        });
        match open_metrics(run).and_then(|m| {
            let ext = m.step_extent().map_err(ApiError::run)?;
            let ck = m.checkpoints().map_err(ApiError::run)?.len();
            let ev = if m.has_table("evals").map_err(ApiError::run)? {
                m.evals().map_err(ApiError::run)?.len()
            } else {
                0
            };
            let memo = m.memorization_means().map_err(ApiError::run)?.len();
            Ok((ext, ck, ev, memo))
        }) {
            Ok((ext, ck, ev, memo)) => {
                o["steps"] = ext.map_or(Value::Null, |(a, b, n)| json!({"first": a, "last": b, "count": n}));
                o["validated_checkpoints"] = ck.into();
                o["eval_rows"] = ev.into();
                o["memorization_checkpoints"] = memo.into();
            }
            Err(e) => o["metrics_error"] = e.msg.into(),
        }
        Ok(o)
    })
    .await
}

/// One curve as the API returns it.
#[derive(Debug, Serialize)]
pub struct SeriesReply {
    /// Metric name.
    pub metric: String,
    /// Points stored in the range.
    pub raw_points: usize,
    /// Whether `steps`/`tokens`/`values` are a per-bucket selection of them.
    pub downsampled: bool,
    /// Steps.
    pub steps: Vec<u64>,
    /// Tokens at each step.
    pub tokens: Vec<u64>,
    /// Values (`null`: non-finite).
    pub values: Vec<f64>,
}

/// The names `series/{metric}` accepts: per-step columns, then per-checkpoint ones.
pub const METRICS: [&str; 6] = [
    "loss",
    "lr",
    "grad_norm",
    "tokens_per_s",
    "val_loss",
    "val_bpb",
];

fn series(run: &ServedRun, metric: &str, q: &HashMap<String, String>) -> ApiResult<SeriesReply> {
    let from = uint(q, "from", Some(0), i64::MAX as u64)?;
    let to = uint(q, "to", Some(i64::MAX as u64), i64::MAX as u64)?;
    if from > to {
        return Err(ApiError::bad(format!(
            "`from` ({from}) is after `to` ({to})"
        )));
    }
    let width = uint(q, "width", Some(0), MAX_WIDTH as u64)? as usize;
    let spacing = match q.get("scale").map(String::as_str) {
        None | Some("linear") => Spacing::Linear,
        Some("log") => Spacing::Log,
        Some(s) => {
            return Err(ApiError::bad(format!(
                "`scale` is linear or log, not `{s}`"
            )))
        }
    };
    let (all, a, b) = if let Some(c) = StepColumn::from_name(metric) {
        let all = run.cache.column(&run.dir, c).map_err(ApiError::run)?;
        let a = all.steps.partition_point(|&x| x < from);
        let b = all.steps.partition_point(|&x| x <= to);
        (all, a, b)
    } else if metric == "val_loss" || metric == "val_bpb" {
        let m = open_metrics(run)?;
        let mut s = StepSeries::default();
        for c in m.checkpoints().map_err(ApiError::run)? {
            let v = if metric == "val_loss" {
                c.val_loss
            } else {
                c.val_bpb
            };
            if (from..=to).contains(&c.step) {
                s.steps.push(c.step);
                s.tokens.push(c.tokens);
                s.values.push(v.unwrap_or(f64::NAN));
            }
        }
        let n = s.steps.len();
        (Arc::new(s), 0, n)
    } else {
        return Err(ApiError::not_found(format!(
            "no series `{metric}`; one of {}",
            METRICS.join(", ")
        )));
    };
    // Slices of the cached columns: only the points sent are copied.
    let (steps, tokens, values) = (&all.steps[a..b], &all.tokens[a..b], &all.values[a..b]);
    let raw_points = steps.len();
    if width == 0 || raw_points <= 4 * width {
        return Ok(SeriesReply {
            metric: metric.into(),
            raw_points,
            downsampled: false,
            steps: steps.to_vec(),
            tokens: tokens.to_vec(),
            values: values.to_vec(),
        });
    }
    let k = keep(steps, values, width, spacing);
    Ok(SeriesReply {
        metric: metric.into(),
        raw_points,
        downsampled: true,
        steps: k.iter().map(|&i| steps[i]).collect(),
        tokens: k.iter().map(|&i| tokens[i]).collect(),
        values: k.iter().map(|&i| values[i]).collect(),
    })
}

async fn api_series(
    State(runs): State<Shared>,
    UrlPath((id, metric)): UrlPath<(String, String)>,
    Query(q): Params,
) -> Response {
    let csv = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(f) => {
            return ApiError::bad(format!("`format` is json or csv, not `{f}`")).into_response()
        }
    };
    if !csv {
        return with_run(runs, id, move |run| series(run, &metric, &q)).await;
    }
    let Some(run) = runs.get(&id).cloned() else {
        return ApiError::not_found(format!("no run `{id}` is served")).into_response();
    };
    let name = format!("{}-{metric}.csv", run.id);
    match tokio::task::spawn_blocking(move || series(&run, &metric, &q)).await {
        Ok(Ok(s)) => {
            let mut out = format!("step,tokens,{}\n", s.metric);
            for i in 0..s.steps.len() {
                let v = s.values[i];
                let v = if v.is_finite() {
                    v.to_string()
                } else {
                    String::new()
                };
                out.push_str(&format!("{},{},{v}\n", s.steps[i], s.tokens[i]));
            }
            let disp = format!("attachment; filename=\"{name}\"");
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                    (header::CONTENT_DISPOSITION, disp),
                ],
                out,
            )
                .into_response()
        }
        Ok(Err(e)) => e.into_response(),
        Err(e) => ApiError::run(format!("internal error: {e}")).into_response(),
    }
}

async fn api_events(State(runs): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    with_run(runs, id, |run| {
        let m = open_metrics(run)?;
        let mut out = Vec::new();
        for e in m.events().map_err(ApiError::run)? {
            let tokens = match e.step {
                Some(s) => m.tokens_at(s).map_err(ApiError::run)?,
                None => None,
            };
            let detail: Value = serde_json::from_str(&e.detail).unwrap_or(Value::String(e.detail));
            out.push(json!({
                "id": e.id, "step": e.step, "tokens": tokens, "kind": e.kind,
                "detail": detail, "wall_time": e.wall_time,
            }));
        }
        Ok(out)
    })
    .await
}

fn has_index(dir: &Path) -> bool {
    dir.join(glass_analysis::index::INDEX_MANIFEST).is_file()
}

fn quote(p: &Path) -> String {
    let s = p.display().to_string();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

async fn api_checkpoints(State(runs): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    let all = runs.clone();
    with_run(runs, id, move |run| {
        let Some(m) = manifest(run)? else {
            return Ok(vec![]);
        };
        let (val, evals) = match Metrics::open_read_only(&run.dir) {
            Ok(mt) => {
                let val: BTreeMap<u32, (Option<f64>, Option<f64>)> = mt
                    .checkpoints()
                    .map_err(ApiError::run)?
                    .into_iter()
                    .map(|c| (c.checkpoint, (c.val_loss, c.val_bpb)))
                    .collect();
                let ev = if mt.has_table("evals").map_err(ApiError::run)? {
                    mt.evals().map_err(ApiError::run)?
                } else {
                    vec![]
                };
                (val, ev)
            }
            Err(_) => (BTreeMap::new(), vec![]),
        };
        let lin = lineage(&all);
        let dir = quote(&run.dir);
        let mut out = Vec::new();
        let mut prev: Option<String> = m.parent.as_ref().map(|p| p.checkpoint_sha256.clone());
        for c in &m.checkpoints {
            let (_, problems) = glass_run::integrity::entry_problems(&run.dir, &m, c, prev.as_deref());
            prev = Some(c.sha256.clone());
            let k = c.index;
            let v = val.get(&k).copied().unwrap_or((c.val_loss, None));
            let branches: Vec<&Value> = lin
                .iter()
                .filter(|o| o["parent"]["served_id"] == run.id.as_str() && o["parent"]["checkpoint"] == k)
                .map(|o| &o["id"])
                .collect();
            out.push(json!({
                "index": k, "step": c.step, "tokens": c.tokens,
                "val_loss": v.0, "val_bpb": v.1, "sha256": c.sha256,
                "bytes": c.files.iter().map(|f| f.bytes).sum::<u64>(),
                "state": if problems.is_empty() { "state.json matches the manifest".to_string() } else {
                    problems.iter().map(|p| format!("{}: {}", p.path, p.problem)).collect::<Vec<_>>().join("; ")
                },
                "state_ok": problems.is_empty(),
                "evals": evals.iter().filter(|e| e.checkpoint == k).collect::<Vec<_>>(),
                "branches": branches,
                "commands": {
                    "verify": format!("glass verify {dir} --replay {k}"),
                    "export": format!("glass export hf {dir} OUT --checkpoint {k}"),
                    "replay": format!("glass verify {dir} --replay {k}"),
                    "branch": format!("glass init NEW --from {dir} --checkpoint {k} && glass train NEW --from {dir} --checkpoint {k} --continue"),
                    "generate": format!("glass generate {dir} --checkpoint {k} --prompt TEXT"),
                },
            }));
        }
        Ok(out)
    })
    .await
}

/// Longest a checkpoint verification may run before it is stopped (a 7B checkpoint with
/// its optimizer state is about 84 GB: about a minute per core at SHA-NI speed).
pub const VERIFY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// One verification hashes at a time: the dashboard never spends more than one
/// verification's worth of CPU and disk, however many requests arrive.
static VERIFY_SLOT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Checkpoints verified by this process: (run dir, checkpoint) → (entry hash, file
/// identities when hashed). A request for an unchanged checkpoint is answered from it
/// without hashing again. In memory only.
type Verified = HashMap<(std::path::PathBuf, u32), (String, Vec<glass_io::open::FileIdentity>)>;
fn verified() -> &'static std::sync::Mutex<Verified> {
    static V: std::sync::OnceLock<std::sync::Mutex<Verified>> = std::sync::OnceLock::new();
    V.get_or_init(Default::default)
}

/// Sets the flag when dropped: the handler's future is dropped when the client goes away
/// (or the deadline passes), and the hashing thread stops at its next block.
struct StopOnDrop(Arc<AtomicBool>);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `GET /api/runs/{id}/checkpoints/{k}/verify`: re-hashes checkpoint `k`'s files, each
/// opened as a regular file beneath the run and compared by length before it is read.
/// The work is bounded: one verification at a time, stopped when the client disconnects
/// or after [`VERIFY_DEADLINE`], and an unchanged checkpoint verified before is not hashed
/// again.
async fn api_verify(
    State(runs): State<Shared>,
    UrlPath((id, k)): UrlPath<(String, String)>,
) -> Response {
    let k: u32 = match k.parse() {
        Ok(k) => k,
        Err(_) => return ApiError::bad(format!("`{k}` is not a checkpoint index")).into_response(),
    };
    let Some(run) = runs.get(&id).cloned() else {
        return ApiError::not_found(format!("no run `{id}` is served")).into_response();
    };
    let Ok(_slot) = VERIFY_SLOT.acquire().await else {
        return ApiError::run("the verifier is shut down").into_response();
    };
    let stop = Arc::new(AtomicBool::new(false));
    let _guard = StopOnDrop(stop.clone());
    let work = tokio::task::spawn_blocking(move || -> ApiResult<Value> {
        let Some(m) = manifest(&run)? else {
            return Err(ApiError::not_found("the run has no checkpoint yet"));
        };
        if m.checkpoint(k).is_err() {
            return Err(ApiError::not_found(format!("no checkpoint {k}")));
        }
        let t = std::time::Instant::now();
        let key = (run.dir.clone(), k);
        let r = glass_run::integrity::checked_entry(&run.dir, &m, k).and_then(|(e, _)| {
            let now = glass_run::checkpoint::file_identities(&run.dir, &e.files)?;
            let cached = verified()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .is_some_and(|(sha, ids)| *sha == e.sha256 && *ids == now);
            if !cached {
                let ids = glass_run::checkpoint::verify_files_until(&run.dir, &e.files, &stop)?;
                verified()
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.clone(), (e.sha256.clone(), ids));
            }
            Ok((e, cached))
        });
        Ok(match r {
            Ok((e, cached)) => json!({
                "index": k, "ok": true, "files": e.files.len(),
                "bytes": e.files.iter().map(|f| f.bytes).sum::<u64>(),
                "seconds": t.elapsed().as_secs_f64(), "cached": cached,
            }),
            Err(e) => {
                verified()
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                json!({"index": k, "ok": false, "problem": e.to_string()})
            }
        })
    });
    match tokio::time::timeout(VERIFY_DEADLINE, work).await {
        Ok(Ok(Ok(v))) => Json(v).into_response(),
        Ok(Ok(Err(e))) => e.into_response(),
        Ok(Err(e)) => ApiError::run(format!("internal error: {e}")).into_response(),
        Err(_) => ApiError::run(format!(
            "verification stopped after {} s; run `glass verify {}` instead",
            VERIFY_DEADLINE.as_secs(),
            runs.get(&id)
                .map_or(String::new(), |r| r.dir.display().to_string())
        ))
        .into_response(),
    }
}

/// The evaluations of a run over a suite's data: each imported checkpoint's results, kept
/// in its own run (`glass eval RUN` stores them there), under the suite's checkpoint
/// number and step.
fn suite_evals(run: &ServedRun) -> ApiResult<Value> {
    let list = if run
        .dir
        .join(glass_analysis::checkpoints::SUITE_CHECKPOINTS)
        .exists()
    {
        glass_analysis::checkpoints::run_checkpoints(&run.dir).map_err(ApiError::run)?
    } else {
        Vec::new()
    };
    let mut ck = Vec::new();
    let mut rows = Vec::new();
    for c in &list {
        ck.push(json!({"checkpoint": c.index, "step": c.step, "tokens": null}));
        let dir = c.model_run();
        let own = RunManifest::load(dir)
            .map_err(ApiError::run)?
            .and_then(|m| m.checkpoints.last().map(|k| k.index));
        let Ok(m) = Metrics::open_read_only(dir) else {
            continue;
        };
        if !m.has_table("evals").map_err(ApiError::run)? {
            continue;
        }
        for mut r in m.evals().map_err(ApiError::run)? {
            if Some(r.checkpoint) == own {
                r.checkpoint = c.index;
                rows.push(r);
            }
        }
    }
    Ok(json!({"checkpoints": ck, "rows": rows}))
}

async fn api_evals(State(runs): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    with_run(runs, id, |run| {
        if glass_data::external::is_external(&run.dir) && !run.dir.join("manifest.json").exists() {
            return suite_evals(run);
        }
        let m = open_metrics(run)?;
        let ck: Vec<Value> = m
            .checkpoints()
            .map_err(ApiError::run)?
            .into_iter()
            .map(|c| json!({"checkpoint": c.checkpoint, "step": c.step, "tokens": c.tokens}))
            .collect();
        let rows = if m.has_table("evals").map_err(ApiError::run)? {
            m.evals().map_err(ApiError::run)?
        } else {
            vec![]
        };
        Ok(json!({"checkpoints": ck, "rows": rows}))
    })
    .await
}

async fn api_memorization(State(runs): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    with_run(runs, id, |run| {
        let rows = glass_analysis::memorization::stored(&run.dir).map_err(ApiError::run)?;
        Ok(json!({"rows": rows}))
    })
    .await
}

async fn api_data(
    State(runs): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Params,
) -> Response {
    with_run(runs, id, move |run| {
        let step = uint(&q, "step", None, u64::MAX)?;
        let world_size = uint(&q, "world_size", Some(1), 1 << 20)? as usize;
        let rank = uint(&q, "rank", Some(0), 1 << 20)? as usize;
        if world_size == 0 || rank >= world_size {
            return Err(ApiError::bad(format!(
                "`rank` must be below `world_size` ({rank} of {world_size})"
            )));
        }
        if glass_data::external::is_external(&run.dir) {
            // Data read in place (`glass import pythia|olmo|crystalcoder`): one segment per row.
            let n_steps = glass_data::external::ExternalManifest::load(&run.dir)
                .map_err(ApiError::run)?
                .n_steps;
            if step >= n_steps {
                return Err(ApiError::not_found(format!(
                    "step {step} is beyond the run's {n_steps} steps"
                )));
            }
            let batch = glass_data::inspect::show(&run.dir, step, rank, world_size)
                .map_err(|e| ApiError::bad(e.to_string()))?;
            let pieces: Vec<Vec<String>> =
                batch.rows.iter().map(|r| vec![r.text.clone()]).collect();
            return Ok(json!({"batch": batch, "segment_text": pieces, "n_steps": n_steps}));
        }
        let data = glass_data::reader::PreparedData::open(&run.dir).map_err(ApiError::run)?;
        data.rank_rows(rank, world_size)
            .map_err(|e| ApiError::bad(e.to_string()))?;
        if step >= data.n_steps() {
            return Err(ApiError::not_found(format!(
                "step {step} is beyond the run's {} steps",
                data.n_steps()
            )));
        }
        let batch =
            glass_data::inspect::show(&run.dir, step, rank, world_size).map_err(ApiError::run)?;
        // Each segment's own text, so the page can colour documents (a piece may cut
        // a UTF-8 character; it then shows U+FFFD, the row's `text` stays exact).
        let tok = data.tokenizer().map_err(ApiError::run)?;
        let mut pieces = Vec::new();
        for r in &batch.rows {
            let mut row = Vec::new();
            for s in &r.segments {
                let (a, b) = (s.pos as usize, (s.pos + s.len) as usize);
                let ids = r.ids.get(a..b.min(r.ids.len())).unwrap_or(&[]);
                row.push(tok.decode(ids).map_err(ApiError::run)?);
            }
            pieces.push(row);
        }
        Ok(json!({"batch": batch, "segment_text": pieces, "n_steps": data.n_steps()}))
    })
    .await
}

async fn api_trace(
    State(runs): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Params,
) -> Response {
    with_run(runs, id, move |run| {
        let text = q.get("text").cloned().unwrap_or_default();
        if text.trim().is_empty() {
            return Err(ApiError::bad("`text` is empty"));
        }
        if text.len() > MAX_TRACE_BYTES {
            return Err(ApiError::bad(format!(
                "`text` is longer than {MAX_TRACE_BYTES} bytes"
            )));
        }
        let min_tokens = uint(&q, "min_tokens", Some(8), 4096)?.max(1) as usize;
        let max_occurrences = uint(&q, "max_occurrences", Some(10), 1000)? as usize;
        let checkpoint = match q.get("checkpoint").map(String::as_str) {
            None | Some("") => None,
            Some(c) if glass_data::external::is_external(&run.dir) => {
                // A suite's imported checkpoints, numbered in step order.
                let k = match c {
                    "latest" => None,
                    k => Some(k.parse::<u32>().map_err(|_| {
                        ApiError::bad(format!("`checkpoint` is `{k}`: give a number or `latest`"))
                    })?),
                };
                let e = glass_analysis::checkpoints::resolve_checkpoint(&run.dir, k)
                    .map_err(ApiError::run)?;
                Some((e.index, e.step))
            }
            Some(c) => {
                let m = internals::require_manifest(run)?;
                let e = internals::resolve_checkpoint(&m, c)?;
                Some((e.index, e.step))
            }
        };
        if !has_index(&run.dir) {
            return Err(ApiError::not_found(format!(
                "the run has no index; build it with `glass index {}`",
                quote(&run.dir)
            )));
        }
        let tok = glass_analysis::trace::run_tokenizer(&run.dir).map_err(ApiError::run)?;
        let ids = tok.encode(&text).map_err(ApiError::run)?;
        if ids.is_empty() {
            return Err(ApiError::bad("the text encodes to no tokens"));
        }
        let index = glass_analysis::Index::open(&run.dir).map_err(ApiError::run)?;
        let opts = glass_analysis::trace::TraceOptions {
            min_tokens,
            max_occurrences,
            rank: glass_analysis::trace::Rank::Length,
            checkpoint,
        };
        glass_analysis::trace::trace(&run.dir, &index, &tok, &text, &ids, &opts)
            .map_err(ApiError::run)
    })
    .await
}

async fn api_dynamics(
    State(runs): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Params,
) -> Response {
    with_run(runs, id, move |run| internals::dynamics(run, &q)).await
}

async fn api_contamination(State(runs): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    with_run(runs, id, internals::contamination).await
}

/// One inspection at a time: a request's work is bounded by its token count
/// ([`internals::MAX_INSPECT_TOKENS`]), and this bounds the dashboard's CPU and memory to
/// one of them (plus the cached models) however many requests arrive.
static INSPECT_SLOT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// `GET /api/runs/{id}/inspect`: the query is checked before the request waits for the
/// slot; the slot is held by the computing thread until it ends, so a client that goes
/// away frees nothing early and starts nothing new.
async fn api_inspect(
    State(runs): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Params,
) -> Response {
    let Some(run) = runs.get(&id).cloned() else {
        return ApiError::not_found(format!("no run `{id}` is served")).into_response();
    };
    let req = match InspectRequest::parse(&q) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Ok(slot) = INSPECT_SLOT.acquire().await else {
        return ApiError::run("the inspector is shut down").into_response();
    };
    match tokio::task::spawn_blocking(move || {
        let _slot = slot;
        internals::inspect(&run, &req)
    })
    .await
    {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => ApiError::run(format!("internal error: {e}")).into_response(),
    }
}

/// Starts serving `runs` on `listener` until the process ends; on a loopback address,
/// only to requests that name a loopback host ([`loopback_hosts_only`]).
pub async fn serve(listener: tokio::net::TcpListener, runs: Runs) -> std::io::Result<()> {
    let r = router(runs);
    let r = if listener.local_addr()?.ip().is_loopback() {
        loopback_hosts_only(r)
    } else {
        r
    };
    axum::serve(listener, r).await
}

/// Refuses (403) requests whose `Host` is not a loopback name, so that a web page
/// elsewhere cannot read a loopback server through DNS rebinding.
pub fn loopback_hosts_only(r: Router) -> Router {
    r.layer(axum::middleware::from_fn(
        |req: axum::extract::Request, next: axum::middleware::Next| async move {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if is_loopback_host(host) {
                next.run(req).await
            } else {
                ApiError {
                    status: axum::http::StatusCode::FORBIDDEN,
                    msg: format!("host `{host}` is not this loopback server"),
                }
                .into_response()
            }
        },
    ))
}

/// Whether a `Host` header names a loopback address (`localhost`, `127.x.y.z`, `[::1]`),
/// with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => ip,
            _ => return false,
        }
    } else {
        host.split(':').next().unwrap_or("")
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8360",
            "127.0.0.1:8360",
            "127.1.2.3",
            "[::1]:80",
            "[::1]",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "",
            "evil.example",
            "evil.example:8360",
            "127.0.0.1.evil.example",
            "10.0.0.1:8360",
            "[::2]:1",
            "[::1]x",
            "localhost.evil",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
