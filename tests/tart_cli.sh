#!/bin/bash
# The tart-compatible command (cli/tart.c, boot/tartvm.c): strata run
# through a link named `tart`, first in a temporary PATH directory, driven
# exactly as the fleet tools drive tart. The command sequences Orchard's
# worker and gitlab-tart-executor send are replayed here, each step
# quoting the source file and function it comes from (cirruslabs/orchard
# b30bb5b, cirruslabs/gitlab-tart-executor 6e163f8), against the test guest
# with an ssh server (tests/guest/mksshguest.sh), pulled from a real
# docker-registry on 127.0.0.1. `tart list --format json` and `tart get
# --format json` are decoded as those tools decode them (Go's
# encoding/json into their structs; mirrored in python below).
# Two cold boots in all (one per tool) and one resume; software emulation
# may make them slow, so every wait is driven by the guest's readiness.
. "$(dirname "$0")/lib.sh"
export STRATA_HOME=$W/store DOCKER_CONFIG=$W/docker XDG_CACHE_HOME=$W/cache
rm -rf "$W"/store* "$W"/docker "$W"/cache "$W"/reg-* "$W"/bin "$W"/sshg* "$W"/id* "$W"/b1 "$W"/m1 "$W"/*.log
. "$(dirname "$0")/registry_lib.sh"
unset STRATA_HOST_ID TART_REGISTRY_USERNAME TART_REGISTRY_PASSWORD

# the tart entry point: a link named tart, found on the PATH as the tools find it
mkdir -p "$W/bin" && ln -s "$S" "$W/bin/tart"
export PATH=$W/bin:$PATH
check "a link named tart to strata is what the PATH finds" [ "$(command -v tart)" = "$W/bin/tart" ]

# ---- decoding as the tools do. Go's encoding/json matches a key to a
# field case-insensitively, ignores unknown keys, and fails on a value of
# the wrong type. Orchard's internal/worker/vmmanager/vmmanager.go:
#   type VMInfo struct { Name string; Source string; State string; Running bool }
# decoded by internal/worker/vmmanager/base/cmd.go List() into []VMInfo;
# gitlab-tart-executor's internal/tart/vm.go:
#   type VMInfo struct { OS string `json:"os"` }   decoded by (*VM).Info()
go_decode() { # FILE STRUCT-SPEC ("Name:str,Running:bool"), array|object: prints field=value lines
    python3 - "$@" <<'EOF'
import json, sys
path, spec, shape = sys.argv[1], sys.argv[2], sys.argv[3]
fields = [f.split(":") for f in spec.split(",")]
types = {"str": str, "bool": bool}
def decode(obj):
    if not isinstance(obj, dict):
        sys.exit("json: cannot unmarshal %s into a struct" % type(obj).__name__)
    out = {}
    for name, t in fields:
        keys = [k for k in obj if k.lower() == name.lower()]
        exact = [k for k in keys if k == name]
        if not keys:
            out[name] = {"str": "", "bool": False}[t]  # Go's zero value
            continue
        v = obj[(exact or keys)[0]]
        if type(v) is not types[t]:  # bool is not an int here, nor the reverse
            sys.exit("json: cannot unmarshal %s into field %s of type %s" % (type(v).__name__, name, t))
        out[name] = v
    return out
data = json.load(open(path))
rows = [decode(x) for x in (data or [])] if shape == "array" else [decode(data)]
if shape == "array" and data is not None and not isinstance(data, list):
    sys.exit("json: cannot unmarshal object into []VMInfo")
for r in rows:
    print(" ".join("%s=%s" % (k, json.dumps(v)) for k, v in r.items()))
EOF
}
vmdir() { # NAME: its directory (STORE/tart/vms/ and 20 hex digits of the name's SHA-256)
    echo "$STRATA_HOME/tart/vms/$(printf '%s' "$1" | sha256sum | cut -c1-20)"
}
orchard_list() { # tart list --format json, decoded into Orchard's []VMInfo, into $W/list
    tart list --format json >"$W/list.json" 2>"$W/err" && go_decode "$W/list.json" Name:str,Source:str,State:str,Running:bool array >"$W/list"
}

# ---- errors and formats, before any guest: a synthetic Linux bundle
"$MK" "$W/b1" --size 16M --linux >/dev/null && printf 'kernel' >"$W/b1/vmlinuz"
echo '{"version":1,"os":"linux","boot":{"loader":"linux","kernel":"vmlinuz"}}' >"$W/b1/Settings.json"
run "$S" import "$W/b1" synth
check "import a synthetic bundle as tag synth" [ "$rc" -eq 0 ]
run tart list
check "tart list with no VM: tart's empty table, one empty line, exit 0" [ "$rc" -eq 0 ] && [ "$(cat "$W/out")" = "" ] && [ "$(wc -l <"$W/out")" -eq 1 ]
run tart clone synth vm-a
check "tart clone TAG NAME makes a VM from a strata tag" [ "$rc" -eq 0 ] && [ -f "$(vmdir vm-a)/.strata" ] && [ "$(cat "$(vmdir vm-a)/.tart-name")" = vm-a ]
check "...with a MAC of its own (not the layer's)" [ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("mac",""))' "$(vmdir vm-a)/Settings.json")" != "" ]
expect_error "clone onto a name that exists: exit 1, one line naming it" 1 'VM "vm-a" already exists' tart clone synth vm-a
expect_error "clone from a source that is neither a VM nor a ref: exit 2, as tart's VMDoesNotExist" 2 "unknown ref 'no-such'" tart clone no-such vm-b
expect_error "a new name with '/' is refused as tart's validation does: exit 64" 64 "a local VM's name has no '/'" tart clone synth a/b
expect_error "an unknown VM: tart's message and exit code 2" 2 'the specified VM "nope" does not exist' tart get nope
expect_error "...for run" 2 'the specified VM "nope" does not exist' tart run nope
expect_error "...for ip" 2 'the specified VM "nope" does not exist' tart ip nope
expect_error "...for set" 2 'the specified VM "nope" does not exist' tart set nope --cpu 2
expect_error "...for delete" 2 'the specified VM "nope" does not exist' tart delete nope
expect_error "stop of a VM that is not running: exit 2" 2 'VM "vm-a" is not running' tart stop vm-a
expect_error "suspend of a VM that is not running: exit 2" 2 'VM "vm-a" is not running' tart suspend vm-a
expect_error "an unknown flag: one line naming it, exit 64 (ArgumentParser's)" 64 "unknown option '--frobnicate'" tart run vm-a --frobnicate
expect_error "a flag strata refuses: one line naming it and why, exit 1" 1 "--net-bridged is not supported" tart run vm-a --net-bridged=en0
expect_error "--net-softnet-allow is refused (strata runs no Softnet to enforce it)" 1 "--net-softnet-allow is not supported" tart run vm-a --net-softnet-allow 10.0.0.0/8
expect_error "tart exec: refused in one line (no guest agent)" 1 "tart exec is not supported" tart exec vm-a true
expect_error "a subcommand strata offers elsewhere names it" 1 "use strata gc" tart prune
expect_error "an unknown subcommand: exit 64" 64 "unknown subcommand 'frob'" tart frob
expect_error "ip --resolver agent: refused in one line" 1 "--resolver agent needs tart's guest agent" tart ip vm-a --resolver agent
expect_error "list --source must be local or oci: exit 64" 64 "'disk' is not a valid <source>" tart list --source disk
# gitlab-tart-executor's (*VM).Start() shares its builds dir as "--dir PATH:tag=tart.virtiofs.buildsdir.JOB":
# a tag with '.', which strata's shares don't take (1-36 of [A-Za-z0-9_-])
expect_error "--dir with a tag strata's shares can't carry: refused in one line naming it" 1 \
    "share tag 'tart.virtiofs.buildsdir.4242' must be" tart run vm-a --dir "$W:tag=tart.virtiofs.buildsdir.4242"
expect_error "--dir of a missing folder: refused in one line naming it" 1 "$W/no-such-dir" tart run vm-a --dir "$W/no-such-dir:ro"
run tart clone vm-a vm-b
check "clone of a local VM: its disk committed as a layer, cloned" [ "$rc" -eq 0 ] && grep -qF "VM vm-a committed as layer" "$W/err"
run tart list -q
check "...both listed, sorted" [ "$(cat "$W/out" | tr '\n' ' ')" = "vm-a vm-b " ]
run "$S" clones
check "...and both are clone directories the store knows (strata clones)" [ "$(grep -c "^ok .*/tart/vms/" "$W/out")" = 2 ]
run tart delete vm-b
run tart set vm-a --display-refit
check "a flag accepted and ignored: exit 0 ..." [ "$rc" -eq 0 ]
check "...with its note on stderr" grep -qF "tart set: --display-refit ignored:" "$W/err"
run tart set vm-a --cpu 3 --memory 2048 --display 1280x800px
run tart get vm-a --format json
check "get --format json after set: gitlab-tart-executor's VMInfo decodes it (os=linux)" \
    [ "$(go_decode "$W/out" OS:str object)" = 'OS="linux"' ]
check "...and tart's fields, types and values: CPU 3, Memory 2048 (MB), Display 1280x800" python3 -c '
import json,sys; g=json.load(open(sys.argv[1]))
assert list(g) == ["OS","CPU","Memory","Disk","DiskFormat","Size","Display","Running","State"], list(g)
assert (g["CPU"], g["Memory"], g["Display"], g["DiskFormat"], g["Running"], g["State"]) == (3, 2048, "1280x800", "raw", False, "stopped"), g
assert isinstance(g["Disk"], int) and isinstance(g["Size"], str) and g["Size"].count(".") == 1' "$W/out"
run tart list
check "list, text: tart's columns, Running left out as tart leaves it out" \
    [ "$(head -1 "$W/out" | tr -s ' ')" = "Source Name Disk Size Accessed State" ]
check "...one row per VM: local vm-a ... stopped" grep -qE '^local +vm-a +0 +0 +[0-9]+ seconds? ago +stopped$' "$W/out"
run tart list -q
check "list -q: names only" [ "$(cat "$W/out")" = vm-a ]
run "$S" tart list --source local --format json
check "strata tart SUBCOMMAND is the same entry point" [ "$rc" -eq 0 ] && is_json "$W/out"
run tart fqn vm-a
check "fqn of a local name prints the name, as tart" [ "$rc" -eq 0 ] && [ "$(cat "$W/out")" = vm-a ]
run "$S" ls
check "tart VMs are not tags: strata ls shows only the imported layer's tag" bash -c "! grep -q vm-a '$W/out'"
# a macOS-shaped VM: --random-serial gives it a fresh ECID (tart's set: a new VZMacMachineIdentifier)
"$MK" "$W/m1" --size 8M >/dev/null && echo '{"version":1,"os":"macos","boot":{"loader":"macos"}}' >"$W/m1/Settings.json"
run "$S" import "$W/m1" macbase
run tart clone macbase mac-a
ECID0=$("$S" inspect macbase | grep -oE 'ECID [0-9]+')
run tart set --random-serial mac-a
check "set --random-serial on a macOS VM exits 0" [ "$rc" -eq 0 ]
run "$S" commit "$(vmdir mac-a)" -t macbase:serial
ECID1=$("$S" inspect macbase:serial | grep -oE 'ECID [0-9]+')
check "...and its MachineIdentifier holds a fresh ECID that decodes ($ECID0 -> $ECID1)" [ -n "$ECID1" ] && [ "$ECID0" != "$ECID1" ]
run tart get mac-a --format json
check "...get says darwin, as tart names macOS" [ "$(go_decode "$W/out" OS:str object)" = 'OS="darwin"' ]
run tart delete mac-a
run tart delete vm-a
check "delete a stopped VM" [ "$rc" -eq 0 ] && [ ! -e "$(vmdir vm-a)" ]

# ---- the guest, in a registry
if [ -n "${STRATA_SKIP_BOOT:-}" ]; then
    skipped "the fleet tools' sequences" "STRATA_SKIP_BOOT is set (they boot guests)"; finish; exit
fi
if [ "$(uname)" != Linux ]; then skipped "the fleet tools' sequences" "they boot a guest with qemu on Linux"; finish; exit; fi
for c in qemu-system-x86_64 ssh ssh-keygen setsid; do
    command -v "$c" >/dev/null || { skipped "the fleet tools' sequences" "$c is not installed"; finish; exit; }
done
need_registry "the fleet tools' sequences"
GUEST=${STRATA_GUEST_DIR:-/var/tmp/strata-guest}
if ! bash "$HERE/guest/mkguest.sh" "$GUEST" >"$W/mkguest.log" 2>&1; then
    skipped "the fleet tools' sequences" "could not build the test guest: $(tail -1 "$W/mkguest.log")"; finish; exit
fi
ssh-keygen -q -t ed25519 -N '' -C strata-tart-test -f "$W/id"
if ! bash "$HERE/guest/mksshguest.sh" "$GUEST" "$W/sshg" "$W/id.pub" >"$W/mksshguest.log" 2>&1; then
    skipped "the fleet tools' sequences" "could not build the ssh guest: $(tail -1 "$W/mksshguest.log")"; finish; exit
fi
start_registry tart
IMAGE=127.0.0.1:$PORT/ci/linux-guest:v1
run env STRATA_HOME="$W/store-publisher" "$S" import "$W/sshg" sshguest
run env STRATA_HOME="$W/store-publisher" "$S" push sshguest "$IMAGE"
check "the ssh guest is pushed to the registry as $IMAGE (from another store)" [ "$rc" -eq 0 ]

mark_qemus # none of its qemus outlives this script
cleanup_all() { kill_marked_qemus; cleanup; }
trap cleanup_all EXIT

# the guest's sshd answers a command on host:port (tools retry until it does)
ssh_ok() { # ADDRESS (HOST:PORT) COMMAND...
    local a=$1; shift
    ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=10 \
        -o LogLevel=ERROR -i "$W/id" -p "${a##*:}" "root@${a%:*}" "$@"
}
# RUNNING: the pid of the `tart run` in the background; the retries below
# give up as soon as it has ended (the VM can't come up any more)
ssh_retry() { # ADDRESS OUTFILE COMMAND...: until the command runs, at most 10 minutes
    local a=$1 out=$2 t0=$SECONDS; shift 2
    : >"$out"
    while [ $((SECONDS - t0)) -lt 600 ] && kill -0 "$RUNNING" 2>/dev/null; do
        ssh_ok "$a" "$@" >"$out" 2>"$W/ssh.err" && return 0
        sleep 1
    done
    return 1
}
ip_retry() { # ARGS...: `tart ip --wait 60 ARGS` until it answers, as both tools retry
    local i
    for i in 1 2 3 4 5; do
        tart ip --wait 60 "$@" >"$W/ip" 2>"$W/ip.err" && return 0
        kill -0 "$RUNNING" 2>/dev/null || return 1
    done
    return 1
}
gone() { # PID: the process ended by itself within 120 s
    local i; for ((i = 0; i < 600; i++)); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.2; done; return 1
}

# ==== Orchard's worker: internal/worker/vmmanager/tart/tart.go ====
VM=orchard-ci-1-3f2a9c1e-4b7d-4e21-9a0c-5d6e7f8a9b0c-0 # ondiskname.OnDiskName.String()
# NewVM(), with ImagePullPolicyAlways: Tart(ctx, "pull", vm.resource.Image)
run tart pull "$IMAGE"
check "orchard: tart pull IMAGE (from the registry, through strata pull's own call)" [ "$rc" -eq 0 ]
# cloneAndConfigure(): Tart("clone", Image, id()), then Tart("fqn", Image), whose error is ignored
run tart clone "$IMAGE" "$VM"
check "orchard: tart clone IMAGE $VM" [ "$rc" -eq 0 ]
run tart fqn "$IMAGE"
check "orchard: tart fqn IMAGE fails in one line, which cloneAndConfigure tolerates (no FQN recorded)" [ "$rc" -eq 1 ] && [ "$(wc -l <"$W/err")" -eq 1 ]
# ...Tart("set", "--memory", N, id), ("set", "--cpu", N, id), ("set", "--disk-size", N, id),
# ("set", "--random-mac", id) and, with RandomSerial, ("set", "--random-serial", id)
MAC0=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["mac"])' "$(vmdir "$VM")/Settings.json")
run tart set --memory 512 "$VM"; r1=$rc
run tart set --cpu 1 "$VM"; r2=$rc
run tart set --disk-size 2 "$VM"; r3=$rc
run tart set --random-mac "$VM"; r4=$rc
run tart set --random-serial "$VM"; r5=$rc
check "orchard: set --memory, --cpu, --disk-size, --random-mac, --random-serial all exit 0" [ "$r1$r2$r3$r4$r5" = 00000 ]
MAC1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["mac"])' "$(vmdir "$VM")/Settings.json")
check "...--random-mac gave a new MAC ($MAC0 -> $MAC1)" [ -n "$MAC1" ] && [ "$MAC0" != "$MAC1" ]
run tart get "$VM" --format json
check "...memory 512 MB, 1 CPU, a disk grown to 2 GB (decimal, as tart's --disk-size)" python3 -c '
import json,sys; g=json.load(open(sys.argv[1])); assert (g["Memory"], g["CPU"], g["Disk"]) == (512, 1, 2), g' "$W/out"
check "...the disk is exactly 2,000,000,000 bytes" [ "$(stat -c %s "$(vmdir "$VM")/Disk.img")" = 2000000000 ]
# run(): runArgs = ["run", "--no-graphics" (Headless), "--nested" (Nested), "--suspendable",
# "--dir=..." (HostDirs: none here), id()], run by Tart() until the VM ends (a goroutine)
tart run --no-graphics --nested --suspendable "$VM" >"$W/orchard-run.log" 2>&1 &
RUN1=$! RUNNING=$!
# IP(): Tart("ip", "--wait", "60", id()), retried by RunScript's retry.Do
ip_retry "$VM"
check "orchard: tart ip --wait 60 answers once the VM runs: the forwarded ssh address" grep -qxE '127\.0\.0\.1:[0-9]+' "$W/ip"
A1=$(cat "$W/ip")
check "...--nested was accepted and ignored, with its note in tart run's output" grep -qF "tart run: --nested ignored:" "$W/orchard-run.log"
# RunScript() -> Shell(): ssh to the address, a script run in the guest's shell
ssh_retry "$A1" "$W/ssh.out" 'uname -s; echo orchard > /tmp/marker; cat /proc/cmdline'
check "orchard: a command runs in the guest over ssh" grep -qx Linux "$W/ssh.out" && grep -q "panic=-1" "$W/ssh.out"
[ -s "$W/ssh.out" ] || sed 's/^/    console: /' "$(vmdir "$VM")/.console.log" 2>/dev/null | tail -15
# worker.go syncOnDiskVMs() reads base.List(): Cmd("list", "--format", "json") into []VMInfo
orchard_list
check "orchard: list --format json decodes into []VMInfo" [ $? -eq 0 ]
check "...the VM: Source local, Running true, State running" grep -qxF "Name=\"$VM\" Source=\"local\" State=\"running\" Running=true" "$W/list"
check "...the pulled image: Source OCI, stopped" grep -qxF "Name=\"$IMAGE\" Source=\"OCI\" State=\"stopped\" Running=false" "$W/list"
run "$S" ps
check "strata ps shows it as instance tart:$VM" grep -q "^tart:$VM " "$W/out"
expect_error "run of a VM that already runs: tart's message, exit 2" 2 "VM \"$VM\" is already running!" tart run "$VM"
expect_error "delete of a running VM: refused, as tart (VM is running), exit 1" 1 "VM \"$VM\" is running" tart delete "$VM"
# Suspend(): Tart("suspend", id()); then Start(): run() again, which resumes it
run tart suspend "$VM"
check "orchard: tart suspend" [ "$rc" -eq 0 ]
check "...tart run returns once the VM is suspended, exit 0" gone "$RUN1" && wait "$RUN1"
orchard_list
check "...list says suspended, Running false" grep -qxF "Name=\"$VM\" Source=\"local\" State=\"suspended\" Running=false" "$W/list"
tart run --no-graphics --nested --suspendable "$VM" >"$W/orchard-run2.log" 2>&1 &
RUN2=$! RUNNING=$!
ip_retry "$VM"
A2=$(cat "$W/ip")
ssh_retry "$A2" "$W/ssh.out" 'cat /tmp/marker'
check "orchard: run after suspend resumes the guest where it was (its /tmp kept: a RAM disk)" grep -qx orchard "$W/ssh.out"
check "...tart run said it resumed" grep -qF "was suspended: resuming it" "$W/orchard-run2.log"
# Stop(): Tart("stop", "--timeout", "5", id()), then vm.cancel() ends "tart run" if it still runs
run tart stop --timeout 5 "$VM"
check "orchard: tart stop --timeout 5 (the test guest ignores the power button: forced after 5 s)" [ "$rc" -eq 0 ]
check "...tart run ended by itself, exit 0" gone "$RUN2" && wait "$RUN2"
kill -9 "$RUN2" 2>/dev/null # what vm.cancel() does to it
# Delete(): Tart("delete", id())
run tart delete "$VM"
check "orchard: tart delete" [ "$rc" -eq 0 ] && [ ! -e "$(vmdir "$VM")" ]
orchard_list
check "...and list no longer has it" bash -c "! grep -q '$VM' '$W/list'"
# syncOnDiskVMs(): an on-disk orchard- VM the controller doesn't know is stopped if Running, then deleted
tart clone "$IMAGE" orchard-lost-1-00000000-0000-0000-0000-000000000000-0 2>/dev/null
tart clone "$IMAGE" someone-elses-vm 2>/dev/null
orchard_list
while read -r line; do
    name=$(echo "$line" | sed -E 's/^Name="([^"]*)".*/\1/')
    case $name in orchard-*) ;; *) continue ;; esac # ondiskname.Parse: ErrNotManagedByOrchard
    case $line in *"Running=true"*) tart stop "$name" ;; esac
    tart delete "$name"
done <"$W/list"
orchard_list
check "orchard: syncOnDiskVMs deletes the lost orchard- VM and leaves the others" \
    bash -c "! grep -q orchard-lost '$W/list' && grep -q someone-elses-vm '$W/list'"

# ==== gitlab-tart-executor: internal/commands/prepare/prepare.go runPrepareVM() ====
JOB=gitlab-4242 # gitlab.Env.VirtualMachineID(): "gitlab-" + CI_JOB_ID
# AlwaysPull: tart.TartExecWithEnv("pull", JobImage, "--concurrency", N)
run tart pull "$IMAGE" --concurrency 4
check "gitlab: tart pull IMAGE --concurrency 4 (pulled before: quick)" [ "$rc" -eq 0 ]
# tart.CreateNewVM() -> cloneAndConfigure() (internal/tart/vm.go): clone, then set --cpu,
# set --memory, set --random-mac (RandomMAC defaults to true), set --display
run tart clone "$IMAGE" "$JOB" --concurrency 4; r1=$rc
run tart set --cpu 1 "$JOB"; r2=$rc
run tart set --memory 384 "$JOB"; r3=$rc
run tart set --random-mac "$JOB"; r4=$rc
run tart set --display 1024x768 "$JOB"; r5=$rc
check "gitlab: clone, set --cpu, --memory, --random-mac, --display all exit 0" [ "$r1$r2$r3$r4$r5" = 00000 ]
# (*VM).Start(): "run" [--root-disk-opts OPTS] "--no-graphics" (Headless, the default) id,
# in a new session (Setsid), its output appended to $TMPDIR/<id>-tart-run-output.log
RUNLOG=$W/$JOB-tart-run-output.log
setsid tart run --root-disk-opts sync=none,caching=cached --no-graphics "$JOB" >>"$RUNLOG" 2>&1 &
RUN3=$! RUNNING=$!
# (*VM).OpenSSH() -> (*VM).IP(): "ip", "--wait", "60", "--resolver", "dhcp", id, retried each second
ip_retry --resolver dhcp "$JOB"
check "gitlab: tart ip --wait 60 --resolver dhcp" grep -qxE '127\.0\.0\.1:[0-9]+' "$W/ip"
A3=$(cat "$W/ip")
check "...--root-disk-opts reached the instance's settings (sync none, caching cached)" python3 -c '
import json,sys; s=json.load(open(sys.argv[1])); d=s.get("disk",s)
t=json.dumps(s); assert "\"none\"" in t and "\"cached\"" in t, t' "$(vmdir "$JOB")/Settings.json"
ssh_retry "$A3" "$W/ssh.out" 'echo job-output; exit 0'
check "gitlab: the job's script runs in the guest over ssh" grep -qx job-output "$W/ssh.out"
# (*VM).Info(): "get", "--format", "json", id, decoded into VMInfo{OS}
run tart get --format json "$JOB"
check "gitlab: get --format json decodes into VMInfo: os linux (not darwin: sudo mount -t virtiofs)" \
    [ "$(go_decode "$W/out" OS:str object)" = 'OS="linux"' ]
run tart list
check "list text shows the running VM" grep -qE "^local +$JOB +[0-9]+ +[0-9]+ +.* ago +running$" "$W/out"
# internal/commands/cleanup/cleanup.go cleanupVM(): (*VM).Stop() "stop" id, then (*VM).Delete() "delete" id
run tart stop "$JOB"
check "gitlab: tart stop (tart's default 30 s, then forced)" [ "$rc" -eq 0 ]
check "...the session's tart run ended, exit 0" gone "$RUN3" && wait "$RUN3"
run tart delete "$JOB"
check "gitlab: tart delete" [ "$rc" -eq 0 ]
tart delete someone-elses-vm
orchard_list
check "at the end only the pulled image is listed" [ "$(cat "$W/list")" = "Name=\"$IMAGE\" Source=\"OCI\" State=\"stopped\" Running=false" ]
run "$S" fsck --quick
check "the store checks out after it all" [ "$rc" -eq 0 ]
finish
