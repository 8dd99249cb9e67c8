#!/usr/bin/env python3
"""Checks a `glass export hf` folder with stock transformers.

Exports checkpoint K of a Glass run, loads the folder with AutoModelForCausalLM and
AutoTokenizer, and for each prompt compares
  * token ids: AutoTokenizer (no special tokens added; special-token strings in the text
    split like plain text, as Glass encodes documents) vs `glass generate --logits-out`;
  * logits: transformers (float32, and float64 as a reference) vs Glass on those ids.
Prints max relative error (max |a - b| / max |b|) per prompt and overall; exits 1 if any
tokenization differs or the error exceeds --tol.

Usage:
  python tools/hf/check_export.py --run RUN [--checkpoint K] [--glass target/release/glass]
         [--dtype f32] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "When shall we three meet again",
    "Of Man's first disobedience, and the fruit",
    "If music be the food of love, play on; give me excess of it, that, surfeiting,",
    "fn main() {\n    println!(\"hello\");\n}",
    "Caf\u00e9 \u2014 na\u00efve r\u00e9sum\u00e9, 1234 <|endoftext|> tail",
]


def run(cmd: list[str]) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}")
    return p.stdout


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--checkpoint", type=int)
    ap.add_argument("--glass", default="target/release/glass")
    ap.add_argument("--dtype", default="f32")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--keep", type=Path, help="export here instead of a temporary folder")
    args = ap.parse_args()
    torch.set_num_threads(2)

    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "export"
        ck = [] if args.checkpoint is None else ["--checkpoint", str(args.checkpoint)]
        print(run([args.glass, "export", "hf", str(args.run), str(out), "--dtype", args.dtype, *ck]).strip())
        tok = AutoTokenizer.from_pretrained(out)
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        m64 = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float64, attn_implementation="eager")
        m64.eval()
        worst, worst64, tok_ok = 0.0, 0.0, True
        for i, prompt in enumerate(PROMPTS):
            lf = Path(tmp) / f"logits{i}.json"
            run([args.glass, "generate", str(args.run), *ck, "--prompt", prompt, "--max-tokens", "0", "--logits-out", str(lf)])
            g = json.loads(lf.read_text())
            ids = tok(prompt, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            same = ids == g["ids"]
            tok_ok &= same
            gl = torch.tensor(g["logits"], dtype=torch.float32)
            x = torch.tensor([g["ids"]])
            with torch.no_grad():
                hf = model(input_ids=x).logits[0]
                hf64 = m64(input_ids=x).logits[0]
            e, e64 = rel(gl, hf), rel(gl, hf64)
            worst, worst64 = max(worst, e), max(worst64, e64)
            print(f"prompt {i}: {len(ids)} tokens, tokenization {'identical' if same else 'DIFFERS'}, "
                  f"max rel err vs transformers f32 {e:.2e}, vs f64 {e64:.2e}")
        print(f"overall: tokenization {'identical' if tok_ok else 'DIFFERS'}; max relative logit error "
              f"{worst:.2e} (float32 transformers), {worst64:.2e} (float64 transformers); tolerance {args.tol:g}")
        return 0 if tok_ok and worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
