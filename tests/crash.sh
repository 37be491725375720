#!/bin/bash
# Crash tests: kill import, commit, clone and gc with SIGKILL at every crash
# point the store declares (STRATA_TEST_CRASH_AT=N kills at the Nth), and at
# random moments. After each kill: fsck is clean, and every layer committed
# before is byte-identical.
. "$(dirname "$0")/lib.sh"

export STRATA_HOME=$W/crash-store
P=$W/crash-pristine
rm -rf "$STRATA_HOME" "$P" "$W"/cb* "$W/cinst" "$W/cgone" "$W/cnew"

"$MK" "$W/cb1" --size 256M --data 0:3M:1 --data 100M:2M:2
"$MK" "$W/cb2" --size 256M --data 0:2M:3 --data 200M:1M:4 --linux
"$S" import "$W/cb1" first >/dev/null 2>&1
"$S" clone first "$W/cinst" 2>/dev/null
"$MK" --write "$W/cinst/Disk.img" 1M:1M:5 150M:1M:6
"$S" clone first "$W/cgone" 2>/dev/null
"$MK" --write "$W/cgone/Disk.img" 9M:1M:7
"$S" commit "$W/cgone" -t orphan >/dev/null 2>&1
rm -rf "$W/cgone"
"$S" clones --prune --expire now >/dev/null 2>&1
"$S" untag orphan # garbage for gc: an untagged layer whose clone is gone

tagged_digests() {
    for t in "$STRATA_HOME"/refs/tags/*; do
        id=$(cat "$t")
        layer_digests | grep "^$id "
    done | LC_ALL=C sort -u
}

# the store and the clone as they were before each crash
mkdir -p "$P"
cp -a "$STRATA_HOME" "$P/store"
cp -a "$W/cinst" "$P/cinst"
all_before=$(layer_digests)
tagged_before=$(tagged_digests)
restore() {
    rm -rf "$STRATA_HOME" "$W/cinst" "$W/cnew"
    cp -a "$P/store" "$STRATA_HOME"
    cp -a "$P/cinst" "$W/cinst"
}

# verify WHAT KEEP: fsck clean, and the layers in KEEP unchanged
verify() {
    local what=$1 keep=$2
    if ! "$S" fsck >"$W/fsck" 2>&1; then
        echo "    after $what: fsck says:"; sed 's/^/    /' "$W/fsck" | head -5
        return 1
    fi
    local now
    now=$(layer_digests)
    while IFS= read -r line; do
        [ -z "$line" ] && continue
        if ! grep -qxF -- "$line" <<<"$now"; then
            echo "    after $what: changed or lost: $line"
            return 1
        fi
    done <<<"$keep"
}

# crash_loop NAME KEEP CMD...: kill CMD at crash point 1, 2, ... until it
# finishes on its own; verify after each kill
crash_loop() {
    local name=$1 keep=$2
    shift 2
    local n=1 failed=0
    while [ $n -le 400 ]; do
        restore
        (STRATA_TEST_CRASH_AT=$n "$@" >/dev/null 2>&1) 2>/dev/null # no "Killed" from bash
        local code=$?
        if [ $code -eq 0 ]; then
            break
        elif [ $code -ne 137 ]; then
            echo "    $name at crash point $n: exit $code, not a kill"
            failed=1
            break
        fi
        if ! verify "$name killed at point $n" "$keep"; then
            failed=1
            break
        fi
        n=$((n + 1))
    done
    # the operation itself must also work once nothing kills it
    if [ $failed -eq 0 ] && ! verify "$name run to the end" "$keep"; then failed=1; fi
    if [ $failed -eq 0 ] && [ $n -gt 3 ]; then
        ok "$name killed at each of its $((n - 1)) crash points: fsck clean, earlier layers intact"
    else
        bad "$name under SIGKILL (reached point $n)"
    fi
}

crash_loop "import" "$all_before" "$S" import "$W/cb2" second 2>/dev/null
crash_loop "commit" "$all_before" "$S" commit "$W/cinst" -m crash -t first:child 2>/dev/null
crash_loop "clone" "$all_before" "$S" clone first "$W/cnew" 2>/dev/null
crash_loop "gc" "$tagged_before" "$S" gc --prune=now 2>/dev/null

# after a crashed commit, the clone is still usable: commit again
restore
{ (STRATA_TEST_CRASH_AT=12 "$S" commit "$W/cinst" -m crash >/dev/null 2>&1); } 2>/dev/null
code=$?
check "commit killed at crash point 12 died of SIGKILL (exit $code)" [ $code -eq 137 ]
run "$S" commit "$W/cinst" -m again -t first:again
check "a clone commits after a crashed commit" [ "$rc" -eq 0 ]
run "$S" clone first:again "$W/cnew"
check "...and the layer holds the clone's bytes" "$MK" --cmp "$W/cinst/Disk.img" "$W/cnew/Disk.img"

# kills at random moments, not just at the declared points
restore
rm -rf "$W/cbig"
"$MK" "$W/cbig" --size 2G --data 0:96M:8 --data 1G:64M:9
# the kill moments are drawn inside the time one import takes here (an
# import on a filesystem with reflinks can end before a fixed delay would)
now_ms() { python3 -c 'import time; print(int(time.monotonic() * 1000))'; }
t0=$(now_ms)
"$S" import "$W/cbig" big0 >/dev/null 2>&1
span_ms=$(($(now_ms) - t0))
[ "$span_ms" -gt 0 ] || span_ms=1
"$S" untag big0 >/dev/null 2>&1
failed=0 killed=0 i=0
# six kills, and more (up to twelve) until one lands: an import that ended
# before its kill draws the next moment from half the window (the layer is
# in the store after the first import, so later ones may end sooner)
while [ $i -lt 6 ] || { [ $killed -eq 0 ] && [ $i -lt 12 ]; }; do
    i=$((i + 1))
    "$S" import "$W/cbig" big$i >/dev/null 2>&1 &
    pid=$!
    at=$((RANDOM % span_ms))
    sleep "$((at / 1000)).$(printf %03d $((at % 1000)))"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    code=$?
    # 137: killed as meant; 0: it finished before the kill; anything else failed
    if [ $code -ne 137 ] && [ $code -ne 0 ]; then
        echo "    import $i: exit $code, neither killed nor finished"; failed=1
    fi
    [ $code -eq 137 ] && killed=$((killed + 1))
    [ $code -eq 0 ] && [ "$span_ms" -gt 1 ] && span_ms=$((span_ms / 2))
    verify "import killed at a random moment ($i)" "$all_before" || failed=1
done
if [ $failed -eq 0 ]; then ok "import killed at random moments ($killed of $i died of SIGKILL): fsck clean, earlier layers intact"; else bad "import killed at random moments"; fi
check "...at least one import really died of the kill" [ $killed -gt 0 ]
run "$S" gc --prune=now
check "gc clears what the killed imports left" tmp_empty

# One writer of each module on the atomic file (base/file.h), killed at each
# of its crash points: the file holds all its old bytes or all its new ones,
# and nothing but a dot-named temporary is left beside it.
# crash_file NAME FILE SETUP CMD...: SETUP puts the old state back
crash_file() {
    local name=$1 file=$2 setup=$3
    shift 3
    local dir n=1 failed=0 code
    dir=$(dirname "$file")
    $setup
    "$@" >/dev/null 2>&1 || { bad "$name: runs at all"; return; }
    cp "$file" "$W/cf.new"
    while [ $n -le 20 ]; do
        $setup
        local old=$W/cf.old
        rm -f "$old"
        [ -e "$file" ] && cp "$file" "$old"
        { (STRATA_TEST_CRASH_AT=$n "$@" >/dev/null 2>&1); } 2>/dev/null # no "Killed" from bash
        code=$?
        [ $code -eq 0 ] && break
        if [ $code -ne 137 ]; then echo "    $name at point $n: exit $code"; failed=1; break; fi
        if ! { [ -e "$file" ] && cmp -s "$file" "$W/cf.new"; } &&
           ! { [ -e "$old" ] && cmp -s "$file" "$old"; } &&
           ! { [ ! -e "$old" ] && [ ! -e "$file" ]; }; then
            echo "    $name killed at point $n: $file is neither the old nor the new one"; failed=1
        fi
        if ls -A "$dir" | grep -v '^\.' | grep -q 'tmp'; then
            echo "    $name killed at point $n: a temporary file without a dot: $(ls -A "$dir")"; failed=1
        fi
        n=$((n + 1))
    done
    cmp -s "$file" "$W/cf.new" || { echo "    $name: the uninterrupted run's file differs"; failed=1; }
    if [ $failed -eq 0 ] && [ $n -gt 2 ]; then
        ok "$name killed at each of its $((n - 1)) crash points: the file old or new, whole"
    else
        bad "$name on the atomic file under SIGKILL (reached point $n)"
    fi
}

restore
export_setup() { rm -f "$W/cf-out/first.tar.zst"; mkdir -p "$W/cf-out"; }
crash_file "export (cli)" "$W/cf-out/first.tar.zst" export_setup "$S" export first "$W/cf-out/first.tar.zst"
set_setup() {
    rm -rf "$W/cfset"; cp -a "$P/cinst" "$W/cfset"
    printf '{"version": 1, "os": "macos", "cpus": 2, "memory_mib": 4096}\n' >"$W/cfset/Settings.json"
}
crash_file "set (boot)" "$W/cfset/Settings.json" set_setup "$S" set "$W/cfset" --cpus 3
export DOCKER_CONFIG=$W/cf-docker
logout_setup() {
    rm -rf "$DOCKER_CONFIG"; mkdir -p "$DOCKER_CONFIG"
    printf '{"auths": {"a.example": {"auth": "dTpw"}, "b.example": {"auth": "dTpx"}}}\n' >"$DOCKER_CONFIG/config.json"
}
crash_file "logout (remote)" "$DOCKER_CONFIG/config.json" logout_setup "$S" logout a.example
unset DOCKER_CONFIG

finish
