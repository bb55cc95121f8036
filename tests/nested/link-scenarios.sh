# shellcheck shell=bash disable=SC2034 # fails etc. are read by the net__ helpers (dynamic scoping)
# Link up/down through the control socket (tapir run --control-socket,
# tapir ctl SOCKET set_link NAME on|off), seen by each guest driver.
#
# Sourced by tests/nested/scenarios.sh after net-scenarios.sh (it uses the
# net__ helpers); sourcing defines functions only.
#
# Scenario:
#   net_link   one guest with four NICs, one per driver: virtio (virtio_net),
#              e1000 (e1000), rtl8139 (8139cp) and rtl8139 rev=0x10
#              (8139too), ids l1..l4, each on its own tap tlN
#              (192.168.12N.1/24 in L1, guest 192.168.12N.2). L1 waits until
#              the guest pings all four, pulls all four cables with
#              `tapir ctl`, pings the guest while they are out (tapir must
#              drop those frames and count them), waits for the guest to see
#              carrier 0 on all four, plugs them back, waits for the guest to
#              see carrier 1 and ping again, then stops tapir with `tapir ctl
#              SOCKET quit`. tapir only (the QEMU stand-in has no tapir ctl).
#
# Guest markers:
#   NET: nicN if=IF driver=DRIVER, NET: nicN link ok|FAIL
#   NET: phase up carriers=1111
#   NET: down seen carriers=0000 | NET: down FAIL carriers=XXXX
#   NET: nicN down ping recv=N (the guest cannot send: 0 wanted)
#   NET: phase down done
#   NET: up seen carriers=1111 | NET: up FAIL carriers=XXXX
#   NET: nicN up ping recv=N, NET: done
# Result keys (value wanted), N = 1..4:
#   nicN_driver=virtio_net|e1000|8139cp|8139too nicN_link=ok
#   ctl_info_up=1111 (link=up in `tapir ctl info` before)
#   ctl_set_off=4 ctl_set_on=4 (set_link answered ok)
#   guest_down=0000 nicN_down_ping=0 host_down_ping=0 (L1 -> guest while out)
#   ctl_info_down=0000 rx_link_down_counted=1111 (tapir counted frames it
#   dropped while the cable was out, per NIC)
#   guest_up=1111 nicN_up_ping=3 host_up_ping=3
#   ctl_quit=1 socket_removed=1 quit_reported=1 losses_reported=1 rc=0

# Guest script.
link__guest() {
    net__guest_lib
    cat <<'EOF'
# carriers: the carrier of nic1..nic4 as one word, e.g. 1011
carriers() {
    w=""
    for n in 1 2 3 4; do
        c=$(cat "/sys/class/net/$(eval echo \$IF$n)/carrier" 2>/dev/null)
        w="$w${c:-x}"
    done
    echo "$w"
}
# wait_carriers WORD SECONDS
wait_carriers() {
    end=$(($(now) + $2))
    while [ "$(now)" -lt "$end" ]; do
        [ "$(carriers)" = "$1" ] && return 0
        sleep 0.2
    done
    return 1
}
for n in 1 2 3 4; do
    mac=52:54:00:bb:00:0$n
    IF=$(find_if $mac) || { say "nic$n missing"; IF=none; }
    eval "IF$n=$IF"
    say "nic$n if=$IF driver=$(driver_of $IF)"
    ip addr add 192.168.12$n.2/24 dev $IF && ip link set $IF up || say "nic$n config FAIL"
done
for n in 1 2 3 4; do
    if wait_ping 192.168.12$n.1 90; then say "nic$n link ok"; else say "nic$n link FAIL"; fi
done
say "phase up carriers=$(carriers)"
if wait_carriers 0000 120; then say "down seen carriers=$(carriers)"; else say "down FAIL carriers=$(carriers)"; fi
for n in 1 2 3 4; do
    say "nic$n down ping recv=$(ping_recv 192.168.12$n.1 2 3)"
done
say "phase down done"
if wait_carriers 1111 120; then say "up seen carriers=$(carriers)"; else say "up FAIL carriers=$(carriers)"; fi
for n in 1 2 3 4; do
    wait_ping 192.168.12$n.1 30 >/dev/null
    say "nic$n up ping recv=$(ping_recv 192.168.12$n.1 3 10)"
done
say done
# L1 stops tapir with `tapir ctl SOCKET quit`; stay up until then.
sleep 600
EOF
}

# link__ctl ARGS...: tapir ctl on the scenario's socket, output to the l1 log
# and to stdout.
link__ctl() {
    printf '+ tapir ctl %s\n' "$*" >>"$l1log"
    "$TAPIR" ctl "$sock" "$@" 2>&1 | tee -a "$l1log"
    return "${PIPESTATUS[0]}"
}

# link__field INFO NAME KEY: KEY's value in NAME's `tapir ctl info` line.
link__field() {
    awk -v n="$2" -v k="$3" '$1 == n { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' <<<"$1"
}

# link__word INFO KEY VALUE: one digit per NIC l1..l4: 1 when KEY is VALUE
# (VALUE "+" means a number above 0).
link__word() {
    local w="" n v
    for n in 1 2 3 4; do
        v=$(link__field "$1" "l$n" "$2")
        if [ "$3" = + ]; then
            [ "${v:-0}" -gt 0 ] 2>/dev/null && w+=1 || w+=0
        else
            [ "$v" = "$3" ] && w+=1 || w+=0
        fi
    done
    echo "$w"
}

scenario_net_link() {
    # shellcheck disable=SC2034 # fails etc. are read by the net__ helpers (dynamic scoping)
    local name res l1log ns start fails
    net__setup net_link || return 0
    local log=$OUT/$name.log sock=$WORK/net_link.ctl pid="" rc=125 v n info cnt
    if [ "${VMM_IMPL:-tapir}" != tapir ]; then
        net__kv error "tapir only: the stand-in has no control socket"
        fails=setup
        net__finish 125
        return 0
    fi
    net__taps tl 192.168.12 4 || return 0
    # shellcheck disable=SC2054 # commas belong to the --nic values
    local cmd=("$TAPIR" run --kernel "$KERNEL" --memory 256M --cpus 1
        --initrd "$(with_scenario "$name" "$(link__guest)")"
        --cmdline "$CONSOLE tapir.exit=poweroff" --control-socket "$sock"
        --nic model=virtio,net=tap,ifname=tl1,id=l1,mac=52:54:00:bb:00:01
        --nic model=e1000,net=tap,ifname=tl2,id=l2,mac=52:54:00:bb:00:02
        --nic model=rtl8139,net=tap,ifname=tl3,id=l3,mac=52:54:00:bb:00:03
        --nic model=rtl8139,rev=0x10,net=tap,ifname=tl4,id=l4,mac=52:54:00:bb:00:04)
    printf '+ %s\n' "${cmd[*]}" >>"$l1log"
    ip netns exec "$ns" timeout -k 5 480 "${cmd[@]}" </dev/null >"$log" 2>&1 &
    pid=$!

    if net__wait_log "$log" 'NET: phase up' 300 "$pid"; then
        info=$(link__ctl info)
        net__check ctl_info_up "$(link__word "$info" link up)" 1111
        cnt=0
        for n in 1 2 3 4; do link__ctl set_link "l$n" off >/dev/null && cnt=$((cnt + 1)); done
        net__check ctl_set_off "$cnt" 4
        # L1 -> guest while the cables are out: tapir drops these frames.
        v=0
        for n in 1 2 3 4; do
            v=$((v + $(net__ping "$ns" "192.168.12$n.2" 2 3)))
        done
        net__check host_down_ping "$v" 0
        net__wait_log "$log" 'NET: phase down done' 200 "$pid"
        info=$(link__ctl info)
        net__check ctl_info_down "$(link__word "$info" link down)" 1111
        net__check rx_link_down_counted "$(link__word "$info" rx_link_down +)" 1111
        cnt=0
        for n in 1 2 3 4; do link__ctl set_link "l$n" on >/dev/null && cnt=$((cnt + 1)); done
        net__check ctl_set_on "$cnt" 4
        net__wait_log "$log" 'NET: done' 200 "$pid"
        v=0
        for n in 1 2 3 4; do
            v=$((v + $(net__ping "$ns" "192.168.12$n.2" 1 5)))
        done
        net__check host_up_ping "$v" 4
        v=0
        link__ctl quit >/dev/null && v=1
        net__check ctl_quit "$v" 1
    else
        net__check guest_phase_up 0 1
        kill -TERM "$pid" 2>/dev/null
    fi
    rc=0
    wait "$pid" || rc=$?
    v=0
    [ -e "$sock" ] || v=1
    net__check socket_removed "$v" 1
    for n in 1 2 3 4; do
        net__check "nic${n}_link" "$(net__marker "$log" ".*NET: nic$n link \\([a-zA-Z]*\\).*")" ok
        net__check "nic${n}_down_ping" "$(net__marker "$log" ".*NET: nic$n down ping recv=\\([0-9]*\\).*")" 0
        net__check "nic${n}_up_ping" "$(net__marker "$log" ".*NET: nic$n up ping recv=\\([0-9]*\\).*")" 3
    done
    net__check nic1_driver "$(net__marker "$log" '.*NET: nic1 if=[^ ]* driver=\([^ ]*\).*')" virtio_net
    net__check nic2_driver "$(net__marker "$log" '.*NET: nic2 if=[^ ]* driver=\([^ ]*\).*')" e1000
    net__check nic3_driver "$(net__marker "$log" '.*NET: nic3 if=[^ ]* driver=\([^ ]*\).*')" 8139cp
    net__check nic4_driver "$(net__marker "$log" '.*NET: nic4 if=[^ ]* driver=\([^ ]*\).*')" 8139too
    net__check guest_up_before "$(net__marker "$log" '.*NET: phase up carriers=\([0-9x]*\).*')" 1111
    net__check guest_down "$(net__marker "$log" '.*NET: down [a-zA-Z]* carriers=\([0-9x]*\).*')" 0000
    net__check guest_up "$(net__marker "$log" '.*NET: up [a-zA-Z]* carriers=\([0-9x]*\).*')" 1111
    net__check_seen quit_reported "tapir: stopped by 'quit' on the control socket"
    net__check_seen losses_reported 'tapir: note: l1: frames not delivered: .*rx_link_down='
    net__finish "$rc"
}
