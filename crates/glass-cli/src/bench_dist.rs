//! `glass bench train` as one rank of a data-parallel job (`mpirun -n W glass bench train`)
//! or, with `--grad-groups`, the same grouped step in one process: the step a data-parallel
//! `glass train` runs (rank slice, gradient groups, deterministic reduce-scatter and
//! all-gather, AdamW), on random tokens, timed per step.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use glass_dist::Collective;
use glass_engine::bench::{peak_rss_mib, train_flops_per_token};
use glass_engine::{AdamW, AdamWConfig, Model, ModelConfig};
use glass_run::dist::DataParallel;
use serde::Serialize;

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

/// Runs `warmup + steps` data-parallel steps and times the last `steps`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    comm: Arc<dyn Collective>,
    preset: &str,
    cfg: &ModelConfig,
    batch: usize,
    seq: usize,
    steps: usize,
    warmup: usize,
    grad_groups: usize,
    shard_optimizer: bool,
) -> Result<DistBench> {
    let (w, r) = (comm.size(), comm.rank());
    if !batch.is_multiple_of(grad_groups) {
        anyhow::bail!("--batch {batch} is not a multiple of --grad-groups {grad_groups}");
    }
    let mut model = Model::new(cfg, 0)?;
    let n = model.params.len();
    let mut dp = DataParallel::new(
        comm.clone(),
        grad_groups,
        n,
        shard_optimizer,
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
        model: preset.to_string(),
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

/// One line of text for a [`DistBench`].
pub fn describe(r: &DistBench) -> String {
    format!(
        "{} data-parallel (batch {} × seq {}, {} rank(s) [{}] × {} thread(s), {} gradient groups{}): {:.0} tokens/s, {:.1} ms/step of which {:.1} ms in collectives, {:.1} GFLOP/s, {:.2} MB sent per rank per step ({} parameters), peak RSS {:.0} MiB (rank 0), loss {:.3}",
        r.model,
        r.batch,
        r.seq,
        r.world_size,
        r.transport,
        r.threads_per_rank,
        r.grad_groups,
        if r.shard_optimizer { ", sharded optimizer" } else { "" },
        r.tokens_per_s,
        r.step_ms,
        r.comm_ms,
        r.gflops,
        r.bytes_sent_per_rank_per_step as f64 / 1e6,
        r.params,
        r.peak_rss_mib,
        r.last_loss
    )
}
