#!/bin/bash
# `strata create macos` end to end on Linux: build/strata-vzsim is strata
# with the vz driver on the recording stand-in of Virtualization.framework
# (tests/objc_record.c), so the restore image, its configuration, the
# bundle's identity files, the installer and its progress go through the
# same code as on a Mac, and the result is imported as a tagged root layer.
# `--ipsw latest` downloads for real, from a local HTTP server
# (tests/range_server.py) that breaks transfers off on purpose: resumed
# with HTTP Range, size-checked, kept in the store's cache.
. "$(dirname "$0")/lib.sh"
V=$B/strata-vzsim
export STRATA_HOME=$W/store STRATA_HOST_ID=vzsim-host
unset VZREC_HOST_MACOS VZREC_LOG VZREC_FAIL VZREC_LATEST_URL STRATA_TEST_VZ_TIMEOUT_MS
export VZREC_SHUTDOWN_MS=100 # a guest asked to stop stops 0.1 s later
rm -rf "$STRATA_HOME" "$W"/srv* "$W"/*.log "$W"/*.ipsw

if [ ! -x "$V" ]; then
    skipped "create macos end to end" "$V is not built (make vzsim)"; finish; exit
fi
if ! command -v python3 >/dev/null; then
    skipped "create macos end to end" "python3 is not installed"; finish; exit
fi
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; done; true; }
trap cleanup EXIT

clean_log() { ! grep -q '^ *!!' "$W/$1"; }
layers() { "$V" ls --json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
# a restore image as far as anyone here can tell: a zip header, then bytes
make_ipsw() { { printf 'PK\003\004'; head -c "$2" /dev/urandom; } >"$1"; }

# ---- from a file ----
make_ipsw "$W/UniversalMac_14.6.ipsw" 4096
VZREC_INSTALL_MS=700 VZREC_LOG=$W/create.log run "$V" create macos sonoma --ipsw "$W/UniversalMac_14.6.ipsw" --disk-size 80G
check "create macos from an .ipsw" [ "$rc" -eq 0 ]
LAYER=$(cat "$W/out")
check "... prints the new layer's id" grep -qE '^[0-9a-f]{64}$' "$W/out"
run "$V" inspect sonoma --json
check "... a root layer tagged with the name" grep -q "\"id\":\"$LAYER\"" "$W/out"
check "... with no parent" grep -q '"parent":null' "$W/out"
for f in HardwareModel MachineIdentifier AuxiliaryStorage Disk.img Settings.json; do
    check "... holding $f" grep -q "\"$f\"" "$W/out"
done
run "$V" inspect sonoma
check "the disk has the size asked for (80G)" grep -qE 'Disk.img +85899345920 bytes' "$W/out"
check "... and no data: sparse" grep -qE 'Disk.img .*, 0 with data' "$W/out"
check "HardwareModel and MachineIdentifier are Apple's plists" grep -q 'machine identifier: ECID [1-9]' "$W/out"
check "the restore image was loaded through its completion handler" \
    grep -q "^ *+\[VZMacOSRestoreImage loadFileURL: url(\"$W/UniversalMac_14.6.ipsw\") completionHandler:" "$W/create.log"
check "... its most featureful supported configuration taken" \
    grep -q 'mostFeaturefulSupportedConfiguration\] -> VZMacOSConfigurationRequirements#' "$W/create.log"
check "aux storage created for that hardware model" \
    grep -q 'initCreatingStorageAtURL: .*/AuxiliaryStorage") hardwareModel: VZMacHardwareModel#' "$W/create.log"
check "VZMacOSInstaller installed macOS" grep -q '^ *\^ installWithCompletionHandler: completion(nil)' "$W/create.log"
check "... with its progress read while it ran" grep -q 'fractionCompleted\] -> ' "$W/create.log"
check "no misuse in the transcript (Apple's signatures, queues)" clean_log create.log
check "nothing is left in the store's tmp" tmp_empty
run "$V" ls
check "ls lists the new layer" grep -q 'sonoma' "$W/out"

# on a terminal: the install's progress as a bar, the latest image named
if command -v script >/dev/null; then
    VZREC_INSTALL_MS=700 script -qec "'$V' create macos bar --ipsw '$W/UniversalMac_14.6.ipsw'" /dev/null >"$W/tty.out" 2>&1
    check "on a terminal the install shows a progress bar" grep -q 'installing macOS \[#*-*\] *[0-9]*%' "$W/tty.out"
    check "... that ends full" grep -q 'installing macOS \[####################\] 100%' "$W/tty.out"
    check "... and part way" grep -qE 'installing macOS \[#*-+\] +([1-9]|[1-9][0-9])%' "$W/tty.out"
    check "... after naming the image's build" grep -q 'UniversalMac_14.6.ipsw: macOS build 26A000' "$W/tty.out"
else
    skipped "the progress bar on a terminal" "script(1) is not installed"
fi

# the result runs on the vz path (its settings and files are what a start needs)
VZREC_LOG=$W/run.log "$V" run sonoma --driver vz --name m1 >"$W/run-m1.out" 2>"$W/run-m1.err" &
PIDS="$PIDS $!"
for ((i = 0; i < 300; i++)); do
    "$V" ps --json 2>/dev/null | grep -q '"name":"m1"[^}]*"state":"running"' && break
    sleep 0.1
done
check "the new layer boots with the vz driver" grep -q '^ *\^ startWithCompletionHandler: completion(nil)' "$W/run.log"
run "$V" stop m1
check "... and stops" [ "$rc" -eq 0 ]
check "... with no misuse" clean_log run.log

# run --gui (cli/vms.c's option): the window opens and the supervisor
# serves its events between its checks, then closes it
if "$V" run --help 2>&1 | grep -q -- '--gui'; then
    VZREC_LOG=$W/gui.log "$V" run sonoma --driver vz --name g1 --gui >"$W/run-g1.out" 2>"$W/run-g1.err" &
    PIDS="$PIDS $!"
    for ((i = 0; i < 300; i++)); do
        grep -q 'NSApp: serving window events' "$W/gui.log" 2>/dev/null && break
        sleep 0.1
    done
    check "run --gui opens the VM's window" grep -q 'setVirtualMachine: VZVirtualMachine#' "$W/gui.log"
    check "... and the supervisor serves its events" grep -q '# NSApp: serving window events on the main thread' "$W/gui.log"
    run "$V" stop g1
    for ((i = 0; i < 100; i++)); do grep -q 'close\]' "$W/gui.log" && break; sleep 0.1; done
    check "... and closes it when the VM stops" grep -q -- '-\[NSWindow#[0-9]* close\]' "$W/gui.log"
    check "... with no misuse" clean_log gui.log
else
    skipped "run --gui end to end" "this build's run has no --gui option (cli/vms.c)"
fi

# ---- bad input: one line, nothing made ----
N=$(layers)
printf 'just text' >"$W/notes.ipsw"
expect_error "an .ipsw that isn't one" 1 "notes.ipsw: not a macOS restore image" \
    "$V" create macos bad --ipsw "$W/notes.ipsw"
check "... makes no layer" [ "$(layers)" -eq "$N" ]
expect_error "a missing .ipsw" 1 "nothing.ipsw: No such file or directory" \
    "$V" create macos bad --ipsw "$W/nothing.ipsw"
VZREC_FAIL="loadFileURL:completionHandler:=The file isn't in the correct format." \
    expect_error "an image the framework can't read" 1 "not a macOS restore image Virtualization.framework can read" \
    "$V" create macos bad --ipsw "$W/UniversalMac_14.6.ipsw"
VZREC_FAIL="mostFeaturefulSupportedConfiguration=none" \
    expect_error "a host that can't run the image's macOS" 1 "this Mac can't run the macOS in this restore image" \
    "$V" create macos bad --ipsw "$W/UniversalMac_14.6.ipsw"
VZREC_FAIL="installWithCompletionHandler:=The installation failed." \
    expect_error "a failed install" 1 "The installation failed." \
    "$V" create macos bad --ipsw "$W/UniversalMac_14.6.ipsw"
check "... none of them made a layer" [ "$(layers)" -eq "$N" ]
check "... or left a tag" bash -c "! '$V' inspect bad >/dev/null 2>&1"
check "... or left anything in tmp" tmp_empty
expect_error "a disk too small for macOS" 1 "macOS needs at least 20G" \
    "$V" create macos bad --ipsw "$W/UniversalMac_14.6.ipsw" --disk-size 8G
expect_error "a disk size that isn't one" 1 "--disk-size 80X: a size such as 80G" \
    "$V" create macos bad --ipsw "$W/UniversalMac_14.6.ipsw" --disk-size 80X
expect_error "a name that is taken" 1 "tag sonoma already names layer" \
    "$V" create macos sonoma --ipsw "$W/UniversalMac_14.6.ipsw"
expect_error "no --ipsw" 1 "--ipsw FILE or --ipsw latest is needed" "$V" create macos bad
VZREC_HOST_MACOS=11 expect_error "a macOS 11 host" 1 "needs a Mac with Apple silicon and macOS 12" \
    "$V" create macos bad --ipsw "$W/UniversalMac_14.6.ipsw"
expect_error "a host that isn't a Mac (the real build here)" 1 \
    "a macOS VM can only be made on a Mac with Apple silicon" \
    "$S" create macos bad --ipsw "$W/UniversalMac_14.6.ipsw"
check "... none of them made a layer" [ "$(layers)" -eq "$N" ]

# ---- --ipsw latest: a real download from a local server ----
start_server() { # NAME ARGS...: serve $W/srv, PORT is its port
    local name=$1; shift
    rm -f "$W/$name.port"
    python3 "$(dirname "$0")/range_server.py" --root "$W/srv" --port-file "$W/$name.port" \
        --log "$W/$name.log" "$@" &
    PIDS="$PIDS $!"
    SRV=$!
    for ((i = 0; i < 100; i++)); do [ -s "$W/$name.port" ] && break; sleep 0.05; done
    PORT=$(cat "$W/$name.port" 2>/dev/null)
}
stop_server() { kill "$SRV" 2>/dev/null; wait "$SRV" 2>/dev/null; }
IPSW=UniversalMac_27.0_26A000_Restore.ipsw
CACHE=$STRATA_HOME/cache
mkdir -p "$W/srv"
make_ipsw "$W/srv/$IPSW" 3000000
start_server srv1 --drop-after 1000000 --drops 1
export VZREC_LATEST_URL=http://127.0.0.1:$PORT/$IPSW
VZREC_LOG=$W/latest.log run "$V" create macos latest1 --ipsw latest
check "create macos --ipsw latest" [ "$rc" -eq 0 ]
check "... asked the framework for the latest supported image" \
    grep -q 'fetchLatestSupportedWithCompletionHandler: completion(VZMacOSRestoreImage#' "$W/latest.log"
check "the transfer broke off once, then resumed with a Range request" \
    grep -qx "GET /$IPSW range=bytes=1000000-" "$W/srv1.log"
check "... after a first request from the start" grep -qx "GET /$IPSW range=-" "$W/srv1.log"
check "the cached image is byte for byte the server's" cmp -s "$W/srv/$IPSW" "$CACHE/$IPSW"
check "... and no partial file is left" [ ! -e "$CACHE/.$IPSW.part" ]
check "the install used the cached file" grep -q "loadFileURL: url(\"$CACHE/$IPSW\")" "$W/latest.log"
check "no misuse in the transcript" clean_log latest.log
REQS=$(wc -l <"$W/srv1.log")
run "$V" create macos latest2 --ipsw latest
check "a second --ipsw latest uses the cache" [ "$rc" -eq 0 ]
check "... and downloads nothing" [ "$(wc -l <"$W/srv1.log")" -eq "$REQS" ]
stop_server

# broken off more often than one call retries: a clear line, the part kept,
# and the next call resumes where it stopped
IPSW2=UniversalMac_27.1_26B000_Restore.ipsw
make_ipsw "$W/srv/$IPSW2" 2000000
start_server srv2 --drop-after 300000 --drops 100
export VZREC_LATEST_URL=http://127.0.0.1:$PORT/$IPSW2
N=$(layers)
expect_error "a download that keeps breaking off fails clearly" 1 \
    "run the command again to resume it" "$V" create macos latest3 --ipsw latest
check "... makes no layer" [ "$(layers)" -eq "$N" ]
check "... keeps what arrived" [ -s "$CACHE/.$IPSW2.part" ]
check "... and nothing under the final name" [ ! -e "$CACHE/$IPSW2" ]
HAVE=$(stat -c %s "$CACHE/.$IPSW2.part")
stop_server
start_server srv3
export VZREC_LATEST_URL=http://127.0.0.1:$PORT/$IPSW2
run "$V" create macos latest3 --ipsw latest
check "run again, it resumes and succeeds" [ "$rc" -eq 0 ]
check "... asking only for the rest" grep -qx "GET /$IPSW2 range=bytes=$HAVE-" "$W/srv3.log"
check "... once" [ "$(wc -l <"$W/srv3.log")" -eq 1 ]
check "... and the image is whole" cmp -s "$W/srv/$IPSW2" "$CACHE/$IPSW2"
stop_server

# two downloads of one image at once: the second says so and waits for none
IPSW4=UniversalMac_27.3_26D000_Restore.ipsw
make_ipsw "$W/srv/$IPSW4" 100000
start_server srv7
export VZREC_LATEST_URL=http://127.0.0.1:$PORT/$IPSW4
touch "$CACHE/.$IPSW4.part"
flock "$CACHE/.$IPSW4.part" sleep 3 &
LOCKER=$!
sleep 0.3
expect_error "a download already under way is not joined" 1 "another strata is downloading it" \
    "$V" create macos latest6 --ipsw latest
check "... and nothing was asked of the server" [ ! -s "$W/srv7.log" ]
wait "$LOCKER"
run "$V" create macos latest6 --ipsw latest
check "once it is done, the download goes ahead" [ "$rc" -eq 0 ]
check "... whole" cmp -s "$W/srv/$IPSW4" "$CACHE/$IPSW4"
stop_server

# the size check: a server whose resumed answer announces another size
IPSW3=UniversalMac_27.2_26C000_Restore.ipsw
make_ipsw "$W/srv/$IPSW3" 500000
head -c 1000 "$W/srv/$IPSW3" >"$CACHE/.$IPSW3.part"
start_server srv4 --wrong-total
export VZREC_LATEST_URL=http://127.0.0.1:$PORT/$IPSW3
expect_error "a download that doesn't come to the announced size is refused" 1 \
    "but the server announced 500005" "$V" create macos latest4 --ipsw latest
check "... nothing under the final name" [ ! -e "$CACHE/$IPSW3" ]
check "... and the inconsistent part is dropped" [ ! -e "$CACHE/.$IPSW3.part" ]
stop_server

# a server that ignores Range: the part starts over, the result is whole
head -c 1000 "$W/srv/$IPSW3" >"$CACHE/.$IPSW3.part"
start_server srv5 --no-range
export VZREC_LATEST_URL=http://127.0.0.1:$PORT/$IPSW3
run "$V" create macos latest4 --ipsw latest
check "a server that ignores Range: the download starts over and succeeds" [ "$rc" -eq 0 ]
check "... whole" cmp -s "$W/srv/$IPSW3" "$CACHE/$IPSW3"
stop_server

# plain http only to this machine; a missing file is the server's 404
export VZREC_LATEST_URL=http://example.com/UniversalMac_9.9_Elsewhere_Restore.ipsw
expect_error "plain http to another host is refused" 1 "only https (or http to this machine)" \
    "$V" create macos latest5 --ipsw latest
start_server srv6
export VZREC_LATEST_URL=http://127.0.0.1:$PORT/UniversalMac_0.0_Missing_Restore.ipsw
expect_error "a 404 is one clear line" 1 "HTTP 404" "$V" create macos latest5 --ipsw latest
stop_server
unset VZREC_LATEST_URL
VZREC_FAIL="fetchLatestSupportedWithCompletionHandler:=The Internet connection appears to be offline." \
    expect_error "no answer for the latest image" 1 "could not look up the latest macOS for this Mac" \
    "$V" create macos latest5 --ipsw latest

# ---- create linux under vz: a fresh VZEFIVariableStore, an ISO as USB media ----
truncate -s 64M "$W/raw.img"
VZREC_LOG=$W/vzl-create.log run "$V" create linux vzl --disk-image "$W/raw.img" --disk-size 128M --driver vz
check "create linux --driver vz from a raw image: a root layer with a fresh EFI store" \
    [ "$rc" -eq 0 ] && "$V" inspect vzl | grep -q " NVRAM " && grep -q "VZEFIVariableStore" "$W/vzl-create.log"
dd if=/dev/zero of="$W/inst.iso" bs=2048 count=40 2>/dev/null
printf '\001CD001' | dd of="$W/inst.iso" bs=1 seek=32768 conv=notrunc 2>/dev/null
run "$V" create linux vziso --iso "$W/inst.iso" --disk-size 1G --driver vz
check "...and from an ISO, copied into the layer as Installer.iso" \
    [ "$rc" -eq 0 ] && "$V" inspect vziso | grep -q " Installer.iso "
VZREC_LOG=$W/vziso-run.log "$V" run vziso --driver vz --name vziso >"$W/vziso-run.out" 2>&1 &
vzpid=$!
for ((i = 0; i < 300; i++)); do
    "$V" ps --json 2>/dev/null | grep -q '"name":"vziso"[^}]*"state":"running"' && break
    sleep 0.1
done
"$V" stop vziso --force >/dev/null 2>&1
wait $vzpid 2>/dev/null
check "...which boots by EFI with the ISO as USB mass storage" \
    grep -q "VZEFIBootLoader" "$W/vziso-run.log" && grep -q "VZUSBMassStorageDeviceConfiguration" "$W/vziso-run.log"
# the cache is the store's: fsck and gc leave it be
run "$V" fsck
check "fsck is content with a store that has a cache" [ "$rc" -eq 0 ]
run "$V" gc --prune=now
check "gc keeps the cached images" test -s "$CACHE/$IPSW" -a -s "$CACHE/$IPSW2"
finish
