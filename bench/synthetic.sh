#!/bin/bash
# Synthetic scale benchmark for the targets that the small Debian workload
# can't exercise (its 200 MB change is over half of its 345 MiB of data):
# a 64 GiB Disk.img holding DATA GiB (default 8) of random data on an XFS
# (reflink) loop mount, then a 200 MB change scattered over the disk.
# Measures, cold: import, clone, commit after the change, and the disk's
# cold read speed of its data; prints the ratios against the targets. Then
# fsck --quick (XXH3 seals) against full fsck (SHA-256) of the two layers.
# Usage: bash bench/synthetic.sh [DATA_GIB]    (root, Linux)
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
S=${STRATA:-$HERE/build/strata}
MK=${MKBUNDLE:-$HERE/build/mkbundle}
DATA=${1:-8}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/strata-synth.XXXXXX")
IMG=$W/xfs.img MNT=$W/mnt
cleanup() { umount "$MNT" 2>/dev/null || true; [ -n "${LOOP:-}" ] && losetup -d "$LOOP" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
truncate -s $((DATA * 2 + 8))G "$IMG"
mkfs.xfs -q -f -m reflink=1 "$IMG"
LOOP=$(losetup --direct-io=on -f --show "$IMG") # no second page cache: cold is cold
mkdir -p "$MNT" && mount "$LOOP" "$MNT"
export STRATA_HOME=$MNT/store
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
secs() { /usr/bin/time -f '%e %M' "$@" 2>&1 >/dev/null | tail -1; }

# DATA GiB in 64 MiB regions spread evenly over the 64 GiB disk, one region
# per slot (the slot in MiB, not in whole GiB, which put two at each offset)
args=()
for ((i = 0; i < DATA * 16; i++)); do args+=(--data "$((i * 64 * 1024 / (DATA * 16)))M:64M:$i"); done
"$MK" "$MNT/b" --size 64G "${args[@]}"
alloc_mib=$(($(du -k "$MNT/b/Disk.img" | cut -f1) / 1024))
if [ "$alloc_mib" -lt $((DATA * 1024)) ] || [ "$alloc_mib" -gt $((DATA * 1024 + 64)) ]; then
    echo "synthetic: the disk holds $alloc_mib MiB of data, not $DATA GiB: the figures would be wrong" >&2
    exit 1
fi
cold; read_s=$(secs python3 "$HERE/bench/sparse_tool.py" read "$MNT/b/Disk.img" | cut -d' ' -f1)
cold; read -r import_s import_kb < <(secs "$S" import "$MNT/b" base)
cold; t0=$(date +%s%N); "$S" clone base "$MNT/inst" 2>/dev/null; t1=$(date +%s%N)
clone_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print (b - a) / 1e9}')
# 200 MB of change: 100 writes of 2 MiB across the disk
w=(); for ((i = 0; i < 100; i++)); do w+=("$((i * 655 + 3))M:2M:$((i + 1000))"); done
"$MK" --write "$MNT/inst/Disk.img" "${w[@]}"
cold; read -r commit_s commit_kb < <(secs "$S" commit "$MNT/inst" -m change)
# fsck reads every data byte of both layers (the child shares the base's
# blocks, but as another file it is read again)
fsck_mib=$(for l in "$STRATA_HOME"/layers/*; do "$S" inspect "$(basename "$l")" --json; done |
    python3 -c 'import json,sys; d=json.JSONDecoder(); t=sys.stdin.read(); n=0; i=0
while i < len(t):
    o, i = d.raw_decode(t, i); n += sum(f["data_bytes"] for f in o["files"])
    while i < len(t) and t[i].isspace(): i += 1
print(n // 1048576)')
cold; read -r quick_s quick_kb < <(secs "$S" fsck --quick)
cold; read -r full_s full_kb < <(secs "$S" fsck)
mib=$((DATA * 1024))
awk -v r="$read_s" -v i="$import_s" -v c="$clone_s" -v m="$commit_s" -v mib="$mib" \
    -v ik="$import_kb" -v ck="$commit_kb" -v d="$DATA" 'BEGIN {
    printf "| measure (64 GiB disk, %d GiB data, XFS direct-io loop, cold) | value | target |\n|---|---|---|\n", d
    printf "| cold read of the data | %.2f s (%.0f MiB/s) | |\n", r, mib / r
    printf "| import | %.2f s (%.0f MiB/s, %.0f%% of read speed) | >= 80%% |\n", i, mib / i, 100 * r / i
    printf "| clone | %.0f ms | < 50 ms |\n", c * 1000
    printf "| commit after a 200 MB change | %.2f s (%.1fx faster than import) | >= 20x |\n", m, i / m
    printf "| peak memory import / commit | %.1f / %.1f MiB | < 100 MB |\n", ik / 1024, ck / 1024
}'
awk -v q="$quick_s" -v f="$full_s" -v mib="$fsck_mib" -v r="$read_s" -v dm="$mib" \
    -v qk="$quick_kb" -v fk="$full_kb" 'BEGIN {
    printf "\n| fsck of both layers (%d MiB of data, cold) | value |\n|---|---|\n", mib
    printf "| fsck --quick (XXH3 seals) | %.2f s (%.0f MiB/s; cold read: %.0f MiB/s) |\n", q, mib / q, dm / r
    printf "| fsck (SHA-256) | %.2f s (%.0f MiB/s) |\n", f, mib / f
    printf "| quick is faster by | %.1fx |\n", f / q
    printf "| peak memory quick / full | %.1f / %.1f MiB |\n", qk / 1024, fk / 1024
}'
echo
echo "$(date -u +%F), $(uname -srm), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
