#!/usr/bin/env bash
# glass eval --suite leaderboard vs lm-evaluation-harness on the same checkpoint: the
# harness's own task files on small hand-made datasets in each benchmark's schema
# (bench/make_suite_data.py; or DATA, a directory of real data in the same layout),
# per-document log-likelihoods within 1e-4 (or 5e-5 relative), identical per-document
# acc / acc_norm, equal task, MMLU category and MMLU overall scores, and wall clock.
#
#   bench/compare_eval_suite.sh RUN [CHECKPOINT|latest] [LIMIT|all] [HARNESS_BATCH] [DATA]
#
# Needs /work/venv (torch, transformers, lm-eval 0.4.13) and a release build of glass.
set -euo pipefail
RUN=$1
K=${2:-latest}
LIMIT=${3:-all}
BS=${4:-16}
DATA=${5:-}
PY=${PY:-/work/venv/bin/python}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GLASS=${GLASS:-$ROOT/target/release/glass}
[ -x "$GLASS" ] || (cd "$ROOT" && cargo build --release -p glass-cli)
if [ "$K" = latest ]; then
  K=$("$GLASS" info "$RUN" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["checkpoints"][-1]["index"])')
fi
WORK=$(mktemp -d /tmp/glass-compare-suite.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
if [ -z "$DATA" ]; then DATA=$WORK/data; "$PY" "$ROOT/bench/make_suite_data.py" "$DATA"; fi
"$GLASS" export hf "$RUN" "$WORK/hf" --checkpoint "$K" >&2
LIM=(); [ "$LIMIT" = all ] || LIM=(--limit "$LIMIT")
echo "== lm-evaluation-harness (batch $BS)" >&2
"$PY" "$ROOT/bench/lm_eval_suite_reference.py" "$WORK/hf" "$DATA" "$LIMIT" "$BS" "$WORK/harness.json"
echo "== glass eval --suite leaderboard" >&2
T0=$(date +%s.%N)
HF_DATASETS_CACHE=$WORK/no-cache "$GLASS" eval "$RUN" --checkpoints "$K" --suite leaderboard --data-dir "$DATA" \
  "${LIM[@]}" --force --log-samples --json --quiet > "$WORK/glass.json"
T1=$(date +%s.%N)
"$PY" "$ROOT/bench/compare_eval_suite.py" "$WORK/glass.json" "$WORK/harness.json" "$(echo "$T1 - $T0" | bc)"
