#!/usr/bin/env python3
"""Runs lm-evaluation-harness (HF transformers backend, float32, CPU) on the leaderboard
suite — its own shipped task files (ARC-Challenge 25-shot, HellaSwag 10-shot, MMLU 5-shot
with its groups, TruthfulQA MC2 0-shot) with only `dataset_path` pointed at local JSON
Lines under DATA_DIR/<dataset_path>/<dataset_name>/<split>.jsonl — and writes every task's
and group's metrics, per-document log-likelihoods and the time taken. The model is loaded
before the clock starts.

Usage: lm_eval_suite_reference.py HF_DIR DATA_DIR LIMIT|all BATCH_SIZE OUT_JSON
"""
import glob
import json
import os
import re
import shutil
import sys
import tempfile
import time

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lm_eval.tasks  # noqa: E402
import torch  # noqa: E402
from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

SUITE = [("arc_challenge", 25), ("hellaswag", 10), ("mmlu", 5), ("truthfulqa_mc2", 0)]
HARNESS = os.path.dirname(lm_eval.tasks.__file__)


def localise(tmp, data):
    """Copies the suite's task folders; every task YAML reads local JSON Lines."""
    for folder in ["arc", "hellaswag", "mmlu/default", "truthfulqa"]:
        shutil.copytree(os.path.join(HARNESS, folder), os.path.join(tmp, folder))
    known = {"arc_challenge": ("allenai/ai2_arc", "ARC-Challenge"), "arc_easy": ("allenai/ai2_arc", "ARC-Easy"),
             "hellaswag": ("Rowan/hellaswag", None), "truthfulqa_mc1": ("truthfulqa/truthful_qa", "multiple_choice"),
             "truthfulqa_mc2": ("truthfulqa/truthful_qa", "multiple_choice")}
    for y in glob.glob(os.path.join(tmp, "**", "*.yaml"), recursive=True):
        text = open(y).read()
        m = re.search(r'^"?task"?: "?([A-Za-z0-9_]+)"?$', text, re.M)
        if not m or re.search(r"^group:", text, re.M):
            continue
        name = m.group(1)
        if name.startswith("mmlu_"):
            ds = ("cais/mmlu", name[len("mmlu_"):])
        elif name in known:
            ds = known[name]
        else:
            continue
        d = os.path.join(data, ds[0], ds[1]) if ds[1] else os.path.join(data, ds[0])
        files = {os.path.basename(p)[:-len(".jsonl")]: p for p in glob.glob(os.path.join(d, "*.jsonl"))}
        if not files:
            continue
        text += "\ndataset_path: json\ndataset_name: null\ndataset_kwargs:\n  data_files:\n"
        for s, p in sorted(files.items()):
            text += f"    {s}: {p}\n"
        open(y, "w").write(text)


def main():
    hf_dir, data, limit, bs, out = sys.argv[1:6]
    limit = None if limit == "all" else int(limit)
    lm = HFLM(pretrained=hf_dir, dtype="float32", device="cpu", batch_size=int(bs))
    report = {"threads": torch.get_num_threads(), "results": {}, "samples": {}, "seconds": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        localise(tmp, os.path.abspath(data))
        tm = TaskManager(include_path=tmp, include_defaults=False)
        for task, shots in SUITE:
            t0 = time.perf_counter()
            res = simple_evaluate(model=lm, tasks=[task], task_manager=tm, limit=limit, num_fewshot=shots,
                                  log_samples=True, fewshot_random_seed=1234, bootstrap_iters=0)
            report["seconds"] += time.perf_counter() - t0
            report["results"].update(res["results"])
            for t, samples in res["samples"].items():
                report["samples"][t] = [
                    {"doc": s["doc_id"], "loglikelihoods": [float(r[0]) for r in s["filtered_resps"]],
                     "acc": s.get("acc"), "acc_norm": s.get("acc_norm")}
                    for s in sorted(samples, key=lambda s: s["doc_id"])]
    json.dump(report, open(out, "w"), indent=1, default=str)
    print(f"harness: suite in {report['seconds']:.2f}s ({report['threads']} torch threads)", file=sys.stderr)


if __name__ == "__main__":
    main()
