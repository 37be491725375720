#!/bin/bash
# What a hostile manifest costs a pull: the chain of one small layer listed
# again and again until the manifest is 1 MB and 4 MB (tests/oci_craft.py
# repeat), pulled into a store that holds the layer already (where it cost
# most: every listed layer was local, and the chunk map was sorted again
# after each). Prints CPU (user, sys), wall time and peak memory per
# binary given, so two builds compare:
#   bash bench/pull_hostile.sh build/strata /tmp/old/build/strata
# Against Debian's docker-registry on 127.0.0.1 (a free port), in a
# scratch directory removed at the end.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 STRATA [STRATA...]" >&2; exit 2; }
W=$(mktemp -d)
PID=""
trap '[ -n "$PID" ] && kill $PID; rm -rf "$W"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$W/config.yml" <<EOC
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/data}}
http: {addr: 127.0.0.1:$PORT, secret: bench-only}
EOC
docker-registry serve "$W/config.yml" >"$W/log" 2>&1 &
PID=$!
for _ in $(seq 150); do curl -s -o /dev/null "http://127.0.0.1:$PORT/v2/" && break; sleep 0.1; done
R=127.0.0.1:$PORT
MK=$(dirname "$1")/mkbundle
"$MK" "$W/b" --size 64M --data 0:2M:1 >/dev/null
STRATA_HOME=$W/s0 "$1" import "$W/b" mac:v1 >/dev/null 2>&1
STRATA_HOME=$W/s0 "$1" push mac:v1 "$R/bench/mac:v1" >/dev/null 2>&1
for size in 1000000 4000000; do
    n=$(python3 "$HERE/../tests/oci_craft.py" repeat "$R" bench/mac v1 "rep$size" "$size")
    for s in "$@"; do
        rm -rf "$W/s1"
        STRATA_HOME=$W/s1 "$s" import "$W/b" mac:v1 >/dev/null 2>&1
        # builds before the guest check have no --any-host (and need none)
        flag=$("$s" help pull 2>&1 | grep -q -- --any-host && echo --any-host)
        STRATA_HOME=$W/s1 /usr/bin/time -o "$W/time" -f "%U %S %e %M" "$s" pull \
            "$R/bench/mac:rep$size" $flag >/dev/null 2>"$W/err"
        read -r u sy e m < <(tail -1 "$W/time")
        printf '%-40s manifest %7s B: user %6s s  sys %5s s  wall %6s s  peak %6s KB  %s\n' \
            "$s" "$n" "$u" "$sy" "$e" "$m" "$(grep -v '^strata: guest' "$W/err" | head -1 | cut -c1-80)"
    done
done
