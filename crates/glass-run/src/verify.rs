//! `glass verify`: re-hash every published file, and replay an interval of training to
//! prove a checkpoint is exactly what its predecessor and the data produce.

use std::collections::BTreeSet;
use std::path::Path;

use glass_io::open::sha256_beneath;
use serde::Serialize;

use crate::checkpoint;
use crate::error::{Result, RunError};
use crate::integrity;
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
    /// Files of the trace index (`glass index`) re-hashed; 0 without an index.
    pub index_files: usize,
}

impl RunVerifyReport {
    /// True when nothing differs.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.data_problems.is_empty()
    }
}

/// Re-hashes every checkpoint file and every data file against the manifests, checks
/// every value of each checkpoint's tensors ([`checkpoint::check_values`]), and
/// cross-checks what the manifests and states claim (see [`crate::integrity`]).
pub fn verify_run(run_dir: &Path) -> Result<RunVerifyReport> {
    let m = RunManifest::require(run_dir)?;
    let mut problems = integrity::manifest_problems(&m);
    let mut n = 0;
    for c in &m.checkpoints {
        for f in &c.files {
            n += 1;
            if !glass_io::paths::is_inside(&f.path) {
                continue; // reported by manifest_problems; never read
            }
            // A regular file beneath the run, of the recorded length, or it is not read.
            let path = run_dir.join(&f.path);
            match sha256_beneath(run_dir, &path, Some(f.bytes)) {
                Ok((sha, len)) if sha == f.sha256 && len == f.bytes => {
                    // The file is the listed one; its numbers must still be ones Glass
                    // writes (a forger can rewrite every hash).
                    let tensors = f.path.ends_with(checkpoint::MODEL_FILE)
                        || f.path.ends_with(checkpoint::OPTIMIZER_FILE);
                    if tensors {
                        if let Err(e) = checkpoint::check_values(run_dir, &path, f.bytes) {
                            problems.push(FileProblem {
                                path: f.path.clone(),
                                problem: match e {
                                    RunError::Checkpoint { msg, .. } => msg,
                                    other => other.to_string(),
                                },
                            });
                        }
                    }
                }
                Ok((sha, len)) => problems.push(FileProblem {
                    path: f.path.clone(),
                    problem: format!(
                        "sha256 {sha} ({len} bytes), manifest has {} ({} bytes)",
                        f.sha256, f.bytes
                    ),
                }),
                Err(e) => problems.push(FileProblem {
                    path: f.path.clone(),
                    problem: integrity::io_problem(&e.source),
                }),
            }
        }
    }
    let mut prev: Option<String> = m.parent.as_ref().map(|p| p.checkpoint_sha256.clone());
    for c in &m.checkpoints {
        problems.extend(integrity::entry_problems(run_dir, &m, c, prev.as_deref()).1);
        prev = Some(c.sha256.clone());
    }
    let index_files = listed_files_problems(run_dir, "index/manifest.json", &mut problems);
    // An imported run has no data until `glass data prepare`; its checkpoints still verify.
    let d = if m.import.is_some() && !run_dir.join("data").join("manifest.json").exists() {
        glass_data::VerifyReport::default()
    } else {
        problems.extend(integrity::data_problem(run_dir, &m));
        glass_data::verify(run_dir)?
    };
    Ok(RunVerifyReport {
        checkpoint_files: n,
        problems,
        data_files: d.checked,
        data_problems: d
            .mismatches
            .iter()
            .map(|x| format!("{}: {}", x.path, x.problem))
            .collect(),
        index_files,
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
/// the resulting files bit for bit (by sha256) with the published ones. Checkpoint 0 of a
/// branch is recomputed from the parent's checkpoint it names.
pub fn replay(run_dir: &Path, k: u32) -> Result<ReplayReport> {
    let m = RunManifest::require(run_dir)?;
    if m.weights_only {
        return Err(crate::weights::weights_only_refusal(
            run_dir,
            "`glass verify --replay`",
        ));
    }
    if k == 0 && m.parent.is_none() {
        return Err(RunError::Invalid(
            "checkpoint 0 is the starting point; replay proves checkpoints 1 and later (and checkpoint 0 of a branch)".into(),
        ));
    }
    let (target, target_state) = integrity::checked_entry(run_dir, &m, k)?;
    checkpoint::verify_files(run_dir, &target.files)?;
    if target_state.engine != glass_engine::engine_id() {
        return Err(RunError::Invalid(format!(
            "checkpoint {k} was computed by {}, this is {}: a bit-identical replay needs the same engine and numerics contract (any CPU will do); use that glass version",
            target_state.engine,
            glass_engine::engine_id()
        )));
    }
    let mut s = Session::open(run_dir)?;
    for (what, then, now) in [
        ("glass.toml", &target_state.config_sha256, &s.config_sha),
        (
            "data/manifest.json",
            &target_state.data_manifest_sha256,
            &s.data_sha,
        ),
    ] {
        if then != now {
            return Err(RunError::Invalid(format!(
                "checkpoint {k} was trained with {what} sha256 {then}, the run now has {now}; restore that {what} to replay"
            )));
        }
    }
    let from_step;
    if k == 0 {
        let p = m.parent.as_ref().expect("checked above");
        let got = crate::train::branch_from(&mut s, Path::new(&p.run_dir), p.checkpoint, p.mode)?;
        if got.checkpoint_sha256 != p.checkpoint_sha256 {
            return Err(RunError::Invalid(format!(
                "{} checkpoint {} is now {}, but this branch started from {}; restore the parent run",
                p.run_dir, p.checkpoint, got.checkpoint_sha256, p.checkpoint_sha256
            )));
        }
        from_step = s.step;
    } else {
        let prev = m.checkpoint(k - 1)?.clone();
        s.load_checkpoint(&prev)?;
        s.skips = target_state
            .skipped_steps
            .iter()
            .copied()
            .collect::<BTreeSet<_>>();
        from_step = s.step;
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
    }
    let val = s.validate()?;
    let mut state = s.state(k, val);
    // The recomputed files' hashes, computed as they would be written but without
    // writing them: a replay leaves the run as it found it.
    let (files, state_sha) = checkpoint::hashes(&s.model, &s.opt, &mut state);
    let name = |p: &str| p.rsplit('/').next().unwrap_or("").to_string();
    let mut compared = Vec::new();
    for (got_name, got_sha) in &files {
        let want = target
            .files
            .iter()
            .find(|w| name(&w.path) == *got_name)
            .map_or(String::new(), |w| w.sha256.clone());
        compared.push((got_name.to_string(), want, got_sha.clone()));
    }
    let identical = compared.iter().all(|(_, a, b)| a == b) && state_sha == target.sha256;
    Ok(ReplayReport {
        checkpoint: k,
        from_step,
        to_step: target.step,
        files: compared,
        identical,
    })
}
/// Re-hashes the `files` ({path, sha256, bytes}, run-relative) of an optional derived
/// manifest such as `index/manifest.json`, and checks that the data files it was built
/// from (`pins`) still have the hashes it recorded. Returns the number of files checked.
fn listed_files_problems(run_dir: &Path, manifest: &str, out: &mut Vec<FileProblem>) -> usize {
    #[derive(serde::Deserialize)]
    struct Listed {
        path: String,
        sha256: String,
        #[serde(default)]
        bytes: u64,
    }
    #[derive(serde::Deserialize)]
    struct Derived {
        files: Vec<Listed>,
        #[serde(default)]
        pins: Vec<Listed>,
    }
    let p = run_dir.join(manifest);
    let bytes = match glass_io::open::read_beneath(run_dir, &p, glass_io::open::MAX_RECORD_BYTES) {
        Ok(b) => b,
        Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => return 0,
        Err(e) => {
            out.push(FileProblem {
                path: manifest.into(),
                problem: e.source.to_string(),
            });
            return 0;
        }
    };
    let d: Derived = match serde_json::from_slice(&bytes) {
        Ok(d) => d,
        Err(e) => {
            out.push(FileProblem {
                path: manifest.into(),
                problem: format!("unreadable: {e}"),
            });
            return 0;
        }
    };
    for f in &d.files {
        if !glass_io::paths::is_inside(&f.path) {
            out.push(FileProblem {
                path: manifest.into(),
                problem: format!(
                    "lists `{}`, a path outside the run (absolute or with `..`); not read",
                    f.path
                ),
            });
            continue;
        }
        match sha256_beneath(run_dir, &run_dir.join(&f.path), Some(f.bytes)) {
            Ok((sha, len)) if sha == f.sha256 && len == f.bytes => {}
            Ok((sha, _)) => out.push(FileProblem {
                path: f.path.clone(),
                problem: format!("sha256 {sha}, {manifest} has {}", f.sha256),
            }),
            Err(e) => out.push(FileProblem {
                path: f.path.clone(),
                problem: integrity::io_problem(&e.source),
            }),
        }
    }
    // Pinned data files are re-hashed by the data check; compare against its manifest.
    let data = glass_data::Manifest::load(run_dir).ok();
    for pin in &d.pins {
        let now = data.as_ref().and_then(|m| {
            m.files
                .iter()
                .find(|f| Some(f.path.as_str()) == pin.path.strip_prefix("data/"))
        });
        if now.map(|f| &f.sha256) != Some(&pin.sha256) {
            out.push(FileProblem {
                path: manifest.into(),
                problem: format!(
                    "built from {} with sha256 {}, which the data no longer has: stale; rebuild it",
                    pin.path, pin.sha256
                ),
            });
        }
    }
    d.files.len()
}
