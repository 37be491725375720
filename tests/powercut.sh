#!/bin/bash
# Power-cut tests: strata runs inside the test guest (tests/guest/
# mkpowercut.sh: its binary and libraries in the initramfs) on an ext4 store
# on the guest's virtio disk, and the host kills qemu in the middle of
# import, commit, tag and gc (tests/guest/powercut-scenario.sh). Unlike a
# SIGKILL of strata (tests/crash.sh), this loses the guest's page cache: what
# strata wrote but did not fsync is gone, so a missing fsync fails here.
# After each cut, on the host: e2fsck replays the journal, `strata fsck` is
# clean, every layer the guest reported COMMITTED before the cut clones
# byte-identical (by id and by tag), and gc then clears what the cut left.
#
# What a cut models: the guest kernel's page cache is lost, and the guest is
# told never to write back on its own (no periodic writeback, no timed
# journal commits), so only what an fsync or sync pushed reaches the disk.
# Not modelled: a disk's volatile write cache. What qemu has written to the
# image file survives its kill (the host doesn't lose power), whatever the
# cache= mode: writeback, none (O_DIRECT) and unsafe all leave qemu's
# completed writes in the host's page cache or on its disk, so a write the
# guest sent but never flushed still lands; reordering by the drive is not
# tested either. ext4 has one journal, so any fsync commits every metadata
# change before it: a missing fsync shows only where nothing else syncs
# before the cut (a dropped directory fsync after a tag's rename loses the
# last commit's tag here; a dropped fsync of layer data does not, because
# the FIEMAP_FLAG_SYNC extent walk already wrote it).
#
# Each boot starts from the same disk image; cuts at declared crash points
# (pc.crash: strata dies at STRATA_TEST_CRASH_AT=N, then the power goes with
# nothing synced) and at delays after an operation starts. Hold
# /tmp/strata-qemu.lock while running it: other tests boot guests too.
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
export PATH=$PATH:/usr/sbin:/sbin
MNT=$W/mnt # the store's directory: the same absolute path in guest and host
QPID=""

cleanup() {
    [ -n "$QPID" ] && kill -9 "$QPID" 2>/dev/null && wait "$QPID" 2>/dev/null
    QPID=""
    if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT" 2>/dev/null || umount -l "$MNT"; fi
    return 0
}
trap cleanup EXIT
trap 'cleanup; exit 1' INT TERM

why_not() { # prints why the guest can't boot here, or nothing
    if [ "$(uname)" != Linux ]; then echo "it needs a Linux host"
    elif [ "$(id -u)" != 0 ]; then echo "it needs root (loop mounts of the guest's disk)"
    elif [ -n "${STRATA_SANITIZED:-}" ] || ldd "$S" 2>/dev/null | grep -q 'libasan\|libubsan'; then echo "a sanitizer build can't run in the guest (the plain pass runs it)"
    elif ! command -v qemu-system-x86_64 >/dev/null; then echo "qemu-system-x86_64 is not installed"
    elif ! command -v mkfs.ext4 >/dev/null || ! command -v e2fsck >/dev/null; then echo "e2fsprogs is not installed"
    elif ! bash "$HERE/guest/mkguest.sh" "$GUEST" >"$W/mkguest.log" 2>&1; then
        echo "could not build the test guest: $(tail -1 "$W/mkguest.log")"
    elif ! bash "$HERE/guest/mkpowercut.sh" "$GUEST" "$B" "$W/initrd.img" >"$W/mkpc.log" 2>&1; then
        echo "could not build its initramfs: $(tail -1 "$W/mkpc.log")"
    fi
}
GUEST=${STRATA_GUEST_DIR:-/var/tmp/strata-guest}
cleanup
rm -rf "${W:?}/mnt" "$W"/*.img "$W"/console* "$W"/*tlog*
reason=$(why_not)
if [ -n "$reason" ]; then
    skipped "power-cut tests" "$reason"; finish; exit
fi

# ---- the starting disk: ext4 with the two source bundles, nothing else
mkdir -p "$MNT"
truncate -s 256M "$W/base.img"
mkfs.ext4 -q -F "$W/base.img"
mount -o loop "$W/base.img" "$MNT"
"$MK" "$MNT/src1" --size 64M --data 0:2M:1 --data 40M:1M:2
"$MK" "$MNT/src2" --size 64M --data 0:1M:8 --data 20M:1M:9 --linux
umount "$MNT"

# ---- one boot, one cut
# boot ARGS: start the guest on a fresh copy of the starting disk
boot() {
    rm -f "$W/run.img" "$W/console" "$W/tlog"
    cp --reflink=auto --sparse=always "$W/base.img" "$W/run.img"
    : >"$W/console"
    qemu-system-x86_64 -accel tcg -machine pc -m 256 -smp 1 -nodefaults -no-user-config \
        -display none -monitor none -no-reboot -serial "file:$W/console" \
        -kernel "$GUEST/guest.bundle/vmlinuz" -initrd "$W/initrd.img" \
        -append "console=ttyS0 panic=-1 quiet mitigations=off rdinit=/pcinit pc.dir=$MNT $*" \
        -drive "file=$W/run.img,format=raw,if=virtio,cache=writeback" >"$W/qemu.log" 2>&1 &
    QPID=$!
    SEEN=0
    T0=$(date +%s%N)
}
ms() { echo $((($(date +%s%N) - T0) / 1000000)); }
# poll: copy new console lines to $W/tlog with the host's ms since boot
poll() {
    local n
    n=$(wc -l <"$W/console")
    if [ "$n" -gt "$SEEN" ]; then
        sed -n "$((SEEN + 1)),${n}p" "$W/console" | tr -d '\r' | sed "s/^/$(ms) /" >>"$W/tlog"
        SEEN=$n
    fi
}
# wait_line REGEX SECONDS: poll until a console line matches (0) or the time is up
wait_line() {
    local end=$(($(date +%s) + $2))
    while [ "$(date +%s)" -lt "$end" ]; do
        poll
        grep -qE "^[0-9]+ ($1)" "$W/tlog" 2>/dev/null && return 0
        grep -qE '^[0-9]+ (GUEST-ERROR|SCENARIO-ERROR|Kernel panic)' "$W/tlog" 2>/dev/null && return 1
        kill -0 "$QPID" 2>/dev/null || return 1
        sleep 0.02
    done
    return 1
}
power_cut() { # kill qemu: the power cut
    kill -9 "$QPID" 2>/dev/null
    wait "$QPID" 2>/dev/null
    QPID=""
    poll
}
# where the last cut fell: the last operation line the host saw (poll first:
# this runs in a subshell, which must not copy lines it can't mark as seen)
where() {
    local last
    last=$(grep -E '^[0-9]+ (START|END|KILLED|DONE)' "$W/tlog" | tail -1)
    if [ -z "$last" ]; then echo "before the first operation"; return; fi
    set -- $last
    echo "$(($(ms) - $1)) ms after $2${3:+ $3}${4:+ ($4)}" # $(ms) is still the cut's time
}

# ---- checks on the host
# check_cut LABEL: fsck clean, committed layers byte-identical, gc clears up
check_cut() {
    local label=$1 problems=""
    e2fsck -fy "$W/run.img" >"$W/e2fsck.log" 2>&1
    local e=$?
    [ $e -le 1 ] || problems="e2fsck exit $e: $(grep -v '^Pass\|^$' "$W/e2fsck.log" | tail -2 | tr '\n' ' ')"
    if ! e2fsck -fn "$W/run.img" >"$W/e2fsck2.log" 2>&1; then
        problems="$problems; not clean after journal replay: $(tail -2 "$W/e2fsck2.log" | tr '\n' ' ')"
    fi
    if ! mount -o loop "$W/run.img" "$MNT" 2>"$W/mount.log"; then
        bad "$label: mount after the cut: $(tail -1 "$W/mount.log")"; return
    fi
    export STRATA_HOME=$MNT/store
    local ncommitted=0
    if [ -d "$STRATA_HOME" ]; then
        "$S" fsck >"$W/fsck.log" 2>&1 || problems="$problems; fsck: $(head -3 "$W/fsck.log" | tr '\n' ' ')"
        local k id tag
        while read -r _ _ k id tag; do
            ncommitted=$((ncommitted + 1))
            problems="$problems$(same_as_expected "$k" "$id")$(same_as_expected "$k" "$tag")"
        done < <(grep -E '^[0-9]+ COMMITTED ' "$W/tlog")
        "$S" gc >"$W/gc.log" 2>&1 || problems="$problems; gc after the cut: $(head -2 "$W/gc.log" | tr '\n' ' ')"
        "$S" fsck >"$W/fsck.log" 2>&1 || problems="$problems; fsck after gc: $(head -3 "$W/fsck.log" | tr '\n' ' ')"
        tmp_empty >"$W/tmp.log" || problems="$problems; gc left in tmp: $(tr '\n' ' ' <"$W/tmp.log")"
    elif grep -qE '^[0-9]+ COMMITTED ' "$W/tlog"; then
        problems="$problems; the store is gone"
    fi
    umount "$MNT" || umount -l "$MNT"
    problems=$(echo "$problems" | sed 's/^[; ]*//; s/[; ]*$//')
    if [ -z "$problems" ]; then
        ok "$label: fsck clean, $ncommitted committed layer(s) byte-identical"
    else
        bad "$label: $problems"
        NKEPT=$((${NKEPT:-0} + 1))
        cp --sparse=always "$W/run.img" "$W/failed-$NKEPT.img" # for a post-mortem
        cp "$W/tlog" "$W/failed-$NKEPT.tlog"
    fi
}
# same_as_expected K REF: clone REF; its files must be what EXPECT K listed
same_as_expected() {
    local k=$1 ref=$2 dir=$MNT/check
    rm -rf "$dir"
    if ! "$S" clone "$ref" "$dir" >/dev/null 2>"$W/clone.err"; then
        echo "; operation $k: clone $ref: $(head -1 "$W/clone.err")"; return
    fi
    local want got
    want=$(grep -E "^[0-9]+ EXPECT $k " "$W/tlog" | cut -d' ' -f4,5 | LC_ALL=C sort)
    got=$(cd "$dir" && for f in *; do echo "$f $("$MK" --digest "$f" | cut -d' ' -f1)"; done | LC_ALL=C sort)
    [ -n "$want" ] && [ "$want" = "$got" ] && return
    echo "; operation $k: $ref differs from what was committed:" \
        "$(diff <(echo "$want") <(echo "$got") | grep '^[<>]' | cut -c1-40 | tr '\n' ' ')"
    rm -rf "$dir"
}

# ---- the reference run: no cut before the end, then one with nothing synced
boot
if ! wait_line 'CUT' 300 || ! grep -qE '^[0-9]+ DONE' "$W/tlog"; then
    power_cut
    bad "the guest runs the whole scenario"
    sed 's/^/    console: /' "$W/console" | tail -15
    finish; exit
fi
REF_MS=$(ms)
power_cut
cp "$W/tlog" "$W/tlog.ref"
ok "the guest boots and runs the scenario (${REF_MS} ms)"
check_cut "cut after the scenario, nothing synced"

# op_ms K: how long operation K took in the reference run
op_ms() {
    local s e
    s=$(grep -E "^[0-9]+ START $1 " "$W/tlog.ref" | cut -d' ' -f1)
    e=$(grep -E "^[0-9]+ END $1\$" "$W/tlog.ref" | cut -d' ' -f1)
    echo $((e - s))
}
op_name() { grep -E "^[0-9]+ START $1 " "$W/tlog.ref" | cut -d' ' -f4; }

# ---- cuts at declared crash points: strata dies there, then the power goes
for kp in 1:2 1:5 1:9 3:2 3:6 3:10 6:1 6:3; do
    k=${kp%:*} p=${kp#*:}
    boot "pc.crash=$k:$p"
    if ! wait_line 'CUT' 300; then
        power_cut; bad "crash point $p of operation $k ($(op_name "$k")): the guest did not get there"
        sed 's/^/    console: /' "$W/console" | tail -5; continue
    fi
    power_cut
    if grep -qE "^[0-9]+ KILLED $k\$" "$W/tlog"; then
        check_cut "power cut at crash point $p of operation $k ($(op_name "$k"))"
    else
        check_cut "operation $k ($(op_name "$k")) has no crash point $p: power cut after the scenario"
    fi
done

# ---- cuts at delays into import, commit, tag and gc
for k in 1 3 4 5 6 7 8; do
    d=$(op_ms "$k")
    pcts="20 70"
    [ "$k" -eq 5 ] && pcts=50 # a tag is one small file
    for pct in $pcts; do
        delay=$((d * pct / 100))
        boot
        if ! wait_line "START $k " 300; then
            power_cut; bad "operation $k: the guest did not start it"
            sed 's/^/    console: /' "$W/console" | tail -5; continue
        fi
        sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
        poll
        at=$(where)
        power_cut
        check_cut "power cut $pct% into operation $k ($(op_name "$k"), $d ms): $at"
    done
done

# (pgrep in this shell: a `bash -c "pgrep ..."` would find its own command line)
if pgrep -f "file=$W/run.img" >/dev/null; then bad "no qemu of this test is left running"; else ok "no qemu of this test is left running"; fi
rm -f "$W/run.img" "$W/base.img"
finish
