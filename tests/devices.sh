#!/bin/bash
# The Sonoma-era devices (issue 18, section 3) from the command line, and
# under the qemu driver with the real test guest (tests/guest/mkguest.sh):
#   - set and run refuse bad values in one line naming the option, and
#     change nothing; set writes the fields docs/settings.md describes;
#   - the guest boots from an NBD export served by qemu-nbd over a Unix
#     socket (run --disk-nbd), writes its counter into the export and not
#     into the instance's Disk.img, and such a VM refuses to be suspended;
#   - extra disks (virtio, USB mass storage, NVMe) and an NVMe boot disk are
#     accepted by QEMU: the guest boots with the extras and QEMU reports the
#     controllers. The test guest's initramfs has only the virtio modules
#     and mounts /dev/vda, so it can't show that it sees the USB or NVMe
#     disks, nor boot from NVMe: QEMU's own PCI and block lists prove those.
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
export STRATA_HOME=$W/store
unset STRATA_QEMU_ACCEL STRATA_HOST_ID
rm -rf "$STRATA_HOME" "$W"/in "$W"/cl "$W"/nbd*

# ---- without a guest: bad values, and what set writes ----
mkdir -p "$W/in"
echo kernel >"$W/in/k"
truncate -s 4M "$W/in/data.img" "$W/in/stick.img"
"$S" create linux t --kernel "$W/in/k" --disk-size 64M >/dev/null 2>&1
has_layer() { "$S" inspect "$1" >/dev/null 2>&1; }
check "a layer to change" has_layer t
S0=$(snapshot)
expect_error "set --disk-sync that is no mode" 1 "--disk-sync 'often' must be full, fsync or none" "$S" set t --disk-sync often
expect_error "set --disk-cache that is no mode" 1 "--disk-cache 'lots' must be automatic, cached or uncached" "$S" set t --disk-cache lots
expect_error "set --disk-bus usb" 1 "--disk-bus usb: the boot disk is virtio or nvme" "$S" set t --disk-bus usb
expect_error "set --disk-bus that is no bus" 1 "--disk-bus 'scsi' must be virtio or nvme" "$S" set t --disk-bus scsi
expect_error "set --disk-nbd that is no NBD URL" 1 "--disk-nbd 'http://x/disk' must be nbd://HOST[:PORT][/EXPORT] or nbd+unix:///EXPORT?socket=/ABSOLUTE/PATH" "$S" set t --disk-nbd http://x/disk
expect_error "set --disk-nbd with a relative socket" 1 "--disk-nbd 'nbd+unix:///d?socket=x.sock' must be" "$S" set t --disk-nbd 'nbd+unix:///d?socket=x.sock'
expect_error "set --rosetta with a bad tag" 1 "--rosetta 'a b' must be 1-36 of [A-Za-z0-9_-]" "$S" set t --rosetta 'a b'
expect_error "set --display-reconfigure that is no choice" 1 "--display-reconfigure 'yes' must be on, off or auto" "$S" set t --display-reconfigure yes
expect_error "set --add-disk of a missing file" 1 "--add-disk $W/in/nope: No such file or directory" "$S" set t --add-disk "$W/in/nope"
expect_error "set --remove-disk of an unknown disk" 1 "--remove-disk nope: no extra disk has that name" "$S" set t --remove-disk nope
expect_error "run --disk-sync that is no mode" 1 "--disk-sync 'often' must be full, fsync or none" "$S" run t --disk-sync often --driver qemu
expect_error "run --disk-nbd that is no NBD URL" 1 "--disk-nbd 'nbd:/x' must be" "$S" run t --disk-nbd nbd:/x --driver qemu
expect_error "run --resume with device options" 1 "a saved state keeps the devices it was saved with" "$S" run t --resume --disk-bus nvme --driver qemu
check "...and none of them changed the store" [ "$(snapshot)" = "$S0" ]

run "$S" set t --disk-bus nvme --disk-sync none --disk-cache uncached --rosetta rosetta \
    --add-disk "$W/in/data.img" --add-disk "$W/in/stick.img:usb:ro" --display-reconfigure off \
    --disk-nbd 'nbd+unix:///disk?socket=/run/x.sock'
check "set with every device option makes a child layer" [ "$rc" -eq 0 ]
"$S" clone t "$W/cl" >/dev/null 2>&1
json_of() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps(eval(sys.argv[2]), sort_keys=True))' "$W/cl/Settings.json" "$1"; }
check "...disk: bus, modes and the NBD URL" [ "$(json_of 'd["disk"]')" = '{"bus": "nvme", "caching": "uncached", "nbd": "nbd+unix:///disk?socket=/run/x.sock", "sync": "none"}' ]
check "...the extra disks, copied into the bundle" [ "$(json_of 'd["disks"]')" = '[{"bus": "virtio", "file": "data.img", "read_only": false}, {"bus": "usb", "file": "stick.img", "read_only": true}]' ] && cmp -s "$W/in/stick.img" "$W/cl/stick.img"
check "...rosetta and the display's reconfiguration" [ "$(json_of '[d["rosetta"], d["display"]["reconfigure"]]')" = '[{"tag": "rosetta"}, false]' ]
run "$S" set "$W/cl" --remove-disk stick.img --disk-nbd none --rosetta none --disk-bus virtio
check "set --remove-disk, --disk-nbd none, --rosetta none on a clone" [ "$rc" -eq 0 ] && [ ! -e "$W/cl/stick.img" ] && [ "$(json_of '[sorted(d), sorted(d["disk"])]')" = '[["boot", "cpus", "disk", "disks", "display", "mac", "memory_mib", "os", "version"], ["caching", "sync"]]' ]
cp "$W/cl/Settings.json" "$W/settings.before"
expect_error "set with one bad value among good ones" 1 "--disk-cache 'fast' must be automatic, cached or uncached" "$S" set "$W/cl" --cpus 4 --disk-bus nvme --disk-cache fast
check "...changes nothing" cmp -s "$W/cl/Settings.json" "$W/settings.before"

# ---- with the test guest, under qemu ----
if [ "$(uname)" != Linux ]; then
    skipped "qemu device tests" "they need a Linux host"; finish; exit
fi
GUEST=${STRATA_GUEST_DIR:-/var/tmp/strata-guest}
if ! bash "$HERE/guest/mkguest.sh" "$GUEST" >"$W/mkguest.log" 2>&1; then
    skipped "qemu device tests" "could not build the test guest: $(tail -1 "$W/mkguest.log")"; finish; exit
fi
for c in qemu-system-x86_64 qemu-nbd debugfs; do
    command -v "$c" >/dev/null || { skipped "qemu device tests" "$c is not installed"; finish; exit; }
done
PIDS=""
mark_qemus
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; done; kill_marked_qemus; true; }
trap cleanup EXIT
counter_in() { debugfs -R "cat /counter" "$1" 2>/dev/null | tr -dc 0-9; }
qmp_cli() { # NAME COMMAND: a QMP command on the instance's second monitor
    python3 - "$STRATA_HOME/vms/$1/.qmp-cli.sock" "$2" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
f.readline(); f.write('{"execute":"qmp_capabilities"}\n'); f.flush(); f.readline()
f.write(json.dumps({"execute": sys.argv[2]}) + "\n"); f.flush()
while True:
    r = json.loads(f.readline())
    if "return" in r: print(json.dumps(r["return"])); break
EOF
}
cp -a "$GUEST/guest.bundle" "$W/gb"
"$S" import "$W/gb" guest >/dev/null 2>&1
check "import the guest" has_layer guest

# NBD: the guest's disk served by qemu-nbd on a Unix socket
cp --sparse=always "$W/gb/Disk.img" "$W/nbd.img"
qemu-nbd --fork --persistent --format=raw --export-name=disk --socket="$W/nbd.sock" \
    --pid-file="$W/nbd.pid" "$W/nbd.img" 2>"$W/nbd.log"
[ -f "$W/nbd.pid" ] && PIDS="$PIDS $(cat "$W/nbd.pid")"
"$S" run guest --name nbd --driver qemu --accel tcg --disk-nbd "nbd+unix:///disk?socket=$W/nbd.sock" >"$W/run-nbd.log" 2>&1 &
PIDS="$PIDS $!"
if wait_for "$(console nbd)" '^HEARTBEAT.*counter=3' 180; then
    ok "the guest boots from an NBD export (qemu-nbd, nbd+unix) and counts on it"
    check "...run said it can't be suspended" grep -q "this VM can't be suspended: its boot disk is the NBD export nbd+unix:///disk?socket=$W/nbd.sock" "$W/run-nbd.log"
    expect_error "...suspend refuses it, in one line" 1 "boot disk is the NBD export" "$S" suspend nbd -t nope
    check "...and it goes on running" wait_for "$(console nbd)" '^HEARTBEAT.*counter=5' 60
    "$S" stop nbd --timeout 20 >/dev/null 2>&1
    check "...its writes are in the export, not in the instance's Disk.img" \
        [ "$(counter_in "$W/nbd.img")" -ge 5 ] && [ -z "$(counter_in "$STRATA_HOME/vms/nbd/Disk.img")" ]
    check "...and the instance's settings do not name the export (one run only)" \
        bash -c "! grep -q nbd '$STRATA_HOME/vms/nbd/Settings.json'"
else
    bad "the guest boots from an NBD export"; tail -3 "$W/run-nbd.log" "$(console nbd)"
fi
[ -f "$W/nbd.pid" ] && kill "$(cat "$W/nbd.pid")" 2>/dev/null

# extra disks on each bus, with a virtio boot disk the guest mounts
truncate -s 8M "$W/in/v.img" "$W/in/u.img" "$W/in/n.img"
"$S" set guest -t extras --add-disk "$W/in/v.img" --add-disk "$W/in/u.img:usb:ro" --add-disk "$W/in/n.img:nvme" >/dev/null 2>"$W/err"
check "set --add-disk on the guest" has_layer extras
"$S" run extras --name extras --driver qemu --accel tcg >"$W/run-extras.log" 2>&1 &
PIDS="$PIDS $!"
if wait_for "$(console extras)" '^HEARTBEAT' 180; then
    ok "the guest boots with extra virtio, USB and NVMe disks attached"
    qmp_cli extras query-block >"$W/blocks.json"
    check "...QEMU has each extra disk, the USB one read-only" python3 -c '
import json, sys
b = {d["device"] or d["qdev"]: d for d in json.load(open(sys.argv[1]))}
files = sorted(d["inserted"]["file"].rsplit("/", 1)[-1] for d in b.values() if "inserted" in d)
ro = [d["inserted"]["file"].rsplit("/", 1)[-1] for d in b.values() if d.get("inserted", {}).get("ro")]
sys.exit(0 if files == ["Disk.img", "n.img", "u.img", "v.img"] and ro == ["u.img"] else 1)' "$W/blocks.json"
    qmp_cli extras query-pci >"$W/pci.json"
    check "...on an xHCI controller and an NVMe controller" python3 -c '
import json, sys
cls = {d["class_info"]["class"] for bus in json.load(open(sys.argv[1])) for d in bus["devices"]}
sys.exit(0 if {0x0c03, 0x0108} <= cls else 1)  # USB controller, NVM Express' "$W/pci.json"
    "$S" stop extras --timeout 20 >/dev/null 2>&1
else
    bad "the guest boots with extra disks"; tail -3 "$W/run-extras.log" "$(console extras)"
fi

# an NVMe boot disk: QEMU takes it; this guest's initramfs can't mount it
"$S" run guest --name nvme --driver qemu --accel tcg --disk-bus nvme --ephemeral >"$W/run-nvme.log" 2>&1 &
PIDS="$PIDS $!"
if wait_for "$(console nvme)" 'no /dev/vda|BOOTED' 180; then
    qmp_cli nvme query-block >"$W/nvme.json"
    qmp_cli nvme query-pci >"$W/nvme-pci.json"
    check "run --disk-bus nvme: QEMU has Disk.img as the NVMe controller's drive (not virtio)" python3 -c '
import json, sys
d = [b for b in json.load(open(sys.argv[1])) if b.get("inserted", {}).get("file", "").endswith("/Disk.img")]
cls = {d["class_info"]["class"] for bus in json.load(open(sys.argv[2])) for d in bus["devices"]}
sys.exit(0 if d and d[0]["device"] == "disk0" and 0x0108 in cls else 1)' "$W/nvme.json" "$W/nvme-pci.json"
    check "...written into the instance's settings" grep -q '"bus": "nvme"' "$STRATA_HOME/vms/nvme/Settings.json"
    check "...and the guest, without an NVMe driver, finds no /dev/vda (what it can show)" grep -q 'no /dev/vda' "$(console nvme)"
    "$S" stop nvme --force >/dev/null 2>&1
else
    bad "run --disk-bus nvme"; tail -3 "$W/run-nvme.log"
fi
finish
