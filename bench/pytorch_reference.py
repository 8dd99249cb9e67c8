#!/usr/bin/env python3
"""PyTorch reference numbers for `glass bench train` (CPU, float32).

Builds a transformers LlamaForCausalLM from a config (random init, nothing downloaded) for the
same presets as the Glass engine and times full training steps on seeded random token batches:
forward + mean cross-entropy over all B*T positions + backward + clip_grad_norm_(1.0) +
AdamW(lr 3e-4, betas (0.9, 0.95), weight_decay 0.1) step + zero_grad.

PyTorch's fastest CPU configurations are options: `--compile default|max-autotune` wraps the
model in `torch.compile` (inductor; the compile happens in the warm-up steps and is reported
as `compile_s`, not timed), `--attn sdpa|eager` picks the attention, and AdamW runs fused
(`fused=True`, one kernel over all parameters; torch >= 2.4 on CPU) unless `--no-fused`.
`glass bench train --python PY` runs every configuration beside Glass, alternating.

Prints one human-readable line, then one JSON line:
  {"preset", "threads", "tokens_per_s", "step_ms", "median_step_ms", "peak_rss_mb", "torch",
   "compile", "attn", "fused_adamw", "compile_s", ...}

  python bench/pytorch_reference.py --preset tiny --steps 10 --warmup 2 --threads 2
  python bench/pytorch_reference.py --preset small --compile max-autotune --warmup 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

# Same shapes as glass-engine's ModelConfig::preset (tiny, small) plus the benchmark batch.
PRESETS = {
    "tiny": dict(vocab=4096, d=256, layers=4, heads=4, kv_heads=4, ffn=688, seq=256, batch=8),
    "small": dict(vocab=32000, d=512, layers=8, heads=8, kv_heads=8, ffn=1376, seq=512, batch=4),
}


def build(p: dict, attn: str) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=p["vocab"],
        hidden_size=p["d"],
        intermediate_size=p["ffn"],
        num_hidden_layers=p["layers"],
        num_attention_heads=p["heads"],
        num_key_value_heads=p["kv_heads"],
        max_position_embeddings=p["seq"],
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        pad_token_id=None,
        use_cache=False,
    )
    model = LlamaForCausalLM._from_config(cfg, attn_implementation=attn, dtype=torch.float32)
    return model.float().train()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    # Default sdpa: on CPU (torch 2.15, 2 threads, tiny) sdpa and eager were within run-to-run noise
    # (~0.6 s/step each on a quiet machine); sdpa uses ~90 MB less RSS and is transformers default.
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa", help="attention implementation")
    ap.add_argument("--compile", choices=["none", "default", "max-autotune"], default="none",
                    help="torch.compile the model (inductor) in this mode")
    ap.add_argument("--no-fused", action="store_true", help="AdamW without fused=True (foreach)")
    ap.add_argument("--batch", type=int, help="override the preset's batch")
    ap.add_argument("--seq", type=int, help="override the preset's sequence length")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    p = dict(PRESETS[args.preset])
    if args.batch:
        p["batch"] = args.batch
    if args.seq:
        p["seq"] = args.seq
    model = build(p, args.attn)
    n_params = sum(x.numel() for x in model.parameters())
    fused = not args.no_fused
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=fused)
    forward = model
    if args.compile != "none":
        forward = torch.compile(model, mode=args.compile)

    g = torch.Generator().manual_seed(args.seed)
    B, T, V = p["batch"], p["seq"], p["vocab"]
    input_ids = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)

    times, losses, warm = [], [], []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        logits = forward(input_ids=input_ids, use_cache=False).logits
        loss = F.cross_entropy(logits.view(-1, V), targets.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        losses.append(loss.item())
        if step >= args.warmup:
            times.append(dt)
        else:
            warm.append(dt)

    step_s = statistics.mean(times)
    tokens_per_s = B * T / step_s
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(
        f"pytorch {args.preset}: {n_params / 1e6:.2f}M params, batch {B}x{T}, attn {args.attn}, "
        f"compile {args.compile}, {'fused' if fused else 'foreach'} AdamW, "
        f"{args.threads} threads: {step_s * 1e3:.1f} ms/step (median {statistics.median(times) * 1e3:.1f}), "
        f"{tokens_per_s:.0f} tokens/s, peak RSS {peak_rss_mb:.0f} MB, loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    )
    print(
        json.dumps(
            {
                "preset": args.preset,
                "threads": args.threads,
                "tokens_per_s": round(tokens_per_s, 1),
                "step_ms": round(step_s * 1e3, 2),
                "median_step_ms": round(statistics.median(times) * 1e3, 2),
                "compile": args.compile,
                "fused_adamw": fused,
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "compile_s": round(sum(warm), 2) if args.compile != "none" else 0.0,
                "batch": B,
                "seq": T,
                "peak_rss_mb": round(peak_rss_mb, 1),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "attn": args.attn,
                "steps": args.steps,
                "warmup": args.warmup,
                "params": n_params,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
