#!/bin/bash
# mkguest.sh OUTDIR: build OUTDIR/guest.bundle, a tiny Linux guest for the
# end-to-end boot tests:
#   vmlinuz        Debian's current linux-image-*-amd64 kernel (extracted, not installed)
#   initrd.img     busybox initramfs (cpio newc, gzip) with the virtio/ext4 modules
#   Disk.img       64 MiB sparse raw file, ext4 made by mkfs.ext4 (no partition table)
#   Settings.json  strata settings (linux loader, console on ttyS0)
# Downloads are cached in OUTDIR/cache, so a re-run only rebuilds the bundle.
#
# The guest's /init mounts /dev/vda at /mnt, reads /mnt/counter (0 if missing),
# prints "BOOTED" once and a line ending as a login prompt does ("strata-guest
# login: ", the sign a lazy run takes for ready), then every second increments the counter, writes it to
# /mnt/counter, syncs and prints "HEARTBEAT uptime=<s> counter=<n>". A line
# typed on its serial console comes back as "ECHO <line>"; "busy N" writes
# a 64 MiB buffer N times over.
#
# Runs as root on a fresh Debian machine: installs what it needs with apt-get
# (running apt-get update only when a look-up, download or install fails).
# Env: GUEST_KERNEL_PKG=linux-image-X-amd64 pins the kernel package.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
CACHE=$OUT/cache
BUNDLE=$OUT/guest.bundle
mkdir -p "$CACHE"
export PATH=$PATH:/usr/sbin:/sbin

log() { echo "mkguest: $*" >&2; }
die() { echo "mkguest: error: $*" >&2; exit 1; }

# ---- apt helpers: try once, and only on failure run apt-get update and retry.
APT_UPDATED=0
apt_update_once() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        apt-get update -qq >&2 || true
        APT_UPDATED=1
    fi
}
apt_retry() { # command...: run it; on failure update the lists and run it again
    if "$@"; then return 0; fi
    apt_update_once
    "$@"
}
need_pkgs() { # pkg:command ...: install each package whose command is missing
    local missing="" pc
    for pc in "$@"; do
        command -v "${pc#*:}" >/dev/null 2>&1 || missing="$missing ${pc%%:*}"
    done
    [ -z "$missing" ] && return 0
    log "installing:$missing"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt_retry apt-get install -y -qq --no-install-recommends $missing >&2
}
[ -x /bin/busybox ] || need_pkgs busybox-static:/bin/busybox
need_pkgs cpio:cpio e2fsprogs:mkfs.ext4 kmod:depmod gzip:gzip

# ---- kernel package: current version from linux-image-amd64's dependency
kernel_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -1
}
PKG=${GUEST_KERNEL_PKG:-}
if [ -z "$PKG" ]; then
    PKG=$(kernel_pkg || true)
    if [ -z "$PKG" ]; then apt_update_once; PKG=$(kernel_pkg || true); fi
fi
if [ -z "$PKG" ]; then
    # offline re-run: fall back to the newest kernel already in the cache
    PKG=$(ls -d "$CACHE"/linux-image-*-amd64 2>/dev/null | sort -V | tail -1 || true)
    PKG=${PKG##*/}
    [ -n "$PKG" ] || die "cannot find the linux-image-*-amd64 package (apt-cache depends linux-image-amd64)"
    log "apt-cache found no kernel; using cached $PKG"
fi
KVER=${PKG#linux-image-}          # e.g. 6.1.0-56-amd64
KROOT=$CACHE/$PKG                 # extracted package tree
if [ ! -f "$KROOT/.done" ]; then
    deb=$(ls "$CACHE"/"${PKG}"_*.deb 2>/dev/null | tail -1 || true)
    if [ -z "$deb" ]; then
        log "downloading $PKG"
        (cd "$CACHE" && apt_retry apt-get download -qq -o APT::Sandbox::User=root "$PKG" >&2)
        deb=$(ls "$CACHE"/"${PKG}"_*.deb | tail -1)
    fi
    log "extracting $(basename "$deb")"
    rm -rf "$KROOT"
    mkdir -p "$KROOT"
    dpkg-deb -x "$deb" "$KROOT"
    # the package ships no modules.dep (depmod makes it on install): make it here
    depmod -b "$KROOT" "$KVER"
    touch "$KROOT/.done"
fi
VMLINUZ=$KROOT/boot/vmlinuz-$KVER
CONFIG=$KROOT/boot/config-$KVER
MODDIR=$KROOT/lib/modules/$KVER
[ -f "$VMLINUZ" ] && [ -f "$CONFIG" ] && [ -f "$MODDIR/modules.dep" ] \
    || die "incomplete kernel tree in $KROOT (delete it and re-run)"

# ---- modules: what reaching an ext4 virtio disk needs, in dependency order.
# virtio_pci: the PCI transport; virtio_blk: /dev/vda; ext4 (this kernel has no
# ext2 driver: CONFIG_EXT2_FS is not set and ext4 serves ext2 too). mkfs.ext4's
# default metadata_csum makes ext4 and jbd2 ask the crypto API for "crc32c" at
# mount time (a softdep, not in modules.dep): crc32c_generic provides it
# (crc32c-intel needs SSE4.2, which TCG's default CPU lacks).
WANT="virtio_pci virtio_blk crc32c_generic ext4"
for opt in CONFIG_VIRTIO_PCI CONFIG_VIRTIO_BLK CONFIG_EXT4_FS CONFIG_CRYPTO_CRC32C CONFIG_DEVTMPFS \
           CONFIG_BLK_DEV_INITRD CONFIG_RD_GZIP CONFIG_SERIAL_8250_CONSOLE; do
    grep -Eq "^$opt=[ym]$" "$CONFIG" || die "$KVER: $opt is not enabled"
done
declare -A SEEN=()
ORDER=()
modpath() { # name -> path relative to MODDIR from modules.dep ('' if builtin)
    local n=$1 alt=${1//_/-} p
    p=$(grep -E "/(${n}|${alt})\.ko(\.[a-z]+)?:" "$MODDIR/modules.dep" | head -1 | cut -d: -f1 || true)
    if [ -z "$p" ]; then
        grep -Eq "/(${n}|${alt})\.ko$" "$MODDIR/modules.builtin" && return 0
        die "module $n: neither in modules.dep nor builtin"
    fi
    echo "$p"
}
visit() { # depth-first: dependencies first
    local p=$1 d
    [ -n "${SEEN[$p]:-}" ] && return 0
    SEEN[$p]=1
    for d in $(grep -E "^${p}:" "$MODDIR/modules.dep" | cut -d: -f2-); do visit "$d"; done
    ORDER+=("$p")
}
for m in $WANT; do
    p=$(modpath "$m")
    [ -n "$p" ] && visit "$p"
done
case "${ORDER[*]}" in *.ko.*) die "compressed modules are not supported by busybox insmod here";; esac
log "kernel $KVER; modules: $(for p in "${ORDER[@]}"; do basename "$p" .ko; done | tr '\n' ' ')"

# ---- initramfs
WORK=$(mktemp -d "$OUT/.mkguest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
IR=$WORK/initramfs
mkdir -p "$IR"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,mnt,tmp,lib/modules}
cp /bin/busybox "$IR/bin/busybox"
# applets this init uses (the rest come from `busybox --install` at boot)
for a in sh mount umount insmod mkdir cat echo sleep sync mknod ls dmesg poweroff; do
    ln -s busybox "$IR/bin/$a"
done
: >"$IR/lib/modules/load.list"
for p in "${ORDER[@]}"; do
    cp "$MODDIR/$p" "$IR/lib/modules/"
    basename "$p" >>"$IR/lib/modules/load.list"
done
# the kernel opens /dev/console before running /init
mknod -m 600 "$IR/dev/console" c 5 1 2>/dev/null || true
mknod -m 666 "$IR/dev/null" c 1 3 2>/dev/null || true

cat >"$IR/init" <<'EOF'
#!/bin/sh
# strata test guest: mount /dev/vda at /mnt and count heartbeats there.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
fail() { echo "GUEST-ERROR: $*"; dmesg | tail -20; sync; exit 1; }  # init exits: panic
/bin/busybox --install -s 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
for m in $(cat /lib/modules/load.list); do
    insmod "/lib/modules/$m" || fail "insmod $m"
done
i=0
while [ ! -b /dev/vda ]; do
    i=$((i + 1)); [ $i -le 200 ] || fail "no /dev/vda"
    sleep 0.05
done
mount -t ext4 -o rw /dev/vda /mnt || fail "mount /dev/vda"
counter=$(cat /mnt/counter 2>/dev/null) || counter=0
case "$counter" in ''|*[!0-9]*) counter=0;; esac
# ---- serial echo (issue 12): each line typed on the console comes back as
# "ECHO <line>" at once, a response time a 1 s heartbeat can't show. Its own
# redirect: a background job's stdin is /dev/null otherwise. "busy N" then
# writes a 64 MiB buffer N times over (a guest that keeps writing its RAM).
(while read -r line; do
    echo "ECHO $line"
    case $line in busy\ *) dd if=/dev/zero of=/dev/null bs=64M count="${line#busy }" 2>/dev/null; echo "BUSY-DONE";; esac
done) </dev/console &
# ---- end of serial echo
echo BOOTED
# what a login prompt would be: a lazy run takes it as the sign the guest is ready
echo "strata-guest login: "
while :; do
    sleep 1
    counter=$((counter + 1))
    echo "$counter" >/mnt/counter
    sync
    read -r up _ </proc/uptime
    echo "HEARTBEAT uptime=${up%%.*} counter=$counter"
done
EOF
chmod 755 "$IR/init"

mkdir -p "$WORK/bundle"
find "$IR" -exec touch -h -d @0 {} +
(cd "$IR" && find . -mindepth 1 | LC_ALL=C sort \
    | cpio -o -H newc --owner=0:0 --reproducible --quiet) | gzip -9n >"$WORK/bundle/initrd.img"

# ---- the rest of the bundle
cp "$VMLINUZ" "$WORK/bundle/vmlinuz"
truncate -s 64M "$WORK/bundle/Disk.img"
mkfs.ext4 -q -F -L strata-guest "$WORK/bundle/Disk.img"
cat >"$WORK/bundle/Settings.json" <<'EOF'
{"version":1,"os":"linux","cpus":1,"memory_mib":256,"mac":"52:54:00:12:34:56","boot":{"loader":"linux","kernel":"vmlinuz","initrd":"initrd.img","cmdline":"console=ttyS0 panic=-1 quiet"}}
EOF

rm -rf "$BUNDLE"
mv "$WORK/bundle" "$BUNDLE"
echo "$KVER" >"$CACHE/kernel-version"
log "built $BUNDLE (kernel $KVER)"
echo "$BUNDLE"
