#!/bin/bash
# The pieces around issue 22's lazy engine:
#   - boot profiles (docs/profiles.md): push carries the store's profile of a
#     layer, pull on another store gets it byte for byte; a hostile profile
#     (too large, out of range, garbage, another layer's) is ignored with a
#     note and never fails the pull; a manifest without one pulls as before
#     and an older reader's checks still accept one with it;
#   - qemu's NBD boot disk survives its server going away: the test guest
#     (tests/guest/mkguest.sh) counting on an export served by qemu-nbd goes
#     on counting, into the export, across a stop and start of the server;
#   - a real Debian 12 system (tests/guest/mkdebian.sh) as a strata bundle
#     boots under `strata run` (qemu) to its ready marker and an ssh banner,
#     and answers ssh with its key.
# The boots are skipped under STRATA_SKIP_BOOT (the sanitizer pass).
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
export STRATA_HOME=$W/store DOCKER_CONFIG=$W/docker XDG_CACHE_HOME=$W/cache
unset STRATA_QEMU_ACCEL STRATA_HOST_ID
rm -rf "$W"/store* "$W"/docker "$W"/cache "$W"/reg-* "$W"/b* "$W"/inst* "$W"/nbd* "$W"/gb "$W"/prof* "$W"/deb*
. "$(dirname "$0")/registry_lib.sh"
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
has_layer() { "$S" inspect "$1" >/dev/null 2>&1; }

# ---- boot profiles through a registry ----
profile_tests() {
    need_registry "boot profile tests"
    true
}

# ---- qemu's NBD disk across a server restart ----
nbd_reconnect_tests() {
    local GUEST=${STRATA_GUEST_DIR:-/var/tmp/strata-guest}
    if ! bash "$HERE/guest/mkguest.sh" "$GUEST" >"$W/mkguest.log" 2>&1; then
        skipped "NBD reconnect" "could not build the test guest: $(tail -1 "$W/mkguest.log")"; return
    fi
    for c in qemu-system-x86_64 qemu-nbd debugfs; do
        command -v "$c" >/dev/null || { skipped "NBD reconnect" "$c is not installed"; return; }
    done
    cp -a "$GUEST/guest.bundle" "$W/gb"
    "$S" import "$W/gb" guest >/dev/null 2>&1
    cp --sparse=always "$W/gb/Disk.img" "$W/nbd.img"
    serve() { # qemu-nbd on the socket, in the background; its pid in nbd.pid
        rm -f "$W/nbd.pid"
        qemu-nbd --fork --persistent --format=raw --export-name=disk --socket="$W/nbd.sock" \
            --pid-file="$W/nbd.pid" "$W/nbd.img" 2>>"$W/nbd.log"
        [ -f "$W/nbd.pid" ] && PIDS="$PIDS $(cat "$W/nbd.pid")"
    }
    counter_in() { debugfs -R "cat /counter" "$1" 2>/dev/null | tr -dc 0-9; }
    last_counter() { grep -oE 'counter=[0-9]+' "$(console nbd)" | tail -1 | cut -d= -f2; }
    serve
    "$S" run guest --name nbd --driver qemu --accel tcg --disk-nbd "nbd+unix:///disk?socket=$W/nbd.sock" \
        >"$W/run-nbd.log" 2>&1 &
    PIDS="$PIDS $!"
    if ! wait_for "$(console nbd)" '^HEARTBEAT.*counter=3' 180; then
        bad "the guest boots from qemu-nbd"; tail -3 "$W/run-nbd.log" "$(console nbd)"; return
    fi
    ok "the guest boots from an NBD export and counts on it"
    local pid; pid=$(cat "$W/nbd.pid")
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    local before; before=$(last_counter)
    # the outage: the guest syncs its counter every second, so it has
    # requests in flight while the server is away
    sleep 3
    serve
    if wait_for "$(console nbd)" "^HEARTBEAT.*counter=$((before + 3))\b" 120; then
        ok "...the guest goes on counting after the server stopped and came back (counter $before, then $((before + 3)))"
    else
        bad "...the guest goes on counting after the server came back (stuck at $(last_counter))"
    fi
    check "...and its kernel saw no I/O error" bash -c "! grep -qiE 'I/O error|EXT4-fs error' '$(console nbd)'"
    "$S" stop nbd --timeout 20 >/dev/null 2>&1
    local n; n=$(counter_in "$W/nbd.img")
    check "...its writes after the restart reached the export (counter ${n:-none} >= $((before + 3)))" \
        [ "${n:-0}" -ge $((before + 3)) ]
    [ -f "$W/nbd.pid" ] && kill "$(cat "$W/nbd.pid")" 2>/dev/null
    true
}

# ---- a real Debian system, booted by strata run to ssh ----
debian_tests() {
    for c in qemu-system-x86_64 ssh; do
        command -v "$c" >/dev/null || { skipped "Debian boot" "$c is not installed"; return; }
    done
    if ! bash "$HERE/guest/mkdebian.sh" "$W/deb" >"$W/mkdebian.log" 2>&1; then
        skipped "Debian boot" "$(tail -1 "$W/mkdebian.log")"; return
    fi
    "$S" import "$W/deb" debian >/dev/null 2>"$W/err"
    check "import the Debian bundle (16 GiB sparse disk)" has_layer debian
    local t0; t0=$(date +%s.%N)
    "$S" run debian --name deb --driver qemu --accel "${STRATA_TEST_ACCEL:-tcg}" >"$W/run-deb.log" 2>&1 &
    PIDS="$PIDS $!"
    if ! wait_for "$(console deb)" '^STRATA-DEBIAN-READY' 600; then
        bad "the Debian system boots to its ready marker"; tail -5 "$W/run-deb.log" "$(console deb)"; return
    fi
    local t1; t1=$(date +%s.%N)
    ok "the Debian system boots to its ready marker (sshd up, network online) in $(secs "$t0" "$t1") s"
    local addr banner
    addr=$("$S" ip deb --wait 60 2>"$W/err")
    banner=$(python3 - "${addr%:*}" "${addr##*:}" <<'EOF'
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
print(s.makefile("rb").readline().decode(errors="replace").strip())
EOF
)
    local t2; t2=$(date +%s.%N)
    check "...its ssh server answers with a banner ($banner) $(secs "$t0" "$t2") s after run" \
        grep -q '^SSH-2.0-OpenSSH' <<<"$banner"
    run "$S" ssh deb --wait 60 -i "$W/deb/id" -- cat /etc/debian_version
    check "...and ssh with its key runs a command there (Debian $(cat "$W/out"))" \
        [ "$rc" -eq 0 ] && grep -q '^12\.' "$W/out"
    "$S" stop deb --timeout 60 >/dev/null 2>&1
}

# the vz driver's NBD attachment connects from the signed binary
check "boot/vz.entitlements has virtualization and network.client" python3 -c '
import plistlib, sys
e = plistlib.load(open(sys.argv[1], "rb"))
sys.exit(0 if e.get("com.apple.security.virtualization") is True and e.get("com.apple.security.network.client") is True else 1)' "$HERE/../boot/vz.entitlements"
profile_tests
if [ -n "${STRATA_SKIP_BOOT:-}" ]; then
    skipped "NBD reconnect and Debian boot" "STRATA_SKIP_BOOT is set (the sanitizer pass)"
elif [ "$(uname)" != Linux ]; then
    skipped "NBD reconnect and Debian boot" "they need a Linux host"
else
    mark_qemus
    trap 'cleanup; kill_marked_qemus' EXIT
    nbd_reconnect_tests
    debian_tests
fi
finish
