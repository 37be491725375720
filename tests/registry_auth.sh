#!/bin/bash
# Registry auth as the registries teams use need it (issue 20): every kind
# of credential docker's config.json holds (an identity token exchanged by
# OAuth2, a registry token, a helper answering "<token>", a helper whose
# password is rotated), tokens that expire during a push or pull (the real
# docker-registry enforcing a short "exp" from tests/token_server.py),
# secrets kept out of output and process arguments, and Docker Hub's names
# (docker.io, library/) against a registry standing in for Docker Hub in a
# private network namespace (root only). Every process started here is
# stopped by the trap, whatever happens.
. "$(dirname "$0")/lib.sh"

export STRATA_HOME=$W/store DOCKER_CONFIG=$W/docker XDG_CACHE_HOME=$W/cache
rm -rf "$W"/store* "$W"/docker "$W"/cache "$W"/reg-* "$W"/b* "$W"/inst* "$W"/bin "$W"/tok* "$W"/hub*
. "$(dirname "$0")/registry_lib.sh"
need_registry "registry auth tests"
if ! command -v openssl >/dev/null; then
    skipped "registry auth tests" "openssl is not installed (the token server signs with it)"
    finish
    exit
fi
mkdir -p "$DOCKER_CONFIG" "$W/bin"
export PATH=$W/bin:$PATH

# ---- a base and a child ----
base_and_child 1G "0:8M:1 512M:4M:2" "1M:2M:9 700M:1M:4"

# ---- a registry whose tokens last 2 s, behind a proxy that delays every request ----
RT_SECRET='rt-S3CRET-refresh-77'
TD=$W/tok
mkdir -p "$TD"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TD/key.pem" -out "$TD/cert.pem" \
    -days 2 -subj /CN=strata-test-token >/dev/null 2>&1
LIFE=2
start_token_server "$TD/token.log" "$TD/key.pem" "$TD/cert.pem" bob 'b3arer-PW' \
    --lifetime $LIFE --refresh-token "$RT_SECRET" --password-file "$TD/rotated" --password-life 3
start_token_registry token "http://127.0.0.1:$TPORT/token" "$TD/cert.pem"
RT=127.0.0.1:$PORT
# every request waits 0.5 s there, so a transfer outlives its tokens
start_proxy slow "$RT" slow $((4 << 20))
RP=127.0.0.1:$PPORT
# and one sending bodies at 1 MiB/s, for a pull
start_proxy pullslow "$RT" slow $((1 << 20))
RP2=127.0.0.1:$PPORT

# config FILE-CONTENT: docker's config.json
config() { printf '%s\n' "$1" >"$DOCKER_CONFIG/config.json"; }
# issued: the tokens the server gave since the log was emptied
issued() { grep -c ' issued$' "$TD/token.log"; }
# min_span JOBS [PROXY BYTES RATE]: the fewest whole seconds a transfer
# through a slow proxy (by default "slow") can have taken: its requests
# waited 0.5 s each there, and BYTES of bodies came at RATE bytes/s per
# connection, at most JOBS+1 connections at a time
min_span() {
    python3 -c '
import sys
jobs, log, nbytes, rate = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
n = sum(1 for line in open(log) if line.strip())
print(int((n * 0.5 + nbytes / rate) / (jobs + 1)))' "$1" "$W/proxy-${2:-slow}.log" "${3:-0}" "${4:-1}"
}
# a token works for LIFE seconds at most: the fewest a transfer needed
min_tokens() { echo $(($(min_span "$@") / LIFE)); }
# watch_run SECRET-REGEX ARGS...: run strata ARGS in the background,
# reading every process's arguments until it ends; $rc, $leaked
watch_run() {
    local pattern=$1
    shift
    "$S" "$@" >"$W/out" 2>"$W/err" &
    local pid=$!
    leaked=0
    while kill -0 $pid 2>/dev/null; do
        # the test's own token servers hold the secrets they check
        for c in /proc/[0-9]*/cmdline; do tr '\0' ' ' <"$c"; echo; done 2>/dev/null |
            grep -v token_server.py | grep -qE "$pattern" && leaked=1
    done
    wait $pid
    rc=$?
}
SECRETS="rt-S3CRET-refresh-7[7]|b3arer-P[W]|rot-pw-[0-9]"

# ---- an identity token (OAuth2 refresh token) in config.json ----
config "{\"auths\": {\"$RP\": {\"auth\": \"$(printf 'bob:' | base64)\", \"identitytoken\": \"$RT_SECRET\"},
                \"$RP2\": {\"identitytoken\": \"$RT_SECRET\"}}}"
: >"$TD/token.log"
: >"$W/proxy-slow.log"
watch_run "$SECRETS" push base:child "$RP/idt/vm:child" --jobs 1 --json
check "identitytoken: a push through the slow proxy exits 0" [ "$rc" -eq 0 ]
check "...pushing the child" [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$CHILD" ]
check "...with tokens from the refresh-token grant only (POST)" \
    sh -c "grep -q '^POST /token .*grant_type=refresh_token .*refresh_token=valid' '$TD/token.log' && ! grep -q '^GET' '$TD/token.log'"
check "...a form with client_id=strata, the scopes and the service" \
    grep -q "^POST /token client_id=strata grant_type=refresh_token refresh_token=valid scope=repository:idt/vm:pull,push service=strata-test type=application/x-www-form-urlencoded issued" "$TD/token.log"
want=$(min_tokens 1)
got=$(issued)
check "...outliving its tokens: $got issued, at least $want needed" [ "$want" -ge 2 ] && [ "$got" -ge "$want" ]
check "...the refresh token never in a URL (nor in the log)" sh -c "! grep -q '$RT_SECRET' '$TD/token.log'"
check "...nor in any process's arguments" [ "$leaked" -eq 0 ]
check "...nor in strata's output" sh -c "! grep -qE '$SECRETS' '$W/out' '$W/err'"

# a pull of it outlives its tokens too (its worker on a connection of its own)
: >"$TD/token.log"
: >"$W/proxy-pullslow.log"
STRATA_HOME=$W/store2 watch_run "$SECRETS" pull "$RP2/idt/vm:child" --jobs 1 --json
check "identitytoken: a pull through the slow proxy exits 0" [ "$rc" -eq 0 ]
check "...of the child" grep -q "$CHILD" "$W/out"
want=$(min_tokens 1 pullslow "$(jget bytes_fetched)" $((1 << 20)))
got=$(issued)
check "...outliving its tokens: $got issued, at least $want needed" [ "$want" -ge 2 ] && [ "$got" -ge "$want" ]
check "...no secret in any process's arguments or the output" \
    sh -c "[ $leaked -eq 0 ] && ! grep -qE '$SECRETS' '$W/out' '$W/err'"
STRATA_HOME=$W/store2 run "$S" fsck
check "...and the pulled store checks out" [ "$rc" -eq 0 ]

config "{\"auths\": {\"$RP\": {\"identitytoken\": \"rt-wrong\"}}}"
expect_error "a refresh token the server refuses is one line" 1 "refused the credentials" \
    "$S" push base:v1 "$RP/idt/vm:v1"

# ---- a registry token: sent as Bearer as is, no token server asked ----
# minted by a second token server with the same key, lasting 600 s
start_token_server /dev/null "$TD/key.pem" "$TD/cert.pem" bob 'b3arer-PW'
T2=$TPORT
REG_TOKEN=$(curl -s -u bob:b3arer-PW "http://127.0.0.1:$T2/token?scope=repository:regtok/vm:pull,push&service=strata-test" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
config "{\"auths\": {\"$RT\": {\"registrytoken\": \"$REG_TOKEN\"}}}"
: >"$TD/token.log"
run "$S" push base:child "$RT/regtok/vm:child" --json
check "registrytoken: a push exits 0" [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$CHILD" ]
check "...without asking the token server" [ ! -s "$TD/token.log" ]
check "...and never shows the token" sh -c "! grep -qF '${REG_TOKEN:0:40}' '$W/out' '$W/err'"

# ---- a credential helper answering "<token>": its secret is an identity token ----
cat >"$W/bin/docker-credential-idtok" <<EOF
#!/bin/sh
read host
echo "\$1 \$host" >>"$W/helper-idtok.log"
[ "\$1" = get ] && printf '{"ServerURL":"%s","Username":"<token>","Secret":"%s"}\n' "\$host" "$RT_SECRET"
exit 0
EOF
chmod +x "$W/bin/docker-credential-idtok"
config "{\"credHelpers\": {\"$RT\": \"idtok\"}}"
: >"$TD/token.log"
run "$S" push base:v1 "$RT/helper/vm:v1" --json
check "helper <token>: a push exits 0" [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$BASE" ]
check "...the helper was asked for the host" grep -qx "get $RT" "$W/helper-idtok.log"
check "...and its secret exchanged as a refresh token (POST), never as a password" \
    sh -c "grep -q '^POST .*refresh_token=valid .* issued$' '$TD/token.log' && ! grep -q '^GET' '$TD/token.log'"

# ---- a helper whose password is rotated: each answer a new one, each accepted 3 s ----
cat >"$W/bin/docker-credential-rotating" <<EOF
#!/bin/sh
read host
n=\$(( \$(cat "$W/rot-count" 2>/dev/null || echo 0) + 1 ))
echo \$n >"$W/rot-count"
echo "rot-pw-\$n \$(date +%s.%N)" >>"$TD/rotated"
[ "\$1" = get ] && printf '{"ServerURL":"%s","Username":"bob","Secret":"rot-pw-%s"}\n' "\$host" "\$n"
exit 0
EOF
chmod +x "$W/bin/docker-credential-rotating"
config "{\"credHelpers\": {\"$RP\": \"rotating\"}}"
: >"$TD/token.log"
: >"$W/proxy-slow.log"
watch_run "$SECRETS" push base:child "$RP/rotated/vm:child" --jobs 2 --json
check "rotated password: a push through the slow proxy exits 0" [ "$rc" -eq 0 ] && [ "$(jget layer)" = "$CHILD" ]
calls=$(cat "$W/rot-count")
span=$(min_span 2)
check "...outlasting a password (at least $span s, a password 3 s) by asking the helper again ($calls answers)" \
    [ "$span" -gt 3 ] && [ "$calls" -ge 2 ]
check "...no password in any process's arguments or the output" \
    sh -c "[ $leaked -eq 0 ] && ! grep -qE '$SECRETS' '$W/out' '$W/err'"

# ---- a token server without OAuth2: the identity token goes by GET ----
start_token_server "$W/tok3.log" "$TD/key.pem" "$TD/cert.pem" '<token>' "$RT_SECRET"
T3=$TPORT
start_token_registry nooauth "http://127.0.0.1:$T3/token" "$TD/cert.pem"
RN=127.0.0.1:$PORT
config "{\"auths\": {\"$RN\": {\"identitytoken\": \"$RT_SECRET\"}}}"
run "$S" push base:v1 "$RN/vm:v1"
check "no OAuth2 (POST 404): the push exits 0" [ "$rc" -eq 0 ]
check "...after a POST answered 404, by the GET the token specification has" \
    sh -c "grep -q '^POST .* 404\$' '$W/tok3.log' && grep -q '^GET /token.* issued\$' '$W/tok3.log'"

# ---- Docker Hub's names, against a stand-in on this machine ----
# In a private mount and network namespace: a hosts file naming
# registry-1.docker.io and index.docker.io 127.0.0.1, a docker-registry
# there with TLS on port 443 (a certificate from a test CA that libcurl's CA
# bundle, bind-mounted over, trusts), and a token server as auth.docker.io.
# What happens in there is written to $W/hub and checked out here.
CA_BUNDLE=$(curl-config --ca 2>/dev/null)
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if [ "$(id -u)" -ne 0 ]; then
    skipped "Docker Hub names" "needs root (a private network namespace with a registry on port 443)"
elif ! command -v unshare >/dev/null || ! command -v ip >/dev/null || ! unshare --mount --net true 2>/dev/null; then
    skipped "Docker Hub names" "unshare --mount --net (util-linux) and ip (iproute2) are needed"
elif [ ! -f "$CA_BUNDLE" ]; then
    skipped "Docker Hub names" "libcurl's CA bundle ($CA_BUNDLE) is not a file to stand in for"
else
    H=$W/hub
    mkdir -p "$H/docker" "$H/docker-login"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$H/ca.key" -out "$H/ca.pem" -days 2 \
        -subj /CN=strata-test-ca >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -keyout "$H/tls.key" -out "$H/tls.csr" \
        -subj /CN=registry-1.docker.io >/dev/null 2>&1
    printf 'subjectAltName=DNS:registry-1.docker.io,DNS:index.docker.io,DNS:docker.io,DNS:auth.docker.io\n' >"$H/san"
    openssl x509 -req -in "$H/tls.csr" -CA "$H/ca.pem" -CAkey "$H/ca.key" -CAcreateserial \
        -days 2 -extfile "$H/san" -out "$H/tls.pem" >/dev/null 2>&1
    printf '127.0.0.1 localhost registry-1.docker.io index.docker.io docker.io\n127.0.0.2 auth.docker.io\n' >"$H/hosts"
    printf '{"auths": {"https://index.docker.io/v1/": {"auth": "%s"}}}\n' \
        "$(printf 'bob:b3arer-PW' | base64)" >"$H/docker/config.json"
    cat >"$H/config.yml" <<EOC
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $H/data}}
http: {addr: 127.0.0.1:443, secret: test-only-not-secret, tls: {certificate: $H/tls.pem, key: $H/tls.key}}
auth: {token: {realm: https://auth.docker.io/token, service: strata-test, issuer: strata-test-issuer, rootcertbundle: $TD/cert.pem}}
EOC
    cat >"$H/inside.sh" <<EOS
ip link set lo up || exit 1
mount --bind "$H/hosts" /etc/hosts || exit 1
mount --bind "$H/ca.pem" "$CA_BUNDLE" || exit 1
pids=
trap 'for p in \$pids; do kill \$p; wait \$p; done 2>/dev/null' EXIT
python3 "$HERE/token_server.py" 443 "$TD/key.pem" "$TD/cert.pem" bob 'b3arer-PW' \\
    --bind 127.0.0.2 --tls "$H/tls.pem:$H/tls.key" >"$H/token.log" 2>&1 &
pids="\$pids \$!"
docker-registry serve "$H/config.yml" >"$H/registry.log" 2>&1 &
pids="\$pids \$!"
for i in \$(seq 150); do
    curl -s -o /dev/null https://registry-1.docker.io/v2/ && curl -s -o /dev/null https://auth.docker.io/ && break
    sleep 0.1
done
export DOCKER_CONFIG=$H/docker
"$S" push base:v1 docker.io/acme/vm:v1 --json >"$H/push1.out" 2>"$H/push1.err"; echo \$? >"$H/push1.rc"
"$S" push base:child index.docker.io/vm:v1 --json >"$H/push2.out" 2>"$H/push2.err"; echo \$? >"$H/push2.rc"
"$S" ls --remote docker.io/library/vm >"$H/ls.out" 2>"$H/ls.err"; echo \$? >"$H/ls.rc"
STRATA_HOME=$H/store "$S" pull docker.io/vm:v1 >"$H/pull.out" 2>"$H/pull.err"; echo \$? >"$H/pull.rc"
STRATA_HOME=$H/store "$S" ls >"$H/tags.out" 2>&1
printf 'b3arer-PW\n' | DOCKER_CONFIG=$H/docker-login "$S" login docker.io -u bob --password-stdin >"$H/login.out" 2>&1
echo \$? >"$H/login.rc"
EOS
    rm -rf "$H/data" "$H"/*.rc
    unshare --mount --net bash "$H/inside.sh" >"$H/inside.log" 2>&1
    hub_ok() { [ "$(cat "$H/$1.rc" 2>/dev/null)" = 0 ]; }
    check "Docker Hub: push to docker.io/acme/vm:v1 exits 0" hub_ok push1
    check "...landing as acme/vm on registry-1.docker.io" \
        [ -d "$H/data/docker/registry/v2/repositories/acme/vm/_manifests/tags/v1" ]
    check "...with the credentials docker keeps under https://index.docker.io/v1/" \
        grep -q "scope=repository:acme/vm:pull,push.* user=bob issued" "$H/token.log"
    check "push to index.docker.io/vm:v1 exits 0" hub_ok push2
    check "...landing as library/vm (a one-part name, as docker reads it)" \
        [ -d "$H/data/docker/registry/v2/repositories/library/vm/_manifests/tags/v1" ]
    check "ls --remote docker.io/library/vm lists it" grep -q "^v1 .*${CHILD:0:12}" "$H/ls.out"
    check "pull docker.io/vm:v1 exits 0" hub_ok pull
    check "...tagged docker.io_library_vm:v1 here" grep -q "docker.io_library_vm:v1" "$H/tags.out"
    check "login docker.io exits 0" hub_ok login
    check "...keeping the credentials under https://index.docker.io/v1/ as docker does" python3 -c '
import json, sys
a = json.load(open(sys.argv[1]))["auths"]
assert list(a) == ["https://index.docker.io/v1/"], a' "$H/docker-login/config.json"
    hub_ok push1 || sed 's/^/    /' "$H/inside.log" "$H/push1.err" 2>/dev/null | head -20
fi

finish
