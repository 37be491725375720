# Shared by the shell tests: counters, assertions and store snapshots.
# Each test script is run as: bash SCRIPT BUILD_DIR WORK_DIR FS_NAME
# and ends with a line "N passed, N failed, N skipped" (run.sh adds them up).
set -u
B=$(cd "$1" && pwd)
W=$2
FS=$3
S=$B/strata
MK=$B/mkbundle
mkdir -p "$W"
W=$(cd "$W" && pwd)
# every suite removes "$W"/... patterns: an empty W (the directory could
# not be made, as on a full disk) would turn them on / itself
case $W in "" | /) echo "lib.sh: no work directory '$2' (disk full?)" >&2; exit 1 ;; esac
pass=0 fail=0 skip=0

ok() { pass=$((pass + 1)); echo "PASS [$FS] $1"; }
bad() { fail=$((fail + 1)); echo "FAIL [$FS] $1"; [ -s "$W/err" ] && sed 's/^/    stderr: /' "$W/err" | head -5; return 0; }
skipped() { skip=$((skip + 1)); echo "SKIP [$FS] $1: $2"; }
finish() { echo "$pass passed, $fail failed, $skip skipped"; [ "$fail" -eq 0 ]; }

# run CMD...: stdout in $W/out, stderr in $W/err, exit code in $rc
run() { "$@" >"$W/out" 2>"$W/err"; rc=$?; }

# check NAME CONDITION-COMMAND...: pass if the command succeeds
check() { local name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }

# expect_error NAME CODE TEXT CMD...: CMD fails with CODE, one stderr line containing TEXT
expect_error() {
    local name=$1 code=$2 text=$3; shift 3
    run "$@"
    if [ "$rc" -ne "$code" ]; then bad "$name (exit $rc, wanted $code)"
    elif ! grep -qF -- "$text" "$W/err"; then bad "$name (no '$text' in stderr)"
    elif [ "$(wc -l <"$W/err")" -ne 1 ]; then bad "$name (stderr is not one line)"
    else ok "$name"; fi
}

# Everything a store holds that a failed command must not change (the lock
# file and abandoned temporary work aside).
snapshot() {
    # layer files are immutable and fsck re-hashes them: list them with sizes
    # here, and hash only the small files that say what the store holds
    (cd "$STRATA_HOME" && find . -path ./tmp -prune -o -path ./lock -prune -o -printf '%p %s %m\n' | LC_ALL=C sort &&
        find refs instances layers/*/manifest layers/*/info -type f -exec sha256sum {} + 2>/dev/null | LC_ALL=C sort) | sha256sum
}

# A content digest of every materialized layer, to prove committed layers
# survive crashes byte for byte.
layer_digests() {
    # mkbundle --digest reads only data extents; holes and zeros hash alike
    (cd "$STRATA_HOME/layers" && for l in *; do [ -d "$l" ] && (cd "$l" && find . -type f -exec "$MK" --digest {} + | LC_ALL=C sort | sed "s|^|$l |"); done) 2>/dev/null
}

tmp_empty() { # lists what is left, for the failure's report
    local left
    left=$(ls -A "$STRATA_HOME/tmp" 2>/dev/null)
    [ -z "$left" ] && return 0
    echo "$left" | sed 's/^/    left in tmp: /'
    return 1
}

is_json() { python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null; }

allocated_kib() { du -sk "$1" | cut -f1; }

# Every qemu a booting script starts carries a mark, STRATA_TEST_BOOT in its
# environment (strata passes it on), so the script's exit can end any that
# would outlive it: call mark_qemus once W is set, kill_marked_qemus on exit.
mark_qemus() { export STRATA_TEST_BOOT="$W.$$"; }
kill_marked_qemus() {
    local e pid
    for e in /proc/[0-9]*/environ; do
        pid=${e#/proc/}; pid=${pid%/environ}
        case $(cat "/proc/$pid/comm" 2>/dev/null) in qemu-system*) ;; *) continue ;; esac
        tr '\0' '\n' 2>/dev/null <"$e" | grep -qxF "STRATA_TEST_BOOT=$STRATA_TEST_BOOT" && kill -9 "$pid"
    done
}

# For the booting suites: wait until FILE has a line matching REGEX, for at
# most SECONDS; and where an instance's serial console is logged.
wait_for() { # FILE REGEX SECONDS
    local i
    for ((i = 0; i < $3 * 5; i++)); do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}
console() { echo "$STRATA_HOME/vms/$1/.console.log"; }
