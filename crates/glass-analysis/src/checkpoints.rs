//! The checkpoints an analysis evaluates: a Glass run's own (`RUN/run.json`), or, for a
//! run over a suite's data, the suite's checkpoints imported next to it
//! (`RUN/models/NAME`, listed in `RUN/models/checkpoints.json` by `glass import pythia
//! --checkpoints` / `glass import olmo --checkpoints`), numbered 0, 1, … in step order.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{AnalysisError, Result};

/// The list `glass import pythia|olmo --checkpoints` writes, relative to the run.
pub const SUITE_CHECKPOINTS: &str = "models/checkpoints.json";

/// One checkpoint of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCheckpoint {
    /// Its number: the run's checkpoint index, or its place in `models/checkpoints.json`.
    pub index: u32,
    /// Optimizer steps it was trained for (it saw data steps `0..step`).
    pub step: u64,
    /// sha256 of its state.json.
    pub sha256: String,
    /// The run directory its weights are in, and that run's checkpoint index.
    model: (PathBuf, Option<u32>),
}

impl RunCheckpoint {
    /// Loads its model.
    pub fn load(&self) -> Result<glass_engine::Model> {
        Ok(glass_run::load_model(&self.model.0, self.model.1)?.0)
    }

    /// The run directory holding its weights.
    pub fn model_run(&self) -> &Path {
        &self.model.0
    }
}

#[derive(Deserialize)]
struct SuiteEntry {
    step: u64,
    run: String,
    checkpoint_sha256: String,
}

/// The checkpoints of `run_dir`, in order; an error naming what to do when it has none.
pub fn run_checkpoints(run_dir: &Path) -> Result<Vec<RunCheckpoint>> {
    if !glass_data::external::is_external(run_dir) {
        let m = glass_run::RunManifest::require(run_dir)?;
        let out: Vec<RunCheckpoint> = m
            .checkpoints
            .iter()
            .map(|c| RunCheckpoint {
                index: c.index,
                step: c.step,
                sha256: c.sha256.clone(),
                model: (run_dir.to_path_buf(), Some(c.index)),
            })
            .collect();
        if out.is_empty() {
            return Err(AnalysisError::Input(format!(
                "{} has no checkpoints yet; run `glass train {}`",
                run_dir.display(),
                run_dir.display()
            )));
        }
        return Ok(out);
    }
    let p = run_dir.join(SUITE_CHECKPOINTS);
    if !p.exists() {
        let suite = glass_data::external::ExternalManifest::load(run_dir)?.suite;
        let fix = match suite.as_str() {
            "pythia" | "olmo" => format!(
                "import the data again into a new run directory with the suite's checkpoint folders, `glass import {suite} ... --checkpoints DIR`"
            ),
            _ => format!(
                "`glass import {suite}` imports no checkpoints: import each with `glass import hf CKPT {}/models/NAME --weights-only` and list them in {} as `glass import pythia --checkpoints` does (docs/suites.md)",
                run_dir.display(),
                p.display()
            ),
        };
        return Err(AnalysisError::Input(format!(
            "{} reads its data in place and has no checkpoints ({} is missing): {fix}",
            run_dir.display(),
            p.display(),
        )));
    }
    let bytes = glass_io::open::read_beneath(run_dir, &p, glass_io::open::MAX_RECORD_BYTES)?;
    let list: Vec<SuiteEntry> =
        serde_json::from_slice(&bytes).map_err(|e| AnalysisError::Format {
            path: p.clone(),
            msg: e.to_string(),
        })?;
    if list.is_empty() {
        return Err(AnalysisError::Input(format!(
            "{}: lists no checkpoints; import the run again with `--checkpoints DIR`",
            p.display()
        )));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, e) in list.into_iter().enumerate() {
        if !glass_io::paths::is_inside(&e.run) {
            return Err(AnalysisError::Format {
                path: p.clone(),
                msg: format!("checkpoint run `{}` leaves the run directory", e.run),
            });
        }
        if out.last().is_some_and(|c: &RunCheckpoint| c.step >= e.step) {
            return Err(AnalysisError::Format {
                path: p.clone(),
                msg: "checkpoints are not in increasing step order".into(),
            });
        }
        out.push(RunCheckpoint {
            index: i as u32,
            step: e.step,
            sha256: e.checkpoint_sha256,
            model: (run_dir.join(&e.run), None),
        });
    }
    Ok(out)
}

/// The checkpoint `c` names (`None`: the latest).
pub fn resolve_checkpoint(run_dir: &Path, c: Option<u32>) -> Result<RunCheckpoint> {
    let all = run_checkpoints(run_dir)?;
    match c {
        None => Ok(all.last().expect("not empty").clone()),
        Some(k) => all.iter().find(|x| x.index == k).cloned().ok_or_else(|| {
            AnalysisError::Input(format!(
                "{} has no checkpoint {k} (checkpoints {})",
                run_dir.display(),
                all.iter()
                    .map(|x| x.index.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }),
    }
}
