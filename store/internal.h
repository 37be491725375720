/* Shared by the store's own files only; nothing outside store/ includes it. */
#ifndef STRATA_STORE_INTERNAL_H
#define STRATA_STORE_INTERNAL_H

#include "../base/crash.h"
#include "../base/error.h"
#include "../base/file.h"
#include "../base/hex.h"
#include "../base/note.h"
#include "../base/sbuf.h"
#include "../clone/clone.h"
#include "store.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/types.h>

struct store {
    char *home;
    int lock_fd;
    int lock_state; /* 0 none, 1 shared, 2 exclusive */
    int receiving;  /* receives in progress (receive.c): they hold the shared lock */
};

/* errors (base/error.h), raised by the store: set the thread's error and
 * return -err; st_fail_errno appends ": strerror(err)" */
#define st_fail(err, ...) err_set(ERR_STORE, (err), __VA_ARGS__)
#define st_fail_errno(err, ...) err_set_errno(ERR_STORE, (err), __VA_ARGS__)
#define st_oom() err_oom(ERR_STORE)

char *st_strdup(const char *s);
char *st_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* durable writes, reading small files, crash points: base/file.h, base/crash.h */
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
/* tmp/<name>, kept between runs (a resumable receive): locked without
 * waiting (-EBUSY if another process holds it), its lock's time touched;
 * *existed says the directory was there. */
int st_tmpdir_named(store *st, const char *name, st_tmpdir *t, int *existed);
void st_tmpdir_keep(st_tmpdir *t); /* releases the lock, leaves the directory */

/* text encoding shared by manifest, info and records */
int st_id_valid(const char *hex);
/* percent-encode bytes outside [A-Za-z0-9._+-]; caller frees */
char *st_encode(const char *s);
/* decode; returns NULL on bad escapes or if the canonical encoding differs */
char *st_decode(const char *s);


/* What a layer may hold: bounds memory for manifests from outside, and is
 * checked before a layer is made, so every layer made can be read back.
 * The manifest's size bound is derived from the others (docs/manifest.md):
 * any manifest within them fits under it, so the two can never disagree. */
#define ST_MAX_FILE_SIZE (1ULL << 42)   /* 4 TiB: beyond any VZ disk we expect */
#define ST_MAX_FILES 4096
#define ST_MAX_CHUNKS (1ULL << 23)      /* data and zero chunks, in all files of a layer */
#define ST_MAX_DATA_CHUNKS (1ULL << 22) /* data chunks in all files: a full 4 TiB at 1 MiB */
#define ST_MAX_BINDINGS 64
#define ST_MAX_BIND_KEY 64
#define ST_MAX_BIND_VALUE 1024          /* bytes, before percent-encoding */
#define ST_MAX_NAME 255
/* A chunk size a manifest may name: a power of two from 4 KiB to 64 MiB. */
int st_chunk_size_valid(uint64_t chunk_size);
/* the longest line of each kind, with its '\n' */
#define ST_HEAD_LINE_MAX 15                                         /* strata-layer 1 */
#define ST_PARENT_LINE_MAX (7 + 64 + 1)                             /* parent <id> */
#define ST_BIND_LINE_MAX (5 + ST_MAX_BIND_KEY + 1 + 3 * ST_MAX_BIND_VALUE + 1)
#define ST_FILE_LINE_MAX (5 + 3 * ST_MAX_NAME + 1 + 13 + 1 + 4 + 1 + 8 + 1)
#define ST_DATA_LINE_MAX (64 + 1)
#define ST_ZERO_LINE_MAX (5 + 7 + 1) /* a run is at most ST_MAX_CHUNKS: 7 digits */
/* A zero line is followed by a data line or ends a file, so there are at
 * most ndata + nfiles of them: about 331 MB in all. */
#define ST_MANIFEST_MAX                                                                    \
    ((size_t)(ST_HEAD_LINE_MAX + ST_PARENT_LINE_MAX + ST_MAX_BINDINGS * ST_BIND_LINE_MAX + \
              ST_MAX_FILES * (ST_FILE_LINE_MAX + ST_ZERO_LINE_MAX) +                       \
              ST_MAX_DATA_CHUNKS * (ST_DATA_LINE_MAX + ST_ZERO_LINE_MAX)))

/* manifest.c */
int st_manifest_format(const store_layer *l, sbuf *out);
int st_manifest_parse(const char *data, size_t len, store_layer *l);
int st_info_format(const store_layer *l, sbuf *out);
int st_info_parse(const char *data, size_t len, store_layer *l);
void st_sha256(const void *data, size_t len, unsigned char out[32]);
int st_name_valid(const char *name);
/* 1 if digest is the SHA-256 of len zero bytes (such a chunk must be `zero`) */
int st_digest_is_zero(const unsigned char digest[32], uint64_t len);

/* store.c: the layer a recorded clone stands on, if that clone still
 * exists (0), -ENOENT if it is gone, -EINVAL if the record is damaged */
int st_instance_live(store *st, const char *record_text, store_id *out, char **path_out);

/* store.c, for receive.c */
const store_file *st_layer_find_file(const store_layer *l, const char *name);
/* point tag name at id (lock held); a layer the tag leaves starts its gc grace period */
int st_write_tag(store *st, const char *name, const store_id *id);
int st_bad_tag(const char *name);


/* store.c: every clone record with its state, without taking the lock */
int st_clone_scan(store *st, store_clone_entry **out, size_t *n);
/* check.c: a ref to this layer is going away; its gc grace period starts now */
int st_unreachable_stamp(store *st, const store_id *id);
/* the unreachable list's text with that stamp, to write later */
int st_unreachable_stamped(store *st, const store_id *id, char **text);

/* savedstate.c: which files of layer l are saved-state data (state[i] = 1
 * for l->files[i]) and l's base (store.h, "saved states") */
int st_saved_state_split(store *st, const store_layer *l, int *state, store_id *base);
/* add "state <id>" to the marker of the clone being made in dir */
int st_mark_saved_state(const char *dir, const store_id *state);

/* paths */
char *st_layer_dir(const store *st, const store_id *id);
char *st_layer_bundle_dir(const store *st, const store_id *id); /* its files */
int st_layer_exists(const store *st, const store_id *id);

/* seal.c: store-local XXH3-64 seals of a layer's data chunks, in
 * layers/<id>/seals (docs/manifest.md). A seal lets `fsck --quick` check
 * every stored byte at memory speed; it is never an id, never part of the
 * manifest, never trusted from outside. To seal a layer being made: new,
 * set each data chunk's seal (any order), write into the layer's directory
 * before it is published. */
typedef struct st_seals st_seals;
uint64_t st_seal_of(const void *data, size_t len); /* XXH3-64 */
st_seals *st_seals_new(size_t nfiles);
void st_seals_free(st_seals *s);
/* chunk_index is the chunk's place in file file_index (store_chunk.index) */
int st_seal_set(st_seals *s, size_t file_index, uint64_t chunk_index, uint64_t seal);
/* 0, or -ENOENT if that chunk has no seal (s may be NULL: none has) */
int st_seal_get(const st_seals *s, size_t file_index, uint64_t chunk_index, uint64_t *seal);
/* Write dir/seals atomically (fsynced), one seal per data chunk of l in
 * manifest order; -EINVAL if one is missing. id is l's id. */
int st_seals_write(const st_seals *s, const store_layer *l, const store_id *id, const char *dir);
/* Read dir/seals for layer l: -ENOENT if it has none, -EINVAL if damaged. */
int st_seals_load(const char *dir, const store_layer *l, st_seals **out);
#define ST_SEALS_FILE "seals"

/* chunker.c: hash a materialized file into chunks. Chunks whose extents are
 * identical in the base file (if given) are taken from it without reading,
 * data chunks only with their seal; all-zero chunks are punched out of fd.
 * The data chunks' seals go to seals under file index `index`. */
typedef struct {
    uint64_t bytes_read;
    uint64_t chunks_reused;
} st_chunk_stats;
typedef struct {
    int fd;                 /* the base layer's file, open, or -1 */
    const store_file *file; /* its manifest entry */
    const st_seals *seals;  /* the base layer's seals, or NULL */
    size_t index;           /* the file's index in the base layer */
} st_chunk_base;
int st_chunk_file(int fd, const char *name, uint32_t chunk_size, const st_chunk_base *base,
                  store_file *out, st_seals *seals, size_t index, st_chunk_stats *stats,
                  store_progress_fn progress, void *progress_ctx);
/* Hash a saved-state file that has no base ahead, on its own thread, from
 * the instance's file (in the page cache) while other work goes on; NULL
 * if that can't be done safely (chunker.c says when). writer_paused: the
 * file may be open for writing by a paused VM, whose lease st_prehash_lease
 * takes once it has exited. st_prehash_use, called after st_prehash_copy
 * made the copy copy_fd is open on, fills out as st_chunk_file with no base
 * would and returns 1, or returns 0 when the file may have changed since
 * (then chunk the copy), or an error. */
typedef struct st_prehash st_prehash;
st_prehash *st_prehash_start(const char *path, uint32_t chunk_size, int writer_paused);
/* 1 if the read lease is held or can be taken now (no writer left): only
 * then may st_prehash_copy and st_prehash_use follow. */
int st_prehash_lease(st_prehash *p);
int st_prehash_use(st_prehash *p, const char *from, int copy_fd, uint32_t chunk_size,
                   store_file *out, st_seals *seals, size_t index, st_chunk_stats *stats);
void st_prehash_free(st_prehash *p);
/* Copy (clone) the file hashed ahead into to, new, with mode: from the file
 * the lease is on, never by its path, which may name another file by now. */
int st_prehash_copy(st_prehash *p, const char *to, mode_t mode, clone_method *how);
/* tests: called with the source's path after hashing, before its check;
 * the count of files whose ahead hashes were used */
extern void (*st_prehash_test_hook)(const char *path);
extern _Atomic int st_prehash_used; /* atomic: commits may run on several threads */
/* Before making a layer: add path's chunks at chunk_size to *chunks, and an
 * upper bound of its data chunks (those its data regions touch) to *data. */
int st_chunk_estimate(const char *path, uint32_t chunk_size, uint64_t *chunks, uint64_t *data);

/* verify.c: fsck's re-read of a materialized file (layer file index fi):
 * data chunks against their seal (quick) or SHA-256 (full, which also
 * puts each verified chunk's seal into made, if given), and the data
 * regions of zero chunks for zeros. found is called from this thread, in
 * chunk order, for each chunk (or run of zero chunks, first..last) that
 * is wrong. Returns 0 or -ENOMEM. */
enum { ST_OK, ST_BAD_SEAL, ST_BAD_HASH, ST_WRONG_SEAL, ST_UNREADABLE, ST_NOT_ZEROS };
typedef void (*st_verify_fn)(void *ctx, int what, uint64_t first, uint64_t last);
int st_verify_file(int fd, const store_file *f, size_t fi, const st_seals *seals, int quick,
                   st_seals *made, st_verify_fn found, void *ctx);

/* bundle.c: validate a source file by its name before it is versioned */
int st_bundle_check_file(const char *dir, const char *name, uint64_t size);

#endif
