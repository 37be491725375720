#!/bin/bash
# mkdebian.sh OUT: a real Debian 12 (bookworm) system as a strata bundle, for
# the lazy-run end-to-end tests and bench/lazy.sh (issue 22). OUT gets:
#   Disk.img      a 16 GiB sparse raw disk holding one ext4 filesystem (no
#                 partition table: the kernel is booted directly, root=/dev/vda)
#   vmlinuz       the Debian kernel, initrd.img its own initramfs-tools image
#                 (MODULES=most: virtio_blk and virtio_net are in it)
#   Settings.json the linux loader with root=/dev/vda console=ttyS0, ssh_user root
#   id, id.pub    the ssh key whose public half is root's authorized key
# The system: debootstrap minbase with systemd, udev, openssh-server and
# systemd-networkd (DHCP on every en*/eth* NIC). Once sshd runs and the network
# is online it prints STRATA-DEBIAN-READY on ttyS0; a getty on ttyS0 prints
# the login prompt after it.
#
# Built once per machine: the result is cached under
# ${STRATA_TOOLS:-$HOME/.cache/strata-tools}/debian-HASH, HASH being this
# script's own SHA-256, and OUT is a sparse copy of it. Building needs root
# (debootstrap chroots) and deb.debian.org; mkfs.ext4 -d fills the filesystem
# from a directory, so no loop device nor mount is needed. Without root or the
# mirror it fails with one line saying which (tests print it and skip).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUT" >&2; exit 2; }
OUT=$1
export PATH=$PATH:/usr/sbin:/sbin
die() { echo "mkdebian: $*" >&2; exit 1; }
log() { echo "mkdebian: $*" >&2; }

MIRROR=${STRATA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
DISK_SIZE=16G
MARKER=STRATA-DEBIAN-READY
TOOLS=${STRATA_TOOLS:-$HOME/.cache/strata-tools}
HASH=$(sha256sum "$0" | cut -c1-16)
CACHE=$TOOLS/debian-$HASH

build() {
    [ "$(id -u)" = 0 ] || die "needs root to debootstrap (none cached in $CACHE)"
    for c in debootstrap mkfs.ext4 ssh-keygen; do
        command -v "$c" >/dev/null || die "$c is not installed"
    done
    curl -fsI --max-time 20 "$MIRROR/dists/$SUITE/Release" >/dev/null 2>&1 || die "cannot reach $MIRROR"
    mkdir -p "$TOOLS"
    local work
    work=$(mktemp -d "$TOOLS/debian-build.XXXXXX")
    BUILD_DIR=$work
    trap drop_build EXIT
    local root=$work/root
    log "debootstrap $SUITE from $MIRROR (a few minutes)"
    debootstrap --variant=minbase \
        --include=systemd-sysv,udev,dbus,openssh-server,linux-image-amd64,initramfs-tools,iproute2,kmod \
        "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
        || { tail -5 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    configure "$root" "$work"
    local kernel initrd
    kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)
    initrd=$root/boot/initrd.img-${kernel##*/vmlinuz-}
    [ -f "$initrd" ] || die "no initramfs for ${kernel##*/}"
    mkdir -p "$work/out"
    cp "$kernel" "$work/out/vmlinuz"
    cp "$initrd" "$work/out/initrd.img"
    cp "$work/id" "$work/id.pub" "$work/out/"
    # the image holds no apt lists nor package cache: smaller, and nothing a boot reads
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    truncate -s "$DISK_SIZE" "$work/out/Disk.img"
    mkfs.ext4 -q -F -L strata-debian -d "$root" "$work/out/Disk.img" >"$work/mkfs.log" 2>&1 \
        || { tail -3 "$work/mkfs.log" >&2; die "mkfs.ext4 -d failed"; }
    settings >"$work/out/Settings.json"
    rm -rf "$CACHE"
    mv "$work/out" "$CACHE"
    log "built $CACHE"
}

# The build directory goes, but never through a mount: debootstrap mounts
# /proc and /sys in the chroot and a failed run may leave them behind.
drop_build() {
    [ -n "${BUILD_DIR:-}" ] && [ -d "$BUILD_DIR" ] || return 0
    umount -R "$BUILD_DIR/root/proc" "$BUILD_DIR/root/sys" 2>/dev/null || true
    if grep -qF " $BUILD_DIR/" /proc/mounts; then
        echo "mkdebian: left $BUILD_DIR: something is still mounted under it" >&2
    else
        rm -rf "$BUILD_DIR"
    fi
}

# networkd, sshd with root's key, the marker, a serial getty, fstab
configure() {
    local root=$1 work=$2
    echo strata-debian >"$root/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 strata-debian\n' >"$root/etc/hosts"
    printf '/dev/vda / ext4 defaults,errors=remount-ro 0 1\n' >"$root/etc/fstab"
    mkdir -p "$root/etc/systemd/network"
    printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' >"$root/etc/systemd/network/20-wired.network"
    chroot "$root" systemctl enable systemd-networkd.service systemd-networkd-wait-online.service \
        ssh.service serial-getty@ttyS0.service >/dev/null 2>&1
    ssh-keygen -q -t ed25519 -N '' -C strata-debian -f "$work/id"
    install -d -m 700 "$root/root/.ssh"
    install -m 600 "$work/id.pub" "$root/root/.ssh/authorized_keys"
    cat >"$root/etc/systemd/system/strata-ready.service" <<EOF
[Unit]
Description=Tell the host on ttyS0 that sshd runs and the network is up
Wants=network-online.target
After=network-online.target ssh.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo $MARKER > /dev/ttyS0'

[Install]
WantedBy=multi-user.target
EOF
    chroot "$root" systemctl enable strata-ready.service >/dev/null 2>&1
    # nothing that only slows a CI guest's boot
    chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
        fstrim.timer >/dev/null 2>&1 || true
    chroot "$root" passwd -l root >/dev/null
}

settings() {
    cat <<'EOF'
{"version":1,"os":"linux","cpus":2,"memory_mib":1024,"ssh_user":"root",
 "boot":{"loader":"linux","kernel":"vmlinuz","initrd":"initrd.img",
         "cmdline":"root=/dev/vda rw console=ttyS0 panic=-1"}}
EOF
}

[ -f "$CACHE/Settings.json" ] || build
mkdir -p "$OUT"
for f in vmlinuz initrd.img Settings.json id id.pub; do cp "$CACHE/$f" "$OUT/$f"; done
cp --sparse=always --reflink=auto "$CACHE/Disk.img" "$OUT/Disk.img"
chmod 600 "$OUT/id"
echo "$OUT"
