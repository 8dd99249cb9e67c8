//! `glass bench train`: GEMM peak and full training steps (forward + backward + AdamW).
//!
//! Numbers, not assertions: the figures are compared with `bench/pytorch_reference.py`
//! on the same machine.

use std::time::Instant;

use glass_engine::gemm::{matmul, Mat, Threads};
use glass_engine::{AdamW, AdamWConfig, Model, ModelConfig};
use serde::Serialize;

use crate::Result;

/// What to time: a model and the shape of its steps.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Preset name, reported as the model.
    pub preset: String,
    /// The preset's config.
    pub cfg: ModelConfig,
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed warm-up steps.
    pub warmup: usize,
}

impl TrainOptions {
    /// The options for `preset`, with the batch and length defaulting to the preset's
    /// benchmark shape ([`default_shape`]).
    pub fn preset(
        preset: &str,
        batch: Option<usize>,
        seq: Option<usize>,
        steps: usize,
        warmup: usize,
    ) -> Result<Self> {
        let cfg = ModelConfig::preset(preset)?;
        let (b, s) = default_shape(preset, &cfg);
        Ok(TrainOptions {
            preset: preset.to_string(),
            cfg,
            batch: batch.unwrap_or(b),
            seq: seq.unwrap_or(s),
            steps,
            warmup,
        })
    }
}

/// The benchmark shapes (batch, sequence length) the engine targets were set for.
pub fn default_shape(preset: &str, cfg: &ModelConfig) -> (usize, usize) {
    match preset {
        "tiny" => (16, 128),
        "small" => (4, 512),
        _ => (1, cfg.max_seq_len),
    }
}

/// Result of [`gemm_peak`].
#[derive(Debug, Clone, Serialize)]
pub struct GemmPeak {
    /// Square matrix size.
    pub n: usize,
    /// Best observed GFLOP/s over the repetitions.
    pub gflops: f64,
}

/// Measures sgemm throughput on an `n³` product (best of `reps`).
pub fn gemm_peak(n: usize, reps: usize) -> GemmPeak {
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0.0f32; n * n];
    let mut best = f64::MAX;
    for _ in 0..reps.max(1) + 1 {
        let t = Instant::now();
        matmul(
            Threads::Pool,
            n,
            n,
            n,
            Mat::n(&a, n),
            Mat::n(&b, n),
            &mut c,
            n,
            1.0,
            false,
        );
        best = best.min(t.elapsed().as_secs_f64());
    }
    GemmPeak {
        n,
        gflops: 2.0 * (n as f64).powi(3) / best / 1e9,
    }
}

/// Model FLOPs of one training step over `tokens` tokens of length-`seq` sequences:
/// 6 per matmul parameter per token, plus causal attention (forward 2·T·d per token per
/// layer, times 3 for forward + backward).
pub fn train_flops_per_token(cfg: &ModelConfig, seq: usize) -> f64 {
    let d = cfg.d_model as f64;
    let hd = cfg.head_dim() as f64;
    let per_layer = d * (cfg.n_heads as f64 + 2.0 * cfg.n_kv_heads as f64) * hd
        + d * cfg.n_heads as f64 * hd
        + 3.0 * d * cfg.ffn_hidden as f64;
    let matmul_params = cfg.n_layers as f64 * per_layer + cfg.vocab_size as f64 * d;
    let attn = 3.0 * cfg.n_layers as f64 * 2.0 * seq as f64 * cfg.n_heads as f64 * hd;
    6.0 * matmul_params + attn
}

/// Result of [`run`].
#[derive(Debug, Clone, Serialize)]
pub struct TrainBench {
    /// Preset or description of the model.
    pub model: String,
    /// Rayon threads used.
    pub threads: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Timed steps.
    pub steps: usize,
    /// Mean wall time per step, ms.
    pub step_ms: f64,
    /// Training tokens per second.
    pub tokens_per_s: f64,
    /// Achieved model GFLOP/s.
    pub gflops: f64,
    /// Model-FLOPs utilisation against the measured GEMM peak (`gflops / gemm_peak_gflops`).
    pub mfu: f64,
    /// Measured GEMM peak, GFLOP/s (Glass's GEMM, 1024³, this process's threads).
    pub gemm_peak_gflops: f64,
    /// Model-FLOPs utilisation against the hardware peak (`gflops / hardware_peak.gflops`).
    pub mfu_hardware: f64,
    /// The CPU's theoretical f32 FMA peak and how it was derived.
    pub hardware_peak: HardwarePeak,
    /// GEMM micro-kernel in use (`avx512`, `avx2`, `neon`, `portable`).
    pub kernel: &'static str,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: f64,
    /// Final loss (sanity: finite and falling from ln(vocab)).
    pub last_loss: f64,
}

/// One phase of a profiled step (`glass bench train --profile`).
#[derive(Debug, Clone, Serialize)]
pub struct PhaseTime {
    /// Phase name ([`glass_engine::profile::Phase::name`]).
    pub phase: &'static str,
    /// Milliseconds per step.
    pub ms_per_step: f64,
    /// Share of the measured step time.
    pub share: f64,
    /// Calls per step.
    pub calls_per_step: f64,
}

/// Runs `warmup + steps` AdamW steps on random tokens and times the last `steps`.
pub fn run(o: &TrainOptions) -> Result<TrainBench> {
    Ok(run_with(o, false)?.0)
}

/// [`run`] with the engine's phase profiler on ([`glass_engine::profile`]): the timed
/// steps' time per phase. Profiling times each operation on the calling thread; the
/// step time it reports is that of the profiled steps themselves.
pub fn profile(o: &TrainOptions) -> Result<(TrainBench, Vec<PhaseTime>)> {
    let (b, p) = run_with(o, true)?;
    Ok((b, p.unwrap_or_default()))
}

fn run_with(o: &TrainOptions, profiled: bool) -> Result<(TrainBench, Option<Vec<PhaseTime>>)> {
    glass_engine::profile::enable(profiled);
    let (cfg, batch, seq, steps) = (&o.cfg, o.batch, o.seq, o.steps);
    let mut model = Model::new(cfg, 0)?;
    let mut opt = AdamW::new(AdamWConfig::default(), model.params.len());
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut rows = vec![0u32; batch * (seq + 1)];
    let mut last_loss = f64::NAN;
    let mut elapsed = 0.0;
    for i in 0..o.warmup + steps {
        for t in rows.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *t = (state % cfg.vocab_size as u64) as u32;
        }
        if i == o.warmup {
            glass_engine::profile::reset();
        }
        let t0 = Instant::now();
        last_loss = model.train_step(&mut opt, &rows, seq, batch, 3e-4)?.loss;
        if i >= o.warmup {
            elapsed += t0.elapsed().as_secs_f64();
        }
    }
    let step_s = elapsed / steps.max(1) as f64;
    let tokens = (batch * seq) as f64;
    let gflops = train_flops_per_token(cfg, seq) * tokens / step_s / 1e9;
    let peak = gemm_peak(1024, 3).gflops;
    let hw = hardware_peak();
    let phases = profiled.then(|| {
        let per = steps.max(1) as f64;
        glass_engine::profile::totals()
            .into_iter()
            .map(|(p, secs, calls)| PhaseTime {
                phase: p.name(),
                ms_per_step: secs * 1e3 / per,
                share: secs / elapsed.max(1e-12),
                calls_per_step: calls as f64 / per,
            })
            .collect()
    });
    glass_engine::profile::enable(false);
    let bench = TrainBench {
        model: o.preset.clone(),
        threads: rayon::current_num_threads(),
        batch,
        seq,
        steps,
        step_ms: step_s * 1e3,
        tokens_per_s: tokens / step_s,
        gflops,
        mfu: gflops / peak,
        gemm_peak_gflops: peak,
        mfu_hardware: gflops / hw.gflops,
        hardware_peak: hw,
        kernel: glass_engine::gemm::active_kernel().name(),
        peak_rss_mib: peak_rss_mib(),
        last_loss,
    };
    Ok((bench, phases))
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`; 0 elsewhere).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Theoretical f32 peak: cores × FMA units × lanes × 2 flops × clock.
#[derive(Debug, Clone, Serialize)]
pub struct HardwarePeak {
    /// Threads this process computes on (the rayon pool).
    pub cores: usize,
    /// FMA pipes per core (assumed: 2 on every x86-64 core with AVX2 or AVX-512F since
    /// Haswell/Skylake-SP, 2 for NEON on common aarch64 cores, 1 without vector FMA).
    pub fma_units: usize,
    /// f32 lanes per FMA of the kernel in use.
    pub lanes: usize,
    /// Clock, GHz.
    pub ghz: f64,
    /// Where the clock came from.
    pub clock_source: String,
    /// cores × fma_units × lanes × 2 × ghz.
    pub gflops: f64,
    /// One line saying how the figure was derived.
    pub derivation: String,
}

/// The hardware peak for the active kernel, with the clock from sysfs
/// (`cpuinfo_max_freq`) or else `/proc/cpuinfo` (`cpu MHz`).
pub fn hardware_peak() -> HardwarePeak {
    use glass_engine::gemm::Kernel;
    let kernel = glass_engine::gemm::active_kernel();
    let (fma_units, lanes) = match kernel {
        Kernel::Avx512 => (2, 16),
        Kernel::Avx2 => (2, 8),
        Kernel::Neon => (2, 4),
        Kernel::Portable => (1, 1),
    };
    let cores = rayon::current_num_threads();
    let sysfs = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .map(|khz| {
            (
                khz / 1e6,
                "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq",
            )
        });
    let cpuinfo = || {
        std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
                .map(|mhz| (mhz / 1e3, "/proc/cpuinfo 'cpu MHz'"))
        })
    };
    let (ghz, src) = sysfs
        .or_else(cpuinfo)
        .unwrap_or((0.0, "unknown (no sysfs or /proc/cpuinfo clock)"));
    let gflops = cores as f64 * fma_units as f64 * lanes as f64 * 2.0 * ghz;
    HardwarePeak {
        cores,
        fma_units,
        lanes,
        ghz,
        clock_source: src.to_string(),
        gflops,
        derivation: format!(
            "{cores} threads × {fma_units} FMA units (assumed for {}) × {lanes} f32 lanes × 2 flops × {ghz:.2} GHz ({src}) = {gflops:.1} GFLOP/s",
            kernel.name()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_default_to_their_benchmark_shape() {
        let o = TrainOptions::preset("tiny", None, Some(64), 1, 0).unwrap();
        assert_eq!((o.batch, o.seq), (16, 64));
        let o = TrainOptions::preset("small", Some(2), None, 1, 0).unwrap();
        assert_eq!((o.batch, o.seq), (2, 512));
        assert!(TrainOptions::preset("no-such-preset", None, None, 1, 0).is_err());
    }

    #[test]
    fn flops_per_token_counts_six_per_matmul_parameter_plus_attention() {
        let cfg = ModelConfig::preset("tiny").unwrap();
        let seq = 128;
        let attn = 3.0
            * cfg.n_layers as f64
            * 2.0
            * seq as f64
            * cfg.n_heads as f64
            * cfg.head_dim() as f64;
        let f = train_flops_per_token(&cfg, seq);
        assert!(f > attn);
        assert_eq!((f - attn) % 6.0, 0.0);
    }
}
