//! Server-side downsampling of long curves: per horizontal pixel bucket, the first,
//! lowest, highest and last point (in step order), so a million-step run draws from a
//! few thousand points and still shows every spike and dip. Non-finite values (a NaN
//! loss the guard rejected) are kept: they mark events, not noise.

/// How buckets are laid out along x.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    /// Equal widths in x.
    Linear,
    /// Equal widths in log(1 + x), for a logarithmic x axis.
    Log,
}

/// Indices of the points to keep, ascending, for `width` buckets over `xs` (ascending).
/// Returns every index when there are at most `4 * width` points.
pub fn keep(xs: &[u64], ys: &[f64], width: usize, spacing: Spacing) -> Vec<usize> {
    let n = xs.len().min(ys.len());
    let width = width.max(1);
    if n <= 4 * width {
        return (0..n).collect();
    }
    let f = |x: u64| match spacing {
        Spacing::Linear => x as f64,
        Spacing::Log => (x as f64).ln_1p(),
    };
    let (lo, hi) = (f(xs[0]), f(xs[n - 1]));
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let bucket = |x: u64| (((f(x) - lo) / span * width as f64) as usize).min(width - 1);
    let mut out = Vec::with_capacity(4 * width + 8);
    let mut i = 0;
    while i < n {
        let b = bucket(xs[i]);
        let start = i;
        let (mut min_i, mut max_i, mut nan_i) = (None::<usize>, None::<usize>, None::<usize>);
        while i < n && bucket(xs[i]) == b {
            let y = ys[i];
            if !y.is_finite() {
                nan_i.get_or_insert(i);
            } else {
                if min_i.is_none_or(|m| y < ys[m]) {
                    min_i = Some(i);
                }
                if max_i.is_none_or(|m| y > ys[m]) {
                    max_i = Some(i);
                }
            }
            i += 1;
        }
        let mut picked = [Some(start), min_i, max_i, nan_i, Some(i - 1)];
        picked.sort();
        let mut last = None;
        for p in picked.into_iter().flatten() {
            if last != Some(p) {
                out.push(p);
                last = Some(p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_series_are_kept_whole() {
        let xs: Vec<u64> = (0..10).collect();
        let ys = vec![1.0; 10];
        assert_eq!(
            keep(&xs, &ys, 3, Spacing::Linear),
            (0..10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn buckets_keep_extremes_and_non_finite_points() {
        let n = 100_000u64;
        let xs: Vec<u64> = (0..n).collect();
        let mut ys: Vec<f64> = xs.iter().map(|&x| (x as f64 * 0.01).sin()).collect();
        ys[12_345] = 50.0;
        ys[54_321] = -50.0;
        ys[77_777] = f64::NAN;
        let k = keep(&xs, &ys, 500, Spacing::Linear);
        assert!(k.len() <= 500 * 5 && k.len() > 500);
        assert!(k.windows(2).all(|w| w[0] < w[1]));
        for must in [0, 12_345, 54_321, 77_777, n as usize - 1] {
            assert!(k.contains(&must), "{must} dropped");
        }
        let kl = keep(&xs, &ys, 500, Spacing::Log);
        // Log buckets keep the early steps one by one.
        assert!((0..50).all(|i| kl.contains(&i)));
        assert!(kl.contains(&12_345));
    }
}
