#!/bin/bash
# Boot and resume benchmark (issue 12), qemu driver, the test guest of
# tests/guest/mkguest.sh (it echoes a line typed on its serial console), in
# one run for a 256 MiB and a 2 GiB guest:
#   - seconds from `strata run` (cold) or `strata run --resume` to the
#     guest's echo, for RAM-file states and classic ones
#     (STRATA_QEMU_SAVE=classic: all RAM in the state file);
#   - seconds a `strata suspend` takes, first and second saved state, and a
#     first state of a guest that ran past the kernel's dirty expiry;
#   - state bytes: the state file, the RAM file's data;
#   - bytes a second saved state adds (store accounting: all, and its RAM
#     file's part, chunked at 4 KiB) and, on a reflink filesystem, the RAM
#     blocks it does not share;
#   - the writeback a busy guest causes with its RAM in a shared file.
# Prints markdown for bench/RESULTS.md. Put TMPDIR on XFS or btrfs to see
# blocks shared. Usage: bash bench/boot.sh [ROUNDS]
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
S=${STRATA:-$HERE/build/strata}
ROUNDS=${1:-3}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/strata-bench-boot.XXXXXX")
export STRATA_HOME=$W/store
# Each instance's serial input is a FIFO held open by a sleep, whose pid is
# kept in $W/NAME.holder: every one is killed on the way out (a sleep left
# behind would also keep the qemu lock of whoever runs this under flock).
unhold_all() { local f; for f in "$W"/*.holder; do [ -e "$f" ] && { kill "$(cat "$f")" 2>/dev/null || true; }; done; }
trap 'unhold_all; pkill -f "$STRATA_HOME/vms" 2>/dev/null || true; rm -rf "$W"' EXIT
GUEST=${STRATA_GUEST_DIR:-/var/tmp/strata-guest}
bash "$HERE/tests/guest/mkguest.sh" "$GUEST" >/dev/null 2>&1

echo_time() { # NAME ARGS...: seconds from `strata run ARGS` to the guest's echo
    local name=$1; shift
    mkfifo "$W/$name.in"
    sleep 100000 >"$W/$name.in" &
    echo $! >"$W/$name.holder"
    python3 "$HERE/bench/echo_time.py" "$STRATA_HOME/vms/$name/.console.log" "$W/$name.in" -- \
        "$S" run "$@" --console --name "$name"
}
stop_vm() { "$S" stop "$1" --timeout 1 >/dev/null; kill "$(cat "$W/$1.holder")" 2>/dev/null || true; }
suspend_vm() { "$S" suspend "$@"; kill "$(cat "$W/$1.holder")" 2>/dev/null || true; }
type_line() { echo "$2" >"$W/$1.in"; }
seconds() { local t0; t0=$(date +%s.%N); "$@" >/dev/null; awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f", b - a}'; }
layer() { "$S" inspect "$1" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["id"], d["bytes_added"])'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mb() { awk -v b="$1" 'BEGIN {printf "%.2f", b / 1e6}'; }

# one memory size, one kind: cold boot, suspend, resumes, a second state
measure() { # MIB KIND(ram-file|classic)
    local mib=$1 kind=$2 tag=g$1 p=$2-$1 r times=()
    export STRATA_QEMU_SAVE=${kind%%,*} # "classic" forces classic; anything else is the default
    # "ram-file,hint": QEMU's huge-page hint left on (no strata-qemu-nothp.so)
    if [ "$kind" = ram-file,hint ]; then export STRATA_QEMU_SHIM=none; p=hint-$1; else unset STRATA_QEMU_SHIM; fi
    local cold; cold=$(echo_time c-$p $tag)
    sleep 3
    local t=${p%-*}
    local sus1; sus1=$(seconds suspend_vm c-$p -t $tag:$t)
    local s1 s2 added2; read -r s1 _ < <(layer $tag:$t)
    local state; state=$(stat -c %s "$STRATA_HOME/layers/$s1/bundle/SaveFile.qemustate")
    local ramdata=0
    [ -e "$STRATA_HOME/layers/$s1/bundle/SaveFile.qemuram" ] &&
        ramdata=$(du -B1 "$STRATA_HOME/layers/$s1/bundle/SaveFile.qemuram" | cut -f1)
    for ((r = 1; r <= ROUNDS; r++)); do
        times+=("$(echo_time r$r-$p $tag:$t --resume)")
        [ $r -lt "$ROUNDS" ] && stop_vm r$r-$p
    done
    sleep 3 # a little activity, then a second saved state
    local sus2; sus2=$(seconds suspend_vm r$ROUNDS-$p -t $tag:$t-2)
    read -r s2 added2 < <(layer $tag:$t-2)
    local unshared=- pages state2 ramadd=-
    state2=$(stat -c %s "$STRATA_HOME/layers/$s2/bundle/SaveFile.qemustate")
    [ "$ramdata" -gt 0 ] && ramadd=$(mb $((added2 - state2)))
    if [ "$ramdata" -gt 0 ]; then
        read -r pages unshared _ < <(python3 "$HERE/bench/ram_delta.py" \
            "$STRATA_HOME/layers/$s1/bundle/SaveFile.qemuram" "$STRATA_HOME/layers/$s2/bundle/SaveFile.qemuram")
        unshared="$(mb "$unshared") (guest changed $(mb "$pages"))"
    fi
    echo "| $mib MiB | $kind | $cold | $(median "${times[@]}") (${times[*]}) | $sus1 / $sus2 | $(mb "$state") | $(mb "$ramdata") | $(mb "$added2") ($ramadd) | $unshared |"
}

# a first state of a guest that ran past the kernel's dirty expiry
# (vm.dirty_expire_centisecs, 30 s by default): the RAM pages it wrote while
# booting are on disk already, as they are for a VM that was used a while
# before its first suspend; the suspend right after a cold boot (above) has
# to write them all first
SETTLE=$(($(cat /proc/sys/vm/dirty_expire_centisecs 2>/dev/null || echo 3000) / 100 + 5))
settled() { # MIB
    local mib=$1 name=settle-$1
    export STRATA_QEMU_SAVE=ram-file
    echo_time $name g$mib >/dev/null
    sleep "$SETTLE"
    echo "| $mib MiB | $SETTLE | $(seconds suspend_vm $name -t g$mib:settled) |"
}

# writeback: a guest writing a 64 MiB buffer over and over for 30 s: what
# the store's block device wrote meanwhile (/sys/dev/block/M:m/stat, the
# whole device: other writers count too), and the bytes QEMU dirtied in the
# page cache (/proc/PID/io write_bytes)
sectors_written() { awk '{print $7}' "/sys/dev/block/$(stat -c '%Hd:%Ld' "$STRATA_HOME")/stat" 2>/dev/null || echo 0; }
writeback() { # KIND
    local kind=$1 name=wb-$1
    export STRATA_QEMU_SAVE=$kind
    echo_time $name g256 >/dev/null
    local vm; vm=$("$S" ps --json | python3 -c 'import json,sys; print([i["vm_pid"] for i in json.load(sys.stdin) if i["name"]==sys.argv[1]][0])' "$name")
    sleep 2
    local w0 d0 w1 d1; w0=$(awk '/^write_bytes/ {print $2}' "/proc/$vm/io"); d0=$(sectors_written)
    type_line $name "busy 100000"
    sleep 30
    w1=$(awk '/^write_bytes/ {print $2}' "/proc/$vm/io"); d1=$(sectors_written)
    stop_vm $name
    echo "| $kind | $(mb $(((d1 - d0) * 512))) MB ($(awk -v b=$(((d1 - d0) * 512)) 'BEGIN {printf "%.1f", b / 30e6}') MB/s) | $(mb $((w1 - w0))) MB |"
}

for mib in 256 2048; do
    rm -rf "$W/g$mib" && cp -a "$GUEST/guest.bundle" "$W/g$mib"
    sed -i "s/\"memory_mib\":[0-9]*/\"memory_mib\":$mib/" "$W/g$mib/Settings.json"
    "$S" import "$W/g$mib" g$mib >/dev/null 2>&1
done
echo "| guest | state kind | cold boot to echo (s) | resume to echo (s), median of $ROUNDS | suspend (s), 1st / 2nd state | state file (MB) | RAM file data (MB) | 2nd state adds (MB): all (RAM file) | 2nd state's RAM blocks unshared (MB) |"
echo "|---|---|---|---|---|---|---|---|---|"
for mib in 256 2048; do
    measure $mib ram-file
    measure $mib classic
done
measure 256 ram-file,hint
unset STRATA_QEMU_SHIM
echo
echo "| guest (ram-file) | seconds running before its first suspend | that suspend (s) |"
echo "|---|---|---|"
settled 256
settled 2048
echo
echo "| 30 s of a busy guest (256 MiB, rewriting 64 MiB) | written to the store's device | dirtied by QEMU in the page cache |"
echo "|---|---|---|"
writeback ram-file
writeback classic
echo
echo "$(date -u +%F), $(uname -srm), QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}'), TMPDIR on $(df -T "$W" | awk 'NR==2 {print $2}'), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores shared with other jobs"
