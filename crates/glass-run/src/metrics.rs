//! `RUN/metrics.sqlite`: every step's loss, lr, gradient norm and throughput, validation
//! loss per checkpoint, evaluation results, and an events table. Wall-clock values live
//! here only; nothing read back from this database influences training.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::error::{Result, RunError};

/// File name of the metrics database.
pub const METRICS_FILE: &str = "metrics.sqlite";

/// An open metrics database.
pub struct Metrics {
    conn: Connection,
    path: PathBuf,
}

/// One training step's metrics.
#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    /// Data step.
    pub step: u64,
    /// Mean loss.
    pub loss: f64,
    /// Learning rate.
    pub lr: f64,
    /// Pre-clip gradient norm.
    pub grad_norm: f64,
    /// Tokens consumed after this step.
    pub tokens: u64,
    /// Throughput.
    pub tokens_per_s: f64,
    /// Seconds since the Unix epoch.
    pub wall_time: f64,
}

/// Validation metrics at a checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointRow {
    /// Checkpoint index.
    pub checkpoint: u32,
    /// Data step.
    pub step: u64,
    /// Tokens consumed.
    pub tokens: u64,
    /// Held-out loss (nats/token).
    pub val_loss: Option<f64>,
    /// Held-out bits per byte.
    pub val_bpb: Option<f64>,
}

/// A recorded event (start, resume, rollback, skip, ...).
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    /// Sequence number.
    pub id: i64,
    /// Data step it refers to.
    pub step: Option<u64>,
    /// Kind of event.
    pub kind: String,
    /// JSON details.
    pub detail: String,
    /// Seconds since the Unix epoch.
    pub wall_time: f64,
}

/// One metric of one task at one checkpoint (`evals` table).
#[derive(Debug, Clone, Serialize)]
pub struct EvalRow {
    /// Checkpoint index.
    pub checkpoint: u32,
    /// Task name.
    pub task: String,
    /// Metric name (acc, acc_norm, bits_per_byte, ...).
    pub metric: String,
    /// Value.
    pub value: f64,
    /// Standard error, where one is defined.
    pub stderr: Option<f64>,
    /// Documents evaluated.
    pub n: u64,
}

/// What produced a task's results at a checkpoint (`eval_runs` table): a result is
/// reused only if the task definition, few-shot settings and limit are the same.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvalRunRow {
    /// Checkpoint index.
    pub checkpoint: u32,
    /// Task name.
    pub task: String,
    /// sha256 over the task's YAML and data files.
    pub task_sha256: String,
    /// Few-shot examples per document.
    pub num_fewshot: u64,
    /// Few-shot seed.
    pub fewshot_seed: u64,
    /// Document limit (`None`: all).
    pub limit: Option<u64>,
    /// Documents evaluated.
    pub n: u64,
    /// Result JSON, relative to the run.
    pub result_path: String,
    /// sha256 of the result JSON.
    pub result_sha256: String,
    /// Seconds the evaluation took (metadata only).
    pub seconds: f64,
    /// Seconds since the Unix epoch (metadata only).
    pub wall_time: f64,
}

/// Seconds since the Unix epoch (metadata only).
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Metrics {
    /// Opens (creating if needed) the run's metrics database.
    pub fn open(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(METRICS_FILE);
        let sql = |source| RunError::Sql {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(sql)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS steps(step INTEGER PRIMARY KEY, loss REAL, lr REAL, grad_norm REAL,
               tokens INTEGER, tokens_per_s REAL, wall_time REAL);
             CREATE TABLE IF NOT EXISTS checkpoints(checkpoint INTEGER PRIMARY KEY, step INTEGER, tokens INTEGER,
               val_loss REAL, val_bpb REAL);
             CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY AUTOINCREMENT, step INTEGER, kind TEXT,
               detail TEXT, wall_time REAL);
             CREATE TABLE IF NOT EXISTS evals(checkpoint INTEGER, task TEXT, metric TEXT, value REAL, stderr REAL,
               n INTEGER, PRIMARY KEY(checkpoint, task, metric));
             CREATE TABLE IF NOT EXISTS eval_runs(checkpoint INTEGER, task TEXT, task_sha256 TEXT,
               num_fewshot INTEGER, fewshot_seed INTEGER, lim INTEGER, n INTEGER, result_path TEXT,
               result_sha256 TEXT, seconds REAL, wall_time REAL, PRIMARY KEY(checkpoint, task));",
        )
        .map_err(sql)?;
        Ok(Metrics { conn, path })
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> RunError + '_ {
        move |source| RunError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Records (or, after a resume, replaces) one step.
    pub fn step(&self, r: &StepRow) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO steps VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    r.step as i64,
                    r.loss,
                    r.lr,
                    r.grad_norm,
                    r.tokens as i64,
                    r.tokens_per_s,
                    r.wall_time
                ],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// Records a checkpoint's validation metrics.
    pub fn checkpoint(&self, r: &CheckpointRow) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO checkpoints VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    r.checkpoint,
                    r.step as i64,
                    r.tokens as i64,
                    r.val_loss,
                    r.val_bpb
                ],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// Appends an event.
    pub fn event(&self, step: Option<u64>, kind: &str, detail: serde_json::Value) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO events(step, kind, detail, wall_time) VALUES (?1, ?2, ?3, ?4)",
                params![step.map(|s| s as i64), kind, detail.to_string(), now()],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// Records one task's results at one checkpoint: its metrics and what produced
    /// them, in one transaction (replacing an earlier evaluation of the same pair).
    pub fn record_eval(&mut self, run: &EvalRunRow, rows: &[EvalRow]) -> Result<()> {
        let path = self.path.clone();
        let sql = move |source| RunError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(&sql)?;
        tx.execute(
            "DELETE FROM evals WHERE checkpoint = ?1 AND task = ?2",
            params![run.checkpoint, run.task],
        )
        .map_err(&sql)?;
        for r in rows {
            tx.execute(
                "INSERT OR REPLACE INTO evals VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    r.checkpoint,
                    r.task,
                    r.metric,
                    r.value,
                    r.stderr,
                    r.n as i64
                ],
            )
            .map_err(&sql)?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO eval_runs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                run.checkpoint,
                run.task,
                run.task_sha256,
                run.num_fewshot as i64,
                run.fewshot_seed as i64,
                run.limit.map(|l| l as i64),
                run.n as i64,
                run.result_path,
                run.result_sha256,
                run.seconds,
                run.wall_time
            ],
        )
        .map_err(&sql)?;
        tx.commit().map_err(&sql)?;
        Ok(())
    }

    /// What produced the stored results of `task` at `checkpoint`, if any.
    pub fn eval_run(&self, checkpoint: u32, task: &str) -> Result<Option<EvalRunRow>> {
        let mut st = self
            .conn
            .prepare("SELECT * FROM eval_runs WHERE checkpoint = ?1 AND task = ?2")
            .map_err(self.sql())?;
        let mut rows = st
            .query_map(params![checkpoint, task], |r| {
                Ok(EvalRunRow {
                    checkpoint: r.get(0)?,
                    task: r.get(1)?,
                    task_sha256: r.get(2)?,
                    num_fewshot: r.get::<_, i64>(3)? as u64,
                    fewshot_seed: r.get::<_, i64>(4)? as u64,
                    limit: r.get::<_, Option<i64>>(5)?.map(|l| l as u64),
                    n: r.get::<_, i64>(6)? as u64,
                    result_path: r.get(7)?,
                    result_sha256: r.get(8)?,
                    seconds: r.get(9)?,
                    wall_time: r.get(10)?,
                })
            })
            .map_err(self.sql())?;
        rows.next().transpose().map_err(self.sql())
    }

    /// Per checkpoint, the mean token-match and full-match rates over the chunks that
    /// `glass analyze memorization` measured (empty when it never ran).
    pub fn memorization_means(&self) -> Result<Vec<(u32, f64, f64)>> {
        let exists: bool = self
            .conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'memorization'",
                [],
                |r| r.get(0),
            )
            .map_err(self.sql())?;
        if !exists {
            return Ok(vec![]);
        }
        let mut st = self
            .conn
            .prepare(
                "SELECT checkpoint, avg(token_match), avg(full_match) FROM memorization GROUP BY checkpoint ORDER BY checkpoint",
            )
            .map_err(self.sql())?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.sql())?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(self.sql())
    }

    /// Every stored evaluation metric, by checkpoint, task, metric.
    pub fn evals(&self) -> Result<Vec<EvalRow>> {
        let mut st = self
            .conn
            .prepare("SELECT * FROM evals ORDER BY checkpoint, task, metric")
            .map_err(self.sql())?;
        let rows = st
            .query_map([], |r| {
                Ok(EvalRow {
                    checkpoint: r.get(0)?,
                    task: r.get(1)?,
                    metric: r.get(2)?,
                    value: r.get(3)?,
                    stderr: r.get(4)?,
                    n: r.get::<_, i64>(5)? as u64,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(self.sql())
    }

    /// Every step row in order.
    pub fn steps(&self) -> Result<Vec<StepRow>> {
        let mut st = self
            .conn
            .prepare("SELECT * FROM steps ORDER BY step")
            .map_err(self.sql())?;
        let rows = st
            .query_map([], |r| {
                Ok(StepRow {
                    step: r.get::<_, i64>(0)? as u64,
                    loss: r.get(1)?,
                    lr: r.get(2)?,
                    grad_norm: r.get(3)?,
                    tokens: r.get::<_, i64>(4)? as u64,
                    tokens_per_s: r.get(5)?,
                    wall_time: r.get(6)?,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(self.sql())
    }

    /// Every checkpoint row in order.
    pub fn checkpoints(&self) -> Result<Vec<CheckpointRow>> {
        let mut st = self
            .conn
            .prepare("SELECT * FROM checkpoints ORDER BY checkpoint")
            .map_err(self.sql())?;
        let rows = st
            .query_map([], |r| {
                Ok(CheckpointRow {
                    checkpoint: r.get(0)?,
                    step: r.get::<_, i64>(1)? as u64,
                    tokens: r.get::<_, i64>(2)? as u64,
                    val_loss: r.get(3)?,
                    val_bpb: r.get(4)?,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(self.sql())
    }

    /// Every event in order.
    pub fn events(&self) -> Result<Vec<EventRow>> {
        let mut st = self
            .conn
            .prepare("SELECT * FROM events ORDER BY id")
            .map_err(self.sql())?;
        let rows = st
            .query_map([], |r| {
                Ok(EventRow {
                    id: r.get(0)?,
                    step: r.get::<_, Option<i64>>(1)?.map(|s| s as u64),
                    kind: r.get(2)?,
                    detail: r.get(3)?,
                    wall_time: r.get(4)?,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(self.sql())
    }
}
