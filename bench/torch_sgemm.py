#!/usr/bin/env python3
"""PyTorch sgemm on the shapes `glass bench gemm --json` timed, same thread count.

Reads the JSON lines of `glass bench gemm --json` on stdin, times torch.matmul (MKL or
oneDNN sgemm) on each shape with the operands transposed as Glass's were (a strided
view, as a user would write x @ w.T), median of --reps runs after one warm-up, and prints
one table: glass, gemm crate and torch GFLOP/s and the ratios.

  glass bench gemm --json | python bench/torch_sgemm.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def torch_gflops(m: int, n: int, k: int, ta: bool, tb: bool, reps: int) -> float:
    g = torch.Generator().manual_seed(0)
    a = torch.rand((k, m) if ta else (m, k), generator=g) - 0.5
    b = torch.rand((n, k) if tb else (k, n), generator=g) - 0.5
    a = a.T if ta else a
    b = b.T if tb else b
    out = torch.empty(m, n)
    torch.matmul(a, b, out=out)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    return 2.0 * m * n * k / statistics.median(times) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [json.loads(line) for line in sys.stdin if line.strip().startswith("{")]
    print(f"sgemm GFLOP/s, {args.threads} threads, median of {args.reps} (torch {torch.__version__})")
    print(f"{'shape':<30} {'m×n×k':>18} {'kernel':>8} {'glass':>7} {'gemm':>7} {'torch':>7} {'g/gemm':>7} {'g/torch':>7}")
    ratios_gemm, ratios_torch = [], []
    for r in rows:
        s = r["shape"]
        t = torch_gflops(s["m"], s["n"], s["k"], s["ta"], s["tb"], args.reps)
        gc = r.get("gemm_crate_gflops")
        g = r["glass_gflops"]
        ratios_torch.append(g / t)
        if gc:
            ratios_gemm.append(g / gc)
        print(
            f"{s['label']:<30} {s['m']:>5}×{s['n']:>5}×{s['k']:>5} {r['kernel']:>8} {g:7.1f} "
            f"{(gc or float('nan')):7.1f} {t:7.1f} {(g / gc if gc else float('nan')):7.2f} {g / t:7.2f}"
        )
    if ratios_gemm:
        print(f"median glass / gemm crate: {statistics.median(ratios_gemm):.2f}×")
    print(f"median glass / torch:      {statistics.median(ratios_torch):.2f}×")


if __name__ == "__main__":
    main()
