# shellcheck shell=bash
# Shared helpers for tapir's resource scripts. Source this file; it defines
# functions only and changes no shell options of the caller.
#
#   tapir_cache_dir            print the cache root
#   tapir_kvm_mode             print hw | pvm | none
#   tapir_guest_kver           print the Debian kernel version used for guests
#   tapir_ensure_packages P..  install missing Debian packages
#   tapir_die MSG              print "<prog>: MSG" on stderr and exit 125
#   tapir_sha256 FILE...       print one combined sha256 of the files' contents

# Name used as the prefix of error lines; callers may set it before sourcing.
: "${TAPIR_PROG:=${0##*/}}"

tapir_die() {
    printf '%s: %s\n' "$TAPIR_PROG" "$*" >&2
    exit 125
}

tapir_warn() {
    printf '%s: warning: %s\n' "$TAPIR_PROG" "$*" >&2
}

# Cache root: $TAPIR_CACHE, else $XDG_CACHE_HOME/tapir, else ~/.cache/tapir.
tapir_cache_dir() {
    printf '%s\n' "${TAPIR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tapir}"
}

# What kind of /dev/kvm this machine has:
#   hw   - a usable /dev/kvm backed by kvm_intel or kvm_amd (and not PVM)
#   pvm  - the kvm_pvm module is loaded (guests cannot boot Linux on it)
#   none - no usable /dev/kvm
tapir_kvm_mode() {
    if [ -d /sys/module/kvm_pvm ]; then
        echo pvm
    elif [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] &&
        { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
        echo hw
    else
        echo none
    fi
}

# The version of the newest installed Debian amd64 kernel that has its
# modules installed (override with TAPIR_GUEST_KVER).
tapir_guest_kver() {
    if [ -n "${TAPIR_GUEST_KVER:-}" ]; then
        if [ ! -f "/boot/vmlinuz-$TAPIR_GUEST_KVER" ] || [ ! -d "/lib/modules/$TAPIR_GUEST_KVER" ]; then
            printf '%s: TAPIR_GUEST_KVER=%s but /boot/vmlinuz-%s or /lib/modules/%s is missing\n' \
                "$TAPIR_PROG" "$TAPIR_GUEST_KVER" "$TAPIR_GUEST_KVER" "$TAPIR_GUEST_KVER" >&2
            return 1
        fi
        printf '%s\n' "$TAPIR_GUEST_KVER"
        return 0
    fi
    local f v best
    best=$(for f in /boot/vmlinuz-*-amd64; do
        [ -f "$f" ] || continue
        v=${f#/boot/vmlinuz-}
        if [ -d "/lib/modules/$v" ]; then printf '%s\n' "$v"; fi
    done | sort -V | tail -n 1)
    if [ -z "$best" ]; then
        printf '%s: no /boot/vmlinuz-*-amd64 with matching /lib/modules found (install linux-image-amd64)\n' \
            "$TAPIR_PROG" >&2
        return 1
    fi
    printf '%s\n' "$best"
}

# Install the given Debian packages if they are not installed yet. Quiet on
# success; on failure prints apt's output and returns non-zero.
tapir_ensure_packages() {
    local p missing=()
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
            missing+=("$p")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0

    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo -n)
        else
            printf '%s: missing packages (%s) and not root; install them first\n' \
                "$TAPIR_PROG" "${missing[*]}" >&2
            return 1
        fi
    fi

    local log rc=0
    log=$(mktemp "${TMPDIR:-/tmp}/tapir-apt.XXXXXX")
    local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    # Refresh the package lists first if there are none at all.
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        "${apt[@]}" update >>"$log" 2>&1 || rc=$?
    fi
    if [ "$rc" -eq 0 ] && ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
        # Stale lists are the usual cause: update once and retry.
        rc=0
        "${apt[@]}" update >>"$log" 2>&1 || rc=$?
        if [ "$rc" -eq 0 ]; then
            "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$log" 2>&1 || rc=$?
        fi
    fi
    if [ "$rc" -ne 0 ]; then
        cat "$log" >&2
        printf '%s: failed to install packages: %s (apt-get exit %s)\n' \
            "$TAPIR_PROG" "${missing[*]}" "$rc" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

# One sha256 over the names-independent contents of the given files, in order.
tapir_sha256() {
    local f
    for f in "$@"; do
        sha256sum <"$f" | cut -d' ' -f1 || return 1
    done | sha256sum | cut -d' ' -f1
}

# tapir_release_and_guest ROOT BUILD: with BUILD=1 runs `cargo build --release`
# in ROOT; then sets tapir_bin to the release binary, and KERNEL and INITRD to
# the default guest (resources/guest/build-guest.sh). Dies on any failure.
tapir_release_and_guest() {
    local root=$1 build=$2 guest_env
    if [ "$build" -eq 1 ]; then
        echo "building tapir (cargo build --release)" >&2
        (cd "$root" && cargo build --release >&2) || tapir_die "cargo build --release failed"
    fi
    tapir_bin=${CARGO_TARGET_DIR:-$root/target}/release/tapir
    case "$tapir_bin" in /*) ;; *) tapir_bin=$root/$tapir_bin ;; esac
    [ -x "$tapir_bin" ] || tapir_die "$tapir_bin not found; build it with cargo build --release"
    guest_env=$("$root/resources/guest/build-guest.sh") || tapir_die "building the guest failed"
    eval "$guest_env"
    { [ -r "${KERNEL:-}" ] && [ -r "${INITRD:-}" ]; } || tapir_die "build-guest.sh gave no KERNEL/INITRD"
}
