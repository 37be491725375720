#!/usr/bin/env python3
"""What a change costs to upload, by two reference schemes (bench/remote.sh).

  change_size.py BASE_DIR CHILD_DIR [TART_CHUNK]

compares the files of two bundles (same names; a file only in CHILD counts
whole) and prints one JSON object:

  floor: every 4 KiB block whose content differs between BASE and CHILD
    (holes read as zeros), the CHILD's blocks concatenated, file by file,
    and piped through `zstd -q -c` (default level 3). changed_bytes is their
    raw size, floor_zstd_bytes the compressed size.

  tart: each file cut in TART_CHUNK pieces (default 512 MiB, tart's
    layerLimitBytes), each piece compressed alone with `lz4 -1` (tart uses
    Apple's LZ4, same algorithm, own block framing). Every piece whose
    content differs is what tart re-uploads: tart_changed_lz4_bytes. The
    compressed size of every piece of BASE (tart's first push) is
    tart_base_lz4_bytes.

Fast on a 64 GiB sparse file: only SEEK_DATA ranges are read; 1 MiB windows
are compared first, 4 KiB blocks only where a window differs. lz4's frame
has independent 4 MiB blocks (-BI -B7, its default), so a piece's size is
the frame overhead plus the sum of its blocks' sizes, and every all-zero
block costs the same: zero blocks are counted, not compressed, and only
non-zero blocks go through lz4 (the formula is checked against a full
`lz4 -1` of one changed piece of the file with the most changed blocks;
tart_check says so).
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sparse_tool import data_ranges, pread_full  # noqa: E402

BLK = 4096
WIN = 1 << 20
LZ4_BLOCK = 4 << 20
ZERO_LZ4 = bytes(LZ4_BLOCK)


def lz4_size(chunks):
    """Bytes `lz4 -1 -c` makes of the concatenation of chunks (an iterable)."""
    p = subprocess.Popen(["lz4", "-1", "-q", "-c"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    counter = CountReader(p.stdout)
    counter.start()
    for c in chunks:
        p.stdin.write(c)
    p.stdin.close()
    counter.join()
    if p.wait() != 0:
        sys.exit("change_size.py: lz4 failed")
    return counter.n


class CountReader:
    """Counts a pipe's bytes in a thread, so the writer never blocks on it."""

    def __init__(self, f):
        import threading
        self.f, self.n = f, 0
        self.t = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.t.start()

    def run(self):
        while True:
            b = self.f.read(1 << 20)
            if not b:
                return
            self.n += len(b)

    def join(self):
        self.t.join()


def merged_ranges(fa, sa, fb, sb, align):
    """Union of the data ranges of both files, aligned out to `align`."""
    size = max(sa, sb)
    rs = sorted(list(data_ranges(fa, sa)) + list(data_ranges(fb, sb)))
    out = []
    for s, e in rs:
        s -= s % align
        e = min(size, (e + align - 1) // align * align)
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def diff_file(a, b, zstd_in, piece):
    """Write b's changed 4 KiB blocks to zstd_in; return (changed blocks,
    set of changed piece numbers, b's size)."""
    fb = os.open(b, os.O_RDONLY)
    sb = os.fstat(fb).st_size
    fa = os.open(a, os.O_RDONLY) if os.path.exists(a) else None
    sa = os.fstat(fa).st_size if fa is not None else 0
    if fa is None:  # a file new in the child: every block of it
        fa = os.open("/dev/null", os.O_RDONLY)
    changed, pieces = 0, set()
    for s, e in merged_ranges(fa, sa, fb, sb, BLK):
        off = s
        while off < e:
            n = min(WIN, e - off)
            x = pread_full(fa, n, off, sa)
            y = pread_full(fb, n, off, sb)
            if x != y or sa != sb and off + n > min(sa, sb):
                for i in range(0, n, BLK):
                    if x[i:i + BLK] != y[i:i + BLK]:
                        changed += 1
                        zstd_in.write(y[i:i + BLK])
                        pieces.add((off + i) // piece)
            off += n
    if sa != sb:  # a size change changes the pieces past the shorter end
        pieces.update(range(min(sa, sb) // piece, (max(sa, sb) + piece - 1) // piece))
    os.close(fa)
    os.close(fb)
    return changed, pieces, sb


def nonzero_blocks(path, pieces, piece, stats):
    """Yield the non-zero 4 MiB lz4 blocks of the given pieces of path (in
    order); count the all-zero ones in stats["zero"], the others in
    stats["data"]."""
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    data = list(data_ranges(fd, size))
    di = 0
    for p in sorted(pieces):
        start, end = p * piece, min(size, (p + 1) * piece)
        for off in range(start, end, LZ4_BLOCK):
            n = min(LZ4_BLOCK, end - off)
            while di < len(data) and data[di][1] <= off:
                di += 1
            holey = di >= len(data) or data[di][0] >= off + n
            if n == LZ4_BLOCK and holey:
                stats["zero"] += 1
                continue
            b = pread_full(fd, n, off, size)
            if n == LZ4_BLOCK and b == ZERO_LZ4:
                stats["zero"] += 1
                continue
            if n != LZ4_BLOCK:
                stats["short"] += 1
            stats["data"] += 1
            yield b
    os.close(fd)


def tart_bytes(path, pieces, piece):
    """lz4 -1 size of each piece of path compressed alone, summed."""
    if not pieces:
        return 0
    stats = {"zero": 0, "data": 0, "short": 0}
    data_frame = lz4_size(nonzero_blocks(path, pieces, piece, stats))
    if stats["short"] > 1:
        sys.exit("change_size.py: %s: more than one short lz4 block" % path)
    return per_piece_formula(len(pieces), data_frame, stats["zero"])


FRAME = None
ZERO_BLOCK = None


def per_piece_formula(npieces, data_frame, nzero):
    """npieces frames: each frame costs its overhead once; the data blocks'
    sizes come from one frame holding them all, zero blocks at a fixed cost."""
    global FRAME, ZERO_BLOCK
    if FRAME is None:
        FRAME = lz4_size([])
        ZERO_BLOCK = lz4_size([ZERO_LZ4]) - FRAME
    return npieces * FRAME + (data_frame - FRAME) + nzero * ZERO_BLOCK


def whole_piece(path, p, piece):
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size

    def gen():
        for off in range(p * piece, min(size, (p + 1) * piece), 8 << 20):
            yield pread_full(fd, min(8 << 20, min(size, (p + 1) * piece) - off), off, size)
    n = lz4_size(gen())
    os.close(fd)
    return n


def all_pieces(path, piece):
    size = os.stat(path).st_size
    return set(range((size + piece - 1) // piece))


def main(argv):
    if len(argv) not in (3, 4):
        sys.exit(__doc__)
    base, child = argv[1], argv[2]
    piece = int(argv[3]) if len(argv) == 4 else 512 << 20
    if piece % LZ4_BLOCK:
        sys.exit("change_size.py: TART_CHUNK must be a multiple of 4 MiB")
    t0 = time.monotonic()
    names = sorted(n for n in os.listdir(child) if os.path.isfile(os.path.join(child, n)))
    zp = subprocess.Popen(["zstd", "-q", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    zcount = CountReader(zp.stdout)
    zcount.start()
    out = {"files": {}, "changed_bytes": 0, "tart_chunk": piece, "tart_chunks": 0,
           "tart_chunks_changed": 0, "tart_changed_lz4_bytes": 0, "tart_base_lz4_bytes": 0}
    check = None
    for n in names:
        a, b = os.path.join(base, n), os.path.join(child, n)
        blocks, pieces, size = diff_file(a, b, zp.stdin, piece)
        lz = tart_bytes(b, pieces, piece)
        base_lz = tart_bytes(a, all_pieces(a, piece), piece) if os.path.exists(a) else 0
        out["files"][n] = {"changed_bytes": blocks * BLK, "tart_chunks_changed": len(pieces),
                           "tart_changed_lz4_bytes": lz}
        out["changed_bytes"] += blocks * BLK
        out["tart_chunks"] += (size + piece - 1) // piece
        out["tart_chunks_changed"] += len(pieces)
        out["tart_changed_lz4_bytes"] += lz
        out["tart_base_lz4_bytes"] += base_lz
        if pieces and (check is None or blocks > check[3]):
            check = (b, min(pieces), 0, blocks)
    zp.stdin.close()
    zcount.join()
    if zp.wait() != 0:
        sys.exit("change_size.py: zstd failed")
    out["floor_zstd_bytes"] = zcount.n
    if check:
        check = (check[0], check[1], tart_bytes(check[0], {check[1]}, piece))
        full = whole_piece(check[0], check[1], piece)
        out["tart_check"] = "%s piece %d: formula %d, lz4 -1 of the whole piece %d" % (
            os.path.basename(check[0]), check[1], check[2], full)
        if full != check[2]:
            sys.exit("change_size.py: lz4 size formula is off: " + out["tart_check"])
    out["seconds"] = round(time.monotonic() - t0, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
