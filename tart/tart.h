/*
 * tart: tart's world, spoken by strata (docs/tart.md, research/tart.md).
 *
 * tart keeps a VM as a directory (config.json, disk.img, nvram.bin) and
 * ships it to OCI registries as its own image format: a config layer, the
 * disk cut into slices each compressed on its own with Apple's LZ4 block
 * framing, and the NVRAM. This module pulls such images into strata
 * layers, pushes layers in that format, and writes a layer out as a
 * directory `tart run` opens. It sits above archive/ (a tart directory
 * becomes a layer through archive_import_tart) and remote/ (the
 * registry's API), below cli/.
 *
 * Every function returns 0 on success or a negative errno, with a one-line
 * message in tart_error(). Nothing here prints. Everything from a registry
 * is untrusted: sizes are bounded before anything is allocated, every
 * layer is checked against its compressed and its uncompressed digest, and
 * host paths in a received config are never followed.
 */
#ifndef STRATA_TART_H
#define STRATA_TART_H

#include "../remote/remote.h"
#include "../store/store.h"

#include <stddef.h>
#include <stdint.h>

/* tart's media types and annotations (research/tart.md §3.1) */
#define TART_MT_CONFIG "application/vnd.cirruslabs.tart.config.v1"
#define TART_MT_DISK_V1 "application/vnd.cirruslabs.tart.disk.v1"
#define TART_MT_DISK_V2 "application/vnd.cirruslabs.tart.disk.v2"
#define TART_MT_NVRAM "application/vnd.cirruslabs.tart.nvram.v1"
#define TART_MT_ASIF_OVERLAY "application/vnd.cirruslabs.tart.disk.asif.overlay.v1"
#define TART_ANN_DISK_SIZE "org.cirruslabs.tart.uncompressed-disk-size"
#define TART_ANN_UPLOAD_TIME "org.cirruslabs.tart.upload-time"
#define TART_ANN_SIZE "org.cirruslabs.tart.uncompressed-size"
#define TART_ANN_DIGEST "org.cirruslabs.tart.uncompressed-content-digest"
#define TART_SLICE_SIZE (512ull << 20) /* what tart pushes since #866 */

/* The message describing the last failure on this thread. Never NULL. */
const char *tart_error(void);

/* 1 if body (an OCI image manifest as a registry sent it) is a tart image:
 * a layer of one of tart's media types. 0 if not (a strata layer, or
 * anything else). Never fails. */
int tart_manifest_is_tart(const char *body, size_t len);

/* ---- pull ---- */

typedef struct {
    const char *tag;  /* the layer's local tag, or NULL for none */
    unsigned jobs;    /* disk layers fetched at once, 1..64; 0 picks one */
    remote_progress_fn progress; /* uncompressed disk bytes done of all; may be NULL */
    void *progress_ctx;
    /* As remote_pull_opts.check_guest: asked once the config is read,
     * before any disk layer; may be NULL. */
    int (*check_guest)(void *ctx, const remote_guest *g);
    void *check_ctx;
    void (*note)(void *ctx, const char *line); /* e.g. "ignoring a layer of type X"; may be NULL */
    void *note_ctx;
    /* src's manifest, already read (remote_pull_opts.other, after its
     * -EPROTOTYPE): checked and parsed as one fetched here, not fetched
     * again; borrowed. May be NULL: the pull GETs it. */
    const remote_manifest *manifest;
} tart_pull_opts;

typedef struct {
    store_id pulled;          /* the layer made */
    int existed;              /* the store already had it */
    int cached;               /* the manifest was pulled before: no layer was fetched */
    size_t layers_fetched;    /* disk and NVRAM layers downloaded */
    size_t layers_resumed;    /* disk layers kept from an interrupted pull */
    uint64_t bytes_fetched;   /* compressed bytes received */
    uint64_t disk_size;       /* the disk's apparent size */
    size_t layers_copied;     /* disk layers not downloaded: an image pulled before had the
                                 same blob at the same offset; copied from its layer, checked */
} tart_pull_result;

/* Pull the tart image src names into a layer of st: the disk becomes
 * Disk.img (sparse), the NVRAM AuxiliaryStorage (macOS) or NVRAM (Linux),
 * the config Settings.json, HardwareModel and MachineIdentifier, as
 * archive_import_tart maps a tart directory. The same image gives the same
 * layer id on every machine. Disk layers are fetched po->jobs at a time,
 * each decoded as it streams; an interrupted pull keeps the layers it
 * finished (checked again) for the next. po may be NULL. */
int tart_pull(store *st, const remote_ref *src, const remote_opts *o, const tart_pull_opts *po,
              tart_pull_result *res);

/* ---- push ---- */

typedef struct {
    unsigned jobs;        /* slices compressed and uploaded at once; 0 picks */
    uint64_t chunk_size;  /* as remote_push_opts.chunk_size */
    remote_progress_fn progress; /* disk bytes done of all; may be NULL */
    void *progress_ctx;
    void (*note)(void *ctx, const char *line);
    void *note_ctx;
} tart_push_opts;

typedef struct {
    char digest[72];          /* the OCI manifest's digest */
    size_t layers;            /* layers in the manifest */
    uint64_t blobs_uploaded;
    uint64_t bytes_uploaded;  /* compressed bytes sent */
    uint64_t blobs_present;   /* blobs the registry had */
} tart_push_result;

/* Push layer ref of st to dst (which must have a tag) as a tart image that
 * `tart pull` reads (docs/tart.md lists every field and its source in
 * tart's code). A saved state is never pushed (as tart). */
int tart_push(store *st, const char *ref, const remote_ref *dst, const remote_opts *o,
              const tart_push_opts *po, tart_push_result *res);

/* ---- VM directories ---- */

/* Write layer ref of st as a tart VM directory dir (which must not exist):
 * config.json, disk.img (cloned where the filesystem can) and nvram.bin,
 * made in a temporary sibling and renamed into place. The inverse of
 * archive_import_tart: importing dir gives ref's layer back. */
int tart_vm_write(store *st, const char *ref, const char *dir);

#endif
