#!/bin/bash
# Linux-guest scenarios for tapir, run in ONE place that has a usable KVM:
# inside the nested L1 VM (resources/nested/tapir-nested) on a PVM host, or
# directly on a host with VT-x/AMD-V. tests/nested.rs drives this script and
# checks what it leaves behind.
#
# Usage: scenarios.sh TAPIR KERNEL INITRD OUTDIR [SCENARIO...]
#        scenarios.sh --list     (the default scenarios, one per line)
# For each scenario NAME it writes OUTDIR/NAME.log (tapir's stdout+stderr,
# i.e. the guest console plus tapir's messages), OUTDIR/NAME.rc (tapir's
# exit status) and OUTDIR/NAME.secs (wall time). A scenario that hangs is
# killed by `timeout` and records 124.
set -uo pipefail
LIST_ONLY=0
if [ "${1:-}" = --list ]; then
    LIST_ONLY=1
    set -- "" "" "" ""
fi
TAPIR=$1 KERNEL=$2 INITRD=$3 OUT=$4
shift 4
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d /tmp/tapir-scen.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# An initrd = the default guest + an extra cpio carrying /scenario.sh.
with_scenario() { # NAME SCRIPT-TEXT -> prints the combined initrd path
    printf '%s\n' "$2" >"$WORK/$1.sh"
    "$ROOT/resources/guest/make-scenario-cpio.sh" "$WORK/$1.sh" "$WORK/$1.cpio.gz" >/dev/null
    cat "$INITRD" "$WORK/$1.cpio.gz" >"$WORK/$1.initrd"
    echo "$WORK/$1.initrd"
}

record() { # NAME RC START
    echo "$2" >"$OUT/$1.rc"
    echo $(($(date +%s) - $3)) >"$OUT/$1.secs"
    echo "scenario $1: exit $2 after $(cat "$OUT/$1.secs") s"
}

# Runs tapir with stdin from /dev/null; remaining args go to `tapir run`.
run_plain() { # NAME TIMEOUT ARGS...
    local name=$1 t=$2 start
    shift 2
    start=$(date +%s)
    timeout -k 5 "$t" "$TAPIR" run "$@" </dev/null >"$OUT/$name.log" 2>&1
    record "$name" $? "$start"
}

wait_for() { # FILE PATTERN SECONDS
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# TAPIR_CONSOLE overrides the guest console options (e.g. to see the kernel log).
CONSOLE="${TAPIR_CONSOLE:-console=ttyS0 quiet}"

# The network scenarios (net_*): tap, bridge, VLAN, two NICs, per NIC model.
# shellcheck source=tests/nested/net-scenarios.sh
. "$HERE/net-scenarios.sh"
# The user-mode NAT scenarios (net_user*), built on the net__ helpers.
# shellcheck source=tests/nested/user-scenarios.sh
. "$HERE/user-scenarios.sh"
# Link up/down through the control socket (net_link).
# shellcheck source=tests/nested/link-scenarios.sh
. "$HERE/link-scenarios.sh"
# Direct attach through a macvtap (net_passthrough*).
# shellcheck source=tests/nested/passthrough-scenarios.sh
. "$HERE/passthrough-scenarios.sh"
# virtio-blk disks with ext4 (disk_*).
# shellcheck source=tests/nested/disk-scenarios.sh
. "$HERE/disk-scenarios.sh"
# A whole NIC of L1 assigned to the guest through VFIO (vfio_*).
# shellcheck source=tests/nested/vfio-scenarios.sh
. "$HERE/vfio-scenarios.sh"

# Scenario script shared by the boot checks: the kernel log and the
# interrupt/PCI/memory view of the guest, between markers.
# shellcheck disable=SC2016 # expanded by the guest shell
REPORT='echo "==DMESG-BEGIN=="; dmesg -r | grep "^<[0-4]>"; echo "==DMESG-END=="
echo "==DMESG-PCI-IRQ=="; dmesg | grep -iE "pci|irq|_osc|mmconfig|ioapic|smp|cpu[0-9]* |brought up"
echo "==INTERRUPTS=="; cat /proc/interrupts
echo "==PCI=="; for d in /sys/bus/pci/devices/*; do echo "$d $(cat $d/vendor):$(cat $d/device) class=$(cat $d/class) irq=$(cat $d/irq)"; done
echo "==END=="'

scenario_smp2_poweroff() {
    run_plain smp2_poweroff 400 --kernel "$KERNEL" --initrd "$(with_scenario smp2 "$REPORT")" \
        --cpus 2 --memory 256M --cmdline "$CONSOLE tapir.exit=poweroff"
}

scenario_up_poweroff() {
    run_plain up_poweroff 200 --kernel "$KERNEL" --initrd "$(with_scenario up "$REPORT")" \
        --memory 256M --cmdline "$CONSOLE tapir.exit=poweroff"
}

scenario_up_reboot() {
    run_plain up_reboot 200 --kernel "$KERNEL" --initrd "$INITRD" \
        --memory 256M --cmdline "$CONSOLE tapir.exit=reboot"
}

# ELF vmlinux with a PVH note, taken out of the bzImage's payload.
scenario_elf_pvh() {
    local elf=$WORK/vmlinux
    if ! "$ROOT/resources/guest/extract-vmlinux.sh" "$KERNEL" "$elf" >"$OUT/elf_pvh.extract" 2>&1; then
        echo "extract-vmlinux failed" >"$OUT/elf_pvh.log"
        record elf_pvh 125 "$(date +%s)"
        return
    fi
    run_plain elf_pvh 200 --kernel "$elf" --initrd "$INITRD" \
        --memory 256M --cmdline "$CONSOLE tapir.exit=poweroff"
}

# Console input through a pipe: the guest shell runs what we type.
scenario_console_input() {
    local name=console_input start fifo=$WORK/console.fifo
    mkfifo "$fifo"
    start=$(date +%s)
    timeout -k 5 200 "$TAPIR" run --kernel "$KERNEL" --initrd "$INITRD" --memory 256M \
        --cmdline "$CONSOLE tapir.exit=shell" <"$fifo" >"$OUT/$name.log" 2>&1 &
    local pid=$!
    exec 7>"$fifo"
    if wait_for "$OUT/$name.log" 'TAPIR-GUEST: booted' 150; then
        sleep 2
        # shellcheck disable=SC2016 # expanded by the guest shell
        printf 'echo typed-$((6*7))-ok\n' >&7
        wait_for "$OUT/$name.log" 'typed-42-ok' 30
        printf 'poweroff -f\n' >&7
    fi
    wait "$pid"
    local rc=$?
    exec 7>&-
    record "$name" "$rc" "$start"
}

# SIGTERM ends tapir cleanly while the guest sits at its shell.
scenario_sigterm() {
    local name=sigterm start
    start=$(date +%s)
    timeout -k 5 200 "$TAPIR" run --kernel "$KERNEL" --initrd "$INITRD" --memory 256M \
        --cmdline "$CONSOLE tapir.exit=shell" </dev/null >"$OUT/$name.log" 2>&1 &
    local pid=$!
    if wait_for "$OUT/$name.log" 'TAPIR-GUEST: booted' 150; then
        sleep 1
        kill -TERM "$pid"
    fi
    wait "$pid"
    record "$name" $? "$start"
}

ALL="up_poweroff up_reboot elf_pvh console_input sigterm smp2_poweroff
     net_tap net_tap_e1000 net_tap_rtl8139 net_tap_8139too net_vlan
     net_two_nics net_bridge net_user net_user_e1000 net_user_rtl8139
     net_user_restrict net_link net_passthrough net_passthrough_modes
     vfio_e1000e vfio_e1000e_intx disk_ext4"
if [ "$LIST_ONLY" = 1 ]; then
    # shellcheck disable=SC2086 # one name per word
    printf '%s\n' $ALL
    exit 0
fi

# No scenario is run again here: a guest that dies or hangs fails its
# scenario. (With a 2-vCPU L1, QEMU's multi-threaded TCG emulating SVM
# lost an L2 guest in about 1 run of 8, and the suite retried such deaths;
# the L1 now has 1 vCPU, and resources/nested/stress.sh measures how often
# a guest is still lost.) When the L1 VM itself dies, tests/nested.rs says
# so and runs the rest in a fresh L1.
echo "kvm: $(ls -l /dev/kvm 2>&1)"
# shellcheck disable=SC2048,SC2086 # scenario names are single words
for s in ${*:-$ALL}; do
    "scenario_$s"
done
echo "scenarios done"
