#!/bin/bash
# Boot profiles in a lazy run (docs/profiles.md, "Boot profiles in a lazy
# run"; issue 22 section 4), through tests/lazy_serve against Debian's
# docker-registry with real NBD clients (qemu-io, nbdcopy). A first lazy
# serve from an empty store records the chunks a scripted "boot" reads
# (qemu-io reads at chosen offsets) until lazy_ready (SIGUSR1); once the
# fill has published the layer the profile beside it lists exactly those
# chunks in first-read order; strata push carries it; a second empty store
# serving the pushed tag fetches those chunks first, a run of chunks in one
# Range GET, before the fill's requests, and the same boot's reads then
# need no registry request. Hostile profiles (another layer's, chunks past
# the disk, garbage) are ignored with a log line and serving still works.
. "$(dirname "$0")/lib.sh"

export STRATA_HOME=$W/src DOCKER_CONFIG=$W/docker XDG_CACHE_HOME=$W/cache
rm -rf "$W"/src "$W"/s-* "$W"/vms "$W"/docker "$W"/cache "$W"/reg-* "$W"/b* "$W"/inst* "$W"/proxy-* "$W"/lz-* "$W"/prof*
. "$(dirname "$0")/registry_lib.sh"
. "$(dirname "$0")/lazyserve_lib.sh"
need_lazy_serve "lazy profile tests"
CRAFT="python3 $HERE/profile_craft.py"

# boot URI: the scripted boot: chunks 20-22 (one read across them), 5-6,
# a hole (not a chunk to fetch), 30, 2, and 21 again (nothing new)
boot() {
    qio "$1" "read $((20 * M + 4096)) $((2 * M + 8192))" "read $((5 * M)) $((2 * M))" \
        "read $((50 * M)) 4096" "read $((30 * M + 512)) 512" "read $((2 * M + 100)) 10" \
        "read $((21 * M)) 4096" >/dev/null
}
# profile_is FILE LAYER CHUNKS RUNS...: FILE is the profile of those runs
# (written independently by profile_craft.py), whatever its ready time
profile_is() {
    local f=$1
    shift
    $CRAFT make "$W/prof-expect" "$@" && [ -s "$f" ] && python3 -c 'import sys
a, b = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
sys.exit(not (len(a) == len(b) and a[:56] == b[:56] and a[60:] == b[60:] and a[56:60] != bytes(4)))' "$f" "$W/prof-expect"
}
manifest_of() { curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$R/v2/strata/vm/manifests/$1"; }
ann_of() { manifest_of "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("annotations", {}).get(sys.argv[1], ""))' "$2"; }

# ---- a layer: 64 MiB, 40 MiB of data (40 distinct chunks), pushed ----
"$MK" "$W/b1" --size 64M --data 0:40M:7 >/dev/null
BASE=$("$S" import "$W/b1" base:v1 2>/dev/null)
check "a layer to serve" [ -n "$BASE" ]
start_registry lprof
R=127.0.0.1:$PORT
run "$S" push base:v1 "$R/strata/vm:v1"
check "the layer is pushed, without a profile" cond '[ "$rc" -eq 0 ] && [ -z "$(ann_of v1 dev.strata.boot-profile)" ]'
cp "$W/b1/Disk.img" "$W/expect.img"

# ---- the first lazy run records the boot ----
serve first "$R/strata/vm:v1" "$W/s-first" --tag got
check "the first run serves from an empty store" grep -q '^ready' "$W/lz-first.out"
run boot "$URI"
check "the scripted boot reads" [ "$rc" -eq 0 ]
kill -USR1 "$SPID"
check "lazy_ready ends the recording" wait_for "$W/lz-first.out" lazy_ready "$SPID"
check "...its log names the profile: 7 chunks in 4 runs" grep -q "boot profile: 7 chunks in 4 runs" "$W/lz-first.err"
check "the fill publishes the layer" wait_for "$W/lz-first.out" "fill: done" "$SPID"
check "...and the profile is kept beside it" grep -q "boot profile kept beside layer ${BASE:0:12}" "$W/lz-first.err"
run boot "$URI"  # read after ready: not in the profile
stop "$SPID"
PF=$W/s-first/layers/$BASE/profile
check "the profile lists exactly the chunks the boot read, in first-read order" profile_is "$PF" "$BASE" 64 20:3 5:2 30:1 2:1
STRATA_HOME=$W/s-first run "$S" push got "$R/strata/vm:prof"
PD=$(ann_of prof dev.strata.boot-profile)
check "strata push of the layer carries the profile" cond '[ "$rc" -eq 0 ] && [ -s "$PF" ] && [ "$PD" = "sha256:$(sha256sum "$PF" | cut -d" " -f1)" ]'

# ---- a second empty store: the profile's chunks first ----
start_proxy log "$R" log
P=127.0.0.1:$PPORT
serve second "$P/strata/vm:prof" "$W/s-second"
check "the second run serves from an empty store" grep -q '^ready' "$W/lz-second.out"
check "the fill publishes the layer" wait_for "$W/lz-second.out" "fill: done" "$SPID"
check "...after the prefetch fetched the registry's profile's 7 chunks in 4 Range GETs" \
    grep -q "prefetch: 7 chunks of the boot profile in 4 requests" "$W/lz-second.err"
# the ranged GETs after the profile blob's GET and before the fill's manifest GET
awk -v pd="blobs/$PD" '$0 ~ pd {on = 1; next} on && /manifests/ {exit} on && / bytes=/ {print $NF}' \
    "$W/proxy-log.log" >"$W/prefetch-ranges"
sizes=$(awk -F'[=-]' '{printf "%s ", $3 - $2 + 1}' "$W/prefetch-ranges")
check "...the proxy saw 4 Range GETs, before the fill's requests: a run of 3 chunks in one, of 2 in one" \
    python3 -c 'import sys; s = [int(x) for x in sys.argv[1:]]; M = 1 << 20
sys.exit(not (len(s) == 4 and s[0] > 3 * M and 2 * M < s[1] < 3 * M and s[2] < 2 * M and s[3] < 2 * M))' $sizes
check "...and the disk reads back byte for byte" same_bytes "$URI" "$W/expect.img"
stop "$SPID"

# ---- the boot's reads need no registry request (no fill: nothing else brings chunks) ----
# fetched NAME N: the guest's registry fetches in lazy_serve NAME's Nth
# progress line (asked for by SIGUSR2); they count the small files' chunks too
fetched() {
    kill -USR2 "$SPID"
    while [ "$(grep -c '^progress' "$W/lz-$1.out")" -lt "$2" ] && kill -0 "$SPID"; do sleep 0.05; done
    grep '^progress' "$W/lz-$1.out" | sed -n "$2p" | sed 's/.*fetched=\([0-9]*\).*/\1/'
}
serve plain "$P/strata/vm:v1" "$W/s-plain" --no-fill
before=$(fetched plain 1)
run boot "$URI"
check "without a profile, the boot's reads fetch its 7 chunks from the registry" \
    cond '[ "$rc" -eq 0 ] && [ -n "$before" ] && [ "$(fetched plain 2)" = $((before + 7)) ]'
stop "$SPID"
serve third "$P/strata/vm:prof" "$W/s-third" --no-fill
check "with the profile, its 7 chunks are prefetched" \
    wait_for "$W/lz-third.err" "prefetch: 7 chunks of the boot profile in 4 requests" "$SPID"
before=$(fetched third 1)
run boot "$URI"
check "...and the same boot's reads need no registry request" \
    cond '[ "$rc" -eq 0 ] && [ -n "$before" ] && [ "$(fetched third 2)" = "$before" ]'
check "...and read the layer's bytes" same_bytes "$URI" "$W/expect.img"
stop "$SPID"

# ---- hostile profiles: ignored with a log line, serving goes on ----
hostile() { # NAME REASON BLOB: the layer's tag with BLOB as its profile, served from an empty store
    local name=$1 why=$2 d n
    read -r d n < <($CRAFT put "$R" strata/vm "$3")
    python3 "$HERE/oci_craft.py" annotate "$R" strata/vm v1 "h-$name" "dev.strata.boot-profile=$d" \
        "dev.strata.boot-profile.size=$n" >/dev/null
    serve "h-$name" "$R/strata/vm:h-$name" "$W/s-h-$name" --no-fill
    check "hostile profile ($name): serving starts" grep -q '^ready' "$W/lz-h-$name.out"
    check "...the profile is ignored with a log line naming why" \
        grep -q "log: lazy: the registry's boot profile is ignored: boot profile: $why" "$W/lz-h-$name.err"
    check "...nothing is prefetched" [ "$(grep -c prefetch "$W/lz-h-$name.err")" = 0 ]
    run qio "$URI" "read $((20 * M)) 4096"
    check "...and the guest's reads are served" [ "$rc" -eq 0 ]
    check "...byte for byte" same_bytes "$URI" "$W/expect.img"
    stop "$SPID"
}
$CRAFT make "$W/prof-other" "$(printf '%064d' 0)" 64 20:3
hostile other-layer "it is another layer's" "$W/prof-other"
$CRAFT make "$W/prof-range" "$BASE" 64 60:9
hostile out-of-range "a run is past the end of Disk.img" "$W/prof-range"
head -c 3000 /dev/urandom >"$W/prof-garbage"
hostile garbage "not a strata boot profile" "$W/prof-garbage"

finish
