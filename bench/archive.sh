#!/bin/bash
# Export/import against plain tar, on the same bundle and the same zstd
# level and threads:
#   export: strata export  vs  GNU tar -cS (pax, zstd -LEVEL -T THREADS)  vs  bsdtar --zstd (pax)
#   import: strata import  vs  GNU tar -xS  vs  bsdtar -x  of strata's own archive
# Usage: bash bench/archive.sh [BUNDLE]   (default: a synthetic 64 GiB disk holding
#   BENCH_RANDOM_MIB of random data and BENCH_TEXT_MIB of this machine's
#   /usr/lib files, which compress like a real system)
# Env: BENCH_LEVEL (3), BENCH_THREADS (every core), BENCH_DIR (/var/tmp).
# Prints a markdown table for bench/RESULTS.md. Caches are dropped before
# each run when root (cold reads); otherwise runs are warm, and it says so.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
S=${STRATA:-$HERE/build/strata}
MK=${MKBUNDLE:-$HERE/build/mkbundle}
LEVEL=${BENCH_LEVEL:-3}
THREADS=${BENCH_THREADS:-$(nproc)}
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/strata-archive-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
export STRATA_HOME=$W/store

cold() { if [ "$(id -u)" = 0 ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi; }
timed() { # label cmd...: "seconds maxrss_kib"
    local label=$1; shift
    cold
    /usr/bin/time -f '%e %M' -o "$W/time" "$@" >/dev/null 2>"$W/cmd.err" ||
        { echo "bench: $label failed: $(tail -2 "$W/cmd.err")" >&2; exit 1; }
    cat "$W/time"
}

if [ $# -ge 1 ]; then
    B=$1
    desc="bundle $B"
else
    B=$W/synth.bundle
    RND=${BENCH_RANDOM_MIB:-400} TXT=${BENCH_TEXT_MIB:-400}
    args=()
    for ((i = 0; i < RND / 16; i++)); do args+=(--data "$((i * 150 + 7))M:16M:$i"); done
    "$MK" "$B" --size 64G "${args[@]}"
    # compressible data: system files, packed into 16 MiB pieces across the disk
    find /usr/lib /usr/share -type f -size +8k 2>/dev/null | head -20000 | xargs cat 2>/dev/null |
        head -c $((TXT << 20)) >"$W/text" || true # head ends the pipe early: SIGPIPE upstream
    TXT=$(( $(stat -c %s "$W/text") >> 20 ))
    for ((i = 0; i < TXT / 16; i++)); do
        dd if="$W/text" of="$B/Disk.img" bs=1M count=16 skip=$((i * 16)) seek=$((i * 1500 + 40000)) \
            conv=notrunc,sparse status=none
    done
    rm -f "$W/text"
    desc="synthetic 64 GiB Disk.img: ${RND} MiB random + ${TXT} MiB of /usr files"
fi
data_mib=$(( $(du -sk "$B" | cut -f1) / 1024 ))
"$S" import "$B" base >/dev/null 2>&1

read -r s_exp s_exp_kb < <(timed strata "$S" export base "$W/s.tar.zst" --level "$LEVEL" --threads "$THREADS")
read -r g_exp g_exp_kb < <(timed gnutar tar -C "$(dirname "$B")" --format=pax -cSf "$W/g.tar.zst" \
    -I "zstd -$LEVEL -T$THREADS" "$(basename "$B")")
read -r b_exp b_exp_kb < <(timed bsdtar bsdtar -C "$(dirname "$B")" --format pax --zstd \
    --options "zstd:compression-level=$LEVEL,zstd:threads=$THREADS" -cf "$W/b.tar.zst" "$(basename "$B")")
sz() { stat -c %s "$1"; }

rm -rf "$STRATA_HOME"
read -r s_imp s_imp_kb < <(timed strata "$S" import "$W/s.tar.zst")
mkdir -p "$W/x1" "$W/x2"
read -r g_imp g_imp_kb < <(timed gnutar tar -C "$W/x1" -xSf "$W/s.tar.zst" -I zstd)
read -r b_imp b_imp_kb < <(timed bsdtar bsdtar -C "$W/x2" -xf "$W/s.tar.zst")

mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
ratio() { awk -v d="$data_mib" -v b="$1" 'BEGIN {printf "%.2f", d * 1048576 / b}'; }
cat <<EOF
#### Archives: $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r), $(df -PT "$W" | awk 'NR==2 {print $2}')$([ "$(id -u)" = 0 ] && echo ", cold caches" || echo ", warm caches (not root)")

$desc; allocated data $data_mib MiB; zstd level $LEVEL, $THREADS threads.

| | strata | GNU tar 1.34 + zstd | bsdtar $(bsdtar --version | awk '{print $2}') |
|---|---|---|---|
| export time | ${s_exp} s (RSS $((s_exp_kb / 1024)) MiB) | ${g_exp} s | ${b_exp} s |
| archive size (ratio) | $(mib "$(sz "$W/s.tar.zst")") ($(ratio "$(sz "$W/s.tar.zst")")) | $(mib "$(sz "$W/g.tar.zst")") ($(ratio "$(sz "$W/g.tar.zst")")) | $(mib "$(sz "$W/b.tar.zst")") ($(ratio "$(sz "$W/b.tar.zst")")) |
| import / extract of strata's archive | ${s_imp} s, every chunk verified (RSS $((s_imp_kb / 1024)) MiB) | ${g_imp} s | ${b_imp} s |

EOF
