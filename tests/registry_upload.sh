#!/bin/bash
# Blob uploads against the registries teams use (issue 20), emulated by
# tests/flaky_proxy.py in front of a real docker-registry on 127.0.0.1:
# mounts declined with 202 or 404, a registry that takes no chunked upload
# (GAR), one that wants chunks of 5 MiB or more (ECR), and a throttled link
# that cuts long requests (GHCR cuts an upload request at 10 minutes).
# Assertions come from exit codes, --json counts and the proxy's request log
# ("METHOD PATH ACTION STATUS BODY_BYTES SECONDS [detail]").
. "$(dirname "$0")/lib.sh"

export STRATA_HOME=$W/store DOCKER_CONFIG=$W/docker XDG_CACHE_HOME=$W/cache
rm -rf "$W"/store* "$W"/docker "$W"/cache* "$W"/reg-* "$W"/b* "$W"/proxy-* "$W"/pull*
. "$(dirname "$0")/registry_lib.sh"
need_registry "upload tests"

# one 12 MiB pack of incompressible data: 3 chunks of the default 4 MiB
"$MK" "$W/b1" --size 256M --data 0:12M:5 >/dev/null
BASE=$("$S" import "$W/b1" base:v1 2>/dev/null)
check "a 12 MiB base layer was made" [ -n "$BASE" ]

start_registry up
R=127.0.0.1:$PORT

# the upload session ids a proxy log (file in $W) names in METHOD lines
sessions_of() { awk -v m="$2" '$1 == m && $2 ~ /\/blobs\/uploads\/./ { sub(/.*\/blobs\/uploads\//, "", $2); print $2 }' "$W/$1" | sort -u; }

# ---- plain registry: chunks by default, and a pull gets it back ----
run "$S" push base:v1 "$R/strata/plain:v1" --json
check "a push (in 4 MiB chunks by default) to docker-registry exits 0" [ "$rc" -eq 0 ]
PACK=$(jget bytes_uploaded)
STRATA_HOME=$W/store-pull run "$S" pull "$R/strata/plain:v1"
check "...and pulls back into an empty store as the same layer" grep -q "^$BASE" "$W/out"

# ---- mounts declined with 202: the session is used, extra ones deleted ----
export XDG_CACHE_HOME=$W/cache-m202 # its own record of pushed repositories
start_proxy m202 "$R" mount202
P=127.0.0.1:$PPORT
run "$S" push base:v1 "$P/strata/m-a:v1"
run "$S" push base:v1 "$P/strata/m-b:v1"
check "pushes through a registry that declines mounts with 202 exit 0" [ "$rc" -eq 0 ]
before=$(wc -l <"$W/proxy-m202.log")
run "$S" push base:v1 "$P/strata/m-c:v1" --json
tail -n +$((before + 1)) "$W/proxy-m202.log" >"$W/m-c.log"
check "...with two repositories to mount from, too" [ "$rc" -eq 0 ]
declined=$(awk '$3 == "mount-declined" && $4 == 202 { print $7 }' "$W/m-c.log" | sort -u)
# the sessions blobs went into (but the preflight's empty blob {}: 2 bytes)
used=$(awk '($1 == "PATCH" || ($1 == "PUT" && $5 != 2)) && $2 ~ /\/blobs\/uploads\/./ { sub(/.*\/blobs\/uploads\//, "", $2); print $2 }' "$W/m-c.log" | sort -u)
deleted=$(sessions_of m-c.log DELETE)
check "...every blob's mount was declined with a session (4 blobs, 2 candidates: 8)" \
    [ "$(echo "$declined" | grep -c .)" = 8 ]
check "...the first session of each blob is the one uploaded into (4 reused)" \
    [ "$(comm -12 <(echo "$declined") <(echo "$used") | grep -c .)" = 4 ]
check "...the second is cancelled with DELETE (4)" \
    [ "$(comm -12 <(echo "$declined") <(echo "$deleted") | grep -c .)" = 4 ]
check "...and no other session was uploaded into" [ -z "$(comm -13 <(echo "$declined") <(echo "$used"))" ]
check "...and no GET of an upload session (a DELETE sent as GET)" \
    [ "$(awk '$1 == "GET" && $2 ~ /blobs\/uploads/' "$W/m-c.log" | grep -c .)" = 0 ]
check "...uploading its 4 blobs" [ "$(jget blobs_uploaded)" = 4 ]

# ---- mounts declined with 404 ----
export XDG_CACHE_HOME=$W/cache-m404
start_proxy m404 "$R" mount404
P=127.0.0.1:$PPORT
run "$S" push base:v1 "$P/strata/n-a:v1"
run "$S" push base:v1 "$P/strata/n-b:v1" --json
check "a push through a registry that declines mounts with 404 exits 0" [ "$rc" -eq 0 ]
check "...after mounts declined with 404" grep -q ' mount-declined 404 ' "$W/proxy-m404.log"
check "...uploading the 4 blobs" [ "$(jget blobs_uploaded)" = 4 ]
export XDG_CACHE_HOME=$W/cache

# ---- a registry that takes no chunked upload (GAR): monolithic fallback ----
start_proxy nochunk "$R" nochunk
P=127.0.0.1:$PPORT
run "$S" push base:v1 "$P/strata/nochunk:v1" --json
check "a push to a registry that refuses PATCH exits 0" [ "$rc" -eq 0 ]
check "...after one refused PATCH" [ "$(grep -c '^PATCH .* refused 405' "$W/proxy-nochunk.log")" = 1 ]
check "...whose session was deleted" grep -q '^DELETE .*/blobs/uploads/' "$W/proxy-nochunk.log"
check "...then the pack in one PUT of all its $PACK bytes (with the small blobs)" \
    awk -v n="$PACK" '$1 == "PUT" && $2 ~ /blobs\/uploads/ && $4 == 201 && $5 != 2 { s += $5 } END { exit !(s == n) }' "$W/proxy-nochunk.log"

# ---- a registry that wants chunks of 5 MiB or more but the last (ECR) ----
start_proxy minchunk "$R" minchunk
P=127.0.0.1:$PPORT
run "$S" push base:v1 "$P/strata/minchunk:v1" --json
check "a push to a registry that wants chunks of 5 MiB or more exits 0" [ "$rc" -eq 0 ]
check "...after its closing PUT refused the 4 MiB chunks" grep -q '^PUT .* refused 400 .* parts 4194304,4194304,4194304' "$W/proxy-minchunk.log"
check "...then in 8 MiB chunks (answered 201, as ECR does)" \
    [ "$(grep -c '^PATCH .* forwarded 201 8388608 ' "$W/proxy-minchunk.log")" = 1 ]
big=$(awk '$1 == "PATCH" && $5 == 8388608 { sub(/.*\/blobs\/uploads\//, "", $2); print $2 }' "$W/proxy-minchunk.log")
check "...and the rest in the closing PUT, answered 201" grep -q "^PUT .*/blobs/uploads/${big:-none} forwarded 201 [1-9]" "$W/proxy-minchunk.log"

# ---- a throttled link that cuts long requests ----
# (byte sums leave out 2-byte PUTs: the preflight's empty blob {}, which
# bytes_uploaded does not count)
# 2 MiB/s shared by all uploads. With a 4 s cap the 12 MiB pack can't go in
# one PUT (6 s), while 1 MiB chunks take 0.5 s (1 s with two uploads sharing).
start_proxy cutmono "$R" cut 2097152 4
run "$S" push base:v1 "127.0.0.1:$PPORT/strata/cut-mono:v1" --chunk-size 0 --jobs 2
check "monolithic over a link that cuts requests at 4 s fails (the pack needs 6 s)" [ "$rc" -ne 0 ]
check "...its PUTs were cut" grep -q '^PUT .* cut ' "$W/proxy-cutmono.log"

start_proxy cut "$R" cut 2097152 10 once
P=127.0.0.1:$PPORT
run "$S" push base:v1 "$P/strata/cut:v1" --chunk-size 1024 --jobs 2 --json
check "1 MiB chunks over a link that cuts requests at 10 s exit 0" [ "$rc" -eq 0 ]
check "...though one PATCH was cut halfway" [ "$(grep -c '^PATCH .* cut ' "$W/proxy-cut.log")" = 1 ]
python3 - "$W/proxy-cut.log" >"$W/resume" <<'PY'
import sys
lines = [l.split() for l in open(sys.argv[1])]
i = next((i for i, l in enumerate(lines) if l[0] == "PATCH" and l[2] == "cut"), None)
if i is None:
    sys.exit("no PATCH was cut")
held = int(lines[i][-1].split("+")[0]) + int(lines[i][-1].split("+")[1])
sid = lines[i][1]
after = [l for l in lines[i + 1:] if l[1].rsplit("/", 1)[1] == sid.rsplit("/", 1)[1]]
status = next(l for l in after if l[0] == "GET")
patch = next(l for l in after if l[0] == "PATCH")
print(held, status[3], status[6], patch[6].split("-")[0])
PY
read -r held st range next <"$W/resume"
check "...the session's state was asked (GET: 204, Range 0-$((held - 1)))" [ "$st $range" = "204 0-$((held - 1))" ]
check "...and the upload went on from byte $held, where the registry stood" [ "x$next" = "x$held" -a -n "$held" ]
sent=$(awk '$2 ~ /blobs\/uploads/ && ($1 == "PATCH" || $1 == "PUT") && !($1 == "PUT" && $5 == 2) { s += $5 } END { print s }' "$W/proxy-cut.log")
check "...sending $sent bytes for $(jget bytes_uploaded): nothing twice" [ "x$sent" = "x$(jget bytes_uploaded)" ]
STRATA_HOME=$W/store-pull2 run "$S" pull "$R/strata/cut:v1"
check "...and the layer pulls back whole" grep -q "^$BASE" "$W/out"

# every request cut: 4 MiB chunks need 2 s, the cap is 1 s; each cut leaves
# part of a chunk with the registry, so the push gets there all the same
start_proxy cutall "$R" cut 2097152 1
run "$S" push base:v1 "127.0.0.1:$PPORT/strata/cut-all:v1" --chunk-size 4096 --jobs 1 --json
cuts=$(grep -c '^PATCH .* cut ' "$W/proxy-cutall.log")
check "4 MiB chunks over a link that cuts requests at 1 s exit 0 ($cuts cuts, more than 5 tries)" \
    [ "$rc" -eq 0 -a "$cuts" -ge 5 ]
sent=$(awk '$2 ~ /blobs\/uploads/ && ($1 == "PATCH" || $1 == "PUT") && !($1 == "PUT" && $5 == 2) { s += $5 } END { print s }' "$W/proxy-cutall.log")
lost=$(awk '$1 == "PUT" && $3 == "cut" { s += $5 } END { print s + 0 }' "$W/proxy-cutall.log")
check "...sending $sent bytes for $(jget bytes_uploaded): again only the $lost of cut closing PUTs" \
    [ "x$sent" = "x$(( $(jget bytes_uploaded) + lost ))" ]
STRATA_HOME=$W/store-pull3 run "$S" pull "$R/strata/cut-all:v1"
check "...and the layer pulls back whole" grep -q "^$BASE" "$W/out"

finish
