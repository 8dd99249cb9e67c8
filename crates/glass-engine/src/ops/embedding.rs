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

/// `dwte[tokens[r]] += dx[r] · mult`, in row order (a scatter; sequential keeps it
/// deterministic and it is O(rows·d), negligible next to the GEMMs).
pub fn backward(dwte: &mut [f32], tokens: &[u32], dx: &[f32], d: usize, mult: f32) {
    for (r, &t) in tokens.iter().enumerate() {
        let g = &mut dwte[t as usize * d..(t as usize + 1) * d];
        for (gj, &dj) in g.iter_mut().zip(&dx[r * d..(r + 1) * d]) {
            *gj += dj * mult;
        }
    }
}
