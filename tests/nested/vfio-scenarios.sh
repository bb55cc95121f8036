# shellcheck shell=bash disable=SC2034 # fails etc. are read by the net__ helpers (dynamic scoping)
# Device assignment (--device vfio-pci,host=ADDR): a whole PCI NIC of L1,
# bound to vfio-pci, handed to the guest, which drives it with its own
# driver.
#
# Sourced by tests/nested/scenarios.sh after net-scenarios.sh (it uses the
# net__ helpers and the guest side of net_tap); sourcing defines functions
# only. It needs the NICs that `tapir-nested --assign-nic` gives L1: a q35
# machine with an emulated Intel IOMMU (intel_iommu=on), an e1000e at
# 0000:00:10.0 to assign and a virtio-net at 0000:00:11.0 on the same QEMU
# hub, which stays in L1 as the peer. Elsewhere (scenarios.sh run directly
# on a VT-x/AMD-V host) the scenario records why it cannot run
# (skipped=...) unless TAPIR_IN_L1 is set, where a missing NIC fails it.
#
# Scenario:
#   vfio_e1000e   L1 binds 0000:00:10.0 to vfio-pci and moves the peer's
#                 interface into the scenario namespace (192.168.100.1/24);
#                 the guest (192.168.100.2) runs net_tap's guest script over
#                 the assigned NIC: driver e1000e, carrier, ping, an HTTP
#                 transfer each way checked by sha256, interrupts; it also
#                 says which interrupt kind the driver got (msix wanted).
#                 VMM_IMPL=qemu runs QEMU's own vfio-pci as the stand-in.
#   vfio_e1000e_intx
#                 the same with the guest driver's IntMode=0 (INTx, through
#                 the irqfd with a resample eventfd): guest_irq_kind=none
#                 (no MSI vectors) is wanted.
# Result keys (value wanted): assign_nic=present unbound_refused=1:1:1
#   (tapir only, when the NIC is not yet bound to vfio-pci: exit status 1,
#   one line of output, naming the device and vfio-pci) vfio_bound=1
#   peer_configured=1 plus net_tap's guest keys (guest_link=ok,
#   guest_ping_recv=5, guest_driver=e1000e, guest_carrier=1, irqs_grew=1,
#   h2g_match=1, g2h_match=1, host_ping_recv=3, bye_sent=1, guest_bye=1,
#   guest_done=1), guest_irq_kind=msix, assigned_line=1 (tapir's log line
#   saying what it mapped; n/a for QEMU), still_vfio=1 (the device is bound
#   to vfio-pci after the VMM exited), rc=0 failed=none ok=1.

VFIO_NIC=0000:00:10.0
VFIO_NIC_MAC=52:54:00:5a:00:10
VFIO_PEER=0000:00:11.0

# vfio__driver ADDR: the driver bound to the PCI device ADDR (none if none).
vfio__driver() {
    local d
    d=$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null) || d=none
    printf '%s\n' "${d##*/}"
}

# vfio__bind ADDR: binds the PCI device ADDR to vfio-pci, as a user would.
vfio__bind() {
    local a=$1 d
    net__l1 modprobe vfio-pci || return 1
    d=$(vfio__driver "$a")
    [ "$d" = vfio-pci ] && return 0
    if [ "$d" != none ]; then
        echo "+ unbind $a from $d" >>"$l1log"
        echo "$a" >"/sys/bus/pci/devices/$a/driver/unbind" || return 1
    fi
    echo "+ bind $a to vfio-pci" >>"$l1log"
    echo vfio-pci >"/sys/bus/pci/devices/$a/driver_override" &&
        echo "$a" >/sys/bus/pci/drivers/vfio-pci/bind &&
        [ "$(vfio__driver "$a")" = vfio-pci ]
}

# vfio__peer ADDR: loads virtio_net and prints the interface of the
# virtio-net device ADDR.
vfio__peer() {
    local i f
    net__l1 modprobe virtio_net || return 1
    for ((i = 0; i < 50; i++)); do
        for f in /sys/bus/pci/devices/"$1"/virtio*/net/*; do
            [ -e "$f" ] && { printf '%s\n' "${f##*/}"; return 0; }
        done
        sleep 0.1
    done
    return 1
}

scenario_vfio_e1000e() { vfio__e1000e vfio_e1000e "" msix; }
# The guest's driver told to use INTx (a level interrupt: the irqfd's
# resample eventfd unmasks VFIO's INTx) instead of MSI-X. (MSI is not
# tried: with e1000e.IntMode=1, e1000e's own MSI self-test fails in this
# L1 under QEMU's vfio-pci as under tapir's, "MSI interrupt test failed,
# using legacy interrupt", and the driver runs on INTx.)
scenario_vfio_e1000e_intx() { vfio__e1000e vfio_e1000e_intx 0 none; }

# vfio__e1000e NAME INTMODE KIND: the scenario, with e1000e's IntMode=
# (empty: the driver's choice, MSI-X) and the interrupt kind wanted in the
# guest (msix, msi, or none for INTx: no MSI vectors).
vfio__e1000e() {
    local name res l1log ns start fails
    net__setup "$1" || return 0
    local intmode=$2 kind=$3
    net__kv intmode "${intmode:-default}"
    local log=$OUT/$name.log www=$WORK/$name.www mib=${NET_XFER_MIB:-8}
    local pid hpid initrd rc=125 v sent rsum peer
    if [ ! -e "/sys/bus/pci/devices/$VFIO_NIC" ] || [ ! -e "/sys/bus/pci/devices/$VFIO_PEER" ]; then
        net__kv assign_nic missing
        if [ -z "${TAPIR_IN_L1:-}" ]; then
            net__kv skipped "no NIC to assign at $VFIO_NIC with a peer at $VFIO_PEER (tapir-nested --assign-nic makes them)"
        else
            fails=assign_nic
        fi
        net__finish 125
        return 0
    fi
    net__kv assign_nic present
    if [ "${VMM_IMPL:-tapir}" = tapir ] && [ "$(vfio__driver "$VFIO_NIC")" != vfio-pci ]; then
        # Before the binding: one error line, status 1.
        local out erc=0
        out=$("$TAPIR" run --kernel "$KERNEL" --memory 64M --device "vfio-pci,host=$VFIO_NIC" </dev/null 2>&1) || erc=$?
        printf '+ tapir with the device not bound to vfio-pci: status %s\n%s\n' "$erc" "$out" >>"$l1log"
        net__check unbound_refused "$erc:$(grep -c . <<<"$out"):$(grep -c "^tapir: .*$VFIO_NIC.*not vfio-pci" <<<"$out")" 1:1:1
    fi
    v=0
    vfio__bind "$VFIO_NIC" && v=1
    net__check vfio_bound "$v" 1
    v=0
    if peer=$(vfio__peer "$VFIO_PEER") && ip link set "$peer" netns "$ns" >>"$l1log" 2>&1 &&
        net__l1 ip addr add 192.168.100.1/24 dev "$peer" && net__l1 ip link set "$peer" up; then
        v=1
    fi
    net__check peer_configured "$v" 1
    if [ -n "$fails" ]; then
        net__finish 125
        return 0
    fi
    mkdir -p "$www"
    head -c $((mib * 1048576)) /dev/urandom >"$www/h2g.bin"
    sent=$(sha256sum <"$www/h2g.bin" | cut -d' ' -f1)
    net__kv h2g_sha256_sent "$sent"
    net__kv xfer_mib "$mib"
    ip netns exec "$ns" busybox httpd -f -p 8080 -h "$www" </dev/null >>"$l1log" 2>&1 &
    hpid=$!
    # net_tap's guest, and the interrupt kind of the NIC's PCI function.
    # shellcheck disable=SC2016 # expanded by the guest shell
    initrd=$(with_scenario "$name" "$(net__guest_tap "$VFIO_NIC_MAC" "$mib")
say \"irq kind \$(cat /sys/class/net/\$IF/device/msi_irqs/* 2>/dev/null | sort -u | paste -sd+ -)\"
say \"irq lines \$(grep -E 'eth|e1000' /proc/interrupts | tr -s ' ' | paste -sd'|' -)\"")
    rsum=none
    if CONSOLE="$CONSOLE${intmode:+ e1000e.IntMode=$intmode}" TAPIR_LOG=info NET_ASSIGN=$VFIO_NIC \
        net__vmm_start "$log" 420 "$initrd"; then
        pid=$REPLY
        if net__wait_log "$log" 'NET: (g2h ready|g2h FAIL|done)' 400 "$pid" &&
            grep -q 'NET: g2h ready' "$log"; then
            rsum=$(net__fetch_sha "$ns" http://192.168.100.2:8080/g2h.bin "$pid")
            net__check host_ping_recv "$(net__ping "$ns" 192.168.100.2 3 10)" 3
            v=0
            net__bye "$ns" 192.168.100.2 "$pid" && v=1
            net__check bye_sent "$v" 1
        else
            net__guest_hung "$name" "$log" "$pid"
            net__check host_ping_recv skipped 3
            net__check bye_sent 0 1
        fi
        rc=0
        wait "$pid" || rc=$?
    else
        echo "could not start the VMM" >>"$log"
    fi
    kill "$hpid" 2>/dev/null
    wait "$hpid" 2>/dev/null
    rm -rf "$www"
    net__kv g2h_sha256_received "$rsum"
    v=fail
    grep -q 'NET: link ok' "$log" && v=ok
    net__check guest_link "$v" ok
    net__check guest_ping_recv "$(net__marker "$log" '.*NET: ping 192\.168\.100\.1 sent=5 recv=\([0-9]*\).*')" 5
    net__check guest_driver "$(net__marker "$log" '.*NET: driver \([^ ]*\) carrier=.*')" e1000e
    net__check guest_carrier "$(net__marker "$log" '.*NET: driver [^ ]* carrier=\([0-9]*\).*')" 1
    net__check guest_irq_kind "$(net__marker "$log" '.*NET: irq kind \([a-z+]*\).*')" "$kind"
    net__check_irqs
    net__check_sha h2g "$sent"
    net__check_sha g2h "$rsum"
    net__check_seen guest_bye 'NET: bye received'
    net__check_seen guest_done 'NET: done'
    if [ "${VMM_IMPL:-tapir}" = tapir ]; then
        net__check_seen assigned_line "tapir: info: .*$VFIO_NIC"
    else
        net__kv assigned_line n/a
    fi
    v=0
    [ "$(vfio__driver "$VFIO_NIC")" = vfio-pci ] && v=1
    net__check still_vfio "$v" 1
    # The peer goes back to L1's root namespace with the namespace.
    net__finish "$rc"
}
