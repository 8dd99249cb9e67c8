#!/usr/bin/env python3
"""Reference throughput for `glass bench data`: the HF `tokenizers` Python package.

Encodes the same corpus (one document per file, files in sorted path order) with the same
tokenizer.json via `Tokenizer.encode_batch` (all cores), and prints JSON: tokens, best
seconds per pass, tokens/s, bytes/s and the sha256 of all ids as little-endian u32, which
Glass compares with its own to prove both produced the same tokens.

Usage: python bench/hf_tokenizers_reference.py --tokenizer T.json --corpus DIR [--iters N]
(`glass bench data --python PY` writes DIR and T.json and runs this script.)
"""

import argparse
import hashlib
import json
import os
import struct
import time

from tokenizers import Tokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()

    names = []
    for root, _, files in os.walk(args.corpus):
        for f in files:
            if f.endswith(".txt"):
                names.append(os.path.relpath(os.path.join(root, f), args.corpus).replace(os.sep, "/"))
    names.sort()
    docs = []
    for n in names:
        with open(os.path.join(args.corpus, n), encoding="utf-8", newline="") as fh:
            docs.append(fh.read())
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)

    tok = Tokenizer.from_file(args.tokenizer)
    tok.encode_special_tokens = True  # as Glass does: special strings in text stay text
    tok.encode_batch(docs, add_special_tokens=False)  # warm-up

    best = float("inf")
    encs = None
    for _ in range(max(1, args.iters)):
        t0 = time.perf_counter()
        encs = tok.encode_batch(docs, add_special_tokens=False)
        best = min(best, time.perf_counter() - t0)

    h = hashlib.sha256()
    n_tokens = 0
    for e in encs:
        ids = e.ids
        n_tokens += len(ids)
        h.update(struct.pack(f"<{len(ids)}I", *ids))
    print(json.dumps({
        "tokens": n_tokens,
        "seconds": best,
        "tokens_per_s": n_tokens / best,
        "bytes_per_s": n_bytes / best,
        "ids_sha256": h.hexdigest(),
    }))


if __name__ == "__main__":
    main()
