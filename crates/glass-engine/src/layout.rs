//! Where every named parameter lives inside the one flat f32 buffer.
//!
//! A single buffer keeps the optimizer, gradient clipping, checkpointing and hashing a
//! loop over one slice. Names and shapes follow Hugging Face `LlamaForCausalLM`, so a
//! checkpoint maps onto transformers one tensor at a time. Within a block, q/k/v and
//! gate/up are adjacent so each pair of projections is one GEMM.

use crate::config::{ModelConfig, NormKind};

/// Optimizer group of a parameter: decides its learning-rate multiplier and decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamGroup {
    /// Token embedding (and the tied head).
    Embedding,
    /// Linear layers inside blocks.
    Hidden,
    /// Norm weights and biases.
    Norm,
    /// Untied LM head.
    Output,
}

/// One named tensor inside the flat buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorView {
    /// Hugging Face name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// First element in the flat buffer.
    pub offset: usize,
    /// Optimizer group.
    pub group: ParamGroup,
}

impl TensorView {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True for a zero-sized tensor (never produced by a valid config).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The element range inside the flat buffer.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Offsets of one transformer block's tensors.
#[derive(Debug, Clone, Copy)]
pub struct BlockOffsets {
    /// Pre-attention norm weight.
    pub norm1_w: usize,
    /// Pre-attention norm bias (LayerNorm only).
    pub norm1_b: Option<usize>,
    /// Fused `[q; k; v]` projection, `[(H + 2·KV)·hd, D]`.
    pub qkv: usize,
    /// Output projection `[D, H·hd]`.
    pub o: usize,
    /// Pre-MLP norm weight.
    pub norm2_w: usize,
    /// Pre-MLP norm bias (LayerNorm only).
    pub norm2_b: Option<usize>,
    /// Fused `[gate; up]` projection, `[2F, D]`.
    pub gate_up: usize,
    /// Down projection `[D, F]`.
    pub down: usize,
}

/// The complete parameter map of a model.
#[derive(Debug, Clone)]
pub struct ParamLayout {
    tensors: Vec<TensorView>,
    /// Embedding `[V, D]`.
    pub embed: usize,
    /// Per-block offsets.
    pub blocks: Vec<BlockOffsets>,
    /// Final norm weight.
    pub norm_f_w: usize,
    /// Final norm bias (LayerNorm only).
    pub norm_f_b: Option<usize>,
    /// LM head `[V, D]`; equals `embed` when tied.
    pub head: usize,
    total: usize,
}

impl ParamLayout {
    /// Lays out every parameter of `cfg` in the canonical order.
    pub fn new(cfg: &ModelConfig) -> Self {
        let d = cfg.d_model;
        let hd = cfg.head_dim();
        let ln = cfg.norm == NormKind::LayerNorm;
        let mut tensors = Vec::new();
        let mut next = 0usize;
        let mut push = |name: String, shape: Vec<usize>, group: ParamGroup| -> usize {
            let offset = next;
            next += shape.iter().product::<usize>();
            tensors.push(TensorView {
                name,
                shape,
                offset,
                group,
            });
            offset
        };
        let embed = push(
            "model.embed_tokens.weight".into(),
            vec![cfg.vocab_size, d],
            ParamGroup::Embedding,
        );
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = format!("model.layers.{i}");
            let norm1_w = push(
                format!("{p}.input_layernorm.weight"),
                vec![d],
                ParamGroup::Norm,
            );
            let norm1_b = ln.then(|| {
                push(
                    format!("{p}.input_layernorm.bias"),
                    vec![d],
                    ParamGroup::Norm,
                )
            });
            let qkv = push(
                format!("{p}.self_attn.q_proj.weight"),
                vec![cfg.n_heads * hd, d],
                ParamGroup::Hidden,
            );
            push(
                format!("{p}.self_attn.k_proj.weight"),
                vec![cfg.n_kv_heads * hd, d],
                ParamGroup::Hidden,
            );
            push(
                format!("{p}.self_attn.v_proj.weight"),
                vec![cfg.n_kv_heads * hd, d],
                ParamGroup::Hidden,
            );
            let o = push(
                format!("{p}.self_attn.o_proj.weight"),
                vec![d, cfg.n_heads * hd],
                ParamGroup::Hidden,
            );
            let norm2_w = push(
                format!("{p}.post_attention_layernorm.weight"),
                vec![d],
                ParamGroup::Norm,
            );
            let norm2_b = ln.then(|| {
                push(
                    format!("{p}.post_attention_layernorm.bias"),
                    vec![d],
                    ParamGroup::Norm,
                )
            });
            let gate_up = push(
                format!("{p}.mlp.gate_proj.weight"),
                vec![cfg.ffn_hidden, d],
                ParamGroup::Hidden,
            );
            push(
                format!("{p}.mlp.up_proj.weight"),
                vec![cfg.ffn_hidden, d],
                ParamGroup::Hidden,
            );
            let down = push(
                format!("{p}.mlp.down_proj.weight"),
                vec![d, cfg.ffn_hidden],
                ParamGroup::Hidden,
            );
            blocks.push(BlockOffsets {
                norm1_w,
                norm1_b,
                qkv,
                o,
                norm2_w,
                norm2_b,
                gate_up,
                down,
            });
        }
        let norm_f_w = push("model.norm.weight".into(), vec![d], ParamGroup::Norm);
        let norm_f_b = ln.then(|| push("model.norm.bias".into(), vec![d], ParamGroup::Norm));
        let head = if cfg.tie_embeddings {
            embed
        } else {
            push(
                "lm_head.weight".into(),
                vec![cfg.vocab_size, d],
                ParamGroup::Output,
            )
        };
        ParamLayout {
            tensors,
            embed,
            blocks,
            norm_f_w,
            norm_f_b,
            head,
            total: next,
        }
    }

    /// Total number of parameters.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Every tensor in buffer order.
    pub fn tensors(&self) -> &[TensorView] {
        &self.tensors
    }

    /// Finds a tensor by its Hugging Face name.
    pub fn get(&self, name: &str) -> Option<&TensorView> {
        self.tensors.iter().find(|t| t.name == name)
    }
}
