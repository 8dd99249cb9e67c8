#!/usr/bin/env bash
# Fuzzing: every target of crates/glass-fuzz (each parser of untrusted bytes) runs
# GLASS_FUZZ_CASES structure-aware mutations of its committed seed files (default 500,
# about four minutes on 2 cores), then every stored regression input. A failure
# prints the shrunk input; an abort leaves it in target/fuzz-current/<target>.
set -euo pipefail
cd "$(dirname "$0")/.."
export GLASS_FUZZ_CASES="${GLASS_FUZZ_CASES:-500}"
log="$(mktemp)"
echo "== fuzz: $GLASS_FUZZ_CASES cases per target"
status=0
timeout "${GLASS_FUZZ_TIMEOUT:-1200}" \
  cargo test -p glass-fuzz --test fuzz -- --nocapture --test-threads "$(nproc)" \
  >"$log" 2>&1 || status=$?
grep -E "^fuzz |regression inputs|^test result" "$log" || true
awk '/^fuzz .* executions$/ { n += $3 } END { print "total fuzz executions:", n }' "$log"
if [ "$status" -ne 0 ]; then
  tail -60 "$log"
  echo "fuzzing failed (exit $status)" >&2
  exit "$status"
fi
