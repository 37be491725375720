#!/bin/sh
# Make DIR an include directory for `make check-macos` on Linux: the headers
# of the libraries strata uses (libplist, jansson, zstd, xxhash, libarchive,
# libcurl, lz4, OpenSSL), linked from Debian's -dev packages, and nothing else.
# Those headers are the same on macOS; /usr/include itself can't be put on
# the path, as its glibc headers would stand in for macOS's own. OpenSSL's
# and curl's configuration headers are in the multiarch directory.
set -eu
dir=$1
multi=$(${CC:-cc} -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
rm -rf "$dir"
mkdir -p "$dir/openssl"
for h in plist jansson.h jansson_config.h zstd.h zstd_errors.h xxhash.h archive.h \
         archive_entry.h curl lz4.h; do
    for d in /usr/include "/usr/include/$multi"; do
        if [ -e "$d/$h" ]; then ln -s "$d/$h" "$dir/$h"; break; fi
    done
    [ -e "$dir/$h" ] || { echo "macos-headers: no $h under /usr/include (run make deps)" >&2; exit 1; }
done
for d in /usr/include/openssl "/usr/include/$multi/openssl"; do
    [ -d "$d" ] && ln -sf "$d"/* "$dir/openssl/"
done
[ -e "$dir/openssl/evp.h" ] || { echo "macos-headers: no OpenSSL headers (run make deps)" >&2; exit 1; }
