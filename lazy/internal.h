/* lazy's own shared parts; nothing outside lazy/ includes this.
 * Files, bottom up: chunks.c (a chunk's bytes: the store, the registry),
 * disk.c (the instance file and the NBD backend), fill.c (the background
 * pull and the handover), open.c (lazy_open, lazy_close); beside them
 * profile.c (the boot profile recorded, lazy_ready) and prefetch.c (the
 * registry's profile fetched first). */
#ifndef STRATA_LAZY_INTERNAL_H
#define STRATA_LAZY_INTERNAL_H

#include "../base/error.h"
#include "lazy.h"

#include <pthread.h>
#include <stdint.h>

#define lazy_fail(err, ...) err_set(ERR_LAZY, (err), __VA_ARGS__)
#define lazy_fail_errno(err, ...) err_set_errno(ERR_LAZY, (err), __VA_ARGS__)

/* a chunk of the served disk, in the instance file (one byte each, also in
 * LAZY_DIR/chunks but LZ_RECEIVED, which is in memory only) */
enum {
    LZ_ABSENT = 0,   /* not there: a zero chunk reads as zeros, a data chunk must come first */
    LZ_LAYER = 1,    /* the layer's bytes, checked when they came (checked again on reopen) */
    LZ_GUEST = 2,    /* the guest wrote into it: the whole chunk's current bytes are there, durable */
    LZ_RECEIVED = 3, /* not in the file, but the fill's receive has it: a read takes it from
                      * there (store_receive_peek, checked) as from the registry. The fill
                      * does not write the instance file, so the guest's fsyncs of it never
                      * carry the fill's bytes */
};

#define LZ_STRIPES 256 /* chunk locks: chunk c takes stripes[c % LZ_STRIPES] */

/* a data chunk by id: where it is (file index of its layer, chunk index) */
typedef struct {
    const unsigned char *digest;
    uint32_t file;
    uint64_t chunk;
} lz_place;

typedef struct lz_record lz_record; /* profile.c */

struct lazy_disk {
    store *st;
    remote_reader *rd;
    remote_ref src;
    remote_opts ro;
    lazy_opts o;
    char *dir, *state_dir, *disk_path;
    store_layer *top;
    const store_file *df; /* top's LAZY_DISK */
    nbd_export e;
    nbd_backend b;

    /* the instance file: requests pass the gate together, the handover's
     * swap alone (disk.c, io_enter and swap_begin) */
    pthread_mutex_t gate_mu;
    pthread_cond_t gate_cv;
    unsigned in_io;
    int swapping;
    int fd, state_fd;
    unsigned char *state;    /* [chunk of df] LZ_* */
    int handed_over;         /* Disk.img is a clone of the published layer: plain I/O */
    pthread_mutex_t stripes[LZ_STRIPES];
    lz_place *disk_ids;      /* df's data chunks by id */
    size_t ndisk_ids;

    /* the nearest layer of the chain the store holds: chunks by id */
    store_layer *base;
    store_pin *base_pin;
    char *base_dir;          /* its bundle directory */
    lz_place *base_ids;
    size_t nbase_ids;

    /* the fill */
    pthread_t fill;
    int fill_started;
    pthread_mutex_t mu; /* what follows */
    pthread_cond_t cv;
    int stopping;
    lazy_fill_state fstate;
    int fill_rc;
    char error[256];
    uint64_t fill_done, fill_total, guest_fetches, local_reads, received_reads, chunks_here;
    uint64_t fill_fetched, fill_resumed, fill_supplied;
    unsigned guest_on_link;  /* guest reads waiting on the registry now */
    double guest_link_end;   /* when the last of them ended (CLOCK_MONOTONIC seconds) */
    double guest_io_window;  /* the guest's disk traffic: when the current window began, */
    uint64_t guest_io_bytes; /* the bytes read and written in it, */
    double guest_busy_until; /* and until when the fill holds back for it (LAZY_GUEST_BUSY_*) */
    uint64_t fill_held_back; /* GETs the fill held back for the guest */
    uint64_t fill_paused;    /* GETs the fill paused mid-transfer for it */
    uint64_t *pending; /* durable_on_flush: chunks that became the guest's since the last flush */
    size_t npending, cap_pending;

    /* the boot profile: recorded (profile.c), the registry's fetched first (prefetch.c) */
    lz_record *rec;          /* NULL: none recorded */
    remote_profile profile;  /* the registry's, checked; no runs: none */
    pthread_t prefetch;
    int prefetch_started;
    int prefetch_done;       /* under mu: the fill may start */
    int ready;               /* under mu: lazy_ready came (a fill_after_ready fill starts) */
};

/* chunks.c */
int lz_places(const store_layer *l, int only_file, lz_place **out, size_t *n);
/* the first place whose digest is id, or NULL; the others follow it */
const lz_place *lz_find(const lz_place *v, size_t n, const unsigned char id[32]);
/* the bytes of the data chunk id (len bytes) into buf, checked: from the
 * store's nearest layer if it holds them, else from the registry, retried
 * for up to the read wait. what names it for the log ("Disk.img chunk 3"). */
int lz_chunk_get(lazy_disk *d, const unsigned char id[32], uint32_t len, void *buf,
                 const char *what);
void lz_count(lazy_disk *d, uint64_t *field, uint64_t v);
/* A guest read is about to wait on the registry (1), or is done (0): the
 * fill holds its next GET back, and pauses those sent, meanwhile and for
 * the quiet window after */
void lz_guest_on_link(lazy_disk *d, int on);
/* The guest read or wrote bytes of its disk: the fill holds its next GET
 * back, and pauses those sent, while the guest's disk is busy
 * (LAZY_GUEST_BUSY_*) */
void lz_guest_io(lazy_disk *d, uint64_t bytes);
double lz_now(void); /* CLOCK_MONOTONIC, in seconds */

/* disk.c */
int lz_disk_open(lazy_disk *d);                /* Disk.img and the chunk states */
void lz_backend_init(lazy_disk *d);
/* Disk.img synced, then the chunks the guest took since the last flush
 * recorded (durable_on_flush); with the gate passed, or alone (close) */
int lz_disk_flush(lazy_disk *d);
/* the fill's hooks (remote_pull_opts.chunk_source, chunk_received: the
 * chunk marked LZ_RECEIVED where absent, data unused) */
int lz_hook_source(void *ctx, const unsigned char id[32], uint32_t len, void *buf);
void lz_hook_received(void *ctx, const unsigned char id[32], const void *data, size_t len);
/* the prefetch's: the layer's checked bytes of chunk id written into the
 * instance file wherever that chunk is not there (absent or received) */
void lz_chunk_keep(lazy_disk *d, const unsigned char id[32], const void *data, size_t len);
/* Disk.img replaced by a clone of the published layer id's (layer_disk)
 * with the guest's chunks copied onto it, the directory recorded as a
 * clone of id and the engine's state dropped; I/O waits meanwhile */
int lz_disk_handover(lazy_disk *d, const char *layer_disk, const store_id *id);

/* profile.c: recording from lazy_open to lazy_ready */
int lz_record_start(lazy_disk *d);
void lz_record_read(lazy_disk *d, uint64_t off, uint64_t len); /* the guest read [off, off + len) */
void lz_record_published(lazy_disk *d); /* the fill published the layer: the profile may be saved */
void lz_record_end(lazy_disk *d); /* lazy_ready: the recording ends, the profile is built */
void lz_record_free(lazy_disk *d);

/* prefetch.c: the registry's profile read (a hint: a log line if bad) and
 * its chunks fetched by a thread of their own; the fill waits for it */
void lz_prefetch_start(lazy_disk *d);
int lz_prefetch_wait(lazy_disk *d); /* 1 if the engine is stopping */
void lz_prefetch_stop(lazy_disk *d);

/* fill.c */
void lz_fill_go(lazy_disk *d); /* lazy_ready: a fill_after_ready fill may start */
int lz_fill_start(lazy_disk *d);
void lz_fill_stop(lazy_disk *d);
/* clone_step_fn of the handover's copy (ctx: the lazy_disk): the piece
 * written back, the pieces before it waited for, then a busy guest disk
 * waited for (LAZY_HANDOVER_HOLD_MS); -ECANCELED if the engine is stopping */
int lz_handover_pace(void *ctx, int fd, uint64_t off, uint64_t len);

#endif
