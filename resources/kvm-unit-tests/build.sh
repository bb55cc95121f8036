#!/usr/bin/env bash
# Builds kvm-unit-tests' x86_64 tests for resources/kvm-unit-tests/run.sh.
#
# Usage: build.sh KUT_CHECKOUT [--out DIR] [--force]
#   KUT_CHECKOUT  a kvm-unit-tests source tree (e.g. a clone of
#                 https://gitlab.com/kvm-unit-tests/kvm-unit-tests); it is
#                 only read: the build happens in a copy of it
#   --out DIR     where the copy is built (default:
#                 $(tapir_cache_dir)/kvm-unit-tests/<commit>); DIR/x86/*.flat
#                 and DIR/x86/unittests.cfg are what run.sh uses
#   --force       build again even if DIR holds a finished build
# Nothing of kvm-unit-tests goes into tapir's repository. The build uses the
# system's gcc (./configure --arch=x86_64, then make). Run again with the
# same checkout, it says the build is up to date and does nothing.
# Prints the build directory on stdout as its last line.
# Exit status: 0 built (or up to date); 125 bad usage, missing checkout, not
# a kvm-unit-tests tree, or a failed build (one line says which).
set -euo pipefail

TAPIR_PROG=kvm-unit-tests/build.sh
here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$here/../lib/common.sh"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

src="" out="" force=0
while [ $# -gt 0 ]; do
    case $1 in
        --out) [ $# -ge 2 ] || tapir_die "--out needs a directory"; out=$2; shift 2 ;;
        --out=*) out=${1#--out=}; shift ;;
        --force) force=1; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) tapir_die "unknown option '$1' (see --help)" ;;
        *) [ -z "$src" ] || tapir_die "one checkout only (got '$src' and '$1')"; src=$1; shift ;;
    esac
done
[ -n "$src" ] || tapir_die "missing KUT_CHECKOUT: the kvm-unit-tests source tree to build (see --help)"
[ -d "$src" ] || tapir_die "no such directory: $src"
src=$(cd "$src" && pwd)
for f in configure Makefile x86/unittests.cfg x86/Makefile.x86_64 scripts/runtime.bash; do
    [ -f "$src/$f" ] || tapir_die "$src is not a kvm-unit-tests tree (no $f)"
done
for tool in gcc make ld objcopy; do
    command -v "$tool" >/dev/null || tapir_die "$tool not found (install gcc, make and binutils)"
done

# The commit names the build; a tree with local changes gets "-dirty" and a
# hash of the changes, a tree without git "nogit-<hash of its sources>".
if commit=$(git -C "$src" rev-parse --verify -q HEAD 2>/dev/null); then
    if [ -n "$(git -C "$src" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        commit="$commit-dirty-$(git -C "$src" diff HEAD | sha256sum | cut -c1-12)"
    fi
else
    commit="nogit-$(cd "$src" && find . -type f -not -path './.git/*' -print0 | sort -z |
        xargs -0 cat | sha256sum | cut -c1-12)"
fi
[ -n "$out" ] || out="$(tapir_cache_dir)/kvm-unit-tests/$commit"
out=$(readlink -m "$out")
case "$out/" in
    "$src"/*) tapir_die "--out $out lies inside the checkout $src: choose a directory outside it" ;;
esac
case "$src/" in
    "$out"/*) tapir_die "--out $out holds the checkout $src: choose a directory outside it" ;;
esac
# The directory is emptied before a build: only an earlier build's, or an
# empty one.
if [ -d "$out" ] && [ ! -f "$out/.tapir-kut-commit" ] &&
    [ -n "$(find "$out" -mindepth 1 -maxdepth 1 ! -name .lock -print -quit)" ]; then
    tapir_die "--out $out is not empty and holds no earlier build: give an empty or new directory"
fi
mkdir -p "$out" || tapir_die "cannot create $out"
stamp="$out/.tapir-kut-build"

exec 9>"$out/.lock"
flock 9

if [ "$force" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$commit" ] &&
    compgen -G "$out/x86/*.flat" >/dev/null; then
    echo "kvm-unit-tests $commit: up to date in $out" >&2
    echo "$out"
    exit 0
fi

echo "kvm-unit-tests $commit: copying $src to $out" >&2
rm -f "$stamp"
# A fresh copy each time: no file of an older build survives.
find "$out" -mindepth 1 -maxdepth 1 ! -name .lock -exec rm -rf {} +
(cd "$src" && tar --exclude=./.git -cf - .) | (cd "$out" && tar -xf -) ||
    tapir_die "copying $src to $out failed"
printf '%s\n' "$commit" >"$out/.tapir-kut-commit"

log="$out/build.log"
echo "kvm-unit-tests $commit: configure and make (log: $log)" >&2
if ! (cd "$out" && ./configure --arch=x86_64 && make -j"$(nproc)") >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    tapir_die "build failed in $out (whole log: $log)"
fi
compgen -G "$out/x86/*.flat" >/dev/null || tapir_die "build made no x86/*.flat in $out (log: $log)"
printf '%s\n' "$commit" >"$stamp"
echo "kvm-unit-tests $commit: built $(find "$out/x86" -maxdepth 1 -name '*.flat' | wc -l) tests in $out" >&2
echo "$out"
