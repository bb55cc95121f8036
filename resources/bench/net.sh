#!/usr/bin/env bash
# net.sh: network throughput of tapir's NIC next to QEMU's (iperf3 over a
# tap, both directions), plus the VMM's CPU time per GB and the VM exits per MB
# moved. A benchmark, not a test: it exits 0 when all measurements were
# taken, whatever the numbers.
#
# Usage: resources/bench/net.sh [options]
# Options:
#   --model M         NIC model: virtio, e1000 or rtl8139 (default virtio)
#   --net N           backend: tap (default) or user (user-mode NAT: tapir's
#                     net=user against QEMU's -netdev user, i.e. libslirp)
#   --time S          iperf3 seconds per direction (default 4)
#   --vmms LIST       comma-separated columns out of tapir, qemu, qemu-vhost
#                     (default all three; qemu-vhost only for virtio)
#   --boot-timeout S  give up on a guest that is not serving after S seconds
#                     (default 240)
#   --keep DIR        keep the raw results and console logs in DIR
#   --no-build        do not run `cargo build --release` first
#   --baseline PATH   also measure another tapir binary (e.g. the previous
#                     commit's release build) as column "baseline", first,
#                     in the same L1 run: a before/after comparison
#   --exit-detail     also count VM exits by reason (SVM codes: NPF, MSR,
#                     INTR, VINTR, HLT, IOIO), MMIO writes and reads (a
#                     read counts twice), x2APIC EOI, TSC-deadline and ICR
#                     writes, MSR reads, timer (vector 0xec) and re-injected
#                     interrupts,
#                     exits to user space, injected and raised interrupts
#                     into logs/VMM-DIR.exits (perf stat; keep it with
#                     --keep); perf only
#   -h, --help        show this help
# Columns: tapir (--nic model=M,net=tap), QEMU with -netdev tap,vhost=off and
# QEMU with vhost=on (/dev/vhost-net, after `modprobe vhost_net`). With
# --net user: tapir with --nic model=M,net=user and QEMU with -netdev user,
# both forwarding host 127.0.0.1:5201 to the guest's iperf3 server (the
# guest takes its address by DHCP), no vhost column. Every VMM
# boots the default guest (resources/guest/build-guest.sh) with 256 MiB and
# 1 vCPU; the guest runs `iperf3 -s`, and the host side runs
# `iperf3 -c GUEST -t S` (host->guest) and the same with -R (guest->host),
# over a tap with 192.168.150.1/24 on the host side, inside a network
# namespace of its own. CPU time: utime+stime of the VMM process from
# /proc/PID/stat (plus QEMU's vhost-PID kernel thread, if any) before and
# after each transfer. VM exits: `perf stat -e kvm:kvm_exit -p PID` when
# perf works, else the global /sys/kernel/debug/kvm/exits counter, else
# n/a. On a host with VT-x/AMD-V (tapir_kvm_mode = hw) the guests run
# directly; otherwise all of them run inside one tapir-nested L1 VM, where
# the absolute numbers are small and only the ratios say something.
# Exit status: 0 when all measurements were taken; 1 when a VMM failed (the
# table shows what was measured and why the rest was not); 125 on setup
# errors (build, guest image, L1).
set -euo pipefail
export LC_ALL=C

# shellcheck disable=SC2034 # used by common.sh
TAPIR_PROG=net.sh
self=$(readlink -f "${BASH_SOURCE[0]}")
here=$(dirname "$self")
root=$(cd "$here/../.." && pwd -P)
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$root/resources/lib/common.sh"

MEM_MIB=256
CMDLINE="console=ttyS0 quiet tapir.exit=poweroff"
HOST_IP=192.168.150.1
GUEST_IP=192.168.150.2
GUEST_MAC=52:54:00:15:00:02
TAP=tbn0

usage() {
    sed -n '/^# Usage:/,/^set -euo/p' "$self" | sed -e '$d' -e 's/^# \{0,1\}//'
}
is_uint() { case "$1" in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }
say() { printf 'net.sh: %s\n' "$*" >&2; }

# ============================================================================
# Measuring part: runs where /dev/kvm can boot Linux (directly, or in L1).
#   net.sh --measure OUTDIR MODEL TIME VMMS BOOT_TIMEOUT TAPIR KERNEL INITRD NET
# Writes OUTDIR/results (one "key value" per line) and OUTDIR/logs/*.log.
# ============================================================================

# The guest: configures the NIC with MAC (a fixed address on a tap, DHCP on
# net=user), starts the iperf3 server and stays up until the host connects
# to TCP port 9001 (or 15 minutes pass).
guest_script() { # NET
    printf 'MAC=%s IP=%s HOST=%s NETB=%s\n' "$GUEST_MAC" "$GUEST_IP" "$HOST_IP" "$1"
    cat <<'EOF'
say() { echo "NET: $*"; }
IF=eth0
for d in /sys/class/net/*; do
    [ "$(cat "$d/address" 2>/dev/null)" = "$MAC" ] && IF=${d##*/}
done
if [ "$NETB" = user ]; then
    printf '#!/bin/sh\n[ "$1" = bound ] && ip addr add "$ip/${mask:-24}" dev "$interface" && ip route add default via "$router"\nexit 0\n' >/tmp/dhcp.sh
    chmod +x /tmp/dhcp.sh
    ip link set "$IF" up && udhcpc -i "$IF" -s /tmp/dhcp.sh -n -q -t 20 -T 3 >/dev/null 2>&1 || say "dhcp FAIL"
else
    ip addr add "$IP/24" dev "$IF" && ip link set "$IF" up || say "ip config FAIL"
fi
nc -l -p 9001 >/dev/null 2>&1 &
bye=$!
if iperf3 -s -D >/dev/null 2>&1; then say "iperf ready on $IF"; else say "iperf FAIL"; fi
i=0
while kill -0 "$bye" 2>/dev/null && [ "$i" -lt 4500 ]; do sleep 0.2; i=$((i + 1)); done
say done
EOF
}

ns=""
vmm_pid=""
perf_pid=""
record_pid=""
# shellcheck disable=SC2317 # called from traps
cleanup_measure() {
    [ -z "$perf_pid" ] || kill -KILL "$perf_pid" 2>/dev/null || true
    [ -z "$record_pid" ] || kill -KILL "$record_pid" 2>/dev/null || true
    if [ -n "$vmm_pid" ]; then
        kill -KILL "$vmm_pid" 2>/dev/null || true
        wait "$vmm_pid" 2>/dev/null || true
    fi
    if [ -n "$ns" ]; then
        ip -n "$ns" link del "$TAP" >/dev/null 2>&1 || true
        ip netns del "$ns" >/dev/null 2>&1 || true
    fi
    [ -z "${mwork:-}" ] || rm -rf "$mwork"
}

# "NAME=TICKS ...": CPU ticks of each thread of PID (utime+stime), to
# tell which thread (vCPU or NIC worker) is the busy one.
thread_ticks() {
    local t s rest name
    for t in /proc/"$1"/task/*; do
        s=$(cat "$t/stat" 2>/dev/null) || continue
        name=$(tr -c 'A-Za-z0-9_.\n-' _ <"$t/comm" 2>/dev/null)
        rest=${s##*) }
        # shellcheck disable=SC2086 # split the fields
        set -- $rest
        printf '%s=%s ' "${name:-?}" $((${12} + ${13}))
    done
    echo
}

# "TOTAL VHOST": CPU ticks (utime+stime) of PID's thread group plus those
# of its vhost-PID kernel threads (vhost workers are kernel threads before
# Linux 6.4, threads of the VMM from 6.4 on), and the vhost part alone.
cpu_ticks() {
    local pid=$1 t=0 v=0 s rest p
    s=$(cat "/proc/$pid/stat" 2>/dev/null) || { echo "0 0"; return; }
    rest=${s##*) }
    # shellcheck disable=SC2086 # split the fields
    set -- $rest
    t=$((${12} + ${13}))
    for p in /proc/[0-9]*; do
        [ "$(cat "$p/comm" 2>/dev/null)" = "vhost-$pid" ] || continue
        s=$(cat "$p/stat" 2>/dev/null) || continue
        rest=${s##*) }
        # shellcheck disable=SC2086
        set -- $rest
        v=$((v + ${12} + ${13}))
    done
    echo "$((t + v)) $v"
}

# How VM exits are counted here: perf, debugfs or none.
exits_method() {
    if command -v perf >/dev/null 2>&1; then
        if [ ! -d /sys/kernel/tracing/events ] && [ -d /sys/kernel/tracing ]; then
            mount -t tracefs nodev /sys/kernel/tracing >/dev/null 2>&1 || true
        fi
        if perf stat -e kvm:kvm_exit -a -x, -o /dev/null -- true >/dev/null 2>&1; then
            echo perf
            return
        fi
    fi
    if [ ! -e /sys/kernel/debug/kvm ]; then
        mount -t debugfs none /sys/kernel/debug >/dev/null 2>&1 || true
    fi
    if [ -r /sys/kernel/debug/kvm/exits ]; then
        echo debugfs
        return
    fi
    echo none
}

# iperf3 JSON -> "bytes bits_per_second" of the receiving side.
iperf_sum() {
    if command -v jq >/dev/null 2>&1; then
        jq -r '"\(.end.sum_received.bytes // "n/a") \(.end.sum_received.bits_per_second // "n/a")"' "$1" 2>/dev/null ||
            echo "n/a n/a"
    else
        awk '/"sum_received"/ { f = 1 }
            f && /"bytes"/ { b = $2; gsub(/[^0-9]/, "", b) }
            f && /"bits_per_second"/ { r = $2; gsub(/[,"]/, "", r); print b, r; done = 1; exit }
            END { if (!done) print "n/a n/a" }' "$1"
    fi
}

measure() {
    local out=$1 model=$2 secs=$3 vmms=$4 boot_timeout=$5 tapir=$6 kernel=$7 initrd=$8 net=$9
    # Where iperf3 and the "bye" port are reached from the host side.
    local target=$GUEST_IP
    [ "$net" = tap ] || target=127.0.0.1
    local res=$out/results logs=$out/logs
    mkdir -p "$logs"
    : >"$res"
    trap cleanup_measure EXIT
    trap 'cleanup_measure; exit 143' TERM
    trap 'cleanup_measure; exit 130' INT
    mwork=$(mktemp -d /tmp/tapir-netbench.XXXXXX)

    {
        printf 'where %s\n' "$(uname -n) kernel $(uname -r), $(nproc) CPUs"
        printf 'qemu_version %s\n' "$(qemu-system-x86_64 --version 2>/dev/null | head -n 1)"
        printf 'iperf_version %s\n' "$(iperf3 --version 2>/dev/null | head -n 1)"
    } >>"$res"
    [ -c /dev/kvm ] || { echo "error all: /dev/kvm is missing" >>"$res"; return 1; }
    local c
    for c in ip iperf3 busybox qemu-system-x86_64; do
        command -v "$c" >/dev/null 2>&1 || { echo "error all: $c not found" >>"$res"; return 1; }
    done
    local method
    method=$(exits_method)
    echo "exits_method $method" >>"$res"
    say "VM exits counted with: $method"

    ns=tapir-netbench-$$
    if ! { ip netns add "$ns" && ip -n "$ns" link set lo up &&
        { [ "$net" = user ] || { ip -n "$ns" tuntap add dev "$TAP" mode tap &&
            ip -n "$ns" addr add "$HOST_IP/24" dev "$TAP" &&
            ip -n "$ns" link set "$TAP" up; }; }; }; then
        echo "error all: cannot set up namespace $ns with tap $TAP" >>"$res"
        return 1
    fi

    guest_script "$net" >"$mwork/guest.sh"
    "$root/resources/guest/make-scenario-cpio.sh" "$mwork/guest.sh" "$mwork/guest.cpio.gz" ||
        { echo "error all: make-scenario-cpio.sh failed" >>"$res"; return 1; }
    cat "$initrd" "$mwork/guest.cpio.gz" >"$mwork/initrd"
    cat "$kernel" "$mwork/initrd" "$tapir" "$(command -v qemu-system-x86_64)" >/dev/null 2>&1 || true

    local qdev
    case "$model" in
        virtio) qdev=virtio-net-pci ;;
        e1000) qdev=e1000 ;;
        rtl8139) qdev=rtl8139 ;;
    esac

    local failed=0 vmm log cmd i dir t0 t1 v0 v1 e0 e1 json bytes bps rargs
    for vmm in ${vmms//,/ }; do
        log=$logs/$vmm.log
        case "$vmm" in
            tapir | baseline)
                local bin=$tapir
                [ "$vmm" = tapir ] || bin=${TAPIR_BENCH_BASELINE:?}
                local nic="model=$model,net=tap,ifname=$TAP,mac=$GUEST_MAC"
                [ "$net" = tap ] || nic="model=$model,net=user,mac=$GUEST_MAC,hostfwd=tcp::5201-:5201,hostfwd=tcp::9001-:9001"
                cmd=("$bin" run --kernel "$kernel" --initrd "$mwork/initrd" --memory "${MEM_MIB}M"
                    --cpus 1 --cmdline "$CMDLINE" --nic "$nic")
                ;;
            qemu | qemu-vhost)
                local vh=off
                if [ "$vmm" = qemu-vhost ]; then
                    if [ "$model" != virtio ] || [ "$net" != tap ]; then
                        echo "skip $vmm: vhost is for virtio over a tap only" >>"$res"
                        continue
                    fi
                    [ -c /dev/vhost-net ] || modprobe vhost_net >/dev/null 2>&1 || true
                    if [ ! -c /dev/vhost-net ]; then
                        echo "error $vmm: /dev/vhost-net is missing (modprobe vhost_net failed)" >>"$res"
                        failed=1
                        continue
                    fi
                    vh=on
                fi
                # shellcheck disable=SC2054 # commas belong to QEMU option values
                cmd=(qemu-system-x86_64 -accel kvm -cpu host -m "$MEM_MIB" -smp 1 -nographic -no-reboot
                    -nodefaults -serial stdio -kernel "$kernel" -initrd "$mwork/initrd" -append "$CMDLINE"
                    -device "$qdev,netdev=n0,romfile=,mac=$GUEST_MAC")
                if [ "$net" = tap ]; then
                    cmd+=(-netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no,vhost=$vh")
                else
                    cmd+=(-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:5201-:5201,hostfwd=tcp:127.0.0.1:9001-:9001")
                fi
                ;;
            *) echo "error $vmm: unknown VMM" >>"$res"; failed=1; continue ;;
        esac
        say "$vmm: booting the guest"
        printf '+ %s\n' "${cmd[*]}" >"$log.cmd"
        # `ip netns exec` execs the VMM: $! is the VMM's pid.
        ip netns exec "$ns" "${cmd[@]}" </dev/null >"$log" 2>&1 &
        vmm_pid=$!
        local ready=0
        for ((i = 0; i < boot_timeout * 5; i++)); do
            if grep -q 'NET: iperf ready' "$log" 2>/dev/null; then ready=1; break; fi
            grep -q 'NET: iperf FAIL' "$log" 2>/dev/null && break
            kill -0 "$vmm_pid" 2>/dev/null || break
            sleep 0.2
        done
        if [ "$ready" = 1 ]; then
            ready=0
            for ((i = 0; i < 30; i++)); do
                if [ "$net" = user ]; then
                    # No route to the guest, only the forwards (which accept
                    # at once whatever the guest does): its lease says enough.
                    if ! grep -q 'NET: dhcp FAIL' "$log"; then ready=1; break; fi
                elif ip netns exec "$ns" busybox ping -c 1 -W 1 "$GUEST_IP" >/dev/null 2>&1; then
                    ready=1
                    break
                fi
                sleep 0.5
            done
            [ "$ready" = 1 ] || echo "error $vmm: the guest does not answer ping, or got no DHCP lease (log $vmm.log)" >>"$res"
        else
            local why
            if ! kill -0 "$vmm_pid" 2>/dev/null; then
                local rc=0
                wait "$vmm_pid" || rc=$?
                vmm_pid=""
                why="exited with status $rc before the guest served iperf3: $(tr -d '\r' <"$log" | grep -v '^$' | tail -n 1)"
            else
                why="the guest did not report 'NET: iperf ready' within $boot_timeout s"
            fi
            echo "error $vmm: $why (log $vmm.log)" >>"$res"
        fi
        if [ "$ready" = 1 ]; then
            sleep 1
            for dir in h2g g2h; do
                rargs=()
                [ "$dir" = h2g ] || rargs=(-R)
                json=$logs/$vmm-$dir.json
                read -r t0 v0 < <(cpu_ticks "$vmm_pid")
                local th0 th1
                th0=$(thread_ticks "$vmm_pid")
                e0=0
                case "$method" in
                    perf)
                        perf stat -e kvm:kvm_exit -p "$vmm_pid" -x, -o "$logs/$vmm-$dir.perf" >/dev/null 2>&1 &
                        perf_pid=$!
                        if [ "${TAPIR_BENCH_EXIT_DETAIL:-0}" = 1 ]; then
                            # Counts only: perf record trips on the VMM's
                            # namespaces here. SVM exit codes: NPF (MMIO and
                            # faults) 0x400, MSR 0x7c, INTR 0x60, VINTR 0x64,
                            # HLT 0x78, IOIO 0x7b; VMX reasons are others.
                            perf stat -x, -o "$logs/$vmm-$dir.exits" -p "$vmm_pid" \
                                -e kvm:kvm_exit --filter 'exit_reason == 0x400' \
                                -e kvm:kvm_exit --filter 'exit_reason == 0x7c' \
                                -e kvm:kvm_exit --filter 'exit_reason == 0x60' \
                                -e kvm:kvm_exit --filter 'exit_reason == 0x64' \
                                -e kvm:kvm_exit --filter 'exit_reason == 0x78' \
                                -e kvm:kvm_exit --filter 'exit_reason == 0x7b' \
                                -e kvm:kvm_mmio --filter 'type == 2' \
                                -e kvm:kvm_mmio --filter 'type != 2' \
                                -e kvm:kvm_msr --filter 'ecx == 0x80b' \
                                -e kvm:kvm_msr --filter 'ecx == 0x6e0' \
                                -e kvm:kvm_msr --filter 'ecx == 0x830' \
                                -e kvm:kvm_msr --filter 'write == 0' \
                                -e kvm:kvm_inj_virq --filter 'vector == 0xec' \
                                -e kvm:kvm_inj_virq --filter 'reinjected == 1' \
                                -e kvm:kvm_userspace_exit,kvm:kvm_inj_virq,kvm:kvm_msr,kvm:kvm_set_irq \
                                >/dev/null 2>&1 &
                            record_pid=$!
                        fi
                        sleep 0.5
                        ;;
                    debugfs) e0=$(cat /sys/kernel/debug/kvm/exits) ;;
                esac
                if ! ip netns exec "$ns" timeout $((secs + 60)) iperf3 -c "$target" -t "$secs" -J "${rargs[@]}" \
                    >"$json" 2>"$json.err"; then
                    echo "error $vmm: iperf3 $dir failed: $(head -c 300 "$json.err" | tr '\n' ' ') $(grep -m1 '"error"' "$json" || true)" >>"$res"
                    failed=1
                fi
                read -r t1 v1 < <(cpu_ticks "$vmm_pid")
                th1=$(thread_ticks "$vmm_pid")
                e1=n/a
                case "$method" in
                    perf)
                        kill -INT "$perf_pid" 2>/dev/null || true
                        wait "$perf_pid" 2>/dev/null || true
                        perf_pid=""
                        e1=$(awk -F, '/kvm:kvm_exit/ { print $1; exit }' "$logs/$vmm-$dir.perf" 2>/dev/null)
                        if [ -n "$record_pid" ]; then
                            kill -INT "$record_pid" 2>/dev/null || true
                            wait "$record_pid" 2>/dev/null || true
                            record_pid=""
                        fi
                        case "$e1" in '' | *[!0-9]*) e1=n/a ;; esac
                        ;;
                    debugfs) e1=$(($(cat /sys/kernel/debug/kvm/exits) - e0)) ;;
                esac
                read -r bytes bps < <(iperf_sum "$json")
                {
                    printf '%s_%s_bytes %s\n' "$vmm" "$dir" "$bytes"
                    printf '%s_%s_bps %s\n' "$vmm" "$dir" "$bps"
                    printf '%s_%s_cpu_ticks %s\n' "$vmm" "$dir" "$((t1 - t0))"
                    printf '%s_%s_vhost_ticks %s\n' "$vmm" "$dir" "$((v1 - v0))"
                    printf '%s_%s_exits %s\n' "$vmm" "$dir" "$e1"
                    printf '%s_%s_threads_before %s\n' "$vmm" "$dir" "$th0"
                    printf '%s_%s_threads_after %s\n' "$vmm" "$dir" "$th1"
                } >>"$res"
                say "$vmm $dir: $bytes bytes, $bps bit/s, $((t1 - t0)) CPU ticks ($((v1 - v0)) vhost), $e1 exits"
            done
            echo bye | ip netns exec "$ns" timeout 10 busybox nc "$target" 9001 >/dev/null 2>&1 || true
        else
            failed=1
        fi
        if [ -n "$vmm_pid" ]; then
            for ((i = 0; i < 300; i++)); do
                kill -0 "$vmm_pid" 2>/dev/null || break
                sleep 0.2
            done
            kill -KILL "$vmm_pid" 2>/dev/null || true
            wait "$vmm_pid" 2>/dev/null || true
            vmm_pid=""
        fi
    done
    echo "clk_tck $(getconf CLK_TCK)" >>"$res"
    echo "done" >>"$res"
    return "$failed"
}

if [ "${1:-}" = --measure ]; then
    shift
    [ "$#" -eq 9 ] || tapir_die "--measure takes 9 arguments"
    rc=0
    measure "$@" || rc=$?
    exit "$rc"
fi

# ============================================================================
# Host part: build, run the measuring part (directly or in L1), print a table.
# ============================================================================

model=virtio
net=tap
secs=4
vmms=tapir,qemu,qemu-vhost
boot_timeout=240
keep=""
baseline=""
build=1
while [ "$#" -gt 0 ]; do
    case "$1" in
        --model) [ "$#" -ge 2 ] || tapir_die "--model needs a value"; model=$2; shift 2 ;;
        --model=*) model=${1#*=}; shift ;;
        --net) [ "$#" -ge 2 ] || tapir_die "--net needs a value"; net=$2; shift 2 ;;
        --net=*) net=${1#*=}; shift ;;
        --time) [ "$#" -ge 2 ] || tapir_die "--time needs a value"; secs=$2; shift 2 ;;
        --time=*) secs=${1#*=}; shift ;;
        --vmms) [ "$#" -ge 2 ] || tapir_die "--vmms needs a value"; vmms=$2; shift 2 ;;
        --vmms=*) vmms=${1#*=}; shift ;;
        --boot-timeout) [ "$#" -ge 2 ] || tapir_die "--boot-timeout needs a value"; boot_timeout=$2; shift 2 ;;
        --boot-timeout=*) boot_timeout=${1#*=}; shift ;;
        --keep) [ "$#" -ge 2 ] || tapir_die "--keep needs a value"; keep=$2; shift 2 ;;
        --keep=*) keep=${1#*=}; shift ;;
        --no-build) build=0; shift ;;
        --exit-detail) export TAPIR_BENCH_EXIT_DETAIL=1; shift ;;
        --baseline) [ "$#" -ge 2 ] || tapir_die "--baseline needs a value"; baseline=$2; shift 2 ;;
        --baseline=*) baseline=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) tapir_die "unknown argument '$1' (see --help)" ;;
    esac
done
case "$model" in virtio | e1000 | rtl8139) ;; *) tapir_die "--model must be virtio, e1000 or rtl8139, got '$model'" ;; esac
{ is_uint "$secs" && [ "$secs" -ge 1 ]; } || tapir_die "--time must be a positive integer, got '$secs'"
{ is_uint "$boot_timeout" && [ "$boot_timeout" -ge 1 ]; } || tapir_die "--boot-timeout must be a positive integer"
for v in ${vmms//,/ }; do
    case "$v" in tapir | qemu | qemu-vhost) ;; *) tapir_die "--vmms: unknown column '$v' (tapir, qemu, qemu-vhost)" ;; esac
done
if [ -n "$baseline" ]; then
    [ -x "$baseline" ] || tapir_die "--baseline: $baseline is not an executable"
    TAPIR_BENCH_BASELINE=$(readlink -f "$baseline")
    export TAPIR_BENCH_BASELINE
    vmms="baseline,$vmms"
fi
case "$net" in tap | user) ;; *) tapir_die "--net must be tap or user, got '$net'" ;; esac
{ [ "$model" = virtio ] && [ "$net" = tap ]; } || vmms=$(tr , '\n' <<<"$vmms" | grep -vx qemu-vhost | paste -sd, -)
[ -n "$vmms" ] || tapir_die "--vmms is empty"

command -v qemu-system-x86_64 >/dev/null || tapir_die "qemu-system-x86_64 not found (package qemu-system-x86)"
command -v iperf3 >/dev/null || tapir_die "iperf3 not found (package iperf3)"
command -v busybox >/dev/null || tapir_die "busybox not found (package busybox-static)"

cd "$root"
tapir_release_and_guest "$root" "$build"

if [ -n "$keep" ]; then
    mkdir -p "$keep" || tapir_die "cannot create $keep"
    out=$(cd "$keep" && pwd -P)
    rm -rf "$out/results" "$out/logs"
else
    out=$(mktemp -d "${TMPDIR:-/tmp}/tapir-netbench.XXXXXX")
    trap 'rm -rf "$out"' EXIT
fi

mode=$(tapir_kvm_mode)
ncols=$(tr , '\n' <<<"$vmms" | wc -l)
mrc=0
case "$mode" in
    hw)
        where="directly on this host (hardware virtualization)"
        [ "$(id -u)" = 0 ] || tapir_die "needs root here (taps, network namespaces)"
        say "kvm mode hw: measuring directly on this host"
        "$self" --measure "$out" "$model" "$secs" "$vmms" "$boot_timeout" "$tapir_bin" "$KERNEL" "$INITRD" "$net" || mrc=$?
        ;;
    *)
        where="nested: L2 guests under nested KVM in a tapir-nested L1 (TCG) VM; host kvm mode $mode"
        say "kvm mode $mode: measuring inside one tapir-nested L1 VM (takes a few minutes)"
        l1_timeout=$((300 + ncols * (boot_timeout + 2 * secs + 180)))
        "$root/resources/nested/tapir-nested" --out "$out" --timeout "$l1_timeout" -- \
            "$self" --measure /run/out "$model" "$secs" "$vmms" "$boot_timeout" "$tapir_bin" "$KERNEL" "$INITRD" "$net" \
            </dev/null >&2 || mrc=$?
        ;;
esac

res=$out/results
[ -s "$res" ] || tapir_die "the measuring part produced no results (exit status $mrc)"

# --- the table ----------------------------------------------------------------

val() { awk -v k="$1" '$1 == k { print $2; exit }' "$res"; }
field() { awk -v k="$1" '$1 == k { sub(/^[^ ]+ /, ""); print; exit }' "$res"; }
clk=$(val clk_tck)
clk=${clk:-100}
# metric VMM DIR KIND: Mbit/s, CPU s/GB or exits/MB; n/a when not measured.
metric() {
    local b r t e
    b=$(val "$1_$2_bytes") r=$(val "$1_$2_bps") e=$(val "$1_$2_exits")
    if [ "$3" = vhost ]; then t=$(val "$1_$2_vhost_ticks"); else t=$(val "$1_$2_cpu_ticks"); fi
    awk -v k="$3" -v b="${b:-n/a}" -v r="${r:-n/a}" -v t="${t:-n/a}" -v e="${e:-n/a}" -v clk="$clk" 'BEGIN {
        num = "^[0-9.]+([eE][-+]?[0-9]+)?$"
        if (k == "mbps") { if (r ~ num) printf "%.0f\n", r / 1e6; else print "n/a"; exit }
        if (b !~ num || b + 0 == 0) { print "n/a"; exit }
        gb = b / 1e9
        if (k == "gb") printf "%.3f\n", gb
        else if (k == "cpu" || k == "vhost") { if (t ~ /^[0-9]+$/) printf "%.2f\n", t / clk / gb; else print "n/a" }
        else if (k == "exits") { if (e ~ /^[0-9]+$/) printf "%.1f\n", e / (b / 1e6); else print "n/a" }
    }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'; }

cols=()
for v in baseline tapir qemu qemu-vhost; do
    grep -qx "$v" <(tr , '\n' <<<"$vmms") && cols+=("$v")
done
rcols=()
for v in baseline qemu qemu-vhost; do
    [[ " ${cols[*]} " == *" $v "* ]] && [[ " ${cols[*]} " == *" tapir "* ]] && rcols+=("$v")
done

echo
if [ "$net" = tap ]; then
    echo "tapir vs QEMU network benchmark (iperf3 over a tap, $secs s per direction)"
else
    echo "tapir vs QEMU network benchmark (iperf3 through user-mode NAT and a host port forward, $secs s per direction)"
fi
echo "  where:   $where"
echo "  ran on:  $(field where)"
echo "  qemu:    $(field qemu_version); -accel kvm -cpu host -device $( [ "$model" = virtio ] && echo virtio-net-pci || echo "$model") $( [ "$net" = tap ] && echo "-netdev tap,vhost=off|on" || echo "-netdev user,hostfwd=tcp:127.0.0.1:5201-:5201")"
echo "  tapir:   $tapir_bin ($(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo '+local changes')) --nic model=$model,net=$net"
[ -z "${TAPIR_BENCH_BASELINE:-}" ] || echo "  baseline: $TAPIR_BENCH_BASELINE --nic model=$model,net=$net"
if [ "$net" = tap ]; then
    echo "  iperf3:  $(field iperf_version); guest $GUEST_IP runs the server, host $HOST_IP the client"
else
    echo "  iperf3:  $(field iperf_version); the guest (DHCP) runs the server, the host client connects to 127.0.0.1:5201"
fi
echo "  guest:   $MEM_MIB MiB, 1 vCPU, $KERNEL"
echo "  CPU:     utime+stime of the VMM process (and QEMU's vhost kernel thread) per GB received"
echo "  exits:   $(field exits_method) (perf: kvm:kvm_exit of the VMM's threads; debugfs: global kvm/exits)"
echo
hdr=$(printf '%-30s' metric)
for v in "${cols[@]}"; do hdr+=$(printf ' %11s' "$v"); done
for v in "${rcols[@]}"; do hdr+=$(printf ' %16s' "tapir/$v"); done
echo "$hdr"
for row in "mbps:h2g:host->guest (Mbit/s)" "mbps:g2h:guest->host (Mbit/s)" \
    "gb:h2g:host->guest moved (GB)" "gb:g2h:guest->host moved (GB)" \
    "cpu:h2g:host->guest CPU (s/GB)" "cpu:g2h:guest->host CPU (s/GB)" \
    "vhost:h2g:host->guest vhost CPU (s/GB)" "vhost:g2h:guest->host vhost CPU (s/GB)" \
    "exits:h2g:host->guest exits (/MB)" "exits:g2h:guest->host exits (/MB)"; do
    kind=${row%%:*} rest=${row#*:}
    dir=${rest%%:*} label=${rest#*:}
    line=$(printf '%-30s' "$label")
    declare -A m=()
    for v in "${cols[@]}"; do
        m[$v]=$(metric "$v" "$dir" "$kind")
        line+=$(printf ' %11s' "${m[$v]}")
    done
    for v in "${rcols[@]}"; do
        if [ "$kind" = gb ] || [ "$kind" = vhost ]; then line+=$(printf ' %16s' ""); else line+=$(printf ' %16s' "$(ratio "${m[tapir]}" "${m[$v]}")"); fi
    done
    echo "$line"
    unset m
done

errors=$(grep '^error ' "$res" | sed 's/^error //' || true)
skips=$(grep '^skip ' "$res" | sed 's/^skip //' || true)
[ -z "$skips" ] || { echo; printf 'skipped: %s\n' "$skips"; }
if [ -n "$errors" ] || ! grep -qx "done" "$res" || [ "$mrc" -ne 0 ]; then
    echo
    echo "FAILURES (measuring part exit status $mrc):"
    [ -z "$errors" ] || while IFS= read -r e; do printf '  %s\n' "$e"; done <<<"$errors"
    grep -qx "done" "$res" || echo "  the measuring part did not finish"
    [ -z "$keep" ] || echo "raw results and logs: $out"
    exit 1
fi
[ -z "$keep" ] || echo "raw results and logs: $out"
exit 0
