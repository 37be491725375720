#!/bin/bash
# mksshguest.sh GUEST_DIR OUT_BUNDLE PUBKEY: a guest with an ssh server, for
# tests/reach.sh. From the test guest mkguest.sh built in GUEST_DIR (its
# kernel, busybox initramfs and module tree), it makes OUT_BUNDLE whose
# initramfs also holds:
#   - dropbear (Debian's dropbear-bin) with the shared libraries it needs,
#     host keys made here (OUT_BUNDLE/host_key.pub has the ed25519 one, for
#     the test to compare with what ssh records);
#   - virtio_net and its dependencies; busybox udhcpc configures eth0;
#   - root's authorized key PUBKEY, and ssh_user "root" in Settings.json.
# Its /init prints "SSHD-READY" once dropbear listens, writes a line on the
# VGA console (so a screenshot is not blank), then idles.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 GUEST_DIR OUT_BUNDLE PUBKEY" >&2; exit 2; }
GUEST=$1 OUT=$2 PUBKEY=$3
export PATH=$PATH:/usr/sbin:/sbin
die() { echo "mksshguest: error: $*" >&2; exit 1; }

DROPBEAR=$(command -v dropbear || true)
KEYGEN=$(command -v dropbearkey || true)
[ -n "$DROPBEAR" ] && [ -n "$KEYGEN" ] || die "dropbear is not installed (Debian package dropbear-bin)"
[ -f "$GUEST/guest.bundle/initrd.img" ] || die "no test guest in $GUEST (run mkguest.sh first)"
KVER=$(cat "$GUEST/cache/kernel-version")
MODDIR=$GUEST/cache/linux-image-$KVER/lib/modules/$KVER
[ -f "$MODDIR/modules.dep" ] || die "no module tree for $KVER in $GUEST/cache"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mksshguest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
IR=$WORK/ir
mkdir -p "$IR"
(cd "$IR" && gzip -dc "$GUEST/guest.bundle/initrd.img" | cpio -id --quiet)

# ---- modules: virtio_net with its dependencies first (modules.dep order)
declare -A SEEN=()
add_module() { # path relative to MODDIR, dependencies first
    local p=$1 d
    [ -n "${SEEN[$p]:-}" ] && return 0
    SEEN[$p]=1
    for d in $(grep -E "^${p}:" "$MODDIR/modules.dep" | cut -d: -f2-); do add_module "$d"; done
    grep -qxF "$(basename "$p")" "$IR/lib/modules/load.list" && return 0
    case $p in *.ko) ;; *) die "compressed module $p" ;; esac
    cp "$MODDIR/$p" "$IR/lib/modules/"
    basename "$p" >>"$IR/lib/modules/load.list"
}
net=$(grep -E "/virtio_net\.ko:" "$MODDIR/modules.dep" | cut -d: -f1 || true)
if [ -n "$net" ]; then add_module "$net"
else grep -q "/virtio_net.ko$" "$MODDIR/modules.builtin" || die "no virtio_net module for $KVER"; fi

# ---- dropbear, its libraries and keys
mkdir -p "$IR/usr/sbin" "$IR/etc/dropbear" "$IR/root/.ssh" "$IR/var/run" "$IR/var/log" "$IR/dev/pts"
cp "$DROPBEAR" "$IR/usr/sbin/dropbear"
for lib in $(ldd "$DROPBEAR" | grep -oE '/[^ ]+\.so[^ ]*'); do
    mkdir -p "$IR$(dirname "$lib")"
    cp -L "$lib" "$IR$lib"
done
for t in ed25519 ecdsa rsa; do
    "$KEYGEN" -t "$t" -f "$IR/etc/dropbear/dropbear_${t}_host_key" >/dev/null 2>&1 || die "dropbearkey -t $t"
done
mkdir -p "$OUT.tmp"
"$KEYGEN" -y -f "$IR/etc/dropbear/dropbear_ed25519_host_key" | grep '^ssh-ed25519 ' | cut -d' ' -f1,2 >"$OUT.tmp/host_key.pub"
cp "$PUBKEY" "$IR/root/.ssh/authorized_keys"
chmod 700 "$IR/root" "$IR/root/.ssh"
chmod 600 "$IR/root/.ssh/authorized_keys"
echo "root:x:0:0:root:/root:/bin/sh" >"$IR/etc/passwd"
echo "root:x:0:" >"$IR/etc/group"

cat >"$IR/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# busybox udhcpc calls this with the lease in the environment
case "$1" in
bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
    [ -n "${router:-}" ] && route add default gw "${router%% *}" dev "$interface"
    ;;
deconfig) ifconfig "$interface" 0.0.0.0 up ;;
esac
exit 0
EOF
chmod 755 "$IR/etc/udhcpc.script"

cat >"$IR/init" <<'EOF'
#!/bin/sh
# strata reach test guest: network by DHCP, then dropbear on port 22.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
fail() { echo "GUEST-ERROR: $*"; dmesg | tail -20; exit 1; }
/bin/busybox --install -s 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
exec </dev/console >/dev/console 2>&1
for m in $(cat /lib/modules/load.list); do
    insmod "/lib/modules/$m" || fail "insmod $m"
done
ifconfig lo 127.0.0.1 up
udhcpc -i eth0 -s /etc/udhcpc.script -q -n -t 10 || fail "no DHCP lease on eth0"
dropbear -r /etc/dropbear/dropbear_ed25519_host_key -r /etc/dropbear/dropbear_ecdsa_host_key \
    -r /etc/dropbear/dropbear_rsa_host_key -E -p 22 || fail "dropbear did not start"
echo "strata reach guest: sshd on port 22" >/dev/tty1 2>/dev/null
echo SSHD-READY
while :; do sleep 60; done
EOF
chmod 755 "$IR/init"

(cd "$IR" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --owner=0:0 --quiet) | gzip -9n >"$OUT.tmp/initrd.img"
cp "$GUEST/guest.bundle/vmlinuz" "$OUT.tmp/vmlinuz"
truncate -s 16M "$OUT.tmp/Disk.img"
cat >"$OUT.tmp/Settings.json" <<'EOF'
{"version":1,"os":"linux","cpus":1,"memory_mib":256,"ssh_user":"root","boot":{"loader":"linux","kernel":"vmlinuz","initrd":"initrd.img","cmdline":"console=ttyS0 panic=-1 quiet"}}
EOF
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
