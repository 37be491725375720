#!/usr/bin/env python3
"""A raw NBD client for tests/nbd.sh: malformed handshakes and requests
that real clients never send, straight from NetworkBlockDevice/nbd
doc/proto.md, against strata's NBD server (tests/nbd_serve).

Usage: nbd_raw.py SOCKET EXPORT_SIZE
Prints one line per case, "ok NAME" or "FAIL NAME: why"; exits 1 if any
case failed.
"""
import socket
import struct
import sys

SOCK, SIZE = sys.argv[1], int(sys.argv[2])
NBDMAGIC, IHAVEOPT, REPMAGIC = 0x4E42444D41474943, 0x49484156454F5054, 0x3E889045565A9
REQ, SIMPLE = 0x25609513, 0x67446698
ACK, SERVER, INFO = 1, 2, 3
ERR_UNSUP, ERR_INVALID, ERR_UNKNOWN = (1 << 31) + 1, (1 << 31) + 3, (1 << 31) + 6
READ, WRITE, DISC, FLUSH, TRIM, WZ = 0, 1, 2, 3, 4, 6
EPERM, EINVAL, ENOSPC = 1, 22, 28
failed = 0


def result(name, ok, why=""):
    global failed
    print(("ok " + name) if ok else ("FAIL %s: %s" % (name, why)))
    failed += 0 if ok else 1


def recvall(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("closed after %d of %d bytes" % (len(b), n))
        b += c
    return b


def closed(s):
    s.settimeout(5)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def hello(flags=3):
    s = socket.socket(socket.AF_UNIX)
    s.connect(SOCK)
    magic, opts, hflags = struct.unpack(">QQH", recvall(s, 18))
    assert magic == NBDMAGIC and opts == IHAVEOPT and hflags & 1, "bad greeting"
    s.sendall(struct.pack(">I", flags))
    return s


def option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def reply(s):
    magic, opt, typ, n = struct.unpack(">QIII", recvall(s, 20))
    assert magic == REPMAGIC, "bad reply magic"
    return opt, typ, recvall(s, n)


def go_data(name=b"", infos=()):
    return struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos)) + b"".join(
        struct.pack(">H", i) for i in infos)


def go(s, name=b""):
    option(s, 7, go_data(name))
    while True:
        _, typ, data = reply(s)
        if typ == ACK:
            return
        assert typ == INFO, "GO answered %#x" % typ


def request(s, typ, off, length, flags=0, data=b"", cookie=7):
    s.sendall(struct.pack(">IHHQQI", REQ, flags, typ, cookie, off, length) + data)
    magic, err, got_cookie = struct.unpack(">IIQ", recvall(s, 16))
    assert magic == SIMPLE and got_cookie == cookie, "bad simple reply"
    payload = recvall(s, length) if typ == READ and err == 0 else b""
    return err, payload


def case(name):
    def wrap(fn):
        try:
            fn()
        except Exception as e:  # a case that raises is a failure, not a crash
            result(name, False, repr(e))
        return fn
    return wrap


@case("unknown client flags end the session")
def _():
    s = hello(flags=3 | (1 << 20))
    result("unknown client flags end the session", closed(s))


@case("an unknown option is answered ERR_UNSUP and the session goes on")
def _():
    s = hello()
    option(s, 99, b"junk")
    _, typ, _ = reply(s)
    option(s, 8)  # NBD_OPT_STRUCTURED_REPLY: not offered
    _, typ2, _ = reply(s)
    go(s)
    err, data = request(s, READ, 0, 512)
    result("an unknown option is answered ERR_UNSUP and the session goes on",
           typ == ERR_UNSUP and typ2 == ERR_UNSUP and err == 0 and len(data) == 512,
           "%#x %#x %d" % (typ, typ2, err))


@case("malformed GO, unknown export, LIST with data: errors, not hang-ups")
def _():
    s = hello()
    option(s, 7, b"\x00\x00\x10\x00ab")  # name length past the data
    _, t1, _ = reply(s)
    option(s, 7, go_data(b"nosuch"))
    _, t2, _ = reply(s)
    option(s, 3, b"x")
    _, t3, _ = reply(s)
    option(s, 3)
    _, t4, d4 = reply(s)
    _, t5, _ = reply(s)
    option(s, 6, go_data(b"", (3,)))  # NBD_OPT_INFO with a block-size request
    infos = []
    while True:
        _, t, d = reply(s)
        if t == ACK:
            break
        infos.append(struct.unpack(">H", d[:2])[0])
    go(s)
    err, _ = request(s, READ, 0, 4096)
    ok = (t1, t2, t3, t4, t5) == (ERR_INVALID, ERR_UNKNOWN, ERR_INVALID, SERVER, ACK) and \
        infos == [0, 3] and struct.unpack(">I", d4[:4])[0] == 0 and err == 0
    result("malformed GO, unknown export, LIST with data: errors, not hang-ups", ok,
           "%r %r %d" % ((t1, t2, t3, t4, t5), infos, err))


@case("an option with 1 MiB of data is read past and refused")
def _():
    s = hello()
    option(s, 7, b"\0" * (1 << 20))
    _, t, _ = reply(s)
    go(s)
    err, _ = request(s, READ, 0, 1)
    result("an option with 1 MiB of data is read past and refused", t == ERR_INVALID and err == 0)


@case("EXPORT_NAME with and without NO_ZEROES")
def _():
    sizes = []
    for flags, pad in ((3, 0), (1, 124)):
        s = hello(flags)
        option(s, 1, b"")
        size, tflags = struct.unpack(">QH", recvall(s, 10))
        recvall(s, pad)
        err, _ = request(s, READ, SIZE - 512, 512)
        sizes.append((size, tflags & 1, err))
    result("EXPORT_NAME with and without NO_ZEROES", sizes == [(SIZE, 1, 0)] * 2, repr(sizes))


@case("ABORT is acknowledged")
def _():
    s = hello()
    option(s, 2)
    _, t, _ = reply(s)
    result("ABORT is acknowledged", t == ACK and closed(s))


@case("refused requests get error replies and the connection stays")
def _():
    s = hello()
    go(s)
    got = [
        request(s, 42, 0, 512)[0],                      # unknown command
        request(s, READ, 0, 512, flags=1 << 7)[0],      # unknown flag
        request(s, READ, 0, 512, flags=1)[0],           # FUA on a read
        request(s, READ, 0, 0)[0],                      # empty
        request(s, READ, SIZE - 256, 512)[0],           # past the end
        request(s, READ, 1 << 62, 512)[0],              # far past it
        request(s, READ, 0, (32 << 20) + 1)[0],         # over the maximum
        request(s, WRITE, SIZE - 256, 512, data=b"x" * 512)[0],   # past the end: data read past
        request(s, WRITE, 0, (32 << 20) + 4096, data=b"y" * ((32 << 20) + 4096))[0],
        request(s, TRIM, SIZE, 4096)[0],
        request(s, WZ, SIZE - 4096, 8192)[0],
    ]
    want = [EINVAL, EINVAL, EINVAL, EINVAL, EINVAL, EINVAL, EINVAL, ENOSPC, EINVAL, EINVAL, ENOSPC]
    err, data = request(s, READ, 0, 16)
    result("refused requests get error replies and the connection stays",
           got == want and err == 0 and len(data) == 16, "%r" % got)


@case("write, read back, zero, trim, flush, FUA")
def _():
    s = hello()
    go(s)
    pattern = bytes(range(256)) * 16
    e1, _ = request(s, WRITE, 8192, 4096, data=pattern, flags=1)
    e2, back = request(s, READ, 8192, 4096)
    e3, _ = request(s, WZ, 8192, 1024, flags=2)
    e4, z = request(s, READ, 8192, 1024)
    e5, _ = request(s, TRIM, 1 << 20, 65536)
    e6, _ = request(s, FLUSH, 0, 0)
    result("write, read back, zero, trim, flush, FUA",
           (e1, e2, e3, e4, e5, e6) == (0,) * 6 and back == pattern and z == b"\0" * 1024,
           repr((e1, e2, e3, e4, e5, e6)))


@case("a request without its magic ends that session only")
def _():
    s = hello()
    go(s)
    s.sendall(b"\xde\xad\xbe\xef" + b"\0" * 24)
    first = closed(s)
    s2 = hello()
    go(s2)
    err, _ = request(s2, READ, 0, 512)
    result("a request without its magic ends that session only", first and err == 0)


@case("DISC ends the session")
def _():
    s = hello()
    go(s)
    s.sendall(struct.pack(">IHHQQI", REQ, 0, DISC, 1, 0, 0))
    result("DISC ends the session", closed(s))

sys.exit(1 if failed else 0)
