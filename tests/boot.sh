#!/bin/bash
# End-to-end boot tests with the qemu driver and a real Linux guest: a
# Debian kernel (extracted from its package) and a busybox initramfs whose
# init mounts the disk, keeps a counter file on it and prints a heartbeat
# with its uptime (tests/guest/mkguest.sh). Software emulation: KVM hangs
# on the build machine, and the driver's probe must find that out.
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
export STRATA_HOME=$W/store
unset STRATA_QEMU_ACCEL STRATA_HOST_ID
rm -rf "$STRATA_HOME" "$W"/d*

if [ "$(uname)" != Linux ]; then
    skipped "qemu boot tests" "they need a Linux host"; finish; exit
fi
GUEST=${STRATA_GUEST_DIR:-/var/tmp/strata-guest}
if ! bash "$HERE/guest/mkguest.sh" "$GUEST" >"$W/mkguest.log" 2>&1; then
    skipped "qemu boot tests" "could not build the test guest: $(tail -1 "$W/mkguest.log")"; finish; exit
fi
if ! command -v qemu-system-x86_64 >/dev/null; then
    skipped "qemu boot tests" "qemu-system-x86_64 is not installed"; finish; exit
fi

PIDS=""
mark_qemus # none of its qemus outlives this script
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; done; pkill -f "qemu-system.*$W/" 2>/dev/null; kill_marked_qemus; true; }
trap cleanup EXIT

last_beat() { grep -E '^HEARTBEAT' "$(console "$1")" | tail -1; }
beat_field() { sed -n "s/.*$2=\([0-9]*\).*/\1/p" <<<"$1"; }
start_vm() { # name args...: strata run in the background
    local name=$1; shift
    "$S" run "$@" --name "$name" >"$W/run-$name.log" 2>&1 &
    PIDS="$PIDS $!"
}
# resumes_counting NAME LAYER COUNTER WHAT: resume LAYER as NAME; its first
# heartbeat must carry on from COUNTER (no reboot, the saved point)
resumes_counting() {
    local name=$1 layer=$2 from=$3 what=$4 first
    start_vm "$name" "$layer" --resume
    if wait_for "$(console "$name")" '^HEARTBEAT' 120; then
        first=$(grep -E '^HEARTBEAT' "$(console "$name")" | head -1)
        check "$what (counter $from -> $(beat_field "$first" counter))" [ "$(beat_field "$first" counter)" -eq $((from + 1)) ]
    else
        bad "$what"; tail -3 "$W/run-$name.log"
    fi
}
layer_json() { "$S" inspect "$1" --json 2>/dev/null; }
layer_field() { layer_json "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get(sys.argv[1]) or "")' "$2"; }
in_ps() { "$S" ps --json | python3 -c 'import json,sys; sys.exit(0 if any(i["name"]==sys.argv[1] for i in json.load(sys.stdin)) else 1)' "$1"; }

# the guest, with a machine identifier to be replaced by --new-identity
cp -a "$GUEST/guest.bundle" "$W/gb"
cp "$HERE/../fixtures/MachineIdentifier" "$W/gb/"
run "$S" import "$W/gb" linux-ci
check "import the guest bundle" [ "$rc" -eq 0 ]
LAYER_MAC=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["mac"])' "$W/gb/Settings.json")
ecid() { python3 -c 'import plistlib,sys; print(plistlib.load(open(sys.argv[1],"rb"))["ECID"])' "$1"; }

# ---- KVM: the probe and --accel (issue 7; kept apart from the tests below) ----
# vm_accel NAME: the -accel qemu was given for a running instance, once it runs
vm_accel() {
    local i pid
    for ((i = 0; i < 300; i++)); do
        pid=$("$S" ps --json 2>/dev/null | python3 -c 'import json,sys
print(next((str(i["vm_pid"]) for i in json.load(sys.stdin) if i["name"]==sys.argv[1] and i["state"]=="running"), ""))' "$1")
        [ -n "$pid" ] && { tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | grep -A1 -x -- -accel | tail -1; return; }
        sleep 0.2
    done
}
# no qemu of instance $1 left (a qemu killed inside a broken /dev/kvm can
# take seconds to go); a function, not a bash -c, which pgrep -f would match
no_qemu_for() {
    local i
    for ((i = 0; i < 100; i++)); do pgrep -f "qemu-system.*/vms/$1/" >/dev/null || return 0; sleep 0.2; done
    return 1
}
stop_now() { "$S" stop "$1" --force >/dev/null 2>&1; wait_gone_vm "$1"; }
wait_gone_vm() { local i; for ((i = 0; i < 100; i++)); do [ -e "$STRATA_HOME/running/$1.run" ] || return 0; sleep 0.1; done; }
expect_error "--accel takes kvm, tcg or auto" 1 "--accel 'xen' must be kvm, tcg or auto" "$S" run linux-ci --accel xen
# a probe forced to fail: software emulation, said once
STRATA_TEST_KVM_PROBE=fail start_vm kf linux-ci --ephemeral
check "a failed KVM probe means software emulation" [ "$(vm_accel kf)" = tcg ]
check "...and strata says so" grep -q "KVM probe forced to fail" "$W/run-kf.log"
stop_now kf
# --accel kvm with the probe forced to pass: where KVM hangs guests, it must
# fail within its bound and say why; where KVM works, the guest runs
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    t0=$(date +%s)
    STRATA_TEST_KVM_PROBE=pass STRATA_KVM_PROGRESS_SECONDS=8 start_vm kk linux-ci --accel kvm --ephemeral
    kkpid=${PIDS##* } KVM_HANGS=""
    for ((i = 0; i < 300; i++)); do # it fails, or it runs (it runs only once the guest made progress)
        if ! kill -0 "$kkpid" 2>/dev/null; then KVM_HANGS=1; break; fi
        if "$S" ps --json 2>/dev/null | grep -q '"name":"kk",[^}]*"state":"running"'; then KVM_HANGS=0; break; fi
        sleep 0.2
    done
    took=$(($(date +%s) - t0))
    if [ "$KVM_HANGS" = 1 ]; then
        wait "$kkpid"; kkrc=$?
        check "--accel kvm on a host whose KVM hangs fails (exit $kkrc) in bounded time ($took s)" [ "$kkrc" -eq 1 ] && [ "$took" -lt 40 ]
        check "...saying the guest made no progress under KVM" grep -q "no progress under KVM in 8 s.*--accel tcg" "$W/run-kk.log"
        check "...and leaves no qemu behind" no_qemu_for kk
    elif [ "$KVM_HANGS" = 0 ]; then
        ok "--accel kvm runs the guest where KVM works"
        stop_now kk
    else
        bad "--accel kvm neither failed nor ran in 60 s"; KVM_HANGS=1
    fi
    if [ "$KVM_HANGS" = 1 ]; then
        # auto, with a probe that passed wrongly: the hung guest is restarted emulated
        mkdir -p "$W/xdg2" && chmod 700 "$W/xdg2"
        STRATA_TEST_KVM_PROBE=pass STRATA_KVM_PROGRESS_SECONDS=8 XDG_RUNTIME_DIR=$W/xdg2 start_vm ka linux-ci --ephemeral
        check "a guest that hangs under KVM after a passed probe is restarted emulated" [ "$(vm_accel ka)" = tcg ]
        check "...saying so" grep -q "no progress under KVM in 8 s although the KVM probe passed: restarting" "$W/run-ka.log"
        stop_now ka
    fi
    # the probe's logic on its own, with a stand-in qemu: each stage that
    # stays silent means emulation, said once, then taken from the cache
    for c in "ok ok kvm" "ok hang tcg" "hang ok tcg"; do
        set -- $c
        rm -rf "$W/xdgf" "$W/starts"; mkdir -m 700 "$W/xdgf"
        for n in 1 2; do
            FAKE_IMAGE=$1 FAKE_KERNEL=$2 FAKE_STARTS=$W/starts XDG_RUNTIME_DIR=$W/xdgf STRATA_QEMU=$HERE/fakeqemu.sh \
                run "$S" run linux-ci --ephemeral --name fq$n
            cp "$W/err" "$W/err-fq$n"
        done
        said=$(cat "$W/err-fq1" "$W/err-fq2" | grep -c "KVM does not run")
        check "probe with image $1, kernel $2: $3 for both runs" [ "$(grep -c -- "-accel $3" "$W/starts")" -eq 2 ]
        check "...said $([ "$3" = kvm ] && echo never || echo once) (said $said times)" [ "$said" -eq "$([ "$3" = kvm ] && echo 0 || echo 1)" ]
    done
    # the real probe, from an empty verdict cache: it must agree
    mkdir -p "$W/xdg" && chmod 700 "$W/xdg"
    XDG_RUNTIME_DIR=$W/xdg start_vm kp linux-ci --ephemeral
    want=$([ "$KVM_HANGS" = 1 ] && echo tcg || echo kvm)
    check "the KVM probe picks $want on this host" [ "$(vm_accel kp)" = "$want" ]
    if [ "$KVM_HANGS" = 1 ]; then
        check "...and says once that KVM does not work here" grep -q "KVM does not run" "$W/run-kp.log"
    fi
    stop_now kp
    XDG_RUNTIME_DIR=$W/xdg start_vm kp2 linux-ci --ephemeral
    check "a second run takes the cached verdict ($want), silently" [ "$(vm_accel kp2)" = "$want" ]
    check "...without saying it again" bash -c "! grep -q 'KVM does not' '$W/run-kp2.log'"
    stop_now kp2
else
    skipped "--accel kvm and the KVM probe" "/dev/kvm is not usable here"
fi

# ---- cold boot ----
t0=$(date +%s.%N)
start_vm a linux-ci --new-identity
if wait_for "$(console a)" 'HEARTBEAT uptime=[0-9]+ counter=3' 240; then
    ok "cold boot of a layer reaches its heartbeat"
    cold=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
else
    bad "cold boot of a layer reaches its heartbeat"; tail -5 "$W/run-a.log" "$(console a)"
fi
run "$S" ps --json
check "ps --json is JSON" is_json "$W/out"
check "ps shows the instance running on qemu" grep -q '"name":"a",[^}]*"driver":"qemu",[^}]*"state":"running"' "$W/out"
VMPID=$(python3 -c 'import json,sys; print([i["vm_pid"] for i in json.load(open(sys.argv[1])) if i["name"]=="a"][0])' "$W/out")
if [ "${KVM_HANGS:-1}" = 1 ]; then
    check "KVM hangs here (or is absent): the probe fell back to software emulation" grep -qz 'tcg' "/proc/$VMPID/cmdline"
else
    check "KVM works here: the probe chose it" grep -qz 'kvm' "/proc/$VMPID/cmdline"
fi
NEWMAC=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["mac"])' "$STRATA_HOME/vms/a/Settings.json")
check "a new instance gets a fresh MAC" [ "$NEWMAC" != "$LAYER_MAC" ]
check "...locally administered" python3 -c "import sys; b=int('$NEWMAC'[:2],16); sys.exit(0 if b & 2 and not b & 1 else 1)"
check "the fixture's ECID reads as 13061332575042855156" [ "$(ecid "$W/gb/MachineIdentifier")" = 13061332575042855156 ]
NEWECID=$(ecid "$STRATA_HOME/vms/a/MachineIdentifier")
check "--new-identity writes a fresh ECID ($NEWECID)" [ "$NEWECID" != 13061332575042855156 ] && [ "$NEWECID" -gt 0 ]
check "a running instance is in the store's instances directory" [ -d "$STRATA_HOME/vms/a" ]
ROOT=$(layer_field linux-ci id)
"$S" untag linux-ci >/dev/null 2>&1
run "$S" gc
check "gc keeps the layer only a running instance stands on" [ -d "$STRATA_HOME/layers/$ROOT" ]
"$S" tag "$ROOT" linux-ci >/dev/null 2>&1
expect_error "commit of a running instance is refused" 1 "$STRATA_HOME/vms/a is in use by running instance a; strata suspend or stop it first" "$S" commit "$STRATA_HOME/vms/a"

# ---- suspend ----
sleep 2
run "$S" suspend a -t linux-ci:warm -m warm
check "suspend prints the new layer" grep -qE '^[0-9a-f]{64}$' "$W/out"
WARM=$(cat "$W/out")
SAVED=$(last_beat a)
U=$(beat_field "$SAVED" uptime); C=$(beat_field "$SAVED" counter)
run "$S" ps
check "the suspended instance no longer runs" bash -c "! grep -q '^a ' '$W/out'"
run "$S" inspect linux-ci:warm --json
check "the saved state S holds disk, state and settings" grep -q '"name":"SaveFile.qemustate"' "$W/out"
check "S records what the state is bound to, and its kind" grep -q '"saved_state":{"config-hash":"[0-9a-f]*","driver":"qemu","host":"[^"]*","mac":"'"$NEWMAC"'","machine-id":"[0-9a-f]\{64\}","os-build":"[^"]*","state-kind":"ram-file","user":"[^"]*"}' "$W/out"
# ---- RAM file (issue 12): the RAM is a layer file, the state file device state only
check "S holds the guest's RAM file" grep -q '"name":"SaveFile.qemuram","size":268435456' "$W/out"
check "...and a state file of device state only (under 4 MB)" [ "$(stat -c %s "$STRATA_HOME/layers/$WARM/bundle/SaveFile.qemustate")" -lt 4000000 ]
check "...holding the guest's RAM as it was saved" cmp -s "$STRATA_HOME/vms/a/SaveFile.qemuram" "$STRATA_HOME/layers/$WARM/bundle/SaveFile.qemuram"
check "the tag points at S" [ "$(layer_field linux-ci:warm id)" = "$WARM" ]
DISK=$(layer_field "$WARM" parent)
check "S's parent D is a child of the instance's layer" [ "$(layer_field "$DISK" parent)" = "$ROOT" ]
run "$S" inspect "$DISK" --json
check "D holds the disk and settings" grep -q '"name":"Disk.img"' "$W/out"
check "D has no state file" bash -c "! grep -q SaveFile '$W/out'"
check "D has no bind lines" bash -c "! grep -q '^bind ' '$STRATA_HOME/layers/$DISK/manifest'"
check "S adds only the state and RAM files (its files beside them are D's)" [ "$(grep -c '^file ' "$STRATA_HOME/layers/$WARM/manifest")" -eq $(($(grep -c '^file ' "$STRATA_HOME/layers/$DISK/manifest") + 2)) ]
run "$S" log linux-ci:warm
check "log shows S as a saved state (host, driver)" grep -qE "^${WARM:0:12} .*saved state \([^,]+, qemu\)" "$W/out"
check "...and D as a plain layer" bash -c "grep -E '^${DISK:0:12} ' '$W/out' | grep -vq 'saved state'"
run "$S" inspect linux-ci:warm
check "inspect S lists the bindings" grep -q 'saved state bound to:' "$W/out"
"$S" clone linux-ci:warm "$W/dplain" 2>/dev/null
check "clone S gives D's content: no state or RAM file" [ -e "$W/dplain/Disk.img" ] && [ ! -e "$W/dplain/SaveFile.qemustate" ] && [ ! -e "$W/dplain/SaveFile.qemuram" ]
echo x >"$W/dplain/notes.txt"
run "$S" commit "$W/dplain" -m later
check "a later commit of that clone is D's child" [ "$(layer_field "$(head -1 "$W/out" | grep -oE '[0-9a-f]{64}')" parent)" = "$DISK" ]
DISK_BEFORE=$("$MK" --digest "$STRATA_HOME/layers/$WARM/bundle/Disk.img" | cut -d' ' -f1)
RAM_BEFORE=$("$MK" --digest "$STRATA_HOME/layers/$WARM/bundle/SaveFile.qemuram" | cut -d' ' -f1)
expect_error "a ram-file state is refused as a classic resume (kind mismatch)" 1 "keeps guest RAM in SaveFile.qemuram (state-kind ram-file), which a classic resume can't use" \
    env STRATA_QEMU_SAVE=classic "$S" run linux-ci:warm --resume --name km

# A second saved state, after a little activity, stores only what changed:
# its RAM file, chunked at 4 KiB (a 256 MiB guest), adds the chunks holding
# a changed page and no more (the store's accounting, what an export or push
# carries): at most twice the changed pages. On a reflink filesystem its
# blocks not shared with the first state's are at most twice them too.
second_suspend() {
    sleep 2
    run "$S" suspend "$1" -t linux-ci:warm2
    local s2; s2=$(grep -oE '^[0-9a-f]{64}$' "$W/out")
    check "a second suspend of a resumed instance makes a layer" [ -n "$s2" ]
    local old=$STRATA_HOME/layers/$WARM/bundle new=$STRATA_HOME/layers/$s2/bundle
    local cs; cs=$(awk '$1 == "file" && $2 == "SaveFile.qemuram" {print $5}' "$STRATA_HOME/layers/$s2/manifest")
    check "...its RAM file chunked at 4 KiB ($cs)" [ "$cs" = 4096 ]
    check "...as the first state's" grep -q '^file SaveFile.qemuram [0-9]* [0-7]* 4096$' "$STRATA_HOME/layers/$WARM/manifest"
    read -r pages unshared chunks < <(python3 "$HERE/../bench/ram_delta.py" "$old/SaveFile.qemuram" "$new/SaveFile.qemuram" "${cs:-4096}")
    local added state; added=$(layer_field "$s2" bytes_added); state=$(stat -c %s "$new/SaveFile.qemustate")
    echo "second state: guest changed $pages bytes of RAM pages; layer added $added bytes ($chunks in RAM chunks + $state state); $unshared bytes of RAM file unshared"
    check "...adding only the RAM chunks that changed, plus the state file ($added <= $chunks + $state)" [ "$added" -le $((chunks + state)) ] && [ "$pages" -gt 0 ]
    check "...its RAM adding at most 2x the changed pages ($((added - state)) <= 2 x $pages + 64 KiB)" [ $((added - state)) -le $((2 * pages + 65536)) ]
    if cp --reflink=always "$old/SaveFile.qemustate" "$W/reflink-probe" 2>/dev/null; then
        check "...costing at most 2x the changed pages in unshared blocks ($unshared <= 2 x $pages + 64 KiB)" [ "$unshared" -le $((2 * pages + 65536)) ]
    else
        skipped "unshared blocks of the second state" "this filesystem ($W) can't share blocks"
    fi
    rm -f "$W/reflink-probe"
}

# ---- resume, twice, each from the same point ----
for r in r1 r2; do
    t0=$(date +%s.%N)
    start_vm $r linux-ci:warm --resume
    if wait_for "$(console $r)" '^HEARTBEAT' 120; then
        eval "resume_$r=\$(awk -v a=$t0 -v b=\$(date +%s.%N) 'BEGIN {printf \"%.1f\", b - a}')"
        first=$(grep -E '^HEARTBEAT' "$(console $r)" | head -1)
        u=$(beat_field "$first" uptime); c=$(beat_field "$first" counter)
        check "resume $r continues the saved run (no reboot)" bash -c "! grep -q BOOTED '$(console $r)'"
        check "resume $r continues the uptime ($U -> $u)" [ "$u" -ge "$U" ] && [ "$u" -le $((U + 5)) ]
        check "resume $r continues the counter ($C -> $c)" [ "$c" -eq $((C + 1)) ]
        check "resume $r keeps the saved MAC" grep -q "\"mac\": \"$NEWMAC\"" "$STRATA_HOME/vms/$r/Settings.json"
        check "resume $r keeps the saved machine identifier" [ "$(ecid "$STRATA_HOME/vms/$r/MachineIdentifier")" = "$NEWECID" ]
    else
        bad "resume $r reaches a heartbeat"; tail -5 "$W/run-$r.log"
    fi
    if [ $r = r2 ]; then
        expect_error "a second running resume of one state is refused" 1 "already runs from this saved state" "$S" run linux-ci:warm --resume --name r3
        second_suspend r2
    else
        run "$S" stop $r --timeout 5
        check "stop $r" [ "$rc" -eq 0 ]
    fi
done

# ---- two resumes of one state at the same moment: exactly one runs ----
"$S" run linux-ci:warm --resume --name c1 >"$W/run-c1.log" 2>&1 &
P1=$!
"$S" run linux-ci:warm --resume --name c2 >"$W/run-c2.log" 2>&1 &
P2=$!
PIDS="$PIDS $P1 $P2"
for ((i = 0; i < 300; i++)); do
    { ! kill -0 $P1 2>/dev/null || ! kill -0 $P2 2>/dev/null; } && break
    sleep 0.2
done
losers=$(grep -l "already runs from this saved state" "$W/run-c1.log" "$W/run-c2.log" 2>/dev/null | wc -l)
check "two resumes started at once: one is refused" [ "$losers" -eq 1 ]
winner=c1; grep -q "already runs" "$W/run-c1.log" && winner=c2
if wait_for "$(console $winner)" '^HEARTBEAT' 120; then ok "...and the other runs ($winner)"; else bad "...and the other runs ($winner)"; fi
check "...alone in ps" [ "$("$S" ps --json | grep -o '"name":"c[12]"' | wc -l)" -eq 1 ]
"$S" stop $winner --timeout 5 >/dev/null 2>&1
# ---- a store made by the previous version: a one-layer saved state ----
# (disk changes, state file and bind lines together), made by the binary of
# commit 073ac5f built from this repository's history; read as it is
OLDSRC=$W/old-src
if git -C "$HERE/.." cat-file -e 073ac5f^{commit} 2>/dev/null && rm -rf "$OLDSRC" && mkdir -p "$OLDSRC" &&
    git -C "$HERE/.." archive 073ac5f | tar -x -C "$OLDSRC" && make -C "$OLDSRC" -j2 build/strata >"$W/old-build.log" 2>&1; then
    # the old binary's KVM probe trusts a KVM that hangs kernels; it still
    # honours STRATA_QEMU_ACCEL, so it emulates (what it saves is the same)
    STRATA_QEMU_ACCEL=tcg "$OLDSRC/build/strata" run linux-ci --name old1 >"$W/run-old1.log" 2>&1 &
    PIDS="$PIDS $!"
    if wait_for "$(console old1)" 'HEARTBEAT uptime=[0-9]+ counter=3' 240; then
        run "$OLDSRC/build/strata" suspend old1 -t linux-ci:old
        OLDL=$(grep -oE '^[0-9a-f]{64}$' "$W/out")
        OSAVED=$(last_beat old1); OC=$(beat_field "$OSAVED" counter)
        check "the old binary made a one-layer saved state" [ -n "$OLDL" ] && [ "$(layer_field "$OLDL" parent)" = "$ROOT" ] &&
            grep -q '^bind ' "$STRATA_HOME/layers/$OLDL/manifest" && grep -q '^file SaveFile.qemustate ' "$STRATA_HOME/layers/$OLDL/manifest"
        run "$S" log linux-ci:old
        check "log shows the old layer as a saved state" grep -q "^${OLDL:0:12} .*saved state (" "$W/out"
        "$S" clone linux-ci:old "$W/dold" 2>/dev/null
        check "clone of an old saved state: its disk, no state file" [ -e "$W/dold/Disk.img" ] && [ ! -e "$W/dold/SaveFile.qemustate" ]
        resumes_counting o2 linux-ci:old "$OC" "an old saved state still resumes"
        "$S" stop o2 --timeout 5 >/dev/null 2>&1
        start_vm o3 linux-ci:old --cold --ephemeral
        if wait_for "$(console o3)" 'BOOTED' 240; then
            check "--cold of an old saved state: no state file in the instance" [ ! -e "$STRATA_HOME/vms/o3/SaveFile.qemustate" ]
        else
            bad "--cold of an old saved state boots"
        fi
        "$S" stop o3 --timeout 1 >/dev/null 2>&1
    else
        bad "the old binary boots the guest"; tail -3 "$W/run-old1.log"
    fi
else
    skipped "saved states of the previous version" "can't build commit 073ac5f (no git history here?): $(tail -1 "$W/old-build.log" 2>/dev/null)"
fi

check "the layer's disk is never written" [ "$("$MK" --digest "$STRATA_HOME/layers/$WARM/bundle/Disk.img" | cut -d' ' -f1)" = "$DISK_BEFORE" ]
check "...nor its RAM file" [ "$("$MK" --digest "$STRATA_HOME/layers/$WARM/bundle/SaveFile.qemuram" | cut -d' ' -f1)" = "$RAM_BEFORE" ]
run "$S" fsck
check "fsck is clean after the runs" [ "$rc" -eq 0 ]

# ---- refusals ----
nvms=$(ls "$STRATA_HOME/vms" | wc -l)
STRATA_HOST_ID=another-host run "$S" run linux-ci:warm --resume --name d1
check "resume on another host is refused" [ "$rc" -eq 1 ]
check "...naming the host and suggesting --cold" grep -q "saved with host '.*', this is 'another-host'; boot it fresh with --cold" "$W/err"
check "...before any instance is made" [ "$(ls "$STRATA_HOME/vms" | wc -l)" -eq "$nvms" ]
"$S" clone linux-ci:warm "$W/dmac" --with-state 2>/dev/null
check "clone --with-state keeps the state" [ -e "$W/dmac/SaveFile.qemustate" ]
sed -i "s/$NEWMAC/02:00:00:00:00:01/" "$W/dmac/Settings.json"
expect_error "resume with another MAC is refused" 1 "its state was saved with MAC address '$NEWMAC', this is '02:00:00:00:00:01'" "$S" run "$W/dmac" --resume
"$S" clone linux-ci:warm "$W/dbad" --with-state 2>/dev/null
head -c 4096 /dev/urandom >"$W/dbad/SaveFile.qemustate"
expect_error "a state the hypervisor refuses is reported" 1 "qemu refused the saved state" "$S" run "$W/dbad" --resume
STRATA_QEMU_SAVE=classic start_vm dfb "$W/dbad" --resume --fallback-cold
if wait_for "$W/dbad/.console.log" 'BOOTED' 240; then ok "--fallback-cold boots fresh when the state is refused"; else bad "--fallback-cold boots fresh"; tail -3 "$W/run-dfb.log"; fi
check "...here a ram-file state under STRATA_QEMU_SAVE=classic, said so" grep -q "a classic resume can't use.*booting fresh instead (--fallback-cold)" "$W/run-dfb.log"
run "$S" ps --json
check "run DIR (outside the store) shows in ps, with its directory" grep -q '"name":"dbad","dir":"'"$W"'/dbad"' "$W/out"
expect_error "commit of a running DIR is refused" 1 "$W/dbad is in use by running instance dbad; strata suspend or stop it first" "$S" commit "$W/dbad"
# a state saved without the capability (STRATA_QEMU_SAVE=classic) still resumes
wait_for "$W/dbad/.console.log" '^HEARTBEAT' 60
run "$S" suspend "$W/dbad" -t linux-ci:classic
check "suspend finds a run DIR instance by its directory" [ "$rc" -eq 0 ]
check "...and it is gone from ps" bash -c "! '$S' ps | grep -q '^dbad '"
CL=$(layer_field linux-ci:classic id)
check "a classic state: kind classic, all RAM in the state file, no RAM file" \
    grep -q '^bind state-kind classic$' "$STRATA_HOME/layers/$CL/manifest" && [ ! -e "$STRATA_HOME/layers/$CL/bundle/SaveFile.qemuram" ] &&
    [ "$(stat -c %s "$STRATA_HOME/layers/$CL/bundle/SaveFile.qemustate")" -gt 20000000 ]
CC=$(beat_field "$(grep -E '^HEARTBEAT' "$W/dbad/.console.log" | tail -1)" counter)
resumes_counting cl linux-ci:classic "$CC" "a classic state resumes with RAM-file mode on"
"$S" stop cl --timeout 1 >/dev/null 2>&1

# ---- cold boot of a layer that has a state, and ephemeral runs ----
nlayers=$(ls "$STRATA_HOME/layers" | wc -l)
start_vm e1 linux-ci:warm --cold --ephemeral
if wait_for "$(console e1)" 'BOOTED' 240 && wait_for "$(console e1)" '^HEARTBEAT' 60; then
    ok "--cold boots a layer with a saved state fresh"
    check "...from D's content: no state file in the instance" [ ! -e "$STRATA_HOME/vms/e1/SaveFile.qemustate" ]
    first=$(grep -E '^HEARTBEAT' "$(console e1)" | head -1)
    check "...on the disk as saved (counter $C -> $(beat_field "$first" counter))" [ "$(beat_field "$first" counter)" -gt "$C" ]
else
    bad "--cold boots a layer with a saved state fresh"
fi
run "$S" stop e1 --timeout 2
check "stop says the guest ignored the request (no ACPI handler in it) and was forced off" \
    grep -qx "strata: e1 ignored the request to shut down for 2 s; it was forced off" "$W/err"
check "--ephemeral leaves no instance" [ ! -e "$STRATA_HOME/vms/e1" ]
check "--ephemeral makes no layer" [ "$(ls "$STRATA_HOME/layers" | wc -l)" -eq "$nlayers" ]

# ---- UEFI: OVMF with the bundle's own variable store ----
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
if [ -r $OVMF_VARS ] && [ -r /usr/share/OVMF/OVMF_CODE_4M.fd ]; then
    mkdir -p "$W/efi.bundle"
    truncate -s 64M "$W/efi.bundle/Disk.img"
    cp $OVMF_VARS "$W/efi.bundle/NVRAM"
    echo '{"version":1,"os":"linux","cpus":1,"memory_mib":256,"boot":{"loader":"efi","variable_store":"NVRAM"}}' >"$W/efi.bundle/Settings.json"
    "$S" import "$W/efi.bundle" efi >/dev/null 2>&1
    start_vm efi1 efi --ephemeral
    if wait_for "$(console efi1)" 'BdsDxe' 240; then
        ok "UEFI boot: OVMF runs with the bundle's variable store"
    else
        bad "UEFI boot: OVMF runs with the bundle's variable store"; tail -3 "$W/run-efi1.log"
    fi
    "$S" stop efi1 --timeout 1 >/dev/null 2>&1
else
    skipped "UEFI boot" "OVMF (Debian package ovmf) is not installed"
fi

# ---- a stale run record whose pid now belongs to another process ----
sleep 300 &
SLEEPER=$!
PIDS="$PIDS $SLEEPER"
printf 'name ghost\npid %d\nvm-pid %d\nlayer %s\ndriver qemu\nresumed-from -\nstate running\ndir %s\n' \
    $SLEEPER $SLEEPER "$ROOT" "$W/ghost" >"$STRATA_HOME/running/ghost.run"
run "$S" stop ghost
check "stop does not take a stale record for an instance" grep -q "no running instance 'ghost'" "$W/err"
check "...and never signals its pid" kill -0 $SLEEPER
run "$S" ps
check "ps ignores a record no supervisor holds, though its pid lives" bash -c "! grep -q '^ghost ' '$W/out'"
kill $SLEEPER 2>/dev/null
check "...and removes it" [ ! -e "$STRATA_HOME/running/ghost.run" ]

expect_error "run of an unknown ref" 1 "unknown ref 'nope'" "$S" run nope
expect_error "resume of a layer without a state" 1 "has no saved qemu state to resume" "$S" run linux-ci --resume
expect_error "unknown driver" 1 "unknown driver 'xen'" "$S" run linux-ci --driver xen
expect_error "vz is refused off macOS" 1 "the vz driver needs macOS" "$S" run linux-ci --driver vz
expect_error "bad --cpus" 1 "--cpus 0: a whole number from 1 to 64" "$S" run linux-ci --cpus 0
expect_error "suspend of an unknown instance" 1 "no running instance 'ghost'" "$S" suspend ghost

echo "timing: cold boot to heartbeat ${cold:-?} s, resume to heartbeat ${resume_r1:-?} s / ${resume_r2:-?} s"
finish
