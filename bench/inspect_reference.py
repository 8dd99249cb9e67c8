#!/usr/bin/env python3
"""The reference side of `glass inspect`'s benchmark: the same work in transformers.

Loads a transformers folder (float32, eager attention, `torch.set_num_threads(THREADS)`),
tokenizes the text file, runs one forward pass with `output_hidden_states=True` and
`output_attentions=True`, then computes the logit lens of every hidden state (the final
norm and `lm_head` applied to each; softmax; top-k tokens and the rank and probability of
the actual next token) and prints it as JSON, as `glass inspect --json` does.

    /root/venv/bin/python bench/inspect_reference.py HF_DIR TEXT_FILE [--top-k 5]
Timed as a whole process against `glass --threads 2 inspect RUN --text-file TEXT_FILE --json`
(see docs/analysis.md, "Speed of inspect").
"""

import argparse
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("text_file")
    ap.add_argument("--top-k", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    tok = AutoTokenizer.from_pretrained(a.folder)
    model = AutoModelForCausalLM.from_pretrained(
        a.folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    ids = tok(open(a.text_file).read(), return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        out = model(ids, output_hidden_states=True, output_attentions=True)
        hs = list(out.hidden_states)
        # transformers' last hidden state is already normed: the lens of it is the logits.
        lens = []
        for i, h in enumerate(hs):
            logits = out.logits if i == len(hs) - 1 else model.lm_head(model.model.norm(h))
            p = logits[0].double().softmax(-1)
            top = p.topk(a.top_k, dim=-1)
            nxt = ids[0, 1:]
            pn = p[:-1].gather(1, nxt[:, None])[:, 0]
            rank = (p[:-1] > pn[:, None]).sum(-1) + 1
            lens.append(
                {
                    "top": top.indices.tolist(),
                    "top_prob": top.values.tolist(),
                    "next_rank": rank.tolist(),
                    "next_prob": pn.tolist(),
                }
            )
    json.dump({"tokens": ids[0].tolist(), "layers": len(hs) - 1, "lens": lens,
               "attentions": len(out.attentions)}, sys.stdout)


if __name__ == "__main__":
    main()
