/*
 * lazy: a registry layer's disk served to a guest before its pull ends
 * (docs/lazy.md, issue 22).
 *
 * lazy_open fetches what a VM needs to start (the layer's small files,
 * whole) into an instance directory and makes its disk (Disk.img) ready to
 * be served over NBD: the caller passes lazy_export and lazy_backend to
 * nbd_server_start. Each read is answered from, in order: what the guest
 * wrote; the layer's chunks already in the instance file (read before, or
 * received by the fill); the same chunk in the store (the nearest layer of
 * the chain the store holds); the same chunk as another strata's pull of
 * the layer has received it (store_receive_peek); otherwise the chunk
 * fetched from the registry at once, on a connection of its own, never queued behind the
 * fill. Every chunk is checked against its SHA-256 before a byte of it is
 * served. A background fill (remote_pull, resumable) meanwhile brings the
 * whole layer into the store, taking the chunks the guest already fetched
 * instead of downloading them again, and waiting for another strata that
 * is receiving the layer rather than downloading it twice (docs/lazy.md,
 * "Sharing a pull"); once it has published the layer, the
 * instance is handed over: Disk.img becomes a clone of the published
 * layer's with the guest's writes on it, and the directory an ordinary
 * clone of the layer (its marker and clone record), so commit, suspend and
 * stop work on it as on any instance.
 *
 * Killed and started again on the same directory, lazy_open serves again:
 * the guest's writes stay, chunks already in the instance file are checked
 * again before they count, and the fill takes up the receive it left in
 * the store's tmp/, fetching only what is missing.
 *
 * Every function returns 0 (or a count) on success and a negative errno
 * on failure, with a one-line message (err_last(), ERR_LAZY). Nothing here
 * prints: lines for the instance's log go to lazy_opts.log.
 */
#ifndef STRATA_LAZY_H
#define STRATA_LAZY_H

#include "../base/note.h"
#include "../nbd/nbd.h"
#include "../remote/remote.h"
#include "../store/store.h"

#include <stdint.h>

#define LAZY_DISK "Disk.img"        /* the file served; every other file comes whole */
#define LAZY_DIR ".lazy"            /* in the instance: the engine's state (docs/lazy.md) */
#define LAZY_READ_WAIT_DEFAULT 120  /* seconds a guest's read may wait on the registry */
#define LAZY_FILL_JOBS_DEFAULT 2    /* the fill's parallel downloads: the guest's reads come first */
#define LAZY_FILL_RANGE_MAX (2u << 20) /* compressed bytes in one GET of the fill: fewer in
                                          flight when the guest needs the link or its disk */
#define LAZY_FILL_QUIET_MS 500      /* the fill sends no GET while a guest read waits on the
                                       registry, nor this long after the last one ended */
#define LAZY_GUEST_BUSY_BYTES (4u << 20) /* the guest's disk is busy when its reads and writes */
#define LAZY_GUEST_BUSY_MS 250           /* move this much within this long: the fill sends no
                                            GET, and pauses those sent, until this long after */
#define LAZY_FILL_HOLD_MAX_MS 2000  /* a busy disk holds a GET of the fill back at most this
                                       long, and pauses it once sent at most as long: under
                                       a guest never idle the fill still goes on */
#define LAZY_HANDOVER_HOLD_MS 250   /* where the handover copies the layer (no shared blocks),
                                       a busy disk holds each 8 MiB of the copy back at most
                                       this long */

typedef struct lazy_disk lazy_disk;

typedef struct {
    const char *tag;      /* the local tag the fill gives the layer, as pull's -t; may be NULL */
    unsigned fill_jobs;   /* the fill's parallel downloads, 1..64; 0: LAZY_FILL_JOBS_DEFAULT */
    unsigned fill_quiet_ms; /* the fill's GETs wait this long after the guest's last read from
                             the registry; 0: LAZY_FILL_QUIET_MS */
    unsigned read_wait;   /* seconds; 0: LAZY_READ_WAIT_DEFAULT. A guest read whose chunk the
                             registry does not deliver within it gets EIO (and a log line) */
    int no_fill;          /* 1: no background fill; chunks come only when the guest reads them */
    int fill_after_ready; /* 1: the fill (after the boot profile's chunks) starts at lazy_ready,
                             so a booting guest has the link to itself: what a VM run wants */
    int durable_on_flush; /* 1: the client sends FLUSH (QEMU does): writes are made durable
                             then, not each before its reply (what VZ, which never
                             flushes, needs: the default) */
    note_fn log;          /* the instance's log: a line per fault, the fill's end; may be NULL;
                             called from any thread */
    void *log_ctx;
    /* as remote_pull_opts.check_guest: asked before anything is fetched */
    int (*check_guest)(void *ctx, const remote_guest *g);
    void *check_ctx;
} lazy_opts;

/*
 * Prepare instance_dir (created if absent; on the store's volume, as a
 * clone) to run the layer src names: the small files fetched whole (kept
 * if there already: a restart), Disk.img made at the size the manifest
 * gives (never changing), the engine's state under LAZY_DIR, and the fill
 * started (unless o->no_fill), after the chunks of the boot profile the
 * registry holds for the layer, if any (fetched first by a thread of
 * their own; docs/profiles.md). st must stay open, and is used by the
 * fill's thread from now until lazy_close (a store handle is for one
 * thread at a time: the caller leaves it to the engine meanwhile).
 * A directory already handed over (an ordinary clone) is refused.
 */
int lazy_open(store *st, const remote_ref *src, const remote_opts *ro, const char *instance_dir,
              const lazy_opts *o, lazy_disk **out);

/* What to serve with nbd_server_start: the export (the name "", the size
 * of the layer's Disk.img) and the backend (read, write, flush; writes are
 * durable before they are answered, since VZ never sends FLUSH, unless
 * lazy_opts.durable_on_flush). Valid
 * until lazy_close, which must come after nbd_server_stop. */
const nbd_export *lazy_export(const lazy_disk *d);
const nbd_backend *lazy_backend(const lazy_disk *d);

typedef enum {
    LAZY_FILLING,   /* the fill is running (or waiting to retry) */
    LAZY_IDLE,      /* no fill (lazy_opts.no_fill) */
    LAZY_DONE,      /* the layer is published and the instance handed over */
    LAZY_FAILED,    /* the fill stopped for good (a chunk that is not what its id says...) */
} lazy_fill_state;

typedef struct {
    lazy_fill_state state;
    store_id layer;           /* the layer served */
    uint64_t disk_size;
    uint64_t chunks;          /* data chunks of the disk */
    uint64_t chunks_here;     /* of those, here: in the instance file (read or written) or
                               * received by this open's fill */
    uint64_t fill_done, fill_total; /* the fill's bytes, as pull reports them */
    uint64_t guest_fetches;   /* chunks fetched from the registry for the guest's reads */
    uint64_t local_reads;     /* chunks taken from the store for the guest */
    uint64_t fill_held_back;  /* GETs of the fill held back while the guest used the link or
                                 its disk was busy */
    uint64_t fill_paused;     /* GETs of the fill paused mid-transfer for the same reasons */
    uint64_t received_reads;  /* chunks taken for the guest from a receive of the layer or
                                 one below (the fill's, another strata's pull), checked */
    /* once the fill has ended, its pull's counts (remote_pull_result) */
    uint64_t fill_fetched;    /* chunks it downloaded */
    uint64_t fill_resumed;    /* chunks kept from an earlier fill cut short */
    uint64_t fill_supplied;   /* chunks it took from the instance file (the guest read them) */
    char error[256];          /* why the fill failed, when LAZY_FAILED */
} lazy_progress;

/* The fill's progress, for `ps`; any thread. */
void lazy_progress_get(lazy_disk *d, lazy_progress *out);

/* Wait until the fill has ended (LAZY_DONE or LAZY_FAILED; returns at once
 * when there is no fill): 0 once handed over, else the fill's error. With
 * fill_after_ready, call lazy_ready first (or this waits for it). */
int lazy_wait(lazy_disk *d);

/* The guest is ready (its ssh banner, its console's login prompt, or the
 * caller's time limit): the boot profile (docs/profiles.md), the chunks
 * the guest read in order since lazy_open, ends here, and is kept beside
 * the layer once the fill has published it; a fill_after_ready fill
 * starts. Any thread; once is enough, later calls do nothing. */
void lazy_ready(lazy_disk *d);

/* Stop the fill (its work stays in the store's tmp/ for the next
 * lazy_open) and the boot profile's prefetch, and wait for the fill's
 * thread; a lazy_wait returns then. Serving goes on. Called by lazy_close; before it by a caller with a thread in
 * lazy_wait, which must have returned before lazy_close. */
void lazy_stop(lazy_disk *d);

/* Stop the fill (its work stays in the store's tmp/ for the next
 * lazy_open), make the instance file and the guest's writes durable (as a
 * FLUSH), and free d. NULL is fine. */
void lazy_close(lazy_disk *d);

#endif
