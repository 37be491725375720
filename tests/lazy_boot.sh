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
#     and answers ssh with its key;
#   - the vz driver's entitlements include the NBD attachment's network.client
#     (its transcript tests are in test_vz).
# STRATA_OLD_BINARY, if set, names an older strata that must still pull a
# manifest carrying a profile.
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
CRAFT="python3 $HERE/profile_craft.py"
manifest_of() { # TAG: the OCI manifest in the registry, as JSON
    curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$R/v2/strata/vm/manifests/$1"
}
ann_of() { # TAG KEY: one annotation of its manifest (empty if absent)
    manifest_of "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["annotations"].get(sys.argv[1], ""))' "$2"
}
pull_into() { # STORE TAG: pull R/strata/vm:TAG into a fresh store, --json in $W/out
    rm -rf "$1"
    STRATA_HOME=$1 run "$S" pull "$R/strata/vm:$2" -t got --json
}
profile_in() { echo "$1/layers/$BASE/profile"; }

profile_tests() {
    if ! command -v docker-registry >/dev/null; then
        skipped "boot profile tests" "docker-registry is not installed (apt-get install docker-registry)"; return
    fi
    # a 256 MiB disk: 256 chunks; its profile as a lazy run would keep it
    "$MK" "$W/b1" --size 256M --data 0:8M:1 --data 100M:4M:2 >/dev/null
    BASE=$("$S" import "$W/b1" base:v1 2>/dev/null)
    check "a layer to profile" [ -n "$BASE" ]
    start_registry prof
    R=127.0.0.1:$PORT
    run "$S" push base:v1 "$R/strata/vm:plain" --json
    check "push without a profile: no profile annotation" [ "$rc" -eq 0 ] && [ -z "$(ann_of plain dev.strata.boot-profile)" ]

    $CRAFT make "$(profile_in "$STRATA_HOME")" "$BASE" 256 0:3 100:4 7:1 255:1 3:2
    cp "$(profile_in "$STRATA_HOME")" "$W/prof.orig"
    run "$S" push base:v1 "$R/strata/vm:prof" --json
    check "push with the store's profile uploads it alone: one blob of its size" \
        [ "$rc" -eq 0 ] && [ "$(jget blobs_uploaded)" = 1 ] && [ "$(jget bytes_uploaded)" = "$(stat -c %s "$W/prof.orig")" ]
    local digest size
    digest=$(ann_of prof dev.strata.boot-profile); size=$(ann_of prof dev.strata.boot-profile.size)
    check "...the manifest names the profile blob by digest and size"         [ "$digest" = "sha256:$(sha256sum "$W/prof.orig" | cut -d' ' -f1)" ] && [ "$size" = "$(stat -c %s "$W/prof.orig")" ]
    check "...and is otherwise the manifest pushed without it (config, layers, annotations)" python3 -c '
import json, sys
a, b = (json.loads(x) for x in sys.argv[1:3])
for k in ("dev.strata.boot-profile", "dev.strata.boot-profile.size"): b["annotations"].pop(k)
sys.exit(0 if a == b else 1)' "$(manifest_of plain)" "$(manifest_of prof)"
    check "...the registry holds the blob" curl -sfI "http://$R/v2/strata/vm/blobs/$digest" -o /dev/null

    pull_into "$W/store2" prof
    check "pull on another store gets the layer and says it kept the profile"         [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$BASE" ] && [ "$(jget boot_profile)" = True ]
    check "...the same profile, byte for byte, beside the layer" cmp -s "$W/prof.orig" "$(profile_in "$W/store2")"
    STRATA_HOME=$W/store2 run "$S" fsck
    check "...and fsck is clean (the profile is no part of the layer)" [ "$rc" -eq 0 ]
    # an older strata (STRATA_OLD_BINARY, e.g. a build of main before profiles) reads the manifest as before
    if [ -x "${STRATA_OLD_BINARY:-}" ]; then
        rm -rf "$W/store-old"
        STRATA_HOME=$W/store-old run "$STRATA_OLD_BINARY" pull "$R/strata/vm:prof" -t got --json
        check "an older strata pulls the manifest with a profile, ignoring it" [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$BASE" ]
    fi
    pull_into "$W/store3" plain
    check "a manifest without one pulls as before: no profile, no note"         [ "$rc" -eq 0 ] && [ "$(jget boot_profile)" = False ] && [ ! -e "$(profile_in "$W/store3")" ] && [ ! -s "$W/err" ]

    # hostile profiles, each under a tag of its own; the pull goes on without them
    hostile() { # NAME REASON ANNOTATIONS...: pull the crafted tag; exit 0, no profile, a note
        local name=$1 why=$2; shift 2
        python3 "$HERE/oci_craft.py" annotate "$R" strata/vm plain "h-$name" "$@" >/dev/null
        pull_into "$W/store-h" "h-$name"
        check "hostile profile ($name): the pull succeeds without it, noting why"             [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$BASE" ] && [ "$(jget boot_profile)" = False ]             && [ ! -e "$(profile_in "$W/store-h")" ] && grep -q "boot profile was not kept.*$why" "$W/err"
    }
    hostile_blob() { # NAME REASON MAKE-ARGS...: a crafted blob, uploaded and named
        local name=$1 why=$2 d n; shift 2
        $CRAFT make "$W/prof-$name" "$@"
        read -r d n < <($CRAFT put "$R" strata/vm "$W/prof-$name")
        hostile "$name" "$why" "dev.strata.boot-profile=$d" "dev.strata.boot-profile.size=$n"
    }
    hostile_blob out-of-range "a run is past the end of Disk.img" "$BASE" 256 250:7
    hostile_blob twice "it names a chunk twice" "$BASE" 256 10:5 12:1
    hostile_blob other-layer "it is another layer's" "$(printf '%064d' 0)" 256 0:1
    hostile_blob other-size "its Disk.img has another size" "$BASE" 512 0:1
    hostile_blob version "a version or flags this strata does not know" "$BASE" 256 0:1 --version 2
    hostile_blob runs-lie "more runs than it can hold" "$BASE" 256 0:1 --runs 1000000
    hostile_blob trailing "bytes after its last run" "$BASE" 256 0:1 --trailing 3
    hostile_blob long-leb "a run is cut short or not a LEB128 number" "$BASE" 256 0:1 --pad-leb
    head -c 4000 /dev/urandom >"$W/prof-garbage"
    read -r gd gn < <($CRAFT put "$R" strata/vm "$W/prof-garbage")
    hostile garbage "not a strata boot profile" "dev.strata.boot-profile=$gd" "dev.strata.boot-profile.size=$gn"
    hostile too-large "larger than 64 KiB" "dev.strata.boot-profile=$gd" "dev.strata.boot-profile.size=70000"
    hostile size-lies "longer than its descriptor says" "dev.strata.boot-profile=$gd" "dev.strata.boot-profile.size=100"
    hostile missing "not in the registry" "dev.strata.boot-profile=sha256:$(printf '%064d' 1)" "dev.strata.boot-profile.size=100"
    hostile malformed "not a sha256 digest and a size" "dev.strata.boot-profile=nope" "dev.strata.boot-profile.size=x"

    # the store's own profile is checked before it is pushed
    $CRAFT make "$(profile_in "$STRATA_HOME")" "$BASE" 256 300:1
    run "$S" push base:v1 "$R/strata/vm:bad-local"
    check "push with a bad local profile leaves it out, with a note, and succeeds"         [ "$rc" -eq 0 ] && grep -q "boot profile of layer ${BASE:0:12} is left out: boot profile: a run is past the end" "$W/err"         && [ -z "$(ann_of bad-local dev.strata.boot-profile)" ]
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
