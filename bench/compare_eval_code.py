#!/usr/bin/env python3
"""Compares `glass eval --suite code --json` (which stores every generation and its
program's result) with lm_eval_code_reference.py: per-document greedy continuations
(identical text), per-document pass/fail and each task's pass@1.

Usage: compare_eval_code.py GLASS_JSON HARNESS_JSON GLASS_WALL_SECONDS
"""
import json
import sys


def main():
    glass = json.load(open(sys.argv[1]))
    ref = json.load(open(sys.argv[2]))
    wall = float(sys.argv[3])
    bad = []
    for g in glass:
        name = g["task"]
        key = {"humaneval": "pass@1,create_test", "mbpp": "pass_at_1,none"}[name]
        hv = ref["results"][name][key]
        gv = g["metrics"][0]["value"]
        same_text = sum(gs["completion"] == hs["completion"] for gs, hs in zip(g["samples"], ref["samples"][name], strict=True))
        same_pass = sum(gs["passed"] == hs["passed"] for gs, hs in zip(g["samples"], ref["samples"][name], strict=True))
        n = len(g["samples"])
        print(f"  {name:<10} pass@1 glass {gv:.4f} harness {float(hv):.4f}; identical continuations {same_text}/{n}; same pass/fail {same_pass}/{n}")
        for i, (gs, hs) in enumerate(zip(g["samples"], ref["samples"][name])):
            if gs["completion"] != hs["completion"]:
                bad.append(f"{name} doc {i}: glass {gs['completion'][:200]!r}\n    harness {hs['completion'][:200]!r}")
        if abs(gv - float(hv)) > 1e-12:
            bad.append(f"{name}: pass@1 glass {gv} harness {hv}")
    hs = ref["seconds"]
    print(f"harness: {hs:.2f}s (generation + execution; model load excluded), {ref['threads']} threads")
    print(f"glass:   {wall:.2f}s whole command incl. checkpoint load and hash check")
    print(f"speed ratio: {hs / wall:.2f}x")
    for b in bad:
        print("MISMATCH", b)
    print("PARITY OK" if not bad else "PARITY FAILED")
    sys.exit(0 if not bad else 1)


if __name__ == "__main__":
    main()
