//! Token embedding lookup (scaled by the muP embedding multiplier) and its backward.

use rayon::prelude::*;

/// `x[r] = wte[tokens[r]] · mult`.
pub fn forward(wte: &[f32], tokens: &[u32], x: &mut [f32], d: usize, mult: f32) {
    x.par_chunks_mut(d)
        .zip(tokens.par_iter())
        .for_each(|(xr, &t)| {
            let e = &wte[t as usize * d..(t as usize + 1) * d];
            for j in 0..d {
                xr[j] = e[j] * mult;
            }
        });
}

/// `dwte[tokens[r]] += dx[r] · mult`, each embedding row updated in row order `r`.
///
/// Parallel over blocks of the vocabulary: every task scans all tokens and applies only
/// those in its block, so each gradient row still sees its updates in row order and the
/// bits do not depend on the thread count.
pub fn backward(dwte: &mut [f32], tokens: &[u32], dx: &[f32], d: usize, mult: f32) {
    let vocab = dwte.len() / d;
    let block = vocab.div_ceil(4 * rayon::current_num_threads()).max(64);
    dwte.par_chunks_mut(block * d)
        .enumerate()
        .for_each(|(b, rows)| {
            let lo = b * block;
            let hi = lo + rows.len() / d;
            for (r, &t) in tokens.iter().enumerate() {
                let t = t as usize;
                if t < lo || t >= hi {
                    continue;
                }
                let g = &mut rows[(t - lo) * d..(t - lo + 1) * d];
                for (gj, &dj) in g.iter_mut().zip(&dx[r * d..(r + 1) * d]) {
                    *gj += dj * mult;
                }
            }
        });
}
