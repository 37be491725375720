/*
 * archive: layers as single files, and VMs from tart.
 *
 * An export is a pax tar compressed with zstd (all cores), that GNU tar or
 * bsdtar alone unpacks into NAME.bundle/: sparse files are GNU sparse 1.0
 * entries whose holes come from the manifest's zero chunks (never read).
 * The layer's canonical manifest travels inside (NAME.bundle/.strata-layer/),
 * so import restores the very same layer id and checks every chunk. The
 * format is in docs/archive.md.
 *
 * Every function returns 0 on success or a negative errno, with a one-line
 * message in archive_error(). Nothing here prints.
 */
#ifndef STRATA_ARCHIVE_H
#define STRATA_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

#include "../store/store.h"

/* The message describing the last failure on this thread. Never NULL. */
const char *archive_error(void);

/* what: "export" or "import"; done: bytes of layer data so far; total: all
 * of it (0 if unknown yet). */
typedef void (*archive_progress_fn)(void *ctx, const char *what, uint64_t done, uint64_t total);

typedef struct {
    uint64_t bytes_in;   /* export: layer data read; import: archive bytes read */
    uint64_t bytes_out;  /* export: archive bytes written; import: layer data written */
    size_t layers;       /* layers in the archive */
    store_id id;         /* the layer exported or imported */
    int existed;         /* import: the layer was already in the store */
    int host_bound;      /* it holds a saved state, resumable only where it was made */
} archive_stats;

typedef struct {
    const char *name;     /* top directory NAME.bundle; NULL: derived by the caller */
    const char *since;    /* REF: carry only chunks that differ from it, or NULL */
    int with_state;       /* export a saved-state layer itself, not its parent */
    int level;            /* zstd level 1..19; 0: 3 */
    int threads;          /* zstd workers; 0: every online core */
    archive_progress_fn progress; /* may be NULL */
    void *ctx;
    void (*note)(void *ctx, const char *line); /* e.g. "exporting the parent"; may be NULL */
} archive_export_opts;

/*
 * Write layer ref as an archive to out_fd (a file or a pipe; written in
 * order, never seeked). A layer with a saved state (bind lines) is
 * exported as its parent unless with_state. The archive carries the
 * layer's ancestors too (as differences), back to the root or to since.
 */
int archive_export(store *st, const char *ref, int out_fd, const archive_export_opts *o,
                   archive_stats *stats);

typedef struct {
    const char *tag;      /* tag for the imported layer, or NULL */
    archive_progress_fn progress;
    void *ctx;
    void (*note)(void *ctx, const char *line);
} archive_import_opts;

/* Read an archive from in_fd (a file or a pipe) into the store. Every chunk
 * is checked against the manifest; anything hostile or damaged is refused
 * with the entry named, and the store is left unchanged. */
int archive_import(store *st, int in_fd, const archive_import_opts *o, archive_stats *stats);

/* Make a layer from a tart VM directory (config.json, disk.img, nvram.bin):
 * the disk is cloned, the rest mapped to Settings.json, HardwareModel,
 * MachineIdentifier and AuxiliaryStorage (macOS) or NVRAM (Linux). */
int archive_import_tart(store *st, const char *dir, const archive_import_opts *o,
                        store_commit_result *res);

#endif
