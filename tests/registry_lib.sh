# Shared by the registry suites (remote.sh and the registry_*.sh files):
# real docker-registry instances on free ports, python helpers beside them,
# every process stopped by the trap whatever happens. Source after lib.sh.
HERE=$(cd "$(dirname "$0")" && pwd)
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; }
trap cleanup EXIT
trap 'exit 1' INT TERM

# need_registry: skip the whole suite, visibly, without docker-registry
need_registry() {
    if ! command -v docker-registry >/dev/null; then
        skipped "$1" "docker-registry is not installed (apt-get install docker-registry)"
        finish
        exit
    fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_http URL: until something answers (any status), at most 15 s
wait_http() {
    for _ in $(seq 150); do
        curl -sk -o /dev/null "$1" && return 0
        sleep 0.1
    done
    return 1
}

# start_registry NAME [EXTRA-YAML]: a registry in $W/reg-NAME; sets PORT.
# EXTRA-YAML is added at the top level (auth:, proxy:, ...).
start_registry() {
    local dir=$W/reg-$1
    mkdir -p "$dir"
    PORT=$(free_port)
    cat >"$dir/config.yml" <<EOC
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $dir/data}
  delete: {enabled: true}
  maintenance: {uploadpurging: {enabled: false}}
http:
  addr: 127.0.0.1:$PORT
  secret: test-only-not-secret
${2:-}
EOC
    docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
    PIDS="$PIDS $!"
    wait_http "http://127.0.0.1:$PORT/v2/" || { echo "registry $1 did not start:"; cat "$dir/log"; }
}

# start_proxy NAME UPSTREAM MODE [ARG...]: tests/flaky_proxy.py in front of
# UPSTREAM (host:port); sets PPORT and PROXY_PID; its log is $W/proxy-NAME.log
start_proxy() {
    PPORT=$(free_port)
    python3 "$HERE/flaky_proxy.py" "$PPORT" "$2" "$3" "${@:4}" >"$W/proxy-$1.log" 2>&1 &
    PROXY_PID=$!
    PIDS="$PIDS $!"
    wait_http "http://127.0.0.1:$PPORT/v2/"
}

# jget KEY: a field of the JSON object in $W/out
jget() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$W/out" "$1"; }

# start_token_server LOG ARGS...: tests/token_server.py on a free port, ARGS
# after the port (KEY CERT USER PASSWORD [options]); sets TPORT
start_token_server() {
    local log=$1
    shift
    TPORT=$(free_port)
    python3 "$HERE/token_server.py" "$TPORT" "$@" >"$log" 2>&1 &
    PIDS="$PIDS $!"
    wait_http "http://127.0.0.1:$TPORT/token"
}

# start_token_registry NAME REALM CERT: a registry taking bearer tokens from
# REALM, signed with CERT's key (token_server.py's service and issuer); sets PORT
start_token_registry() {
    start_registry "$1" "auth:
  token:
    realm: $2
    service: strata-test
    issuer: strata-test-issuer
    rootcertbundle: $3"
}

# base_and_child SIZE "BASE_DATA..." "CHILD_WRITES...": base:v1 imported from a
# bundle of SIZE with mkbundle --data for each BASE_DATA, and base:child
# committed from a clone with CHILD_WRITES written (mkbundle --write);
# sets BASE and CHILD
base_and_child() {
    local data="" d
    for d in $2; do data="$data --data $d"; done
    # shellcheck disable=SC2086 # the --data options are words
    "$MK" "$W/b1" --size "$1" $data >/dev/null
    BASE=$("$S" import "$W/b1" base:v1 2>/dev/null)
    "$S" clone base:v1 "$W/inst" 2>/dev/null
    # shellcheck disable=SC2086
    "$MK" --write "$W/inst/Disk.img" $3
    CHILD=$("$S" commit "$W/inst" -m child -t base:child 2>/dev/null)
    check "a base and a child layer were made" [ -n "$BASE" ] && [ -n "$CHILD" ]
}
