#!/usr/bin/env python3
"""Compares `glass eval --json --log-samples` output with lm_eval_reference.py output:
per-document log-likelihoods (max |difference|), per-document acc / acc_norm (must be
identical), task metrics, and documents per second.

Usage: compare_eval.py GLASS_JSON HARNESS_JSON GLASS_WALL_SECONDS
"""
import json
import sys


def main():
    glass = json.load(open(sys.argv[1]))[0]
    ref = json.load(open(sys.argv[2]))
    wall = float(sys.argv[3])
    gs, rs = glass["samples"], ref["docs"]
    assert len(gs) == len(rs), (len(gs), len(rs))
    worst, worst_rel, mismatched = 0.0, 0.0, 0
    for g, r in zip(gs, rs):
        assert g["doc"] == r["doc"]
        if "loglikelihoods" in r:
            for a, b in zip(g["loglikelihoods"], r["loglikelihoods"], strict=True):
                worst = max(worst, abs(a - b))
            acc = float(g["pred"] == g.get("gold"))
            acc_norm = float(g["pred_norm"] == g.get("gold"))
            mismatched += (acc != r["acc"]) + (acc_norm != r["acc_norm"])
        else:
            d = abs(g["loglikelihood"] - r["loglikelihood"])
            worst = max(worst, d)
            worst_rel = max(worst_rel, d / max(1.0, abs(r["loglikelihood"])))
    n = len(gs)
    print(f"documents: {n}")
    rolling = "loglikelihoods" not in rs[0]
    if rolling:
        # The harness sums each window's token log-probabilities in float32, so its
        # totals over hundreds of tokens carry ~1e-4 of rounding; Glass sums in f64.
        print(f"max |log-likelihood difference|: {worst:.3e} absolute, {worst_rel:.3e} relative "
              "(tolerance 1e-6 relative: float32 sums in the harness)")
    else:
        print(f"max |log-likelihood difference|: {worst:.3e} (tolerance 1e-4)")
    print(f"per-document acc/acc_norm mismatches: {mismatched}")
    for m in glass["metrics"]:
        hv = ref["results"].get(m["metric"] + ",none")
        print(f"  {m['metric']:<16} glass {m['value']:.6f}   harness {hv}")
    hs = ref["seconds"]
    print(f"harness: {hs:.2f}s = {n / hs:.2f} docs/s (requests + scoring; model load excluded)")
    print(f"glass:   {glass['seconds']:.2f}s scoring = {n / glass['seconds']:.2f} docs/s; "
          f"{wall:.2f}s whole command incl. checkpoint load and hash check = {n / wall:.2f} docs/s")
    print(f"speed ratio (glass whole command vs harness): {hs / wall:.2f}x")
    print(f"speed ratio (scoring only):                    {hs / glass['seconds']:.2f}x")
    ok = (worst_rel <= 1e-6 if rolling else worst <= 1e-4) and mismatched == 0
    print("PARITY OK" if ok else "PARITY FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
