/* Shared by the store's own files only; nothing outside store/ includes it. */
#ifndef STRATA_STORE_INTERNAL_H
#define STRATA_STORE_INTERNAL_H

#include "store.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/types.h>

struct store {
    char *home;
    int lock_fd;
    int lock_state; /* 0 none, 1 shared, 2 exclusive */
};

/* errors: set the thread's message and return -err (err > 0) */
int st_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* same, appending ": strerror(err)" */
int st_fail_errno(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

char *st_strdup(const char *s);
char *st_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Fault injection for crash tests: when $STRATA_CRASH_AT is N, the Nth
 * call kills the process with SIGKILL, as a power cut would. */
void st_crash_point(void);

/* durable file operations */
int st_fsync_dir(const char *dir);
/* write data to path atomically: tmp name, fsync, rename, fsync dir */
int st_write_atomic(const char *path, const void *data, size_t len, mode_t mode);
/* read a whole small file (at most max bytes; -EFBIG above) */
int st_read_file(const char *path, size_t max, char **data, size_t *len);
int st_rm_rf(const char *path);
/* allocated bytes under path (st_blocks) */
uint64_t st_allocated(const char *path);

/* locking */
int st_lock(store *st, int exclusive);
void st_unlock(store *st);

/* A temporary work directory under tmp/, flocked while its owner lives, so
 * gc can tell abandoned work (lock free) from work in progress. */
typedef struct {
    char *path;
    char *lock_path;
    int lock_fd;
} st_tmpdir;
int st_tmpdir_make(store *st, const char *kind, st_tmpdir *t);
void st_tmpdir_drop(st_tmpdir *t); /* removes what remains, releases the lock */

/* text encoding shared by manifest, info and records */
void st_hex(const unsigned char *in, size_t n, char *out);
int st_unhex(const char *in, size_t n, unsigned char *out);
int st_id_valid(const char *hex);
/* percent-encode bytes outside [A-Za-z0-9._+-]; caller frees */
char *st_encode(const char *s);
/* decode; returns NULL on bad escapes or if the canonical encoding differs */
char *st_decode(const char *s);

/* growable text buffer */
typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} st_buf;
void st_buf_add(st_buf *b, const char *s, size_t n);
void st_buf_printf(st_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* What a layer may hold: bounds memory for manifests from outside, and is
 * checked before a layer is made, so every layer made can be read back. */
#define ST_MAX_FILE_SIZE (1ULL << 42) /* 4 TiB: beyond any VZ disk we expect */
#define ST_MAX_FILES 4096
#define ST_MAX_CHUNKS (1ULL << 23)    /* in all files of a layer */
#define ST_MAX_BINDINGS 64

/* manifest.c */
int st_manifest_format(const store_layer *l, st_buf *out);
int st_manifest_parse(const char *data, size_t len, store_layer *l);
int st_info_format(const store_layer *l, st_buf *out);
int st_info_parse(const char *data, size_t len, store_layer *l);
void st_sha256(const void *data, size_t len, unsigned char out[32]);
int st_name_valid(const char *name);

/* store.c: the layer a recorded clone stands on, if that clone still
 * exists (0), -ENOENT if it is gone, -EINVAL if the record is damaged */
int st_instance_live(store *st, const char *record_text, store_id *out, char **path_out);

/* savedstate.c: which files of layer l are saved-state data (state[i] = 1
 * for l->files[i]) and l's base (store.h, "saved states") */
int st_saved_state_split(store *st, const store_layer *l, int *state, store_id *base);
/* add "state <id>" to the marker of the clone being made in dir */
int st_mark_saved_state(const char *dir, const store_id *state);

/* paths */
char *st_layer_dir(const store *st, const store_id *id);
int st_layer_exists(const store *st, const store_id *id);

/* chunker.c: hash a materialized file into chunks. Chunks whose extents are
 * identical in base (if given) are taken from base_file without reading;
 * all-zero chunks are punched out of fd. */
typedef struct {
    uint64_t bytes_read;
    uint64_t chunks_reused;
} st_chunk_stats;
int st_chunk_file(int fd, const char *name, uint32_t chunk_size, int base_fd,
                  const store_file *base_file, store_file *out, st_chunk_stats *stats,
                  store_progress_fn progress, void *progress_ctx);

/* bundle.c: validate a source file by its name before it is versioned */
int st_bundle_check_file(const char *dir, const char *name, uint64_t size);

#endif
