#!/bin/sh
# The power-cut scenario (tests/powercut.sh), run by the guest's busybox sh
# on a store on its virtio disk: import, commit, tag, gc, import, commit.
# Usage: powercut-scenario.sh DIR [CRASH_OP CRASH_POINT]
#   DIR holds the source bundles src1 and src2 (made by the host); the store
#   is DIR/store and the clones DIR/c1 and DIR/cj.
#   With CRASH_OP/CRASH_POINT, operation number CRASH_OP runs with
#   STRATA_TEST_CRASH_AT=CRASH_POINT: strata kills itself there, and the script
#   stops at once (no sync) so the host can cut the power at that point.
# Console protocol, one line each, printed only after what it says is done:
#   START k NAME           operation k begins
#   EXPECT k FILE SHA256   content operation k is to commit (before it runs)
#   COMMITTED k ID TAG     operation k returned; layer ID is tagged TAG
#                          (the tag step names the layer it tagged)
#   END k                  operation k returned
#   KILLED k               strata died at the crash point (then the script stops)
#   DONE                   the scenario finished (nothing is synced after it)
# Every layer a COMMITTED line names must survive a power cut that follows.
set -u
DIR=$1 CRASH_OP=${2:-0} CRASH_POINT=${3:-0}
export STRATA_HOME=$DIR/store
cd "$DIR" || exit 1
op=0

fail() { echo "SCENARIO-ERROR: $*"; exit 1; }

# expect SRC: the digests of the bundle SRC that the next operation commits
expect() {
    (cd "$1" && for f in *; do
        [ -f "$f" ] && echo "EXPECT $((op + 1)) $f $(mkbundle --digest "$f" | cut -d' ' -f1)"
    done)
}

# step NAME CMD...: run strata operation number k, output in /tmp/out
step() {
    op=$((op + 1))
    echo "START $op $1"
    shift
    if [ "$op" -eq "$CRASH_OP" ]; then
        STRATA_TEST_CRASH_AT=$CRASH_POINT "$@" >/tmp/out 2>/tmp/err
    else
        "$@" >/tmp/out 2>/tmp/err
    fi
    rc=$?
    if [ "$rc" -eq 137 ] && [ "$op" -eq "$CRASH_OP" ]; then
        echo "KILLED $op"
        exit 0
    fi
    [ "$rc" -eq 0 ] || fail "operation $op ($*): exit $rc: $(head -c 300 /tmp/err)"
}

committed() { # TAG: the layer id the last step printed (a tag step prints none)
    [ -s /tmp/out ] && id=$(tail -1 /tmp/out)
    echo "COMMITTED $op $id $1"
    echo "END $op"
}

expect src1
step import strata import src1 base
committed base
step clone strata clone base c1
echo "END $op"
mkbundle --write c1/Disk.img 4M:1M:3 || fail "write c1"
expect c1
step commit strata commit c1 -m one -t base:one
committed base:one
mkbundle --write c1/Disk.img 8M:2M:4 30M:64K:5 || fail "write c1"
expect c1
step commit strata commit c1 -m two -t base:two
committed base:two
expect c1
step tag strata tag base:two keep
committed keep # the same layer as base:two ($id is still its id)
# garbage for gc: an untagged layer whose clone is gone and forgotten, so
# that gc (told not to wait out its grace period) really deletes a layer
strata clone base cj >/dev/null 2>&1 && mkbundle --write cj/Disk.img 12M:1M:6 &&
    junk=$(strata commit cj -t junk 2>/dev/null) && strata untag junk && rm -rf cj &&
    strata clones --prune --expire now >/dev/null || fail "make garbage"
step gc strata gc --prune=now
[ ! -e "$STRATA_HOME/layers/$junk" ] || fail "gc kept the garbage layer $junk"
echo "END $op"
expect src2
step import strata import src2 second
committed second
mkbundle --write c1/Disk.img 16M:1M:7 || fail "write c1"
expect c1
step commit strata commit c1 -m three -t base:three
committed base:three
echo DONE
