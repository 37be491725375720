/*
 * remote: strata layers in OCI registries (docs/remote.md).
 *
 * A registry speaks the OCI distribution API over HTTPS (plain HTTP only to
 * a loopback address or when asked with insecure). A layer travels as one
 * OCI image manifest whose config blob is the layer's canonical manifest,
 * with its chunk data in zstd packs and a chunk index blob per layer of its
 * chain, so any tag pulls on its own and a puller can fetch one chunk by
 * byte range.
 *
 * Credentials come from the docker client configuration
 * ($DOCKER_CONFIG/config.json, else ~/.docker/config.json): credHelpers,
 * then credsStore (docker-credential-<name>, spoken to over pipes), then
 * auths. They are never put in a process's arguments or in a message.
 *
 * Every function returns 0 (or a count) on success and a negative errno on
 * failure, with a one-line message for the user in remote_error(). Nothing
 * here prints. Sizes that come from a registry are bounded before anything
 * is allocated for them, and every blob is checked against its digest.
 */
#ifndef STRATA_REMOTE_H
#define STRATA_REMOTE_H

#include "../store/store.h"

#include <stddef.h>
#include <stdint.h>

/* media types and annotations of the format, version 1 (docs/remote.md) */
#define REMOTE_ARTIFACT_TYPE "application/vnd.strata.layer.v1"
#define REMOTE_MT_MANIFEST "application/vnd.strata.layer.manifest.v1"
#define REMOTE_MT_INFO "application/vnd.strata.layer.info.v1"
#define REMOTE_MT_INDEX "application/vnd.strata.chunk-index.v1"
#define REMOTE_MT_PACK "application/vnd.strata.pack.v1+zstd"
#define REMOTE_MT_OCI "application/vnd.oci.image.manifest.v1+json"
#define REMOTE_MANIFEST_MAX (4u << 20) /* the largest OCI manifest read or written */

/* The message describing the last failure on this thread. Never NULL. */
const char *remote_error(void);

/* ---- references ---- */

/* HOST[:PORT]/REPO[:TAG|@sha256:HEX]. HOST has a '.' or ':' or is
 * "localhost" (there is no default registry). */
typedef struct {
    char *host;   /* "ghcr.io", "127.0.0.1:5000", "[::1]:5000" */
    char *repo;   /* "acme/macos": the distribution name grammar */
    char *tag;    /* NULL if none was given */
    char *digest; /* "sha256:<64 hex>", or NULL */
} remote_ref;

/* Parse text into out. need_repo_only: 1 refuses a tag or digest (a
 * repository for ls), 0 accepts them. Free with remote_ref_free. */
int remote_ref_parse(const char *text, int need_repo_only, remote_ref *out);
void remote_ref_free(remote_ref *r);

/* ---- connections ---- */

typedef struct remote remote;

typedef struct {
    int insecure;           /* 1: plain HTTP to any host (else only to loopback) */
    const char *docker_dir; /* the docker config directory, or NULL: $DOCKER_CONFIG, ~/.docker */
} remote_opts;

/* A client for ref's host and repository. push: 1 asks for push rights too
 * (the bearer scope "pull,push"). Nothing is sent until the first request.
 * Free with remote_close. */
int remote_open(const remote_ref *ref, const remote_opts *o, int push, remote **out);
void remote_close(remote *r);
/* A copy of r with its own connection, sharing nothing, for another
 * thread: a remote is used by one thread at a time. */
int remote_dup(const remote *r, remote **out);

/* An OCI manifest as remote_manifest_get read it (body checked against the
 * digest it was asked by, digest that of body). */
typedef struct {
    char *body;
    size_t len;
    char digest[72];
} remote_manifest;

/* GET the OCI manifest named by reference (a tag or a digest). body, at most
 * REMOTE_MANIFEST_MAX bytes, is checked against the digest when reference
 * is one; digest (71 bytes + NUL) receives "sha256:<hex>" of the body.
 * Returns -ENOENT if there is no such manifest. Caller frees body. */
int remote_manifest_get(remote *r, const char *reference, char **body, size_t *len,
                        char digest[72]);

/* PUT body (of media type REMOTE_MT_OCI) under reference (a tag or its
 * digest). */
int remote_manifest_put(remote *r, const char *reference, const void *body, size_t len);

/* 1 if the repository has blob digest (of size bytes, if size is not 0), 0
 * if not. */
int remote_blob_exists(remote *r, const char *digest, uint64_t size);

/* Ask the registry to mount digest from repository from_repo on the same
 * host. 1 if mounted, 0 if the registry declined (nothing changed). A
 * registry may decline by opening an upload session (202): its URL is left
 * in *session for remote_blob_put to use; if *session already holds one,
 * the newer is cancelled instead, and a mount that succeeds cancels the one
 * held (DELETE). */
int remote_blob_mount(remote *r, const char *digest, const char *from_repo, char **session);
/* DELETE an upload session nobody will use, best effort, and free it. */
void remote_upload_abandon(remote *r, char *session);

/* Fills buf with up to len bytes of the blob's content; returns the count,
 * 0 at the end, negative on error. rewind: back to the start; seek: to any
 * offset (may be NULL: then a chunked upload that fails restarts whole). */
typedef struct {
    long (*read)(void *ctx, char *buf, size_t len);
    int (*rewind)(void *ctx);
    void *ctx;
    int (*seek)(void *ctx, uint64_t offset);
} remote_source;

/* How a push's blobs are uploaded: shared by its workers, and changed as
 * the registry's answers teach (a chunk refused as too large or too small,
 * chunks refused altogether). chunk 0: one monolithic PUT per blob. */
#define REMOTE_CHUNK_MONOLITHIC UINT64_MAX /* remote_push_opts.chunk_size: no PATCH */
typedef struct {
    uint64_t chunk; /* PATCH body size; read and written atomically */
    int fixed;      /* the user's choice: not adapted, except falling back to monolithic */
} remote_upload_plan;
/* The plan for host: chunk_size (bytes, or REMOTE_CHUNK_MONOLITHIC) if not
 * 0, else what that registry is known to take (docs/remote.md "Transport"). */
void remote_upload_plan_init(remote_upload_plan *p, const char *host, uint64_t chunk_size);

/* Upload a blob of size bytes whose sha256 is digest: a blob larger than a
 * chunk goes in PATCHes of plan's chunk size, the last piece in the closing
 * PUT ?digest=, each failed piece resumed from where the registry says the
 * upload stands; a smaller one (or with plan monolithic) in one PUT, retried
 * whole. session (owned: used or cancelled) is an upload session a declined
 * mount opened, or NULL to POST a new one. */
int remote_blob_upload(remote *r, const char *digest, uint64_t size, const remote_source *src,
                       remote_upload_plan *plan, char *session);
/* The same for a small blob: one POST and one PUT, retried whole. */
int remote_blob_put(remote *r, const char *digest, uint64_t size, const remote_source *src);

/* Receives blob bytes as they arrive; returns 0 to go on, negative to stop. */
typedef int (*remote_sink)(void *ctx, const void *data, size_t len);

/* GET len bytes of blob digest from offset (len 0: the whole blob, which
 * must then be at most max bytes). A registry that ignores Range and sends
 * the whole blob (200) is handled: the bytes before offset are skipped.
 * Redirects are followed without the credentials. Only whole-blob reads are
 * checked against the digest; the caller checks ranges (chunk ids). */
int remote_blob_get(remote *r, const char *digest, uint64_t offset, uint64_t len, uint64_t max,
                    remote_sink sink, void *ctx);

/* The repository's tags, sorted. Free with remote_strings_free. */
int remote_tags(remote *r, char ***tags, size_t *n);
void remote_strings_free(char **s, size_t n);

/* ---- plain downloads (a macOS restore image) ---- */

/* Receives progress: done of total bytes (total 0 if not yet known). */
typedef void (*remote_download_progress_fn)(void *ctx, const char *what, uint64_t done, uint64_t total);

/* Download url (https, or http to a loopback host) into path, once: a path
 * that exists is taken as done (nothing is put there unless whole). Bytes
 * go to ".NAME.part" beside path; an interrupted transfer is resumed with
 * an HTTP Range request, a few times within one call and by any later call.
 * The file must come to the size the server announced (Content-Length, or
 * Content-Range's total); then it is fsynced and renamed into place. */
int remote_download(const char *url, const char *path, remote_download_progress_fn progress, void *ctx);

/* ---- reading an artifact (the parts a pull needs) ---- */

typedef struct {
    char manifest[72], info[72], index[72]; /* blob digests */
    uint64_t manifest_size, info_size, index_size;
    size_t first_pack, npacks; /* its packs in remote_artifact.packs */
} remote_artifact_layer;

/* What a pushed layer's guest needs of a host, from the manifest's
 * annotations (docs/remote.md): each field empty (0) where the manifest
 * does not say, as old manifests and guests whose arch can't be known. */
typedef struct {
    char os[16];           /* REMOTE_ANN_OS: "macos" or "linux" */
    char arch[16];         /* REMOTE_ANN_ARCH: "arm64", "amd64" (OCI's names) */
    char macos_min[32];    /* REMOTE_ANN_MACOS_MIN: HardwareModel's MinimumSupportedOS, "13.0.0" */
    int64_t macos_data_rep; /* REMOTE_ANN_MACOS_DATA_REP: its DataRepresentationVersion */
} remote_guest;

#define REMOTE_ANN_OS "dev.strata.guest.os"
#define REMOTE_ANN_ARCH "dev.strata.guest.arch"
#define REMOTE_ANN_MACOS_MIN "dev.strata.guest.macos.minimum-os"
#define REMOTE_ANN_MACOS_DATA_REP "dev.strata.guest.macos.data-representation"

typedef struct {
    store_id top;       /* the layer the tag names (sha256 of the config blob) */
    int host_bound;     /* a saved state pushed with --with-state */
    remote_guest guest; /* what its guest needs, as far as the annotations say */
    remote_artifact_layer *layers; /* the chain, root first; the last is top */
    size_t nlayers;
    char (*packs)[72];
    uint64_t *pack_sizes;
    size_t npacks;
} remote_artifact;

/* Parse and check an OCI manifest as docs/remote.md lays it out (body as
 * remote_manifest_get returns it). -EBADMSG with a one-line message if it
 * is not a strata layer or breaks the layout, names a layer twice (a
 * cycle) or a pack twice, or carries a malformed guest annotation. Time
 * and memory are O(n log n) in the manifest's length. Free with
 * remote_artifact_free. */
int remote_artifact_parse(const char *body, size_t len, remote_artifact *out);
void remote_artifact_free(remote_artifact *a);

/* GET a whole blob of at most max bytes into memory, checked against its
 * digest. Caller frees *data. */
int remote_blob_read(remote *r, const char *digest, uint64_t max, char **data, size_t *len);

/* GET one chunk: the zstd frame of clen bytes at offset in pack, by Range
 * (or from a whole body, if the registry ignores Range), decompressed into
 * buf (ulen bytes) and checked: it must decompress to exactly ulen bytes
 * whose SHA-256 is id. -EBADMSG naming the pack otherwise. */
int remote_chunk_get(remote *r, const char *pack, uint64_t offset, uint32_t clen, uint32_t ulen,
                     const unsigned char id[32], void *buf);

/* ---- boot profiles (docs/profiles.md) ---- */

/* The order in which a guest first read its layer's Disk.img, in 1 MiB
 * chunks, until it was ready: runs of consecutive chunks. Only ever a hint
 * for what a lazy run fetches first. */
#define REMOTE_MT_PROFILE "application/vnd.strata.boot-profile.v1"
#define REMOTE_ANN_PROFILE "dev.strata.boot-profile"           /* the blob's sha256 digest */
#define REMOTE_ANN_PROFILE_SIZE "dev.strata.boot-profile.size" /* and its size in bytes */
#define REMOTE_PROFILE_VERSION 1
#define REMOTE_PROFILE_MAX (64u << 10)   /* the largest profile blob read or written */
#define REMOTE_PROFILE_RUNS_MAX 16384u

typedef struct {
    uint64_t first, count; /* chunks first .. first + count - 1, count >= 1 */
} remote_profile_run;

typedef struct {
    store_id layer;          /* the layer whose Disk.img was read */
    uint64_t disk_chunks;    /* Disk.img's 1 MiB chunks in that layer */
    uint32_t ready_ms;       /* from start to ready, 0 if unknown */
    remote_profile_run *runs; /* in the order first read; no chunk twice */
    size_t nruns;
} remote_profile;

/* A profile from the chunk indexes a guest read, in order (repeats are
 * dropped, consecutive ones joined into runs). -EINVAL for an index past
 * disk_chunks, -E2BIG past REMOTE_PROFILE_RUNS_MAX runs. */
int remote_profile_from_reads(const store_id *layer, uint64_t disk_chunks, uint32_t ready_ms,
                              const uint64_t *chunks, size_t n, remote_profile *out);
/* The blob (docs/profiles.md). Caller frees *out. */
int remote_profile_encode(const remote_profile *p, char **out, size_t *len);
/* Check and read a blob from outside: -EBADMSG with a one-line message
 * unless it is a version-1 profile of layer (NULL: any) whose Disk.img has
 * disk_chunks chunks, within the bounds, every run inside the disk and no
 * chunk named twice, with nothing after it. */
int remote_profile_decode(const void *data, size_t len, const store_id *layer, uint64_t disk_chunks,
                          remote_profile *out);
void remote_profile_free(remote_profile *p);
/* Disk.img's chunk count in l; -ENOENT if it has none, -EINVAL if its
 * chunks are not 1 MiB. */
int remote_profile_disk_chunks(const store_layer *l, uint64_t *out);
/* The store's profile of a layer, checked (-ENOENT: none), and one saved
 * beside its layer (store_profile_put), replacing any older. */
int remote_profile_load(store *st, const store_id *layer, remote_profile *out);
int remote_profile_save(store *st, const remote_profile *p);
/* The profile an OCI manifest (as remote_manifest_get returned it) names,
 * fetched and checked for layer: -ENOENT with no message if it names none;
 * otherwise what went wrong, which a caller reports and goes on without. */
int remote_profile_fetch(remote *r, const char *manifest, size_t len, const store_id *layer,
                         uint64_t disk_chunks, remote_profile *out);

/* ---- credentials ---- */

/* Check user/password against host (a plain GET /v2/ with them), then keep
 * them where docker would: the credential helper the config names for host
 * (credHelpers, credsStore), else the config file's auths, written
 * atomically with mode 0600. */
int remote_login(const char *host, const char *user, const char *password, const remote_opts *o);

/* Forget host's credentials (helper erase, or the auths entry). -ENOENT if
 * there were none. */
int remote_logout(const char *host, const remote_opts *o);

/* ---- push ---- */

typedef void (*remote_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct {
    int with_state;   /* push a saved state itself, marked host-bound; else its parent */
    unsigned jobs;    /* parallel uploads, 1..64; 0 picks one for the machine */
    uint64_t chunk_size; /* bytes per PATCH; 0 picks per registry; REMOTE_CHUNK_MONOLITHIC */
    remote_progress_fn progress; /* bytes of chunk data considered so far; may be NULL */
    void *progress_ctx;
    void (*note)(void *ctx, const char *line); /* e.g. "pushing the parent"; may be NULL */
    void *note_ctx;
} remote_push_opts;

typedef struct {
    store_id pushed;          /* the layer pushed (the parent of a state pushed without it) */
    char digest[72];          /* the OCI manifest's digest */
    uint64_t blobs_uploaded;
    uint64_t bytes_uploaded;  /* compressed bytes sent in blobs (manifest not counted) */
    uint64_t blobs_present;   /* blobs the registry had or mounted */
    uint64_t chunks_uploaded; /* data chunks in the packs uploaded */
    uint64_t chunks_present;  /* data chunks in packs the registry had */
    uint64_t chunk_bytes;     /* uncompressed bytes of all data chunks of the chain */
} remote_push_result;

/* Push layer id of st (and what its chain needs) to dst (which must have a
 * tag; its digest is ignored). Uploads only blobs the registry lacks; the
 * manifest goes last, so a push cut short publishes nothing. */
int remote_push(store *st, const store_id *id, const remote_ref *dst, const remote_opts *o,
                const remote_push_opts *po, remote_push_result *res);

/* What every push (remote_push, tart's) asks of its destination before it
 * reads or sends anything: a tag to put the manifest under. 0, or -EINVAL
 * "push: the destination needs a tag (HOST/REPO:TAG)". */
int remote_push_check_dest(const remote_ref *dst);

/* ---- pull ---- */

typedef struct {
    const char *tag;  /* the top layer's local tag, or NULL for none */
    unsigned jobs;    /* parallel downloads, 1..64; 0 picks one for the machine */
    remote_progress_fn progress; /* chunk bytes received so far of those planned; may be NULL */
    void *progress_ctx;
    /* May be NULL. Asked once the manifest is read, before any blob is:
     * 0 to go on, or a negative errno (its error set) that ends the pull
     * with nothing fetched, passed on unchanged. The caller decides
     * whether this host can run the guest (remote/ never calls boot/). */
    int (*check_guest)(void *ctx, const remote_guest *g);
    void *check_ctx;
    /* May be NULL: what the pull passed over without failing (a boot
     * profile it could not keep). */
    void (*note)(void *ctx, const char *line);
    void *note_ctx;
    /* lazy/'s hooks (docs/lazy.md), for a pull that fills a layer a guest
     * is already reading; both may be NULL, and both are called from the
     * pull's threads, several at once. chunk_source: asked just before a
     * chunk is fetched: 1 with its len bytes in buf if the caller holds
     * them (the store checks them against id as any chunk; a mismatch is
     * fetched as usual), 0 if not, or a negative errno that ends the
     * pull with it (lazy/ stopping its fill). chunk_received: each chunk the pull
     * fetched, with its bytes, once the store has checked and taken it. */
    int (*chunk_source)(void *ctx, const unsigned char id[32], uint32_t len, void *buf);
    void (*chunk_received)(void *ctx, const unsigned char id[32], const void *data, size_t len);
    /* May be NULL: called by a worker just before each GET of layer data
     * (a range or a whole pack), and may block: lazy/ holds its fill back
     * there while a guest's own reads use the link. 0 to send it, or a
     * negative errno that ends the pull with it. */
    int (*before_fetch)(void *ctx);
    /* May be NULL: called by a worker as a GET's body arrives (every few
     * KiB), and may block: lazy/ pauses its fill there while the guest's
     * disk is busy, and the server stops sending once the socket's buffers
     * are full. held_ms starts at 0 for each GET and is the hook's to keep:
     * how long it has held that GET, so it can bound that (a server may
     * drop a connection idle too long). 0 to go on, or a negative errno
     * that ends the pull with it. */
    int (*while_fetching)(void *ctx, uint32_t *held_ms);
    void *chunk_ctx;
    /* Compressed bytes asked in one GET at most (a frame larger than it
     * still comes whole); 0: remote/'s own (8 MiB, few requests). lazy/'s
     * fill asks less, so a guest read waits behind less of it. */
    uint32_t range_max;
    /* Another process is receiving the layer (another pull, a lazy run's
     * fill: it holds the store's tmp/receive-<id>): the pull waits for it
     * rather than download it all again, with one note (through note)
     * saying so, then takes up its work or finds the layer published
     * (store_receive_opts.busy_wait). pause: called about once a second
     * while it waits; returns 0 to go on waiting, or a negative errno that
     * ends the pull with it (lazy/ stopping its fill). NULL: a sleep of a
     * second. */
    int (*pause)(void *ctx);
    void *pause_ctx;
    /* May be NULL. On -EPROTOTYPE (an OCI image of another kind), the
     * manifest the pull read is handed over here (the caller frees
     * other->body), so the puller of that kind (tart_pull_opts.manifest)
     * need not GET it again. Left {0} on any other return. */
    remote_manifest *other;
} remote_pull_opts;

typedef struct {
    store_id pulled;          /* the layer the source names */
    size_t layers_received;   /* layers of its chain the store lacked */
    uint64_t chunks_fetched;  /* data chunks downloaded (a chunk at several places: once) */
    uint64_t chunks_local;    /* data chunks not downloaded because the store, or this pull,
                                 held the same bytes at another place: copied, checked */
    uint64_t chunks_present;  /* data chunks not downloaded because the store had them:
                                 cloned from the local base, or kept from an interrupted pull */
    uint64_t chunks_resumed;  /* of those, kept from an interrupted pull */
    uint64_t bytes_fetched;   /* bytes of pack data received (compressed, as sent) */
    uint64_t requests;        /* blob GETs for pack data */
    int whole_packs;          /* the registry refused Range: needed packs came whole */
    int profile;              /* the layer's boot profile came with it and is kept */
} remote_pull_result;

/* Pull the layer src names (a tag or digest) with the part of its chain the
 * store lacks, fetching only chunks the store does not hold (at the same
 * place in a local ancestor, or under the same id elsewhere in the chain:
 * copied, checked), each once, by parallel Range requests (whole packs,
 * each once, from a registry that refuses Range). Every blob and chunk is checked before the store takes it;
 * on any failure nothing is published, and chunks already received stay
 * under the store's tmp/ for the next pull of the same layer. po may be NULL.
 * -EPROTOTYPE (nothing fetched but the manifest, handed to po->other) if
 * src is an OCI image of another kind (a tart image: tart_pull takes those;
 * "wrong type", which macOS has too, unlike EMEDIUMTYPE). */
int remote_pull(store *st, const remote_ref *src, const remote_opts *o,
                const remote_pull_opts *po, remote_pull_result *res);

/* ---- reading a layer in place (lazy/: serving it before its pull ends) ---- */

typedef struct remote_reader remote_reader;

/* Read what fetching any chunk of the layer src names needs, checked as a
 * pull checks it: the OCI manifest (check_guest asked as in
 * remote_pull_opts; may be NULL), the manifest and info blob of every layer
 * of its chain (a chain, each manifest's digest its id) and every layer's
 * chunk index. Nothing is written anywhere. Free with remote_reader_close. */
int remote_reader_open(const remote_ref *src, const remote_opts *o,
                       int (*check_guest)(void *ctx, const remote_guest *g), void *check_ctx,
                       remote_reader **out);

/* The top layer: its id, and its canonical manifest and info bytes (valid
 * while the reader is open). */
const store_id *remote_reader_top(const remote_reader *rd, const char **manifest, size_t *mlen,
                                  const char **info, size_t *ilen);

/* The digest of the OCI manifest it read ("sha256:<hex>"): a reference to
 * exactly this layer however its tag moves later. */
const char *remote_reader_digest(const remote_reader *rd);

/* The layers of its chain, root first (the last is the top): their count,
 * and their ids in *ids (valid while the reader is open). */
size_t remote_reader_chain(const remote_reader *rd, const store_id **ids);

/* Fetch the chunk whose id is id (len bytes, as the manifest says) from
 * the pack a chunk index of the chain places it in: one Range GET (the
 * transport's few retries of a transient failure included), decompressed
 * and checked (remote_chunk_get). -ENOENT if no index holds it; -EBADMSG
 * naming the pack if the registry's bytes are not the chunk. Safe from
 * several threads at once: each call uses a connection of its own. */
int remote_reader_chunk(remote_reader *rd, const unsigned char id[32], uint32_t len, void *buf);

/* Receives chunk i of a remote_reader_chunks call (len bytes, checked);
 * returns 0 to go on, negative to stop (that value is returned). */
typedef int (*remote_chunks_fn)(void *ctx, size_t i, const void *data, size_t len);

#define REMOTE_READER_SPAN_MAX (32u << 20) /* the most pack bytes one Range GET asks for */

/* Fetch the chunks ids[0..n) (lens[i] bytes each) in as few Range GETs as
 * their places allow: chunks that follow each other in this order and in
 * one pack (frame after frame) are one GET, of at most
 * REMOTE_READER_SPAN_MAX bytes. Each chunk is decompressed and checked as
 * remote_reader_chunk checks it, then given to got, in order. *requests
 * grows by the GETs made. Safe from several threads at once. */
int remote_reader_chunks(remote_reader *rd, const unsigned char *const *ids, const uint32_t *lens,
                         size_t n, remote_chunks_fn got, void *ctx, unsigned *requests);

/* The boot profile the OCI manifest it read names (remote_profile_fetch:
 * -ENOENT if it names none), checked against the top layer and disk_chunks.
 * Not safe alongside other calls on rd: call it before serving. */
int remote_reader_profile(remote_reader *rd, uint64_t disk_chunks, remote_profile *out);

/* Where remote_reader_chunk finds a chunk: its pack's digest and offset, for a message. */
int remote_reader_place(const remote_reader *rd, const unsigned char id[32], char pack[72],
                        uint64_t *offset);

void remote_reader_close(remote_reader *rd);

/* The local tag a pull gives by default: the remote name, with what the tag
 * grammar lacks replaced ("ghcr.io/acme/macos:xcode16" ->
 * "ghcr.io_acme_macos:xcode16", "127.0.0.1:5000/vm:v1" -> "127.0.0.1_5000_vm:v1").
 * -EINVAL if ref has no tag or the result is not a valid tag (too long). */
int remote_ref_local_tag(const remote_ref *ref, char *out, size_t n);

/* ---- listing ---- */

typedef struct {
    char *tag;
    char digest[72];        /* of the OCI manifest */
    int strata;             /* 0: not a strata layer (the fields below are empty) */
    store_id layer;
    uint64_t size;          /* apparent bytes of the layer's files */
    uint64_t pull_bytes;    /* bytes of all its blobs (a pull into an empty store) */
    size_t chain;           /* layers in its chain, itself included */
    int host_bound;         /* a saved state */
    remote_guest guest;     /* what its guest needs (empty for an old manifest) */
} remote_tag_info;

/* Every tag of repo's repository with what its manifest says. */
int remote_list(const remote_ref *repo, const remote_opts *o, remote_tag_info **out, size_t *n);
void remote_list_free(remote_tag_info *t, size_t n);

#endif
