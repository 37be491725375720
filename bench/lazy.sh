#!/bin/bash
# Lazy run benchmark (issue 22): how soon a registry image answers ssh.
# The Debian 12 test system (tests/guest/mkdebian.sh: systemd, networkd,
# sshd, its kernel booted directly, ext4 on a 16 GiB sparse disk) plus a file
# of random data the boot never reads (LAZY_EXTRA_GIB, default "1 4": one run
# each), imported, pushed to a local docker-registry, and served through
# tests/flaky_proxy.py's "wan" mode: 200 Mbit/s shared by all connections,
# 20 ms before each request (LAZY_RATE_MBIT, LAZY_LATENCY_MS). For each size,
# under qemu (LAZY_ACCEL, default tcg; 2 vCPUs, 1 GiB):
#   local      cold boot with the layer in the store
#   pull+boot  `strata run HOST/REPO:TAG` into an empty store: the full pull,
#              then the boot (today's path, and every peer's)
#   lazy       `strata run HOST/REPO:TAG --lazy` into an empty store
#   lazy+prof  the same, after the first lazy run's boot profile was pushed
# Each row: seconds from `strata run` to the guest's ready marker on ttyS0
# and to its first ssh banner, and the bytes the proxy sent before the
# banner. A lazy row says "not built yet" while `strata run --lazy` is refused.
# Prints markdown for bench/RESULTS.md. Needs root once (mkdebian.sh's
# debootstrap; cached after), docker-registry and debugfs.
# Usage: bash bench/lazy.sh   (STRATA=path/to/strata, default build/strata)
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
S=${STRATA:-$HERE/build/strata}
SIZES=${LAZY_EXTRA_GIB:-1 4}
RATE=$(( ${LAZY_RATE_MBIT:-200} * 1000000 / 8 ))
LATENCY=${LAZY_LATENCY_MS:-20}
ACCEL=${LAZY_ACCEL:-tcg}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/strata-bench-lazy.XXXXXX")
export DOCKER_CONFIG=$W/docker XDG_CACHE_HOME=$W/cache STRATA_TEST_BOOT=$W
PIDS=""
log() { echo "lazy.sh: $*" >&2; }
stop_all() {
    local home
    for home in "$W"/store-*; do
        [ -d "$home/vms" ] || continue
        for vm in "$home"/vms/*; do
            [ -d "$vm" ] && STRATA_HOME=$home "$S" stop "$(basename "$vm")" --timeout 5 >/dev/null 2>&1 || true
        done
    done
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
}
trap 'stop_all; rm -rf "$W"' EXIT
for c in docker-registry debugfs qemu-system-x86_64 python3; do
    command -v "$c" >/dev/null || { log "$c is not installed"; exit 1; }
done
[ -x "$S" ] || { log "no strata at $S (make, or STRATA=...)"; exit 1; }

bash "$HERE/tests/guest/mkdebian.sh" "$W/deb" >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 150); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }

REG=$(free_port)
mkdir -p "$W/reg"
cat >"$W/reg/config.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/reg/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$REG, secret: bench-only}
EOF
docker-registry serve "$W/reg/config.yml" >"$W/reg/log" 2>&1 &
PIDS="$PIDS $!"
wait_http "http://127.0.0.1:$REG/v2/"
PROXY=$(free_port)
python3 "$HERE/tests/flaky_proxy.py" "$PROXY" "127.0.0.1:$REG" wan "$RATE" "$LATENCY" >"$W/proxy.log" 2>&1 &
PIDS="$PIDS $!"
wait_http "http://127.0.0.1:$PROXY/v2/"

# until the guest's first ssh banner: polled, as a client would (QEMU's
# forwarded port accepts before the guest listens)
banner_at() { # HOME NAME: unix time of the first banner line
    local addr
    addr=$(STRATA_HOME=$1 "$S" ip "$2" --wait 900)
    python3 - "${addr%:*}" "${addr##*:}" <<'EOF'
import socket, sys, time
deadline = time.time() + 900
while time.time() < deadline:
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
        line = s.makefile("rb").readline()
        if line.startswith(b"SSH-"):
            print(f"{time.time():.3f}"); sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
EOF
}
marker_at() { # CONSOLE: unix time the ready marker appeared (polled)
    while ! grep -q '^STRATA-DEBIAN-READY' "$1" 2>/dev/null; do sleep 0.2; done
    date +%s.%N
}
bytes_between() { # T0 T: bytes the proxy sent in answers begun after T0 and ended by T
    awk -v a="$1" -v t="$2" '$3 == "wan" && $6 >= a && $7 <= t { n += $5 } END { print n + 0 }' "$W/proxy.log"
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# one row: `strata run ARGS` in store HOME as instance NAME; "ready banner bytes"
# or "refused: WHY" when run exits before the guest is ready
measure() { # HOME NAME ARGS...
    local home=$1 name=$2; shift 2
    local t0 pid
    t0=$(date +%s.%N)
    STRATA_HOME=$home "$S" run "$@" --name "$name" --driver qemu --accel "$ACCEL" >"$W/run-$name.log" 2>&1 &
    pid=$!
    while [ ! -s "$home/vms/$name/.console.log" ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "refused: $(tail -1 "$W/run-$name.log")"; return
        fi
        sleep 0.2
    done
    local tm tb
    tm=$(marker_at "$home/vms/$name/.console.log")
    tb=$(banner_at "$home" "$name")
    echo "$(secs "$t0" "$tm") $(secs "$t0" "$tb") $(bytes_between "$t0" "$tb")"
    STRATA_HOME=$home "$S" stop "$name" --timeout 30 >/dev/null 2>&1 || true
    wait "$pid" 2>/dev/null || true
}

row() { # LABEL RESULT NOTE
    local label=$1 r=$2
    case $r in
    refused:*) printf '| %s | not built yet | | | %s |\n' "$label" "${r#refused: }" ;;
    *) set -- $r; printf '| %s | %s | %s | %s | %s |\n' "$label" "$1" "$2" "$(mib "$3")" "${4:-}" ;;
    esac
}

echo "bench/lazy.sh, $(date -u +%Y-%m-%d) on $(uname -n) ($(nproc) cores, $(uname -m)), QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}'), accel $ACCEL;"
echo "link $((RATE * 8 / 1000000)) Mbit/s, ${LATENCY} ms per request; $("$S" --version 2>/dev/null | head -1)"
echo
for g in $SIZES; do
    log "+$g GiB: the image"
    rm -rf "$W/img"
    mkdir -p "$W/img"
    for f in vmlinuz initrd.img Settings.json; do cp "$W/deb/$f" "$W/img/"; done
    cp --sparse=always "$W/deb/Disk.img" "$W/img/Disk.img"
    head -c "${g}G" /dev/urandom >"$W/bulk"
    debugfs -w -R "write $W/bulk /bulk.bin" "$W/img/Disk.img" >/dev/null 2>&1
    rm -f "$W/bulk"
    home=$W/store-local-$g
    layer=$(STRATA_HOME=$home "$S" import "$W/img" deb)
    alloc=$(du -k "$W/img/Disk.img" | cut -f1)
    log "+$g GiB: push (layer ${layer:0:12})"
    STRATA_HOME=$home "$S" push deb "127.0.0.1:$REG/bench/deb:g$g" --json >"$W/push-$g.json"
    blobs=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes_uploaded"])' "$W/push-$g.json")
    ref=127.0.0.1:$PROXY/bench/deb:g$g

    echo "### +$g GiB of data the boot never reads"
    echo
    echo "Disk.img: $(mib $((alloc * 1024))) MiB allocated; registry blobs $(mib "$blobs") MiB."
    echo
    echo "| run | ready marker (s) | ssh banner (s) | MiB fetched before the banner | note |"
    echo "|---|---|---|---|---|"
    log "+$g GiB: local cold boot"
    row "local cold boot (layer present)" "$(measure "$home" local deb)"
    log "+$g GiB: full pull, then boot"
    row "full pull, then boot" "$(measure "$W/store-pull-$g" pull "$ref")"
    log "+$g GiB: lazy, no profile"
    lazy=$(measure "$W/store-lazy-$g" lazy "$ref" --lazy)
    row "lazy, no profile" "$lazy"
    case $lazy in
    refused:*) row "lazy, with a profile" "$lazy" ;;
    *)  # the first lazy run recorded the profile beside the layer; push it with the layer
        STRATA_HOME=$W/store-lazy-$g "$S" push "$layer" "127.0.0.1:$REG/bench/deb:g$g" >/dev/null 2>&1 || true
        row "lazy, with a profile" "$(measure "$W/store-prof-$g" prof "$ref" --lazy)" ;;
    esac
    echo
    rm -rf "$W"/store-*-"$g" "$W/img"
done
