# shellcheck shell=bash
# User-mode NAT scenarios (--nic net=user): no tap, no bridge, no privileges.
#
# Sourced by tests/nested/scenarios.sh after net-scenarios.sh, whose net__
# helpers (setup, checks, markers, guest library, bye) these use; sourcing
# defines functions only. L1 side needs: root (namespaces, a dummy link),
# dnsmasq, python3 (tests/nested/user-http.py), iperf3, setpriv and a `kvm`
# group.
#
# The L1 side, in the scenario's namespace:
#   web0     a dummy link with 192.168.77.1/24: "the outside world"
#   http     tests/nested/user-http.py on 192.168.77.1:80: GET /big.bin
#            (10 MiB, random), POST /up (records the body's sha256)
#   iperf3   two one-shot servers on 192.168.77.1:5201 and :5202
#   dnsmasq  on 127.0.0.1:53 with the static record web.tapir.test ->
#            192.168.77.1; tapir reads it from /etc/resolv.conf, which the
#            scenario bind-mounts ("nameserver 127.0.0.1") in a private
#            mount namespace
#   ping     net.ipv4.ping_group_range opened, so unprivileged ICMP echo
#            sockets work (tapir's ICMP relay)
# tapir runs as uid 65534 with group kvm (read/write on /dev/kvm, made so
# inside the L1 VM when needed) and nothing else, with
#   --nic model=M,net=user,mac=..,restrict=on|off,
#         hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp::9001-:9001
#
# Scenarios:
#   net_user           guest: udhcpc lease (10.0.2.15, router 10.0.2.2, DNS
#                      10.0.2.3); ping 10.0.2.2 and 192.168.77.1 (relayed);
#                      nslookup web.tapir.test through 10.0.2.3; wget of
#                      http://web.tapir.test/big.bin checked by sha256; a
#                      4 MiB POST (hex text) to the L1 server checked by sha256; 200
#                      TCP connections at once (two iperf3 clients with 100
#                      streams each; each L1 server counts its 100); then L1
#                      fetches a file from the guest's httpd through the
#                      8080 forward.
#   net_user_restrict  the same set-up with restrict=on: the lease and the
#                      gateway ping work, the relayed ping, DNS and the
#                      outbound HTTP fail, the forward still works.
# Variants: scenario_net_user_e1000, scenario_net_user_rtl8139.
# Result keys: see user__scenario.

user__guest() { # MAC RESTRICT
    printf 'MAC=%s RESTRICT=%s\n' "$1" "$2"
    net__guest_lib
    cat <<'EOF'
cat >/tmp/dhcp.sh <<'S'
#!/bin/sh
case "$1" in
bound | renew)
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "$router"
    : >/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    echo "ip=$ip mask=$mask router=$router dns=$dns" >/tmp/dhcp.env
    ;;
esac
exit 0
S
chmod +x /tmp/dhcp.sh
IF=$(find_if "$MAC") || { say "no interface with mac $MAC"; IF=eth0; }
ip link set "$IF" up
bye_listen
say "driver $(driver_of "$IF") carrier=$(cat "/sys/class/net/$IF/carrier" 2>/dev/null)"
if udhcpc -i "$IF" -s /tmp/dhcp.sh -n -q -t 20 -T 3 >/dev/null 2>&1 && [ -s /tmp/dhcp.env ]; then
    say "dhcp $(cat /tmp/dhcp.env)"
else
    say "dhcp FAIL"
fi
IRQ0=$(nic_irqs)
say "gw ping recv=$(ping_recv 10.0.2.2 3 10)"
say "relay ping recv=$(ping_recv 192.168.77.1 3 10)"
A=$(nslookup web.tapir.test 2>/dev/null | awk '/^Address/ && $NF !~ /:/ { a = $NF } END { print a }')
say "dns web.tapir.test=${A:-none}"
if [ "$RESTRICT" = off ]; then
    if timeout 240 wget -q -O /tmp/big.bin http://web.tapir.test/big.bin; then
        say "big sha256 $(sha256sum </tmp/big.bin | cut -d' ' -f1)"
    else
        say "big FAIL wget"
    fi
    rm -f /tmp/big.bin
    # busybox wget posts the file as a C string: hex text, no NUL bytes.
    dd if=/dev/urandom bs=1048576 count=2 2>/dev/null | od -An -tx1 -v | tr -d ' \n' >/tmp/up.bin
    say "up sha256 $(sha256sum </tmp/up.bin | cut -d' ' -f1)"
    timeout 240 wget -q -O /dev/null --post-file=/tmp/up.bin http://192.168.77.1/up || say "up FAIL wget"
    rm -f /tmp/up.bin
    # 200 connections at once from two processes (iperf3 opens all of its
    # -P streams before sending): 200 wget processes at once kill the L2
    # guest under nested SVM here, whichever VMM runs it (QEMU's too).
    iperf3 -c 192.168.77.1 -p 5201 -P 100 -n 20M >/tmp/ip1 2>&1 &
    p1=$!
    iperf3 -c 192.168.77.1 -p 5202 -P 100 -n 20M >/tmp/ip2 2>&1 &
    p2=$!
    wait "$p1"
    r1=$?
    wait "$p2"
    r2=$?
    say "conc rc=$r1,$r2"
    [ "$r1$r2" = 00 ] || tail -n 3 /tmp/ip1 /tmp/ip2
else
    if timeout 30 wget -q -O /tmp/x http://192.168.77.1/big.bin; then say "outbound open"; else say "outbound blocked"; fi
    rm -f /tmp/x
fi
say "irqs before=$IRQ0 after=$(nic_irqs)"
mkdir -p /tmp/www
dd if=/dev/urandom of=/tmp/www/g.bin bs=1048576 count=4 2>/dev/null
say "fwd sha256 $(sha256sum </tmp/www/g.bin | cut -d' ' -f1)"
httpd -p 80 -h /tmp/www && say "fwd ready" || say "fwd FAIL httpd"
bye_wait 300
say done
EOF
}

# user__kvm_gid: prints a group that gives uid 65534 read/write on /dev/kvm
# (kvm); inside the throwaway L1 VM it makes /dev/kvm so when it is not.
user__kvm_gid() {
    local g
    g=$(getent group kvm | cut -d: -f3)
    [ -n "$g" ] || return 1
    if ! setpriv --reuid=65534 --regid="$g" --clear-groups test -r /dev/kvm -a -w /dev/kvm; then
        [ "${TAPIR_IN_L1:-}" = 1 ] || return 1
        chgrp "$g" /dev/kvm && chmod 0660 /dev/kvm || return 1
        setpriv --reuid=65534 --regid="$g" --clear-groups test -r /dev/kvm -a -w /dev/kvm || return 1
    fi
    printf '%s\n' "$g"
}

# user__vmm_start LOG TIMEOUT INITRD RESTRICT MAC RESOLV: starts the VMM in
# the namespace with /etc/resolv.conf replaced by RESOLV; sets REPLY to the
# pid of `timeout`, or returns 1.
user__vmm_start() {
    local log=$1 t=$2 initrd=$3 restrict=$4 mac=$5 resolv=$6 cmd=() pre=() gid
    local cmdline="$CONSOLE tapir.exit=poweroff"
    if [ "${VMM_IMPL:-tapir}" = tapir ]; then
        if ! gid=$(user__kvm_gid); then
            echo "user__vmm_start: uid 65534 cannot get read/write access to /dev/kvm through a kvm group" >>"$l1log"
            return 1
        fi
        # Everything tapir opens must be readable by uid 65534.
        install -m 0755 "$TAPIR" "$WORK/tapir" && install -m 0644 "$KERNEL" "$WORK/kernel" &&
            chmod 0644 "$initrd" && chmod 0755 "$WORK" || return 1
        pre=(setpriv --reuid=65534 --regid="$gid" --clear-groups --inh-caps=-all)
        cmd=("$WORK/tapir" run --kernel "$WORK/kernel" --initrd "$initrd" --memory 512M --cpus 1
            --cmdline "$cmdline"
            --nic "model=${MODEL:-virtio}${NIC_OPTS:+,$NIC_OPTS},net=user,mac=$mac,restrict=$restrict,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp::9001-:9001")
    else
        # shellcheck disable=SC2054 # commas belong to QEMU option values
        cmd=("${QEMU:-qemu-system-x86_64}" -accel kvm -cpu host -m 512 -smp 1 -nographic -no-reboot
            -nodefaults -serial stdio -kernel "$KERNEL" -initrd "$initrd" -append "$cmdline"
            -netdev "user,id=n1,restrict=$restrict,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:9001-:9001"
            -device "$(net__qemu_device),netdev=n1,romfile=,mac=$mac")
    fi
    printf '+ %s %s\n' "${pre[*]}" "${cmd[*]}" >>"$l1log"
    # shellcheck disable=SC2016 # expanded by sh -c
    ip netns exec "$ns" unshare -m sh -c 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"' \
        sh "$resolv" timeout -k 5 "$t" "${pre[@]}" "${cmd[@]}" </dev/null >"$log" 2>&1 &
    REPLY=$!
}

# Starts the L1 services; sets dpid hpid. Returns 1 (after recording why)
# when one cannot start.
user__services() {
    local i
    net__l1 ip link add web0 type dummy && net__l1 ip addr add 192.168.77.1/24 dev web0 &&
        net__l1 ip link set web0 up || return 1
    net__l1 sysctl -w net.ipv4.ping_group_range="0 2147483647" || return 1
    ip netns exec "$ns" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
        --listen-address=127.0.0.1 --bind-interfaces --user=root --pid-file= \
        --address=/web.tapir.test/192.168.77.1 </dev/null >>"$l1log" 2>&1 &
    dpid=$!
    ip netns exec "$ns" iperf3 -s -1 -B 192.168.77.1 -p 5201 </dev/null >"$WORK/$name.ip1" 2>&1 &
    ipids=$!
    ip netns exec "$ns" iperf3 -s -1 -B 192.168.77.1 -p 5202 </dev/null >"$WORK/$name.ip2" 2>&1 &
    ipids+=" $!"
    local py=python3
    [ ! -x /usr/bin/python3 ] || py=/usr/bin/python3 # Debian's, not a pyenv shim
    ip netns exec "$ns" "$py" "$HERE/user-http.py" 192.168.77.1 80 "$www" \
        </dev/null >>"$l1log" 2>&1 &
    hpid=$!
    local answer=""
    for ((i = 0; i < 300; i++)); do
        # busybox nslookup fails when any of its A/AAAA queries does (dnsmasq
        # refuses the AAAA one): look at the answer, not at the status.
        if [ -s "$www/ready" ]; then
            answer=$(ip netns exec "$ns" busybox nslookup web.tapir.test 127.0.0.1 2>&1)
            [[ "$answer" == *"Address: 192.168.77.1"* ]] && return 0
        fi
        sleep 0.2
    done
    {
        echo "L1 services did not come up: http server ready file: $(ls -l "$www/ready" 2>&1)"
        echo "nslookup web.tapir.test 127.0.0.1: ${answer:-not tried}"
    } >>"$l1log"
    return 1
}

# user__scenario BASE RESTRICT: see the header.
# Result keys (value wanted; restrict=off / restrict=on where they differ):
#   services=1 vmm_uid=65534 (tapir; n/a for QEMU) guest_driver=<driver>
#   guest_carrier=1 dhcp_ip=10.0.2.15 dhcp_router=10.0.2.2 dhcp_dns=10.0.2.3
#   gw_ping_recv=3 relay_ping_recv=3/0 dns_addr=192.168.77.1/none
#   off: big_match=1 up_match=1 conc_rc=0,0 conc_ip1_streams=100
#        conc_ip2_streams=100
#   on:  outbound=blocked
#   irqs_grew=1 fwd_match=1 bye_sent=1 guest_bye=1 guest_done=1 rc=0
user__scenario() {
    # shellcheck disable=SC2034 # used by the net__ helpers (dynamic scoping)
    local name res l1log ns start fails
    net__setup "$1" || return 0
    local restrict=$2 mac=52:54:00:12:00:31 www log pid rc=125 v dpid="" hpid="" ipids="" sent rsum uid
    log=$OUT/$name.log
    www=$WORK/$name.www
    mkdir -p "$www"
    head -c $((10 * 1048576)) /dev/urandom >"$www/big.bin"
    sent=$(sha256sum <"$www/big.bin" | cut -d' ' -f1)
    printf 'nameserver 127.0.0.1\n' >"$WORK/$name.resolv"
    v=0
    user__services && v=1
    net__check services "$v" 1
    if [ "$v" = 1 ] && user__vmm_start "$log" 480 "$(with_scenario "$name" "$(user__guest "$mac" "$restrict")")" \
        "$restrict" "$mac" "$WORK/$name.resolv"; then
        pid=$REPLY
        # The user tapir runs as (`timeout` starts setpriv, which execs it).
        uid=none
        for _ in $(seq 50); do
            v=$(pgrep -P "$pid" -x tapir | head -n 1)
            if [ -n "$v" ]; then
                uid=$(awk '/^Uid:/ { print $2 }' "/proc/$v/status" 2>/dev/null)
                break
            fi
            sleep 0.2
        done
        if [ "${VMM_IMPL:-tapir}" = tapir ]; then
            net__check vmm_uid "${uid:-none}" 65534
        else
            net__kv vmm_uid n/a
        fi
        rsum=none
        if net__wait_log "$log" 'NET: (fwd ready|fwd FAIL|done)' 420 "$pid" && grep -q 'NET: fwd ready' "$log"; then
            for _ in 1 2 3; do
                if net__l1 timeout 120 busybox wget -q -O "$WORK/$name.fwd" http://127.0.0.1:8080/g.bin; then
                    rsum=$(sha256sum <"$WORK/$name.fwd" | cut -d' ' -f1)
                    break
                fi
                sleep 1
            done
            rm -f "$WORK/$name.fwd"
            v=0
            net__bye "$ns" 127.0.0.1 "$pid" && v=1
            net__check bye_sent "$v" 1
        else
            net__check bye_sent 0 1
        fi
        net__kv fwd_sha256_received "$rsum"
        rc=0
        wait "$pid" || rc=$?
    else
        echo "could not start the VMM or the L1 services (see $name.l1.log)" >>"$log"
    fi
    [ -z "$dpid" ] || kill "$dpid" 2>/dev/null
    [ -z "$hpid" ] || kill "$hpid" 2>/dev/null
    # shellcheck disable=SC2086 # a list of pids
    [ -z "$ipids" ] || kill $ipids 2>/dev/null
    # shellcheck disable=SC2086
    wait "$dpid" "$hpid" $ipids 2>/dev/null

    net__check guest_driver "$(net__marker "$log" '.*NET: driver \([^ ]*\) carrier=.*')" "$(net__driver)"
    net__check guest_carrier "$(net__marker "$log" '.*NET: driver [^ ]* carrier=\([0-9]*\).*')" 1
    net__check dhcp_ip "$(net__marker "$log" '.*NET: dhcp ip=\([0-9.]*\) .*')" 10.0.2.15
    net__check dhcp_router "$(net__marker "$log" '.*NET: dhcp .* router=\([0-9.]*\) .*')" 10.0.2.2
    net__check dhcp_dns "$(net__marker "$log" '.*NET: dhcp .* dns=\([0-9.]*\).*')" 10.0.2.3
    net__check gw_ping_recv "$(net__marker "$log" '.*NET: gw ping recv=\([0-9]*\).*')" 3
    net__check_irqs
    if [ "$restrict" = off ]; then
        net__check relay_ping_recv "$(net__marker "$log" '.*NET: relay ping recv=\([0-9]*\).*')" 3
        net__check dns_addr "$(net__marker "$log" '.*NET: dns web\.tapir\.test=\([0-9a-z.]*\).*')" 192.168.77.1
        net__kv big_sha256_sent "$sent"
        net__check_sha big "$sent"
        v=$(cut -d' ' -f1 "$www/up.sha256" 2>/dev/null)
        net__kv up_sha256_received "${v:-none}"
        net__check_sha up "${v:-none}"
        net__check conc_rc "$(net__marker "$log" '.*NET: conc rc=\([0-9,]*\).*')" 0,0
        # Each iperf3 server saw its 100 streams connected, and got data.
        local f n b
        for f in ip1 ip2; do
            cat "$WORK/$name.$f" >>"$l1log" 2>/dev/null
            n=$(grep -c 'connected to' "$WORK/$name.$f" 2>/dev/null)
            net__check "conc_${f}_streams" "${n:-0}" 100
            b=$(awk '/\[SUM\].*receiver/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /Bytes$/) print $i $(i + 1) }' \
                "$WORK/$name.$f" 2>/dev/null | head -n 1)
            net__kv "conc_${f}_received" "${b:-none}"
        done
    else
        net__check relay_ping_recv "$(net__marker "$log" '.*NET: relay ping recv=\([0-9]*\).*')" 0
        net__check dns_addr "$(net__marker "$log" '.*NET: dns web\.tapir\.test=\([0-9a-z.]*\).*')" none
        net__check outbound "$(net__marker "$log" '.*NET: outbound \([a-z]*\).*')" blocked
    fi
    net__check_sha fwd "$(grep '^fwd_sha256_received=' "$res" | cut -d= -f2)"
    net__check_seen guest_bye 'NET: bye received'
    net__check_seen guest_done 'NET: done'
    rm -rf "$www"
    net__finish "$rc"
}

scenario_net_user() { user__scenario net_user off; }
scenario_net_user_restrict() { user__scenario net_user_restrict on; }
scenario_net_user_e1000() { MODEL=e1000 user__scenario net_user off; }
scenario_net_user_rtl8139() { MODEL=rtl8139 user__scenario net_user off; }
