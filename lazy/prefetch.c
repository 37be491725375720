/* lazy: the registry's boot profile of the layer (docs/profiles.md, "Boot
 * profiles in a lazy run"), fetched first. At lazy_open the profile the
 * OCI manifest names is read and checked (a hint from outside: anything
 * wrong with it is a log line, and the run goes on without it); then a
 * thread of its own fetches its chunks in the order the profiled guest
 * first read them, a batch at a time, chunks that follow each other in a
 * pack in one Range GET (remote_reader_chunks), into the instance file
 * (lz_chunk_keep: never over what is there). The
 * fill waits for it, so it comes first; the guest never does: a read of a
 * chunk not yet here fetches it at once as always, and the prefetch then
 * finds it there and leaves it. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define PREFETCH_BATCH 64 /* chunks asked of remote_reader_chunks at once: a stop is seen between */

static int stopping(lazy_disk *d)
{
    pthread_mutex_lock(&d->mu);
    int s = d->stopping;
    pthread_mutex_unlock(&d->mu);
    return s;
}

typedef struct {
    lazy_disk *d;
    const unsigned char *ids[PREFETCH_BATCH];
    uint32_t lens[PREFETCH_BATCH];
    size_t n;
    uint64_t fetched;
    unsigned requests;
} batch;

static int take(void *ctx, size_t i, const void *data, size_t len)
{
    batch *b = ctx;
    if (stopping(b->d))
        return lazy_fail(ECANCELED, "stopped");
    lz_chunk_keep(b->d, b->ids[i], data, len);
    b->fetched++;
    return 0;
}

static int flush(batch *b)
{
    int rc = b->n ? remote_reader_chunks(b->d->rd, b->ids, b->lens, b->n, take, b, &b->requests) : 0;
    b->n = 0;
    return rc;
}

/* chunk c, unless it is a hole or here already, into the batch; sent when full */
static int add(batch *b, uint64_t c)
{
    lazy_disk *d = b->d;
    const store_chunk *k = store_file_chunk(d->df, c);
    if (!k)
        return 0;
    pthread_mutex_lock(&d->stripes[c % LZ_STRIPES]);
    int here = d->state[c] != LZ_ABSENT;
    pthread_mutex_unlock(&d->stripes[c % LZ_STRIPES]);
    if (here)
        return 0;
    b->ids[b->n] = k->digest;
    b->lens[b->n++] = (uint32_t)store_chunk_len(d->df, c);
    return b->n == PREFETCH_BATCH ? flush(b) : 0;
}

static void prefetch_end(lazy_disk *d)
{
    pthread_mutex_lock(&d->mu);
    d->prefetch_done = 1;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static void *prefetch_main(void *arg)
{
    lazy_disk *d = arg;
    batch *b = calloc(1, sizeof *b);
    int rc = b ? 0 : lazy_fail(ENOMEM, "out of memory");
    if (b)
        b->d = d;
    for (size_t i = 0; !rc && i < d->profile.nruns; i++)
        for (uint64_t c = d->profile.runs[i].first; !rc && c < d->profile.runs[i].first +
                                                              d->profile.runs[i].count; c++)
            rc = stopping(d) ? -ECANCELED : add(b, c);
    if (!rc)
        rc = flush(b);
    if (rc && rc != -ECANCELED)
        note_send(d->o.log, d->o.log_ctx, "lazy: the prefetch stopped (the guest's reads fetch "
                                          "what they need): %s", err_message_for(rc));
    if (b)
        note_send(d->o.log, d->o.log_ctx, "lazy: prefetch: %" PRIu64 " chunks of the boot profile "
                                          "in %u requests", b->fetched, b->requests);
    free(b);
    prefetch_end(d);
    return NULL;
}

void lz_prefetch_start(lazy_disk *d)
{
    uint64_t chunks;
    /* a disk not of 1 MiB chunks has no profile (profile.c said so) */
    int rc = remote_profile_disk_chunks(d->top, &chunks) ? -ENOENT : 0;
    if (!rc)
        rc = remote_reader_profile(d->rd, chunks, &d->profile);
    if (rc && rc != -ENOENT)
        note_send(d->o.log, d->o.log_ctx, "lazy: the registry's boot profile is ignored: %s",
                  err_message_for(rc));
    if (rc || !d->profile.nruns || pthread_create(&d->prefetch, NULL, prefetch_main, d)) {
        d->prefetch_done = 1; /* nothing to fetch first: the fill starts at once */
        return;
    }
    d->prefetch_started = 1;
    note_send(d->o.log, d->o.log_ctx, "lazy: prefetching the boot profile's %zu runs",
              d->profile.nruns);
}

int lz_prefetch_wait(lazy_disk *d)
{
    pthread_mutex_lock(&d->mu);
    while (!d->prefetch_done && !d->stopping)
        pthread_cond_wait(&d->cv, &d->mu);
    int stop = d->stopping;
    pthread_mutex_unlock(&d->mu);
    return stop;
}

void lz_prefetch_stop(lazy_disk *d)
{
    if (d->prefetch_started) {
        pthread_mutex_lock(&d->mu);
        d->stopping = 1;
        pthread_cond_broadcast(&d->cv);
        pthread_mutex_unlock(&d->mu);
        pthread_join(d->prefetch, NULL);
        d->prefetch_started = 0;
    }
    remote_profile_free(&d->profile);
}
