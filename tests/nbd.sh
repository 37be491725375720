#!/bin/bash
# The NBD server (nbd/) against independent clients: libnbd's nbdinfo,
# nbdcopy and nbdsh (Debian's libnbd-bin, python3-libnbd), QEMU's NBD block
# driver (qemu-io, qemu-img), and tests/nbd_raw.py for the malformed
# handshakes and requests no real client sends. The server serves a plain
# file through the test tool tests/nbd_serve; a client that isn't installed
# is a visible skip.
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
NS=$B/tests/nbd_serve
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; }
trap cleanup EXIT
trap 'exit 1' INT TERM
rm -rf "$W"/nbd-*
D=$W/nbd-data
mkdir -p "$D"

# serve NAME FILE [ARGS...]: start nbd_serve on $D/NAME.sock; sets URI
serve() {
    local name=$1 file=$2; shift 2
    rm -f "$D/$name.sock"
    "$NS" "$D/$name.sock" "$file" "$@" >"$D/$name.log" 2>&1 &
    PIDS="$PIDS $!"
    for _ in $(seq 100); do grep -q ready "$D/$name.log" 2>/dev/null && break; sleep 0.05; done
    URI="nbd+unix:///?socket=$D/$name.sock"
}

head -c $((48 << 20)) /dev/urandom >"$D/orig.img"
# a disk that is not a whole number of MiB, as tart's decimal-GB disks are
# (those are whole 512-byte sectors; QEMU 7.2's qemu-img convert hangs on
# an export that isn't, whatever the server: it sizes images in sectors)
head -c $((2411 * 512)) /dev/urandom >>"$D/orig.img"
SIZE=$(stat -c %s "$D/orig.img")
cp "$D/orig.img" "$D/disk.img"
serve rw "$D/disk.img"
check "the server listens on a socket only its owner may use" [ "$(stat -c %a "$D/rw.sock" | cut -c2-)" = 00 ]

# ---- the protocol, byte by byte ----
run python3 "$HERE/nbd_raw.py" "$D/rw.sock" "$SIZE"
while read -r verdict rest; do
    case $verdict in ok) ok "raw: $rest" ;; FAIL) bad "raw: $rest" ;; esac
done <"$W/out"
check "the raw client's cases all ran" [ "$(grep -c '^ok\|^FAIL' "$W/out")" -eq 10 ]
cp "$D/orig.img" "$D/disk.img" # the raw cases wrote to it

# ---- libnbd ----
if command -v nbdinfo >/dev/null && command -v nbdcopy >/dev/null; then
    run nbdinfo --json "$URI"
    check "nbdinfo: the export's size" \
        [ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["exports"][0]["export-size"])' "$W/out")" = "$SIZE" ]
    check "nbdinfo: writable, with flush, FUA, trim and zero" python3 -c '
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
sys.exit(0 if not e["is_read_only"] and e["can_flush"] and e["can_fua"] and e["can_trim"] and e["can_zero"] else 1)' "$W/out"
    run nbdinfo --list "$URI"
    check "nbdinfo --list: the default export with its description" grep -q "description: a test file" "$W/out"
    run nbdinfo "nbd+unix:///other?socket=$D/rw.sock"
    check "nbdinfo on an export the server lacks fails" [ "$rc" -ne 0 ]
    run nbdcopy "$URI" "$D/copy.img"
    check "nbdcopy reads the disk byte for byte" cmp -s "$D/copy.img" "$D/orig.img"
    head -c "$SIZE" /dev/urandom >"$D/new.img"
    run nbdcopy "$D/new.img" "$URI"
    check "nbdcopy writes the disk byte for byte" cmp -s "$D/new.img" "$D/disk.img"
    cp "$D/orig.img" "$D/disk.img"
else
    skipped "libnbd clients" "nbdinfo/nbdcopy are not installed (apt-get install libnbd-bin)"
fi

# nbdsh is python3 -m nbd: the python that has Debian's module
NBD_PY=""
for p in /usr/bin/python3 python3; do
    "$p" -c 'import nbd' 2>/dev/null && { NBD_PY=$p; break; }
done
if command -v nbdsh >/dev/null && [ -n "$NBD_PY" ]; then
    # past the end, sent anyway (libnbd checks bounds itself unless told not
    # to): an error reply, and the same connection still reads
    run "$NBD_PY" -m nbd -u "$URI" -c '
import nbd, sys
h.set_strict_mode(0)
try:
    h.pread(4096, h.get_size() - 100)
    sys.exit("read past the end succeeded")
except nbd.Error as e:
    print("refused:", e.errno)
assert len(h.pread(4096, 0)) == 4096
h.pwrite(b"\xab" * 8192, 65536, nbd.CMD_FLAG_FUA)
assert h.pread(8192, 65536) == b"\xab" * 8192
h.zero(4096, 65536)
assert h.pread(4096, 65536) == bytes(4096)
h.trim(1 << 20, 1 << 20)
h.flush()
print("done")'
    check "nbdsh: a read past the end is refused with EINVAL, not a hang-up" grep -q "refused: EINVAL" "$W/out"
    check "nbdsh: write with FUA, zero, trim and flush on the same connection" grep -q done "$W/out"
    check "...and the writes reached the file" python3 -c '
import sys
d = open(sys.argv[1], "rb").read()
sys.exit(0 if d[65536:69632] == bytes(4096) and d[69632:73728] == b"\xab" * 4096 else 1)' "$D/disk.img"
    cp "$D/orig.img" "$D/disk.img"
else
    skipped "nbdsh" "nbdsh is not installed (apt-get install python3-libnbd)"
fi

# ---- QEMU's NBD block driver ----
if command -v qemu-io >/dev/null && command -v qemu-img >/dev/null; then
    run qemu-io -f raw -c 'write -P 0x5a 3M 192k' -c 'write -z 5M 1M' -c 'discard 7M 1M' \
        -c 'flush' -c 'read -P 0x5a 3M 192k' -c 'read -P 0 5M 1M' "$URI"
    check "qemu-io writes, zeroes, discards and reads back through the server" \
        [ "$rc" -eq 0 ] && ! grep -qi "error\|fail\|mismatch" "$W/out"
    python3 - "$D/orig.img" "$D/expect.img" <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
d[3 << 20:(3 << 20) + (192 << 10)] = b"\x5a" * (192 << 10)
d[5 << 20:6 << 20] = bytes(1 << 20)
open(sys.argv[2], "wb").write(d)
PY
    # the discarded MiB may read as anything: compare around it
    run qemu-img compare -f raw -F raw "$URI" "$D/disk.img"
    check "qemu-img compares the export with its file: identical" [ "$rc" -eq 0 ]
    check "...which holds exactly what was written (outside the discarded range)" python3 -c '
import sys
a, b = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
sys.exit(0 if a[:7 << 20] == b[:7 << 20] and a[8 << 20:] == b[8 << 20:] else 1)' "$D/disk.img" "$D/expect.img"
    # two clients at once, each on its own thread
    qemu-io -f raw -c 'write -P 0x11 0 4M' "$URI" >"$D/c1.log" 2>&1 &
    c1=$!
    qemu-io -f raw -c 'write -P 0x22 8M 4M' "$URI" >"$D/c2.log" 2>&1
    c2rc=$?
    wait $c1; c1rc=$?
    run qemu-io -f raw -r -c 'read -P 0x11 0 4M' -c 'read -P 0x22 8M 4M' "$URI"
    check "two QEMU clients at once are both served" [ $c1rc -eq 0 ] && [ $c2rc -eq 0 ] && [ "$rc" -eq 0 ] && ! grep -qi "mismatch\|fail" "$W/out"

    cp "$D/orig.img" "$D/ro.img"
    serve ro "$D/ro.img" --read-only --name base
    RO="nbd+unix:///base?socket=$D/ro.sock"
    run qemu-io -f raw -c 'write -P 1 0 4k' "$RO"
    check "QEMU opens a read-only export only read-only" [ "$rc" -ne 0 ] && grep -q "Permission denied" "$W/err"
    if [ -n "$NBD_PY" ]; then
        run "$NBD_PY" -m nbd -u "$RO" -c '
import nbd
h.set_strict_mode(0)
for what, f in (("write", lambda: h.pwrite(b"x" * 4096, 0)), ("trim", lambda: h.trim(4096, 0)),
                ("zero", lambda: h.zero(4096, 0))):
    try:
        f()
        print(what, "accepted")
    except nbd.Error as e:
        print(what, "refused", e.errno)'
        check "a read-only export refuses write, trim and zero with EPERM" \
            [ "$(grep -c "refused EPERM$" "$W/out")" = 3 ]
    fi
    check "...and the file is unchanged" cmp -s "$D/ro.img" "$D/orig.img"
    run timeout 60 qemu-img convert -f raw -O raw "$RO" "$D/ro-copy.img"
    check "qemu-img reads a named read-only export byte for byte" cmp -s "$D/ro-copy.img" "$D/orig.img"
else
    skipped "QEMU's NBD client" "qemu-io/qemu-img are not installed (apt-get install qemu-utils)"
fi

# ---- the server outlives its clients' mistakes, and stops cleanly ----
check "the server is still running after every client above" kill -0 "${PIDS##* }"
first=$(echo $PIDS | cut -d' ' -f1)
kill "$first"; wait "$first"; krc=$?
check "SIGTERM stops the server: exit 0" [ $krc -eq 0 ]
check "...and its socket is removed" [ ! -e "$D/rw.sock" ]
finish
