#!/bin/bash
# Extracts the ELF vmlinux from a bzImage's compressed payload, so that
# tapir's ELF (and PVH) boot path can be tested with the same Debian kernel.
# Usage: extract-vmlinux.sh BZIMAGE OUT_ELF
# Tries every xz, zstd and gzip stream start in the image and keeps the first
# one that decompresses to an x86-64 ELF file.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BZIMAGE OUT_ELF" >&2; exit 2; }
in=$1 out=$2
tmp=$(mktemp "${out}.XXXXXX")
trap 'rm -f "$tmp"' EXIT
try() { # OFFSET DECOMPRESSOR...
    local off=$1
    shift
    tail -c +$((off + 1)) "$in" | "$@" >"$tmp" 2>/dev/null || true
    # ELF magic + ELFCLASS64 + machine x86-64 (0x3e at offset 18).
    [ "$(head -c 5 "$tmp" | od -An -tx1 | tr -d ' \n')" = "7f454c4602" ] &&
        [ "$(dd if="$tmp" bs=1 skip=18 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')" = "3e" ]
}
for spec in 'fd377a585a00:xz -dc' '28b52ffd:zstd -dc' '1f8b08:gzip -dc'; do
    magic=${spec%%:*}
    cmd=${spec#*:}
    command -v "${cmd%% *}" >/dev/null || continue
    pattern=$(echo "$magic" | sed 's/../\\x&/g')
    for off in $(LC_ALL=C grep -obUaP "$pattern" "$in" | cut -d: -f1 | head -20); do
        # shellcheck disable=SC2086 # cmd is "tool -dc"
        if try "$off" $cmd; then
            mv "$tmp" "$out"
            trap - EXIT
            echo "extracted $(stat -c %s "$out") bytes of ELF vmlinux from offset $off ($cmd)"
            exit 0
        fi
    done
done
echo "$0: no ELF vmlinux found in $in" >&2
exit 1
