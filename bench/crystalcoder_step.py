#!/usr/bin/env python3
"""The yardstick for `glass data show` on CrystalCoder's HDF5 data: h5py reading one step's
rows from modelzoo-layout files (int32 [n, 3, 2048], chunks (1, 3, 2048), gzip) in the
order docs/suites.md gives, printing the input ids as JSON.

    /root/venv/bin/python bench/crystalcoder_step.py write DIR      # 2 files x 3000 rows
    /root/venv/bin/python bench/crystalcoder_step.py read DIR STEP B # rows of step STEP
    glass import crystalcoder --data DIR --rows-per-step B RUN
    farm-bench --vs "/root/venv/bin/python bench/crystalcoder_step.py read DIR 1 2160" \\
        -- glass data show RUN --step 1 --json
"""

import json
import os
import sys

import h5py
import numpy as np

SEQ = 2048


def write(d):
    os.makedirs(os.path.join(d, "stage1"), exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        n = 3000
        ids = rng.integers(0, 32032, size=(n, SEQ + 1), dtype=np.int64)
        data = np.zeros((n, 3, SEQ), dtype=np.int32)
        data[:, 0] = ids[:, :SEQ]
        data[:, 1] = 1
        data[:, 2] = ids[:, 1:]
        with h5py.File(os.path.join(d, "stage1", f"data-{i:05d}.h5"), "w") as f:
            f.attrs["n_examples"] = n
            f.create_dataset("data", data=data, dtype="i4", chunks=(1, 3, SEQ), compression="gzip")


def read(d, step, b):
    stage = os.path.join(d, "stage1")
    files = sorted(os.listdir(stage))
    g0, out = step * b, []
    for name in files:
        with h5py.File(os.path.join(stage, name), "r") as f:
            n = f["data"].shape[0]
            if g0 >= n:
                g0 -= n
                continue
            hi = min(g0 + b - len(out), n)
            out.extend(f["data"][g0:hi, 0, :].tolist())
            g0 = 0
        if len(out) == b:
            break
    json.dump({"step": step, "rows": [{"ids": r} for r in out]}, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        read(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
