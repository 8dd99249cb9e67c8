#!/usr/bin/env bash
# Writes the derived seed files of the fuzz corpus from the committed seed run
# (corpus/run): its trace index (corpus/run/index), a release of it with optimizer state
# (corpus/release) and a metrics database with every table filled (corpus/metrics.sqlite,
# from a retrained copy, evaluated and analysed). Rerun after a format change:
#   GLASS=target/release/glass crates/glass-fuzz/corpus/make_seeds.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
glass="${GLASS:-$here/../../../target/release/glass}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

rm -rf "$here/run/index"
"$glass" index "$here/run" --quiet >/dev/null

rm -rf "$here/release"
"$glass" release "$here/run" "$here/release" --with-optimizer >/dev/null 2>&1

cp -r "$here/run" "$work/m"
rm -rf "$work/m/checkpoints" "$work/m/manifest.json" "$work/m/index" "$work/m/metrics.sqlite"*
"$glass" train "$work/m" --quiet >/dev/null
"$glass" eval "$work/m" --tasks glass_heldout --limit 1 --checkpoints latest --quiet >/dev/null
"$glass" analyze memorization "$work/m" --checkpoints latest --samples 2 \
  --prompt-tokens 2 --continuation-tokens 2 --quiet >/dev/null
cp "$work/m/metrics.sqlite" "$here/metrics.sqlite"
echo "seeds written: run/index, release/, metrics.sqlite"
