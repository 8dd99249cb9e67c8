//! `config.json` of `LlamaForCausalLM` ⇄ Glass [`ModelConfig`], knob by knob.
//!
//! Every Glass knob is either mapped to its transformers field, folded exactly into the
//! weights, or refused; every transformers field is either mapped, checked to be neutral,
//! or reported as ignored (fields that cannot change the function, e.g. `use_cache`).
//! [`to_hf`] destructures the config exhaustively, so a new Glass knob fails to compile
//! here until it is handled.

use std::path::Path;

use glass_engine::{AttentionScale, ModelConfig, MupConfig, NormKind};
use serde_json::{json, Value};

use crate::error::{file_err, HfError, Result};

/// Scales an export multiplies into the weights so that stock `LlamaForCausalLM`
/// computes the same function as the Glass model (exact up to float rounding).
#[derive(Debug, Clone, PartialEq)]
pub struct Folds {
    /// Multiplies `model.embed_tokens.weight` (muP embedding multiplier; untied only).
    pub embed: f32,
    /// Multiplies `lm_head.weight` (muP output multiplier, untied).
    pub head: f32,
    /// Multiplies `model.norm.weight` (muP output multiplier, tied: the head is the
    /// embedding, so the scale goes into the final norm that feeds it).
    pub final_norm: f32,
    /// Multiplies every `q_proj.weight` (muP 1/d attention: `1/sqrt(d)` folded into q, as
    /// RoPE is linear and transformers scales scores by `1/sqrt(d)`).
    pub q: f32,
    /// Human-readable description of each fold and of knobs that do not affect the function.
    pub notes: Vec<String>,
}

impl Folds {
    /// No fold (the other families express every Glass knob in their own config).
    pub fn none() -> Self {
        Folds {
            embed: 1.0,
            head: 1.0,
            final_norm: 1.0,
            q: 1.0,
            notes: vec![],
        }
    }

    /// True when no weight changes.
    pub fn is_identity(&self) -> bool {
        self.embed == 1.0 && self.head == 1.0 && self.final_norm == 1.0 && self.q == 1.0
    }
}

/// Token ids the exported config names.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpecialTokenIds {
    /// BOS id, when the tokenizer has one.
    pub bos: Option<u32>,
    /// EOS id.
    pub eos: Option<u32>,
}

/// The transformers `config.json` for `cfg` and the folds the weights need, or a refusal
/// naming the knob transformers' LLaMA cannot express.
pub fn to_hf(cfg: &ModelConfig, ids: SpecialTokenIds, torch_dtype: &str) -> Result<(Value, Folds)> {
    let ModelConfig {
        vocab_size,
        d_model,
        n_layers,
        n_heads,
        n_kv_heads,
        ffn_hidden,
        max_seq_len,
        norm,
        norm_eps,
        rope_theta,
        rotary_fraction,
        tie_embeddings,
        mup,
        arch,
    } = cfg.clone();
    if !arch.is_llama() {
        return Err(HfError::Refused(
            "model.arch: not a LLaMA block; it is exported in its own family's format (crate::families)".into(),
        ));
    }
    let MupConfig {
        embedding_multiplier,
        output_logit_multiplier,
        attention_scale,
        lr_multipliers,
        // Initialisation only: no effect on the function an export computes.
        init_std: _,
        base_width: _,
        scale_residual_init: _,
    } = mup;
    if norm == NormKind::LayerNorm {
        return Err(HfError::Refused(
            "model.norm = \"layernorm\": transformers' LlamaForCausalLM has RMSNorm only (no mean subtraction, no bias), so an export would compute a different function; refusing".into(),
        ));
    }
    let head_dim = cfg.head_dim();
    if cfg.rotary_dim() != head_dim {
        return Err(HfError::Refused(format!(
            "model.rotary_fraction = {rotary_fraction}: transformers' LlamaForCausalLM rotates every head dimension (apply_rotary_pos_emb has no partial rotary), so an export would compute a different function; refusing"
        )));
    }
    let mut f = Folds {
        embed: 1.0,
        head: 1.0,
        final_norm: 1.0,
        q: 1.0,
        notes: vec![],
    };
    if embedding_multiplier != 1.0 {
        if tie_embeddings {
            return Err(HfError::Refused(format!(
                "model.mup.embedding_multiplier = {embedding_multiplier} with tie_embeddings: the shared matrix cannot carry the input scale without also scaling the logits, and transformers has no embedding multiplier; refusing"
            )));
        }
        f.embed = embedding_multiplier;
        f.notes.push(format!(
            "muP embedding_multiplier {embedding_multiplier} folded into model.embed_tokens.weight"
        ));
    }
    if output_logit_multiplier != 1.0 {
        if tie_embeddings {
            f.final_norm = output_logit_multiplier;
            f.notes.push(format!(
                "muP output_logit_multiplier {output_logit_multiplier} folded into model.norm.weight (tied head)"
            ));
        } else {
            f.head = output_logit_multiplier;
            f.notes.push(format!(
                "muP output_logit_multiplier {output_logit_multiplier} folded into lm_head.weight"
            ));
        }
    }
    if attention_scale == AttentionScale::InvD {
        f.q = (1.0 / (head_dim as f64).sqrt()) as f32;
        f.notes.push(format!(
            "muP attention scale 1/head_dim folded into q_proj.weight as 1/sqrt({head_dim}) (transformers applies the other 1/sqrt(head_dim))"
        ));
    }
    let lr = lr_multipliers;
    if lr != glass_engine::LrMultipliers::default() {
        f.notes.push(format!(
        "muP lr multipliers (embedding {}, hidden {}, norm {}, output {}) affect training only, not the exported function",
            lr.embedding, lr.hidden, lr.norm, lr.output
        ));
    }
    let v = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": d_model,
        "intermediate_size": ffn_hidden,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": max_seq_len,
        "rms_norm_eps": norm_eps,
        "rope_theta": rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta},
        "rope_scaling": null,
        "attention_bias": false,
        "attention_dropout": 0.0,
        "mlp_bias": false,
        "pretraining_tp": 1,
        "tie_word_embeddings": tie_embeddings,
        "bos_token_id": ids.bos,
        "eos_token_id": ids.eos,
        "pad_token_id": null,
        "use_cache": true,
        "initializer_range": 0.02,
        "torch_dtype": torch_dtype,
        "dtype": torch_dtype,
    });
    Ok((v, f))
}

/// What [`from_hf`] read besides the model config.
#[derive(Debug, Clone, Default)]
pub struct HfModelInfo {
    /// The equivalent Glass config.
    pub cfg: Option<ModelConfig>,
    /// `bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `eos_token_id` (the first, when a list).
    pub eos_token_id: Option<u32>,
    /// Fields that cannot change the function and were not mapped.
    pub ignored: Vec<String>,
    /// Which transformers family the folder holds.
    pub family: crate::families::Family,
}

/// Fields that never change what the model computes.
pub(crate) const INERT: &[&str] = &[
    "architectures",
    "model_type",
    "initializer_range",
    "use_cache",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "_name_or_path",
    "attention_dropout",
    "pretraining_tp",
    "tie_word_embeddings",
];

const MAPPED: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_parameters",
    "rope_scaling",
    "attention_bias",
    "mlp_bias",
    "partial_rotary_factor",
];

fn first_id(v: Option<&Value>) -> Option<u32> {
    match v? {
        Value::Number(n) => n.as_u64().map(|x| x as u32),
        Value::Array(a) => a.first().and_then(|x| x.as_u64()).map(|x| x as u32),
        _ => None,
    }
}

/// Reads a transformers `config.json` (`path` labels errors) into the Glass config that
/// computes the same function, or refuses naming the field it cannot honour.
pub fn from_hf(v: &Value, path: &Path) -> Result<HfModelInfo> {
    let bad = |msg: String| file_err(path, msg);
    let obj = v
        .as_object()
        .ok_or_else(|| bad("is not a JSON object".into()))?;
    if let Some(family) = crate::families::Family::of_config(obj) {
        if family != crate::families::Family::Llama {
            let (cfg, ignored) = crate::families::from_hf(family, obj, path)?;
            return Ok(HfModelInfo {
                cfg: Some(cfg),
                bos_token_id: first_id(obj.get("bos_token_id")),
                eos_token_id: first_id(obj.get("eos_token_id")),
                ignored,
                family,
            });
        }
    }
    let arch = obj.get("architectures").and_then(|a| a.as_array());
    if let Some(a) = arch {
        let names: Vec<&str> = a.iter().filter_map(|x| x.as_str()).collect();
        if names != ["LlamaForCausalLM"] {
            return Err(bad(format!(
                "architecture {names:?} is not supported; glass imports LlamaForCausalLM, CrystalCoderLMHeadModel, GPTNeoXForCausalLM, OlmoForCausalLM and Olmo2ForCausalLM"
            )));
        }
    }
    match obj.get("model_type").and_then(|m| m.as_str()) {
        Some("llama") => {}
        Some(other) => {
            return Err(bad(format!(
                "model_type `{other}` is not supported; glass imports llama, crystalcoder, gpt_neox, olmo and olmo2"
            )))
        }
        None if arch.is_some() => {}
        None => return Err(bad(
            "has neither `architectures` nor `model_type`; cannot tell which architecture this is"
                .into(),
        )),
    }
    let int = |k: &str| -> Result<Option<usize>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| bad(format!("`{k}` must be a non-negative integer"))),
        }
    };
    let need =
        |k: &str| -> Result<usize> { int(k)?.ok_or_else(|| bad(format!("`{k}` is missing"))) };
    let float = |k: &str| -> Result<Option<f64>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad(format!("`{k}` must be a number"))),
        }
    };
    let flag = |k: &str| obj.get(k).and_then(|x| x.as_bool()).unwrap_or(false);
    let d_model = need("hidden_size")?;
    let n_heads = need("num_attention_heads")?;
    if n_heads == 0 || d_model % n_heads != 0 {
        return Err(bad(format!(
            "hidden_size {d_model} is not a multiple of num_attention_heads {n_heads}"
        )));
    }
    if let Some(hd) = int("head_dim")? {
        if hd != d_model / n_heads {
            return Err(bad(format!(
                "head_dim {hd} differs from hidden_size / num_attention_heads = {}; glass requires head_dim = hidden_size / heads",
                d_model / n_heads
            )));
        }
    }
    match obj.get("hidden_act").and_then(|x| x.as_str()) {
        None | Some("silu") => {}
        Some(a) => {
            return Err(bad(format!(
                "hidden_act `{a}` is not supported (silu only)"
            )))
        }
    }
    for k in ["attention_bias", "mlp_bias"] {
        if flag(k) {
            return Err(bad(format!(
                "`{k}` is true; glass's LLaMA has no projection biases"
            )));
        }
    }
    if let Some(p) = float("partial_rotary_factor")? {
        if p != 1.0 {
            return Err(bad(format!(
                "partial_rotary_factor {p} is not supported by LlamaForCausalLM's rotary embedding"
            )));
        }
    }
    let mut theta = float("rope_theta")?;
    for key in ["rope_parameters", "rope_scaling"] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Object(rp)) => {
                let kind = rp
                    .get("rope_type")
                    .or_else(|| rp.get("type"))
                    .and_then(|x| x.as_str())
                    .unwrap_or("default");
                if kind != "default" {
                    return Err(bad(format!(
                        "{key}.rope_type `{kind}` (RoPE scaling) is not supported; glass implements default RoPE only"
                    )));
                }
                if let Some(t) = rp.get("rope_theta") {
                    theta = Some(
                        t.as_f64()
                            .ok_or_else(|| bad(format!("{key}.rope_theta must be a number")))?,
                    );
                }
                for k in rp.keys() {
                    if !["rope_type", "type", "rope_theta"].contains(&k.as_str()) {
                        return Err(bad(format!(
                            "{key}.{k} is not supported; glass implements default RoPE only"
                        )));
                    }
                }
            }
            Some(_) => return Err(bad(format!("`{key}` must be an object or null"))),
        }
    }
    let cfg = ModelConfig {
        vocab_size: need("vocab_size")?,
        d_model,
        n_layers: need("num_hidden_layers")?,
        n_heads,
        n_kv_heads: int("num_key_value_heads")?.unwrap_or(n_heads),
        ffn_hidden: need("intermediate_size")?,
        max_seq_len: int("max_position_embeddings")?.unwrap_or(2048),
        norm: NormKind::RmsNorm,
        norm_eps: float("rms_norm_eps")?.unwrap_or(1e-6) as f32,
        rope_theta: theta.unwrap_or(10000.0) as f32,
        rotary_fraction: 1.0,
        tie_embeddings: flag("tie_word_embeddings"),
        mup: MupConfig::default(),
        arch: glass_engine::ArchConfig::default(),
    };
    cfg.validate()
        .map_err(|e| bad(format!("describes a model glass cannot run: {e}")))?;
    let ignored = obj
        .keys()
        .filter(|k| !INERT.contains(&k.as_str()) && !MAPPED.contains(&k.as_str()))
        .cloned()
        .collect();
    Ok(HfModelInfo {
        cfg: Some(cfg),
        bos_token_id: first_id(obj.get("bos_token_id")),
        eos_token_id: first_id(obj.get("eos_token_id")),
        ignored,
        family: crate::families::Family::Llama,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// LLM360 Amber's published config.json (transformers 4.31 era: top-level rope
    /// fields, `rope_scaling: null`).
    const AMBER: &str = r#"{"architectures":["LlamaForCausalLM"],"bos_token_id":1,"eos_token_id":2,
        "hidden_act":"silu","hidden_size":4096,"initializer_range":0.02,"intermediate_size":11008,
        "max_position_embeddings":2048,"model_type":"llama","num_attention_heads":32,
        "num_hidden_layers":32,"num_key_value_heads":32,"pretraining_tp":1,"rms_norm_eps":1e-06,
        "rope_scaling":null,"tie_word_embeddings":false,"torch_dtype":"float32",
        "transformers_version":"4.31.0","use_cache":true,"vocab_size":32000}"#;

    fn parse(s: &str) -> Result<HfModelInfo> {
        from_hf(&serde_json::from_str(s).unwrap(), Path::new("config.json"))
    }

    #[test]
    fn amber_config_is_the_amber_preset() {
        let info = parse(AMBER).unwrap();
        assert_eq!(info.cfg.unwrap(), ModelConfig::preset("amber-7b").unwrap());
        assert_eq!((info.bos_token_id, info.eos_token_id), (Some(1), Some(2)));
        assert!(info.ignored.is_empty(), "{:?}", info.ignored);
    }

    #[test]
    fn export_config_reads_back_identically() {
        for p in ["tiny", "small", "amber-7b"] {
            let mut cfg = ModelConfig::preset(p).unwrap();
            cfg.n_kv_heads = cfg.n_heads / 2;
            cfg.rope_theta = 500000.0;
            cfg.norm_eps = 1e-6;
            let (v, f) = to_hf(&cfg, SpecialTokenIds::default(), "float32").unwrap();
            assert!(f.is_identity());
            let back = from_hf(&v, Path::new("config.json")).unwrap();
            assert_eq!(back.cfg.unwrap(), cfg, "{p}");
            assert!(back.ignored.is_empty(), "{:?}", back.ignored);
        }
    }

    #[test]
    fn function_changing_fields_are_refused_by_name() {
        for (edit, word) in [
            (r#""rope_scaling":{"type":"linear","factor":2.0}"#, "linear"),
            (
                r#""rope_scaling":null,"attention_bias":true"#,
                "attention_bias",
            ),
            (r#""rope_scaling":null,"hidden_act":"gelu""#, "gelu"),
            (r#""rope_scaling":null,"head_dim":64"#, "head_dim"),
            (
                r#""rope_scaling":null,"partial_rotary_factor":0.25"#,
                "partial_rotary_factor",
            ),
        ] {
            let e = parse(&AMBER.replace(r#""rope_scaling":null"#, edit))
                .unwrap_err()
                .to_string();
            assert!(e.contains(word) && e.contains("config.json"), "{e}");
        }
        let e = parse(&AMBER.replace(r#""model_type":"llama""#, r#""model_type":"mistral""#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mistral"), "{e}");
    }
}
