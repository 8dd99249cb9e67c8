#!/usr/bin/env bash
# glass eval --suite code vs lm-evaluation-harness on the same checkpoint: HumanEval
# (0-shot) and MBPP (3-shot) from the harness's own task files on DATA (the hand-made
# documents of tools/fixtures/make_benchmark_fixtures.py by default, in the layout
# DATA/<dataset_path>/<dataset_name>/test.jsonl); identical greedy continuations, the same
# pass/fail per document and equal pass@1, and wall clock.
#
#   bench/compare_eval_code.sh RUN CODE_EVAL_DIR [LIMIT|all] [HARNESS_BATCH] [DATA] [THREADS]
#
# CODE_EVAL_DIR: huggingface/evaluate's metrics/code_eval (code_eval.py, execute.py).
# The model needs more than 1024 positions (HumanEval's max_gen_toks), e.g. SmolLM2-135M
# (bench/smollm2_to_hf.py, then glass import hf). Needs /work/venv (torch, transformers,
# lm-eval 0.4.13, evaluate), root (the sandbox) and a release build of glass.
set -euo pipefail
RUN=$1
CODE_EVAL=$2
LIMIT=${3:-all}
BS=${4:-1}
DATA=${5:-}
THREADS=${6:-2}
PY=${PY:-/work/venv/bin/python}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GLASS=${GLASS:-$ROOT/target/release/glass}
[ -x "$GLASS" ] || (cd "$ROOT" && cargo build --release -p glass-cli)
export OMP_NUM_THREADS=$THREADS
K=$("$GLASS" info "$RUN" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["checkpoints"][-1]["index"])')
WORK=$(mktemp -d /tmp/glass-compare-code.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
if [ -z "$DATA" ]; then DATA=$ROOT/crates/glass-eval/tests/fixtures/hub; fi
"$GLASS" export hf "$RUN" "$WORK/hf" --checkpoint "$K" >&2
LIM=(); [ "$LIMIT" = all ] || LIM=(--limit "$LIMIT")
echo "== lm-evaluation-harness (batch $BS)" >&2
"$PY" "$ROOT/bench/lm_eval_code_reference.py" "$WORK/hf" "$DATA" "$LIMIT" "$BS" "$CODE_EVAL" "$WORK/harness.json"
echo "== glass eval --suite code" >&2
T0=$(date +%s.%N)
"$GLASS" eval "$RUN" --checkpoints "$K" --suite code --data-dir "$DATA" "${LIM[@]}" --threads "$THREADS" \
  --force --json --quiet > "$WORK/glass.json"
T1=$(date +%s.%N)
"$PY" "$ROOT/bench/compare_eval_code.py" "$WORK/glass.json" "$WORK/harness.json" "$(echo "$T1 - $T0" | bc)"
