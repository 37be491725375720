#!/usr/bin/env python3
"""Small helpers for bench/run.sh (stdlib only).

  sparse_tool.py read FILE        read only the allocated (SEEK_DATA) ranges of FILE
                                  sequentially; prints "<data_bytes> <seconds>"
  sparse_tool.py extents FILE     prints "<data_bytes> <ranges>" (no data read)
  sparse_tool.py diff A B         count 4 KiB blocks whose content differs between
                                  A and B (holes read as zeros). Only ranges that
                                  hold data in A or B are read; 1 MiB windows are
                                  compared first, 4 KiB blocks only inside windows
                                  that differ. Prints "<changed_bytes> <blocks>
                                  <scanned_bytes>"
  sparse_tool.py json-field FILE FIELD [MATCH]
                                  find FIELD (e.g. bytes_added) in JSON (object,
                                  list, or JSON lines); prefers an object whose
                                  values mention MATCH. Prints the value or nothing.
"""
import json
import os
import re
import sys
import time

BLK = 4096
WIN = 1 << 20
READ_BUF = 8 << 20


def data_ranges(fd, size):
    """Yield (start, end) of data ranges using SEEK_DATA/SEEK_HOLE."""
    off = 0
    while off < size:
        try:
            d = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:  # ENXIO: no more data
            return
        if d >= size:
            return
        h = os.lseek(fd, d, os.SEEK_HOLE)
        yield d, min(h, size)
        off = h


def cmd_extents(path):
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    tot = n = 0
    for s, e in data_ranges(fd, size):
        tot += e - s
        n += 1
    os.close(fd)
    print(tot, n)


def cmd_read(path):
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except (AttributeError, OSError):
        pass
    buf = bytearray(READ_BUF)
    mv = memoryview(buf)
    t0 = time.monotonic()
    tot = 0
    for s, e in data_ranges(fd, size):
        off = s
        while off < e:
            n = os.preadv(fd, [mv[: min(READ_BUF, e - off)]], off)
            if n <= 0:
                break
            off += n
            tot += n
    dt = time.monotonic() - t0
    os.close(fd)
    print(tot, "%.6f" % dt)


def merged_ranges(fa, sa, fb, sb):
    size = max(sa, sb)
    rs = list(data_ranges(fa, sa)) + list(data_ranges(fb, sb))
    rs.sort()
    out = []
    for s, e in rs:
        # align to 4 KiB blocks
        s = s - s % BLK
        e = min(size, (e + BLK - 1) // BLK * BLK)
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1][1] = e
        else:
            out.append([s, e])
    return out, size


def pread_full(fd, n, off, fsize):
    if off >= fsize:
        return b"\0" * n
    b = os.pread(fd, n, off)
    if len(b) < n:
        b += b"\0" * (n - len(b))
    return b


def cmd_diff(a, b):
    fa = os.open(a, os.O_RDONLY)
    fb = os.open(b, os.O_RDONLY)
    sa = os.fstat(fa).st_size
    sb = os.fstat(fb).st_size
    ranges, _ = merged_ranges(fa, sa, fb, sb)
    changed = 0
    scanned = 0
    for s, e in ranges:
        off = s
        while off < e:
            n = min(WIN, e - off)
            x = pread_full(fa, n, off, sa)
            y = pread_full(fb, n, off, sb)
            scanned += n
            if x != y:
                for i in range(0, n, BLK):
                    if x[i:i + BLK] != y[i:i + BLK]:
                        changed += 1
            off += n
    os.close(fa)
    os.close(fb)
    print(changed * BLK, changed, scanned)


def walk(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)


def cmd_json_field(path, field, match=None):
    text = open(path, encoding="utf-8", errors="replace").read()
    docs = []
    try:
        docs.append(json.loads(text))
    except ValueError:
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                docs.append(json.loads(line))
            except ValueError:
                pass
    cands = [o for d in docs for o in walk(d) if field in o]
    if not cands:
        # text fallback: "bytes_added: 123" / "bytes added = 123"
        pat = re.escape(field).replace("_", "[_ ]")
        m = re.search(pat + r"\W{0,3}\s*(\d+)", text, re.I)
        if m:
            print(m.group(1))
        return
    if match:
        for o in cands:
            if any(isinstance(v, str) and match in v for v in o.values()) or \
               any(isinstance(v, list) and any(isinstance(x, str) and match in x for x in v)
                   for v in o.values()):
                print(o[field])
                return
    print(cands[0][field])


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    cmd = argv[1]
    if cmd == "read":
        cmd_read(argv[2])
    elif cmd == "extents":
        cmd_extents(argv[2])
    elif cmd == "diff" and len(argv) == 4:
        cmd_diff(argv[2], argv[3])
    elif cmd == "json-field" and len(argv) >= 4:
        cmd_json_field(argv[2], argv[3], argv[4] if len(argv) > 4 else None)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
