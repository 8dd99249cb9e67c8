//! Timed GEMM products for `glass bench gemm`: Glass's GEMM per kernel, and (with the
//! `gemm-crate` feature) the `gemm` crate it replaced, on the same operands and threads.

use std::time::Instant;

use serde::Serialize;

use crate::gemm::{matmul_with, Kernel, Mat, Threads};
use crate::ModelConfig;

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
#[cfg(feature = "gemm-crate")]
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
