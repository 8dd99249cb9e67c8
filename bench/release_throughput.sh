#!/usr/bin/env bash
# Release write rate vs this disk's `dd conv=fsync` rate, measured alternately on the same
# disk (farm-bench pairs the runs, so drift from other load cancels in the ratio).
#
# A: `glass release RUN OUT --with-optimizer` of a `small`-preset run with 3 checkpoints
#    (f32 transformers folders + optimizer moments + state, JSONL data, metrics, card,
#    manifest): read each checkpoint (page cache warm after the first run) and check its
#    hash, write every file (large ones by O_DIRECT where the filesystem allows), fsync
#    and sha256 every file. Process start and `rm -rf` of the last OUT included.
# B: `dd if=/dev/zero bs=1M conv=fsync` of the same number of bytes (rm of the last file
#    included).
# Bytes are equal, so rate(A) / rate(B) = time(B) / time(A).
#
# Usage: bench/release_throughput.sh   (GLASS=target/release/glass DIR=target/bench-release RUNS=3)
set -euo pipefail
GLASS=${GLASS:-target/release/glass}
DIR=${DIR:-target/bench-release}
RUNS=${RUNS:-3}
mkdir -p "$DIR"
RUN="$DIR/run"
if [ ! -f "$RUN/manifest.json" ]; then
  rm -rf "$RUN"
  "$GLASS" init "$RUN" --preset small >/dev/null
  # Two steps, one per stage, two steps a chunk: checkpoints at steps 0, 1, 2.
  sed -i -E 's/^tokens = [0-9]+.*/tokens = 2064/; s/^steps_per_chunk = [0-9]+.*/steps_per_chunk = 2/' "$RUN/glass.toml"
  "$GLASS" data prepare "$RUN" >/dev/null
  "$GLASS" train "$RUN" --quiet >/dev/null
fi
rm -rf "$DIR/out"
"$GLASS" release "$RUN" "$DIR/out" --with-optimizer --json >"$DIR/first.json" 2>/dev/null
BYTES=$(python3 -c "import json;print(json.load(open('$DIR/first.json'))['bytes'])")
MB=$(( (BYTES + 1048575) / 1048576 ))
echo "release: $BYTES bytes ($(python3 -c "import json;r=json.load(open('$DIR/first.json'));print(len(r['checkpoints']),'checkpoints,',r['files'],'files')")); dd: $MB MiB"
farm-bench -n "$RUNS" --timeout 1800 \
  --vs "sh -c 'rm -f $DIR/dd.bin; dd if=/dev/zero of=$DIR/dd.bin bs=1M count=$MB conv=fsync status=none'" \
  -- sh -c "rm -rf $DIR/out; exec $GLASS release $RUN $DIR/out --with-optimizer >/dev/null 2>&1"
rm -rf "$DIR/out" "$DIR/dd.bin"
