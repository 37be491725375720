#!/bin/bash
# Issue 22 end to end with a real Linux system (docs/lazy.md, "Running
# lazily"): the Debian 12 system of tests/guest/mkdebian.sh (systemd, sshd,
# ext4 on a 16 GiB sparse disk, the Debian kernel) imported, pushed to the
# real docker-registry, and run with `strata run HOST/REPO:TAG` under qemu
# from empty stores, through tests/flaky_proxy.py's wan link at 8 MiB/s:
#   - store A, no boot profile, with the registry stopped for 20 s as the
#     guest starts reading its disk: the guest's reads stall and go on once
#     the registry is back (the lazy log says so; the kernel logs no I/O
#     error); it boots while the store lacks the layer, is ready (the lazy
#     log says by which sign) and answers ssh; the fill publishes the pushed
#     id under the tag a pull gives, fsck is clean; a file written over ssh,
#     stop, and `commit` gives a child of the pushed layer holding it;
#   - the boot profile A recorded, pushed with the layer;
#   - store B: the lazy run fetches the profile's chunks first (log);
#     strata killed (SIGKILL) during the boot and the fill, qemu with it;
#     `run NAME` serves the instance again, the guest boots again and
#     answers ssh, and the fill completes with the pushed id, fsck clean;
#   - a child layer with a file the boot never reads, one of its chunks
#     tampered in the registry's storage, lazily run in store C: the guest
#     boots, reading that file fails with an I/O error, the lazy log names
#     the chunk and its pack, the fill fails naming the pack, and nothing is
#     published.
# Needs root once (mkdebian.sh's debootstrap; cached after), docker-registry,
# qemu-system-x86_64, debugfs and ssh. Skipped under STRATA_SKIP_BOOT.
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
export STRATA_HOME=$W/src DOCKER_CONFIG=$W/docker XDG_CACHE_HOME=$W/cache
unset STRATA_QEMU_ACCEL STRATA_HOST_ID
rm -rf "$W"/src "$W"/s-* "$W"/docker "$W"/cache "$W"/reg-* "$W"/deb "$W"/child "$W"/*.log "$W"/out
. "$(dirname "$0")/registry_lib.sh"
. "$(dirname "$0")/lazyrun_lib.sh"
need_lazy_boots "Debian lazy run tests" debugfs ssh
if ! bash "$HERE/guest/mkdebian.sh" "$W/deb" >"$W/mkdebian.log" 2>&1; then
    skipped "Debian lazy run tests" "$(tail -1 "$W/mkdebian.log")"; finish; exit
fi
id_of() { "$S" inspect "$1" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
lazy_log() { echo "$STRATA_HOME/vms/.$1.lazy.log"; }
gssh() { # NAME CMD...: ssh into the instance with the system's key; output in $W/out
    run "$S" ssh "$1" --wait 120 -i "$W/deb/id" -- "${@:2}"
}
banner() { # NAME: the first line the guest's ssh port answers
    local addr
    addr=$("$S" ip "$1" --wait 60 2>/dev/null) || return 1
    python3 - "${addr%:*}" "${addr##*:}" <<'EOF'
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
print(s.makefile("rb").readline().decode(errors="replace").strip())
EOF
}
start_run() { # NAME ARGS...: strata run in the background, its pid in RPID
    "$S" run "${@:2}" --name "$1" --driver qemu --accel "${STRATA_TEST_ACCEL:-tcg}" >"$W/run-$1.log" 2>&1 &
    RPID=$!
    PIDS="$PIDS $RPID"
}
stop_run() { # NAME PID
    "$S" stop "$1" --timeout 60 >/dev/null 2>&1 || "$S" stop "$1" --force >/dev/null 2>&1
    wait "$2" 2>/dev/null
}
ready_line() { # NAME: the lazy log's line saying why the guest is ready
    grep -oE "lazy: the guest is ready: .*" "$(lazy_log "$1")" | head -1
}

# ---- the Debian system, pushed ----
"$S" import "$W/deb" debian >/dev/null 2>"$W/err"
start_registry deb
R=127.0.0.1:$PORT
REG_PID=${PIDS##* }
REG_CONF=$W/reg-deb/config.yml
run "$S" push debian "$R/strata/debian:12" --json
LAYER=$(jget layer 2>/dev/null)
check "the Debian system (16 GiB disk) is pushed" cond '[ "$rc" -eq 0 ] && [ -n "$LAYER" ]'
# every run through a link of 8 MiB/s, so the fill (about 700 MiB) outlasts
# the moments the tests act in: over loopback it ends in seconds
start_proxy wan "$R" wan 8388608 5
P=127.0.0.1:$PPORT
LOCAL_TAG=127.0.0.1_${PPORT}_strata_debian:12
REF=$P/strata/debian:12

# ---- store A: no profile; the registry away for 20 s during the boot ----
export STRATA_HOME=$W/s-a
start_run da "$REF"
if wait_for "$(console da)" 'Linux version' 300; then
    check "the guest starts while the store lacks the layer" bash -c "! '$S' inspect $LAYER >/dev/null 2>&1"
    # its kernel runs; the root filesystem is read next: the registry goes away
    kill "$REG_PID"; wait "$REG_PID" 2>/dev/null
    stopped=$(date +%s)
    wait_for "$(lazy_log da)" 'trying again' 60
    check "the registry stopped as the guest reads its disk: a read waits (the lazy log says it retries)" \
        grep -q "Disk.img chunk .*trying again" "$(lazy_log da)"
    sleep $((20 - ($(date +%s) - stopped)))
    docker-registry serve "$REG_CONF" >"$W/reg-deb/log2" 2>&1 &
    REG_PID=$!
    PIDS="$PIDS $REG_PID"
    wait_http "http://$R/v2/"
    if wait_for "$(console da)" '^STRATA-DEBIAN-READY' 900; then
        ok "the registry back after 20 s, the guest boots on to its ready marker"
        check "...its stalled reads came once the registry was back (the lazy log)" \
            grep -q "Disk.img chunk .* came after" "$(lazy_log da)"
        check "...and its kernel saw no I/O error" bash -c "! grep -qiE 'I/O error|EXT4-fs error|Buffer I/O' '$(console da)'"
        b=$(banner da)
        check "...it answers ssh ($b)" grep -q '^SSH-2.0-OpenSSH' <<<"$b"
        wait_for "$(lazy_log da)" 'the guest is ready' 30
        check "...the lazy run saw it ready ($(ready_line da))" \
            grep -qE "the guest is ready: (its ssh server answered|its console shows a login prompt)" "$(lazy_log da)"
        check "...and recorded its boot profile" grep -qE "ready after [0-9.]+ s; boot profile: [0-9]+ chunks" "$(lazy_log da)"
        gssh da 'echo lazy-was-here >/root/mark && sync && cat /etc/debian_version'
        check "...ssh runs commands there (Debian $(tail -1 "$W/out"))" cond '[ "$rc" -eq 0 ] && grep -q "^12\." "$W/out"'
        check "the fill ends" wait_fill da 900
        check "...done: the layer is published with the pushed id under the tag a pull gives" \
            cond '[ "$(ps_lazy da state)" = done ] && [ "$(id_of "$LOCAL_TAG")" = "$LAYER" ]'
        run "$S" fsck
        check "...fsck is clean" [ "$rc" -eq 0 ]
        stop_run da "$RPID"
        run "$S" commit "$STRATA_HOME/vms/da" -t after
        check "...commit after stop gives a child of the pushed layer" \
            cond '[ "$rc" -eq 0 ] && [ "$(parent_of after)" = "$LAYER" ]'
        "$S" clone after "$W/child-a" >/dev/null 2>&1
        check "...which holds the file written over ssh" \
            bash -c "debugfs -R 'cat /root/mark' '$W/child-a/Disk.img' 2>/dev/null | grep -qx lazy-was-here"
        rm -rf "$W/child-a"
    else
        bad "the guest boots to its ready marker after the registry came back"
        tail -5 "$W/run-da.log" "$(console da)" "$(lazy_log da)"
        stop_run da "$RPID"
    fi
else
    bad "a lazy run starts the Debian system"; tail -5 "$W/run-da.log"
    stop_run da "$RPID"
fi
kill_marked_qemus

# ---- the profile pushed; store B: the profile first; killed during the fill ----
run "$S" push "$LAYER" "$REF" --json
check "push of the layer again carries the boot profile the lazy run recorded" \
    cond '[ "$rc" -eq 0 ] && curl -sf -H "Accept: application/vnd.oci.image.manifest.v1+json" "http://$R/v2/strata/debian/manifests/12" | grep -q dev.strata.boot-profile'
export STRATA_HOME=$W/s-b
start_run db "$REF" --lazy
# killed as systemd starts: the guest reads its disk, the fill has hundreds
# of MiB to go
if wait_for "$(console db)" 'systemd\[1\]: systemd [0-9]' 600; then
    state=$(ps_lazy db state)
    kill -9 "$RPID"; wait "$RPID" 2>/dev/null
    kill_marked_qemus
    check "store B: strata killed (SIGKILL) while the fill was $state, qemu with it: the instance keeps its lazy state" \
        cond '[ "$state" = filling ] && [ -d "$STRATA_HOME/vms/db/.lazy" ]'
    check "...and the layer is not in the store" bash -c "! '$S' inspect $LAYER >/dev/null 2>&1"
    check "...that run had fetched the profile's chunks first" \
        grep -qE "lazy: (prefetching the boot profile's [0-9]+ runs|prefetch: [1-9][0-9]* chunks of the boot profile)" "$(lazy_log db)"
    mark_qemus
    : >"$(console db)"
    "$S" run db --driver qemu --accel "${STRATA_TEST_ACCEL:-tcg}" >"$W/run-db2.log" 2>&1 &
    RPID=$!
    PIDS="$PIDS $RPID"
    if wait_for "$(console db)" '^STRATA-DEBIAN-READY' 900; then
        ok "run NAME serves it again: the guest boots to its ready marker"
        b=$(banner db)
        check "...and answers ssh ($b)" grep -q '^SSH-2.0-OpenSSH' <<<"$b"
        check "...the fill ends" wait_fill db 900
        check "...done, with the pushed id" cond '[ "$(ps_lazy db state)" = done ] && [ "$(id_of "$LOCAL_TAG")" = "$LAYER" ]'
        run "$S" fsck
        check "...fsck is clean" [ "$rc" -eq 0 ]
    else
        bad "run NAME serves it again: the guest boots to its ready marker"
        tail -5 "$W/run-db2.log" "$(lazy_log db)"
    fi
    stop_run db "$RPID"
else
    bad "store B: the lazy run with a profile boots"; tail -5 "$W/run-db.log" "$(lazy_log db)"
    stop_run db "$RPID"
fi
kill_marked_qemus

# ---- a tampered chunk, in a file the boot never reads ----
export STRATA_HOME=$W/src
"$S" clone debian "$W/child" >/dev/null 2>&1
# 24 MiB of random data: most of the child's one new pack, so a byte from
# its middle is in a chunk of this file (the rest is a few chunks of ext4's
# metadata, which the boot reads)
head -c 24M /dev/urandom >"$W/bulk"
debugfs -w -R "write $W/bulk /bulk.bin" "$W/child/Disk.img" >/dev/null 2>&1
first=$(( $(debugfs -R "bmap /bulk.bin 0" "$W/child/Disk.img" 2>/dev/null | tr -dc 0-9) * 4096 / 1048576 ))
last=$(( $(debugfs -R "bmap /bulk.bin 6143" "$W/child/Disk.img" 2>/dev/null | tr -dc 0-9) * 4096 / 1048576 ))
"$S" commit "$W/child" -m bulk -t debian:bulk >/dev/null 2>&1
run "$S" push debian:bulk "$R/strata/debian:bulk" --json
check "a child with a file the boot never reads is pushed" [ "$rc" -eq 0 ]
packs() { curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$R/v2/strata/debian/manifests/$1" |
    python3 -c 'import json,sys; [print(l["digest"]) for l in json.load(sys.stdin)["layers"] if l["mediaType"].endswith("pack.v1+zstd")]' | sort; }
PACK=$(comm -13 <(packs 12) <(packs bulk) | head -1)
blob=$W/reg-deb/data/docker/registry/v2/blobs/sha256/${PACK:7:2}/${PACK:7}/data
check "...its new chunks are in a pack of their own" [ -n "$PACK" ] && [ -f "$blob" ]
python3 -c 'import sys
f = open(sys.argv[1], "r+b"); f.seek(f.seek(0, 2) // 2); b = f.read(16); f.seek(-16, 1); f.write(bytes(x ^ 0xff for x in b))' "$blob"
export STRATA_HOME=$W/s-c
start_run dc "$P/strata/debian:bulk"
if wait_for "$(console dc)" '^STRATA-DEBIAN-READY' 900; then
    ok "store C: the guest boots from the layer with a tampered chunk"
    gssh dc 'cat /bulk.bin >/dev/null'
    check "...reading the file whose chunk was tampered fails with an I/O error" \
        cond '[ "$rc" -ne 0 ] && grep -qi "Input/output error" "$W/err" "$W/out"'
    chunk=$(grep -oE "Disk.img chunk [0-9]+ \(offset [0-9]+\) is not served: pack $PACK" "$(lazy_log dc)" | head -1 | cut -d' ' -f3)
    check "...the lazy log names the chunk ($chunk, of the file's $first-$last) and its pack" \
        cond '[ -n "$chunk" ] && [ "$chunk" -ge "$first" ] && [ "$chunk" -le "$last" ]'
    check "...the fill fails, naming the pack" cond 'wait_fill dc 900 && [ "$(ps_lazy dc state)" = failed ] && grep -q "the fill failed: .*$PACK" "$(lazy_log dc)"'
    check "...and nothing is published" bash -c "! '$S' inspect '127.0.0.1_${PPORT}_strata_debian:bulk' >/dev/null 2>&1"
    run "$S" fsck
    check "...fsck is clean" [ "$rc" -eq 0 ]
    stop_run dc "$RPID"
else
    bad "store C: the guest boots"; tail -5 "$W/run-dc.log" "$(lazy_log dc)"
    stop_run dc "$RPID"
fi
finish
