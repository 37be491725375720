#!/bin/sh
# Run the tests against a build directory: the cmocka unit tests, the CLI
# tests and the crash tests, on the plain filesystem (ext4 here) and, when
# root on Linux, on XFS (reflink=1) and btrfs loop mounts made for the run,
# and the CLI tests once more as an unprivileged user (user_suite).
# Where a filesystem can't be had, it says why and counts a skip.
# Ends with "N passed, N failed, N skipped"; exits 1 if anything failed.
#
# sh tests/run.sh [BUILD] [--quick] [--only SUITE[,SUITE...]] [--fs FS]
#   no option     everything (make test, before its sanitizer pass)
#   --quick       the quick loop (make test-unit): the unit tests, cli, crash,
#                 vzsim, vzsdk and nbd on the plain filesystem; no guest boots, no
#                 loop mounts (STRATA_SKIP_LOOP), no registries, no user pass
#   --only LIST   only these suites (make test-suite SUITE=LIST):
#                   unit (the nine below) or test_clone test_store test_boot
#                   test_vz test_receive test_remote test_reach
#                   test_tart_encode test_tart; cli crash
#                   archive (on each filesystem); user (cli and crash as an
#                   unprivileged user); vzsim vzsdk vzcreate apple boot reach
#                   remote registry_http registry_auth registry_upload
#                   registry_limits registry_pull tart_push tart_pull
#                   tart_cli nbd lazy lazy_profile create devices lazy_boot
#                   powercut lazy_run lazy_share lazy_debian
#                   (once, plain filesystem)
#   --fs FS       one filesystem's pass (make test-fs FS=FS): plain (or its
#                 type), or ext4, xfs, btrfs on a loop mount (root only); the
#                 suites that run once belong to the plain pass
set -u
unset RUN_AS SHOW
UNIT_SUITES="test_clone test_store test_boot test_vz test_receive test_remote test_reach test_tart_encode test_tart"
FS_SUITES="cli crash archive"
ONCE_SUITES="vzsim vzsdk vzcreate apple boot reach remote registry_http registry_auth registry_upload registry_limits registry_pull tart_push tart_pull tart_cli nbd lazy lazy_profile create devices lazy_boot powercut lazy_run lazy_share lazy_debian"
QUICK_SUITES="unit,cli,crash,vzsim,vzsdk,nbd"
usage() { sed -n 's/^# \{0,1\}//; 9,27p' "$0" >&2; exit 2; }
B=build QUICK="" ONLY="" FS_ONLY=""
case ${1:-} in -* | "") ;; *) B=$1; shift ;; esac
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --only) [ $# -ge 2 ] || usage; ONLY=$2; shift ;;
    --only=*) ONLY=${1#--only=} ;;
    --fs) [ $# -ge 2 ] || usage; FS_ONLY=$2; shift ;;
    --fs=*) FS_ONLY=${1#--fs=} ;;
    *) echo "run.sh: unknown argument '$1'" >&2; usage ;;
    esac
    shift
done
if [ -n "$QUICK" ]; then
    ONLY=${ONLY:-$QUICK_SUITES} FS_ONLY=${FS_ONLY:-plain}
    STRATA_SKIP_LOOP=1 # cli.sh's small full-disk filesystems
    export STRATA_SKIP_LOOP
fi
SELECTED=""
for s in $(echo "$ONLY" | tr ',' ' '); do
    [ "$s" = unit ] && s=$UNIT_SUITES
    for t in $s; do
        case " $UNIT_SUITES $FS_SUITES user $ONCE_SUITES " in
        *" $t "*) SELECTED="$SELECTED $t" ;;
        *) echo "run.sh: no suite '$t'" >&2; usage ;;
        esac
    done
done
case $FS_ONLY in "" | plain | ext4 | xfs | btrfs) ;; *)
    echo "run.sh: --fs takes plain, ext4, xfs or btrfs, not '$FS_ONLY'" >&2; usage ;;
esac
want() { # suite: is it in this run?
    [ -z "$SELECTED" ] && return 0
    case " $SELECTED " in *" $1 "*) return 0 ;; esac
    return 1
}
want_any() { for s in "$@"; do want "$s" && return 0; done; return 1; }

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

# One shell suite: run tests/SCRIPT.sh, show its failures and skips, count
# its closing line. RUN_AS prefixes the command and SHOW adds lines to show:
# set them, then unset them (sh may keep an assignment made on a call).
script_suite() { # script, label, work dir, fs name
    ${RUN_AS:-} bash "$(dirname "$0")/$1.sh" "$B" "$3" "$4" >"$ROOT/$1.log" 2>&1
    grep -E "^(FAIL|SKIP)|^    ${SHOW:+|$SHOW}" "$ROOT/$1.log"
    add_counts "$ROOT/$1.log" "$2"
    tail -1 "$ROOT/$1.log" | sed "s/^/$2: /"
}

# A suite independent of the filesystem that needs no guest: once, in the
# plain pass
once_suite() { # script, title
    want "$1" || return 0
    echo "== $1 ($2)"
    script_suite "$1" "$1.sh" "$ROOT/$1" "${plain:-plain}"
}

# A suite that boots guests: slow under emulation and independent of the
# filesystem, so once, and not in the sanitizer pass (STRATA_SKIP_BOOT)
booting_suite() { # script, title
    want "$1" || return 0
    if [ -n "${STRATA_SKIP_BOOT:-}" ]; then
        echo "SKIP $1.sh: STRATA_SKIP_BOOT is set (the sanitizer pass: the plain pass runs it)"
        total_skip=$((total_skip + 1)); return
    fi
    echo "== $2"
    script_suite "$1" "$1.sh" "$ROOT/$1" "${plain:-plain}"
}

suite() { # fs name, dir
    want_any $UNIT_SUITES $FS_SUITES || return 0
    echo "== $1: $2"
    for u in $UNIT_SUITES; do
        want "$u" && unit "$B/tests/$u" "$1" "$2/unit-${u#test_}"
    done
    for t in $FS_SUITES; do
        want "$t" && script_suite "$t" "$t.sh [$1]" "$2/$t" "$1"
    done
}

# The CLI tests again as an unprivileged user who owns the store, as most
# users run strata: permission bugs (a 0444 layer file opened for writing)
# hide from root. Root-only checks inside cli.sh skip themselves visibly.
user_suite() { # fs name, dir
    want user || return 0
    u=strata-test
    if [ "$(id -u)" != 0 ]; then
        echo "SKIP cli.sh as another user: not root (this run is already unprivileged)"
        total_skip=$((total_skip + 1)); return
    fi
    if ! id -u "$u" >/dev/null 2>&1 &&
        ! useradd --system --no-create-home --shell /usr/sbin/nologin "$u" 2>"$ROOT/useradd.log"; then
        echo "SKIP cli.sh as $u: useradd failed: $(tail -1 "$ROOT/useradd.log")"
        total_skip=$((total_skip + 1)); return
    fi
    if ! command -v setpriv >/dev/null; then
        echo "SKIP cli.sh as $u: setpriv (util-linux) is not installed"
        total_skip=$((total_skip + 1)); return
    fi
    as_user="setpriv --reuid=$(id -u "$u") --regid=$(id -g "$u") --init-groups"
    chmod 711 "$ROOT"
    mkdir -p "$2" && chown "$u:" "$2"
    if ! $as_user test -x "$B/strata"; then
        echo "SKIP cli.sh as $u: $u can't reach the build directory $B"
        total_skip=$((total_skip + 1)); return
    fi
    echo "== $1 as $u (unprivileged, owns the store): $2"
    for t in cli crash; do
        RUN_AS="$as_user env HOME=$2"
        script_suite "$t" "$t.sh [$1 as $u]" "$2/$t" "$1"
    done
    unset RUN_AS
}

loop_fs() { # fs name, mkfs command...
    name=$1; shift
    [ -z "$FS_ONLY" ] || [ "$FS_ONLY" = "$name" ] || return 0
    want_any $UNIT_SUITES $FS_SUITES || return 0
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
# --fs naming the plain filesystem's own type is its plain pass
[ -n "$FS_ONLY" ] && [ "$FS_ONLY" = "${plain:-}" ] && FS_ONLY=plain
if [ -n "$QUICK$ONLY$FS_ONLY" ]; then
    on=${FS_ONLY:-every filesystem}; [ "$on" = plain ] && on=${plain:-plain}
    if [ -z "$SELECTED" ]; then echo "only: the $on pass"
    else echo "only:$SELECTED on $on${QUICK:+; no guest boots, loop mounts, registries or user pass (make test runs them)}"; fi
fi

# The plain filesystem's pass, and every suite that runs once: the user
# pass, the vz stand-in, the guest boots, the registries
plain_pass() {
    suite "${plain:-plain}" "$ROOT/plain"
    user_suite "${plain:-plain}" "$ROOT/user"

    # the vz driver end to end on its stand-in, and the Apple half of the bridge
    # compiled against the SDK's declarations: once, on the plain filesystem
    want_any vzsim vzsdk vzcreate apple && echo "== vz (stand-in framework)"
    want vzsim && script_suite vzsim vzsim.sh "$ROOT/vzsim" "${plain:-plain}"
    want vzsdk && script_suite vzsdk vzsdk.sh "$ROOT/vzsdk" "${plain:-plain}" # the oracle's extractor on its fixture
    want vzcreate && script_suite vzcreate vzcreate.sh "$ROOT/vzcreate" "${plain:-plain}" # create macos, --ipsw latest
    if ! want apple; then :
    elif make -s -C "$(dirname "$0")/.." check-apple >"$ROOT/apple.log" 2>&1; then
        if grep -q '^SKIP' "$ROOT/apple.log"; then
            cat "$ROOT/apple.log"; total_skip=$((total_skip + 1))
        else
            echo "check-apple: passed"; total_pass=$((total_pass + 1))
        fi
    else
        cat "$ROOT/apple.log"; echo "FAIL check-apple"; total_fail=$((total_fail + 1))
    fi

    SHOW='^timing'
    booting_suite boot "boot (qemu)"
    unset SHOW
    booting_suite reach "reach: ip, ssh, screenshot (qemu)"
    # push/pull against real registries (on 127.0.0.1), and the NBD server:
    # independent of the filesystem, once
    once_suite remote "registries on 127.0.0.1"
    once_suite registry_http "redirects to storage, pull-through cache"
    once_suite registry_auth "credential kinds, expiring tokens, a Docker Hub stand-in"
    once_suite registry_upload "mounts declined, chunk sizes, a link that cuts requests"
    once_suite registry_limits "ECR, GitLab refusals before the first blob"
    once_suite registry_pull "guest annotations, hostile manifests"
    once_suite tart_push "push --format tart read back as tart pulls, clone --tart"
    once_suite tart_pull "tart images pulled: byte for byte, hostile, resumed, a Linux guest booted"
    once_suite nbd "strata's NBD server, independent clients"
    once_suite tart_cli "the tart entry point: Orchard's and gitlab-tart-executor's sequences"
    once_suite lazy "a registry layer served over NBD before its pull ends"
    once_suite lazy_profile "boot profiles recorded and prefetched by a lazy run"
    # create linux and set, booted: a disk image, an ISO, a kernel (issue 11)
    booting_suite create "create and set (qemu)"
    # the Sonoma-era devices: set/run options, an NBD boot disk, extra disks
    booting_suite devices "devices: NBD, NVMe, extra disks (qemu)"
    # boot profiles through a registry; NBD reconnects and the Debian system
    # (its boots skip themselves under STRATA_SKIP_BOOT)
    once_suite lazy_boot "boot profiles, NBD reconnect, a Debian system to ssh"
    # power cuts: strata in the test guest, qemu killed mid-operation
    booting_suite powercut "power cuts (qemu)"
    # run HOST/REPO:TAG lazily: the test guest through a slow link (issue 22)
    once_suite lazy_run "a registry layer run before its pull ends (qemu)"
    # a lazy run and a pull of the same layer share one receive; a cache
    once_suite lazy_share "a layer another strata is pulling, served lazily; a pull-through cache"
    # issue 22 end to end: a Debian system, faults
    once_suite lazy_debian "a Debian system run from a registry before its pull ends (qemu, faults)"
}
[ -z "$FS_ONLY" ] || [ "$FS_ONLY" = plain ] && plain_pass
# ext4 on a loop mount only when asked (--fs ext4) on another plain filesystem
[ "$FS_ONLY" = ext4 ] && loop_fs ext4 mkfs.ext4 -q -F
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
