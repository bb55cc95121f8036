#!/usr/bin/env bash
# disk.sh: sequential disk throughput of tapir's virtio-blk next to QEMU's
# virtio-blk-pci, with the same raw image, guest and kernel. A benchmark,
# not a test: it exits 0 when all measurements were taken, whatever the
# numbers.
#
# Usage: resources/bench/disk.sh [options]
# Options:
#   --reps N        repetitions (default 3, at least 1): each boots a fresh
#                   guest under each VMM once, in alternating order (rep 1
#                   tapir then QEMU, rep 2 QEMU then tapir, ...)
#   --size MIB      bytes moved per direction, in MiB (default 128; the
#                   image is that large)
#   --keep DIR      keep the raw results and console logs in DIR
#   --no-build      do not run `cargo build --release` first
#   -h, --help      show this help
# What is measured: the default guest (resources/guest/build-guest.sh,
# 256 MiB, 1 vCPU) runs, on its first disk /dev/vda,
#   read:  dd if=/dev/vda of=/dev/null bs=1M count=SIZE iflag=direct
#   write: dd if=/dev/zero of=/dev/vda bs=1M count=SIZE oflag=direct conv=fsync
# (the page cache dropped before the read; without iflag/oflag=direct when
# the guest's dd lacks it), timed with the guest's /proc/uptime; MB/s =
# 10^6 bytes per second. The image (random bytes) lies in a temporary
# directory of the measuring side, in the host's page cache for both VMMs:
# what is compared is the virtio-blk path, not a disk. Columns: tapir
# (--disk IMG) and QEMU (-drive file=IMG,format=raw,if=none,cache=writeback,
# aio=threads -device virtio-blk-pci, its defaults). Every figure in the
# table is the median over the repetitions that completed; each
# repetition's figures are listed above it. On a host with VT-x/AMD-V
# (tapir_kvm_mode = hw) the guests run directly; otherwise inside one
# tapir-nested L1 VM, where the absolute numbers are small and only the
# ratio says something.
# Exit status: 0 when all measurements were taken, 1 when a VMM failed in a
# repetition (the table shows what was measured), 125 on setup errors.
set -euo pipefail
export LC_ALL=C

# shellcheck disable=SC2034 # used by common.sh
TAPIR_PROG=disk.sh
self=$(readlink -f "${BASH_SOURCE[0]}")
here=$(dirname "$self")
root=$(cd "$here/../.." && pwd -P)
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$root/resources/lib/common.sh"

MEM_MIB=256
CMDLINE="console=ttyS0 quiet tapir.exit=poweroff"
BOOT_TIMEOUT=600

usage() {
    sed -n '/^# Usage:/,/^set -euo/p' "$self" | sed -e '$d' -e 's/^# \{0,1\}//'
}
is_uint() { case "$1" in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }
say() { printf 'disk.sh: %s\n' "$*" >&2; }

# The guest's script: SIZE MiB read, then written, on /dev/vda.
guest_script() { # SIZE
    cat <<EOF
N=$1
EOF
    cat <<'EOF'
say() { echo "BENCH: $*"; }
cs() { read -r up _ </proc/uptime; echo "${up%.*}${up#*.}"; }
i=0
while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
sync
echo 3 >/proc/sys/vm/drop_caches
a=$(cs)
dd if=/dev/vda of=/dev/null bs=1M count=$N iflag=direct 2>/dev/null ||
    { say "read without iflag=direct"; a=$(cs); dd if=/dev/vda of=/dev/null bs=1M count=$N 2>/dev/null; } ||
    say "read FAIL"
b=$(cs)
say "read bytes=$((N * 1048576)) cs=$((b - a))"
a=$(cs)
dd if=/dev/zero of=/dev/vda bs=1M count=$N oflag=direct conv=fsync 2>/dev/null ||
    { say "write without oflag=direct"; a=$(cs); dd if=/dev/zero of=/dev/vda bs=1M count=$N conv=fsync 2>/dev/null; } ||
    say "write FAIL"
b=$(cs)
say "write bytes=$((N * 1048576)) cs=$((b - a))"
say done
EOF
}

# ============================================================================
# Measuring part, where /dev/kvm can boot Linux (directly, or in L1):
#   disk.sh --measure OUTDIR REPS SIZE TAPIR KERNEL INITRD
# Writes OUTDIR/results ("VMM rREP DIR MBPS" and "outcome VMM REP ok|failed")
# and OUTDIR/logs/VMM-rREP.log.
measure() {
    local out=$1 reps=$2 size=$3 tapir=$4 kernel=$5 initrd=$6
    local work rep vmm order log rc b c dir
    mkdir -p "$out/logs"
    : >"$out/results"
    work=$(mktemp -d "${TMPDIR:-/tmp}/tapir-diskbench.XXXXXX")
    # shellcheck disable=SC2064 # expand now
    trap "rm -rf '$work'" EXIT
    printf '%s\n' "$(guest_script "$size")" >"$work/bench.sh"
    "$root/resources/guest/make-scenario-cpio.sh" "$work/bench.sh" "$work/bench.cpio.gz" >/dev/null
    cat "$initrd" "$work/bench.cpio.gz" >"$work/initrd"
    head -c "$((size * 1048576))" /dev/urandom >"$work/disk.img"
    printf 'qemu_version %s\n' "$(qemu-system-x86_64 --version 2>/dev/null | head -n 1)" >>"$out/results"
    for ((rep = 1; rep <= reps; rep++)); do
        order="tapir qemu"
        [ $((rep % 2)) = 1 ] || order="qemu tapir"
        for vmm in $order; do
            log=$out/logs/$vmm-r$rep.log
            case "$vmm" in
                tapir)
                    cmd=("$tapir" run --kernel "$kernel" --initrd "$work/initrd" --memory "${MEM_MIB}M"
                        --cpus 1 --cmdline "$CMDLINE" --disk "$work/disk.img") ;;
                qemu)
                    # shellcheck disable=SC2054 # commas belong to QEMU option values
                    cmd=(qemu-system-x86_64 -accel kvm -cpu host -m "$MEM_MIB" -smp 1 -nographic -no-reboot
                        -nodefaults -serial stdio -kernel "$kernel" -initrd "$work/initrd" -append "$CMDLINE"
                        -drive "file=$work/disk.img,format=raw,if=none,id=d0,cache=writeback,aio=threads"
                        -device virtio-blk-pci,drive=d0) ;;
            esac
            say "rep $rep/$reps: $vmm"
            rc=0
            timeout -k 5 "$BOOT_TIMEOUT" "${cmd[@]}" </dev/null >"$log" 2>&1 || rc=$?
            local ok=1
            for dir in read write; do
                b=$(tr -d '\r' <"$log" | sed -n "s/.*BENCH: $dir bytes=\([0-9]*\) cs=\([0-9]*\).*/\1 \2/p" | head -n 1)
                c=${b#* }
                b=${b% *}
                if [ -n "$b" ] && is_uint "$c" && [ "$c" -gt 0 ]; then
                    printf '%s r%s %s %s\n' "$vmm" "$rep" "$dir" \
                        "$(awk -v b="$b" -v c="$c" 'BEGIN { printf "%.1f", b / (c / 100) / 1e6 }')" >>"$out/results"
                else
                    ok=0
                fi
            done
            if [ "$ok" = 1 ] && [ "$rc" = 0 ]; then
                echo "outcome $vmm $rep ok" >>"$out/results"
            else
                echo "outcome $vmm $rep failed rc=$rc" >>"$out/results"
            fi
        done
    done
}

if [ "${1:-}" = --measure ]; then
    shift
    [ "$#" -eq 6 ] || tapir_die "--measure takes 6 arguments"
    measure "$@"
    exit 0
fi

# ============================================================================
# Report: medians side by side.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

report() { # OUTDIR
    local res=$1/results dir t q ratio rc=0
    echo "per repetition (MB/s):"
    grep -E '^(tapir|qemu) r[0-9]+ ' "$res" | sort -k2,2V -k1,1 | sed 's/^/  /' || true
    grep '^outcome' "$res" | grep -v ' ok$' | sed 's/^/  /' && rc=1
    echo
    printf '%-8s %14s %14s %12s\n' "" "tapir MB/s" "QEMU MB/s" "tapir/QEMU"
    for dir in read write; do
        t=$(awk -v d="$dir" '$1 == "tapir" && $3 == d { print $4 }' "$res" | median)
        q=$(awk -v d="$dir" '$1 == "qemu" && $3 == d { print $4 }' "$res" | median)
        ratio=n/a
        if [ "$t" != n/a ] && [ "$q" != n/a ]; then
            ratio=$(awk -v t="$t" -v q="$q" 'BEGIN { if (q > 0) printf "%.2f", t / q; else print "n/a" }')
        fi
        printf '%-8s %14s %14s %12s\n' "$dir" "$t" "$q" "$ratio"
    done
    echo "(medians of $(grep -c '^outcome tapir' "$res") repetitions; $(sed -n 's/^qemu_version //p' "$res"))"
    return "$rc"
}

reps=3 size=128 keep="" build=1
while [ "$#" -gt 0 ]; do
    case "$1" in
        --reps) reps=${2:?}; shift 2 ;;
        --size) size=${2:?}; shift 2 ;;
        --keep) keep=${2:?}; shift 2 ;;
        --no-build) build=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 125 ;;
    esac
done
{ is_uint "$reps" && [ "$reps" -ge 1 ]; } || tapir_die "--reps must be a whole number of at least 1"
{ is_uint "$size" && [ "$size" -ge 1 ]; } || tapir_die "--size must be a whole number of MiB, at least 1"
command -v qemu-system-x86_64 >/dev/null || tapir_die "qemu-system-x86_64 not found (package qemu-system-x86)"

cd "$root"
tapir_release_and_guest "$root" "$build"
if [ -n "$keep" ]; then
    mkdir -p "$keep" || tapir_die "cannot create $keep"
    out=$(cd "$keep" && pwd -P)
    rm -rf "$out/results" "$out/logs"
else
    out=$(mktemp -d "${TMPDIR:-/tmp}/tapir-diskbench.XXXXXX")
    trap 'rm -rf "$out"' EXIT
fi
mode=$(tapir_kvm_mode)
case "$mode" in
    hw)
        say "kvm mode hw: measuring directly on this host ($reps repetitions)"
        "$self" --measure "$out" "$reps" "$size" "$tapir_bin" "$KERNEL" "$INITRD"
        ;;
    *)
        say "kvm mode $mode: measuring inside one tapir-nested L1 VM ($reps repetitions; takes a while)"
        "$root/resources/nested/tapir-nested" --out "$out" --timeout $((300 + reps * 2 * BOOT_TIMEOUT)) \
            --share "$tapir_bin" --share "$KERNEL" --share "$INITRD" -- \
            "$self" --measure /run/out "$reps" "$size" "$tapir_bin" "$KERNEL" "$INITRD" </dev/null >&2 ||
            say "tapir-nested exited with status $?"
        ;;
esac
[ -s "$out/results" ] || tapir_die "the measuring part produced no results"
echo "where: $( [ "$mode" = hw ] && echo "this host (hardware virtualization)" || echo "nested: L2 guests in a tapir-nested L1 (TCG) VM, host kvm mode $mode")"
rc=0
report "$out" || rc=$?
[ -z "$keep" ] || echo "raw results and logs: $out"
exit "$rc"
