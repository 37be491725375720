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
 *   unreachable         since when each unreachable layer is (gc's grace period)
 *   vms/, running/, cache/  boot's (boot.h: boot_instances_dir...); the store
 *                       never reads them
 *   tmp/                work in progress, each entry flocked by its owner
 *
 * Every function returns 0 (or a count) on success and a negative errno on
 * failure, with a one-line message for the user in store_error(). Nothing
 * here prints. A mutation is either fully visible or not at all: work is
 * built under tmp/, fsynced, and published with one rename.
 *
 * The lock (flock(2) on <store>/lock, so it holds between processes): a
 * call that needs it takes it and lets go of it before it returns; callers
 * never hold it. Lookups (resolve, layer_load, layers, tags, diff,
 * layer_exists) take none: a layer is published with one rename and never
 * changes, so they see it whole or not at all (gc may remove it later).
 * Shared: clone, clones, fsck, df, instance_layer, pin_layer (while making
 * the pin), and a commit while it compares against its parent. Exclusive:
 * publishing (commit, import, tag, untag, clones --prune, a receive's
 * finish) and gc; a commit or import copies and hashes without it, or
 * shared. A receive holds it shared from begin to its end, so gc waits for
 * a pull or an archive import to end. A store handle is for one thread at
 * a time, except store_receive_chunk.
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

/* A data chunk: one that holds a non-zero byte. Every chunk of a file that
 * is not listed among its data chunks is a zero chunk (a hole, or all
 * zeros): nothing is stored or hashed for it, and it costs no memory, so a
 * 4 TiB disk that is mostly holes loads in a few bytes. */
typedef struct {
    uint64_t index;           /* its place: bytes [index * chunk_size, +chunk_size) */
    unsigned char digest[32]; /* SHA-256 of exactly its bytes (the last may be short) */
} store_chunk;

typedef struct {
    char *name;          /* a plain file name in the bundle: no '/', not starting with '.' */
    uint64_t size;       /* apparent size in bytes */
    uint32_t mode;       /* permission bits to give clones (e.g. 0644) */
    uint32_t chunk_size; /* power of two, 4 KiB..64 MiB; the last chunk may be short */
    size_t nchunks;      /* ceil(size / chunk_size): data and zero chunks */
    size_t ndata;        /* data chunks, sorted by index */
    store_chunk *data;
} store_file;

/* The data chunk at index c of f, or NULL if chunk c is a zero chunk. */
const store_chunk *store_file_chunk(const store_file *f, uint64_t c);
/* Length of chunk c of f: chunk_size, or less for the last one. */
uint64_t store_chunk_len(const store_file *f, uint64_t c);

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

/* 1 if layer id is in the store, 0 if not (or id is not a layer id), or a
 * negative errno if that can't be told. One lookup: no listing, no lock,
 * and nothing read or checked (store_layer_load does that). */
int store_layer_exists(store *st, const store_id *id);

/* Path of a materialized file of a layer (read-only). Caller frees. */
char *store_layer_file_path(store *st, const store_id *id, const char *name);

/* Resolve a tag, full id or unique id prefix (at least 4 hex digits). Tags
 * win over prefixes. */
int store_resolve(store *st, const char *ref, store_id *out);

/* ---- making layers ---- */

typedef void (*store_progress_fn)(void *ctx, const char *what, uint64_t done, uint64_t total);

/* A chunk size asked for one file of a bundle, by name: e.g. 4 KiB for a
 * guest's RAM, where writes land on scattered pages (docs/manifest.md). */
typedef struct {
    const char *name;
    uint32_t chunk_size; /* power of two, 4 KiB..64 MiB */
} store_file_chunking;

typedef struct {
    const char *message;            /* may be NULL */
    const char *tag;                /* tag to point at the new layer, or NULL */
    int include_restore_image;      /* also version RestoreImage.ipsw */
    uint32_t chunk_size;            /* 0 = the parent's, or STORE_DEFAULT_CHUNK */
    /* Per file, where chunk_size is 0 and the file is new: one its base (the
     * parent, or for a saved state's files the state it was resumed from)
     * has keeps the base's chunk size, so its chunks line up and dedup. */
    const store_file_chunking *file_chunks;
    size_t nfile_chunks;
    const store_binding *bindings;  /* saved-state binding, sorted by key, or NULL */
    size_t nbindings;
    store_progress_fn progress;     /* may be NULL */
    void *progress_ctx;
    /* receives notes such as a skipped file; may be NULL */
    void (*note)(void *ctx, const char *line);
    /* commit: the caller already holds the instance's busy lock (the
     * supervisor suspending its own instance), or NULL to take it here */
    const struct store_busy *busy;
    /* store_commit_saved_state: the hashing store_state_hashing_start began
     * when the VM paused, or NULL; the commit takes what it can use */
    struct store_state_hashing *hashed;
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

/* Read an instance directory's marker: the layer it is a clone of. A clone
 * found where its record does not say (moved or copied) is registered at its
 * new path here, so every command that touches it keeps its record right. */
int store_instance_layer(store *st, const char *instance_dir, store_id *out);

/* ---- receiving a layer from outside (archives, registries) ----
 *
 * The one way a layer made elsewhere enters the store: given its canonical
 * manifest, the store materializes the layer under tmp/, cloning every chunk
 * it already has at the same place in a base layer, copies in those the
 * base or its ancestors hold at another place (read and checked against
 * their SHA-256 first; store_receive_copied), and takes the other chunks'
 * bytes from the caller in any order, each checked against its SHA-256 in
 * the manifest before it is written. Zero chunks stay holes.
 * finish checks that every data chunk arrived, fsyncs, and publishes with
 * one rename, as commit does. The layer id is the SHA-256 of the manifest.
 */

typedef struct store_receive store_receive;

typedef struct {
    /* Where chunks already present come from (cloned, never read): a
     * published layer (base_layer), or a receive whose chunks have all
     * arrived (base_rx), e.g. the next layer of an archive that carries a
     * chain. Both NULL: the manifest's parent, if the store has it. */
    const store_id *base_layer;
    const store_receive *base_rx;
    /* 1: the manifest's parent need not be in the store yet, because the
     * caller will publish it (finish its receive) before this one. */
    int parent_follows;
    /* 1: keep the work under tmp/ if the receive ends unfinished (killed,
     * or aborted), and take it up again in the next resumable receive of
     * the same layer: chunks found there are read back and checked against
     * the manifest before they count. gc keeps such work for
     * STORE_GC_PRUNE_EXPIRE after it was last touched (docs/remote.md). */
    int resume;
    /* With resume: another process may hold tmp/receive-<id> (another
     * pull, a lazy run's fill). NULL: this receive works in a fresh
     * directory of its own and gets every chunk again. Else the receive
     * waits for the other one: begin calls busy_wait(busy_ctx, id, round)
     * for round 0, 1, ... while the other holds it and the layer is not in
     * the store; busy_wait pauses (about a second) and returns 0 to look
     * again, or a negative errno that begin returns. Once the other is
     * gone, the receive takes up its work (or finds the layer published:
     * then it only verifies). It is called with no store lock held, so the
     * other receive can publish meanwhile; for the same reason a store
     * handle that holds the store lock already (a receive of the layer
     * before, still open) does not wait: it works in a fresh directory. */
    int (*busy_wait)(void *ctx, const store_id *id, unsigned round);
    void *busy_ctx;
} store_receive_opts;

/*
 * Start receiving a layer.
 *   st        the store; keeps a shared lock until the last receive ends.
 *   manifest  the canonical manifest bytes (docs/manifest.md), mlen of them;
 *             parsed strictly, so a non-canonical manifest is refused.
 *   info      the layer's info text (ilen bytes): created, message, ...
 *   o         may be NULL (no base given, parent must be present).
 *   out       the receive, to pass to the calls below.
 * Fails with a one-line message if the manifest or info is malformed, if
 * the parent is absent ("needs layer <id>"), or the base is unknown. If the
 * layer already exists, nothing is needed and chunks are only verified.
 */
int store_receive_begin(store *st, const char *manifest, size_t mlen, const char *info,
                        size_t ilen, const store_receive_opts *o, store_receive **out);

/* The parsed layer (id, parent, files and chunks). Valid until the receive ends. */
const store_layer *store_receive_layer(const store_receive *rx);

/* 1 if the bytes of chunk `chunk` of file `file` (indexes into the layer's
 * files and that file's chunks) are still needed, 0 if not (a hole, already
 * present from a base, or already received). */
int store_receive_needs(const store_receive *rx, size_t file, size_t chunk);

/*
 * The bytes of a data chunk of layer id as a resumable receive of it
 * (tmp/receive-<id>, this process's or another's, running or cut short)
 * has written them, or the layer itself once that receive has published
 * it: file `name` of the layer, len bytes at offset, into
 * buf, checked against digest (their SHA-256). 0 if they are there and
 * match; -ENOENT if not (no such receive, the chunk not written yet or
 * being written, damaged bytes): the caller fetches the chunk elsewhere.
 * Never trusted unchecked, never written. It only reads files under the
 * store's directory and takes no lock, so any thread may call it while
 * the handle is in use elsewhere (lazy/: a guest's read during a fill).
 */
int store_receive_peek(const store *st, const store_id *id, const char *name, uint64_t offset,
                       const unsigned char digest[32], void *buf, size_t len);

/* Data chunks found in place, checked, from an earlier resumable receive. */
uint64_t store_receive_resumed(const store_receive *rx);

/* Data chunks the store held under the same id at another place (in the
 * base, an ancestor of it, or elsewhere in the layer), copied in, checked. */
uint64_t store_receive_copied(const store_receive *rx);

/* Number of data chunks still needed. 0 once every chunk has arrived. */
uint64_t store_receive_missing(const store_receive *rx);

/*
 * Give the bytes of one data chunk.
 *   file, chunk  which chunk (as in store_receive_needs).
 *   data, len    its bytes; len must be the chunk's length (the last chunk
 *                of a file may be short).
 * The bytes are checked against the manifest's SHA-256 before anything is
 * written: a mismatch fails and names the file and chunk. A chunk not
 * needed (already present) is verified and dropped. Safe to call from
 * several threads at once for different chunks.
 */
int store_receive_chunk(store_receive *rx, size_t file, size_t chunk, const void *data,
                        size_t len);

/*
 * Publish: every data chunk must have arrived (else the first missing one is
 * named), the parent must be in the store. Files are fsynced and the layer
 * appears with one rename; then tag (may be NULL) points at it. res gets
 * the id and whether the layer existed. Ends the receive, success or not.
 */
int store_receive_finish(store_receive *rx, const char *tag, store_commit_result *res);

/* Parse a layer made elsewhere without receiving it (lazy/ serves one
 * before it is in the store): its canonical manifest, parsed as strictly
 * as store_receive_begin does (its id is the manifest's SHA-256), and its
 * info. Free with store_layer_free. */
int store_manifest_parse(const char *manifest, size_t mlen, const char *info, size_t ilen,
                         store_layer **out);

/* The canonical manifest bytes of a layer (checked against its id) and its
 * info text, as a receive elsewhere takes them. Caller frees both. */
int store_layer_manifest(store *st, const store_id *id, char **manifest, size_t *mlen,
                         char **info, size_t *ilen);

/* The largest manifest any layer can have, in bytes (docs/manifest.md). */
size_t store_manifest_max(void);

/* 1 if the layer entered this store through a receive (an archive, a
 * registry) rather than being made here, 0 if not (or unknown). Kept beside
 * the layer, outside its manifest: where a layer came from is this host's
 * knowledge, not part of its content. */
int store_layer_received(store *st, const store_id *id);

/* A layer's boot profile (docs/profiles.md), opaque bytes kept beside the
 * layer, outside its manifest and id like the received mark: get reads it
 * (at most max bytes, else -EFBIG; -ENOENT if there is none, with no
 * message), put replaces it atomically. remote/ reads and writes the format. */
int store_profile_get(store *st, const store_id *id, size_t max, char **data, size_t *len);
int store_profile_put(store *st, const store_id *id, const void *data, size_t len);

/* Drop a receive and everything it wrote. NULL is fine. */
void store_receive_abort(store_receive *rx);

/* A scratch directory under the store's tmp/ (on the store's volume, so
 * files cloned into it share blocks), kept from gc while held. Dropping it
 * removes it and what it holds. */
typedef struct store_scratch store_scratch;
int store_scratch_make(store *st, const char *kind, store_scratch **out);
const char *store_scratch_path(const store_scratch *s);
void store_scratch_drop(store_scratch *s);
/* A scratch directory that outlives an interrupted run: tmp/receive-<key>
 * (key: 64 lowercase hex digits naming the work, a digest of what it
 * makes), locked without waiting (-EBUSY if another process works in it).
 * gc keeps it as it keeps a resumable receive's work (store_receive_opts
 * .resume). *existed: an earlier run left it. store_scratch_keep lets go
 * and leaves it for the next run; store_scratch_drop removes it. */
int store_scratch_resumable(store *st, const char *key, int *existed, store_scratch **out);
void store_scratch_keep(store_scratch *s);


/* Keep layer id and its chain from gc while the pin is held (a push reading
 * it, say), even if no tag reaches it; gc neither waits for it nor removes
 * it. A process that dies drops its pins. */
typedef struct store_pin store_pin;
int store_pin_layer(store *st, const store_id *id, store_pin **out);
void store_unpin(store_pin *p);

/* Make an existing directory dir, whose files hold layer id's content
 * (plus changes), count as a clone of id: its marker and clone record are
 * written as store_clone writes them. lazy/ hands an instance over so when
 * the layer it served before the pull ended is published. */
int store_clone_adopt(store *st, const char *dir, const store_id *id);

/* Delete a clone directory and forget its record (an ephemeral instance). */
int store_clone_delete(store *st, const char *dir);

/* ---- clone records (instances/), git-worktree style ---- */

/* A record keeps its layer alive until `clones --prune` forgets it; gc never
 * drops one, whatever state its clone is in. */
typedef enum {
    STORE_CLONE_OK,        /* the clone is at its recorded path */
    STORE_CLONE_MOVED,     /* something else is at the path: moved, not yet touched */
    STORE_CLONE_MISSING,   /* nothing at the path: deleted, or moved and not yet touched */
    STORE_CLONE_UNREADABLE /* the record, path or marker can't be read */
} store_clone_state;

typedef struct {
    char key[33];           /* the record's name in instances/ */
    char *path;             /* where the clone was recorded; NULL if the record can't be read */
    int has_layer;          /* 0 if the record can't be read */
    store_id layer;         /* what the clone stands on (its marker's, when ok) */
    store_id record_layer;  /* what the record says */
    store_clone_state state;
    int64_t recorded;       /* when strata last wrote the record (unix seconds) */
    char *why;              /* what could not be read, when unreadable */
} store_clone_entry;

#define STORE_CLONE_PRUNE_EXPIRE (90 * 86400) /* 3 months, as git worktree prune */

int store_clones(store *st, store_clone_entry **out, size_t *n);
void store_clones_free(store_clone_entry *v, size_t n);
const char *store_clone_state_name(store_clone_state s);
/* Forget records of missing clones not written for expire seconds. */
int store_clones_prune(store *st, int64_t expire, size_t *forgotten);

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

/* A first saved state's files (those the state the instance was resumed
 * from lacks: a RAM file after a cold boot) are read whole, and the
 * commit hashes them from the instance's files, in the page cache, while
 * D is committed. A supervisor can start that sooner, as soon as its VM
 * is paused, so it also overlaps the VM's save and exit: call this then,
 * with the files the VM won't write any more (a RAM file once the VM is
 * paused; not a state file save() is about to write), and pass the result
 * as o->hashed. The VM may still have them open for writing: the commit
 * uses the hashes only if, when it copies a file, no writer has it open
 * and its inode, size and times are those of when hashing began (Linux;
 * elsewhere nothing is hashed ahead). o: chunk sizes as for the commit.
 * NULL if nothing was started. Free with store_state_hashing_free, after
 * the commit or instead of it (stops the hashing). */
typedef struct store_state_hashing store_state_hashing;
store_state_hashing *store_state_hashing_start(store *st, const char *instance_dir,
                                               const char *const *files, size_t n,
                                               const store_commit_opts *o);
void store_state_hashing_free(store_state_hashing *h);

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
    size_t instances_forgotten; /* always 0: gc keeps every record (see store_clones_prune) */
    uint64_t bytes_freed; /* allocated bytes released, counting shared blocks once per file */
    size_t layers_waiting; /* unreachable, kept until their grace period ends */
    size_t clones_missing; /* records whose clone is not where recorded */
    size_t partial_kept;   /* interrupted pulls' work kept (store_receive_opts.resume) */
} store_gc_result;

#define STORE_GC_PRUNE_EXPIRE (14 * 86400) /* grace period of an unreachable layer */

/* Remove layers that no tag, clone record or descendant reaches and that
 * have been unreachable for expire seconds or more (0: all of them), and
 * stale temporary work. If any tag, record, layer or the unreachable list
 * can't be read, remove nothing and say what. store_gc is expire 0. */
int store_gc_expire(store *st, int64_t expire, store_gc_result *res);
int store_gc(store *st, store_gc_result *res);

typedef struct {
    store_id id;
    int64_t since; /* when gc first saw it unreachable, or its last ref went; 0: not yet */
} store_unreachable_entry;

/* Layers no tag or clone record reaches, sorted by id. */
int store_unreachable(store *st, store_unreachable_entry **out, size_t *n);

typedef struct {
    size_t layers, tags, instances;
    uint64_t apparent_bytes;  /* sum of file sizes over all layers */
    uint64_t unique_bytes;    /* data in distinct chunks: what a remote would hold */
    uint64_t allocated_bytes; /* blocks the store's files hold (shared blocks counted once per file) */
    uint64_t volume_free;
} store_usage;

int store_df(store *st, store_usage *out);

#endif
