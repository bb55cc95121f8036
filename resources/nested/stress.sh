#!/usr/bin/env bash
# stress.sh: how often does the nested L1 lose a Linux guest? Runs the
# Linux-guest suite's own scenarios (tests/nested/scenarios.sh) over and
# over in one L1 VM, without any retry, and counts for each scenario how
# its runs ended: passed, guest died (triple fault), guest hung (silent,
# vCPU in KVM, or an RCU stall), L1 lost (the L1 VM died or froze during
# the run: tapir-nested says which, and keeps QEMU's snapshot of a frozen
# one), or another failure. After a lost L1 the next run goes on in a
# fresh L1, up to --max-l1-losses times.
#
# Usage: resources/nested/stress.sh [options]
# Options:
#   --runs N          runs of each scenario (default 20)
#   --scenarios LIST  space-separated scenario names (default: the four
#                     NIC models over a tap and the 2-vCPU boot:
#                     "net_tap net_tap_e1000 net_tap_rtl8139
#                     net_tap_8139too smp2_poweroff")
#   --l1-cpus C       vCPUs of the L1 VM (default: tapir-nested's, 1)
#   --max-l1-losses K give up after K lost L1 VMs (default 5)
#   --tapir PATH      the tapir binary (default: a release build, built here)
#   --out DIR         keep every run's logs in DIR (default: a temporary
#                     directory, removed at the end)
#   -h, --help        show this help
# The runs go round-robin (run 1 of every scenario, then run 2, ...), so the
# L1 ages as it does in the suite. Every run's line and the table at the end
# go to stdout; DIR/stress.tsv has one line per run: run, scenario, verdict,
# tapir's exit status, seconds.
# On a host with VT-x/AMD-V it runs directly, with no L1 (then it measures
# nothing about L1s).
# Exit status: 0 when every run passed and the L1 lasted; 1 otherwise;
# 125 on set-up errors.
set -euo pipefail
export LC_ALL=C

# shellcheck disable=SC2034 # used by common.sh
TAPIR_PROG=stress.sh
self=$(readlink -f "${BASH_SOURCE[0]}")
root=$(cd "$(dirname "$self")/../.." && pwd -P)
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$root/resources/lib/common.sh"
scen=$root/tests/nested/scenarios.sh

# --- inside L1 (or directly on VT-x/AMD-V) -----------------------------------
#   stress.sh --inner TAPIR KERNEL INITRD OUT RUNS FIRST SCENARIO...
# runs the FIRST-th (from 0) of the RUNS x SCENARIOs runs and those after it.
if [ "${1:-}" = --inner ]; then
    shift
    tapir=$1 kernel=$2 initrd=$3 out=$4 runs=$5 first=$6
    shift 6
    scens=("$@")
    # verdict NAME DIR: passed | guest-died | guest-hung | failed
    verdict() {
        local name=$1 dir=$2 rc log
        rc=$(cat "$dir/$name.rc" 2>/dev/null || echo none)
        log=$dir/$name.log
        if [ -f "$dir/$name.hung" ] || grep -qs 'rcu: INFO: rcu_[a-z]* detected stalls' "$log" "$dir/$name".vm?.log; then
            echo guest-hung
        elif grep -qs 'tapir: guest died on vCPU [0-9]*: triple fault' "$log" "$dir/$name".vm?.log; then
            echo guest-died
        elif [ -f "$dir/$name.result" ]; then
            if grep -qx 'ok=1' "$dir/$name.result" && [ "$rc" = 0 ]; then echo passed; else echo failed; fi
        elif [ "$rc" = 0 ] && grep -q 'TAPIR-GUEST: booted' "$log" && grep -q 'tapir: guest powered off' "$log"; then
            echo passed
        else
            echo failed
        fi
    }
    for ((k = first; k < runs * ${#scens[@]}; k++)); do
        i=$((k / ${#scens[@]} + 1)) s=${scens[k % ${#scens[@]}]}
        {
            dir=$out/run$i
            mkdir -p "$dir"
            "$scen" "$tapir" "$kernel" "$initrd" "$dir" "$s" >>"$dir/scenarios.out" 2>&1 || true
            v=$(verdict "$s" "$dir")
            rc=$(cat "$dir/$s.rc" 2>/dev/null || echo none)
            secs=$(cat "$dir/$s.secs" 2>/dev/null || echo 0)
            printf '%s\t%s\t%s\t%s\t%s\n' "$i" "$s" "$v" "$rc" "$secs" >>"$out/stress.tsv"
            extra=""
            [ "$v" = passed ] || extra=" (failed checks: $(sed -n 's/^failed=//p' "$dir/$s.result" 2>/dev/null))"
            echo "stress: run $i/$runs $s: $v, exit $rc, ${secs} s$extra"
            # Keep what tells a failure; drop the bulk of passed runs.
            [ "$v" != passed ] || rm -f "$dir/$s".*l1.log
        }
    done
    echo "stress: all runs done"
    exit 0
fi

usage() { sed -n '/^# Usage:/,/^set -euo/p' "$self" | sed -e '$d' -e 's/^# \{0,1\}//'; }
is_uint() { case "$1" in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }
runs=20
scenarios="net_tap net_tap_e1000 net_tap_rtl8139 net_tap_8139too smp2_poweroff"
l1_cpus=""
max_lost=5
tapir=""
out=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --runs) [ "$#" -ge 2 ] || tapir_die "--runs needs a value"; runs=$2; shift 2 ;;
        --scenarios) [ "$#" -ge 2 ] || tapir_die "--scenarios needs a value"; scenarios=$2; shift 2 ;;
        --l1-cpus) [ "$#" -ge 2 ] || tapir_die "--l1-cpus needs a value"; l1_cpus=$2; shift 2 ;;
        --max-l1-losses) [ "$#" -ge 2 ] || tapir_die "--max-l1-losses needs a value"; max_lost=$2; shift 2 ;;
        --tapir) [ "$#" -ge 2 ] || tapir_die "--tapir needs a value"; tapir=$2; shift 2 ;;
        --out) [ "$#" -ge 2 ] || tapir_die "--out needs a value"; out=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) tapir_die "unknown option '$1' (see --help)" ;;
    esac
done
{ is_uint "$runs" && [ "$runs" -ge 1 ]; } || tapir_die "--runs must be a positive number, got '$runs'"
is_uint "$max_lost" || tapir_die "--max-l1-losses must be a number, got '$max_lost'"
[ -z "$l1_cpus" ] || is_uint "$l1_cpus" || tapir_die "--l1-cpus must be a number, got '$l1_cpus'"
for s in $scenarios; do
    grep -q "^scenario_$s()" "$root"/tests/nested/*.sh || tapir_die "no scenario '$s' in tests/nested"
done

tapir_ensure_packages qemu-system-x86 linux-image-amd64 busybox-static iperf3 kmod cpio xz-utils iproute2 ||
    tapir_die "required packages could not be installed"
if [ -n "$tapir" ]; then
    [ -x "$tapir" ] || tapir_die "--tapir $tapir is not an executable"
    tapir=$(readlink -f "$tapir")
    guest_env=$("$root/resources/guest/build-guest.sh") || tapir_die "building the guest failed"
    eval "$guest_env"
else
    tapir_release_and_guest "$root" 1
    tapir=$tapir_bin
fi
keep=1
if [ -z "$out" ]; then
    out=$(mktemp -d "${TMPDIR:-/tmp}/tapir-stress.XXXXXX")
    keep=0
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
mode=$(tapir_kvm_mode)
total=$((runs * $(wc -w <<<"$scenarios")))
echo "stress: $runs runs each of: $scenarios ($total runs), KVM '$mode', logs in $out"
start=$(date +%s)
read -ra scens <<<"$scenarios"
: >"$out/stress.tsv"
lost=0
rc=0
while :; do
    done_runs=$(wc -l <"$out/stress.tsv")
    [ "$done_runs" -lt "$total" ] || break
    if [ "$mode" = hw ]; then
        "$self" --inner "$tapir" "$KERNEL" "$INITRD" "$out" "$runs" "$done_runs" "${scens[@]}" || rc=$?
        break
    fi
    nested=("$root/resources/nested/tapir-nested" --out "$out" --timeout $(((total - done_runs) * 600 + 600))
        --share "$tapir" --share "$KERNEL" --share "$INITRD")
    [ -z "$l1_cpus" ] || nested+=(--cpus "$l1_cpus")
    rc=0
    "${nested[@]}" -- "$self" --inner "$tapir" "$KERNEL" "$INITRD" /run/out "$runs" "$done_runs" "${scens[@]}" \
        2>&1 | tee "$out/l1-$((lost + 1)).out" || rc=$?
    done_runs=$(wc -l <"$out/stress.tsv")
    [ "$done_runs" -lt "$total" ] || break
    # The run under way when L1 was lost counts as such; the next run
    # starts in a fresh L1.
    lost=$((lost + 1))
    why=$(grep -m1 'tapir-nested:' "$out/l1-$lost.out" | sed 's/^tapir-nested: //' || true)
    printf '%s\t%s\t%s\t%s\t%s\n' "$((done_runs / ${#scens[@]} + 1))" "${scens[done_runs % ${#scens[@]}]}" \
        l1-lost "${why:-tapir-nested exit $rc}" 0 >>"$out/stress.tsv"
    echo "stress: L1 VM $lost lost during run $((done_runs / ${#scens[@]} + 1)) ${scens[done_runs % ${#scens[@]}]}: ${why:-tapir-nested exit $rc}"
    [ "$lost" -lt "$max_lost" ] || { echo "stress: $lost L1 VMs lost: giving up"; break; }
done
elapsed=$(($(date +%s) - start))
done_runs=$(wc -l <"$out/stress.tsv" 2>/dev/null || echo 0)

echo
printf '%-18s %5s %7s %11s %11s %8s %7s %9s\n' scenario runs passed guest-died guest-hung l1-lost failed "median s"
for s in $scenarios; do
    median=$(awk -F'\t' -v s="$s" '$2 == s && $3 != "l1-lost" { print $5 }' "$out/stress.tsv" 2>/dev/null | sort -n |
        awk '{ t[NR] = $1 } END { if (NR) print (NR % 2 ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2); else print "-" }')
    awk -F'\t' -v s="$s" -v m="$median" '$2 == s { n++; c[$3]++ }
        END { printf "%-18s %5d %7d %11d %11d %8d %7d %9s\n", s, n, c["passed"], c["guest-died"], c["guest-hung"], c["l1-lost"], c["failed"], m }' \
        "$out/stress.tsv" 2>/dev/null
done
if [ "$mode" = hw ]; then
    l1="none (VT-x/AMD-V: guests ran directly)"
else
    froze=$(grep -l 'L1 VM froze' "$out"/l1-*.out 2>/dev/null | wc -l)
    l1="$((lost + 1)) L1 VM(s), $lost lost ($froze froze, $((lost - froze)) died)"
fi
echo "L1: $l1; $done_runs of $total runs done; ${elapsed} s in all"
bad=$(awk -F'\t' '$3 != "passed"' "$out/stress.tsv" 2>/dev/null | wc -l)
if [ "$bad" = 0 ] && [ "$done_runs" -eq "$total" ]; then
    [ "$keep" = 1 ] || rm -rf "$out"
    exit 0
fi
echo "logs kept in $out"
exit 1
