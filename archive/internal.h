/* Shared by archive/'s own files only. */
#ifndef STRATA_ARCHIVE_INTERNAL_H
#define STRATA_ARCHIVE_INTERNAL_H

#include "../base/error.h"
#include "../base/note.h"
#include "archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <pthread.h>
#include <stdint.h>
#include <zstd.h>

/* libarchive is loaded the first time an export or import needs it
 * (ar_lib_load), not when strata starts, which it would slow on every run
 * (remote/internal.h says why, for libcurl). The functions archive/ calls
 * are pointers, named as libarchive names them. */
#define AR_LIB_FUNCS(X)                                                                           \
    X(archive_entry_filetype) X(archive_entry_free) X(archive_entry_hardlink)                     \
    X(archive_entry_new) X(archive_entry_pathname) X(archive_entry_set_filetype)                  \
    X(archive_entry_set_mtime) X(archive_entry_set_pathname) X(archive_entry_set_perm)            \
    X(archive_entry_set_size) X(archive_entry_size) X(archive_entry_sparse_add_entry)             \
    X(archive_entry_sparse_next) X(archive_entry_sparse_reset) X(archive_error_string)            \
    X(archive_read_data) X(archive_read_data_block) X(archive_read_free) X(archive_read_new)       \
    X(archive_read_next_header) X(archive_read_open) X(archive_read_support_format_tar)           \
    X(archive_set_error) X(archive_write_close) X(archive_write_data) X(archive_write_free)       \
    X(archive_write_header) X(archive_write_new) X(archive_write_open)                            \
    X(archive_write_set_bytes_in_last_block) X(archive_write_set_bytes_per_block)                 \
    X(archive_write_set_format_pax)
#define AR_LIB_POINTER(f) extern __typeof__(f) *ar_lazy_##f;
AR_LIB_FUNCS(AR_LIB_POINTER)
#undef AR_LIB_POINTER
#define archive_entry_filetype (*ar_lazy_archive_entry_filetype)
#define archive_entry_free (*ar_lazy_archive_entry_free)
#define archive_entry_hardlink (*ar_lazy_archive_entry_hardlink)
#define archive_entry_new (*ar_lazy_archive_entry_new)
#define archive_entry_pathname (*ar_lazy_archive_entry_pathname)
#define archive_entry_set_filetype (*ar_lazy_archive_entry_set_filetype)
#define archive_entry_set_mtime (*ar_lazy_archive_entry_set_mtime)
#define archive_entry_set_pathname (*ar_lazy_archive_entry_set_pathname)
#define archive_entry_set_perm (*ar_lazy_archive_entry_set_perm)
#define archive_entry_set_size (*ar_lazy_archive_entry_set_size)
#define archive_entry_size (*ar_lazy_archive_entry_size)
#define archive_entry_sparse_add_entry (*ar_lazy_archive_entry_sparse_add_entry)
#define archive_entry_sparse_next (*ar_lazy_archive_entry_sparse_next)
#define archive_entry_sparse_reset (*ar_lazy_archive_entry_sparse_reset)
#define archive_error_string (*ar_lazy_archive_error_string)
#define archive_read_data (*ar_lazy_archive_read_data)
#define archive_read_data_block (*ar_lazy_archive_read_data_block)
#define archive_read_free (*ar_lazy_archive_read_free)
#define archive_read_new (*ar_lazy_archive_read_new)
#define archive_read_next_header (*ar_lazy_archive_read_next_header)
#define archive_read_open (*ar_lazy_archive_read_open)
#define archive_read_support_format_tar (*ar_lazy_archive_read_support_format_tar)
#define archive_set_error (*ar_lazy_archive_set_error)
#define archive_write_close (*ar_lazy_archive_write_close)
#define archive_write_data (*ar_lazy_archive_write_data)
#define archive_write_free (*ar_lazy_archive_write_free)
#define archive_write_header (*ar_lazy_archive_write_header)
#define archive_write_new (*ar_lazy_archive_write_new)
#define archive_write_open (*ar_lazy_archive_write_open)
#define archive_write_set_bytes_in_last_block (*ar_lazy_archive_write_set_bytes_in_last_block)
#define archive_write_set_bytes_per_block (*ar_lazy_archive_write_set_bytes_per_block)
#define archive_write_set_format_pax (*ar_lazy_archive_write_set_format_pax)
/* Load libarchive, once: 0, or an error naming it. */
int ar_lib_load(void);

/* errors (base/error.h), raised by archive/: set the thread's error and
 * return -err */
#define ar_fail(err, ...) err_set(ERR_ARCHIVE, (err), __VA_ARGS__)
#define ar_oom() err_oom(ERR_ARCHIVE)

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
