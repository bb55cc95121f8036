#!/usr/bin/env bash
# Build (or reuse from the cache) tapir's default Linux guest: Debian's
# kernel plus a busybox initramfs with NIC driver modules and iperf3.
#
# Usage: build-guest.sh
# Prints on stdout:
#   KERNEL=<path to bzImage>
#   INITRD=<path to gzip'd newc cpio>
# Cache: $(tapir_cache_dir)/guest/<key>/, key = hash of this script, the
# init script, common.sh, the kernel version and every file put in the image.
# Exit status: 0 ok, 125 on any error (with a "build-guest.sh: ..." line).
set -euo pipefail

TAPIR_PROG=build-guest.sh
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$here/../lib/common.sh"

# Modules wanted in the guest (their dependencies are added automatically);
# ones that are built into the kernel are skipped.
GUEST_MODULES=(virtio_pci virtio_mmio virtio_net virtio_blk ext4 e1000 e1000e igb 8139too 8139cp af_packet)

[ "$#" -eq 0 ] || tapir_die "takes no arguments (usage: build-guest.sh)"

init_script=$here/init
[ -f "$init_script" ] || tapir_die "missing $init_script"

tapir_ensure_packages busybox-static iperf3 kmod cpio linux-image-amd64 ||
    tapir_die "required packages could not be installed"

kver=$(tapir_guest_kver) || tapir_die "cannot determine the guest kernel version"
kernel_src=/boot/vmlinuz-$kver
busybox_bin=$(command -v busybox) || tapir_die "busybox not found (package busybox-static)"
iperf3_bin=$(command -v iperf3) || tapir_die "iperf3 not found (package iperf3)"
busybox_bin=$(readlink -f "$busybox_bin")
iperf3_bin=$(readlink -f "$iperf3_bin")

# --- collect inputs ---------------------------------------------------------

# Module files in insmod order, deduplicated.
modules=()
declare -A seen_mod=()
for m in "${GUEST_MODULES[@]}"; do
    deps=$(modprobe -S "$kver" --show-depends "$m" 2>&1) ||
        tapir_die "modprobe -S $kver --show-depends $m failed: $deps"
    while read -r kind path _; do
        [ "$kind" = insmod ] || continue
        [ -n "${seen_mod[$path]:-}" ] && continue
        seen_mod[$path]=1
        modules+=("$path")
    done <<<"$deps"
done

# ELF files with the shared libraries they need. Prints "src<TAB>dest" lines:
# each library is stored under the path the loader looks it up by.
elf_closure() {
    local bin=$1 out line
    out=$(LC_ALL=C ldd "$bin" 2>&1) || {
        case "$out" in
            *"not a dynamic executable"* | *"statically linked"*) return 0 ;;
            *) tapir_die "ldd $bin failed: $out" ;;
        esac
    }
    while IFS= read -r line; do
        case "$line" in
            *"not found"*) tapir_die "ldd $bin: $line" ;;
            *" => /"*)
                line=${line#*=> }
                line=${line%% (*}
                printf '%s\t%s\n' "$(readlink -f "$line")" "$line"
                ;;
            *"/"*" (0x"*) # the dynamic loader, by its absolute path
                line=${line#"${line%%[! $'\t']*}"}
                line=${line%% (*}
                printf '%s\t%s\n' "$(readlink -f "$line")" "$line"
                ;;
        esac
    done <<<"$out"
}
libs=$( { elf_closure "$busybox_bin"; elf_closure "$iperf3_bin"; } | sort -u)

lib_srcs=()
while IFS=$'\t' read -r src _; do
    [ -n "$src" ] && lib_srcs+=("$src")
done <<<"$libs"

key_files=("${BASH_SOURCE[0]}" "$init_script" "$here/../lib/common.sh" "$kernel_src"
    "$busybox_bin" "$iperf3_bin" "${lib_srcs[@]}" "${modules[@]}")
for f in "${key_files[@]}"; do
    [ -r "$f" ] || tapir_die "cannot read input file $f"
done
key=$( { printf 'kver=%s\nlibs=%s\nmods=%s\n' "$kver" "$libs" "${modules[*]}"
    tapir_sha256 "${key_files[@]}"; } | sha256sum | cut -c1-16)

cache=$(tapir_cache_dir)/guest
out=$cache/$kver-$key
kernel_out=$out/vmlinuz
initrd_out=$out/initramfs.cpio.gz

print_paths() {
    printf 'KERNEL=%s\nINITRD=%s\n' "$kernel_out" "$initrd_out"
}

if [ -s "$kernel_out" ] && [ -s "$initrd_out" ]; then
    touch "$out" 2>/dev/null || true # mark as recently used (for pruning)
    print_paths
    exit 0
fi

mkdir -p "$cache" || tapir_die "cannot create cache directory $cache"
exec 9>"$cache/.lock"
flock 9 || tapir_die "cannot lock $cache/.lock"
# Someone else may have built it while we waited for the lock.
if [ -s "$kernel_out" ] && [ -s "$initrd_out" ]; then
    print_paths
    exit 0
fi

echo "$TAPIR_PROG: building guest for kernel $kver into $out" >&2
stage=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/root
mkdir -p "$root"/{bin,dev,etc,proc,sys,tmp,run,root,usr/bin,lib/modules/"$kver"}
ln -s bin "$root/sbin"
ln -s ../bin "$root/usr/sbin"

# busybox and its applet links (made at build time, so /init can be /bin/sh).
install -m 0755 "$busybox_bin" "$root/bin/busybox"
while read -r applet; do
    [ -n "$applet" ] && [ "$applet" != busybox ] && ln -sf busybox "$root/bin/$applet"
done < <("$busybox_bin" --list) || tapir_die "busybox --list failed"
[ -L "$root/bin/sh" ] || tapir_die "busybox has no sh applet"
[ -L "$root/bin/cttyhack" ] || tapir_die "busybox has no cttyhack applet"

install -m 0755 "$iperf3_bin" "$root/usr/bin/iperf3"
while IFS=$'\t' read -r src dest; do
    [ -n "$src" ] || continue
    mkdir -p "$root$(dirname "$dest")"
    install -m 0755 "$src" "$root$dest"
done <<<"$libs"

# Kernel modules, uncompressed, with the insmod order for /init.
mod_root=/lib/modules/$kver
: >"$root$mod_root/tapir-modules.order"
for path in "${modules[@]}"; do
    rel=${path#"$mod_root"/}
    case "$rel" in
        *.ko) dest=$rel; decomp=(cat) ;;
        *.ko.xz) dest=${rel%.xz}; decomp=(xz -dc) ;;
        *.ko.zst) dest=${rel%.zst}; decomp=(zstd -qdc) ;;
        *.ko.gz) dest=${rel%.gz}; decomp=(gzip -dc) ;;
        *) tapir_die "unexpected module file name $path" ;;
    esac
    mkdir -p "$root$mod_root/$(dirname "$dest")"
    "${decomp[@]}" <"$path" >"$root$mod_root/$dest" || tapir_die "cannot copy module $path"
    printf '%s\n' "$dest" >>"$root$mod_root/tapir-modules.order"
done

install -m 0755 "$init_script" "$root/init"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\ntty:x:5:\n' >"$root/etc/group"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$root/etc/hosts"
# The kernel's built-in initramfs already provides /dev/console; add it here
# too when we can (root), for kernels built without that default.
if [ "$(id -u)" -eq 0 ]; then
    mknod -m 0600 "$root/dev/console" c 5 1
fi

(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
    cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9n >"$stage/initramfs.cpio.gz" ||
    tapir_die "creating the initramfs archive failed"
cp "$kernel_src" "$stage/vmlinuz" || tapir_die "cannot copy $kernel_src"

rm -rf "$out"
mkdir -p "$out"
mv "$stage/vmlinuz" "$stage/initramfs.cpio.gz" "$out/" || tapir_die "cannot move results into $out"
# Drop builds from other inputs that have not been used for a week.
find "$cache" -mindepth 1 -maxdepth 1 -type d -name '*-*' ! -name '.*' ! -path "$out" -mtime +7 \
    -exec rm -rf {} + 2>/dev/null || true
print_paths
