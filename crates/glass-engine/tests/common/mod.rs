//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use glass_engine::ModelConfig;

/// A small config exercising every code path (GQA, partial rotary optional).
pub fn small_cfg() -> ModelConfig {
    ModelConfig {
        vocab_size: 37,
        d_model: 24,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        ffn_hidden: 40,
        max_seq_len: 80,
        ..ModelConfig::preset("tiny").unwrap()
    }
}

/// Deterministic pseudo-random tokens.
pub fn tokens(n: usize, vocab: usize, salt: u64) -> Vec<u32> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64 ^ salt;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab as u64) as u32
        })
        .collect()
}

/// Max |a−b| / max |b|.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max);
    let den = b
        .iter()
        .map(|y| (*y as f64).abs())
        .fold(0.0, f64::max)
        .max(1e-30);
    num / den
}

/// `base` as each block variant of the other suites: CrystalCoder (LayerNorm, linear
/// biases, partial rotary), GPT-NeoX (parallel residual, GELU, biases), OLMo
/// (non-parametric LayerNorm, qkv clipping), OLMo 2 (post-norm, QK-norm), and `base`
/// itself, each with a name.
#[allow(dead_code)]
pub fn family_variants(base: ModelConfig) -> Vec<(ModelConfig, &'static str)> {
    use glass_engine::{ArchConfig, BlockKind, MlpKind, NormKind};
    let with = |norm, rot: f32, arch| ModelConfig {
        norm,
        rotary_fraction: rot,
        arch,
        ..base.clone()
    };
    vec![
        (base.clone(), "llama"),
        (
            with(
                NormKind::LayerNorm,
                0.25,
                ArchConfig {
                    linear_bias: true,
                    ..Default::default()
                },
            ),
            "crystalcoder",
        ),
        (
            with(
                NormKind::LayerNorm,
                0.5,
                ArchConfig {
                    linear_bias: true,
                    mlp: MlpKind::Gelu,
                    block: BlockKind::Parallel,
                    ..Default::default()
                },
            ),
            "gpt_neox",
        ),
        (
            with(
                NormKind::LayerNorm,
                1.0,
                ArchConfig {
                    norm_affine: false,
                    qkv_clip: Some(0.05),
                    ..Default::default()
                },
            ),
            "olmo",
        ),
        (
            with(
                NormKind::RmsNorm,
                1.0,
                ArchConfig {
                    block: BlockKind::PostNorm,
                    qk_norm: true,
                    ..Default::default()
                },
            ),
            "olmo2",
        ),
    ]
}
