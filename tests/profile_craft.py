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


def main():
    if sys.argv[1] == "make":
        make(sys.argv[2:])
    elif sys.argv[1] == "put":
        put(*sys.argv[2:5])
    else:
        sys.exit(__doc__)


main()
