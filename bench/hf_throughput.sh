#!/usr/bin/env bash
# Hugging Face export/import throughput of the `glass` CLI on a `small`-preset checkpoint,
# with peak memory, next to `glass bench hf` (weights only) and raw disk write speed.
# Usage: bench/hf_throughput.sh [WORKDIR]   (default target/bench-hf-cli; needs a release build)
set -euo pipefail
G=${GLASS:-target/release/glass}
W=${1:-target/bench-hf-cli}
rm -rf "$W" && mkdir -p "$W"
T() { /usr/bin/time -f "%e s, peak RSS %M KiB" "$@"; }

"$G" init "$W/run" --preset small >/dev/null
"$G" data prepare "$W/run" >/dev/null 2>&1
"$G" train "$W/run" --until-step 0 --quiet >/dev/null
W_BYTES=$(stat -c %s "$W"/run/checkpoints/ckpt-0000-step-00000000/model.safetensors)
echo "small preset: model.safetensors $W_BYTES bytes"

echo "== glass export hf (f32, one file; includes hash-checked load, sha256 of every file, fsync)"
T "$G" export hf "$W/run" "$W/out" --checkpoint 0
echo "== glass export hf (bf16, 100MB shards)"
T "$G" export hf "$W/run" "$W/out-bf16" --checkpoint 0 --dtype bf16 --max-shard-size 100MB
sync
echo "== glass import hf (f32 safetensors; includes sha256 of every source file, checkpoint 0 write with zero AdamW moments)"
T "$G" import hf "$W/out" "$W/imported"
cmp "$W/run/checkpoints/ckpt-0000-step-00000000/model.safetensors" \
    "$W/imported/checkpoints/ckpt-0000-step-00000000/model.safetensors" && echo "round trip: model.safetensors byte-identical"
echo "== glass import hf (bf16 shards)"
T "$G" import hf "$W/out-bf16" "$W/imported-bf16"
echo "== glass bench hf (weights only: write+fsync, map+convert)"
"$G" bench hf --preset small --dir "$W"
echo "== disk: dd 1 GB with fsync"
dd if=/dev/zero of="$W/dd.bin" bs=1M count=1000 conv=fsync 2>&1 | tail -1
rm -f "$W/dd.bin"
