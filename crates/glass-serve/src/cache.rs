//! Per-run cache of the per-step columns: a million-step curve is read from SQLite once
//! and then sliced and downsampled from memory, until the trainer commits again (SQLite's
//! `data_version` changes whenever another connection commits).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use glass_run::metrics::{StepColumn, StepSeries};
use glass_run::Metrics;

/// The cache of one run (shared by its requests; one reader at a time).
#[derive(Default)]
pub struct SeriesCache(Mutex<Option<Inner>>);

struct Inner {
    metrics: Metrics,
    version: i64,
    columns: HashMap<StepColumn, Arc<StepSeries>>,
}

impl std::fmt::Debug for SeriesCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeriesCache")
    }
}

impl SeriesCache {
    /// Every recorded step of `column` in `dir`'s metrics database, as of the last
    /// commit.
    pub fn column(&self, dir: &Path, column: StepColumn) -> glass_run::Result<Arc<StepSeries>> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if g.as_ref().is_some_and(|i| i.metrics.stale()) {
            // Opened while no trainer wrote; one does now: read its commits.
            *g = None;
        }
        let inner = match g.as_mut() {
            Some(i) => i,
            None => g.insert(Inner {
                metrics: Metrics::open_read_only(dir)?,
                version: i64::MIN,
                columns: HashMap::new(),
            }),
        };
        let v = inner.metrics.data_version()?;
        if v != inner.version {
            inner.columns.clear();
            inner.version = v;
        }
        if let Some(s) = inner.columns.get(&column) {
            return Ok(s.clone());
        }
        let s = Arc::new(inner.metrics.step_series(column, 0, i64::MAX as u64)?);
        inner.columns.insert(column, s.clone());
        Ok(s)
    }
}
