#!/usr/bin/env bash
# Runs kvm-unit-tests' x86 tests (built by build.sh) under tapir and under
# QEMU, one test after the other with the same image and environment, and
# prints a table: test | tapir | QEMU | note.
#
# Usage: run.sh [options]
#   --build DIR     the build (default: $TAPIR_KUT_BUILD, else the newest
#                   build under $(tapir_cache_dir)/kvm-unit-tests/)
#   --vmm WHICH     tapir, qemu or both (default both)
#   --tapir PATH    tapir's binary (default: $CARGO_TARGET_DIR/debug/tapir,
#                   else target/debug/tapir of this checkout, else `tapir`)
#   --qemu PATH     QEMU (default qemu-system-x86_64)
#   --only REGEX    only the tests whose name matches (bash regex)
#   --all           also the tests in group nodefault
#   --timeout S     each run's limit in seconds (default: the test's own
#                   timeout from unittests.cfg, else 90)
#   --out DIR       logs and results (default:
#                   $(tapir_cache_dir)/kvm-unit-tests/runs/<time>); inside
#                   the nested L1 use a path below /run/out
#   --qemu-from TSV take QEMU's verdicts from an earlier run's results.tsv
#                   (same build) instead of running QEMU again
#   --known FILE    known differences (default: known.txt beside this
#                   script): a test failing under tapir and passing under
#                   QEMU that is listed there does not fail the run
#   --nested        run all of this inside a nested L1 VM
#                   (resources/nested/tapir-nested); --out is then a host
#                   directory that receives the L1's results
#   --nested-opt O  pass option O to tapir-nested (repeatable)
#   -h, --help      this help
# Per test: DIR/logs/<test>.<vmm>.log (command line, serial output, stderr).
# For the suite: DIR/results.tsv (test, tapir, qemu, tapir_rc, qemu_rc,
# tapir_s, qemu_s, note) and DIR/table.txt (what is printed).
# Verdicts, as kvm-unit-tests' own scripts give them: the guest's exit
# through isa-debug-exit makes the VMM exit (V<<1)|1, so 1 is PASS (exit(0)),
# 77 SKIP (report_summary's 77>>1), 124 FAIL(timeout), anything else FAIL(rc);
# exit 1 with an error line (not a warning) on stderr is FAIL(vmm error).
# Exit status: 0 when no test that passed under QEMU failed under tapir
# unless known (or when only one VMM ran); 1 when one did; 125 on a usage or
# set-up error.
set -euo pipefail

TAPIR_PROG=kvm-unit-tests/run.sh
self=$(readlink -f "${BASH_SOURCE[0]}")
here=$(dirname "$self")
repo=$(cd "$here/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$here/../lib/common.sh"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$self"; }

build=${TAPIR_KUT_BUILD:-} vmm=both tapir="" qemu=qemu-system-x86_64 only="" all=0
timeout_s="" out="" known="$here/known.txt" nested=0 nested_opts=() qemu_from=""
orig_args=("$@")
need() { [ "$2" -ge 2 ] || tapir_die "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
    case $1 in
        --build) need "$1" $#; build=$2; shift 2 ;;
        --vmm) need "$1" $#; vmm=$2; shift 2 ;;
        --tapir) need "$1" $#; tapir=$2; shift 2 ;;
        --qemu) need "$1" $#; qemu=$2; shift 2 ;;
        --only) need "$1" $#; only=$2; shift 2 ;;
        --all) all=1; shift ;;
        --timeout) need "$1" $#; timeout_s=$2; shift 2 ;;
        --out) need "$1" $#; out=$2; shift 2 ;;
        --known) need "$1" $#; known=$2; shift 2 ;;
        --qemu-from) need "$1" $#; qemu_from=$2; shift 2 ;;
        --nested) nested=1; shift ;;
        --nested-opt) need "$1" $#; nested_opts+=("$2"); shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) tapir_die "unknown argument '$1' (see --help)" ;;
    esac
done
case $vmm in tapir | qemu | both) ;; *) tapir_die "--vmm: '$vmm' is not tapir, qemu or both" ;; esac
if [ -n "$timeout_s" ] && ! [[ $timeout_s =~ ^[1-9][0-9]*$ ]]; then
    tapir_die "--timeout: '$timeout_s' is not a number of seconds"
fi

if [ -z "$build" ]; then
    build=$(find "$(tapir_cache_dir)/kvm-unit-tests" -mindepth 2 -maxdepth 2 -name .tapir-kut-build \
        -printf '%T@ %h\n' 2>/dev/null | sort -n | tail -n 1 | cut -d' ' -f2-) || true
    [ -n "$build" ] || tapir_die "no kvm-unit-tests build found: run resources/kvm-unit-tests/build.sh KUT_CHECKOUT, or give --build DIR"
fi
[ -f "$build/x86/unittests.cfg" ] || tapir_die "$build is not a kvm-unit-tests build (no x86/unittests.cfg; see build.sh)"
compgen -G "$build/x86/*.flat" >/dev/null || tapir_die "$build has no x86/*.flat: build it first (build.sh)"
build=$(cd "$build" && pwd)
kut_commit=$(cat "$build/.tapir-kut-commit" 2>/dev/null || echo unknown)

if [ "$vmm" != qemu ]; then
    if [ -z "$tapir" ]; then
        for t in "${CARGO_TARGET_DIR:-$repo/target}/debug/tapir" "$repo/target/debug/tapir"; do
            if [ -x "$t" ]; then tapir=$t; break; fi
        done
        [ -n "$tapir" ] || tapir=$(command -v tapir) ||
            tapir_die "no tapir binary: build it (cargo build --bin tapir) or give --tapir PATH"
    fi
    [ -x "$tapir" ] || tapir_die "--tapir: $tapir is not an executable"
    tapir=$(readlink -f "$tapir")
fi
if [ "$vmm" != tapir ]; then
    command -v "$qemu" >/dev/null || tapir_die "$qemu not found (install qemu-system-x86, or --vmm tapir)"
fi
[ -z "$known" ] || [ -f "$known" ] || tapir_die "--known: no such file: $known"
[ -z "$qemu_from" ] || [ -f "$qemu_from" ] || tapir_die "--qemu-from: no such file: $qemu_from"
[ -z "$qemu_from" ] || [ "$vmm" = both ] || tapir_die "--qemu-from goes with --vmm both"

if [ "$nested" = 1 ]; then
    # The same command again, inside L1: the build, tapir and this checkout
    # are visible there (the host root, read-only); results go to /run/out.
    [ -n "$out" ] || out="$(tapir_cache_dir)/kvm-unit-tests/runs/nested-$(date -u +%Y%m%dT%H%M%SZ)"
    mkdir -p "$out"
    inner=()
    skip=0
    for a in "${orig_args[@]}"; do
        if [ "$skip" = 1 ]; then skip=0; continue; fi
        case $a in
            --nested) ;;
            --out | --nested-opt | --build | --tapir | --known | --qemu-from) skip=1 ;;
            *) inner+=("$a") ;;
        esac
    done
    inner+=(--build "$build" --out /run/out)
    [ -z "$tapir" ] || inner+=(--tapir "$tapir")
    [ -z "$known" ] || inner+=(--known "$(readlink -f "$known")")
    [ -z "$qemu_from" ] || inner+=(--qemu-from "$(readlink -f "$qemu_from")")
    shares=()
    for p in "$build" "$tapir" "$known" "$qemu_from" "$self"; do [ -z "$p" ] || shares+=(--share "$p"); done
    echo "run.sh: running in a nested L1 VM; results in $out" >&2
    exec "$repo/resources/nested/tapir-nested" --out "$out" "${shares[@]}" "${nested_opts[@]}" -- "$self" "${inner[@]}"
fi

[ -n "$out" ] || out="$(tapir_cache_dir)/kvm-unit-tests/runs/$(date -u +%Y%m%dT%H%M%SZ)-$$"
mkdir -p "$out/logs" || tapir_die "cannot create $out/logs"
out=$(cd "$out" && pwd)

# The environment file that kvm-unit-tests' scripts hand the test as the
# initrd (multiboot module 0): the same file for both VMMs.
envfile="$out/environ"
{
    echo "TARGET=qemu"
    echo "QEMU_ACCEL=kvm"
    echo "KERNEL_VERSION_STRING=$(uname -r)"
} >"$envfile"

# --- unittests.cfg --------------------------------------------------------
names=() files=() smps=() targs=() params=() arches=() groups=() accels=() timeouts=() checks=()
cur=-1
cfg_line() {
    local line=$1
    if [[ $line =~ ^\[(.*)\]$ ]]; then
        cur=${#names[@]}
        names+=("${BASH_REMATCH[1]}") files+=("") smps+=(1) targs+=("") params+=("")
        arches+=("") groups+=("") accels+=("") timeouts+=("") checks+=("")
        return
    fi
    [ "$cur" -ge 0 ] || return 0
    [[ $line =~ ^([a-z_]+)\ *=\ *(.*)$ ]] || return 0
    local key=${BASH_REMATCH[1]} val=${BASH_REMATCH[2]}
    case $key in
        file) files[cur]=$val ;;
        smp) smps[cur]=$val ;;
        test_args) targs[cur]=$val ;;
        qemu_params | extra_params) params[cur]=$val ;;
        arch) arches[cur]=$val ;;
        groups) groups[cur]=$val ;;
        accel) accels[cur]=$val ;;
        timeout) timeouts[cur]=$val ;;
        check) checks[cur]=$val ;;
    esac
}
pending=""
while IFS= read -r line || [ -n "$line" ]; do
    # A value in """ ... """ spans lines: join them.
    if [ -n "$pending" ]; then
        pending+=" $line"
        [[ $line == *'"""'* ]] || continue
        line=${pending//\"\"\"/}
        pending=""
    elif [[ $line =~ ^[a-z_]+\ *=\ *'"""' ]] && [[ ${line#*\"\"\"} != *'"""'* ]]; then
        pending=$line
        continue
    fi
    line=${line//\"\"\"/}
    [[ $line =~ ^[[:space:]]*# ]] && continue
    cfg_line "$line"
done <"$build/x86/unittests.cfg"

# Known differences: "test | missing feature or bug | reason".
declare -A known_why=()
if [ -n "$known" ]; then
    while IFS= read -r line; do
        [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
        name=${line%%|*}
        name=${name//[[:space:]]/}
        known_why[$name]=$(sed 's/^[^|]*|[[:space:]]*//;s/[[:space:]]*|[[:space:]]*/: /' <<<"$line")
    done <"$known"
fi

# QEMU's verdicts of an earlier run: test -> "verdict<TAB>rc<TAB>secs".
declare -A qemu_prev=()
if [ -n "$qemu_from" ]; then
    # (Tabs are white space to read: empty fields would vanish.)
    while IFS= read -r line; do
        IFS='|' read -r name _ q _ qrc _ qs _ <<<"${line//$'\t'/|}"
        [ "$name" != test ] || continue
        qemu_prev[$name]="$q|$qrc|$qs"
    done <"$qemu_from"
fi

# --- one run ---------------------------------------------------------------
# run_vmm VMM IDX: runs test IDX under VMM; sets r_verdict, r_rc, r_secs
# and r_why (a VMM's error line).
run_vmm() {
    local which=$1 i=$2 name=${names[$2]} log rc start errs cmdline cmd=()
    log="$out/logs/$name.$which.log"
    # test_args is shell text in kvm-unit-tests' own file (quotes and
    # `date +%s`): the words it makes are the command line, made anew for
    # each run (kvmclock_test compares that date with the guest's clock).
    eval "set -- ${targs[i]}"
    cmdline="$*"
    if [ "$which" = tapir ]; then
        cmd=("$tapir" run --kernel "$kernel" --initrd "$envfile" "--cmdline=$cmdline"
            --cpus "$smp" --memory "$tapir_mem" --device pc-testdev
            --device "isa-debug-exit,iobase=0xf4,iosize=4")
    else
        cmd=("$qemu" --no-reboot -nodefaults -global kvm-pit.lost_tick_policy=discard
            -device pc-testdev -device "isa-debug-exit,iobase=0xf4,iosize=0x4"
            -display none -serial stdio -device pci-testdev -machine accel=kvm
            -kernel "$kernel" -smp "$smp")
        [ -z "$cmdline" ] || cmd+=(-append "$cmdline")
        cmd+=("${qemu_extra[@]}" -initrd "$envfile")
    fi
    {
        printf '# %s\n' "$(date -u +%FT%TZ) $which, timeout ${limit}s"
        printf '#'
        printf ' %q' "${cmd[@]}"
        printf '\n'
    } >"$log"
    start=$(date +%s.%N)
    set +e
    timeout -k 2s --foreground "$limit" "${cmd[@]}" </dev/null >>"$log" 2>"$log.err"
    rc=$?
    set -e
    r_secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    # A VMM that fails on its own may exit 1 too: QEMU then says so on
    # stderr (kvm-unit-tests' rule: any line but a warning), tapir with a
    # line of its own instead of the one naming isa-debug-exit.
    if [ "$which" = tapir ]; then
        errs=""
        if ! grep -q '^tapir: guest wrote .* to isa-debug-exit' "$log.err"; then
            errs=$(grep -v '^tapir: warning' "$log.err" | head -n 1 || true)
            errs=${errs:-"no isa-debug-exit line"}
        fi
    else
        errs=$(grep -vi 'warning' "$log.err" | head -n 1 || true)
    fi
    { echo "# stderr:"; cat "$log.err"; echo "# exit status $rc after ${r_secs}s"; } >>"$log"
    rm -f "$log.err"
    r_rc=$rc r_why=""
    case $rc in
        1) if [ -n "$errs" ]; then r_verdict="FAIL(vmm error)" r_why=${errs:0:100}; else r_verdict=PASS; fi ;;
        77) r_verdict=SKIP ;;
        124 | 137) r_verdict="FAIL(timeout)" ;;
        *) r_verdict="FAIL($rc)" ;;
    esac
}

# Words of qemu_params: what tapir does the same way (-m), and what it
# cannot do (the note).
translate_params() {
    local -a w
    read -r -a w <<<"$1"
    local j=0 n=${#w[@]} need=()
    tapir_mem=128M
    while [ "$j" -lt "$n" ]; do
        case ${w[j]} in
            -m)
                local m=${w[j + 1]:-}
                case $m in
                    *[gG]) tapir_mem=${m%[gG]}G ;;
                    *[mM]) tapir_mem=${m%[mM]}M ;;
                    *) tapir_mem=${m}M ;;
                esac
                j=$((j + 2))
                ;;
            -enable-kvm) j=$((j + 1)) ;;
            -cpu | -device | -machine | -M | -overcommit | -global)
                need+=("${w[j]} ${w[j + 1]:-}")
                j=$((j + 2))
                ;;
            *) need+=("${w[j]}"); j=$((j + 1)) ;;
        esac
    done
    tapir_needs=""
    [ "${#need[@]}" = 0 ] || tapir_needs="needs $(
        IFS=';'
        echo "${need[*]}"
    )"
    tapir_needs=${tapir_needs//;/; }
}

# --- the tests --------------------------------------------------------------
tsv="$out/results.tsv"
printf 'test\ttapir\tqemu\ttapir_rc\tqemu_rc\ttapir_s\tqemu_s\tnote\n' >"$tsv"
rows=()
count_tapir_pass=0 count_qemu_pass=0 count_both=0 count_regress=0 count_known=0 count_run=0 count_notrun=0
regressions=()
vmm_label="$vmm"
echo "kvm-unit-tests $kut_commit from $build; KVM: $(tapir_kvm_mode)${TAPIR_IN_L1:+ (nested L1)}; vmm: $vmm_label; logs: $out" >&2
order=0
for i in "${!names[@]}"; do
    name=${names[i]}
    [ -z "$only" ] || [[ $name =~ $only ]] || continue
    t_res="-" q_res="-" t_rc="" q_rc="" t_s="" q_s="" note="" whys=()
    skip_why=""
    if [ -n "${arches[i]}" ] && [ "${arches[i]}" != x86_64 ]; then
        skip_why="${arches[i]} only"
    elif [[ " ${groups[i]} " == *" nodefault "* ]] && [ "$all" = 0 ]; then
        skip_why="nodefault (run with --all)"
    elif [ -z "${files[i]}" ] || [ ! -f "$build/x86/${files[i]}" ]; then
        skip_why="no x86/${files[i]:-<file>} in the build"
    elif [ -n "${accels[i]}" ] && [ "${accels[i]}" != kvm ]; then
        skip_why="accel ${accels[i]} only"
    elif [ -n "${checks[i]}" ]; then
        for c in ${checks[i]}; do
            p=${c%%=*} v=${c#*=}
            if ! [ -f "$p" ] || [ "$(cat "$p" 2>/dev/null)" != "$v" ]; then
                skip_why="host check: $p is not $v"
                break
            fi
        done
    fi
    if [ -n "$skip_why" ]; then
        count_notrun=$((count_notrun + 1))
        rows+=("$name|not run|not run|$skip_why")
        printf '%s\tnot run\tnot run\t\t\t\t\t%s\n' "$name" "$skip_why" >>"$tsv"
        continue
    fi
    count_run=$((count_run + 1))
    kernel="$build/x86/${files[i]}"
    smp=${smps[i]}
    read -r -a qemu_extra <<<"${params[i]}"
    translate_params "${params[i]}"
    limit=${timeout_s:-${timeouts[i]:-90}}
    limit=${limit%s}
    # Alternate which VMM goes first.
    if [ $((order % 2)) = 0 ]; then seq=(tapir qemu); else seq=(qemu tapir); fi
    order=$((order + 1))
    for which in "${seq[@]}"; do
        [ "$vmm" = both ] || [ "$vmm" = "$which" ] || continue
        if [ "$which" = qemu ] && [ -n "${qemu_prev[$name]:-}" ]; then
            IFS='|' read -r q_res q_rc q_s <<<"${qemu_prev[$name]}"
            continue
        fi
        run_vmm "$which" "$i"
        [ -z "$r_why" ] || whys+=("$r_why")
        if [ "$which" = tapir ]; then t_res=$r_verdict t_rc=$r_rc t_s=$r_secs; else q_res=$r_verdict q_rc=$r_rc q_s=$r_secs; fi
    done
    note=$tapir_needs
    for w in "${whys[@]}"; do note+="${note:+; }${w//|/\/}"; done
    [ "$t_res" = PASS ] && count_tapir_pass=$((count_tapir_pass + 1))
    [ "$q_res" = PASS ] && count_qemu_pass=$((count_qemu_pass + 1))
    [ "$t_res" = PASS ] && [ "$q_res" = PASS ] && count_both=$((count_both + 1))
    if [ "$vmm" = both ] && [ "$q_res" = PASS ] && [[ $t_res == FAIL* ]]; then
        if [ -n "${known_why[$name]:-}" ]; then
            count_known=$((count_known + 1))
            note="known: ${known_why[$name]}${note:+; $note}"
        else
            count_regress=$((count_regress + 1))
            regressions+=("$name")
            note="TAPIR ONLY FAILURE${note:+; $note}"
        fi
    elif [ "$vmm" = both ] && [ -n "${known_why[$name]:-}" ]; then
        note="listed in known.txt but not a difference now${note:+; $note}"
    fi
    t_cell=$t_res q_cell=$q_res
    [ -z "$t_s" ] || t_cell+=" ${t_s}s"
    [ -z "$q_s" ] || q_cell+=" ${q_s}s"
    rows+=("$name|$t_cell|$q_cell|$note")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$t_res" "$q_res" "$t_rc" "$q_rc" "$t_s" "$q_s" "$note" >>"$tsv"
    printf '%-40s tapir %-16s qemu %-16s %s\n' "$name" "$t_cell" "$q_cell" "$note" >&2
done

{
    echo "kvm-unit-tests $kut_commit, x86_64; $(date -u +%F); KVM: $(tapir_kvm_mode)${TAPIR_IN_L1:+, nested L1}"
    echo
    echo "| test | tapir | QEMU | note |"
    echo "|---|---|---|---|"
    for r in "${rows[@]}"; do
        IFS='|' read -r a b c d <<<"$r"
        echo "| $a | $b | $c | $d |"
    done
    echo
    echo "tests: $((count_run + count_notrun)); run: $count_run; not run: $count_notrun"
    [ "$vmm" = qemu ] || echo "tapir PASS: $count_tapir_pass"
    [ "$vmm" = tapir ] || echo "QEMU PASS: $count_qemu_pass"
    if [ "$vmm" = both ]; then
        echo "PASS under both: $count_both"
        echo "PASS under QEMU, FAIL under tapir: $((count_regress + count_known)) ($count_known known, $count_regress not in $(basename "${known:-known.txt}"))"
        for r in "${regressions[@]}"; do echo "  not known: $r (log: $out/logs/$r.tapir.log)"; done
    fi
    [ -z "$qemu_from" ] || echo "QEMU's verdicts and times: from $qemu_from (an earlier run)"
    echo "results: $tsv"
} | tee "$out/table.txt"

[ "$count_regress" = 0 ]
