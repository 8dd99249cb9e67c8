//! The one argmax of Glass: greedy decoding, memorization, generation tasks and
//! multiple-choice scoring all pick with it, so a NaN or a tie is decided the same way
//! everywhere.
//!
//! The rule is `torch.argmax`'s and `numpy.argmax`'s (the references Glass is checked
//! against): the first index of the maximum, where a NaN counts as the maximum (so the
//! first NaN wins). An empty slice gives 0.

/// A value argmax can rank: `f32` logits or `f64` log-likelihoods.
pub trait Ranked: Copy + PartialOrd {
    /// Whether the value is NaN.
    fn is_nan(self) -> bool;
}

impl Ranked for f32 {
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}

impl Ranked for f64 {
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
}

/// Index of the first maximum of `xs`; the first NaN, if any, wins.
pub fn argmax<T: Ranked>(xs: &[T]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x.is_nan() {
            return i;
        }
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// [`argmax`] of a row of logits, as a token id.
pub fn argmax_token(logits: &[f32]) -> u32 {
    argmax(logits) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_maximum_and_nan_wins() {
        assert_eq!(argmax(&[0.0f32, 2.0, 2.0, 1.0]), 1);
        assert_eq!(argmax(&[0.0f32, f32::NAN, 3.0]), 1);
        assert_eq!(argmax(&[3.0f32, 1.0, f32::NAN]), 2);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
        assert_eq!(argmax(&[-1.0f64, -0.5, -0.5]), 1);
        assert_eq!(argmax(&[-3.0f64]), 0);
        assert_eq!(argmax::<f64>(&[]), 0);
        assert_eq!(argmax_token(&[0.5, 0.25, 0.75]), 2);
    }
}
