#!/bin/bash
# lazy/: a registry layer's disk served over NBD before its pull ends
# (docs/lazy.md), through the test tool tests/lazy_serve, against Debian's
# docker-registry on 127.0.0.1 with real NBD clients (QEMU's qemu-io,
# libnbd's nbdcopy and its python module). A layer (a child of a local base,
# with data and holes) is pushed, then served from an empty store and from
# a store holding the base: reads before any fill equal the pushed bytes,
# a read of a chunk not yet there is one Range GET of its own, ahead of a
# slow fill; writes (aligned, into part of a chunk not yet fetched, into a
# hole) read back and survive a restart and the fill; after the fill the
# layer is in the store under the pushed id, fsck is clean and the
# instance is an ordinary clone that commits. A chunk tampered in the
# registry is never served (EIO, a log line naming its pack); a registry
# away stalls reads that complete when it is back, and past the read wait
# they fail; a server killed during its fill serves again and its fill
# takes up what it had. The fill gives way to the guest's reads of the
# registry and to a busy guest disk, and still ends.
. "$(dirname "$0")/lib.sh"

export STRATA_HOME=$W/src DOCKER_CONFIG=$W/docker XDG_CACHE_HOME=$W/cache
rm -rf "$W"/src "$W"/s-* "$W"/vms "$W"/docker "$W"/cache "$W"/reg-* "$W"/b* "$W"/inst* "$W"/proxy-* "$W"/lz-*
. "$(dirname "$0")/registry_lib.sh"
. "$(dirname "$0")/lazyserve_lib.sh"
need_lazy_serve "lazy tests"
# patch FILE OFF LEN BYTE: what a write of LEN bytes of BYTE at OFF makes of FILE
patch() { python3 -c 'import sys
f = open(sys.argv[1], "r+b"); f.seek(int(sys.argv[2])); f.write(bytes([int(sys.argv[4], 0)]) * int(sys.argv[3]))' "$@"; }
# tag_id STORE TAG: the layer TAG names in STORE ("" if none)
tag_id() { STRATA_HOME=$1 "$S" ls --json 2>/dev/null |
    python3 -c 'import json,sys; print("".join(l["id"] for l in json.load(sys.stdin) if sys.argv[1] in l["tags"]))' "$2"; }
# data_chunks FILE: the 1 MiB chunks of FILE that hold data (not holes)
data_chunks() { python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY); end = os.fstat(fd).st_size; at = 0; found = set()
while at < end:
    try:
        at = os.lseek(fd, at, os.SEEK_DATA)
    except OSError:
        break
    hole = os.lseek(fd, at, os.SEEK_HOLE)
    found.update(range(at >> 20, ((hole - 1) >> 20) + 1))
    at = hole
print(*sorted(found))' "$1"; }
# layer_ids STORE: every layer id in STORE
layer_ids() { STRATA_HOME=$1 "$S" ls --json 2>/dev/null | python3 -c 'import json,sys; [print(l["id"]) for l in json.load(sys.stdin)]'; }

# ---- a base and a child, pushed ----
# base: data at 0-8 MiB and 20-24 MiB of 64 MiB; the child rewrites 2-5 MiB
# and adds 30-31 MiB: 13 data chunks, holes elsewhere
base_and_child 64M "0:8M:1 20M:4M:2" "2M:3M:3 30M:1M:4"
start_registry lazy
R=127.0.0.1:$PORT
RCONF=$W/reg-lazy/config.yml
start_proxy log "$R" log
P=127.0.0.1:$PPORT
run "$S" push base:child "$R/strata/vm:v1"
check "the child is pushed" [ "$rc" -eq 0 ]
"$S" clone base:child "$W/ref" 2>/dev/null
cp "$W/ref/Disk.img" "$W/expect.img"

# ---- an empty store, no fill: every chunk on first read ----
serve a "$P/strata/vm:v1" "$W/s-a" --no-fill
check "lazy_serve serves the layer from an empty store" grep -q ready "$W/lz-a.out"
same=1
for f in AuxiliaryStorage HardwareModel MachineIdentifier; do cmp -s "$V/a/$f" "$W/ref/$f" || same=0; done
check "the small files came whole, byte for byte" [ "$same" = 1 ]
check "...and the disk is sized as the manifest says" [ "$(stat -c %s "$V/a/Disk.img")" = $((64 * M)) ]
before=$(blob_gets "$W/proxy-log.log")
run qio "$URI" "read 21M 4096"
after=$(blob_gets "$W/proxy-log.log")
check "a read of a chunk not yet there succeeds" [ "$rc" -eq 0 ]
check "...with one Range GET of its own" [ $((after - before)) -eq 1 ]
run qio "$URI" "read 21M 4096"
check "...and read again, none" [ "$(blob_gets "$W/proxy-log.log")" -eq "$after" ]
run qio "$URI" "read 40M 1M"
check "a hole reads without a GET" cond '[ "$rc" -eq 0 ] && [ "$(blob_gets "$W/proxy-log.log")" -eq "$after" ]'
# writes: part of a data chunk not yet fetched, part of a hole, a whole
# chunk, and part of the chunk read above
run qio "$URI" "write -P 0x5a $((6 * M + 1000)) 3000" "write -P 0x33 $((50 * M + 10)) 100" \
    "write -P 0x77 $((7 * M)) 1M" "write -P 0x11 $((21 * M + 4096)) 512"
check "writes into part of an absent chunk, a hole, a whole chunk and a fetched one succeed" [ "$rc" -eq 0 ]
patch "$W/expect.img" $((6 * M + 1000)) 3000 0x5a
patch "$W/expect.img" $((50 * M + 10)) 100 0x33
patch "$W/expect.img" $((7 * M)) $M 0x77
patch "$W/expect.img" $((21 * M + 4096)) 512 0x11
run qio "$URI" "read -P 0x5a $((6 * M + 1000)) 3000" "read -P 0x33 $((50 * M + 10)) 100" "read -P 0 $((50 * M)) 10"
check "...and read back, the hole's other bytes zero" cond '[ "$rc" -eq 0 ] && ! grep -q "Pattern verification failed" "$W/out"'
check "the whole export equals the pushed disk with the writes (nbdcopy)" same_bytes "$URI" "$W/expect.img"
stop "$SPID"
check "the fill never ran" cond '! grep -q "fill:" "$W/lz-a.out"'
mkdir -p "$V/other" && touch "$V/other/Disk.img"
run env STRATA_HOME="$W/s-a" "$LS" "$V/other.sock" "$P/strata/vm:v1" "$V/other" --no-fill
check "a directory that is not a lazy instance is not served into" \
    cond '[ "$rc" -ne 0 ] && grep -q "not a lazy run.s instance" "$W/err"'
check "nothing was published" [ -z "$(layer_ids "$W/s-a")" ]

# ---- restarted with the fill: the writes stay, the layer is published ----
# meanwhile the tag moved (to the base): the instance goes on with the
# manifest it was made from, by its digest
check "the instance records the layer and the manifest's digest it serves" \
    cond '[ "$(head -1 "$V/a/.lazy/layer")" = "$CHILD" ] && grep -q "^sha256:" "$V/a/.lazy/layer"'
"$S" push base:v1 "$R/strata/vm:v1" >/dev/null 2>&1
serve a "$P/strata/vm:v1" "$W/s-a" --tag vm:v1
check "restarted on the same directory, it serves again" grep -q ready "$W/lz-a.out"
check "...the same layer, though the tag moved, with the writes made before" same_bytes "$URI" "$W/expect.img"
wait_for "$W/lz-a.out" "fill: done" "$SPID"
check "the fill ends" grep -q "fill: done" "$W/lz-a.out"
check "...taking the chunks the guest had fetched from the instance, not the registry" \
    grep -q "supplied=[1-9]" "$W/lz-a.out"
check "the layer is published under the pushed id, tagged" [ "$(tag_id "$W/s-a" vm:v1)" = "$CHILD" ]
"$S" push base:child "$R/strata/vm:v1" >/dev/null 2>&1 # the tag back, for what follows
run env STRATA_HOME="$W/s-a" "$S" fsck
check "...and fsck is clean" [ "$rc" -eq 0 ]
check "the instance is a clone of it (its marker), the engine's state gone" \
    cond 'grep -q "layer $CHILD" "$V/a/.strata" && [ ! -e "$V/a/.lazy" ]'
check "after the handover the export still reads the writes" same_bytes "$URI" "$W/expect.img"
run qio "$URI" "write -P 0x44 $((30 * M + 100)) 4096"
patch "$W/expect.img" $((30 * M + 100)) 4096 0x44
check "a write after the handover" same_bytes "$URI" "$W/expect.img"
stop "$SPID"
check "the instance's Disk.img holds the layer and every write" cmp -s "$V/a/Disk.img" "$W/expect.img"
run env STRATA_HOME="$W/s-a" "$LS" "$V/a.sock" "$P/strata/vm:v1" "$V/a"
check "an instance handed over is not served lazily again" cond '[ "$rc" -ne 0 ] && grep -q "is a clone already" "$W/err"'
run env STRATA_HOME="$W/s-a" "$S" commit "$V/a" -m "after a lazy run" -t vm:after
check "commit of the instance works as for any clone" [ "$rc" -eq 0 ]
run env STRATA_HOME="$W/s-a" "$S" log vm:after
check "...giving a child of the pushed layer" grep -q "${CHILD:0:12}" "$W/out"

# ---- a store holding the base: its chunks are read there ----
STRATA_HOME=$W/s-b "$S" import "$W/b1" base:v1 >/dev/null 2>&1
before=$(blob_gets "$W/proxy-log.log")
serve b "$P/strata/vm:v1" "$W/s-b" --no-fill
check "served from a store holding the base" same_bytes "$URI" "$W/ref/Disk.img"
run qemu-img compare -f raw -F raw "$URI" "$W/ref/Disk.img"
check "...and qemu-img compare finds it identical to the pushed disk" cond '[ "$rc" -eq 0 ] && grep -q "Images are identical" "$W/out"'
stop "$SPID"
check "...the base's chunks read from the store, only the child's 4 new ones fetched" \
    grep -q "fetched=4 local=12" "$W/lz-b.out"
# (and 6 of the chain's metadata: each layer's manifest, info and chunk index)
check "...4 blob GETs for chunks in all" [ $(($(blob_gets "$W/proxy-log.log") - before)) -eq $((4 + 6)) ]

# ---- a client that flushes (QEMU): writes durable at its FLUSH ----
serve q "$P/strata/vm:v1" "$W/s-q" --no-fill --durable-on-flush
run qio "$URI" "write -P 0x21 $((6 * M + 100)) 5000" "flush"
check "with durable-on-flush, a write and a flush succeed" [ "$rc" -eq 0 ]
kill -9 "$SPID"
wait "$SPID" 2>/dev/null
serve q "$P/strata/vm:v1" "$W/s-q" --no-fill
run qio "$URI" "read -P 0x21 $((6 * M + 100)) 5000"
check "...and a server killed after the flush has the write when restarted" \
    cond '[ "$rc" -eq 0 ] && ! grep -q "Pattern verification failed" "$W/out"'
cp "$W/ref/Disk.img" "$W/expect-q.img"
patch "$W/expect-q.img" $((6 * M + 100)) 5000 0x21
check "...with the layer's bytes around it" same_bytes "$URI" "$W/expect-q.img"
stop "$SPID"

# ---- a tampered chunk is never served ----
"$S" clone base:v1 "$W/inst2" 2>/dev/null
"$MK" --write "$W/inst2/Disk.img" 40M:1M:9
"$S" commit "$W/inst2" -m tamper -t base:tamper >/dev/null 2>&1
"$S" push base:tamper "$R/strata/t:v1" >/dev/null 2>&1
"$S" push base:v1 "$R/strata/t:base" >/dev/null 2>&1
packs() { curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$R/v2/strata/t/manifests/$1" |
    python3 -c 'import json,sys; [print(l["digest"]) for l in json.load(sys.stdin)["layers"] if l["mediaType"].endswith("pack.v1+zstd")]' | sort; }
PACK=$(comm -13 <(packs base) <(packs v1))
check "the tampered layer's own chunk is in a pack of its own" [ "$(echo "$PACK" | wc -w)" = 1 ]
blob=$W/reg-lazy/data/docker/registry/v2/blobs/sha256/${PACK:7:2}/${PACK:7}/data
python3 -c 'import sys
f = open(sys.argv[1], "r+b"); f.seek(500 << 10); b = f.read(16); f.seek(500 << 10); f.write(bytes(x ^ 0xff for x in b))' "$blob"
serve t "$R/strata/t:v1" "$W/s-t" --no-fill
run qio "$URI" "read 40M 4096"
check "a read of the tampered chunk fails with EIO" grep -q "Input/output error" "$W/err" "$W/out"
check "...and the server's log names the chunk and its pack" \
    grep -q "Disk.img chunk 40 (offset $((40 * M))) is not served: pack $PACK" "$W/lz-t.err"
run qio "$URI" "read 0 4096" "read 39M 1M"
check "...while the other chunks are served" [ "$rc" -eq 0 ]
check "...and no byte of it is in the instance" [ "$(od -An -tx1 -j $((40 * M)) -N 16 "$V/t/Disk.img" | tr -d ' 0\n')" = "" ]
stop "$SPID"
serve t "$R/strata/t:v1" "$W/s-t"
wait_for "$W/lz-t.out" "fill:" "$SPID"
check "the fill stops at the tampered chunk, naming its pack" grep -q "fill: failed: .*$PACK" "$W/lz-t.out"
check "...and nothing unverified is published" cond '! layer_ids "$W/s-t" | grep -q "$(tag_id "$W/src" base:tamper)"'
stop "$SPID"
run env STRATA_HOME="$W/s-t" "$S" fsck
check "...fsck is clean" [ "$rc" -eq 0 ]

# ---- the registry away: reads stall, then complete; past the wait, EIO;
# a fill waits and goes on ----
start_proxy slow "$R" slow $((2 * M))
SP=127.0.0.1:$PPORT
serve f "$SP/strata/vm:v1" "$W/s-f" --jobs 1
FPID=$SPID
serve w "$R/strata/vm:v1" "$W/s-w" --no-fill --read-wait 600
WPID=$SPID WURI=$URI
serve x "$R/strata/vm:v1" "$W/s-x" --no-fill --read-wait 1
XPID=$SPID XURI=$URI
for p in $PIDS; do # the registry alone, not the proxy or the servers
    [ "$(ps -o args= -p "$p" 2>/dev/null | grep -c "docker-registry serve $RCONF")" = 1 ] && REGPID=$p
done
kill "$REGPID"
wait "$REGPID" 2>/dev/null
run qio "$XURI" "read 21M 4096"
check "with the registry away past the read wait, the read fails" [ "$rc" -ne 0 ]
check "...with a line in the log saying so" grep -q "Disk.img chunk 21 .*did not deliver it within 1 s" "$W/lz-x.err"
stop "$XPID"
# (-I: not this tree's nbd/ directory, but libnbd's python module)
/usr/bin/python3 -I - "$WURI" "$W/stalled.bin" <<'PY' >"$W/stalled.out" 2>&1 &
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
open(sys.argv[2], "wb").write(h.pread(1 << 20, 21 << 20))
print("read done")
PY
RPID=$!
wait_for "$W/lz-w.err" "trying again" "$RPID"
check "a read while the registry is away waits (the log says it retries)" kill -0 "$RPID"
wait_for "$W/lz-f.err" "lazy: fill: .*trying again" "$FPID"
check "...and so does a fill (the log says it retries)" grep -q "lazy: fill: .*trying again" "$W/lz-f.err"
docker-registry serve "$RCONF" >"$W/reg-lazy/log2" 2>&1 &
PIDS="$PIDS $!"
wait "$RPID"
check "...the read completes once the registry is back" grep -q "read done" "$W/stalled.out"
check "...with the layer's bytes" cmp -s "$W/stalled.bin" <(dd if="$W/ref/Disk.img" bs=1M skip=21 count=1 2>/dev/null)
stop "$WPID"
wait_for "$W/lz-f.out" "fill:" "$FPID"
check "...and the fill ends, the layer published under the pushed id" \
    cond 'grep -q "fill: done" "$W/lz-f.out" && layer_ids "$W/s-f" | grep -q "$CHILD"'
stop "$FPID"

# ---- killed during the fill, restarted: the fill takes up its work ----
serve k "$SP/strata/vm:v1" "$W/s-k" --jobs 1
before=$(blob_gets "$W/proxy-slow.log")
run qio "$URI" "read 30M 4096"
check "a read during a slow fill is answered ahead of it" cond '[ "$rc" -eq 0 ] && ! grep -q "fill:" "$W/lz-k.out"'
check "...by a GET of its own" [ "$(($(blob_gets "$W/proxy-slow.log") - before))" -ge 1 ]
run qio "$URI" "write -P 0x66 $((3 * M + 7)) 100"
for _ in $(seq 600); do # until the fill has written chunks into its receive
    [ "$(du -sk "$W"/s-k/tmp/receive-*/bundle/Disk.img 2>/dev/null | cut -f1 | sort -n | tail -1)" -ge 2048 ] 2>/dev/null && break
    sleep 0.1
done
# the fill writes its receive only: the instance's Disk.img holds what the
# read and the write took (chunks 30 and 3), however far the fill is
check "the fill's chunks are in its receive, not in the instance's Disk.img" \
    cond '[ "$(data_chunks "$V/k/Disk.img")" = "3 30" ]'
# a chunk the fill received (the base's, below the layer served: one the
# child did not rewrite), read: from the receive, checked, the layer's bytes
c=$(for f in "$W"/s-k/tmp/receive-*/bundle/Disk.img; do data_chunks "$f"; done | tr ' ' '\n' | grep -vx -e 2 -e 3 -e 4 -e 30 | head -1)
/usr/bin/python3 -I - "$URI" "$W/received.bin" "${c:-0}" <<'PY'
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
open(sys.argv[2], "wb").write(h.pread(1 << 20, int(sys.argv[3]) << 20))
PY
kill -USR2 "$SPID"
check "a read of a chunk the fill received ($c) takes it from the receive, with the layer's bytes" \
    cond '[ -n "$c" ] && LIMIT=10 wait_for "$W/lz-k.out" "received=1" "$SPID" && cmp -s "$W/received.bin" <(dd if="$W/ref/Disk.img" bs=1M skip="$c" count=1 2>/dev/null)'
kill -9 "$SPID"
wait "$SPID" 2>/dev/null
check "killed during its fill, before it ended" cond '! grep -q "fill:" "$W/lz-k.out"'
serve k "$P/strata/vm:v1" "$W/s-k" --tag vm:v1
wait_for "$W/lz-k.out" "fill: done" "$SPID"
check "restarted, its fill ends" grep -q "fill: done" "$W/lz-k.out"
check "...taking up the chunks the killed fill had" grep -q "resumed=[1-9]" "$W/lz-k.out"
cp "$W/ref/Disk.img" "$W/expect-k.img"
patch "$W/expect-k.img" $((3 * M + 7)) 100 0x66
check "...and the write made before the kill is there" same_bytes "$URI" "$W/expect-k.img"
stop "$SPID"
check "...the layer published under the pushed id" [ "$(tag_id "$W/s-k" vm:v1)" = "$CHILD" ]
run env STRATA_HOME="$W/s-k" "$S" fsck
check "...fsck clean" [ "$rc" -eq 0 ]

# ---- fill_after_ready: nothing of the fill before the guest is ready ----
serve r "$P/strata/vm:v1" "$W/s-r" --fill-after-ready
run qio "$URI" "read 30M 4096"
before=$(blob_gets "$W/proxy-log.log")
sleep 2 # a fill that started at once would be fetching now (it ends in well under 2 s)
check "with fill_after_ready, a read is served and the fill fetches nothing before lazy_ready" \
    cond '[ "$rc" -eq 0 ] && [ "$(blob_gets "$W/proxy-log.log")" = "$before" ] && ! grep -q "fill:" "$W/lz-r.out"'
kill -USR1 "$SPID"
wait_for "$W/lz-r.out" "fill:" "$SPID"
check "...lazy_ready starts it, and it publishes the layer" \
    cond 'grep -q "fill: done" "$W/lz-r.out" && [ "$(blob_gets "$W/proxy-log.log")" -gt "$before" ] && layer_ids "$W/s-r" | grep -q "$CHILD"'
stop "$SPID"

# ---- the fill holds back while the guest's reads use the link ----
# (a quiet window of 5 s: the fill's first GET of data comes after the read)
serve h "$SP/strata/vm:v1" "$W/s-h" --jobs 1 --quiet-ms 5000
run qio "$URI" "read 30M 4096"
check "a read during a slow fill" [ "$rc" -eq 0 ]
nice_of() { sed 's/.*) //' "$1" | cut -d' ' -f17; } # a /proc/PID/task/TID/stat's nice
nices() { for t in /proc/"$1"/task/*/stat; do nice_of "$t"; done | sort -u | tr '\n' ' '; }
base=$(nice_of "/proc/$SPID/stat")
bg=$((base + 10 > 19 ? 19 : base + 10))
check "...the fill's threads run ten steps nicer than the server's (at most 19): $base and $bg (threads' nice: $(nices "$SPID"))" \
    cond 'nices "$SPID" | grep -qw -- "$bg" && nices "$SPID" | grep -qw -- "$base"'
wait_for "$W/lz-h.out" "fill:" "$SPID"
check "...and the fill, which held a GET back for it, still ends" grep -q "fill: done.* held_back=[1-9]" "$W/lz-h.out"
stop "$SPID"

# ---- ...and while the guest's disk is busy, but never for good ----
# A guest that never stops writing whole chunks of a hole (no read of the
# registry at all): the fill holds its GETs back (LAZY_GUEST_BUSY_*), and
# pauses those already sent (a slow proxy's GET of 2 MiB takes over a
# second), each at most LAZY_FILL_HOLD_MAX_MS, so it still ends.
serve d "$SP/strata/vm:v1" "$W/s-d" --jobs 1
end=$((SECONDS + 120))
while ! grep -q "fill:" "$W/lz-d.out" && kill -0 "$SPID" 2>/dev/null && [ $SECONDS -lt $end ]; do
    qio "$URI" "write -P 0x22 40M 8M" >/dev/null 2>&1
done
check "a fill under a guest writing without pause holds GETs back for it, pauses those sent, and still ends" \
    grep -q "fill: done.* held_back=[1-9][0-9]* paused=[1-9]" "$W/lz-d.out"
stop "$SPID"

finish
