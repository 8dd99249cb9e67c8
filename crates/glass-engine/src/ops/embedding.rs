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

/// Vocabulary rows per task of the backward pass.
const VOCAB_BLOCK: usize = 256;

/// `dwte[tokens[r]] += dx[r] · mult`, adding each token's rows in ascending row order.
///
/// Parallel over fixed ranges of the vocabulary: the rows are sorted by token (stable,
/// so a token's rows stay in row order) and each task adds the rows of its own range of
/// `dwte`. Every element gets the same additions in the same order as a serial loop,
/// for any thread count.
pub fn backward(dwte: &mut [f32], tokens: &[u32], dx: &[f32], d: usize, mult: f32) {
    let mut order: Vec<u32> = (0..tokens.len() as u32).collect();
    order.sort_by_key(|&r| tokens[r as usize]);
    dwte.par_chunks_mut(VOCAB_BLOCK * d)
        .enumerate()
        .for_each(|(blk, g)| {
            let lo = (blk * VOCAB_BLOCK) as u32;
            let hi = lo + (g.len() / d) as u32;
            let start = order.partition_point(|&r| tokens[r as usize] < lo);
            for &r in order[start..]
                .iter()
                .take_while(|&&r| tokens[r as usize] < hi)
            {
                let r = r as usize;
                let t = tokens[r] as usize - lo as usize;
                let gt = &mut g[t * d..(t + 1) * d];
                for (gj, &dj) in gt.iter_mut().zip(&dx[r * d..(r + 1) * d]) {
                    *gj += dj * mult;
                }
            }
        });
}

#[cfg(test)]
mod tests {
    /// The parallel scatter adds exactly what a serial loop in row order adds.
    #[test]
    fn backward_equals_serial_row_order() {
        let (vocab, d, rows) = (600, 3, 900);
        let tokens: Vec<u32> = (0..rows as u32)
            .map(|r| (r * 7919 + r / 3) % 601 % 600)
            .collect();
        let dx: Vec<f32> = (0..rows * d)
            .map(|i| ((i * 37) % 101) as f32 * 0.013 - 0.6)
            .collect();
        let mut want = vec![0.5f32; vocab * d];
        for (r, &t) in tokens.iter().enumerate() {
            for j in 0..d {
                want[t as usize * d + j] += dx[r * d + j] * 1.5;
            }
        }
        let mut got = vec![0.5f32; vocab * d];
        super::backward(&mut got, &tokens, &dx, d, 1.5);
        assert_eq!(got, want);
    }
}
