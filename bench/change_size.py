#!/usr/bin/env python3
"""What a change costs to upload, by two reference schemes (bench/remote.sh).

  change_size.py BASE_DIR CHILD_DIR [TART_CHUNK]

compares the files of two bundles (same names; a file only in CHILD counts
whole; a clone's .strata* markers are left out) and prints one JSON object:

  floor: every 4 KiB block whose content differs between BASE and CHILD
    (holes read as zeros), the CHILD's blocks concatenated, file by file,
    and piped through `zstd -q -c` (default level 3). changed_bytes is their
    raw size, floor_zstd_bytes the compressed size.

  granule: the CHILD's changed 1 MiB windows (strata's default chunk, at
    the same places), all-zero ones left out (strata stores those as zero
    chunks and never uploads them): granule_bytes raw, granule_zstd_bytes
    with each window compressed alone at zstd level 3 through libzstd's
    ZSTD_compress (content size, no checksum: the frames strata's packs
    hold). The gap between floor and granule is what chunk granularity and
    one-frame-per-chunk compression cost.

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
import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
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


ZSTD = None


def zstd_frame_size(data):
    """Size of data compressed alone at level 3 with ZSTD_compress."""
    global ZSTD
    if ZSTD is None:
        ZSTD = ctypes.CDLL(ctypes.util.find_library("zstd") or "libzstd.so.1")
        ZSTD.ZSTD_compressBound.restype = ctypes.c_size_t
        ZSTD.ZSTD_compressBound.argtypes = [ctypes.c_size_t]
        ZSTD.ZSTD_compress.restype = ctypes.c_size_t
        ZSTD.ZSTD_compress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p,
                                       ctypes.c_size_t, ctypes.c_int]
        ZSTD.ZSTD_isError.argtypes = [ctypes.c_size_t]
    cap = ZSTD.ZSTD_compressBound(len(data))
    dst = ctypes.create_string_buffer(cap)
    n = ZSTD.ZSTD_compress(dst, cap, data, len(data), 3)
    if ZSTD.ZSTD_isError(n):
        sys.exit("change_size.py: ZSTD_compress failed")
    return n


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


def diff_file(a, b, zstd_in, piece, gr):
    """Write b's changed 4 KiB blocks to zstd_in; count b's changed non-zero
    1 MiB windows in gr; return (changed blocks, set of changed piece
    numbers, b's size)."""
    fb = os.open(b, os.O_RDONLY)
    sb = os.fstat(fb).st_size
    fa = os.open(a, os.O_RDONLY) if os.path.exists(a) else None
    sa = os.fstat(fa).st_size if fa is not None else 0
    if fa is None:  # a file new in the child: every block of it
        fa = os.open("/dev/null", os.O_RDONLY)
    changed, pieces = 0, set()
    for s, e in merged_ranges(fa, sa, fb, sb, WIN):
        off = s
        while off < e:
            n = min(WIN, e - off)
            x = pread_full(fa, n, off, sa)
            y = pread_full(fb, n, off, sb)
            if x != y or sa != sb and off + n > min(sa, sb):
                if y.count(0) != len(y):
                    gr["bytes"] += len(y)
                    gr["zstd"] += zstd_frame_size(y)
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
    # .strata* are a clone's own markers, not bundle content
    names = sorted(n for n in os.listdir(child)
                   if os.path.isfile(os.path.join(child, n)) and not n.startswith(".strata"))
    zp = subprocess.Popen(["zstd", "-q", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    zcount = CountReader(zp.stdout)
    zcount.start()
    gr = {"bytes": 0, "zstd": 0}
    out = {"files": {}, "changed_bytes": 0, "tart_chunk": piece, "tart_chunks": 0,
           "tart_chunks_changed": 0, "tart_changed_lz4_bytes": 0, "tart_base_lz4_bytes": 0}
    check = None
    for n in names:
        a, b = os.path.join(base, n), os.path.join(child, n)
        blocks, pieces, size = diff_file(a, b, zp.stdin, piece, gr)
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
    out["granule_bytes"], out["granule_zstd_bytes"] = gr["bytes"], gr["zstd"]
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
