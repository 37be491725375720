/* Shared by archive/'s own files only. */
#ifndef STRATA_ARCHIVE_INTERNAL_H
#define STRATA_ARCHIVE_INTERNAL_H

#include "archive.h"

#include <archive.h>
#include <stdint.h>
#include <zstd.h>

/* errors: set the thread's message and return -err (err > 0) */
int ar_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* pass a store failure on with its message */
int ar_store_failed(int rc);

/* Names inside an archive (docs/archive.md). */
#define AR_META ".strata-layer"       /* NAME.bundle/.strata-layer/ */
#define AR_HEAD "strata-archive 1\n"
#define AR_MAX_LAYERS 256             /* a chain longer than this is refused */
#define AR_MANIFESTS_MAX (256u << 20) /* all manifests of one archive, in bytes */

/* zstd compression of everything libarchive writes, straight to a fd */
typedef struct {
    int fd;
    ZSTD_CCtx *cctx;
    unsigned char *buf;
    size_t cap;
    uint64_t in, out;
} ar_zout;
int ar_zout_open(ar_zout *z, int fd, int level, int threads);
int ar_zout_write(ar_zout *z, const void *data, size_t len);
int ar_zout_finish(ar_zout *z);
void ar_zout_free(ar_zout *z);

/* zstd (or plain tar) decompression feeding libarchive, with a bound on
 * the bytes it may produce: the importer raises it as manifests tell what
 * the archive may hold, so a decompression bomb stops early. */
typedef struct {
    int fd;
    ZSTD_DCtx *dctx;
    int raw;           /* not zstd: plain tar */
    int started, eof, frame_open;
    unsigned char *in, *out;
    size_t in_cap, in_len, in_pos, out_cap;
    uint64_t bytes_in, bytes_out, limit;
    char err[512];     /* our own failure, preferred to libarchive's */
} ar_zin;
int ar_zin_open(ar_zin *z, int fd);
/* the libarchive read callback; ctx is an ar_zin */
la_ssize_t ar_zin_read(struct archive *a, void *ctx, const void **buf);
/* after the tar end: the rest of the input must be a clean end of zstd */
int ar_zin_drain(ar_zin *z);
void ar_zin_free(ar_zin *z);

#endif
