//! `glass bench`: engine and data throughput, printed as text and optionally JSON.

use anyhow::Result;
use clap::{Args, Subcommand};
use glass_engine::bench::train_bench;
use glass_engine::ModelConfig;

/// What to measure.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Full training steps (forward + backward + AdamW) on random tokens.
    Train(TrainArgs),
    /// `glass data prepare` in a fresh process vs a Python pipeline doing the same job,
    /// and tokenizer-only throughput vs the HF tokenizers package.
    Data(crate::bench_data::BenchDataArgs),
    /// Checkpoint write and load throughput (GB/s), the load warm and cold (page cache).
    Checkpoint {
        /// Model preset.
        #[arg(long, default_value = "small")]
        preset: String,
        /// Directory to write the checkpoints in.
        #[arg(long, default_value = "target/bench-checkpoint")]
        dir: std::path::PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hugging Face export and import throughput (GB/s) for a model preset.
    Hf(crate::hf::BenchHfArgs),
    /// Trace-index build speed and peak memory, and count latency (`glass index`).
    Index(crate::analysis::BenchIndexArgs),
    /// sgemm throughput of Glass's GEMM against the `gemm` crate (squares and model shapes).
    Gemm(crate::bench_gemm::GemmArgs),
    /// `glass serve` on a synthetic million-step run: API latency of the loss curve, and
    /// time to the first drawn chart in headless Chromium.
    Serve(crate::bench_serve::BenchServeArgs),
}

/// Options of `glass bench train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Model preset (`tiny`: batch 8 × 256; `small`: batch 4 × 512).
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Sequences per step (default: the preset's benchmark batch).
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per sequence (default: the preset's benchmark length).
    #[arg(long)]
    seq: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Time the data-parallel step with this many gradient groups (default under
    /// mpirun/srun: the world size); also usable in one process for comparison.
    #[arg(long)]
    grad_groups: Option<usize>,
    /// Data parallel: shard the AdamW moments over the ranks (ZeRO stage 1).
    #[arg(long)]
    shard_optimizer: bool,
}

/// The benchmark shapes the engine targets were set for.
pub fn default_shape(preset: &str, cfg: &ModelConfig) -> (usize, usize) {
    match preset {
        "tiny" => (8, 256),
        "small" => (4, 512),
        _ => (1, cfg.max_seq_len),
    }
}

/// Runs one bench subcommand.
pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Data(a) => crate::bench_data::run(&a)?,
        BenchCommand::Checkpoint { preset, dir, json } => {
            crate::bench_checkpoint::run(&preset, &dir, json)?
        }
        BenchCommand::Hf(a) => crate::hf::bench(a)?,
        BenchCommand::Index(a) => crate::analysis::bench_index(a)?,
        BenchCommand::Gemm(a) => crate::bench_gemm::run(a)?,
        BenchCommand::Serve(a) => crate::bench_serve::run(a)?,
        BenchCommand::Train(a) => {
            let cfg = ModelConfig::preset(&a.preset)?;
            let (b, s) = default_shape(&a.preset, &cfg);
            let (b, s) = (a.batch.unwrap_or(b), a.seq.unwrap_or(s));
            let comm = crate::world::world("bench train")?;
            if comm.size() > 1 || a.grad_groups.is_some() {
                let g = a.grad_groups.unwrap_or(comm.size());
                let r = crate::world::or_abort(
                    &*comm,
                    crate::bench_dist::run(
                        comm.clone(),
                        &a.preset,
                        &cfg,
                        b,
                        s,
                        a.steps,
                        a.warmup,
                        g,
                        a.shard_optimizer,
                    ),
                )?;
                if comm.rank() == 0 {
                    if a.json {
                        println!("{}", serde_json::to_string(&r)?);
                    } else {
                        println!("{}", crate::bench_dist::describe(&r));
                    }
                }
                return Ok(());
            }
            let r = train_bench(&a.preset, &cfg, b, s, a.steps, a.warmup)?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} (batch {} × seq {}, {} threads): {:.0} tokens/s, {:.1} ms/step, {:.1} GFLOP/s, MFU {:.0}% of {:.1} GFLOP/s GEMM peak, peak RSS {:.0} MiB, loss {:.3}",
                    r.model, r.batch, r.seq, r.threads, r.tokens_per_s, r.step_ms, r.gflops, 100.0 * r.mfu, r.gemm_peak_gflops, r.peak_rss_mib, r.last_loss
                );
                println!(
                    "  {:.1} GFLOP/s = {:.0}% of the measured GEMM peak ({:.1} GFLOP/s, {} kernel) and {:.0}% of the hardware peak: {}",
                    r.gflops, 100.0 * r.mfu, r.gemm_peak_gflops, r.kernel, 100.0 * r.mfu_hardware, r.hardware_peak.derivation
                );
            }
        }
    }
    Ok(())
}
