# shellcheck shell=bash
# Network scenarios for tapir's NICs (virtio-net; later e1000 and rtl8139).
#
# Sourced by tests/nested/scenarios.sh; sourcing defines functions only. The
# functions use that script's variables TAPIR KERNEL INITRD OUT WORK CONSOLE
# and its helpers with_scenario and record. They need root, /dev/net/tun,
# iproute2 (`ip`, `bridge`, `ip netns`) and busybox (httpd, wget, nc, ping)
# on the L1 side; the guest is the default one (resources/guest).
#
# Scenarios (scenarios.sh TAPIR KERNEL INITRD OUTDIR net_tap net_bridge ...):
#   net_tap       guest <-> L1 over a tap that tapir creates: ping both ways,
#                 an HTTP file transfer each way checked by sha256, a TCP
#                 connection from L1 to the guest, tap removed at exit.
#   net_bridge    two guests on one L1 bridge (net=bridge) plus a namespace
#                 host on a veth port: guest<->guest and host->guest pings.
#   net_vlan      a NIC with vlan=100 on an existing tap: only VLAN 100 of
#                 the tap reaches the guest, untagged and VLAN 300 do not;
#                 its pcap= capture has the ping and a TCP handshake, tagged,
#                 and as many frames as the NIC's counters say.
#   net_two_nics  two NICs with fixed MACs and PCI slots 5 and 6, each
#                 pinging its own tap (two subnets).
# Variants with another NIC model: scenario_net_tap_e1000, ..._rtl8139 (the
# same as MODEL=e1000 / MODEL=rtl8139).
#
# Environment, read when a scenario runs:
#   MODEL=virtio|e1000|rtl8139  NIC model (default virtio)
#   NIC_OPTS=k=v[,k=v]          extra --nic options of the model (e.g. rev=0x10)
#   MODEL_TAG=NAME              name used in result names instead of MODEL
#   VMM_IMPL=tapir|qemu         qemu runs the same scenario with
#                               qemu-system-x86_64 -accel kvm as a stand-in
#                               VMM, to validate the scenarios themselves
#                               (default tapir). In net_vlan the stand-in
#                               has no tagging of its own: a VLAN-filtering
#                               L1 bridge does what tapir's vlan=100 does
#                               (see scenario_net_vlan).
#   NET_XFER_MIB=N              size of each net_tap transfer (default 8)
#   QEMU=PATH                   the stand-in's binary (qemu-system-x86_64)
#
# Each scenario works in a network namespace of its own (tapir-NAME), so it
# touches no interface of the machine it runs on, and deletes it at the end.
# Output per scenario, NAME = base name, plus _MODEL unless virtio, plus
# _qemu for the stand-in:
#   OUT/NAME.log     the VMM's output (guest console + VMM messages); for
#                    two VMs: both, each after a "=== vmN ===" line, and
#                    OUT/NAME.vm1.log, OUT/NAME.vm2.log
#   OUT/NAME.rc      the VMM's exit status (two VMs: the first non-zero one);
#                    125 when the scenario could not be set up
#   OUT/NAME.secs    wall time
#   OUT/NAME.result  key=value lines: what was measured, then
#                    failed=<keys that did not match, or none>, ok=1|0.
#                    ok=1 only when every check passed and rc was 0.
#   OUT/NAME.l1.log  the L1-side commands and their output (for debugging)
# Guest markers on the console all start with "NET: ".

# --- L1-side helpers (prefix net__; they use the calling scenario's locals
# name res l1log ns fails, through bash's dynamic scoping) ------------------

# The result name of scenario BASE for the current MODEL and VMM_IMPL.
net__name() {
    local n=$1
    [ "${MODEL_TAG:-${MODEL:-virtio}}" = virtio ] || n+="_${MODEL_TAG:-$MODEL}"
    [ "${VMM_IMPL:-tapir}" = tapir ] || n+="_${VMM_IMPL}"
    printf '%s\n' "$n"
}

net__kv() { printf '%s=%s\n' "$1" "$2" >>"$res"; }

# net__check KEY VALUE WANT: records KEY=VALUE; a mismatch fails KEY.
net__check() {
    net__kv "$1" "$2"
    [ "$2" = "$3" ] || fails+="${fails:+,}$1"
}

# net__check_seen KEY REGEX: KEY=1 when the VMM log ($log) has a line
# matching the basic REGEX; wanted: 1.
net__check_seen() {
    local seen=0
    grep -q "$2" "$log" && seen=1
    net__check "$1" "$seen" 1
}

# net__check_sha NAME WANT: the guest's "NET: NAME sha256 HEX" marker,
# recorded as NAME_sha256_guest, must equal WANT (NAME_match=1).
net__check_sha() {
    local got match=0
    got=$(net__marker "$log" ".*NET: $1 sha256 \([0-9a-f]\{64\}\).*")
    net__kv "$1_sha256_guest" "$got"
    [ "$got" != none ] && [ "$got" = "$2" ] && match=1
    net__check "$1_match" "$match" 1
}

# net__check_irqs: the guest's "NET: irqs before=A after=B" marker; the NIC
# took more than 10 interrupts in between (irqs_grew=1).
net__check_irqs() {
    local i0 i1 grew=0
    i0=$(net__marker "$log" '.*NET: irqs before=\([0-9]*\) after=.*')
    i1=$(net__marker "$log" '.*NET: irqs before=[0-9]* after=\([0-9]*\).*')
    net__kv irqs_before "$i0"
    net__kv irqs_after "$i1"
    [ "$i0" != none ] && [ "$i1" != none ] && [ "$i1" -gt $((i0 + 10)) ] && grew=1
    net__check irqs_grew "$grew" 1
}

# Runs a command in the scenario's namespace, its output going to NAME.l1.log.
net__l1() {
    printf '+ %s\n' "$*" >>"$l1log"
    ip netns exec "$ns" "$@" >>"$l1log" 2>&1
}

# net__taps PREFIX NET COUNT: taps PREFIX1..PREFIXCOUNT in L1, PREFIXn with
# NET.n.1/24 (NET like 192.168.11, so n=1 gives 192.168.111.1), each up. On
# failure it records the setup error and finishes the scenario (status 125);
# the caller then returns.
net__taps() {
    local n ok=1
    for ((n = 1; n <= $3; n++)); do
        { net__l1 ip tuntap add dev "$1$n" mode tap &&
            net__l1 ip addr add "$2$n.1/24" dev "$1$n" &&
            net__l1 ip link set "$1$n" up; } || ok=0
    done
    [ "$ok" = 1 ] && return 0
    net__kv error "tap setup failed (see $name.l1.log)"
    fails=setup
    net__finish 125
    return 1
}

# net__setup BASE: sets name res l1log ns start; checks the prerequisites and
# creates the namespace. On failure it records the scenario (rc 125) and
# returns 1.
net__setup() {
    name=$(net__name "$1")
    res=$OUT/$name.result
    l1log=$OUT/$name.l1.log
    ns=tapir-$name
    start=$(date +%s)
    fails=""
    : >"$res"
    : >"$l1log"
    rm -f "$OUT/$name.log" "$OUT/$name".vm?.log
    net__kv vmm "${VMM_IMPL:-tapir}"
    net__kv model "${MODEL:-virtio}"
    local err="" c
    case "${MODEL:-virtio}" in virtio | e1000 | rtl8139) ;; *) err="unknown MODEL '${MODEL}'" ;; esac
    case "${VMM_IMPL:-tapir}" in tapir | qemu) ;; *) err="unknown VMM_IMPL '${VMM_IMPL}'" ;; esac
    [ "$(id -u)" = 0 ] || err=${err:-"needs root (taps, bridges, namespaces)"}
    [ -c /dev/net/tun ] || err=${err:-"/dev/net/tun is missing"}
    for c in ip bridge busybox timeout sha256sum; do
        command -v "$c" >/dev/null 2>&1 || err=${err:-"$c not found"}
    done
    if [ "${VMM_IMPL:-tapir}" = qemu ]; then
        command -v "${QEMU:-qemu-system-x86_64}" >/dev/null 2>&1 || err=${err:-"${QEMU:-qemu-system-x86_64} not found"}
    fi
    if [ -z "$err" ]; then
        ip netns del "$ns" >/dev/null 2>&1 # left over from an interrupted run
        if ! ip netns add "$ns" >>"$l1log" 2>&1 || ! ip -n "$ns" link set lo up >>"$l1log" 2>&1; then
            err="cannot create network namespace $ns"
        fi
    fi
    if [ -n "$err" ]; then
        net__kv error "$err"
        net__kv failed setup
        net__kv ok 0
        echo "$err" >>"$OUT/$name.log"
        ip netns del "$ns" >/dev/null 2>&1
        record "$name" 125 "$start"
        return 1
    fi
    return 0
}

# Deletes every interface of the namespace (taps, bridges, veths, VLANs),
# then the namespace itself.
net__delete_ns() { # NS
    local l
    for l in $(ip -n "$1" -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'); do
        [ "$l" = lo ] || ip -n "$1" link del "$l" >/dev/null 2>&1
    done
    ip netns del "$1" >/dev/null 2>&1
}

# net__finish RC: the overall verdict, cleanup and the .rc/.secs record.
net__finish() {
    local rc=$1 ok=1
    net__kv rc "$rc"
    [ "$rc" = 0 ] || fails+="${fails:+,}rc"
    [ -z "$fails" ] || ok=0
    net__kv failed "${fails:-none}"
    net__kv ok "$ok"
    net__delete_ns "$ns"
    record "$name" "$rc" "$start"
    echo "scenario $name: ok=$ok failed=${fails:-none}"
}

# The Linux driver that must bind MODEL (with NIC_OPTS).
net__driver() {
    case "${MODEL:-virtio}:${NIC_OPTS:-}" in
        virtio:*) echo virtio_net ;;
        e1000:*) echo e1000 ;;
        rtl8139:*rev=0x1*) echo 8139too ;;
        rtl8139:*) echo 8139cp ;;
    esac
}

# The QEMU device for MODEL.
net__qemu_device() {
    case "${MODEL:-virtio}" in
        virtio) echo virtio-net-pci ;;
        e1000) echo e1000 ;;
        rtl8139) echo rtl8139 ;;
    esac
}

# net__vmm_start LOG TIMEOUT INITRD NIC...: starts the VMM in the background
# inside the namespace, with 1 vCPU, 256M and the guest powering off at the
# end. Each NIC is tapir's --nic spec without model= (net=tap|bridge,
# ifname=, br=, mac=, addr=, vlan=); NET_ASSIGN=ADDR adds the PCI device
# ADDR (bound to vfio-pci) to the VM. Sets REPLY to the background pid (that
# of `timeout`), or returns 1.
net__vmm_start() {
    local log=$1 t=$2 initrd=$3
    shift 3
    local cmd=() spec kv k v i=0 net ifname br mac addr vlan
    local cmdline="$CONSOLE tapir.exit=poweroff"
    if [ "${VMM_IMPL:-tapir}" = tapir ]; then
        # A control socket, for net__nic_info when something fails.
        NET_CTL="$WORK/$(basename "$log" .log).ctl"
        cmd=("$TAPIR" run --kernel "$KERNEL" --initrd "$initrd" --memory 256M --cpus 1 --cmdline "$cmdline"
            --control-socket "$NET_CTL")
        for spec; do cmd+=(--nic "model=${MODEL:-virtio}${NIC_OPTS:+,$NIC_OPTS},$spec"); done
        [ -z "${NET_ASSIGN:-}" ] || cmd+=(--device "vfio-pci,host=$NET_ASSIGN")
    else
        # shellcheck disable=SC2054 # commas belong to QEMU option values
        cmd=("${QEMU:-qemu-system-x86_64}" -accel kvm -cpu host -m 256 -smp 1 -nographic -no-reboot
            -nodefaults -serial stdio -kernel "$KERNEL" -initrd "$initrd" -append "$cmdline")
        [ -z "${NET_ASSIGN:-}" ] || cmd+=(-device "vfio-pci,host=$NET_ASSIGN")
        for spec; do
            i=$((i + 1))
            net="" ifname="" br="" mac="" addr="" vlan=""
            for kv in ${spec//,/ }; do
                k=${kv%%=*} v=${kv#*=}
                case "$k" in
                    net) net=$v ;; ifname) ifname=$v ;; br) br=$v ;;
                    mac) mac=$v ;; addr) addr=$v ;; vlan) vlan=$v ;;
                esac
            done
            if [ -n "$vlan" ]; then
                echo "net__vmm_start: the QEMU stand-in has no vlan=; emulate it in L1" >>"$l1log"
                return 1
            fi
            if [ "$net" = bridge ]; then
                # What tapir's net=bridge does: a new tap, enslaved and up.
                ifname=${ifname:-tq$i$$}
                ifname=${ifname:0:15}
                net__l1 ip tuntap add dev "$ifname" mode tap &&
                    net__l1 ip link set "$ifname" master "$br" up || return 1
            fi
            cmd+=(-netdev "tap,id=n$i,ifname=$ifname,script=no,downscript=no"
                -device "$(net__qemu_device),netdev=n$i,romfile=,mac=$mac${addr:+,addr=$addr}")
        done
    fi
    printf '+ %s\n' "${cmd[*]}" >>"$l1log"
    ip netns exec "$ns" timeout -k 5 "$t" "${cmd[@]}" </dev/null >"$log" 2>&1 &
    REPLY=$!
}

# net__nic_info WHY: appends the running tapir's NIC counters (its control
# socket's `info`) to the L1 log, to tell where frames stopped.
net__nic_info() {
    [ "${VMM_IMPL:-tapir}" = tapir ] && [ -S "${NET_CTL:-}" ] || return 0
    echo "+ $1: tapir ctl info" >>"$l1log"
    timeout 10 "$TAPIR" ctl "$NET_CTL" info >>"$l1log" 2>&1
}

# net__guest_hung NAME LOG PID: after a failure, whether the guest is hung
# inside KVM rather than alive with a network problem: its console (where
# its heartbeat says "alive" every 10 s) stays silent for 45 s while
# tapir's vCPU threads are in the kernel (KVM_RUN), not waiting in tapir.
# That is how the nested SVM of QEMU TCG loses an L2 (see scenarios.sh);
# a tapir that blocks its vCPU threads is not taken for it. Writes the
# evidence to $OUT/NAME.hung when it is.
net__guest_hung() {
    local name=$1 log=$2 pid=$3 size i tp t ok=1 threads=""
    # A guest that said why it stopped is not this case.
    grep -qE 'Kernel panic|BUG:|Oops|general protection' "$log" 2>/dev/null && return 1
    size=$(stat -c %s "$log" 2>/dev/null || echo 0)
    for ((i = 0; i < 45; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        [ "$(stat -c %s "$log" 2>/dev/null || echo 0)" = "$size" ] || return 1
        sleep 1
    done
    tp=$(pgrep -P "$pid" -x tapir | head -n 1)
    [ -n "$tp" ] || return 1
    for t in /proc/"$tp"/task/*; do
        [[ "$(cat "$t/comm" 2>/dev/null)" == vcpu* ]] || continue
        local st wc
        st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "$t/status" 2>/dev/null)
        wc=$(cat "$t/wchan" 2>/dev/null)
        threads+=" $(cat "$t/comm"):state=$st,wchan=${wc:-0}"
        case "$st/$wc" in R/* | */kvm* | */*vcpu*) ;; *) ok=0 ;; esac
    done
    echo "+ guest silent for 45 s; tapir vCPU threads:${threads:- none}" >>"$l1log"
    [ -n "$threads" ] && [ "$ok" = 1 ] || return 1
    echo "guest console silent for 45 s, vCPU threads in KVM:$threads" >"$OUT/$name.hung"
}

# net__wait_link IFNAME SECONDS PID: waits until IFNAME exists in the
# namespace while PID is alive.
net__wait_link() {
    local i
    for ((i = 0; i < $2 * 5; i++)); do
        ip -n "$ns" link show dev "$1" >/dev/null 2>&1 && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}

# net__wait_log FILE REGEX SECONDS PID...: waits until FILE matches the
# extended REGEX; gives up early when all PIDs have exited.
net__wait_log() {
    local f=$1 re=$2 t=$3 i p alive
    shift 3
    for ((i = 0; i < t * 5; i++)); do
        grep -qE "$re" "$f" 2>/dev/null && return 0
        alive=0
        for p; do kill -0 "$p" 2>/dev/null && alive=1; done
        if [ "$alive" = 0 ]; then
            grep -qE "$re" "$f" 2>/dev/null
            return
        fi
        sleep 0.2
    done
    return 1
}

# net__marker LOG SED-REGEX: prints capture \1 of the first matching line,
# or "none".
net__marker() {
    local v
    v=$(tr -d '\r' <"$1" 2>/dev/null | sed -n "s/$2/\\1/p" | head -n 1)
    printf '%s\n' "${v:-none}"
}

# net__ping [NS] IP COUNT DEADLINE: prints how many replies came back.
net__ping() {
    local n
    n=$(ip netns exec "$1" busybox ping -q -c "$3" -w "$4" "$2" 2>&1 | tee -a "$l1log" |
        sed -n 's/.*transmitted, \([0-9]*\) .*received.*/\1/p')
    printf '%s\n' "${n:-0}"
}

# net__fetch_sha NS URL PID [TRIES]: fetches URL from inside namespace NS
# (busybox wget, at most 240 s a try, TRIES tries, default 1) and prints
# the sha256 of what came, or "none". After a failed try it logs the NICs'
# counters and gives up when the guest is hung (net__guest_hung; PID is the
# VMM's `timeout` process).
net__fetch_sha() {
    local in_ns=$1 url=$2 vmm=$3 tries=${4:-1} i f="$WORK/$name.fetch"
    for ((i = 1; i <= tries; i++)); do
        echo "+ (in $in_ns) wget $url (try $i)" >>"$l1log"
        if ip netns exec "$in_ns" timeout 240 busybox wget -q -O "$f" "$url" >>"$l1log" 2>&1; then
            sha256sum <"$f" | cut -d' ' -f1
            rm -f "$f"
            return 0
        fi
        net__nic_info "fetch of $url failed"
        net__guest_hung "$name" "$log" "$vmm" && break
        sleep 1
    done
    rm -f "$f"
    echo none
    return 1
}

# net__bye NS IP PID: tells the guest at IP to finish (its bye_listen/
# bye_wait). When that fails, it stops the VMM (SIGTERM to PID, the
# `timeout` process) instead of waiting for the guest's own time limit.
net__bye() {
    local i
    for i in 1 2 3; do
        echo "+ bye to $2 (try $i)" >>"$l1log"
        echo bye | ip netns exec "$1" timeout 10 busybox nc "$2" 9001 >>"$l1log" 2>&1 && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 1
    done
    echo "+ no bye possible: SIGTERM to the VMM" >>"$l1log"
    kill -TERM "$3" 2>/dev/null
    return 1
}

# --- guest-side script pieces ----------------------------------------------

# Shell functions for the guest's /scenario.sh (busybox sh).
net__guest_lib() {
    cat <<'EOF'
say() { echo "NET: $*"; }
now() { cut -d. -f1 /proc/uptime; }
# find_if MAC: the interface with that MAC
find_if() {
    for d in /sys/class/net/*; do
        if [ "$(cat "$d/address" 2>/dev/null)" = "$1" ]; then echo "${d##*/}"; return 0; fi
    done
    return 1
}
# wait_ping IP SECONDS: succeeds at the first reply within SECONDS
wait_ping() {
    end=$(($(now) + $2))
    while [ "$(now)" -lt "$end" ]; do
        ping -c 1 -W 1 "$1" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    return 1
}
# ping_recv IP COUNT DEADLINE: prints the number of replies
ping_recv() {
    n=$(ping -q -c "$2" -w "$3" "$1" 2>/dev/null | sed -n 's/.*transmitted, \([0-9]*\) .*received.*/\1/p')
    echo "${n:-0}"
}
# pci_of IF: the PCI address of the interface's device (virtio: its parent)
pci_of() {
    a=$(readlink -f "/sys/class/net/$1/device" | tr / '\n' | grep -E '^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$' | tail -n 1)
    echo "${a:-none}"
}
# bye_listen / bye_wait SECONDS: stay up until L1 connects to TCP port 9001
bye_listen() { rm -f /tmp/bye; nc -l -p 9001 >/tmp/bye 2>/dev/null & BYE_PID=$!; }
bye_wait() {
    end=$(($(now) + $1))
    while kill -0 "$BYE_PID" 2>/dev/null; do
        if [ "$(now)" -ge "$end" ]; then kill "$BYE_PID" 2>/dev/null; say "bye timeout"; return 1; fi
        sleep 0.2
    done
    if grep -q bye /tmp/bye 2>/dev/null; then say "bye received"; else say "bye empty"; fi
}
# driver_of IF: the kernel driver bound to the interface's device
driver_of() { d=$(readlink "/sys/class/net/$1/device/driver"); echo "${d##*/}"; }
# nic_irqs: interrupts taken so far on the NIC lines (eth*, virtio*) of /proc/interrupts
nic_irqs() {
    awk '/eth|virtio/ { for (i = 2; i <= NF; i++) { if ($i ~ /^[0-9]+$/) s += $i; else break } } END { print s + 0 }' /proc/interrupts
}
# heartbeat: says "alive" every 10 s in the background, with the NIC
# interrupt count: when the network fails, L1 can tell a live guest from
# a hung one (net__guest_hung)
heartbeat() { (while sleep 10; do say "alive t=$(now) irqs=$(nic_irqs)"; done) & }
# setup_if MAC IP/LEN...: finds the interface, adds the addresses, brings it up
setup_if() {
    mac=$1
    shift
    IF=$(find_if "$mac") || { say "no interface with mac $mac"; IF=eth0; }
    for a; do ip addr add "$a" dev "$IF" || say "ip addr add $a FAIL"; done
    ip link set "$IF" up || say "ip link set $IF up FAIL"
    say "iface $IF mac $mac"
}
EOF
}

# --- net_tap -----------------------------------------------------------------

net__guest_tap() { # MAC MIB
    printf 'MAC=%s MIB=%s\n' "$1" "$2"
    net__guest_lib
    cat <<'EOF'
heartbeat
setup_if "$MAC" 192.168.100.2/24
bye_listen
if ! wait_ping 192.168.100.1 90; then say "link FAIL"; say done; exit 1; fi
say "link ok"
say "driver $(driver_of "$IF") carrier=$(cat "/sys/class/net/$IF/carrier" 2>/dev/null)"
IRQ0=$(nic_irqs)
say "ping 192.168.100.1 sent=5 recv=$(ping_recv 192.168.100.1 5 15)"
if timeout 240 wget -q -O /tmp/h2g.bin http://192.168.100.1:8080/h2g.bin; then
    say "h2g sha256 $(sha256sum </tmp/h2g.bin | cut -d' ' -f1)"
else
    say "h2g FAIL wget status $?"
fi
rm -f /tmp/h2g.bin
say "irqs before=$IRQ0 after=$(nic_irqs)"
mkdir -p /tmp/www
dd if=/dev/urandom of=/tmp/www/g2h.bin bs=1048576 count="$MIB" 2>/dev/null
say "g2h sha256 $(sha256sum </tmp/www/g2h.bin | cut -d' ' -f1)"
httpd -p 8080 -h /tmp/www && say "g2h ready" || say "g2h FAIL httpd"
bye_wait 300
say done
EOF
}

# The guest (192.168.100.2) and L1 (192.168.100.1 on the tap tapir creates
# with ifname=tnt0; L1 adds the address once the tap appears). Guest markers:
#   NET: link ok | NET: link FAIL
#   NET: ping 192.168.100.1 sent=5 recv=N
#   NET: h2g sha256 HEX        (file L1 -> guest over HTTP, wget in the guest)
#   NET: g2h sha256 HEX        (file guest -> L1: L1 wgets it from the guest)
#   NET: g2h ready, NET: bye received, NET: done
# Result keys (value wanted):
#   tap_appeared=1 tap_configured=1 guest_link=ok guest_ping_recv=5
#   h2g_sha256_sent=HEX h2g_sha256_guest=HEX h2g_match=1
#   g2h_sha256_guest=HEX g2h_sha256_received=HEX g2h_match=1
#   host_ping_recv=3 bye_sent=1 guest_bye=1 guest_done=1
#   tap_removed=1 (tapir only: the tap it created is gone after exit; the
#   QEMU stand-in records n/a) rc=0 failed=none ok=1
scenario_net_tap() {
    local name res l1log ns start fails
    net__setup net_tap || return 0
    local tap=tnt0 mac=52:54:00:12:00:01 mib=${NET_XFER_MIB:-8}
    local www=$WORK/$name.www log=$OUT/$name.log pid hpid initrd rc=125 v rsum
    mkdir -p "$www"
    head -c $((mib * 1048576)) /dev/urandom >"$www/h2g.bin"
    local sent
    sent=$(sha256sum <"$www/h2g.bin" | cut -d' ' -f1)
    net__kv h2g_sha256_sent "$sent"
    net__kv xfer_mib "$mib"
    ip netns exec "$ns" busybox httpd -f -p 8080 -h "$www" </dev/null >>"$l1log" 2>&1 &
    hpid=$!
    initrd=$(with_scenario "$name" "$(net__guest_tap "$mac" "$mib")")
    if net__vmm_start "$log" 420 "$initrd" "net=tap,ifname=$tap,mac=$mac"; then
        pid=$REPLY
        # The VMM creates the tap (tapir brings it up, QEMU does not): add
        # the address as soon as it is there.
        v=0
        net__wait_link "$tap" 60 "$pid" && v=1
        net__check tap_appeared "$v" 1
        v=0
        if net__l1 ip addr add 192.168.100.1/24 dev "$tap" && net__l1 ip link set "$tap" up; then v=1; fi
        net__check tap_configured "$v" 1
        if net__wait_log "$log" 'NET: (g2h ready|g2h FAIL|done)' 400 "$pid" &&
            grep -q 'NET: g2h ready' "$log"; then
            rsum=$(net__fetch_sha "$ns" http://192.168.100.2:8080/g2h.bin "$pid" 3)
            net__kv g2h_sha256_received "$rsum"
            net__check host_ping_recv "$(net__ping "$ns" 192.168.100.2 3 10)" 3
            v=0
            net__bye "$ns" 192.168.100.2 "$pid" && v=1
            net__check bye_sent "$v" 1
        else
            net__guest_hung "$name" "$log" "$pid" || net__nic_info "no g2h ready"
            net__kv g2h_sha256_received none
            net__check host_ping_recv skipped 3
            net__check bye_sent 0 1
        fi
        rc=0
        wait "$pid" || rc=$?
    else
        echo "could not start the VMM" >>"$log"
        net__kv g2h_sha256_received none
    fi
    kill "$hpid" 2>/dev/null
    wait "$hpid" 2>/dev/null
    rm -rf "$www"
    if [ "${VMM_IMPL:-tapir}" = tapir ]; then
        v=1
        ip -n "$ns" link show dev "$tap" >/dev/null 2>&1 && v=0
        net__check tap_removed "$v" 1
    else
        net__kv tap_removed n/a
    fi
    # What the guest reported.
    v=fail
    grep -q 'NET: link ok' "$log" && v=ok
    net__check guest_link "$v" ok
    net__check guest_ping_recv "$(net__marker "$log" '.*NET: ping 192\.168\.100\.1 sent=5 recv=\([0-9]*\).*')" 5
    net__check guest_driver "$(net__marker "$log" '.*NET: driver \([^ ]*\) carrier=.*')" "$(net__driver)"
    net__check guest_carrier "$(net__marker "$log" '.*NET: driver [^ ]* carrier=\([0-9]*\).*')" 1
    net__check_irqs
    net__check_sha h2g "$sent"
    net__check_sha g2h "$(grep '^g2h_sha256_received=' "$res" | cut -d= -f2)"
    net__check_seen guest_bye 'NET: bye received'
    net__check_seen guest_done 'NET: done'
    net__finish "$rc"
}

# --- net_bridge --------------------------------------------------------------

net__guest_bridge() { # MAC ME PEER
    printf 'MAC=%s ME=%s PEER=%s\n' "$1" "$2" "$3"
    net__guest_lib
    cat <<'EOF'
setup_if "$MAC" "$ME/24"
bye_listen
if wait_ping 10.10.0.254 120; then say "host ok"; else say "host FAIL"; fi
if wait_ping "$PEER" 180; then say "peer ok"; else say "peer FAIL"; fi
say "ping $PEER sent=3 recv=$(ping_recv "$PEER" 3 10)"
say ready
bye_wait 240
say done
EOF
}

# Two guests, each with net=bridge,br=tbr0 (vm1 with ifname=tbv1, vm2 with
# a tap name of tapir's choosing), 10.10.0.1 and 10.10.0.2; the namespace
# host (netns tapir-NAME-h, 10.10.0.254) on a veth port of the same bridge.
# Guest markers (per VM log): NET: host ok, NET: peer ok,
#   NET: ping <peer> sent=3 recv=N, NET: ready, NET: bye received, NET: done
# Result keys (value wanted), N = 1, 2:
#   vmN_host=ok vmN_peer=ok vmN_ping_peer_recv=3 hostns_ping_vmN_recv=3
#   fdb_vmN=1 (guest MAC learned on tbr0) vm1_tap_enslaved=1 br_ports=3
#   bye_vmN=1 vmN_done=1 vmN_rc=0
#   br_ports_after=1 (tapir only: both taps gone after exit; n/a for QEMU)
#   rc=0 failed=none ok=1
scenario_net_bridge() {
    local name res l1log ns start fails
    net__setup net_bridge || return 0
    local br=tbr0 hns=tapir-$name-h
    local mac1=52:54:00:10:00:01 mac2=52:54:00:10:00:02
    local pid1="" pid2="" rc=125 rc1=125 rc2=125 v n log1 log2 i log
    log1=$OUT/$name.vm1.log
    log2=$OUT/$name.vm2.log
    ip netns del "$hns" >/dev/null 2>&1
    if ! { ip netns add "$hns" &&
        net__l1 ip link add "$br" type bridge &&
        net__l1 ip link set "$br" up &&
        net__l1 ip link add tbh0 type veth peer name tbh1 &&
        net__l1 ip link set tbh0 master "$br" up &&
        net__l1 ip link set tbh1 netns "$hns" &&
        ip -n "$hns" link set lo up &&
        ip -n "$hns" addr add 10.10.0.254/24 dev tbh1 &&
        ip -n "$hns" link set tbh1 up; } >>"$l1log" 2>&1; then
        net__kv error "bridge/namespace setup failed (see $name.l1.log)"
        fails=setup
        net__delete_ns "$hns"
        net__finish 125
        return 0
    fi
    local nic1="net=bridge,br=$br,ifname=tbv1,mac=$mac1" nic2="net=bridge,br=$br,mac=$mac2"
    net__vmm_start "$log1" 420 "$(with_scenario "$name.vm1" "$(net__guest_bridge "$mac1" 10.10.0.1 10.10.0.2)")" "$nic1" &&
        pid1=$REPLY
    # The second VM starts once the first has booted: starting two VMs at
    # the same instant is not what this scenario tests.
    [ -z "$pid1" ] || net__wait_log "$log1" 'TAPIR-GUEST: booted' 200 "$pid1"
    net__vmm_start "$log2" 420 "$(with_scenario "$name.vm2" "$(net__guest_bridge "$mac2" 10.10.0.2 10.10.0.1)")" "$nic2" &&
        pid2=$REPLY
    if [ -n "$pid1" ] && [ -n "$pid2" ]; then
        # Both guests have pinged each other (or given up).
        net__wait_log "$log1" 'NET: (ready|done)' 400 "$pid1"
        net__wait_log "$log2" 'NET: (ready|done)' 400 "$pid2"
        for i in 1 2; do
            net__check "hostns_ping_vm${i}_recv" "$(net__ping "$hns" "10.10.0.$i" 3 10)" 3
        done
        n=$(ip -n "$ns" -o link show master "$br" 2>/dev/null | wc -l)
        net__check br_ports "$n" 3
        v=0
        ip -n "$ns" -o link show dev tbv1 2>/dev/null | grep -q "master $br" && v=1
        net__check vm1_tap_enslaved "$v" 1
        bridge -n "$ns" fdb show br "$br" >"$WORK/$name.fdb" 2>&1
        cat "$WORK/$name.fdb" >>"$l1log"
        v=0
        grep -qi "^$mac1 " "$WORK/$name.fdb" && v=1
        net__check fdb_vm1 "$v" 1
        v=0
        grep -qi "^$mac2 " "$WORK/$name.fdb" && v=1
        net__check fdb_vm2 "$v" 1
        v=0
        net__bye "$hns" 10.10.0.1 "$pid1" && v=1
        net__check bye_vm1 "$v" 1
        v=0
        net__bye "$hns" 10.10.0.2 "$pid2" && v=1
        net__check bye_vm2 "$v" 1
    else
        echo "could not start both VMMs" >>"$l1log"
        fails+="${fails:+,}start"
    fi
    [ -z "$pid1" ] || { rc1=0; wait "$pid1" || rc1=$?; }
    [ -z "$pid2" ] || { rc2=0; wait "$pid2" || rc2=$?; }
    net__kv vm1_rc "$rc1"
    net__kv vm2_rc "$rc2"
    rc=$rc1
    [ "$rc" != 0 ] || rc=$rc2
    { echo "=== vm1 ==="; cat "$log1" 2>/dev/null; echo "=== vm2 ==="; cat "$log2" 2>/dev/null; } >"$OUT/$name.log"
    if [ "${VMM_IMPL:-tapir}" = tapir ]; then
        net__check br_ports_after "$(ip -n "$ns" -o link show master "$br" 2>/dev/null | wc -l)" 1
    else
        net__kv br_ports_after n/a
    fi
    for i in 1 2; do
        eval "log=\$log$i"
        # shellcheck disable=SC2154 # set by the eval above
        v=fail
        grep -q 'NET: host ok' "$log" && v=ok
        net__check "vm${i}_host" "$v" ok
        v=fail
        grep -q 'NET: peer ok' "$log" && v=ok
        net__check "vm${i}_peer" "$v" ok
        net__check "vm${i}_ping_peer_recv" \
            "$(net__marker "$log" '.*NET: ping 10\.10\.0\.[12] sent=3 recv=\([0-9]*\).*')" 3
        v=0
        grep -q 'NET: done' "$log" && v=1
        net__check "vm${i}_done" "$v" 1
    done
    net__delete_ns "$hns"
    net__finish "$rc"
}

# --- net_vlan ------------------------------------------------------------------

# net__pcap_counts NIC FILE: checks that the capture FILE holds one record
# per frame that crossed NIC's backend seam: tx_frames + rx_frames +
# rx_dropped + rx_link_down (every frame read from the backend is captured,
# the ones the VLAN filter drops too; no GSO here) equals pcap.records in
# one `tapir ctl stats NIC`, and tcpdump reads as many from FILE. L1 and
# the guest send frames of their own now and then (IPv6), so it counts
# between two equal snapshots, trying up to 20 times.
net__pcap_counts() {
    local nic=$1 file=$2 a b n="" i v ok=0
    for ((i = 0; i < 20; i++)); do
        a=$(timeout 10 "$TAPIR" ctl "$NET_CTL" stats "$nic" 2>>"$l1log")
        n=$(tcpdump -nn -r "$file" 2>>"$l1log" | wc -l)
        b=$(timeout 10 "$TAPIR" ctl "$NET_CTL" stats "$nic" 2>>"$l1log")
        [ -n "$a" ] && [ "$a" = "$b" ] && { ok=1; break; }
        sleep 1
    done
    printf '+ tapir ctl stats %s (quiet=%s): %s\n' "$nic" "$ok" "$b" >>"$l1log"
    v=$(python3 -c 'import json, sys
n = json.loads(sys.argv[1])
c, d = n["counters"], n["drops"]
print(c["tx_frames"] + c["rx_frames"] + d["rx_dropped"] + d["rx_link_down"], n["pcap"]["records"])' "$b" 2>>"$l1log")
    net__kv pcap_frames_by_counters "${v% *}"
    net__kv pcap_records "${v#* }"
    net__kv pcap_tcpdump_records "$n"
    [ "$ok" = 1 ] && [ -n "$v" ] && [ "${v% *}" = "${v#* }" ] && [ "${v#* }" -gt 0 ] && i=1 || i=0
    net__check pcap_records_match_counters "$i" 1
    [ "$ok" = 1 ] && [ -n "$v" ] && [ "$n" = "${v#* }" ] && i=1 || i=0
    net__check pcap_file_matches_records "$i" 1
}

# net__pcap_frames FILE: after the VMM exited, what tcpdump reads in FILE:
# the guest's ping of 192.168.200.1 and L1's TCP connection to the guest's
# port 9001 (the bye), each frame tagged with VLAN 100 and from or to the
# guest's MAC ($mac). Prints nothing; records pcap_* checks.
net__pcap_frames() {
    local lines v
    lines=$(tcpdump -nn -e -r "$1" 2>>"$l1log")
    printf '%s\n' "$lines" >"$OUT/$name.tcpdump"
    net__pcap_seen() { # KEY ERE
        v=0
        grep -E "$2" <<<"$lines" | grep -q ': vlan 100, p ' && v=1
        net__check "$1" "$v" 1
    }
    net__pcap_seen pcap_ping_request "^[0-9:.]+ $mac > .* 192\.168\.200\.2 > 192\.168\.200\.1: ICMP echo request"
    net__pcap_seen pcap_ping_reply " > $mac, .* 192\.168\.200\.1 > 192\.168\.200\.2: ICMP echo reply"
    net__pcap_seen pcap_tcp_syn " > $mac, .* 192\.168\.200\.1\.[0-9]+ > 192\.168\.200\.2\.9001: Flags \[S\],"
    net__pcap_seen pcap_tcp_synack "^[0-9:.]+ $mac > .* 192\.168\.200\.2\.9001 > 192\.168\.200\.1\.[0-9]+: Flags \[S\.\],"
    net__pcap_seen pcap_tcp_ack " > $mac, .* 192\.168\.200\.1\.[0-9]+ > 192\.168\.200\.2\.9001: Flags \[\.\],"
    # Nothing untagged from the guest: tapir tags every frame it sends.
    v=$(grep -E "^[0-9:.]+ $mac > " <<<"$lines" | grep -vc ': vlan 100, p ')
    net__check pcap_untagged_from_guest "$v" 0
}

net__guest_vlan() { # MAC
    printf 'MAC=%s\n' "$1"
    net__guest_lib
    cat <<'EOF'
setup_if "$MAC" 192.168.200.2/24 192.168.201.2/24 192.168.203.2/24
bye_listen
if wait_ping 192.168.200.1 90; then say "vlan100 ok"; else say "vlan100 FAIL"; fi
for ip in 192.168.200.1 192.168.201.1 192.168.203.1; do
    say "ping $ip sent=3 recv=$(ping_recv $ip 3 6)"
done
say ready
bye_wait 240
say done
EOF
}

# The NIC has vlan=100 on tap tvl0, which L1 creates, with VLAN
# subinterfaces tvl0.100 (192.168.200.1/24) and tvl0.300 (192.168.203.1/24)
# and 192.168.201.1/24 untagged on tvl0 itself (arp_ignore=1, so that L1
# answers ARP only on the interface that has the address). The guest has
# 192.168.200.2, .201.2 and .203.2 on its untagged eth0. Only VLAN 100
# may connect: tapir tags all guest frames with 100 and passes only
# VLAN-100 frames (untagged) to the guest.
# QEMU stand-in: QEMU's tap tvq0 and a veth (tvlp <-> tvl0) are ports of a
# VLAN-filtering L1 bridge (tvq0: pvid 100 untagged; tvlp: 100 tagged), which
# does what tapir's vlan=100 does; L1's addresses and the checks are the same.
# Guest markers: NET: vlan100 ok, NET: ping 192.168.20X.1 sent=3 recv=N,
#   NET: ready, NET: bye received, NET: done
# Result keys (value wanted):
#   guest_vlan100=ok guest_ping_vlan100_recv=3 guest_ping_untagged_recv=0
#   guest_ping_vlan300_recv=0 host_ping_vlan100_recv=3
#   host_ping_untagged_recv=0 host_ping_vlan300_recv=0 bye_sent=1
#   guest_done=1 rc=0 failed=none ok=1
#   tapir only (the NIC has pcap=; net__pcap_counts, net__pcap_frames):
#   pcap_records_match_counters=1 pcap_file_matches_records=1
#   pcap_ping_request=1 pcap_ping_reply=1 pcap_tcp_syn=1 pcap_tcp_synack=1
#   pcap_tcp_ack=1 pcap_untagged_from_guest=0; OUT/NAME.pcap, OUT/NAME.tcpdump
scenario_net_vlan() {
    local name res l1log ns start fails
    net__setup net_vlan || return 0
    local tap=tvl0 mac=52:54:00:20:00:01 log=$OUT/$name.log pid="" rc=125 v nic ok=1 pcap=""
    if [ "${VMM_IMPL:-tapir}" = tapir ]; then
        net__l1 ip tuntap add dev "$tap" mode tap || ok=0
        # With a capture (docs/pcap.md), checked against the NIC's counters
        # and read back with tcpdump.
        pcap=$WORK/$name.pcap
        nic="net=tap,ifname=$tap,mac=$mac,vlan=100,pcap=$pcap"
    else
        { net__l1 ip tuntap add dev tvq0 mode tap &&
            net__l1 ip link add tvbr type bridge vlan_filtering 1 &&
            net__l1 ip link add tvlp type veth peer name "$tap" &&
            net__l1 ip link set tvq0 master tvbr &&
            net__l1 ip link set tvlp master tvbr &&
            net__l1 bridge vlan del dev tvq0 vid 1 &&
            net__l1 bridge vlan add dev tvq0 vid 100 pvid untagged &&
            net__l1 bridge vlan del dev tvlp vid 1 &&
            net__l1 bridge vlan add dev tvlp vid 100 &&
            net__l1 ip link set tvq0 up &&
            net__l1 ip link set tvlp up &&
            net__l1 ip link set tvbr up; } || ok=0
        nic="net=tap,ifname=tvq0,mac=$mac"
    fi
    { net__l1 sh -c 'echo 1 >/proc/sys/net/ipv4/conf/all/arp_ignore' &&
        net__l1 ip link add link "$tap" name "$tap.100" type vlan id 100 &&
        net__l1 ip link add link "$tap" name "$tap.300" type vlan id 300 &&
        net__l1 ip addr add 192.168.201.1/24 dev "$tap" &&
        net__l1 ip addr add 192.168.200.1/24 dev "$tap.100" &&
        net__l1 ip addr add 192.168.203.1/24 dev "$tap.300" &&
        net__l1 ip link set "$tap" up &&
        net__l1 ip link set "$tap.100" up &&
        net__l1 ip link set "$tap.300" up; } || ok=0
    if [ "$ok" = 0 ]; then
        net__kv error "L1 interface setup failed (see $name.l1.log)"
        fails=setup
        net__finish 125
        return 0
    fi
    net__vmm_start "$log" 420 "$(with_scenario "$name" "$(net__guest_vlan "$mac")")" "$nic" && pid=$REPLY
    if [ -n "$pid" ]; then
        if net__wait_log "$log" 'NET: (ready|done)' 400 "$pid"; then
            net__check host_ping_vlan100_recv "$(net__ping "$ns" 192.168.200.2 3 10)" 3
            net__check host_ping_untagged_recv "$(net__ping "$ns" 192.168.201.2 3 6)" 0
            net__check host_ping_vlan300_recv "$(net__ping "$ns" 192.168.203.2 3 6)" 0
            [ -z "$pcap" ] || net__pcap_counts net0 "$pcap"
            v=0
            net__bye "$ns" 192.168.200.2 "$pid" && v=1
            net__check bye_sent "$v" 1
        else
            fails+="${fails:+,}guest_ready"
        fi
        rc=0
        wait "$pid" || rc=$?
    else
        echo "could not start the VMM" >>"$log"
    fi
    v=fail
    grep -q 'NET: vlan100 ok' "$log" && v=ok
    net__check guest_vlan100 "$v" ok
    net__check guest_ping_vlan100_recv "$(net__marker "$log" '.*NET: ping 192\.168\.200\.1 sent=3 recv=\([0-9]*\).*')" 3
    net__check guest_ping_untagged_recv "$(net__marker "$log" '.*NET: ping 192\.168\.201\.1 sent=3 recv=\([0-9]*\).*')" 0
    net__check guest_ping_vlan300_recv "$(net__marker "$log" '.*NET: ping 192\.168\.203\.1 sent=3 recv=\([0-9]*\).*')" 0
    v=0
    grep -q 'NET: done' "$log" && v=1
    net__check guest_done "$v" 1
    if [ -n "$pcap" ]; then
        net__pcap_frames "$pcap"
        cp "$pcap" "$OUT/" 2>/dev/null
    fi
    net__finish "$rc"
}

# --- net_two_nics ----------------------------------------------------------------

net__guest_two_nics() {
    net__guest_lib
    cat <<'EOF'
say "macs $(cat /sys/class/net/*/address | tr '\n' ' ')"
for n in 1 2; do
    mac=52:54:00:aa:00:0$n
    IF=$(find_if $mac) || { say "nic$n missing"; continue; }
    say "nic$n mac=$mac if=$IF pci=$(pci_of $IF)"
    ip addr add 192.168.11$n.2/24 dev $IF && ip link set $IF up || say "nic$n config FAIL"
done
for n in 1 2; do
    if wait_ping 192.168.11$n.1 90; then say "nic$n link ok"; else say "nic$n link FAIL"; fi
    say "nic$n ping 192.168.11$n.1 sent=3 recv=$(ping_recv 192.168.11$n.1 3 10)"
done
say done
EOF
}

# Two NICs on existing taps tn1 (192.168.111.1/24) and tn2 (192.168.112.1/24)
# that L1 creates: mac=52:54:00:aa:00:01,addr=5 and mac=52:54:00:aa:00:02,
# addr=6. Guest markers:
#   NET: macs <all MACs in /sys/class/net>
#   NET: nicN mac=MAC if=IFACE pci=DDDD:BB:SS.F   (device of the MAC's iface)
#   NET: nicN link ok, NET: nicN ping 192.168.11N.1 sent=3 recv=N, NET: done
# Result keys (value wanted), N = 1, 2:
#   nicN_pci=0000:00:05.0 / 0000:00:06.0 nicN_link=ok nicN_ping_recv=3
#   (plus nicN_if, informational) guest_done=1 rc=0 failed=none ok=1
scenario_net_two_nics() {
    local name res l1log ns start fails
    net__setup net_two_nics || return 0
    local log=$OUT/$name.log pid="" rc=125 v n
    net__taps tn 192.168.11 2 || return 0
    net__vmm_start "$log" 300 "$(with_scenario "$name" "$(net__guest_two_nics)")" \
        "net=tap,ifname=tn1,mac=52:54:00:aa:00:01,addr=5" \
        "net=tap,ifname=tn2,mac=52:54:00:aa:00:02,addr=6" && pid=$REPLY
    if [ -n "$pid" ]; then
        rc=0
        wait "$pid" || rc=$?
    else
        echo "could not start the VMM" >>"$log"
    fi
    for n in 1 2; do
        net__kv "nic${n}_if" "$(net__marker "$log" ".*NET: nic$n mac=52:54:00:aa:00:0$n if=\\([^ ]*\\) .*")"
        net__check "nic${n}_pci" "$(net__marker "$log" ".*NET: nic$n mac=52:54:00:aa:00:0$n if=[^ ]* pci=\\([^ ]*\\).*")" \
            "0000:00:0$((n + 4)).0"
        v=fail
        grep -q "NET: nic$n link ok" "$log" && v=ok
        net__check "nic${n}_link" "$v" ok
        net__check "nic${n}_ping_recv" "$(net__marker "$log" ".*NET: nic$n ping 192\\.168\\.11$n\\.1 sent=3 recv=\\([0-9]*\\).*")" 3
    done
    v=0
    grep -q 'NET: done' "$log" && v=1
    net__check guest_done "$v" 1
    net__finish "$rc"
}

# --- model variants --------------------------------------------------------------

scenario_net_tap_e1000() { MODEL=e1000 scenario_net_tap; }
scenario_net_tap_rtl8139() { MODEL=rtl8139 scenario_net_tap; }
# The same chip presented as an RTL8139C (revision 0x10), driven by 8139too.
scenario_net_tap_8139too() { MODEL=rtl8139 NIC_OPTS=rev=0x10 MODEL_TAG=8139too scenario_net_tap; }
scenario_net_bridge_e1000() { MODEL=e1000 scenario_net_bridge; }
scenario_net_bridge_rtl8139() { MODEL=rtl8139 scenario_net_bridge; }
scenario_net_vlan_e1000() { MODEL=e1000 scenario_net_vlan; }
scenario_net_vlan_rtl8139() { MODEL=rtl8139 scenario_net_vlan; }
scenario_net_two_nics_e1000() { MODEL=e1000 scenario_net_two_nics; }
scenario_net_two_nics_rtl8139() { MODEL=rtl8139 scenario_net_two_nics; }
