//! The other transparent suites' transformers folders ⇄ Glass: CrystalCoder
//! (`model_type: "crystalcoder"`), GPT-NeoX as Pythia uses it (`gpt_neox`), OLMo
//! (`olmo`) and OLMo 2 (`olmo2`). Each maps onto the one Glass layer stack
//! ([`glass_engine::ArchConfig`]); this module owns the config keys and the tensor
//! names and layouts of each family, both ways.
//!
//! Tensor moves are byte moves (transpose, row split, row permutation), so a weights-only
//! import keeps the source dtype and an export writes back the same bytes.
//!
//! Where each layout comes from:
//! - CrystalCoder: LLM360's `modeling_crystalcoder.py` (published beside the checkpoints
//!   and in `crystalcoder-train`): GPT-2 `Conv1D` weights stored `[in, out]`; `c_attn`
//!   is `[q | k | v]` along its output; `c_fc2` is the SiLU gate and `c_fc` the linear
//!   half (`c_fc(x) · silu(c_fc2(x))`); rotary on the first `rotary_dim` dimensions of
//!   each head in GPT-J order (pairs `(2j, 2j+1)`), which Glass, rotating pairs
//!   `(j, j + r/2)`, reads by permuting the q and k rows of each head (scores are
//!   unchanged: q and k are permuted alike); logits × `mup_output_alpha ·
//!   mup_width_scale`; scores / `head_dim` when `mup_scale_qk_dot_by_d`.
//! - GPT-NeoX: transformers' `GPTNeoXAttention`: `query_key_value` rows are per head
//!   `[q_h; k_h; v_h]`; `rotary_pct` of each head rotated in `rotate_half` order.
//! - OLMo / OLMo 2: LLaMA's names (`OlmoForCausalLM` without norm weights,
//!   `Olmo2ForCausalLM` with `post_feedforward_layernorm` and `q_norm` / `k_norm`).

use std::borrow::Cow;
use std::path::Path;

use glass_engine::{
    ArchConfig, AttentionScale, BlockKind, LrMultipliers, MlpKind, ModelConfig, MupConfig, NormKind,
};
use serde_json::{json, Map, Value};

use crate::error::{file_err, HfError, Result};

/// A transformers model family Glass reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// `LlamaForCausalLM` (Amber, SmolLM2, ...).
    #[default]
    Llama,
    /// LLM360 CrystalCoder (`CrystalCoderLMHeadModel`, remote code).
    CrystalCoder,
    /// EleutherAI GPT-NeoX / Pythia (`GPTNeoXForCausalLM`).
    GptNeox,
    /// AI2 OLMo (`OlmoForCausalLM`).
    Olmo,
    /// AI2 OLMo 2 (`Olmo2ForCausalLM`).
    Olmo2,
}

impl Family {
    /// The family a `config.json` names, by `model_type` or else `architectures`.
    pub fn of_config(obj: &Map<String, Value>) -> Option<Family> {
        let by_type = match obj.get("model_type").and_then(|m| m.as_str()) {
            Some("llama") => Some(Family::Llama),
            Some("crystalcoder") => Some(Family::CrystalCoder),
            Some("gpt_neox") => Some(Family::GptNeox),
            Some("olmo") => Some(Family::Olmo),
            Some("olmo2") => Some(Family::Olmo2),
            _ => None,
        };
        by_type.or_else(|| {
            let a = obj.get("architectures")?.as_array()?;
            match a.first()?.as_str()? {
                "CrystalCoderLMHeadModel" => Some(Family::CrystalCoder),
                "GPTNeoXForCausalLM" => Some(Family::GptNeox),
                "OlmoForCausalLM" => Some(Family::Olmo),
                "Olmo2ForCausalLM" => Some(Family::Olmo2),
                _ => None,
            }
        })
    }

    /// The family whose transformers model computes `cfg`'s function.
    pub fn of_model(cfg: &ModelConfig) -> Family {
        let a = cfg.arch;
        if a.mlp == MlpKind::Gelu || a.block == BlockKind::Parallel {
            Family::GptNeox
        } else if a.block == BlockKind::PostNorm {
            Family::Olmo2
        } else if !a.norm_affine {
            Family::Olmo
        } else if a.linear_bias {
            Family::CrystalCoder
        } else {
            Family::Llama
        }
    }

    /// The `model_type` transformers uses.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::CrystalCoder => "crystalcoder",
            Family::GptNeox => "gpt_neox",
            Family::Olmo => "olmo",
            Family::Olmo2 => "olmo2",
        }
    }

    /// Buffers a checkpoint may carry that are not parameters (causal masks, RoPE
    /// frequencies: recomputed).
    pub fn is_buffer(self, name: &str) -> bool {
        name.ends_with(".rotary_emb.inv_freq")
            || matches!(self, Family::CrystalCoder | Family::GptNeox)
                && (name.ends_with(".attn.bias")
                    || name.ends_with(".attn.masked_bias")
                    || name.ends_with(".attention.bias")
                    || name.ends_with(".attention.masked_bias"))
    }
}

/// Fields of the other families' configs that never change the function, beyond
/// those LLaMA's reader already ignores ([`crate::hf_config::INERT`]).
const INERT: &[&str] = &[
    "auto_map",
    "hidden_dropout",
    "classifier_dropout",
    "attn_pdrop",
    "resid_pdrop",
    "embd_pdrop",
    "summary_type",
    "summary_use_proj",
    "summary_activation",
    "summary_proj_to_labels",
    "summary_first_dropout",
    "reorder_and_upcast_attn",
];

/// Typed access to a `config.json` object, with errors naming the file.
struct Keys<'a> {
    obj: &'a Map<String, Value>,
    path: &'a Path,
    used: Vec<&'static str>,
}

impl<'a> Keys<'a> {
    fn bad(&self, msg: String) -> HfError {
        file_err(self.path, msg)
    }
    fn int(&mut self, k: &'static str) -> Result<Option<usize>> {
        self.used.push(k);
        match self.obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.bad(format!("`{k}` must be a non-negative integer"))),
        }
    }
    fn need(&mut self, k: &'static str) -> Result<usize> {
        self.int(k)?
            .ok_or_else(|| self.bad(format!("`{k}` is missing")))
    }
    fn float(&mut self, k: &'static str) -> Result<Option<f64>> {
        self.used.push(k);
        match self.obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad(format!("`{k}` must be a number"))),
        }
    }
    fn flag(&mut self, k: &'static str) -> Result<Option<bool>> {
        self.used.push(k);
        match self.obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.bad(format!("`{k}` must be true or false"))),
        }
    }
    fn string(&mut self, k: &'static str) -> Result<Option<&'a str>> {
        self.used.push(k);
        match self.obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_str()
                .map(Some)
                .ok_or_else(|| self.bad(format!("`{k}` must be a string"))),
        }
    }
    /// `rope_theta` and `partial_rotary_factor` from the flat keys or transformers 5's
    /// `rope_parameters`; RoPE scaling is refused.
    fn rope(&mut self, theta_key: &'static str) -> Result<(Option<f64>, Option<f64>)> {
        let mut theta = self.float(theta_key)?;
        let mut partial = None;
        for key in ["rope_parameters", "rope_scaling"] {
            self.used.push(key);
            match self.obj.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Object(rp)) => {
                    let kind = rp
                        .get("rope_type")
                        .or_else(|| rp.get("type"))
                        .and_then(|x| x.as_str())
                        .unwrap_or("default");
                    if kind != "default" {
                        return Err(self.bad(format!(
                            "{key}.rope_type `{kind}` (RoPE scaling) is not supported; glass implements default RoPE only"
                        )));
                    }
                    if let Some(t) = rp.get("rope_theta") {
                        theta = Some(t.as_f64().ok_or_else(|| {
                            self.bad(format!("{key}.rope_theta must be a number"))
                        })?);
                    }
                    if let Some(p) = rp.get("partial_rotary_factor") {
                        partial = Some(p.as_f64().ok_or_else(|| {
                            self.bad(format!("{key}.partial_rotary_factor must be a number"))
                        })?);
                    }
                }
                Some(_) => return Err(self.bad(format!("`{key}` must be an object or null"))),
            }
        }
        Ok((theta, partial))
    }
    /// Keys neither read nor inert.
    fn ignored(&self) -> Vec<String> {
        self.obj
            .keys()
            .filter(|k| {
                let k = k.as_str();
                !INERT.contains(&k)
                    && !crate::hf_config::INERT.contains(&k)
                    && !self.used.contains(&k)
            })
            .cloned()
            .collect()
    }
}

/// `rotary_fraction` giving exactly `rot` rotated dimensions of `hd`.
fn fraction_for(rot: usize, hd: usize) -> f32 {
    rot as f32 / hd as f32
}

/// Reads a non-LLaMA `config.json` into the Glass config that computes the same
/// function, or refuses naming the field it cannot honour. Returns the config and the
/// keys it ignored.
pub fn from_hf(
    family: Family,
    obj: &Map<String, Value>,
    path: &Path,
) -> Result<(ModelConfig, Vec<String>)> {
    let mut k = Keys {
        obj,
        path,
        used: Vec::new(),
    };
    let cfg = match family {
        Family::Llama => unreachable!("LLaMA is read by hf_config::from_hf"),
        Family::CrystalCoder => crystalcoder(&mut k)?,
        Family::GptNeox => gpt_neox(&mut k)?,
        Family::Olmo | Family::Olmo2 => olmo(&mut k, family)?,
    };
    cfg.validate()
        .map_err(|e| k.bad(format!("describes a model glass cannot run: {e}")))?;
    Ok((cfg, k.ignored()))
}

fn crystalcoder(k: &mut Keys<'_>) -> Result<ModelConfig> {
    let d = k.need("n_embd")?;
    let heads = k.need("n_head")?;
    if heads == 0 || !d.is_multiple_of(heads) {
        return Err(k.bad(format!("n_embd {d} is not a multiple of n_head {heads}")));
    }
    let hd = d / heads;
    match k.string("activation_function")? {
        Some("swiglu") => {}
        other => {
            return Err(k.bad(format!(
                "activation_function {other:?} is not supported; CrystalCoder uses \"swiglu\""
            )))
        }
    }
    match k.string("position_embedding_type")? {
        Some("rotary") => {}
        other => {
            return Err(k.bad(format!(
                "position_embedding_type {other:?} is not supported; glass runs rotary CrystalCoder models (ALiBi and learned positions are other models)"
            )))
        }
    }
    if k.flag("scale_attn_weights")? == Some(false) {
        return Err(k.bad("scale_attn_weights = false is not supported".into()));
    }
    for key in ["scale_attn_by_inverse_layer_idx", "add_cross_attention"] {
        if k.flag(key)? == Some(true) {
            return Err(k.bad(format!("`{key}` = true is not supported")));
        }
    }
    let rot = k.int("rotary_dim")?.unwrap_or(hd);
    if rot == 0 || rot > hd || !rot.is_multiple_of(2) {
        return Err(k.bad(format!(
            "rotary_dim {rot} must be even and at most the head width {hd}"
        )));
    }
    let width = k.float("mup_width_scale")?.unwrap_or(1.0);
    let emb = k.float("mup_embeddings_scale")?.unwrap_or(1.0);
    let alpha = k.float("mup_output_alpha")?.unwrap_or(1.0);
    let by_d = k.flag("mup_scale_qk_dot_by_d")?.unwrap_or(false);
    let init = k.float("initializer_range")?.unwrap_or(0.02);
    if !(width.is_finite() && width > 0.0) {
        return Err(k.bad(format!("mup_width_scale {width} must be > 0")));
    }
    let tie = k.flag("tie_word_embeddings")?.unwrap_or(true);
    Ok(ModelConfig {
        vocab_size: k.need("vocab_size")?,
        d_model: d,
        n_layers: k.need("n_layer")?,
        n_heads: heads,
        n_kv_heads: heads,
        ffn_hidden: k.int("n_inner")?.unwrap_or(4 * d),
        max_seq_len: k.int("n_positions")?.unwrap_or(2048),
        norm: NormKind::LayerNorm,
        norm_eps: k.float("layer_norm_epsilon")?.unwrap_or(1e-5) as f32,
        rope_theta: 10000.0,
        rotary_fraction: fraction_for(rot, hd),
        tie_embeddings: tie,
        mup: MupConfig {
            embedding_multiplier: emb as f32,
            output_logit_multiplier: (alpha * width) as f32,
            attention_scale: if by_d {
                AttentionScale::InvD
            } else {
                AttentionScale::InvSqrtD
            },
            lr_multipliers: LrMultipliers {
                hidden: width as f32,
                ..LrMultipliers::default()
            },
            init_std: init as f32,
            base_width: if width == 1.0 {
                0
            } else {
                (d as f64 * width).round() as usize
            },
            scale_residual_init: true,
        },
        arch: ArchConfig {
            linear_bias: true,
            ..ArchConfig::default()
        },
    })
}

fn gpt_neox(k: &mut Keys<'_>) -> Result<ModelConfig> {
    let d = k.need("hidden_size")?;
    let heads = k.need("num_attention_heads")?;
    if heads == 0 || !d.is_multiple_of(heads) {
        return Err(k.bad(format!(
            "hidden_size {d} is not a multiple of num_attention_heads {heads}"
        )));
    }
    let hd = d / heads;
    match k.string("hidden_act")? {
        None | Some("gelu") => {}
        Some(a) => {
            return Err(k.bad(format!(
                "hidden_act `{a}` is not supported; glass runs GPT-NeoX with the exact GELU (\"gelu\", as Pythia)"
            )))
        }
    }
    if k.flag("attention_bias")? == Some(false) {
        return Err(k.bad("attention_bias = false is not supported (Pythia has biases)".into()));
    }
    if k.flag("tie_word_embeddings")? == Some(true) {
        return Err(k.bad("tie_word_embeddings = true is not supported for GPT-NeoX".into()));
    }
    let (theta_p, partial_p) = k.rope("rope_theta")?;
    let theta = k.float("rotary_emb_base")?.or(theta_p).unwrap_or(10000.0);
    let pct = k.float("rotary_pct")?.or(partial_p).unwrap_or(1.0);
    // transformers: rotary_ndims = int(head_size * rotary_pct).
    let rot = (hd as f64 * pct) as usize;
    if rot == 0 || !rot.is_multiple_of(2) {
        return Err(k.bad(format!(
            "rotary_pct {pct} rotates {rot} of {hd} dimensions; glass needs an even, positive count"
        )));
    }
    let parallel = k.flag("use_parallel_residual")?.unwrap_or(true);
    Ok(ModelConfig {
        vocab_size: k.need("vocab_size")?,
        d_model: d,
        n_layers: k.need("num_hidden_layers")?,
        n_heads: heads,
        n_kv_heads: heads,
        ffn_hidden: k.need("intermediate_size")?,
        max_seq_len: k.int("max_position_embeddings")?.unwrap_or(2048),
        norm: NormKind::LayerNorm,
        norm_eps: k.float("layer_norm_eps")?.unwrap_or(1e-5) as f32,
        rope_theta: theta as f32,
        rotary_fraction: fraction_for(rot, hd),
        tie_embeddings: false,
        mup: MupConfig::default(),
        arch: ArchConfig {
            linear_bias: true,
            mlp: MlpKind::Gelu,
            block: if parallel {
                BlockKind::Parallel
            } else {
                BlockKind::PreNorm
            },
            ..ArchConfig::default()
        },
    })
}

fn olmo(k: &mut Keys<'_>, family: Family) -> Result<ModelConfig> {
    let d = k.need("hidden_size")?;
    let heads = k.need("num_attention_heads")?;
    if heads == 0 || !d.is_multiple_of(heads) {
        return Err(k.bad(format!(
            "hidden_size {d} is not a multiple of num_attention_heads {heads}"
        )));
    }
    match k.string("hidden_act")? {
        None | Some("silu") => {}
        Some(a) => return Err(k.bad(format!("hidden_act `{a}` is not supported (silu only)"))),
    }
    if k.flag("attention_bias")? == Some(true) {
        return Err(k.bad("attention_bias = true is not supported for OLMo".into()));
    }
    let (theta, partial) = k.rope("rope_theta")?;
    if partial.is_some_and(|p| p != 1.0) {
        return Err(k.bad("partial rotary is not part of OLMo".into()));
    }
    let clip = k.float("clip_qkv")?;
    let olmo2 = family == Family::Olmo2;
    if olmo2 && clip.is_some() {
        return Err(k.bad("clip_qkv is not part of OLMo 2".into()));
    }
    Ok(ModelConfig {
        vocab_size: k.need("vocab_size")?,
        d_model: d,
        n_layers: k.need("num_hidden_layers")?,
        n_heads: heads,
        n_kv_heads: k.int("num_key_value_heads")?.unwrap_or(heads),
        ffn_hidden: k.need("intermediate_size")?,
        max_seq_len: k.int("max_position_embeddings")?.unwrap_or(2048),
        norm: if olmo2 {
            NormKind::RmsNorm
        } else {
            NormKind::LayerNorm
        },
        // OlmoLayerNorm's eps is fixed at 1e-5.
        norm_eps: if olmo2 {
            k.float("rms_norm_eps")?.unwrap_or(1e-5) as f32
        } else {
            1e-5
        },
        rope_theta: theta.unwrap_or(10000.0) as f32,
        rotary_fraction: 1.0,
        tie_embeddings: k.flag("tie_word_embeddings")?.unwrap_or(false),
        mup: MupConfig::default(),
        arch: if olmo2 {
            ArchConfig {
                block: BlockKind::PostNorm,
                qk_norm: true,
                ..ArchConfig::default()
            }
        } else {
            ArchConfig {
                norm_affine: false,
                qkv_clip: clip.map(|c| c as f32),
                ..ArchConfig::default()
            }
        },
    })
}

/// The transformers `config.json` of a non-LLaMA model.
pub fn to_hf(
    family: Family,
    cfg: &ModelConfig,
    bos: Option<u32>,
    eos: Option<u32>,
    dtype: &str,
) -> Result<Value> {
    let hd = cfg.head_dim();
    let v = match family {
        Family::Llama => unreachable!("LLaMA is written by hf_config::to_hf"),
        Family::CrystalCoder => {
            let width = cfg.mup.width_scale(cfg.d_model);
            let m = cfg.mup;
            json!({
                "architectures": ["CrystalCoderLMHeadModel"],
                "model_type": "crystalcoder",
                "auto_map": {
                    "AutoConfig": "configuration_crystalcoder.CrystalCoderConfig",
                    "AutoModel": "modeling_crystalcoder.CrystalCoderModel",
                    "AutoModelForCausalLM": "modeling_crystalcoder.CrystalCoderLMHeadModel"
                },
                "vocab_size": cfg.vocab_size,
                "n_embd": cfg.d_model,
                "n_layer": cfg.n_layers,
                "n_head": cfg.n_heads,
                "n_inner": cfg.ffn_hidden,
                "n_positions": cfg.max_seq_len,
                "layer_norm_epsilon": cfg.norm_eps,
                "activation_function": "swiglu",
                "position_embedding_type": "rotary",
                "rotary_dim": cfg.rotary_dim(),
                "scale_attn_weights": true,
                "mup_width_scale": width,
                "mup_embeddings_scale": m.embedding_multiplier,
                "mup_output_alpha": m.output_logit_multiplier as f64 / width,
                "mup_scale_qk_dot_by_d": m.attention_scale == AttentionScale::InvD,
                "tie_word_embeddings": cfg.tie_embeddings,
                "initializer_range": m.init_std,
                "attn_pdrop": 0.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
                "bos_token_id": bos, "eos_token_id": eos,
                "use_cache": true,
                "torch_dtype": dtype,
            })
        }
        Family::GptNeox => json!({
            "architectures": ["GPTNeoXForCausalLM"],
            "model_type": "gpt_neox",
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.d_model,
            "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": cfg.n_heads,
            "intermediate_size": cfg.ffn_hidden,
            "hidden_act": "gelu",
            "max_position_embeddings": cfg.max_seq_len,
            "layer_norm_eps": cfg.norm_eps,
            "rotary_pct": cfg.rotary_dim() as f64 / hd as f64,
            "rotary_emb_base": cfg.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta,
                                "partial_rotary_factor": cfg.rotary_dim() as f64 / hd as f64},
            "use_parallel_residual": cfg.arch.block == BlockKind::Parallel,
            "attention_bias": true,
            "tie_word_embeddings": false,
            "bos_token_id": bos, "eos_token_id": eos,
            "use_cache": true,
            "torch_dtype": dtype, "dtype": dtype,
        }),
        Family::Olmo | Family::Olmo2 => {
            let olmo2 = family == Family::Olmo2;
            let mut v = json!({
                "architectures": [if olmo2 { "Olmo2ForCausalLM" } else { "OlmoForCausalLM" }],
                "model_type": family.model_type(),
                "vocab_size": cfg.vocab_size,
                "hidden_size": cfg.d_model,
                "intermediate_size": cfg.ffn_hidden,
                "num_hidden_layers": cfg.n_layers,
                "num_attention_heads": cfg.n_heads,
                "num_key_value_heads": cfg.n_kv_heads,
                "hidden_act": "silu",
                "max_position_embeddings": cfg.max_seq_len,
                "rope_theta": cfg.rope_theta,
                "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
                "attention_bias": false,
                "tie_word_embeddings": cfg.tie_embeddings,
                "bos_token_id": bos, "eos_token_id": eos,
                "use_cache": true,
                "torch_dtype": dtype, "dtype": dtype,
            });
            if olmo2 {
                v["rms_norm_eps"] = json!(cfg.norm_eps);
            } else {
                v["clip_qkv"] = json!(cfg.arch.qkv_clip);
            }
            v
        }
    };
    Ok(v)
}

/// One tensor as bytes of `es`-byte elements, row-major.
#[derive(Debug, Clone)]
pub struct Moved<'a> {
    /// Name on the other side.
    pub name: String,
    /// Shape on the other side.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Cow<'a, [u8]>,
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(data: &[u8], rows: usize, cols: usize, es: usize) -> Vec<u8> {
    let mut out = vec![0u8; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            let src = (r * cols + c) * es;
            let dst = (c * rows + r) * es;
            out[dst..dst + es].copy_from_slice(&data[src..src + es]);
        }
    }
    out
}

/// Rows `idx` of a matrix whose rows are `row_bytes` long, in that order.
fn gather(data: &[u8], row_bytes: usize, idx: impl Iterator<Item = usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for r in idx {
        out.extend_from_slice(&data[r * row_bytes..(r + 1) * row_bytes]);
    }
    out
}

/// For Glass row `i` of a q or k projection (`heads` heads of `hd`, `rot` rotated
/// dimensions each), the CrystalCoder (GPT-J order) row it comes from.
pub(crate) fn gptj_row(i: usize, hd: usize, rot: usize) -> usize {
    let (h, j) = (i / hd, i % hd);
    let half = rot / 2;
    let src = if j < half {
        2 * j
    } else if j < rot {
        2 * (j - half) + 1
    } else {
        j
    };
    h * hd + src
}

/// The inverse of [`gptj_row`]: for CrystalCoder row `i`, the Glass row.
fn glass_row_of_gptj(i: usize, hd: usize, rot: usize) -> usize {
    let (h, j) = (i / hd, i % hd);
    let dst = if j < rot {
        if j % 2 == 0 {
            j / 2
        } else {
            rot / 2 + j / 2
        }
    } else {
        j
    };
    h * hd + dst
}

fn shape_err(name: &str, got: &[usize], want: &[usize]) -> String {
    format!("`{name}` has shape {got:?}, but config.json implies {want:?}")
}

/// Source tensor (family names and layout) → Glass tensors. `Ok(vec![])` for buffers;
/// `Err` names what is wrong (unknown name, shape).
pub fn to_glass<'a>(
    family: Family,
    cfg: &ModelConfig,
    name: &str,
    shape: &[usize],
    data: Cow<'a, [u8]>,
    es: usize,
) -> std::result::Result<Vec<Moved<'a>>, String> {
    if family.is_buffer(name) {
        return Ok(vec![]);
    }
    let same = |n: String, data: Cow<'a, [u8]>| {
        Ok(vec![Moved {
            name: n,
            shape: shape.to_vec(),
            data,
        }])
    };
    let (d, f, hd, nh) = (cfg.d_model, cfg.ffn_hidden, cfg.head_dim(), cfg.n_heads);
    let rot = cfg.rotary_dim();
    let check = |want: &[usize]| {
        if shape == want {
            Ok(())
        } else {
            Err(shape_err(name, shape, want))
        }
    };
    match family {
        Family::Llama | Family::Olmo | Family::Olmo2 => same(name.to_string(), data),
        Family::CrystalCoder => {
            let unknown = || {
                Err(format!(
                    "`{name}` is not a parameter of a CrystalCoder model"
                ))
            };
            if name == "transformer.wte.weight" {
                return same("model.embed_tokens.weight".into(), data);
            }
            if name == "lm_head.weight" {
                return same(name.into(), data);
            }
            if let Some(rest) = name.strip_prefix("transformer.ln_f.") {
                return same(format!("model.norm.{rest}"), data);
            }
            let Some(rest) = name.strip_prefix("transformer.h.") else {
                return unknown();
            };
            let Some((layer, part)) = rest.split_once('.') else {
                return unknown();
            };
            let p = format!("model.layers.{layer}");
            let conv = |rows_in: usize, cols_out: usize, glass: &str| {
                check(&[rows_in, cols_out])?;
                Ok(vec![Moved {
                    name: format!("{p}.{glass}.weight"),
                    shape: vec![cols_out, rows_in],
                    data: Cow::Owned(transpose(&data, rows_in, cols_out, es)),
                }])
            };
            match part {
                "ln_1.weight" | "ln_1.bias" => {
                    same(format!("{p}.input_layernorm.{}", &part[5..]), data)
                }
                "ln_2.weight" | "ln_2.bias" => {
                    same(format!("{p}.post_attention_layernorm.{}", &part[5..]), data)
                }
                "attn.c_attn.weight" | "attn.c_attn.bias" => {
                    let bias = part.ends_with("bias");
                    let t: Vec<u8> = if bias {
                        check(&[3 * d])?;
                        data.to_vec()
                    } else {
                        check(&[d, 3 * d])?;
                        transpose(&data, d, 3 * d, es)
                    };
                    let row = if bias { es } else { d * es };
                    let kind = if bias { "bias" } else { "weight" };
                    let piece = |k: usize, permute: bool| {
                        let base = k * d;
                        let idx: Vec<usize> = (0..d)
                            .map(|i| base + if permute { gptj_row(i, hd, rot) } else { i })
                            .collect();
                        gather(&t, row, idx.into_iter())
                    };
                    let shape = |v: bool| if v { vec![d] } else { vec![d, d] };
                    Ok(["q_proj", "k_proj", "v_proj"]
                        .iter()
                        .enumerate()
                        .map(|(k, n)| Moved {
                            name: format!("{p}.self_attn.{n}.{kind}"),
                            shape: shape(bias),
                            data: Cow::Owned(piece(k, k < 2)),
                        })
                        .collect())
                }
                "attn.c_proj.weight" => conv(d, d, "self_attn.o_proj"),
                "attn.c_proj.bias" => {
                    check(&[d])?;
                    same(format!("{p}.self_attn.o_proj.bias"), data)
                }
                "mlp.c_fc.weight" => conv(d, f, "mlp.up_proj"),
                "mlp.c_fc2.weight" => conv(d, f, "mlp.gate_proj"),
                "mlp.c_proj.weight" => conv(f, d, "mlp.down_proj"),
                "mlp.c_fc.bias" => same(format!("{p}.mlp.up_proj.bias"), data),
                "mlp.c_fc2.bias" => same(format!("{p}.mlp.gate_proj.bias"), data),
                "mlp.c_proj.bias" => same(format!("{p}.mlp.down_proj.bias"), data),
                _ => unknown(),
            }
        }
        Family::GptNeox => {
            let unknown = || Err(format!("`{name}` is not a parameter of a GPT-NeoX model"));
            match name {
                "gpt_neox.embed_in.weight" => {
                    return same("model.embed_tokens.weight".into(), data)
                }
                "embed_out.weight" => return same("lm_head.weight".into(), data),
                _ => {}
            }
            if let Some(rest) = name.strip_prefix("gpt_neox.final_layer_norm.") {
                return same(format!("model.norm.{rest}"), data);
            }
            let Some(rest) = name.strip_prefix("gpt_neox.layers.") else {
                return unknown();
            };
            let Some((layer, part)) = rest.split_once('.') else {
                return unknown();
            };
            let p = format!("model.layers.{layer}");
            match part {
                "input_layernorm.weight"
                | "input_layernorm.bias"
                | "post_attention_layernorm.weight"
                | "post_attention_layernorm.bias" => same(format!("{p}.{part}"), data),
                "attention.query_key_value.weight" | "attention.query_key_value.bias" => {
                    let bias = part.ends_with("bias");
                    let want = if bias { vec![3 * d] } else { vec![3 * d, d] };
                    check(&want)?;
                    let row = if bias { es } else { d * es };
                    let kind = if bias { "bias" } else { "weight" };
                    // Row h·3hd + k·hd + j holds piece k (q, k, v) of head h.
                    Ok(["q_proj", "k_proj", "v_proj"]
                        .iter()
                        .enumerate()
                        .map(|(k, n)| Moved {
                            name: format!("{p}.self_attn.{n}.{kind}"),
                            shape: if bias { vec![d] } else { vec![d, d] },
                            data: Cow::Owned(gather(
                                &data,
                                row,
                                (0..d).map(|i| (i / hd) * 3 * hd + k * hd + i % hd),
                            )),
                        })
                        .collect())
                }
                "attention.dense.weight" | "attention.dense.bias" => {
                    same(format!("{p}.self_attn.o_proj.{}", &part[16..]), data)
                }
                "mlp.dense_h_to_4h.weight" | "mlp.dense_h_to_4h.bias" => {
                    same(format!("{p}.mlp.up_proj.{}", &part[18..]), data)
                }
                "mlp.dense_4h_to_h.weight" | "mlp.dense_4h_to_h.bias" => {
                    same(format!("{p}.mlp.down_proj.{}", &part[18..]), data)
                }
                _ => {
                    let _ = nh;
                    unknown()
                }
            }
        }
    }
}

/// Glass tensors of one model (in layout order, bytes of `es`-byte elements) → the
/// family's tensors (names, layout), for an export. The inverse of [`to_glass`].
pub fn from_glass<'a>(
    family: Family,
    cfg: &ModelConfig,
    tensors: Vec<Moved<'a>>,
    es: usize,
) -> Vec<Moved<'a>> {
    if matches!(family, Family::Llama | Family::Olmo | Family::Olmo2) {
        return tensors;
    }
    let (d, hd) = (cfg.d_model, cfg.head_dim());
    let rot = cfg.rotary_dim();
    let mut by: std::collections::BTreeMap<String, Moved<'a>> =
        tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
    let mut take = |n: &str| by.remove(n).expect("layout tensor");
    let mut out = Vec::new();
    let rename = |t: Moved<'a>, n: String| Moved {
        name: n,
        shape: t.shape,
        data: t.data,
    };
    let conv = |t: Moved<'a>, n: String| {
        let (rows, cols) = (t.shape[0], t.shape[1]);
        Moved {
            name: n,
            shape: vec![cols, rows],
            data: Cow::Owned(transpose(&t.data, rows, cols, es)),
        }
    };
    match family {
        Family::CrystalCoder => {
            out.push(rename(
                take("model.embed_tokens.weight"),
                "transformer.wte.weight".into(),
            ));
            for l in 0..cfg.n_layers {
                let p = format!("model.layers.{l}");
                let h = format!("transformer.h.{l}");
                for (g, n) in [
                    ("input_layernorm", "ln_1"),
                    ("post_attention_layernorm", "ln_2"),
                ] {
                    for k in ["weight", "bias"] {
                        out.push(rename(
                            take(&format!("{p}.{g}.{k}")),
                            format!("{h}.{n}.{k}"),
                        ));
                    }
                }
                for kind in ["weight", "bias"] {
                    let row = if kind == "bias" { es } else { d * es };
                    let mut fused = Vec::new();
                    for (k, n) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                        let t = take(&format!("{p}.self_attn.{n}.{kind}"));
                        if k < 2 {
                            fused.extend(gather(
                                &t.data,
                                row,
                                (0..d).map(|i| glass_row_of_gptj(i, hd, rot)),
                            ));
                        } else {
                            fused.extend_from_slice(&t.data);
                        }
                    }
                    let t = if kind == "bias" {
                        Moved {
                            name: format!("{h}.attn.c_attn.bias"),
                            shape: vec![3 * d],
                            data: Cow::Owned(fused),
                        }
                    } else {
                        Moved {
                            name: format!("{h}.attn.c_attn.weight"),
                            shape: vec![d, 3 * d],
                            data: Cow::Owned(transpose(&fused, 3 * d, d, es)),
                        }
                    };
                    out.push(t);
                }
                out.push(conv(
                    take(&format!("{p}.self_attn.o_proj.weight")),
                    format!("{h}.attn.c_proj.weight"),
                ));
                out.push(rename(
                    take(&format!("{p}.self_attn.o_proj.bias")),
                    format!("{h}.attn.c_proj.bias"),
                ));
                for (g, n) in [
                    ("gate_proj", "c_fc2"),
                    ("up_proj", "c_fc"),
                    ("down_proj", "c_proj"),
                ] {
                    out.push(conv(
                        take(&format!("{p}.mlp.{g}.weight")),
                        format!("{h}.mlp.{n}.weight"),
                    ));
                    out.push(rename(
                        take(&format!("{p}.mlp.{g}.bias")),
                        format!("{h}.mlp.{n}.bias"),
                    ));
                }
            }
            for k in ["weight", "bias"] {
                out.push(rename(
                    take(&format!("model.norm.{k}")),
                    format!("transformer.ln_f.{k}"),
                ));
            }
            if !cfg.tie_embeddings {
                out.push(take("lm_head.weight"));
            }
        }
        Family::GptNeox => {
            out.push(rename(
                take("model.embed_tokens.weight"),
                "gpt_neox.embed_in.weight".into(),
            ));
            for l in 0..cfg.n_layers {
                let p = format!("model.layers.{l}");
                let h = format!("gpt_neox.layers.{l}");
                for g in ["input_layernorm", "post_attention_layernorm"] {
                    for k in ["weight", "bias"] {
                        out.push(rename(
                            take(&format!("{p}.{g}.{k}")),
                            format!("{h}.{g}.{k}"),
                        ));
                    }
                }
                for kind in ["weight", "bias"] {
                    let row = if kind == "bias" { es } else { d * es };
                    let parts: Vec<Moved<'a>> = ["q_proj", "k_proj", "v_proj"]
                        .iter()
                        .map(|n| take(&format!("{p}.self_attn.{n}.{kind}")))
                        .collect();
                    let mut fused = Vec::with_capacity(3 * parts[0].data.len());
                    for head in 0..cfg.n_heads {
                        for t in &parts {
                            fused
                                .extend_from_slice(&t.data[head * hd * row..(head + 1) * hd * row]);
                        }
                    }
                    out.push(Moved {
                        name: format!("{h}.attention.query_key_value.{kind}"),
                        shape: if kind == "bias" {
                            vec![3 * d]
                        } else {
                            vec![3 * d, d]
                        },
                        data: Cow::Owned(fused),
                    });
                }
                for k in ["weight", "bias"] {
                    out.push(rename(
                        take(&format!("{p}.self_attn.o_proj.{k}")),
                        format!("{h}.attention.dense.{k}"),
                    ));
                }
                for (g, n) in [("up_proj", "dense_h_to_4h"), ("down_proj", "dense_4h_to_h")] {
                    for k in ["weight", "bias"] {
                        out.push(rename(
                            take(&format!("{p}.mlp.{g}.{k}")),
                            format!("{h}.mlp.{n}.{k}"),
                        ));
                    }
                }
            }
            for k in ["weight", "bias"] {
                out.push(rename(
                    take(&format!("model.norm.{k}")),
                    format!("gpt_neox.final_layer_norm.{k}"),
                ));
            }
            out.push(rename(take("lm_head.weight"), "embed_out.weight".into()));
        }
        _ => unreachable!(),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gptj_permutation_is_a_bijection_and_its_inverse() {
        let (hd, rot) = (16, 4);
        for i in 0..3 * hd {
            assert_eq!(glass_row_of_gptj(gptj_row(i, hd, rot), hd, rot), i);
        }
        // Glass rows 0, 1 (pair (0, 2) of a 4-dim rotary) come from GPT-J 0, 2.
        assert_eq!(gptj_row(0, hd, rot), 0);
        assert_eq!(gptj_row(1, hd, rot), 2);
        assert_eq!(gptj_row(2, hd, rot), 1);
        assert_eq!(gptj_row(3, hd, rot), 3);
        assert_eq!(gptj_row(5, hd, rot), 5);
    }
}
