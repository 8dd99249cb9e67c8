//! `glass import release OUT RUN`: a release written with `--with-optimizer` back into a
//! Glass run that replays and continues bit for bit.
//!
//! - Checkpoint files are restored from `ckpt_KKK/glass/` (state, optimizer moments) and,
//!   for the weights, converted from the transformers folder (exact f32) or taken from
//!   `glass/model.safetensors` where the folder's weights were rounded or folded. Each
//!   restored file must have the sha256 the run's manifest pins, so the checkpoints are
//!   the published ones, not approximations.
//! - The data is rebuilt from the run's config (`glass/run/glass.toml`) by `glass data
//!   prepare`, then required to be the released data: its manifest must have the pinned
//!   sha256, and every row of every `data/train_NNN.jsonl` must equal the rebuilt row.
//!   The sources must therefore be reachable from the new run (embedded sources always
//!   are; file sources at the paths the config names).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use glass_io::atomic::sync_dir;
use glass_run::checkpoint::{CheckpointState, MODEL_FILE, STATE_FILE};
use glass_run::metrics::CheckpointRow;
use glass_run::{Metrics, RunManifest};
use serde::Serialize;
use serde_json::json;

use crate::error::{file_err, io, ReleaseError, Result};
use crate::layout::{join, ReleaseManifest, GLASS_STATE_DIR, RUN_FILES};
use crate::write::copy_hashed;

/// What [`import_release`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReleaseReport {
    /// The new run.
    pub run_dir: PathBuf,
    /// Checkpoints restored.
    pub checkpoints: Vec<u32>,
    /// Weights converted from transformers folders (the rest came from `glass/`).
    pub converted_weights: usize,
    /// sha256 of the rebuilt data manifest (equal to the released one).
    pub data_manifest_sha256: String,
    /// JSONL rows compared with the rebuilt data.
    pub rows_checked: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Creates the run `run_dir` from the release `out`. `progress` receives one line per
/// stage of the work.
pub fn import_release(
    out: &Path,
    run_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<ImportReleaseReport> {
    let t0 = Instant::now();
    let m = ReleaseManifest::load(out)?;
    progress("verifying the release");
    let v = crate::verify::verify_release(out)?;
    if !v.ok() {
        let list: Vec<String> = v
            .problems
            .iter()
            .map(|p| format!("{} ({}: {})", p.path, p.kind, p.detail))
            .collect();
        return Err(ReleaseError::Invalid(format!(
            "{}: the release does not verify; restore these files first: {}",
            out.display(),
            list.join("; ")
        )));
    }
    for (i, c) in m.checkpoints.iter().enumerate() {
        if !c.with_optimizer {
            return Err(ReleaseError::Invalid(format!(
                "{}: checkpoint {} has no optimizer state; only a release written with `glass release --with-optimizer` can become a run that continues training",
                out.display(),
                c.index
            )));
        }
        if c.index as usize != i {
            return Err(ReleaseError::Invalid(format!(
                "{}: the release holds checkpoints {:?}; a run needs every checkpoint from 0 up to its last (release with --checkpoints all)",
                out.display(),
                m.checkpoints.iter().map(|c| c.index).collect::<Vec<_>>()
            )));
        }
    }
    if run_dir.exists()
        && std::fs::read_dir(run_dir)
            .map_err(io(run_dir))?
            .next()
            .is_some()
    {
        return Err(file_err(
            run_dir,
            "already exists and is not empty; import into a new run directory",
        ));
    }
    let (parent, tmp) = crate::import::staging_dir(run_dir)?;
    let dir = tmp.path();

    // Run records (the manifest is written last).
    for n in RUN_FILES {
        let src = join(out, &format!("glass/run/{n}"));
        if *n != "manifest.json" && src.exists() {
            copy_hashed(out, &src, &dir.join(n))?;
        }
    }
    let rm_path = join(out, "glass/run/manifest.json");
    let mut rm: RunManifest = serde_json::from_slice(&glass_io::open::read_beneath(
        out,
        &rm_path,
        glass_io::open::MAX_RECORD_BYTES,
    )?)
    .map_err(|e| file_err(&rm_path, e.to_string()))?;
    // Every checkpoint file the run records name is restored at that path: none may leave
    // the run being created.
    if let Some(p) = glass_run::integrity::manifest_problems(&rm)
        .into_iter()
        .next()
    {
        return Err(file_err(&rm_path, p.problem));
    }
    rm.checkpoints.truncate(m.checkpoints.len());
    let cfg = glass_run::RunConfig::load(dir)?;

    // Checkpoints.
    let mut converted = 0;
    let mut rows_meta = Vec::new();
    for (c, entry) in m.checkpoints.iter().zip(&rm.checkpoints) {
        progress(&format!(
            "restoring checkpoint {} (step {})",
            c.index, c.step
        ));
        if entry.sha256 != c.checkpoint_sha256 {
            return Err(file_err(
                &rm_path,
                format!("checkpoint {} hash differs from manifest.json's", c.index),
            ));
        }
        let ckpt = join(out, &c.dir);
        let state_dir = ckpt.join(GLASS_STATE_DIR);
        for f in &entry.files {
            let base = f.path.rsplit('/').next().unwrap_or(&f.path);
            let dst = join(dir, &f.path);
            if let Some(p) = dst.parent() {
                std::fs::create_dir_all(p).map_err(io(p))?;
            }
            let sha = if base == MODEL_FILE && !state_dir.join(MODEL_FILE).exists() {
                let (model, ..) = glass_hf::load_folder(&ckpt)?;
                if model.cfg != cfg.model {
                    return Err(file_err(
                        ckpt.join("config.json"),
                        "describes another architecture than glass/run/glass.toml [model]",
                    ));
                }
                converted += 1;
                glass_run::checkpoint::write_model_file(&dst, &model)?.0
            } else {
                copy_hashed(out, &state_dir.join(base), &dst)?.0
            };
            if sha != f.sha256 {
                return Err(file_err(
                    &ckpt,
                    format!(
                        "rebuilt {base} has sha256 {sha}, the run's manifest pins {}; the checkpoint cannot be restored exactly",
                        f.sha256
                    ),
                ));
            }
        }
        let state_path = join(
            dir,
            &entry
                .files
                .iter()
                .find(|f| f.path.ends_with(STATE_FILE))
                .map_or(String::new(), |f| f.path.clone()),
        );
        let st: CheckpointState = serde_json::from_slice(&glass_io::open::read_beneath(
            dir,
            &state_path,
            glass_io::open::MAX_RECORD_BYTES,
        )?)
        .map_err(|e| file_err(&state_path, e.to_string()))?;
        rows_meta.push(CheckpointRow {
            checkpoint: c.index,
            step: c.step,
            tokens: c.tokens,
            val_loss: st.val_loss,
            val_bpb: st.val_bpb,
        });
        for d in entry
            .files
            .iter()
            .filter_map(|f| join(dir, &f.path).parent().map(Path::to_path_buf))
        {
            sync_dir(&d)?;
        }
    }

    // Data: rebuilt from the config, then required to be the released data.
    progress("rebuilding the data from glass.toml (glass data prepare)");
    glass_data::prepare(dir, &glass_data::PrepareOptions::default()).map_err(|e| {
        ReleaseError::Invalid(format!(
            "rebuilding the data of {} failed: {e}; the sources named in glass/run/glass.toml [data] must be reachable from the new run",
            run_dir.display()
        ))
    })?;
    let (data_sha, _) =
        glass_io::open::sha256_beneath(dir, &dir.join("data").join("manifest.json"), None)?;
    if data_sha != m.data_manifest_sha256 {
        return Err(ReleaseError::Invalid(format!(
            "the rebuilt data manifest has sha256 {data_sha}, the release pins {} (glass/data-manifest.json): the sources differ from those the run trained on; restore them",
            m.data_manifest_sha256
        )));
    }
    progress("comparing every released row with the rebuilt data");
    let rows_checked = compare_rows(out, dir, &m)?;

    rm.save(dir)?;
    {
        let metrics = Metrics::open(dir)?;
        for r in &rows_meta {
            metrics.checkpoint(r)?;
        }
        metrics.event(
            Some(rm.checkpoints.last().map_or(0, |c| c.step)),
            "import",
            json!({"format": "glass-release", "source_dir": out.display().to_string(),
                   "release_manifest_sha256": v.manifest_sha256}),
        )?;
    }
    sync_dir(dir)?;
    if run_dir.exists() {
        std::fs::remove_dir(run_dir).map_err(io(run_dir))?;
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, run_dir).map_err(|e| {
        let _ = std::fs::remove_dir_all(&kept);
        io(run_dir)(e)
    })?;
    sync_dir(&parent)?;
    Ok(ImportReleaseReport {
        run_dir: run_dir.to_path_buf(),
        checkpoints: m.checkpoints.iter().map(|c| c.index).collect(),
        converted_weights: converted,
        data_manifest_sha256: data_sha,
        rows_checked,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Every `train_NNN.jsonl` row must equal row for row the prepared chunk of `run_dir`.
fn compare_rows(out: &Path, run_dir: &Path, m: &ReleaseManifest) -> Result<u64> {
    #[derive(serde::Deserialize)]
    struct Row {
        token_ids: Vec<u32>,
    }
    let chunks_dir = run_dir.join("data").join("chunks");
    let mut n = 0u64;
    let mut ids = Vec::new();
    for c in &m.chunks {
        let h = glass_data::chunk::read_header(
            run_dir,
            &chunks_dir,
            &glass_data::chunk::chunk_stem(c.chunk),
        )?;
        let p = join(out, &c.file);
        let f = glass_io::open::open_beneath(out, &p)?.into_file();
        let mut lines = std::io::BufReader::with_capacity(1 << 20, f).lines();
        let mut r = 0u64;
        while r < h.n_rows {
            let k = crate::data::BLOCK_ROWS.min(h.n_rows - r);
            ids.clear(); // read_rows appends
            glass_data::chunk::read_rows(run_dir, &chunks_dir, &h, r, k, &mut ids)?;
            for j in 0..k {
                let line = lines
                    .next()
                    .ok_or_else(|| {
                        file_err(&p, format!("has {} rows, the data has {}", r + j, h.n_rows))
                    })?
                    .map_err(io(&p))?;
                let row: Row = serde_json::from_str(&line)
                    .map_err(|e| file_err(&p, format!("line {}: {e}", r + j + 1)))?;
                let want = &ids[j as usize * h.row_len..(j as usize + 1) * h.row_len];
                if row.token_ids != want {
                    return Err(file_err(
                        &p,
                        format!("line {} differs from the rebuilt training row", r + j + 1),
                    ));
                }
            }
            r += k;
            n += k;
        }
        if lines.next().is_some() {
            return Err(file_err(
                &p,
                format!("has more than the data's {} rows", h.n_rows),
            ));
        }
    }
    Ok(n)
}

/// A private directory beside `run_dir` where an import is assembled, so the run appears
/// whole (one rename) or not at all; returns it with `run_dir`'s parent.
pub(crate) fn staging_dir(run_dir: &Path) -> Result<(PathBuf, tempfile::TempDir)> {
    let parent = match run_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let name = run_dir
        .file_name()
        .map_or("run".into(), |n| n.to_string_lossy().into_owned());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.import-"))
        .tempdir_in(&parent)
        .map_err(io(&parent))?;
    Ok((parent, tmp))
}
