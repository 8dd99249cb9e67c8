#!/usr/bin/env bash
# sgemm side by side: Glass's GEMM, the gemm crate and PyTorch on the same shapes and
# threads (squares 256-4096 and the tiny/small training-step products). Usage:
#   bench/compare_gemm.sh [threads] [python] [extra glass bench gemm args...]
set -euo pipefail
threads=${1:-$(nproc)}
python=${2:-python3}
shift $(( $# < 2 ? $# : 2 ))
cd "$(dirname "$0")/.."
cargo build --release -q -p glass-cli
./target/release/glass --threads "$threads" bench gemm --json "$@" \
  | "$python" bench/torch_sgemm.py --threads "$threads"
