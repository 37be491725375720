#!/bin/bash
# `strata run HOST/REPO:TAG` lazily (docs/lazy.md, "Running lazily"; issue
# 22 §1, §5), end to end with the real docker-registry and qemu: the test
# guest (tests/guest/mkguest.sh, a disk counter) pushed with 96 MiB of data
# it never reads, served through tests/flaky_proxy.py's "wan" link (4 MiB/s,
# 20 ms), so the fill takes longer than the boot:
#   - from an empty store the guest boots while the layer is not yet in the
#     store; ps shows the fill (text and JSON); its disk writes land; the
#     layer is published with the pushed id and the local tag a pull gives;
#     fsck is clean; the instance is an ordinary clone: commit gives a child
#     of the pushed layer;
#   - --no-lazy pulls the whole layer first;
#   - the supervisor killed (SIGKILL) mid-fill, qemu with it: `run NAME`
#     serves the instance again, the guest's writes still there, and the
#     fill completes with the pushed id;
#   - suspend of a lazily running instance waits for the fill, then commits.
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
export STRATA_HOME=$W/src DOCKER_CONFIG=$W/docker XDG_CACHE_HOME=$W/cache
unset STRATA_QEMU_ACCEL STRATA_HOST_ID
rm -rf "$W"/src "$W"/s-* "$W"/docker "$W"/cache "$W"/reg-* "$W"/gb "$W"/*.log "$W"/out
. "$(dirname "$0")/registry_lib.sh"
. "$(dirname "$0")/lazyrun_lib.sh"
need_lazy_boots "lazy run tests" debugfs
GUEST=${STRATA_GUEST_DIR:-/var/tmp/strata-guest}
if ! bash "$HERE/guest/mkguest.sh" "$GUEST" >"$W/mkguest.log" 2>&1; then
    skipped "lazy run tests" "could not build the test guest: $(tail -1 "$W/mkguest.log")"; finish; exit
fi
counter_in() { debugfs -R "cat /counter" "$1" 2>/dev/null | tr -dc 0-9; }
last_counter() { grep -oE 'counter=[0-9]+' "$1" | tail -1 | cut -d= -f2; }
has_layer() { "$S" inspect "$1" >/dev/null 2>&1; }
stop_run() { # NAME PID: stop the instance, wait for its supervisor
    "$S" stop "$1" --force >/dev/null 2>&1
    wait "$2" 2>/dev/null
}

expect_error "--lazy and --no-lazy together are refused" 1 "--lazy and --no-lazy contradict each other" \
    "$S" run 127.0.0.1:1/strata/guest:v1 --lazy --no-lazy

# ---- the guest, pushed with a disk far larger than what it reads ----
cp -a "$GUEST/guest.bundle" "$W/gb"
truncate -s 160M "$W/gb/Disk.img"
dd if=/dev/urandom of="$W/gb/Disk.img" bs=1M seek=64 count=96 conv=notrunc status=none
"$S" import "$W/gb" guest >/dev/null 2>&1
start_registry lzrun
R=127.0.0.1:$PORT
run "$S" push guest "$R/strata/guest:v1" --json
LAYER=$(jget layer 2>/dev/null)
check "push the test guest (160 MiB disk, 96 MiB of it never read)" cond '[ "$rc" -eq 0 ] && [ -n "$LAYER" ]'
start_proxy wan "$R" wan 4194304 20
P=127.0.0.1:$PPORT
LOCAL_TAG=127.0.0.1_${PPORT}_strata_guest:v1
RUN=(--driver qemu --accel tcg)

# planned_text NAME: once NAME's fill has planned (ps: fill_total), ps's
# text shows the share done, the proxy held meanwhile so the fill can't end
planned_text() {
    local i r
    for ((i = 0; i < 480; i++)); do
        [ "$(ps_lazy "$1" fill_total)" -gt 0 ] 2>/dev/null && break
        sleep 0.5
    done
    hold_proxy
    "$S" ps | grep -qE "^$1 .*filling [0-9]+% \([0-9]+/103 chunks here\)"
    r=$?
    release_proxy
    return $r
}

# ---- a lazy run from an empty store ----
mark=$(wc -l <"$W/proxy-wan.log")
export STRATA_HOME=$W/s-lazy
"$S" run "$P/strata/guest:v1" --name lz "${RUN[@]}" >"$W/run-lz.log" 2>&1 &
RPID=$!
PIDS="$PIDS $RPID"
if wait_for "$(console lz)" '^BOOTED' 240; then
    hold_proxy
    # the first console line: the layer must not be in the store yet
    check "the guest boots before the pull ends: its first console line came while the store lacked the layer" \
        bash -c "! '$S' inspect $LAYER >/dev/null 2>&1"
    check "...run said it runs the layer lazily" grep -q "running $P/strata/guest:v1 lazily" "$W/run-lz.log"
    # 7 data chunks of the guest's filesystem and 96 of data
    check "...ps --json shows the fill: filling, some of the 103 data chunks already here" \
        cond '[ "$(ps_lazy lz state)" = filling ] && [ "$(ps_lazy lz chunks_here)" -gt 0 ] && [ "$(ps_lazy lz chunks)" -eq 103 ]'
    # (the fill waits for the guest to be ready, then plans: the share done follows)
    check "...and ps's text its progress" bash -c "'$S' ps | grep -E '^lz .*filling ([0-9]+% )?\([0-9]+/103 chunks here\)'"
    release_proxy
    check "...and, once the fill has planned, the share of it done" planned_text lz
    check "...its disk is the NBD export on a socket in the instance (qemu's command line)" \
        bash -c "[ -S '$STRATA_HOME/vms/lz/.disk.sock' ] && ps -C qemu-system-x86_64 -o args= | grep -F '$STRATA_HOME/vms/lz/' | grep -qF 'vms/lz/.disk.sock'"
    check "...the guest counts on it" wait_for "$(console lz)" '^HEARTBEAT.*counter=3' 120
    check "the fill ends (ps: done)" cond 'wait_fill lz 300 && [ "$(ps_lazy lz state)" = done ]'
    FILL_BYTES=$(tail -n +$((mark + 1)) "$W/proxy-wan.log" | awk '$1 == "GET" && $2 ~ /blobs/ { n += $5 } END { print n + 0 }')
    check "...the layer is published with the pushed id, under the tag a pull gives it" \
        [ "$("$S" inspect "$LOCAL_TAG" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')" = "$LAYER" ]
    check "...the guest goes on counting after the handover" \
        wait_for "$(console lz)" "^HEARTBEAT.*counter=$(( $(last_counter "$(console lz)") + 2 ))\b" 60
    stop_run lz "$RPID"
    check "...stop ends it; no NBD socket left" [ ! -e "$STRATA_HOME/vms/lz/.disk.sock" ]
    n=$(counter_in "$STRATA_HOME/vms/lz/Disk.img")
    check "...the guest's writes are in the instance's Disk.img (counter $n)" [ "${n:-0}" -ge 3 ]
    check "...the instance is an ordinary clone: no .lazy/ left" [ ! -e "$STRATA_HOME/vms/lz/.lazy" ]
    run "$S" fsck
    check "...fsck is clean" [ "$rc" -eq 0 ]
    run "$S" commit "$STRATA_HOME/vms/lz" -t after
    check "...commit gives a child of the pushed layer" cond '[ "$rc" -eq 0 ] && [ "$(parent_of after)" = "$LAYER" ]'
else
    bad "a lazy run boots the guest"; tail -5 "$W/run-lz.log" "$(console lz)"
    stop_run lz "$RPID"
fi
kill_marked_qemus

# ---- --no-lazy: the whole layer first ----
export STRATA_HOME=$W/s-nolazy
"$S" run "$R/strata/guest:v1" --name nl --no-lazy "${RUN[@]}" >"$W/run-nl.log" 2>&1 &
RPID=$!
PIDS="$PIDS $RPID"
if wait_for "$(console nl)" '^BOOTED' 240; then
    check "--no-lazy pulls first: the layer was in the store before the guest booted" \
        grep -q "is not in the store: pulling it" "$W/run-nl.log"
    check "...and pulled whole (pull's summary, the pushed layer)" grep -q "pulled $R/strata/guest:v1 (layer ${LAYER:0:12}" "$W/run-nl.log"
    check "...ps shows no fill" [ "$(ps_lazy nl state)" = None ]
else
    bad "--no-lazy boots the guest"; tail -5 "$W/run-nl.log"
fi
stop_run nl "$RPID"
kill_marked_qemus

# ---- killed mid-fill, run again by name ----
export STRATA_HOME=$W/s-kill
"$S" run "$P/strata/guest:v1" --name lk "${RUN[@]}" >"$W/run-lk.log" 2>&1 &
RPID=$!
PIDS="$PIDS $RPID"
if wait_for "$(console lk)" '^HEARTBEAT.*counter=2' 240; then
    kill -9 "$RPID"; wait "$RPID" 2>/dev/null
    kill_marked_qemus
    before=$(last_counter "$(console lk)")
    check "a supervisor killed mid-fill: the layer is not in the store" bash -c "! '$S' inspect $LAYER >/dev/null 2>&1"
    mark=$(wc -l <"$W/proxy-wan.log")
    "$S" run lk "${RUN[@]}" >"$W/run-lk2.log" 2>&1 &
    RPID=$!
    PIDS="$PIDS $RPID"
    check "...run NAME serves it again" wait_for "$W/run-lk2.log" "serving $P/strata/guest:v1 lazily again" 30
    check "...the guest boots again and counts on from its writes before the kill (counter $before)" \
        wait_for "$(console lk)" "^HEARTBEAT.*counter=$((before + 1))\b" 240
    check "...the fill completes" cond 'wait_fill lk 300 && [ "$(ps_lazy lk state)" = done ]'
    check "...with the pushed layer's id" has_layer "$LAYER"
    # the blob bytes sent after the restart: less than a whole pull's (pull's summary above)
    again=$(tail -n +$((mark + 1)) "$W/proxy-wan.log" | awk '$1 == "GET" && $2 ~ /blobs/ { n += $5 } END { print n + 0 }')
    check "...fetching only what was missing ($again bytes of blobs after the restart, a whole fill $FILL_BYTES)" \
        cond '[ "$again" -gt 0 ] && [ "$again" -lt "$FILL_BYTES" ]'
    stop_run lk "$RPID"
    run "$S" fsck
    check "...fsck is clean" [ "$rc" -eq 0 ]
else
    bad "a lazy run to kill boots"; tail -5 "$W/run-lk.log"
    stop_run lk "$RPID"
fi
kill_marked_qemus

# ---- suspend waits for the fill ----
export STRATA_HOME=$W/s-susp
"$S" run "$P/strata/guest:v1" --name ls "${RUN[@]}" >"$W/run-ls.log" 2>&1 &
RPID=$!
PIDS="$PIDS $RPID"
if wait_for "$(console ls)" '^HEARTBEAT.*counter=2' 240; then
    hold_proxy
    check "a lazily running instance, its fill not done" [ "$(ps_lazy ls state)" = filling ]
    release_proxy
    run "$S" suspend ls -t saved
    check "suspend waits for the fill, then saves: its state's disk layer is a child of the pushed one" \
        cond '[ "$rc" -eq 0 ] && has_layer "$LAYER" && [ "$(parent_of "$(parent_of saved)")" = "$LAYER" ]'
    [ "$rc" -eq 0 ] || cat "$W/err"
    wait "$RPID" 2>/dev/null
    run "$S" fsck
    check "...fsck is clean" [ "$rc" -eq 0 ]
else
    bad "a lazy run to suspend boots"; tail -5 "$W/run-ls.log"
    stop_run ls "$RPID"
fi
kill_marked_qemus
finish
