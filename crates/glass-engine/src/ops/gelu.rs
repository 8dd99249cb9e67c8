//! The exact GELU of GPT-NeoX (Pythia's `hidden_act = "gelu"`): `x · Φ(x)` with
//! `Φ(x) = (1 + erf(x / √2)) / 2`. Forward only: GELU models are evaluated, not trained.

use rayon::prelude::*;

/// `h = gelu(u)` element-wise.
pub fn forward(u: &[f32], h: &mut [f32]) {
    h.par_chunks_mut(4096)
        .zip(u.par_chunks(4096))
        .for_each(|(hr, ur)| {
            for (h, &x) in hr.iter_mut().zip(ur) {
                *h = 0.5 * x * (1.0 + super::fastmath::erf(x * std::f32::consts::FRAC_1_SQRT_2));
            }
        });
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_erf_definition() {
        // gelu(1) = Φ(1) = 0.841344746..., gelu(-1) = -0.158655254...
        let mut h = [0.0f32; 3];
        super::forward(&[1.0, -1.0, 0.0], &mut h);
        assert!((h[0] - 0.841_344_7).abs() < 1e-6, "{}", h[0]);
        assert!((h[1] + 0.158_655_25).abs() < 1e-6, "{}", h[1]);
        assert_eq!(h[2], 0.0);
    }
}
