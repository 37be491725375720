#!/usr/bin/env bash
# bench/workload.sh - build (and cache) the realistic VM-bundle workload used by
# bench/run.sh, and apply the deterministic "guest change" to a bundle.
#
# Usage:
#   bench/workload.sh [build] [OUTDIR]     build OUTDIR/base.bundle (cached: skipped
#                                          when already present) and OUTDIR/debs
#   bench/workload.sh change BUNDLE_DIR    loop-mount BUNDLE_DIR/Disk.img in place,
#                                          install python3+curl in the guest from the
#                                          cached .debs, unmount, sync
#   bench/workload.sh status [OUTDIR]      print what is cached
#
# Environment:
#   BENCH_DIR           base work dir            (default /var/tmp/strata-bench)
#   BENCH_WORKLOAD_DIR  OUTDIR when not given    (default $BENCH_DIR/workload)
#   BENCH_DISK_SIZE     apparent Disk.img size   (default 64G)
#   BENCH_SUITE         Debian suite             (default bookworm)
#   BENCH_MIRROR        Debian mirror URL        (default: from /etc/apt/sources.list*)
#   BENCH_PACKAGES      packages the change installs (default "python3 curl")
#   BENCH_BASE_PACKAGES extra packages installed into the base image at build time
#                       (default none: plain minbase) - makes the base bigger
#   BENCH_REBUILD=1     rebuild even if cached
#
# Must run as root (loop mounts, chroot, debootstrap).
set -euo pipefail

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SELF_DIR/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench}
BENCH_WORKLOAD_DIR=${BENCH_WORKLOAD_DIR:-$BENCH_DIR/workload}
BENCH_DISK_SIZE=${BENCH_DISK_SIZE:-64G}
BENCH_SUITE=${BENCH_SUITE:-bookworm}
BENCH_PACKAGES=${BENCH_PACKAGES:-python3 curl}
BENCH_BASE_PACKAGES=${BENCH_BASE_PACKAGES:-}

log() { printf '[workload %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[workload] ERROR: %s\n' "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (loop mounts, chroot, debootstrap)"; }

# ensure_cmd CMD PACKAGE: install PACKAGE with apt-get when CMD is missing.
APT_UPDATED=0
ensure_cmd() {
    local cmd=$1 pkg=$2
    command -v "$cmd" >/dev/null 2>&1 && return 0
    [ -x "$cmd" ] && return 0
    [ "$(id -u)" = 0 ] || die "'$cmd' missing; install package '$pkg'"
    log "installing $pkg (for $cmd)"
    if [ "$APT_UPDATED" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >&2 \
        || die "apt-get install $pkg failed"
}

# Debian mirror used by this machine's apt (one-line and deb822 formats).
detect_mirror() {
    if [ -n "${BENCH_MIRROR:-}" ]; then echo "$BENCH_MIRROR"; return; fi
    local files=() f u
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    if [ ${#files[@]} -gt 0 ]; then
        u=$( { grep -hE '^[[:space:]]*deb[[:space:]]' "${files[@]}" 2>/dev/null \
                 | awk '{for(i=2;i<=NF;i++) if ($i ~ /^https?:\/\//) {print $i; break}}';
               grep -hE '^[[:space:]]*URIs:' "${files[@]}" 2>/dev/null \
                 | awk '{for(i=2;i<=NF;i++) print $i}'; } \
             | grep -E '^https?://[^ ]*/debian/?$' | head -n1 || true)
        if [ -n "$u" ]; then echo "${u%/}"; return; fi
    fi
    echo "http://deb.debian.org/debian"
}

# ---------------------------------------------------------------- mounts ----
# Everything mounted by this script is recorded in MOUNTS (in mount order) and
# unmounted in reverse order on exit, whatever happens.
MOUNTS=()
TMPDIRS=()
cleanup() {
    local rc=$? i m
    for ((i=${#MOUNTS[@]}-1; i>=0; i--)); do
        m=${MOUNTS[i]}
        if mountpoint -q "$m" 2>/dev/null; then
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null \
                || log "WARNING: could not unmount $m"
        fi
    done
    MOUNTS=()
    for m in "${TMPDIRS[@]}"; do
        # rmdir only: never rm -r a directory that may still hold bind mounts.
        [ -d "$m" ] && rmdir "$m" 2>/dev/null || true
    done
    TMPDIRS=()
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

do_mount() {  # do_mount TARGET mount-args...
    local target=$1; shift
    mount "$@" "$target"
    MOUNTS+=("$target")
}

umount_all() {  # clean, checked unmount (errors are fatal here)
    local i m
    for ((i=${#MOUNTS[@]}-1; i>=0; i--)); do
        m=${MOUNTS[i]}
        if mountpoint -q "$m"; then
            umount "$m" || { sleep 1; umount "$m"; }
        fi
    done
    MOUNTS=()
}

mount_disk() {  # mount_disk IMG MNT: loop-mount the raw ext4 image in place
    local img=$1 mnt=$2
    do_mount "$mnt" -o loop -t ext4 "$img"
}

mount_chroot_fs() {  # /proc, /sys, /dev for the chroot
    local mnt=$1
    do_mount "$mnt/proc" -t proc proc
    do_mount "$mnt/sys" -t sysfs sysfs
    do_mount "$mnt/dev" --bind /dev
}

in_chroot() {  # in_chroot MNT cmd...
    local mnt=$1; shift
    chroot "$mnt" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

human() { numfmt --to=iec-i --suffix=B "$1" 2>/dev/null || echo "${1}B"; }
alloc_bytes() { echo $(( $(stat -c '%b' "$1") * $(stat -c '%B' "$1") )); }

# ----------------------------------------------------------------- build ----
build() {
    local outdir=$1
    need_root
    mkdir -p "$outdir"
    outdir=$(cd "$outdir" && pwd)
    local bundle=$outdir/base.bundle marker=$outdir/base.bundle.ok
    if [ -f "$marker" ] && [ -f "$bundle/Disk.img" ] && [ "${BENCH_REBUILD:-0}" != 1 ]; then
        local want have
        want=$(printf 'disk_size=%s|suite=%s|packages=%s|base_packages=%s' "$BENCH_DISK_SIZE" \
            "$BENCH_SUITE" "$BENCH_PACKAGES" "$BENCH_BASE_PACKAGES")
        have=$(printf 'disk_size=%s|suite=%s|packages=%s|base_packages=%s' \
            "$(sed -n 's/^disk_size=//p' "$marker")" "$(sed -n 's/^suite=//p' "$marker")" \
            "$(sed -n 's/^packages=//p' "$marker")" "$(sed -n 's/^base_packages=//p' "$marker")")
        if [ "$want" = "$have" ] && [ -n "$(ls -A "$outdir/debs" 2>/dev/null)" ]; then
            log "cached workload present: $bundle ($(sed -n 's/^build_seconds=//p' "$marker")s to build); skipping"
            return 0
        fi
        log "cached workload is [$have], want [$want]: rebuilding"
    fi

    ensure_cmd debootstrap debootstrap
    ensure_cmd mkfs.ext4 e2fsprogs
    ensure_cmd chroot coreutils
    local mirror; mirror=$(detect_mirror)
    log "building workload in $outdir (disk $BENCH_DISK_SIZE, $BENCH_SUITE minbase from $mirror)"
    local t0; t0=$(date +%s)

    local tmp=$outdir/base.bundle.tmp
    rm -f "$marker"
    if [ -d "$tmp" ]; then
        mountpoint -q "$tmp/mnt" 2>/dev/null && die "$tmp/mnt is still mounted; unmount it first"
        rm -rf "$tmp"
    fi
    mkdir -p "$tmp" "$outdir/debootstrap-cache"

    # 1. sparse raw disk with ext4 directly on it (no partition table).
    truncate -s "$BENCH_DISK_SIZE" "$tmp/Disk.img"
    # lazy_*_init=0: inode tables/journal are zeroed now (mke2fs punches holes in a
    # regular file, so the image stays sparse) and no ext4lazyinit thread writes
    # into the image later, which keeps the "change" deterministic.
    mkfs.ext4 -q -F -L strata-bench -E lazy_itable_init=0,lazy_journal_init=0 "$tmp/Disk.img"
    log "mkfs.ext4 done; allocated $(human "$(alloc_bytes "$tmp/Disk.img")")"

    # 2. debootstrap minbase into the loop-mounted image.
    local mnt=$tmp/mnt
    mkdir -p "$mnt"; TMPDIRS+=("$mnt")
    mount_disk "$tmp/Disk.img" "$mnt"
    log "debootstrap --variant=minbase $BENCH_SUITE (this takes a few minutes)"
    debootstrap --variant=minbase --cache-dir="$outdir/debootstrap-cache" \
        "$BENCH_SUITE" "$mnt" "$mirror" > "$outdir/debootstrap.log" 2>&1 \
        || { tail -n 30 "$outdir/debootstrap.log" >&2; die "debootstrap failed (log: $outdir/debootstrap.log)"; }
    log "debootstrap done"

    # 3. Make the guest's apt usable offline: fetch package lists once (a real VM
    #    has them too) and download the .debs the change needs into OUTDIR/debs.
    mount_chroot_fs "$mnt"
    printf 'deb %s %s main\n' "$mirror" "$BENCH_SUITE" > "$mnt/etc/apt/sources.list"
    cp -L /etc/resolv.conf "$mnt/etc/resolv.conf" 2>/dev/null || true
    in_chroot "$mnt" apt-get update -qq >&2 || die "apt-get update in the guest failed"
    in_chroot "$mnt" apt-get clean
    if [ -n "$BENCH_BASE_PACKAGES" ]; then
        log "installing base packages: $BENCH_BASE_PACKAGES"
        # shellcheck disable=SC2086
        in_chroot "$mnt" apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 \
            $BENCH_BASE_PACKAGES > "$outdir/base-packages.log" 2>&1 \
            || { tail -n 20 "$outdir/base-packages.log" >&2; die "installing base packages failed"; }
        in_chroot "$mnt" apt-get clean
    fi
    # shellcheck disable=SC2086
    in_chroot "$mnt" apt-get install -y -qq --download-only --no-install-recommends $BENCH_PACKAGES >&2 \
        || die "downloading $BENCH_PACKAGES in the guest failed"
    rm -rf "$outdir/debs.tmp"; mkdir -p "$outdir/debs.tmp"
    cp "$mnt"/var/cache/apt/archives/*.deb "$outdir/debs.tmp/"
    in_chroot "$mnt" apt-get clean
    rm -rf "$outdir/debs"; mv "$outdir/debs.tmp" "$outdir/debs"
    log "cached $(ls "$outdir/debs" | wc -l) .debs ($(du -sh "$outdir/debs" | cut -f1)) in $outdir/debs"

    # Freed blocks (debootstrap's deleted .debs etc.) are discarded like a guest's
    # fstrim would; the loop device punches holes in Disk.img.
    fstrim "$mnt" 2>/dev/null || log "fstrim not supported here (image keeps freed blocks)"
    sync
    umount_all
    rmdir "$mnt"
    sync
    log "base disk: apparent $(human "$(stat -c %s "$tmp/Disk.img")"), allocated $(human "$(alloc_bytes "$tmp/Disk.img")")"

    # mke2fs zeroes the journal with fallocate(ZERO_RANGE) on some host
    # filesystems, leaving ~0.5 GiB of allocated-but-unwritten extents; a sparse
    # copy turns them (and any other all-zero run) back into holes.
    cp --sparse=always "$tmp/Disk.img" "$tmp/Disk.img.sparse"
    mv "$tmp/Disk.img.sparse" "$tmp/Disk.img"
    sync
    log "base disk (re-sparsified): allocated $(human "$(alloc_bytes "$tmp/Disk.img")")"

    # 4. Small bundle files.
    truncate -s 32M "$tmp/AuxiliaryStorage"
    head -c 65536 /dev/urandom | dd of="$tmp/AuxiliaryStorage" conv=notrunc status=none
    local f
    for f in HardwareModel MachineIdentifier; do
        if [ -f "$REPO_DIR/fixtures/$f" ]; then cp "$REPO_DIR/fixtures/$f" "$tmp/$f"
        else log "fixtures/$f not found; bundle has no $f"; fi
    done

    rm -rf "$bundle"
    mv "$tmp" "$bundle"
    sync
    local t1; t1=$(date +%s)
    {
        echo "disk_size=$BENCH_DISK_SIZE"
        echo "suite=$BENCH_SUITE"
        echo "mirror=$mirror"
        echo "packages=$BENCH_PACKAGES"
        echo "base_packages=$BENCH_BASE_PACKAGES"
        echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "build_seconds=$((t1 - t0))"
        echo "disk_allocated=$(alloc_bytes "$bundle/Disk.img")"
    } > "$marker"
    log "workload built in $((t1 - t0))s: $bundle"
}

# ---------------------------------------------------------------- change ----
change() {
    local bdir=$1
    need_root
    local img=$bdir/Disk.img
    [ -f "$img" ] || die "no Disk.img in $bdir"
    local debs=$BENCH_WORKLOAD_DIR/debs
    [ -n "$(ls "$debs"/*.deb 2>/dev/null)" ] \
        || die "no cached .debs in $debs (run: bench/workload.sh build $BENCH_WORKLOAD_DIR, or set BENCH_WORKLOAD_DIR)"
    local mnt; mnt=$(mktemp -d /tmp/strata-bench-change.XXXXXX); TMPDIRS+=("$mnt")

    # Loop-mount the file itself: every guest write lands in place in Disk.img, so
    # a reflink clone diverges only where the guest writes.
    mount_disk "$img" "$mnt"
    mount_chroot_fs "$mnt"
    # What `apt-get install` would download goes onto the guest disk, as in a VM.
    cp "$debs"/*.deb "$mnt/var/cache/apt/archives/"
    # shellcheck disable=SC2086
    if ! in_chroot "$mnt" apt-get install -y -qq --no-download --no-install-recommends \
            -o Dpkg::Use-Pty=0 $BENCH_PACKAGES >"$mnt.log" 2>&1; then
        log "apt-get install --no-download failed (see below); falling back to dpkg -i of cached .debs"
        tail -n 5 "$mnt.log" >&2 || true
        local names=() d
        for d in "$debs"/*.deb; do names+=("/var/cache/apt/archives/$(basename "$d")"); done
        in_chroot "$mnt" dpkg -i "${names[@]}" >>"$mnt.log" 2>&1 \
            || { tail -n 20 "$mnt.log" >&2; die "dpkg -i in the guest failed"; }
    fi
    rm -f "$mnt.log"
    in_chroot "$mnt" python3 -c 'pass' || die "python3 not runnable in the guest after the change"
    in_chroot "$mnt" sh -c 'command -v curl >/dev/null' || die "curl missing in the guest after the change"
    sync
    umount_all
    sync
    log "change applied to $img (python3, curl installed)"
}

status() {
    local outdir=$1
    if [ -f "$outdir/base.bundle.ok" ]; then
        cat "$outdir/base.bundle.ok"
        ls -ls "$outdir/base.bundle"
        echo "debs: $(ls "$outdir/debs" 2>/dev/null | wc -l)"
    else
        echo "no cached workload in $outdir"; return 1
    fi
}

mode=${1:-build}
case "$mode" in
    build)  build "${2:-$BENCH_WORKLOAD_DIR}" ;;
    change) [ $# -ge 2 ] || die "usage: $0 change BUNDLE_DIR"; change "$2" ;;
    status) status "${2:-$BENCH_WORKLOAD_DIR}" ;;
    -h|--help|help) sed -n '2,24p' "$0" ;;
    *)      [ $# -eq 1 ] || die "usage: $0 [build] OUTDIR | change BUNDLE_DIR | status [OUTDIR]"
            build "$1" ;;
esac
