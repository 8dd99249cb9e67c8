//! `glass verify`: re-hash every published file, and replay an interval of training to
//! prove a checkpoint is exactly what its predecessor and the data produce.

use std::collections::BTreeSet;
use std::path::Path;

use glass_data::atomic::sha256_file;
use serde::Serialize;

use crate::checkpoint::{self, CheckpointState, STATE_FILE};
use crate::error::{Result, RunError};
use crate::manifest::RunManifest;
use crate::train::{Session, StepOutcome};

/// A file whose bytes differ from the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct FileProblem {
    /// Path relative to the run.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// Result of [`verify_run`].
#[derive(Debug, Clone, Serialize)]
pub struct RunVerifyReport {
    /// Checkpoint files re-hashed.
    pub checkpoint_files: usize,
    /// Checkpoint problems.
    pub problems: Vec<FileProblem>,
    /// Data files checked.
    pub data_files: usize,
    /// Data problems, as `path: problem`.
    pub data_problems: Vec<String>,
}

impl RunVerifyReport {
    /// True when nothing differs.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.data_problems.is_empty()
    }
}

/// Re-hashes every checkpoint file and every data file against the manifests.
pub fn verify_run(run_dir: &Path) -> Result<RunVerifyReport> {
    let m = RunManifest::require(run_dir)?;
    let mut problems = Vec::new();
    let mut n = 0;
    for c in &m.checkpoints {
        for f in &c.files {
            n += 1;
            match sha256_file(&run_dir.join(&f.path)) {
                Ok((sha, len)) if sha == f.sha256 && len == f.bytes => {}
                Ok((sha, len)) => problems.push(FileProblem {
                    path: f.path.clone(),
                    problem: format!(
                        "sha256 {sha} ({len} bytes), manifest has {} ({} bytes)",
                        f.sha256, f.bytes
                    ),
                }),
                Err(e) => problems.push(FileProblem {
                    path: f.path.clone(),
                    problem: e.to_string(),
                }),
            }
        }
    }
    let d = glass_data::verify(run_dir)?;
    Ok(RunVerifyReport {
        checkpoint_files: n,
        problems,
        data_files: d.checked,
        data_problems: d
            .mismatches
            .iter()
            .map(|x| format!("{}: {}", x.path, x.problem))
            .collect(),
    })
}

/// Result of [`replay`].
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// Checkpoint proven.
    pub checkpoint: u32,
    /// Steps recomputed.
    pub from_step: u64,
    /// Up to this step.
    pub to_step: u64,
    /// Per file: (name, published sha256, recomputed sha256).
    pub files: Vec<(String, String, String)>,
    /// True when every file is bit-identical.
    pub identical: bool,
}

/// Recomputes checkpoint `k` from checkpoint `k − 1` and the published data and compares
/// the resulting files bit for bit (by sha256) with the published ones.
pub fn replay(run_dir: &Path, k: u32) -> Result<ReplayReport> {
    if k == 0 {
        return Err(RunError::Invalid(
            "checkpoint 0 is the starting point; replay proves checkpoints 1 and later".into(),
        ));
    }
    let m = RunManifest::require(run_dir)?;
    let prev = m.checkpoint(k - 1)?.clone();
    let target = m.checkpoint(k)?.clone();
    checkpoint::verify_files(run_dir, &target.files)?;
    let state_file = target
        .files
        .iter()
        .find(|f| f.path.ends_with(STATE_FILE))
        .expect("state listed");
    let target_state: CheckpointState = serde_json::from_slice(
        &std::fs::read(run_dir.join(&state_file.path))
            .map_err(crate::error::io(run_dir.join(&state_file.path)))?,
    )
    .map_err(|e| RunError::Checkpoint {
        path: run_dir.join(&state_file.path),
        msg: e.to_string(),
    })?;
    if target_state.engine != glass_engine::engine_id() {
        return Err(RunError::Invalid(format!(
            "checkpoint {k} was computed by {}, this is {}: a bit-identical replay needs the same engine numerics; use that glass version",
            target_state.engine,
            glass_engine::engine_id()
        )));
    }
    let mut s = Session::open(run_dir)?;
    s.load_checkpoint(&prev)?;
    s.skips = target_state
        .skipped_steps
        .iter()
        .copied()
        .collect::<BTreeSet<_>>();
    let from_step = s.step;
    let mut rows = Vec::new();
    while s.step < target.step {
        if s.skips.contains(&s.step) {
            s.skip_step();
            continue;
        }
        if let StepOutcome::Rejected { reason, .. } = s.run_step(false, &mut rows)? {
            return Err(RunError::Invalid(format!(
                "replay: the guard rejected step {} ({reason}), which the run applied",
                s.step
            )));
        }
    }
    let val = s.validate()?;
    let mut state = s.state(k, val);
    let scratch = run_dir.join(".replay");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(crate::error::io(&scratch))?;
    }
    let written = checkpoint::write(&scratch, &s.model, &s.opt, &mut state);
    let result = written.map(|(files, _)| {
        let files: Vec<(String, String, String)> = target
            .files
            .iter()
            .zip(&files)
            .map(|(want, got)| {
                (
                    want.path.rsplit('/').next().unwrap_or("").to_string(),
                    want.sha256.clone(),
                    got.sha256.clone(),
                )
            })
            .collect();
        let identical = files.iter().all(|(_, a, b)| a == b);
        ReplayReport {
            checkpoint: k,
            from_step,
            to_step: target.step,
            files,
            identical,
        }
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
