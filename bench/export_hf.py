#!/usr/bin/env python3
"""Writes a Hugging Face LlamaForCausalLM folder (config.json, model.safetensors,
tokenizer) from one checkpoint of a Glass run, so lm-evaluation-harness's HF backend can
score the very weights `glass eval` scores. (Benchmark helper; `glass export hf` is the
product path once it exists.)

Usage: export_hf.py RUN CHECKPOINT_INDEX OUT_DIR
"""
import json
import os
import sys
import tomllib

import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# glass_engine::ModelConfig::preset (crates/glass-engine/src/config.rs): vocab, d, layers,
# heads, ffn, max_seq; rms norm eps 1e-5, rope theta 1e4, untied, no muP.
PRESETS = {
    "tiny": (4096, 256, 4, 4, 688, 256),
    "small": (32000, 512, 8, 8, 1376, 512),
}


def main():
    run, k, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    cfg = tomllib.load(open(os.path.join(run, "glass.toml"), "rb"))["model"]
    vocab, d, layers, heads, ffn, seq = PRESETS[cfg.get("preset", "tiny")]
    m = dict(vocab_size=vocab, d_model=d, n_layers=layers, n_heads=heads, n_kv_heads=heads,
             ffn_hidden=ffn, max_seq_len=seq, norm="rmsnorm", norm_eps=1e-5, rope_theta=1e4,
             rotary_fraction=1.0, tie_embeddings=False)
    if "n_heads" in cfg and "n_kv_heads" not in cfg:
        m["n_kv_heads"] = cfg["n_heads"]
    m.update({key: v for key, v in cfg.items() if key in m})
    assert m["norm"] in ("rmsnorm", "rms"), "LayerNorm models are not expressible as LlamaForCausalLM"
    assert m["rotary_fraction"] == 1.0 and "mup" not in cfg, "partial rotary / muP not expressible"
    manifest = json.load(open(os.path.join(run, "manifest.json")))
    entry = next(c for c in manifest["checkpoints"] if c["index"] == k)
    model_file = next(f["path"] for f in entry["files"] if f["path"].endswith("model.safetensors"))
    hc = LlamaConfig(
        vocab_size=m["vocab_size"], hidden_size=m["d_model"], intermediate_size=m["ffn_hidden"],
        num_hidden_layers=m["n_layers"], num_attention_heads=m["n_heads"],
        num_key_value_heads=m["n_kv_heads"], max_position_embeddings=m["max_seq_len"],
        rms_norm_eps=m["norm_eps"], rope_theta=m["rope_theta"],
        tie_word_embeddings=m["tie_embeddings"], attention_bias=False, mlp_bias=False,
        hidden_act="silu", bos_token_id=None, eos_token_id=0, pad_token_id=None,
    )
    model = LlamaForCausalLM(hc).to(torch.float32)
    sd = load_file(os.path.join(run, model_file))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all("lm_head" in x for x in missing), (missing, unexpected)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(run, "data", "tokenizer.json"),
                                  eos_token="<|endoftext|>")
    tok.save_pretrained(out)
    print(f"wrote {out} from {run} checkpoint {k}", file=sys.stderr)


if __name__ == "__main__":
    main()
