#!/usr/bin/env python3
"""Grows the hand-made leaderboard datasets of bench/make_suite_data.py to the real
benchmarks' evaluation sizes (ARC-Challenge test 1172, HellaSwag validation 10042,
TruthfulQA validation 817 items; MMLU comes from make_suite_data.py's MMLU_TEST_ROWS, 246
a subject ≈ the real 14042), each copy's text made distinct by a numbered prefix, so that
`glass data contamination --suite leaderboard` can be timed at the real suite's size.

Usage: python bench/make_suite_data.py DIR 246 && python bench/suite_full_size.py DIR
"""
import json
import os
import sys

SIZES = {
    ("allenai/ai2_arc/ARC-Challenge", "test"): (1172, ["question"]),
    ("Rowan/hellaswag", "validation"): (10042, ["ctx_a", "ctx"]),
    ("truthfulqa/truthful_qa/multiple_choice", "validation"): (817, ["question"]),
}
WORDS = "river stone market winter garden letter engine silver valley harbor candle meadow".split()


def main():
    root = sys.argv[1]
    for (path, split), (n, fields) in SIZES.items():
        f = os.path.join(root, path, f"{split}.jsonl")
        rows = [json.loads(line) for line in open(f, encoding="utf-8")]
        out = []
        for i in range(n):
            r = dict(rows[i % len(rows)])
            tag = " ".join(WORDS[(i >> (4 * k)) % len(WORDS)] for k in range(4)) + f" {i}: "
            for k in fields:
                r[k] = tag + r[k]
            if "ind" in r:
                r["ind"] = i
            out.append(r)
        with open(f, "w", encoding="utf-8") as fh:
            for r in out:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"{f}: {n} rows", file=sys.stderr)


if __name__ == "__main__":
    main()
