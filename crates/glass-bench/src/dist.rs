//! `glass bench train` as one rank of a data-parallel job (`mpirun -n W glass bench train`)
//! or, with `--grad-groups`, the same grouped step in one process: the step a data-parallel
//! `glass train` runs (rank slice, gradient groups, deterministic reduce-scatter and
//! all-gather, AdamW), on random tokens, timed per step.
//!
//! The caller owns the world: it passes the communicator in (the launcher, and MPI, are
//! the binary's business).

use std::sync::Arc;
use std::time::Instant;

use glass_dist::Collective;
use glass_engine::{AdamW, AdamWConfig, Model};
use glass_run::dist::DataParallel;
use serde::Serialize;

use crate::train::{peak_rss_mib, train_flops_per_token, TrainOptions};
use crate::{BenchError, Result};

/// What to time: the single-process options, grouped and spread over the ranks.
#[derive(Debug, Clone)]
pub struct DistOptions {
    /// Model, global batch, length and step counts.
    pub train: TrainOptions,
    /// Gradient groups per step (a divisor of the batch).
    pub grad_groups: usize,
    /// Shard the AdamW moments over the ranks (ZeRO stage 1).
    pub shard_optimizer: bool,
}

/// What one data-parallel benchmark measured (rank 0's view; the step time is the
/// slowest rank's, since every step ends in collectives).
#[derive(Debug, Serialize)]
pub struct DistBench {
    /// Model preset.
    pub model: String,
    /// Ranks.
    pub world_size: usize,
    /// Transport (`single`, `mpi`).
    pub transport: &'static str,
    /// Threads per rank.
    pub threads_per_rank: usize,
    /// Gradient groups per step.
    pub grad_groups: usize,
    /// ZeRO-1 optimizer sharding.
    pub shard_optimizer: bool,
    /// Global batch rows per step.
    pub batch: usize,
    /// Tokens per row.
    pub seq: usize,
    /// Timed steps.
    pub steps: usize,
    /// Mean wall time per step, ms.
    pub step_ms: f64,
    /// Mean time per step inside collectives (incl. waiting), ms.
    pub comm_ms: f64,
    /// Global training tokens per second.
    pub tokens_per_s: f64,
    /// Achieved model GFLOP/s over all ranks.
    pub gflops: f64,
    /// Bytes each rank sends per step (reduce-scatter + all-gather volume).
    pub bytes_sent_per_rank_per_step: u64,
    /// Parameters.
    pub params: usize,
    /// Peak resident memory of rank 0, MiB.
    pub peak_rss_mib: f64,
    /// Final loss (same on every rank).
    pub last_loss: f64,
}

/// Runs `warmup + steps` data-parallel steps on `comm` and times the last `steps`.
pub fn run(comm: Arc<dyn Collective>, o: &DistOptions) -> Result<DistBench> {
    let TrainOptions {
        preset,
        cfg,
        batch,
        seq,
        steps,
        warmup,
    } = &o.train;
    let (batch, seq, steps, warmup, grad_groups) = (*batch, *seq, *steps, *warmup, o.grad_groups);
    let (w, r) = (comm.size(), comm.rank());
    if !batch.is_multiple_of(grad_groups) {
        return Err(BenchError::Failed(format!(
            "--batch {batch} is not a multiple of --grad-groups {grad_groups}"
        )));
    }
    let mut model = Model::new(cfg, 0)?;
    let n = model.params.len();
    let mut dp = DataParallel::new(
        comm.clone(),
        grad_groups,
        n,
        o.shard_optimizer,
        "--grad-groups",
    )?;
    let mut opt = AdamW::new(AdamWConfig::default(), n);
    if dp.shard_optimizer {
        let s = dp.shard();
        opt.m = vec![0.0; s.len()];
        opt.v = vec![0.0; s.len()];
    }
    let row_len = seq + 1;
    let mut rows = vec![0u32; batch * row_len];
    let (a, b) = (r * batch / w * row_len, (r + 1) * batch / w * row_len);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let (mut elapsed, mut comm_s, mut last_loss) = (0.0, 0.0, f64::NAN);
    for i in 0..warmup + steps {
        // Every rank draws the whole global batch (same generator) and keeps its slice.
        for t in rows.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *t = (state % cfg.vocab_size as u64) as u32;
        }
        let t0 = Instant::now();
        let group_rows = batch / grad_groups;
        last_loss = dp.gradients_of_rows(&mut model, &rows[a..b], seq, group_rows, batch * seq)?;
        let norm = dp.grad_norm(&model)?;
        dp.apply(&mut model, &mut opt, 3e-4, norm)?;
        if i >= warmup {
            elapsed += t0.elapsed().as_secs_f64();
            comm_s += dp.last_step_comm_s;
        }
    }
    let step_s = elapsed / steps.max(1) as f64;
    let tokens = (batch * seq) as f64;
    Ok(DistBench {
        model: preset.clone(),
        world_size: w,
        transport: comm.transport(),
        threads_per_rank: rayon::current_num_threads(),
        grad_groups,
        shard_optimizer: dp.shard_optimizer,
        batch,
        seq,
        steps,
        step_ms: step_s * 1e3,
        comm_ms: comm_s / steps.max(1) as f64 * 1e3,
        tokens_per_s: tokens / step_s,
        gflops: train_flops_per_token(cfg, seq) * tokens / step_s / 1e9,
        bytes_sent_per_rank_per_step: 4 * dp.last_step_values_sent,
        params: n,
        peak_rss_mib: peak_rss_mib(),
        last_loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_batch_the_groups_do_not_divide() {
        let o = DistOptions {
            train: TrainOptions::preset("tiny", Some(3), Some(8), 1, 0).unwrap(),
            grad_groups: 2,
            shard_optimizer: false,
        };
        let e = run(Arc::new(glass_dist::Solo), &o).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--batch 3 is not a multiple of --grad-groups 2"
        );
    }
}
