#!/usr/bin/env python3
"""glass analyze memorization vs transformers' greedy `generate` (what Analysis360's
memorization script runs), on the same checkpoint, the same rows and the same threads.

    bench/memorization_reference.py RUN [--checkpoint K] [--chunk C] [--samples N]
        [--threads T] [--glass target/release/glass] [--rounds 2]

Exports checkpoint K with `glass export hf`, takes the rows of chunk C by Glass's sample
rule (rows floor(j*n/N)), and decodes 32 tokens after each row's first 32 with
  - transformers: float32, batch 32, greedy (`do_sample=False, num_beams=1`), KV cache,
    `min_new_tokens=32` so no row stops early (Glass never stops at EOS either),
    torch.set_num_threads(T), under torch.inference_mode();
  - glass: `glass --threads T analyze memorization --force` (its `seconds` field times
    decoding only, like the transformers timer).
Prints rows/s of each (best of --rounds), the speedup, and how many rows' continuations
agree token for token (float32 on both sides; rounding can flip near-ties).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM

P = C = 32
BATCH = 32


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--checkpoint", default="latest")
    ap.add_argument("--chunk", type=int, default=0)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=2)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--glass", default=os.path.join(root, "target/release/glass"))
    a = ap.parse_args()
    glass = [a.glass, "--threads", str(a.threads)]
    info = json.loads(subprocess.check_output(glass + ["info", a.run, "--json"]))
    k = info["checkpoints"][-1]["index"] if a.checkpoint == "latest" else int(a.checkpoint)

    # The rows, read as docs/data-format.md describes, by Glass's sample rule.
    d = os.path.join(a.run, "data", "chunks")
    h = json.load(open(os.path.join(d, f"chunk-{a.chunk:05d}.json")))
    dt = {"u16": "<u2", "u32": "<u4"}[h["dtype"]]
    tok = np.fromfile(os.path.join(d, h["tokens"]["file"]), dtype=dt).reshape(h["n_rows"], h["row_len"])
    n = h["n_rows"]
    rows = list(range(n)) if a.samples >= n else [j * n // a.samples for j in range(a.samples)]
    ids = torch.tensor(tok[rows, : P + C].astype(np.int64))

    # transformers
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as work:
        hf = os.path.join(work, "hf")
        subprocess.check_call(glass + ["export", "hf", a.run, hf, "--checkpoint", str(k)], stdout=subprocess.DEVNULL)
        model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
        hf_best, hf_out = None, None
        for _ in range(a.rounds):
            outs = []
            t0 = time.perf_counter()
            with torch.inference_mode():
                for b in range(0, len(rows), BATCH):
                    x = ids[b : b + BATCH, :P]
                    g = model.generate(
                        x,
                        attention_mask=torch.ones_like(x),
                        max_new_tokens=C,
                        min_new_tokens=C,
                        do_sample=False,
                        num_beams=1,
                        pad_token_id=model.config.eos_token_id or 0,
                    )[:, P:]
                    outs.append(g)
            dt_hf = time.perf_counter() - t0
            hf_best = dt_hf if hf_best is None else min(hf_best, dt_hf)
            hf_out = torch.cat(outs)

    # glass
    gl_best, gl = None, None
    for _ in range(a.rounds):
        r = json.loads(
            subprocess.check_output(
                glass
                + ["analyze", "memorization", a.run, "--checkpoints", str(k), "--chunks", str(a.chunk),
                   "--samples", str(a.samples), "--log-samples", "--force", "--json", "--quiet"]
            )
        )[0]
        gl_best = r["seconds"] if gl_best is None else min(gl_best, r["seconds"])
        gl = r
    gl_out = torch.tensor([s["generated"] for s in gl["samples"]])
    ref = ids[:, P:]
    agree = int((gl_out == hf_out).all(dim=1).sum())
    hf_tm = float((hf_out == ref).float().mean())
    print(
        json.dumps(
            {
                "checkpoint": k, "chunk": a.chunk, "rows": len(rows), "threads": a.threads,
                "batch": BATCH, "prompt_tokens": P, "continuation_tokens": C,
                "glass_seconds": gl_best, "hf_seconds": hf_best,
                "glass_rows_per_s": len(rows) / gl_best, "hf_rows_per_s": len(rows) / hf_best,
                "speedup": hf_best / gl_best,
                "rows_identical": agree,
                "glass_token_match": gl["token_match"], "hf_token_match": hf_tm,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
