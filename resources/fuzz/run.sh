#!/usr/bin/env bash
# run.sh: runs tapir's cargo-fuzz targets (fuzz/) for a bounded time each,
# starting from the committed seed corpus (fuzz/corpus/TARGET), and says
# how many inputs each one executed. A crash fails the run and names the
# input that caused it (fuzz/artifacts/TARGET/); so does one input that
# runs longer than 10 s (a hang).
#
# Usage: resources/fuzz/run.sh [--secs S] [TARGET...]
#   --secs S   seconds per target (default 60)
#   TARGET     some of: e1000 rtl8139 rtl8139cp virtio_net virtio_blk nic_arg
#              net_user
#              (default all)
# Needs the nightly toolchain (rustup) and cargo-fuzz, which it installs
# from crates.io when missing. Where either cannot be had, every target is
# reported as not run (in the test suite's summary) and the exit status is 0.
# The corpus grows in a temporary copy: the checkout stays clean.
set -euo pipefail
export LC_ALL=C
# shellcheck disable=SC2034 # used by common.sh
TAPIR_PROG=fuzz/run.sh
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
root=$(cd "$here/../.." && pwd -P)
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$root/resources/lib/common.sh"

secs=60
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --secs) secs=${2:?--secs needs a number}; shift 2 ;;
        -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) tapir_die "unknown option $1" ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(e1000 rtl8139 rtl8139cp virtio_net virtio_blk nic_arg net_user)

not_run() {
    local t
    for t in "${targets[@]}"; do
        echo "fuzz $t: not run: $*"
        [ -z "${TAPIR_TEST_SUMMARY:-}" ] || echo "SKIPPED fuzz $t: $*" >>"$TAPIR_TEST_SUMMARY"
    done
    exit 0
}

cargo +nightly --version >/dev/null 2>&1 || not_run "no nightly Rust toolchain (rustup toolchain install nightly)"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked >/dev/null 2>&1 || not_run "cargo-fuzz is missing and could not be installed"
fi

cd "$root/fuzz"
if ! out=$(cargo +nightly fuzz build 2>&1); then
    echo "$out" | tail -40
    tapir_die "building the fuzz targets failed"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/tapir-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
rc=0
for t in "${targets[@]}"; do
    mkdir -p "$work/$t" "artifacts/$t"
    [ ! -d "corpus/$t" ] || cp -r "corpus/$t/." "$work/$t/"
    log="$work/$t.log"
    if cargo +nightly fuzz run "$t" "$work/$t" -- -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$root/fuzz/artifacts/$t/" >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
        echo "fuzz $t: ${execs:-?} executions in $secs s, coverage ${cov:-?} edges, no crash"
    else
        rc=1
        echo "fuzz $t: FAILED"
        tail -40 "$log"
    fi
done
exit "$rc"
