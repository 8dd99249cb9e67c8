//! `glass release RUN OUT`: writes a run as a release, part by part (run records, each
//! data chunk, each checkpoint, metrics), each part atomically. A completed part leaves a
//! record with its files' hashes in `OUT/.release-partial/`; a rerun after an
//! interruption re-hashes those files and skips every part that is complete and intact,
//! so at most one part is ever redone. `manifest.json` is written last: its presence
//! marks a complete release.

use std::path::{Path, PathBuf};
use std::time::Instant;

use glass_data::store::SourceView;
use glass_data::PreparedData;
use glass_hf::ExportDtype;
use glass_io::atomic::{sha256_file, sync_dir, write_atomic, write_atomic_all, AtomicFile};
use glass_run::manifest::CheckpointEntry;
use glass_run::{RunConfig, RunManifest};
use serde::{Deserialize, Serialize};

use crate::error::{file_err, io, ReleaseError, Result};
use crate::layout::{
    ckpt_dir, join, segments_file, train_file, ReleaseFile, ReleaseManifest, ReleasedCheckpoint,
    ReleasedChunk, GLASS_STATE_DIR, MANIFEST, PARTIAL_DIR, RELEASE_FORMAT, RUN_FILES,
};

/// Which checkpoints a release holds: the run's one checkpoint selection (recorded in
/// the release's state as it always was).
pub type CheckpointSelection = glass_run::Selection;

/// Options of [`write_release`].
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    /// Checkpoints to publish.
    pub checkpoints: CheckpointSelection,
    /// Weight dtype of the transformers folders.
    pub dtype: ExportDtype,
    /// Also publish each checkpoint's exact training state (optimizer moments, state).
    pub with_optimizer: bool,
}

/// One finished part, for progress reporting.
#[derive(Debug, Clone, Serialize)]
pub struct PartDone {
    /// `run`, `data 3/12`, `checkpoint 5 (3/26)`, `metrics`, `card`.
    pub part: String,
    /// Parts done so far, this one included.
    pub done: usize,
    /// Parts in total.
    pub total: usize,
    /// Bytes of this part's files.
    pub bytes: u64,
    /// True when an intact copy from an interrupted release was kept.
    pub skipped: bool,
    /// Seconds this part took.
    pub seconds: f64,
}

/// What [`write_release`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseReport {
    /// The release directory.
    pub out: PathBuf,
    /// Checkpoint indices published.
    pub checkpoints: Vec<u32>,
    /// Data chunks published.
    pub chunks: u64,
    /// Files in the manifest (plus the manifest itself).
    pub files: usize,
    /// Bytes of all files.
    pub bytes: u64,
    /// Bytes written by this invocation (parts kept from an interrupted one excluded).
    pub written_bytes: u64,
    /// Parts kept from an interrupted release.
    pub skipped_parts: Vec<String>,
    /// Wall time.
    pub seconds: f64,
}

/// The record of one completed part.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct PartRecord {
    part: String,
    files: Vec<ReleaseFile>,
}

/// What must stay the same for an interrupted release to be resumed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Identity {
    format: String,
    run_id: String,
    run_manifest_sha256: String,
    data_manifest_sha256: String,
    checkpoints: Vec<u32>,
    dtype: String,
    with_optimizer: bool,
}

fn dtype_name(d: ExportDtype) -> &'static str {
    match d {
        ExportDtype::F32 => "float32",
        ExportDtype::BF16 => "bfloat16",
        ExportDtype::F16 => "float16",
    }
}

/// Copies `src` (a regular file beneath `src_root`, no link followed) to `dst`
/// atomically and hashes what was written ([`AtomicFile::copy_from`]: the kernel copies
/// while a second thread hashes).
pub(crate) fn copy_hashed(src_root: &Path, src: &Path, dst: &Path) -> Result<(String, u64)> {
    let mut f = glass_io::open::open_beneath(src_root, src)?.into_file();
    let mut out = AtomicFile::create(dst)?;
    out.copy_from(&mut f, src)?;
    Ok(out.commit()?)
}

fn part_path(out: &Path, part: &str) -> PathBuf {
    out.join(PARTIAL_DIR).join(format!("{part}.json"))
}

/// The files of a completed part if its record exists and every file still hashes right.
fn completed(out: &Path, part: &str) -> Option<Vec<ReleaseFile>> {
    let b =
        glass_io::open::read_beneath(out, &part_path(out, part), glass_io::open::MAX_RECORD_BYTES)
            .ok()?;
    let rec: PartRecord = serde_json::from_slice(&b).ok()?;
    if rec.part != part {
        return None;
    }
    for f in &rec.files {
        if !glass_io::paths::is_inside(&f.path) {
            return None;
        }
        match glass_io::open::sha256_beneath(out, &join(out, &f.path), Some(f.bytes)) {
            Ok((sha, n)) if sha == f.sha256 && n == f.bytes => {}
            _ => return None,
        }
    }
    Some(rec.files)
}

fn record(out: &Path, part: &str, files: &[ReleaseFile]) -> Result<()> {
    let rec = PartRecord {
        part: part.to_string(),
        files: files.to_vec(),
    };
    write_atomic(
        &part_path(out, part),
        &serde_json::to_vec_pretty(&rec).expect("record serialises"),
    )?;
    Ok(())
}

fn remove_dir_if_exists(p: &Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(p)(e)),
    }
}

/// Writes `run_dir` as a release in `out` (new, or an interrupted release of the same run
/// with the same options, which is resumed). `progress` is called after every part.
pub fn write_release(
    run_dir: &Path,
    out: &Path,
    opts: &ReleaseOptions,
    progress: &mut dyn FnMut(&PartDone),
) -> Result<ReleaseReport> {
    let t0 = Instant::now();
    let cfg = RunConfig::load(run_dir)?;
    let m = RunManifest::require(run_dir)?;
    let data_manifest = run_dir.join("data").join("manifest.json");
    if !data_manifest.exists() {
        return Err(ReleaseError::Invalid(format!(
            "{}: the run has no prepared data; run `glass data prepare {}` first (a release publishes the data with the checkpoints)",
            run_dir.display(),
            run_dir.display()
        )));
    }
    let (data_sha, _) = glass_io::open::sha256_beneath(run_dir, &data_manifest, None)?;
    if !m.data_manifest_sha256.is_empty() && m.data_manifest_sha256 != data_sha {
        return Err(file_err(
            &data_manifest,
            format!(
                "the prepared data changed since the run trained on it (manifest.json pins {}, the file is {data_sha}); restore it before releasing",
                m.data_manifest_sha256
            ),
        ));
    }
    if m.weights_only && opts.with_optimizer {
        return Err(ReleaseError::Invalid(format!(
            "{}: --with-optimizer: this run was imported with --weights-only and holds no optimizer state; release its weights (without --with-optimizer), or import the source again without --weights-only for a trainable run",
            run_dir.display()
        )));
    }
    let data = PreparedData::open(run_dir)?;
    let ckpts = opts.checkpoints.checkpoints(&m)?;
    if ckpts.is_empty() {
        return Err(ReleaseError::Invalid("the run has no checkpoint".into()));
    }
    let (run_manifest_sha, _) =
        glass_io::open::sha256_beneath(run_dir, &RunManifest::path(run_dir), None)?;
    let identity = Identity {
        format: RELEASE_FORMAT.into(),
        run_id: m.run_id.clone(),
        run_manifest_sha256: run_manifest_sha,
        data_manifest_sha256: data_sha.clone(),
        checkpoints: ckpts.iter().map(|c| c.index).collect(),
        dtype: dtype_name(opts.dtype).into(),
        with_optimizer: opts.with_optimizer,
    };
    // A release is written into a directory of plain files and folders: a link in an
    // unfinished release (or in the directory given) is refused before anything is
    // written, so nothing is written through it.
    if let Some(link) = glass_io::open::first_link_beneath(out)? {
        return Err(file_err(
            link,
            "is a symbolic link (or not a regular file or directory) inside the release directory; Glass writes a release only into plain files and folders: remove it",
        ));
    }
    start_or_resume(out, &identity)?;
    remove_leftovers(out)?;

    let dm = data.manifest();
    let n_chunks = dm.chunks.len();
    let total = 1 + n_chunks + ckpts.len() + 2;
    let mut parts = Parts {
        out,
        total,
        done: 0,
        files: Vec::new(),
        skipped: Vec::new(),
        written: 0,
        progress,
    };

    // The run's own records and the tokenizer.
    parts.run("run", "run records".into(), || {
        write_run_files(run_dir, out, &data)
    })?;

    // Data chunks, interleaved with the checkpoints that close them.
    let mut chunks = ChunkWriter {
        run_dir,
        data: &data,
        views: (0..dm.config.sources.len()).map(|_| None).collect(),
        next: 0,
        released: Vec::new(),
    };
    let mut released_ckpts = Vec::new();
    // A checkpoint starts while the one before it finishes: the start is mostly hashing
    // and the finish mostly waiting for the disk, so the two overlap. Only exact f32
    // folders are streamed from the mapped checkpoint; any other dtype holds the weights
    // in memory, so those checkpoints go one at a time.
    let streamed = exact_weights(&cfg, opts.dtype)?;
    std::thread::scope(|s| -> Result<()> {
        let mut pending: Option<Pending> = None;
        for (i, c) in ckpts.iter().enumerate() {
            chunks.until(c.step, &mut parts)?;
            if !streamed {
                if let Some(p) = pending.take() {
                    p.settle(&mut parts)?;
                }
            }
            let part = format!("ckpt-{:05}", c.index);
            let work = match completed(out, &part) {
                Some(files) => Work::Kept(files),
                None => Work::Running(
                    s.spawn(move || write_checkpoint(run_dir, out, c, opts, streamed)),
                ),
            };
            let next = Pending {
                part,
                label: format!("checkpoint {} ({}/{})", c.index, i + 1, ckpts.len()),
                started: Instant::now(),
                work,
            };
            if let Some(p) = pending.replace(next) {
                p.settle(&mut parts)?;
            }
            released_ckpts.push(ReleasedCheckpoint {
                index: c.index,
                step: c.step,
                tokens: c.tokens,
                checkpoint_sha256: c.sha256.clone(),
                val_loss: c.val_loss,
                dir: ckpt_dir(c.index),
                with_optimizer: opts.with_optimizer,
            });
        }
        if let Some(p) = pending.take() {
            p.settle(&mut parts)?;
        }
        Ok(())
    })?;
    chunks.until(u64::MAX, &mut parts)?;

    // Metrics, then the card (which quotes hashes and metrics), then the manifest.
    let metrics = crate::metrics::collect(run_dir)?;
    parts.run("metrics", "metrics".into(), || {
        crate::metrics::write(out, &metrics)
    })?;
    let mut manifest = ReleaseManifest {
        format: RELEASE_FORMAT.into(),
        glass_version: env!("CARGO_PKG_VERSION").into(),
        run_name: cfg.run.name.clone(),
        run_id: m.run_id.clone(),
        config_sha256: m.config_sha256.clone(),
        data_manifest_sha256: data_sha,
        dtype: dtype_name(opts.dtype).into(),
        rows_per_step: data.rows_per_step() as u64,
        row_len: data.row_len() as u64,
        checkpoints: released_ckpts,
        chunks: chunks.released,
        files: vec![],
    };
    let card = crate::card::card(&cfg, &data, &manifest, &parts.files, &metrics);
    parts.run("card", "card".into(), || {
        write_atomic(&out.join("README.md"), card.as_bytes())?;
        Ok(vec![ReleaseFile {
            path: "README.md".into(),
            sha256: glass_io::atomic::sha256_hex(card.as_bytes()),
            bytes: card.len() as u64,
        }])
    })?;
    let Parts {
        files: mut all,
        skipped: skipped_parts,
        written,
        ..
    } = parts;
    all.sort_by(|a, b| a.path.cmp(&b.path));
    let bytes: u64 = all.iter().map(|f| f.bytes).sum();
    manifest.files = all;
    let mut mb = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    mb.push(b'\n');
    write_atomic(&out.join(MANIFEST), &mb)?;
    remove_dir_if_exists(&out.join(PARTIAL_DIR))?;
    sync_dir(out)?;
    Ok(ReleaseReport {
        out: out.to_path_buf(),
        checkpoints: manifest.checkpoints.iter().map(|c| c.index).collect(),
        chunks: manifest.chunks.len() as u64,
        files: manifest.files.len() + 1,
        bytes: bytes + mb.len() as u64,
        written_bytes: written + mb.len() as u64,
        skipped_parts,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Runs the parts of a release in order, skipping those an interrupted release completed.
struct Parts<'a> {
    out: &'a Path,
    total: usize,
    done: usize,
    files: Vec<ReleaseFile>,
    skipped: Vec<String>,
    written: u64,
    progress: &'a mut dyn FnMut(&PartDone),
}

impl Parts<'_> {
    /// Keeps part `part` if an intact copy is recorded, else writes it with `f` and
    /// records it.
    fn run(
        &mut self,
        part: &str,
        label: String,
        f: impl FnOnce() -> Result<Vec<ReleaseFile>>,
    ) -> Result<()> {
        let t = Instant::now();
        let outcome = match completed(self.out, part) {
            Some(files) => Outcome::Kept(files),
            None => Outcome::Written(f()),
        };
        self.settle(part, label, t, outcome)
    }

    /// Records a part once its files are written (or kept) and reports it.
    fn settle(&mut self, part: &str, label: String, t: Instant, outcome: Outcome) -> Result<()> {
        let (files, skipped) = match outcome {
            Outcome::Kept(files) => (files, true),
            Outcome::Written(files) => {
                let files = files?;
                record(self.out, part, &files)?;
                glass_run::fault::point("release-after-part");
                (files, false)
            }
        };
        let bytes = files.iter().map(|f| f.bytes).sum();
        self.done += 1;
        if skipped {
            self.skipped.push(label.clone());
        } else {
            self.written += bytes;
        }
        (self.progress)(&PartDone {
            part: label,
            done: self.done,
            total: self.total,
            bytes,
            skipped,
            seconds: t.elapsed().as_secs_f64(),
        });
        self.files.extend(files);
        Ok(())
    }
}

/// A part's files: kept from an interrupted release, or just written.
enum Outcome {
    Kept(Vec<ReleaseFile>),
    Written(Result<Vec<ReleaseFile>>),
}

/// A checkpoint part under way on its own thread.
struct Pending<'scope> {
    part: String,
    label: String,
    started: Instant,
    work: Work<'scope>,
}

enum Work<'scope> {
    Kept(Vec<ReleaseFile>),
    Running(std::thread::ScopedJoinHandle<'scope, Result<Vec<ReleaseFile>>>),
}

impl Pending<'_> {
    /// Waits for the part and records it.
    fn settle(self, parts: &mut Parts<'_>) -> Result<()> {
        let outcome = match self.work {
            Work::Kept(files) => Outcome::Kept(files),
            Work::Running(h) => Outcome::Written(
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            ),
        };
        parts.settle(&self.part, self.label, self.started, outcome)
    }
}

/// Writes the data chunks in order, as the checkpoints that close them come up.
struct ChunkWriter<'a> {
    run_dir: &'a Path,
    data: &'a PreparedData,
    views: Vec<Option<SourceView>>,
    next: usize,
    released: Vec<ReleasedChunk>,
}

impl ChunkWriter<'_> {
    /// Writes every chunk that ends at or before `step`.
    fn until(&mut self, step: u64, parts: &mut Parts<'_>) -> Result<()> {
        let dm = self.data.manifest();
        let n = dm.chunks.len();
        while self.next < n {
            let rec = &dm.chunks[self.next];
            if rec.first_step + rec.n_steps > step {
                break;
            }
            let stem = glass_data::chunk::chunk_stem(rec.index);
            let chunks_dir = dm.chunk_dir(self.run_dir, &stem);
            let h = glass_data::chunk::read_header(
                &dm.root_of(self.run_dir, &format!("chunks/{stem}.json")),
                &chunks_dir,
                &glass_data::chunk::chunk_stem(rec.index),
            )?;
            let (rows_rel, seg_rel) = (train_file(rec.index), segments_file(rec.index));
            let out = parts.out;
            let views = &mut self.views;
            parts.run(
                &format!("data-{:05}", rec.index),
                format!("data chunk {} ({}/{n})", rec.index, self.next + 1),
                || {
                    Ok(crate::data::write_chunk(
                        self.run_dir,
                        self.data,
                        &h,
                        out,
                        &rows_rel,
                        &seg_rel,
                        views,
                    )?
                    .to_vec())
                },
            )?;
            self.released.push(ReleasedChunk {
                chunk: rec.index,
                first_step: rec.first_step,
                n_steps: rec.n_steps,
                n_rows: h.n_rows,
                file: rows_rel,
                segments: seg_rel,
            });
            self.next += 1;
        }
        Ok(())
    }
}

/// Creates `out` (or checks that it holds an interrupted release of the same run with
/// the same options).
fn start_or_resume(out: &Path, identity: &Identity) -> Result<()> {
    let id_path = out.join(PARTIAL_DIR).join("identity.json");
    if out.join(MANIFEST).exists() {
        return Err(file_err(
            out,
            "already holds a complete release; check it with `glass verify OUT`, or release into a new directory",
        ));
    }
    if out.exists() {
        let empty = std::fs::read_dir(out).map_err(io(out))?.next().is_none();
        if !empty {
            let b = glass_io::open::read_beneath(out, &id_path, glass_io::open::MAX_RECORD_BYTES)
                .map_err(|_| {
                file_err(
                    out,
                    "exists and is not an unfinished release; release into a new directory",
                )
            })?;
            let old: Identity = serde_json::from_slice(&b).map_err(|e| {
                file_err(
                    &id_path,
                    format!("unreadable ({e}); remove OUT and start again"),
                )
            })?;
            if &old != identity {
                return Err(file_err(
                    out,
                    format!(
                        "holds an unfinished release of different inputs or options (then: {}; now: {}); rerun with the same options, or use a new directory",
                        serde_json::to_string(&old).expect("json"),
                        serde_json::to_string(identity).expect("json")
                    ),
                ));
            }
            return Ok(());
        }
    }
    std::fs::create_dir_all(out.join(PARTIAL_DIR)).map_err(io(out))?;
    write_atomic(
        &id_path,
        &serde_json::to_vec_pretty(identity).expect("identity serialises"),
    )?;
    Ok(())
}

/// Removes what an interrupted release left half-written: temp files (`.NAME.PID.tmp`),
/// checkpoint folders being assembled (`.ckpt_KKK.partial`, `.ckpt_KKK.glass.partial`)
/// and export folders (`..ckpt_KKK.partial.export-*`). A crash can stop any part mid-way,
/// and these hidden names would otherwise stay in the release as files its manifest does
/// not list. Nothing else is touched.
fn remove_leftovers(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().map_err(io(&path))?.is_dir();
        let leftover = name.starts_with('.')
            && name != PARTIAL_DIR
            && (name.ends_with(".tmp") || name.ends_with(".partial") || name.contains(".export-"));
        if leftover && is_dir {
            remove_dir_if_exists(&path)?;
        } else if leftover {
            std::fs::remove_file(&path).map_err(io(&path))?;
        } else if is_dir && name != PARTIAL_DIR {
            remove_leftovers(&path)?;
        }
    }
    Ok(())
}

/// `OUT/tokenizer.json` and `OUT/glass/`: the run's config, manifests and records.
fn write_run_files(run_dir: &Path, out: &Path, data: &PreparedData) -> Result<Vec<ReleaseFile>> {
    // Small files: read whole, written as one batch (their fsyncs side by side).
    let mut sources = vec![(data.tokenizer_path(), "tokenizer.json".to_string())];
    for name in RUN_FILES {
        let p = run_dir.join(name);
        if p.exists() {
            sources.push((p, format!("glass/run/{name}")));
        }
    }
    sources.push((
        run_dir.join("data").join("manifest.json"),
        "glass/data-manifest.json".into(),
    ));
    let mut contents = Vec::with_capacity(sources.len());
    for (i, (src, rel)) in sources.iter().enumerate() {
        // Each read beneath the run holding it (the tokenizer may be a parent's).
        let bytes = if i == 0 {
            data.tokenizer_json()?
        } else {
            glass_io::open::read_beneath(run_dir, src, glass_io::open::MAX_RECORD_BYTES)?
        };
        contents.push((join(out, rel), bytes));
    }
    let batch: Vec<(&Path, &[u8])> = contents
        .iter()
        .map(|(p, b)| (p.as_path(), b.as_slice()))
        .collect();
    write_atomic_all(&batch)?;
    let files: Vec<ReleaseFile> = sources
        .iter()
        .zip(&contents)
        .map(|((_, rel), (_, b))| ReleaseFile {
            path: rel.clone(),
            sha256: glass_io::atomic::sha256_hex(b),
            bytes: b.len() as u64,
        })
        .collect();
    Ok(files)
}

/// Whether a transformers folder in `dtype` holds the run's f32 weights unchanged: not
/// rounded (bf16/f16), no scales folded in. Such folders are streamed from the mapped
/// checkpoint (`glass export hf`) and carry no Glass model file.
fn exact_weights(cfg: &RunConfig, dtype: ExportDtype) -> Result<bool> {
    let (_, folds) = glass_hf::hf_config::to_hf(
        &cfg.model,
        glass_hf::hf_config::SpecialTokenIds {
            bos: None,
            eos: None,
        },
        dtype.torch_name(),
    )?;
    Ok(dtype == ExportDtype::F32 && folds.is_identity())
}

/// `OUT/checkpoints/ckpt_KKK/`: the transformers folder (`glass export hf`) plus, with
/// `--with-optimizer`, `glass/` holding the exact training state. Assembled under a
/// temporary name and renamed into place.
///
/// `exact`: the transformers folder holds the checkpoint's f32 weights unchanged (see
/// [`exact_weights`]); otherwise the Glass model file is carried too.
fn write_checkpoint(
    run_dir: &Path,
    out: &Path,
    c: &CheckpointEntry,
    opts: &ReleaseOptions,
    exact: bool,
) -> Result<Vec<ReleaseFile>> {
    let rel = ckpt_dir(c.index);
    let final_dir = join(out, &rel);
    let parent = final_dir
        .parent()
        .expect("under checkpoints/")
        .to_path_buf();
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let tmp = parent.join(format!(".ckpt_{:03}.partial", c.index));
    // Glass state files are staged beside the folder while the export runs, then moved in.
    let staging = parent.join(format!(".ckpt_{:03}.glass.partial", c.index));
    remove_dir_if_exists(&tmp)?;
    remove_dir_if_exists(&staging)?;
    remove_dir_if_exists(&final_dir)?;
    // The export (read, convert, write, hash the weights) and the copy of the optimizer
    // state (twice the weights' size: read, hash, write) touch different files, so they
    // run side by side instead of one after the other, on threads of their own rather
    // than the compute pool's, as both mostly wait for the disk.
    let (r, state_files) = std::thread::scope(|s| {
        let export = s.spawn(|| {
            glass_hf::export(
                run_dir,
                &tmp,
                &glass_hf::ExportOptions {
                    checkpoint: Some(c.index),
                    dtype: Some(opts.dtype),
                    max_shard_bytes: 5_000_000_000,
                },
            )
        });
        let state_files = (|| -> Result<Vec<ReleaseFile>> {
            let mut files = Vec::new();
            if !opts.with_optimizer {
                return Ok(files);
            }
            // Copied side by side: the small state file's fsync waits with the large
            // optimizer file's, not after it.
            let copy = |f: &glass_run::checkpoint::FileEntry| -> Result<Option<ReleaseFile>> {
                let name = f.path.rsplit('/').next().unwrap_or(&f.path);
                if exact && name == glass_run::checkpoint::MODEL_FILE {
                    return Ok(None);
                }
                let src = run_dir.join(&f.path);
                if !glass_io::paths::is_inside(&f.path) {
                    return Err(file_err(
                        RunManifest::path(run_dir),
                        format!(
                            "lists `{}`, a path outside the run; refusing to read it",
                            f.path
                        ),
                    ));
                }
                let (sha256, bytes) = copy_hashed(run_dir, &src, &staging.join(name))?;
                if sha256 != f.sha256 {
                    return Err(file_err(
                        src,
                        format!(
                            "sha256 {sha256} differs from the run manifest's {}; the run is damaged (glass verify {})",
                            f.sha256,
                            run_dir.display()
                        ),
                    ));
                }
                Ok(Some(ReleaseFile {
                    path: format!("{rel}/{GLASS_STATE_DIR}/{name}"),
                    sha256,
                    bytes,
                }))
            };
            let copied: Vec<Result<Option<ReleaseFile>>> = std::thread::scope(|s| {
                let copies: Vec<_> = c.files.iter().map(|f| s.spawn(move || copy(f))).collect();
                copies
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            });
            for f in copied {
                files.extend(f?);
            }
            sync_dir(&staging)?;
            Ok(files)
        })();
        let exported = export
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (exported, state_files)
    });
    let (r, state_files) = match (r, state_files) {
        (Ok(r), Ok(s)) => (r, s),
        (r, s) => {
            let _ = std::fs::remove_dir_all(&staging);
            let _ = std::fs::remove_dir_all(&tmp);
            r?;
            s?;
            unreachable!("one of the two failed")
        }
    };
    let mut files: Vec<ReleaseFile> = r
        .files
        .iter()
        .map(|f| ReleaseFile {
            path: format!("{rel}/{}", f.path),
            sha256: f.sha256.clone(),
            bytes: f.bytes,
        })
        .collect();
    let (sha256, bytes) = sha256_file(&tmp.join("glass-export.json"))?;
    files.push(ReleaseFile {
        path: format!("{rel}/glass-export.json"),
        sha256,
        bytes,
    });
    if opts.with_optimizer {
        let dst = tmp.join(GLASS_STATE_DIR);
        std::fs::rename(&staging, &dst).map_err(io(&dst))?;
        files.extend(state_files);
    }
    sync_dir(&tmp)?;
    std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    sync_dir(&parent)?;
    Ok(files)
}
