#!/usr/bin/env bash
# boot.sh: compare tapir with `qemu-system-x86_64 -accel kvm` booting the same
# Linux guest (boot time and the VMM's resident memory). A benchmark, not a
# test: it exits 0 when the measurements were taken, whatever the numbers.
#
# Usage: resources/bench/boot.sh [options]
# Options:
#   --runs N          timed boots per VMM (default 3)
#   --machine M       QEMU machine type: pc or q35 (default pc)
#   --boot-timeout S  give up on one guest boot after S seconds (default 180)
#   --keep DIR        keep the raw results and console logs in DIR
#   --report DIR      only print the table again from a --keep DIR
#   --no-build        do not run `cargo build --release` first
#   --no-stage        run the VMMs, their libraries and the guest from where
#                     they are installed instead of a copy under /tmp
#   -h, --help        show this help
# Both VMMs boot the default guest (resources/guest/build-guest.sh) with
# 256 MiB, 1 vCPU and "console=ttyS0 quiet tapir.exit=poweroff". On a host
# with VT-x/AMD-V (tapir_kvm_mode = hw) the guests run directly; otherwise
# (pvm, none) all of them run inside one tapir-nested L1 VM.
# Exit status: 0 when all measurements were taken; 1 when a VMM failed to
# boot or exit cleanly (the table shows what was measured); 125 on setup
# errors (build, guest image, L1).
set -euo pipefail
export LC_ALL=C

# shellcheck disable=SC2034 # used by common.sh
TAPIR_PROG=boot.sh
self=$(readlink -f "${BASH_SOURCE[0]}")
here=$(dirname "$self")
root=$(cd "$here/../.." && pwd -P)
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$root/resources/lib/common.sh"

MEM_MIB=256
CMDLINE_BASE="console=ttyS0 quiet"
MARKER="TAPIR-GUEST: booted"

usage() {
    sed -n '/^# Usage:/,/^set -euo/p' "$self" | sed -e '$d' -e 's/^# \{0,1\}//'
}
is_uint() { case "$1" in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }
say() { printf 'boot.sh: %s\n' "$*" >&2; }

# ============================================================================
# Measuring part: runs where /dev/kvm can boot Linux (directly, or in L1).
#   boot.sh --measure OUTDIR RUNS MACHINE BOOT_TIMEOUT STAGE TAPIR KERNEL INITRD
# Writes OUTDIR/results (one "key value" per line) and OUTDIR/logs/*.log.
# ============================================================================

cur_pid=""
STAGE_DIR=""
kill_current() {
    if [ -n "$cur_pid" ]; then
        kill -KILL "$cur_pid" 2>/dev/null || true
        wait "$cur_pid" 2>/dev/null || true
        cur_pid=""
    fi
}

# The current time in microseconds since the epoch (no fork).
now_us() { local t=$EPOCHREALTIME; REPLY=${t/[.,]/}; }

# boot_once MODE LOG RSSFILE CMD...
#   MODE time: the guest powers off by itself; measures marker and exit time.
#   MODE rss:  the guest stays at its shell; at the marker the VMM's smaps is
#              saved to RSSFILE, then the VMM gets SIGTERM.
# Sets B_MARKER_US, B_EXIT_US (relative to the start, "" if not reached),
# B_RC (the VMM's exit status) and B_ERR (empty on success).
boot_once() {
    local mode=$1 log=$2 rssfile=$3
    shift 3
    local dir fifo_out fifo_in con in t0 line buf="" rc now deadline_us eof ms ts
    dir=$(mktemp -d /tmp/tapir-bench.XXXXXX)
    fifo_out=$dir/console
    fifo_in=$dir/stdin
    mkfifo "$fifo_out" "$fifo_in"
    # stdin: a FIFO that is open for writing but never written, so that the
    # guest console sees neither input nor EOF.
    exec {in}<>"$fifo_in"
    B_MARKER_US="" B_EXIT_US="" B_RC="" B_ERR=""
    now_us; t0=$REPLY
    deadline_us=$((t0 + BOOT_TIMEOUT * 1000000))
    # A simple command in the background: $! is the VMM itself.
    "$@" <&"$in" >"$fifo_out" 2>&1 &
    cur_pid=$!
    exec {in}<&-
    exec {con}<"$fifo_out"
    : >"$log"
    while :; do
        eof=0
        if IFS= read -r -t 1 -u "$con" line; then
            now_us; now=$REPLY
        else
            rc=$?
            now_us; now=$REPLY
            if [ "$rc" -gt 128 ]; then
                # Timed out, maybe inside a line: keep the part, check the deadline.
                buf+=$line
                if [ "$now" -gt "$deadline_us" ]; then
                    if [ "$mode" = rss ] && [ -n "$B_MARKER_US" ]; then
                        B_ERR="did not exit within 10 s of SIGTERM"
                    elif [ -n "$B_MARKER_US" ]; then
                        B_ERR="no exit within ${BOOT_TIMEOUT} s"
                    else
                        B_ERR="no '$MARKER' within ${BOOT_TIMEOUT} s"
                    fi
                    kill_current
                    break
                fi
                continue
            fi
            eof=1 # a last line without a newline may be in $line
        fi
        line=$buf$line
        buf=""
        line=${line//$'\r'/}
        # No forks in this loop: it must see the marker as soon as it comes.
        if [ -z "$B_MARKER_US" ] && [[ $line == *"$MARKER"* ]]; then
            B_MARKER_US=$((now - t0))
            if [ "$mode" = rss ]; then
                if ! cat "/proc/$cur_pid/smaps" >"$rssfile" 2>/dev/null || [ ! -s "$rssfile" ]; then
                    B_ERR="could not read /proc/$cur_pid/smaps"
                fi
                grep -E '^(VmRSS|VmHWM|RssAnon|RssFile|RssShmem|Threads):' "/proc/$cur_pid/status" \
                    >"$rssfile.status" 2>/dev/null || true
                kill -TERM "$cur_pid" 2>/dev/null || true
                # Wait at most 10 s more for it to exit.
                now_us; deadline_us=$((REPLY + 10000000))
            fi
        fi
        if [ "$eof" -eq 0 ] || [ -n "$line" ]; then
            ms=$(((now - t0) / 1000))
            printf -v ts '%4d.%03d' $((ms / 1000)) $((ms % 1000))
            printf '%s %s\n' "$ts" "$line" >>"$log"
        fi
        [ "$eof" -eq 0 ] || break
    done
    exec {con}<&-
    if [ -n "$cur_pid" ]; then
        B_RC=0
        wait "$cur_pid" || B_RC=$?
        cur_pid=""
    else
        B_RC=137
    fi
    now_us
    [ -n "$B_ERR" ] || B_EXIT_US=$((REPLY - t0))
    rm -rf "$dir"
    if [ -z "$B_ERR" ] && [ -z "$B_MARKER_US" ]; then
        B_ERR="exited (status $B_RC) without printing '$MARKER'"
    fi
    if [ -z "$B_ERR" ] && [ "$mode" = time ] && [ "$B_RC" -ne 0 ]; then
        B_ERR="exit status $B_RC after the guest's poweroff (expected 0)"
    fi
    return 0
}

# rss_summary SMAPS MEM_KIB: prints "total_kib guest_kib mappings" where the
# guest-RAM mappings are the anonymous ones (no file, [anon:*], memfd,
# /dev/zero, SysV shm) at least as large as guest memory.
rss_summary() {
    awk -v mem="$2" '
        function flush() {
            if (!have) return
            total += rss
            anon = (path == "" || path ~ /^\[anon/ || path ~ /^\/memfd:/ || path ~ /^\/dev\/zero/ || path ~ /^\/SYSV/)
            if (anon && size >= mem) { guest += rss; maps = maps (maps == "" ? "" : ",") sprintf("%dMiB@%s(rss=%dKiB)", size / 1024, range, rss) }
            have = 0
        }
        /^[0-9a-f]+-[0-9a-f]+ / {
            flush()
            have = 1; range = $1; size = 0; rss = 0; path = ""
            for (i = 6; i <= NF; i++) path = path (i > 6 ? " " : "") $i
            next
        }
        $1 == "Size:" { size = $2 }
        $1 == "Rss:" { rss = $2 }
        END { flush(); if (maps == "") maps = "none"; printf "%d %d %s\n", total, guest, maps }
    ' "$1"
}

measure() {
    local out=$1 runs=$2 machine=$3
    BOOT_TIMEOUT=$4 STAGE=$5
    local tapir=$6 kernel=$7 initrd=$8
    local res=$out/results logs=$out/logs
    mkdir -p "$logs"
    : >"$res"
    trap 'kill_current; [ -z "$STAGE_DIR" ] || rm -rf "$STAGE_DIR"' EXIT
    trap 'kill_current; exit 143' TERM
    trap 'kill_current; exit 130' INT

    local qver
    qver=$(qemu-system-x86_64 --version 2>/dev/null | head -n 1) || qver="unknown"
    {
        printf 'where %s\n' "kernel $(uname -r), $(nproc) CPUs, $(awk '$1 == "MemTotal:" { printf "%d MiB", $2 / 1024 }' /proc/meminfo)"
        printf 'qemu_version %s\n' "$qver"
        printf 'machine %s\n' "$machine"
    } >>"$res"
    [ -c /dev/kvm ] || { echo "error /dev/kvm is missing" >>"$res"; return 1; }

    # Stage both VMMs, their shared libraries, the kernel and the initramfs
    # in a fresh directory under /tmp (tmpfs in L1). In L1 the host root is
    # a 9p mount on which mmap'd binaries page in slowly and erratically
    # (QEMU's 18 MB binary + 32 MB of libraries took 1.4-16 s just for
    # `-version`), which would measure 9p, not the VMM. QEMU finds its
    # firmware relative to its binary, so <stage>/usr/share -> /usr/share.
    local stage="" qemu_bin tapir_run=$tapir lib_env=()
    qemu_bin=$(command -v qemu-system-x86_64)
    if [ "$STAGE" -eq 1 ]; then
        stage=$(mktemp -d /tmp/tapir-bench-stage.XXXXXX)
        STAGE_DIR=$stage
        mkdir -p "$stage/usr/bin" "$stage/lib"
        ln -s /usr/share "$stage/usr/share"
        ln -s /usr/lib "$stage/usr/lib"
        cp "$qemu_bin" "$stage/usr/bin/qemu-system-x86_64"
        cp "$tapir" "$stage/usr/bin/tapir"
        cp "$kernel" "$stage/kernel"
        cp "$initrd" "$stage/initrd"
        local lib
        for lib in $( { ldd "$qemu_bin"; ldd "$tapir"; } | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u); do
            cp -L "$lib" "$stage/lib/"
        done
        qemu_bin=$stage/usr/bin/qemu-system-x86_64
        tapir_run=$stage/usr/bin/tapir
        kernel=$stage/kernel
        initrd=$stage/initrd
        lib_env=(env "LD_LIBRARY_PATH=$stage/lib")
        echo "staged yes" >>"$res"
    else
        # At least warm the page cache for the first boot.
        cat "$kernel" "$initrd" "$tapir" "$qemu_bin" >/dev/null 2>&1 || true
        echo "staged no" >>"$res"
    fi

    run_vmm() { # run_vmm VMM MODE CMDLINE LOG RSSFILE
        local vmm=$1 mode=$2 cmdline=$3 log=$4 rssfile=$5
        if [ "$vmm" = tapir ]; then
            boot_once "$mode" "$log" "$rssfile" \
                "${lib_env[@]}" "$tapir_run" run --kernel "$kernel" --initrd "$initrd" \
                --memory "${MEM_MIB}M" --cpus 1 --cmdline "$cmdline"
        else
            # shellcheck disable=SC2054 # commas belong to QEMU option values
            boot_once "$mode" "$log" "$rssfile" \
                "${lib_env[@]}" "$qemu_bin" -accel kvm -machine "$machine" -cpu host \
                -m "$MEM_MIB" -smp 1 -nographic -no-reboot -nodefaults \
                -serial stdio -kernel "$kernel" -initrd "$initrd" -append "$cmdline"
        fi
    }

    local failed=0 vmm i t g m
    # Memory first (these boots also warm up caches for the timed ones): the
    # guest stays at its shell; the VMM is sampled at the marker.
    for vmm in tapir qemu; do
        say "$vmm: memory run (guest stays up, sampled at the marker)"
        run_vmm "$vmm" rss "$CMDLINE_BASE" "$logs/$vmm-rss.log" "$out/$vmm.smaps"
        if [ -n "$B_ERR" ]; then
            say "$vmm: memory run FAILED: $B_ERR"
            printf 'error %s memory run: %s (log %s)\n' "$vmm" "$B_ERR" "$vmm-rss.log" >>"$res"
            failed=1
            continue
        fi
        read -r t g m < <(rss_summary "$out/$vmm.smaps" $((MEM_MIB * 1024)))
        printf '%s_rss_total_kib %s\n%s_rss_guest_kib %s\n%s_guest_maps %s\n' \
            "$vmm" "$t" "$vmm" "$g" "$vmm" "$m" >>"$res"
        say "$vmm: RSS total $t KiB, guest RAM mapping(s) $m"
        if [ "$m" = none ]; then
            printf 'error %s memory run: no anonymous mapping of >= %s MiB (guest RAM) in its smaps (%s)\n' \
                "$vmm" "$MEM_MIB" "$vmm.smaps" >>"$res"
            failed=1
        fi
    done
    # Timed runs, alternating between the two VMMs.
    for ((i = 1; i <= runs; i++)); do
        for vmm in tapir qemu; do
            run_vmm "$vmm" time "$CMDLINE_BASE tapir.exit=poweroff" "$logs/$vmm-run$i.log" ""
            if [ -n "$B_ERR" ]; then
                say "$vmm: run $i FAILED: $B_ERR"
                printf 'error %s run %s: %s (log %s)\n' "$vmm" "$i" "$B_ERR" "$vmm-run$i.log" >>"$res"
                failed=1
            fi
            [ -z "$B_MARKER_US" ] || printf '%s_marker_us %s\n' "$vmm" "$B_MARKER_US" >>"$res"
            if [ -n "$B_EXIT_US" ] && [ -z "$B_ERR" ]; then
                printf '%s_exit_us %s\n%s_poweroff_us %s\n' "$vmm" "$B_EXIT_US" "$vmm" "$((B_EXIT_US - B_MARKER_US))" >>"$res"
            fi
            say "$vmm: run $i/$runs: marker ${B_MARKER_US:-none} us, exit ${B_EXIT_US:-none} us, status $B_RC"
        done
    done
    echo "done" >>"$res"
    [ -z "$stage" ] || rm -rf "$stage"
    return "$failed"
}

if [ "${1:-}" = --measure ]; then
    shift
    [ "$#" -eq 8 ] || tapir_die "--measure takes 8 arguments"
    rc=0
    measure "$@" || rc=$?
    exit "$rc"
fi

# --- the table ----------------------------------------------------------------

# report OUTDIR MEASURE_STATUS: prints the table from OUTDIR/{host,results};
# returns 1 when something failed.
report() {
    local out=$1 mrc=$2 res=$1/results host=$1/host
    [ -s "$res" ] || tapir_die "the measuring part produced no results in $res (exit status $mrc)"
    local t_min q_min t_med q_med t_exit q_exit t_off q_off t_rss q_rss t_grss q_grss t_own q_own t_n q_n
    local boot_ok rss_ok errors f name
    hfield() { awk -v k="$1" '$1 == k { sub(/^[^ ]+ /, ""); print; exit }' "$host" 2>/dev/null; }
    # values KEY: the values of KEY in the results, one a line.
    values() { awk -v k="$1" '$1 == k { print $2 }' "$res"; }
    field() { awk -v k="$1" '$1 == k { sub(/^[^ ]+ /, ""); print; exit }' "$res"; }
    # stat min|median KEY (in us) -> seconds, or "n/a".
    stat() {
        values "$2" | sort -n | awk -v w="$1" '
            { v[NR] = $1 }
            END {
                if (NR == 0) { print "n/a"; exit }
                if (w == "min") x = v[1]
                else if (NR % 2) x = v[(NR + 1) / 2]
                else x = (v[NR / 2] + v[NR / 2 + 1]) / 2
                printf "%.2f\n", x / 1e6
            }'
    }
    mib() { local v; v=$(values "$1" | head -n 1); [ -n "$v" ] && awk -v v="$v" 'BEGIN { printf "%.1f\n", v / 1024 }' || echo n/a; }
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'; }
    sub_mib() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a") print "n/a"; else printf "%.1f\n", a - b }'; }

    t_min=$(stat min tapir_marker_us); q_min=$(stat min qemu_marker_us)
    t_med=$(stat median tapir_marker_us); q_med=$(stat median qemu_marker_us)
    t_exit=$(stat median tapir_exit_us); q_exit=$(stat median qemu_exit_us)
    t_off=$(stat median tapir_poweroff_us); q_off=$(stat median qemu_poweroff_us)
    t_rss=$(mib tapir_rss_total_kib); q_rss=$(mib qemu_rss_total_kib)
    t_grss=$(mib tapir_rss_guest_kib); q_grss=$(mib qemu_rss_guest_kib)
    t_own=$(sub_mib "$t_rss" "$t_grss"); q_own=$(sub_mib "$q_rss" "$q_grss")
    t_n=$(values tapir_marker_us | wc -l); q_n=$(values qemu_marker_us | wc -l)

    row() {
        printf '%-38s %9s %9s' "$1" "$2" "$3"
        [ -z "${4:-}" ] || printf '   %s' "$4"
        printf '\n'
    }
    echo
    echo "tapir vs QEMU boot benchmark"
    echo "  where:   $(hfield where)"
    echo "  ran on:  $(field where)"
    if [ "$(field staged)" = yes ]; then
        echo "           both VMMs, their shared libraries and the guest copied to /tmp first (see README)"
    fi
    echo "  qemu:    $(field qemu_version); -accel kvm -machine $(field machine) -cpu host -m $MEM_MIB -smp 1"
    echo "  tapir:   $(hfield tapir)"
    echo "  guest:   $(hfield kernel)"
    echo "           $(hfield initrd)"
    echo "           $MEM_MIB MiB, 1 vCPU, cmdline \"$CMDLINE_BASE tapir.exit=poweroff\""
    echo "  runs:    $(hfield runs) requested; boots that reached the marker: tapir $t_n, qemu $q_n"
    echo "  memory:  sampled from /proc/PID/smaps at the marker (guest left at its shell, then SIGTERM)"
    echo "           guest RAM mappings: tapir $(field tapir_guest_maps); qemu $(field qemu_guest_maps)"
    echo
    row "metric" "tapir" "qemu" "ratio (tapir/qemu)"
    row "boot to marker, min (s)" "$t_min" "$q_min" "$(ratio "$t_min" "$q_min")"
    row "boot to marker, median (s)" "$t_med" "$q_med" "$(ratio "$t_med" "$q_med")"
    row "start to exit, median (s)" "$t_exit" "$q_exit" "$(ratio "$t_exit" "$q_exit")"
    row "marker to exit (poweroff), median (s)" "$t_off" "$q_off" "$(ratio "$t_off" "$q_off")"
    row "RSS total (MiB)" "$t_rss" "$q_rss" ""
    row "RSS of guest RAM mapping (MiB)" "$t_grss" "$q_grss" ""
    row "RSS outside guest RAM (MiB)" "$t_own" "$q_own" "$(ratio "$t_own" "$q_own")"
    echo
    verdict() { if [ "$1" = n/a ]; then echo "n/a "; elif [ "$1" = 1 ]; then echo "PASS"; else echo "MISS"; fi; }
    boot_ok=$(awk -v a="$t_med" -v b="$q_med" 'BEGIN { if (a == "n/a" || b == "n/a") print "n/a"; else print (a < b) ? 1 : 0 }')
    rss_ok=$(awk -v a="$t_own" 'BEGIN { if (a == "n/a") print "n/a"; else print (a < 10) ? 1 : 0 }')
    echo "targets (informational):"
    echo "  $(verdict "$boot_ok")  faster to boot than QEMU (median boot to marker: tapir $t_med s, qemu $q_med s)"
    echo "  $(verdict "$rss_ok")  tapir's own RSS under 10 MiB (RSS outside guest RAM: $t_own MiB)"

    errors=$(grep '^error ' "$res" | sed 's/^error //' || true)
    if [ -n "$errors" ] || ! grep -qx "done" "$res" || [ "$mrc" -ne 0 ]; then
        echo
        echo "FAILURES (measuring part exit status $mrc):"
        [ -z "$errors" ] || printf '  %s\n' "$errors" | sed '2,$s/^/  /'
        grep -qx "done" "$res" || echo "  the measuring part did not finish"
        for f in "$out"/logs/*.log; do
            [ -e "$f" ] || continue
            name=${f##*/}
            if grep -qF "$name" <<<"$errors"; then
                echo "--- last console lines of $name (seconds since start, line) ---"
                if [ -s "$f" ]; then tail -n 25 "$f"; else echo "(no output)"; fi
            fi
        done
        [ "$(hfield keep)" != yes ] || echo "raw results and logs: $out"
        return 1
    fi
    [ "$(hfield keep)" != yes ] || echo "raw results and logs: $out"
    return 0
}

# ============================================================================
# Host part: build, run the measuring part (directly or in L1), print a table.
# ============================================================================

runs=3
machine=pc
boot_timeout=180
keep=""
build=1
stage=1
while [ "$#" -gt 0 ]; do
    case "$1" in
        --runs) [ "$#" -ge 2 ] || tapir_die "--runs needs a value"; runs=$2; shift 2 ;;
        --runs=*) runs=${1#*=}; shift ;;
        --machine) [ "$#" -ge 2 ] || tapir_die "--machine needs a value"; machine=$2; shift 2 ;;
        --machine=*) machine=${1#*=}; shift ;;
        --boot-timeout) [ "$#" -ge 2 ] || tapir_die "--boot-timeout needs a value"; boot_timeout=$2; shift 2 ;;
        --boot-timeout=*) boot_timeout=${1#*=}; shift ;;
        --keep) [ "$#" -ge 2 ] || tapir_die "--keep needs a value"; keep=$2; shift 2 ;;
        --keep=*) keep=${1#*=}; shift ;;
        --no-build) build=0; shift ;;
        --no-stage) stage=0; shift ;;
        --report)
            [ "$#" -ge 2 ] || tapir_die "--report needs a directory"
            rc=0
            report "$2" 0 || rc=$?
            exit "$rc" ;;
        -h | --help) usage; exit 0 ;;
        *) tapir_die "unknown argument '$1' (see --help)" ;;
    esac
done
{ is_uint "$runs" && [ "$runs" -ge 1 ]; } || tapir_die "--runs must be a positive integer, got '$runs'"
{ is_uint "$boot_timeout" && [ "$boot_timeout" -ge 1 ]; } || tapir_die "--boot-timeout must be a positive integer"
case "$machine" in pc | q35) ;; *) tapir_die "--machine must be pc or q35, got '$machine'" ;; esac

command -v qemu-system-x86_64 >/dev/null || tapir_die "qemu-system-x86_64 not found (package qemu-system-x86)"

cd "$root"
tapir_release_and_guest "$root" "$build"

if [ -n "$keep" ]; then
    mkdir -p "$keep" || tapir_die "cannot create $keep"
    out=$(cd "$keep" && pwd -P)
    rm -rf "$out/host" "$out/results" "$out/logs" "$out"/*.smaps "$out"/*.smaps.status
else
    out=$(mktemp -d "${TMPDIR:-/tmp}/tapir-bench.XXXXXX")
    trap 'rm -rf "$out"' EXIT
fi

mode=$(tapir_kvm_mode)
case "$mode" in
    hw) where="directly on this host (hardware virtualization)" ;;
    *) where="nested: L2 guests under nested KVM in a tapir-nested L1 (TCG) VM; host kvm mode $mode" ;;
esac
rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')
git -C "$root" diff --quiet HEAD 2>/dev/null || rev+="+local changes"
{
    printf 'where %s\n' "$where"
    printf 'tapir %s (%s)\n' "$tapir_bin" "$rev"
    printf 'kernel %s\ninitrd %s\nruns %s\n' "$KERNEL" "$INITRD" "$runs"
    [ -z "$keep" ] || echo "keep yes"
} >"$out/host"

mrc=0
if [ "$mode" = hw ]; then
    say "kvm mode hw: measuring directly on this host"
    "$self" --measure "$out" "$runs" "$machine" "$boot_timeout" "$stage" "$tapir_bin" "$KERNEL" "$INITRD" || mrc=$?
else
    say "kvm mode $mode: measuring inside one tapir-nested L1 VM (takes a few minutes)"
    # One L1 boot for everything; each guest boot is given boot_timeout.
    l1_timeout=$((300 + (2 * runs + 2) * boot_timeout))
    "$root/resources/nested/tapir-nested" --out "$out" --timeout "$l1_timeout" \
        --share "$tapir_bin" --share "$KERNEL" --share "$INITRD" -- \
        "$self" --measure /run/out "$runs" "$machine" "$boot_timeout" "$stage" "$tapir_bin" "$KERNEL" "$INITRD" \
        </dev/null >&2 || mrc=$?
fi
rc=0
report "$out" "$mrc" || rc=$?
exit "$rc"
