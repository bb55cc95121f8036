#!/bin/bash
# tapir's whole test suite, with all set-up, on a fresh Debian machine:
#   1. installs the Debian packages the tests use (needs root or sudo),
#   2. checks formatting and lints,
#   3. cargo test: unit tests and the tiny-test-kernel integration tests,
#      which run directly on this host's /dev/kvm (PVM or hardware),
#   4. the fuzz targets (fuzz/, resources/fuzz/run.sh), 60 s each
#      (TAPIR_FUZZ_SECS), from the committed seed corpus;
#   5. the Linux-guest suite (tests/nested.rs): Debian's kernel under tapir,
#      in one nested L1 VM on a PVM host, or directly on VT-x/AMD-V.
# At the end, green or red, a summary: the time each step took, every test
# that could not run here (SKIPPED) and everything run again (RETRIED).
set -euo pipefail
cd "$(dirname "$0")/.."
. resources/lib/common.sh

# The tests append their SKIPPED/RETRIED lines here (crates/test-support).
TAPIR_TEST_SUMMARY=$(mktemp "${TMPDIR:-/tmp}/tapir-test-summary.XXXXXX")
export TAPIR_TEST_SUMMARY
suite_start=$(date +%s)
steps=()
current=""
step_start=$suite_start
step_end() {
    [ -z "$current" ] || steps+=("$(printf '%-40s %5d s' "$current" $(($(date +%s) - step_start)))")
    current=""
}
step() {
    step_end
    current=$*
    step_start=$(date +%s)
    printf '\n== %s\n' "$*"
}
# shellcheck disable=SC2317 # called by the EXIT trap
summary() {
    local rc=$? skipped retried
    trap - EXIT
    [ "$rc" = 0 ] || steps+=("$(printf '%-40s %5d s  FAILED' "$current" $(($(date +%s) - step_start)))")
    [ "$rc" != 0 ] || step_end
    skipped=$(grep -c '^SKIPPED ' "$TAPIR_TEST_SUMMARY" || true)
    retried=$(grep -c '^RETRIED ' "$TAPIR_TEST_SUMMARY" || true)
    printf '\n== summary\n'
    printf '%s\n' "${steps[@]}"
    printf 'total %d s; %s\n' $(($(date +%s) - suite_start)) "$([ "$rc" = 0 ] && echo passed || echo "FAILED (exit $rc)")"
    echo "tests that could not run here: ${skipped:-0}"
    grep '^SKIPPED ' "$TAPIR_TEST_SUMMARY" | sort -u | sed 's/^SKIPPED /  /' || true
    echo "run again: ${retried:-0}"
    grep '^RETRIED ' "$TAPIR_TEST_SUMMARY" | sed 's/^RETRIED /  /' || true
    rm -f "$TAPIR_TEST_SUMMARY"
    exit "$rc"
}
trap summary EXIT

step "packages"
tapir_ensure_packages qemu-system-x86 linux-image-amd64 busybox-static iperf3 kmod cpio xz-utils iproute2 util-linux acpica-tools dnsmasq-base python3 tcpdump e2fsprogs
command -v cargo >/dev/null || tapir_die "cargo not found: install the Rust toolchain (rustup) first"
echo "KVM: $(tapir_kvm_mode)"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --features nested-tests -- -D warnings

# kvm-unit-tests (tests/kvm_unit_tests.rs) need a build, made from a
# checkout kept outside this repository: TAPIR_KUT_SRC names one (else the
# test uses the newest build in the cache, or says SKIPPED).
if [ -n "${TAPIR_KUT_SRC:-}" ]; then
    step "kvm-unit-tests build"
    TAPIR_KUT_BUILD=$(resources/kvm-unit-tests/build.sh "$TAPIR_KUT_SRC")
    export TAPIR_KUT_BUILD
fi

step "cargo test (unit + tiny test kernel)"
cargo test --workspace

step "fuzzing (${TAPIR_FUZZ_SECS:-60} s per target)"
resources/fuzz/run.sh --secs "${TAPIR_FUZZ_SECS:-60}"

step "Linux guests (nested suite)"
cargo test --features nested-tests --test nested
