//! `glass bench checkpoint`: write and load throughput of the checkpoint functions a run
//! uses, with the load measured twice — with the files in the page cache (read once
//! first: large files are written past the page cache) and with them dropped from it
//! first — and the share of pages resident before each load measured, not assumed.

use std::fs::File;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use glass_engine::{AdamW, AdamWConfig, Model, ModelConfig};
use glass_run::checkpoint::{load, write, CheckpointState, FileEntry};
use serde::Serialize;

/// One timed load.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFigure {
    /// Share of the checkpoint's pages in the page cache when the load started (0–1).
    pub resident_before: f64,
    /// Load throughput including hash verification, GB/s.
    pub gb_s: f64,
}

/// Result of [`bench`].
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointBench {
    /// Bytes written (model + optimizer + state).
    pub bytes: u64,
    /// Write throughput including hashing and fsync, GB/s.
    pub write_gb_s: f64,
    /// Load with the files read once just before (pages cached).
    pub warm_load: LoadFigure,
    /// Load after `posix_fadvise(POSIX_FADV_DONTNEED)` on every file.
    pub cold_load: LoadFigure,
}

/// Writes one checkpoint of a model of `cfg` under `dir`, then loads it warm and cold.
pub fn bench(dir: &Path, cfg: &ModelConfig) -> Result<CheckpointBench> {
    let mut model = Model::new(cfg, 0)?;
    let mut opt = AdamW::new(AdamWConfig::default(), model.params.len());
    let mut state = CheckpointState {
        format_version: glass_run::manifest::FORMAT_VERSION,
        engine: glass_engine::engine_id(),
        index: 1,
        step: 1,
        tokens: 0,
        lr: 0.0,
        optimizer_step: 0,
        init_seed: 0,
        skipped_steps: vec![],
        recent_losses: vec![],
        config_sha256: String::new(),
        data_manifest_sha256: String::new(),
        parent_checkpoint_sha256: None,
        model_sha256: String::new(),
        optimizer_sha256: String::new(),
        val_loss: None,
        val_bpb: None,
        grad_groups: None,
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // A private directory, so benchmarking inside a run can never touch its checkpoints.
    let scratch = tempfile::Builder::new()
        .prefix(".bench-")
        .tempdir_in(dir)
        .with_context(|| format!("creating a scratch folder in {}", dir.display()))?;
    let dir = scratch.path();
    let t = Instant::now();
    let (files, _) = write(dir, &model, &opt, &mut state)?;
    let write_s = t.elapsed().as_secs_f64();
    let bytes: u64 = files.iter().map(|f| f.bytes).sum();
    let timed_load = |model: &mut Model, opt: &mut AdamW| -> Result<LoadFigure> {
        let resident_before = resident_share(dir, &files)?;
        let t = Instant::now();
        load(dir, &files, model, opt)?;
        Ok(LoadFigure {
            resident_before,
            gb_s: bytes as f64 / t.elapsed().as_secs_f64() / 1e9,
        })
    };
    read_through_page_cache(dir, &files)?;
    let warm_load = timed_load(&mut model, &mut opt)?;
    drop_from_page_cache(dir, &files)?;
    let cold_load = timed_load(&mut model, &mut opt)?;
    Ok(CheckpointBench {
        bytes,
        write_gb_s: bytes as f64 / write_s / 1e9,
        warm_load,
        cold_load,
    })
}

/// Reads the files once, so their pages are in the page cache (a checkpoint's large files
/// are written by `O_DIRECT`, past it).
fn read_through_page_cache(dir: &Path, files: &[FileEntry]) -> Result<()> {
    for f in files {
        let path = dir.join(&f.path);
        let mut file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        std::io::copy(&mut file, &mut std::io::sink())
            .with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(())
}

/// Asks the kernel to evict the files' (clean, fsynced) pages from the page cache.
fn drop_from_page_cache(dir: &Path, files: &[FileEntry]) -> Result<()> {
    for f in files {
        let path = dir.join(&f.path);
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        file.sync_all()?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid open descriptor; the call only advises the kernel.
            let rc =
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            anyhow::ensure!(rc == 0, "posix_fadvise on {}: error {rc}", path.display());
        }
    }
    Ok(())
}

/// Share of the files' pages resident in the page cache (`mincore` over a mapping).
fn resident_share(dir: &Path, files: &[FileEntry]) -> Result<f64> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
    let (mut resident, mut total) = (0usize, 0usize);
    for f in files {
        let path = dir.join(&f.path);
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        if file.metadata()?.len() == 0 {
            continue;
        }
        // SAFETY: the file is private to this benchmark and nothing truncates it while
        // mapped; the mapping is only passed to mincore, never read.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("mapping {}", path.display()))?;
        let pages = map.len().div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: `map` is a live page-aligned mapping of `map.len()` bytes and `vec`
        // holds one byte per page of it.
        let rc = unsafe { libc::mincore(map.as_ptr() as *mut _, map.len(), vec.as_mut_ptr()) };
        anyhow::ensure!(rc == 0, "mincore on {}", path.display());
        resident += vec.iter().filter(|&&b| b & 1 == 1).count();
        total += pages;
    }
    Ok(resident as f64 / total.max(1) as f64)
}

/// Runs `glass bench checkpoint` and prints its figures.
pub fn run(preset: &str, dir: &Path, json: bool) -> Result<()> {
    let r = bench(dir, &ModelConfig::preset(preset)?)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "{preset}: {:.2} GB checkpoint (weights + optimizer + state)",
        r.bytes as f64 / 1e9
    );
    println!(
        "  write (hash + fsync)                {:>7.2} GB/s",
        r.write_gb_s
    );
    for (name, l) in [("warm", &r.warm_load), ("cold", &r.cold_load)] {
        println!(
            "  load, {name} ({:>5.1}% of pages cached) {:>7.2} GB/s (hash-checked)",
            100.0 * l.resident_before,
            l.gb_s
        );
    }
    if r.cold_load.resident_before > 0.05 {
        println!(
            "  note: the kernel kept {:.0}% of the pages cached despite POSIX_FADV_DONTNEED; the cold figure is optimistic",
            100.0 * r.cold_load.resident_before
        );
    }
    Ok(())
}
