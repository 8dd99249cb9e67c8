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
//! - [`standard_normal`]: Box–Muller on those functions (rand_distr's ziggurat calls the
//!   platform `exp`/`ln`).

const LOG2E: f32 = std::f32::consts::LOG2_E;
const C1: f32 = 0.693_359_4;
const C2: f32 = -2.121_944_4e-4;

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
