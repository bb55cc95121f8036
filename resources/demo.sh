#!/bin/bash
# tapir's main job, with all set-up on a fresh Debian machine: build tapir,
# assemble the default Linux guest from Debian packages, boot it with
# 2 vCPUs and 256 MiB, show that it booted (CPUs, memory), and power off.
# On a PVM host (or with no /dev/kvm) the guest runs inside the nested L1
# VM of resources/nested/tapir-nested; on VT-x/AMD-V it runs directly.
# Environment: CPUS (default 2), MEMORY (default 256M).
set -euo pipefail
cd "$(dirname "$0")/.."
. resources/lib/common.sh
tapir_ensure_packages qemu-system-x86 linux-image-amd64 busybox-static iperf3 kmod cpio xz-utils
command -v cargo >/dev/null || tapir_die "cargo not found: install the Rust toolchain (rustup) first"
cargo build --release
eval "$(resources/guest/build-guest.sh)"
cmd=(target/release/tapir run --kernel "$KERNEL" --initrd "$INITRD" --cpus "${CPUS:-2}"
    --memory "${MEMORY:-256M}" --cmdline "console=ttyS0 quiet tapir.exit=poweroff")
mode=$(tapir_kvm_mode)
echo "demo: ${cmd[*]}"
if [ "$mode" = hw ]; then
    exec "${cmd[@]}"
fi
echo "demo: /dev/kvm here is '$mode' (Linux cannot run on it directly): running inside a nested L1 VM"
exec resources/nested/tapir-nested -- "${cmd[@]}"
