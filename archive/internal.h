/* Shared by archive/'s own files only. */
#ifndef STRATA_ARCHIVE_INTERNAL_H
#define STRATA_ARCHIVE_INTERNAL_H

#include "archive.h"

#include <archive.h>
#include <pthread.h>
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
/* all manifests of one archive, in bytes: the largest one layer may have,
 * so memory stays bounded and any layer the store can make travels */
#define AR_MANIFESTS_MAX store_manifest_max()

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

/* hasher.c: chunks are hashed and written by a second thread */
typedef struct {
    store_receive *rx;
    size_t file, chunk, len;
    unsigned char *buf;
    char entry[300]; /* for the message if it fails */
} ar_job;
typedef struct {
    pthread_t thread;
    int running, stop, queued, busy, failed;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ar_job job;
    unsigned char *free_buf[3];
    size_t nfree, cap;
    char err[1024];
} ar_verifier;
int ar_verifier_start(ar_verifier *v);
/* a free buffer of at least size bytes (waits for one); NULL if out of memory */
unsigned char *ar_verifier_buffer(ar_verifier *v, size_t size);
/* give back a buffer that was not submitted (NULL is fine) */
void ar_verifier_release(ar_verifier *v, unsigned char *buf);
/* queue a full chunk; its buffer comes back to the pool once written */
int ar_verifier_submit(ar_verifier *v, const ar_job *j);
/* wait for every queued chunk; the first failure, if any */
int ar_verifier_flush(ar_verifier *v);
void ar_verifier_stop(ar_verifier *v);

#endif
