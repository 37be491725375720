#!/usr/bin/env bash
# bench/push_link.sh - a push over a slow link that cuts long requests (issue
# 20): a child layer of BENCH_CHILD_MIB (default 2048) MiB of incompressible
# new data on top of a pushed base, through tests/flaky_proxy.py "cut" in
# front of a local docker-registry: BENCH_RATE bytes/s for all uploads
# together (default 2500000: 20 Mbit/s) and every request cut after
# BENCH_CAP seconds (default 60; GHCR cuts at 600). Passes when the push
# completes and the bytes the proxy received for blobs are at most 1.1x the
# bytes of the blobs (nothing sent again but a cut chunk's part). Prints a
# markdown fragment for bench/RESULTS.md on stdout (progress on stderr) and
# saves it with the proxy's log under $BENCH_DIR/results/push-link-<ts>.*
#
# Usage: bash bench/push_link.sh           (see bench/README.md; no root)
#
# Environment:
#   STRATA          strata binary             (default <repo>/build/strata)
#   MKBUNDLE        test bundle maker         (default: beside STRATA)
#   BENCH_DIR       work area (needs ~5 GiB)  (default /var/tmp/strata-bench)
#   BENCH_CHILD_MIB, BENCH_RATE, BENCH_CAP    as above
#   BENCH_JOBS, BENCH_CHUNK_KIB   --jobs and --chunk-size for the push
#                                 (default: strata's own)
set -euo pipefail

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SELF_DIR/.." && pwd)
STRATA=${STRATA:-$REPO_DIR/build/strata}
MKBUNDLE=${MKBUNDLE:-$(dirname "$STRATA")/mkbundle}
BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench}
BENCH_CHILD_MIB=${BENCH_CHILD_MIB:-2048}
BENCH_RATE=${BENCH_RATE:-2500000}
BENCH_CAP=${BENCH_CAP:-60}
BENCH_JOBS=${BENCH_JOBS:-}
BENCH_CHUNK_KIB=${BENCH_CHUNK_KIB:-}
TS=$(date +%Y%m%d-%H%M%S)
RESULTS_DIR=$BENCH_DIR/results
OUT=$RESULTS_DIR/push-link-$TS
WORK=$BENCH_DIR/push-link

log() { printf '[push-link %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[push-link] ERROR: %s\n' "$*" >&2; exit 1; }

[ -x "$STRATA" ] || die "no strata binary at $STRATA (make, or set STRATA)"
[ -x "$MKBUNDLE" ] || die "no mkbundle at $MKBUNDLE (make builds it beside strata)"
command -v docker-registry >/dev/null || die "docker-registry is not installed"
mkdir -p "$RESULTS_DIR"
rm -rf "$WORK"
mkdir -p "$WORK"
export STRATA_HOME=$WORK/store XDG_CACHE_HOME=$WORK/cache DOCKER_CONFIG=$WORK/docker

PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 150); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }

# ---- registry, and the link in front of it ----
RPORT=$(free_port)
cat >"$WORK/registry.yml" <<EOC
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $WORK/registry}
  delete: {enabled: true}
  maintenance: {uploadpurging: {enabled: false}}
http:
  addr: 127.0.0.1:$RPORT
  secret: bench-only-not-secret
EOC
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
PIDS="$PIDS $!"
wait_http "http://127.0.0.1:$RPORT/v2/" || die "the registry did not start"
PPORT=$(free_port)
python3 "$REPO_DIR/tests/flaky_proxy.py" "$PPORT" "127.0.0.1:$RPORT" cut "$BENCH_RATE" "$BENCH_CAP" \
    >"$OUT.proxy.log" 2>&1 &
PIDS="$PIDS $!"
wait_http "http://127.0.0.1:$PPORT/v2/" || die "the proxy did not start"

# ---- a base pushed straight to the registry, a child of new data ----
log "base: 64 MiB of data in a 4 GiB disk, pushed without the link"
"$MKBUNDLE" "$WORK/base" --size 4G --data 0:64M:1 >/dev/null
"$STRATA" import "$WORK/base" base:v1 >/dev/null 2>&1
"$STRATA" push base:v1 "127.0.0.1:$RPORT/bench/link:base" >/dev/null 2>"$WORK/push-base.err" ||
    die "pushing the base failed: $(cat "$WORK/push-base.err")"
log "child: $BENCH_CHILD_MIB MiB of incompressible new data"
"$STRATA" clone base:v1 "$WORK/inst" >/dev/null 2>&1
"$MKBUNDLE" --write "$WORK/inst/Disk.img" "128M:${BENCH_CHILD_MIB}M:7" >/dev/null
"$STRATA" commit "$WORK/inst" -m child -t base:child >/dev/null 2>&1
rm -rf "$WORK/inst" "$WORK/base"

# ---- the push over the link ----
args=()
[ -n "$BENCH_JOBS" ] && args+=(--jobs "$BENCH_JOBS")
[ -n "$BENCH_CHUNK_KIB" ] && args+=(--chunk-size "$BENCH_CHUNK_KIB")
log "pushing the child through $BENCH_RATE B/s, requests cut at $BENCH_CAP s ${args[*]:-}"
start=$(date +%s.%N)
set +e
"$STRATA" push base:child "127.0.0.1:$PPORT/bench/link:child" --json "${args[@]}" >"$OUT.push.json" 2>"$OUT.push.err"
rc=$?
set -e
secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$start" "$(date +%s.%N)")
log "push exited $rc after $secs s"

set +e
python3 - "$OUT.proxy.log" "$OUT.push.json" "$rc" "$secs" "$BENCH_RATE" "$BENCH_CAP" "$BENCH_CHILD_MIB" \
    "${args[*]:-defaults}" >"$OUT.md" <<'PY'
import json, os, platform, sys, time
logf, pushf, rc, secs, rate, cap, child, args = sys.argv[1:]
rows = [l.split() for l in open(logf) if l[:1].isalpha()]
rows = [r for r in rows if len(r) > 5 and r[5].replace(".", "", 1).isdigit()]
blob = [r for r in rows if "/blobs/uploads/" in r[1] and r[0] in ("PATCH", "PUT")]
sent = sum(int(r[4]) for r in blob)
cut = [r for r in blob if r[2] == "cut"]
longest = max((float(r[5]) for r in rows), default=0)
patches = [r for r in blob if r[0] == "PATCH"]
try:
    res = json.load(open(pushf))
except ValueError:
    res = {}
up = res.get("bytes_uploaded", 0)
ratio = sent / up if up else float("inf")
ok = rc == "0" and ratio <= 1.1
print(f"### push over a {int(rate) * 8 / 1e6:g} Mbit/s link, requests cut at {cap} s — "
      f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
      f"{platform.release()}")
print()
print(f"`bash bench/push_link.sh` ({args}): a {child} MiB child of incompressible data on a pushed base, "
      f"through `tests/flaky_proxy.py cut` in front of docker-registry 2.8.")
print()
print("| what | value |")
print("|---|---|")
print(f"| push exit code | {rc} |")
print(f"| wall time | {secs} s ({up / float(secs) / 1e6:.2f} MB/s of blobs; link {int(rate) / 1e6:g} MB/s) |")
print(f"| blob bytes (`bytes_uploaded`) | {up} in {res.get('blobs_uploaded', '?')} blobs |")
print(f"| bytes the link carried for blobs | {sent} ({ratio:.4f}x) |")
print(f"| PATCH requests | {len(patches)} (sizes {min((int(r[4]) for r in patches), default=0)}-{max((int(r[4]) for r in patches), default=0)} B) |")
print(f"| requests cut | {len(cut)} |")
print(f"| longest request | {longest:.1f} s (cap {cap} s) |")
print(f"| verdict | {'PASS' if ok else 'FAIL'} (completes, sent <= 1.1x) |")
sys.exit(0 if ok else 1)
PY
verdict=$?
set -e
cat "$OUT.md"
log "saved $OUT.md, $OUT.proxy.log, $OUT.push.json"
exit "$verdict"
