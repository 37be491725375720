/* Shared by the store's own files only; nothing outside store/ includes it. */
#ifndef STRATA_STORE_INTERNAL_H
#define STRATA_STORE_INTERNAL_H

#include "../base/crash.h"
#include "../base/error.h"
#include "../base/file.h"
#include "../base/hex.h"
#include "../base/note.h"
#include "../base/testhooks.h"
#include "../base/sbuf.h"
#include "../clone/clone.h"
#include "store.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/types.h>

struct store {
    char *home;
    int lock_fd;            /* <home>/lock, open for the handle's life */
    unsigned lock_shared;   /* st_lock handles held, by mode (lock.c) */
    unsigned lock_exclusive;
    int lock_flock;         /* what the flock holds: 0, LOCK_SH or LOCK_EX */
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
/* sorted names in a directory, skipping dot files (-errno, or -ENOMEM:
 * never a short list); free with st_free_names */
int st_list_dir(const char *path, char ***out, size_t *n);
void st_free_names(char **v, size_t n);
/* st_list_dir of <home>/<sub>, failing with a message that names it */
int st_list_home(const store *st, const char *sub, char ***out, size_t *n);
/* Fault injection for tests: -ENOSPC when $STRATA_TEST_FAIL_AT names point, as a
 * full volume would fail that step (tests/cli.sh); else 0. */
int st_fault(const char *point);
/* allocated bytes under path (st_blocks) */
uint64_t st_allocated(const char *path);

/*
 * The store lock (lock.c): flock(2) on <home>/lock, so it holds between
 * processes and dies with its holder. Code holds it through an st_lock
 * handle, a value on the holder's stack, so each call site says what it
 * holds and until when. The protocol:
 *   shared     while work depends on layers or records staying as they
 *              were read: cloning a layer (which also writes the new
 *              clone's record and marker: adding a record conflicts with
 *              no reader, and gc, which reads every record, needs
 *              exclusive), reading or re-registering a clone's record,
 *              listing clones, fsck, df, making a pin; a commit's whole
 *              compare (its parent's files must stay), and a receive from
 *              begin to end (its base layers must stay). Plain lookups
 *              (resolve, load, list) take none: layers never change once
 *              published.
 *   exclusive  while changing what others read: publishing a layer and
 *              what goes with it (tag, clone record, marker, unreachable
 *              list), tag and untag, forgetting clone records, gc.
 * Handles on one store handle share its one flock: it is exclusive while
 * any exclusive handle is held, shared while any handle is, and free when
 * none is, so a call that takes a shared handle inside one that holds the
 * lock changes nothing. Going from shared to exclusive converts the flock,
 * which lets another process in between: whoever upgrades re-checks what it
 * read under the shared lock (a commit: its parent is still there). Take
 * and release handles of one store from one thread at a time.
 */
typedef enum { ST_LOCK_NONE, ST_LOCK_SHARED, ST_LOCK_EXCLUSIVE } st_lock_mode;
typedef struct {
    store *st;         /* NULL: holds nothing */
    st_lock_mode mode;
} st_lock;
#define ST_LOCK_INIT {NULL, ST_LOCK_NONE}
/* Wait for the lock in mode, and hold it through *out. */
int st_lock_take(store *st, st_lock_mode mode, st_lock *out);
/* Make l exclusive: convert its shared hold, or take the lock on st if l
 * holds nothing. On failure l holds what it held. */
int st_lock_upgrade(st_lock *l, store *st);
/* Let go of what l holds (nothing: no-op); l then holds nothing. */
void st_lock_release(st_lock *l);

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
/* A resumable receive's (or scratch's) tmp/ name is ST_RECEIVE "<id hex>";
 * st_receive_path: HOME/tmp/receive-<hex><tail> (tail "" the directory,
 * ".lock" its lock, "/bundle/NAME" a file being received), NULL if out of memory */
#define ST_RECEIVE "receive-"
char *st_receive_path(const store *st, const char *hex, const char *tail);

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

/* layers.c: where a layer is, whether it exists (a directory), its files */
char *st_layer_dir(const store *st, const store_id *id);
char *st_layer_bundle_dir(const store *st, const store_id *id); /* its files */
int st_layer_exists(const store *st, const store_id *id);
const store_file *st_layer_find_file(const store_layer *l, const char *name);

/* unreachable.c: the unreachable list (<home>/unreachable), since when each
 * layer nothing reaches has been so: gc's grace period counts from it. */
typedef struct {
    store_unreachable_entry *v;
    size_t n, cap;
} st_unreachable_list;
int st_unreachable_read(store *st, st_unreachable_list *l); /* absent: empty */
int st_unreachable_write(store *st, const st_unreachable_list *l);
store_unreachable_entry *st_unreachable_find(const st_unreachable_list *l, const store_id *id);
/* a ref to this layer is going away (lock held); its grace period starts now */
int st_unreachable_stamp(store *st, const store_id *id);
/* the list's text with that stamp, to write later (a publish's step) */
int st_unreachable_stamped(store *st, const store_id *id, char **text);

/* tags.c */
char *st_tag_path(const store *st, const char *name);
int st_read_tag(store *st, const char *name, store_id *out); /* -ENOENT: no such tag */
/* point tag name at id (exclusive lock held); a layer the tag leaves starts
 * its gc grace period */
int st_write_tag(store *st, const char *name, const store_id *id);
int st_bad_tag(const char *name); /* fails with the tag grammar's message */

/* clones.c: clone records (instances/<key>) and markers (<clone>/.strata) */
#define ST_CLONE_KEY_HEX 32 /* a record's name: hex digits */
char *st_record_path(const store *st, const char *key);
char *st_record_text(const char *abs_dir, const store_id *id);
char *st_marker_text(const store *st, const store_id *id, const char *key);
/* a fresh record key for a clone at abs_dir */
void st_clone_new_key(const char *abs_dir, char key[ST_CLONE_KEY_HEX + 1]);
/* The clone at abs_dir: its layer and record key. A clone found at a path
 * its record does not name (moved or copied) is registered again here. */
int st_clone_read(store *st, const char *abs_dir, store_id *layer,
                  char key[ST_CLONE_KEY_HEX + 1]);
/* A new clone's record, then its marker in marker_dir (where it is built):
 * gc must never see a live clone it does not know about. */
int st_clone_register(store *st, const char *key, const char *abs_dir, const char *marker_dir,
                      const store_id *id);
void st_clone_forget(store *st, const char *key); /* remove its record */
/* the layer a recorded clone stands on, if that clone still exists (0),
 * -ENOENT if it is gone, -EINVAL if the record is damaged */
int st_instance_live(store *st, const char *record_text, store_id *out, char **path_out);
/* every clone record with its state, without taking the lock */
int st_clone_scan(store *st, store_clone_entry **out, size_t *n);

/* savedstate.c: which files of layer l are saved-state data (state[i] = 1
 * for l->files[i]) and l's base (store.h, "saved states") */
int st_saved_state_split(store *st, const store_layer *l, int *state, store_id *base);
/* add "state <id>" to the marker of the clone being made in dir */
int st_mark_saved_state(const char *dir, const store_id *state);

/*
 * publish.c: a publish transaction, which makes a new layer directory and
 * up to ST_PUBLISH_STEPS small files of the store (the unreachable list, a
 * clone record, a tag, a clone's marker) visible as one, so a commit
 * happens whole or not at all. Hold the exclusive lock from the first
 * stage to the end.
 *   begin      an empty transaction.
 *   stage      a file's new content (path NULL: a step that changes
 *              nothing, kept so that every run reaches the same crash
 *              points): written and fsynced beside the file, the old one
 *              linked aside, under dot names no tag or record has (gc
 *              removes those whose writer died). Everything that can run
 *              out of space happens here, before anything is visible; a
 *              failure says "nothing was changed". $STRATA_TEST_FAIL_AT
 *              "stage-<point>" fails it (st_fault).
 *   layer      the directory built under tmp/ to rename into layers/; none
 *              if the layer existed.
 *   run        a crash point; the layer's rename and layers/'s fsync; then
 *              each step's rename in staging order ($STRATA_TEST_FAIL_AT
 *              "<point>" fails it), a crash point after each; then fsyncs
 *              of their directories. If any fails, roll_back.
 *   roll_back  undo the renames done, newest first, and the layer's; the
 *              message says whether anything is left changed.
 *   end        remove the temporaries; free.
 */
#define ST_PUBLISH_STEPS 4
typedef struct {
    char *path, *next, *prev; /* the file, its new content, its old one linked aside */
    const char *point;        /* fault-injection name of its rename */
    int had_old, published;
} st_staged;
typedef struct {
    store *st;
    st_staged steps[ST_PUBLISH_STEPS];
    int nsteps, done; /* staged; renamed (or tried) */
    const char *layer_tmp, *layer_dir;
    int layer_published;
} st_publish;
void st_publish_begin(st_publish *tx, store *st);
int st_publish_stage(st_publish *tx, const char *path, const char *text, const char *point);
void st_publish_layer(st_publish *tx, const char *tmp_dir, const char *layer_dir);
int st_publish_run(st_publish *tx);
int st_publish_roll_back(st_publish *tx);
void st_publish_end(st_publish *tx);

/* build.c: make a layer from the files in src_dir (import: parent NULL;
 * commit: the layer the instance was cloned from, whose files give the
 * extent shortcut): plan, copy and chunk under tmp/, write the manifest,
 * publish. What else a commit publishes and leaves out: */
typedef struct st_prehash st_prehash;
typedef struct {
    const char *instance_dir; /* move this clone onto the new layer, or NULL */
    const char *key;          /* its record */
    const char *const *skip;  /* file names left out of the layer (a saved state's) */
    size_t nskip;
    /* a file the parent lacks is chunked against this layer's file of that
     * name: a saved state's RAM against the state the instance resumed from */
    const store_layer *state_base;
    /* files hashed ahead (st_prehash_start), by name; an entry may be NULL */
    const char *const *ahead_names;
    st_prehash *const *ahead;
    size_t nahead;
} st_build_extra;
/* lock: what the caller holds (shared while it compares against parent, or
 * nothing); it becomes exclusive to publish, and is released before the
 * return, success or not. extra may be NULL. */
int st_build_layer(store *st, const char *src_dir, const store_layer *parent,
                   const store_commit_opts *o, const st_build_extra *extra, st_lock *lock,
                   store_commit_result *res);
/* A file's chunk size: the caller's for every file, else its base's (so
 * chunks line up with the base's and dedup), else the caller's for this
 * file, else the default. */
uint32_t st_chunk_size_for(const store_commit_opts *o, const store_file *base, const char *name);
/* The caller's chunk sizes, checked before anything is read or written. */
int st_check_chunk_sizes(const store_commit_opts *o);

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
