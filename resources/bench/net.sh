#!/usr/bin/env bash
# net.sh: the network benchmark under its old name and flags. It builds the
# release binary and runs `tapir bench` (docs/bench.md), which does the
# measuring, the nested L1 placement and the table.
#
# Usage: resources/bench/net.sh [options] [-- more `tapir bench` options]
# Options, and what each becomes:
#   --model M         --models M (virtio, e1000, rtl8139; default virtio)
#   --net N           --net N (tap, user, passthrough; default tap)
#   --time S          --secs S (default 4)
#   --reps N          --reps N (default 3)
#   --vmms LIST       tapir plus --against of the rest, out of qemu and
#                     qemu-vhost (default tapir,qemu,qemu-vhost); qemu-vhost
#                     is left out where it does not apply (not virtio, or
#                     --net user)
#   --l1-cpus N       --l1-cpus N
#   --keep DIR        --keep DIR
#   --baseline PATH   --baseline PATH
#   --exit-detail     --exit-detail
#   --report DIR      --report DIR (a --keep DIR of `tapir bench`; the old
#                     script's DIR/results is not read)
#   --no-build        do not run `cargo build --release` first
#   -h, --help        show this help
# Exit status: tapir bench's (0: all measured, 1: a figure is missing or an
# error); 125 on a bad option or a failed build.
set -euo pipefail

# shellcheck disable=SC2034 # used by common.sh
TAPIR_PROG=net.sh
self=$(readlink -f "${BASH_SOURCE[0]}")
root=$(cd "$(dirname "$self")/../.." && pwd -P)
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$root/resources/lib/common.sh"

usage() {
    sed -n '/^# Usage:/,/^set -euo/p' "$self" | sed -e '$d' -e 's/^# \{0,1\}//'
}

model=virtio
net=tap
secs=4
reps=3
vmms=tapir,qemu,qemu-vhost
build=1
args=()
need() { [ "$2" -ge 2 ] || tapir_die "$1 needs a value"; }
while [ "$#" -gt 0 ]; do
    case "$1" in
        --model) need "$1" "$#"; model=$2; shift 2 ;;
        --net) need "$1" "$#"; net=$2; shift 2 ;;
        --time) need "$1" "$#"; secs=$2; shift 2 ;;
        --reps) need "$1" "$#"; reps=$2; shift 2 ;;
        --vmms) need "$1" "$#"; vmms=$2; shift 2 ;;
        --l1-cpus | --keep | --baseline | --report) need "$1" "$#"; args+=("$1" "$2"); shift 2 ;;
        --exit-detail) args+=("$1"); shift ;;
        --no-build) build=0; shift ;;
        --boot-timeout) tapir_die "--boot-timeout is not carried over: tapir bench waits up to 300 s for a guest" ;;
        -h | --help) usage; exit 0 ;;
        --) shift; args+=("$@"); break ;;
        *) tapir_die "unknown argument '$1' (see --help)" ;;
    esac
done

against=()
tapir=0
for v in ${vmms//,/ }; do
    case "$v" in
        tapir) tapir=1 ;;
        qemu) against+=(qemu) ;;
        qemu-vhost) if [ "$model" = virtio ] && [ "$net" != user ]; then against+=(qemu-vhost); fi ;;
        *) tapir_die "--vmms: unknown column '$v' (tapir, qemu, qemu-vhost)" ;;
    esac
done
[ "$tapir" = 1 ] || tapir_die "--vmms: tapir bench always measures tapir; list it"
if [ "${#against[@]}" -gt 0 ]; then
    args+=(--against "$(IFS=,; echo "${against[*]}")")
fi

if [ "$build" = 1 ]; then
    echo "net.sh: building tapir (cargo build --release)" >&2
    (cd "$root" && cargo build --release >&2) || tapir_die "cargo build --release failed"
fi
tapir_bin=${CARGO_TARGET_DIR:-$root/target}/release/tapir
case "$tapir_bin" in /*) ;; *) tapir_bin=$root/$tapir_bin ;; esac
[ -x "$tapir_bin" ] || tapir_die "$tapir_bin not found; build it with cargo build --release"

cmd=("$tapir_bin" bench --models "$model" --net "$net" --secs "$secs" --reps "$reps" "${args[@]}")
echo "net.sh: ${cmd[*]}" >&2
cd "$root"
exec "${cmd[@]}"
