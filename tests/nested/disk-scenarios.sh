# shellcheck shell=bash disable=SC2034 # fails etc. are read by the net__ helpers (dynamic scoping)
# virtio-blk disks (tapir run --disk) seen by Linux's virtio_blk and ext4.
#
# Sourced by tests/nested/scenarios.sh after net-scenarios.sh (it uses its
# net__kv / net__check / net__marker helpers); sourcing defines functions
# only.
#
# Scenario:
#   disk_ext4  two ext4 images made here with `mkfs.ext4 -d` (no root
#              needed), each holding data.bin (1 MiB of random bytes):
#              vda read-write (id=tapir-root), vdb read-only (`ro`, default
#              serial: the file name). The guest mounts vda, reads data.bin
#              and says its sha256, writes written.bin, syncs, trims
#              (discard), unmounts; mounts vdb read-only, reads data.bin,
#              and tries to write vdb (a file on the read-only mount, the
#              raw device, a read-write mount): all must fail. It then
#              powers off. Here, written.bin is read back out of the image
#              with debugfs and its sha256 compared with the guest's, and
#              the read-only image must be unchanged.
#
# Guest markers: DISK: serial vda=S vdb=S, DISK: ro vda=0 vdb=1,
#   DISK: discard_max vda=N vdb=N, DISK: read sha256 HEX,
#   DISK: written sha256 HEX, DISK: fstrim ok|FAIL, DISK: ro read sha256 HEX,
#   DISK: ro touch refused|WRITTEN, DISK: ro dd refused|WRITTEN,
#   DISK: ro rw-mount refused|MOUNTED, DISK: done
# Result keys (value wanted): serial_vda=tapir-root serial_vdb=ro.img
#   ro_vda=0 ro_vdb=1 discard_vda=1 discard_vdb=0 read_match=1 written_match=1
#   fstrim=ok ro_read_match=1 ro_touch=refused ro_dd=refused
#   ro_mount=refused ro_image_unchanged=1 finished=1 rc=0

disk__guest() {
    cat <<'EOF'
say() { echo "DISK: $*"; }
i=0
while { [ ! -b /dev/vda ] || [ ! -b /dev/vdb ]; } && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
say "serial vda=$(cat /sys/block/vda/serial 2>/dev/null) vdb=$(cat /sys/block/vdb/serial 2>/dev/null)"
say "ro vda=$(cat /sys/block/vda/ro 2>/dev/null) vdb=$(cat /sys/block/vdb/ro 2>/dev/null)"
say "discard_max vda=$(cat /sys/block/vda/queue/discard_max_bytes 2>/dev/null) vdb=$(cat /sys/block/vdb/queue/discard_max_bytes 2>/dev/null)"
mkdir -p /mnt/a /mnt/b
mount -t ext4 /dev/vda /mnt/a || say "mount vda FAIL"
say "read sha256 $(sha256sum /mnt/a/data.bin | cut -d' ' -f1)"
dd if=/dev/urandom of=/mnt/a/written.bin bs=64k count=32 2>/dev/null
sync
say "written sha256 $(sha256sum /mnt/a/written.bin | cut -d' ' -f1)"
if fstrim /mnt/a; then say "fstrim ok"; else say "fstrim FAIL"; fi
umount /mnt/a || say "umount vda FAIL"
mount -t ext4 -o ro /dev/vdb /mnt/b || say "mount vdb FAIL"
say "ro read sha256 $(sha256sum /mnt/b/data.bin | cut -d' ' -f1)"
if touch /mnt/b/x 2>/dev/null; then say "ro touch WRITTEN"; else say "ro touch refused"; fi
umount /mnt/b
if dd if=/dev/zero of=/dev/vdb bs=512 count=1 conv=fsync 2>/dev/null; then say "ro dd WRITTEN"; else say "ro dd refused"; fi
if mount -t ext4 /dev/vdb /mnt/b 2>/dev/null && touch /mnt/b/y 2>/dev/null; then say "ro rw-mount MOUNTED"; else say "ro rw-mount refused"; fi
umount /mnt/b 2>/dev/null
sync
say done
EOF
}

# disk__image DIR IMG: an ext4 image of DIR's files.
disk__image() {
    mkfs.ext4 -q -F -L tapir -d "$1" "$2" 64M >>"$l1log" 2>&1
}

scenario_disk_ext4() {
    local name=disk_ext4 start fails="" log res l1log
    start=$(date +%s)
    res=$OUT/$name.result
    l1log=$OUT/$name.l1.log
    log=$OUT/$name.log
    : >"$res"
    : >"$l1log"
    local c err=""
    for c in mkfs.ext4 debugfs sha256sum; do
        command -v "$c" >/dev/null 2>&1 || err=${err:-"$c not found (package e2fsprogs)"}
    done
    local src=$WORK/disk-src rw=$WORK/root.img ro=$WORK/ro.img want ro_before
    if [ -z "$err" ]; then
        mkdir -p "$src"
        head -c 1048576 /dev/urandom >"$src/data.bin"
        { disk__image "$src" "$rw" && disk__image "$src" "$ro"; } || err="mkfs.ext4 failed (see $name.l1.log)"
    fi
    if [ -n "$err" ]; then
        net__kv error "$err"
        net__kv failed setup
        net__kv ok 0
        echo "$err" >"$log"
        record "$name" 125 "$start"
        return
    fi
    want=$(sha256sum "$src/data.bin" | cut -d' ' -f1)
    ro_before=$(sha256sum "$ro" | cut -d' ' -f1)
    timeout -k 5 400 "$TAPIR" run --kernel "$KERNEL" \
        --initrd "$(with_scenario disk "$(disk__guest)")" --memory 256M \
        --cmdline "$CONSOLE tapir.exit=poweroff" \
        --disk "$rw,id=tapir-root" --disk "$ro,ro" </dev/null >"$log" 2>&1
    local rc=$?
    local m got
    net__check serial_vda "$(net__marker "$log" '.*DISK: serial vda=\([^ ]*\) .*')" tapir-root
    net__check serial_vdb "$(net__marker "$log" '.*DISK: serial vda=[^ ]* vdb=\([^ ]*\).*')" ro.img
    net__check ro_vda "$(net__marker "$log" '.*DISK: ro vda=\([0-9]*\) .*')" 0
    net__check ro_vdb "$(net__marker "$log" '.*DISK: ro vda=[0-9]* vdb=\([0-9]*\).*')" 1
    m=$(net__marker "$log" '.*DISK: discard_max vda=\([0-9]*\) .*')
    net__kv discard_max_vda "$m"
    [ "$m" != none ] && [ "$m" -gt 0 ] && m=1 || m=0
    net__check discard_vda "$m" 1
    net__check discard_vdb "$(net__marker "$log" '.*DISK: discard_max vda=[0-9]* vdb=\([0-9]*\).*')" 0
    net__kv data_sha256 "$want"
    got=$(net__marker "$log" '.*DISK: read sha256 \([0-9a-f]\{64\}\).*')
    net__check read_match "$([ "$got" = "$want" ] && echo 1 || echo 0)" 1
    got=$(net__marker "$log" '.*DISK: written sha256 \([0-9a-f]\{64\}\).*')
    net__kv written_sha256_guest "$got"
    local host
    host=$(debugfs -R "cat /written.bin" "$rw" 2>>"$l1log" | sha256sum | cut -d' ' -f1)
    net__kv written_sha256_host "$host"
    net__check written_match "$([ "$got" != none ] && [ "$got" = "$host" ] && echo 1 || echo 0)" 1
    net__check fstrim "$(net__marker "$log" '.*DISK: fstrim \([a-zA-Z]*\).*')" ok
    got=$(net__marker "$log" '.*DISK: ro read sha256 \([0-9a-f]\{64\}\).*')
    net__check ro_read_match "$([ "$got" = "$want" ] && echo 1 || echo 0)" 1
    net__check ro_touch "$(net__marker "$log" '.*DISK: ro touch \([a-zA-Z]*\).*')" refused
    net__check ro_dd "$(net__marker "$log" '.*DISK: ro dd \([a-zA-Z]*\).*')" refused
    net__check ro_mount "$(net__marker "$log" '.*DISK: ro rw-mount \([a-zA-Z]*\).*')" refused
    net__check ro_image_unchanged "$([ "$(sha256sum "$ro" | cut -d' ' -f1)" = "$ro_before" ] && echo 1 || echo 0)" 1
    net__check finished "$(grep -q 'DISK: done' "$log" && echo 1 || echo 0)" 1
    net__kv rc "$rc"
    [ "$rc" = 0 ] || fails+="${fails:+,}rc"
    local ok=1
    [ -z "$fails" ] || ok=0
    net__kv failed "${fails:-none}"
    net__kv ok "$ok"
    record "$name" "$rc" "$start"
    echo "scenario $name: ok=$ok failed=${fails:-none}"
}
