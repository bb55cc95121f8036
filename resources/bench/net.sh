#!/usr/bin/env bash
# net.sh: network throughput of tapir's NIC next to QEMU's (iperf3 over a
# tap, a macvtap or user-mode NAT, both directions), plus the VMM's CPU time per GB and the VM exits per MB
# moved. A benchmark, not a test: it exits 0 when all measurements were
# taken, whatever the numbers.
#
# Usage: resources/bench/net.sh [options]
#        resources/bench/net.sh --report DIR   # the table again from a --keep DIR
# Options:
#   --model M         NIC model: virtio, e1000 or rtl8139 (default virtio)
#   --net N           backend: tap (default), user (user-mode NAT: tapir's
#                     net=user against QEMU's -netdev user, i.e. libslirp)
#                     or passthrough (direct attach: tapir's net=passthrough
#                     against QEMU's -netdev tap,fd= on a macvtap, below)
#   --time S          iperf3 seconds per direction (default 4)
#   --reps N          repetitions (default 3, at least 1): each one boots a
#                     fresh guest in every column once, in alternating order
#                     (rep 1 left to right, rep 2 right to left, ...)
#   --vmms LIST       comma-separated columns out of tapir, qemu, qemu-vhost
#                     (default all three; qemu-vhost only for virtio over
#                     a tap or a macvtap)
#   --boot-timeout S  give up on a guest that is not serving after S seconds
#                     (default 240)
#   --l1-cpus N       vCPUs of the nested L1 VM (default: tapir-nested's, 1);
#                     the ratios depend on it (the table's "ran on" line
#                     says how many L1 had)
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
#                     into logs/VMM-rREP-DIR.exits (perf stat; keep it with
#                     --keep); perf only
#   --report DIR      print the table from DIR/results (and DIR/meta) of an
#                     earlier --keep DIR, and exit as that run did; boots
#                     nothing (also for checking the table on made-up results)
#   -h, --help        show this help
# Figures: every figure in the table is the median over the repetitions that
# completed (the spread, min-max, is shown for the throughput; the ratio
# columns divide the medians); each repetition's own figures are listed
# above the table. A VMM that exits before its guest serves is "exited
# early", one that exits (or whose guest stops answering) during the
# transfers "died", in that repetition; its other repetitions still count,
# and each column says how many completed (e.g. 2/3). A figure that is
# negative or not a number (a measuring glitch) is "invalid", left out of
# its median (marked *) and listed under the table. Under the table, "guest
# sees" says what differs between tapir's and QEMU's device for the model
# and backend (offloads, interrupt mitigation, vhost, NAT).
# Columns: tapir (--nic model=M,net=tap), QEMU with -netdev tap,vhost=off and
# QEMU with vhost=on (/dev/vhost-net, after `modprobe vhost_net`). With
# --net user: tapir with --nic model=M,net=user and QEMU with -netdev user,
# both forwarding host 127.0.0.1:5201 to the guest's iperf3 server (the
# guest takes its address by DHCP), no vhost column. With --net
# passthrough: a veth pair, one end (tbv0, up, no address) in the VMMs'
# namespace as the macvtap parent, the other (tbv1, 192.168.150.1/24) in a
# second namespace, the "namespace host", where the iperf3 client runs (a
# macvtap guest reaches the outside of its parent, not the host that owns
# it); tapir with --nic model=M,net=passthrough,host=tbv0 (its own macvtap);
# QEMU with -netdev tap,fd=N,vhost=off|on, N the open /dev/tapN of a
# macvtap tbq0 (mode bridge, the guest's MAC) the script makes on tbv0
# before each QEMU run and deletes after it (vhost=on: QEMU opens
# /dev/vhost-net itself). Every VMM
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
# Exit status: 0 when all measurements were taken (invalid figures are
# reported but do not change it); 1 when a VMM failed, exited early or died
# in any repetition (the table shows what was measured and why the rest was
# not); 125 on setup errors (build, guest image, L1) and bad options.
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
# --net passthrough: the macvtap parent (VMMs' namespace), its veth peer
# (the namespace host's) and the macvtap made for QEMU.
PT_PARENT=tbv0
PT_PEER=tbv1
QMV=tbq0

usage() {
    sed -n '/^# Usage:/,/^set -euo/p' "$self" | sed -e '$d' -e 's/^# \{0,1\}//'
}
is_uint() { case "$1" in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }
say() { printf 'net.sh: %s\n' "$*" >&2; }

# ============================================================================
# Measuring part: runs where /dev/kvm can boot Linux (directly, or in L1).
#   net.sh --measure OUTDIR MODEL TIME VMMS BOOT_TIMEOUT TAPIR KERNEL INITRD NET REPS
# Writes OUTDIR/results (one "key value" per line) and OUTDIR/logs/*.log.
# Per repetition R and VMM V: the figures V_rR_DIR_{bytes,bps,cpu_ticks,...}
# and one "outcome V R STATE WHY" line, STATE being ok, early (exited before
# the guest served), died (exited, or the guest stopped answering, during
# the transfers) or failed (anything else); "order R V1,V2,..." gives each
# repetition's order, "note V R TEXT" what happened after the transfers.
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
# The negotiated virtio feature bits (offloads), for the log.
for f in /sys/bus/virtio/devices/*/features; do [ -r "$f" ] && say "virtio features $(cat "$f")"; done
if iperf3 -s -D >/dev/null 2>&1; then say "iperf ready on $IF"; else say "iperf FAIL"; fi
i=0
while kill -0 "$bye" 2>/dev/null && [ "$i" -lt 4500 ]; do sleep 0.2; i=$((i + 1)); done
say done
EOF
}

ns=""
hns=""
qfd=""
vmm_pid=""
vmm_rc=0
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
    [ -z "$qfd" ] || exec {qfd}>&-
    if [ -n "$ns" ]; then
        ip -n "$ns" link del "$TAP" >/dev/null 2>&1 || true
        ip -n "$ns" link del "$QMV" >/dev/null 2>&1 || true
        ip -n "$ns" link del "$PT_PARENT" >/dev/null 2>&1 || true
        ip netns del "$ns" >/dev/null 2>&1 || true
    fi
    [ -z "$hns" ] || ip netns del "$hns" >/dev/null 2>&1 || true
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
# Linux 6.4, threads of the VMM from 6.4 on), and the vhost part alone;
# "n/a n/a" when PID is gone (never 0, which would make a negative delta).
cpu_ticks() {
    local pid=$1 t=0 v=0 s rest p
    s=$(cat "/proc/$pid/stat" 2>/dev/null) || { echo "n/a n/a"; return; }
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

# B - A when both are counts, else n/a.
tick_delta() { if is_uint "$1" && is_uint "$2"; then echo $(($2 - $1)); else echo n/a; fi; }

# "exit status N" or "killed by signal NAME" for a wait status.
exit_desc() {
    if [ "$1" -gt 128 ]; then
        printf 'killed by signal %s' "$(kill -l "$(($1 - 128))" 2>/dev/null || echo $(($1 - 128)))"
    else
        printf 'exit status %s' "$1"
    fi
}

# The last non-empty line of a console log, shortened.
last_line() { { tr -d '\r' <"$1" | grep -v '^[[:space:]]*$' | tail -n 1 | cut -c 1-160; } 2>/dev/null || true; }

# Waits for the VMM (already exited or killed): its wait status in vmm_rc.
reap_vmm() {
    vmm_rc=0
    wait "$vmm_pid" 2>/dev/null || vmm_rc=$?
    vmm_pid=""
}

dir_name() { if [ "$1" = h2g ]; then echo "host->guest"; else echo "guest->host"; fi; }

# --net passthrough for QEMU: a macvtap $QMV on $PT_PARENT in $ns (mode
# bridge, the guest's MAC, the host's IPv6 off as tapir does on its own),
# its /dev/tapN open read-write as fd $qfd for -netdev tap,fd=. Removes
# any macvtap left in $ns first (tapir's, after a SIGKILL: the same MAC
# would be refused). Prints why on failure.
qemu_macvtap() {
    local l idx dev want have
    for l in $(ip -n "$ns" -o link show type macvtap 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'); do
        ip -n "$ns" link del "$l" >/dev/null 2>&1 || true
    done
    ip -n "$ns" link add link "$PT_PARENT" name "$QMV" type macvtap mode bridge 2>&1 || return 1
    ip -n "$ns" link set "$QMV" address "$GUEST_MAC" 2>&1 || return 1
    ip netns exec "$ns" sh -c "echo 1 >/proc/sys/net/ipv6/conf/$QMV/disable_ipv6" 2>/dev/null || true
    ip -n "$ns" link set "$QMV" up 2>&1 || return 1
    idx=$(ip netns exec "$ns" cat "/sys/class/net/$QMV/ifindex") || return 1
    dev=$(ip netns exec "$ns" cat "/sys/class/net/$QMV/macvtap/tap$idx/dev") || return 1
    # /dev/tapN from sysfs's major:minor where no devtmpfs or udev made it.
    want=$(printf '%x:%x' "${dev%%:*}" "${dev#*:}")
    have=$(stat -c '%t:%T' "/dev/tap$idx" 2>/dev/null || true)
    if [ ! -c "/dev/tap$idx" ] || [ "$have" != "$want" ]; then
        rm -f "/dev/tap$idx"
        mknod "/dev/tap$idx" c "${dev%%:*}" "${dev#*:}" 2>&1 || return 1
    fi
    exec {qfd}<>"/dev/tap$idx" || { echo "cannot open /dev/tap$idx"; return 1; }
}

# One repetition REP of one VMM: boots a fresh guest, runs iperf3 both
# ways, lets the guest power off. Uses measure's locals (model, net, secs,
# boot_timeout, tapir, kernel, qdev, target, method, res, logs). Writes the
# figures and one outcome line to $res; returns 1 unless the outcome is ok.
measure_one() {
    local vmm=$1 rep=$2
    local tag=${vmm}_r$rep log=$logs/$vmm-r$rep.log
    local cmd i dir t0 t1 v0 v1 e0 e1 th0 th1 json bytes bps rargs irc ticks vticks
    local state="" why=""
    case "$vmm" in
        tapir | baseline)
            local bin=$tapir
            [ "$vmm" = tapir ] || bin=${TAPIR_BENCH_BASELINE:?}
            local nic="model=$model,net=tap,ifname=$TAP,mac=$GUEST_MAC"
            case "$net" in
                user) nic="model=$model,net=user,mac=$GUEST_MAC,hostfwd=tcp::5201-:5201,hostfwd=tcp::9001-:9001" ;;
                passthrough) nic="model=$model,net=passthrough,host=$PT_PARENT,mac=$GUEST_MAC" ;;
            esac
            cmd=("$bin" run --kernel "$kernel" --initrd "$mwork/initrd" --memory "${MEM_MIB}M"
                --cpus 1 --cmdline "$CMDLINE" --nic "$nic")
            ;;
        qemu | qemu-vhost)
            local vh=off
            [ "$vmm" = qemu ] || vh=on
            # shellcheck disable=SC2054 # commas belong to QEMU option values
            cmd=(qemu-system-x86_64 -accel kvm -cpu host -m "$MEM_MIB" -smp 1 -nographic -no-reboot
                -nodefaults -serial stdio -kernel "$kernel" -initrd "$mwork/initrd" -append "$CMDLINE"
                -device "$qdev,netdev=n0,romfile=,mac=$GUEST_MAC")
            case "$net" in
                tap) cmd+=(-netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no,vhost=$vh") ;;
                user) cmd+=(-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:5201-:5201,hostfwd=tcp:127.0.0.1:9001-:9001") ;;
                passthrough)
                    # In this shell, not in $(...): the fd must stay open here.
                    if ! qemu_macvtap >"$log.macvtap" 2>&1; then
                        why="cannot set up macvtap $QMV on $PT_PARENT for QEMU: $(tr -s '\n' ' ' <"$log.macvtap" | cut -c 1-200)"
                        [ -z "$qfd" ] || exec {qfd}>&-
                        qfd=""
                        ip -n "$ns" link del "$QMV" >/dev/null 2>&1 || true
                        printf 'outcome %s %s failed %s\n' "$vmm" "$rep" "$why" >>"$res"
                        return 1
                    fi
                    cmd+=(-netdev "tap,id=n0,fd=$qfd,vhost=$vh")
                    ;;
            esac
            ;;
    esac
    say "rep $rep: $vmm: booting the guest"
    printf '+ %s\n' "${cmd[*]}" >"$log.cmd"
    # `ip netns exec` execs the VMM: $! is the VMM's pid.
    ip netns exec "$ns" "${cmd[@]}" </dev/null >"$log" 2>&1 &
    vmm_pid=$!
    # QEMU has its copy of the macvtap's fd; the next VMM must not.
    [ -z "$qfd" ] || exec {qfd}>&-
    qfd=""
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
            kill -0 "$vmm_pid" 2>/dev/null || break
            if [ "$net" = user ]; then
                # No route to the guest, only the forwards (which accept
                # at once whatever the guest does): its lease says enough.
                if ! grep -q 'NET: dhcp FAIL' "$log"; then ready=1; break; fi
            elif ip netns exec "$cns" busybox ping -c 1 -W 1 "$GUEST_IP" >/dev/null 2>&1; then
                ready=1
                break
            fi
            sleep 0.5
        done
    fi
    if [ "$ready" != 1 ]; then
        if ! kill -0 "$vmm_pid" 2>/dev/null; then
            reap_vmm
            state=early
            why="$(exit_desc "$vmm_rc") before the guest served iperf3: $(last_line "$log")"
        elif grep -q 'NET: iperf FAIL' "$log"; then
            state=failed why="the guest could not start iperf3 -s (log $vmm-r$rep.log)"
        elif grep -q 'NET: iperf ready' "$log"; then
            state=failed why="the guest does not answer ping, or got no DHCP lease (log $vmm-r$rep.log)"
        else
            state=failed why="the guest did not report 'NET: iperf ready' within $boot_timeout s (log $vmm-r$rep.log)"
        fi
    fi
    if [ -z "$state" ]; then
        sleep 1
        for dir in h2g g2h; do
            rargs=()
            [ "$dir" = h2g ] || rargs=(-R)
            json=$logs/$vmm-r$rep-$dir.json
            read -r t0 v0 < <(cpu_ticks "$vmm_pid")
            th0=$(thread_ticks "$vmm_pid")
            e0=0
            case "$method" in
                perf)
                    perf stat -e kvm:kvm_exit -p "$vmm_pid" -x, -o "$logs/$vmm-r$rep-$dir.perf" >/dev/null 2>&1 &
                    perf_pid=$!
                    if [ "${TAPIR_BENCH_EXIT_DETAIL:-0}" = 1 ]; then
                        # Counts only: perf record trips on the VMM's
                        # namespaces here. SVM exit codes: NPF (MMIO and
                        # faults) 0x400, MSR 0x7c, INTR 0x60, VINTR 0x64,
                        # HLT 0x78, IOIO 0x7b; VMX reasons are others.
                        perf stat -x, -o "$logs/$vmm-r$rep-$dir.exits" -p "$vmm_pid" \
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
                debugfs) e0=$(cat /sys/kernel/debug/kvm/exits 2>/dev/null || echo n/a) ;;
            esac
            irc=0
            ip netns exec "$cns" timeout $((secs + 60)) iperf3 -c "$target" -t "$secs" -J "${rargs[@]}" \
                >"$json" 2>"$json.err" || irc=$?
            read -r t1 v1 < <(cpu_ticks "$vmm_pid")
            th1=$(thread_ticks "$vmm_pid")
            e1=n/a
            case "$method" in
                perf)
                    kill -INT "$perf_pid" 2>/dev/null || true
                    wait "$perf_pid" 2>/dev/null || true
                    perf_pid=""
                    e1=$(awk -F, '/kvm:kvm_exit/ { print $1; exit }' "$logs/$vmm-r$rep-$dir.perf" 2>/dev/null || true)
                    if [ -n "$record_pid" ]; then
                        kill -INT "$record_pid" 2>/dev/null || true
                        wait "$record_pid" 2>/dev/null || true
                        record_pid=""
                    fi
                    case "$e1" in '' | *[!0-9]*) e1=n/a ;; esac
                    ;;
                debugfs) e1=$(tick_delta "$e0" "$(cat /sys/kernel/debug/kvm/exits 2>/dev/null || echo n/a)") ;;
            esac
            # A VMM gone by now did not survive this transfer, whatever
            # iperf3 made of it (its CPU ticks would be garbage too).
            if ! kill -0 "$vmm_pid" 2>/dev/null; then
                reap_vmm
                state=died why="$(exit_desc "$vmm_rc") during $(dir_name "$dir"): $(last_line "$log")"
            fi
            read -r bytes bps < <(iperf_sum "$json")
            ticks=$(tick_delta "$t0" "$t1")
            vticks=$(tick_delta "$v0" "$v1")
            {
                printf '%s_%s_bytes %s\n' "$tag" "$dir" "$bytes"
                printf '%s_%s_bps %s\n' "$tag" "$dir" "$bps"
                printf '%s_%s_cpu_ticks %s\n' "$tag" "$dir" "$ticks"
                printf '%s_%s_vhost_ticks %s\n' "$tag" "$dir" "$vticks"
                printf '%s_%s_exits %s\n' "$tag" "$dir" "$e1"
                printf '%s_%s_threads_before %s\n' "$tag" "$dir" "$th0"
                printf '%s_%s_threads_after %s\n' "$tag" "$dir" "$th1"
            } >>"$res"
            say "rep $rep: $vmm $dir: $bytes bytes, $bps bit/s, $ticks CPU ticks ($vticks vhost), $e1 exits"
            if [ -z "$state" ] && [ "$irc" -ne 0 ]; then
                why="iperf3 $(dir_name "$dir") failed:"
                why+=$(head -c 300 "$json.err" 2>/dev/null | tr -s '\n\t ' ' ' | sed 's/^ *\(.\)/ \1/; s/ *$//' || true)
                why+=$(grep -m1 '"error"' "$json" 2>/dev/null | sed 's/^ */ /; s/ *$//' || true)
                if [ "$net" != user ] && ! ip netns exec "$cns" busybox ping -c 2 -W 1 "$GUEST_IP" >/dev/null 2>&1; then
                    state=died why="the guest stopped answering during $(dir_name "$dir") ($vmm still running); $why"
                else
                    state=failed
                fi
            fi
            [ -z "$state" ] || break
        done
    fi
    if [ -n "$vmm_pid" ]; then
        if [ -z "$state" ]; then
            echo bye | ip netns exec "$cns" timeout 10 busybox nc "$target" 9001 >/dev/null 2>&1 || true
            for ((i = 0; i < 300; i++)); do
                kill -0 "$vmm_pid" 2>/dev/null || break
                sleep 0.2
            done
            if kill -0 "$vmm_pid" 2>/dev/null; then
                kill -KILL "$vmm_pid" 2>/dev/null || true
                reap_vmm
                echo "note $vmm $rep did not exit within 60 s after the transfers (the guest was told to power off); killed" >>"$res"
            else
                reap_vmm
                [ "$vmm_rc" -eq 0 ] ||
                    echo "note $vmm $rep $(exit_desc "$vmm_rc") at the guest's poweroff, after the transfers: $(last_line "$log")" >>"$res"
            fi
        else
            kill -KILL "$vmm_pid" 2>/dev/null || true
            reap_vmm
        fi
    fi
    # QEMU's macvtap goes with its run (tapir deletes its own).
    [ "$net" != passthrough ] || ip -n "$ns" link del "$QMV" >/dev/null 2>&1 || true
    printf 'outcome %s %s %s %s\n' "$vmm" "$rep" "${state:-ok}" "${why//$'\n'/ }" >>"$res"
    [ -z "$state" ]
}

measure() {
    local out=$1 model=$2 secs=$3 vmms=$4 boot_timeout=$5 tapir=$6 kernel=$7 initrd=$8 net=$9 reps=${10}
    # Where iperf3 and the "bye" port are reached from the host side.
    local target=$GUEST_IP
    [ "$net" != user ] || target=127.0.0.1
    local res=$out/results logs=$out/logs
    mkdir -p "$logs"
    : >"$res"
    trap cleanup_measure EXIT
    trap 'cleanup_measure; exit 143' TERM
    trap 'cleanup_measure; exit 130' INT
    mwork=$(mktemp -d /tmp/tapir-netbench.XXXXXX)

    {
        printf 'model %s\nnet %s\nsecs %s\nreps %s\nvmms %s\n' "$model" "$net" "$secs" "$reps" "$vmms"
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
    # Where iperf3's client, ping and the "bye" run: the VMMs' namespace,
    # or with passthrough the namespace host at the parent veth's peer.
    cns=$ns
    case "$net" in
        tap)
            if ! { ip netns add "$ns" && ip -n "$ns" link set lo up &&
                ip -n "$ns" tuntap add dev "$TAP" mode tap &&
                ip -n "$ns" addr add "$HOST_IP/24" dev "$TAP" &&
                ip -n "$ns" link set "$TAP" up; }; then
                echo "error all: cannot set up namespace $ns with tap $TAP" >>"$res"
                return 1
            fi
            ;;
        user)
            if ! { ip netns add "$ns" && ip -n "$ns" link set lo up; }; then
                echo "error all: cannot set up namespace $ns" >>"$res"
                return 1
            fi
            ;;
        passthrough)
            hns=tapir-netbench-host-$$
            cns=$hns
            if ! { ip netns add "$ns" && ip -n "$ns" link set lo up &&
                ip netns add "$hns" && ip -n "$hns" link set lo up &&
                ip -n "$ns" link add "$PT_PARENT" type veth peer name "$PT_PEER" netns "$hns" &&
                ip -n "$ns" link set "$PT_PARENT" up &&
                ip -n "$hns" addr add "$HOST_IP/24" dev "$PT_PEER" &&
                ip -n "$hns" link set "$PT_PEER" up; }; then
                echo "error all: cannot set up namespaces $ns and $hns with veth $PT_PARENT-$PT_PEER" >>"$res"
                return 1
            fi
            ;;
    esac

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

    # Columns that cannot run at all are said so once, not per repetition.
    local failed=0 vmm run=()
    for vmm in ${vmms//,/ }; do
        case "$vmm" in
            tapir | baseline | qemu) ;;
            qemu-vhost)
                if [ "$model" != virtio ] || [ "$net" = user ]; then
                    echo "skip $vmm: vhost is for virtio over a tap or a macvtap only" >>"$res"
                    continue
                fi
                [ -c /dev/vhost-net ] || modprobe vhost_net >/dev/null 2>&1 || true
                if [ ! -c /dev/vhost-net ]; then
                    echo "error $vmm: /dev/vhost-net is missing (modprobe vhost_net failed)" >>"$res"
                    failed=1
                    continue
                fi
                ;;
            *) echo "error $vmm: unknown VMM" >>"$res"; failed=1; continue ;;
        esac
        run+=("$vmm")
    done

    # Repetition 1 runs the columns left to right, 2 right to left, ...
    local rep order=() j
    for ((rep = 1; rep <= reps; rep++)); do
        order=()
        for ((j = 0; j < ${#run[@]}; j++)); do
            if ((rep % 2)); then order+=("${run[j]}"); else order+=("${run[${#run[@]} - 1 - j]}"); fi
        done
        [ "${#order[@]}" -gt 0 ] || break
        echo "order $rep $(IFS=,; echo "${order[*]}")" >>"$res"
        say "repetition $rep of $reps: ${order[*]}"
        for vmm in "${order[@]}"; do
            measure_one "$vmm" "$rep" || failed=1
        done
    done
    echo "clk_tck $(getconf CLK_TCK)" >>"$res"
    echo "done" >>"$res"
    return "$failed"
}

if [ "${1:-}" = --measure ]; then
    shift
    [ "$#" -eq 10 ] || tapir_die "--measure takes 10 arguments"
    rc=0
    measure "$@" || rc=$?
    exit "$rc"
fi

# ============================================================================
# The report: the table from OUTDIR/results (the measuring part) and
# OUTDIR/meta (the host part: where, which binaries, its exit status).
# ============================================================================

# What the guest sees differently between tapir's device and QEMU's, for
# MODEL and NET (from crates/nic/src, docs/nic-*.md, docs/backend-*.md and
# QEMU's hw/net/{virtio-net,e1000,rtl8139}.c).
guest_sees() {
    local model=$1 net=$2
    # A macvtap's /dev/tapN is a tap to both VMMs (vnet header,
    # TUNSETOFFLOAD): the device is the same as over a tap.
    local as=$net
    [ "$net" != passthrough ] || as=tap
    case "$model.$as" in
        virtio.tap)
            echo "offloads:   both offer checksum and TSO4/TSO6/ECN both ways through the tap's vnet header;"
            echo "            QEMU also offers UFO (where the tap takes it) and a control queue, tapir neither"
            echo "interrupts: both MSI-X with EVENT_IDX, no other mitigation (tapir 3 vectors, QEMU 4)"
            echo "data path:  tapir: its NIC worker thread (ioeventfd kicks); qemu: QEMU's main loop"
            echo "            (vhost=off); qemu-vhost: the kernel's vhost-net worker (vhost=on)"
            ;;
        virtio.user)
            echo "offloads:   tapir's NAT takes checksum and TSO4 (CSUM, HOST_TSO4) and sends TCP segments of up"
            echo "            to 64 KiB (GUEST_CSUM, GUEST_TSO4); QEMU's virtio-net has no vnet header to libslirp,"
            echo "            so it offers no checksum or TSO: 1514-byte frames, checksummed by the guest, both ways"
            echo "interrupts: both MSI-X with EVENT_IDX, no other mitigation (tapir 3 vectors, QEMU 4)"
            ;;
        e1000.tap)
            echo "offloads:   tapir asks the tap for checksum offload and TSO: the guest's TSO/checksum contexts go"
            echo "            out as one GSO frame, 64 KiB frames from the host are cut up by tapir, and RXCSUM"
            echo "            reports IP/TCP checksums good (Linux skips its own pass); QEMU's e1000 uses no vnet"
            echo "            header: TSO and checksums in software, 1514-byte frames in, IXSM (no checksum status)"
            echo "interrupts: tapir honours ITR (assertions ITR x 256 ns apart; RDTR/RADV/TIDV/TADV stored, not"
            echo "            modelled); QEMU (mitigation=on, its default) the least of ITR, RADV (if RDTR) and TADV"
            echo "            (if IDE), never under 500 x 256 ns; tapir walks the rings on its NIC worker thread"
            ;;
        e1000.user)
            echo "offloads:   tapir's NAT takes the guest's TSO/checksum contexts as one frame and hands the model TCP"
            echo "            segments of up to 64 KiB, which it cuts up and reports good (RXCSUM); QEMU's e1000 and"
            echo "            libslirp exchange 1514-byte frames (TSO and checksums in software, IXSM on receive)"
            echo "interrupts: tapir honours ITR (assertions ITR x 256 ns apart; RDTR/RADV/TIDV/TADV stored, not"
            echo "            modelled); QEMU (mitigation=on, its default) the least of ITR, RADV (if RDTR) and TADV"
            echo "            (if IDE), never under 500 x 256 ns"
            ;;
        rtl8139.tap)
            echo "offloads:   (8139cp) tapir asks the tap for checksum offload and TSO: 64 KiB frames from the host"
            echo "            are cut up by tapir, C+ large send goes out as one GSO frame, C+ TCP checksum requests"
            echo "            as partial checksums, and receive descriptors carry checksum status (Linux skips its"
            echo "            pass); QEMU's rtl8139 uses no vnet header: large send and checksums in software, no"
            echo "            receive checksum status"
            echo "interrupts: IntrMitigate is modelled by neither; tapir moves the line once per worker pass and"
            echo "            completes a small frame sent from the receive poll before the doorbell write returns"
            ;;
        rtl8139.user)
            echo "offloads:   (8139cp) tapir's NAT hands the model TCP segments of up to 64 KiB, cut up there with"
            echo "            checksum status in the descriptors, and takes C+ TCP checksum requests as partial"
            echo "            checksums; QEMU's rtl8139 and libslirp exchange 1514-byte frames, no checksum status"
            echo "interrupts: IntrMitigate is modelled by neither; tapir moves the line once per worker pass and"
            echo "            completes a small frame sent from the receive poll before the doorbell write returns"
            ;;
        *) echo "?: no notes for model $model with net=$net" ;;
    esac
    if [ "$net" = user ]; then
        echo "NAT:        tapir's own (crates/net-user, smoltcp for TCP) against QEMU's libslirp; no vhost"
    fi
    if [ "$net" = passthrough ]; then
        echo "backend:    both on a macvtap (mode bridge) over veth $PT_PARENT: tapir makes its own, tmv<pid>n0; QEMU"
        echo "            gets $QMV's /dev/tapN as -netdev tap,fd=. Its /dev/tapN takes the vnet header and"
        echo "            TUNSETOFFLOAD as a tap does, so the offloads are those over a tap (above); IPv6 off on"
        echo "            both macvtaps"
        [ "$model" != virtio ] || echo "            (each guest logs the feature bits it negotiated: NET: virtio features, in logs/)"
    fi
}

# fig KIND BYTES BPS TICKS EXITS CLK METHOD: one repetition's figure, not
# rounded: Mbit/s (mbps), GB moved (gb), CPU s/GB (cpu, vhost) or exits/MB;
# n/a when not measured (no exit counter); "invalid:WHAT=RAW" for a value
# that is negative, zero where it cannot be, or not a number.
fig() {
    awk -v k="$1" -v b="$2" -v r="$3" -v t="$4" -v e="$5" -v clk="$6" -v m="$7" 'BEGIN {
        num = "^[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$"; whole = "^[0-9]+$"
        if (k == "mbps") { if (r ~ num && r + 0 > 0) printf "%.6f\n", r / 1e6; else print "invalid:iperf3 bit/s=" r; exit }
        if (b !~ whole || b + 0 == 0) { print "invalid:bytes=" b; exit }
        gb = b / 1e9
        if (k == "gb") printf "%.6f\n", gb
        else if (k == "cpu" || k == "vhost") { if (t ~ whole) printf "%.6f\n", t / clk / gb; else print "invalid:" (k == "cpu" ? "CPU" : "vhost") " ticks=" t }
        else if (k == "exits") {
            if (m == "none") print "n/a"
            else if (e ~ whole) printf "%.6f\n", e / (b / 1e6)
            else print "invalid:VM exits=" e
        }
    }'
}

# fmt KIND VALUE: VALUE rounded as the table shows KIND.
fmt() {
    case "$2" in
        n/a | '') echo n/a; return ;;
        invalid:*) echo "invalid(${2#*=})"; return ;;
    esac
    case "$1" in
        mbps) printf '%.0f\n' "$2" ;;
        gb) printf '%.3f\n' "$2" ;;
        cpu | vhost) printf '%.2f\n' "$2" ;;
        *) printf '%.1f\n' "$2" ;;
    esac
}

# stats V...: "MEDIAN MIN MAX" of the values, or "n/a n/a n/a" for none.
stats() {
    [ "$#" -gt 0 ] || { echo "n/a n/a n/a"; return; }
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 }
        END { m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; print m, a[1], a[NR] }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'; }

# report DIR: prints the table; returns 1 when a VMM failed (or the
# measuring part did), else 0.
report() {
    local dir=$1
    local res=$dir/results k a b rest
    local -A R=() M=() ost=() owhy=() ord=() colerr=()
    local notes=()
    while read -r k rest; do
        if [ -n "$k" ] && [ -z "${R[$k]+x}" ]; then R[$k]=$rest; fi
    done <"$res"
    if [ -r "$dir/meta" ]; then
        while read -r k rest; do
            if [ -n "$k" ] && [ -z "${M[$k]+x}" ]; then M[$k]=$rest; fi
        done <"$dir/meta"
    fi
    while read -r k a b rest; do
        case "$k" in
            outcome) ost["$a $b"]=${rest%% *} owhy["$a $b"]=${rest#"${rest%% *}"} ;;
            order) ord[$a]=$b ;;
            note) notes+=("$a, rep $b: $rest") ;;
            error) colerr[${a%:}]=1 ;;
        esac
    done <"$res"
    local model=${R[model]:-?} net=${R[net]:-tap} secs=${R[secs]:-?} reps=${R[reps]:-1}
    local vmms=${R[vmms]:-} clk=${R[clk_tck]:-100} method=${R[exits_method]:-none}
    is_uint "$reps" && [ "$reps" -ge 1 ] || reps=1
    local mrc=${M[measure_rc]:-0}
    is_uint "$mrc" || mrc=1
    local finished=0
    ! grep -qx "done" "$res" || finished=1

    local cols=() rcols=() v
    for v in baseline tapir qemu qemu-vhost; do
        [[ ",$vmms," == *",$v,"* ]] && cols+=("$v")
    done
    for v in baseline qemu qemu-vhost; do
        [[ " ${cols[*]} " == *" $v "* ]] && [[ " ${cols[*]} " == *" tapir "* ]] && rcols+=("$v")
    done

    echo
    if [ "$net" = tap ]; then
        echo "tapir vs QEMU network benchmark (iperf3 over a tap, $secs s per direction)"
    elif [ "$net" = passthrough ]; then
        echo "tapir vs QEMU network benchmark (iperf3 through a macvtap on a veth, from the veth's peer namespace, $secs s per direction)"
    else
        echo "tapir vs QEMU network benchmark (iperf3 through user-mode NAT and a host port forward, $secs s per direction)"
    fi
    echo "  where:   ${M[where]:-?}"
    echo "  ran on:  ${R[where]:-?}"
    local qnet="-netdev tap,vhost=off|on" nicx=""
    case "$net" in
        user) qnet="-netdev user,hostfwd=tcp:127.0.0.1:5201-:5201" ;;
        passthrough) qnet="-netdev tap,fd=N,vhost=off|on (N: /dev/tapN of macvtap $QMV on $PT_PARENT, mode bridge)" nicx=",host=$PT_PARENT" ;;
    esac
    echo "  qemu:    ${R[qemu_version]:-?}; -accel kvm -cpu host -device $( [ "$model" = virtio ] && echo virtio-net-pci || echo "$model") $qnet"
    echo "  tapir:   ${M[tapir]:-?} --nic model=$model,net=$net$nicx"
    [ -z "${M[baseline]:-}" ] || echo "  baseline: ${M[baseline]} --nic model=$model,net=$net$nicx"
    if [ "$net" = passthrough ]; then
        echo "  iperf3:  ${R[iperf_version]:-?}; guest $GUEST_IP runs the server, $HOST_IP ($PT_PEER, the veth's peer, in a namespace of its own) the client"
    elif [ "$net" = tap ]; then
        echo "  iperf3:  ${R[iperf_version]:-?}; guest $GUEST_IP runs the server, host $HOST_IP the client"
    else
        echo "  iperf3:  ${R[iperf_version]:-?}; the guest (DHCP) runs the server, the host client connects to 127.0.0.1:5201"
    fi
    echo "  guest:   $MEM_MIB MiB, 1 vCPU, ${M[kernel]:-?}"
    echo "  CPU:     utime+stime of the VMM process (and QEMU's vhost kernel thread) per GB received"
    echo "  exits:   $method (perf: kvm:kvm_exit of the VMM's threads; debugfs: global kvm/exits)"
    echo "  figures: medians of $reps repetition(s), a fresh guest per VMM each, in alternating order"

    # Every repetition's figures, and the values behind the medians.
    local -A vals=() nok=() ninv=()
    local -A fv=() seen=()
    local invalid=() r st why line x kind d
    local kinds="mbps gb cpu vhost exits"
    echo
    echo "per repetition (Mbit/s, CPU s/GB and exits/MB, host->guest / guest->host):"
    local torun=() rorder j
    for v in "${cols[@]}"; do [ -n "${colerr[$v]:-}" ] || torun+=("$v"); done
    for ((r = 1; r <= reps; r++)); do
        # The order the measuring part used, or would have used.
        rorder=${ord[$r]:-}
        if [ -z "$rorder" ]; then
            for ((j = 0; j < ${#torun[@]}; j++)); do
                if ((r % 2)); then rorder+=",${torun[j]}"; else rorder+=",${torun[${#torun[@]} - 1 - j]}"; fi
            done
        fi
        for v in ${rorder//,/ }; do
            st=${ost["$v $r"]:-} why=${owhy["$v $r"]:-}
            why=${why# }
            why=${why% }
            line=$(printf '  rep %-2s %-11s' "$r" "$v")
            case "$st" in
                ok)
                    nok[$v]=$((${nok[$v]:-0} + 1))
                    for kind in $kinds; do
                        for d in h2g g2h; do
                            k=${v}_r${r}_$d
                            x=$(fig "$kind" "${R[${k}_bytes]:-}" "${R[${k}_bps]:-}" \
                                "${R[${k}_$( [ "$kind" = vhost ] && echo vhost || echo cpu)_ticks]:-}" \
                                "${R[${k}_exits]:-}" "$clk" "$method")
                            case "$x" in
                                invalid:*)
                                    ninv[$v.$kind.$d]=$((${ninv[$v.$kind.$d]:-0} + 1))
                                    # One line per bad raw value (bytes spoil gb, cpu and exits at once).
                                    if [ -z "${seen["$v:$r:$d:${x#invalid:}"]:-}" ]; then
                                        seen["$v:$r:$d:${x#invalid:}"]=1
                                        invalid+=("$v:$r:$d:${x#invalid:}")
                                    fi
                                    ;;
                                n/a) ;;
                                *) vals[$v.$kind.$d]+="$x " ;;
                            esac
                            fv[$kind.$d]=$(fmt "$kind" "$x")
                        done
                    done
                    line+=$(printf ' %s / %s Mbit/s, CPU %s / %s s/GB' "${fv[mbps.h2g]}" "${fv[mbps.g2h]}" "${fv[cpu.h2g]}" "${fv[cpu.g2h]}")
                    [ "$v" != qemu-vhost ] || line+=$(printf ' (vhost %s / %s)' "${fv[vhost.h2g]}" "${fv[vhost.g2h]}")
                    line+=$(printf ', exits %s / %s per MB' "${fv[exits.h2g]}" "${fv[exits.g2h]}")
                    ;;
                early) line+=" exited early ($why)" ;;
                died) line+=" died during the repetition ($why)" ;;
                failed) line+=" failed ($why)" ;;
                '') if [ "$finished" = 1 ]; then line+=" not measured (see below)"; else line+=" not run: the measuring part stopped"; fi ;;
                *) line+=" $st ($why)" ;;
            esac
            echo "$line"
        done
    done

    # The table: medians over the repetitions that completed.
    local -A med=()
    local hdr s lo hi cell star=0
    echo
    hdr=$(printf '%-32s' "median over completed reps")
    for v in "${cols[@]}"; do hdr+=$(printf ' %13s' "$v"); done
    for v in "${rcols[@]}"; do hdr+=$(printf ' %16s' "tapir/$v"); done
    echo "$hdr"
    line=$(printf '%-32s' "repetitions completed")
    for v in "${cols[@]}"; do line+=$(printf ' %13s' "${nok[$v]:-0}/$reps"); done
    echo "$line"
    local row label
    for row in "mbps:h2g:host->guest (Mbit/s)" "spread:h2g:  min-max" "mbps:g2h:guest->host (Mbit/s)" "spread:g2h:  min-max" \
        "gb:h2g:host->guest moved (GB)" "gb:g2h:guest->host moved (GB)" \
        "cpu:h2g:host->guest CPU (s/GB)" "cpu:g2h:guest->host CPU (s/GB)" \
        "vhost:h2g:host->guest vhost CPU (s/GB)" "vhost:g2h:guest->host vhost CPU (s/GB)" \
        "exits:h2g:host->guest exits (/MB)" "exits:g2h:guest->host exits (/MB)"; do
        kind=${row%%:*} rest=${row#*:}
        d=${rest%%:*} label=${rest#*:}
        line=$(printf '%-32s' "$label")
        for v in "${cols[@]}"; do
            local kk=$kind
            [ "$kind" != spread ] || kk=mbps
            # shellcheck disable=SC2086 # the values are space-separated numbers
            read -r s lo hi < <(stats ${vals[$v.$kk.$d]:-})
            if [ "$kind" = spread ]; then
                if [ "$s" = n/a ]; then cell=""; else cell="$(fmt mbps "$lo")-$(fmt mbps "$hi")"; fi
            else
                med[$v.$kind.$d]=$s
                cell=$(fmt "$kind" "$s")
                if [ "${ninv[$v.$kind.$d]:-0}" -gt 0 ]; then
                    if [ "$s" = n/a ]; then cell=invalid; else cell+="*"; star=1; fi
                fi
            fi
            line+=$(printf ' %13s' "$cell")
        done
        for v in "${rcols[@]}"; do
            case "$kind" in
                mbps | cpu | exits) line+=$(printf ' %16s' "$(ratio "${med[tapir.$kind.$d]}" "${med[$v.$kind.$d]}")") ;;
                *) line+=$(printf ' %16s' "") ;;
            esac
        done
        echo "${line%"${line##*[! ]}"}"
    done
    [ "$star" = 0 ] || echo "* median over fewer repetitions than completed: some of its figures were invalid (below)"

    echo
    echo "guest sees (tapir vs QEMU, --model $model --net $net):"
    guest_sees "$model" "$net" | sed 's/^/  /'

    if [ "${#invalid[@]}" -gt 0 ]; then
        echo
        echo "invalid figures (measuring glitches, left out of the medians):"
        for x in "${invalid[@]}"; do
            IFS=: read -r v r d rest <<<"$x"
            case "${rest#*=}" in
                '') why="is missing" ;;
                -[0-9]*) why="is negative" ;;
                *[!0-9.]* | *.*.*) why="is not a number" ;;
                *) why="is 0 where data moved" ;;
            esac
            printf "  %s, rep %s, %s: %s '%s' %s\n" "$v" "$r" "$(dir_name "$d")" "${rest%%=*}" "${rest#*=}" "$why"
        done
    fi
    if [ "${#notes[@]}" -gt 0 ]; then
        echo
        echo "notes:"
        printf '  %s\n' "${notes[@]}"
    fi
    local skips
    skips=$(grep '^skip ' "$res" | sed 's/^skip //' || true)
    [ -z "$skips" ] || { echo; printf 'skipped: %s\n' "$skips"; }

    # What failed, named per VMM and repetition.
    local fails=()
    while IFS= read -r x; do fails+=("$x"); done < <(grep '^error ' "$res" | sed 's/^error //' || true)
    for v in "${cols[@]}"; do
        for ((r = 1; r <= reps; r++)); do
            st=${ost["$v $r"]:-} why=${owhy["$v $r"]:-}
            why=${why# }
            why=${why% }
            case "$st" in
                ok | '') ;;
                early) fails+=("$v: exited early in rep $r ($why)") ;;
                died) fails+=("$v: died during rep $r ($why)") ;;
                *) fails+=("$v: $st in rep $r ($why)") ;;
            esac
        done
    done
    if [ "$finished" = 0 ]; then
        for v in "${torun[@]}"; do
            for ((r = 1; r <= reps; r++)); do
                [ -n "${ost["$v $r"]:-}" ] || fails+=("$v: rep $r not run")
            done
        done
        fails+=("the measuring part did not finish")
    fi
    if [ "${#fails[@]}" -gt 0 ] || [ "$mrc" -ne 0 ]; then
        echo
        echo "FAILURES (measuring part exit status $mrc):"
        [ "${#fails[@]}" -eq 0 ] || printf '  %s\n' "${fails[@]}"
        return 1
    fi
    return 0
}

# ============================================================================
# Host part: build, run the measuring part (directly or in L1), print a table.
# ============================================================================

model=virtio
net=tap
secs=4
reps=3
vmms=tapir,qemu,qemu-vhost
boot_timeout=240
keep=""
l1_cpus=""
baseline=""
build=1
report_dir=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --model) [ "$#" -ge 2 ] || tapir_die "--model needs a value"; model=$2; shift 2 ;;
        --model=*) model=${1#*=}; shift ;;
        --net) [ "$#" -ge 2 ] || tapir_die "--net needs a value"; net=$2; shift 2 ;;
        --net=*) net=${1#*=}; shift ;;
        --time) [ "$#" -ge 2 ] || tapir_die "--time needs a value"; secs=$2; shift 2 ;;
        --time=*) secs=${1#*=}; shift ;;
        --reps) [ "$#" -ge 2 ] || tapir_die "--reps needs a value"; reps=$2; shift 2 ;;
        --reps=*) reps=${1#*=}; shift ;;
        --vmms) [ "$#" -ge 2 ] || tapir_die "--vmms needs a value"; vmms=$2; shift 2 ;;
        --vmms=*) vmms=${1#*=}; shift ;;
        --boot-timeout) [ "$#" -ge 2 ] || tapir_die "--boot-timeout needs a value"; boot_timeout=$2; shift 2 ;;
        --boot-timeout=*) boot_timeout=${1#*=}; shift ;;
        --keep) [ "$#" -ge 2 ] || tapir_die "--keep needs a value"; keep=$2; shift 2 ;;
        --keep=*) keep=${1#*=}; shift ;;
        --l1-cpus) [ "$#" -ge 2 ] || tapir_die "--l1-cpus needs a value"; l1_cpus=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --exit-detail) export TAPIR_BENCH_EXIT_DETAIL=1; shift ;;
        --baseline) [ "$#" -ge 2 ] || tapir_die "--baseline needs a value"; baseline=$2; shift 2 ;;
        --baseline=*) baseline=${1#*=}; shift ;;
        --report) [ "$#" -ge 2 ] || tapir_die "--report needs a directory"; report_dir=$2; shift 2 ;;
        --report=*) report_dir=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) tapir_die "unknown argument '$1' (see --help)" ;;
    esac
done
if [ -n "$report_dir" ]; then
    [ -s "$report_dir/results" ] || tapir_die "--report: $report_dir/results is missing or empty"
    rc=0
    report "$report_dir" || rc=$?
    exit "$rc"
fi
case "$model" in virtio | e1000 | rtl8139) ;; *) tapir_die "--model must be virtio, e1000 or rtl8139, got '$model'" ;; esac
{ is_uint "$secs" && [ "$secs" -ge 1 ]; } || tapir_die "--time must be a positive integer, got '$secs'"
{ is_uint "$reps" && [ "$reps" -ge 1 ]; } || tapir_die "--reps must be a whole number of at least 1, got '$reps'"
[ -z "$l1_cpus" ] || { is_uint "$l1_cpus" && [ "$l1_cpus" -ge 1 ]; } || tapir_die "--l1-cpus must be a whole number of at least 1, got '$l1_cpus'"
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
case "$net" in tap | user | passthrough) ;; *) tapir_die "--net must be tap, user or passthrough, got '$net'" ;; esac
{ [ "$model" = virtio ] && [ "$net" != user ]; } || vmms=$(tr , '\n' <<<"$vmms" | grep -vx qemu-vhost | paste -sd, -)
[ -n "$vmms" ] || tapir_die "--vmms is empty"

command -v qemu-system-x86_64 >/dev/null || tapir_die "qemu-system-x86_64 not found (package qemu-system-x86)"
command -v iperf3 >/dev/null || tapir_die "iperf3 not found (package iperf3)"
command -v busybox >/dev/null || tapir_die "busybox not found (package busybox-static)"

cd "$root"
tapir_release_and_guest "$root" "$build"

if [ -n "$keep" ]; then
    mkdir -p "$keep" || tapir_die "cannot create $keep"
    out=$(cd "$keep" && pwd -P)
    rm -rf "$out/results" "$out/meta" "$out/logs"
else
    out=$(mktemp -d "${TMPDIR:-/tmp}/tapir-netbench.XXXXXX")
    trap 'rm -rf "$out"' EXIT
fi

mode=$(tapir_kvm_mode)
ncols=$(tr , '\n' <<<"$vmms" | wc -l)
case "$mode" in
    hw) where="directly on this host (hardware virtualization)" ;;
    *) where="nested: L2 guests under nested KVM in a tapir-nested L1 (TCG) VM; host kvm mode $mode" ;;
esac
{
    printf 'where %s\n' "$where"
    printf 'tapir %s\n' "$tapir_bin ($(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo '+local changes'))"
    [ -z "${TAPIR_BENCH_BASELINE:-}" ] || printf 'baseline %s\n' "$TAPIR_BENCH_BASELINE"
    printf 'kernel %s\n' "$KERNEL"
} >"$out/meta"
mrc=0
case "$mode" in
    hw)
        [ "$(id -u)" = 0 ] || tapir_die "needs root here (taps, network namespaces)"
        say "kvm mode hw: measuring directly on this host ($reps repetitions)"
        "$self" --measure "$out" "$model" "$secs" "$vmms" "$boot_timeout" "$tapir_bin" "$KERNEL" "$INITRD" "$net" "$reps" || mrc=$?
        ;;
    *)
        say "kvm mode $mode: measuring inside one tapir-nested L1 VM ($reps repetitions; takes a while)"
        l1_timeout=$((300 + reps * ncols * (boot_timeout + 2 * secs + 180)))
        "$root/resources/nested/tapir-nested" --out "$out" --timeout "$l1_timeout" ${l1_cpus:+--cpus "$l1_cpus"} \
        --share "$tapir_bin" --share "$KERNEL" --share "$INITRD" --share "${TAPIR_BENCH_BASELINE:-$tapir_bin}" -- \
            "$self" --measure /run/out "$model" "$secs" "$vmms" "$boot_timeout" "$tapir_bin" "$KERNEL" "$INITRD" "$net" "$reps" \
            </dev/null >&2 || mrc=$?
        ;;
esac
echo "measure_rc $mrc" >>"$out/meta"

[ -s "$out/results" ] || tapir_die "the measuring part produced no results (exit status $mrc)"
rc=0
report "$out" || rc=$?
[ -z "$keep" ] || echo "raw results and logs: $out"
exit "$rc"
