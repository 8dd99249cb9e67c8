//! `glass bench train --python PY`: Glass's training step beside PyTorch in each of its
//! fast CPU configurations (eager with SDPA or eager attention, `torch.compile` default
//! and `max-autotune`, all with fused AdamW), alternating rounds so that a noisy machine
//! slows both sides alike, and the medians compared against the fastest configuration.
//!
//! PyTorch runs `bench/pytorch_reference.py` (transformers' `LlamaForCausalLM`, same
//! shapes, batch, loss, clipping and AdamW as the preset) in a fresh process per round;
//! Glass runs [`crate::train::run`], the benchmark `glass bench train` prints.

use std::path::PathBuf;
use std::process::Command;

use serde::Serialize;

use crate::train::{TrainBench, TrainOptions};
use crate::{BenchError, Result};

/// One PyTorch configuration: its name and the reference script's flags.
#[derive(Debug, Clone, Serialize)]
pub struct TorchConfig {
    /// Short name (`eager-sdpa`, `compile-max-autotune`, ...).
    pub name: &'static str,
    /// Flags for `bench/pytorch_reference.py`.
    pub args: &'static [&'static str],
}

/// PyTorch's configurations, from plain eager to inductor's most tuned mode; AdamW is
/// fused in each (one kernel over all parameters).
pub const CONFIGS: &[TorchConfig] = &[
    TorchConfig {
        name: "eager-sdpa",
        args: &["--attn", "sdpa"],
    },
    TorchConfig {
        name: "eager",
        args: &["--attn", "eager"],
    },
    TorchConfig {
        name: "compile",
        args: &["--attn", "sdpa", "--compile", "default"],
    },
    TorchConfig {
        name: "compile-max-autotune",
        args: &["--attn", "sdpa", "--compile", "max-autotune"],
    },
];

/// Options of [`compare`].
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Glass's side (its preset, batch, length, steps).
    pub train: TrainOptions,
    /// Python with torch and transformers.
    pub python: PathBuf,
    /// The reference script.
    pub script: PathBuf,
    /// Threads on both sides.
    pub threads: usize,
    /// Rounds (each: Glass, then every configuration).
    pub rounds: usize,
    /// Configurations to run (names of [`CONFIGS`]; empty: all).
    pub configs: Vec<String>,
}

/// The medians of one side over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct SideResult {
    /// `glass` or the configuration's name.
    pub name: String,
    /// Training tokens per second of each round.
    pub tokens_per_s: Vec<f64>,
    /// Median of `tokens_per_s`.
    pub median_tokens_per_s: f64,
    /// Largest peak RSS over the rounds, MiB.
    pub peak_rss_mib: f64,
    /// Seconds the compile took (median; `torch.compile` configurations only).
    pub compile_s: f64,
}

/// What [`compare`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct TrainComparison {
    /// What was timed, in words.
    pub measured: String,
    /// The CPU model (`/proc/cpuinfo`) and the SIMD extensions that matter here.
    pub cpu: String,
    /// Glass's last round, for its GEMM kernel, MFU and peaks.
    pub glass_last: TrainBench,
    /// Glass, then each configuration, in the order run.
    pub sides: Vec<SideResult>,
    /// The fastest PyTorch configuration by median.
    pub fastest_torch: String,
    /// Glass's median over the fastest configuration's median.
    pub ratio_to_fastest: f64,
    /// torch and transformers versions, as the script reported them.
    pub torch_versions: String,
    /// The vector ISA of each side: Glass's GEMM kernel and the capability torch reported
    /// (`torch.backends.cpu.get_cpu_capability()`), with how it was matched.
    pub isa: String,
}

/// Environment that keeps PyTorch to AVX2 on a CPU with AVX-512: ATen's kernels and
/// inductor's code generation (`ATEN_CPU_CAPABILITY`), MKL's and oneDNN's GEMMs. Set when
/// Glass itself runs its AVX2 kernel there (`GLASS_KERNEL=avx2`), so both sides compute
/// with the same vector instructions, as on a CPU without AVX-512.
pub const TORCH_AVX2_ENV: [(&str, &str); 3] = [
    ("ATEN_CPU_CAPABILITY", "avx2"),
    ("MKL_ENABLE_INSTRUCTIONS", "AVX2"),
    ("ONEDNN_MAX_CPU_ISA", "AVX2"),
];

/// Whether the reference must be kept to AVX2: Glass runs its AVX2 kernel on a CPU that
/// has AVX-512.
fn restrict_to_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        glass_engine::gemm::active_kernel() == glass_engine::gemm::Kernel::Avx2
            && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// The CPU's model name and its AVX-512 / AVX2 / FMA / NEON flags, from /proc/cpuinfo.
pub fn cpu_description() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let flags = field("flags")
        .or_else(|| field("Features"))
        .unwrap_or_default();
    let has: Vec<&str> = ["avx512f", "avx512_bf16", "avx2", "fma", "asimd"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|x| x == *f))
        .collect();
    format!("{model} ({})", has.join(" "))
}

/// Runs Glass and the PyTorch configurations in alternating rounds and compares medians.
pub fn compare(o: &CompareOptions, progress: &mut dyn FnMut(&str)) -> Result<TrainComparison> {
    let configs: Vec<&TorchConfig> = if o.configs.is_empty() {
        CONFIGS.iter().collect()
    } else {
        o.configs
            .iter()
            .map(|n| {
                CONFIGS.iter().find(|c| c.name == n).ok_or_else(|| {
                    let names: Vec<&str> = CONFIGS.iter().map(|c| c.name).collect();
                    BenchError::Failed(format!(
                        "unknown PyTorch configuration `{n}`; known: {}",
                        names.join(", ")
                    ))
                })
            })
            .collect::<Result<_>>()?
    };
    let rounds = o.rounds.max(1);
    let mut glass_runs = Vec::new();
    let mut glass_rss: f64 = 0.0;
    let mut glass_last = None;
    let mut torch: Vec<(Vec<f64>, f64, Vec<f64>)> = vec![(vec![], 0.0, vec![]); configs.len()];
    let mut versions = String::new();
    let mut torch_isa = String::from("?");
    let avx2_only = restrict_to_avx2();
    for round in 0..rounds {
        progress(&format!("round {}/{rounds}: glass", round + 1));
        let g = crate::train::run(&o.train)?;
        glass_runs.push(g.tokens_per_s);
        glass_rss = glass_rss.max(g.peak_rss_mib);
        glass_last = Some(g);
        for (i, c) in configs.iter().enumerate() {
            progress(&format!("round {}/{rounds}: pytorch {}", round + 1, c.name));
            let mut cmd = Command::new(&o.python);
            if avx2_only {
                cmd.envs(TORCH_AVX2_ENV);
            }
            let out = cmd
                .arg(&o.script)
                .args(["--preset", &o.train.preset])
                .args(["--steps", &o.train.steps.to_string()])
                .args(["--warmup", &o.train.warmup.max(2).to_string()])
                .args(["--threads", &o.threads.to_string()])
                .args(["--batch", &o.train.batch.to_string()])
                .args(["--seq", &o.train.seq.to_string()])
                .args(c.args)
                .env("OMP_NUM_THREADS", o.threads.to_string())
                .output()
                .map_err(|e| BenchError::Io {
                    what: format!("running {} {}", o.python.display(), o.script.display()),
                    source: e,
                })?;
            if !out.status.success() {
                return Err(BenchError::Failed(format!(
                    "PyTorch configuration {} failed: {}",
                    c.name,
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .join(" | ")
                )));
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            let last = stdout.lines().last().unwrap_or_default();
            let v: serde_json::Value =
                serde_json::from_str(last).map_err(|e| BenchError::Json {
                    what: format!("the last line of {}'s output", o.script.display()),
                    source: e,
                })?;
            let num = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            torch[i].0.push(num("tokens_per_s"));
            torch[i].1 = torch[i].1.max(num("peak_rss_mb") * 1e6 / (1 << 20) as f64);
            torch[i].2.push(num("compile_s"));
            if let Some(c) = v["cpu_capability"].as_str() {
                torch_isa = c.to_string();
            }
            versions = format!(
                "torch {}, transformers {}",
                v["torch"].as_str().unwrap_or("?"),
                v["transformers"].as_str().unwrap_or("?")
            );
        }
    }
    let glass_last = glass_last.expect("at least one round");
    let mut sides = vec![SideResult {
        name: "glass".into(),
        median_tokens_per_s: median(&glass_runs),
        tokens_per_s: glass_runs,
        peak_rss_mib: glass_rss,
        compile_s: 0.0,
    }];
    for (c, (tps, rss, comp)) in configs.iter().zip(torch) {
        sides.push(SideResult {
            name: c.name.into(),
            median_tokens_per_s: median(&tps),
            tokens_per_s: tps,
            peak_rss_mib: rss,
            compile_s: median(&comp),
        });
    }
    let fastest = sides[1..]
        .iter()
        .max_by(|a, b| a.median_tokens_per_s.total_cmp(&b.median_tokens_per_s))
        .expect("at least one configuration");
    let ratio = sides[0].median_tokens_per_s / fastest.median_tokens_per_s;
    Ok(TrainComparison {
        measured: format!(
            "training tokens/s of full steps (forward, loss, backward, clip, AdamW) of the {} preset, batch {} × seq {}, {} threads on each side, {} timed steps after {} warm-up (compiles happen in the warm-up), {rounds} alternating rounds (Glass in process, each PyTorch configuration a fresh process), medians",
            o.train.preset, o.train.batch, o.train.seq, o.threads, o.train.steps, o.train.warmup.max(2)
        ),
        cpu: cpu_description(),
        glass_last,
        fastest_torch: fastest.name.clone(),
        ratio_to_fastest: ratio,
        sides,
        torch_versions: versions,
        isa: format!(
            "Glass {} kernel, torch {torch_isa} kernels{}",
            glass_engine::gemm::active_kernel().name(),
            if avx2_only {
                " (AVX-512 left unused on both sides: GLASS_KERNEL=avx2, and for PyTorch ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2)"
            } else {
                ""
            }
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_rounds() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn unknown_configurations_are_named() {
        let o = CompareOptions {
            train: TrainOptions::preset("tiny", Some(1), Some(8), 1, 0).unwrap(),
            python: "python3".into(),
            script: "bench/pytorch_reference.py".into(),
            threads: 1,
            rounds: 1,
            configs: vec!["jit".into()],
        };
        let e = compare(&o, &mut |_| {}).unwrap_err().to_string();
        assert!(
            e.contains("`jit`") && e.contains("compile-max-autotune"),
            "{e}"
        );
    }
}
