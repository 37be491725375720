#!/bin/bash
# Boot benchmark: time from `strata run --resume` to the guest's first
# heartbeat against a cold boot to its first heartbeat, same guest (the test
# guest of tests/guest/mkguest.sh), same run, qemu driver. Prints a markdown
# table for bench/RESULTS.md.  Usage: bash bench/boot.sh [ROUNDS]
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
S=${STRATA:-$HERE/build/strata}
ROUNDS=${1:-3}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/strata-bench-boot.XXXXXX")
export STRATA_HOME=$W/store
trap 'pkill -f "$STRATA_HOME/vms" 2>/dev/null; rm -rf "$W"' EXIT
GUEST=${STRATA_GUEST_DIR:-/var/tmp/strata-guest}
bash "$HERE/tests/guest/mkguest.sh" "$GUEST" >/dev/null 2>&1
"$S" import "$GUEST/guest.bundle" bench >/dev/null 2>&1

now() { date +%s.%N; }
# start NAME ARGS...: run in the background, print seconds to the first heartbeat
time_to_beat() {
    local name=$1; shift
    local t0; t0=$(now)
    "$S" run "$@" --name "$name" >/dev/null 2>&1 &
    local log=$STRATA_HOME/vms/$name/.console.log i
    for ((i = 0; i < 3000; i++)); do
        grep -q '^HEARTBEAT' "$log" 2>/dev/null && break
        sleep 0.05
    done
    awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'
}

cold=() resume=()
time_to_beat warmup bench >/dev/null # the KVM probe's answer is cached by this
sleep 2
"$S" suspend warmup -t bench:warm >/dev/null
for ((r = 1; r <= ROUNDS; r++)); do
    cold+=("$(time_to_beat c$r bench)")
    "$S" stop c$r --timeout 1 >/dev/null
    resume+=("$(time_to_beat w$r bench:warm --resume)")
    "$S" stop w$r --timeout 1 >/dev/null
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mc=$(median "${cold[@]}") mr=$(median "${resume[@]}")
echo "| measure (qemu driver, TCG, $ROUNDS rounds, median) | seconds |"
echo "|---|---|"
echo "| cold boot to first heartbeat | $mc (${cold[*]}) |"
echo "| resume to first heartbeat | $mr (${resume[*]}) |"
echo "| resume is faster by | $(awk -v a="$mc" -v b="$mr" 'BEGIN {printf "%.1fx", a / b}') |"
echo
echo "$(date -u +%F), $(uname -srm), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
