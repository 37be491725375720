#!/bin/bash
# A lazy run and a pull of the same layer share one receive (docs/lazy.md,
# "Sharing a pull"; issue 22 §6), and a lazy run through a pull-through
# cache reads only the chunk it needs. Against Debian's docker-registry on
# 127.0.0.1, through tests/flaky_proxy.py's throttled link ("wan", which
# logs the bytes each answer carried), with tests/lazy_serve (the engine
# over strata's NBD server) and real NBD clients (qemu-io, nbdcopy):
# - a lazy run of a layer `strata pull` is receiving waits for that pull
#   instead of downloading the layer again, reads for its guest the chunks
#   the pull already wrote (checked), and hands over once the pull has
#   published the layer: the pack crosses the link once;
# - the same with the pull killed (SIGKILL) half way: the fill takes up its
#   receive, fetching only what is missing;
# - `strata pull` of a layer a lazy run's fill is receiving says once that
#   it waits for the other strata, then finds the layer published;
# - through a docker-registry pull-through cache that answers a Range on a
#   blob it lacks with 200 and the whole blob, a guest's read takes the
#   chunk it needs and drops the connection: far less than the pack.
. "$(dirname "$0")/lib.sh"

export STRATA_HOME=$W/src DOCKER_CONFIG=$W/docker XDG_CACHE_HOME=$W/cache
rm -rf "$W"/src "$W"/s-* "$W"/vms "$W"/docker "$W"/cache "$W"/reg-* "$W"/b* "$W"/proxy-* "$W"/lz-* "$W"/pull-*
. "$(dirname "$0")/registry_lib.sh"
LIMIT=${LIMIT:-120}
. "$(dirname "$0")/lazyserve_lib.sh"
need_lazy_serve "lazy share tests"
# wait_file PATH PID: until PATH exists, or PID has exited
wait_file() { local end=$((SECONDS + LIMIT)); while [ ! -e "$1" ] && kill -0 "$2" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.05; done; [ -e "$1" ]; }
# wait_chunk FILE N PID: until chunk N (1 MiB) of FILE is chunk N of the
# pushed disk (a receive wrote it), or PID has exited
has_chunk() { cmp -s <(dd if="$1" bs=1M skip="$2" count=1 2>/dev/null) <(dd if="$W/expect.img" bs=1M skip="$2" count=1 2>/dev/null); }
wait_chunk() { local end=$((SECONDS + LIMIT)); while ! has_chunk "$1" "$2" && kill -0 "$3" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.05; done; has_chunk "$1" "$2"; }
tag_id() { STRATA_HOME=$1 "$S" ls --json 2>/dev/null |
    python3 -c 'import json,sys; print("".join(l["id"] for l in json.load(sys.stdin) if sys.argv[1] in l["tags"]))' "$2"; }
# blob_bytes LOG: bytes the wan proxy sent in answers to blob GETs
blob_bytes() { awk '$1 == "GET" && $2 ~ /\/blobs\// { n += $5 } END { print n + 0 }' "$1"; }
# served_whole STORE NUM/DEN: the export equals the pushed disk (nbdcopy);
# the server stopped, STORE's fsck is clean; and the blob bytes the link
# carried since $before are below NUM/DEN of the packs' ($PACK_BYTES)
served_whole() {
    check "the export equals the pushed disk (nbdcopy)" same_bytes "$URI" "$W/expect.img"
    stop "$SPID"
    run env STRATA_HOME="$1" "$S" fsck
    check "fsck is clean" [ "$rc" -eq 0 ]
    local sent=$(($(blob_bytes "$LOG") - before))
    check "the pack crossed the link at most ${2%/*}/${2#*/} times in all (blob bytes $sent; packs $PACK_BYTES)" \
        [ "$sent" -lt $((PACK_BYTES * ${2%/*} / ${2#*/})) ]
}
# packs HOST REPO TAG: the digests and sizes of the tag's packs ("DIGEST SIZE" lines)
packs() { curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$1/v2/$2/manifests/$3" |
    python3 -c 'import json,sys
for l in json.load(sys.stdin)["layers"]:
    if l["mediaType"].endswith("pack.v1+zstd"): print(l["digest"], l["size"])'; }

# ---- a layer of 16 MiB that does not compress, in a 64 MiB disk ----
"$MK" "$W/b1" --size 64M >/dev/null
head -c $((16 * M)) /dev/urandom | dd of="$W/b1/Disk.img" bs=1M seek=4 conv=notrunc 2>/dev/null
ID=$("$S" import "$W/b1" share:v1 2>/dev/null)
cp "$W/b1/Disk.img" "$W/expect.img"
start_registry share
R=127.0.0.1:$PORT
run "$S" push share:v1 "$R/strata/share:v1"
check "the layer is pushed" cond '[ "$rc" -eq 0 ] && [ -n "$ID" ]'
PACKS=$(packs "$R" strata/share v1)
PACK_BYTES=$(echo "$PACKS" | awk '{ n += $2 } END { print n + 0 }')
check "...its data in packs of more than 16 MiB" [ "$PACK_BYTES" -gt $((16 * M)) ]
# a link of 2 MiB/s: a pull of the layer takes about 8 s
start_proxy link "$R" wan $((2 * M)) 5
P=127.0.0.1:$PPORT
LOG=$W/proxy-link.log
RX=tmp/receive-$ID
# through the link before any case, blob GETs that are not packs: the
# layer's manifest, info and chunk index
bytes_before() { blob_bytes "$LOG"; }

# ---- a lazy run of a layer `strata pull` is receiving ----
before=$(bytes_before)
STRATA_HOME=$W/s-1 "$S" pull "$P/strata/share:v1" -t share:v1 >"$W/pull-1.out" 2>"$W/pull-1.err" &
PULL=$!
check "a slow pull has begun receiving the layer" wait_file "$W/s-1/$RX/bundle/Disk.img" "$PULL"
# a lazy run stopped while its fill waits: it ends at once (lazy_stop), the
# pull going on
serve z "$P/strata/share:v1" "$W/s-1"
wait_for "$W/lz-z.err" "waiting for it" "$SPID"
kill "$SPID"
for _ in $(seq 100); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.05; done
check "a lazy run stopped while its fill waits for the pull ends within 5 s, its fill not failed" \
    cond '! kill -0 "$SPID" 2>/dev/null && ! grep -q "fill failed" "$W/lz-z.err" && kill -0 "$PULL"'
stop "$SPID"
serve a "$P/strata/share:v1" "$W/s-1"
check "a lazy run of the same layer serves meanwhile" grep -q ready "$W/lz-a.out"
check "...its fill waits for the pull, and says so once in the log" \
    cond 'wait_for "$W/lz-a.err" "being received by another strata; waiting for it" "$SPID" &&
          [ "$(grep -c "being received by another strata" "$W/lz-a.err")" = 1 ]'
check "the pull has written the first data chunk" wait_chunk "$W/s-1/$RX/bundle/Disk.img" 4 "$PULL"
run qio "$URI" "read 4M 1M"
kill -USR2 "$SPID"
check "a guest read of it is taken from the pull's receive, checked" \
    cond '[ "$rc" -eq 0 ] && wait_for "$W/lz-a.out" "received=1" "$SPID"'
wait "$PULL"
check "the pull ends (exit 0)" [ $? -eq 0 ]
check "...and the fill hands over to the layer it published" wait_for "$W/lz-a.out" "fill: done fetched=0" "$SPID"
check "...which has the pushed id" [ "$(tag_id "$W/s-1" share:v1)" = "$ID" ]
served_whole "$W/s-1" 5/4

# ---- the pull killed half way: the lazy fill takes up its receive ----
before=$(bytes_before)
STRATA_HOME=$W/s-2 "$S" pull "$P/strata/share:v1" -t share:v1 >"$W/pull-2.out" 2>"$W/pull-2.err" &
PULL=$!
check "a slow pull has received part of the layer" wait_chunk "$W/s-2/$RX/bundle/Disk.img" 4 "$PULL"
serve k "$P/strata/share:v1" "$W/s-2" --tag share:v1
check "a lazy run of the same layer waits for the pull" \
    wait_for "$W/lz-k.err" "being received by another strata; waiting for it" "$SPID"
kill -9 "$PULL"
wait "$PULL" 2>/dev/null
check "the pull, killed, left the layer unpublished" [ -z "$(tag_id "$W/s-2" share:v1)" ]
check "the fill takes up the pull's receive and ends" wait_for "$W/lz-k.out" "fill: done" "$SPID"
check "...keeping the chunks the pull had received" grep -q "fill: done fetched=[0-9]* resumed=[1-9]" "$W/lz-k.out"
check "...the layer published under the pushed id" [ "$(tag_id "$W/s-2" share:v1)" = "$ID" ]
served_whole "$W/s-2" 3/2

# ---- `strata pull` of a layer a lazy run's fill is receiving ----
before=$(bytes_before)
serve f "$P/strata/share:v1" "$W/s-3" --jobs 1
check "a lazy run's fill has begun receiving the layer" wait_file "$W/s-3/$RX/bundle/Disk.img" "$SPID"
STRATA_HOME=$W/s-3 "$S" pull "$P/strata/share:v1" -t share:v1 --json >"$W/pull-3.out" 2>"$W/pull-3.err" &
PULL=$!
check "a pull of the same layer says it waits for the other strata" \
    wait_for "$W/pull-3.err" "being received by another strata; waiting for it" "$PULL"
wait "$PULL"
check "...and ends (exit 0) once the fill has published it" [ $? -eq 0 ]
cp "$W/pull-3.out" "$W/out"
check "...with the pushed id, the layer found in the store" \
    cond '[ "$(jget layer)" = "$ID" ] && [ "$(jget bytes_fetched)" = 0 ]'
check "...having said so once" [ "$(grep -c "being received by another strata" "$W/pull-3.err")" = 1 ]
check "the fill ends" wait_for "$W/lz-f.out" "fill: done" "$SPID"
served_whole "$W/s-3" 5/4

# ---- through a pull-through cache ----
# a chain: a base holding the small files, and a child whose pack holds
# only the disk's 16 new chunks (the small files, fetched whole when a lazy
# run starts, are in the base's packs), pushed to the registry above;
# strata -> the link (wan, 4 MiB/s, logging bytes) -> a docker-registry in
# proxy mode -> that registry
"$MK" "$W/b2" --size 64M >/dev/null
"$S" import "$W/b2" chain:base >/dev/null 2>&1
"$S" clone chain:base "$W/b2-inst" 2>/dev/null
head -c $((16 * M)) /dev/urandom | dd of="$W/b2-inst/Disk.img" bs=1M seek=4 conv=notrunc 2>/dev/null
CHILD=$("$S" commit "$W/b2-inst" -m child -t chain:v1 2>/dev/null)
cp "$W/b2-inst/Disk.img" "$W/expect.img"
run "$S" push chain:v1 "$R/strata/chain:v1"
check "a base and a child are pushed" cond '[ "$rc" -eq 0 ] && [ -n "$CHILD" ]'
# the child's pack: the largest
read -r PACK PACK_BYTES <<<"$(packs "$R" strata/chain v1 | sort -k2 -n | tail -1)"
start_registry cache "proxy: {remoteurl: http://$R}"
start_proxy cache "127.0.0.1:$PORT" wan $((4 * M)) 5
C=127.0.0.1:$PPORT
CLOG=$W/proxy-cache.log
serve c "$C/strata/chain:v1" "$W/s-4" --no-fill
# one read of the first data chunk (near the pack's start), alone: libnbd's
# python module, not qemu-io, which also reads the disk's last sectors
# (-I: libnbd's module, not this tree's nbd/ directory)
run /usr/bin/python3 -I - "$URI" "$W/c-read.bin" <<'PY'
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
open(sys.argv[2], "wb").write(h.pread(4096, 4 << 20))
PY
check "a lazy run through the cache serves a read from an empty store, byte for byte" \
    cond '[ "$rc" -eq 0 ] && cmp -s "$W/c-read.bin" <(dd if="$W/expect.img" bs=4096 skip=1024 count=1 2>/dev/null)'
stop "$SPID"
# (the link logs an answer once it ends: the dropped one when a write fails)
for _ in $(seq 600); do grep -q "^GET [^ ]*/blobs/$PACK wan" "$CLOG" && break; sleep 0.05; done
first=$(awk -v p="/blobs/$PACK" '$1 == "GET" && index($2, p) { print $4, $5; exit }' "$CLOG")
check "...the cache answered the first Range on the pack it lacked with the whole blob (200)" \
    [ "${first%% *}" = 200 ]
check "...and the read took the chunk and dropped the connection: ${first#* } bytes of a pack of $PACK_BYTES" \
    cond '[ "${first#* }" -ge "$M" ] && [ "${first#* }" -lt $((PACK_BYTES / 4)) ]'
check "...one GET of the pack for the read" [ "$(grep -c "^GET [^ ]*/blobs/$PACK wan" "$CLOG")" = 1 ]
serve c "$C/strata/chain:v1" "$W/s-4" --tag chain:v1
check "served again with the fill, it ends" wait_for "$W/lz-c.out" "fill: done" "$SPID"
check "...the layer published under the pushed id" [ "$(tag_id "$W/s-4" chain:v1)" = "$CHILD" ]
check "the export equals the pushed disk (nbdcopy)" same_bytes "$URI" "$W/expect.img"
stop "$SPID"
run env STRATA_HOME="$W/s-4" "$S" fsck
check "fsck is clean" [ "$rc" -eq 0 ]

finish
