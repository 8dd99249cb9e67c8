//! `RUN/metrics.sqlite`: every step's loss, lr, gradient norm and throughput, validation
//! loss per checkpoint, evaluation results, memorization results, and an events table.
//! Wall-clock values live here only; nothing read back from this database influences
//! training.
//!
//! This module is the database's one owner: its schema, and every write. Training,
//! evaluation and analysis record their results through [`Metrics`]; commands that only
//! read open it with [`Metrics::open_read_only`], which never creates or changes a file.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags};
use serde::Serialize;

use crate::error::{Result, RunError};

/// File name of the metrics database.
pub const METRICS_FILE: &str = "metrics.sqlite";

/// An open metrics database.
pub struct Metrics {
    conn: Connection,
    path: PathBuf,
    /// Opened read-only with no writer present (see [`Metrics::open_read_only`]).
    immutable: bool,
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

/// One value of `glass analyze dynamics` (`dynamics` table): `kind` is `induction` or
/// `prev_token` (name `L{layer}.H{head}`), `weight_norm`, `update_norm`,
/// `update_cosine` (name: `embed`, `layer.{l}`, `final_norm`, `head`), or
/// `source_nats_per_token`, `source_bits_per_byte` (name: the data source).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct DynamicsRow {
    /// Checkpoint index.
    pub checkpoint: u32,
    /// What was measured.
    pub kind: String,
    /// Of which head or parameter group.
    pub name: String,
    /// The value.
    pub value: f64,
}

/// One (checkpoint, data chunk) result of `glass analyze memorization`
/// (`memorization` table): what it measured, with which settings, and where the full
/// result file is.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemorizationRow {
    /// Checkpoint index.
    pub checkpoint: u32,
    /// Data chunk.
    pub chunk: u64,
    /// The checkpoint's step.
    pub step: u64,
    /// Rows asked for.
    pub samples: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Continuation tokens.
    pub continuation_tokens: u64,
    /// Rows evaluated.
    pub n: u64,
    /// Mean fraction of matching positions.
    pub token_match: f64,
    /// Fraction of fully matching rows.
    pub full_match: f64,
    /// sha256 of the settings (protocol, sizes, checkpoint and chunk hashes).
    pub settings_sha256: String,
    /// Result JSON, relative to the run.
    pub result_path: String,
    /// sha256 of the result JSON.
    pub result_sha256: String,
    /// Seconds the pair took (metadata only).
    pub seconds: Option<f64>,
    /// Seconds since the Unix epoch (metadata only).
    pub wall_time: Option<f64>,
}

/// A per-step column of the `steps` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepColumn {
    /// Mean loss.
    Loss,
    /// Learning rate.
    Lr,
    /// Pre-clip gradient norm.
    GradNorm,
    /// Throughput.
    TokensPerS,
}

impl StepColumn {
    /// Every column, in display order.
    pub const ALL: [StepColumn; 4] = [
        StepColumn::Loss,
        StepColumn::Lr,
        StepColumn::GradNorm,
        StepColumn::TokensPerS,
    ];

    /// Its column name (also its name in the JSON API).
    pub fn name(self) -> &'static str {
        match self {
            StepColumn::Loss => "loss",
            StepColumn::Lr => "lr",
            StepColumn::GradNorm => "grad_norm",
            StepColumn::TokensPerS => "tokens_per_s",
        }
    }

    /// The column called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// One column of the `steps` table as parallel arrays.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepSeries {
    /// Steps, ascending.
    pub steps: Vec<u64>,
    /// Tokens consumed after each step.
    pub tokens: Vec<u64>,
    /// The column's values (NaN where a step recorded a non-finite value).
    pub values: Vec<f64>,
}

/// Seconds since the Unix epoch (metadata only).
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The write-ahead log beside the database `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

/// `path` for an SQLite `file:` URI: bytes other than unreserved ASCII and `/`
/// percent-encoded (`?`, `#` and `%` would otherwise end or change it).
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// SQLite opens the database and its `-wal`, `-shm` and `-journal` files by name, so
/// they are checked before it does: none of them, nor the run's directory on the way, may
/// be a symbolic link (or something other than a regular file), or the database would be
/// read or written outside the run.
fn check_not_linked(run_dir: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let p = run_dir.join(format!("{METRICS_FILE}{suffix}"));
        glass_io::open::check_write_beneath(run_dir, &p)?;
        if p.is_dir() {
            return Err(RunError::Invalid(format!(
                "{}: a directory where the metrics database's file belongs; move it aside",
                p.display()
            )));
        }
    }
    Ok(())
}

impl Metrics {
    /// Opens (creating if needed) the run's metrics database.
    pub fn open(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(METRICS_FILE);
        let sql = |source| RunError::Sql {
            path: path.clone(),
            source,
        };
        check_not_linked(run_dir)?;
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
               result_sha256 TEXT, seconds REAL, wall_time REAL, PRIMARY KEY(checkpoint, task));
             CREATE TABLE IF NOT EXISTS memorization(
               checkpoint INTEGER NOT NULL, chunk INTEGER NOT NULL, step INTEGER NOT NULL,
               samples INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,
               continuation_tokens INTEGER NOT NULL, n INTEGER NOT NULL,
               token_match REAL NOT NULL, full_match REAL NOT NULL,
               settings_sha256 TEXT NOT NULL, result_path TEXT NOT NULL,
               result_sha256 TEXT NOT NULL, seconds REAL, wall_time REAL,
               PRIMARY KEY (checkpoint, chunk));",
        )
        .map_err(sql)?;
        // Evaluation, analysis and training may write at the same time: wait, not fail.
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql)?;
        Ok(Metrics {
            conn,
            path,
            immutable: false,
        })
    }

    /// [`Metrics::open_read_only`] when the database exists, `None` when the run has no
    /// metrics yet (readers then show nothing rather than create a file).
    pub fn open_if_exists(run_dir: &Path) -> Result<Option<Self>> {
        if !run_dir.join(METRICS_FILE).exists() {
            return Ok(None);
        }
        Self::open_read_only(run_dir).map(Some)
    }

    /// Opens the run's metrics database for reading only: nothing is created or
    /// changed, so a dashboard can read while `glass train` writes. The database is in
    /// WAL mode, so readers never block the trainer and see its last committed step.
    pub fn open_read_only(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(METRICS_FILE);
        let sql = |source| RunError::Sql {
            path: path.clone(),
            source,
        };
        if !path.is_file() {
            return Err(RunError::Invalid(format!(
                "{}: no metrics yet; run `glass train {}` first",
                path.display(),
                run_dir.display()
            )));
        }
        check_not_linked(run_dir)?;
        // A reader of a WAL database creates its `-shm` and `-wal` files when they are
        // absent, and a read-only connection cannot remove them again. They are absent
        // exactly when no writer has the database open (the last writer to close removes
        // them), and then nothing can change under the reader but a writer starting
        // meanwhile: the database is opened as immutable, which reads the file alone and
        // creates nothing. With a writer present, the reader shares its files.
        let immutable = !wal_path(&path).exists();
        let uri = format!(
            "file:{}?mode=ro{}",
            uri_path(&path),
            if immutable { "&immutable=1" } else { "" }
        );
        let conn = Connection::open_with_flags(
            &uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(sql)?;
        // A reader may meet the writer's WAL checkpoint for an instant; wait, not fail.
        conn.busy_timeout(std::time::Duration::from_secs(2))
            .map_err(sql)?;
        let m = Metrics {
            conn,
            path,
            immutable,
        };
        if !m.has_table("steps")? {
            return Err(RunError::Invalid(format!(
                "{}: not a Glass metrics database (it has no `steps` table); move it aside and let `glass train {}` write a new one",
                m.path.display(),
                run_dir.display()
            )));
        }
        Ok(m)
    }

    /// True when this read-only connection was opened with no writer present and a
    /// writer has started since: it cannot see the writer's commits, so a long-lived
    /// reader (the dashboard) opens the database again.
    pub fn stale(&self) -> bool {
        self.immutable && wal_path(&self.path).exists()
    }

    /// Whether the database has table `name` (older runs lack the newer tables).
    pub fn has_table(&self, name: &str) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                params![name],
                |r| r.get(0),
            )
            .map_err(self.sql())
    }

    /// Records many steps in one transaction (bulk writers: imports, benchmarks).
    pub fn steps_bulk(&mut self, rows: &[StepRow]) -> Result<()> {
        let path = self.path.clone();
        let sql = move |source| RunError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(&sql)?;
        {
            let mut st = tx
                .prepare("INSERT OR REPLACE INTO steps VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
                .map_err(&sql)?;
            for r in rows {
                st.execute(params![
                    r.step as i64,
                    r.loss,
                    r.lr,
                    r.grad_norm,
                    r.tokens as i64,
                    r.tokens_per_s,
                    r.wall_time
                ])
                .map_err(&sql)?;
            }
        }
        tx.commit().map_err(&sql)?;
        Ok(())
    }

    /// One per-step column as parallel arrays (step, tokens, value) over the steps in
    /// `[from, to]`, in step order: what a curve needs, without the other columns.
    pub fn step_series(&self, column: StepColumn, from: u64, to: u64) -> Result<StepSeries> {
        let q = format!(
            "SELECT step, tokens, {} FROM steps WHERE step >= ?1 AND step <= ?2 ORDER BY step",
            column.name()
        );
        let mut st = self.conn.prepare_cached(&q).map_err(self.sql())?;
        let mut rows = st
            .query(params![
                from.min(i64::MAX as u64) as i64,
                to.min(i64::MAX as u64) as i64
            ])
            .map_err(self.sql())?;
        let mut out = StepSeries::default();
        while let Some(r) = rows.next().map_err(self.sql())? {
            out.steps
                .push(r.get::<_, i64>(0).map_err(self.sql())? as u64);
            out.tokens
                .push(r.get::<_, i64>(1).map_err(self.sql())? as u64);
            // NULL (never written) reads as NaN, like a non-finite loss.
            out.values.push(
                r.get::<_, Option<f64>>(2)
                    .map_err(self.sql())?
                    .unwrap_or(f64::NAN),
            );
        }
        Ok(out)
    }

    /// A number that changes whenever another connection (the trainer) commits a change
    /// to the database: a reader's cache is current while it stays the same.
    pub fn data_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(self.sql())
    }

    /// (first step, last step, number of steps) recorded, if any.
    pub fn step_extent(&self) -> Result<Option<(u64, u64, u64)>> {
        let (lo, hi, n): (Option<i64>, Option<i64>, i64) = self
            .conn
            .query_row(
                "SELECT min(step), max(step), count(*) FROM steps",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(self.sql())?;
        Ok(lo.zip(hi).map(|(lo, hi)| (lo as u64, hi as u64, n as u64)))
    }

    /// Tokens consumed after the last recorded step at or before `step`.
    pub fn tokens_at(&self, step: u64) -> Result<Option<u64>> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row(
                "SELECT tokens FROM steps WHERE step <= ?1 ORDER BY step DESC LIMIT 1",
                params![step.min(i64::MAX as u64) as i64],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|v| v.map(|t| t as u64))
            .map_err(self.sql())
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

    /// Records one memorization result (replacing an earlier one of the same pair).
    pub fn record_memorization(&self, r: &MemorizationRow) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO memorization VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)",
                params![
                    r.checkpoint,
                    r.chunk as i64,
                    r.step as i64,
                    r.samples as i64,
                    r.prompt_tokens as i64,
                    r.continuation_tokens as i64,
                    r.n as i64,
                    r.token_match,
                    r.full_match,
                    r.settings_sha256,
                    r.result_path,
                    r.result_sha256,
                    r.seconds,
                    r.wall_time
                ],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// Replaces checkpoint `checkpoint`'s dynamics with `rows`, with the settings that
    /// produced them (JSON), in one transaction. The tables are created on first use, so
    /// a run that never ran the analysis has none.
    pub fn record_dynamics(
        &mut self,
        checkpoint: u32,
        settings: &str,
        rows: &[DynamicsRow],
        seconds: f64,
    ) -> Result<()> {
        let path = self.path.clone();
        let sql = move |source| RunError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(&sql)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS dynamics(checkpoint INTEGER NOT NULL, kind TEXT NOT NULL,
               name TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (checkpoint, kind, name));
             CREATE TABLE IF NOT EXISTS dynamics_runs(checkpoint INTEGER PRIMARY KEY,
               settings TEXT NOT NULL, seconds REAL, wall_time REAL);",
        )
        .map_err(&sql)?;
        tx.execute(
            "DELETE FROM dynamics WHERE checkpoint = ?1",
            params![checkpoint],
        )
        .map_err(&sql)?;
        {
            let mut st = tx
                .prepare("INSERT INTO dynamics VALUES (?1, ?2, ?3, ?4)")
                .map_err(&sql)?;
            for r in rows {
                st.execute(params![checkpoint, r.kind, r.name, r.value])
                    .map_err(&sql)?;
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO dynamics_runs VALUES (?1, ?2, ?3, ?4)",
            params![checkpoint, settings, seconds, now()],
        )
        .map_err(&sql)?;
        tx.commit().map_err(sql)
    }

    /// Stored dynamics, ordered by checkpoint, kind and name (empty when never run).
    pub fn dynamics(&self) -> Result<Vec<DynamicsRow>> {
        if !self.has_table("dynamics")? {
            return Ok(vec![]);
        }
        let mut st = self
            .conn
            .prepare("SELECT checkpoint, kind, name, value FROM dynamics ORDER BY checkpoint, kind, name")
            .map_err(self.sql())?;
        let rows = st
            .query_map([], |r| {
                Ok(DynamicsRow {
                    checkpoint: r.get(0)?,
                    kind: r.get(1)?,
                    name: r.get(2)?,
                    value: r.get(3)?,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(self.sql())
    }

    /// Stored memorization results, every pair or one (`Some((checkpoint, chunk))`),
    /// ordered by checkpoint then chunk (empty when the analysis never ran).
    pub fn memorization(&self, pair: Option<(u32, u64)>) -> Result<Vec<MemorizationRow>> {
        if !self.has_table("memorization")? {
            return Ok(vec![]);
        }
        let (cond, k, c) = match pair {
            Some((k, c)) => ("WHERE checkpoint = ?1 AND chunk = ?2", k as i64, c as i64),
            None => ("WHERE ?1 = ?2", 0, 0),
        };
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT checkpoint, chunk, step, samples, prompt_tokens, continuation_tokens, n,
                        token_match, full_match, settings_sha256, result_path, result_sha256,
                        seconds, wall_time
                 FROM memorization {cond} ORDER BY checkpoint, chunk"
            ))
            .map_err(self.sql())?;
        let rows = st
            .query_map(params![k, c], |r| {
                Ok(MemorizationRow {
                    checkpoint: r.get(0)?,
                    chunk: r.get::<_, i64>(1)? as u64,
                    step: r.get::<_, i64>(2)? as u64,
                    samples: r.get::<_, i64>(3)? as u64,
                    prompt_tokens: r.get::<_, i64>(4)? as u64,
                    continuation_tokens: r.get::<_, i64>(5)? as u64,
                    n: r.get::<_, i64>(6)? as u64,
                    token_match: r.get(7)?,
                    full_match: r.get(8)?,
                    settings_sha256: r.get(9)?,
                    result_path: r.get(10)?,
                    result_sha256: r.get(11)?,
                    seconds: r.get(12)?,
                    wall_time: r.get(13)?,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(self.sql())
    }

    /// Per checkpoint, the mean token-match and full-match rates over the chunks that
    /// `glass analyze memorization` measured (empty when it never ran).
    pub fn memorization_means(&self) -> Result<Vec<(u32, f64, f64)>> {
        if !self.has_table("memorization")? {
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
