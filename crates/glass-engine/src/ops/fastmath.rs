//! Transcendental functions with the same bits on every CPU.
//!
//! The platform libm (glibc) picks FMA or non-FMA variants of `exp`, `log`, `pow`, `sin`
//! and `cos` at run time, so `f32::exp` and friends can round differently on two x86-64
//! CPUs. Every transcendental the engine evaluates goes through this module instead:
//!
//! - [`exp`]: hot loops (softmax, attention, SiLU). The classic Cephes single-precision
//!   scheme (Cody–Waite range reduction plus a degree-6 polynomial, ≤ 2 ulp), written out
//!   because no maintained crate offers a plain, inlinable, vectorisable f32 exp. It uses
//!   separate multiplies and adds, not FMA: Rust never contracts `a * b + c`, so the
//!   operation sequence is the same on every target, and a CPU without FMA (where
//!   `mul_add` is a slow libm call) runs it at full speed.
//! - [`ln`], [`exp_f64`], [`ln_f64`], [`cos_f64`], [`sin_f64`], [`pow_f64`]: cold paths (one log per
//!   row, RoPE tables, sampling, learning-rate schedule, initialisation, evaluation
//!   scores). They call the
//!   `libm` crate, a pure-Rust port of musl's libm: fixed software algorithms whose only
//!   hardware use is correctly rounded `sqrt`/`fma`, so they have no CPU dispatch.
//! - [`powi_f64`]: `x^n` for an integer `n` (AdamW's bias corrections), by binary
//!   exponentiation written out here. Rust documents `f64::powi` as not reproducible
//!   across platforms (LLVM may expand, constant-fold or call a runtime routine); this
//!   is the multiplication sequence of compiler-rt's `__powidf2`, which is what `powi`
//!   with a run-time exponent calls on x86-64, so the bits are those Glass produced
//!   before, now fixed by the source.
//! - [`standard_normal`]: Box–Muller on those functions (rand_distr's ziggurat calls the
//!   platform `exp`/`ln`).

const LOG2E: f32 = std::f32::consts::LOG2_E;
const C1: f32 = 0.693_359_4;
const C2: f32 = -2.121_944_4e-4;

/// The error function, for the exact GELU of GPT-NeoX (cold enough for the `libm` crate:
/// one call per MLP activation of a forward-only model).
pub fn erf(x: f32) -> f32 {
    libm::erff(x)
}

/// `e^x` for finite or infinite `x`; saturates to 0 below −87.3 and to ~3.4e38 above 88.7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.336_55, 88.722_83);
    // floor() without a libm call (baseline x86-64 has no rounding instruction), so the
    // function inlines and vectorises: truncate, then step down for negative fractions.
    let t = x * LOG2E + 0.5;
    let ti = t as i32;
    let n = (ti - (t < ti as f32) as i32) as f32;
    let r = x - n * C1 - n * C2;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n through the exponent bits; n ∈ [−126, 128] after the clamp.
    let bits = ((n as i32 + 127).clamp(1, 254) as u32) << 23;
    y * f32::from_bits(bits)
}

/// Natural logarithm (musl's `logf`, < 1 ulp).
#[inline]
pub fn ln(x: f32) -> f32 {
    libm::logf(x)
}

/// `e^x` in f64 (musl's `exp`, < 1 ulp).
#[inline]
pub fn exp_f64(x: f64) -> f64 {
    libm::exp(x)
}

/// `ln x` in f64 (musl's `log`, < 1 ulp).
#[inline]
pub fn ln_f64(x: f64) -> f64 {
    libm::log(x)
}

/// `cos x` in f64 (musl's `cos`, < 1 ulp, full range reduction).
#[inline]
pub fn cos_f64(x: f64) -> f64 {
    libm::cos(x)
}

/// `sin x` in f64 (musl's `sin`, < 1 ulp, full range reduction).
#[inline]
pub fn sin_f64(x: f64) -> f64 {
    libm::sin(x)
}

/// `x^y` in f64 (musl's `pow`, < 1 ulp).
#[inline]
pub fn pow_f64(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

/// `x^n` for `n ≥ 0` by binary exponentiation, exactly this sequence of correctly
/// rounded f64 multiplications (compiler-rt's `__powidf2`):
///
/// ```text
/// r = 1
/// loop { if n is odd { r = r·x };  n = n / 2;  if n == 0 { break };  x = x·x }
/// ```
///
/// `powi_f64(x, 0) == 1`. Unlike `f64::powi` it takes a `u64`, so every optimizer step
/// count is exact.
#[inline]
pub fn powi_f64(x: f64, n: u64) -> f64 {
    let (mut a, mut b, mut r) = (x, n, 1.0f64);
    loop {
        if b & 1 == 1 {
            r *= a;
        }
        b /= 2;
        if b == 0 {
            break;
        }
        a *= a;
    }
    r
}

/// One standard-normal f32 from two uniform f64 draws (Box–Muller, cosine branch):
/// `sqrt(−2 ln u1) · cos(2π u2)` with `u1 ∈ (0, 1]`. Uses only integer RNG output and the
/// portable functions above, so the stream is the same on every CPU.
pub fn standard_normal<R: rand::Rng + ?Sized>(rng: &mut R) -> f32 {
    let u1 = 1.0 - rng.gen::<f64>();
    let u2 = rng.gen::<f64>();
    ((-2.0 * libm::log(u1)).sqrt() * libm::cos(std::f64::consts::TAU * u2)) as f32
}

#[cfg(test)]
mod tests {
    #[test]
    fn portable_functions_match_f64() {
        let mut worst = 0.0f64;
        let mut x = 1e-30f32;
        while x < 1e30 {
            let want = (x as f64).ln();
            let got = super::ln(x) as f64;
            worst = worst.max((got - want).abs() / want.abs().max(1e-3));
            x *= 1.013;
        }
        assert!(worst < 1.2e-7, "ln: max relative error {worst:e}");
        for i in 0..2000 {
            let x = i as f64 * 3.3;
            assert!((super::cos_f64(x) - x.cos()).abs() < 1e-15);
            assert!((super::sin_f64(x) - x.sin()).abs() < 1e-15);
            let y = -(i as f64) / 1000.0;
            assert!((super::pow_f64(1e4, y) / 1e4f64.powf(y) - 1.0).abs() < 1e-15);
            assert!((super::exp_f64(y * 30.0) / (y * 30.0).exp() - 1.0).abs() < 1e-15);
            let z = 1.0 + i as f64 * 7.7;
            assert!((super::ln_f64(z) - z.ln()).abs() <= 1e-15 * z.ln().abs());
        }
    }

    /// `powi_f64` for AdamW's betas (as f32 widened to f64, as the optimizer uses them)
    /// and step counts from 1 to 10⁹: bit patterns produced by `f64::powi` on x86-64
    /// before Glass had its own function. They fix the contract on every target.
    #[test]
    fn powi_matches_known_bits() {
        let betas = [0.9f32, 0.95, 0.98, 0.99, 0.999, 0.9999, 0.5, 0.0];
        let steps = [
            0u64,
            1,
            2,
            3,
            7,
            10,
            100,
            1000,
            4097,
            65_535,
            1_000_000,
            1_000_000_000,
        ];
        let mut got = Vec::new();
        for b in betas {
            for t in steps {
                got.push(super::powi_f64(b as f64, t).to_bits());
            }
        }
        assert_eq!(got, POWI_KNOWN_BITS);
    }

    #[rustfmt::skip]
    const POWI_KNOWN_BITS: [u64; 96] = [
    0x3ff0000000000000, 0x3fecccccc0000000, 0x3fe9eb8507ae1480, 0x3fe753f7afbe76d7,
    0x3fde9c6a3a95d7ed, 0x3fd650befd153364, 0x3efbda0098fb295b, 0x366fee3ca4486bc3,
    0x1902effc3523497f, 0x0000000000000000, 0x0000000000000000, 0x0000000000000000,
    0x3ff0000000000000, 0x3fee666660000000, 0x3fece147a1eb8520, 0x3feb6f9da0d9168b,
    0x3fe658c7541af83b, 0x3fe328da3647f20e, 0x3f78401df77c3bcd, 0x3b4ffc98a8835c2c,
    0x2cfc3cd0e5d172a8, 0x0000000000000000, 0x0000000000000000, 0x0000000000000000,
    0x3ff0000000000000, 0x3fef5c2900000000, 0x3feebb98dbf48800, 0x3fee1e3ecce91c98,
    0x3febc7af724307d8, 0x3fea2576346140d4, 0x3fc0f9afa1fc32e1, 0x3e1ce9e9ab8b71db,
    0x38780af9270c3244, 0x0000000000000000, 0x0000000000000000, 0x0000000000000000,
    0x3ff0000000000000, 0x3fefae1480000000, 0x3fef5cfab6fd2200, 0x3fef0cb08c18d693,
    0x3fedd37ad71df877, 0x3fecf0b2dc2db31e, 0x3fd76d14645d731b, 0x3f06a2670e2c774d,
    0x3c382c4489550aa2, 0x048b50968d661a19, 0x0000000000000000, 0x0000000000000000,
    0x3ff0000000000000, 0x3feff7cee0000000, 0x3fefef9fd8db6a20, 0x3fefe772ea08cf5d,
    0x3fefc6d4173a55d1, 0x3fefae72de427186, 0x3fecf4111b35cab4, 0x3fd7886644366271,
    0x3f90fcc96a3e79ac, 0x3a053697b43574f4, 0x0000000000000000, 0x0000000000000000,
    0x3ff0000000000000, 0x3fefff2e40000000, 0x3feffe5c855ed880, 0x3feffd8ad01c664c,
    0x3feffa4430c2f28e, 0x3feff7cf719b8f02, 0x3fefae7881491c8d, 0x3fecf4449f0ec7d8,
    0x3fe53dc5def52b23, 0x3f5750eda7e8ed49, 0x36e9faed23fb78f1, 0x0000000000000000,
    0x3ff0000000000000, 0x3fe0000000000000, 0x3fd0000000000000, 0x3fc0000000000000,
    0x3f80000000000000, 0x3f50000000000000, 0x39b0000000000000, 0x0170000000000000,
    0x0000000000000000, 0x0000000000000000, 0x0000000000000000, 0x0000000000000000,
    0x3ff0000000000000, 0x0000000000000000, 0x0000000000000000, 0x0000000000000000,
    0x0000000000000000, 0x0000000000000000, 0x0000000000000000, 0x0000000000000000,
    0x0000000000000000, 0x0000000000000000, 0x0000000000000000, 0x0000000000000000,
    ];

    /// On x86-64, `powi_f64` is `f64::powi` (compiler-rt's `__powidf2`) bit for bit,
    /// over every step count of a long run for the usual betas and random bases: the
    /// replacement changed no checkpoint.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn powi_is_the_runtime_powi_on_x86_64() {
        // A run-time exponent, so `powi` is the library call, not an expansion.
        let opaque = |t: u64| std::hint::black_box(t as i32);
        for b in [0.9f32, 0.95, 0.98, 0.99, 0.999] {
            for t in 0..200_000u64 {
                let want = (b as f64).powi(opaque(t));
                assert_eq!(
                    super::powi_f64(b as f64, t).to_bits(),
                    want.to_bits(),
                    "{b}^{t}"
                );
            }
        }
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200_000 {
            let x: f64 = rng.gen_range(-2.0..2.0);
            let t: u64 = rng.gen_range(0..1u64 << 31);
            let want = x.powi(opaque(t));
            assert_eq!(super::powi_f64(x, t).to_bits(), want.to_bits(), "{x}^{t}");
        }
    }

    #[test]
    fn standard_normal_moments() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let n = 200_000;
        let xs: Vec<f64> = (0..n)
            .map(|_| super::standard_normal(&mut rng) as f64)
            .collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        let kurt = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n as f64 / var / var;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
        assert!((kurt - 3.0).abs() < 0.05, "kurtosis {kurt}");
        assert!(xs.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn matches_std_exp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = super::exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "max relative error {worst:e}");
        assert_eq!(super::exp(f32::NEG_INFINITY), super::exp(-100.0));
        assert!(super::exp(-100.0) < 1e-37);
    }
}
