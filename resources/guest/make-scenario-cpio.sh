#!/usr/bin/env bash
# Wrap a shell script as /scenario.sh (mode 0755) in a small gzip'd newc cpio.
# Appended to the guest initramfs (cat base.cpio.gz scenario.cpio.gz > both),
# the guest's /init runs it after boot and prints
# "TAPIR-GUEST: scenario-exit=<status>".
#
# Usage: make-scenario-cpio.sh SCRIPT OUT_CPIO_GZ
# Exit status: 0 ok, 125 on error.
set -euo pipefail

TAPIR_PROG=make-scenario-cpio.sh
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$here/../lib/common.sh"

[ "$#" -eq 2 ] || tapir_die "usage: make-scenario-cpio.sh SCRIPT OUT_CPIO_GZ"
script=$1
out=$2
{ [ -f "$script" ] && [ -r "$script" ]; } || tapir_die "cannot read script $script"
command -v cpio >/dev/null || tapir_die "cpio not found (apt-get install cpio)"

stage=$(mktemp -d "${TMPDIR:-/tmp}/tapir-scenario.XXXXXX")
trap 'rm -rf "$stage"' EXIT
install -m 0755 "$script" "$stage/scenario.sh"
tmp_out=$out.tmp.$$
(cd "$stage" && echo scenario.sh | cpio --quiet -o -H newc -R 0:0 --reproducible) |
    gzip -9n >"$tmp_out" || { rm -f "$tmp_out"; tapir_die "creating $out failed"; }
mv -f "$tmp_out" "$out" || { rm -f "$tmp_out"; tapir_die "cannot write $out"; }
