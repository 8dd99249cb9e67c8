//! The model-internals views' answers: `glass analyze dynamics`'s stored rows, the logit
//! lens and an attention map of a prompt at a checkpoint (glass-analysis's `inspect`, the
//! code behind `glass inspect`), and the per-task contamination figures of
//! `analysis/contamination.json`. Plain functions of a served run; `api.rs` routes to
//! them and bounds their concurrency.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use glass_analysis::contamination::{
    ContaminationReport, CONTAMINATION_FILE, CONTAMINATION_FORMAT,
};
use glass_analysis::inspect::InspectOptions;
use glass_analysis::AnalysisError;
use glass_run::manifest::CheckpointEntry;
use glass_run::{Metrics, RunManifest};
use serde_json::{json, Value};

use crate::cache::ModelCache;
use crate::error::ApiError;
use crate::runs::ServedRun;

type ApiResult<T> = std::result::Result<T, ApiError>;

/// Longest prompt `…/inspect` accepts, in bytes (checked before it is tokenized).
pub const MAX_INSPECT_BYTES: usize = 8 * 1024;
/// Most tokens `…/inspect` runs, whatever the model's context: the lens costs
/// `(layers + 1) · tokens · d_model · vocab` multiply-adds and its reply grows with
/// `(layers + 1) · tokens · top_k`, so this bounds one request's work and answer.
pub const MAX_INSPECT_TOKENS: usize = 512;
/// Most lens candidates per position.
pub const MAX_TOP_K: u64 = 20;
/// Largest `analysis/contamination.json` read, in bytes.
pub const MAX_CONTAMINATION_BYTES: u64 = 64 << 20;

/// The models `…/inspect` loaded, shared by every run served.
pub static MODELS: ModelCache = ModelCache::new();

/// A non-negative integer parameter (absent: `default`), at most `max`.
pub(crate) fn uint(
    q: &HashMap<String, String>,
    key: &str,
    default: Option<u64>,
    max: u64,
) -> ApiResult<u64> {
    let Some(v) = q.get(key) else {
        return default.ok_or_else(|| ApiError::bad(format!("`{key}` is required")));
    };
    let n: u64 = v
        .parse()
        .map_err(|_| ApiError::bad(format!("`{key}` must be an integer >= 0, not `{v}`")))?;
    if n > max {
        return Err(ApiError::bad(format!(
            "`{key}` must be at most {max}, not {n}"
        )));
    }
    Ok(n)
}

/// The run's manifest, or a 404 when it has published no checkpoint.
pub(crate) fn require_manifest(run: &ServedRun) -> ApiResult<RunManifest> {
    RunManifest::load(&run.dir)
        .map_err(ApiError::run)?
        .filter(|m| !m.checkpoints.is_empty())
        .ok_or_else(|| ApiError::not_found("the run has no checkpoint yet"))
}

/// The checkpoint `spec` names (`K` or `latest`): 400 when it is neither, 404 when the
/// run has no such checkpoint.
pub(crate) fn resolve_checkpoint<'a>(
    m: &'a RunManifest,
    spec: &str,
) -> ApiResult<&'a CheckpointEntry> {
    let c: glass_run::Checkpoint = spec
        .parse()
        .map_err(|_| ApiError::bad(format!("`checkpoint` is K or latest, not `{spec}`")))?;
    c.resolve(m)
        .map_err(|_| match (m.checkpoints.first(), m.checkpoints.last()) {
            (Some(a), Some(b)) => ApiError::not_found(format!(
                "no checkpoint {c}: the run's checkpoints are {}..={} (or latest)",
                a.index, b.index
            )),
            _ => ApiError::not_found("the run has no checkpoint yet"),
        })
}

/// A `kind` filter: comma-separated kinds, each exact or a prefix ending in `*`.
fn kind_filter(q: &HashMap<String, String>) -> ApiResult<Option<Vec<String>>> {
    let Some(v) = q.get("kind") else {
        return Ok(None);
    };
    let list: Vec<String> = v.split(',').map(str::to_string).collect();
    if list.len() > 32
        || list.iter().any(|k| {
            k.is_empty()
                || k.len() > 64
                || !k
                    .trim_end_matches('*')
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                || k.matches('*').count() > usize::from(k.ends_with('*'))
        })
    {
        return Err(ApiError::bad(format!(
            "`kind` is a comma-separated list of kinds such as induction or source_* (letters, digits, _; a trailing * matches a prefix), not `{v}`"
        )));
    }
    Ok(Some(list))
}

fn kind_matches(filter: &[String], kind: &str) -> bool {
    filter.iter().any(|f| match f.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => f == kind,
    })
}

/// `GET …/dynamics[?kind=K,K2*]`: every stored row of `glass analyze dynamics` (and of
/// any other writer of the `dynamics` table, such as the per-source losses), the
/// checkpoints' steps, and how many rows each kind has.
pub fn dynamics(run: &ServedRun, q: &HashMap<String, String>) -> ApiResult<Value> {
    let filter = kind_filter(q)?;
    // A run not trained yet has no database: no rows, not an error.
    let m = if run.dir.join(glass_run::metrics::METRICS_FILE).exists() {
        Some(Metrics::open_read_only(&run.dir).map_err(ApiError::run)?)
    } else {
        None
    };
    let rows = match &m {
        Some(m) => m.dynamics().map_err(ApiError::run)?,
        None => vec![],
    };
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        *kinds.entry(r.kind.as_str()).or_default() += 1;
    }
    let kinds = json!(kinds);
    let rows: Vec<_> = match &filter {
        Some(f) => rows
            .into_iter()
            .filter(|r| kind_matches(f, &r.kind))
            .collect(),
        None => rows,
    };
    // Steps from the manifest (every published checkpoint), else from the metrics.
    let checkpoints: Vec<Value> = match RunManifest::load(&run.dir).map_err(ApiError::run)? {
        Some(man) => man
            .checkpoints
            .iter()
            .map(|c| json!({"checkpoint": c.index, "step": c.step, "tokens": c.tokens}))
            .collect(),
        None => match &m {
            Some(m) => m
                .checkpoints()
                .map_err(ApiError::run)?
                .iter()
                .map(|c| json!({"checkpoint": c.checkpoint, "step": c.step, "tokens": c.tokens}))
                .collect(),
            None => vec![],
        },
    };
    Ok(json!({"checkpoints": checkpoints, "kinds": kinds, "rows": rows}))
}

/// What an `…/inspect` request asks, checked before any file is read.
#[derive(Debug, Clone)]
pub struct InspectRequest {
    /// The text.
    pub prompt: String,
    /// `K` or `latest`.
    pub checkpoint: String,
    /// Lens candidates per position.
    pub top_k: usize,
    /// Attention map's block.
    pub layer: usize,
    /// Attention map's head.
    pub head: usize,
}

impl InspectRequest {
    /// Parses and bounds the query: `prompt` (required, at most [`MAX_INSPECT_BYTES`]),
    /// `checkpoint` (default `latest`), `top_k` (default 5, at most [`MAX_TOP_K`]),
    /// `layer` and `head` (default 0).
    pub fn parse(q: &HashMap<String, String>) -> ApiResult<Self> {
        let prompt = q.get("prompt").cloned().unwrap_or_default();
        if prompt.is_empty() {
            return Err(ApiError::bad("`prompt` is empty"));
        }
        if prompt.len() > MAX_INSPECT_BYTES {
            return Err(ApiError::bad(format!(
                "`prompt` is {} bytes, longer than the {MAX_INSPECT_BYTES} the dashboard inspects (glass inspect --text-file has no such limit)",
                prompt.len()
            )));
        }
        let checkpoint = q
            .get("checkpoint")
            .filter(|c| !c.is_empty())
            .cloned()
            .unwrap_or_else(|| "latest".into());
        Ok(InspectRequest {
            prompt,
            checkpoint,
            top_k: uint(q, "top_k", Some(5), MAX_TOP_K)? as usize,
            layer: uint(q, "layer", Some(0), u32::MAX as u64)? as usize,
            head: uint(q, "head", Some(0), u32::MAX as u64)? as usize,
        })
    }
}

/// `GET …/inspect`: glass-analysis's inspection of the prompt at the checkpoint, as
/// `glass inspect --json --layer L --head H` prints it (`tokens`, `layers`, `lens`,
/// `attention`, `checkpoint`, `step`, `token_text`), plus `heads`, `max_seq_len` and
/// `strings` (the text of every token id in the reply). Layer, head and length are
/// checked against the run's config before the model is loaded.
pub fn inspect(run: &ServedRun, r: &InspectRequest) -> ApiResult<Value> {
    let man = require_manifest(run)?;
    let e = resolve_checkpoint(&man, &r.checkpoint)?;
    let cfg = glass_run::RunConfig::load(&run.dir)
        .map_err(ApiError::run)?
        .model;
    if r.layer >= cfg.n_layers {
        return Err(ApiError::bad(format!(
            "layer {} is out of range: the model has {} layers (0..={})",
            r.layer,
            cfg.n_layers,
            cfg.n_layers.saturating_sub(1)
        )));
    }
    if r.head >= cfg.n_heads {
        return Err(ApiError::bad(format!(
            "head {} is out of range: the model has {} heads per layer (0..={})",
            r.head,
            cfg.n_heads,
            cfg.n_heads.saturating_sub(1)
        )));
    }
    let tok = glass_run::run_tokenizer(&run.dir).map_err(ApiError::run)?;
    let ids = tok.encode(&r.prompt).map_err(ApiError::run)?;
    if ids.is_empty() {
        return Err(ApiError::bad("the prompt encodes to no tokens"));
    }
    if ids.len() > cfg.max_seq_len {
        return Err(ApiError::bad(format!(
            "the prompt is {} tokens, longer than the model's context (max_seq_len {}): shorten it",
            ids.len(),
            cfg.max_seq_len
        )));
    }
    if ids.len() > MAX_INSPECT_TOKENS {
        return Err(ApiError::bad(format!(
            "the prompt is {} tokens; the dashboard inspects at most {MAX_INSPECT_TOKENS} (glass inspect takes up to the model's context, {})",
            ids.len(),
            cfg.max_seq_len
        )));
    }
    let model = MODELS.get(&run.dir, e).map_err(ApiError::run)?;
    let opts = InspectOptions {
        top_k: r.top_k,
        attention: vec![(r.layer, r.head)],
        keep_tensors: false,
    };
    let ins = glass_analysis::inspect::inspect(&model, &ids, &opts).map_err(|err| match err {
        AnalysisError::Input(m) => ApiError::bad(m),
        other => ApiError::run(other),
    })?;
    let decode = |t: u32| tok.decode(&[t]).unwrap_or_default();
    let mut seen: BTreeSet<u32> = ids.iter().copied().collect();
    for row in &ins.lens {
        for c in row {
            seen.extend(c.top.iter().map(|x| x.token));
        }
    }
    let strings: BTreeMap<String, String> = seen
        .into_iter()
        .map(|t| (t.to_string(), decode(t)))
        .collect();
    let mut v = serde_json::to_value(&ins).map_err(ApiError::run)?;
    v["checkpoint"] = json!(e.index);
    v["step"] = json!(e.step);
    v["token_text"] = json!(ids.iter().map(|&t| decode(t)).collect::<Vec<_>>());
    v["heads"] = json!(cfg.n_heads);
    v["max_seq_len"] = json!(cfg.max_seq_len);
    v["layer"] = json!(r.layer);
    v["head"] = json!(r.head);
    v["strings"] = json!(strings);
    Ok(v)
}

/// `GET …/contamination`: per task, the items checked and those sharing an n-gram with
/// the training stream, from `analysis/contamination.json` (`{present: false}` without
/// one). The report's per-item places stay in the file (`glass data contamination`).
pub fn contamination(run: &ServedRun) -> ApiResult<Value> {
    let path = run.dir.join(CONTAMINATION_FILE);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(json!({"present": false, "file": CONTAMINATION_FILE}));
        }
        _ => {}
    }
    let again = format!("run `glass data contamination {}` again", run.dir.display());
    let bytes = glass_io::open::read_beneath(&run.dir, &path, MAX_CONTAMINATION_BYTES)
        .map_err(|e| ApiError::run(format!("{e}; {again}")))?;
    let r: ContaminationReport = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::run(format!("{}: {e}; {again}", path.display())))?;
    if r.format != CONTAMINATION_FORMAT {
        return Err(ApiError::run(format!(
            "{}: format `{}`, expected `{CONTAMINATION_FORMAT}`; {again}",
            path.display(),
            r.format
        )));
    }
    let tasks: Vec<Value> = r
        .tasks
        .iter()
        .map(|t| {
            json!({"task": t.task, "items": t.items, "too_short": t.too_short,
                   "contaminated": t.contaminated})
        })
        .collect();
    Ok(json!({
        "present": true, "file": CONTAMINATION_FILE, "format": r.format, "ngram": r.ngram,
        "method": r.method, "steps": r.steps, "tokens": r.tokens, "tasks": tasks,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(k: &str, v: &str) -> HashMap<String, String> {
        HashMap::from([(k.to_string(), v.to_string())])
    }

    #[test]
    fn kind_filters_are_plain_names_or_prefixes() {
        let f = kind_filter(&q("kind", "induction,source_*"))
            .unwrap()
            .unwrap();
        assert!(kind_matches(&f, "induction"));
        assert!(kind_matches(&f, "source_bits_per_byte"));
        assert!(!kind_matches(&f, "prev_token"));
        assert!(!kind_matches(&f, "inductionx"));
        assert!(kind_filter(&HashMap::new()).unwrap().is_none());
        for bad in ["", "a,,b", "a*b", "*a*", "a;b", "a b", "é", &"x".repeat(65)] {
            assert!(kind_filter(&q("kind", bad)).is_err(), "{bad:?}");
        }
        let many = vec!["a"; 33].join(",");
        assert!(kind_filter(&q("kind", &many)).is_err());
    }

    #[test]
    fn inspect_requests_are_bounded_before_any_file_is_read() {
        let ok = InspectRequest::parse(&q("prompt", "To be")).unwrap();
        assert_eq!(
            (ok.checkpoint.as_str(), ok.top_k, ok.layer, ok.head),
            ("latest", 5, 0, 0)
        );
        assert!(InspectRequest::parse(&HashMap::new()).is_err());
        assert!(InspectRequest::parse(&q("prompt", &"a".repeat(MAX_INSPECT_BYTES + 1))).is_err());
        let mut m = q("prompt", "x");
        for (k, v) in [
            ("top_k", "21"),
            ("layer", "-1"),
            ("head", "NaN"),
            ("layer", "4294967296"),
        ] {
            m.insert(k.into(), v.into());
            let e = InspectRequest::parse(&m).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(e.msg.contains(k), "{}", e.msg);
            m.remove(k);
        }
    }
}
