//! The training order as pure functions of the config and seed.
//!
//! Nothing here reads the clock, the thread count, the world size or any file: the same
//! config gives the same plan, the same permutations and the same coin flips everywhere.

use crate::config::DataConfig;

/// SplitMix64 finalizer: a fast, well-mixed 64-bit hash.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Hash of a sequence of words, order-sensitive.
pub fn hash_words(words: &[u64]) -> u64 {
    words.iter().fold(0x243F_6A88_85A3_08D3, |h, &w| mix(h ^ w))
}

/// A stable 64-bit key of a string (FNV-1a), for names in seeds.
pub fn str_key(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// A uniform f64 in [0, 1) from a hash.
pub fn unit_f64(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The bijection of `[0, n)` keyed by `key`, evaluated at `i`: a 4-round Feistel network
/// on the smallest even-bit power-of-two domain, cycle-walked back into range. O(1)
/// memory, so shuffling a billion documents needs no index array.
pub fn permute(i: u64, n: u64, key: u64) -> u64 {
    debug_assert!(i < n);
    if n <= 1 {
        return 0;
    }
    let bits = (64 - (n - 1).leading_zeros()).max(2);
    let bits = bits + (bits & 1);
    let half = bits / 2;
    let mask = (1u64 << half) - 1;
    let mut x = i;
    loop {
        let (mut l, mut r) = (x >> half, x & mask);
        for round in 0..4u64 {
            let f = mix(key ^ mix(round ^ (r << 8))) & mask;
            (l, r) = (r, l ^ f);
        }
        x = (l << half) | r;
        if x < n {
            return x;
        }
    }
}

/// Where a stage sits in the step sequence.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StagePlan {
    /// Stage name.
    pub name: String,
    /// First global step of the stage.
    pub first_step: u64,
    /// Steps in the stage: the token budget rounded up to whole steps.
    pub n_steps: u64,
}

/// The step/row/chunk geometry of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Stages in order.
    pub stages: Vec<StagePlan>,
    /// Total steps.
    pub n_steps: u64,
    /// Rows per global batch.
    pub rows_per_step: u64,
    /// Tokens per row (`seq_len + 1`).
    pub row_len: usize,
    /// Steps per chunk file.
    pub steps_per_chunk: u64,
}

impl Plan {
    /// The plan of a config.
    pub fn new(cfg: &DataConfig) -> Self {
        let row_len = cfg.seq_len + 1;
        let step_tokens = cfg.rows_per_step as u64 * row_len as u64;
        let mut first_step = 0;
        let stages = cfg
            .stages
            .iter()
            .map(|s| {
                let n_steps = s.tokens.div_ceil(step_tokens).max(1);
                let p = StagePlan {
                    name: s.name.clone(),
                    first_step,
                    n_steps,
                };
                first_step += n_steps;
                p
            })
            .collect();
        Self {
            stages,
            n_steps: first_step,
            rows_per_step: cfg.rows_per_step as u64,
            row_len,
            steps_per_chunk: cfg.steps_per_chunk,
        }
    }

    /// Number of chunk files (the last may hold fewer steps).
    pub fn n_chunks(&self) -> u64 {
        self.n_steps.div_ceil(self.steps_per_chunk)
    }

    /// Steps `[first, end)` of chunk `c`.
    pub fn chunk_steps(&self, c: u64) -> (u64, u64) {
        let a = c * self.steps_per_chunk;
        (a, (a + self.steps_per_chunk).min(self.n_steps))
    }

    /// The stage holding `step`.
    pub fn stage_of(&self, step: u64) -> usize {
        self.stages
            .iter()
            .rposition(|s| s.first_step <= step)
            .unwrap_or(0)
    }

    /// The shuffle windows of chunk `c`: `(stage, first step, end step)`, one per stage the
    /// chunk overlaps. Rows are shuffled within a window, never across a stage boundary.
    pub fn windows(&self, c: u64) -> Vec<(usize, u64, u64)> {
        let (a, b) = self.chunk_steps(c);
        self.stages
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let (x, y) = (a.max(s.first_step), b.min(s.first_step + s.n_steps));
                (x < y).then_some((i, x, y))
            })
            .collect()
    }
}

/// Low-discrepancy weighted choice of the source of each row of a stage: row `i` goes to
/// the source furthest behind its share (`w_s * (i + 1) - count_s`, ties to the lower
/// index), so every prefix of the stage matches the weights to within one row.
#[derive(Debug, Clone)]
pub struct Blend {
    weights: Vec<f64>,
    counts: Vec<u64>,
    rows: u64,
}

impl Blend {
    /// A blend over per-source weights (zero-weight sources are never chosen).
    pub fn new(weights: Vec<f64>) -> Self {
        let n = weights.len();
        Self {
            weights,
            counts: vec![0; n],
            rows: 0,
        }
    }

    /// The source of the next row.
    pub fn next_source(&mut self) -> usize {
        self.rows += 1;
        let mut best = usize::MAX;
        let mut best_def = f64::NEG_INFINITY;
        for (s, &w) in self.weights.iter().enumerate() {
            if w <= 0.0 {
                continue;
            }
            let def = w * self.rows as f64 - self.counts[s] as f64;
            if def > best_def {
                best_def = def;
                best = s;
            }
        }
        self.counts[best] += 1;
        best
    }
}

/// Slice of the global batch that a data-parallel rank takes: rows `[r·B/W, (r+1)·B/W)`,
/// contiguous, so concatenating ranks `0..W` gives back the global batch for every `W`.
pub fn rank_rows(rows_per_step: u64, rank: u64, world_size: u64) -> (u64, u64) {
    (
        rank * rows_per_step / world_size,
        (rank + 1) * rows_per_step / world_size,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_is_a_bijection() {
        for n in [1u64, 2, 3, 7, 64, 100, 1000] {
            let mut seen: Vec<u64> = (0..n).map(|i| permute(i, n, 42)).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
        }
        let a: Vec<u64> = (0..100).map(|i| permute(i, 100, 1)).collect();
        let b: Vec<u64> = (0..100).map(|i| permute(i, 100, 2)).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn blend_matches_weights() {
        let mut b = Blend::new(vec![0.7, 0.0, 0.3]);
        let mut c = [0u64; 3];
        for _ in 0..1000 {
            c[b.next_source()] += 1;
        }
        assert_eq!(c, [700, 0, 300]);
    }

    #[test]
    fn rank_slices_tile_the_batch() {
        for w in 1..=7u64 {
            let mut end = 0;
            for r in 0..w {
                let (a, b) = rank_rows(16, r, w);
                assert_eq!(a, end);
                end = b;
            }
            assert_eq!(end, 16);
        }
    }
}
