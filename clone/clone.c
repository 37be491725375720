/* clone: see clone.h for what each function promises. The platform's
 * calls (clonefile, FICLONE, copy_file_range, FIEMAP...) are behind
 * base/platform.h; this file is the fallbacks between them. */
#define _GNU_SOURCE
#include "clone.h"
#include "../base/platform.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COPY_BUF (1u << 20)

static int all_zero(const unsigned char *p, size_t n)
{
    /* memcmp against itself shifted by one compares at memory speed */
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* read/write copy of one data range. With skip_zero, all-zero blocks are
 * left unwritten: callers pass it only where dst already reads as zeros. */
static int copy_rw(int src, int dst, uint64_t off, uint64_t len, int skip_zero)
{
    unsigned char *buf = malloc(COPY_BUF);
    if (!buf)
        return -ENOMEM;
    int rc = 0;
    while (len > 0) {
        size_t want = len < COPY_BUF ? (size_t)len : COPY_BUF;
        ssize_t got = pread(src, buf, want, (off_t)off);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        if (got == 0)
            break; /* source shrank under us: nothing more to copy */
        for (size_t at = 0; at < (size_t)got;) {
            size_t blk = (size_t)got - at < 4096 ? (size_t)got - at : 4096;
            if (!skip_zero || !all_zero(buf + at, blk)) {
                ssize_t put = pwrite(dst, buf + at, blk, (off_t)(off + at));
                if (put < 0) {
                    if (errno == EINTR)
                        continue;
                    rc = -errno;
                    goto out;
                }
                blk = (size_t)put;
            }
            at += blk;
        }
        off += (uint64_t)got;
        len -= (uint64_t)got;
    }
out:
    free(buf);
    return rc;
}

/* A copy's caller between its pieces (clone_fd_paced); NULL: none. */
typedef struct {
    clone_step_fn fn;
    void *ctx;
} copy_pace;

/* copy one data range, in-kernel where possible, in pieces of at most
 * CLONE_STEP_MAX bytes when paced, each handed to the caller once written */
static int copy_data(int src, int dst, uint64_t off, uint64_t len, int skip_zero,
                     const copy_pace *pace)
{
    while (len > 0) {
        uint64_t want = pace && len > CLONE_STEP_MAX ? CLONE_STEP_MAX : len;
        int64_t n = os_copy_range(src, dst, off, want);
        if (n == -EOPNOTSUPP) {
            int rc = copy_rw(src, dst, off, want, skip_zero);
            n = rc ? rc : (int64_t)want;
        }
        if (n < 0)
            return (int)n;
        if (n == 0)
            break;
        if (pace) {
            int rc = pace->fn(pace->ctx, dst, off, (uint64_t)n);
            if (rc)
                return rc;
        }
        off += (uint64_t)n;
        len -= (uint64_t)n;
    }
    return 0;
}

int clone_next_data(int fd, uint64_t off, uint64_t size, uint64_t *data, uint64_t *hole)
{
    if (off >= size)
        return -ENXIO;
    off_t d = lseek(fd, (off_t)off, SEEK_DATA);
    if (d < 0) {
        if (errno == ENXIO)
            return -ENXIO;
        if (errno != EINVAL && errno != ENOTSUP && errno != EOPNOTSUPP)
            return -errno;
        *data = off; /* no hole support: everything is data */
        *hole = size;
        return 0;
    }
    if ((uint64_t)d >= size)
        return -ENXIO;
    off_t h = lseek(fd, d, SEEK_HOLE);
    if (h < 0)
        return -errno;
    *data = (uint64_t)d;
    *hole = (uint64_t)h > size ? size : (uint64_t)h;
    return 0;
}

/* sparse copy of [off, end) into a dst range that reads as zeros: only
 * data extents move */
static int sparse_copy(int src, int dst, uint64_t off, uint64_t end, const copy_pace *pace)
{
    while (off < end) {
        uint64_t d, h;
        int rc = clone_next_data(src, off, end, &d, &h);
        if (rc == -ENXIO)
            return 0;
        if (rc)
            return rc;
        if ((rc = copy_data(src, dst, d, h - d, 1, pace)))
            return rc;
        off = h;
    }
    return 0;
}

int clone_fd_paced(int src_fd, int dst_fd, clone_method *method, clone_step_fn step, void *ctx)
{
    struct stat st;
    if (fstat(src_fd, &st) < 0)
        return -errno;
    if (os_reflink_fd(src_fd, dst_fd) == 0) {
        if (method)
            *method = CLONE_REFLINK;
        return 0;
    }
    if (method)
        *method = CLONE_SPARSE_COPY;
    if (ftruncate(dst_fd, 0) < 0 || ftruncate(dst_fd, st.st_size) < 0)
        return -errno;
    copy_pace pace = {step, ctx};
    return sparse_copy(src_fd, dst_fd, 0, (uint64_t)st.st_size, step ? &pace : NULL);
}

int clone_fd(int src_fd, int dst_fd, clone_method *method)
{
    return clone_fd_paced(src_fd, dst_fd, method, NULL, NULL);
}

/* Give path its final mode through a read-only fd: the clone can arrive
 * 0444 (clonefile copies the layer file's mode), and its owner may change
 * the mode of a file it could not open for writing. */
static int set_mode(const char *path, mode_t mode)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    int rc = fchmod(fd, mode) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* clone_fd_to_path, its copy paced by step (may be NULL) */
static int fd_to_path(int src_fd, const char *dst, mode_t mode, clone_method *method,
                      clone_step_fn step, void *ctx)
{
    struct stat st;
    if (fstat(src_fd, &st) < 0)
        return -errno;
    /* created with the source's mode, as clonefile does, so that the mode is
     * set the same way on every system (and tested where there is no Mac) */
    int d = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, st.st_mode & 07777);
    if (d < 0)
        return -errno;
    int rc = clone_fd_paced(src_fd, d, method, step, ctx);
    if (close(d) < 0 && !rc)
        rc = -errno;
    if (!rc)
        rc = set_mode(dst, mode);
    if (rc)
        unlink(dst);
    return rc;
}

int clone_path_paced(const char *src, const char *dst, mode_t mode, clone_method *method,
                     clone_step_fn step, void *ctx)
{
    int cloned = os_clone_file(src, dst);
    if (cloned == 0) {
        if (method)
            *method = CLONE_REFLINK;
        int rc = set_mode(dst, mode);
        if (rc)
            unlink(dst);
        return rc;
    }
    if (cloned == -EEXIST)
        return -EEXIST;
    /* any other failure (no clonefile here, ENOTSUP, EXDEV...) falls back to copying */
    int s = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (s < 0)
        return -errno;
    int rc = fd_to_path(s, dst, mode, method, step, ctx);
    close(s);
    return rc;
}

int clone_path(const char *src, const char *dst, mode_t mode, clone_method *method)
{
    return clone_path_paced(src, dst, mode, method, NULL, NULL);
}

int clone_fd_to_path(int src_fd, const char *dst, mode_t mode, clone_method *method)
{
    return fd_to_path(src_fd, dst, mode, method, NULL, NULL);
}

int clone_range(int src_fd, int dst_fd, uint64_t off, uint64_t len)
{
    if (len == 0)
        return 0; /* FICLONERANGE reads a zero length as "to EOF": never pass one */
    if (os_reflink_range(src_fd, dst_fd, off, len) == 0)
        return 0;
    /* Make the destination range zeros first, so holes in the source read
     * back as zeros; where punching is impossible, copy every byte. */
    if (clone_punch_hole(dst_fd, off, len) == 0)
        return sparse_copy(src_fd, dst_fd, off, off + len, NULL);
    return copy_data(src_fd, dst_fd, off, len, 0, NULL);
}

int clone_punch_hole(int fd, uint64_t off, uint64_t len)
{
    return os_punch_hole(fd, off, len);
}

/* Can a file in dir_a be cloned into dir_b? Tried for real with two small
 * temporary files: btrfs subvolumes differ in st_dev yet share blocks. */
static int clone_probe(const char *dir_a, const char *dir_b)
{
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s/.strata-probe-XXXXXX", dir_a);
    snprintf(pb, sizeof pb, "%s/.strata-probe-XXXXXX", dir_b);
    int fa = mkstemp(pa);
    if (fa < 0)
        return 0;
    int fb = mkstemp(pb), ok = 0;
    if (fb >= 0) {
        static const char block[4096] = {1};
        ok = pwrite(fa, block, sizeof block, 0) == (ssize_t)sizeof block && fsync(fa) == 0 &&
             os_reflink_fd(fa, fb) == 0;
        close(fb);
        unlink(pb);
    }
    close(fa);
    unlink(pa);
    return ok;
}

int clone_same_volume(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) < 0 || stat(b, &sb) < 0)
        return -errno;
    if (sa.st_dev == sb.st_dev)
        return 1;
    return S_ISDIR(sa.st_mode) && S_ISDIR(sb.st_mode) && clone_probe(a, b);
}

static int map_push(clone_extent_map *m, size_t *cap, clone_extent e)
{
    if (m->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        clone_extent *v = realloc(m->v, nc * sizeof *v);
        if (!v)
            return -ENOMEM;
        m->v = v;
        *cap = nc;
    }
    m->v[m->n++] = e;
    return 0;
}

typedef struct {
    clone_extent_map *map;
    size_t cap;
} map_building;

static int map_visit(void *ctx, uint64_t logical, uint64_t physical, uint64_t length, int unsure)
{
    map_building *b = ctx;
    clone_extent e = {.logical = logical, .physical = physical, .length = length,
                      .flags = unsure ? CLONE_EXTENT_UNSURE : 0};
    return map_push(b->map, &b->cap, e);
}

int clone_extent_map_read(int fd, clone_extent_map *map)
{
    map->v = NULL;
    map->n = 0;
    map_building b = {.map = map, .cap = 0};
    int rc = os_extent_map_walk(fd, map_visit, &b);
    if (rc)
        clone_extent_map_free(map);
    return rc;
}

void clone_extent_map_free(clone_extent_map *map)
{
    free(map->v);
    map->v = NULL;
    map->n = 0;
}

/* Clip the map to [off, end) and merge runs contiguous in both logical and
 * physical space, so two maps that split the same bytes differently compare
 * equal. Writes up to cap segments to out; returns the count, -1 if UNSURE
 * or out of room. */
static long clip(const clone_extent_map *m, uint64_t off, uint64_t end, clone_extent *out,
                 size_t cap)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) { /* first extent ending after off */
        size_t mid = (lo + hi) / 2;
        if (m->v[mid].logical + m->v[mid].length <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t n = 0;
    for (size_t i = lo; i < m->n && m->v[i].logical < end; i++) {
        const clone_extent *x = &m->v[i];
        if (x->flags & CLONE_EXTENT_UNSURE)
            return -1;
        uint64_t s = x->logical > off ? x->logical : off;
        uint64_t e = x->logical + x->length < end ? x->logical + x->length : end;
        if (s >= e)
            continue;
        clone_extent seg = {.logical = s, .physical = x->physical + (s - x->logical),
                            .length = e - s};
        if (n > 0 && out[n - 1].logical + out[n - 1].length == seg.logical &&
            out[n - 1].physical + out[n - 1].length == seg.physical) {
            out[n - 1].length += seg.length;
            continue;
        }
        if (n == cap)
            return -1;
        out[n++] = seg;
    }
    return (long)n;
}

int clone_extent_map_same(const clone_extent_map *a, const clone_extent_map *b, uint64_t off,
                          uint64_t len)
{
    enum { CAP = 64 }; /* a chunk split into more pieces than this is simply re-read */
    clone_extent sa[CAP], sb[CAP];
    long na = clip(a, off, off + len, sa, CAP);
    long nb = clip(b, off, off + len, sb, CAP);
    if (na < 0 || nb < 0 || na != nb)
        return 0;
    for (long i = 0; i < na; i++)
        if (sa[i].logical != sb[i].logical || sa[i].physical != sb[i].physical ||
            sa[i].length != sb[i].length)
            return 0;
    return 1;
}
