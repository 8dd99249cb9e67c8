#!/usr/bin/env python3
"""Compares `glass eval --suite leaderboard --json --log-samples` with
lm_eval_suite_reference.py: per-document log-likelihoods, per-document acc / acc_norm,
every task's metrics (TruthfulQA MC2 to 1e-5: it is a smooth function of the
log-likelihoods), and the MMLU group and category scores. A log-likelihood passes within
1e-4 absolute or 5e-5 relative: two float32 forwards through 30 layers with different
summation orders (GEMM blocking, attention) and the harness's float32 sum of token
log-probabilities (Glass: f64) differ by up to ~1e-5 relative on a 135M model — a few
1e-4 on a 130-token HellaSwag ending; MC2, a smooth function of them, then agrees to
1e-5.

Usage: compare_eval_suite.py GLASS_JSON HARNESS_JSON GLASS_WALL_SECONDS
"""
import json
import sys


def main():
    glass = json.load(open(sys.argv[1]))
    ref = json.load(open(sys.argv[2]))
    wall = float(sys.argv[3])
    worst, worst_rel, mismatched, bad = 0.0, 0.0, 0, []
    docs = 0
    for g in glass:
        name = g.get("task") or g.get("group")
        r = ref["results"].get(name)
        if r is None:
            bad.append(f"{name}: no harness result")
            continue
        for m in g["metrics"]:
            hv = r.get(m["metric"] + ",none")
            tol = 1e-5 if name.startswith("truthfulqa") else 1e-9
            ok = hv is not None and abs(m["value"] - float(hv)) <= tol
            if not ok:
                bad.append(f"{name} {m['metric']}: glass {m['value']} harness {hv}")
        if "task" in g and g.get("samples"):
            rs = ref["samples"][name]
            assert len(rs) == len(g["samples"]), name
            docs += len(rs)
            for gs, hs in zip(g["samples"], rs):
                for a, b in zip(gs["loglikelihoods"], hs["loglikelihoods"], strict=True):
                    worst = max(worst, abs(a - b))
                    if abs(a - b) > 1e-4:
                        worst_rel = max(worst_rel, abs(a - b) / abs(b))
                if "score" not in gs:
                    mismatched += (float(gs["pred"] == gs.get("gold")) != hs["acc"])
                    if hs.get("acc_norm") is not None:
                        mismatched += (float(gs["pred_norm"] == gs.get("gold")) != hs["acc_norm"])
    for name in ["arc_challenge", "hellaswag", "mmlu", "mmlu_stem", "mmlu_other", "mmlu_social_sciences",
                 "mmlu_humanities", "truthfulqa_mc2"]:
        g = next((x for x in glass if x.get("task") == name or x.get("group") == name), None)
        r = ref["results"].get(name, {})
        gm = {m["metric"]: m["value"] for m in g["metrics"]} if g else {}
        print(f"  {name:<22} glass {json.dumps(gm)}   harness acc {r.get('acc,none')} acc_norm {r.get('acc_norm,none')}")
    print(f"documents: {docs}")
    print(f"max |log-likelihood difference|: {worst:.3e}; largest relative among those over 1e-4: {worst_rel:.3e} (tolerance 1e-4 absolute or 5e-5 relative)")
    print(f"per-document acc/acc_norm mismatches: {mismatched}")
    hs = ref["seconds"]
    print(f"harness: {hs:.2f}s (requests + scoring; model load excluded), {ref['threads']} threads")
    print(f"glass:   {wall:.2f}s whole command incl. checkpoint load and hash check")
    print(f"speed ratio: {hs / wall:.2f}x")
    for b in bad:
        print("MISMATCH", b)
    ok = worst_rel <= 5e-5 and mismatched == 0 and not bad
    print("PARITY OK" if ok else "PARITY FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
