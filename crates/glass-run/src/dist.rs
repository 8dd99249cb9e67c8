//! Data parallelism with bits independent of the world size.
//!
//! A step's gradient is the engine's pairwise tree over `[train] grad_groups` gradient
//! groups ([`glass_engine::grad_tree`]). Rank `r` of `W` reads only its contiguous slice
//! of the step's rows — gradient groups `[r·G/W, (r+1)·G/W)` — computes that exact
//! subtree, and the ranks finish the top `log2 W` levels with a deterministic
//! reduce-scatter ([`glass_dist::Collective::reduce_scatter_tree`]). Loss sums follow the
//! same tree. The gradient norm is the engine's fixed-chunk sum of squares, whose chunk
//! partials are concatenated over ranks in order. So every `W` dividing `G` yields the
//! one-process bits, and a run can stop under one `W` and resume under another.
//!
//! With `shard_optimizer` (ZeRO stage 1) each rank keeps the AdamW moments of its shard
//! only: reduce-scatter the gradient, update the shard, all-gather the parameters. The
//! update is element-wise, so the bits equal the unsharded run.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use glass_data::PreparedData;
use glass_dist::{shards, valid_world_sizes, Collective, Solo};
use glass_engine::parallel::sum_squares_partials;
use glass_engine::{AdamW, GradTree, Model};
use sha2::{Digest, Sha256};

use crate::error::{Result, RunError};
use crate::moments::{Moment, MomentSource, OptimizerFile};

/// Most values of a sharded optimizer's moments one checkpoint write or load moves at once
/// (2^22 `f32`s, 16 MiB): the whole of rank 0's extra memory for it. A transport with a
/// smaller piece ([`Collective::piece`]) cuts smaller.
pub const CHECKPOINT_PIECE: usize = 1 << 22;

impl From<glass_dist::DistError> for RunError {
    fn from(e: glass_dist::DistError) -> Self {
        RunError::Invalid(e.to_string())
    }
}

/// The default number of gradient groups when `[train] grad_groups` is not set: the
/// largest power of two that divides `rows_per_step`, is at most `rows_per_step /
/// micro_batch_rows` (so no micro-batch gets smaller than configured) and at most
/// [`MAX_DEFAULT_GROUPS`] (each tree level costs one gradient-sized buffer).
pub fn default_grad_groups(rows_per_step: usize, micro_batch_rows: usize) -> usize {
    let cap = (rows_per_step / micro_batch_rows.max(1)).clamp(1, MAX_DEFAULT_GROUPS);
    let mut g = 1;
    while g * 2 <= cap && rows_per_step.is_multiple_of(g * 2) {
        g *= 2;
    }
    g
}

/// Cap of [`default_grad_groups`]: world sizes 1, 2, 4 and 8 out of the box.
pub const MAX_DEFAULT_GROUPS: usize = 8;

/// Data-parallel state of one rank: the transport, the gradient tree's scratch and, with
/// a sharded optimizer, this rank's slice of the reduced gradient.
pub struct DataParallel {
    comm: Arc<dyn Collective>,
    /// Gradient groups of every step.
    pub groups: usize,
    /// Keep only this rank's shard of the AdamW moments.
    pub shard_optimizer: bool,
    shards: Vec<Range<usize>>,
    tree: GradTree,
    scratch: Vec<f32>,
    shard_grads: Vec<f32>,
    /// f32 values this rank sent in its last step's collectives (benchmark figure).
    pub last_step_values_sent: u64,
    /// Seconds the last step spent in collectives (including waiting for other ranks).
    pub last_step_comm_s: f64,
}

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("rank", &self.rank())
            .field("size", &self.size())
            .field("groups", &self.groups)
            .field("shard_optimizer", &self.shard_optimizer)
            .finish()
    }
}

impl DataParallel {
    /// One process, no sharding.
    pub fn single(groups: usize, n_params: usize) -> Self {
        Self::new(Arc::new(Solo), groups, n_params, false, "").expect("W = 1 always fits")
    }

    /// Checks that this world size reproduces the run's bits (`W` a power of two
    /// dividing `groups`); `config` names the file to change in the error.
    pub fn new(
        comm: Arc<dyn Collective>,
        groups: usize,
        n_params: usize,
        shard_optimizer: bool,
        config: &str,
    ) -> Result<Self> {
        let w = comm.size();
        if !w.is_power_of_two() || !groups.is_multiple_of(w) {
            let valid: Vec<String> = valid_world_sizes(groups)
                .iter()
                .map(|w| w.to_string())
                .collect();
            return Err(RunError::Invalid(format!(
                "world size {w} cannot reproduce this run's bits: each step's gradient is a fixed tree over {groups} gradient group(s) ([train] grad_groups in {config}), which only world sizes {} divide; launch with one of those, or raise grad_groups (a power of two dividing [data] rows_per_step; it changes the bits of every later step)",
                valid.join(", ")
            )));
        }
        let shards = shards(n_params, w);
        let shard_len = shards[comm.rank()].len();
        Ok(DataParallel {
            comm,
            groups,
            shard_optimizer: shard_optimizer && w > 1,
            shards,
            tree: GradTree::new(),
            scratch: Vec::new(),
            shard_grads: if shard_optimizer && w > 1 {
                vec![0.0; shard_len]
            } else {
                Vec::new()
            },
            last_step_values_sent: 0,
            last_step_comm_s: 0.0,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }
    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.comm.size()
    }
    /// Whether this rank writes the run's files.
    pub fn is_root(&self) -> bool {
        self.comm.rank() == 0
    }
    /// The transport.
    pub fn comm(&self) -> &dyn Collective {
        &*self.comm
    }
    /// The parameter range whose optimizer state this rank keeps when sharded.
    pub fn shard(&self) -> Range<usize> {
        self.shards[self.rank()].clone()
    }

    /// Reads this rank's rows of `step`, computes its subtree of gradient groups and
    /// combines it with the other ranks'. Afterwards [`Model::grads`] (or, sharded, this
    /// rank's shard of it) holds the step's gradient. Returns the step's mean loss.
    pub fn gradients(
        &mut self,
        model: &mut Model,
        data: &PreparedData,
        step: u64,
        rows: &mut Vec<u32>,
        micro_batch: usize,
    ) -> Result<f64> {
        data.rows(step, self.rank(), self.size(), rows)?;
        let seq = data.seq_len();
        self.gradients_of_rows(model, rows, seq, micro_batch, data.rows_per_step() * seq)
    }

    /// [`DataParallel::gradients`] for rows already read: `rows` are this rank's slice
    /// of a step of `step_tokens` target tokens in all.
    pub fn gradients_of_rows(
        &mut self,
        model: &mut Model,
        rows: &[u32],
        seq: usize,
        micro_batch: usize,
        step_tokens: usize,
    ) -> Result<f64> {
        let w = self.size();
        let local = model.accumulate_grouped(
            &mut self.tree,
            rows,
            seq,
            micro_batch,
            self.groups / w,
            step_tokens,
        )?;
        let t0 = Instant::now();
        let loss = self.comm.tree_sum_f64(local)?;
        if w > 1 {
            let n = model.grads.len() as u64;
            if self.shard_optimizer {
                let mine = self.shard();
                let mut out = std::mem::take(&mut self.shard_grads);
                out.resize(mine.len(), 0.0);
                self.comm.reduce_scatter_tree(
                    &model.grads,
                    &self.shards,
                    &mut out,
                    &mut self.scratch,
                )?;
                self.shard_grads = out;
                // Reduce-scatter of the gradient, all-gather of the parameters.
                self.last_step_values_sent = 2 * (n - mine.len() as u64);
            } else {
                self.comm
                    .all_reduce_tree(&mut model.grads, &self.shards, &mut self.scratch)?;
                // Reduce-scatter, then all-gather, of the gradient.
                self.last_step_values_sent = 2 * (n - self.shard().len() as u64);
            }
        }
        self.last_step_comm_s = t0.elapsed().as_secs_f64();
        Ok(loss / step_tokens as f64)
    }

    /// The global L2 norm of the step's gradient, bit-identical to
    /// [`AdamW::grad_norm`] of the whole gradient in one process.
    pub fn grad_norm(&self, model: &Model) -> Result<f64> {
        if !self.shard_optimizer {
            return Ok(AdamW::grad_norm(&model.grads));
        }
        // Shards start on REDUCE_CHUNK boundaries, so the concatenated partials are the
        // one-process partials, added here in the same order.
        let all = self
            .comm
            .all_gather_f64(&sum_squares_partials(&self.shard_grads))?;
        Ok(all.iter().flatten().sum::<f64>().sqrt())
    }

    /// Clips and applies the step's gradient with AdamW at `lr`, given its pre-clip
    /// `norm`. Sharded: updates this rank's shard, then all-gathers the parameters.
    pub fn apply(&mut self, model: &mut Model, opt: &mut AdamW, lr: f32, norm: f64) -> Result<()> {
        let mult = model.cfg.mup.lr_multipliers;
        if !self.shard_optimizer {
            opt.step_slice(
                &mut model.params,
                &mut model.grads,
                0,
                &model.layout,
                lr,
                &mult,
                norm,
            );
            return Ok(());
        }
        let mine = self.shard();
        let mut part = model.params[mine.clone()].to_vec();
        opt.step_slice(
            &mut part,
            &mut self.shard_grads,
            mine.start,
            &model.layout,
            lr,
            &mult,
            norm,
        );
        let counts: Vec<usize> = self.shards.iter().map(|s| s.len()).collect();
        let t0 = Instant::now();
        self.comm
            .all_gather_f32(&part, &counts, &mut model.params)?;
        self.last_step_comm_s += t0.elapsed().as_secs_f64();
        Ok(())
    }

    /// Values of this rank's optimizer moments: the whole parameter count, or its
    /// shard's when sharded (what [`glass_engine::AdamW::new`] should be given).
    pub fn moments_len(&self, n_params: usize) -> usize {
        if self.shard_optimizer {
            self.shard().len()
        } else {
            n_params
        }
    }

    /// Makes every rank's model and optimizer equal rank 0's (after rank 0 initialised or
    /// loaded them): parameters and the AdamW step broadcast; moments broadcast, or, when
    /// sharded, read by rank 0 from `file` (the checkpoint it loaded, see
    /// [`crate::checkpoint::load_model`]) one piece at a time and sent to the rank that
    /// owns it, so that no rank ever holds more than its shard and a piece. A sharded
    /// optimizer with no file on rank 0 is a fresh start: zero moments everywhere.
    pub fn sync_from_root(
        &self,
        model: &mut Model,
        opt: &mut AdamW,
        file: Option<&OptimizerFile>,
    ) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        self.comm.broadcast_f32(0, &mut model.params)?;
        let mut step = opt.step.to_le_bytes().to_vec();
        self.comm.broadcast_bytes(0, &mut step)?;
        opt.step = u64::from_le_bytes(
            step.as_slice()
                .try_into()
                .map_err(|_| RunError::Invalid("rank 0 sent a malformed optimizer step".into()))?,
        );
        if !self.shard_optimizer {
            self.comm.broadcast_f32(0, &mut opt.m)?;
            self.comm.broadcast_f32(0, &mut opt.v)?;
            return Ok(());
        }
        if !self.broadcast_json(&file.is_some())? {
            opt.m
                .iter_mut()
                .chain(opt.v.iter_mut())
                .for_each(|x| *x = 0.0);
            return Ok(());
        }
        // Rank 0 goes on through a failed read (sending zeros) so that every rank stays in
        // step, then says how it went.
        let mut failed: Option<String> = None;
        let mine = self.shard();
        let mut buf = Vec::new();
        for moment in Moment::BOTH {
            let local = moment.of_mut(opt);
            for (window, parts) in self.pieces(0..model.params.len()) {
                let own = parts[self.rank()].clone();
                if let Some(f) = file {
                    buf.clear();
                    buf.resize(window.len(), 0.0);
                    if failed.is_none() {
                        if let Err(e) = f.read(moment, window, &mut buf) {
                            failed = Some(e.to_string());
                            buf.fill(0.0);
                        }
                    }
                }
                let dst = if own.is_empty() {
                    &mut [][..]
                } else {
                    &mut local[own.start - mine.start..own.end - mine.start]
                };
                self.comm.scatter_f32(0, &buf, &parts, dst)?;
            }
        }
        if let Some(msg) = self.broadcast_json(&failed)? {
            return Err(RunError::Invalid(format!(
                "rank 0 could not read the optimizer state: {msg}"
            )));
        }
        Ok(())
    }

    /// The flat parameter range `range` cut into windows of at most one checkpoint piece
    /// ([`CHECKPOINT_PIECE`], or the transport's piece if smaller), each with its part on
    /// every rank's shard (empty where the shard misses it), in rank order.
    fn pieces(
        &self,
        range: Range<usize>,
    ) -> impl Iterator<Item = (Range<usize>, Vec<Range<usize>>)> + '_ {
        pieces(&self.shards, range, self.comm.piece())
    }

    /// The moments of this rank's shard of `opt`, as a checkpoint's optimizer file asks for
    /// them ([`crate::checkpoint::write_with`] on rank 0,
    /// [`crate::moments::serve_optimizer`] on the others). Collective: every rank
    /// learns whether every shard's second moment is finite.
    pub fn sharded_moments<'a>(&self, opt: &'a AdamW) -> Result<ShardedMoments<'a>> {
        let flags = self
            .comm
            .all_gather_bytes(&[crate::integrity::all_finite(&opt.v) as u8])?;
        Ok(ShardedMoments {
            comm: self.comm.clone(),
            shards: self.shards.clone(),
            opt,
            finite: flags.iter().all(|f| f.first() == Some(&1)),
            buf: Vec::new(),
        })
    }

    /// See [`require_same`].
    pub fn require_same(&self, what: &str, value: &str, fix: &str) -> Result<()> {
        require_same(&*self.comm, what, value, fix)
    }

    /// The broadcast of a small serialisable value from rank 0.
    pub fn broadcast_json<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        value: &T,
    ) -> Result<T> {
        let mut b = serde_json::to_vec(value).expect("serialisable");
        self.comm.broadcast_bytes(0, &mut b)?;
        serde_json::from_slice(&b)
            .map_err(|e| RunError::Invalid(format!("rank 0 sent malformed state: {e}")))
    }

    /// Gradient-sized buffers the tree scratch holds (memory report).
    pub fn tree_buffers(&self) -> usize {
        self.tree.buffers()
    }
}

/// `range` cut into windows of at most [`CHECKPOINT_PIECE`] values (and at most `piece`),
/// each with its intersection with every shard (empty ranges where they miss).
fn pieces(
    shards: &[Range<usize>],
    range: Range<usize>,
    piece: usize,
) -> impl Iterator<Item = (Range<usize>, Vec<Range<usize>>)> + '_ {
    let step = CHECKPOINT_PIECE.min(piece).max(1);
    (range.start..range.end).step_by(step).map(move |a| {
        let b = (a + step).min(range.end);
        let parts = shards
            .iter()
            .map(|s| {
                let lo = a.max(s.start).min(b);
                lo..b.min(s.end).max(lo)
            })
            .collect();
        (a..b, parts)
    })
}

/// A sharded optimizer's moments as a checkpoint's optimizer file sees them
/// ([`DataParallel::sharded_moments`]): every range the file asks for is gathered on rank
/// 0, one piece at a time, from the ranks whose shards hold it. Rank 0 holds one piece
/// beyond its shard; the other ranks send and hold nothing more.
pub struct ShardedMoments<'a> {
    comm: Arc<dyn Collective>,
    shards: Vec<Range<usize>>,
    opt: &'a AdamW,
    finite: bool,
    buf: Vec<f32>,
}

impl MomentSource for ShardedMoments<'_> {
    fn adamw_step(&self) -> u64 {
        self.opt.step
    }
    fn finite(&self) -> bool {
        self.finite
    }
    fn stream(
        &mut self,
        moment: Moment,
        range: Range<usize>,
        sink: &mut dyn FnMut(&[f32]) -> Result<()>,
    ) -> Result<()> {
        let me = self.comm.rank();
        let mine = self.shards[me].clone();
        let local = moment.of(self.opt);
        for (window, parts) in pieces(&self.shards, range, self.comm.piece()) {
            let send = within(local, &mine, &parts[me]);
            self.buf.clear();
            if me == 0 {
                self.buf.resize(window.len(), 0.0);
            }
            self.comm.gather_f32(0, send, &parts, &mut self.buf)?;
            if me == 0 {
                sink(&self.buf)?;
            }
        }
        Ok(())
    }
}

/// The values of `part` (a range of the flat buffer inside `shard`, or empty) in `local`,
/// which holds `shard`.
fn within<'a>(local: &'a [f32], shard: &Range<usize>, part: &Range<usize>) -> &'a [f32] {
    if part.is_empty() {
        &[]
    } else {
        &local[part.start - shard.start..part.end - shard.start]
    }
}

/// Refuses to go on unless every rank holds the same `value` as rank 0 (config and data
/// hashes before the first step, parameter hashes before a checkpoint). Every rank sees
/// the same answer, so all stop together.
pub fn require_same(comm: &dyn Collective, what: &str, value: &str, fix: &str) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let all = comm.all_gather_bytes(value.as_bytes())?;
    let bad: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(_, v)| *v != &all[0])
        .map(|(r, v)| format!("rank {r} has {}", String::from_utf8_lossy(v)))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(RunError::Invalid(format!(
        "{what} differs between ranks: rank 0 has {}, {}; {fix}",
        String::from_utf8_lossy(&all[0]),
        bad.join(", ")
    )))
}

/// sha256 of the parameters' bytes (the divergence check before each checkpoint).
pub fn params_sha256(params: &[f32]) -> String {
    let mut h = Sha256::new();
    for c in params.chunks(1 << 20) {
        h.update(bytemuck::cast_slice::<f32, u8>(c));
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_groups_follow_micro_batches() {
        assert_eq!(default_grad_groups(16, 16), 1);
        assert_eq!(default_grad_groups(16, 4), 4);
        assert_eq!(default_grad_groups(16, 1), 8);
        assert_eq!(default_grad_groups(12, 1), 4);
        assert_eq!(default_grad_groups(6, 2), 2);
        assert_eq!(default_grad_groups(7, 1), 1);
    }
}
