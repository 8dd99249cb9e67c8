#!/usr/bin/env python3
"""Runs lm-evaluation-harness (HF transformers backend, float32, CPU) on HumanEval
(0-shot) and MBPP (3-shot) — its own shipped task files, only `dataset_path` pointed at
local JSON Lines under DATA_DIR/<dataset_path>/<dataset_name>/test.jsonl — and writes
per-document generations, programs' results and pass@1. `evaluate.load("code_eval")` is
served from CODE_EVAL_DIR (huggingface/evaluate's metrics/code_eval: code_eval.py and
execute.py), as the harness would otherwise download it.

Usage: lm_eval_code_reference.py HF_DIR DATA_DIR LIMIT|all BATCH_SIZE CODE_EVAL_DIR OUT_JSON
"""
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["HF_ALLOW_CODE_EVAL"] = "1"

import evaluate  # noqa: E402
import lm_eval.tasks  # noqa: E402
import torch  # noqa: E402
from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

HARNESS = os.path.dirname(lm_eval.tasks.__file__)
SUITE = [("humaneval", "humaneval.yaml", ("openai/openai_humaneval", None), 0),
         ("mbpp", "mbpp.yaml", ("google-research-datasets/mbpp", "full"), 3)]


def main():
    hf_dir, data, limit, bs, code_eval, out = sys.argv[1:7]
    limit = None if limit == "all" else int(limit)
    real = evaluate.load
    evaluate.load = lambda name, *a, **k: real(os.path.join(code_eval, "code_eval.py") if name == "code_eval" else name, *a, **k)
    lm = HFLM(pretrained=hf_dir, dtype="float32", device="cpu", batch_size=int(bs))
    report = {"threads": torch.get_num_threads(), "results": {}, "samples": {}, "seconds": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for task, yaml_name, (path, name), shots in SUITE:
            d = os.path.join(tmp, task)
            os.makedirs(d)
            for f in [yaml_name, "utils.py"]:
                shutil.copy(os.path.join(HARNESS, task, f), d)
            src = os.path.join(os.path.abspath(data), path, name) if name else os.path.join(os.path.abspath(data), path)
            with open(os.path.join(d, yaml_name), "a") as f:
                f.write(f"\ndataset_path: json\ndataset_name: null\ndataset_kwargs:\n  data_files:\n    test: {src}/test.jsonl\n")
        tm = TaskManager(include_path=tmp, include_defaults=False)
        for task, _, _, shots in SUITE:
            t0 = time.perf_counter()
            res = simple_evaluate(model=lm, tasks=[task], task_manager=tm, limit=limit, num_fewshot=shots,
                                  log_samples=True, fewshot_random_seed=1234, bootstrap_iters=0,
                                  confirm_run_unsafe_code=True)
            report["seconds"] += time.perf_counter() - t0
            report["results"].update(res["results"])
            for t, samples in res["samples"].items():
                report["samples"][t] = [
                    {"doc": s["doc_id"], "completion": s["resps"][0][0],
                     "passed": float(s.get("pass@1", s.get("pass_at_1", 0.0))) == 1.0}
                    for s in sorted(samples, key=lambda s: s["doc_id"])]
    json.dump(report, open(out, "w"), indent=1, default=str)
    print(f"harness: code suite in {report['seconds']:.2f}s ({report['threads']} torch threads)", file=sys.stderr)


if __name__ == "__main__":
    main()
