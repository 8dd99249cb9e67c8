//! The metrics part of a release: the run's steps, checkpoints, evaluations and events
//! as CSV (for spreadsheets and pandas) and JSON, read from `metrics.sqlite`.

use std::fmt::Write as _;
use std::path::Path;

use glass_io::atomic::{sha256_hex, write_atomic_all};
use glass_run::metrics::{CheckpointRow, EvalRow, EventRow, StepRow};
use glass_run::Metrics;
use serde::Serialize;

use crate::error::Result;
use crate::layout::ReleaseFile;

/// Everything the run's metrics database holds that a release publishes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunMetrics {
    /// One row per applied step.
    pub steps: Vec<StepRow>,
    /// Validation metrics per checkpoint.
    pub checkpoints: Vec<CheckpointRow>,
    /// Evaluation scores per checkpoint, task and metric.
    pub evals: Vec<EvalRow>,
    /// Events (start, resume, rollback, skip, ...).
    pub events: Vec<EventRow>,
}

/// Reads the run's metrics (empty when the run has no database).
pub fn collect(run_dir: &Path) -> Result<RunMetrics> {
    if !run_dir.join(glass_run::metrics::METRICS_FILE).exists() {
        return Ok(RunMetrics::default());
    }
    let m = Metrics::open_read_only(run_dir)?;
    Ok(RunMetrics {
        steps: m.steps()?,
        checkpoints: m.checkpoints()?,
        evals: m.evals()?,
        events: m.events()?,
    })
}

/// One CSV field (RFC 4180: quoted when it holds a comma, quote or newline). Written by
/// hand: the tables are a few numeric columns and short names.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

fn csv_steps(rows: &[StepRow]) -> String {
    let mut s = String::from("step,loss,lr,grad_norm,tokens,tokens_per_s,wall_time\n");
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{}",
            r.step, r.loss, r.lr, r.grad_norm, r.tokens, r.tokens_per_s, r.wall_time
        );
    }
    s
}

fn csv_checkpoints(rows: &[CheckpointRow]) -> String {
    let mut s = String::from("checkpoint,step,tokens,val_loss,val_bpb\n");
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{}",
            r.checkpoint,
            r.step,
            r.tokens,
            opt(r.val_loss),
            opt(r.val_bpb)
        );
    }
    s
}

fn csv_evals(rows: &[EvalRow]) -> String {
    let mut s = String::from("checkpoint,task,metric,value,stderr,n\n");
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{}",
            r.checkpoint,
            field(&r.task),
            field(&r.metric),
            r.value,
            opt(r.stderr),
            r.n
        );
    }
    s
}

fn csv_events(rows: &[EventRow]) -> String {
    let mut s = String::from("id,step,kind,detail,wall_time\n");
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{}",
            r.id,
            r.step.map(|x| x.to_string()).unwrap_or_default(),
            field(&r.kind),
            field(&r.detail),
            r.wall_time
        );
    }
    s
}

/// Writes `OUT/metrics/{steps,checkpoints,evals,events}.{csv,json}`.
pub(crate) fn write(out: &Path, m: &RunMetrics) -> Result<Vec<ReleaseFile>> {
    let tables: [(&str, String, Vec<u8>); 4] = [
        ("steps", csv_steps(&m.steps), json(&m.steps)),
        (
            "checkpoints",
            csv_checkpoints(&m.checkpoints),
            json(&m.checkpoints),
        ),
        ("evals", csv_evals(&m.evals), json(&m.evals)),
        ("events", csv_events(&m.events), json(&m.events)),
    ];
    let mut files = Vec::new();
    let mut batch = Vec::new();
    for (name, csv, js) in &tables {
        for (ext, bytes) in [("csv", csv.as_bytes()), ("json", js.as_slice())] {
            let rel = format!("metrics/{name}.{ext}");
            batch.push((crate::layout::join(out, &rel), bytes));
            files.push(ReleaseFile {
                path: rel,
                sha256: sha256_hex(bytes),
                bytes: bytes.len() as u64,
            });
        }
    }
    let batch: Vec<(&Path, &[u8])> = batch.iter().map(|(p, b)| (p.as_path(), *b)).collect();
    write_atomic_all(&batch)?;
    Ok(files)
}

/// Pretty JSON of a table.
fn json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("metrics serialise");
    b.push(b'\n');
    b
}
