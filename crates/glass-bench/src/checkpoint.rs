//! `glass bench checkpoint`: write and load throughput of the checkpoint functions a run
//! uses, with the load measured twice — with the files in the page cache (read once
//! first: large files are written past the page cache) and with them dropped from it
//! first — and the share of pages resident before each load measured, not assumed.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use glass_engine::{AdamW, AdamWConfig, Model, ModelConfig};
use glass_run::checkpoint::{load, write, CheckpointState, FileEntry};
use serde::Serialize;

use crate::error::io;
use crate::{BenchError, Result};

/// What to time.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    /// Model preset.
    pub preset: String,
    /// Directory to write the checkpoints in (a private subdirectory, removed afterwards).
    pub dir: PathBuf,
}

/// One timed load.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFigure {
    /// Share of the checkpoint's pages in the page cache when the load started (0–1).
    pub resident_before: f64,
    /// Load throughput including hash verification, GB/s.
    pub gb_s: f64,
}

/// Result of [`run`].
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

/// Writes one checkpoint of the preset's model under `dir`, then loads it warm and cold.
pub fn run(o: &CheckpointOptions) -> Result<CheckpointBench> {
    let cfg = ModelConfig::preset(&o.preset)?;
    let dir = &o.dir;
    let mut model = Model::new(&cfg, 0)?;
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
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    // A private directory, so benchmarking inside a run can never touch its checkpoints.
    let scratch = tempfile::Builder::new()
        .prefix(".bench-")
        .tempdir_in(dir)
        .map_err(io("creating a scratch folder in", dir))?;
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
        let mut file = File::open(&path).map_err(io("opening", &path))?;
        std::io::copy(&mut file, &mut std::io::sink()).map_err(io("reading", &path))?;
    }
    Ok(())
}

/// Asks the kernel to evict the files' (clean, fsynced) pages from the page cache.
fn drop_from_page_cache(dir: &Path, files: &[FileEntry]) -> Result<()> {
    for f in files {
        let path = dir.join(&f.path);
        let file = File::open(&path).map_err(io("opening", &path))?;
        file.sync_all().map_err(io("syncing", &path))?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid open descriptor; the call only advises the kernel.
            let rc =
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            if rc != 0 {
                return Err(BenchError::Failed(format!(
                    "posix_fadvise on {}: error {rc}",
                    path.display()
                )));
            }
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
        let file = File::open(&path).map_err(io("opening", &path))?;
        if file
            .metadata()
            .map_err(io("reading the size of", &path))?
            .len()
            == 0
        {
            continue;
        }
        // SAFETY: the file is private to this benchmark and nothing truncates it while
        // mapped; the mapping is only passed to mincore, never read.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io("mapping", &path))?;
        let pages = map.len().div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: `map` is a live page-aligned mapping of `map.len()` bytes and `vec`
        // holds one byte per page of it.
        let rc = unsafe { libc::mincore(map.as_ptr() as *mut _, map.len(), vec.as_mut_ptr()) };
        if rc != 0 {
            return Err(BenchError::Failed(format!("mincore on {}", path.display())));
        }
        resident += vec.iter().filter(|&&b| b & 1 == 1).count();
        total += pages;
    }
    Ok(resident as f64 / total.max(1) as f64)
}
