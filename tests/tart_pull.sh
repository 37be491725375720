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
check "strata pull of a macOS tart image off a Mac is refused before its disk" eval '[ "$rc" -ne 0 ] &&
    grep -q "any-host" "$W/err"'
start_proxy log "$R" log
P=127.0.0.1:$PPORT
run "$S" pull "$P/tart/mac:v1" --any-host --json -t mac
check "pull --any-host takes it" [ "$rc" -eq 0 ]
MAC=$(jget layer 2>/dev/null)
check "...a tart image, 4 disk layers and the NVRAM fetched" eval '[ "$(jget format)" = tart ] &&
    [ "$(jget layers_fetched)" = 5 ] && [ "$(jget disk_size)" = $((7 * 1048576 + 12800)) ]'
check "...its guest, from the config: macOS on arm64, the hardwareModel's minimum macOS" \
    eval '[ "$($PY -c "import json,sys; g=json.load(open(sys.argv[1]))[\"guest\"]; print(g[\"os\"], g[\"arch\"], g[\"macos_minimum\"])" "$W/out")" = "macos arm64 13.0.0" ]'
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
check "pulling it again gives the same layer, from the cache" eval '[ "$rc" -eq 0 ] && [ "$(jget layer)" = "$MAC" ] &&
    [ "$(jget cached)" = True ] && [ "$(jget bytes_fetched)" = 0 ]'
check "...and the registry saw only manifest requests" eval '[ -s "$W/proxy-log.log" ] && ! grep -q '\''/blobs/'\'' "$W/proxy-log.log"'
check "...one: tart_pull takes the manifest remote_pull read" [ "$(grep -c 'GET [^ ]*/manifests/' "$W/proxy-log.log")" = 1 ]
run "$S" pull "$P/tart/mac:v1" -t mac2
check "...and still asks about its guest: refused here without --any-host" eval '[ "$rc" -ne 0 ] &&
    grep -q "any-host" "$W/err" && [ ! -e "$STRATA_HOME/refs/tags/mac2" ] && ! "$S" ls 2>/dev/null | grep -q mac2'

# ---- (c) the same image into another store: the same layer id ----
STRATA_HOME=$W/store2 "$S" init >/dev/null 2>&1
STRATA_HOME=$W/store2 run "$S" pull "$R/tart/mac:v1" --any-host --json
check "the same tart image pulled into another store gives the same layer id" eval '[ "$rc" -eq 0 ] && [ "$(jget layer)" = "$MAC" ]'

# ---- (a) a Linux guest: pulled from tart's format and booted ----
GUEST=${STRATA_GUEST_DIR:-/var/tmp/strata-guest}
G=$W/guest
if [ -n "${STRATA_SKIP_BOOT:-}" ]; then
    skipped "a tart Linux guest booted" "STRATA_SKIP_BOOT is set (the sanitizer pass: the plain pass boots it)"
elif [ "$(uname)" != Linux ] || ! command -v qemu-system-x86_64 >/dev/null || [ ! -f /usr/share/OVMF/OVMF_VARS_4M.fd ]; then
    skipped "a tart Linux guest booted" "it needs qemu-system-x86_64 and OVMF on Linux"
elif ! bash "$HERE/guest/mkguest.sh" "$GUEST" >"$W/mkguest.log" 2>&1; then
    skipped "a tart Linux guest booted" "could not build the test guest: $(tail -1 "$W/mkguest.log")"
elif ! bash "$HERE/guest/mkcreate.sh" "$G" "$GUEST" >"$W/mkcreate.log" 2>&1; then
    skipped "a tart Linux guest booted" "could not build its EFI disk: $(tail -1 "$W/mkcreate.log")"
else
    # GRUB on an EFI partition, OVMF's variable store as tart's nvram.bin
    craft push "$R" tart/linux v1 --disk "$G/efi-disk.raw" --nvram /usr/share/OVMF/OVMF_VARS_4M.fd \
        --slice 3145728 >/dev/null
    run "$S" pull "$R/tart/linux:v1" -t tartlinux --json
    check "a Linux tart image (GRUB on an EFI disk) pulls without --any-host" [ "$rc" -eq 0 ]
    LB=$STRATA_HOME/layers/$(jget layer)/bundle
    check "...its Disk.img is the EFI disk, its NVRAM OVMF's variable store" \
        eval 'cmp -s "$G/efi-disk.raw" "$LB/Disk.img" && cmp -s /usr/share/OVMF/OVMF_VARS_4M.fd "$LB/NVRAM"'
    mark_qemus # none of its qemus outlives this script
    trap 'kill_marked_qemus; cleanup' EXIT
    t0=$SECONDS
    timeout -k 5 300 "$S" run tartlinux --name tl --accel tcg >"$W/run-tl.log" 2>&1
    echo "    timing: the guest's boot took $((SECONDS - t0)) s"
    grep -ao 'CREATE-GUEST .*' "$(console tl)" 2>/dev/null | tr -d '\r' >"$W/guest-tl"
    check "...and boots by UEFI to its console marker" eval 'grep -qxF "CREATE-GUEST boot=efi-disk" "$W/guest-tl" &&
        grep -qxF "CREATE-GUEST end" "$W/guest-tl"'
fi

# ---- (f) hostile images: refused in one line, the store unchanged ----
"$S" ls >"$W/ls-before" 2>&1
before=$(snapshot)
hostile() { # VARIANT TEXT NAME
    craft push "$R" tart/bad "$1" --disk "$SRC" --nvram "$W/src/aux" --variant "$1" --slice 2097152 >/dev/null 2>"$W/craft-err" || { bad "$3 (tart_craft.py failed: $(tail -1 "$W/craft-err"))"; return; }
    expect_error "$3" 1 "$2" "$S" pull "$R/tart/bad:$1"
}
hostile udigest "disk layer 1 decodes to bytes whose digest is" "a wrong uncompressed digest is refused"
hostile badheader "bad block magic 62763432" "a bad block header is refused"
hostile sizemore "decodes to more than its" "a layer decoding to more bytes than its uncompressed-size is refused"
hostile sizeless "disk layer 1 decodes to 2097152 bytes, not the 2101248" "...and to fewer bytes"
hostile noend "without its end marker" "a layer without its end marker is refused"
hostile v1 "disk.v1 layer: tart's legacy disk format" "a disk.v1 layer is refused"
hostile asif "Apple's ASIF format, which strata can't read" "an ASIF overlay layer is refused"
t0=$SECONDS
hostile many "10002 layers, more than the" "a manifest of 10,000 disk layers is refused"
check "...at once (under 10 s)" [ $((SECONDS - t0)) -lt 10 ]
hostile sum "not the 7352833" "slices that don't add up to the disk size are refused"
craft push "$R" tart/lin v1 --disk "$SRC" --nvram "$W/src/aux" --slice 1048576 >/dev/null # blobs no image pulled before has
start_proxy corrupt "$R" corrupt
expect_error "a layer whose compressed bytes differ from its digest is refused" 1 "the registry sent bytes whose digest is" \
    "$S" pull "127.0.0.1:$PPORT/tart/lin:v1" -t corrupt
check "after all of them the store is unchanged" [ "$(snapshot)" = "$before" ]
"$S" ls >"$W/ls-after" 2>&1
check "...strata ls lists the same (no new tags)" cmp -s "$W/ls-before" "$W/ls-after"
check "...and fsck is clean" "$S" fsck
craft push "$R" tart/bad unknown --disk "$SRC" --nvram "$W/src/aux" --os darwin --variant unknown \
    --hardware-model "$HERE/../fixtures/HardwareModel" --machine-id "$HERE/../fixtures/MachineIdentifier" --slice 2097152 >/dev/null
run "$S" pull "$R/tart/bad:unknown" --any-host --json
check "a layer of a type tart does not know is ignored, with a note" eval '[ "$rc" -eq 0 ] &&
    grep -q "ignoring layer .* of type application/vnd.example.notes.v1" "$W/err" && [ "$(jget layer)" = "$MAC" ]'

# ---- (e) a second tag sharing 90%: only its changes are new ----
# 40 MiB of random bytes (nothing to compress or dedup within), then the
# same with 4 of its MiB changed; 3 MiB slices
$PY - "$W/src/big1" "$W/src/big2" <<'EOF'
import random, sys
r = random.Random(5)
a = bytearray(r.randbytes(40 << 20))
open(sys.argv[1], "wb").write(a)
for p in r.sample(range(40), 4):
    a[p << 20:(p + 1) << 20] = r.randbytes(1 << 20)
open(sys.argv[2], "wb").write(a)
EOF
craft push "$R" tart/big v1 --disk "$W/src/big1" --nvram "$W/src/aux" --slice 3145728 >/dev/null
craft push "$R" tart/big v2 --disk "$W/src/big2" --nvram "$W/src/aux" --slice 3145728 >/dev/null
STRATA_HOME=$W/store3 "$S" init >/dev/null 2>&1
STRATA_HOME=$W/store3 run "$S" pull "$R/tart/big:v1"
STRATA_HOME=$W/store3 "$S" df --json >"$W/out"; u1=$(jget unique_bytes); k1=$(du -sk "$W/store3" | cut -f1)
STRATA_HOME=$W/store3 run "$S" pull "$R/tart/big:v2" --json
ok2=$rc
check "...its slices the first tag had at the same offsets are copied from it, not downloaded" \
    eval '[ "$ok2" -eq 0 ] && [ "$(jget layers_copied)" -ge 10 ] && [ "$(jget bytes_fetched)" -lt $((16 << 20)) ]'
STRATA_HOME=$W/store3 "$S" df --json >"$W/out"; u2=$(jget unique_bytes); k2=$(du -sk "$W/store3" | cut -f1)
echo "    store: unique data $u1 then $u2 bytes (du: $k1 then $k2 KiB, each layer's files whole unless the filesystem shares blocks)"
check "a second tag 90% the same adds only its 4 changed MiB to the store's unique data ($((u2 - u1)) bytes)" \
    eval '[ "$ok2" -eq 0 ] && [ $((u2 - u1)) -le $(((4 << 20) + 65536)) ] && [ $((u2 - u1)) -ge $((4 << 20)) ]'

# ---- (e2) where the filesystem shares blocks, so do the two tags ----
# One slice each (nothing a slice-by-slice copy could reuse): the second
# tag's disk starts as a clone of the first's, and only its 4 changed MiB
# take new space. Needs an XFS loop mount (root, mkfs.xfs).
if [ -n "${STRATA_SKIP_LOOP:-}" ]; then
    skipped "a second tag on XFS shares the first's blocks" "STRATA_SKIP_LOOP is set (make test runs it)"
elif [ "$(id -u)" = 0 ] && command -v mkfs.xfs >/dev/null && [ "$(uname)" = Linux ]; then
    mkdir -p "$W/xfs"
    truncate -s 400M "$W/xfs.img"
    if mkfs.xfs -q -f -m reflink=1 "$W/xfs.img" && mount -o loop "$W/xfs.img" "$W/xfs" 2>/dev/null; then
        craft push "$R" tart/one v1 --disk "$W/src/big1" --nvram "$W/src/aux" --slice 67108864 >/dev/null
        craft push "$R" tart/one v2 --disk "$W/src/big2" --nvram "$W/src/aux" --slice 67108864 >/dev/null
        STRATA_HOME=$W/xfs/store "$S" init >/dev/null 2>&1
        STRATA_HOME=$W/xfs/store "$S" pull "$R/tart/one:v1" >/dev/null 2>&1
        sync; used1=$(df -k --output=used "$W/xfs" | tail -1)
        STRATA_HOME=$W/xfs/store run "$S" pull "$R/tart/one:v2" --json
        ok3=$rc
        sync; used2=$(df -k --output=used "$W/xfs" | tail -1)
        echo "    xfs: the second tag took $((used2 - used1)) KiB"
        check "...the second tag's disk started as a clone of the first's (a note says so)" grep -q "starts as a clone of layer" "$W/err"
        check "...its disk is the second image's, byte for byte" \
            eval '[ "$ok3" -eq 0 ] && cmp -s "$W/src/big2" "$W/xfs/store/layers/$(jget layer)/bundle/Disk.img"'
        check "...and takes about its 4 changed MiB of the filesystem, not the 40 of a whole disk" \
            [ $((used2 - used1)) -lt $((12 << 10)) ]
        STRATA_HOME=$W/xfs/store run "$S" fsck
        check "...fsck is clean" [ "$rc" -eq 0 ]
        umount "$W/xfs"
    else
        skipped "a second tag on XFS shares the first's blocks" "could not mount a small XFS image"
    fi
    rm -f "$W/xfs.img"
else
    skipped "a second tag on XFS shares the first's blocks" "needs root on Linux and mkfs.xfs to mount a small filesystem"
fi

# ---- (g) interrupted pulls resume ----
start_proxy cut "$R" cutblob
run "$S" pull "127.0.0.1:$PPORT/tart/big:v1" --json -t big1
check "layers whose transfer was cut mid-way are resumed where they stopped" eval '[ "$rc" -eq 0 ] &&
    [ "$(grep -o '\''GET [^ ]*/blobs/'\'' "$W/proxy-cut.log" | wc -l)" -ge 30 ] && [ "$(jget bytes_fetched)" -lt $((42 << 20)) ]'
export STRATA_HOME=$W/store4
"$S" init >/dev/null 2>&1
STRATA_TEST_CRASH_AT=tart-layer-done run "$S" pull "$R/tart/mac:v1" --any-host --jobs 1
check "a pull killed after its first disk layer dies, leaving no layer" eval '[ "$rc" -ne 0 ] && [ -z "$(ls "$STRATA_HOME/layers")" ]'
start_proxy resume "$R" log
run "$S" pull "127.0.0.1:$PPORT/tart/mac:v1" --any-host --json
check "the next pull keeps the finished layer, checked, and fetches only the others" eval '[ "$rc" -eq 0 ] &&
    [ "$(jget layers_resumed)" = 1 ] && [ "$(jget layers_fetched)" = 4 ] && [ "$(jget layer)" = "$MAC" ]'
check "...its blob requests: config, 3 disk layers, NVRAM" [ "$(grep -o 'GET [^ ]*/blobs/' "$W/proxy-resume.log" | wc -l)" = 5 ]
check "...and its tmp/ work is gone" tmp_empty
export STRATA_HOME=$W/store

finish
