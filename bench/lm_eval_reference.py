#!/usr/bin/env python3
"""Runs lm-evaluation-harness (HF transformers backend, float32, CPU) on a task and
writes per-document log-likelihoods, acc / acc_norm and the time taken. The model is
loaded before the clock starts: the time covers building requests and scoring.

Usage: lm_eval_reference.py HF_DIR TASK_DIR TASK LIMIT|all BATCH_SIZE OUT_JSON
"""
import json
import os
import sys
import time

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402


def main():
    hf_dir, task_dir, task, limit, bs, out = sys.argv[1:7]
    limit = None if limit == "all" else int(limit)
    lm = HFLM(pretrained=hf_dir, dtype="float32", device="cpu", batch_size=int(bs))
    os.chdir(task_dir)  # the bundled YAML names its data relative to its directory
    tm = TaskManager(include_path=task_dir, include_defaults=False)
    t0 = time.perf_counter()
    res = simple_evaluate(model=lm, tasks=[task], task_manager=tm, limit=limit, num_fewshot=0,
                          log_samples=True, fewshot_random_seed=1234, bootstrap_iters=0)
    seconds = time.perf_counter() - t0
    docs = []
    for s in sorted(res["samples"][task], key=lambda s: s["doc_id"]):
        d = {"doc": s["doc_id"]}
        if "acc" in s:
            d["loglikelihoods"] = [float(r[0]) for r in s["filtered_resps"]]
            d["acc"], d["acc_norm"] = s["acc"], s["acc_norm"]
        else:
            d["loglikelihood"] = float(s["filtered_resps"][0] if not isinstance(s["filtered_resps"][0], (list, tuple)) else s["filtered_resps"][0][0])
        docs.append(d)
    json.dump({"seconds": seconds, "threads": torch.get_num_threads(), "results": res["results"][task],
               "docs": docs}, open(out, "w"), indent=1)
    print(f"harness: {len(docs)} docs in {seconds:.2f}s ({len(docs) / seconds:.2f} docs/s, "
          f"{torch.get_num_threads()} torch threads)", file=sys.stderr)


if __name__ == "__main__":
    main()
