#!/usr/bin/env bash
# bench/run.sh - strata benchmark: import / commit-after-change / clone / bytes
# stored / peak memory, against casync, restic and cp, on the same files in one
# run. Prints a markdown fragment for bench/RESULTS.md on stdout (progress goes to
# stderr) and saves it plus raw numbers under $BENCH_DIR/results/.
#
# Usage: sudo bash bench/run.sh            (see bench/README.md)
#
# Environment:
#   STRATA              strata binary               (default <repo>/build/strata)
#   BENCH_DIR           work area (needs ~10 GiB)   (default /var/tmp/strata-bench)
#   BENCH_WORKLOAD_DIR  cached workload             (default $BENCH_DIR/workload)
#   BENCH_DISK_SIZE     apparent Disk.img size      (default 64G)
#   BENCH_FS            filesystems to run on, space separated: xfs btrfs ext4
#                       (default "xfs"; "xfs ext4" when BENCH_ALL=1)
#   BENCH_FS_SIZE       size of the sparse loop image for xfs/btrfs (default 256G)
#   BENCH_PEERS         peers to run (default "casync restic"; "" = none)
#   BENCH_WARM_REPEATS  warm clone repetitions, median reported (default 3)
#   BENCH_KEEP=1        keep the work filesystem / directory afterwards
set -euo pipefail

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SELF_DIR/.." && pwd)
STRATA=${STRATA:-$REPO_DIR/build/strata}
BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench}
export BENCH_WORKLOAD_DIR=${BENCH_WORKLOAD_DIR:-$BENCH_DIR/workload}
export BENCH_DISK_SIZE=${BENCH_DISK_SIZE:-64G}
if [ -z "${BENCH_FS:-}" ]; then
    if [ "${BENCH_ALL:-0}" = 1 ]; then BENCH_FS="xfs ext4"; else BENCH_FS="xfs"; fi
fi
BENCH_FS_SIZE=${BENCH_FS_SIZE:-256G}
BENCH_PEERS=${BENCH_PEERS-casync restic}
BENCH_WARM_REPEATS=${BENCH_WARM_REPEATS:-3}
BENCH_KEEP=${BENCH_KEEP:-0}
SPARSE_TOOL=$SELF_DIR/sparse_tool.py
WORKLOAD=$SELF_DIR/workload.sh
TS=$(date +%Y%m%d-%H%M%S)
RESULTS_DIR=$BENCH_DIR/results
LOG=$RESULTS_DIR/$TS.log

log()  { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[bench] WARNING: %s\n' "$*" >&2; }
die()  { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (loop mounts, drop_caches, chroot)"

# --------------------------------------------------------------- tools ----
APT_UPDATED=0
ensure_cmd() {  # ensure_cmd CMD PACKAGE
    local cmd=$1 pkg=$2
    if command -v "$cmd" >/dev/null 2>&1 || [ -x "$cmd" ]; then return 0; fi
    log "installing $pkg (for $cmd)"
    if [ "$APT_UPDATED" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >&2 || die "apt-get install $pkg failed"
}
ensure_cmd /usr/bin/time time
ensure_cmd python3 python3
ensure_cmd losetup mount
ensure_cmd mkfs.ext4 e2fsprogs
ensure_cmd debootstrap debootstrap
for fs in $BENCH_FS; do
    case $fs in
        xfs)   ensure_cmd mkfs.xfs xfsprogs ;;
        btrfs) ensure_cmd mkfs.btrfs btrfs-progs ;;
        ext4)  ;;
        *) die "unknown filesystem in BENCH_FS: $fs (use xfs, btrfs, ext4)" ;;
    esac
done
for p in $BENCH_PEERS; do
    case $p in
        casync) ensure_cmd casync casync ;;
        restic) ensure_cmd restic restic ;;
        *) die "unknown peer in BENCH_PEERS: $p" ;;
    esac
done

mkdir -p "$RESULTS_DIR"
: > "$LOG"
HAVE_STRATA=0
if [ -x "$STRATA" ]; then HAVE_STRATA=1; else warn "strata binary not found at $STRATA: strata rows will be n/a"; fi

# ------------------------------------------------------ mounts/cleanup ----
FS_MNT=""      # mountpoint of the current loop filesystem
FS_LOOP=""     # its loop device
cleanup() {
    local rc=$?
    if [ -n "$FS_MNT" ] && mountpoint -q "$FS_MNT" 2>/dev/null; then
        sync
        umount "$FS_MNT" 2>/dev/null || umount -l "$FS_MNT" 2>/dev/null || warn "could not unmount $FS_MNT"
    fi
    if [ -n "$FS_LOOP" ]; then losetup -d "$FS_LOOP" 2>/dev/null || true; fi
    FS_MNT=""; FS_LOOP=""
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

drop_caches() {
    sync
    echo 3 > /proc/sys/vm/drop_caches || warn "could not drop page caches"
}

# ------------------------------------------------------------- results ----
declare -A R   # R[fs:key] = value (ns, bytes, KiB, or text)
setr() { R["$CUR_FS:$1"]=$2; printf '%s\t%s\t%s\n' "$CUR_FS" "$1" "$2" >> "$RESULTS_DIR/$TS.tsv"; }
getr() { local k="$1:$2"; echo "${R[$k]:-}"; }

# timed KEY cmd...: wall time (ns) -> KEY_ns, max RSS (KiB) -> KEY_rss.
# Returns the command's status; output goes to the log.
timed() {
    local key=$1; shift
    local rssf; rssf=$(mktemp)
    local t0 t1 rc=0
    LAST_OUT=$RESULTS_DIR/$TS.last.out
    echo "+ [$CUR_FS] $key: $*" >> "$LOG"
    t0=$(date +%s%N)
    /usr/bin/time -f '%M' -o "$rssf" "$@" > "$LAST_OUT" 2>&1 || rc=$?
    t1=$(date +%s%N)
    cat "$LAST_OUT" >> "$LOG"
    if [ "$rc" = 0 ]; then
        setr "${key}_ns" $((t1 - t0))
        setr "${key}_rss" "$(tail -n1 "$rssf")"
    else
        setr "${key}_ns" FAIL
        warn "$key failed (exit $rc): $* (see $LOG)"
        tail -n 5 "$LOG" >&2
    fi
    rm -f "$rssf"
    return "$rc"
}

alloc_bytes() { du -sB1 "$1" 2>/dev/null | cut -f1; }
ns_ms() { awk -v n="$1" 'BEGIN{printf "%.1f", n/1e6}'; }

# ----------------------------------------------------------- filesystem ----
# setup_fs FS: sets WORK to an empty directory on a filesystem of type FS.
setup_fs() {
    local fs=$1
    FS_NOTE=""
    local native; native=$(stat -f -c %T "$BENCH_DIR")
    if [ "$fs" = ext4 ] && [ "$native" = "ext2/ext3" ]; then
        WORK=$BENCH_DIR/work-ext4
        FS_NOTE="ext4, native ($(findmnt -n -o SOURCE -T "$BENCH_DIR"))"
        if [ -d "$WORK" ]; then
            findmnt -rn -o TARGET | grep -q "^$WORK" && die "something is mounted under $WORK"
            rm -rf "$WORK"
        fi
        mkdir -p "$WORK"
        return
    fi
    local img=$BENCH_DIR/fs-$fs.img
    FS_MNT=$BENCH_DIR/mnt-$fs
    mkdir -p "$FS_MNT"
    if mountpoint -q "$FS_MNT"; then
        warn "$FS_MNT still mounted from an earlier run; unmounting"
        umount "$FS_MNT"
    fi
    rm -f "$img"
    truncate -s "$BENCH_FS_SIZE" "$img"
    # Direct I/O on the loop device keeps a single page cache (the benchmark's)
    # between the work fs and the host disk.
    if FS_LOOP=$(losetup -f --show --direct-io=on -b 4096 "$img" 2>/dev/null); then
        FS_NOTE="loop image, direct-io"
    else
        FS_LOOP=$(losetup -f --show "$img")
        FS_NOTE="loop image"
    fi
    case $fs in
        xfs)   mkfs.xfs -q -f -m reflink=1 "$FS_LOOP" >> "$LOG" 2>&1; FS_NOTE="xfs reflink=1, $FS_NOTE" ;;
        btrfs) mkfs.btrfs -q -f "$FS_LOOP" >> "$LOG" 2>&1; FS_NOTE="btrfs, $FS_NOTE" ;;
        ext4)  mkfs.ext4 -q -F "$FS_LOOP" >> "$LOG" 2>&1; FS_NOTE="ext4, $FS_NOTE" ;;
    esac
    mount "$FS_LOOP" "$FS_MNT"
    WORK=$FS_MNT/work
    mkdir -p "$WORK"
}

teardown_fs() {
    if [ -n "$FS_MNT" ]; then
        sync
        if [ "$BENCH_KEEP" = 1 ]; then
            log "BENCH_KEEP=1: leaving $FS_MNT mounted ($FS_LOOP)"
            FS_MNT=""; FS_LOOP=""
            return
        fi
        umount "$FS_MNT"
        losetup -d "$FS_LOOP" 2>/dev/null || true
        rm -f "$BENCH_DIR/fs-$CUR_FS.img"
        rmdir "$FS_MNT" 2>/dev/null || true
        FS_MNT=""; FS_LOOP=""
    elif [ "$BENCH_KEEP" != 1 ]; then
        findmnt -rn -o TARGET | grep -q "^$WORK" && { warn "not deleting $WORK: has mounts"; return; }
        rm -rf "$WORK"
    fi
}

strata_df_field() {  # strata_df_field FIELD: a number from `strata df --json`
    "$STRATA" df --json > "$RESULTS_DIR/$TS.df.json" 2>> "$LOG" || return 0
    cat "$RESULTS_DIR/$TS.df.json" >> "$LOG"
    python3 "$SPARSE_TOOL" json-field "$RESULTS_DIR/$TS.df.json" "$1"
}

# reflink copy if the fs can, hole-preserving copy otherwise. (GNU cp >= 9 may
# reflink through copy_file_range even with --sparse=always; only
# --reflink=never guarantees a real data copy.)
cp_fast() { cp -a --reflink=auto "$@"; }

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END{if(NR==0){print ""}else if(NR%2){print a[(NR+1)/2]}else{printf "%d\n",(a[NR/2]+a[NR/2+1])/2}}'; }

# clone_series KEY DESTPREFIX cmd-template...: one cold run, then
# BENCH_WARM_REPEATS warm runs (median). "{}" in the command is the destination.
clone_series() {
    local key=$1 prefix=$2; shift 2
    local i dest args a warm=()
    drop_caches
    dest=${prefix}0; args=(); for a in "$@"; do args+=("${a//\{\}/$dest}"); done
    timed "${key}_cold" "${args[@]}" || return 0
    for ((i=1; i<=BENCH_WARM_REPEATS; i++)); do
        dest=$prefix$i; args=(); for a in "$@"; do args+=("${a//\{\}/$dest}"); done
        sync
        timed "${key}_w$i" "${args[@]}" || return 0
        warm+=("$(getr "$CUR_FS" "${key}_w${i}_ns")")
    done
    setr "${key}_warm_ns" "$(echo "${warm[*]}" | median)"
}

# -------------------------------------------------------------- one fs ----
bench_fs() {
    CUR_FS=$1
    log "=== $CUR_FS ==="
    setup_fs "$CUR_FS"
    setr fs_note "$FS_NOTE"
    log "work dir: $WORK ($FS_NOTE)"
    export STRATA_HOME=$WORK/store
    local base=$WORK/base.bundle inst=$WORK/inst peer=$WORK/peer

    # The bundle is put on the fs under test (sparse copy; not timed).
    log "copying cached base bundle onto $CUR_FS"
    cp -a --reflink=never --sparse=always "$BENCH_WORKLOAD_DIR/base.bundle" "$base"
    local data_bytes; data_bytes=$(python3 "$SPARSE_TOOL" extents "$base/Disk.img" | cut -d' ' -f1)
    setr disk_data_bytes "$data_bytes"
    setr disk_apparent_bytes "$(stat -c %s "$base/Disk.img")"
    setr disk_alloc_bytes "$(alloc_bytes "$base/Disk.img")"

    # 1. cold sequential read of the disk's allocated data (SEEK_DATA ranges).
    log "cold sequential read of allocated data"
    drop_caches
    local out; out=$(python3 "$SPARSE_TOOL" read "$base/Disk.img")
    setr read_bytes "${out% *}"
    setr read_ns "$(awk -v s="${out#* }" 'BEGIN{printf "%d", s*1e9}')"

    # 2. import.
    local strata_ok=0
    if [ "$HAVE_STRATA" = 1 ]; then
        log "strata import (cold)"
        drop_caches
        if timed strata_import "$STRATA" import "$base" base -v; then
            strata_ok=1
            setr strata_import_v "$(grep -m1 '^strata: read' "$LAST_OUT" || true)"
            setr strata_store_after_import "$(alloc_bytes "$WORK/store")"
            setr strata_unique_after_import "$(strata_df_field unique_bytes)"
        fi
    fi

    local p
    if [ -n "$BENCH_PEERS" ]; then
        cp_fast "$base" "$peer"
    fi
    for p in $BENCH_PEERS; do
        case $p in
        casync)
            log "casync make (cold)"
            drop_caches
            timed casync_import casync make --store="$WORK/castr" "$WORK/ca-base.caibx" "$peer/Disk.img" || true
            setr casync_store_after_import "$(alloc_bytes "$WORK/castr")"
            ;;
        restic)
            log "restic backup (cold)"
            export RESTIC_PASSWORD=strata-bench RESTIC_REPOSITORY=$WORK/restic RESTIC_CACHE_DIR=$WORK/restic-cache
            restic init >> "$LOG" 2>&1 || die "restic init failed (see $LOG)"
            drop_caches
            timed restic_import restic backup -q --host bench "$peer" || true
            setr restic_store_after_import "$(alloc_bytes "$WORK/restic")"
            ;;
        esac
    done

    # 3. instance + guest change.
    if [ "$strata_ok" = 1 ]; then
        log "strata clone base -> inst (cold)"
        drop_caches
        if ! timed strata_clone_base "$STRATA" clone base "$inst"; then
            strata_ok=0
        fi
    fi
    if [ "$strata_ok" != 1 ]; then
        log "making the instance with cp (no working strata)"
        rm -rf "$inst"
        cp_fast "$base" "$inst"
    fi
    log "applying the guest change (apt-get install python3 curl in the guest)"
    local t0 t1
    t0=$(date +%s%N)
    bash "$WORKLOAD" change "$inst" >> "$LOG" 2>&1 || die "workload change failed (see $LOG)"
    t1=$(date +%s%N)
    setr change_ns $((t1 - t0))

    # 4. commit after change.
    if [ "$strata_ok" = 1 ]; then
        log "strata commit (cold)"
        local before; before=$(alloc_bytes "$WORK/store")
        drop_caches
        if timed strata_commit "$STRATA" commit "$inst" -m change -t base:changed -v; then
            setr strata_commit_v "$(grep -m1 '^strata: read' "$LAST_OUT" || true)"
            setr strata_store_growth $(( $(alloc_bytes "$WORK/store") - before ))
            local u0 u1; u0=$(getr "$CUR_FS" strata_unique_after_import); u1=$(strata_df_field unique_bytes)
            if isnum "$u0" && isnum "$u1"; then setr strata_unique_growth $((u1 - u0)); fi
            # `strata log REF --json` lists REF first, then its ancestors.
            if "$STRATA" log base:changed --json > "$WORK/log.json" 2>> "$LOG"; then
                setr strata_bytes_added "$(python3 "$SPARSE_TOOL" json-field "$WORK/log.json" bytes_added)"
            elif "$STRATA" log base:changed > "$WORK/log.txt" 2>> "$LOG"; then
                setr strata_bytes_added "$(python3 "$SPARSE_TOOL" json-field "$WORK/log.txt" bytes_added)"
            fi
        else
            strata_ok=0
        fi
    fi

    if [ -n "$BENCH_PEERS" ]; then
        # Peers see the same changed content at the same path as their first run.
        cp --reflink=auto "$inst/Disk.img" "$peer/Disk.img"
    fi
    for p in $BENCH_PEERS; do
        case $p in
        casync)
            log "casync make after change (cold)"
            local before; before=$(alloc_bytes "$WORK/castr")
            drop_caches
            timed casync_commit casync make --store="$WORK/castr" "$WORK/ca-changed.caibx" "$peer/Disk.img" || true
            setr casync_store_growth $(( $(alloc_bytes "$WORK/castr") - before ))
            ;;
        restic)
            log "restic backup after change (cold)"
            local before; before=$(alloc_bytes "$WORK/restic")
            drop_caches
            timed restic_commit restic backup -q --host bench "$peer" || true
            setr restic_store_growth $(( $(alloc_bytes "$WORK/restic") - before ))
            ;;
        esac
    done

    # 5. clone of the changed layer vs cp.
    if [ "$strata_ok" = 1 ]; then
        log "strata clone base:changed (cold + ${BENCH_WARM_REPEATS} warm)"
        clone_series strata_clone "$WORK/c2_" "$STRATA" clone base:changed "{}"
    fi
    mkdir -p "$WORK/cpr" "$WORK/cps"
    if cp --reflink=always "$inst/AuxiliaryStorage" "$WORK/cpr/probe" 2>/dev/null; then
        rm -f "$WORK/cpr/probe"
        log "cp --reflink=always (cold + ${BENCH_WARM_REPEATS} warm)"
        clone_series cp_reflink "$WORK/cpr/Disk.img." cp --reflink=always "$inst/Disk.img" "{}"
    else
        setr cp_reflink_cold_ns n/a
        log "no reflink support on $CUR_FS: cp --reflink=always is n/a"
    fi
    log "cp --reflink=never --sparse=always (cold)"
    drop_caches
    timed cp_sparse_cold cp --reflink=never --sparse=always "$inst/Disk.img" "$WORK/cps/Disk.img" || true

    # 6. floor and sanity checks (after all timings: these read everything).
    log "counting changed 4 KiB blocks (floor)"
    out=$(python3 "$SPARSE_TOOL" diff "$base/Disk.img" "$inst/Disk.img")
    setr floor_bytes "${out%% *}"
    if [ "$strata_ok" = 1 ]; then
        log "verifying strata clones"
        local v=ok f
        out=$(python3 "$SPARSE_TOOL" diff "$inst/Disk.img" "$WORK/c2_0/Disk.img" 2>&1) || out="error $out"
        [ "${out%% *}" = 0 ] || v="MISMATCH (Disk.img differs in ${out%% *} bytes)"
        for f in "$inst"/*; do
            [ "$(basename "$f")" = Disk.img ] && continue
            cmp -s "$f" "$WORK/c2_0/$(basename "$f")" || v="MISMATCH ($(basename "$f"))"
        done
        setr verify_clone_changed "$v"
        # the base layer: a fresh clone must equal the imported bundle
        if "$STRATA" clone base "$WORK/c1" >> "$LOG" 2>&1; then
            out=$(python3 "$SPARSE_TOOL" diff "$base/Disk.img" "$WORK/c1/Disk.img" 2>&1) || out="error $out"
            if [ "${out%% *}" = 0 ]; then setr verify_clone_base ok
            else setr verify_clone_base "MISMATCH (Disk.img differs in ${out%% *} bytes)"; fi
        else
            setr verify_clone_base "clone failed"
        fi
    fi
    setr strata_ok "$strata_ok"
    teardown_fs
}

# --------------------------------------------------------------- report ----
fmt_t() {  # ns -> "1.23 s" / "12.3 ms"
    case "$1" in ''|n/a) echo "n/a"; return ;; FAIL) echo "FAIL"; return ;; esac
    awk -v n="$1" 'BEGIN{ if (n >= 1e9) printf "%.2f s", n/1e9; else printf "%.1f ms", n/1e6 }'
}
fmt_b() {  # bytes -> MiB/GiB
    case "$1" in ''|n/a) echo "n/a"; return ;; esac
    awk -v b="$1" 'BEGIN{ if (b >= 2^30) printf "%.2f GiB", b/2^30; else printf "%.1f MiB", b/2^20 }'
}
fmt_rate() {  # bytes ns -> MiB/s
    case "$2" in ''|n/a|FAIL) echo ""; return ;; esac
    awk -v b="$1" -v n="$2" 'BEGIN{ if (n > 0) printf "%.0f MiB/s", (b/2^20)/(n/1e9) }'
}
fmt_rss() {  # KiB -> MiB
    case "$1" in '') echo "n/a"; return ;; esac
    awk -v k="$1" 'BEGIN{ printf "%.1f MiB", k/1024 }'
}
isnum() { [[ "$1" =~ ^[0-9]+$ ]]; }
cell_time() {  # fs key [data-bytes [apparent-bytes]] -> "time (rate), RSS"
    local ns rss s
    ns=$(getr "$1" "${2}_ns"); rss=$(getr "$1" "${2}_rss")
    [ -z "$ns" ] && { echo "n/a"; return; }
    s=$(fmt_t "$ns")
    if [ -n "${4:-}" ] && isnum "$ns"; then s="$s ($(fmt_rate "$3" "$ns") of data, $(fmt_rate "$4" "$ns") of apparent size)"
    elif [ -n "${3:-}" ] && isnum "$ns"; then s="$s ($(fmt_rate "$3" "$ns"))"; fi
    if isnum "$ns" && [ -n "$rss" ]; then s="$s, RSS $(fmt_rss "$rss")"; fi
    echo "$s"
}
cell_clone() {  # fs key -> "cold X / warm Y"
    local c w
    c=$(getr "$1" "${2}_cold_ns"); w=$(getr "$1" "${2}_warm_ns")
    [ -z "$c" ] && { echo "n/a"; return; }
    [ "$c" = n/a ] && { echo "n/a (no reflink)"; return; }
    if [ -n "$w" ]; then echo "cold $(fmt_t "$c") / warm $(fmt_t "$w")"; else fmt_t "$c"; fi
}
cell_bytes() {  # fs key floor
    local b; b=$(getr "$1" "$2")
    isnum "$b" || { echo "n/a"; return; }
    if isnum "${3:-}" && [ "$3" -gt 0 ]; then
        echo "$(fmt_b "$b") ($(awk -v a="$b" -v f="$3" 'BEGIN{printf "%.2f", a/f}')x floor)"
    else fmt_b "$b"; fi
}
verdict() { if [ "$1" = 1 ]; then echo "PASS"; elif [ "$1" = 0 ]; then echo "FAIL"; else echo "n/a"; fi; }

report_fs() {
    local fs=$1 data floor app
    data=$(getr "$fs" disk_data_bytes); floor=$(getr "$fs" floor_bytes); app=$(getr "$fs" disk_apparent_bytes)
    echo
    echo "#### Filesystem: $fs ($(getr "$fs" fs_note))"
    echo
    echo "Disk.img: apparent $(fmt_b "$(getr "$fs" disk_apparent_bytes)"), allocated data $(fmt_b "$data"); guest change (apt-get install python3 curl, $(fmt_t "$(getr "$fs" change_ns)")) rewrote $(fmt_b "$floor") in 4 KiB blocks."
    echo
    echo "| measurement | strata | casync | restic | reference |"
    echo "|---|---|---|---|---|"
    echo "| import base (cold) | $(cell_time "$fs" strata_import "$data") | $(cell_time "$fs" casync_import "$data" "$app") | $(cell_time "$fs" restic_import "$data" "$app") | cold sequential read of data: $(cell_time "$fs" read "$data") |"
    echo "| store size after import | $(cell_bytes "$fs" strata_store_after_import) | $(cell_bytes "$fs" casync_store_after_import) | $(cell_bytes "$fs" restic_store_after_import) | data $(fmt_b "$data") |"
    echo "| commit after change (cold) | $(cell_time "$fs" strata_commit) | $(cell_time "$fs" casync_commit) | $(cell_time "$fs" restic_commit) | |"
    echo "| bytes stored for the change | $(cell_bytes "$fs" strata_bytes_added "$floor") (bytes_added); unique data grew $(cell_bytes "$fs" strata_unique_growth "$floor"); du grew $(cell_bytes "$fs" strata_store_growth "$floor") | $(cell_bytes "$fs" casync_store_growth "$floor") | $(cell_bytes "$fs" restic_store_growth "$floor") | floor (changed 4 KiB blocks): $(fmt_b "$floor") |"
    echo "| clone changed layer | $(cell_clone "$fs" strata_clone) | | | cp --reflink=always: $(cell_clone "$fs" cp_reflink); cp --reflink=never --sparse=always: $(fmt_t "$(getr "$fs" cp_sparse_cold_ns)") |"
    local iv cv; iv=$(getr "$fs" strata_import_v); cv=$(getr "$fs" strata_commit_v)
    [ -n "$iv$cv" ] && echo "| strata -v | import: ${iv#strata: }<br>commit: ${cv#strata: } | | | |"
    echo "| clone base (cold, for the change) | $(cell_time "$fs" strata_clone_base) | | | |"
    local v1 v2; v1=$(getr "$fs" verify_clone_base); v2=$(getr "$fs" verify_clone_changed)
    [ -n "$v1$v2" ] && echo "| verify clones == source | base: ${v1:-n/a}; base:changed: ${v2:-n/a} | | | |"

    # targets
    local imp com rd cl rss_i rss_c
    imp=$(getr "$fs" strata_import_ns); com=$(getr "$fs" strata_commit_ns)
    rd=$(getr "$fs" read_ns); cl=$(getr "$fs" strata_clone_cold_ns)
    rss_i=$(getr "$fs" strata_import_rss); rss_c=$(getr "$fs" strata_commit_rss)
    echo
    echo "| target ($fs) | measured | result |"
    echo "|---|---|---|"
    if isnum "$cl"; then
        local w; w=$(getr "$fs" strata_clone_warm_ns)
        local ok; ok=$(awk -v n="$cl" 'BEGIN{print (n < 50e6) ? 1 : 0}')
        local note=""; [ "$fs" != xfs ] && note=" (target is for XFS)"
        echo "| clone of $(fmt_b "$(getr "$fs" disk_apparent_bytes)") layer < 50 ms$note | cold $(fmt_t "$cl")${w:+, warm $(fmt_t "$w")} | $(verdict "$ok") |"
    else
        echo "| clone of 64 GiB layer < 50 ms | n/a | n/a |"
    fi
    if isnum "$imp" && isnum "$com"; then
        local x; x=$(awk -v a="$imp" -v b="$com" 'BEGIN{printf "%.1f", a/b}')
        echo "| commit after change >= 20x faster than import | ${x}x ($(fmt_t "$com") vs $(fmt_t "$imp")) | $(verdict "$(awk -v x="$x" 'BEGIN{print (x >= 20) ? 1 : 0}')") |"
    else
        echo "| commit after change >= 20x faster than import | n/a | n/a |"
    fi
    if isnum "$imp" && isnum "$rd"; then
        local pct; pct=$(awk -v r="$rd" -v i="$imp" 'BEGIN{printf "%.0f", 100*r/i}')
        echo "| import >= 80% of cold sequential read speed | ${pct}% ($(fmt_rate "$data" "$imp") vs $(fmt_rate "$data" "$rd")) | $(verdict "$(awk -v p="$pct" 'BEGIN{print (p >= 80) ? 1 : 0}')") |"
    else
        echo "| import >= 80% of cold sequential read speed | n/a (read $(fmt_rate "$data" "$rd")) | n/a |"
    fi
    if isnum "$rss_i" || isnum "$rss_c"; then
        local m=0; isnum "$rss_i" && m=$rss_i; isnum "$rss_c" && [ "$rss_c" -gt "$m" ] && m=$rss_c
        # 100 MB = 100e6 bytes = 97656 KiB
        echo "| peak memory < 100 MB (import, commit) | $(fmt_rss "$rss_i"), $(fmt_rss "$rss_c") | $(verdict "$(awk -v m="$m" 'BEGIN{print (m*1024 < 100e6) ? 1 : 0}')") |"
    else
        echo "| peak memory < 100 MB | n/a | n/a |"
    fi
}

report() {
    local cpu; cpu=$(awk -F': *' '/^model name/{print $2; exit}' /proc/cpuinfo)
    echo "### strata benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- machine: \`$(uname -a)\`"
    echo "- cpu: $cpu × $(nproc), memory $(awk '/MemTotal/{printf "%.0f GiB", $2/2^20}' /proc/meminfo)"
    echo "- strata: $( [ "$HAVE_STRATA" = 1 ] && echo "\`$STRATA\` ($(cd "$REPO_DIR" && git rev-parse --short HEAD 2>/dev/null || echo 'no commit'))" || echo "not found ($STRATA)")"
    echo "- peers: casync $(casync --version 2>/dev/null | head -n1 | awk '{print $2}' || echo -), $(restic version 2>/dev/null | awk '{print $1, $2}' || echo restic -), $(cp --version | head -n1)"
    echo "- workload: Debian $(sed -n 's/^suite=//p' "$BENCH_WORKLOAD_DIR/base.bundle.ok") minbase debootstrapped into ext4 on a sparse $BENCH_DISK_SIZE raw Disk.img (+ AuxiliaryStorage, 32 MiB sparse); change = \`apt-get install python3 curl\` inside the guest (loop mount, in place)"
    echo "- casync and restic read the whole apparent Disk.img, holes included; MiB/s figures are allocated data bytes / time unless marked"
    echo "- all \"cold\" timings follow \`sync; echo 3 > /proc/sys/vm/drop_caches\`; RSS is max RSS from \`/usr/bin/time -f %M\`; warm clone = median of $BENCH_WARM_REPEATS"
    local fs
    for fs in $BENCH_FS; do report_fs "$fs"; done
}

# ----------------------------------------------------------------- main ----
log "results and log: $RESULTS_DIR/$TS.{md,tsv,log}"
log "building/checking the workload (cached in $BENCH_WORKLOAD_DIR)"
bash "$WORKLOAD" build "$BENCH_WORKLOAD_DIR" 2>&1 | tee -a "$LOG" >&2
[ -f "$BENCH_WORKLOAD_DIR/base.bundle.ok" ] || die "workload build failed"
mkdir -p "$BENCH_DIR"
for fs in $BENCH_FS; do
    bench_fs "$fs"
done
report | tee "$RESULTS_DIR/$TS.md"
log "markdown saved to $RESULTS_DIR/$TS.md (paste into bench/RESULTS.md)"
