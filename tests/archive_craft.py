#!/usr/bin/env python3
"""Handcraft strata archives, good and hostile, for tests/archive.sh.

    archive_craft.py CASE OUT.tar      write one case (plain tar; the test compresses it)
    archive_craft.py state MANIFEST OUT.tar
                                       a child of the layer whose manifest is given,
                                       with a saved-state file and bind lines

Every case is the same tiny layer (Disk.img: 2 MiB, chunk 0 data, chunk 1 a
hole; written as a GNU sparse 1.0 entry like strata's own) with one thing
wrong, so a refusal can only come from that thing. "good" has nothing wrong.
"""
import hashlib
import io
import sys
import tarfile

CHUNK = 1 << 20
TOP = "t.bundle"
META = TOP + "/.strata-layer"
DATA = bytes((i * 7 + 3) % 251 for i in range(CHUNK))
INFO = b"created 1700000000\nmessage crafted\nbytes-added 1048576\n"


def manifest(size=2 * CHUNK, chunks=None, extra=b""):
    if chunks is None:
        chunks = [hashlib.sha256(DATA).hexdigest(), "zero 1"]
    text = "strata-layer 1\nfile Disk.img %d 0644 %d\n" % (size, CHUNK)
    return b"".join([text.encode(), "\n".join(chunks).encode(), b"\n", extra])


def add(tar, name, data=b"", kind=tarfile.REGTYPE, size=None, pax=None, link=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o644
    info.mtime = 1700000000
    info.linkname = link
    info.size = len(data) if size is None else size
    if pax:
        info.pax_headers = pax
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def sparse(tar, name, realsize, regions, payload=None, map_text=None):
    """A GNU sparse 1.0 entry: map at the start of the data, name in pax."""
    if map_text is None:
        map_text = "%d\n" % len(regions) + "".join("%d\n%d\n" % r for r in regions)
    raw = map_text.encode()
    raw += b"\0" * (-len(raw) % 512)
    if payload is None:
        payload = b"".join(DATA[:n] for _, n in regions)
    pax = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": name,
           "GNU.sparse.realsize": str(realsize)}
    add(tar, TOP + "/GNUSparseFile.0/Disk.img", raw + payload, pax=pax)


def head(tar, layers=1):
    add(tar, META + "/archive", b"strata-archive 1\nlayers %d\n" % layers)


def build(case, out):
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        m = manifest()
        if case == "bomb":  # 1 GiB of zeros where the manifest says: all holes
            m = b"strata-layer 1\nfile Disk.img %d 0644 %d\nzero 1024\n" % (1 << 30, CHUNK)
        head(tar)
        add(tar, META + "/manifest", m)
        add(tar, META + "/info", INFO)
        disk = TOP + "/Disk.img"
        if case == "traversal":
            add(tar, TOP + "/../evil", b"x")
        elif case == "absolute":
            add(tar, "/tmp/strata-evil", b"x")
        elif case == "symlink":
            add(tar, disk, kind=tarfile.SYMTYPE, link="/etc/passwd")
        elif case == "hardlink":
            add(tar, disk, kind=tarfile.LNKTYPE, link=META + "/info")
        elif case == "device":
            add(tar, disk, kind=tarfile.CHRTYPE)
        elif case == "fifo":
            add(tar, disk, kind=tarfile.FIFOTYPE)
        elif case == "directory":
            add(tar, disk, kind=tarfile.DIRTYPE)
        elif case == "size-lies":
            sparse(tar, disk, 3 * CHUNK, [(0, CHUNK)])
        elif case == "overlap":
            sparse(tar, disk, 2 * CHUNK, [(0, CHUNK), (CHUNK // 2, CHUNK)],
                   payload=DATA + DATA)
        elif case == "past-end":
            sparse(tar, disk, 2 * CHUNK, [(0, CHUNK), (2 * CHUNK - 4096, 8192)],
                   payload=DATA + DATA[:8192])
        elif case == "mismatch":
            bad = bytearray(DATA)
            bad[1000] ^= 1
            sparse(tar, disk, 2 * CHUNK, [(0, CHUNK)], payload=bytes(bad))
        elif case == "unnamed":
            sparse(tar, disk, 2 * CHUNK, [(0, CHUNK)])
            add(tar, TOP + "/Extra", b"not in the manifest")
        elif case == "duplicate":
            sparse(tar, disk, 2 * CHUNK, [(0, CHUNK)])
            sparse(tar, disk, 2 * CHUNK, [(0, CHUNK)])
        elif case == "missing":
            pass
        elif case == "bomb":
            info = tarfile.TarInfo(disk)
            info.size = 1 << 30
            info.mode = 0o644
            tar.addfile(info, Zeros(1 << 30))
        elif case == "good":
            sparse(tar, disk, 2 * CHUNK, [(0, CHUNK)])
        else:
            sys.exit("archive_craft: no case " + case)


class Zeros(io.RawIOBase):
    def __init__(self, n):
        self.left = n

    def readable(self):
        return True

    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return b"\0" * n


def state(parent_manifest, out):
    """A saved-state child: the parent's files, a state file and bind lines."""
    pm = open(parent_manifest, "rb").read()
    parent = hashlib.sha256(pm).hexdigest()
    lines = pm.split(b"\n")
    st = b"S" * 4096
    body = b"\n".join(lines[1:])
    bind = (b"bind driver qemu\nbind host crafted-host\n")
    files = body + b"file SaveFile.qemustate 4096 0644 1048576\n" + \
        hashlib.sha256(st).hexdigest().encode() + b"\n"
    m = b"strata-layer 1\nparent " + parent.encode() + b"\n" + bind + files
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        head(tar)
        add(tar, META + "/manifest", m)
        add(tar, META + "/info", INFO)
        add(tar, TOP + "/SaveFile.qemustate", st)
    print(hashlib.sha256(m).hexdigest())


if __name__ == "__main__":
    if sys.argv[1] == "state":
        state(sys.argv[2], sys.argv[3])
    else:
        build(sys.argv[1], sys.argv[2])
