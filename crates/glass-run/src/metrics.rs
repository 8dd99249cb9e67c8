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
               n INTEGER, PRIMARY KEY(checkpoint, task, metric));",
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
