#!/usr/bin/env python3
"""Writes small hand-made datasets for the whole leaderboard suite (ARC-Challenge,
HellaSwag, all 57 MMLU subjects, TruthfulQA) in each benchmark's schema as JSON Lines
under DIR/<dataset_path>/<dataset_name>/<split>.jsonl, the layout `glass eval --data-dir`
and bench/lm_eval_suite_reference.py read. Same generators as the test fixtures.

Usage: make_suite_data.py DIR [MMLU_TEST_ROWS]
"""
import glob
import importlib.util
import json
import os
import sys

import lm_eval.tasks

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
spec = importlib.util.spec_from_file_location("fx", os.path.join(ROOT, "tools/fixtures/make_benchmark_fixtures.py"))
fx = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fx)


def main():
    out = sys.argv[1]
    n_test = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    ds = {k: v for k, v in fx.DATASETS.items() if k[0] != "cais/mmlu"}
    mmlu = os.path.join(os.path.dirname(lm_eval.tasks.__file__), "mmlu", "default")
    for y in sorted(glob.glob(os.path.join(mmlu, "mmlu_*.yaml"))):
        s = os.path.basename(y)[len("mmlu_"):-len(".yaml")]
        ds[("cais/mmlu", s)] = {"dev": fx.mmlu_rows(s, "dev", 5), "test": fx.mmlu_rows(s, "test", n_test)}
    for (path, name), splits in ds.items():
        d = os.path.join(out, path, name) if name else os.path.join(out, path)
        os.makedirs(d, exist_ok=True)
        for split, rows in splits.items():
            with open(os.path.join(d, f"{split}.jsonl"), "w") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(ds)} datasets under {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
