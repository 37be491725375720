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
           qemu-utils grub-efi-amd64-bin grub-pc-bin grub-common xorriso mtools dosfstools fdisk"
BREW_PKGS="libplist openssl@3 jansson cmocka pkg-config xxhash libarchive zstd curl qemu"

if [ "$(uname)" = Darwin ]; then
    command -v brew >/dev/null || { echo "deps: Homebrew is needed on macOS (https://brew.sh)" >&2; exit 1; }
    for p in $BREW_PKGS; do brew list "$p" >/dev/null 2>&1 || brew install "$p"; done
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "deps: no apt-get here; install by hand: $DEB_PKGS" >&2
    exit 0
fi
missing=""
for p in $DEB_PKGS ${EXTRA_DEB_PKGS:-}; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
echo "deps: installing$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
