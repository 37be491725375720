#!/bin/sh
# Run every test against a build directory: the cmocka unit tests, the CLI
# tests and the crash tests, on the plain filesystem (ext4 here) and, when
# root on Linux, on XFS (reflink=1) and btrfs loop mounts made for the run.
# Where a filesystem can't be had, it says why and counts a skip.
# Ends with "N passed, N failed, N skipped"; exits 1 if anything failed.
set -u
B=${1:-build}
ROOT=$(mktemp -d "${TMPDIR:-/var/tmp}/strata-test.XXXXXX")
MOUNTS=""
total_pass=0 total_fail=0 total_skip=0

cleanup() {
    # interrupted: no qemu of this run may outlive it (the normal end checks)
    [ -d /proc/self ] && kill -9 $(leftover_qemus) 2>/dev/null
    for m in $MOUNTS; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
    rm -rf "$ROOT"
}
trap cleanup EXIT INT TERM

# Every process this run starts carries this in its environment, so a qemu
# that a test left running is found (and killed) at the end.
STRATA_TEST_RUN=$ROOT
export STRATA_TEST_RUN
leftover_qemus() { # pids of qemu processes started by this run
    for e in /proc/[0-9]*/environ; do
        pid=${e#/proc/}; pid=${pid%/environ}
        case $(cat "/proc/$pid/comm" 2>/dev/null) in qemu-system*) ;; *) continue ;; esac
        tr '\0' '\n' 2>/dev/null <"$e" | grep -qxF "STRATA_TEST_RUN=$ROOT" && echo "$pid"
    done
}

add_counts() { # from a log's "N passed, N failed, N skipped" line
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$1" | tail -1)
    if [ -z "$line" ]; then
        echo "FAIL $2: no result line (crashed?)"; total_fail=$((total_fail + 1)); return
    fi
    set -- $line
    total_pass=$((total_pass + $1)); total_fail=$((total_fail + $3)); total_skip=$((total_skip + $5))
}

unit() { # cmocka binary, fs name, dir
    log=$ROOT/unit.log
    mkdir -p "$3"
    TEST_DIR=$3 "$1" >"$log" 2>&1
    code=$?
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
    s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
    p=${p:-0}; f=${f:-0}; s=${s:-0}
    if [ "$code" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    [ "$f" -ne 0 ] && cat "$log"
    # each skip with the reason the test printed just before it
    [ "$s" -ne 0 ] && grep -B1 -E '^\[  SKIPPED \] test_' "$log" | grep -vE '^\[|^--' | sed "s/^/SKIP [$2] $(basename "$1"): /"
    echo "$(basename "$1") [$2]: $p passed, $f failed, $s skipped"
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f)); total_skip=$((total_skip + s))
}

suite() { # fs name, dir
    echo "== $1: $2"
    unit "$B/tests/test_clone" "$1" "$2/unit-clone"
    unit "$B/tests/test_store" "$1" "$2/unit-store"
    unit "$B/tests/test_boot" "$1" "$2/unit-boot"
    unit "$B/tests/test_vz" "$1" "$2/unit-vz"
    for t in cli crash; do
        bash "$(dirname "$0")/$t.sh" "$B" "$2/$t" "$1" >"$ROOT/$t.log" 2>&1
        grep -E '^(FAIL|SKIP)|^    ' "$ROOT/$t.log"
        add_counts "$ROOT/$t.log" "$t.sh [$1]"
        tail -1 "$ROOT/$t.log" | sed "s/^/$t.sh [$1]: /"
    done
}

loop_fs() { # fs name, mkfs command...
    name=$1; shift
    if [ "$(id -u)" != 0 ] || [ "$(uname)" != Linux ]; then
        echo "SKIP $name: loop mounts need root on Linux; its tests did not run"
        total_skip=$((total_skip + 1)); return
    fi
    if ! command -v "$1" >/dev/null; then
        echo "SKIP $name: $1 is not installed; its tests did not run"
        total_skip=$((total_skip + 1)); return
    fi
    img=$ROOT/$name.img mnt=$ROOT/$name
    mkdir -p "$mnt"
    truncate -s 3G "$img"
    if ! "$@" "$img" >"$ROOT/mkfs.log" 2>&1 || ! mount -o loop "$img" "$mnt" 2>>"$ROOT/mkfs.log"; then
        echo "SKIP $name: could not make or mount a loop filesystem: $(tail -1 "$ROOT/mkfs.log")"
        total_skip=$((total_skip + 1)); return
    fi
    MOUNTS="$MOUNTS $mnt"
    suite "$name" "$mnt/t"
    umount "$mnt" && MOUNTS=$(echo "$MOUNTS" | sed "s| $mnt||")
    rm -f "$img"
}

plain=$(df -PT "$ROOT" 2>/dev/null | awk 'NR==2 {print $2}')
suite "${plain:-plain}" "$ROOT/plain"

# booting is independent of the filesystem (and slow under emulation): once
if [ -n "${STRATA_SKIP_BOOT:-}" ]; then
    echo "SKIP boot.sh: STRATA_SKIP_BOOT is set (the sanitizer pass: the plain pass boots)"
    total_skip=$((total_skip + 1))
else
    echo "== boot (qemu)"
    bash "$(dirname "$0")/boot.sh" "$B" "$ROOT/boot" "${plain:-plain}" >"$ROOT/boot.log" 2>&1
    grep -E '^(FAIL|SKIP)|^    |^timing' "$ROOT/boot.log"
    add_counts "$ROOT/boot.log" "boot.sh"
    tail -1 "$ROOT/boot.log" | sed "s/^/boot.sh: /"
fi
loop_fs xfs mkfs.xfs -q -f -m reflink=1
loop_fs btrfs mkfs.btrfs -q -f

if [ -d /proc/self ]; then
    left=$(leftover_qemus)
    if [ -n "$left" ]; then
        echo "FAIL a test left qemu running (pid $(echo $left)); killed now"
        kill -9 $left 2>/dev/null
        total_fail=$((total_fail + 1))
    fi
fi
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
