//! Rotary position embedding, Hugging Face "rotate_half" convention, full or partial.
//!
//! The first `rot_dim` dimensions of each head rotate as pairs `(j, j + rot_dim/2)` by
//! angle `pos · theta^(−2j/rot_dim)`; the rest pass through (CrystalCoder's 25%).

use super::fastmath::{cos_f64, pow_f64, sin_f64};
use crate::config::ModelConfig;

/// Precomputed cos/sin tables, `[max_seq_len, rot_dim/2]`.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    max_pos: usize,
}

impl Rope {
    /// Builds the tables in f64 (portable libm, see [`super::fastmath`]) and rounds once,
    /// for accuracy at long positions.
    pub fn new(cfg: &ModelConfig) -> Self {
        let rot = cfg.rotary_dim();
        let half = rot / 2;
        let max_pos = cfg.max_seq_len;
        let mut cos = vec![0.0f32; max_pos * half];
        let mut sin = vec![0.0f32; max_pos * half];
        for p in 0..max_pos {
            for j in 0..half {
                let inv_freq = 1.0 / pow_f64(cfg.rope_theta as f64, 2.0 * j as f64 / rot as f64);
                let ang = p as f64 * inv_freq;
                cos[p * half + j] = cos_f64(ang) as f32;
                sin[p * half + j] = sin_f64(ang) as f32;
            }
        }
        Rope {
            cos,
            sin,
            half,
            max_pos,
        }
    }

    /// Largest position + 1 the tables cover.
    pub fn max_positions(&self) -> usize {
        self.max_pos
    }

    /// Rotates `n_heads` consecutive heads of width `hd` in `row` for position `pos`;
    /// `inverse` applies the transpose rotation (the backward pass).
    pub fn rotate(&self, row: &mut [f32], n_heads: usize, hd: usize, pos: usize, inverse: bool) {
        let h = self.half;
        let cos = &self.cos[pos * h..pos * h + h];
        let sin = &self.sin[pos * h..pos * h + h];
        for head in row[..n_heads * hd].chunks_exact_mut(hd) {
            let (a, b) = head.split_at_mut(h);
            let b = &mut b[..h];
            for j in 0..h {
                let (x1, x2) = (a[j], b[j]);
                let s = if inverse { -sin[j] } else { sin[j] };
                a[j] = x1 * cos[j] - x2 * s;
                b[j] = x2 * cos[j] + x1 * s;
            }
        }
    }
}
