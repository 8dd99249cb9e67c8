//! The model card (`README.md`) of an export: what exactly this checkpoint is.

use glass_engine::ModelConfig;
use glass_run::checkpoint::CheckpointState;
use glass_run::manifest::CheckpointEntry;
use glass_run::RunManifest;

use crate::export::ExportedFile;
use crate::hf_config::Folds;

/// Everything the card states.
pub struct CardInput<'a> {
    /// `[run] name`.
    pub run_name: &'a str,
    /// The run manifest.
    pub manifest: &'a RunManifest,
    /// The exported checkpoint's manifest entry.
    pub entry: &'a CheckpointEntry,
    /// Its state.json.
    pub state: &'a CheckpointState,
    /// The model config.
    pub model: &'a ModelConfig,
    /// torch dtype name of the weights.
    pub dtype: &'a str,
    /// Folded scales.
    pub folds: &'a Folds,
    /// Files already written, with hashes.
    pub files: &'a [ExportedFile],
    /// sha256 of `glass.toml` as it is now (the `[model]` the export used).
    pub config_sha256_now: &'a str,
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "none"
    } else {
        s
    }
}

/// Renders the card as Markdown with a Hugging Face YAML header.
pub fn model_card(c: &CardInput<'_>) -> String {
    let e = c.entry;
    let m = c.model;
    let val = match (e.val_loss, c.state.val_bpb) {
        (Some(l), Some(b)) => {
            format!("{l:.6} nats/token ({b:.6} bits/byte) on the run's held-out rows")
        }
        (Some(l), None) => format!("{l:.6} nats/token on the run's held-out rows"),
        _ => "not measured (the run had no validation data at this checkpoint)".into(),
    };
    let lineage = match (&c.manifest.parent, &c.manifest.import) {
        (Some(p), _) => format!(
            "branched from run `{}` checkpoint {} (`{}`)",
            p.run_id, p.checkpoint, p.checkpoint_sha256
        ),
        (None, Some(i)) => format!(
            "checkpoint 0 imported from `{}` ({} format; provenance record sha256 `{}`)",
            i.source_dir, i.format, i.record_sha256
        ),
        _ => format!("trained from scratch (init seed {})", c.state.init_seed),
    };
    let folded: Vec<&String> = c
        .folds
        .notes
        .iter()
        .filter(|n| n.contains("folded"))
        .collect();
    let exactness = if folded.is_empty() && c.dtype == "float32" {
        "The weights are the checkpoint's f32 values bit for bit.".to_string()
    } else {
        let mut s = String::new();
        if !folded.is_empty() {
            s.push_str("Glass knobs that `LlamaForCausalLM` has no field for were folded into the weights (exact up to float rounding):\n\n");
            for n in &folded {
                s.push_str(&format!("- {n}\n"));
            }
            s.push('\n');
        }
        if c.dtype != "float32" {
            s.push_str(&format!(
                "The weights were rounded from the checkpoint's f32 values to {} (round to nearest even).\n",
                c.dtype
            ));
        }
        s
    };
    let other: Vec<&String> = c
        .folds
        .notes
        .iter()
        .filter(|n| !n.contains("folded"))
        .collect();
    let mut files = String::new();
    for f in c.files {
        files.push_str(&format!(
            "| `{}` | {} | `{}` |\n",
            f.path, f.bytes, f.sha256
        ));
    }
    format!(
        r#"---
library_name: transformers
pipeline_tag: text-generation
tags:
- glass
- llama
- transparent-pretraining
---

# {name} — checkpoint {index} (step {step})

A `LlamaForCausalLM` exported by Glass {version} from a fully recorded pretraining run.
Every fact below can be checked against the run directory with `glass info` and
`glass verify`.

| | |
|---|---|
| run | `{name}` (id `{run_id}`) |
| checkpoint | index {index}, data step {step} |
| tokens seen | {tokens} |
| checkpoint sha256 (its `state.json`) | `{ckpt_sha}` |
| model.safetensors sha256 in the run | `{model_sha}` |
| config sha256 (`glass.toml`) | `{config_sha}`{config_now} |
| data manifest sha256 | `{data_sha}` |
| validation loss | {val} |
| learning rate at this step | {lr} |
| optimizer steps applied | {opt_steps} (skipped data steps: {skipped}) |
| lineage | {lineage} |
| engine | `{engine}` |

## Architecture

LLaMA decoder: vocabulary {vocab}, width {d}, {layers} layers, {heads} query heads and
{kv} key/value heads of dimension {hd}, SwiGLU width {ffn}, RMSNorm (eps {eps}), RoPE
(theta {theta}) over every head dimension, up to {maxpos} positions, embeddings
{tied}. Weights: `{dtype}`.

{exactness}
{other}
## Files

| file | bytes | sha256 |
|---|---|---|
{files}
`glass-export.json` repeats these hashes (and this card's) in machine-readable form.

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("PATH")
model = AutoModelForCausalLM.from_pretrained("PATH")
```

The tokenizer adds no special tokens; Glass framed training documents with EOS
(and BOS when configured) exactly as its data manifest records.
"#,
        name = c.run_name,
        index = e.index,
        step = e.step,
        version = env!("CARGO_PKG_VERSION"),
        run_id = c.manifest.run_id,
        tokens = e.tokens,
        ckpt_sha = e.sha256,
        model_sha = c.state.model_sha256,
        config_sha = c.state.config_sha256,
        config_now = if c.config_sha256_now == c.state.config_sha256 {
            String::new()
        } else {
            format!(
                " at this checkpoint; the file has changed since (now `{}`) and the architecture above is read from the current file",
                c.config_sha256_now
            )
        },
        data_sha = or_none(&c.state.data_manifest_sha256),
        lr = c.state.lr,
        opt_steps = c.state.optimizer_step,
        skipped = c.state.skipped_steps.len(),
        engine = c.state.engine,
        vocab = m.vocab_size,
        d = m.d_model,
        layers = m.n_layers,
        heads = m.n_heads,
        kv = m.n_kv_heads,
        hd = m.head_dim(),
        ffn = m.ffn_hidden,
        eps = m.norm_eps,
        theta = m.rope_theta,
        maxpos = m.max_seq_len,
        tied = if m.tie_embeddings {
            "tied to the LM head"
        } else {
            "untied"
        },
        dtype = c.dtype,
        other = if other.is_empty() {
            String::new()
        } else {
            other
                .iter()
                .map(|n| format!("Not exported: {n}.\n"))
                .collect::<String>()
        },
    )
}
