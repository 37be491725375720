#!/usr/bin/env python3
"""ram_delta.py OLD NEW [CHUNK]: compare two saved RAM files (SaveFile.qemuram).
Prints "changed_bytes unshared_bytes changed_chunk_bytes":
  changed_bytes   4 KiB pages whose content differs (the guest's written
                  pages, as far as content tells);
  unshared_bytes  blocks of NEW allocated but not shared with OLD at the
                  same offset (what NEW costs on a reflink filesystem;
                  from filefrag -v; equals NEW's allocated bytes where the
                  filesystem can't share blocks);
  changed_chunk_bytes  the chunks (CHUNK bytes, 1 MiB if not given: the
                  chunk size NEW's layer records) holding a changed page:
                  what the store records as added for NEW against OLD."""
import re, subprocess, sys

PAGE = 4096

def changed(a, b, chunk):
    n = chunks = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if not x and not y:
                return n, chunks
            if x != y:
                chunks += len(y)
            for i in range(0, max(len(x), len(y)), PAGE):
                if x[i:i + PAGE] != y[i:i + PAGE]:
                    n += PAGE

def extents(path):
    out = subprocess.run(["filefrag", "-v", path], capture_output=True, text=True).stdout
    bs = int(re.search(r"blocks of (\d+) bytes", out).group(1))
    ext = []
    for m in re.finditer(r"^\s*\d+:\s+(\d+)\.\.\s*(\d+):\s+(\d+)\.\.\s*\d+:", out, re.M):
        ext.append((int(m.group(1)), int(m.group(2)), int(m.group(3))))
    return bs, ext

def unshared(a, b):
    _, ea = extents(a)
    bs, eb = extents(b)
    phys = {}
    for lo, hi, p in ea:
        for k in range(lo, hi + 1):
            phys[k] = p + k - lo
    n = 0
    for lo, hi, p in eb:
        for k in range(lo, hi + 1):
            if phys.get(k) != p + k - lo:
                n += 1
    return n * bs

pages, chunks = changed(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1 << 20)
print(pages, unshared(sys.argv[1], sys.argv[2]), chunks)
