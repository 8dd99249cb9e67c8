#!/usr/bin/env bash
# glass eval vs lm-evaluation-harness (HF transformers backend, float32, CPU) on the same
# checkpoint and the same task: per-document log-likelihoods within 1e-4, identical
# acc / acc_norm, and documents per second.
#
#   bench/compare_eval.sh RUN [CHECKPOINT] [TASK] [LIMIT|all] [HARNESS_BATCH] [ROUNDS]
#
# The two alternate ROUNDS times (default 2) and the fastest run of each is compared
# (shared machines are noisy); parity is checked on every run.
# RUN is a Glass run with checkpoints (e.g. the demo's runs/demo); CHECKPOINT defaults to
# the latest; TASK is a bundled task (glass_cloze, glass_heldout) whose committed YAML +
# JSONL the harness reads with --include_path. Needs /root/venv (torch, transformers,
# lm-eval) and a release build of glass.
set -euo pipefail
RUN=$1
K=${2:-latest}
TASK=${3:-glass_cloze}
LIMIT=${4:-all}
BS=${5:-16}
ROUNDS=${6:-2}
PY=${PY:-/root/venv/bin/python}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GLASS=${GLASS:-$ROOT/target/release/glass}
[ -x "$GLASS" ] || (cd "$ROOT" && cargo build --release)
if [ "$K" = latest ]; then
  K=$("$GLASS" info "$RUN" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["checkpoints"][-1]["index"])')
fi
WORK=$(mktemp -d /tmp/glass-compare-eval.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$GLASS" export hf "$RUN" "$WORK/hf" --checkpoint "$K" >&2
LIM=(); [ "$LIMIT" = all ] || LIM=(--limit "$LIMIT")
BEST_H=""; BEST_G=""
for r in $(seq "$ROUNDS"); do
  echo "== round $r: lm-evaluation-harness (batch $BS)" >&2
  "$PY" "$ROOT/bench/lm_eval_reference.py" "$WORK/hf" "$ROOT/crates/glass-eval/tasks" "$TASK" "$LIMIT" "$BS" "$WORK/harness-$r.json"
  echo "== round $r: glass eval" >&2
  T0=$(date +%s.%N)
  "$GLASS" eval "$RUN" --checkpoints "$K" --tasks "$TASK" "${LIM[@]}" --num-fewshot 0 \
    --force --log-samples --json --quiet > "$WORK/glass-$r.json"
  T1=$(date +%s.%N)
  echo "$T1 - $T0" | bc > "$WORK/glass-$r.wall"
  "$PY" "$ROOT/bench/compare_eval.py" "$WORK/glass-$r.json" "$WORK/harness-$r.json" "$(cat "$WORK/glass-$r.wall")" > "$WORK/cmp-$r.txt" || { cat "$WORK/cmp-$r.txt"; exit 1; }
  h=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"])' "$WORK/harness-$r.json")
  g=$(cat "$WORK/glass-$r.wall")
  echo "round $r: harness ${h}s, glass ${g}s" >&2
  if [ -z "$BEST_H" ] || [ "$(echo "$h < $(cat "$WORK/harness-$BEST_H.json" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')" | bc)" = 1 ]; then BEST_H=$r; fi
  if [ -z "$BEST_G" ] || [ "$(echo "$g < $(cat "$WORK/glass-$BEST_G.wall")" | bc)" = 1 ]; then BEST_G=$r; fi
done
echo "== best of $ROUNDS rounds: harness round $BEST_H, glass round $BEST_G" >&2
"$PY" "$ROOT/bench/compare_eval.py" "$WORK/glass-$BEST_G.json" "$WORK/harness-$BEST_H.json" "$(cat "$WORK/glass-$BEST_G.wall")"
