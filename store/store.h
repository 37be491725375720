/*
 * store: strata's content-addressed layer store.
 *
 * A layer is an immutable, complete bundle state: a canonical manifest (see
 * docs/manifest.md) plus the bundle's files, materialized read-only as
 * copy-on-write clones of its parent's. Its id is the SHA-256 of the
 * manifest's bytes, so identical content has the identical id everywhere.
 * Tags are small files naming a layer. Instances are writable clones of a
 * layer; committing one makes a child layer.
 *
 * Layout of a store (default ~/.strata, or $STRATA_HOME):
 *   format              "strata-store 1"
 *   lock                flock(2): shared to read, exclusive to publish or gc
 *   layers/<id>/        manifest, info, bundle/<files>
 *   refs/tags/<name>    "<id>\n"
 *   instances/<key>     which clone directory came from which layer
 *   vms/<name>/         boot's instances (clones), see store_instances_dir
 *   running/            boot's records of running instances, see store_running_dir
 *   tmp/                work in progress, each entry flocked by its owner
 *
 * Every function returns 0 (or a count) on success and a negative errno on
 * failure, with a one-line message for the user in store_error(). Nothing
 * here prints. A mutation is either fully visible or not at all: work is
 * built under tmp/, fsynced, and published with one rename.
 */
#ifndef STRATA_STORE_H
#define STRATA_STORE_H

#include <stddef.h>
#include <stdint.h>

#define STORE_ID_HEX 64
#define STORE_DEFAULT_CHUNK (1u << 20)     /* bytes per chunk; see docs/manifest.md for why */
#define STORE_INSTANCE_MARKER ".strata"    /* in a clone: the layer it came from */
#define STORE_RESTORE_IMAGE "RestoreImage.ipsw"

typedef struct store store;

typedef struct {
    char hex[STORE_ID_HEX + 1];
} store_id;

/* The message describing the last failure on this thread. Never NULL. */
const char *store_error(void);

/* Open (creating if absent) the store at home; NULL home means $STRATA_HOME
 * or ~/.strata. */
int store_open(const char *home, store **out);
void store_close(store *st);
const char *store_home(const store *st);

/* ---- layers ---- */

typedef struct {
    unsigned char digest[32]; /* SHA-256 of the chunk's bytes, if data */
    int data; /* 0: a hole or all zeros (no digest, nothing stored), the
               * value of zeroed memory, so runs of holes cost no writes */
} store_chunk;

typedef struct {
    char *name;          /* a plain file name in the bundle, no '/' */
    uint64_t size;       /* apparent size in bytes */
    uint32_t mode;       /* permission bits to give clones (e.g. 0644) */
    uint32_t chunk_size; /* power of two, 4 KiB..64 MiB; the last chunk may be short */
    size_t nchunks;      /* ceil(size / chunk_size) */
    store_chunk *chunks;
} store_file;

typedef struct {
    char *key;   /* [a-z0-9.-]+, sorted and unique within a layer */
    char *value; /* any bytes but NUL */
} store_binding;

typedef struct {
    store_id id;
    int has_parent;
    store_id parent;
    size_t nfiles; /* sorted by name */
    store_file *files;
    size_t nbindings; /* what a saved state is bound to (host, MAC, ...); empty if none */
    store_binding *bindings;
    /* from the layer's info, not part of its id: */
    int64_t created; /* unix seconds */
    char *message;
    uint64_t bytes_added; /* data bytes in chunks that differ from the parent's */
} store_layer;

/* Load a layer's manifest and info. Free with store_layer_free. */
int store_layer_load(store *st, const store_id *id, store_layer **out);
void store_layer_free(store_layer *l);

/* Path of a materialized file of a layer (read-only). Caller frees. */
char *store_layer_file_path(store *st, const store_id *id, const char *name);

/* Resolve a tag, full id or unique id prefix (at least 4 hex digits). Tags
 * win over prefixes. */
int store_resolve(store *st, const char *ref, store_id *out);

/* ---- making layers ---- */

typedef void (*store_progress_fn)(void *ctx, const char *what, uint64_t done, uint64_t total);

typedef struct {
    const char *message;            /* may be NULL */
    const char *tag;                /* tag to point at the new layer, or NULL */
    int include_restore_image;      /* also version RestoreImage.ipsw */
    uint32_t chunk_size;            /* 0 = the parent's, or STORE_DEFAULT_CHUNK */
    const store_binding *bindings;  /* saved-state binding, sorted by key, or NULL */
    size_t nbindings;
    store_progress_fn progress;     /* may be NULL */
    void *progress_ctx;
    /* receives notes such as a skipped file; may be NULL */
    void (*note)(void *ctx, const char *line);
    /* commit: the caller already holds the instance's busy lock (the
     * supervisor suspending its own instance), or NULL to take it here */
    const struct store_busy *busy;
} store_commit_opts;

typedef struct {
    store_id id;
    int existed;              /* the same content was already a layer */
    int reflinked;            /* 1 if every file was cloned, not copied */
    uint64_t bytes_read;      /* bytes read and hashed */
    uint64_t chunks_reused;   /* chunks known unchanged from extent maps */
    uint64_t bytes_added;
} store_commit_result;

/* Ingest a bundle directory as a root layer. */
int store_import(store *st, const char *bundle_dir, const store_commit_opts *o,
                 store_commit_result *res);

/* Make a child layer from an instance directory made by store_clone; the
 * instance then counts as a clone of the new layer. */
int store_commit(store *st, const char *instance_dir, const store_commit_opts *o,
                 store_commit_result *res);

/* Make dir (which must not exist, on the store's volume) a writable bundle
 * cloned from ref. A saved state (see below) is cloned without its state:
 * the clone holds its base's content and counts as a clone of the base. */
int store_clone(store *st, const char *ref, const char *dir, int *reflinked);

/* Read an instance directory's marker: the layer it is a clone of. */
int store_instance_layer(store *st, const char *instance_dir, store_id *out);

/* ---- saved states (docs/manifest.md, "Saved states") ----
 *
 * A layer with bindings is a saved state. Suspend makes it as two layers:
 * D, the bundle without the state files and bindings, and S, D's child
 * with the same files plus the state files and bindings. S's base is D.
 * A saved state made before that rule (one layer, disk changes and state
 * together) is its own base; its state files are the files its parent's
 * content lacks. Clones, later commits and exports without the state start
 * from the base's content. */

/* The layer holding id's content without a saved state: its parent D for a
 * saved state made by suspend, id itself for any other layer. */
int store_layer_base(store *st, const store_id *id, store_id *base);

/* Clone a saved state whole, state files included, to resume it. The clone
 * counts as a clone of the base; store_instance_state tells the state. */
int store_clone_saved_state(store *st, const char *ref, const char *dir, int *reflinked);

/* The saved state a directory was cloned with by store_clone_saved_state
 * and not committed since; -ENOENT if none. */
int store_instance_state(store *st, const char *instance_dir, store_id *out);

/* Suspend's commit: D (the instance without the files named in
 * state_files, and without bindings), then S (D's child: the same files
 * plus the state files, with o->bindings). o->tag names S. The instance
 * stays a clone of D. A crash between the two leaves D, a plain layer. */
int store_commit_saved_state(store *st, const char *instance_dir, const char *const *state_files,
                             size_t nstate, const store_commit_opts *o, store_commit_result *disk,
                             store_commit_result *state);

/* ---- instances in use ----
 *
 * An instance directory is busy while a process (a running VM's
 * supervisor, a commit) holds its lock, a file the store names inside it.
 * store_commit takes it without waiting, so it never copies a disk that is
 * being written; a holder that commits passes its handle in opts.busy. */
typedef struct store_busy {
    int fd;
} store_busy;

/* Take dir's busy lock without waiting, recording holder (e.g. "running
 * instance web; strata suspend or stop it first") for the message others
 * get: "DIR is in use by HOLDER" (-EBUSY). Release with store_busy_release. */
int store_busy_take(const char *instance_dir, const char *holder, store_busy *out);
void store_busy_release(store_busy *b);

/* Where boot keeps its instances (STORE/vms) and its records of running
 * instances (STORE/running), created if absent. Caller frees. */
char *store_instances_dir(store *st);
char *store_running_dir(store *st);

/* ---- tags ---- */

/* 1 if name follows the tag grammar (docs/manifest.md), else 0. */
int store_tag_valid(const char *name);
int store_tag(store *st, const char *ref, const char *name);
int store_untag(store *st, const char *name);

typedef struct {
    char *name;
    store_id id;
} store_tag_entry;

int store_tags(store *st, store_tag_entry **out, size_t *n);
void store_tags_free(store_tag_entry *t, size_t n);

/* All layer ids in the store, sorted. */
int store_layers(store *st, store_id **out, size_t *n);

/* ---- comparing ---- */

typedef struct {
    char *name;
    int in_a, in_b;
    uint64_t chunks_changed; /* chunk positions whose content differs */
    uint64_t bytes_changed;  /* their length in b (or a, if removed) */
    uint64_t size_a, size_b;
} store_diff_entry;

int store_diff(store *st, const store_id *a, const store_id *b, store_diff_entry **out, size_t *n);
void store_diff_free(store_diff_entry *d, size_t n);

/* ---- bundle identity (HardwareModel, MachineIdentifier via libplist) ---- */

typedef struct {
    int has_hardware_model;
    int64_t data_representation_version;
    int64_t platform_version;
    char minimum_supported_os[32]; /* "13.0.0" */
    int has_machine_identifier;
    uint64_t ecid;
} store_identity;

/* Decode the identity plists of a layer. */
int store_layer_identity(store *st, const store_id *id, store_identity *out);

/* Decode (and so validate) one plist file, as import does. */
int store_plist_identity(const char *path, const char *name, store_identity *out);

/* Write a MachineIdentifier plist with the given ECID (fresh identities). */
int store_write_machine_identifier(const char *path, uint64_t ecid);

/* ---- upkeep ---- */

typedef void (*store_report_fn)(void *ctx, const char *line);

/* Verify every manifest, ref and instance record, and (unless quick) every
 * materialized chunk. Returns the number of problems found, each reported. */
int store_fsck(store *st, int quick, store_report_fn report, void *ctx);

typedef struct {
    size_t layers_removed;
    size_t tmp_removed;
    size_t instances_forgotten;
    uint64_t bytes_freed; /* allocated bytes released, counting shared blocks once per file */
} store_gc_result;

/* Remove layers that no tag, live instance or descendant reaches, stale
 * temporary work and records of deleted instances. */
int store_gc(store *st, store_gc_result *res);

typedef struct {
    size_t layers, tags, instances;
    uint64_t apparent_bytes;  /* sum of file sizes over all layers */
    uint64_t unique_bytes;    /* data in distinct chunks: what a remote would hold */
    uint64_t allocated_bytes; /* blocks the store's files hold (shared blocks counted once per file) */
    uint64_t volume_free;
} store_usage;

int store_df(store *st, store_usage *out);

#endif
