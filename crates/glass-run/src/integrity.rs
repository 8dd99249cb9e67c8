//! The checks every reader of a checkpoint makes, `glass verify` and the loaders alike
//! (train resume, branch, replay, generate, eval, export): one implementation, so a file
//! that verify would flag is never loaded.
//!
//! What is checked: the run manifest's structure (indices 0, 1, 2, … with increasing
//! steps, paths that stay inside the run), each entry against the `state.json` it pins
//! (hash, index, step, tokens, validation loss, tensor hashes, predecessor, data hash),
//! and the prepared data against the data hash the run pins.

use std::path::Path;

use glass_io::atomic::sha256_hex;
use glass_io::paths::is_inside;

use crate::checkpoint::{CheckpointState, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE};
use crate::error::{Result, RunError};
use crate::manifest::{CheckpointEntry, RunManifest, FORMAT_VERSION, MANIFEST_FILE};
use crate::verify::FileProblem;

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn problem(path: impl Into<String>, what: String) -> FileProblem {
    FileProblem {
        path: path.into(),
        problem: what,
    }
}

/// Structural problems of the manifest itself (no file is read).
pub fn manifest_problems(m: &RunManifest) -> Vec<FileProblem> {
    let mut out = Vec::new();
    let mut prev_step = None;
    let mut prev_index: Option<u32> = None;
    for (i, c) in m.checkpoints.iter().enumerate() {
        // A trained run publishes 0, 1, 2, …; an imported release may keep a chosen
        // subset of its source's checkpoint numbers, in increasing order.
        let bad = match (&m.import, prev_index) {
            (None, _) => c.index as usize != i,
            (Some(_), Some(p)) => c.index <= p,
            (Some(_), None) => false,
        };
        if bad {
            let rule = if m.import.is_some() {
                "entries must be in increasing order"
            } else {
                "entries must be 0, 1, 2, …"
            };
            out.push(problem(
                MANIFEST_FILE,
                format!(
                    "entry {i} has checkpoint index {} (duplicate or out of order); {rule}",
                    c.index
                ),
            ));
        }
        prev_index = Some(c.index);
        if prev_step.is_some_and(|p| c.step < p) {
            out.push(problem(
                MANIFEST_FILE,
                format!(
                    "checkpoint {} is at step {}, before its predecessor's step {}",
                    c.index,
                    c.step,
                    prev_step.unwrap_or(0)
                ),
            ));
        }
        prev_step = Some(c.step);
        for f in &c.files {
            if !is_inside(&f.path) {
                out.push(problem(
                    MANIFEST_FILE,
                    format!(
                        "checkpoint {} lists `{}`, a path outside the run (absolute or with `..`); refusing to read it",
                        c.index, f.path
                    ),
                ));
            }
        }
        for name in [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE] {
            // A weights-only run's checkpoints hold no optimizer state.
            let want = usize::from(!(m.weights_only && name == OPTIMIZER_FILE));
            if c.files
                .iter()
                .filter(|f| file_name(&f.path) == name)
                .count()
                != want
            {
                let what = if want == 1 {
                    format!("checkpoint {} must list exactly one {name}", c.index)
                } else {
                    format!(
                        "checkpoint {} lists {name}, but the run is weights-only (no optimizer state)",
                        c.index
                    )
                };
                out.push(problem(MANIFEST_FILE, what));
            }
        }
    }
    out
}

/// Reads and checks the `state.json` of entry `c`: its hash is the entry's, and every
/// field the manifest repeats agrees with it. `prev` is the hash the state must name as
/// its predecessor. Returns the state when it could be read.
pub fn entry_problems(
    run_dir: &Path,
    m: &RunManifest,
    c: &CheckpointEntry,
    prev: Option<&str>,
) -> (Option<CheckpointState>, Vec<FileProblem>) {
    let mut out = Vec::new();
    let Some(sf) = c
        .files
        .iter()
        .find(|f| file_name(&f.path) == STATE_FILE && is_inside(&f.path))
    else {
        out.push(problem(
            MANIFEST_FILE,
            format!(
                "checkpoint {} lists no {STATE_FILE} inside the run",
                c.index
            ),
        ));
        return (None, out);
    };
    let mut bad = |what: String| out.push(problem(sf.path.clone(), what));
    if sf.sha256 != c.sha256 {
        bad(format!(
            "checkpoint {} hash {} is not its state.json's {}",
            c.index, c.sha256, sf.sha256
        ));
    }
    // Beneath the run, a regular file of the recorded length, or nothing is read.
    let bytes = match glass_io::open::open_beneath(run_dir, &run_dir.join(&sf.path)).and_then(|f| {
        f.expect_len(sf.bytes)?;
        f.read_all(sf.bytes)
    }) {
        Ok(b) => b,
        Err(e) => {
            bad(io_problem(&e.source));
            return (None, out);
        }
    };
    let actual = sha256_hex(&bytes);
    if actual != c.sha256 {
        bad(format!(
            "sha256 {actual}, but manifest.json records {} for checkpoint {}",
            c.sha256, c.index
        ));
        return (None, out);
    }
    let st: CheckpointState = match serde_json::from_slice(&bytes) {
        Ok(st) => st,
        Err(e) => {
            bad(format!("not a valid checkpoint state: {e}"));
            return (None, out);
        }
    };
    if st.format_version > FORMAT_VERSION {
        bad(format!(
            "format version {} is newer than this glass supports ({FORMAT_VERSION}); upgrade glass",
            st.format_version
        ));
    }
    let opt = |v: Option<f64>| v.map_or("none".to_string(), |v| v.to_string());
    for (what, entry, state) in [
        ("index", c.index.to_string(), st.index.to_string()),
        ("step", c.step.to_string(), st.step.to_string()),
        ("tokens", c.tokens.to_string(), st.tokens.to_string()),
        ("val_loss", opt(c.val_loss), opt(st.val_loss)),
    ] {
        if entry != state {
            bad(format!(
                "records {what} {state}, but manifest.json says {entry} for checkpoint {}",
                c.index
            ));
        }
    }
    let listed = |name: &str| c.files.iter().find(|f| file_name(&f.path) == name);
    for (suffix, pinned) in [
        (MODEL_FILE, &st.model_sha256),
        (OPTIMIZER_FILE, &st.optimizer_sha256),
    ] {
        // Weights-only: the state pins no optimizer file (an empty hash), and none is listed.
        if m.weights_only && suffix == OPTIMIZER_FILE {
            if !pinned.is_empty() || listed(suffix).is_some() {
                bad(format!(
                    "pins {suffix} `{pinned}`, but the run is weights-only (no optimizer state)"
                ));
            }
            continue;
        }
        if listed(suffix).map(|f| &f.sha256) != Some(pinned) {
            bad(format!(
                "pins {suffix} {pinned}, but manifest.json lists {}",
                listed(suffix).map_or("no such file", |f| f.sha256.as_str())
            ));
        }
    }
    if (c.index > 0 || m.parent.is_some()) && st.parent_checkpoint_sha256.as_deref() != prev {
        bad(format!(
            "names predecessor {}, but the previous checkpoint is {}",
            st.parent_checkpoint_sha256.as_deref().unwrap_or("none"),
            prev.unwrap_or("none")
        ));
    }
    let imported_start = c.index == 0 && m.import.is_some() && st.data_manifest_sha256.is_empty();
    if st.data_manifest_sha256 != m.data_manifest_sha256 && !imported_start {
        bad(format!(
            "was trained on data manifest {}, but manifest.json pins {}",
            st.data_manifest_sha256, m.data_manifest_sha256
        ));
    }
    (Some(st), out)
}

/// The prepared data against the hash the run pins (`None` when consistent).
pub fn data_problem(run_dir: &Path, m: &RunManifest) -> Option<FileProblem> {
    if crate::import::adopts_data(m) {
        return None; // an imported run binds itself to its data at its first train
    }
    let p = run_dir
        .join("data")
        .join(glass_data::manifest::MANIFEST_FILE);
    let what = match glass_io::open::sha256_beneath(run_dir, &p, None) {
        Ok((sha, _)) if sha == m.data_manifest_sha256 => return None,
        Ok((sha, _)) => format!(
            "sha256 {sha}, but manifest.json and every checkpoint pin {}; the data was replaced after training — restore it (re-run `glass data prepare` with the original [data] table) or branch a new run",
            m.data_manifest_sha256
        ),
        Err(e) => io_problem(&e.source),
    };
    Some(problem("data/manifest.json", what))
}

/// An I/O error as a problem of a file already named: "missing" rather than the path
/// again.
pub fn io_problem(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        "missing".into()
    } else {
        e.to_string()
    }
}

/// The loaders' form of the checks: the whole manifest's structure, then checkpoint
/// `index`'s state against its entry and predecessor. Returns the entry and its state,
/// or the first problem as an error naming the file.
pub fn checked_entry(
    run_dir: &Path,
    m: &RunManifest,
    index: u32,
) -> Result<(CheckpointEntry, CheckpointState)> {
    let first = |p: FileProblem| RunError::Checkpoint {
        path: run_dir.join(&p.path),
        msg: format!("{}; run `glass verify {}`", p.problem, run_dir.display()),
    };
    if let Some(p) = manifest_problems(m).into_iter().next() {
        return Err(first(p));
    }
    let entry = m.checkpoint(index)?.clone();
    let prev = match index {
        0 => m.parent.as_ref().map(|p| p.checkpoint_sha256.clone()),
        k => Some(m.checkpoint(k - 1)?.sha256.clone()),
    };
    let (st, problems) = entry_problems(run_dir, m, &entry, prev.as_deref());
    if let Some(p) = problems.into_iter().next() {
        return Err(first(p));
    }
    let st = st.ok_or_else(|| RunError::Invalid("internal: state unread".into()))?;
    Ok((entry, st))
}

/// Checks a checkpoint entry a loader was handed (resume, rollback, replay) against the
/// run's manifest on disk with [`checked_entry`]: the entry must be the one published.
pub fn check_loadable(run_dir: &Path, entry: &CheckpointEntry) -> Result<CheckpointState> {
    let m = RunManifest::require(run_dir)?;
    let (published, st) = checked_entry(run_dir, &m, entry.index)?;
    if &published != entry {
        return Err(RunError::Checkpoint {
            path: RunManifest::path(run_dir),
            msg: format!(
                "checkpoint {} changed on disk while in use; run `glass verify {}`",
                entry.index,
                run_dir.display()
            ),
        });
    }
    Ok(st)
}

/// Whether every value of `params` is finite: the guard's check of the weights after an
/// update (a finite loss and gradient norm do not imply finite weights: an overflowing
/// update step does not show in either). One parallel pass with early exit, memory-bound
/// like one of AdamW's four streams.
pub fn all_finite(params: &[f32]) -> bool {
    use rayon::prelude::*;
    params
        .par_chunks(1 << 16)
        .all(|c| c.iter().all(|x| x.is_finite()))
}

/// The guard's check of the weights right after an update (see [`all_finite`]); also
/// where the `nan-weights` fault is injected.
pub fn updated_params_ok(params: &mut [f32]) -> bool {
    if crate::fault::triggered("nan-weights") {
        if let Some(p) = params.first_mut() {
            *p = f32::NAN;
        }
    }
    all_finite(params)
}
