//! Caches of `glass serve`. Per run, the per-step columns: a million-step curve is read
//! from SQLite once and then sliced and downsampled from memory, until the trainer commits
//! again (SQLite's `data_version` changes whenever another connection commits). For the
//! whole server, the models `…/inspect` loaded ([`ModelCache`]).

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

/// Most bytes of checkpoint weight files the [`ModelCache`] keeps loaded (the model
/// being loaded counts; one model is always allowed, whatever its size).
pub const MODEL_CACHE_BYTES: u64 = 2 << 30;
/// Most models the [`ModelCache`] keeps.
pub const MODEL_CACHE_MODELS: usize = 4;

/// Drops the least recently used entries (the front of `held`) until one of `incoming`
/// bytes fits: at most [`MODEL_CACHE_MODELS`] entries and [`MODEL_CACHE_BYTES`] in all,
/// or an empty cache.
fn make_room<T>(held: &mut Vec<T>, bytes: impl Fn(&T) -> u64, incoming: u64) {
    while !held.is_empty()
        && (held.len() >= MODEL_CACHE_MODELS
            || held.iter().map(&bytes).sum::<u64>() + incoming > MODEL_CACHE_BYTES)
    {
        held.remove(0);
    }
}

/// The models `…/inspect` loaded, least recently used first, keyed by run directory and
/// checkpoint and checked against the checkpoint's hash and file identities on every use:
/// switching back to a checkpoint does not re-read and re-hash its weights, and a
/// checkpoint whose files changed is loaded again. Memory stays within
/// [`MODEL_CACHE_BYTES`] (or one model).
pub struct ModelCache(Mutex<Vec<CachedModel>>);

struct CachedModel {
    dir: std::path::PathBuf,
    index: u32,
    sha256: String,
    ids: Vec<glass_io::open::FileIdentity>,
    bytes: u64,
    model: Arc<glass_engine::Model>,
}

impl std::fmt::Debug for ModelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModelCache")
    }
}

impl Default for ModelCache {
    fn default() -> Self {
        Self::new()
    }
}

impl ModelCache {
    /// An empty cache.
    pub const fn new() -> Self {
        ModelCache(Mutex::new(Vec::new()))
    }

    /// The model of checkpoint `entry` of the run `dir`, hash-checked when loaded
    /// ([`glass_run::load_model`]). Loads happen under the cache's lock: one at a time,
    /// and a second request for the same checkpoint waits for the first load instead of
    /// loading it again.
    pub fn get(
        &self,
        dir: &Path,
        entry: &glass_run::manifest::CheckpointEntry,
    ) -> glass_run::Result<Arc<glass_engine::Model>> {
        let ids = glass_run::checkpoint::file_identities(dir, &entry.files)?;
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = g
            .iter()
            .position(|c| c.dir == dir && c.index == entry.index)
        {
            let c = g.remove(i);
            if c.sha256 == entry.sha256 && c.ids == ids {
                let m = c.model.clone();
                g.push(c);
                return Ok(m);
            }
        }
        let bytes = entry
            .files
            .iter()
            .find(|f| f.path.ends_with(glass_run::checkpoint::MODEL_FILE))
            .map_or(0, |f| f.bytes);
        // Room first, so the old models are gone before the new one is read.
        make_room(&mut g, |c| c.bytes, bytes);
        let (model, _) = glass_run::load_model(dir, Some(entry.index))?;
        let model = Arc::new(model);
        g.push(CachedModel {
            dir: dir.to_path_buf(),
            index: entry.index,
            sha256: entry.sha256.clone(),
            ids,
            bytes,
            model: model.clone(),
        });
        Ok(model)
    }

    /// How many models are held (for tests and the docs' claims).
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no model is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_made_least_recently_used_first_within_both_bounds() {
        let gib = 1u64 << 30;
        // By count: a fifth small model drops the oldest.
        let mut held: Vec<(u32, u64)> = (0..4).map(|i| (i, 1)).collect();
        make_room(&mut held, |x| x.1, 1);
        assert_eq!(held.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 2, 3]);
        // By bytes: 1.5 GiB incoming beside 1 + 0.5 GiB drops the 1 GiB one first.
        let mut held = vec![(0, gib), (1, gib / 2)];
        make_room(&mut held, |x| x.1, gib + gib / 2);
        assert_eq!(held, [(1, gib / 2)]);
        // One model larger than the budget empties the cache, and is still allowed.
        let mut held = vec![(0, 1), (1, 2)];
        make_room(&mut held, |x| x.1, 10 * gib);
        assert!(held.is_empty());
        // Room enough: nothing dropped.
        let mut held = vec![(0, 1), (1, 2)];
        make_room(&mut held, |x| x.1, 3);
        assert_eq!(held.len(), 2);
    }
}
