#!/usr/bin/env bash
# Side-by-side training-step benchmark: glass vs PyTorch eager, same model, batch and
# optimizer, same machine. The two alternate `rounds` times and the best tokens/s of each
# is compared (shared or virtual machines are noisy). Usage:
#   bench/compare_train.sh [tiny|small] [steps] [python] [rounds]
# Needs a Python with torch and transformers (see tools/fixtures/README.md).
set -euo pipefail
preset=${1:-tiny}
steps=${2:-10}
python=${3:-python3}
rounds=${4:-3}
cd "$(dirname "$0")/.."
cargo build --release -q -p glass-cli
results=()
for _ in $(seq "$rounds"); do
  results+=("glass $(./target/release/glass bench train --preset "$preset" --steps "$steps" --json)")
  results+=("torch $("$python" bench/pytorch_reference.py --preset "$preset" --steps "$steps" | tail -n 1)")
done
tmp=$(mktemp)
printf '%s\n' "${results[@]}" >"$tmp"
"$python" - "$tmp" <<'PY'
import json, sys
best = {}
for line in open(sys.argv[1]):
    who, js = line.split(" ", 1)
    r = json.loads(js)
    print(who, "%.0f tokens/s" % r["tokens_per_s"])
    if r["tokens_per_s"] > best.get(who, {"tokens_per_s": 0})["tokens_per_s"]:
        best[who] = r
g, t = best["glass"], best["torch"]
print("best of each: glass %.0f vs pytorch %.0f tokens/s = %.2fx; peak RSS %.0f MiB vs %.0f MB"
      % (g["tokens_per_s"], t["tokens_per_s"], g["tokens_per_s"] / t["tokens_per_s"], g["peak_rss_mib"], t["peak_rss_mb"]))
PY
rm -f "$tmp"
