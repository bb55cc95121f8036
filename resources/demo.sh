#!/bin/bash
# tapir's main job, with all set-up on a fresh Debian machine: build tapir,
# assemble the default Linux guest from Debian packages, boot it with
# 2 vCPUs and 256 MiB and a virtio-net NIC on user-mode NAT (net=user: no
# tap, no privileges), show that it booted (CPUs, memory) and that the
# network works: a DHCP lease, a ping to the gateway, and a 1 MiB file
# downloaded from an HTTP server on the host, checked by sha256. Then the
# guest powers off.
# On a PVM host (or with no /dev/kvm) all of it runs inside the nested L1
# VM of resources/nested/tapir-nested; on VT-x/AMD-V it runs directly.
# Environment: CPUS (default 2), MEMORY (default 256M), MODEL (NIC model:
# virtio, e1000 or rtl8139; default virtio).
# Exit status: 0 when the guest booted and the download matched; 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC2034 # used by common.sh
TAPIR_PROG=demo.sh
. resources/lib/common.sh

PORT=8088

# The guest's part (runs as /scenario.sh after the guest booted).
guest_script() {
    printf 'PORT=%s\n' "$PORT"
    cat <<'EOF'
say() { echo "DEMO: $*"; }
IF=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
printf '#!/bin/sh\n[ "$1" = bound ] && ip addr add "$ip/${mask:-24}" dev "$interface" && ip route add default via "$router" && echo "$ip router $router dns $dns" >/tmp/lease\nexit 0\n' >/tmp/dhcp.sh
chmod +x /tmp/dhcp.sh
ip link set "$IF" up
if udhcpc -i "$IF" -s /tmp/dhcp.sh -n -q -t 10 -T 3 >/dev/null 2>&1; then
    say "$IF ($(readlink /sys/class/net/$IF/device/driver | sed 's,.*/,,')): DHCP lease $(cat /tmp/lease)"
else
    say "DHCP FAIL"
fi
say "ping gateway: $(ping -q -c 3 -w 10 10.0.2.2 2>&1 | grep -o '[0-9]* packets received' || echo FAIL)"
if timeout 120 wget -q -O /tmp/demo.bin "http://10.0.2.2:$PORT/demo.bin"; then
    say "download sha256 $(sha256sum </tmp/demo.bin | cut -d' ' -f1)"
else
    say "download FAIL"
fi
EOF
}

# --inner TAPIR KERNEL INITRD CPUS MEMORY MODEL: the part that runs where KVM can boot Linux
# (here, or inside L1): serves the file on the host's loopback, boots the
# guest (its gateway 10.0.2.2 reaches the host's 127.0.0.1 with loopback=on)
# and checks what the guest downloaded.
inner() {
    local tapir=$1 kernel=$2 initrd=$3 cpus=$4 memory=$5 model=$6 work sum log hpid rc=0
    work=$(mktemp -d /tmp/tapir-demo.XXXXXX)
    # shellcheck disable=SC2064 # expand now
    trap "rm -rf '$work'" EXIT
    head -c 1048576 /dev/urandom >"$work/demo.bin"
    sum=$(sha256sum <"$work/demo.bin" | cut -d' ' -f1)
    busybox httpd -f -p "127.0.0.1:$PORT" -h "$work" &
    hpid=$!
    guest_script >"$work/demo.sh"
    resources/guest/make-scenario-cpio.sh "$work/demo.sh" "$work/demo.cpio.gz" >/dev/null
    cat "$initrd" "$work/demo.cpio.gz" >"$work/initrd"
    local cmd=("$tapir" run --kernel "$kernel" --initrd "$work/initrd" --cpus "$cpus"
        --memory "$memory" --cmdline "console=ttyS0 quiet tapir.exit=poweroff"
        --nic "model=$model,net=user,loopback=on")
    echo "demo: ${cmd[*]}"
    log=$work/console.log
    "${cmd[@]}" </dev/null 2>&1 | tee "$log" || rc=$?
    kill "$hpid" 2>/dev/null || true
    [ "$rc" = 0 ] || { echo "demo: tapir exited with status $rc"; return 1; }
    grep -q 'TAPIR-GUEST: booted' "$log" || { echo "demo: the guest did not report that it booted"; return 1; }
    if grep -q "DEMO: download sha256 $sum" "$log"; then
        echo "demo: OK: the guest booted and downloaded 1 MiB from the host through net=user; sha256 matches ($sum)"
        return 0
    fi
    echo "demo: FAILED: the guest's download does not match the host's file (sha256 $sum)"
    return 1
}

if [ "${1:-}" = --inner ]; then
    shift
    [ "$#" -eq 6 ] || tapir_die "--inner takes 6 arguments"
    inner "$@"
    exit
fi

tapir_ensure_packages qemu-system-x86 linux-image-amd64 busybox-static iperf3 kmod cpio xz-utils
command -v cargo >/dev/null || tapir_die "cargo not found: install the Rust toolchain (rustup) first"
tapir_release_and_guest "$PWD" 1 # sets tapir_bin, KERNEL, INITRD
mode=$(tapir_kvm_mode)
self=$(readlink -f "$0")
args=("${CPUS:-2}" "${MEMORY:-256M}" "${MODEL:-virtio}")
if [ "$mode" = hw ]; then
    exec "$self" --inner "$tapir_bin" "$KERNEL" "$INITRD" "${args[@]}"
fi
echo "demo: /dev/kvm here is '$mode' (Linux cannot run on it directly): running inside a nested L1 VM"
exec resources/nested/tapir-nested --share "$tapir_bin" --share "$KERNEL" --share "$INITRD" -- \
    "$self" --inner "$tapir_bin" "$KERNEL" "$INITRD" "${args[@]}"
