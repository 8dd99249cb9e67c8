//! `glass verify OUT` on a release: re-hashes every file against `manifest.json` and names
//! each changed, missing or extra file; checks that every checkpoint's Glass state is the
//! checkpoint the manifest claims.

use std::collections::BTreeSet;
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{io, Result};
use crate::layout::{join, ReleaseManifest, GLASS_STATE_DIR, MANIFEST};

/// One problem with a release file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseProblem {
    /// Path relative to the release.
    pub path: String,
    /// `changed`, `missing`, `extra`, `inconsistent`, or `refused` (a listed path that
    /// leaves the release, or a link or special file where a file belongs: never read).
    pub kind: String,
    /// Details.
    pub detail: String,
}

/// Result of [`verify_release`].
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseVerifyReport {
    /// sha256 of `manifest.json` itself: pin it to pin the whole release.
    pub manifest_sha256: String,
    /// Files re-hashed.
    pub files: usize,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Everything that differs.
    pub problems: Vec<ReleaseProblem>,
}

impl ReleaseVerifyReport {
    /// True when nothing differs.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Every entry of the release that is not a directory, as `/`-separated relative paths.
/// Links are listed, never followed (a linked directory is one entry), so the walk stays
/// inside the release and ends.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let p = e.path();
        // `file_type` does not follow a link.
        if e.file_type().map_err(io(&p))?.is_dir() {
            walk(root, &p, out)?;
        } else {
            let rel = p.strip_prefix(root).expect("under root");
            out.push(
                rel.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/"),
            );
        }
    }
    Ok(())
}

/// Verifies the release in `out`.
pub fn verify_release(out: &Path) -> Result<ReleaseVerifyReport> {
    let m = ReleaseManifest::load(out)?;
    // Each listed file is read only if its path stays inside the release and it is a
    // regular file there (no link followed) of the listed length: a link to
    // `/etc/passwd`, a FIFO or `/dev/zero` is named, never hashed.
    let mut problems: Vec<ReleaseProblem> = m
        .files
        .par_iter()
        .filter_map(|f| {
            if !glass_io::paths::is_inside(&f.path) {
                return Some(ReleaseProblem {
                    path: f.path.clone(),
                    kind: "refused".into(),
                    detail: "manifest.json lists a path outside the release (absolute or with `..`); not read".into(),
                });
            }
            let opened = match glass_io::open::open_beneath(out, &join(out, &f.path)) {
                Ok(o) => o,
                Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => {
                    return Some(ReleaseProblem {
                        path: f.path.clone(),
                        kind: "missing".into(),
                        detail: e.to_string(),
                    })
                }
                Err(e) => {
                    return Some(ReleaseProblem {
                        path: f.path.clone(),
                        kind: "refused".into(),
                        detail: e.source.to_string(),
                    })
                }
            };
            let changed = |detail: String| {
                Some(ReleaseProblem {
                    path: f.path.clone(),
                    kind: "changed".into(),
                    detail,
                })
            };
            if opened.len() != f.bytes {
                return changed(format!(
                    "{} bytes, manifest.json has {} bytes; not hashed",
                    opened.len(),
                    f.bytes
                ));
            }
            match opened.sha256() {
                Ok((sha, _)) if sha == f.sha256 => None,
                Ok((sha, n)) => changed(format!(
                    "sha256 {sha} ({n} bytes), manifest.json has {} ({} bytes)",
                    f.sha256, f.bytes
                )),
                Err(e) => changed(e.source.to_string()),
            }
        })
        .collect();
    let listed: BTreeSet<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    let mut present = Vec::new();
    walk(out, out, &mut present)?;
    for p in present {
        if p != MANIFEST && !listed.contains(p.as_str()) {
            problems.push(ReleaseProblem {
                path: p,
                kind: "extra".into(),
                detail: "not listed in manifest.json".into(),
            });
        }
    }
    // The Glass state of each checkpoint must be the checkpoint the manifest names.
    for c in m.checkpoints.iter().filter(|c| c.with_optimizer) {
        let rel = format!("{}/{GLASS_STATE_DIR}/state.json", c.dir);
        match m.files.iter().find(|f| f.path == rel) {
            Some(f) if f.sha256 == c.checkpoint_sha256 => {}
            Some(f) => problems.push(ReleaseProblem {
                path: rel,
                kind: "inconsistent".into(),
                detail: format!(
                    "manifest.json lists sha256 {} but names checkpoint {} as {}",
                    f.sha256, c.index, c.checkpoint_sha256
                ),
            }),
            None => problems.push(ReleaseProblem {
                path: rel,
                kind: "missing".into(),
                detail: format!(
                    "checkpoint {} is released with optimizer state but manifest.json lists no state.json",
                    c.index
                ),
            }),
        }
    }
    problems.extend(consistency(out, &m));
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(ReleaseVerifyReport {
        manifest_sha256: glass_io::open::sha256_beneath(out, &out.join(MANIFEST), None)?.0,
        files: m.files.len(),
        // The listed sizes are the manifest's claims: summed without overflowing.
        bytes: m.files.iter().fold(0u64, |a, f| a.saturating_add(f.bytes)),
        problems,
    })
}

/// Checks the facts `manifest.json` states against the run records it lists (which are
/// hash-checked above), so an edited manifest is caught too.
fn consistency(out: &Path, m: &ReleaseManifest) -> Vec<ReleaseProblem> {
    let mut p = Vec::new();
    let mut bad = |detail: String| {
        p.push(ReleaseProblem {
            path: MANIFEST.into(),
            kind: "inconsistent".into(),
            detail,
        })
    };
    let sha_of = |rel: &str| {
        m.files
            .iter()
            .find(|f| f.path == rel)
            .map(|f| f.sha256.clone())
    };
    if sha_of("glass/data-manifest.json").as_deref() != Some(m.data_manifest_sha256.as_str()) {
        bad(format!(
            "data_manifest_sha256 {} is not the sha256 of glass/data-manifest.json",
            m.data_manifest_sha256
        ));
    }
    if sha_of("glass/run/glass.toml").as_deref() != Some(m.config_sha256.as_str()) {
        bad(format!(
            "config_sha256 {} is not the sha256 of glass/run/glass.toml",
            m.config_sha256
        ));
    }
    let read = |rel: &str| {
        glass_io::open::read_beneath(out, &join(out, rel), glass_io::open::MAX_RECORD_BYTES)
    };
    let run: Option<glass_run::RunManifest> = read("glass/run/manifest.json")
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    match run {
        None => bad("glass/run/manifest.json is missing or unreadable".into()),
        Some(r) => {
            if r.run_id != m.run_id {
                bad(format!("run_id {} is not the run's {}", m.run_id, r.run_id));
            }
            // The run records name the checkpoint files `glass import release` restores:
            // every path must stay inside the run it creates.
            for f in r.checkpoints.iter().flat_map(|c| &c.files) {
                if !glass_io::paths::is_inside(&f.path) {
                    bad(format!(
                        "glass/run/manifest.json lists `{}`, a path outside the run (absolute or with `..`)",
                        f.path
                    ));
                }
            }
            for c in &m.checkpoints {
                match r.checkpoints.iter().find(|x| x.index == c.index) {
                    Some(x)
                        if x.sha256 == c.checkpoint_sha256
                            && x.step == c.step
                            && x.tokens == c.tokens
                            && x.val_loss == c.val_loss => {}
                    _ => bad(format!(
                        "checkpoint {} (step {}, tokens {}, sha256 {}) does not match the run's record",
                        c.index, c.step, c.tokens, c.checkpoint_sha256
                    )),
                }
                if c.dir != crate::layout::ckpt_dir(c.index) {
                    bad(format!("checkpoint {} has folder {}", c.index, c.dir));
                }
            }
        }
    }
    let data: Option<glass_data::Manifest> = read("glass/data-manifest.json")
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    match data {
        None => bad("glass/data-manifest.json is missing or unreadable".into()),
        Some(d) => {
            if d.row_len as u64 != m.row_len || d.config.rows_per_step as u64 != m.rows_per_step {
                bad(format!(
                    "row_len {} / rows_per_step {} differ from the data manifest's {} / {}",
                    m.row_len, m.rows_per_step, d.row_len, d.config.rows_per_step
                ));
            }
            let want: Vec<(u64, u64, u64)> = d
                .chunks
                .iter()
                .map(|c| (c.index, c.first_step, c.n_steps))
                .collect();
            let got: Vec<(u64, u64, u64)> = m
                .chunks
                .iter()
                .map(|c| (c.chunk, c.first_step, c.n_steps))
                .collect();
            if want != got {
                bad("the chunk list differs from the data manifest's".into());
            }
            for c in &m.chunks {
                if c.n_rows != c.n_steps * m.rows_per_step
                    || c.file != crate::layout::train_file(c.chunk)
                    || c.segments != crate::layout::segments_file(c.chunk)
                {
                    bad(format!(
                        "chunk {} has inconsistent rows or file names",
                        c.chunk
                    ));
                }
            }
        }
    }
    p
}
