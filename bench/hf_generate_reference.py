#!/usr/bin/env python3
"""The reference side of `glass bench model`: the same memorization-style work in
transformers, on the same prompts.

Reads the prompts `glass bench model --tokens-out FILE` wrote, loads the transformers
folder in the dtype asked for (`bfloat16`: the fastest transformers offers for bf16 weights
on a CPU without AMX; `float32`: the weights widened, which is the function Glass computes
on bf16 weights), and times, at `torch.set_num_threads(THREADS)`:
  - prefill: every prompt in one batched forward with the KV cache (`use_cache=True`);
  - decode: the greedy loop after it, one token per row per step, reusing the cache.
Prints tokens/s for both, and, when FILE holds Glass's continuations, how many rows are
identical token for token.

    THREADS=2 /root/venv/bin/python bench/hf_generate_reference.py HF_DIR FILE [--dtype float32|bfloat16]
"""

import argparse
import json
import os
import time

import torch
from transformers import AutoModelForCausalLM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("tokens")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    doc = json.load(open(a.tokens))
    prompts = torch.tensor(doc["prompts"], dtype=torch.long)
    new = len(doc["generated"][0]) if doc.get("generated") else 32
    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        a.folder, dtype=getattr(torch, a.dtype), attn_implementation="sdpa"
    ).eval()
    load_s = time.perf_counter() - t
    rows, plen = prompts.shape
    with torch.inference_mode():
        t = time.perf_counter()
        out = model(prompts, use_cache=True)
        prefill_s = time.perf_counter() - t
        print(json.dumps({"prefill_s": prefill_s, "prefill_tokens_per_s": rows * plen / prefill_s}), flush=True)
        past = out.past_key_values
        tok = out.logits[:, -1].argmax(-1)
        gen = [tok]
        t = time.perf_counter()
        for _ in range(new - 1):
            out = model(tok[:, None], past_key_values=past, use_cache=True)
            past = out.past_key_values
            tok = out.logits[:, -1].argmax(-1)
            gen.append(tok)
        decode_s = time.perf_counter() - t
    generated = torch.stack(gen, 1).tolist()
    res = {
        "dtype": a.dtype,
        "threads": torch.get_num_threads(),
        "load_s": load_s,
        "prefill_s": prefill_s,
        "prefill_tokens_per_s": rows * plen / prefill_s,
        "decode_s": decode_s,
        # The first new token comes from the prefill, as in `glass bench model`.
        "decode_tokens_per_s": rows * (new - 1) / decode_s,
    }
    if doc.get("generated"):
        same = sum(1 for g, r in zip(generated, doc["generated"]) if g == r)
        res["rows_identical_to_glass"] = f"{same}/{rows}"
    print(json.dumps(res))


if __name__ == "__main__":
    main()
