/*
 * The byte streams under the tar: zstd compression on all cores on the way
 * out, bounded zstd decompression on the way in, and the module's errors.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <archive.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *archive_error(void)
{
    return err_last()->message;
}

/* ---------- out ---------- */

static int write_fd(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        p += w, len -= (size_t)w;
    }
    return 0;
}

int ar_zout_open(ar_zout *z, int fd, int level, int threads)
{
    memset(z, 0, sizeof *z);
    z->fd = fd;
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    z->cap = ZSTD_CStreamOutSize();
    z->cctx = ZSTD_createCCtx();
    z->buf = malloc(z->cap);
    if (!z->cctx || !z->buf)
        return ar_fail(ENOMEM, "out of memory");
    if (ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_compressionLevel, level ? level : 3)))
        return ar_fail(EINVAL, "zstd level %d is not supported", level);
    ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_checksumFlag, 1);
    /* a libzstd built without threads refuses: then one core it is */
    if (threads > 1)
        ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_nbWorkers, threads);
    /* Each worker holds about two jobs; zstd's default job at level 3 costs
     * ~25 MiB per worker, which would pass 200 MB from 8 cores. Smaller
     * jobs cost a little ratio (4 MiB: 0.15%, 2 MiB: 0.3%, measured). */
    if (threads > 8)
        ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_jobSize, 2 << 20);
    else if (threads > 2)
        ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_jobSize, 4 << 20);
    return 0;
}

static int zout_pump(ar_zout *z, const void *data, size_t len, ZSTD_EndDirective end)
{
    ZSTD_inBuffer in = {data, len, 0};
    for (;;) {
        ZSTD_outBuffer out = {z->buf, z->cap, 0};
        size_t left = ZSTD_compressStream2(z->cctx, &out, &in, end);
        if (ZSTD_isError(left))
            return ar_fail(EIO, "zstd: %s", ZSTD_getErrorName(left));
        if (out.pos) {
            int rc = write_fd(z->fd, z->buf, out.pos);
            if (rc)
                return ar_fail(-rc, "writing the archive: %s", strerror(-rc));
            z->out += out.pos;
        }
        if (end == ZSTD_e_end ? left == 0 : in.pos == in.size)
            return 0;
    }
}

int ar_zout_write(ar_zout *z, const void *data, size_t len)
{
    z->in += len;
    return zout_pump(z, data, len, ZSTD_e_continue);
}

int ar_zout_finish(ar_zout *z)
{
    return zout_pump(z, NULL, 0, ZSTD_e_end);
}

void ar_zout_free(ar_zout *z)
{
    ZSTD_freeCCtx(z->cctx);
    free(z->buf);
    memset(z, 0, sizeof *z);
}

/* ---------- in ---------- */

int ar_zin_open(ar_zin *z, int fd)
{
    memset(z, 0, sizeof *z);
    z->fd = fd;
    z->in_cap = ZSTD_DStreamInSize();
    z->out_cap = 1u << 20;
    z->dctx = ZSTD_createDCtx();
    z->in = malloc(z->in_cap);
    z->out = malloc(z->out_cap);
    z->limit = 4u << 20; /* enough for the first entries; the importer raises it */
    if (!z->dctx || !z->in || !z->out)
        return ar_fail(ENOMEM, "out of memory");
    /* 128 MiB windows at most: a hostile frame can't ask for more memory */
    ZSTD_DCtx_setParameter(z->dctx, ZSTD_d_windowLogMax, 27);
    return 0;
}

static int fill(ar_zin *z)
{
    if (z->in_pos < z->in_len || z->eof)
        return 0;
    for (;;) {
        ssize_t r = read(z->fd, z->in, z->in_cap);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(z->err, sizeof z->err, "reading the archive: %s", strerror(errno));
            return -1;
        }
        z->in_len = (size_t)r;
        z->in_pos = 0;
        z->bytes_in += (uint64_t)r;
        z->eof = r == 0;
        return 0;
    }
}

/* Decompress the next piece; 0 bytes at a clean end. -1 on error (z->err). */
static long zin_next(ar_zin *z, const void **buf)
{
    if (fill(z))
        return -1;
    if (!z->started && !z->eof) {
        static const unsigned char magic[4] = {0x28, 0xb5, 0x2f, 0xfd};
        z->raw = z->in_len < 4 || memcmp(z->in, magic, 4);
        z->started = 1;
    }
    if (z->raw) {
        long n = (long)(z->in_len - z->in_pos);
        *buf = z->in + z->in_pos;
        z->in_pos = z->in_len;
        z->bytes_out += (uint64_t)n;
        return n;
    }
    for (;;) {
        if (z->in_pos == z->in_len) {
            if (fill(z))
                return -1;
            if (z->eof) {
                if (z->frame_open) {
                    snprintf(z->err, sizeof z->err,
                             "the archive is truncated (its zstd stream ends mid-frame)");
                    return -1;
                }
                return 0;
            }
        }
        ZSTD_inBuffer in = {z->in, z->in_len, z->in_pos};
        ZSTD_outBuffer out = {z->out, z->out_cap, 0};
        size_t r = ZSTD_decompressStream(z->dctx, &out, &in);
        z->in_pos = in.pos;
        if (ZSTD_isError(r)) {
            snprintf(z->err, sizeof z->err, "the archive's zstd stream is damaged: %s",
                     ZSTD_getErrorName(r));
            return -1;
        }
        z->frame_open = r != 0;
        if (out.pos) {
            *buf = z->out;
            z->bytes_out += out.pos;
            return (long)out.pos;
        }
    }
}

la_ssize_t ar_zin_read(struct archive *a, void *ctx, const void **buf)
{
    ar_zin *z = ctx;
    long n = zin_next(z, buf);
    if (n > 0 && z->bytes_out > z->limit) {
        snprintf(z->err, sizeof z->err,
                 "the archive holds more bytes than its manifests account for (%llu "
                 "decompressed, at most %llu expected): refused as a decompression bomb",
                 (unsigned long long)z->bytes_out, (unsigned long long)z->limit);
        n = -1;
    }
    if (n < 0)
        archive_set_error(a, EINVAL, "%s", z->err);
    return n;
}

int ar_zin_drain(ar_zin *z)
{
    const void *buf;
    long n;
    while ((n = zin_next(z, &buf)) > 0) {
        /* only the zero padding of the tar's last block may follow its end */
        for (long i = 0; i < n; i++)
            if (((const unsigned char *)buf)[i])
                return ar_fail(EINVAL, "the archive has data after its end");
        if (z->bytes_out > z->limit)
            return ar_fail(EINVAL, "the archive has more padding after its end than a tar has");
    }
    return n < 0 ? ar_fail(EINVAL, "%s", z->err) : 0;
}

void ar_zin_free(ar_zin *z)
{
    ZSTD_freeDCtx(z->dctx);
    free(z->in);
    free(z->out);
    memset(z, 0, sizeof *z);
}
