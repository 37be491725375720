#!/bin/bash
# push --format tart and clone --tart (docs/tart.md, "Push" and "A layer as
# a tart VM directory"): layers made from tart VM directories (Linux- and
# macOS-shaped, through import --from-tart) are written out as tart VM
# directories and pushed as tart images to a real docker-registry on
# 127.0.0.1; tests/tart_read.py, written apart from strata with python3-lz4,
# reads each image back as tart's pull does and checks every field, digest
# and LZ4 block. STRATA_TEST_TART_SLICE cuts disks into 4 MiB slices so
# small disks make several disk layers.
. "$(dirname "$0")/lib.sh"

export STRATA_HOME=$W/store DOCKER_CONFIG=$W/docker XDG_CACHE_HOME=$W/cache
rm -rf "$W"/store "$W"/docker "$W"/cache "$W"/reg-* "$W"/t-* "$W"/vm-* "$W"/rd-* "$W"/inst* "$W"/*.tar
FIX=$(cd "$(dirname "$0")/../fixtures" && pwd)
READ=$(cd "$(dirname "$0")" && pwd)/tart_read.py
CRAFT=$(cd "$(dirname "$0")" && pwd)/archive_craft.py
SLICE=4194304
# a Linux guest's arch is this host's (strata's drivers run the host's own); a macOS guest's arm64
case $(uname -m) in x86_64) HOSTARCH=amd64 ;; aarch64 | arm64) HOSTARCH=arm64 ;; *) HOSTARCH=$(uname -m) ;; esac
guest_arch() { if [ "$1" = darwin ]; then echo arm64; else echo "$HOSTARCH"; fi; }

# tart_dir DIR OS SIZE [WRITES...]: a tart VM directory as tart writes one
tart_dir() {
    local dir=$1 os=$2 size=$3 ident=""
    shift 3
    mkdir -p "$dir"
    [ "$os" = darwin ] && ident="\"ecid\": \"$(base64 -w0 "$FIX/MachineIdentifier")\", \"hardwareModel\": \"$(base64 -w0 "$FIX/HardwareModel")\","
    cat >"$dir/config.json" <<EOC
{ "version": 1, "os": "$os", "arch": "arm64", $ident
  "cpuCountMin": 4, "cpuCount": 6, "memorySizeMin": 4294967296, "memorySize": 8589934592,
  "macAddress": "7e:2a:11:9c:05:d1", "display": {"width": 1920, "height": 1200, "unit": "pt"},
  "diskFormat": "raw" }
EOC
    truncate -s "$size" "$dir/disk.img"
    [ $# -gt 0 ] && "$MK" --write "$dir/disk.img" "$@"
    head -c 262144 /dev/urandom >"$dir/nvram.bin"
}

# config_is FILE OS: tart's config.json fields for the layers made here
config_is() {
    python3 - "$1" "$2" "$FIX" "$(guest_arch "$2")" <<'EOP'
import base64, json, sys
raw = open(sys.argv[1], "rb").read()
c = json.loads(raw)
want = {"version": 1, "os": sys.argv[2], "arch": sys.argv[4], "cpuCountMin": 6, "cpuCount": 6,
        "memorySizeMin": 8589934592, "memorySize": 8589934592, "macAddress": "7e:2a:11:9c:05:d1",
        "display": {"width": 1920, "height": 1200}, "diskFormat": "raw"}
if sys.argv[2] == "darwin":
    want["ecid"] = base64.b64encode(open(sys.argv[3] + "/MachineIdentifier", "rb").read()).decode()
    want["hardwareModel"] = base64.b64encode(open(sys.argv[3] + "/HardwareModel", "rb").read()).decode()
order = ["version", "os", "arch", "ecid", "hardwareModel", "cpuCountMin", "cpuCount", "memorySizeMin",
         "memorySize", "macAddress", "display", "diskFormat"]
ok = c == want and list(c) == [k for k in order if k in want] and b"/" not in raw.replace(b"\\/", b"")
if not ok:
    print("config.json: %s" % c, file=sys.stderr)
sys.exit(not ok)
EOP
}

# ---- two layers from tart VM directories ----
# 24,000,000 bytes: a multiple of 512 (as every disk strata keeps), not of
# 1 MiB nor of the slice; six 4 MiB slices, three of them all zeros
tart_dir "$W/t-linux" linux 24000000 0:2M:7 9M:1M:8 23000000:1000000:9
LIN=$("$S" import --from-tart "$W/t-linux" lin 2>"$W/err")
tart_dir "$W/t-mac" darwin 20971520 0:1M:3 12M:3M:4
MAC=$("$S" import --from-tart "$W/t-mac" mac 2>"$W/err")
check "a Linux- and a macOS-shaped layer from tart directories" [ -n "$LIN" ] && [ -n "$MAC" ]

# ---- clone --tart ----
for shape in linux:lin:NVRAM mac:mac:AuxiliaryStorage; do
    src=${shape%%:*} tag=${shape#*:} tag=${tag%%:*} nv=${shape##*:}
    os=linux; [ "$src" = mac ] && os=darwin
    id=$LIN; [ "$src" = mac ] && id=$MAC
    run "$S" clone "$tag" "$W/vm-$src" --tart
    check "clone --tart of the $src layer exits 0, silently" [ "$rc" -eq 0 ] && [ ! -s "$W/out" ]
    check "...config.json, disk.img and nvram.bin: tart's 'initialized' directory, nothing else" \
        [ "$(ls -A "$W/vm-$src" | tr '\n' ' ')" = "config.json disk.img nvram.bin " ]
    check "...disk.img is the layer's Disk.img byte for byte" cmp -s "$W/t-$src/disk.img" "$W/vm-$src/disk.img"
    check "...nvram.bin is the layer's $nv" cmp -s "$W/t-$src/nvram.bin" "$W/vm-$src/nvram.bin"
    check "...disk.img keeps its holes" [ "$(du -k "$W/vm-$src/disk.img" | cut -f1)" -lt 8192 ]
    check "...config.json has tart's fields, in tart's order, from the layer" config_is "$W/vm-$src/config.json" $os
    run "$S" import --from-tart "$W/vm-$src"
    check "...import --from-tart of it gives the same layer id" [ "$(cat "$W/out")" = "$id" ]
done
expect_error "clone --tart into a directory that exists is refused" 1 "exists" "$S" clone lin "$W/vm-linux" --tart
check "...and leaves it as it was" [ "$(ls -A "$W/vm-linux" | wc -l)" = 3 ]
expect_error "clone --tart --with-state is refused" 1 "carries no saved state" "$S" clone lin "$W/vm-x" --tart --with-state

# settings tart can't express: refused with one line, nothing left behind
"$S" clone lin "$W/inst" 2>/dev/null
python3 - "$W/inst/Settings.json" <<'EOP'
import json, sys
s = json.load(open(sys.argv[1]))
s["disks"] = [{"file": "Extra.img"}]
json.dump(s, open(sys.argv[1], "w"))
EOP
truncate -s 1M "$W/inst/Extra.img"
"$S" commit "$W/inst" -t lin:disks >/dev/null 2>&1
expect_error "a layer with an extra disk is refused by clone --tart, naming the setting" 1 \
    "(Settings.json disks)" "$S" clone lin:disks "$W/vm-disks" --tart
check "...and nothing is left beside it" [ -z "$(ls -A "$W" | grep vm-disks)" ]
"$S" clone lin "$W/inst2" 2>/dev/null
python3 - "$W/inst2/Settings.json" <<'EOP'
import json, sys
s = json.load(open(sys.argv[1]))
s["boot"] = {"loader": "linux", "kernel": "vmlinuz"}
json.dump(s, open(sys.argv[1], "w"))
EOP
head -c 4096 /dev/urandom >"$W/inst2/vmlinuz"
"$S" commit "$W/inst2" -t lin:kernel >/dev/null 2>&1
expect_error "a layer booting a kernel and initrd is refused, naming boot.loader" 1 \
    "boot.loader linux" "$S" clone lin:kernel "$W/vm-kernel" --tart
check "...and nothing is left beside it" [ -z "$(ls -A "$W" | grep vm-kernel)" ]
"$S" clone lin "$W/inst3" 2>/dev/null
python3 - "$W/inst3/Settings.json" <<'EOP'
import json, sys
s = json.load(open(sys.argv[1]))
s["shared_folders"] = [{"tag": "src", "path": "/srv/src"}]
json.dump(s, open(sys.argv[1], "w"))
EOP
"$S" commit "$W/inst3" -t lin:shares >/dev/null 2>&1
run "$S" clone lin:shares "$W/vm-shares" --tart
check "a layer with shared folders is written all the same (they are run options in tart)" \
    sh -c "[ $rc -eq 0 ] && cmp -s '$W/t-linux/disk.img' '$W/vm-shares/disk.img'"
check "...and its config.json names no host path" sh -c "! grep -q srv '$W/vm-shares/config.json'"

# a saved state: its disk without the state, as strata clone
# (archive_craft.py's pieces; its state file sorted among the layer's files)
python3 - "$CRAFT" "$STRATA_HOME/layers/$LIN/manifest" "$W/state.tar" <<'EOP'
import hashlib, os, sys, tarfile
sys.path.insert(0, os.path.dirname(sys.argv[1]))
import archive_craft as ac
pm = open(sys.argv[2], "rb").read()
st = b"S" * 4096
blocks = [b"file " + b for b in pm.split(b"\nfile ")[1:]]
blocks.append(b"file SaveFile.qemustate 4096 0644 1048576\n" + hashlib.sha256(st).hexdigest().encode())
blocks.sort(key=lambda b: b.split(b" ")[1])
m = (b"strata-layer 1\nparent " + hashlib.sha256(pm).hexdigest().encode() +
     b"\nbind driver qemu\nbind host crafted-host\n" + b"\n".join(x.rstrip(b"\n") for x in blocks) + b"\n")
with tarfile.open(sys.argv[3], "w", format=tarfile.PAX_FORMAT) as tar:
    ac.head(tar)
    ac.add(tar, ac.META + "/manifest", m)
    ac.add(tar, ac.META + "/info", ac.INFO)
    ac.add(tar, ac.TOP + "/SaveFile.qemustate", st)
EOP
STATE=$("$S" import "$W/state.tar" lin:state 2>/dev/null)
run "$S" clone lin:state "$W/vm-state" --tart
check "clone --tart of a saved state writes its base's files" \
    sh -c "[ $rc -eq 0 ] && [ -n '$STATE' ] && cmp -s '$W/t-linux/disk.img' '$W/vm-state/disk.img' && [ ! -e '$W/vm-state/SaveFile.qemustate' ]"

# ---- push --format tart ----
. "$(dirname "$0")/registry_lib.sh"
need_registry "tart push tests"
PY=""
for p in /usr/bin/python3 python3; do "$p" -c 'import lz4.block' 2>/dev/null && { PY=$p; break; }; done
start_registry tart
R=127.0.0.1:$PORT
export STRATA_TEST_TART_SLICE=$SLICE

# read_back NAME REF SRC-DIR OS: tart_read.py's pull, compared with the tart directory
read_back() {
    if [ -z "$PY" ]; then
        skipped "$1: the image read back as tart's pull reads it" "python3-lz4 is not installed"
        return
    fi
    "$PY" "$READ" "$2" "$W/rd-$1" $SLICE >"$W/rd-$1.json" 2>"$W/err"
    check "$1: tart_read.py reads it as tart's pull would (media types, order, annotations, digests, LZ4)" [ $? -eq 0 ]
    check "$1: ...disk.img byte for byte" cmp -s "$3/disk.img" "$W/rd-$1/disk.img"
    check "$1: ...nvram.bin byte for byte" cmp -s "$3/nvram.bin" "$W/rd-$1/nvram.bin"
    check "$1: ...the config layer is tart's config.json" config_is "$W/rd-$1/config.json" "$4"
    check "$1: ...the OCI config stub says $4/$(guest_arch "$4")" grep -qx "{\"architecture\":\"$(guest_arch "$4")\",\"config\":{\"Labels\":{\"org.cirruslabs.tart.disk.format\":\"raw\"}},\"os\":\"$4\"}" "$W/rd-$1/oci-config.json"
}

run "$S" push lin "$R/tart/lin:v1" --format tart --json
check "push --format tart of the Linux layer exits 0" [ "$rc" -eq 0 ]
check "...its --json is JSON with the manifest digest" sh -c "python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(not d[\"digest\"].startswith(\"sha256:\") or d[\"format\"] != \"tart\")' '$W/out'"
check "...the disk went as 6 slices: 8 layers" [ "$(jget layers)" = 8 ]
read_back linux "$R/tart/lin:v1" "$W/t-linux" linux
if [ -n "$PY" ]; then
    check "linux: ...every bv41 block holds 64 KiB at most, no stored block, and blocks reach into the previous one" \
        python3 -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(not (d['max_block']==65536 and d['stored_blocks']==0 and d['linked_blocks']>0))" "$W/rd-linux.json"
fi
# the manifest, field by field, against docs/tart.md's table
M=$W/rd-linux/manifest.json
manifest_field() { python3 -c "import json,sys; m=json.load(open(sys.argv[1])); v=eval(sys.argv[2]); print(*(v if isinstance(v, tuple) else (v,)))" "$M" "$1"; }
if [ -s "$M" ]; then
    check "manifest: raw bytes escape every '/' as '\\/'" sh -c "! sed 's|\\\\/||g' '$M' | grep -q /"
    check "manifest: keys sorted, compact" python3 -c "import json,sys; r=open(sys.argv[1],'rb').read(); m=json.loads(r); sys.exit(json.dumps(m,sort_keys=True,separators=(',',':')).replace('/','\\\\/').encode()!=r)" "$M"
    check "manifest: schemaVersion 2, OCI image manifest" [ "$(manifest_field "m['schemaVersion'], m['mediaType']")" = "2 application/vnd.oci.image.manifest.v1+json" ]
    check "manifest: config is application/vnd.oci.image.config.v1+json" [ "$(manifest_field "m['config']['mediaType']")" = application/vnd.oci.image.config.v1+json ]
    check "manifest: layers are config, disk.v2 x6, nvram.v1" [ "$(manifest_field "' '.join(l['mediaType'].split('.')[-2]+'.'+l['mediaType'].split('.')[-1] for l in m['layers'])")" = "config.v1 disk.v2 disk.v2 disk.v2 disk.v2 disk.v2 disk.v2 nvram.v1" ]
    check "manifest: uncompressed-disk-size is the disk's size" [ "$(manifest_field "m['annotations']['org.cirruslabs.tart.uncompressed-disk-size']")" = 24000000 ]
    check "manifest: the last slice holds the rest (24000000 - 5 x 4 MiB)" [ "$(manifest_field "m['layers'][-2]['annotations']['org.cirruslabs.tart.uncompressed-size']")" = 3028480 ]
    check "manifest: config and nvram layers carry empty annotations, as tart's" [ "$(manifest_field "m['layers'][0]['annotations'], m['layers'][-1]['annotations']")" = "{} {}" ]
fi
DIGEST1=$(jget digest 2>/dev/null)

run "$S" push lin "$R/tart/lin:v1" --format tart --json
check "a second push of the same layer uploads no blob (each HEADed first)" \
    [ "$rc" -eq 0 ] && [ "$(jget blobs_uploaded)" = 0 ] && [ "$(jget bytes_uploaded)" = 0 ]
check "...and finds all 9 present" [ "$(jget blobs_present)" = 9 ]
[ -n "$PY" ] && check "...the disk blobs are the same (LZ4 output is deterministic)" \
    sh -c "'$PY' '$READ' '$R/tart/lin:v1' '$W/rd-again' $SLICE | python3 -c 'import json,sys; a=json.load(sys.stdin); b=json.load(open(sys.argv[1])); sys.exit(a[\"disk_digests\"]!=b[\"disk_digests\"])' '$W/rd-linux.json'"

run "$S" push mac "$R/tart/mac:v1" --format tart
check "push --format tart of the macOS layer prints a summary line" \
    grep -qE "^pushed $R/tart/mac:v1 as a tart image \(sha256:[0-9a-f]{64}, 7 layers\): uploaded .* in [0-9]+ blobs; [0-9]+ blobs already present; [0-9.]+ s$" "$W/out"
read_back mac "$R/tart/mac:v1" "$W/t-mac" darwin

run "$S" push lin:state "$R/tart/lin:state" --format tart --json
check "a saved state is not pushed: its disk goes, with a note saying so" \
    sh -c "[ $rc -eq 0 ] && grep -q 'is a saved state' '$W/err' && [ \"\$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"blobs_uploaded\"])' '$W/out')\" -le 2 ]"
expect_error "push --format tart --with-state is refused" 1 "never carries a saved state" \
    "$S" push lin:state "$R/tart/lin:s2" --format tart --with-state
expect_error "a layer with an extra disk is refused by push --format tart" 1 "(Settings.json disks)" \
    "$S" push lin:disks "$R/tart/lin:disks" --format tart
run "$S" push lin:shares "$R/tart/lin:shares" --format tart
check "shared folders are left out of a pushed config, with a note naming them" \
    sh -c "[ $rc -eq 0 ] && grep -q 'no place for shared_folders' '$W/err'"
expect_error "an unknown --format is refused" 1 "--format 'oci'" "$S" push lin "$R/tart/lin:x" --format oci

# ---- the round trip: pushed as tart, pulled by strata ----
run "$S" pull "$R/tart/lin:v1"
if [ "$rc" -ne 0 ] && grep -q "not a strata layer" "$W/err"; then
    skipped "push --format tart, then pull, gives the same layer id" "pull of tart images not in this build"
else
    check "push --format tart, then pull, gives the same layer id" [ "$rc" -eq 0 ] && [ "$(tail -1 "$W/out")" = "$LIN" ]
fi
finish
