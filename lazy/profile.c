/* lazy: the boot profile a lazy run records (docs/profiles.md, "Boot
 * profiles in a lazy run"). From lazy_open until lazy_ready, the first read
 * of each data chunk of Disk.img is noted, in order: one byte per chunk
 * (taken with an atomic exchange, so a chunk read again costs a load) and
 * a list under a lock that only a chunk's first read takes, bounded by
 * REMOTE_PROFILE_RUNS_MAX entries (a longer list could not be a profile).
 * lazy_ready ends it (lz_record_end) and builds the profile; it is saved
 * beside the layer once the fill has published the layer (at once if it
 * already has). A
 * restart (lazy_open on the same directory) records afresh: the guest
 * boots again from its start, and that boot is the one profiled. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct lz_record {
    pthread_mutex_t mu; /* what follows, but seen[] and ended */
    unsigned char *seen; /* [chunk of Disk.img] 1 once read */
    int ended;           /* lazy_ready came (read atomically too) */
    uint64_t *order;     /* chunks in first-read order */
    size_t n, cap;
    int have, published, saved;
    remote_profile p;
    struct timespec start;
};

static double since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (t.tv_nsec - t0->tv_nsec) / 1e9;
}

int lz_record_start(lazy_disk *d)
{
    uint64_t chunks;
    if (remote_profile_disk_chunks(d->top, &chunks)) {
        note_send(d->o.log, d->o.log_ctx, "lazy: no boot profile is recorded: %s", err_last()->message);
        return 0; /* not 1 MiB chunks: a profile could not name them */
    }
    lz_record *r = calloc(1, sizeof *r);
    if (!r || !(r->seen = calloc(chunks ? chunks : 1, 1))) {
        free(r);
        return lazy_fail(ENOMEM, "out of memory");
    }
    pthread_mutex_init(&r->mu, NULL);
    clock_gettime(CLOCK_MONOTONIC, &r->start);
    d->rec = r;
    return 0;
}

void lz_record_free(lazy_disk *d)
{
    lz_record *r = d->rec;
    if (!r)
        return;
    remote_profile_free(&r->p);
    free(r->order);
    free(r->seen);
    pthread_mutex_destroy(&r->mu);
    free(r);
    d->rec = NULL;
}

static void record_first(lz_record *r, uint64_t c)
{
    pthread_mutex_lock(&r->mu);
    if (!r->ended && r->n < REMOTE_PROFILE_RUNS_MAX) {
        if (r->n == r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 256;
            uint64_t *o = realloc(r->order, cap * sizeof *o);
            if (!o) { /* a hint: the profile ends here */
                pthread_mutex_unlock(&r->mu);
                return;
            }
            r->order = o;
            r->cap = cap;
        }
        r->order[r->n++] = c;
    }
    pthread_mutex_unlock(&r->mu);
}

void lz_record_read(lazy_disk *d, uint64_t off, uint64_t len)
{
    lz_record *r = d->rec;
    const store_file *f = d->df;
    if (!r || !len || __atomic_load_n(&r->ended, __ATOMIC_ACQUIRE))
        return;
    for (uint64_t c = off / f->chunk_size; c <= (off + len - 1) / f->chunk_size && c < f->nchunks; c++)
        if (store_file_chunk(f, c) && !__atomic_exchange_n(&r->seen[c], 1, __ATOMIC_ACQ_REL))
            record_first(r, c); /* a zero chunk is never fetched: a profile need not name it */
}

/* the profile beside the layer (r->mu held; the fill is done with the store) */
static void save(lazy_disk *d, lz_record *r)
{
    r->saved = 1;
    int rc = remote_profile_save(d->st, &r->p);
    if (rc)
        note_send(d->o.log, d->o.log_ctx, "lazy: the boot profile was not kept: %s",
                  err_message_for(rc));
    else
        note_send(d->o.log, d->o.log_ctx, "lazy: boot profile kept beside layer %.12s (%zu runs)",
                  d->top->id.hex, r->p.nruns);
}

void lz_record_published(lazy_disk *d)
{
    lz_record *r = d->rec;
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->published = 1;
    if (r->have && !r->saved)
        save(d, r);
    pthread_mutex_unlock(&r->mu);
}

void lz_record_end(lazy_disk *d)
{
    lz_record *r = d->rec;
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    if (r->ended) {
        pthread_mutex_unlock(&r->mu);
        return;
    }
    __atomic_store_n(&r->ended, 1, __ATOMIC_RELEASE);
    double s = since(&r->start);
    uint32_t ms = s * 1000 > UINT32_MAX ? UINT32_MAX : (uint32_t)(s * 1000);
    int rc = r->n ? remote_profile_from_reads(&d->top->id, d->df->nchunks, ms ? ms : 1, r->order,
                                              r->n, &r->p)
                  : 0;
    if (rc)
        note_send(d->o.log, d->o.log_ctx, "lazy: ready after %.1f s; no boot profile: %s", s,
                  err_message_for(rc));
    else if (!r->n)
        note_send(d->o.log, d->o.log_ctx, "lazy: ready after %.1f s; the guest read no chunk: "
                                          "no boot profile", s);
    else {
        r->have = 1;
        note_send(d->o.log, d->o.log_ctx, "lazy: ready after %.1f s; boot profile: %zu chunks in "
                                          "%zu runs", s, r->n, r->p.nruns);
        if (r->published)
            save(d, r);
    }
    free(r->order);
    r->order = NULL;
    r->n = r->cap = 0;
    pthread_mutex_unlock(&r->mu);
}
