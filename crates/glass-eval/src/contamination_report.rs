//! The contamination report's format (`RUN/analysis/contamination.json`, written by
//! `glass data contamination` through glass-analysis) and the figure `glass eval` attaches
//! to a task's result while the report is current for the task and the training stream.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The report's file, relative to the run.
pub const CONTAMINATION_FILE: &str = "analysis/contamination.json";
/// Format tag of [`ContaminationReport`].
pub const CONTAMINATION_FORMAT: &str = "glass-contamination-v1";
/// How the training rows are searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The index when `glass index` built one, else a scan.
    #[default]
    Auto,
    /// One pass over every row.
    Scan,
    /// Suffix-array lookups (`glass index RUN` first).
    Index,
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "scan" => Ok(Self::Scan),
            "index" => Ok(Self::Index),
            _ => Err(format!("`{s}`: expected auto, scan or index")),
        }
    }
}

/// A training place holding one of an item's n-grams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    /// Training step.
    pub step: u64,
    /// Row within the step's global batch.
    pub slot: u64,
    /// Token position of the first matching n-gram in the row.
    pub pos: u64,
    /// Source of the document the n-gram starts in.
    pub source: String,
    /// Document index within the source.
    pub doc: u64,
    /// The document's provenance (input path, plus `:line` for records).
    pub doc_id: String,
}

/// One contaminated item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContaminatedItem {
    /// Where the item came from.
    pub id: String,
    /// Its tokens.
    pub tokens: usize,
    /// Its distinct n-grams.
    pub ngrams: usize,
    /// Of which occur in training.
    pub matched_ngrams: usize,
    /// Row windows matching one of its n-grams, over the whole stream.
    pub occurrences: u64,
    /// The first distinct (step, row, document) places in training order.
    pub hits: Vec<Hit>,
}

/// One task's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskContamination {
    /// Task name.
    pub task: String,
    /// sha256 of the task's definition and data, as `glass eval` records it (absent in
    /// reports written before it was recorded, and for items given without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_sha256: Option<String>,
    /// Items.
    pub items: usize,
    /// Items of fewer than `n` tokens (not checked).
    pub too_short: usize,
    /// Contaminated items.
    pub contaminated: usize,
    /// Each contaminated item.
    pub contaminated_items: Vec<ContaminatedItem>,
}

/// The result of [`contamination`], stored as [`CONTAMINATION_FILE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContaminationReport {
    /// [`CONTAMINATION_FORMAT`].
    pub format: String,
    /// N-gram length in tokens.
    pub ngram: usize,
    /// How the rows were searched (`scan` or `index`).
    pub method: Method,
    /// sha256 of the data manifest scanned.
    pub data_manifest_sha256: String,
    /// sha256 of the tokenizer.
    pub tokenizer_sha256: String,
    /// Steps scanned.
    pub steps: u64,
    /// Tokens scanned.
    pub tokens: u64,
    /// At most this many items of each task were checked (`--limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Per task, in the order given.
    pub tasks: Vec<TaskContamination>,
}

/// One task's contamination as `glass eval` attaches it to a result: what
/// [`CONTAMINATION_FILE`] says of the task, when it was computed for the same task
/// definition and the same training stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFigure {
    /// N-gram length in tokens.
    pub ngram: usize,
    /// Documents (items) of the task considered.
    pub documents: usize,
    /// Of which were long enough to check (at least `ngram` tokens).
    pub checked: usize,
    /// Of which share an n-gram with a training row.
    pub contaminated: usize,
    /// `contaminated / checked` (0 when none was checked).
    pub fraction: f64,
    /// The `--limit` the check ran with (absent: every document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// sha256 of the data manifest (the training stream) checked.
    pub data_manifest_sha256: String,
}

/// What [`task_figure`] found for a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Figure {
    /// The report holds the task, computed for its current definition and the run's
    /// current training stream.
    Current(TaskFigure),
    /// The report holds the task, but not for what is there now: why.
    Stale(String),
    /// No report, or the report does not hold the task.
    Absent,
}

/// The contamination figure of `task` (whose definition hashes to `task_sha256`) in
/// `run_dir`'s [`CONTAMINATION_FILE`]. A figure computed for another task definition or
/// another data manifest (which names the tokenizer) — or by a report that did not record the task's
/// hash — is [`Figure::Stale`], never shown as current. An unreadable report is stale
/// too (the reason says so): evaluation does not depend on it.
pub fn task_figure(run_dir: &Path, task: &str, task_sha256: &str) -> Figure {
    let path = run_dir.join(CONTAMINATION_FILE);
    let rerun = "rerun `glass data contamination` with this task";
    let bytes = match glass_io::open::read_beneath(run_dir, &path, glass_io::open::MAX_RECORD_BYTES)
    {
        Ok(b) => b,
        Err(_) if !path.exists() => return Figure::Absent,
        Err(e) => return Figure::Stale(format!("{}: {e}", path.display())),
    };
    let report: ContaminationReport = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return Figure::Stale(format!("{}: unreadable ({e})", path.display())),
    };
    let Some(t) = report.tasks.iter().find(|t| t.task == task) else {
        return Figure::Absent;
    };
    if report.format != CONTAMINATION_FORMAT {
        return Figure::Stale(format!(
            "{}: format `{}`, expected `{CONTAMINATION_FORMAT}`; {rerun}",
            path.display(),
            report.format
        ));
    }
    match t.task_sha256.as_deref() {
        Some(h) if h == task_sha256 => {}
        Some(_) => {
            return Figure::Stale(format!(
                "{} was computed for another definition or data of task {task}; {rerun}",
                path.display()
            ))
        }
        None => {
            return Figure::Stale(format!(
                "{} does not record which definition of task {task} it checked; {rerun}",
                path.display()
            ))
        }
    }
    let manifest = run_dir.join("data/manifest.json");
    let current = glass_io::open::sha256_beneath(run_dir, &manifest, None).map(|x| x.0);
    // The data manifest names the tokenizer's hash too.
    if current.as_deref().ok() != Some(report.data_manifest_sha256.as_str()) {
        return Figure::Stale(format!(
            "{} was computed for another training stream than {}; {rerun}",
            path.display(),
            manifest.display()
        ));
    }
    let checked = t.items - t.too_short;
    Figure::Current(TaskFigure {
        ngram: report.ngram,
        documents: t.items,
        checked,
        contaminated: t.contaminated,
        fraction: if checked == 0 {
            0.0
        } else {
            t.contaminated as f64 / checked as f64
        },
        limit: report.limit,
        data_manifest_sha256: report.data_manifest_sha256,
    })
}
