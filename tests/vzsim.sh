#!/bin/bash
# The vz driver end to end on Linux: build/strata-vzsim is strata with the
# vz driver linked to the recording stand-in of Virtualization.framework
# (tests/objc_record.c), so `run`, `suspend` and `run --resume` go through
# boot/instance.c and the store as on a Mac. Every message the driver sends
# is checked against Apple's signatures; a "!!" line in a log is a misuse.
# Covers a Linux and a macOS bundle, the Linux identity file, the MAC rule,
# the device-set binding and the fallback to a VM that can't be saved.
. "$(dirname "$0")/lib.sh"
S=$B/strata-vzsim
export STRATA_HOME=$W/store STRATA_HOST_ID=vzsim-host
unset VZREC_HOST_MACOS VZREC_LOG STRATA_TEST_VZ_TIMEOUT_MS
export VZREC_SHUTDOWN_MS=100 # a guest asked to stop stops 0.1 s later
rm -rf "$STRATA_HOME" "$W"/lb "$W"/mb "$W"/*.log

if [ ! -x "$S" ]; then
    skipped "vz driver end to end" "$S is not built (make vzsim)"; finish; exit
fi
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; done; true; }
trap cleanup EXIT

start_vm() { # name log args...: strata-vzsim run in the background
    local name=$1 log=$2; shift 2
    VZREC_LOG=$W/$log "$S" run "$@" --driver vz --name "$name" >"$W/run-$name.out" 2>"$W/run-$name.err" &
    PIDS="$PIDS $!"
}
running() { # name: wait until ps shows it running
    local i
    for ((i = 0; i < 300; i++)); do
        "$S" ps --json 2>/dev/null | grep -q "\"name\":\"$1\"[^}]*\"state\":\"running\"" && return 0
        sleep 0.1
    done
    return 1
}
gone() { # name: wait until its supervisor has ended
    local i
    for ((i = 0; i < 300; i++)); do
        "$S" ps --json 2>/dev/null | grep -q "\"name\":\"$1\"" || return 0
        sleep 0.1
    done
    return 1
}
clean_log() { ! grep -q '^ *!!' "$W/$1"; }
json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$1" "$2"; }
inst() { echo "$STRATA_HOME/vms/$1"; }

# ---- a Linux bundle: no MAC, no identifier yet ----
"$MK" "$W/lb" --size 64M --linux >/dev/null
printf 'kernel' >"$W/lb/vmlinuz"
cat >"$W/lb/Settings.json" <<'JSON'
{"version": 1, "os": "linux", "cpus": 2, "memory_mib": 512,
 "boot": {"loader": "linux", "kernel": "vmlinuz", "cmdline": "console=hvc0"}}
JSON
run "$S" import "$W/lb" lx
check "import a Linux bundle" [ "$rc" -eq 0 ]

start_vm lx1 lx1.log lx
check "run --driver vz starts a Linux instance" running lx1
check "the instance gets a generic machine identifier file" [ -s "$(inst lx1)/GenericMachineIdentifier" ]
check "... and no Mac MachineIdentifier" [ ! -e "$(inst lx1)/MachineIdentifier" ]
MAC1=$(json_field "$(inst lx1)/Settings.json" mac)
GID1=$(sha256sum <"$(inst lx1)/GenericMachineIdentifier")
check "a VM that may be saved has a MAC recorded in its settings" [ -n "$MAC1" ]
check "the driver configured it for save/restore" grep -q 'validateSaveRestoreSupportWithError: &error] -> YES' "$W/lx1.log"
check "Linux keeps its entropy device" grep -q 'setEntropyDevices:' "$W/lx1.log"
check "the console is a file attachment" grep -q 'VZFileSerialPortAttachment#[0-9]* initWithURL:' "$W/lx1.log"

run "$S" suspend lx1 -t lx:s1
check "suspend a Linux vz instance (the store takes its identity file)" [ "$rc" -eq 0 ]
check "suspend paused and saved through the framework" grep -q '^ *\^ saveMachineStateToURL:completionHandler: completion(nil)' "$W/lx1.log"
check "the supervisor ends after suspend" gone lx1
run "$S" inspect lx:s1 --json
check "the suspended layer holds the saved state" grep -q 'SaveFile.vzvmsave' "$W/out"
check "... and the generic identifier" grep -q 'GenericMachineIdentifier' "$W/out"
check "... bound to the device set" grep -q '"devices"' "$W/out"
check "... and to the MAC" grep -q "$MAC1" "$W/out"

start_vm lx2 lx2.log lx:s1 --resume
check "run --resume restores the Linux instance" running lx2
check "... through restoreMachineStateFromURL: and resume" grep -q '\^ resumeWithCompletionHandler: completion(nil)' "$W/lx2.log"
check "... keeping its MAC" [ "$(json_field "$(inst lx2)/Settings.json" mac)" = "$MAC1" ]
check "... and its identifier" [ "$(sha256sum <"$(inst lx2)/GenericMachineIdentifier")" = "$GID1" ]
run "$S" stop lx2
check "stop asks the guest, which shuts down" [ "$rc" -eq 0 ]
check "... by requestStopWithError:" grep -q 'requestStopWithError: &error] -> YES' "$W/lx2.log"
check "... and says nothing of forcing it off" bash -c "! grep -q 'forced off' '$W/err'"

VZREC_SHUTDOWN_MS=-1 start_vm deaf deaf.log lx
check "a guest that will ignore a stop request runs" running deaf
run "$S" stop deaf --timeout 1
check "stop of a guest that ignores the request still stops it" [ "$rc" -eq 0 ]
check "... and says the guest ignored it and was forced off" grep -q "^strata: deaf ignored the request to shut down for 1 s; it was forced off$" "$W/err"

start_vm lx3 lx3.log lx:s1 --cold --new-identity
check "run --cold --new-identity starts" running lx3
check "--new-identity on Linux makes a fresh generic identifier" grep -q '+\[VZGenericMachineIdentifier new\]' "$W/lx3.log"
check "... that differs from the layer's" [ "$(sha256sum <"$(inst lx3)/GenericMachineIdentifier")" != "$GID1" ]
run "$S" stop lx3

# ---- the fallback: a host without save/restore (macOS 13) ----
VZREC_HOST_MACOS=13 start_vm old old.log lx
check "on macOS 13 a VM still boots" running old
check "... and says it can't be suspended" grep -q "can't be suspended: saving a VM's state needs macOS 14" "$W/run-old.err"
check "... never sending what macOS 13 lacks" clean_log old.log
expect_error "suspending it is refused, clearly" 1 "without save/restore support" "$S" suspend old
check "... and it goes on running" running old
run "$S" stop old

# ---- a macOS bundle ----
"$MK" "$W/mb" --size 64M >/dev/null
cat >"$W/mb/Settings.json" <<'JSON'
{"version": 1, "os": "macos", "cpus": 4, "memory_mib": 4096, "mac": "52:54:00:12:34:56"}
JSON
run "$S" import "$W/mb" mac
check "import a macOS bundle" [ "$rc" -eq 0 ]
start_vm m1 m1.log mac
check "run --driver vz starts a macOS instance" running m1
check "a macOS guest that may be saved has no entropy device" bash -c "! grep -q VZVirtioEntropyDeviceConfiguration '$W/m1.log'"
check "... and the Mac keyboard and trackpad alone (a macOS 13 HardwareModel)" \
    grep -q 'setKeyboards: @\[VZMacKeyboardConfiguration#[0-9]*\]\]' "$W/m1.log"
check "... no USB input device, which a saved state can't hold" bash -c "! grep -q 'VZUSB[A-Za-z]*Configuration' '$W/m1.log'"
run "$S" suspend m1 -t mac:s1
check "suspend a macOS vz instance" [ "$rc" -eq 0 ]
check "the supervisor ends after suspend" gone m1
VZREC_HOST_MACOS=13 VZREC_LOG=$W/m-old.log run timeout 60 "$S" run mac:s1 --resume --driver vz --name m-old
check "resume on a host with other devices is refused before the framework" \
    grep -q "can't resume layer .*device set" "$W/err"
start_vm m2 m2.log mac:s1 --resume
check "run --resume restores the macOS instance" running m2
check "... with its Mac identity" grep -q 'setMachineIdentifier: VZMacMachineIdentifier#' "$W/m2.log"
run "$S" stop m2
check "stop ends the macOS instance" [ "$rc" -eq 0 ]

for l in lx1 lx2 lx3 old m1 m2; do
    check "no misuse in $l's transcript (Apple's signatures, queues, states)" clean_log "$l.log"
done
finish
