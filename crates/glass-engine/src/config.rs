//! Model configuration for the LLaMA family as LLM360 used it (Amber, CrystalCoder).
//!
//! Config files are TOML; every struct denies unknown keys so a typo is an error that
//! names the key instead of a silently different model.

use serde::{Deserialize, Serialize};

use crate::EngineError;

/// Which normalisation every block (and the final norm) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// LLaMA / Amber: `x / rms(x) * w`.
    RmsNorm,
    /// CrystalCoder: `(x - mean) / std * w + b`.
    LayerNorm,
}

/// How attention scores are scaled before the softmax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionScale {
    /// Standard `1/sqrt(head_dim)`.
    InvSqrtD,
    /// muP (CrystalCoder): `1/head_dim`, so attention logits stay O(1) as width grows.
    InvD,
}

/// Learning-rate multipliers per parameter group (muP scales the hidden matrices).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LrMultipliers {
    /// Token embedding.
    pub embedding: f32,
    /// Every linear layer inside the transformer blocks.
    pub hidden: f32,
    /// Norm weights and biases.
    pub norm: f32,
    /// Untied LM head.
    pub output: f32,
}

impl Default for LrMultipliers {
    fn default() -> Self {
        Self {
            embedding: 1.0,
            hidden: 1.0,
            norm: 1.0,
            output: 1.0,
        }
    }
}

/// The muP knobs CrystalCoder used. Defaults make them inert (plain LLaMA).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MupConfig {
    /// Multiplies the embedding output (CrystalCoder: 14.6).
    pub embedding_multiplier: f32,
    /// Multiplies the logits (CrystalCoder: 0.13875).
    pub output_logit_multiplier: f32,
    /// Attention score scaling.
    pub attention_scale: AttentionScale,
    /// Per-group learning-rate multipliers.
    pub lr_multipliers: LrMultipliers,
    /// Initial standard deviation of every matrix at the base width (Hugging Face
    /// `initializer_range`). The embedding is drawn with exactly this std.
    pub init_std: f32,
    /// Width (`d_model`) the hyperparameters were tuned at; `0` means "this width" (no
    /// width scaling). Hidden matrices and the untied LM head start with std
    /// `init_std · sqrt(base_width / d_model)`, CrystalCoder's `initializer_range ·
    /// sqrt(mup_width_scale)`, so activations keep their scale as the model widens.
    pub base_width: usize,
    /// Also divide the initial std of each block's residual outputs (`o_proj`,
    /// `down_proj`) by `sqrt(2 · n_layers)` (GPT-2's depth scaling, which CrystalCoder's
    /// initialiser applies on top of the width scaling).
    pub scale_residual_init: bool,
}

impl Default for MupConfig {
    fn default() -> Self {
        Self {
            embedding_multiplier: 1.0,
            output_logit_multiplier: 1.0,
            attention_scale: AttentionScale::InvSqrtD,
            lr_multipliers: LrMultipliers::default(),
            init_std: 0.02,
            base_width: 0,
            scale_residual_init: false,
        }
    }
}

impl MupConfig {
    /// `base_width / d_model` (CrystalCoder's `mup_width_scale`); 1 without a base width.
    pub fn width_scale(&self, d_model: usize) -> f64 {
        if self.base_width == 0 {
            1.0
        } else {
            self.base_width as f64 / d_model as f64
        }
    }
}

/// Shapes and numerics of one LLaMA-family decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Vocabulary size (rows of the embedding and LM head).
    pub vocab_size: usize,
    /// Residual stream width.
    pub d_model: usize,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when smaller than `n_heads`).
    pub n_kv_heads: usize,
    /// SwiGLU hidden size.
    pub ffn_hidden: usize,
    /// Longest sequence the RoPE tables and KV cache are sized for.
    pub max_seq_len: usize,
    /// RMSNorm or LayerNorm.
    #[serde(default = "default_norm")]
    pub norm: NormKind,
    /// Norm epsilon.
    #[serde(default = "default_eps")]
    pub norm_eps: f32,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f32,
    /// Fraction of each head's dimensions that are rotated (CrystalCoder: 0.25).
    #[serde(default = "one")]
    pub rotary_fraction: f32,
    /// Share the embedding matrix with the LM head.
    #[serde(default)]
    pub tie_embeddings: bool,
    /// muP scales; absent means plain LLaMA.
    #[serde(default)]
    pub mup: MupConfig,
}

fn default_norm() -> NormKind {
    NormKind::RmsNorm
}
fn default_eps() -> f32 {
    1e-5
}
fn default_theta() -> f32 {
    10000.0
}
fn one() -> f32 {
    1.0
}

impl ModelConfig {
    /// Dimensions per attention head.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// Rotated dimensions per head (even, as RoPE rotates pairs).
    pub fn rotary_dim(&self) -> usize {
        let r = (self.head_dim() as f64 * self.rotary_fraction as f64).round() as usize;
        r - r % 2
    }

    /// Width of the K and V projections.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim()
    }

    /// The score multiplier applied to `q·k`.
    pub fn attention_scale(&self) -> f32 {
        match self.mup.attention_scale {
            AttentionScale::InvSqrtD => 1.0 / (self.head_dim() as f32).sqrt(),
            AttentionScale::InvD => 1.0 / self.head_dim() as f32,
        }
    }

    /// Rejects shapes the engine cannot run, naming the offending field.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad =
            |field: &str, why: String| Err(EngineError::Config(format!("model.{field}: {why}")));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("ffn_hidden", self.ffn_hidden),
            ("max_seq_len", self.max_seq_len),
        ] {
            if v == 0 {
                return bad(name, "must be positive".into());
            }
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return bad(
                "n_heads",
                format!(
                    "d_model {} is not divisible by n_heads {}",
                    self.d_model, self.n_heads
                ),
            );
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(
                "n_kv_heads",
                format!(
                    "n_heads {} is not a multiple of n_kv_heads {}",
                    self.n_heads, self.n_kv_heads
                ),
            );
        }
        if self.rotary_fraction.is_nan()
            || self.rotary_fraction <= 0.0
            || self.rotary_fraction > 1.0
        {
            return bad(
                "rotary_fraction",
                format!("{} is outside (0, 1]", self.rotary_fraction),
            );
        }
        if self.rotary_dim() == 0 {
            return bad("rotary_fraction", "rotates no dimension of a head".into());
        }
        if !(self.mup.init_std.is_finite() && self.mup.init_std > 0.0) {
            return bad("mup.init_std", "must be finite and positive".into());
        }
        if self.norm_eps.is_nan() || self.norm_eps <= 0.0 {
            return bad("norm_eps", "must be positive".into());
        }
        Ok(())
    }

    /// Parses a `[model]` table (or a bare model TOML) and validates it.
    pub fn from_toml(text: &str) -> Result<Self, EngineError> {
        let cfg: ModelConfig =
            toml::from_str(text).map_err(|e| EngineError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Looks up a named preset.
    pub fn preset(name: &str) -> Result<Self, EngineError> {
        let base = |vocab, d, layers, heads, ffn, seq| ModelConfig {
            vocab_size: vocab,
            d_model: d,
            n_layers: layers,
            n_heads: heads,
            n_kv_heads: heads,
            ffn_hidden: ffn,
            max_seq_len: seq,
            norm: NormKind::RmsNorm,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
            rotary_fraction: 1.0,
            tie_embeddings: false,
            mup: MupConfig::default(),
        };
        let cfg = match name {
            // Fits a 2-core laptop-class CPU: the engine benchmark's first row.
            "tiny" => base(4096, 256, 4, 4, 688, 256),
            // The engine benchmark's second row.
            "small" => base(32000, 512, 8, 8, 1376, 512),
            // LLaMA-7B exactly as LLM360 Amber trained it.
            "amber-7b" => ModelConfig {
                norm_eps: 1e-6,
                ..base(32000, 4096, 32, 32, 11008, 2048)
            },
            // CrystalCoder: LLaMA-7B shapes with LayerNorm, 25% partial rotary and muP.
            // Hidden lr multiplier and init width scale 1/16 = base width 256 / width 4096.
            "crystalcoder-7b" => ModelConfig {
                norm: NormKind::LayerNorm,
                rotary_fraction: 0.25,
                mup: MupConfig {
                    embedding_multiplier: 14.6,
                    output_logit_multiplier: 0.13875,
                    attention_scale: AttentionScale::InvD,
                    lr_multipliers: LrMultipliers {
                        hidden: 0.0625,
                        ..LrMultipliers::default()
                    },
                    base_width: 256,
                    scale_residual_init: true,
                    ..MupConfig::default()
                },
                ..base(32032, 4096, 32, 32, 11008, 2048)
            },
            other => {
                return Err(EngineError::Config(format!(
                    "unknown preset `{other}`; known presets: {}",
                    PRESETS.join(", ")
                )))
            }
        };
        Ok(cfg)
    }

    /// Number of parameters (the flat buffer's length).
    pub fn n_params(&self) -> usize {
        crate::layout::ParamLayout::new(self).total()
    }
}

/// Names accepted by [`ModelConfig::preset`].
pub const PRESETS: &[&str] = &["tiny", "small", "amber-7b", "crystalcoder-7b"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate() {
        for p in PRESETS {
            ModelConfig::preset(p).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn amber_has_llama7b_parameter_count() {
        // LLaMA-7B: 6,738,415,616 parameters.
        assert_eq!(
            ModelConfig::preset("amber-7b").unwrap().n_params(),
            6_738_415_616
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = ModelConfig::from_toml(
            "vocab_size=8\nd_model=4\nn_layers=1\nn_heads=1\nn_kv_heads=1\nffn_hidden=4\nmax_seq_len=4\nd_modle=3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("d_modle"), "{err}");
    }

    #[test]
    fn bad_heads_rejected() {
        let mut c = ModelConfig::preset("tiny").unwrap();
        c.n_kv_heads = 3;
        assert!(c.validate().unwrap_err().to_string().contains("n_kv_heads"));
    }
}
