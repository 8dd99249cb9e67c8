//! `glass train`: the training loop with checkpoints, metrics, resume and the guard.
//!
//! Invariants: the batch at step s comes from the prepared data alone; the only state
//! carried between steps is (weights, AdamW moments and counter, skipped steps, recent
//! losses), all of which every checkpoint stores. Resuming from any checkpoint therefore
//! recomputes the same bits, and a crash at any instant loses at most the steps since
//! the last published checkpoint.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use glass_data::PreparedData;
use glass_dist::{Collective, Solo};
use glass_engine::{AdamW, Model};
use glass_io::atomic::sha256_hex;
use serde_json::json;

use crate::checkpoint::{self, CheckpointState};
use crate::config::{lr_at, RunConfig, SkipUnit};
use crate::dist::{params_sha256, DataParallel};
use crate::error::{Result, RunError};
use crate::fault;
use crate::lock::RunLock;
use crate::manifest::{BranchMode, CheckpointEntry, Parent, RunManifest, FORMAT_VERSION};
use crate::metrics::{now, CheckpointRow, Metrics, StepRow};
use crate::moments::{self, MomentSource};

/// Options of one `glass train` invocation (none of them changes the result, except
/// `from`, which is recorded as lineage).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Make the loss non-finite the first time these steps run (exercises the guard).
    pub inject_nan_at: Vec<u64>,
    /// Branch: start from checkpoint K of another run.
    pub from: Option<(PathBuf, u32)>,
    /// What a branch takes from that checkpoint (ignored without `from`).
    pub mode: BranchMode,
    /// Stop (cleanly, after its checkpoint if any) once this step is reached.
    pub until_step: Option<u64>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Data parallel only: each rank keeps 1/W of the AdamW moments (ZeRO stage 1).
    /// Same bits, same checkpoint files.
    pub shard_optimizer: bool,
}

impl TrainOptions {
    /// The options every rank of a data-parallel run must share.
    fn fingerprint(&self) -> String {
        format!(
            "inject-nan-at {:?}, from {:?}, mode {:?}, until-step {:?}, shard-optimizer {}",
            self.inject_nan_at, self.from, self.mode, self.until_step, self.shard_optimizer
        )
    }
}

/// What a `glass train` invocation did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Data step reached.
    pub step: u64,
    /// Total steps of the run.
    pub n_steps: u64,
    /// Checkpoint resumed from, if any.
    pub resumed_from: Option<u32>,
    /// Checkpoints written by this invocation.
    pub checkpoints_written: usize,
    /// Held-out loss at the last checkpoint.
    pub final_val_loss: Option<f64>,
    /// Steps the guard skipped in this invocation.
    pub guard_skips: Vec<u64>,
    /// Data-parallel ranks that trained.
    pub world_size: usize,
    /// Gradient groups of each step (the reduction tree's leaves).
    pub grad_groups: usize,
    /// Whether the optimizer state was sharded over the ranks.
    pub shard_optimizer: bool,
    /// Bytes of AdamW moments this rank held.
    pub optimizer_bytes_per_rank: u64,
    /// Bytes of AdamW moments one unsharded process holds.
    pub optimizer_bytes_unsharded: u64,
    /// Bytes this rank sent in collectives per step (0 for one process; modelled as
    /// reduce-scatter plus all-gather volume).
    pub bytes_sent_per_step: u64,
    /// Rank 0 of a sharded optimizer (W > 1), on Linux: the most its resident memory rose
    /// above what it held before writing a checkpoint's files (after validating it) while
    /// writing them (the peak `VmHWM` over the `VmRSS` before; the peak counter is reset
    /// for it). `None`
    /// elsewhere, or when no checkpoint was written.
    pub checkpoint_extra_bytes: Option<u64>,
}

/// Checkpoint steps: 0, optional log-spaced early steps, then every chunk boundary.
pub fn checkpoint_plan(n_steps: u64, steps_per_chunk: u64, log_spaced: bool) -> Vec<u64> {
    let mut v = vec![0];
    if log_spaced {
        let mut s = 1;
        while s < steps_per_chunk.min(n_steps) {
            v.push(s);
            s *= 2;
        }
    }
    let mut k = steps_per_chunk.max(1);
    while k < n_steps {
        v.push(k);
        k += steps_per_chunk.max(1);
    }
    v.push(n_steps);
    v.dedup();
    v
}

/// What happened to one data step.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StepOutcome {
    /// The update was applied.
    Applied { loss: f64, grad_norm: f64, lr: f32 },
    /// The guard refused the step.
    Rejected {
        reason: &'static str,
        loss: f64,
        grad_norm: f64,
    },
}

/// Everything loaded for training or replaying a run.
pub(crate) struct Session {
    pub run_dir: PathBuf,
    pub cfg: RunConfig,
    pub data: PreparedData,
    pub model: Model,
    pub opt: AdamW,
    pub plan: Vec<u64>,
    pub config_sha: String,
    pub data_sha: String,
    pub val_rows: Vec<u32>,
    pub val_bytes: u64,
    // Training state (what a checkpoint stores besides tensors).
    pub step: u64,
    pub tokens: u64,
    pub last_lr: f32,
    pub skips: BTreeSet<u64>,
    /// Steps the config skips (`[guard] skip_steps` and the steps of `skip_chunks`).
    pub configured_skips: BTreeSet<u64>,
    pub recent: VecDeque<f64>,
    pub parent_sha: Option<String>,
    /// This process's place in the data-parallel world (one process: rank 0 of 1).
    pub dp: DataParallel,
    /// Rank 0 of a sharded optimizer: the optimizer file of the checkpoint just loaded,
    /// whose moments [`Session::sync_from_root`] sends to their ranks piece by piece.
    pub pending_moments: Option<moments::OptimizerFile>,
    /// See [`TrainReport::checkpoint_extra_bytes`].
    pub checkpoint_extra_bytes: Option<u64>,
}

/// The training state rank 0 hands every other rank at start and after a rollback.
#[derive(serde::Serialize, serde::Deserialize)]
struct SyncedState {
    step: u64,
    tokens: u64,
    last_lr: f32,
    skips: Vec<u64>,
    recent: Vec<f64>,
    parent_sha: Option<String>,
}

impl Session {
    /// Opens the run's config and prepared data and builds an (uninitialised) model.
    pub fn open(run_dir: &Path) -> Result<Self> {
        Self::open_on(run_dir, Arc::new(Solo), false)
    }

    /// [`Session::open`] as one rank of `comm`: refuses to go on unless every rank read
    /// the same config and data as rank 0, and unless the world size reproduces the run's
    /// bits (it divides the gradient groups).
    pub fn open_on(
        run_dir: &Path,
        comm: Arc<dyn Collective>,
        shard_optimizer: bool,
    ) -> Result<Self> {
        let cfg = RunConfig::load(run_dir)?;
        let data = PreparedData::open(run_dir)?;
        let m = &cfg.model;
        if m.vocab_size != data.vocab_size() {
            return Err(RunError::Config {
                path: RunConfig::path(run_dir),
                msg: format!(
                    "[model] vocab_size = {} but the prepared tokenizer has {} ids; set vocab_size = {}",
                    m.vocab_size,
                    data.vocab_size(),
                    data.vocab_size()
                ),
            });
        }
        if m.max_seq_len < data.seq_len() {
            return Err(RunError::Config {
                path: RunConfig::path(run_dir),
                msg: format!(
                    "[model] max_seq_len = {} is shorter than [data] seq_len = {}",
                    m.max_seq_len,
                    data.seq_len()
                ),
            });
        }
        let model = Model::zeros(m)?;
        let mut plan = checkpoint_plan(
            data.n_steps(),
            data.steps_per_chunk(),
            cfg.checkpoints.log_spaced_early,
        );
        // A branch that continues its parent's stream starts at the parent checkpoint's
        // step: its checkpoint 0 is there, then the parent's plan.
        let first = data.first_step();
        if first > 0 {
            plan.retain(|&s| s > first);
            plan.insert(0, first);
        }
        let config_sha = sha256_hex(cfg.text.as_bytes());
        let data_sha = glass_io::open::sha256_beneath(
            run_dir,
            &run_dir.join("data").join("manifest.json"),
            None,
        )?
        .0;
        let cfg_path = RunConfig::path(run_dir);
        crate::dist::require_same(
            &*comm,
            "glass.toml (sha256)",
            &config_sha,
            &format!("give every rank the same {}", cfg_path.display()),
        )?;
        crate::dist::require_same(
            &*comm,
            "the prepared data (sha256 of data/manifest.json)",
            &data_sha,
            &format!(
                "give every rank the same prepared data (`glass data verify {}` on each node)",
                run_dir.display()
            ),
        )?;
        crate::dist::require_same(
            &*comm,
            "the engine",
            &glass_engine::engine_id(),
            "run the same glass build on every rank",
        )?;
        let groups = cfg
            .train
            .resolved_grad_groups(data.rows_per_step(), &cfg_path)?;
        let dp = DataParallel::new(
            comm,
            groups,
            model.params.len(),
            shard_optimizer,
            &cfg_path.display().to_string(),
        )?;
        // Sharded: this rank's slice of the moments only, from the start.
        let opt = AdamW::new(cfg.optim.adamw, dp.moments_len(model.params.len()));
        let mut val_rows = Vec::new();
        data.validation(&mut val_rows)?;
        let val_bytes = if val_rows.is_empty() {
            0
        } else {
            let tok = data.tokenizer()?;
            let mut bytes = 0u64;
            for row in val_rows.chunks(data.row_len()) {
                bytes += tok.decode(&row[1..])?.len() as u64;
            }
            bytes
        };
        let configured_skips = configured_skips(&cfg, &data, &cfg_path)?;
        let skips = configured_skips.clone();
        Ok(Session {
            run_dir: run_dir.to_path_buf(),
            cfg,
            data,
            model,
            opt,
            plan,
            config_sha,
            data_sha,
            val_rows,
            val_bytes,
            step: 0,
            tokens: 0,
            last_lr: 0.0,
            skips,
            configured_skips,
            recent: VecDeque::new(),
            parent_sha: None,
            dp,
            pending_moments: None,
            checkpoint_extra_bytes: None,
        })
    }

    /// Gives every rank rank 0's model, optimizer and training state (after rank 0
    /// initialised or loaded them).
    fn sync_from_root(&mut self) -> Result<()> {
        if self.dp.size() == 1 {
            return Ok(());
        }
        let file = self.pending_moments.take();
        self.dp
            .sync_from_root(&mut self.model, &mut self.opt, file.as_ref())?;
        let st = self.dp.broadcast_json(&SyncedState {
            step: self.step,
            tokens: self.tokens,
            last_lr: self.last_lr,
            skips: self.skips.iter().copied().collect(),
            recent: self.recent.iter().copied().collect(),
            parent_sha: self.parent_sha.clone(),
        })?;
        self.step = st.step;
        self.tokens = st.tokens;
        self.last_lr = st.last_lr;
        self.skips = st.skips.into_iter().collect();
        self.recent = st.recent.into_iter().collect();
        self.parent_sha = st.parent_sha;
        Ok(())
    }

    fn tokens_per_step(&self) -> u64 {
        (self.data.rows_per_step() * self.data.seq_len()) as u64
    }

    /// Restores the training state from a loaded checkpoint state.
    pub fn restore(&mut self, st: &CheckpointState) {
        self.step = st.step;
        self.tokens = st.tokens;
        self.last_lr = st.lr;
        // Before the checkpoint, what it records is what happened.
        self.skips.retain(|&s| s >= st.step);
        self.skips.extend(st.skipped_steps.iter().copied());
        self.recent = st.recent_losses.iter().copied().collect();
    }

    /// Loads published checkpoint `entry` of this run.
    pub fn load_checkpoint(&mut self, entry: &CheckpointEntry) -> Result<CheckpointState> {
        crate::integrity::check_loadable(&self.run_dir, entry)?;
        let run_dir = self.run_dir.clone();
        let st = self.load_files(&run_dir, &entry.files)?;
        self.restore(&st);
        self.parent_sha = Some(entry.sha256.clone());
        Ok(st)
    }

    /// Loads a checkpoint's files (of this run or another): the whole optimizer, or, on
    /// rank 0 of a sharded optimizer, the weights and AdamW step with the optimizer file
    /// kept open for [`Session::sync_from_root`] to send out piece by piece.
    fn load_files(
        &mut self,
        run_dir: &Path,
        files: &[checkpoint::FileEntry],
    ) -> Result<CheckpointState> {
        if !self.dp.shard_optimizer {
            return checkpoint::load(run_dir, files, &mut self.model, &mut self.opt);
        }
        let (st, file) = checkpoint::load_model(run_dir, files, &mut self.model)?;
        self.opt.step = st.optimizer_step;
        self.pending_moments = Some(file);
        Ok(st)
    }

    /// Held-out loss (nats/token) and bits per byte.
    pub fn validate(&mut self) -> Result<(Option<f64>, Option<f64>)> {
        if self.val_rows.is_empty() {
            return Ok((None, None));
        }
        let seq = self.data.seq_len();
        let rows_per_batch = self.cfg.train.micro_batch_rows.max(1);
        let mut nats = 0.0f64;
        let mut count = 0u64;
        for chunk in self.val_rows.chunks(rows_per_batch * (seq + 1)) {
            let (inp, tgt) = glass_engine::model::split_rows(chunk, seq);
            let losses = self
                .model
                .forward_losses(&inp, &tgt, chunk.len() / (seq + 1), seq)?;
            nats += losses.iter().map(|&l| l as f64).sum::<f64>();
            count += losses.len() as u64;
        }
        let loss = nats / count as f64;
        let bpb =
            (self.val_bytes > 0).then(|| nats / std::f64::consts::LN_2 / self.val_bytes as f64);
        Ok((Some(loss), bpb))
    }

    /// Runs data step `self.step`: applies it, or reports why the guard rejected it
    /// (then nothing was applied and the step counter did not move).
    pub fn run_step(&mut self, inject_nan: bool, rows: &mut Vec<u32>) -> Result<StepOutcome> {
        let step = self.step;
        let mut loss = self.dp.gradients(
            &mut self.model,
            &self.data,
            step,
            rows,
            self.cfg.train.micro_batch_rows,
        )?;
        if inject_nan {
            loss = f64::NAN;
        }
        let grad_norm = self.dp.grad_norm(&self.model)?;
        let g = &self.cfg.guard;
        let spike = g.spike_factor > 0.0 && self.recent.len() >= g.spike_window.max(1) && {
            let mean = self.recent.iter().sum::<f64>() / self.recent.len() as f64;
            loss > g.spike_factor * mean
        };
        let reason = if !loss.is_finite() {
            Some("non-finite loss")
        } else if !grad_norm.is_finite() {
            Some("non-finite gradient norm")
        } else if spike {
            Some("loss spike")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Ok(StepOutcome::Rejected {
                reason,
                loss,
                grad_norm,
            });
        }
        let lr = lr_at(&self.cfg.optim, step, self.data.n_steps());
        self.dp
            .apply(&mut self.model, &mut self.opt, lr, grad_norm)?;
        if !crate::integrity::updated_params_ok(&mut self.model.params) {
            let reason = "non-finite parameters after the update";
            return Ok(StepOutcome::Rejected {
                reason,
                loss,
                grad_norm,
            });
        }
        self.last_lr = lr;
        self.recent.push_back(loss);
        while self.recent.len() > self.cfg.guard.spike_window.max(1) {
            self.recent.pop_front();
        }
        self.step += 1;
        self.tokens += self.tokens_per_step();
        Ok(StepOutcome::Applied {
            loss,
            grad_norm,
            lr,
        })
    }

    /// Skips data step `self.step` (configured or guard skip): data consumed, no update.
    pub fn skip_step(&mut self) {
        self.step += 1;
        self.tokens += self.tokens_per_step();
    }

    /// The state a checkpoint at the current position records.
    pub fn state(&self, index: u32, val: (Option<f64>, Option<f64>)) -> CheckpointState {
        CheckpointState {
            format_version: FORMAT_VERSION,
            engine: glass_engine::engine_id(),
            index,
            step: self.step,
            tokens: self.tokens,
            lr: self.last_lr,
            optimizer_step: self.opt.step,
            init_seed: self.cfg.run.seed,
            skipped_steps: self
                .skips
                .iter()
                .copied()
                .filter(|&s| s < self.step)
                .collect(),
            recent_losses: self.recent.iter().copied().collect(),
            config_sha256: self.config_sha.clone(),
            data_manifest_sha256: self.data_sha.clone(),
            parent_checkpoint_sha256: self.parent_sha.clone(),
            model_sha256: String::new(),
            optimizer_sha256: String::new(),
            val_loss: val.0,
            val_bpb: val.1,
            grad_groups: Some(self.dp.groups as u32),
        }
    }
}

/// File recording the steps the guard decided to skip (so a crash before the next
/// checkpoint does not forget them).
pub const GUARD_SKIPS_FILE: &str = "guard-skips.json";

fn load_guard_skips(run_dir: &Path) -> Result<Vec<u64>> {
    let p = run_dir.join(GUARD_SKIPS_FILE);
    match glass_io::open::read_beneath(run_dir, &p, glass_io::open::MAX_RECORD_BYTES) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| RunError::Checkpoint {
            path: p,
            msg: e.to_string(),
        }),
        Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e.into()),
    }
}

/// Validates, checkpoints, publishes in the manifest and records metrics.
fn publish(
    s: &mut Session,
    manifest: &mut RunManifest,
    metrics: &Metrics,
    index: u32,
    moments: &mut dyn MomentSource,
) -> Result<CheckpointEntry> {
    let val = s.validate()?;
    let mut state = s.state(index, val);
    // Rank 0 of a sharded optimizer measures what writing the files (the moments
    // streamed from every rank) costs it, validation aside.
    let measure = s.dp.shard_optimizer && s.dp.size() > 1;
    let before = if measure { reset_peak_rss() } else { None };
    let (files, sha) = checkpoint::write_with(&s.run_dir, &s.model, moments, &mut state)?;
    if let (Some(before), Some((peak, _))) = (before, rss()) {
        let extra = peak.saturating_sub(before);
        s.checkpoint_extra_bytes = Some(s.checkpoint_extra_bytes.unwrap_or(0).max(extra));
    }
    let entry = CheckpointEntry {
        index,
        step: s.step,
        tokens: s.tokens,
        sha256: sha.clone(),
        val_loss: val.0,
        files,
    };
    manifest.checkpoints.push(entry.clone());
    manifest.save(&s.run_dir)?;
    fault::point("after-manifest");
    metrics.checkpoint(&CheckpointRow {
        checkpoint: index,
        step: s.step,
        tokens: s.tokens,
        val_loss: val.0,
        val_bpb: val.1,
    })?;
    s.parent_sha = Some(sha);
    Ok(entry)
}

/// Checkpoint `index` at the current step, on every rank together: the ranks' parameter
/// hashes are compared, then rank 0 (which holds `metrics` and `manifest`) validates and
/// publishes it. A sharded optimizer's moments reach rank 0's file piece by piece from
/// the ranks that hold them, while those ranks serve the same pieces; rank 0 never holds
/// the whole. Returns rank 0's manifest entry.
fn checkpoint_all(
    s: &mut Session,
    metrics: Option<&Metrics>,
    manifest: Option<&mut RunManifest>,
    index: u32,
) -> Result<Option<CheckpointEntry>> {
    if s.dp.size() > 1 {
        s.dp.require_same(
            &format!("the parameters (sha256) at step {} before checkpoint {index}", s.step),
            &params_sha256(&s.model.params),
            "a rank computed different bits (a fault, or a CPU outside the numerics contract); the run stops before publishing, the last published checkpoint is intact — resume on matching machines",
        )?;
    }
    // The optimizer is lent out while the session validates and writes.
    let placeholder = AdamW {
        cfg: s.opt.cfg,
        m: Vec::new(),
        v: Vec::new(),
        step: s.opt.step,
    };
    let opt = std::mem::replace(&mut s.opt, placeholder);
    let r = checkpoint_with(s, metrics, manifest, index, &opt);
    s.opt = opt;
    r
}

/// (peak, current) resident memory of this process in bytes (Linux `VmHWM`, `VmRSS`).
fn rss() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Resets this process's peak resident memory to its current one (Linux) and returns the
/// current one; `None` where that cannot be done.
fn reset_peak_rss() -> Option<u64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    rss().map(|(_, now)| now)
}

fn checkpoint_with(
    s: &mut Session,
    metrics: Option<&Metrics>,
    manifest: Option<&mut RunManifest>,
    index: u32,
    opt: &AdamW,
) -> Result<Option<CheckpointEntry>> {
    let mut sharded = if s.dp.shard_optimizer {
        Some(s.dp.sharded_moments(opt)?)
    } else {
        None
    };
    match (metrics, manifest) {
        (Some(metrics), Some(manifest)) => {
            let mut whole = moments::WholeMoments(opt);
            let moments: &mut dyn MomentSource = match &mut sharded {
                Some(m) => m,
                None => &mut whole,
            };
            publish(s, manifest, metrics, index, moments).map(Some)
        }
        _ => {
            if let Some(m) = &mut sharded {
                let state = s.state(index, (None, None));
                moments::serve_optimizer(&s.model, m, &state)?;
            }
            Ok(None)
        }
    }
}

/// Trains `run_dir` from its last published checkpoint (or from scratch / a parent run)
/// to the end of its data, checkpointing on the plan.
pub fn train(run_dir: &Path, opts: &TrainOptions) -> Result<TrainReport> {
    train_on(run_dir, opts, Arc::new(Solo))
}

/// [`train`] as one rank of a data-parallel world. Every rank reads its own slice of each
/// step's batch and the ranks combine gradients in the fixed tree order, so the bits are
/// those of one process; rank 0 alone writes checkpoints, metrics and the manifest.
/// Before each checkpoint is published every rank's parameter hash is compared.
pub fn train_on(
    run_dir: &Path,
    opts: &TrainOptions,
    comm: Arc<dyn Collective>,
) -> Result<TrainReport> {
    RunConfig::load(run_dir)?; // clear error for a missing or bad config before locking
    crate::weights::ensure_trainable(run_dir, "`glass train`")?;
    if let Some((parent, _)) = &opts.from {
        crate::weights::ensure_trainable(parent, "`glass train --from`")?;
    }
    if let (Some((parent, k)), BranchMode::Continue) = (&opts.from, opts.mode) {
        // The branch reads its parent's rows: rank 0 links the data before anyone opens it.
        let linked = if comm.rank() == 0 {
            link_parent_data(run_dir, parent, *k)
        } else {
            Ok(())
        };
        let mut b =
            serde_json::to_vec(&linked.as_ref().err().map(|e| e.to_string())).expect("json");
        comm.broadcast_bytes(0, &mut b)?;
        linked?;
        if let Ok(Some(msg)) = serde_json::from_slice::<Option<String>>(&b) {
            return Err(RunError::Invalid(format!("rank 0 stopped: {msg}")));
        }
    }
    let mut s = Session::open_on(run_dir, comm, opts.shard_optimizer)?;
    s.dp.require_same(
        "the `glass train` options",
        &opts.fingerprint(),
        "launch every rank with the same arguments",
    )?;
    let root = s.dp.is_root();
    let n_params = s.model.params.len();
    let n_steps = s.data.n_steps();
    let mut report = TrainReport {
        step: 0,
        n_steps,
        resumed_from: None,
        checkpoints_written: 0,
        final_val_loss: None,
        guard_skips: vec![],
        world_size: s.dp.size(),
        grad_groups: s.dp.groups,
        shard_optimizer: s.dp.shard_optimizer,
        optimizer_bytes_per_rank: 0,
        optimizer_bytes_unsharded: 2 * 4 * n_params as u64,
        bytes_sent_per_step: 0,
        checkpoint_extra_bytes: None,
    };
    // Rank 0 alone locks the run, reads or creates its manifest and loads the starting
    // point; its verdict (and then its state) goes to every rank.
    let setup = if root {
        root_setup(&mut s, opts, &mut report).map(Some)
    } else {
        Ok(None)
    };
    let verdict =
        s.dp.broadcast_json(&setup.as_ref().err().map(|e| e.to_string()))?;
    let (_lock, metrics, mut manifest) = match (setup, verdict) {
        (Err(e), _) => return Err(e),
        (Ok(_), Some(msg)) => {
            return Err(RunError::Invalid(format!("rank 0 stopped: {msg}")));
        }
        (Ok(Some((l, m, man))), None) => (Some(l), Some(m), Some(man)),
        (Ok(None), None) => (None, None, None),
    };
    let mut next_index = s.dp.broadcast_json(
        &manifest
            .as_ref()
            .and_then(|m| m.checkpoints.last())
            .map_or(0, |c| c.index + 1),
    )?;
    s.sync_from_root()?;
    report.resumed_from = s.dp.broadcast_json(&report.resumed_from)?;
    report.optimizer_bytes_per_rank = 2 * 4 * s.opt.m.len() as u64;
    if next_index == 0 {
        // A new run (or branch): its checkpoint 0, written by all ranks together.
        checkpoint_all(&mut s, metrics.as_ref(), manifest.as_mut(), 0)?;
        report.checkpoints_written += 1;
        next_index = 1;
    }

    let until = opts.until_step.unwrap_or(n_steps).min(n_steps);
    let pb = glass_io::progress::bar(
        n_steps,
        opts.progress && root,
        "{spinner} step {pos}/{len} [{bar:30}] {msg} ETA {eta}",
    );
    pb.set_position(s.step);
    let mut rows = Vec::new();
    let mut injected = BTreeSet::new();
    while s.step < until {
        let step = s.step;
        if s.skips.contains(&step) {
            let why = if s.configured_skips.contains(&step) {
                "configured"
            } else {
                "guard"
            };
            if let Some(metrics) = &metrics {
                metrics.event(
                    Some(step),
                    "skip",
                    json!({"reason": why, "rows": row_range(&s, step)}),
                )?;
            }
            s.skip_step();
        } else {
            let inject = opts.inject_nan_at.contains(&step) && injected.insert(step);
            let t0 = Instant::now();
            match s.run_step(inject, &mut rows)? {
                StepOutcome::Applied {
                    loss,
                    grad_norm,
                    lr,
                } => {
                    let dt = t0.elapsed().as_secs_f64();
                    let tps = s.tokens_per_step() as f64 / dt.max(1e-9);
                    report.bytes_sent_per_step = 4 * s.dp.last_step_values_sent;
                    if let Some(metrics) = &metrics {
                        metrics.step(&StepRow {
                            step,
                            loss,
                            lr: lr as f64,
                            grad_norm,
                            tokens: s.tokens,
                            tokens_per_s: tps,
                            wall_time: now(),
                        })?;
                    }
                    pb.set_message(format!("loss {loss:.4} lr {lr:.2e} {tps:.0} tok/s"));
                }
                StepOutcome::Rejected {
                    reason,
                    loss,
                    grad_norm,
                } => {
                    // Every rank reaches the same verdict from the same reduced values.
                    let skipped: Vec<u64> = match s.cfg.guard.skip {
                        SkipUnit::Batch => vec![step],
                        SkipUnit::Chunk => {
                            let spc = s.data.steps_per_chunk().max(1);
                            (step..((step / spc + 1) * spc).min(n_steps)).collect()
                        }
                    };
                    s.skips.extend(skipped.iter().copied());
                    report.guard_skips.extend(skipped.iter().copied());
                    if let (Some(metrics), Some(manifest)) = (&metrics, &manifest) {
                        let all: Vec<u64> = load_guard_skips(run_dir)?
                            .into_iter()
                            .chain(skipped.iter().copied())
                            .collect::<BTreeSet<_>>()
                            .into_iter()
                            .collect();
                        glass_io::atomic::write_atomic_beneath(
                            run_dir,
                            &run_dir.join(GUARD_SKIPS_FILE),
                            &serde_json::to_vec(&all).expect("json"),
                        )?;
                        let last = manifest
                            .checkpoints
                            .last()
                            .cloned()
                            .expect("checkpoint 0 exists");
                        metrics.event(
                            Some(step),
                            "rollback",
                            json!({"reason": reason, "loss": loss, "grad_norm": grad_norm, "rows": row_range(&s, step),
                                   "skipped_steps": skipped, "to_checkpoint": last.index, "to_step": last.step}),
                        )?;
                        pb.println(format!("guard: {reason} at step {step}; rolled back to checkpoint {} (step {}), skipping {:?}", last.index, last.step, skipped));
                        s.load_checkpoint(&last)?;
                    }
                    s.sync_from_root()?;
                    pb.set_position(s.step);
                    continue;
                }
            }
        }
        fault::point("after-step");
        pb.set_position(s.step);
        if s.plan.get(next_index as usize) == Some(&s.step) {
            if let Some(e) =
                checkpoint_all(&mut s, metrics.as_ref(), manifest.as_mut(), next_index)?
            {
                report.final_val_loss = e.val_loss;
            }
            report.checkpoints_written += 1;
            next_index += 1;
        }
    }
    pb.finish_and_clear();
    if let (Some(metrics), Some(manifest)) = (&metrics, &manifest) {
        if s.step == n_steps
            && report
                .resumed_from
                .is_none_or(|_| report.checkpoints_written > 0)
        {
            metrics.event(
                Some(s.step),
                "finish",
                json!({"checkpoints": manifest.checkpoints.len(), "world_size": s.dp.size()}),
            )?;
        }
        if report.final_val_loss.is_none() {
            report.final_val_loss = manifest.checkpoints.last().and_then(|c| c.val_loss);
        }
    }
    report.step = s.step;
    report.checkpoint_extra_bytes = s.checkpoint_extra_bytes;
    report.final_val_loss = s.dp.broadcast_json(&report.final_val_loss)?;
    Ok(report)
}

/// Rank 0's start: lock, then resume from the manifest's last checkpoint or create the
/// manifest and publish checkpoint 0.
fn root_setup(
    s: &mut Session,
    opts: &TrainOptions,
    report: &mut TrainReport,
) -> Result<(RunLock, Metrics, RunManifest)> {
    let run_dir = s.run_dir.clone();
    let run_dir = run_dir.as_path();
    let lock = RunLock::acquire(run_dir)?;
    s.skips.extend(load_guard_skips(run_dir)?);
    let metrics = Metrics::open(run_dir)?;
    let manifest = match RunManifest::load(run_dir)? {
        Some(m) => {
            if let Some((other, k)) = &opts.from {
                // Re-running the same branch command after a crash simply resumes.
                let same = m.parent.as_ref().is_some_and(|p| {
                    p.checkpoint == *k
                        && Path::new(&p.run_dir) == other.as_path()
                        && p.mode == opts.mode
                });
                if !same {
                    return Err(RunError::Invalid(format!(
                        "{} already has checkpoints and is not a {} branch of {} checkpoint {k}; --from only starts a new run (use a new directory), plain `glass train` resumes",
                        run_dir.display(),
                        opts.mode.as_str(),
                        other.display()
                    )));
                }
            }
            if m.import.as_ref().is_some_and(|i| i.format == "llm360") {
                // Its checkpoints follow the release's plan, not Glass's, and its data
                // ends where the release's does.
                return Err(RunError::Invalid(format!(
                    "{} was imported from an LLM360-layout release (`glass import llm360`): it holds that release's data and checkpoints for study, not a Glass training plan; to continue pretraining from one of its checkpoints, `glass export hf {0} DIR --checkpoint K` then `glass import hf DIR NEWRUN`",
                    run_dir.display()
                )));
            }
            let mut m = m;
            if crate::import::adopts_data(&m) {
                // An imported run is created before its data exists; its first `glass
                // train` binds it to the data prepared since (see docs/run-format.md).
                m.data_manifest_sha256 = s.data_sha.clone();
                m.save(run_dir)?;
                metrics.event(
                    Some(0),
                    "adopt_data",
                    json!({"data_manifest_sha256": s.data_sha}),
                )?;
            }
            if m.data_manifest_sha256 != s.data_sha {
                return Err(RunError::Invalid(format!(
                    "{}: the prepared data changed since this run started (data manifest {} → {}); resuming would train on different data — restore the data or start a new run",
                    run_dir.join("data/manifest.json").display(),
                    m.data_manifest_sha256, s.data_sha
                )));
            }
            let last = m
                .checkpoints
                .last()
                .cloned()
                .ok_or_else(|| RunError::Invalid("manifest lists no checkpoint".into()))?;
            if s.plan.get(last.index as usize) != Some(&last.step) {
                return Err(RunError::Config {
                    path: RunConfig::path(run_dir),
                    msg: format!(
                        "the checkpoint plan changed: checkpoint {} is at step {} but the config now puts it {}; restore [checkpoints] log_spaced_early and [data] steps_per_chunk / stage tokens",
                        last.index,
                        last.step,
                        s.plan.get(last.index as usize).map_or("past the end of the plan".into(), |p| format!("at step {p}"))
                    ),
                });
            }
            let st = s.load_checkpoint(&last)?;
            // A crash right after the manifest listed it can leave its metrics row unwritten.
            metrics.checkpoint(&CheckpointRow {
                checkpoint: last.index,
                step: st.step,
                tokens: st.tokens,
                val_loss: st.val_loss,
                val_bpb: st.val_bpb,
            })?;
            if m.config_sha256 != s.config_sha {
                metrics.event(
                    Some(s.step),
                    "config_change",
                    json!({"from": m.config_sha256, "to": s.config_sha}),
                )?;
            }
            metrics.event(
                Some(s.step),
                "resume",
                json!({"checkpoint": last.index, "sha256": last.sha256}),
            )?;
            report.resumed_from = Some(last.index);
            m
        }
        None => {
            let stale = run_dir.join("checkpoints").join(checkpoint::dir_name(0, 0));
            if opts.from.is_none() && stale.exists() {
                let st = glass_io::open::read_beneath(
                    run_dir,
                    &stale.join(checkpoint::STATE_FILE),
                    glass_io::open::MAX_RECORD_BYTES,
                )
                .ok()
                .and_then(|b| serde_json::from_slice::<CheckpointState>(&b).ok());
                if st.is_some_and(|st| st.parent_checkpoint_sha256.is_some()) {
                    return Err(RunError::Invalid(format!(
                        "{}: an unpublished branch start exists; re-run the same `glass train {} --from … --checkpoint …` command",
                        stale.display(),
                        run_dir.display()
                    )));
                }
            }
            let first = s.data.first_step();
            if first > 0 && (opts.from.is_none() || opts.mode != BranchMode::Continue) {
                let base = s
                    .data
                    .manifest()
                    .base
                    .clone()
                    .map(|b| b.run_dir)
                    .unwrap_or_default();
                return Err(RunError::Invalid(format!(
                    "{}: this run's data continues {base} from step {first}; start it with `glass train {} --from PARENT --checkpoint K --continue`",
                    run_dir.join("data/manifest.json").display(),
                    run_dir.display()
                )));
            }
            let parent = match &opts.from {
                Some((other, k)) => Some(branch_from(s, other, *k, opts.mode)?),
                None => {
                    s.model = Model::new(&s.cfg.model, s.cfg.run.seed)?;
                    None
                }
            };
            let mut id_src = format!(
                "{}:{}",
                s.config_sha,
                parent.as_ref().map_or("", |p| p.checkpoint_sha256.as_str())
            );
            if parent
                .as_ref()
                .is_some_and(|p| p.mode == BranchMode::Continue)
            {
                id_src.push_str(":continue");
            }
            let m = RunManifest {
                format_version: FORMAT_VERSION,
                run_id: sha256_hex(id_src.as_bytes())[..16].to_string(),
                config_sha256: s.config_sha.clone(),
                data_manifest_sha256: s.data_sha.clone(),
                parent: parent.clone(),
                checkpoints: vec![],
                import: None,
                weights_only: false,
            };
            metrics.event(
                Some(0),
                "start",
                json!({"run_id": m.run_id, "parent": parent}),
            )?;
            // Checkpoint 0 is published once every rank holds the starting state
            // (`train_on`): a sharded optimizer's moments are written from all ranks.
            m
        }
    };

    Ok((lock, metrics, manifest))
}

fn row_range(s: &Session, step: u64) -> [u64; 2] {
    let b = s.data.rows_per_step() as u64;
    [step * b, (step + 1) * b]
}

/// The steps `[guard] skip_steps` and `skip_chunks` skip, checked against the data.
fn configured_skips(cfg: &RunConfig, data: &PreparedData, path: &Path) -> Result<BTreeSet<u64>> {
    let mut out: BTreeSet<u64> = cfg.guard.skip_steps.iter().copied().collect();
    let spc = data.steps_per_chunk().max(1);
    for &c in &cfg.guard.skip_chunks {
        if c >= data.n_chunks() {
            return Err(RunError::Config {
                path: path.to_path_buf(),
                msg: format!(
                    "[guard] skip_chunks names chunk {c}, but the data has chunks 0..{}; remove it",
                    data.n_chunks()
                ),
            });
        }
        out.extend(c * spc..((c + 1) * spc).min(data.n_steps()));
    }
    Ok(out)
}

/// Makes a continuing branch's data the parent's rows (read by hash from the parent),
/// starting at checkpoint `k`'s step.
fn link_parent_data(run_dir: &Path, parent: &Path, k: u32) -> Result<()> {
    let pm = RunManifest::require(parent)?;
    let (e, _) = crate::integrity::checked_entry(parent, &pm, k)?;
    if let Some(p) = crate::integrity::data_problem(parent, &pm) {
        return Err(RunError::Checkpoint {
            path: parent.join(&p.path),
            msg: p.problem,
        });
    }
    if pm.data_manifest_sha256.is_empty() {
        return Err(RunError::Invalid(format!(
            "{} has no data of its own yet (an imported run before its first `glass train`); a --continue branch needs the parent's data stream",
            parent.display()
        )));
    }
    glass_data::branch::link(run_dir, parent, e.step)?;
    Ok(())
}

/// Loads checkpoint `k` of `other` as the starting point of a new run: its weights and
/// AdamW state, and with [`BranchMode::Continue`] the whole training state. Used both to
/// start a branch and to replay its checkpoint 0.
pub(crate) fn branch_from(
    s: &mut Session,
    other: &Path,
    k: u32,
    mode: BranchMode,
) -> Result<Parent> {
    let om = RunManifest::require(other)?;
    let (e, _) = crate::integrity::checked_entry(other, &om, k)?;
    let ocfg = RunConfig::load(other)?;
    if ocfg.model != s.cfg.model {
        return Err(RunError::Config {
            path: RunConfig::path(&s.run_dir),
            msg: format!(
                "[model] differs from {}'s; a branch must keep the parent's architecture",
                other.display()
            ),
        });
    }
    let st = s.load_files(other, &e.files)?;
    if mode == BranchMode::Continue {
        if s.data.first_step() != st.step {
            return Err(RunError::Invalid(format!(
                "{}: the branch's data starts at step {}, but {} checkpoint {k} is at step {}; start the branch in a new directory",
                s.run_dir.join("data/manifest.json").display(),
                s.data.first_step(),
                other.display(),
                st.step
            )));
        }
        s.restore(&st);
    }
    s.parent_sha = Some(e.sha256.clone());
    Ok(Parent {
        run_id: om.run_id,
        run_dir: other.display().to_string(),
        checkpoint: k,
        checkpoint_sha256: e.sha256,
        mode,
        step: Some(st.step),
    })
}

#[cfg(test)]
mod tests {
    use super::checkpoint_plan;

    #[test]
    fn plan_has_step0_log_spaced_and_chunk_boundaries() {
        assert_eq!(
            checkpoint_plan(100, 20, true),
            vec![0, 1, 2, 4, 8, 16, 20, 40, 60, 80, 100]
        );
        assert_eq!(checkpoint_plan(50, 20, false), vec![0, 20, 40, 50]);
        // Amber: 360 chunks => 360 chunk checkpoints + step 0.
        assert_eq!(checkpoint_plan(360 * 10, 10, false).len(), 361);
    }
}
