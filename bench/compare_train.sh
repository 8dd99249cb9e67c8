#!/usr/bin/env bash
# Side-by-side training-step benchmark: glass vs PyTorch eager, same model, batch and
# optimizer, same machine, one after the other. Usage:
#   bench/compare_train.sh [tiny|small] [steps] [python]
# Needs a Python with torch and transformers (see tools/fixtures/README.md).
set -euo pipefail
preset=${1:-tiny}
steps=${2:-10}
python=${3:-python3}
cd "$(dirname "$0")/.."
cargo build --release -q -p glass-cli
glass_json=$(./target/release/glass bench train --preset "$preset" --steps "$steps" --json)
torch_json=$("$python" bench/pytorch_reference.py --preset "$preset" --steps "$steps" | tail -n 1)
echo "glass:   $glass_json"
echo "pytorch: $torch_json"
"$python" - "$glass_json" "$torch_json" <<'PY'
import json, sys
g, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"tokens/s ratio glass/pytorch: {g['tokens_per_s'] / t['tokens_per_s']:.2f}x; "
      f"peak RSS {g['peak_rss_mib']:.0f} MiB vs {t['peak_rss_mb']:.0f} MB")
PY
