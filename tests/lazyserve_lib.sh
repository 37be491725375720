# Shared by the suites that drive the lazy engine through tests/lazy_serve
# (lazy, lazy_profile, lazy_share), after lib.sh and registry_lib.sh.

# need_lazy_serve WHAT: the suite is skipped (and ends) unless a registry,
# qemu-io and nbdcopy can be had; sets LS (the tool), V (where its
# instances and sockets go) and M (a MiB)
need_lazy_serve() {
    need_registry "$1"
    if ! command -v qemu-io >/dev/null || ! command -v nbdcopy >/dev/null; then
        skipped "$1" "qemu-io or nbdcopy is not installed (apt-get install qemu-utils libnbd-bin)"
        finish
        exit
    fi
    LS=$B/tests/lazy_serve
    V=$W/vms
    M=$((1 << 20))
    mkdir -p "$V"
}
# cond SHELL-TEXT: a condition of several commands, for check
cond() { eval "$1"; }
# blob_gets LOG: blob GETs a proxy saw
blob_gets() { grep -c '^GET /v2/.*/blobs/' "$1"; }
# serve NAME REF STORE [ARGS...]: lazy_serve on $V/NAME.sock for instance
# $V/NAME with STRATA_HOME=STORE, in the background; waits for "ready" (or
# its exit); sets URI and SPID. Its stdout is $W/lz-NAME.out, stderr .err
serve() {
    local name=$1 ref=$2 store=$3
    shift 3
    # (the last run's output removed first: "ready" from it must not be
    # taken for this one's before the new process has truncated the file)
    rm -f "$V/$name.sock" "$W/lz-$name.out"
    STRATA_HOME=$store "$LS" "$V/$name.sock" "$ref" "$V/$name" "$@" >"$W/lz-$name.out" 2>"$W/lz-$name.err" &
    SPID=$!
    PIDS="$PIDS $SPID"
    while kill -0 "$SPID" 2>/dev/null && ! grep -q '^ready' "$W/lz-$name.out" 2>/dev/null; do sleep 0.05; done
    URI="nbd+unix:///?socket=$V/$name.sock"
}
# stop PID: SIGTERM, and wait for it
stop() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }
# wait_for FILE TEXT PID: until FILE holds TEXT, or PID has exited (each
# wait gives up after LIMIT seconds, so a missing line fails, not hangs)
LIMIT=${LIMIT:-300}
wait_for() {
    local end=$((SECONDS + LIMIT))
    while ! grep -q "$2" "$1" 2>/dev/null && kill -0 "$3" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.05; done
    grep -q "$2" "$1"
}
# qio URI CMDS...: qemu-io on the export, one -c per command
qio() { local u=$1; shift; local a=(); for c in "$@"; do a+=(-c "$c"); done; qemu-io -f raw "${a[@]}" "$u"; }
# same_bytes URI FILE: the whole export read with nbdcopy equals FILE
same_bytes() { rm -f "$W/copy.img"; nbdcopy "$1" "$W/copy.img" && cmp -s "$W/copy.img" "$2"; }
