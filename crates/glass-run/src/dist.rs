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
            shard_grads: if shard_optimizer {
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

    /// Makes every rank's model and optimizer equal rank 0's (after rank 0 initialised or
    /// loaded them): parameters broadcast; moments broadcast, or scattered by shard when
    /// the optimizer is sharded (rank 0's `opt` is then full-size on entry).
    pub fn sync_from_root(&self, model: &mut Model, opt: &mut AdamW) -> Result<()> {
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
        let mine = self.shard();
        for full in [&mut opt.m, &mut opt.v] {
            let mut part = vec![0.0f32; mine.len()];
            self.comm.scatter_f32(0, full, &self.shards, &mut part)?;
            *full = part;
        }
        Ok(())
    }

    /// Gives rank 0 a full-size optimizer again (to load a checkpoint into).
    pub fn unshard_for_load(&self, opt: &mut AdamW, n_params: usize) {
        if self.shard_optimizer && opt.m.len() != n_params {
            opt.m = vec![0.0; n_params];
            opt.v = vec![0.0; n_params];
        }
    }

    /// With a sharded optimizer, the full optimizer state on rank 0 (`None` on the other
    /// ranks) for writing a checkpoint; `None` everywhere when not sharded (every rank's
    /// `opt` is already whole).
    pub fn gather_optimizer(&self, opt: &AdamW, n_params: usize) -> Result<Option<AdamW>> {
        if !self.shard_optimizer {
            return Ok(None);
        }
        let root = self.is_root();
        let mut full = AdamW {
            cfg: opt.cfg,
            m: vec![0.0; if root { n_params } else { 0 }],
            v: vec![0.0; if root { n_params } else { 0 }],
            step: opt.step,
        };
        self.comm.gather_f32(0, &opt.m, &self.shards, &mut full.m)?;
        self.comm.gather_f32(0, &opt.v, &self.shards, &mut full.v)?;
        Ok(root.then_some(full))
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
