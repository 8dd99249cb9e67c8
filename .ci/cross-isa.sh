#!/usr/bin/env bash
# Cross-ISA determinism: the numerics contract promises the same bits on every x86-64
# CPU. Builds the release binary for the baseline x86-64 target (no target-cpu=native),
# prepares one tiny run, trains it natively and under qemu-user with CPU models of
# another vector ISA (Nehalem: no AVX, no FMA -> portable kernel; Haswell: AVX2+FMA, no
# AVX-512 -> avx2 kernel), checks that each process really picked a different GEMM
# kernel, requires identical checkpoint hashes, and replays the native run's last
# checkpoint under Nehalem (`glass verify --replay`).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v qemu-x86_64 >/dev/null; then
  echo "== installing qemu-user"
  apt-get update -qq && apt-get install -y -qq qemu-user >/dev/null
fi

echo "== cross-ISA: building the baseline x86-64 release binary"
env -u RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS cargo build --release -q -p glass-cli
glass="$PWD/target/release/glass"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# name -> command prefix
declare -A prefix=(
  [native]=""
  [nehalem]="qemu-x86_64 -cpu Nehalem"
  [haswell]="qemu-x86_64 -cpu Haswell"
)
declare -A want_kernel=([nehalem]=portable [haswell]=avx2)

kernel_of() { # prints the GEMM kernel a process picks on this CPU model
  ${prefix[$1]} "$glass" bench gemm --sizes 32 --presets none --no-gemm-crate --reps 1 --json 2>/dev/null \
    | sed -n 's/.*"kernel":"\([a-z0-9]*\)".*/\1/p' | head -n 1
}

# A run small enough to train under emulation in about a minute: 1 layer of width 32
# (MLP width 272 so the down projection spans two GEMM k-blocks), 4 rows of 32 tokens a
# step, 2 steps a chunk, two chunks.
base="$work/base"
"$glass" init "$base" --preset tiny >/dev/null
sed -i \
  -e 's/^preset = "tiny"/preset = "tiny"\nd_model = 32\nn_layers = 1\nn_heads = 4\nn_kv_heads = 2\nffn_hidden = 272\nmax_seq_len = 32/' \
  -e 's/^micro_batch_rows = .*/micro_batch_rows = 2/' \
  -e 's/^seq_len = [0-9]*/seq_len = 32/' \
  -e 's/^rows_per_step = [0-9]*/rows_per_step = 4/' \
  -e 's/^steps_per_chunk = [0-9]*/steps_per_chunk = 2/' \
  -e 's/^vocab_size = 2048/vocab_size = 512/' \
  -e 's/^tokens = [0-9]*/tokens = 256/' \
  -e 's/^rows = 64/rows = 4/' \
  "$base/glass.toml"
"$glass" data prepare "$base" >"$work/prepare.log" 2>&1 || { cat "$work/prepare.log" >&2; exit 1; }

hashes() { # "step sha256" of every checkpoint, from glass info --json
  "$glass" info "$1" --json | grep -E '^      "(step|sha256)"' | paste - - | tr -d ' ",'
}

for isa in native nehalem haswell; do
  k=$(kernel_of "$isa")
  echo "== cross-ISA: $isa picks the $k kernel"
  if [ -n "${want_kernel[$isa]:-}" ] && [ "$k" != "${want_kernel[$isa]}" ]; then
    echo "expected the ${want_kernel[$isa]} kernel under $isa, got '$k'" >&2
    exit 1
  fi
  cp -a "$base" "$work/$isa"
  start=$SECONDS
  # (qemu warns about CPUID bits TCG does not model; only errors matter here.)
  ${prefix[$isa]} "$glass" train "$work/$isa" --quiet 2> >(grep -v "TCG doesn't support" >&2) >/dev/null
  hashes "$work/$isa" >"$work/$isa.hashes"
  echo "   trained in $((SECONDS - start)) s: $(wc -l <"$work/$isa.hashes") checkpoints"
done
if [ "$(kernel_of native)" = "$(kernel_of haswell)" ] && [ "$(kernel_of native)" = avx2 ]; then
  echo "   (this host has no AVX-512: native and Haswell share the avx2 kernel)"
fi
for isa in nehalem haswell; do
  if ! diff -u "$work/native.hashes" "$work/$isa.hashes"; then
    echo "checkpoint hashes differ between native and $isa" >&2
    exit 1
  fi
done
echo "== cross-ISA: identical checkpoint hashes on all three ($(tail -n 1 "$work/native.hashes"))"
last=$(($(wc -l <"$work/native.hashes") - 1))
qemu-x86_64 -cpu Nehalem "$glass" verify "$work/native" --replay "$last" 2> >(grep -v "TCG doesn't support" >&2) >/dev/null
echo "== cross-ISA: the native run's checkpoint $last replays bit for bit under Nehalem"
