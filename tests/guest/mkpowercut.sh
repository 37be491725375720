#!/bin/bash
# mkpowercut.sh GUEST_DIR BUILD_DIR OUT_INITRD: the initramfs of the
# power-cut test (tests/powercut.sh). It is the boot tests' guest initramfs
# (tests/guest/mkguest.sh GUEST_DIR, already built: busybox and the
# virtio/ext4 modules) with a second cpio archive appended (the kernel
# unpacks concatenated archives in order) that adds:
#   /bin/strata, /bin/mkbundle  from BUILD_DIR, with the ELF interpreter and
#                               the shared libraries ldd finds, at their paths
#   /pcinit                     the init to boot with rdinit=/pcinit
#   /powercut-scenario.sh       the scenario it runs (see that file)
# /pcinit mounts /dev/vda (ext4) at the directory named by pc.dir= on the
# kernel command line, turns off every flush the kernel would do on its own
# (periodic writeback, timed journal commits), runs the scenario there, and
# then idles without syncing until the host cuts the power (kills qemu).
# pc.crash=OP:POINT makes operation OP run with STRATA_TEST_CRASH_AT=POINT.
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 GUEST_DIR BUILD_DIR OUT_INITRD" >&2
    exit 2
fi
GUEST=$1 B=$2 OUTRD=$3
HERE=$(cd "$(dirname "$0")" && pwd)
die() { echo "mkpowercut: error: $*" >&2; exit 1; }
[ -f "$GUEST/guest.bundle/initrd.img" ] || die "no $GUEST/guest.bundle/initrd.img (run mkguest.sh $GUEST)"
command -v ldd >/dev/null || die "ldd is not installed"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mkpowercut.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
IR=$WORK/ir
mkdir -p "$IR/bin"
LIBDIRS=""
for exe in strata mkbundle; do
    [ -x "$B/$exe" ] || die "no $B/$exe (make all first)"
    cp "$B/$exe" "$IR/bin/$exe"
    # "name => /path (addr)", "/lib64/ld-linux-x86-64.so.2 (addr)"; vdso has no path
    for lib in $(ldd "$B/$exe" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p'); do
        mkdir -p "$IR$(dirname "$lib")"
        cp -L "$lib" "$IR$lib"
        case " $LIBDIRS " in *" $(dirname "$lib") "*) ;; *) LIBDIRS="$LIBDIRS $(dirname "$lib")";; esac
    done
done
[ -n "$LIBDIRS" ] || die "ldd found no libraries for $B/strata (a static or foreign build?)"
cp "$HERE/powercut-scenario.sh" "$IR/powercut-scenario.sh"
LIBPATH=$(echo $LIBDIRS | tr ' ' ':')

cat >"$IR/pcinit" <<EOF2
#!/bin/sh
export LD_LIBRARY_PATH=$LIBPATH
EOF2
cat >>"$IR/pcinit" <<'EOF2'
# strata power-cut guest (tests/guest/mkpowercut.sh)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
idle() { while :; do sleep 3600; done; }   # until the host cuts the power
fail() { echo "GUEST-ERROR: $*"; dmesg | tail -20; echo CUT; idle; }
/bin/busybox --install -s 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
for m in $(cat /lib/modules/load.list); do
    insmod "/lib/modules/$m" || fail "insmod $m"
done
dir="" crash=""
for kv in $(cat /proc/cmdline); do
    case $kv in
    pc.dir=*) dir=${kv#pc.dir=};;
    pc.crash=*) crash=${kv#pc.crash=};;
    esac
done
[ -n "$dir" ] || fail "no pc.dir= on the kernel command line"
i=0
while [ ! -b /dev/vda ]; do
    i=$((i + 1)); [ $i -le 200 ] || fail "no /dev/vda"
    sleep 0.05
done
# Nothing may reach the disk unless strata asks for it: no periodic
# writeback, dirty pages never expire or hit a ratio, and ext4 commits its
# journal only when someone syncs (commit= is the longest it waits).
echo 0 >/proc/sys/vm/dirty_writeback_centisecs
echo 8640000 >/proc/sys/vm/dirty_expire_centisecs
echo 90 >/proc/sys/vm/dirty_background_ratio
echo 90 >/proc/sys/vm/dirty_ratio
mkdir -p "$dir"
mount -t ext4 -o rw,commit=86400 /dev/vda "$dir" || fail "mount /dev/vda"
echo BOOTED
# shellcheck disable=SC2086
sh /powercut-scenario.sh "$dir" $(echo "$crash" | tr ':' ' ')
echo CUT
idle
EOF2
chmod 755 "$IR/pcinit" "$IR/powercut-scenario.sh"
find "$IR" -exec touch -h -d @0 {} +
cp "$GUEST/guest.bundle/initrd.img" "$WORK/initrd.img"
(cd "$IR" && find . -mindepth 1 | LC_ALL=C sort \
    | cpio -o -H newc --owner=0:0 --reproducible --quiet) | gzip -1n >>"$WORK/initrd.img"
mv "$WORK/initrd.img" "$OUTRD"
