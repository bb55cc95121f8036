#!/bin/bash
# tapir's whole test suite, with all set-up, on a fresh Debian machine:
#   1. installs the Debian packages the tests use (needs root or sudo),
#   2. checks formatting and lints,
#   3. cargo test: unit tests and the tiny-test-kernel integration tests,
#      which run directly on this host's /dev/kvm (PVM or hardware),
#   4. the Linux-guest suite (tests/nested.rs): Debian's kernel under tapir,
#      in one nested L1 VM on a PVM host, or directly on VT-x/AMD-V.
set -euo pipefail
cd "$(dirname "$0")/.."
. resources/lib/common.sh

step() { printf '\n== %s\n' "$*"; }

step "packages"
tapir_ensure_packages qemu-system-x86 linux-image-amd64 busybox-static iperf3 kmod cpio xz-utils iproute2 util-linux acpica-tools dnsmasq-base python3
command -v cargo >/dev/null || tapir_die "cargo not found: install the Rust toolchain (rustup) first"
echo "KVM: $(tapir_kvm_mode)"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --features nested-tests -- -D warnings

step "cargo test (unit + tiny test kernel)"
cargo test --workspace

step "Linux guests (nested suite)"
cargo test --features nested-tests --test nested
