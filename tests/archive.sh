#!/bin/bash
# Archive tests: export and import round trips (same id), GNU tar and
# bsdtar unpacking a byte-identical sparse bundle, delta chains, streaming
# through a pipe, saved states, handcrafted hostile archives, and tart VM
# directories. Run as: bash tests/archive.sh BUILD_DIR WORK_DIR FS_NAME
. "$(dirname "$0")/lib.sh"
CRAFT="$(cd "$(dirname "$0")" && pwd)/archive_craft.py"

export STRATA_HOME=$W/store
rm -rf "${W:?}"/*
in_store() { local home=$1; shift; STRATA_HOME=$home "$@"; }
layer_count() { ls "$1/layers" 2>/dev/null | wc -l; }

# ---- a 64 GiB sparse disk with data at both ends (past 8 GiB: libarchive's old pax bugs) ----
"$MK" "$W/b1" --size 64G --data 0:8M:1 --data 32G:4M:2 --data 65535M:1M:3
BASE=$("$S" import "$W/b1" base 2>/dev/null)

run "$S" export base "$W/x.tar.zst"
check "export exits 0" [ "$rc" -eq 0 ]
check "export prints nothing on stdout" [ ! -s "$W/out" ]
check "export ends with a summary: data, archive size, ratio, time" grep -qE "of data into .* \(ratio [0-9.]+\), 1 layer, [0-9.]+ s" "$W/err"
check "a 64 GiB disk holding 13 MiB exports to under 32 MiB" [ "$(stat -c %s "$W/x.tar.zst")" -lt 33554432 ]
zstd -dc "$W/x.tar.zst" >"$W/x.tar" 2>/dev/null
check "Disk.img is a GNU sparse 1.0 pax entry" sh -c "grep -aq 'GNU.sparse.major=1' '$W/x.tar' && grep -aq 'GNU.sparse.minor=0' '$W/x.tar' && grep -aq 'GNU.sparse.realsize=68719476736' '$W/x.tar'"
check "the uncompressed tar holds only the data (holes never written)" [ "$(stat -c %s "$W/x.tar")" -lt 20000000 ]
rm -f "$W/x.tar"

"$S" clone base "$W/ref" 2>/dev/null
for tool in gnu bsd; do
    mkdir -p "$W/ex-$tool"
    if [ $tool = gnu ]; then run sh -c "cd '$W/ex-$tool' && tar --zstd -xSf '$W/x.tar.zst'"
    else run sh -c "cd '$W/ex-$tool' && bsdtar -xf '$W/x.tar.zst'"; fi
    check "$tool tar unpacks the archive without a word" [ "$rc" -eq 0 -a ! -s "$W/err" ]
    same=1
    for f in Disk.img AuxiliaryStorage HardwareModel MachineIdentifier; do
        "$MK" --cmp "$W/ref/$f" "$W/ex-$tool/x.bundle/$f" || same=0
    done
    check "$tool tar gives x.bundle/ byte-identical to a clone of the layer" [ $same -eq 1 ]
    check "$tool tar keeps Disk.img's 64 GiB apparent size" [ "$(stat -c %s "$W/ex-$tool/x.bundle/Disk.img")" = 68719476736 ]
    check "$tool tar keeps the holes (under 64 MiB allocated)" [ "$(allocated_kib "$W/ex-$tool/x.bundle")" -lt 65536 ]
done
check "the manifest travels inside the bundle (x.bundle/.strata-layer/manifest)" cmp -s "$W/ex-gnu/x.bundle/.strata-layer/manifest" "$STRATA_HOME/layers/$BASE/manifest"
rm -rf "$W/ex-gnu" "$W/ex-bsd"

# a disk that is all hole, an empty file and a one-byte file: edge entries
mkdir -p "$W/eb" && truncate -s 1G "$W/eb/Disk.img" && : >"$W/eb/empty" && printf x >"$W/eb/one"
EDGE=$("$S" import "$W/eb" edge 2>/dev/null)
"$S" export edge "$W/edge.tar.zst" 2>/dev/null
mkdir -p "$W/ex-edge-g" "$W/ex-edge-b"
(cd "$W/ex-edge-g" && tar --zstd -xSf "$W/edge.tar.zst") && (cd "$W/ex-edge-b" && bsdtar -xf "$W/edge.tar.zst")
same=1
for d in "$W/ex-edge-g" "$W/ex-edge-b"; do
    for f in Disk.img empty one; do cmp -s "$W/eb/$f" "$d/edge.bundle/$f" || same=0; done
    [ "$(allocated_kib "$d/edge.bundle/Disk.img")" -eq 0 ] || same=0
done
check "an all-hole disk, an empty and a one-byte file unpack exactly with both tars" [ $same -eq 1 ]
check "...and import with the same id" [ "$(in_store "$W/se" "$S" import "$W/edge.tar.zst" 2>/dev/null)" = "$EDGE" ]
rm -rf "$W/eb" "$W/ex-edge-g" "$W/ex-edge-b" "$W/se"

run in_store "$W/s2" "$S" import "$W/x.tar.zst" got
check "import restores the very same layer id" [ "$(cat "$W/out")" = "$BASE" ]
check "import ends with a summary" grep -q "imported ${BASE:0:12}" "$W/err"
check "import tags the layer" [ "$(cat "$W/s2/refs/tags/got")" = "$BASE" ]
run in_store "$W/s2" "$S" fsck
check "the imported store passes fsck (every chunk re-hashed)" [ "$rc" -eq 0 ]
check "the imported layer keeps holes (under 64 MiB)" [ "$(allocated_kib "$W/s2")" -lt 65536 ]
run in_store "$W/s2" "$S" import "$W/x.tar.zst"
check "importing again says the layer was there" grep -q "already in the store" "$W/err"
rm -rf "$W/s2"

# ---- children: a full export carries the ancestors; deltas; chains ----
"$MK" --write "$W/ref/Disk.img" 1M:2M:9 40G:1M:4
V2=$("$S" commit "$W/ref" -t base:v2 2>/dev/null)
"$MK" --write "$W/ref/Disk.img" 50G:3M:5 65535M:1M:6
V3=$("$S" commit "$W/ref" -t base:v3 2>/dev/null)
run "$S" export base:v3 "$W/v3.tar.zst"
check "a child's export says it carries its ancestors (3 layers)" grep -q "3 layers" "$W/err"
run in_store "$W/s3" "$S" import "$W/v3.tar.zst"
check "a child imports into an empty store with the same id" [ "$(cat "$W/out")" = "$V3" ]
check "...and brings its parent chain (3 layers)" [ "$(layer_count "$W/s3")" -eq 3 ]
# before any full fsck, which would seal what import left unsealed
run in_store "$W/s3" "$S" fsck --quick
check "...and fsck --quick is clean with every layer sealed (no 'no seals' note)" bash -c "[ $rc -eq 0 ] && ! grep -q 'no seals' '$W/out' && grep -qx 'ok (quick: manifests, refs, and every stored byte against its seal)' '$W/out'"
run in_store "$W/s3" "$S" fsck
check "...and fsck is clean" [ "$rc" -eq 0 ]
f=$W/s3/layers/$V3/bundle/Disk.img
chmod u+w "$f"
printf X | dd of="$f" bs=1 seek=77 conv=notrunc 2>/dev/null
printf X | dd of="$f" bs=1 seek=$((50 * 1024 * 1024 * 1024 + 77)) conv=notrunc 2>/dev/null
run in_store "$W/s3" "$S" fsck --quick
check "fsck --quick finds a byte flipped in a chunk an imported layer took from its parent" grep -qx "layer $V3: Disk.img chunk 0 does not match its seal" "$W/out"
check "...and one flipped in a chunk that arrived in the archive" grep -qx "layer $V3: Disk.img chunk 51200 does not match its seal" "$W/out"
check "...and exits 1" [ "$rc" -eq 1 ]
rm -rf "$W/s3"
mkdir -p "$W/ex3" && (cd "$W/ex3" && tar --zstd -xSf "$W/v3.tar.zst")
check "GNU tar unpacks the child itself, not an ancestor" "$MK" --cmp "$W/ref/Disk.img" "$W/ex3/v3.bundle/Disk.img"
rm -rf "$W/ex3"

run "$S" export base:v2 "$W/d2.tar.zst" --since base
check "a delta exports" [ "$rc" -eq 0 ]
"$S" export base:v3 "$W/d3.tar.zst" --since base:v2 2>/dev/null
check "a delta unpacks to NAME.strata-delta/, not a bundle" sh -c "bsdtar -tf '$W/d2.tar.zst' | head -1 | grep -q '^d2.strata-delta/'"
check "a delta carries only what changed (under 4 MiB)" [ "$(stat -c %s "$W/d2.tar.zst")" -lt 4194304 ]
mkdir -p "$W/s4"
in_store "$W/s4" "$S" ls >/dev/null 2>&1
snap=$(STRATA_HOME=$W/s4 snapshot)
expect_error "a delta without its base is refused, naming the base" 1 "needs that layer" in_store "$W/s4" "$S" import "$W/d2.tar.zst"
check "...the message names the base's id and its tag" grep -q "$BASE (tag 'base' where it was exported)" "$W/err"
check "...and the store is unchanged" [ "$(STRATA_HOME=$W/s4 snapshot)" = "$snap" ]
in_store "$W/s4" "$S" import "$W/x.tar.zst" >/dev/null 2>&1
expect_error "a delta whose base is a later link is refused" 1 "$V2" in_store "$W/s4" "$S" import "$W/d3.tar.zst"
run in_store "$W/s4" "$S" import "$W/d2.tar.zst"
check "a delta imports on its base, same id" [ "$(cat "$W/out")" = "$V2" ]
run in_store "$W/s4" "$S" import "$W/d3.tar.zst" v3
check "a chain of deltas imports in order, same id" [ "$(cat "$W/out")" = "$V3" ]
run in_store "$W/s4" "$S" fsck --quick
check "...and fsck --quick is clean, deltas sealed on their published base (no 'no seals' note)" bash -c "[ $rc -eq 0 ] && ! grep -q 'no seals' '$W/out'"
run in_store "$W/s4" "$S" fsck
check "...and fsck is clean" [ "$rc" -eq 0 ]
rm -rf "$W/s4"

# ---- import killed at every crash point: fsck clean, all or nothing, then it completes ----
CS=$W/crash
in_store "$CS" "$S" import "$W/x.tar.zst" >/dev/null 2>&1
bad_n=""
for ((n = 1; n <= 40; n++)); do
    STRATA_TEST_CRASH_AT=$n in_store "$CS" "$S" import "$W/v3.tar.zst" >/dev/null 2>&1
    code=$?
    in_store "$CS" "$S" fsck >/dev/null 2>&1 || bad_n="$bad_n $n"
    [ $code -eq 0 ] && break
    for l in "$CS"/layers/*; do [ -f "$l/manifest" ] && [ -f "$l/info" ] || bad_n="$bad_n $n(partial)"; done
done
check "import killed at each of its $((n - 1)) crash points leaves fsck clean, no partial layer" [ -z "$bad_n" -a $n -gt 2 ]
run in_store "$CS" "$S" import "$W/v3.tar.zst"
check "...and a later import completes with the same id" [ "$(cat "$W/out")" = "$V3" ]
rm -rf "$CS"

# ---- streaming ----
run bash -c "'$S' export base:v3 - | STRATA_HOME='$W/s5' /usr/bin/time -f 'maxrss %M' '$S' import - streamed"
check "export - | import - gives the same id" grep -qx "$V3" "$W/out"
rss=$(sed -n 's/^maxrss //p' "$W/err")
if [ -n "${STRATA_SANITIZED:-}" ]; then
    skipped "memory bounds of import and export" "AddressSanitizer's shadow memory inflates the RSS; the plain pass measures it"
else
    check "import from a pipe stays under 200 MB of memory (${rss:-?} KiB)" [ "${rss:-999999}" -lt 204800 ]
    run bash -c "/usr/bin/time -f 'maxrss %M' '$S' export base:v3 - >/dev/null"
    rss=$(sed -n 's/^maxrss //p' "$W/err")
    check "export to a pipe stays under 200 MB of memory (${rss:-?} KiB)" [ "${rss:-999999}" -lt 204800 ]
    run bash -c "/usr/bin/time -f 'maxrss %M' '$S' export base:v3 - --threads 16 >/dev/null"
    rss=$(sed -n 's/^maxrss //p' "$W/err")
    check "...with 16 zstd workers too (${rss:-?} KiB)" [ "${rss:-999999}" -lt 204800 ]
fi
rm -rf "$W/s5"

# ---- saved states: host-bound, only with --with-state ----
python3 "$CRAFT" state "$STRATA_HOME/layers/$BASE/manifest" "$W/state.tar" >"$W/sid"
SID=$(cat "$W/sid")
run "$S" import "$W/state.tar" base:ready
check "a saved-state child imports (plain tar, no zstd)" [ "$(cat "$W/out")" = "$SID" ]
run "$S" export base:ready "$W/nostate.tar.zst"
check "a saved state is not exported without --with-state: its parent is" grep -q "exporting its parent ${BASE:0:12}" "$W/err"
run in_store "$W/s6" "$S" import "$W/nostate.tar.zst"
check "...which imports as the parent" [ "$(cat "$W/out")" = "$BASE" ]
rm -rf "$W/s6"
run "$S" export base:ready "$W/state.tar.zst" --with-state
check "--with-state exports the state, marked host-bound" grep -q "resumable only on the host" "$W/err"
run in_store "$W/s6" "$S" import "$W/state.tar.zst"
check "...which imports with the same id and its parent" [ "$(cat "$W/out")" = "$SID" -a "$(layer_count "$W/s6")" -eq 2 ]
check "...and says it is host-bound" grep -q "resumable only on the host" "$W/err"
rm -rf "$W/s6"

# ---- hostile archives: each refused in one line naming the entry, store unchanged ----
HS=$W/hs
in_store "$HS" "$S" import "$W/d2.tar.zst" >/dev/null 2>&1 # refused: leaves an empty store
hostile() { # case, expected text
    python3 "$CRAFT" "$1" "$W/h.tar" && zstd -q -f "$W/h.tar" -o "$W/h.tar.zst" && rm -f "$W/h.tar"
    local snap; snap=$(STRATA_HOME=$HS snapshot)
    expect_error "hostile archive ($1) is refused" 1 "$2" in_store "$HS" "$S" import "$W/h.tar.zst"
    check "...($1) leaves the store unchanged and tmp/ empty" [ "$(STRATA_HOME=$HS snapshot)" = "$snap" ]
    STRATA_HOME=$HS tmp_empty || bad "($1) left work in tmp/"
}
hostile traversal "t.bundle/../evil: path leaves the bundle"
hostile absolute "/tmp/strata-evil: path leaves the bundle"
hostile symlink "t.bundle/Disk.img: a symbolic link"
hostile hardlink "t.bundle/Disk.img: a hard link"
hostile device "t.bundle/Disk.img: a device"
hostile fifo "t.bundle/Disk.img: a device, FIFO"
hostile directory "a directory entry"
hostile duplicate "t.bundle/Disk.img: a duplicate entry"
hostile size-lies "t.bundle/Disk.img: size 3145728, but the manifest says 2097152"
hostile overlap "t.bundle/Disk.img: data at offset 524288 overlaps"
hostile past-end "t.bundle/Disk.img: data runs past the end"
hostile mismatch "Disk.img: chunk 0 (offset 0) does not match the manifest"
hostile unnamed "t.bundle/Extra: a file the layer's manifest does not name"
hostile missing "t.bundle/Disk.img: chunk 0 (offset 0) is not in the archive"
hostile bomb "refused as a decompression bomb"
check "nothing was written outside the store" [ ! -e /tmp/strata-evil -a ! -e "$W/evil" ]
python3 "$CRAFT" good "$W/good.tar" && zstd -q -f "$W/good.tar" -o "$W/good.tar.zst"
run in_store "$W/hg" "$S" import "$W/good.tar.zst"
check "the same handcrafted archive, unharmed, imports" [ "$rc" -eq 0 ]
rm -rf "$W/hg"

# truncation at every byte of a small archive, and across a big one
size=$(stat -c %s "$W/good.tar.zst")
snap=$(STRATA_HOME=$HS snapshot)
accepted=""
for ((cut = 0; cut < size; cut++)); do
    head -c $cut "$W/good.tar.zst" >"$W/cut.tar.zst"
    in_store "$HS" "$S" import "$W/cut.tar.zst" >/dev/null 2>"$W/err" && accepted="$accepted $cut"
    [ "$(wc -l <"$W/err")" -eq 1 ] || accepted="$accepted $cut(not-one-line)"
done
check "truncated at each of its $size bytes, an archive is refused in one line" [ -z "$accepted" ]
big=$(stat -c %s "$W/x.tar.zst")
for cut in 1 511 512 4096 100000 1000000 5000000 $((big / 2)) $((big - 100)) $((big - 1)); do
    head -c $cut "$W/x.tar.zst" >"$W/cut.tar.zst"
    in_store "$HS" "$S" import "$W/cut.tar.zst" >/dev/null 2>&1 && accepted="$accepted $cut"
done
check "truncated anywhere, a real export is refused" [ -z "$accepted" ]
check "...and the store is unchanged" [ "$(STRATA_HOME=$HS snapshot)" = "$snap" ]
rm -f "$W/cut.tar.zst"

# ---- tart VM directories ----
tart_dir() { # dir os [extra json lines]
    mkdir -p "$1"
    local ident=""
    [ "$2" = darwin ] && ident="\"ecid\": \"$(base64 -w0 "$W/b1/MachineIdentifier")\", \"hardwareModel\": \"$(base64 -w0 "$W/b1/HardwareModel")\","
    cat >"$1/config.json" <<EOF
{ "version": 1, "os": "$2", "arch": "arm64", $ident
  "cpuCountMin": 4, "cpuCount": 4, "memorySizeMin": 4294967296, "memorySize": 8589934592,
  "macAddress": "7e:2a:11:9c:05:d1", "display": {"width": 1024, "height": 768, "unit": "pt"},
  ${3:-} "diskFormat": "raw" }
EOF
    truncate -s 50000000000 "$1/disk.img"
    "$MK" --write "$1/disk.img" 0:2M:7 30G:1M:8
    head -c 262144 /dev/urandom >"$1/nvram.bin"
}
tart_dir "$W/tart-mac" darwin
run "$S" import --from-tart "$W/tart-mac" sonoma
check "import --from-tart makes a layer" grep -qE '^[0-9a-f]{64}$' "$W/out"
run "$S" inspect sonoma
check "...with the ECID from config.json's ecid" grep -q "ECID 13061332575042855156" "$W/out"
check "...and the hardware model from hardwareModel" grep -q "PlatformVersion 2" "$W/out"
"$S" clone sonoma "$W/tc" 2>/dev/null
check "...the disk is tart's disk.img, byte for byte" "$MK" --cmp "$W/tart-mac/disk.img" "$W/tc/Disk.img"
check "...nvram.bin became AuxiliaryStorage" cmp -s "$W/tart-mac/nvram.bin" "$W/tc/AuxiliaryStorage"
check "...Settings.json has cpus, memory, MAC, display, macOS loader" python3 -c "
import json,sys; s=json.load(open('$W/tc/Settings.json'))
sys.exit(not (s['os']=='macos' and s['cpus']==4 and s['memory_mib']==8192 and s['mac']=='7e:2a:11:9c:05:d1'
  and s['display']['width']==1024 and s['boot']['loader']=='macos'))"
tart_dir "$W/tart-linux" linux
run "$S" import --from-tart "$W/tart-linux" deb
"$S" clone deb "$W/tl" 2>/dev/null
check "a Linux tart VM: nvram.bin is the EFI variable store (NVRAM, efi loader)" sh -c "cmp -s '$W/tart-linux/nvram.bin' '$W/tl/NVRAM' && grep -q '\"variable_store\": \"NVRAM\"' '$W/tl/Settings.json'"
snap=$(snapshot)
tart_dir "$W/tart-bad" darwin '"gpu": true,'
expect_error "a tart config with an unknown field is refused, naming it" 1 "unknown field 'gpu'" "$S" import --from-tart "$W/tart-bad"
sed -i 's/"cpuCount": 4, //' "$W/tart-mac/config.json"
expect_error "a tart config missing cpuCount is refused" 1 "cpuCount is missing" "$S" import --from-tart "$W/tart-mac"
tart_dir "$W/tart-asif" darwin
sed -i 's/"diskFormat": "raw"/"diskFormat": "asif"/' "$W/tart-asif/config.json"
expect_error "an ASIF tart disk is refused" 1 "raw disks only" "$S" import --from-tart "$W/tart-asif"
rm "$W/tart-linux/nvram.bin"
expect_error "a tart directory without nvram.bin is refused" 1 "nvram.bin" "$S" import --from-tart "$W/tart-linux"
check "...refusals leave the store unchanged" [ "$(snapshot)" = "$snap" ]
check "...and tmp/ empty" tmp_empty

finish
