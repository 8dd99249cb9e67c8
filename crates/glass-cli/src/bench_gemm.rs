//! `glass bench gemm`: Glass's GEMM (each kernel this CPU supports) against the `gemm`
//! crate it replaced, on square sizes and on the products of a training step of the model
//! presets. `bench/compare_gemm.sh` adds PyTorch's sgemm on the same shapes and threads.

use anyhow::{bail, Result};
use clap::Args;
use glass_engine::bench::gemm::{model_shapes, time_gemm_crate, time_glass, GemmShape};
use glass_engine::gemm::Kernel;
use glass_engine::ModelConfig;
use serde::Serialize;

/// Options of `glass bench gemm`.
#[derive(Args)]
pub struct GemmArgs {
    /// Square sizes to time (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "256,512,1024,2048,4096")]
    sizes: Vec<usize>,
    /// Model presets whose training-step products to time (comma-separated; `none` for
    /// squares only). Rows = the preset's benchmark batch × sequence length.
    #[arg(long, value_delimiter = ',', default_value = "tiny,small")]
    presets: Vec<String>,
    /// Kernels to time (comma-separated names, or `all` for every supported one).
    #[arg(long, default_value = "active")]
    kernels: String,
    /// Timed repetitions per product (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Skip the `gemm` crate comparison.
    #[arg(long)]
    no_gemm_crate: bool,
    /// Print one JSON object per product instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row<'a> {
    shape: &'a GemmShape,
    threads: usize,
    kernel: &'static str,
    glass_gflops: f64,
    gemm_crate_gflops: Option<f64>,
    /// glass_gflops / gemm_crate_gflops.
    ratio_vs_gemm_crate: Option<f64>,
}

fn kernels(spec: &str) -> Result<Vec<Kernel>> {
    match spec {
        "active" => Ok(vec![glass_engine::gemm::active_kernel()]),
        "all" => Ok(Kernel::ALL
            .into_iter()
            .filter(|k| k.is_supported())
            .collect()),
        list => list
            .split(',')
            .map(|name| {
                let k = Kernel::parse(name).ok_or_else(|| {
                    anyhow::anyhow!("--kernels: {name:?} is not one of avx512, avx2, neon, portable, all, active")
                })?;
                if !k.is_supported() {
                    bail!("--kernels: this CPU cannot run the {} kernel", k.name());
                }
                Ok(k)
            })
            .collect(),
    }
}

/// Runs `glass bench gemm`.
pub fn run(a: GemmArgs) -> Result<()> {
    let kernels = kernels(&a.kernels)?;
    let mut shapes: Vec<GemmShape> = a.sizes.iter().map(|&n| GemmShape::square(n)).collect();
    for p in a.presets.iter().filter(|p| p.as_str() != "none") {
        let cfg = ModelConfig::preset(p)?;
        let (batch, seq) = crate::bench::default_shape(p, &cfg);
        shapes.extend(model_shapes(p, &cfg, batch * seq));
    }
    let threads = rayon::current_num_threads();
    if !a.json {
        println!(
            "sgemm, {threads} threads, median of {} runs (GFLOP/s = 2·m·n·k / time; warm caches, operands allocated once)",
            a.reps
        );
    }
    for s in &shapes {
        let reference = (!a.no_gemm_crate).then(|| time_gemm_crate(s, a.reps));
        for &k in &kernels {
            let g = time_glass(s, k, a.reps);
            let row = Row {
                shape: s,
                threads,
                kernel: k.name(),
                glass_gflops: g,
                gemm_crate_gflops: reference,
                ratio_vs_gemm_crate: reference.map(|r| g / r),
            };
            if a.json {
                println!("{}", serde_json::to_string(&row)?);
            } else {
                let t = |x: bool| if x { "ᵀ" } else { "" };
                print!(
                    "{:<28} [{}×{}{}]·[{}×{}{}] {:>8}: glass {:7.1}",
                    s.label,
                    s.m,
                    s.k,
                    t(s.ta),
                    s.k,
                    s.n,
                    t(s.tb),
                    k.name(),
                    g
                );
                match reference {
                    Some(r) => println!("   gemm crate {r:7.1}   ratio {:.2}×", g / r),
                    None => println!(),
                }
            }
        }
    }
    Ok(())
}
