#!/usr/bin/env python3
"""Checks a `glass release` directory with stock transformers, using nothing but the
release itself:

  * every file's sha256 matches manifest.json;
  * each checked checkpoint folder loads with AutoModelForCausalLM / AutoTokenizer;
  * the model of checkpoint K (the weights after steps [0, S)) run on the batch of step S,
    rebuilt from data/train_NNN.jsonl as the card describes, gives the training loss that
    metrics/steps.csv records for step S (mean next-token cross-entropy over the batch).

Exits 1 on any mismatch or a relative loss error above --tol.

Usage:
  python tools/release/check_release.py OUT [--max-checkpoints 3] [--tol 1e-4]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("release", type=Path)
    ap.add_argument("--max-checkpoints", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    torch.set_num_threads(2)
    out = args.release
    m = json.loads((out / "manifest.json").read_text())
    bad = [f["path"] for f in m["files"] if sha256(out / f["path"]) != f["sha256"]]
    if bad:
        print("changed files:", bad)
        return 1
    print(f"{len(m['files'])} files match manifest.json")

    losses = {}
    with open(out / "metrics" / "steps.csv") as f:
        for r in csv.DictReader(f):
            losses[int(r["step"])] = float(r["loss"])
    B = m["rows_per_step"]
    chunks = {c["chunk"]: c for c in m["chunks"]}
    spc = m["chunks"][0]["n_steps"]
    worst = 0.0
    checked = 0
    for c in m["checkpoints"]:
        S = c["step"]
        if S not in losses:
            continue
        if checked == args.max_checkpoints:
            break
        folder = out / c["dir"]
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(folder)
        model.eval()
        ck = S // spc
        first = (S - chunks[ck]["first_step"]) * B
        with open(out / chunks[ck]["file"]) as f:
            rows = [json.loads(l)["token_ids"] for l in itertools.islice(f, first, first + B)]
        ids = torch.tensor(rows)
        with torch.no_grad():
            logits = model(ids[:, :-1]).logits.double()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
        ).item()
        err = abs(loss - losses[S]) / abs(losses[S])
        worst = max(worst, err)
        checked += 1
        text = tok.decode(rows[0][:24])
        print(
            f"{c['dir']}: loaded ({sum(p.numel() for p in model.parameters())} params); "
            f"loss on the batch of step {S} = {loss:.6f}, steps.csv {losses[S]:.6f}, rel err {err:.2e}; "
            f"row 0 starts {text!r}"
        )
    if checked == 0:
        print("no checkpoint has a following step in steps.csv")
        return 1
    print(f"max relative loss error {worst:.2e} over {checked} checkpoint(s)")
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
