#!/usr/bin/env bash
# Wall clock of glass eval --suite leaderboard against lm-evaluation-harness's HF backend
# on the same checkpoint, on CPU with the same thread count, alternating the two sides
# (harness at every batch size in BATCHES, then glass; ROUNDS times) so that other load on
# the machine falls on both; prints every time, the medians, the ratio to the harness's
# fastest batch size, and the parity check of the last round (bench/compare_eval_suite.py).
#
#   bench/compare_eval_speed.sh RUN DATA [LIMIT] ["BATCHES"] [ROUNDS] [THREADS]
#
# DATA: bench/make_suite_data.py output (or real data in that layout). For a pretrained
# model: bench/smollm2_to_hf.py, then `glass import hf`. Needs /work/venv (torch,
# transformers, lm-eval 0.4.13) and a release build of glass.
set -euo pipefail
RUN=$1
DATA=$2
LIMIT=${3:-2}
BATCHES=${4:-"1 4 16"}
ROUNDS=${5:-3}
THREADS=${6:-2}
PY=${PY:-/work/venv/bin/python}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GLASS=${GLASS:-$ROOT/target/release/glass}
[ -x "$GLASS" ] || (cd "$ROOT" && cargo build --release -p glass-cli)
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
K=$("$GLASS" info "$RUN" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["checkpoints"][-1]["index"])')
WORK=${WORK:-$(mktemp -d /tmp/glass-speed.XXXXXX)}
mkdir -p "$WORK"
[ -d "$WORK/hf" ] || "$GLASS" export hf "$RUN" "$WORK/hf" --checkpoint "$K" >&2
LIM=(); [ "$LIMIT" = all ] || LIM=(--limit "$LIMIT")
: > "$WORK/times.tsv"
for r in $(seq "$ROUNDS"); do
  for bs in $BATCHES; do
    echo "== round $r: lm-evaluation-harness, batch $bs" >&2
    "$PY" "$ROOT/bench/lm_eval_suite_reference.py" "$WORK/hf" "$DATA" "$LIMIT" "$bs" "$WORK/harness-$bs.json"
    "$PY" -c 'import json,sys; print("harness-%s\t%.3f" % (sys.argv[2], json.load(open(sys.argv[1]))["seconds"]))' \
      "$WORK/harness-$bs.json" "$bs" >> "$WORK/times.tsv"
  done
  echo "== round $r: glass eval --suite leaderboard" >&2
  T0=$(date +%s.%N)
  HF_DATASETS_CACHE=$WORK/no-cache "$GLASS" eval "$RUN" --checkpoints "$K" --suite leaderboard --data-dir "$DATA" \
    "${LIM[@]}" --threads "$THREADS" --force --log-samples --json --quiet > "$WORK/glass.json"
  T1=$(date +%s.%N)
  printf 'glass\t%.3f\n' "$(echo "$T1 - $T0" | bc)" >> "$WORK/times.tsv"
  tail -n $(( $(echo $BATCHES | wc -w) + 1 )) "$WORK/times.tsv" >&2
done
"$PY" - "$WORK/times.tsv" <<'PY'
import statistics, sys
t = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    t.setdefault(k, []).append(float(v))
med = {k: statistics.median(v) for k, v in t.items()}
for k, v in t.items():
    print(f"{k:<12} median {med[k]:8.2f}s   runs {' '.join(f'{x:.2f}' for x in v)}")
best = min((k for k in med if k != "glass"), key=med.get)
print(f"fastest harness: {best}; speed ratio (median harness / median glass): {med[best] / med['glass']:.2f}x")
PY
BEST=$(sort -k2 -n "$WORK/times.tsv" | grep harness | head -1 | cut -f1 | cut -d- -f2)
"$PY" "$ROOT/bench/compare_eval_suite.py" "$WORK/glass.json" "$WORK/harness-$BEST.json" \
  "$(grep glass "$WORK/times.tsv" | tail -1 | cut -f2)"
