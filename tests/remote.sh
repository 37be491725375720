#!/bin/bash
# Remote tests: push, ls --remote, login/logout against real registries
# (Debian's docker-registry on 127.0.0.1, free ports picked at run time):
# anonymous, htpasswd basic auth, and the bearer-token flow with a token
# server written here in python3. Every registry and server started here is
# stopped by the trap, whatever happens.
. "$(dirname "$0")/lib.sh"

export STRATA_HOME=$W/store DOCKER_CONFIG=$W/docker XDG_CACHE_HOME=$W/cache
rm -rf "$W"/store* "$W"/docker "$W"/cache "$W"/reg-* "$W"/b* "$W"/inst* "$W"/bin "$W"/pull* "$W"/c-* "$W"/xdg*
. "$(dirname "$0")/registry_lib.sh"
need_registry "remote tests"

# ---- a base and a child ----
base_and_child 1G "0:8M:1 512M:4M:2" "1M:2M:9 700M:1M:4"

# ---- anonymous registry ----
start_registry anon
R=127.0.0.1:$PORT
run "$S" push base:v1 "$R/strata/vm:v1" --json
check "push of the base exits 0" [ "$rc" -eq 0 ]
check "push --json is JSON" is_json "$W/out"
BASE_CHUNKS=$(jget chunks_uploaded)
check "the base's 15 data chunks were uploaded" [ "$BASE_CHUNKS" = 15 ]
DIGEST1=$(jget digest)

run "$S" push base:child "$R/strata/vm:child" --json
check "push of the child exits 0" [ "$rc" -eq 0 ]
check "the child uploads only its 3 new chunks" [ "$(jget chunks_uploaded)" = 3 ]
check "...and finds the base's 15 present" [ "$(jget chunks_present)" = 15 ]
up=$(jget bytes_uploaded)
check "...sending under 4 MiB (the 3 chunks and small blobs: $up bytes)" [ "$up" -lt 4194304 ]

run "$S" push base:v1 "$R/strata/vm:v1" --json
check "pushing the same layer again uploads nothing" [ "$(jget bytes_uploaded)" = 0 ] && [ "$(jget blobs_uploaded)" = 0 ]
check "...and gives the same manifest digest" [ "$(jget digest)" = "$DIGEST1" ]

run "$S" push base:v1 "$R/strata/vm:v1"
check "the summary line names bytes uploaded, chunks present and time" \
    grep -qE '^pushed .*: uploaded 0 B in 0 blobs \(0 chunks\); 15 chunks already present .*; [0-9.]+ s$' "$W/out"

# another store, the same bundle imported independently: the same packs
STRATA_HOME=$W/store2 "$S" import "$W/b1" other:v1 >/dev/null 2>&1
STRATA_HOME=$W/store2 run "$S" push other:v1 "$R/strata/vm:other" --json
check "the same layer pushed from another store uploads no chunks" [ "$(jget chunks_uploaded)" = 0 ]
packs() { packs_of "strata/vm:$1"; }
packs_of() { skopeo inspect --raw --tls-verify=false "docker://$R/$1" |
    python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["config"]["digest"], *[l["digest"] for l in m["layers"] if not l["mediaType"].endswith("info.v1")])'; }
if command -v skopeo >/dev/null; then
    check "...and lists identical config, index and pack digests" [ "$(packs v1)" = "$(packs other)" ]
    run skopeo inspect --raw --tls-verify=false "docker://$R/strata/vm:v1"
    check "skopeo inspect --raw reads the pushed manifest" [ "$rc" -eq 0 ]
    check "...whose config digest is sha256:<layer id>" \
        [ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"]["digest"])' "$W/out")" = "sha256:$BASE" ]
    check "...with strata's artifactType" grep -q '"artifactType":"application/vnd.strata.layer.v1"' "$W/out"
    check "...under 4 KiB for this layer" [ "$(wc -c <"$W/out")" -lt 4096 ]
else
    skipped "skopeo checks" "skopeo is not installed"
fi

# pack digests come from a local cache of index blobs; a wrong cache costs
# compressing again, never a wrong push
check "pushes leave index blobs in the cache" [ -s "$XDG_CACHE_HOME/strata/index/$BASE" ]
python3 - "$XDG_CACHE_HOME/strata/index/$BASE" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[24] ^= 0xff  # the first pack's digest
open(p, "wb").write(b)
PY
run "$S" push base:v1 "$R/strata/cache-test:v1" --json
check "a push with a damaged cache entry still succeeds" [ "$rc" -eq 0 ]
if command -v skopeo >/dev/null; then
    check "...with the true digests" [ "$(packs v1)" = "$(packs_of strata/cache-test:v1)" ]
fi

# a cross-repository mount: a sibling repository pushed before lends its blobs
run "$S" push base:child "$R/strata/copy:child" --json
check "push to a sibling repository mounts every blob (0 bytes sent)" [ "$(jget bytes_uploaded)" = 0 ]
check "...and still names all 18 chunks present" [ "$(jget chunks_present)" = 18 ]

run "$S" ls --remote "$R/strata/vm"
check "ls --remote lists the tags with their layers" grep -q "^v1 .*${BASE:0:12}" "$W/out"
check "...the child too" grep -q "^child .*${CHILD:0:12}" "$W/out"
run "$S" ls --remote "$R/strata/vm" --json
check "ls --remote --json is JSON" is_json "$W/out"
check "...with full layer ids" grep -q "\"layer\":\"$CHILD\"" "$W/out"
check "...the child's chain of 2" grep -q '"chain":2' "$W/out"

snap=$(snapshot)
expect_error "a reference without a host is one line" 1 "not a remote reference" "$S" push base:v1 vm:v1
expect_error "an upper-case repository is one line" 1 "repository name" "$S" push base:v1 "$R/Strata:v1"
expect_error "a remote without a tag is one line" 1 "needs a tag" "$S" push base:v1 "$R/strata/vm"
expect_error "an unknown local layer is one line" 1 "nope" "$S" push nope "$R/strata/vm:x"
dead=$(free_port)
expect_error "a registry that is not there is one line" 1 "127.0.0.1:$dead" "$S" push base:v1 "127.0.0.1:$dead/x:y"
expect_error "ls --remote with a tag is one line" 1 "without a tag" "$S" ls --remote "$R/strata/vm:v1"
check "failed pushes leave the store unchanged" [ "$(snapshot)" = "$snap" ]

# ---- saved states: host-bound, pushed only with --with-state ----
# A saved state is a layer with bind lines (docs/manifest.md); this one is
# written by hand from the child's manifest, as a child of the child.
SD=$W/state-build
rm -rf "$SD"; mkdir -p "$SD"
{ printf 'strata-layer 1\nparent %s\nbind host test-host\n' "$CHILD"
  grep -v '^strata-layer \|^parent ' "$STRATA_HOME/layers/$CHILD/manifest"; } >"$SD/manifest"
STATE=$(sha256sum "$SD/manifest" | cut -c1-64)
cp -a "$STRATA_HOME/layers/$CHILD" "$STRATA_HOME/layers/$STATE"
chmod u+w "$STRATA_HOME/layers/$STATE"
cp "$SD/manifest" "$STRATA_HOME/layers/$STATE/manifest"
printf '%s\n' "$STATE" >"$STRATA_HOME/refs/tags/base:warm"
run "$S" push base:warm "$R/strata/vm:warm" --json
check "a saved state pushed without --with-state pushes its parent" [ "$(jget layer)" = "$CHILD" ]
check "...and says so" grep -q "saved state (host-bound): pushing its parent" "$W/err"
run "$S" push base:warm "$R/strata/vm:warm-state" --json --with-state
check "with --with-state the state itself is pushed" [ "$(jget layer)" = "$STATE" ]
check "...uploading no chunk (it has none of its own)" [ "$(jget chunks_uploaded)" = 0 ]
run "$S" ls --remote "$R/strata/vm" --json
check "...marked host-bound on the remote" python3 -c '
import json, sys
t = {e["tag"]: e for e in json.load(open(sys.argv[1]))}
assert t["warm-state"]["host_bound"] and t["warm-state"]["chain"] == 3
assert not t["warm"]["host_bound"] and t["warm"]["layer"] == sys.argv[2]' "$W/out" "$CHILD"

# ---- transient failures: 503, 429 with Retry-After, dropped connections ----
PP=$(free_port)
python3 "$HERE/flaky_proxy.py" "$PP" "$R" flaky >"$W/proxy.log" 2>&1 &
PIDS="$PIDS $!"
wait_http "http://127.0.0.1:$PP/v2/"
: >"$W/proxy.log"
run "$S" push base:child "127.0.0.1:$PP/flaky/vm:child" --json --jobs 2
check "push through a flaky proxy succeeds (retries)" [ "$rc" -eq 0 ]
check "...having met a 503, a 429 and a dropped connection" \
    sh -c "grep -q ' 503\$' '$W/proxy.log' && grep -q ' 429\$' '$W/proxy.log' && grep -q ' drop\$' '$W/proxy.log'"
run skopeo inspect --raw --tls-verify=false "docker://$R/flaky/vm:child"
check "...and the manifest arrived" grep -q "\"digest\":\"sha256:$CHILD\"" "$W/out"
PD=$(free_port)
python3 "$HERE/flaky_proxy.py" "$PD" "$R" down >"$W/proxy-down.log" 2>&1 &
PIDS="$PIDS $!"
wait_http "http://127.0.0.1:$PD/v2/"
expect_error "a registry answering only 503 is one line, after retries" 1 "HTTP 503" \
    "$S" push base:v1 "127.0.0.1:$PD/down/vm:v1"
check "...after 5 tries of the first request" [ "$(grep -c . "$W/proxy-down.log")" -eq 6 ]

# ---- htpasswd basic auth ----
if command -v htpasswd >/dev/null; then
    mkdir -p "$W/reg-basic"
    htpasswd -Bbn alice 's3cret-PW-42' >"$W/reg-basic/htpasswd" 2>/dev/null
    start_registry basic "auth: {htpasswd: {realm: test-realm, path: $W/reg-basic/htpasswd}}"
    RB=127.0.0.1:$PORT
    expect_error "push without credentials is one line" 1 "authentication required" "$S" push base:v1 "$RB/vm:v1"
    expect_error "login with a wrong password is one line" 1 "refused" \
        sh -c "printf 'wrong\n' | '$S' login $RB -u alice --password-stdin"
    check "...and writes no config" [ ! -e "$DOCKER_CONFIG/config.json" ]
    run sh -c "printf 's3cret-PW-42\n' | '$S' login $RB -u alice --password-stdin"
    check "login with the right password exits 0" [ "$rc" -eq 0 ]
    check "...writes config.json with mode 0600" [ "$(stat -c %a "$DOCKER_CONFIG/config.json")" = 600 ]
    check "...as docker's base64 auths entry" grep -q "$(printf alice:s3cret-PW-42 | base64)" "$DOCKER_CONFIG/config.json"
    check "...and never the password in clear" sh -c "! grep -q s3cret '$DOCKER_CONFIG/config.json'"

    # watch every process's arguments while a push runs
    "$S" push base:child "$RB/vm:child" --jobs 2 >"$W/out" 2>"$W/err" &
    pushpid=$!
    leaked=0
    while kill -0 $pushpid 2>/dev/null; do
        cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' ' ' | grep -q 's3cret-PW-4[2]' && leaked=1
    done
    wait $pushpid; rc=$?
    check "push with basic auth exits 0" [ "$rc" -eq 0 ]
    check "...and the password never appears in any process's arguments" [ $leaked -eq 0 ]
    check "...nor in its output" sh -c "! grep -q s3cret '$W/out' '$W/err'"

    # a credential helper: the host goes on stdin, never in argv
    mkdir -p "$W/bin"
    cat >"$W/bin/docker-credential-strata-test" <<EOF
#!/bin/sh
echo "argv: \$*" >>"$W/helper.log"
read host
echo "stdin: \$host" >>"$W/helper.log"
[ "\$1" = get ] && printf '{"ServerURL":"%s","Username":"alice","Secret":"s3cret-PW-42"}\n' "\$host"
exit 0
EOF
    chmod +x "$W/bin/docker-credential-strata-test"
    cp "$DOCKER_CONFIG/config.json" "$W/config.saved"
    printf '{"credHelpers": {"%s": "strata-test"}}\n' "$RB" >"$DOCKER_CONFIG/config.json"
    PATH=$W/bin:$PATH run "$S" push base:v1 "$RB/vm:v1"
    check "push with a credHelpers entry exits 0" [ "$rc" -eq 0 ]
    check "...the helper was asked with 'get' only in argv" grep -qx "argv: get" "$W/helper.log"
    check "...and the host on stdin" grep -qx "stdin: $RB" "$W/helper.log"
    cp "$W/config.saved" "$DOCKER_CONFIG/config.json"

    run "$S" logout "$RB"
    check "logout exits 0" [ "$rc" -eq 0 ]
    check "...and removes the entry" sh -c "! grep -q '$RB' '$DOCKER_CONFIG/config.json'"
    expect_error "logout again is one line" 1 "no credentials" "$S" logout "$RB"
else
    skipped "basic auth" "htpasswd (apache2-utils) is not installed"
fi

# ---- bearer tokens ----
if command -v openssl >/dev/null; then
    TD=$W/reg-token
    mkdir -p "$TD"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TD/key.pem" -out "$TD/cert.pem" \
        -days 2 -subj /CN=strata-test-token >/dev/null 2>&1
    start_token_server "$TD/token.log" "$TD/key.pem" "$TD/cert.pem" bob 'b3arer-PW'
    start_token_registry token "http://127.0.0.1:$TPORT/token" "$TD/cert.pem"
    RT=127.0.0.1:$PORT
    expect_error "bearer: push without credentials is one line" 1 "refused the credentials" "$S" push base:v1 "$RT/vm:v1"
    run sh -c "printf 'b3arer-PW\n' | '$S' login $RT -u bob --password-stdin"
    check "bearer: login exits 0" [ "$rc" -eq 0 ]
    run "$S" push base:child "$RT/vm:child" --json
    check "bearer: push with a token exits 0" [ "$rc" -eq 0 ]
    check "bearer: the token server was asked for pull,push" grep -q "scope=repository:vm:pull,push" "$TD/token.log"
    run "$S" ls --remote "$RT/vm"
    check "bearer: ls --remote lists the child" grep -q "^child .*${CHILD:0:12}" "$W/out"
    run "$S" push base:child "$RT/vm2:child" --json
    check "bearer: a mount from a sibling repository sends no bytes" [ "$(jget bytes_uploaded)" = 0 ]
    check "...with a token asked for pull on the source repository" grep -q "scope=repository:vm:pull&" "$TD/token.log"
    run "$S" logout "$RT"
else
    skipped "bearer tokens" "openssl is not installed"
fi

# ---- skopeo copy between two registries ----
if command -v skopeo >/dev/null; then
    start_registry second
    R2=127.0.0.1:$PORT
    run skopeo copy --src-tls-verify=false --dest-tls-verify=false \
        "docker://$R/strata/vm:child" "docker://$R2/copied/vm:child"
    check "skopeo copy of a strata artifact between registries exits 0" [ "$rc" -eq 0 ]
    a=$(skopeo inspect --raw --tls-verify=false "docker://$R/strata/vm:child" | sha256sum)
    b=$(skopeo inspect --raw --tls-verify=false "docker://$R2/copied/vm:child" | sha256sum)
    check "...keeping the manifest byte for byte" [ "$a" = "$b" ]
    run "$S" ls --remote "$R2/copied/vm" --json
    check "...so strata lists the copy as the same layer" grep -q "\"layer\":\"$CHILD\"" "$W/out"
fi

# ---- pull: through the store's receive API ----
P1=$W/pull1
STRATA_HOME=$P1 run "$S" pull "$R/strata/vm:child" --tag got
check "pull of the child into an empty store exits 0" [ "$rc" -eq 0 ]
check "...printing the child's id" [ "$(cat "$W/out")" = "$CHILD" ]
"$S" log base:child >"$W/log-orig" 2>&1
STRATA_HOME=$P1 "$S" log got >"$W/log-pull" 2>&1
check "...with the same chain: ids, dates, sizes and messages" cmp -s "$W/log-orig" "$W/log-pull"
check "...whose ids are the base's and the child's" grep -q "^${BASE:0:12} " "$W/log-pull" &&
    grep -q "^${CHILD:0:12} " "$W/log-pull"
"$S" clone base:child "$W/c-orig" >/dev/null 2>&1
STRATA_HOME=$P1 "$S" clone got "$W/c-pull" >/dev/null 2>&1
check "...and a clone of it is byte-identical to one from the pushing store" \
    diff -rq --exclude=.strata "$W/c-orig" "$W/c-pull"
STRATA_HOME=$P1 run "$S" fsck
check "...and fsck of the pulled store is clean" [ "$rc" -eq 0 ]
P2=$W/pull2
STRATA_HOME=$P2 run "$S" pull "$R/strata/vm:v1" --json
check "pull of the base fetches its 15 chunks" [ "$(jget chunks_fetched)" = 15 ]
STRATA_HOME=$P2 run "$S" pull "$R/strata/vm:child" --json
check "pull of the child over its base fetches only the child's 3 chunks" \
    [ "$(jget chunks_fetched)" = 3 ] && [ "$(jget layers_received)" = 1 ]
STRATA_HOME=$P2 run "$S" pull "$R/strata/vm:child" --json
check "pulling it again fetches nothing" [ "$(jget chunks_fetched)" = 0 ] && [ "$(jget layers_received)" = 0 ]
STRATA_HOME=$P2 expect_error "pull of a missing tag is one line" 1 "no such manifest" "$S" pull "$R/strata/vm:nothing-$$"
STRATA_HOME=$P2 expect_error "pull without a tag is one line" 1 "needs a tag or digest" "$S" pull "$R/strata/vm"
P3=$W/pull3
STRATA_HOME=$P3 "$S" pull "$R/strata/vm:v1" >/dev/null 2>&1

# ---- pull: parallel ranges, progress, the default local tag ----
P5=$W/pull5
STRATA_HOME=$P5 run "$S" pull "$R/strata/vm:child" --jobs 4 --json
check "a parallel pull (--jobs 4) of the child exits 0" [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$CHILD" ]
check "...fetching its 18 chunks, none counted present in an empty store" \
    [ "$(jget chunks_fetched)" = 18 ] && [ "$(jget chunks_present)" = 0 ]
req=$(jget requests)
check "...in fewer requests than chunks: adjacent frames share one Range ($req)" [ "$req" -lt 18 ]
LOCAL=127.0.0.1_${R#127.0.0.1:}_strata_vm:child
check "...tagged locally with the remote name ($LOCAL)" [ "$(jget tag)" = "$LOCAL" ]
STRATA_HOME=$P5 run "$S" ls
check "ls shows that tag" grep -q "$LOCAL" "$W/out"
STRATA_HOME=$P5 run "$S" clone "$R/strata/vm:child" "$W/c-remote-name"
check "clone takes the remote name of a pulled layer" [ "$rc" -eq 0 ]
check "...which is byte-identical to the pushing store's" diff -rq --exclude=.strata "$W/c-orig" "$W/c-remote-name"
STRATA_HOME=$P5 run "$S" fsck
check "...and the parallel pull's store is fsck-clean" [ "$rc" -eq 0 ]
P6=$W/pull6
STRATA_HOME=$P6 run "$S" pull "$R/strata/vm:v1" -t mine --jobs 1
check "pull -t NAME with --jobs 1 exits 0" [ "$rc" -eq 0 ] && [ "$(cat "$W/out")" = "$BASE" ]
check "...its summary names bytes downloaded, chunks present and time" \
    grep -qE "^pulled $R/strata/vm:v1 \(layer ${BASE:0:12}, tagged mine\): downloaded [0-9.]+ [KMG]?i?B in 15 chunks \([0-9]+ requests\); 0 chunks already present \(0 from an interrupted pull\), 0 copied from elsewhere in the store; 1 layers new; [0-9.]+ s$" "$W/err"
check "...and piped, no progress bar" sh -c "! grep -q 'pull \\[' '$W/err'"
STRATA_HOME=$P6 run "$S" pull "$R/strata/vm:child" --json
check "the child over the base: 3 chunks fetched, 15 counted present" \
    [ "$(jget chunks_fetched)" = 3 ] && [ "$(jget chunks_present)" = 15 ]
if command -v script >/dev/null; then
    STRATA_HOME=$W/pull7 script -qec "'$S' pull '$R/strata/vm:child'" /dev/null >"$W/tty" 2>&1
    check "on a terminal, pull shows a bar with bytes and rate" grep -qE 'pull \[#+ *\] [0-9.]+ [KMG]?i?B of [0-9.]+ [KMG]?i?B, [0-9.]+ [KMG]?i?B/s' "$W/tty"
else
    skipped "the pull progress bar" "script (util-linux) is not installed"
fi
STRATA_HOME=$P6 expect_error "--jobs 0 is one line" 1 "--jobs" "$S" pull "$R/strata/vm:child" --jobs 0

# ---- pull: chunks the store holds at another place are copied, never fetched ----
# The child writes the base's first MiB again at 900M (the same bytes at
# another place), one new MiB twice (800M and 850M) and one new MiB once.
"$S" clone base:v1 "$W/inst-dup" 2>/dev/null
"$MK" --write "$W/inst-dup/Disk.img" 900M:1M:1 800M:1M:7 850M:1M:7 600M:1M:8
DUP=$("$S" commit "$W/inst-dup" -m dup -t base:dup 2>/dev/null)
run "$S" push base:dup "$R/strata/vm:dup" --json
check "a child with a moved and a doubled chunk uploads its 2 new chunks" [ "$(jget chunks_uploaded)" = 2 ]
"$S" clone base:dup "$W/c-dup" >/dev/null 2>&1
STRATA_HOME=$P2 run "$S" pull "$R/strata/vm:dup" --json
check "pull of it over the base downloads the 2 new chunks once each" \
    [ "$(jget chunks_fetched)" = 2 ] && [ "$(jget chunks_local)" = 1 ]
STRATA_HOME=$P2 "$S" clone "$R/strata/vm:dup" "$W/c-dup2" >/dev/null 2>&1
check "...and its clone is byte-identical" diff -rq --exclude=.strata "$W/c-dup" "$W/c-dup2"
STRATA_HOME=$W/pull-dup run "$S" pull "$R/strata/vm:dup" --json
check "pull of it into an empty store takes the moved chunk from the base just received" \
    [ "$(jget chunks_fetched)" = 17 ] && [ "$(jget chunks_local)" = 1 ] && [ "$(jget layers_received)" = 2 ]
STRATA_HOME=$W/pull-dup "$S" clone "$R/strata/vm:dup" "$W/c-dup3" >/dev/null 2>&1
check "...byte-identical" diff -rq --exclude=.strata "$W/c-dup" "$W/c-dup3"
STRATA_HOME=$W/pull-dup run "$S" fsck
check "...and fsck-clean" [ "$rc" -eq 0 ]
# a damaged copy in the store is never copied in: the chunk is downloaded
PD=$W/pull-damaged
STRATA_HOME=$PD "$S" pull "$R/strata/vm:v1" >/dev/null 2>&1
DMG=$PD/layers/$BASE/bundle/Disk.img
chmod u+w "$DMG" && printf 'damaged' | dd of="$DMG" bs=1 seek=100 conv=notrunc status=none
STRATA_HOME=$PD run "$S" pull "$R/strata/vm:dup" --json
check "a damaged local copy of the moved chunk is not taken: it is downloaded" \
    [ "$rc" -eq 0 ] && [ "$(jget chunks_fetched)" = 3 ] && [ "$(jget chunks_local)" = 0 ]
STRATA_HOME=$PD "$S" clone "$R/strata/vm:dup" "$W/c-dup4" >/dev/null 2>&1
check "...so the child's bytes at 900M are the pushed ones" \
    cmp -s <(dd if="$W/c-dup/Disk.img" bs=1M skip=900 count=1 status=none) \
        <(dd if="$W/c-dup4/Disk.img" bs=1M skip=900 count=1 status=none)

# ---- pull from a registry that refuses Range: each pack once ----
PN2=$(free_port)
python3 "$HERE/flaky_proxy.py" "$PN2" "$R" norange >"$W/proxy-nr.log" 2>&1 &
PIDS="$PIDS $!"
wait_http "http://127.0.0.1:$PN2/v2/"
pack_bytes() { skopeo inspect --raw --tls-verify=false "docker://$R/strata/vm:$1" |
    python3 -c 'import json,sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"] if l["mediaType"].endswith("zstd")))'; }
if command -v skopeo >/dev/null; then
    ALLPACKS=$(pack_bytes child)
    : >"$W/proxy-nr.log"
    STRATA_HOME=$W/pull8 run "$S" pull "127.0.0.1:$PN2/strata/vm:child" --json --jobs 4
    check "a pull through a registry that ignores Range exits 0" [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$CHILD" ]
    check "...in whole-pack mode" [ "$(jget whole_packs)" = True ]
    check "...downloading each pack exactly once ($(jget bytes_fetched) bytes = $ALLPACKS)" \
        [ "$(jget bytes_fetched)" = "$ALLPACKS" ]
    npk=$(skopeo inspect --raw --tls-verify=false "docker://$R/strata/vm:child" | grep -o 'pack.v1+zstd' | wc -l)
    check "...one GET per pack ($npk)" [ "$(jget requests)" = "$npk" ]
    STRATA_HOME=$W/pull8 run "$S" fsck
    check "...and the store is fsck-clean" [ "$rc" -eq 0 ]
    STRATA_HOME=$W/pull8 "$S" clone "$LOCAL" "$W/c-norange" >/dev/null 2>&1 ||
        STRATA_HOME=$W/pull8 "$S" clone "127.0.0.1_${PN2}_strata_vm:child" "$W/c-norange" >/dev/null 2>&1
    check "...with a byte-identical clone" diff -rq --exclude=.strata "$W/c-orig" "$W/c-norange"
else
    skipped "whole-pack pulls" "skopeo is not installed"
fi

# 416 to every Range: whole packs too
P4R=$(free_port)
python3 "$HERE/flaky_proxy.py" "$P4R" "$R" range416 >"$W/proxy-416.log" 2>&1 &
PIDS="$PIDS $!"
wait_http "http://127.0.0.1:$P4R/v2/"
STRATA_HOME=$W/pull13 run "$S" pull "127.0.0.1:$P4R/strata/vm:child" --json
check "a pull from a registry that answers 416 to Range exits 0, in whole-pack mode" \
    [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$CHILD" ] && [ "$(jget whole_packs)" = True ]
check "...after one refused Range" [ "$(grep -c ' range416$' "$W/proxy-416.log")" = 1 ]
STRATA_HOME=$W/pull13 run "$S" fsck
check "...and an fsck-clean store" [ "$rc" -eq 0 ]

# transient failures during a pull: retried, per request and per range
PF=$(free_port)
python3 "$HERE/flaky_proxy.py" "$PF" "$R" flaky >"$W/proxy-pf.log" 2>&1 &
PIDS="$PIDS $!"
wait_http "http://127.0.0.1:$PF/v2/"
: >"$W/proxy-pf.log"
STRATA_HOME=$W/pull14 run "$S" pull "127.0.0.1:$PF/strata/vm:child" --json --jobs 2
check "a pull through a flaky proxy succeeds (retries)" [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$CHILD" ]
check "...having met a 503, a 429 and a dropped connection" \
    sh -c "grep -aq ' 503\$' '$W/proxy-pf.log' && grep -aq ' 429\$' '$W/proxy-pf.log' && grep -aq ' drop\$' '$W/proxy-pf.log'"
STRATA_HOME=$W/pull14 run "$S" fsck
check "...and an fsck-clean store" [ "$rc" -eq 0 ]

# ---- a pull killed mid-transfer, then resumed ----
"$MK" "$W/b-big" --size 64M --data 0:24M:7 >/dev/null
"$S" import "$W/b-big" big:v1 >/dev/null 2>&1
BIG=$("$S" log big:v1 2>/dev/null | head -1 | cut -c1-12)
run "$S" push big:v1 "$R/strata/big:v1" --json
BIGPACK=$(jget bytes_uploaded)
PS=$(free_port)
python3 "$HERE/flaky_proxy.py" "$PS" "$R" slow 2097152 >"$W/proxy-slow.log" 2>&1 &
PIDS="$PIDS $!"
wait_http "http://127.0.0.1:$PS/v2/"
P9=$W/pull9
STRATA_HOME=$P9 "$S" pull "127.0.0.1:$PS/strata/big:v1" --jobs 2 -t big >"$W/out9" 2>&1 &
pullpid=$!
for _ in $(seq 100); do  # until some chunks have arrived, at most 20 s
    got=$(du -sk "$P9"/tmp/receive-*/bundle 2>/dev/null | cut -f1 | head -1)
    [ "${got:-0}" -gt 4096 ] && break
    sleep 0.2
done
kill -9 $pullpid; wait $pullpid 2>/dev/null
check "a pull killed mid-transfer left its received work under tmp/ (${got:-0} KiB)" \
    [ -d "$(ls -d "$P9"/tmp/receive-* 2>/dev/null | head -1)" ]
STRATA_HOME=$P9 run "$S" fsck
check "...and the store is fsck-clean" [ "$rc" -eq 0 ]
STRATA_HOME=$P9 run "$S" ls
check "...other commands run meanwhile (ls)" [ "$rc" -eq 0 ]
STRATA_HOME=$P9 run "$S" gc --prune=now
check "...and gc --prune=now keeps the partial pull" [ "$rc" -eq 0 ] && [ -d "$(ls -d "$P9"/tmp/receive-* 2>/dev/null | head -1)" ]
STRATA_HOME=$P9 run "$S" pull "$R/strata/big:v1" --json -t big
check "the pull run again completes" [ "$rc" -eq 0 ]
BIGID=$(jget layer)
check "...publishing a layer directory like any other (no resume notes in it; marked received)" \
    [ "$(ls "$P9/layers/$BIGID" | grep -vx received)" = "$(ls "$STRATA_HOME/layers/$BIGID")" ] && \
    [ -e "$P9/layers/$BIGID/received" ]
check "...taking up the chunks already received ($(jget chunks_resumed) of 24)" [ "$(jget chunks_resumed)" -gt 0 ]
check "...and downloading only the rest ($(jget bytes_fetched) of $BIGPACK bytes)" \
    [ "$(jget bytes_fetched)" -lt "$BIGPACK" ] && [ "$(( $(jget chunks_fetched) + $(jget chunks_resumed) ))" = 24 ]
"$S" clone big:v1 "$W/c-big-orig" >/dev/null 2>&1
STRATA_HOME=$P9 "$S" clone big "$W/c-big-pull" >/dev/null 2>&1
check "...giving a byte-identical clone" cmp -s "$W/c-big-orig/Disk.img" "$W/c-big-pull/Disk.img"
STRATA_HOME=$P9 run "$S" fsck
check "...an fsck-clean store" [ "$rc" -eq 0 ]
check "...and no temporary work left" [ -z "$(ls -A "$P9/tmp" 2>/dev/null)" ]

# a chain killed while its second layer arrives: the first, complete but
# unpublished, and the second's part are both taken up
P15=$W/pull15
STRATA_HOME=$P15 "$S" pull "127.0.0.1:$PS/strata/vm:child" --jobs 2 >"$W/out15" 2>&1 &
pullpid=$!
for _ in $(seq 150); do  # until the child's receive exists, at most 30 s
    [ -d "$P15/tmp/receive-$CHILD/bundle" ] && break
    sleep 0.2
done
kill -9 $pullpid; wait $pullpid 2>/dev/null
check "a chain pull killed in its second layer leaves both layers' work" \
    [ -d "$P15/tmp/receive-$BASE/bundle" ] && [ -d "$P15/tmp/receive-$CHILD/bundle" ]
STRATA_HOME=$P15 run "$S" pull "$R/strata/vm:child" --json
check "...run again, it completes, taking up the whole first layer ($(jget chunks_resumed) chunks resumed)" \
    [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$CHILD" ] && [ "$(jget chunks_resumed)" -ge 15 ]
check "...fetching at most the child's 3 chunks ($(jget chunks_fetched))" [ "$(jget chunks_fetched)" -le 3 ]
STRATA_HOME=$P15 "$S" clone "$LOCAL" "$W/c-chain" >/dev/null 2>&1
check "...with a byte-identical clone" diff -rq --exclude=.strata "$W/c-orig" "$W/c-chain"
STRATA_HOME=$P15 run "$S" fsck
check "...and an fsck-clean store with no work left" [ "$rc" -eq 0 ] && [ -z "$(ls -A "$P15/tmp")" ]

# killed while it clones a file from the layer's base: an unfinished clone
# (cut in half here) is never found under the file's name and taken whole
P16=$W/pull16
STRATA_HOME=$P16 STRATA_TEST_CRASH_AT=receive-clone run "$S" pull "$R/strata/vm:child"
part=$(ls "$P16/tmp/receive-$CHILD"/clone-* 2>/dev/null | head -1)
check "a pull killed while cloning a file from its base ($rc) leaves the clone outside the bundle" \
    [ "$rc" -eq 137 ] && [ -n "$part" ] && [ -z "$(ls -A "$P16/tmp/receive-$CHILD/bundle")" ]
[ -n "$part" ] && truncate -s $(($(stat -c %s "$part") / 2)) "$part"
STRATA_HOME=$P16 run "$S" pull "$R/strata/vm:child"
STRATA_HOME=$P16 "$S" clone "$LOCAL" "$W/c-p16" >/dev/null 2>&1
check "...run again, it clones that file anew: byte-identical" [ "$rc" -eq 0 ] && \
    diff -rq --exclude=.strata "$W/c-orig" "$W/c-p16"
STRATA_HOME=$P16 run "$S" fsck
check "...and fsck-clean, with no work left" [ "$rc" -eq 0 ] && [ -z "$(ls -A "$P16/tmp")" ]

# gc while a pull runs: it waits for the pull (which holds the store's
# shared lock while it builds on its base); neither loses anything
P12=$W/pull12
STRATA_HOME=$P12 "$S" pull "127.0.0.1:$PS/strata/vm:child" -t during-gc >"$W/out12" 2>&1 &
pullpid=$!
sleep 1
STRATA_HOME=$P12 "$S" gc --prune=now >"$W/out-gc12" 2>&1 &
gcpid=$!
wait $pullpid; prc=$?
wait $gcpid; grc=$?
check "a gc started during a pull waits for it; both exit 0" [ "$prc" -eq 0 ] && [ "$grc" -eq 0 ]
STRATA_HOME=$P12 run "$S" fsck
check "...the pulled layer is there and the store fsck-clean" [ "$rc" -eq 0 ] &&
    [ "$(STRATA_HOME=$P12 "$S" log during-gc 2>/dev/null | head -1 | cut -c1-12)" = "${CHILD:0:12}" ]

# ---- gc during a push: the layer being pushed is pinned, gc does not wait ----
"$MK" "$W/b-gc" --size 16M --data 0:2M:11 >/dev/null
GCL=$("$S" import "$W/b-gc" 2>/dev/null)
"$S" push "$GCL" "127.0.0.1:$PS/strata/gc:v1" >"$W/out-gcpush" 2>&1 &
pushpid=$!
sleep 1.5
run "$S" gc --prune=now
gcrc=$rc
still=$(kill -0 $pushpid 2>/dev/null && echo running)
check "gc --prune=now during a push of an untagged layer exits 0 without waiting for it" \
    [ "$gcrc" -eq 0 ] && [ "$still" = running ]
check "...and keeps the layer being pushed" [ -d "$STRATA_HOME/layers/$GCL" ]
wait $pushpid; rc=$?
check "...the push completes" [ "$rc" -eq 0 ]
check "...the layer still there" [ -d "$STRATA_HOME/layers/$GCL" ]
run "$S" gc --prune=now
check "...and once the push is over, gc may remove it" [ ! -d "$STRATA_HOME/layers/$GCL" ]

# ---- run HOST/REPO:TAG --no-lazy pulls what is missing, then boots ----
# (a lazy run, the default, is tests/lazy_run.sh's)
P10=$W/pull10
mkdir -p "$W/xdg-run" && chmod 700 "$W/xdg-run"
STRATA_HOME=$P10 XDG_RUNTIME_DIR=$W/xdg-run STRATA_QEMU=$HERE/fakeqemu.sh FAKE_STARTS=$W/starts-run \
    run "$S" run "$R/strata/vm:child" --no-lazy --driver qemu --ephemeral --name fromremote
check "run HOST/REPO:TAG on an empty store pulls it first" grep -q "is not in the store: pulling it" "$W/err"
check "...completely" grep -q "^pulled $R/strata/vm:child" "$W/err"
check "...under the default local tag" [ "$(STRATA_HOME=$P10 "$S" log "$LOCAL" 2>/dev/null | head -1 | cut -c1-12)" = "${CHILD:0:12}" ]
check "...then hands it to boot, which clones it and refuses this bundle (no Settings.json)" \
    [ "$rc" -ne 0 ] && grep -q "cloning layer ${CHILD:0:12}" "$W/err" && grep -q "Settings.json" "$W/err"
STRATA_HOME=$P10 XDG_RUNTIME_DIR=$W/xdg-run STRATA_QEMU=$HERE/fakeqemu.sh FAKE_STARTS=$W/starts-run \
    run "$S" run "$R/strata/vm:child" --driver qemu --ephemeral --name fromremote2
check "a second run of the same reference uses the local tag, no pull" sh -c "! grep -q 'pulling' '$W/err'"

# ---- memory: a 64 GiB sparse disk with data chunks spread across it ----
if [ -n "${STRATA_SANITIZED:-}" ]; then
    skipped "memory bounds of push and pull" "AddressSanitizer's shadow memory inflates the RSS; the plain pass measures it"
elif [ ! -x /usr/bin/time ]; then
    skipped "memory bounds of push and pull" "/usr/bin/time is not installed (.ci/deps.sh)"
else
    spread=""
    for i in $(seq 0 127); do spread="$spread --data $((i * 512))M:1M:$((i + 100))"; done
    "$MK" "$W/b-huge" --size 64G $spread >/dev/null
    "$S" import "$W/b-huge" huge:v1 >/dev/null 2>&1
    run /usr/bin/time -f 'maxrss %M' "$S" push huge:v1 "$R/strata/huge:v1" --json
    rss=$(sed -n 's/^maxrss //p' "$W/err")
    check "push of a 64 GiB disk (128 data chunks spread across it) exits 0" [ "$rc" -eq 0 ] &&
        [ "$(jget chunks_uploaded)" = 128 ]
    check "...under 200 MB of memory (${rss:-?} KiB)" [ "${rss:-999999}" -lt 204800 ]
    STRATA_HOME=$W/pull11 run /usr/bin/time -f 'maxrss %M' "$S" pull "$R/strata/huge:v1" --json
    rss=$(sed -n 's/^maxrss //p' "$W/err")
    check "pull of it into an empty store exits 0, fetching the 128 chunks" [ "$rc" -eq 0 ] &&
        [ "$(jget chunks_fetched)" = 128 ]
    check "...under 200 MB of memory (${rss:-?} KiB)" [ "${rss:-999999}" -lt 204800 ]
    f=$W/pull11/layers/$(jget layer)/bundle/Disk.img
    check "...with the disk sparse: 64 GiB apparent, about 128 MiB allocated" \
        [ "$(stat -c %s "$f")" = 68719476736 ] && [ "$(du -k "$f" | cut -f1)" -lt 262144 ]
    rm -rf "$W/b-huge" "$W/pull11"
fi

# ---- blob GETs: ranges, registries that ignore Range, redirects, tampering ----
if ! command -v skopeo >/dev/null; then
    skipped "blob GETs and reading artifacts back" "skopeo is not installed"
    finish; exit
fi
G=$B/tests/remote_get
PACK=$(skopeo inspect --raw --tls-verify=false "docker://$R/strata/vm:child" 2>/dev/null |
    python3 -c 'import json,sys; print([l["digest"] for l in json.load(sys.stdin)["layers"] if l["mediaType"].endswith("zstd")][-1])')
curl -s "http://$R/v2/strata/vm/blobs/$PACK" -o "$W/pack.full"
dd if="$W/pack.full" of="$W/pack.part" bs=1 skip=100 count=1000 status=none
"$G" "$R/strata/vm" "$PACK" >"$W/got" 2>"$W/err"
check "a whole blob GET gives the blob (digest checked)" cmp -s "$W/got" "$W/pack.full"
"$G" "$R/strata/vm" "$PACK" 100 1000 >"$W/got" 2>"$W/err"
check "a Range GET (206) gives exactly those bytes" cmp -s "$W/got" "$W/pack.part"
PN=$(free_port)
python3 "$HERE/flaky_proxy.py" "$PN" "$R" norange >"$W/proxy-norange.log" 2>&1 &
PIDS="$PIDS $!"
wait_http "http://127.0.0.1:$PN/v2/"
"$G" "127.0.0.1:$PN/strata/vm" "$PACK" 100 1000 >"$W/got" 2>"$W/err"
check "a registry answering 200 with the whole blob to a Range still gives those bytes" \
    cmp -s "$W/got" "$W/pack.part"
PR=$(free_port)
python3 "$HERE/flaky_proxy.py" "$PR" "$R" redirect >"$W/proxy-redirect.log" 2>&1 &
PIDS="$PIDS $!"
wait_http "http://127.0.0.1:$PR/v2/"
"$G" "127.0.0.1:$PR/strata/vm" "$PACK" 100 1000 >"$W/got" 2>"$W/err"
check "a redirected Range GET gives those bytes" cmp -s "$W/got" "$W/pack.part"
check "...and was redirected" grep -q "blobs/sha256.* redirect" "$W/proxy-redirect.log"
STRATA_HOME=$W/pull16 run "$S" pull "127.0.0.1:$PR/strata/vm:child" --json --jobs 3
check "a parallel pull from a registry that redirects blob GETs exits 0" \
    [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$CHILD" ] && [ "$(jget whole_packs)" = False ] &&
    [ "$(jget chunks_fetched)" = 18 ]
run "$G" --verify "$R/strata/vm" child
check "a puller's read of the child: 2 layers, every chunk fetched by range and verified" \
    grep -q "^2 layers, 18 chunks verified, top $CHILD" "$W/out"
run "$G" --verify "127.0.0.1:$PN/strata/vm" child
check "...the same through a registry that ignores Range" grep -q "^2 layers, 18 chunks verified" "$W/out"
STRATA_HOME=$W/pull4 run "$S" pull "127.0.0.1:$PN/strata/vm:child" --tag got
check "pull through a registry that ignores Range gives the child" [ "$rc" -eq 0 ] &&
    [ "$(cat "$W/out")" = "$CHILD" ]
run "$G" --verify "$R/strata/vm" warm-state
check "...and of the saved state (3 layers)" grep -q "^3 layers, 18 chunks verified, top $STATE" "$W/out"
expect_error "a missing tag is one line" 1 "no such manifest" "$G" --verify "$R/strata/vm" nothing-$$
# a plain OCI manifest (empty config, no artifactType), put with curl
EMPTY=sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a
loc=$(curl -s -X POST -D - -o /dev/null "http://$R/v2/strata/plain/blobs/uploads/" | tr -d '\r' | sed -n 's/^Location: //Ip')
curl -s -X PUT --data-binary '{}' -H 'Content-Type: application/octet-stream' "$loc&digest=$EMPTY" -o /dev/null
curl -s -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' -o /dev/null \
    --data-binary "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"$EMPTY\",\"size\":2},\"layers\":[]}" \
    "http://$R/v2/strata/plain/manifests/plain"
expect_error "a manifest that is not a strata layer is refused in one line" 1 "not a strata layer" \
    "$G" --verify "$R/strata/plain" plain
run "$S" ls --remote "$R/strata/plain"
check "ls --remote shows it as not a strata layer" grep -q "^plain .*not a strata layer" "$W/out"
blobfile=$W/reg-anon/data/docker/registry/v2/blobs/sha256/${PACK:7:2}/${PACK:7}/data
printf '\xff' | dd of="$blobfile" bs=1 seek=5000 conv=notrunc status=none
expect_error "a blob whose bytes changed in the registry is refused, naming it" 1 \
    "blob $PACK: the registry sent different bytes" "$G" "$R/strata/vm" "$PACK"
expect_error "...and a chunk read from it by range is refused, naming the pack" 1 \
    "pack $PACK" "$G" --verify "$R/strata/vm" child
snap=$(STRATA_HOME=$P3 snapshot)
STRATA_HOME=$P3 expect_error "a pull that meets the changed blob is refused, naming the pack" 1 \
    "pack $PACK" "$S" pull "$R/strata/vm:child"
check "...leaving the store unchanged" [ "$(STRATA_HOME=$P3 snapshot)" = "$snap" ]
check "...keeping only the received work of that layer, for a later pull" \
    [ "$(ls -A "$P3/tmp" 2>/dev/null | tr '\n' ' ')" = "receive-$CHILD receive-$CHILD.lock " ]

finish
