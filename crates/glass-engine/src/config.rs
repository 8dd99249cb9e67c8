//! Model configuration for the LLaMA family as LLM360 used it (Amber, CrystalCoder).
//!
//! Config files are TOML; every struct denies unknown keys so a typo is an error that
//! names the key instead of a silently different model.

use serde::{Deserialize, Serialize};

use crate::optim::AdamWConfig;
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

/// Feed-forward network of each block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MlpKind {
    /// LLaMA / CrystalCoder / OLMo: `down(silu(gate(x)) · up(x))`.
    #[default]
    Swiglu,
    /// GPT-NeoX (Pythia): `down(gelu(up(x)))` with the exact (erf) GELU.
    Gelu,
}

/// How a block combines attention and the MLP with the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// LLaMA: `h = x + attn(norm1(x))`, `out = h + mlp(norm2(h))`.
    #[default]
    PreNorm,
    /// GPT-NeoX `use_parallel_residual`: `out = x + attn(norm1(x)) + mlp(norm2(x))`.
    Parallel,
    /// OLMo 2: `h = x + norm1(attn(x))`, `out = h + norm2(mlp(h))`.
    PostNorm,
}

/// The variations of the block that the other transparent suites use (CrystalCoder,
/// Pythia's GPT-NeoX, OLMo, OLMo 2), as configuration of the one layer stack. The
/// default is LLaMA, and a default table is not written out, so a LLaMA run's config
/// reads as it always did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchConfig {
    /// A bias on every linear layer inside the blocks (CrystalCoder, GPT-NeoX).
    pub linear_bias: bool,
    /// SwiGLU or GELU feed-forward.
    pub mlp: MlpKind,
    /// Pre-norm, parallel or post-norm residual.
    pub block: BlockKind,
    /// Norms carry a learned weight (and LayerNorm a bias); `false` is OLMo's
    /// non-parametric LayerNorm.
    pub norm_affine: bool,
    /// A norm over the whole q and k projections before RoPE (OLMo 2's QK-norm), with
    /// weights `self_attn.q_norm.weight` and `self_attn.k_norm.weight`.
    pub qk_norm: bool,
    /// Clamp q, k and v to `[-c, c]` after the projection (OLMo's `clip_qkv`).
    pub qkv_clip: Option<f32>,
}

impl Default for ArchConfig {
    fn default() -> Self {
        Self {
            linear_bias: false,
            mlp: MlpKind::Swiglu,
            block: BlockKind::PreNorm,
            norm_affine: true,
            qk_norm: false,
            qkv_clip: None,
        }
    }
}

impl ArchConfig {
    /// True for plain LLaMA (nothing to write out).
    pub fn is_llama(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the engine has a backward pass for this block: pre-norm, SwiGLU, affine
    /// norms, with or without linear biases (LLaMA and CrystalCoder). The other suites'
    /// blocks run forward only (evaluation, generation, analysis).
    pub fn trainable(&self) -> Result<(), String> {
        let why = if self.mlp != MlpKind::Swiglu {
            Some("a GELU feed-forward")
        } else if self.block != BlockKind::PreNorm {
            Some("a parallel or post-norm block")
        } else if !self.norm_affine {
            Some("non-parametric norms")
        } else if self.qk_norm {
            Some("QK-norm")
        } else if self.qkv_clip.is_some() {
            Some("qkv clipping")
        } else {
            None
        };
        match why {
            Some(w) => Err(format!(
                "glass trains LLaMA- and CrystalCoder-style blocks; this model has {w} (GPT-NeoX / OLMo), which glass runs forward only: evaluate, generate, analyse, export"
            )),
            None => Ok(()),
        }
    }
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
    /// Block variations of the other suites; absent means LLaMA.
    #[serde(default, skip_serializing_if = "ArchConfig::is_llama")]
    pub arch: ArchConfig,
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

    /// Width of the MLP's input projection: `[gate; up]` for SwiGLU, `up` for GELU.
    pub fn mlp_in(&self) -> usize {
        match self.arch.mlp {
            MlpKind::Swiglu => 2 * self.ffn_hidden,
            MlpKind::Gelu => self.ffn_hidden,
        }
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
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return bad(
                "norm_eps",
                format!("{} must be a finite number in (0, 1)", self.norm_eps),
            );
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(
                "rope_theta",
                format!(
                    "{} must be a finite number > 0 (LLaMA: 10000)",
                    self.rope_theta
                ),
            );
        }
        if let Some(c) = self.arch.qkv_clip {
            if !(c.is_finite() && c > 0.0) {
                return bad("arch.qkv_clip", format!("{c} must be a finite number > 0"));
            }
        }
        if self.arch.qk_norm && self.norm != NormKind::RmsNorm {
            return bad(
                "arch.qk_norm",
                "QK-norm is an RMSNorm (OLMo 2); set model.norm = \"rmsnorm\"".into(),
            );
        }
        if self.arch.qk_norm && !self.arch.norm_affine {
            return bad(
                "arch.qk_norm",
                "QK-norm has weights; it needs arch.norm_affine = true".into(),
            );
        }
        let m = &self.mup;
        for (name, v) in [
            ("mup.embedding_multiplier", m.embedding_multiplier),
            ("mup.output_logit_multiplier", m.output_logit_multiplier),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(name, format!("{v} must be a finite number > 0"));
            }
        }
        let l = &m.lr_multipliers;
        for (name, v) in [
            ("mup.lr_multipliers.embedding", l.embedding),
            ("mup.lr_multipliers.hidden", l.hidden),
            ("mup.lr_multipliers.norm", l.norm),
            ("mup.lr_multipliers.output", l.output),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(name, format!("{v} must be a finite number >= 0"));
            }
        }
        self.checked_sizes().map(|_| ())
    }

    /// Element counts of the buffers a model of this config allocates, computed with
    /// checked arithmetic so that absurd shapes are refused by name instead of
    /// overflowing (a panic, or a wrapped size that allocates the wrong amount).
    pub fn checked_sizes(&self) -> Result<ModelSizes, EngineError> {
        let too_big = |field: &str, v: usize, max: u64| {
            Err(EngineError::Config(format!(
                "model.{field}: {v} is larger than glass supports ({max})"
            )))
        };
        for (name, v, max) in [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("d_model", self.d_model, MAX_DIM),
            ("n_layers", self.n_layers, MAX_LAYERS),
            ("n_heads", self.n_heads, MAX_DIM),
            ("n_kv_heads", self.n_kv_heads, MAX_DIM),
            ("ffn_hidden", self.ffn_hidden, MAX_DIM),
            ("max_seq_len", self.max_seq_len, MAX_DIM),
        ] {
            if v as u64 > max {
                return too_big(name, v, max);
            }
        }
        // Every dimension is below 2^32 now, so u128 products cannot overflow.
        let (v, d, l) = (
            self.vocab_size as u128,
            self.d_model as u128,
            self.n_layers as u128,
        );
        let (hd, kv, f) = (
            self.head_dim() as u128,
            self.n_kv_heads as u128,
            self.ffn_hidden as u128,
        );
        let h = self.n_heads as u128;
        let norms = match (self.arch.norm_affine, self.norm) {
            (false, _) => 0,
            (true, NormKind::LayerNorm) => 2,
            (true, NormKind::RmsNorm) => 1,
        };
        let mlp_in = self.mlp_in() as u128;
        let mut block = 2 * norms * d + (h + 2 * kv) * hd * d + d * h * hd + (mlp_in + f) * d;
        if self.arch.linear_bias {
            block += (h + 2 * kv) * hd + d + mlp_in + d;
        }
        if self.arch.qk_norm {
            block += (h + kv) * hd;
        }
        let head = if self.tie_embeddings { 0 } else { v * d };
        let params = v * d + l * block + norms * d + head;
        let rope = 2 * self.max_seq_len as u128 * (self.rotary_dim() as u128 / 2);
        let kv_cache = 2 * l * self.max_seq_len as u128 * kv * hd;
        for (what, n) in [
            ("the parameter count", params),
            ("the RoPE tables", rope),
            ("the KV cache", kv_cache),
        ] {
            if n > MAX_ELEMENTS as u128 {
                return Err(EngineError::Config(format!(
                    "model: {what} ({n} values) exceeds what glass supports ({MAX_ELEMENTS}); reduce the shapes"
                )));
            }
        }
        Ok(ModelSizes {
            params: params as u64,
            rope: rope as u64,
            kv_cache: kv_cache as u64,
        })
    }

    /// Refuses generation when a full-context KV cache (f32 keys and values of every
    /// layer) would not fit in the memory available now.
    pub fn ensure_kv_cache_fits(&self) -> Result<(), EngineError> {
        let need = self.checked_sizes()?.kv_cache.saturating_mul(4);
        match available_memory() {
            Some(avail) if need > avail => Err(EngineError::Config(format!(
                "model: a KV cache for max_seq_len {} needs {:.1} GiB but only {:.1} GiB of memory is available",
                self.max_seq_len,
                need as f64 / (1u64 << 30) as f64,
                avail as f64 / (1u64 << 30) as f64
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses a model whose weights and gradients (`bytes_per_param` bytes per parameter
    /// in all) would not fit in the memory available now, before anything is allocated:
    /// an allocation failure aborts the process without naming the config at fault.
    pub fn ensure_fits_memory(&self, bytes_per_param: u64) -> Result<(), EngineError> {
        let s = self.checked_sizes()?;
        let need = s
            .params
            .saturating_mul(bytes_per_param)
            .saturating_add(s.rope.saturating_mul(4));
        match available_memory() {
            Some(avail) if need > avail => Err(EngineError::Config(format!(
                "model: {} parameters need {:.1} GiB for weights and gradients but only {:.1} GiB of memory is available; reduce the shapes or use a machine with more memory",
                s.params,
                need as f64 / (1u64 << 30) as f64,
                avail as f64 / (1u64 << 30) as f64
            ))),
            _ => Ok(()),
        }
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
            arch: ArchConfig::default(),
        };
        let cfg = match name {
            // The default run's model (`glass demo`): small enough that about 800 K
            // tokens train in two minutes on 2 cores, with the embeddings tied; the
            // engine benchmark's first row.
            "tiny" => ModelConfig {
                tie_embeddings: true,
                ..base(2048, 192, 4, 3, 512, 128)
            },
            // The engine benchmark's second row.
            "small" => base(32000, 512, 8, 8, 1376, 512),
            // LLaMA-7B exactly as LLM360 Amber trained it.
            "amber-7b" => ModelConfig {
                norm_eps: 1e-6,
                ..base(32000, 4096, 32, 32, 11008, 2048)
            },
            // CrystalCoder as released (`model_type: "crystalcoder"`): LLaMA-7B widths
            // with LayerNorm, a bias on every linear layer, 25% partial rotary, FFN 10922,
            // tied embeddings, vocabulary 32032 and muP. Hidden lr multiplier and init width
            // scale 1/16 = base width 256 / width 4096 (`mup_width_scale` 0.0625); logits
            // × `mup_output_alpha` 2.22 × 0.0625 = 0.13875.
            "crystalcoder-7b" => ModelConfig {
                norm: NormKind::LayerNorm,
                rotary_fraction: 0.25,
                tie_embeddings: true,
                arch: ArchConfig {
                    linear_bias: true,
                    ..ArchConfig::default()
                },
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
                ..base(32032, 4096, 32, 32, 10922, 2048)
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

/// Largest vocabulary: token ids are stored as u32.
pub const MAX_VOCAB: u64 = 1 << 32;
/// Largest width, head count, FFN size or context length.
pub const MAX_DIM: u64 = 1 << 24;
/// Largest number of blocks.
pub const MAX_LAYERS: u64 = 1 << 16;
/// Largest buffer (in f32 values) of any kind: 2^40 values is 4 TiB.
pub const MAX_ELEMENTS: u64 = 1 << 40;

/// Element counts of a model's fixed buffers (see [`ModelConfig::checked_sizes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSizes {
    /// Parameters (and gradients, and each AdamW moment).
    pub params: u64,
    /// RoPE cos + sin table entries.
    pub rope: u64,
    /// KV-cache entries at full context.
    pub kv_cache: u64,
}

/// Memory the OS can give this process now (Linux `MemAvailable`), or `None` where it
/// cannot be read, in which case no check is made.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}

/// Names accepted by [`ModelConfig::preset`].
pub const PRESETS: &[&str] = &["tiny", "small", "amber-7b", "crystalcoder-7b"];

impl AdamWConfig {
    /// Rejects hyperparameters with which AdamW cannot train: non-finite values, betas
    /// outside [0, 1), a non-positive epsilon (0/0 on a zero second moment), negative
    /// clipping, or a weight decay that flips or explodes the weights.
    /// The message names the key (`beta1 = 1: must be …`) for the caller to place.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |field: &str, v: f32, want: &str| Err(format!("{field} = {v}: must be {want}"));
        for (name, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(v.is_finite() && (0.0..1.0).contains(&v)) {
                return bad(name, v, "in [0, 1) (Amber: 0.9 and 0.95)");
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0 && self.eps < 1.0) {
            return bad("eps", self.eps, "a finite number in (0, 1) (Amber: 1e-8)");
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return bad(
                "grad_clip",
                self.grad_clip,
                "a finite number >= 0 (0 disables clipping; Amber: 1.0)",
            );
        }
        if !(self.weight_decay.is_finite() && (0.0..=10.0).contains(&self.weight_decay)) {
            return bad(
                "weight_decay",
                self.weight_decay,
                "a finite number in [0, 10] (Amber: 0.1)",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_and_out_of_range_numbers_are_named() {
        let base = ModelConfig::preset("tiny").unwrap();
        for (edit, word) in [
            (
                (|c: &mut ModelConfig| c.rope_theta = f32::NAN) as fn(&mut ModelConfig),
                "rope_theta",
            ),
            (|c| c.rope_theta = -1.0, "rope_theta"),
            (|c| c.norm_eps = f32::INFINITY, "norm_eps"),
            (
                |c| c.mup.embedding_multiplier = f32::NAN,
                "embedding_multiplier",
            ),
            (|c| c.mup.lr_multipliers.hidden = -1.0, "hidden"),
            (|c| c.d_model = 1 << 40, "d_model"),
            (|c| c.n_layers = 1 << 20, "n_layers"),
        ] {
            let mut c = base.clone();
            edit(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(word), "{word}: {e}");
        }
        // Products overflow long before any single dimension is absurd.
        let mut c = base.clone();
        (c.vocab_size, c.d_model, c.n_heads, c.n_kv_heads) = (1 << 31, 1 << 24, 1, 1);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("parameter count"), "{e}");
        let a = AdamWConfig::default();
        a.validate().unwrap();
        for (edit, word) in [
            (
                (|a: &mut AdamWConfig| a.beta1 = 1.0) as fn(&mut AdamWConfig),
                "beta1",
            ),
            (|a| a.beta2 = -0.1, "beta2"),
            (|a| a.eps = 0.0, "eps"),
            (|a| a.grad_clip = f32::NAN, "grad_clip"),
            (|a| a.weight_decay = 1e6, "weight_decay"),
        ] {
            let mut b = a;
            edit(&mut b);
            let e = b.validate().unwrap_err().to_string();
            assert!(e.contains(word), "{word}: {e}");
        }
    }

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
        // The tiny preset has 3 heads: 2 KV heads do not divide them.
        let mut c = ModelConfig::preset("tiny").unwrap();
        assert_eq!(c.n_heads, 3);
        c.n_kv_heads = 2;
        assert!(c.validate().unwrap_err().to_string().contains("n_kv_heads"));
    }
}
