//! `glass bench gemm`: Glass's GEMM (each kernel this CPU supports) against the `gemm`
//! crate it replaced, on the same operands and threads, for square sizes and for the
//! products of a training step of the model presets. `bench/compare_gemm.sh` adds
//! PyTorch's sgemm on the same shapes and threads.

use std::time::Instant;

use glass_engine::gemm::{matmul_with, Kernel, Mat, Threads};
use glass_engine::ModelConfig;
use serde::Serialize;

use crate::train::default_shape;
use crate::{BenchError, Result};

/// What to time.
#[derive(Debug, Clone)]
pub struct GemmOptions {
    /// Square sizes.
    pub sizes: Vec<usize>,
    /// Model presets whose training-step products to time (`none` is skipped); rows =
    /// the preset's benchmark batch × sequence length.
    pub presets: Vec<String>,
    /// Kernels: comma-separated names, `all` (every supported one) or `active`.
    pub kernels: String,
}

/// The products and kernels to time, resolved from [`GemmOptions`] before any timing.
#[derive(Debug, Clone)]
pub struct GemmPlan {
    /// Kernels, each timed on every shape.
    pub kernels: Vec<Kernel>,
    /// Products.
    pub shapes: Vec<GemmShape>,
    /// Threads of the current pool.
    pub threads: usize,
}

/// One product shape: `C[m,n] = op(A)[m,k] · op(B)[k,n]`.
#[derive(Debug, Clone, Serialize)]
pub struct GemmShape {
    /// What the shape is (`square`, or the model product it stands for).
    pub label: String,
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// A is used transposed.
    pub ta: bool,
    /// B is used transposed.
    pub tb: bool,
}

/// One timed product with one kernel.
#[derive(Debug, Clone, Serialize)]
pub struct GemmRow {
    /// The product.
    pub shape: GemmShape,
    /// Threads of the pool.
    pub threads: usize,
    /// Glass kernel timed.
    pub kernel: &'static str,
    /// Glass's median GFLOP/s.
    pub glass_gflops: f64,
    /// The `gemm` crate's median GFLOP/s, when timed.
    pub gemm_crate_gflops: Option<f64>,
    /// glass_gflops / gemm_crate_gflops.
    pub ratio_vs_gemm_crate: Option<f64>,
}

impl GemmShape {
    /// A square `n³` product, both operands as stored.
    pub fn square(n: usize) -> Self {
        GemmShape {
            label: format!("square {n}"),
            m: n,
            n,
            k: n,
            ta: false,
            tb: false,
        }
    }

    /// Multiply-add pairs × 2.
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

/// Resolves the kernels and the shapes to time.
pub fn plan(o: &GemmOptions) -> Result<GemmPlan> {
    let kernels = kernels(&o.kernels)?;
    let mut shapes: Vec<GemmShape> = o.sizes.iter().map(|&n| GemmShape::square(n)).collect();
    for p in o.presets.iter().filter(|p| p.as_str() != "none") {
        let cfg = ModelConfig::preset(p)?;
        let (batch, seq) = default_shape(p, &cfg);
        shapes.extend(model_shapes(p, &cfg, batch * seq));
    }
    Ok(GemmPlan {
        kernels,
        shapes,
        threads: rayon::current_num_threads(),
    })
}

/// Times every shape of `plan` with each kernel, and once with the `gemm` crate when
/// `gemm_crate`: the rows in order, each timed as it is pulled (so a caller can print
/// them as they come).
pub fn rows(plan: &GemmPlan, reps: usize, gemm_crate: bool) -> impl Iterator<Item = GemmRow> + '_ {
    plan.shapes.iter().flat_map(move |s| {
        let reference = gemm_crate.then(|| time_gemm_crate(s, reps));
        plan.kernels.iter().map(move |&k| {
            let g = time_glass(s, k, reps);
            GemmRow {
                shape: s.clone(),
                threads: plan.threads,
                kernel: k.name(),
                glass_gflops: g,
                gemm_crate_gflops: reference,
                ratio_vs_gemm_crate: reference.map(|r| g / r),
            }
        })
    })
}

/// The kernels a `--kernels` value names.
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
                    BenchError::Failed(format!("--kernels: {name:?} is not one of avx512, avx2, neon, portable, all, active"))
                })?;
                if !k.is_supported() {
                    return Err(BenchError::Failed(format!(
                        "--kernels: this CPU cannot run the {} kernel",
                        k.name()
                    )));
                }
                Ok(k)
            })
            .collect(),
    }
}

/// The products one training step of `cfg` runs on `tokens` rows (forward `x·Wᵀ`,
/// backward `dy·W` and the weight gradient `dyᵀ·x`), for the attention, MLP and output
/// projections.
pub fn model_shapes(name: &str, cfg: &ModelConfig, tokens: usize) -> Vec<GemmShape> {
    let d = cfg.d_model;
    let qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim();
    let mut out = Vec::new();
    for (what, d_in, d_out) in [
        ("qkv", d, qkv),
        ("mlp up", d, cfg.ffn_hidden),
        ("mlp down", cfg.ffn_hidden, d),
        ("lm head", d, cfg.vocab_size),
    ] {
        let s = |label: &str, m, n, k, ta, tb| GemmShape {
            label: format!("{name} {what} {label}"),
            m,
            n,
            k,
            ta,
            tb,
        };
        out.push(s("fwd x·Wᵀ", tokens, d_out, d_in, false, true));
        out.push(s("bwd dy·W", tokens, d_in, d_out, false, false));
        out.push(s("bwd dyᵀ·x", d_out, d_in, tokens, true, false));
    }
    out
}

/// Operands of a shape, with values that exercise every mantissa bit.
struct Operands {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl Operands {
    fn new(s: &GemmShape) -> Self {
        let fill = |len: usize, salt: u32| {
            (0..len)
                .map(|i| {
                    ((i as u32).wrapping_mul(2_654_435_761) ^ salt) as f32 / u32::MAX as f32 - 0.5
                })
                .collect::<Vec<f32>>()
        };
        Operands {
            a: fill(s.m * s.k, 1),
            b: fill(s.k * s.n, 2),
            c: vec![0.0; s.m * s.n],
        }
    }
}

/// Median GFLOP/s of `reps` timed calls (after one untimed warm-up call).
fn median_gflops(s: &GemmShape, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    s.flops() / t[t.len() / 2] / 1e9
}

/// Glass's GEMM with `kernel` on the current rayon pool: median GFLOP/s over `reps`.
pub fn time_glass(s: &GemmShape, kernel: Kernel, reps: usize) -> f64 {
    let mut o = Operands::new(s);
    let a = if s.ta {
        Mat::t(&o.a, s.m)
    } else {
        Mat::n(&o.a, s.k)
    };
    let b = if s.tb {
        Mat::t(&o.b, s.k)
    } else {
        Mat::n(&o.b, s.n)
    };
    median_gflops(s, reps, || {
        matmul_with(
            kernel,
            Threads::Pool,
            s.m,
            s.n,
            s.k,
            a,
            b,
            &mut o.c,
            s.n,
            1.0,
            false,
        )
    })
}

/// The `gemm` crate (0.19, rayon parallelism over the current pool's threads) on the
/// same product: median GFLOP/s over `reps`.
pub fn time_gemm_crate(s: &GemmShape, reps: usize) -> f64 {
    let mut o = Operands::new(s);
    // Column-major view of row-major data: (row stride, col stride) swapped into
    // gemm's (cs, rs) arguments.
    let (a_rs, a_cs) = if s.ta {
        (1, s.m as isize)
    } else {
        (s.k as isize, 1)
    };
    let (b_rs, b_cs) = if s.tb {
        (1, s.k as isize)
    } else {
        (s.n as isize, 1)
    };
    let threads = rayon::current_num_threads();
    let (a_ptr, b_ptr) = (o.a.as_ptr(), o.b.as_ptr());
    let c_ptr = o.c.as_mut_ptr();
    median_gflops(s, reps, || {
        // SAFETY: the three buffers hold exactly the [m,k], [k,n] and [m,n] operands the
        // strides describe, C does not alias A or B, and nothing else touches them.
        unsafe {
            ::gemm::gemm(
                s.m,
                s.n,
                s.k,
                c_ptr,
                1,
                s.n as isize,
                false,
                a_ptr,
                a_cs,
                a_rs,
                b_ptr,
                b_cs,
                b_rs,
                0.0,
                1.0,
                false,
                false,
                false,
                if threads > 1 {
                    ::gemm::Parallelism::Rayon(threads)
                } else {
                    ::gemm::Parallelism::None
                },
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preset_gives_three_products_per_projection() {
        let cfg = ModelConfig::preset("tiny").unwrap();
        let s = model_shapes("tiny", &cfg, 64);
        assert_eq!(s.len(), 12);
        assert_eq!(s[0].label, "tiny qkv fwd x·Wᵀ");
        assert_eq!((s[0].m, s[0].k), (64, cfg.d_model));
        assert_eq!(GemmShape::square(4).flops(), 128.0);
    }

    #[test]
    fn kernel_names_are_checked() {
        let e = kernels("avx3").unwrap_err().to_string();
        assert!(e.contains("\"avx3\" is not one of"), "{e}");
        assert_eq!(kernels("portable").unwrap(), vec![Kernel::Portable]);
    }

    #[test]
    fn both_products_time_a_small_square() {
        let plan = plan(&GemmOptions {
            sizes: vec![16],
            presets: vec!["none".into()],
            kernels: "portable".into(),
        })
        .unwrap();
        let rows: Vec<GemmRow> = rows(&plan, 1, true).collect();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].glass_gflops > 0.0);
        assert!(rows[0].gemm_crate_gflops.unwrap() > 0.0);
    }
}
