//! A branch-free `exp` for the softmax and SiLU hot loops.
//!
//! libm's `expf` is a scalar call the compiler cannot vectorise; it was ~6% of a training
//! step. This is the classic Cephes single-precision scheme (Cody–Waite range reduction
//! plus a degree-6 polynomial, ≤ 2 ulp), written out because no maintained crate offers a
//! plain, deterministic, inlinable f32 exp. It is exact-order arithmetic (no fast-math),
//! so results do not depend on vector width or thread count.

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

#[cfg(test)]
mod tests {
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
