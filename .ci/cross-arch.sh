#!/usr/bin/env bash
# Cross-architecture determinism: trains the engine test configs natively (x86-64) and
# as an aarch64 build under qemu-aarch64 (NEON kernel) and requires the same digest of
# losses and parameters. Needs the aarch64 Rust target and Debian's cross compiler;
# installs them if it can. Slow (a second build of the engine and its dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  apt-get update -qq && apt-get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
fi
rustup target add aarch64-unknown-linux-gnu >/dev/null
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
# The NEON kernels compile (and lint clean) for aarch64, not only the x86 ones.
cargo clippy -q -p glass-engine --target aarch64-unknown-linux-gnu --all-targets -- -D warnings
digest() {
  cargo test -q -p glass-engine --test kernels "$@" -- --ignored --nocapture print_training_digest 2>/dev/null \
    | sed -n 's/^TRAINING_DIGEST \([0-9a-f]*\).*/\1/p'
}
x86=$(digest)
arm=$(digest --target aarch64-unknown-linux-gnu)
echo "== cross-arch: x86-64 $x86, aarch64 (NEON, qemu) $arm"
[ -n "$x86" ] && [ "$x86" = "$arm" ] || { echo "training digests differ across architectures" >&2; exit 1; }
