//! Where every named parameter lives inside the one flat f32 buffer.
//!
//! A single buffer keeps the optimizer, gradient clipping, checkpointing and hashing a
//! loop over one slice. Names and shapes follow Hugging Face `LlamaForCausalLM`, so a
//! checkpoint maps onto transformers one tensor at a time. Within a block, q/k/v and
//! gate/up are adjacent so each pair of projections is one GEMM.

use crate::config::{BlockKind, MlpKind, ModelConfig, NormKind};

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
    /// First norm's weight (pre-attention; post-attention in a post-norm block); `None`
    /// for a non-parametric norm.
    pub norm1_w: Option<usize>,
    /// First norm's bias (affine LayerNorm only).
    pub norm1_b: Option<usize>,
    /// Fused `[q; k; v]` projection, `[(H + 2·KV)·hd, D]`.
    pub qkv: usize,
    /// Its bias `[(H + 2·KV)·hd]` (`linear_bias`).
    pub qkv_b: Option<usize>,
    /// QK-norm weights over the q and k projections (`qk_norm`): `[H·hd]`, `[KV·hd]`.
    pub q_norm: Option<usize>,
    /// See `q_norm`.
    pub k_norm: Option<usize>,
    /// Output projection `[D, H·hd]`.
    pub o: usize,
    /// Its bias `[D]`.
    pub o_b: Option<usize>,
    /// Second norm's weight (pre-MLP; post-MLP in a post-norm block).
    pub norm2_w: Option<usize>,
    /// Second norm's bias.
    pub norm2_b: Option<usize>,
    /// MLP input projection: fused `[gate; up]` `[2F, D]` (SwiGLU), `up` `[F, D]` (GELU).
    pub gate_up: usize,
    /// Its bias.
    pub gate_up_b: Option<usize>,
    /// Down projection `[D, F]`.
    pub down: usize,
    /// Its bias `[D]`.
    pub down_b: Option<usize>,
}

/// The complete parameter map of a model.
#[derive(Debug, Clone)]
pub struct ParamLayout {
    tensors: Vec<TensorView>,
    /// Embedding `[V, D]`.
    pub embed: usize,
    /// Per-block offsets.
    pub blocks: Vec<BlockOffsets>,
    /// Final norm weight (`None`: non-parametric).
    pub norm_f_w: Option<usize>,
    /// Final norm bias (affine LayerNorm only).
    pub norm_f_b: Option<usize>,
    /// LM head `[V, D]`; equals `embed` when tied.
    pub head: usize,
    total: usize,
}

impl ParamLayout {
    /// Lays out every parameter of `cfg` in the canonical order. Biases are norm-group
    /// tensors (no weight decay, unscaled learning rate, as CrystalCoder's muP groups
    /// them) and sit right after their weights, so a fused projection's biases are one
    /// vector too.
    pub fn new(cfg: &ModelConfig) -> Self {
        let d = cfg.d_model;
        let hd = cfg.head_dim();
        let arch = cfg.arch;
        let affine = arch.norm_affine;
        let ln = cfg.norm == NormKind::LayerNorm && affine;
        let bias = arch.linear_bias;
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
        // A norm's weight and bias, under `name`.
        let norm = |push: &mut dyn FnMut(String, Vec<usize>, ParamGroup) -> usize,
                    name: &str|
         -> (Option<usize>, Option<usize>) {
            let w = affine.then(|| push(format!("{name}.weight"), vec![d], ParamGroup::Norm));
            let b = ln.then(|| push(format!("{name}.bias"), vec![d], ParamGroup::Norm));
            (w, b)
        };
        let (norm1_name, norm2_name) = match arch.block {
            BlockKind::PostNorm => ("post_attention_layernorm", "post_feedforward_layernorm"),
            _ => ("input_layernorm", "post_attention_layernorm"),
        };
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = format!("model.layers.{i}");
            let proj = |push: &mut dyn FnMut(String, Vec<usize>, ParamGroup) -> usize,
                        names: &[(&str, usize)],
                        d_in: usize|
             -> (usize, Option<usize>) {
                let mut first = None;
                for (n, rows) in names {
                    let o = push(
                        format!("{p}.{n}.weight"),
                        vec![*rows, d_in],
                        ParamGroup::Hidden,
                    );
                    first.get_or_insert(o);
                }
                let mut first_b = None;
                if bias {
                    for (n, rows) in names {
                        let o = push(format!("{p}.{n}.bias"), vec![*rows], ParamGroup::Norm);
                        first_b.get_or_insert(o);
                    }
                }
                (first.unwrap_or(0), first_b)
            };
            let (norm1_w, norm1_b) = if arch.block == BlockKind::PostNorm {
                (None, None)
            } else {
                norm(&mut push, &format!("{p}.{norm1_name}"))
            };
            let (qkv, qkv_b) = proj(
                &mut push,
                &[
                    ("self_attn.q_proj", cfg.n_heads * hd),
                    ("self_attn.k_proj", cfg.n_kv_heads * hd),
                    ("self_attn.v_proj", cfg.n_kv_heads * hd),
                ],
                d,
            );
            let (q_norm, k_norm) = if arch.qk_norm {
                (
                    Some(push(
                        format!("{p}.self_attn.q_norm.weight"),
                        vec![cfg.n_heads * hd],
                        ParamGroup::Norm,
                    )),
                    Some(push(
                        format!("{p}.self_attn.k_norm.weight"),
                        vec![cfg.n_kv_heads * hd],
                        ParamGroup::Norm,
                    )),
                )
            } else {
                (None, None)
            };
            let (o, o_b) = proj(&mut push, &[("self_attn.o_proj", d)], cfg.n_heads * hd);
            let (norm1_w, norm1_b) = if arch.block == BlockKind::PostNorm {
                norm(&mut push, &format!("{p}.{norm1_name}"))
            } else {
                (norm1_w, norm1_b)
            };
            let (norm2_w, norm2_b) = if arch.block == BlockKind::PostNorm {
                (None, None)
            } else {
                norm(&mut push, &format!("{p}.{norm2_name}"))
            };
            let mlp_in: &[(&str, usize)] = match arch.mlp {
                MlpKind::Swiglu => &[
                    ("mlp.gate_proj", cfg.ffn_hidden),
                    ("mlp.up_proj", cfg.ffn_hidden),
                ],
                MlpKind::Gelu => &[("mlp.up_proj", cfg.ffn_hidden)],
            };
            let (gate_up, gate_up_b) = proj(&mut push, mlp_in, d);
            let (down, down_b) = proj(&mut push, &[("mlp.down_proj", d)], cfg.ffn_hidden);
            let (norm2_w, norm2_b) = if arch.block == BlockKind::PostNorm {
                norm(&mut push, &format!("{p}.{norm2_name}"))
            } else {
                (norm2_w, norm2_b)
            };
            blocks.push(BlockOffsets {
                norm1_w,
                norm1_b,
                qkv,
                qkv_b,
                q_norm,
                k_norm,
                o,
                o_b,
                norm2_w,
                norm2_b,
                gate_up,
                gate_up_b,
                down,
                down_b,
            });
        }
        let (norm_f_w, norm_f_b) = norm(&mut push, "model.norm");
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
