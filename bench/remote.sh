#!/usr/bin/env bash
# bench/remote.sh - push and pull through a registry on the real Debian
# workload, in one run, against the floor (changed 4 KiB blocks through zstd),
# tart's scheme (512 MiB LZ4 pieces) and `skopeo copy` of the same artifact
# from the same registry. Prints a markdown fragment for bench/RESULTS.md on
# stdout (progress on stderr) and saves it, the raw numbers and a log under
# $BENCH_DIR/results/remote-<timestamp>.*
#
# Usage: sudo bash bench/remote.sh            (see bench/README.md)
#
# Environment:
#   STRATA              strata binary               (default <repo>/build/strata)
#   BENCH_DIR           work area (needs ~3 GiB)    (default /var/tmp/strata-bench)
#   BENCH_WORKLOAD_DIR  cached workload             (default $BENCH_DIR/workload)
#   BENCH_FS_SIZE       sparse XFS loop image       (default 64G)
#   BENCH_REPEATS       pulls into an empty store and skopeo copies, alternated;
#                       the median is reported     (default 3)
#   BENCH_JOBS          --jobs for push             (default: strata's own)
#   BENCH_KEEP=1        leave the work filesystem mounted afterwards
set -euo pipefail

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SELF_DIR/.." && pwd)
STRATA=${STRATA:-$REPO_DIR/build/strata}
BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench}
export BENCH_WORKLOAD_DIR=${BENCH_WORKLOAD_DIR:-$BENCH_DIR/workload}
BENCH_FS_SIZE=${BENCH_FS_SIZE:-64G}
BENCH_REPEATS=${BENCH_REPEATS:-3}
BENCH_JOBS=${BENCH_JOBS:-}
BENCH_KEEP=${BENCH_KEEP:-0}
TS=$(date +%Y%m%d-%H%M%S)
RESULTS_DIR=$BENCH_DIR/results
OUT=$RESULTS_DIR/remote-$TS
LOG=$OUT.log

log()  { printf '[remote-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die()  { printf '[remote-bench] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (loop mount, drop_caches, chroot)"
[ -x "$STRATA" ] || die "no strata binary at $STRATA (make, or set STRATA)"

# --------------------------------------------------------------- tools ----
ensure_cmd() {  # ensure_cmd CMD PACKAGE: bench-only tools come from apt here
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2 (for $1)"
    DEBIAN_FRONTEND=noninteractive flock /tmp/apt.lock apt-get install -y -qq "$2" >&2 \
        || die "apt-get install $2 failed"
}
ensure_cmd docker-registry docker-registry
ensure_cmd skopeo skopeo
ensure_cmd lz4 lz4
ensure_cmd zstd zstd
ensure_cmd python3 python3
ensure_cmd curl curl
ensure_cmd mkfs.xfs xfsprogs
[ -x /usr/bin/time ] || ensure_cmd /usr/bin/time time

mkdir -p "$RESULTS_DIR"
: > "$LOG"

# ------------------------------------------------------ state/cleanup ----
IMG=$BENCH_DIR/fs-remote.img
MNT=$BENCH_DIR/mnt-remote
LOOP=""
REG_PID=""
cleanup() {
    local rc=$?
    if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null; wait "$REG_PID" 2>/dev/null || true; fi
    if [ "$BENCH_KEEP" != 1 ]; then
        if mountpoint -q "$MNT" 2>/dev/null; then
            sync
            umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
        fi
        [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
        rm -f "$IMG"
        rmdir "$MNT" 2>/dev/null || true
    else
        log "BENCH_KEEP=1: $MNT stays mounted ($LOOP)"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

declare -A R
setr() { R[$1]=$2; printf '%s\t%s\n' "$1" "$2" >> "$OUT.tsv"; }
getr() { echo "${R[$1]:-}"; }

# timed KEY cmd...: wall time (ns) -> KEY_ns, max RSS (KiB) -> KEY_rss, user +
# system CPU seconds -> KEY_cpu, stdout -> $OUT.KEY.out (and the log). Fails
# the run if the command fails.
timed() {
    local key=$1; shift
    local t0 t1 rc=0
    echo "+ $key: $*" >> "$LOG"
    t0=$(date +%s%N)
    /usr/bin/time -f '%M %U %S' -o "$OUT.rss" "$@" > "$OUT.$key.out" 2>> "$LOG" || rc=$?
    t1=$(date +%s%N)
    cat "$OUT.$key.out" >> "$LOG"
    [ "$rc" = 0 ] || { tail -n 5 "$LOG" >&2; die "$key failed (exit $rc): $*"; }
    setr "${key}_ns" $((t1 - t0))
    local rss u s
    read -r rss u s < <(tail -n1 "$OUT.rss")
    setr "${key}_rss" "$rss"
    setr "${key}_cpu" "$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}')"
}

jfield() {  # jfield FILE FIELD: a top-level field of a JSON object
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}
du_b() { du -sb "$1" | cut -f1; }   # apparent bytes under a directory
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END{if(NR%2){print a[(NR+1)/2]}else{printf "%d\n",(a[NR/2]+a[NR/2+1])/2}}'; }

# ----------------------------------------------------------- workload ----
log "results and log: $OUT.{md,tsv,log}"
bash "$SELF_DIR/workload.sh" build "$BENCH_WORKLOAD_DIR" 2>&1 | tee -a "$LOG" >&2
[ -f "$BENCH_WORKLOAD_DIR/base.bundle.ok" ] || die "workload build failed"

# ---------------------------------------------------- XFS (reflink=1) ----
mkdir -p "$BENCH_DIR" "$MNT"
if mountpoint -q "$MNT"; then log "unmounting $MNT left from an earlier run"; umount "$MNT"; fi
rm -f "$IMG"
truncate -s "$BENCH_FS_SIZE" "$IMG"
LOOP=$(losetup -f --show --direct-io=on -b 4096 "$IMG" 2>/dev/null || losetup -f --show "$IMG")
mkfs.xfs -q -f -m reflink=1 "$LOOP" >> "$LOG" 2>&1
mount "$LOOP" "$MNT"
WORK=$MNT/work
mkdir -p "$WORK"
export STRATA_HOME=$WORK/store DOCKER_CONFIG=$WORK/docker XDG_CACHE_HOME=$WORK/cache

# ----------------------------------------------------------- registry ----
PORT=$(free_port)
REG=127.0.0.1:$PORT
mkdir -p "$WORK/registry"
cat > "$WORK/registry/config.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $WORK/registry/data}
  maintenance: {uploadpurging: {enabled: false}}
http:
  addr: $REG
  secret: bench-only-not-secret
EOF
docker-registry serve "$WORK/registry/config.yml" > "$WORK/registry/log" 2>&1 &
REG_PID=$!
for _ in $(seq 150); do curl -s -o /dev/null "http://$REG/v2/" && break; sleep 0.1; done
curl -s -o /dev/null "http://$REG/v2/" || { cat "$WORK/registry/log" >&2; die "the registry did not start"; }
mkdir -p "$WORK/registry/data"
log "docker-registry on $REG, storage $WORK/registry/data"

# ------------------------------------------------ base, change, commit ----
log "copying the base bundle onto XFS, import, clone, guest change, commit"
cp -a --sparse=always "$BENCH_WORKLOAD_DIR/base.bundle" "$WORK/base.bundle"
BASE_ID=$("$STRATA" import "$WORK/base.bundle" base 2>> "$LOG") || die "strata import failed (see $LOG)"
"$STRATA" clone base "$WORK/inst" >> "$LOG" 2>&1 || die "strata clone failed"
bash "$SELF_DIR/workload.sh" change "$WORK/inst" >> "$LOG" 2>&1 || die "workload change failed (see $LOG)"
CHILD_ID=$("$STRATA" commit "$WORK/inst" -m change -t base:changed 2>> "$LOG") || die "strata commit failed"
setr base_id "$BASE_ID"; setr child_id "$CHILD_ID"
setr disk_data_bytes "$(python3 "$SELF_DIR/sparse_tool.py" extents "$WORK/base.bundle/Disk.img" | cut -d' ' -f1)"

# ---------------------------------------------------------------- push ----
JOBS=()
[ -n "$BENCH_JOBS" ] && JOBS=(--jobs "$BENCH_JOBS")
for which in base changed; do
    ref=base; [ "$which" = changed ] && ref=base:changed
    log "push $ref -> $REG/bench/vm:$which (cold)"
    before=$(du_b "$WORK/registry/data")
    drop_caches
    timed "push_$which" "$STRATA" push "$ref" "$REG/bench/vm:$which" --json "${JOBS[@]}"
    setr "push_${which}_registry_growth" $(( $(du_b "$WORK/registry/data") - before ))
    for f in bytes_uploaded blobs_uploaded chunks_uploaded chunks_present chunk_bytes; do
        setr "push_${which}_$f" "$(jfield "$OUT.push_$which.out" "$f")"
    done
done

# the artifact as the registry has it: every blob of the child's manifest
skopeo inspect --raw --tls-verify=false "docker://$REG/bench/vm:changed" > "$OUT.manifest.json"
read -r ART_BYTES PACK_BYTES NPACKS < <(python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
ds = [m["config"]] + m["layers"]
packs = [d for d in m["layers"] if d["mediaType"].startswith("application/vnd.strata.pack")]
print(sum(d["size"] for d in ds), sum(d["size"] for d in packs), len(packs))' "$OUT.manifest.json")
setr artifact_bytes "$ART_BYTES"; setr artifact_pack_bytes "$PACK_BYTES"; setr artifact_packs "$NPACKS"
setr manifest_bytes "$(wc -c < "$OUT.manifest.json")"

# --------------------------------------------------------------- pulls ----
pull_into() {  # pull_into KEY STORE TAG: timed strata pull of bench/vm:TAG into STORE
    local key=$1 store=$2 tag=$3
    drop_caches
    STRATA_HOME=$store timed "$key" "$STRATA" pull "$REG/bench/vm:$tag" --tag "$tag" --json
}
for r in $(seq "$BENCH_REPEATS"); do
    # alternate who goes first, so drift in the machine's load hits both
    for tool in $( [ $((r % 2)) = 1 ] && echo "strata skopeo" || echo "skopeo strata"); do
        if [ "$tool" = strata ]; then
            log "pull of the child into an empty store ($r/$BENCH_REPEATS, cold)"
            rm -rf "$WORK/pull-empty"
            pull_into "pull_empty_$r" "$WORK/pull-empty" changed
            setr "pull_empty_${r}_bytes_fetched" "$(jfield "$OUT.pull_empty_$r.out" bytes_fetched)"
            setr "pull_empty_${r}_chunks_fetched" "$(jfield "$OUT.pull_empty_$r.out" chunks_fetched)"
            setr "pull_empty_${r}_layer" "$(jfield "$OUT.pull_empty_$r.out" layer)"
        else
            log "skopeo copy of the child to dir: ($r/$BENCH_REPEATS, cold)"
            rm -rf "$WORK/skopeo"
            drop_caches
            timed "skopeo_$r" skopeo copy -q --src-tls-verify=false \
                "docker://$REG/bench/vm:changed" "dir:$WORK/skopeo"
            # dir: holds the blobs (named by digest), manifest.json and version
            setr "skopeo_${r}_bytes" "$(find "$WORK/skopeo" -type f ! -name manifest.json ! -name version -printf '%s\n' | awk '{s+=$1} END{print s+0}')"
        fi
    done
done

log "verifying the pulled child: layer id, clone == the committed instance, sparse"
v=ok
[ "$(getr pull_empty_1_layer)" = "$CHILD_ID" ] || v="layer id $(getr pull_empty_1_layer) != $CHILD_ID"
STRATA_HOME=$WORK/pull-empty "$STRATA" clone changed "$WORK/pulled" >> "$LOG" 2>&1 || v="clone of the pulled layer failed"
if [ "$v" = ok ]; then
    d=$(python3 "$SELF_DIR/sparse_tool.py" diff "$WORK/inst/Disk.img" "$WORK/pulled/Disk.img" | cut -d' ' -f1)
    [ "$d" = 0 ] || v="Disk.img differs in $d bytes"
    for f in "$WORK/inst"/*; do
        [ "$(basename "$f")" = Disk.img ] && continue
        cmp -s "$f" "$WORK/pulled/$(basename "$f")" || v="$(basename "$f") differs"
    done
    setr pulled_disk_alloc "$(du -B1 "$WORK/pulled/Disk.img" | cut -f1)"
    setr inst_disk_alloc "$(du -B1 "$WORK/inst/Disk.img" | cut -f1)"
fi
setr verify_pull "$v"

log "pull of the base into a second empty store, then of the child where the base is present (cold)"
pull_into pull_base "$WORK/pull-incr" base
pull_into pull_child "$WORK/pull-incr" changed
for f in bytes_fetched chunks_fetched layers_received; do
    setr "pull_base_$f" "$(jfield "$OUT.pull_base.out" "$f")"
    setr "pull_child_$f" "$(jfield "$OUT.pull_child.out" "$f")"
done

# ------------------------------------------------- floor and tart ----
log "floor (changed 4 KiB blocks | zstd) and tart (changed 512 MiB pieces, lz4 -1)"
python3 "$SELF_DIR/change_size.py" "$WORK/base.bundle" "$WORK/inst" > "$OUT.change.json"
cat "$OUT.change.json" >> "$LOG"
for f in changed_bytes floor_zstd_bytes granule_bytes granule_zstd_bytes tart_chunks \
         tart_chunks_changed tart_changed_lz4_bytes tart_base_lz4_bytes tart_check seconds; do
    setr "cs_$f" "$(jfield "$OUT.change.json" "$f")"
done

# -------------------------------------------------------------- report ----
fmt_b() { awk -v b="$1" 'BEGIN{ if (b >= 2^30) printf "%.2f GiB", b/2^30; else if (b >= 2^20) printf "%.1f MiB", b/2^20; else printf "%.1f KiB", b/2^10 }'; }
fmt_s() { awk -v n="$1" 'BEGIN{ printf "%.2f s", n/1e9 }'; }
fmt_mbs() { awk -v b="$1" -v n="$2" 'BEGIN{ printf "%.1f MB/s", b/1e6/(n/1e9) }'; }
fmt_rss() { awk -v k="$1" 'BEGIN{ printf "%.1f MiB", k/1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ printf "%.2f", a/b }'; }
pass() { if [ "$1" = 1 ]; then echo PASS; else echo MISS; fi; }
series() { local k=$1 s="" r; for r in $(seq "$BENCH_REPEATS"); do s="$s $(getr "${k}_${r}_${2:-ns}")"; done; echo "$s"; }
list_s() { local s="" n; for n in $1; do s="$s$(awk -v n="$n" 'BEGIN{printf "%.2f ", n/1e9}')"; done; echo "${s% }"; }
maxrss() { local m=0 r v; for r in $(seq "$BENCH_REPEATS"); do v=$(getr "${1}_${r}_rss"); [ "$v" -gt "$m" ] && m=$v; done; echo "$m"; }

report() {
    local floor up growth tart gran pe_ns sk_ns pe_bytes sk_bytes small pe_rate sk_rate
    floor=$(getr cs_floor_zstd_bytes); up=$(getr push_changed_bytes_uploaded)
    growth=$(getr push_changed_registry_growth); tart=$(getr cs_tart_changed_lz4_bytes)
    gran=$(getr cs_granule_zstd_bytes)
    pe_ns=$(series pull_empty | median); sk_ns=$(series skopeo | median)
    small=$(( $(getr artifact_bytes) - $(getr artifact_pack_bytes) ))
    pe_bytes=$(( $(getr pull_empty_1_bytes_fetched) + small ))
    sk_bytes=$(getr skopeo_1_bytes)
    pe_rate=$(awk -v b="$pe_bytes" -v n="$pe_ns" 'BEGIN{print b/n}')
    sk_rate=$(awk -v b="$sk_bytes" -v n="$sk_ns" 'BEGIN{print b/n}')
    local cpu strata_rev
    cpu=$(awk -F': *' '/^model name/{print $2; exit}' /proc/cpuinfo)
    strata_rev=$(cd "$(dirname "$STRATA")/.." && echo "branch $(git rev-parse --abbrev-ref HEAD 2>/dev/null), $(git describe --always --dirty 2>/dev/null); binary built $(date -u -r "$STRATA" '+%H:%M UTC')" || echo unknown)
    echo "### Push and pull through a registry (\`bench/remote.sh\`) — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- machine: \`$(uname -srm)\`, $cpu × $(nproc), load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- strata: \`$STRATA\` ($strata_rev); registry: $(docker-registry --version 2>/dev/null | awk '{print $2, $3}') on $REG (storage on the same XFS); $(skopeo --version); $(lz4 --version 2>/dev/null | grep -o 'v[0-9.]*' | head -n1 | sed 's/^/lz4 /'); $(zstd --version | grep -o 'v[0-9.]*' | sed 's/^/zstd /')"
    echo "- workload: Debian $(sed -n 's/^suite=//p' "$BENCH_WORKLOAD_DIR/base.bundle.ok") minbase on a sparse 64 GiB Disk.img ($(fmt_b "$(getr disk_data_bytes)") of data) + AuxiliaryStorage; change = \`apt-get install python3 curl\` in the guest disk; store on XFS (reflink=1, direct-io loop)"
    echo "- every push and pull starts with cold caches (\`drop_caches\`), the registry's files included; RSS is max RSS from \`/usr/bin/time\`"
    echo
    echo "| upload of the child (change) | bytes | vs floor |"
    echo "|---|---|---|"
    echo "| floor: changed 4 KiB blocks ($(fmt_b "$(getr cs_changed_bytes)") raw) through \`zstd\` (level 3, one stream) | $(fmt_b "$floor") | 1.00x |"
    echo "| strata push of the child: bytes_uploaded ($(getr push_changed_chunks_uploaded) chunks in $(getr push_changed_blobs_uploaded) blobs; $(getr push_changed_chunks_present) chunks already present) | **$(fmt_b "$up")** | **$(ratio "$up" "$floor")x** |"
    echo "| ...registry storage growth during that push | $(fmt_b "$growth") | $(ratio "$growth" "$floor")x |"
    echo "| strata's granularity: changed non-zero 1 MiB chunks ($(fmt_b "$(getr cs_granule_bytes)") raw), each one zstd -3 frame | $(fmt_b "$gran") | $(ratio "$gran" "$floor")x |"
    echo "| tart: $(getr cs_tart_chunks_changed) of $(getr cs_tart_chunks) pieces of 512 MiB differ, each \`lz4 -1\` | $(fmt_b "$tart") | $(ratio "$tart" "$floor")x |"
    echo
    echo "First push of the base: strata $(fmt_b "$(getr push_base_bytes_uploaded)") in $(fmt_s "$(getr push_base_ns)") (CPU $(getr push_base_cpu) s), RSS $(fmt_rss "$(getr push_base_rss)"); tart would upload $(fmt_b "$(getr cs_tart_base_lz4_bytes)") (every 512 MiB piece, holes as zeros, \`lz4 -1\`). Push of the child: $(fmt_s "$(getr push_changed_ns)") (CPU $(getr push_changed_cpu) s), RSS $(fmt_rss "$(getr push_changed_rss)"). The child's OCI manifest: $(getr manifest_bytes) bytes, $(getr artifact_packs) packs, $(fmt_b "$(getr artifact_bytes)") of blobs in all."
    echo
    echo "| pull | time | bytes moved | throughput | CPU (user+sys) | max RSS |"
    echo "|---|---|---|---|---|---|"
    echo "| strata pull of the child into an empty store (median of $BENCH_REPEATS: $(list_s "$(series pull_empty)") s) | $(fmt_s "$pe_ns") | $(fmt_b "$pe_bytes") ($(getr pull_empty_1_chunks_fetched) chunks) | **$(fmt_mbs "$pe_bytes" "$pe_ns")** | $(series pull_empty cpu | xargs) s | $(fmt_rss "$(maxrss pull_empty)") |"
    echo "| \`skopeo copy docker://… dir:\` of the same tag (median of $BENCH_REPEATS: $(list_s "$(series skopeo)") s) | $(fmt_s "$sk_ns") | $(fmt_b "$sk_bytes") | **$(fmt_mbs "$sk_bytes" "$sk_ns")** | $(series skopeo cpu | xargs) s | $(fmt_rss "$(maxrss skopeo)") |"
    echo "| strata pull of the base into an empty store | $(fmt_s "$(getr pull_base_ns)") | $(fmt_b "$(getr pull_base_bytes_fetched)") of chunks ($(getr pull_base_chunks_fetched)) | $(fmt_mbs "$(getr pull_base_bytes_fetched)" "$(getr pull_base_ns)") | $(getr pull_base_cpu) s | $(fmt_rss "$(getr pull_base_rss)") |"
    echo "| strata pull of the child where the base is present | $(fmt_s "$(getr pull_child_ns)") | $(fmt_b "$(getr pull_child_bytes_fetched)") of chunks ($(getr pull_child_chunks_fetched), push uploaded $(getr push_changed_chunks_uploaded)) | $(fmt_mbs "$(getr pull_child_bytes_fetched)" "$(getr pull_child_ns)") | $(getr pull_child_cpu) s | $(fmt_rss "$(getr pull_child_rss)") |"
    echo
    echo "Pulled child verified: $(getr verify_pull) (clone of the pulled layer against the committed instance; Disk.img allocated $(fmt_b "$(getr pulled_disk_alloc)") vs $(fmt_b "$(getr inst_disk_alloc)") in the instance). Bytes moved: strata = chunk bytes fetched + the small blobs (manifests, infos, indexes); skopeo = every blob of the manifest."
    echo
    local ok1 ok2
    ok1=$(awk -v a="$up" -v f="$floor" 'BEGIN{print (a <= 1.3 * f) ? 1 : 0}')
    ok2=$(awk -v a="$pe_rate" -v b="$sk_rate" 'BEGIN{print (a >= b) ? 1 : 0}')
    echo "| target | measured | result |"
    echo "|---|---|---|"
    echo "| child upload <= 1.3x the floor | $(ratio "$up" "$floor")x ($(fmt_b "$up") vs $(fmt_b "$floor")) | $(pass "$ok1") |"
    echo "| pull throughput >= skopeo copy | $(fmt_mbs "$pe_bytes" "$pe_ns") vs $(fmt_mbs "$sk_bytes" "$sk_ns") ($(awk -v a="$pe_rate" -v b="$sk_rate" 'BEGIN{printf "%.2f", a/b}')x) | $(pass "$ok2") |"
    echo "| peak memory < 200 MB (push, pull) | push $(fmt_rss "$(getr push_base_rss)") / $(fmt_rss "$(getr push_changed_rss)"), pull $(fmt_rss "$(maxrss pull_empty)") | $(pass "$(awk -v a="$(getr push_base_rss)" -v b="$(getr push_changed_rss)" -v c="$(maxrss pull_empty)" 'BEGIN{m=a; if(b>m)m=b; if(c>m)m=c; print (m*1024 < 200e6) ? 1 : 0}')") |"
}
report | tee "$OUT.md"
log "markdown saved to $OUT.md"
