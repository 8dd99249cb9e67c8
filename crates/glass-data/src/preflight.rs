//! Checks `prepare` makes before it replaces or writes anything: it never swaps the data
//! under a run that has trained on it, and never starts writing chunks that cannot fit on
//! the disk (a stage of 2^50 tokens would otherwise fill it, chunk by chunk).

use std::path::Path;

use crate::config::DataConfig;
use crate::error::{DataError, Result};
use crate::manifest::Manifest;
use crate::order::Plan;

/// Refuses to prepare data for `run_dir` when the run has published a checkpoint past 0
/// and the data it trained on was prepared from a different `[data]` table: replacing it
/// would leave checkpoints that no data in the run explains.
pub fn ensure_data_replaceable(run_dir: &Path, cfg: &DataConfig) -> Result<()> {
    let Some(trained) = last_trained_checkpoint(run_dir) else {
        return Ok(());
    };
    let Ok(old) = Manifest::load(run_dir) else {
        return Ok(()); // nothing prepared to replace; `glass verify` checks the pinned hash
    };
    if old.config_sha256 == cfg.hash() {
        return Ok(()); // same [data]: prepare reproduces the same bytes
    }
    let run = run_dir.display();
    Err(DataError::Config(format!(
        "{run} has trained to checkpoint {trained} on data prepared from a different [data] table (sha256 {}); preparing new data would orphan its checkpoints. Restore the [data] table in {run}/glass.toml, or branch: create a new run directory with the new glass.toml, run `glass data prepare NEW`, then `glass train NEW --from {run} --checkpoint {trained}`",
        old.config_sha256
    )))
}

/// Index of the last checkpoint past 0 that `RUN/manifest.json` lists, if any. Read
/// loosely (only `checkpoints[].index`): this crate does not own the run format, and an
/// unreadable run manifest is for `glass verify` to report.
fn last_trained_checkpoint(run_dir: &Path) -> Option<u64> {
    let bytes = glass_io::open::read_beneath(
        run_dir,
        &run_dir.join("manifest.json"),
        glass_io::open::MAX_RECORD_BYTES,
    )
    .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("checkpoints")?
        .as_array()?
        .iter()
        .filter_map(|c| c.get("index")?.as_u64())
        .filter(|&i| i > 0)
        .max()
}

/// Refuses to start when the chunks of `cfg` cannot fit on the disk holding
/// `RUN/data`: checked before tokenizing, so an absurd stage fails at once.
pub fn ensure_chunks_fit(run_dir: &Path, cfg: &DataConfig) -> Result<()> {
    // The narrowest token width the config allows: refuse only what surely cannot fit.
    let width = match (cfg.token_dtype, cfg.tokenizer.vocab_size) {
        (crate::config::DtypeChoice::U32, _) => 4,
        (_, Some(v)) if v > 65536 => 4,
        _ => 2,
    };
    let data_dir = run_dir.join("data");
    let probe = if data_dir.exists() {
        data_dir.clone()
    } else {
        run_dir.to_path_buf()
    };
    // Chunks being replaced free their space.
    let existing: u64 = std::fs::read_dir(data_dir.join("chunks"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    ensure_disk_space(&probe, &Plan::new(cfg), width, existing)
}

/// Refuses to write the chunks of `plan` when they cannot fit in the free space of the
/// file system holding `data_dir` plus `reclaimed` bytes (tokens at `width` bytes each,
/// plus segment records).
pub fn ensure_disk_space(data_dir: &Path, plan: &Plan, width: usize, reclaimed: u64) -> Result<()> {
    let tokens = plan
        .n_steps
        .checked_mul(plan.rows_per_step)
        .and_then(|r| r.checked_mul(plan.row_len as u64));
    // Segment records: at most one per token, usually a few per row; count one per row.
    let rows = plan.n_steps.checked_mul(plan.rows_per_step);
    let need = tokens
        .and_then(|t| t.checked_mul(width as u64))
        .zip(rows.and_then(|r| r.checked_mul(crate::pack::SEGMENT_BYTES as u64)))
        .and_then(|(a, b)| a.checked_add(b));
    let avail = glass_io::disk::available_disk(data_dir).map(|a| a.saturating_add(reclaimed));
    match (need, avail) {
        (None, _) => Err(DataError::Config(format!(
            "the stages add up to more token bytes than can be counted ({} steps of {} rows); lower the stage tokens",
            plan.n_steps, plan.rows_per_step
        ))),
        (Some(need), Some(avail)) if need > avail => Err(DataError::Config(format!(
            "{}: the chunks need {:.2} GB ({} steps × {} rows × {} tokens × {width} bytes) but the disk has {:.2} GB free; lower the stage tokens or free space",
            data_dir.display(),
            need as f64 / 1e9,
            plan.n_steps,
            plan.rows_per_step,
            plan.row_len,
            avail as f64 / 1e9
        ))),
        _ => Ok(()),
    }
}
