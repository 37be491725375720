#!/bin/bash
# mkcreate.sh OUTDIR GUESTDIR: the inputs of tests/create.sh, around the
# test guest's kernel (GUESTDIR, built by mkguest.sh, whose cache holds the
# extracted Debian kernel package):
#   vmlinuz, initrd.img  the kernel and a busybox initramfs whose init reports
#                        what create/set must show inside the guest, then
#                        powers off:
#                          CREATE-GUEST boot=<strata_boot= from the cmdline>
#                          CREATE-GUEST vda_bytes=<size of the virtio disk>
#                          CREATE-GUEST share=<hello.txt of the 9p tag hostshare>
#                          CREATE-GUEST end
#   efi-disk.raw         a raw GPT disk whose EFI system partition boots GRUB
#                        (grub-mkstandalone, kernel and initrd inside) with
#                        strata_boot=efi-disk: a cloud image in miniature
#   efi-disk.qcow2       the same, as qcow2
#   installer.iso        grub-mkrescue (xorriso, mtools) around the kernel, with
#                        strata_boot=iso: installer media
# Needs: grub-efi-amd64-bin, grub-common, xorriso, mtools, fdisk (sfdisk),
# qemu-utils; installs nothing (tests/create.sh skips without them).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 OUTDIR GUESTDIR" >&2; exit 2; }
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
GUEST=$(cd "$2" && pwd)
export PATH=$PATH:/usr/sbin:/sbin
die() { echo "mkcreate: error: $*" >&2; exit 1; }
for c in grub-mkstandalone grub-mkrescue xorriso mformat mcopy mmd sfdisk qemu-img cpio; do
    command -v "$c" >/dev/null || die "$c is not installed"
done
[ -d /usr/lib/grub/x86_64-efi ] || die "grub-efi-amd64-bin is not installed"

KVER=$(cat "$GUEST/cache/kernel-version")
KROOT=$GUEST/cache/linux-image-$KVER
MODDIR=$KROOT/lib/modules/$KVER
[ -f "$MODDIR/modules.dep" ] || die "no kernel tree in $KROOT (run mkguest.sh first)"

# the modules, dependencies first (modules.dep lists a module's own first)
ORDER=()
declare -A SEEN=()
visit() {
    local p=$1 d
    [ -n "${SEEN[$p]:-}" ] && return 0
    SEEN[$p]=1
    for d in $(grep -E "^${p}:" "$MODDIR/modules.dep" | cut -d: -f2-); do visit "$d"; done
    ORDER+=("$p")
}
for m in virtio_pci virtio_blk 9pnet_virtio 9p; do
    p=$(grep -E "/${m}\.ko:" "$MODDIR/modules.dep" | head -1 | cut -d: -f1 || true)
    if [ -n "$p" ]; then visit "$p"
    elif ! grep -Eq "/${m}\.ko$" "$MODDIR/modules.builtin"; then die "module $m: not found"; fi
done

WORK=$(mktemp -d "$OUT/.mkcreate.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
IR=$WORK/ir
mkdir -p "$IR"/{bin,proc,sys,dev,share,lib/modules}
cp /bin/busybox "$IR/bin/busybox"
for a in sh mount insmod cat echo sleep grep sed poweroff; do ln -s busybox "$IR/bin/$a"; done
for p in "${ORDER[@]}"; do cp "$MODDIR/$p" "$IR/lib/modules/"; basename "$p" >>"$IR/lib/modules/load.list"; done
cat >"$IR/init" <<'EOF'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
for m in $(cat /lib/modules/load.list); do insmod "/lib/modules/$m" || echo "CREATE-GUEST insmod $m failed"; done
i=0
while [ ! -e /sys/block/vda/size ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
boot=$(sed -n 's/.*strata_boot=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "CREATE-GUEST boot=$boot"
echo "CREATE-GUEST vda_bytes=$(( $(cat /sys/block/vda/size 2>/dev/null || echo 0) * 512 ))"
if mount -t 9p -o trans=virtio,version=9p2000.L,ro hostshare /share 2>/dev/null; then
    echo "CREATE-GUEST share=$(cat /share/hello.txt)"
else
    echo "CREATE-GUEST share=none"
fi
echo "CREATE-GUEST end"
poweroff -f
EOF
chmod 755 "$IR/init"
mknod -m 600 "$IR/dev/console" c 5 1 2>/dev/null || true
(cd "$IR" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --owner=0:0 --quiet) | gzip -9n >"$WORK/initrd.img"
cp "$KROOT/boot/vmlinuz-$KVER" "$WORK/vmlinuz"

grub_cfg() { # strata_boot value
    printf 'set timeout=0\nmenuentry strata {\n  linux /vmlinuz console=ttyS0 panic=-1 quiet strata_boot=%s\n  initrd /initrd.img\n}\n' "$1"
}

# a GPT disk with an EFI system partition holding a standalone GRUB
grub_cfg efi-disk >"$WORK/grub-disk.cfg"
grub-mkstandalone -O x86_64-efi -o "$WORK/BOOTX64.EFI" --modules="linux normal echo" \
    "boot/grub/grub.cfg=$WORK/grub-disk.cfg" "vmlinuz=$WORK/vmlinuz" "initrd.img=$WORK/initrd.img"
truncate -s 48M "$WORK/efi-disk.raw"
echo 'label: gpt
start=2048, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B' | sfdisk -q "$WORK/efi-disk.raw"
mformat -i "$WORK/efi-disk.raw@@1M" -T 94208 -h 2 -s 32 ::
mmd -i "$WORK/efi-disk.raw@@1M" ::/EFI ::/EFI/BOOT
mcopy -i "$WORK/efi-disk.raw@@1M" "$WORK/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
qemu-img convert -q -f raw -O qcow2 "$WORK/efi-disk.raw" "$WORK/efi-disk.qcow2"

# installer media
mkdir -p "$WORK/iso/boot/grub"
cp "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/iso/"
grub_cfg iso >"$WORK/iso/boot/grub/grub.cfg"
grub-mkrescue -o "$WORK/installer.iso" "$WORK/iso" >"$WORK/mkrescue.log" 2>&1 ||
    die "grub-mkrescue: $(tail -1 "$WORK/mkrescue.log")"

for f in vmlinuz initrd.img efi-disk.raw efi-disk.qcow2 installer.iso; do mv "$WORK/$f" "$OUT/$f"; done
echo "mkcreate: built $OUT (kernel $KVER)" >&2
