#!/bin/bash
# create linux and set, end to end with the qemu driver (issue 11):
#   - a GPT disk whose EFI partition boots GRUB (a cloud image in
#     miniature, as qcow2) made a VM: converted, grown, UEFI with a fresh
#     variable store; set grows its disk and adds a share, and one boot
#     shows all three inside the guest;
#   - an ISO made by grub-mkrescue attached as installer media: the guest
#     boots from the CD drive;
#   - a kernel, initrd and command line, booted directly;
#   - a layer that came from an archive opens none of its shares until they
#     are named at run time;
#   - bad input: one line, no layer.
# The guest (tests/guest/mkcreate.sh) reports and powers off, so each boot
# is one `strata run` that ends by itself. Software emulation (--accel tcg):
# KVM hangs guests on the build machine.
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
export STRATA_HOME=$W/store
unset STRATA_HOST_ID
rm -rf "$STRATA_HOME" "$W/store2" "$W/err" "$W/c1" "$W/c2" "$W/tiny.tar.zst"

# ---- without a guest: bad input, and what create and set write ----
mkdir -p "$W/in"
truncate -s 100M "$W/in/raw.img"
qemu-img create -q -f qcow2 "$W/in/big.qcow2" 200M 2>/dev/null
echo junk >"$W/in/junk"
[ -f "$W/in/big.qcow2" ] && head -c 100 "$W/in/big.qcow2" >"$W/in/cut.qcow2"

"$S" ls >/dev/null 2>&1 # the store exists before its snapshot
S0=$(snapshot)
expect_error "create without a source" 1 "create linux takes one of --disk-image, --iso or --kernel" "$S" create linux x --disk-size 1G
expect_error "create --iso without --disk-size" 1 "--disk-size is needed" "$S" create linux x --iso "$W/in/junk"
expect_error "--disk-size that is no size" 1 "--disk-size 12Q: a size like 8G" "$S" create linux x --kernel "$W/in/junk" --disk-size 12Q
expect_error "a missing disk image" 1 "$W/in/nope: not a disk image qemu-img can read" "$S" create linux x --disk-image "$W/in/nope"
expect_error "a file that is no disk image" 1 "$W/in/junk: not a disk image (neither qcow2 nor whole 512-byte sectors)" "$S" create linux x --disk-image "$W/in/junk"
if [ -f "$W/in/cut.qcow2" ]; then
    expect_error "a qcow2 image qemu-img can't read" 1 "$W/in/cut.qcow2: not a disk image qemu-img can read (qemu-img:" "$S" create linux x --disk-image "$W/in/cut.qcow2"
    expect_error "--disk-size smaller than the image" 1 "--disk-size 100M is smaller than the image $W/in/big.qcow2 (200M): disks only grow" "$S" create linux x --disk-image "$W/in/big.qcow2" --disk-size 100M
else
    skipped "bad qcow2 images" "qemu-img could not make one"
fi
expect_error "an --iso that is not one" 1 "--iso $W/in/junk: not an ISO 9660 image" "$S" create linux x --iso "$W/in/junk" --disk-size 1G
expect_error "a missing kernel" 1 "--kernel $W/in/nope: No such file or directory" "$S" create linux x --kernel "$W/in/nope" --disk-size 1G
check "...and none of them made a layer or left work behind" [ "$(snapshot)" = "$S0" ]
check "...nor anything in tmp" tmp_empty

run "$S" create linux plain --disk-image "$W/in/raw.img" --disk-size 1G
check "create from a raw image prints the layer" grep -qE '^[0-9a-f]{64}$' "$W/out"
B1=$STRATA_HOME/layers/$(cat "$W/out")/bundle
check "...a sparse Disk.img grown to --disk-size" [ "$(stat -c %s "$B1/Disk.img")" -eq 1073741824 ] && [ "$(allocated_kib "$B1/Disk.img")" -lt 1024 ]
check "...a fresh EFI variable store, OVMF's template" cmp -s "$B1/NVRAM" /usr/share/OVMF/OVMF_VARS_4M.fd
check "...the efi loader with it" grep -q '"variable_store": "NVRAM"' "$B1/Settings.json"
run "$S" inspect plain
check "...tagged with its name" [ "$rc" -eq 0 ]
expect_error "create refuses a name already tagged" 1 "a layer is already tagged plain" "$S" create linux plain --disk-image "$W/in/raw.img"

mkdir -p "$W/share"
echo "hello-from-host-$$" >"$W/share/hello.txt"
S0=$(snapshot)
expect_error "set shrinking the disk" 1 "--disk-size 512M is smaller than the disk (1G): disks only grow" "$S" set plain --disk-size 512M
expect_error "set with a share path that does not exist" 1 "share src: $W/nope" "$S" set plain --share "src=$W/nope"
expect_error "set with a bad share tag" 1 "share tag 'a b' must be 1-36 of" "$S" set plain --share "a b=$W/share"
expect_error "set --cpus out of range" 1 "--cpus 99" "$S" set plain --cpus 99
expect_error "set --mac that is multicast" 1 "--mac '01:00:5e:00:00:01' must be auto or a unicast MAC" "$S" set plain --mac 01:00:5e:00:00:01
expect_error "set --unshare of an unknown tag" 1 "--unshare nope: no shared folder has that tag" "$S" set plain --unshare nope
expect_error "set with nothing to change" 1 "set: nothing to change" "$S" set plain
check "...and none of them changed the store" [ "$(snapshot)" = "$S0" ]
PLAIN=$("$S" inspect plain --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
run "$S" set plain --cpus 3 --memory 2G --disk-size 2G --display 1280x800 --mac 52:54:00:aa:bb:cc --share "src=$W/share:ro"
check "set on a layer prints a child layer" grep -qE '^[0-9a-f]{64}$' "$W/out"
CHILD=$(cat "$W/out")
B2=$STRATA_HOME/layers/$CHILD/bundle
check "...whose parent is the layer" [ "$("$S" inspect "$CHILD" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["parent"])')" = "$PLAIN" ]
check "...and the tag moved to it" [ "$("$S" inspect plain --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')" = "$CHILD" ]
check "...with the settings asked for" python3 - "$B2/Settings.json" "$W/share" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["cpus"] == 3 and s["memory_mib"] == 2048 and s["mac"] == "52:54:00:aa:bb:cc", s
assert s["display"] == {"width": 1280, "height": 800, "ppi": 80}, s
assert s["shared_folders"] == [{"tag": "src", "path": sys.argv[2], "read_only": True}], s
EOF
check "...and the disk grown, still sparse" [ "$(stat -c %s "$B2/Disk.img")" -eq 2147483648 ] && [ "$(allocated_kib "$B2/Disk.img")" -lt 1024 ]
run "$S" set plain --mac auto -t other
check "set --mac auto writes a fresh MAC; -t names the child" grep -q '"mac": "[0-9a-f:]*"' "$STRATA_HOME/layers/$(cat "$W/out")/bundle/Settings.json" &&
    ! grep -q 52:54:00:aa:bb:cc "$STRATA_HOME/layers/$(cat "$W/out")/bundle/Settings.json" &&
    [ "$("$S" inspect plain --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')" = "$CHILD" ]
"$S" clone plain "$W/c1" 2>/dev/null
S0=$(snapshot)
run "$S" set "$W/c1" --disk-size 3G --unshare src --cpus 1
check "set on a clone changes it in place, printing nothing" [ "$rc" -eq 0 ] && [ ! -s "$W/out" ] && [ "$(stat -c %s "$W/c1/Disk.img")" -eq 3221225472 ]
check "...its settings too" python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if s["cpus"]==1 and "shared_folders" not in s else 1)' "$W/c1/Settings.json"
check "...and no layer was made" [ "$(snapshot)" = "$S0" ]
run "$S" commit "$W/c1" -m grown
check "...the clone commits as a child" [ "$rc" -eq 0 ]
# a clone in use (a running VM holds its busy lock) is not changed under it
echo "running instance x; strata suspend or stop it first" >"$W/c1/.strata-busy"
flock "$W/c1/.strata-busy" sleep 30 &
HOLDER=$!
sleep 0.3
cp "$W/c1/Settings.json" "$W/c1-settings"
expect_error "set on a clone in use is refused" 1 "$W/c1 is in use by running instance x" "$S" set "$W/c1" --cpus 2
check "...and leaves it as it was" cmp -s "$W/c1/Settings.json" "$W/c1-settings"
kill "$HOLDER" 2>/dev/null; wait "$HOLDER" 2>/dev/null

# ---- guests ----
GUEST=${STRATA_GUEST_DIR:-/var/tmp/strata-guest}
G=$W/guest
boot_ok=1
if [ "$(uname)" != Linux ] || ! command -v qemu-system-x86_64 >/dev/null; then
    skipped "create and set in a guest" "they need qemu-system-x86_64 on Linux"; boot_ok=0
elif ! bash "$HERE/guest/mkguest.sh" "$GUEST" >"$W/mkguest.log" 2>&1; then
    skipped "create and set in a guest" "could not build the test guest: $(tail -1 "$W/mkguest.log")"; boot_ok=0
elif ! bash "$HERE/guest/mkcreate.sh" "$G" "$GUEST" >"$W/mkcreate.log" 2>&1; then
    skipped "create and set in a guest" "could not build its images: $(tail -1 "$W/mkcreate.log")"; boot_ok=0
fi

mark_qemus # none of its qemus outlives this script
trap 'kill_marked_qemus; true' EXIT

# boot NAME REF ARGS...: run until the guest powers off (at most 5 minutes);
# its report lines are in $W/guest-NAME
boot() {
    local name=$1 t0=$SECONDS; shift
    timeout -k 5 300 "$S" run "$@" --name "$name" --accel tcg >"$W/run-$name.log" 2>&1
    local brc=$?
    echo "    timing: boot $name took $((SECONDS - t0)) s"
    # (firmware and GRUB leave escape sequences at the starts of lines)
    grep -ao 'CREATE-GUEST .*' "$STRATA_HOME/vms/$name/.console.log" 2>/dev/null | tr -d '\r' >"$W/guest-$name"
    grep -q '^CREATE-GUEST end' "$W/guest-$name" || { echo "    run $name exited $brc:"; tail -3 "$W/run-$name.log" | sed 's/^/    /'; }
}
said() { grep -qxF "CREATE-GUEST $2" "$W/guest-$1"; }

if [ "$boot_ok" = 1 ]; then
    # a cloud image in miniature: GPT, EFI partition, GRUB; as qcow2
    run "$S" create linux cloud --disk-image "$G/efi-disk.qcow2" --disk-size 64M
    check "create from a qcow2 EFI disk image" [ "$rc" -eq 0 ]
    check "...converted to raw, kept sparse" [ "$(stat -c %s "$STRATA_HOME/layers/$(cat "$W/out")/bundle/Disk.img")" -eq 67108864 ] &&
        [ "$(allocated_kib "$STRATA_HOME/layers/$(cat "$W/out")/bundle/Disk.img")" -lt 30000 ]
    run "$S" set cloud --disk-size 96M --share "hostshare=$W/share:ro"
    check "set grows its disk and adds a share" [ "$rc" -eq 0 ]
    boot efi cloud
    check "it boots by UEFI from its own disk (GRUB on the EFI partition)" said efi boot=efi-disk
    check "...the guest sees the grown disk (96M)" said efi vda_bytes=100663296
    check "...and the share" said efi "share=hello-from-host-$$"

    run "$S" create linux inst --iso "$G/installer.iso" --disk-size 32M
    check "create from an ISO" [ "$rc" -eq 0 ]
    check "...copied in as installer media" cmp -s "$G/installer.iso" "$STRATA_HOME/layers/$(cat "$W/out")/bundle/Installer.iso" &&
        grep -q '"installer": "Installer.iso"' "$STRATA_HOME/layers/$(cat "$W/out")/bundle/Settings.json"
    boot iso inst
    check "it boots from the ISO on the CD drive" said iso boot=iso
    check "...with the empty disk of --disk-size beside it" said iso vda_bytes=33554432
    check "...which OVMF found on the CD drive" grep -aq 'BdsDxe: starting .*DVD-ROM' "$STRATA_HOME/vms/iso/.console.log"
    run "$S" set inst --installer none
    check "set --installer none detaches it, and its file is gone" [ "$rc" -eq 0 ] &&
        ! grep -q installer "$STRATA_HOME/layers/$(cat "$W/out")/bundle/Settings.json" &&
        [ ! -e "$STRATA_HOME/layers/$(cat "$W/out")/bundle/Installer.iso" ]

    # a kernel, with a share set here, then exported and imported elsewhere
    run "$S" create linux tiny --kernel "$G/vmlinuz" --initrd "$G/initrd.img" --cmdline "console=ttyS0 panic=-1 quiet strata_boot=kernel" --disk-size 16M
    check "create from a kernel, initrd and command line" [ "$rc" -eq 0 ]
    "$S" set tiny --share "hostshare=$W/share:ro" >/dev/null 2>&1
    run "$S" export tiny "$W/tiny.tar.zst"
    check "export it, with its share" [ "$rc" -eq 0 ]
    export STRATA_HOME=$W/store2
    run "$S" import "$W/tiny.tar.zst" tiny
    check "import it into another store" [ "$rc" -eq 0 ]
    # what qemu would be given, from a stand-in that logs its arguments
    fake_run() { # name args...
        local name=$1; shift
        rm -f "$W/starts"
        STRATA_QEMU=$HERE/fakeqemu.sh FAKE_STARTS=$W/starts run "$S" run "$@" --name "$name" --accel tcg --ephemeral
    }
    fake_run away tiny
    check "the imported layer's share is not opened" [ -s "$W/starts" ] && ! grep -q -- "-virtfs" "$W/starts"
    check "...saying so" grep -q "came from outside this host (an archive or a registry): its shared folders (hostshare) are not opened; name those you want with run --share" "$W/err"
    boot named tiny --share "hostshare=$W/share:ro"
    check "the imported kernel layer boots directly" said named boot=kernel
    check "...with its disk of --disk-size" said named vda_bytes=16777216
    check "...and a share named at run time opens" said named "share=hello-from-host-$$"
    expect_error "run --share with a path that does not exist" 1 "share hostshare: $W/nope" "$S" run tiny --share "hostshare=$W/nope"
    # (the same share again would change nothing: still the archive's choice)
    mkdir -p "$W/share2"
    run "$S" set tiny --share "hostshare=$W/share2:ro" -t tiny-here
    check "set on the imported layer: a share of this host's choosing" [ "$rc" -eq 0 ]
    fake_run mine tiny-here
    check "...which a run opens, without a note" grep -q -- "-virtfs local,path=$W/share2,mount_tag=hostshare,security_model=none,readonly=on" "$W/starts" &&
        ! grep -q "came from outside" "$W/err"
    "$S" clone tiny "$W/c2" 2>/dev/null && "$S" set "$W/c2" --share "hostshare=$W/share" >/dev/null 2>&1
    fake_run c2 "$W/c2"
    check "...as does a clone of it whose share was set in place" grep -q -- "-virtfs local,path=$W/share,mount_tag=hostshare" "$W/starts" &&
        ! grep -q "came from outside" "$W/err"
    export STRATA_HOME=$W/store
fi
finish
