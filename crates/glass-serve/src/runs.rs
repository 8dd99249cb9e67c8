//! The fixed table of served runs: each run directory given on the command line (or
//! found under a given directory) gets a short id, and requests name runs only by id.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cache::SeriesCache;

use crate::error::{Result, ServeError};

/// One served run.
#[derive(Debug, Clone)]
pub struct ServedRun {
    /// Id in URLs: the directory name, made unique, of `[A-Za-z0-9._-]` only.
    pub id: String,
    /// The directory as given (shown, and used in the suggested commands).
    pub dir: PathBuf,
    /// Its per-step columns, read once per commit of the trainer.
    pub cache: Arc<SeriesCache>,
}

/// Every served run, by id.
#[derive(Debug, Clone, Default)]
pub struct Runs {
    list: Vec<ServedRun>,
    by_id: HashMap<String, usize>,
}

impl Runs {
    /// Assigns ids to `dirs` (in order; duplicates get `-2`, `-3`, ...).
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        let mut r = Runs::default();
        for dir in dirs {
            let base: String = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into())
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let base = if base.is_empty() || base.starts_with('.') {
                format!("run{base}")
            } else {
                base
            };
            let mut id = base.clone();
            let mut n = 1;
            while r.by_id.contains_key(&id) {
                n += 1;
                id = format!("{base}-{n}");
            }
            r.by_id.insert(id.clone(), r.list.len());
            r.list.push(ServedRun {
                id,
                dir,
                cache: Arc::default(),
            });
        }
        r
    }

    /// The run with id `id`, if served.
    pub fn get(&self, id: &str) -> Option<&ServedRun> {
        self.by_id.get(id).map(|&i| &self.list[i])
    }

    /// Every run, in the order given.
    pub fn list(&self) -> &[ServedRun] {
        &self.list
    }
}

/// Whether `dir` looks like a run directory (it has a config, a manifest or metrics, or
/// is a run over external data: `glass import pythia|olmo|crystalcoder`).
pub fn is_run(dir: &Path) -> bool {
    glass_data::external::is_external(dir)
        || [
            "glass.toml",
            "manifest.json",
            glass_run::metrics::METRICS_FILE,
        ]
        .iter()
        .any(|f| dir.join(f).is_file())
}

/// The run directories named by `paths`: each is a run, or a directory whose runs are
/// found below it (up to 4 levels, not inside runs), in name order.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if is_run(p) {
            out.push(p.clone());
            continue;
        }
        if !p.is_dir() {
            return Err(ServeError::Path {
                path: p.clone(),
                msg: "not a run or a directory of runs".into(),
            });
        }
        let before = out.len();
        walk(p, 4, &mut out);
        if out.len() == before {
            return Err(ServeError::Path {
                path: p.clone(),
                msg: "no run below it (a run has glass.toml, manifest.json or metrics.sqlite)"
                    .into(),
            });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth == 0 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut subs: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    subs.sort();
    for s in subs {
        if is_run(&s) {
            out.push(s);
        } else {
            walk(&s, depth - 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_plain() {
        let r = Runs::new(vec![
            "a/my run".into(),
            "b/my run".into(),
            "..".into(),
            "/".into(),
        ]);
        let ids: Vec<&str> = r.list().iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids, ["my_run", "my_run-2", "run", "run-2"]);
        assert!(r.get("my_run-2").is_some() && r.get("../x").is_none());
    }
}
