#!/bin/bash
# CLI tests: run the real binary against a store in WORK_DIR and check exit
# codes, output, error text, and that failures leave the store unchanged.
. "$(dirname "$0")/lib.sh"

export STRATA_HOME=$W/store
rm -rf "$W/store" "$W/b"* "$W/c"* "$W/inst"*

# ---- import ----
"$MK" "$W/b1" --size 64G --data 0:8M:1 --data 32G:4M:2 --data 65535M:1M:3
run "$S" import "$W/b1" base
check "import prints a layer id" grep -qE '^[0-9a-f]{64}$' "$W/out"
check "import exits 0" [ "$rc" -eq 0 ]
BASE=$(cat "$W/out")
check "import of 64 GiB sparse stores about its data (<64 MiB)" [ "$(allocated_kib "$STRATA_HOME")" -lt 65536 ]
run "$S" inspect base
check "inspect decodes the ECID" grep -q "ECID 13061332575042855156" "$W/out"
check "inspect decodes the hardware model" grep -q "PlatformVersion 2, MinimumSupportedOS 13.0.0, DataRepresentationVersion 1" "$W/out"
run "$S" inspect base --json
check "inspect --json is JSON" is_json "$W/out"
check "inspect --json has the ECID" grep -q '"ECID":13061332575042855156' "$W/out"

run "$S" import "$W/b1" again
check "re-import of the same bundle gives the same id" [ "$(cat "$W/out")" = "$BASE" ]
check "re-import says the layer exists" grep -q "already layer" "$W/err"
STRATA_HOME=$W/store2 run "$S" import "$W/b1"
check "same content gives the same id in another store" [ "$(cat "$W/out")" = "$BASE" ]
rm -rf "$W/store2"
"$S" untag again >/dev/null 2>&1

# ---- clone ----
run "$S" clone base "$W/inst"
check "clone exits 0" [ "$rc" -eq 0 ]
same=1
for f in Disk.img AuxiliaryStorage HardwareModel MachineIdentifier; do "$MK" --cmp "$W/b1/$f" "$W/inst/$f" || same=0; done
check "clone is byte-identical to the imported bundle" [ $same -eq 1 ]
check "clone keeps holes (<64 MiB allocated)" [ "$(allocated_kib "$W/inst")" -lt 65536 ]
check "clone records its layer" grep -q "layer $BASE" "$W/inst/.strata"
check "clone files are writable" [ -w "$W/inst/Disk.img" ]
snap=$(snapshot)
expect_error "clone onto an existing directory" 1 "already exists" "$S" clone base "$W/inst"
check "...leaves the store unchanged" [ "$(snapshot)" = "$snap" ]
if [ -d /dev/shm ] && [ "$(stat -c %d /dev/shm 2>/dev/null)" != "$(stat -c %d "$W")" ]; then
    expect_error "clone onto another volume" 1 "another volume" "$S" clone base /dev/shm/strata-test-$$
    check "...creates nothing there" [ ! -e /dev/shm/strata-test-$$ ]
    check "...leaves the store unchanged" [ "$(snapshot)" = "$snap" ]
else
    skipped "clone onto another volume" "no second filesystem at /dev/shm"
fi
# a directory made between clone's check and its rename: not replaced
STRATA_TEST_RACE_RENAME=$W/raced expect_error "clone onto a directory made while it ran" 1 "was created there while cloning" "$S" clone base "$W/raced"
check "...leaves that directory as it was (empty)" [ -d "$W/raced" ] && [ -z "$(ls -A "$W/raced")" ]
check "...and no work in the store's tmp" tmp_empty
rmdir "$W/raced"

# ---- commit ----
"$MK" --write "$W/inst/Disk.img" 1M:2M:9 40G:1M:4
run "$S" commit "$W/inst" -m "xcode 16" -t base:xcode16 -v
check "commit prints the child id" grep -qE '^[0-9a-f]{64}$' "$W/out"
CHILD=$(cat "$W/out")
if [ "$FS" != ext4 ]; then
    check "commit on $FS reads only the changed chunks (3 MiB)" grep -q "read 3.0 MiB" "$W/err"
else
    check "commit without shared extents reads all data (full comparison)" grep -q "read 15.0 MiB" "$W/err"
fi
run "$S" log base:xcode16 --json
check "log --json is JSON" is_json "$W/out"
check "log shows bytes added by the child (3 MiB)" grep -q "\"id\":\"$CHILD\",\"parent\":\"$BASE\".*\"message\":\"xcode 16\",\"bytes_added\":3145728" "$W/out"
run "$S" log base:xcode16
check "log lists child then parent" [ "$(cut -c1-12 "$W/out" | tr '\n' ' ')" = "${CHILD:0:12} ${BASE:0:12} " ]
run "$S" diff base base:xcode16
check "diff shows Disk.img with 3 changed chunks" grep -qE '^modified +Disk.img +3 chunks +3.0 MiB' "$W/out"
check "diff shows only the changed file" [ "$(wc -l <"$W/out")" -eq 1 ]
run "$S" diff base base:xcode16 --json
check "diff --json is JSON" is_json "$W/out"
check "clone now stands on the child" grep -q "layer $CHILD" "$W/inst/.strata"
run "$S" clone base:xcode16 "$W/c2"
check "clone of the child equals the committed instance" "$MK" --cmp "$W/inst/Disk.img" "$W/c2/Disk.img"
run "$S" clone "$BASE" "$W/c3"
check "the base layer is unchanged by the child" "$MK" --cmp "$W/b1/Disk.img" "$W/c3/Disk.img"
"$MK" --write "$W/c2/Disk.img" 0:1M:5
rm -f "$W/c2/HardwareModel"
run "$S" commit "$W/c2" -m "second"
check "commit of a clone with a deleted file" [ "$rc" -eq 0 ]
C2=$(cat "$W/out")
run "$S" diff "$CHILD" "$C2"
check "diff shows the removed file" grep -qE '^removed +HardwareModel' "$W/out"
run "$S" commit "$W/b1"
check "commit of a directory that is not a clone fails" [ "$rc" -eq 1 ]
check "...saying so" grep -q "not a strata clone" "$W/err"

# ---- refs ----
run "$S" log "${CHILD:0:8}"
check "a unique id prefix resolves" [ "$rc" -eq 0 ]
snap=$(snapshot)
expect_error "unknown ref" 1 "unknown ref 'nope'" "$S" log nope
expect_error "bad tag name" 1 "bad tag name 'Bad Name'" "$S" tag base "Bad Name"
expect_error "bad tag name on import" 1 "bad tag name 'x:'" "$S" import "$W/b1" "x:"
expect_error "untag of a missing tag" 1 "no tag 'missing'" "$S" untag missing
check "bad refs leave the store unchanged" [ "$(snapshot)" = "$snap" ]
run "$S" tag "$CHILD" release:1.0
check "tag by id" [ "$rc" -eq 0 ]
run "$S" ls --json
check "ls --json is JSON" is_json "$W/out"
check "ls --json lists both tags of the child" grep -q '"tags":\["base:xcode16","release:1.0"\]' "$W/out"
run "$S" untag release:1.0
run "$S" ls
check "untag removes the tag" bash -c "! grep -q release '$W/out'"

# ---- bundle rules: bad input, one line, store unchanged ----
snap=$(snapshot)
mkbad() { rm -rf "$W/bad"; "$MK" "$W/bad" --size 64M --data 0:1M:1; }
expect_error "import of a missing directory" 1 "$W/none" "$S" import "$W/none"
mkbad; rm "$W/bad/Disk.img"
expect_error "bundle without Disk.img" 1 "no Disk.img" "$S" import "$W/bad"
mkbad; truncate -s 1000 "$W/bad/Disk.img"
expect_error "Disk.img size not a multiple of 512" 1 "Disk.img: size 1000 is not a multiple of 512" "$S" import "$W/bad"
mkbad; head -c 200 /dev/urandom >"$W/bad/HardwareModel"
expect_error "garbage HardwareModel" 1 "$W/bad/HardwareModel: not a property list" "$S" import "$W/bad"
mkbad; head -c 30 "$W/b1/MachineIdentifier" >"$W/bad/MachineIdentifier"
expect_error "truncated MachineIdentifier" 1 "$W/bad/MachineIdentifier: not a property list" "$S" import "$W/bad"
mkbad; head -c 2M /dev/zero >"$W/bad/HardwareModel"
expect_error "extra-large HardwareModel" 1 "HardwareModel: too large" "$S" import "$W/bad"
mkbad; printf '<?xml version="1.0"?><plist version="1.0"><array/></plist>' >"$W/bad/MachineIdentifier"
expect_error "MachineIdentifier that is not a dictionary" 1 "must be a dictionary" "$S" import "$W/bad"
mkbad; rm "$W/bad/AuxiliaryStorage"
expect_error "macOS bundle without AuxiliaryStorage" 1 "needs AuxiliaryStorage" "$S" import "$W/bad"
mkbad; ln -s /etc/passwd "$W/bad/NVRAM"
expect_error "symlink in a bundle" 1 "NVRAM: a symbolic link" "$S" import "$W/bad"
mkbad; truncate -s 5T "$W/bad/Extra.img" 2>/dev/null
if [ -f "$W/bad/Extra.img" ]; then
    expect_error "file over 4 TiB" 1 "more than strata versions" "$S" import "$W/bad"
else
    skipped "file over 4 TiB" "this filesystem can't hold a 5 TiB sparse file"
fi
check "bad bundles leave the store unchanged" [ "$(snapshot)" = "$snap" ]
check "...and no temporary work behind" tmp_empty
expect_error "a layer over the chunk limit is refused before any work" 1 "a layer holds at most 8388608 (use a larger --chunk-size)" "$S" import "$W/b1" tiny --chunk-size 4K
check "...leaving the store unchanged" [ "$(snapshot)" = "$snap" ]
expect_error "unknown verb" 1 "unknown verb 'frobnicate'" "$S" frobnicate
expect_error "unknown option" 1 "unknown option '--nope'" "$S" ls --nope
expect_error "missing argument" 1 "usage: strata clone REF DIR" "$S" clone base

# ---- other bundle files ----
rm -rf "$W/bl"; "$MK" "$W/bl" --size 1G --data 0:1M:3 --linux
head -c 3000 /dev/urandom >"$W/bl/RestoreImage.ipsw"
run "$S" import "$W/bl" linux
check "Linux bundle (NVRAM, no plists) imports" [ "$rc" -eq 0 ]
check "RestoreImage.ipsw is skipped with a note" grep -q "skipping $W/bl/RestoreImage.ipsw" "$W/err"
run "$S" inspect linux --json
check "...and is not in the layer" bash -c "! grep -q RestoreImage '$W/out'"
run "$S" import "$W/bl" linux:ipsw --include-restore-image
run "$S" inspect linux:ipsw --json
check "--include-restore-image versions it" grep -q '"name":"RestoreImage.ipsw"' "$W/out"

# ---- help ----
nohelp=""
for v in import clone commit log diff ls inspect tag untag df fsck gc; do
    run "$S" help $v
    { [ "$rc" -eq 0 ] && grep -q "usage: strata $v" "$W/out"; } || nohelp="$nohelp $v"
done
check "help VERB prints each verb's usage (missing:${nohelp:- none})" [ -z "$nohelp" ]
run "$S" help no-such-verb
check "help of an unknown verb fails" [ "$rc" -ne 0 ]

# ---- fsck, df, gc ----
run "$S" fsck
check "fsck of a good store is clean" [ "$rc" -eq 0 ]
check "...and says ok" grep -qx ok "$W/out"
run "$S" df --json
check "df --json is JSON" is_json "$W/out"
run "$S" fsck --json
check "fsck --json is JSON" is_json "$W/out"

export STRATA_HOME=$W/store-gc
rm -rf "$W/gc-inst"
"$S" import "$W/b1" keep >/dev/null 2>&1
"$S" import "$W/bl" drop >/dev/null 2>&1
"$S" clone keep "$W/gc-inst" 2>/dev/null
"$MK" --write "$W/gc-inst/Disk.img" 5M:1M:8
"$S" commit "$W/gc-inst" -m child >/dev/null 2>&1
"$S" untag drop; "$S" untag keep
run "$S" gc
check "gc removes the layer nothing reaches" grep -q "removed 1 layer," "$W/out"
check "gc keeps the live clone's layer and its parent" [ "$(ls "$STRATA_HOME/layers" | wc -l)" -eq 2 ]
rm -rf "$W/gc-inst"
run "$S" gc --json
check "gc --json is JSON" is_json "$W/out"
check "gc removes layers of deleted clones" grep -q '"layers_removed":2,"tmp_removed":0,"instances_forgotten":1' "$W/out"
"$S" import "$W/bl" base.tmp-1 >/dev/null 2>&1
"$S" gc >/dev/null
run "$S" log base.tmp-1
check "a tag that looks like a temporary name is kept by gc" [ "$rc" -eq 0 ]
run "$S" fsck
check "fsck is clean after gc" [ "$rc" -eq 0 ]

# ---- corruption is found ----
export STRATA_HOME=$W/store-bad
"$S" import "$W/b1" t >/dev/null 2>&1
L=$(ls "$STRATA_HOME/layers")
f=$STRATA_HOME/layers/$L/bundle/Disk.img
chmod u+w "$f"; printf X | dd of="$f" bs=1 seek=$((32 * 1024 * 1024 * 1024 + 77)) conv=notrunc 2>/dev/null
run "$S" fsck --quick
check "fsck --quick does not read chunks" [ "$rc" -eq 0 ]
run "$S" fsck
check "fsck finds a changed chunk" grep -q "Disk.img chunk 32768 does not match its hash" "$W/out"
check "...and exits 1" [ "$rc" -eq 1 ]
printf 'x' >>"$STRATA_HOME/layers/$L/manifest"
run "$S" fsck --quick
check "fsck --quick finds a damaged manifest" grep -q "manifest does not match its id" "$W/out"
printf 'zzz\n' >"$STRATA_HOME/refs/tags/t"
run "$S" fsck --quick
check "fsck finds a damaged tag" grep -q "tag t: points to a missing layer" "$W/out"

# ---- concurrent writers ----
export STRATA_HOME=$W/store-conc
rm -rf "$W/cc"
"$S" import "$W/b1" base >/dev/null 2>&1
"$S" clone base "$W/cc" 2>/dev/null
"$MK" --write "$W/cc/Disk.img" 7M:1M:11
rm -rf "$W/b3"; "$MK" "$W/b3" --size 256M --data 0:3M:21
( "$S" import "$W/bl" p1 >/dev/null 2>&1; echo $? >"$W/r1" ) &
( "$S" import "$W/b3" p2 >/dev/null 2>&1; echo $? >"$W/r2" ) &
( "$S" commit "$W/cc" -t p3 >/dev/null 2>&1; echo $? >"$W/r3" ) &
( "$S" gc >/dev/null 2>&1; echo $? >"$W/r4" ) &
wait
check "concurrent import, import, commit and gc all succeed" [ "$(cat "$W/r1" "$W/r2" "$W/r3" "$W/r4" | tr -d '\n')" = 0000 ]
run "$S" fsck
check "...and leave a clean store with every tag" bash -c "[ $rc -eq 0 ] && [ \$(ls '$STRATA_HOME/refs/tags' | wc -l) -eq 4 ]"

# ---- a full disk ----
if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null && [ "$(uname)" = Linux ]; then
    mkdir -p "$W/small"
    truncate -s 48M "$W/small.img"
    if mkfs.ext4 -q -F "$W/small.img" && mount -o loop "$W/small.img" "$W/small" 2>/dev/null; then
        export STRATA_HOME=$W/small/store
        rm -rf "$W/bfull"; "$MK" "$W/bfull" --size 1G --data 0:80M:5
        "$S" import "$W/bl" fits >/dev/null 2>&1
        snap=$(snapshot)
        expect_error "import onto a full disk" 1 "No space left on device" "$S" import "$W/bfull" big
        check "...leaves the store unchanged" [ "$(snapshot)" = "$snap" ]
        check "...and no temporary work behind" tmp_empty
        run "$S" fsck
        check "...and fsck clean" [ "$rc" -eq 0 ]
        umount "$W/small"
    else
        skipped "import onto a full disk" "could not mount a small ext4 image"
    fi
    rm -f "$W/small.img"
else
    skipped "import onto a full disk" "needs root on Linux to mount a small filesystem"
fi

finish
