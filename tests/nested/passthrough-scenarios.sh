# shellcheck shell=bash disable=SC2034 # fails etc. are read by the net__ helpers (dynamic scoping)
# Direct attach (--nic net=passthrough,host=IF): tapir makes a macvtap of
# its own on IF, uses it as the NIC's backend and deletes it at exit.
#
# Sourced by tests/nested/scenarios.sh after net-scenarios.sh (it uses the
# net__ helpers); sourcing defines functions only. tapir only (the QEMU
# stand-in has no passthrough backend). Needs the macvtap and veth modules.
#
# Layout: tapir runs in the scenario's namespace tapir-NAME (as every net_*
# scenario does). Each macvtap parent is one end of a veth pair in that
# namespace (up, no address); the other end is in the "namespace host"
# tapir-NAME-h (IP forwarding off), with an address. Guests use static
# addresses (L1 serves no DHCP).
#
# Scenarios:
#   net_passthrough        one guest with four NICs, one per driver: virtio
#                          (virtio_net), e1000 (e1000), rtl8139 (8139cp),
#                          rtl8139 rev=0x10 (8139too), each on its own
#                          parent tpvN (default mode, bridge), guest
#                          192.168.13N.2, namespace host 192.168.13N.1. Per
#                          NIC: the guest pings the namespace host, fetches
#                          h2g.bin from it over HTTP (sha256 checked), the
#                          namespace host fetches the guest's g2hN.bin over
#                          the same NIC (sha256 checked) and pings the guest.
#   net_passthrough_modes  two guests (vm1, vm2), each with a NIC on parent
#                          tpb (mode=bridge, 192.168.140.0/24) and one on
#                          parent tpp (mode=private, 192.168.141.0/24); the
#                          namespace host is .254 on both. Bridge: the
#                          guests ping each other; private: they do not reach
#                          each other, but both reach the namespace host
#                          (frames go out through the veth) and it them.
# Both check, while tapir runs, the macvtaps in the scenario namespace (named
# tmv<tapir pid>n<k>, carrying the guest MACs, in the modes asked for), and
# after tapir exits that no macvtap is left there (macvtap_left=none).
#
# Environment: PT_XFER_MIB=N size of each transfer in net_passthrough
# (default 4; 8 transfers of it: 4 NICs, both ways).

# --- L1-side helpers (prefix pt__; the calling scenario's locals as in net__) --

# pt__hostns SUBNET... : creates the namespace host $hns (IP forwarding off)
# and, per SUBNET "PARENT HOSTADDR/LEN", a veth pair: PARENT in the scenario
# namespace, up, without an address, and PARENTh in $hns with HOSTADDR, up.
# On failure it records the setup error and finishes the scenario (rc 125);
# the caller then returns.
pt__hostns() {
    local s p a ok=1
    ip netns del "$hns" >/dev/null 2>&1 # left over from an interrupted run
    { ip netns add "$hns" &&
        ip -n "$hns" link set lo up &&
        ip netns exec "$hns" sysctl -qw net.ipv4.ip_forward=0; } >>"$l1log" 2>&1 || ok=0
    for s; do
        [ "$ok" = 1 ] || break
        p=${s% *} a=${s#* }
        { net__l1 ip link add "$p" type veth peer name "${p}h" netns "$hns" &&
            net__l1 ip link set "$p" up &&
            ip -n "$hns" addr add "$a" dev "${p}h" &&
            ip -n "$hns" link set "${p}h" up; } >>"$l1log" 2>&1 || ok=0
    done
    [ "$ok" = 1 ] && return 0
    net__kv error "veth/namespace host setup failed (see $name.l1.log)"
    fails=setup
    net__delete_ns "$hns"
    net__finish 125
    return 1
}

# pt__tapir_only: the QEMU stand-in cannot run these (no passthrough
# backend); records that as a setup error (rc 125).
pt__tapir_only() {
    [ "${VMM_IMPL:-tapir}" = tapir ] && return 0
    net__kv error "tapir only: the stand-in has no net=passthrough"
    fails=setup
    net__finish 125
    return 1
}

# The macvtaps in the scenario namespace, one `ip -d -o link` line each.
pt__macvtaps() { ip -n "$ns" -d -o link show type macvtap 2>/dev/null; }

# pt__check_macvtaps PIDS MODES MAC...: while tapir runs, the scenario
# namespace has one macvtap per MAC (macvtaps_during), each named
# tmv<pid>n<k> with a pid of PIDS (tapir's; alternatives a|b) (macvtap_names),
# carrying one of the MACs (macvtap_macs), and their modes counted are MODES
# (like bridge:2,private:2; macvtap_modes).
pt__check_macvtaps() {
    local pids=$1 want=$2 lines n=0 m macs=0 modes
    shift 2
    lines=$(pt__macvtaps)
    printf '+ macvtaps while tapir runs (tapir pids %s):\n%s\n' "$pids" "$lines" >>"$l1log"
    net__check macvtaps_during "$(grep -c . <<<"$lines")" "$#"
    [ -n "$pids" ] && n=$(grep -cE "^[0-9]+: tmv($pids)n[0-9]+@" <<<"$lines")
    net__check macvtap_names "$n" "$#"
    for m; do grep -qi "link/ether $m " <<<"$lines" && macs=$((macs + 1)); done
    net__check macvtap_macs "$macs" "$#"
    modes=$(grep -o 'macvtap mode [a-z]*' <<<"$lines" | awk '{ print $3 }' | sort | uniq -c |
        awk '{ printf "%s%s:%s", (NR > 1 ? "," : ""), $2, $1 }')
    net__check macvtap_modes "${modes:-none}" "$want"
}

# pt__check_left: after tapir exited, no macvtap is left in the scenario
# namespace (macvtap_left=none, else the names).
pt__check_left() {
    local left
    left=$(pt__macvtaps | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | paste -sd, -)
    echo "+ macvtaps after exit: ${left:-none}" >>"$l1log"
    net__check macvtap_left "${left:-none}" none
}

# The pid of the tapir that `timeout` (PID) runs.
pt__tapir_pid() { pgrep -P "$1" -x tapir | head -n 1; }

# --- net_passthrough -----------------------------------------------------------

pt__guest_models() { # MIB
    printf 'MIB=%s\n' "$1"
    net__guest_lib
    cat <<'EOF'
heartbeat
for n in 1 2 3 4; do
    setup_if 52:54:00:cc:00:0$n 192.168.13$n.2/24
    eval "IF$n=$IF"
done
bye_listen
mkdir -p /tmp/www
for n in 1 2 3 4; do
    eval "IF=\$IF$n"
    h=192.168.13$n.1
    if ! wait_ping $h 90; then say "nic$n link FAIL"; continue; fi
    say "nic$n link ok"
    say "nic$n driver $(driver_of "$IF") carrier=$(cat "/sys/class/net/$IF/carrier" 2>/dev/null)"
    say "nic$n ping $h sent=5 recv=$(ping_recv $h 5 15)"
    if timeout 120 wget -q -O /tmp/h2g.bin http://$h:8080/h2g.bin; then
        say "nic${n}_h2g sha256 $(sha256sum </tmp/h2g.bin | cut -d' ' -f1)"
    else
        say "nic${n}_h2g FAIL wget status $?"
    fi
    rm -f /tmp/h2g.bin
    dd if=/dev/urandom of=/tmp/www/g2h$n.bin bs=1048576 count="$MIB" 2>/dev/null
    say "nic${n}_g2h sha256 $(sha256sum </tmp/www/g2h$n.bin | cut -d' ' -f1)"
done
httpd -p 8080 -h /tmp/www && say "g2h ready" || say "g2h FAIL httpd"
bye_wait 300
say done
EOF
}

# Guest markers, N = 1..4:
#   NET: nicN link ok | NET: nicN link FAIL
#   NET: nicN driver DRIVER carrier=C, NET: nicN ping 192.168.13N.1 sent=5 recv=R
#   NET: nicN_h2g sha256 HEX   (h2g.bin from the namespace host, through NIC N)
#   NET: nicN_g2h sha256 HEX   (g2hN.bin, which the namespace host fetches
#                               from 192.168.13N.2)
#   NET: g2h ready, NET: bye received, NET: done
# Result keys (value wanted), N = 1..4:
#   nicN_link=ok nicN_driver=virtio_net|e1000|8139cp|8139too nicN_carrier=1
#   nicN_ping_recv=5 nicN_h2g_match=1 nicN_g2h_match=1 (with the sha256s
#   sent/received/reported) hostns_ping_nicN_recv=3
#   macvtaps_during=4 macvtap_names=4 macvtap_macs=4 macvtap_modes=bridge:4
#   bye_sent=1 guest_bye=1 guest_done=1 macvtap_left=none rc=0 failed=none ok=1
scenario_net_passthrough() {
    local name res l1log ns start fails
    net__setup net_passthrough || return 0
    pt__tapir_only || return 0
    local hns=tapir-$name-h mib=${PT_XFER_MIB:-4} log=$OUT/$name.log www=$WORK/$name.www
    local pid="" hpid rc=125 v n sent initrd
    local -a rsum=(none none none none none)
    local drivers=(- virtio_net e1000 8139cp 8139too)
    pt__hostns "tpv1 192.168.131.1/24" "tpv2 192.168.132.1/24" \
        "tpv3 192.168.133.1/24" "tpv4 192.168.134.1/24" || return 0
    mkdir -p "$www"
    head -c $((mib * 1048576)) /dev/urandom >"$www/h2g.bin"
    sent=$(sha256sum <"$www/h2g.bin" | cut -d' ' -f1)
    net__kv h2g_sha256_sent "$sent"
    net__kv xfer_mib "$mib"
    ip netns exec "$hns" busybox httpd -f -p 8080 -h "$www" </dev/null >>"$l1log" 2>&1 &
    hpid=$!
    initrd=$(with_scenario "$name" "$(pt__guest_models "$mib")")
    NET_CTL=$WORK/$name.ctl
    # shellcheck disable=SC2054 # commas belong to the --nic values
    local cmd=("$TAPIR" run --kernel "$KERNEL" --initrd "$initrd" --memory 256M --cpus 1
        --cmdline "$CONSOLE tapir.exit=poweroff" --control-socket "$NET_CTL"
        --nic model=virtio,net=passthrough,host=tpv1,mac=52:54:00:cc:00:01
        --nic model=e1000,net=passthrough,host=tpv2,mac=52:54:00:cc:00:02
        --nic model=rtl8139,net=passthrough,host=tpv3,mac=52:54:00:cc:00:03
        --nic model=rtl8139,rev=0x10,net=passthrough,host=tpv4,mac=52:54:00:cc:00:04)
    printf '+ %s\n' "${cmd[*]}" >>"$l1log"
    ip netns exec "$ns" timeout -k 5 480 "${cmd[@]}" </dev/null >"$log" 2>&1 &
    pid=$!
    if net__wait_log "$log" 'NET: (g2h ready|g2h FAIL|done)' 420 "$pid" &&
        grep -q 'NET: g2h ready' "$log"; then
        pt__check_macvtaps "$(pt__tapir_pid "$pid")" bridge:4 \
            52:54:00:cc:00:01 52:54:00:cc:00:02 52:54:00:cc:00:03 52:54:00:cc:00:04
        for n in 1 2 3 4; do
            rsum[n]=$(net__fetch_sha "$hns" "http://192.168.13$n.2:8080/g2h$n.bin" "$pid")
            net__check "hostns_ping_nic${n}_recv" "$(net__ping "$hns" "192.168.13$n.2" 3 10)" 3
        done
        v=0
        net__bye "$hns" 192.168.131.2 "$pid" && v=1
        net__check bye_sent "$v" 1
    else
        net__guest_hung "$name" "$log" "$pid" || net__nic_info "no g2h ready"
        net__check guest_ready 0 1
        kill -TERM "$pid" 2>/dev/null
    fi
    rc=0
    wait "$pid" || rc=$?
    kill "$hpid" 2>/dev/null
    wait "$hpid" 2>/dev/null
    rm -rf "$www"
    pt__check_left
    for n in 1 2 3 4; do
        net__check "nic${n}_link" "$(net__marker "$log" ".*NET: nic$n link \\([a-zA-Z]*\\).*")" ok
        net__check "nic${n}_driver" "$(net__marker "$log" ".*NET: nic$n driver \\([^ ]*\\) carrier=.*")" "${drivers[n]}"
        net__check "nic${n}_carrier" "$(net__marker "$log" ".*NET: nic$n driver [^ ]* carrier=\\([0-9]*\\).*")" 1
        net__check "nic${n}_ping_recv" \
            "$(net__marker "$log" ".*NET: nic$n ping 192\\.168\\.13$n\\.1 sent=5 recv=\\([0-9]*\\).*")" 5
        net__check_sha "nic${n}_h2g" "$sent"
        net__kv "nic${n}_g2h_sha256_received" "${rsum[n]}"
        net__check_sha "nic${n}_g2h" "${rsum[n]}"
    done
    net__check_seen guest_bye 'NET: bye received'
    net__check_seen guest_done 'NET: done'
    net__delete_ns "$hns"
    net__finish "$rc"
}

# --- net_passthrough_modes -------------------------------------------------------

pt__guest_modes() { # ME PEER
    printf 'ME=%s PEER=%s\n' "$1" "$2"
    net__guest_lib
    cat <<'EOF'
heartbeat
setup_if 52:54:00:cd:0$ME:01 192.168.140.$ME/24
setup_if 52:54:00:cd:0$ME:02 192.168.141.$ME/24
bye_listen
for m in bridge:140 private:141; do
    if wait_ping 192.168.${m#*:}.254 120; then say "${m%:*} host ok"; else say "${m%:*} host FAIL"; fi
done
# The peer answering on the bridge subnet has both of its addresses: the
# private-mode ping below then fails for the mode alone.
if wait_ping 192.168.140.$PEER 180; then say "bridge peer ok"; else say "bridge peer FAIL"; fi
say "bridge ping peer sent=3 recv=$(ping_recv 192.168.140.$PEER 3 10)"
say "private ping peer sent=3 recv=$(ping_recv 192.168.141.$PEER 3 5)"
say ready
bye_wait 240
say done
EOF
}

# Guest markers (per VM log): NET: bridge|private host ok|FAIL,
#   NET: bridge peer ok|FAIL, NET: bridge ping peer sent=3 recv=N,
#   NET: private ping peer sent=3 recv=N, NET: ready, NET: bye received,
#   NET: done
# Result keys (value wanted), N = 1, 2:
#   vmN_bridge_host=ok vmN_private_host=ok vmN_bridge_peer=ok
#   vmN_bridge_ping_peer_recv=3 vmN_private_ping_peer_recv=0
#   hostns_ping_vmN_bridge_recv=3 hostns_ping_vmN_private_recv=3
#   macvtaps_during=4 macvtap_names=4 macvtap_macs=4
#   macvtap_modes=bridge:2,private:2 bye_vmN=1 vmN_done=1 vmN_rc=0
#   macvtap_left=none rc=0 failed=none ok=1
scenario_net_passthrough_modes() {
    local name res l1log ns start fails
    net__setup net_passthrough_modes || return 0
    pt__tapir_only || return 0
    local hns=tapir-$name-h pid1="" pid2="" rc=125 rc1=125 rc2=125 v i m log log1 log2
    log1=$OUT/$name.vm1.log
    log2=$OUT/$name.vm2.log
    pt__hostns "tpb 192.168.140.254/24" "tpp 192.168.141.254/24" || return 0
    local nics1=("net=passthrough,host=tpb,mode=bridge,mac=52:54:00:cd:01:01"
        "net=passthrough,host=tpp,mode=private,mac=52:54:00:cd:01:02")
    local nics2=("net=passthrough,host=tpb,mode=bridge,mac=52:54:00:cd:02:01"
        "net=passthrough,host=tpp,mode=private,mac=52:54:00:cd:02:02")
    net__vmm_start "$log1" 420 "$(with_scenario "$name.vm1" "$(pt__guest_modes 1 2)")" "${nics1[@]}" &&
        pid1=$REPLY
    # As in net_bridge: the second VM starts once the first has booted.
    [ -z "$pid1" ] || net__wait_log "$log1" 'TAPIR-GUEST: booted' 200 "$pid1"
    net__vmm_start "$log2" 420 "$(with_scenario "$name.vm2" "$(pt__guest_modes 2 1)")" "${nics2[@]}" &&
        pid2=$REPLY
    if [ -n "$pid1" ] && [ -n "$pid2" ]; then
        net__wait_log "$log1" 'NET: (ready|done)' 400 "$pid1"
        net__wait_log "$log2" 'NET: (ready|done)' 400 "$pid2"
        pt__check_macvtaps "$(pt__tapir_pid "$pid1")|$(pt__tapir_pid "$pid2")" bridge:2,private:2 \
            52:54:00:cd:01:01 52:54:00:cd:01:02 52:54:00:cd:02:01 52:54:00:cd:02:02
        for i in 1 2; do
            for m in bridge:140 private:141; do
                net__check "hostns_ping_vm${i}_${m%:*}_recv" "$(net__ping "$hns" "192.168.${m#*:}.$i" 3 10)" 3
            done
        done
        v=0
        net__bye "$hns" 192.168.140.1 "$pid1" && v=1
        net__check bye_vm1 "$v" 1
        v=0
        net__bye "$hns" 192.168.140.2 "$pid2" && v=1
        net__check bye_vm2 "$v" 1
    else
        echo "could not start both VMMs" >>"$l1log"
        fails+="${fails:+,}start"
        [ -z "$pid1" ] || kill -TERM "$pid1" 2>/dev/null
    fi
    [ -z "$pid1" ] || { rc1=0; wait "$pid1" || rc1=$?; }
    [ -z "$pid2" ] || { rc2=0; wait "$pid2" || rc2=$?; }
    net__kv vm1_rc "$rc1"
    net__kv vm2_rc "$rc2"
    rc=$rc1
    [ "$rc" != 0 ] || rc=$rc2
    { echo "=== vm1 ==="; cat "$log1" 2>/dev/null; echo "=== vm2 ==="; cat "$log2" 2>/dev/null; } >"$OUT/$name.log"
    pt__check_left
    for i in 1 2; do
        eval "log=\$log$i"
        for m in bridge private; do
            net__check "vm${i}_${m}_host" "$(net__marker "$log" ".*NET: $m host \\([a-zA-Z]*\\).*")" ok
        done
        net__check "vm${i}_bridge_peer" "$(net__marker "$log" '.*NET: bridge peer \([a-zA-Z]*\).*')" ok
        net__check "vm${i}_bridge_ping_peer_recv" \
            "$(net__marker "$log" '.*NET: bridge ping peer sent=3 recv=\([0-9]*\).*')" 3
        net__check "vm${i}_private_ping_peer_recv" \
            "$(net__marker "$log" '.*NET: private ping peer sent=3 recv=\([0-9]*\).*')" 0
        v=0
        grep -q 'NET: done' "$log" && v=1
        net__check "vm${i}_done" "$v" 1
    done
    net__delete_ns "$hns"
    net__finish "$rc"
}
