#!/usr/bin/env bash
# Glass's training step beside PyTorch in each of its fast CPU configurations: eager with
# SDPA, eager attention, torch.compile default and max-autotune (inductor), all with fused
# AdamW; same model, batch, loss, clipping and optimizer; alternating rounds, medians, the
# CPU model and ISA printed. A thin wrapper over `glass bench train --python PY`.
# Usage:
#   bench/compare_train.sh [tiny|small] [steps] [python] [rounds] [threads] [configs]
#   bench/compare_train.sh small 3 /root/venv/bin/python 3 2 eager-sdpa,compile
# Needs a Python with torch and transformers (see tools/fixtures/README.md) and, for
# torch.compile on CPU, a C++ compiler.
set -euo pipefail
preset=${1:-tiny}
steps=${2:-10}
python=${3:-python3}
rounds=${4:-3}
threads=${5:-2}
configs=${6:-}
cd "$(dirname "$0")/.."
cargo build --release -q -p glass-cli
args=(--threads "$threads" bench train --preset "$preset" --steps "$steps" --python "$python" --rounds "$rounds")
if [ -n "$configs" ]; then
  args+=(--torch-configs "$configs")
fi
exec ./target/release/glass "${args[@]}"
