#!/usr/bin/env python3
"""A LLaMA-shaped transformers folder of random bf16 weights, for `glass bench model`.

Writes OUT/config.json and OUT/model.safetensors (one file; tensors named as
transformers names them) with the shapes of LLaMA-7B / Amber (--shape 7b: 6.74e9
parameters, 13.5 GB) or smaller ones, streamed tensor by tensor with the Python standard
library only (no torch, no numpy), so the machine needs the disk, not the memory.

Values are N(0, 0.02^2)-like (a sum of uniforms, rounded to bf16), norms 1: a model
that computes finite logits, good for measuring bytes, memory and speed, not for text.

    python3 bench/make_llama_bf16.py --shape 7b --out /data/llama7b-bf16
    glass --threads 2 bench model /data/llama7b-bf16 --thread-counts 1,2

The same command on real Amber checkpoints: `glass import llm360 ... --weights-only RUN`
(docs/llm360.md), then `glass bench model RUN --checkpoint K`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
from pathlib import Path

SHAPES = {
    # vocab, d_model, layers, heads, ffn, context
    "7b": (32000, 4096, 32, 32, 11008, 2048),
    "1b": (32000, 2048, 22, 16, 5632, 2048),
    "tiny": (4096, 256, 4, 4, 688, 512),
}


def tensors(vocab: int, d: int, layers: int, ffn: int):
    yield "model.embed_tokens.weight", [vocab, d], False
    for i in range(layers):
        p = f"model.layers.{i}"
        yield f"{p}.input_layernorm.weight", [d], True
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            yield f"{p}.self_attn.{n}.weight", [d, d], False
        yield f"{p}.post_attention_layernorm.weight", [d], True
        yield f"{p}.mlp.gate_proj.weight", [ffn, d], False
        yield f"{p}.mlp.up_proj.weight", [ffn, d], False
        yield f"{p}.mlp.down_proj.weight", [d, ffn], False
    yield "model.norm.weight", [d], True
    yield "lm_head.weight", [vocab, d], False


def bf16_block(rng: random.Random, n: int) -> bytes:
    """n bf16 values: a pool of 65536 random ones, repeated with a random offset (fast)."""
    pool = bytearray()
    for _ in range(65536):
        x = (rng.random() + rng.random() + rng.random() - 1.5) * 0.04
        b = struct.unpack("<I", struct.pack("<f", x))[0]
        pool += struct.pack("<H", (b + 0x7FFF + ((b >> 16) & 1)) >> 16)
    pool = bytes(pool) * 2
    out = bytearray()
    while len(out) < 2 * n:
        off = 2 * rng.randrange(65536)
        out += pool[off : off + min(2 * 65536, 2 * n - len(out))]
    return bytes(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    vocab, d, layers, heads, ffn, ctx = SHAPES[a.shape]
    a.out.mkdir(parents=True, exist_ok=False)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": d,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "hidden_act": "silu",
        "max_position_embeddings": ctx,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
    }
    (a.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    items = list(tensors(vocab, d, layers, ffn))
    header: dict = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, shape, _ in sorted(items):
        n = 2
        for s in shape:
            n *= s
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    rng = random.Random(a.seed)
    one = struct.pack("<H", 0x3F80)  # bf16 1.0
    with open(a.out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, shape, is_norm in sorted(items):
            n = 1
            for s in shape:
                n *= s
            f.write(one * n if is_norm else bf16_block(rng, n))
            print(f"{name} {shape}", flush=True)
        f.flush()
        os.fsync(f.fileno())
    print(f"wrote {a.out}: {off / 1e9:.2f} GB of bf16 weights")


if __name__ == "__main__":
    main()
