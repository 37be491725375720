#!/bin/bash
# Registries as teams run them, over HTTP (Debian's docker-registry on
# 127.0.0.1, free ports picked at run time):
# - blob HEADs and GETs answered 307 to storage, as distribution and Harbor
#   do on S3, GCS or Azure (the redirect storage middleware, pointed at
#   tests/storage_server.py serving the registry's own files), with basic
#   auth on the registry whose credentials must never reach the storage;
# - a redirect to plain HTTP on a host that is not loopback, refused;
# - a pull-through cache (docker-registry's proxy mode) in front of a
#   central registry, still serving pulls once the central one is down.
# Every registry and server started here is stopped by the trap.
. "$(dirname "$0")/lib.sh"

export STRATA_HOME=$W/store DOCKER_CONFIG=$W/docker XDG_CACHE_HOME=$W/cache
rm -rf "$W"/store* "$W"/docker "$W"/cache "$W"/reg-* "$W"/b1 "$W"/inst "$W"/pull-* "$W"/storage*
. "$(dirname "$0")/registry_lib.sh"
need_registry "registry HTTP tests"

base_and_child 256M "0:6M:1 100M:3M:2" "1M:2M:9 200M:1M:4"

# ---- blobs redirected to storage, credentials on the registry ----
SPORT=$(free_port)
AUTH=""
if command -v htpasswd >/dev/null; then
    mkdir -p "$W/reg-redir"
    htpasswd -Bbn alice 's3cret-PW-42' >"$W/reg-redir/htpasswd" 2>/dev/null
    AUTH="auth: {htpasswd: {realm: test-realm, path: $W/reg-redir/htpasswd}}"
else
    skipped "credentials on the redirecting registry" "htpasswd (apache2-utils) is not installed"
fi
# distribution 2.8: middleware.storage, "redirect" with options.baseurl;
# the Location is baseurl's scheme and host with the storage path of the blob
start_registry redir "$AUTH
middleware:
  storage:
    - name: redirect
      options: {baseurl: \"http://127.0.0.1:$SPORT/\"}"
RR=127.0.0.1:$PORT
mkdir -p "$W/reg-redir/data"
python3 "$HERE/storage_server.py" "$SPORT" "$W/reg-redir/data" "$W/storage.log" "$W/storage-norange" \
    >"$W/storage.out" 2>&1 &
PIDS="$PIDS $!"
wait_http "http://127.0.0.1:$SPORT/"
if [ -n "$AUTH" ]; then
    expect_error "the redirecting registry wants credentials" 1 "authentication required" \
        "$S" push base:v1 "$RR/team/vm:v1"
    run sh -c "printf 's3cret-PW-42\n' | '$S' login $RR -u alice --password-stdin"
    check "login to it exits 0" [ "$rc" -eq 0 ]
fi

run "$S" push base:v1 "$RR/team/vm:v1" --json
check "push of a base to a registry that redirects blobs exits 0" [ "$rc" -eq 0 ]
BASE_CHUNKS=$(jget chunks_uploaded 2>/dev/null)
run "$S" push base:v1 "$RR/team/vm:v1" --json
check "pushing it again exits 0 (blob HEADs answered 307)" [ "$rc" -eq 0 ]
check "...and uploads nothing: every blob was found behind its redirect" \
    [ "$(jget blobs_uploaded)" = 0 ] && [ "$(jget bytes_uploaded)" = 0 ]
run "$S" push base:child "$RR/team/vm:child" --json
check "push of a child exits 0" [ "$rc" -eq 0 ]
check "...finding the base's $BASE_CHUNKS chunks present" [ "$(jget chunks_present)" = "$BASE_CHUNKS" ]
check "the storage saw the redirected HEADs, each answered 200" \
    grep -qE '^HEAD /docker/registry/v2/blobs/sha256/.*/data range=- auth=no 200$' "$W/storage.log"

: >"$W/storage.log"
STRATA_HOME=$W/pull-ranges run "$S" pull "$RR/team/vm:child" --json --jobs 3
check "pull into an empty store through the redirects exits 0" \
    [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$CHILD" ]
check "...by ranges" [ "$(jget whole_packs)" = False ]
check "...which reached the storage with their Range, answered 206" \
    grep -qE '^GET /docker/registry/v2/blobs/.*/data range=bytes=[0-9]+-[0-9]+ auth=no 206$' "$W/storage.log"
check "...and whole-blob GETs (layer manifests, indexes) too" \
    grep -qE '^GET /docker/registry/v2/blobs/.*/data range=- auth=no 200$' "$W/storage.log"
STRATA_HOME=$W/pull-ranges run "$S" fsck
check "...and the pulled store is sound" [ "$rc" -eq 0 ]

touch "$W/storage-norange"
: >"$W/storage.log"
STRATA_HOME=$W/pull-whole run "$S" pull "$RR/team/vm:child" --json --jobs 3
check "pull when the storage ignores Range exits 0" [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$CHILD" ]
check "...by whole packs" [ "$(jget whole_packs)" = True ]
check "...the storage answered a Range GET with 200" \
    grep -qE '^GET /docker/registry/v2/blobs/.*/data range=bytes=[0-9-]+ auth=no 200$' "$W/storage.log"
rm -f "$W/storage-norange"

check "the storage got GETs and HEADs, and never an Authorization header" \
    sh -c "grep -q '^GET ' '$W/storage.log' && ! grep -q 'auth=yes' '$W/storage.log'"
check "...nor any request the registry did not redirect (only blob data)" \
    sh -c "! grep -v '^[A-Z]* /docker/registry/v2/blobs/sha256/../[0-9a-f]*/data ' '$W/storage.log'"

# a registry that redirects to plain HTTP elsewhere: refused before connecting
mkdir -p "$W/reg-far"
ln -s "$W/reg-redir/data" "$W/reg-far/data"
start_registry far "middleware:
  storage:
    - name: redirect
      options: {baseurl: \"http://storage.invalid:$SPORT/\"}"
UPSTREAM=$RR
expect_error "a redirect to plain HTTP on a host that is not loopback is refused" 1 \
    "plain HTTP is refused" env STRATA_HOME="$W/pull-far" "$S" pull "127.0.0.1:$PORT/team/vm:child"
check "...and the message names the registry, the blob and where it was sent" \
    grep -q "^strata: 127.0.0.1:$PORT: GET /v2/team/vm/blobs/sha256:[0-9a-f]*: redirected to storage.invalid:$SPORT: plain HTTP is refused" "$W/err"

# ---- after retries run out, the error names the host ----
start_proxy down "$UPSTREAM" down
# (a push's first request is its preflight's upload session)
expect_error "a registry answering only 503 is one line, after retries" 1 \
    "127.0.0.1:$PPORT: opening an upload:" "$S" push base:v1 "127.0.0.1:$PPORT/team/vm:v1"
check "...naming the host, what was asked and the answer" \
    grep -qE "^strata: 127.0.0.1:$PPORT: opening an upload: the registry answered HTTP 503" "$W/err"
expect_error "a pull from it too" 1 "127.0.0.1:$PPORT: " "$S" pull "127.0.0.1:$PPORT/team/vm:v1"
check "...naming the host, the manifest asked for and the answer" \
    grep -qE "^strata: 127.0.0.1:$PPORT: v1: the registry answered HTTP 503" "$W/err"
NOBODY=$(free_port)
expect_error "a registry that does not answer is one line naming the host and the request" 1 \
    "127.0.0.1:$NOBODY: GET /v2/team/vm/manifests/child: " \
    env STRATA_HOME="$W/pull-nobody" "$S" pull "127.0.0.1:$NOBODY/team/vm:child"

# ---- a pull-through cache in front of a central registry ----
start_registry central
CENTRAL=127.0.0.1:$PORT CENTRAL_PID=${PIDS##* }
run "$S" push base:child "$CENTRAL/team/vm:child" --json
check "push to the central registry exits 0" [ "$rc" -eq 0 ]
# a relative Location (path only), for HEAD and GET
start_proxy rel "$CENTRAL" relredirect
run "$S" push base:child "127.0.0.1:$PPORT/team/vm:child" --json
check "push again through relative redirects finds every blob" [ "$rc" -eq 0 ] && [ "$(jget blobs_uploaded)" = 0 ]
STRATA_HOME=$W/pull-rel run "$S" pull "127.0.0.1:$PPORT/team/vm:child" --json --jobs 2
check "pull through relative redirects exits 0" [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$CHILD" ]
check "...having followed them for HEAD and GET" \
    sh -c "grep -q '^HEAD /redirected/v2/team/vm/blobs/sha256:.* relredirect-target' '$W/proxy-rel.log' &&
           grep -q '^GET /redirected/v2/team/vm/blobs/sha256:.* relredirect-target' '$W/proxy-rel.log'"

start_registry cache "proxy: {remoteurl: http://$CENTRAL}"
CACHE=127.0.0.1:$PORT
STRATA_HOME=$W/pull-cache1 run "$S" pull "$CACHE/team/vm:child" --json --jobs 3
check "pull through the cache into an empty store exits 0" [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$CHILD" ]
# docker-registry 2.8 streams a blob it does not hold yet whole, Range or
# not (200), while it stores it in the background: whole packs
check "...by whole packs: the cache answers a Range on a blob it lacks with 200" [ "$(jget whole_packs)" = True ]
expect_error "push to the cache is refused on one line (push goes to the central registry)" 1 \
    "$CACHE: opening an upload: the registry answered HTTP 405: UNSUPPORTED" "$S" push base:v1 "$CACHE/team/vm:v2"
# the cache's background copies must be done before the central one stops
digests=$(curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$CENTRAL/v2/team/vm/manifests/child" |
    python3 -c 'import json,sys; m=json.load(sys.stdin); print(*[d["digest"][7:] for d in [m["config"]] + m["layers"]])')
links=$W/reg-cache/data/docker/registry/v2/repositories/team/vm/_layers/sha256
for _ in $(seq 300); do
    missing=0
    for d in $digests; do [ -s "$links/$d/link" ] || missing=1; done
    [ $missing = 0 ] && break
    sleep 0.1
done
check "the cache holds every blob of the pulled tag" [ $missing = 0 ]
kill "$CENTRAL_PID"; wait "$CENTRAL_PID" 2>/dev/null
check "the central registry is down" sh -c "! curl -s -o /dev/null http://$CENTRAL/v2/"
STRATA_HOME=$W/pull-cache2 run "$S" pull "$CACHE/team/vm:child" --json --jobs 3
check "pull from the cache with the central registry down exits 0" \
    [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$CHILD" ]
check "...by ranges: the cache serves Range on blobs it holds" [ "$(jget whole_packs)" = False ]
run "$S" ls --remote "$CACHE/team/vm"
check "ls --remote through the cache lists the tag it holds" [ "$rc" -eq 0 ] && grep -q child "$W/out"

finish
