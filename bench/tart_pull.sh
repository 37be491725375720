#!/bin/bash
# Pulling a tart image against its floor (issue 21): a disk of
# BENCH_DISK_MIB (default 1536) made of random data, this machine's /usr/lib
# files (which compress like a system) and zeros, pushed by
# tests/tart_craft.py as tart would (512 MiB slices, Apple's LZ4 framing) to
# Debian's docker-registry on 127.0.0.1. Then:
#   floor: every disk layer downloaded, LZ4-decoded and SHA-256'd, 4 at a
#          time, by tart_craft.py floor (python3-lz4 and hashlib: C doing
#          the work), nothing written;
#   strata pull: into an empty store, the disk layers 4 at a time, every
#          layer checked against both digests, written sparse, then made a
#          layer (archive_import_tart: chunked, hashed, published).
# Reports both throughputs (disk bytes per second) and their ratio (goal:
# >= 0.8). Then a second tag, the same disk with a tenth of its data MiBs
# changed, is pushed and pulled: the disk space both tags take in strata's
# store (du) against what tart keeps for them (each tag's disk.img whole,
# holes only where a 4 MiB piece is all zeros, tart #970): goal 2x less.
# Sharing needs reflinks: put BENCH_DIR on XFS, btrfs or APFS.
# Usage: bash bench/tart_pull.sh   Env: STRATA (build/strata),
# BENCH_DIR (/var/tmp), BENCH_DISK_MIB.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
S=${STRATA:-$HERE/build/strata}
MIB=${BENCH_DISK_MIB:-1536}
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/strata-tart-bench.XXXXXX")
PY=python3
$PY -c 'import lz4.block' 2>/dev/null || PY=/usr/bin/python3
REG_PID=""
trap '[ -n "$REG_PID" ] && kill $REG_PID 2>/dev/null; [ -n "${BENCH_KEEP:-}" ] || rm -rf "$W"' EXIT
export STRATA_HOME=$W/store XDG_CACHE_HOME=$W/cache DOCKER_CONFIG=$W/docker

PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$W/reg.yml" <<EOC
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/reg}}
http: {addr: 127.0.0.1:$PORT, secret: bench-only}
EOC
docker-registry serve "$W/reg.yml" >"$W/reg.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/v2/" && break; sleep 0.1; done

# the disk: a quarter random, a third system files, the rest zeros
$PY - "$W/disk.img" "$MIB" <<'EOF'
import os, random, sys
path, mib = sys.argv[1], int(sys.argv[2])
rnd = random.Random(21)
with open(path, "wb") as f:
    f.truncate(mib << 20)
    f.seek(0)
    for _ in range(mib // 4):
        f.write(rnd.randbytes(1 << 20))
    want, files = (mib // 3) << 20, []
    for root, _, names in os.walk("/usr/lib"):
        for n in names:
            p = os.path.join(root, n)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append(p)
    files.sort()
    done = 0
    for p in files:
        if done >= want:
            break
        try:
            data = open(p, "rb").read(want - done)
        except OSError:
            continue
        f.write(data)
        done += len(data)
EOF
head -c 262144 /dev/urandom >"$W/nvram"
t0=$(date +%s.%N)
$PY "$HERE/tests/tart_craft.py" push "127.0.0.1:$PORT" bench/vm v1 --disk "$W/disk.img" --nvram "$W/nvram" >/dev/null
t1=$(date +%s.%N)
echo "pushed a ${MIB} MiB disk in $(echo "$t1 - $t0" | bc) s (tart_craft.py's encoder)" >&2

# floor, twice (the second warm, as strata's will be)
$PY "$HERE/tests/tart_craft.py" floor "127.0.0.1:$PORT" bench/vm v1 >/dev/null
read -r fbytes fsecs < <($PY "$HERE/tests/tart_craft.py" floor "127.0.0.1:$PORT" bench/vm v1)

"$S" init >/dev/null 2>&1 || true
/usr/bin/time -f '%e %U %S %M' -o "$W/time" "$S" pull "127.0.0.1:$PORT/bench/vm:v1" --json >"$W/pull.json" 2>"$W/pull.err" ||
    { echo "bench: strata pull failed: $(tail -2 "$W/pull.err")" >&2; exit 1; }
read -r psecs puser psys prss <"$W/time"
cmp -s "$W/disk.img" "$STRATA_HOME/layers/$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["layer"])' "$W/pull.json")/bundle/Disk.img" ||
    { echo "bench: the pulled disk differs from the source" >&2; exit 1; }
zbytes=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes_fetched"])' "$W/pull.json")

$PY - "$fbytes" "$fsecs" "$psecs" "$puser" "$psys" "$prss" "$zbytes" "$MIB" <<'EOF'
import sys, platform, os
fb, fs, ps, pu, psy, rss, zb, mib = sys.argv[1:]
fb, fs, ps, zb = int(fb), float(fs), float(ps), int(zb)
ft, pt = fb / fs / 1e6, fb / ps / 1e6
print(f"| what | value |\n|---|---|")
print(f"| disk | {mib} MiB ({fb} bytes), {zb} compressed bytes in 512 MiB slices |")
print(f"| floor (download + LZ4 decode + SHA-256, 4 at a time) | {fs:.2f} s, {ft:.0f} MB/s |")
print(f"| strata pull (into an empty store) | {ps:.2f} s ({pu} s user, {psy} s sys, {int(rss) // 1024} MiB peak RSS), {pt:.0f} MB/s |")
print(f"| ratio | {pt / ft:.2f}x of the floor's throughput (goal >= 0.8x) |")
print(f"| machine | {platform.system()} {platform.release()}, {os.cpu_count()} cores |")
EOF

# ---- a second tag sharing most of the first ----
$PY - "$W/disk.img" "$W/disk2.img" <<'EOF'
import random, shutil, sys
shutil.copyfile(sys.argv[1], sys.argv[2])
r = random.Random(22)
with open(sys.argv[2], "r+b") as f:
    data = []
    f.seek(0, 2)
    for m in range(f.tell() >> 20):
        f.seek(m << 20)
        if f.read(1 << 20).strip(b"\0"):
            data.append(m)
    for m in r.sample(data, len(data) // 10):
        f.seek(m << 20)
        f.write(r.randbytes(1 << 20))
EOF
$PY "$HERE/tests/tart_craft.py" push "127.0.0.1:$PORT" bench/vm v2 --disk "$W/disk2.img" --nvram "$W/nvram" >/dev/null
sync
# du counts a block shared by two files twice: what the filesystem gives out is its used space
used_kib() { df -k --output=used "$W" | tail -1 | tr -d ' '; }
k0=$(du -sk "$STRATA_HOME" | cut -f1)
k1=$(used_kib)
"$S" pull "127.0.0.1:$PORT/bench/vm:v2" --json >"$W/pull2.json" 2>"$W/pull2.err" ||
    { echo "bench: strata pull of the second tag failed: $(tail -2 "$W/pull2.err")" >&2; exit 1; }
sync
k2=$(used_kib)
cmp -s "$W/disk2.img" "$STRATA_HOME/layers/$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["layer"])' "$W/pull2.json")/bundle/Disk.img" ||
    { echo "bench: the second tag's pulled disk differs from its source" >&2; exit 1; }
$PY - "$W/disk.img" "$W/disk2.img" "$k0" "$((k2 - k1))" "$(stat -f -c %T "$W")" <<'EOF'
import sys
def tart_kib(path):  # what tart's pull leaves allocated: every 4 MiB piece not all zeros
    n = 0
    with open(path, "rb") as f:
        while True:
            piece = f.read(4 << 20)
            if not piece:
                return n
            if piece.strip(b"\0"):
                n += len(piece) // 1024
t = tart_kib(sys.argv[1]) + tart_kib(sys.argv[2])
k1, add = int(sys.argv[3]), int(sys.argv[4])
k2 = k1 + add
print(f"| two tags sharing 90% of their data, on {sys.argv[5]} | strata's store {k2 / 1024:.0f} MiB "
      f"(the first {k1 / 1024:.0f} MiB; the second pull took +{add / 1024:.0f} MiB of the filesystem); "
      f"tart {t / 1024:.0f} MiB; {t / k2:.2f}x less in strata (goal 2x) |")
EOF
