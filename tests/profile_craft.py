#!/usr/bin/env python3
"""Boot profiles (docs/profiles.md) written independently of strata's C, for
tests only: good ones, and the hostile ones a registry could hand a pull.

profile_craft.py make OUT LAYER_HEX DISK_CHUNKS FIRST:COUNT... [--version N]
        [--flags N] [--runs N] [--trailing N] [--pad-leb]
    a profile of those runs; the options break it: another version or flags,
    a run count that lies, N bytes after the last run, a LEB128 number that
    is not in its shortest form
profile_craft.py put REGISTRY REPO FILE
    upload FILE as a blob (plain HTTP); prints its digest and size
profile_craft.py chunks FILE
    the chunks a (well-formed) profile lists, one a line, in its order
    (bench/lazy.sh: what the guest read before it was ready)
"""
import hashlib
import struct
import sys
import urllib.request


def leb(v, pad=False):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            break
    if pad:  # the same number, one byte longer: not the shortest form
        out[-1] |= 0x80
        out.append(0)
    return bytes(out)


def make(argv):
    out, layer, chunks = argv[0], argv[1], int(argv[2])
    runs, opts, i = [], {}, 3
    while i < len(argv):
        a = argv[i]
        if a == "--pad-leb":
            opts["pad"] = True
        elif a.startswith("--"):
            opts[a[2:]] = int(argv[i + 1])
            i += 1
        else:
            first, count = a.split(":")
            runs.append((int(first), int(count)))
        i += 1
    head = b"STRATAPF" + struct.pack("<HHI", opts.get("version", 1), opts.get("flags", 0),
                                     opts.get("runs", len(runs)))
    head += bytes.fromhex(layer) + struct.pack("<QII", chunks, 0, 0)
    body = b"".join(leb(f, opts.get("pad", False)) + leb(c - 1) for f, c in runs)
    with open(out, "wb") as f:
        f.write(head + body + b"\0" * opts.get("trailing", 0))


def put(reg, repo, path):
    data = open(path, "rb").read()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    req = urllib.request.Request(f"http://{reg}/v2/{repo}/blobs/uploads/", method="POST", data=b"")
    with urllib.request.urlopen(req) as r:
        loc = r.headers["Location"]
    if loc.startswith("/"):
        loc = f"http://{reg}{loc}"
    sep = "&" if "?" in loc else "?"
    req = urllib.request.Request(f"{loc}{sep}digest={digest}", method="PUT", data=data,
                                 headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(req).read()
    print(digest, len(data))


def unleb(data, at):
    v = shift = 0
    while True:
        b = data[at]
        at += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, at


def chunks(path):
    data = open(path, "rb").read()
    if data[:8] != b"STRATAPF":
        sys.exit(f"{path}: not a boot profile")
    nruns = struct.unpack("<I", data[12:16])[0]
    at = 64
    for _ in range(nruns):
        first, at = unleb(data, at)
        count, at = unleb(data, at)
        for c in range(first, first + count + 1):
            print(c)


def main():
    if sys.argv[1] == "make":
        make(sys.argv[2:])
    elif sys.argv[1] == "put":
        put(*sys.argv[2:5])
    elif sys.argv[1] == "chunks":
        chunks(sys.argv[2])
    else:
        sys.exit(__doc__)


main()
