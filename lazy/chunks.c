/* lazy: a chunk's bytes for the guest, checked before they are used: from
 * the store (the nearest layer of the chain it holds), else from another
 * strata's receive of the layer, else from the registry at once, on a
 * connection of the reader's own (never behind the fill), retried with
 * backoff so the guest sees latency, not errors, up to the read wait
 * (docs/lazy.md, "Reads that wait"). The time the guest's reads spend on
 * the registry is noted here too: the fill gives way to it (fill.c). */
#define _GNU_SOURCE
#include "internal.h"

#include "../base/hex.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void lz_count(lazy_disk *d, uint64_t *field, uint64_t v)
{
    pthread_mutex_lock(&d->mu);
    *field += v;
    pthread_mutex_unlock(&d->mu);
}

static int by_id(const void *a, const void *b)
{
    return memcmp(((const lz_place *)a)->digest, ((const lz_place *)b)->digest, 32);
}

/* every data chunk of l (of file only_file, if it is not -1), sorted by id */
int lz_places(const store_layer *l, int only_file, lz_place **out, size_t *n)
{
    size_t total = 0, k = 0;
    for (size_t i = 0; i < l->nfiles; i++)
        if (only_file < 0 || (size_t)only_file == i)
            total += l->files[i].ndata;
    lz_place *v = calloc(total ? total : 1, sizeof *v);
    if (!v)
        return lazy_fail(ENOMEM, "out of memory");
    for (size_t i = 0; i < l->nfiles; i++)
        for (size_t c = 0; (only_file < 0 || (size_t)only_file == i) && c < l->files[i].ndata; c++)
            v[k++] = (lz_place){.digest = l->files[i].data[c].digest, .file = (uint32_t)i,
                                .chunk = l->files[i].data[c].index};
    qsort(v, k, sizeof *v, by_id);
    *out = v;
    *n = k;
    return 0;
}

const lz_place *lz_find(const lz_place *v, size_t n, const unsigned char id[32])
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (memcmp(v[mid].digest, id, 32) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && !memcmp(v[lo].digest, id, 32) ? &v[lo] : NULL;
}

/* the chunk from the store's nearest layer: 1 if found there and it matches its id */
static int from_store(lazy_disk *d, const unsigned char id[32], uint32_t len, void *buf)
{
    const lz_place *p = d->base ? lz_find(d->base_ids, d->nbase_ids, id) : NULL;
    if (!p)
        return 0;
    const store_file *f = &d->base->files[p->file];
    if (store_chunk_len(f, p->chunk) != len)
        return 0;
    size_t plen = strlen(d->base_dir) + strlen(f->name) + 2;
    char *path = malloc(plen);
    if (!path)
        return 0;
    snprintf(path, plen, "%s/%s", d->base_dir, f->name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0)
        return 0; /* gone (gc'd despite the pin?): the registry has it */
    ssize_t got = pread(fd, buf, len, (off_t)(p->chunk * f->chunk_size));
    close(fd);
    unsigned char sum[32];
    if (got != (ssize_t)len)
        return 0;
    SHA256(buf, len, sum);
    return !memcmp(sum, id, 32); /* a damaged store file is never served */
}

static void sleep_s(double s)
{
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&t, NULL);
}

/* the registry refused the chunk for good: its bytes are not what its id says */
static int refused_for_good(int rc)
{
    return rc == -EBADMSG || rc == -ENOENT || rc == -EACCES || rc == -EPERM;
}

double lz_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

void lz_guest_on_link(lazy_disk *d, int on)
{
    pthread_mutex_lock(&d->mu);
    if (on)
        d->guest_on_link++;
    else if (d->guest_on_link && !--d->guest_on_link)
        d->guest_link_end = lz_now();
    pthread_mutex_unlock(&d->mu);
}

void lz_guest_io(lazy_disk *d, uint64_t bytes)
{
    double now = lz_now(), window = LAZY_GUEST_BUSY_MS / 1000.0;
    pthread_mutex_lock(&d->mu);
    if (now - d->guest_io_window > window) {
        d->guest_io_window = now;
        d->guest_io_bytes = 0;
    }
    d->guest_io_bytes += bytes;
    if (d->guest_io_bytes >= LAZY_GUEST_BUSY_BYTES)
        d->guest_busy_until = now + window;
    pthread_mutex_unlock(&d->mu);
}

/* the chunk from the registry, retried (0.25 s doubling to 5 s between
 * tries) until the read wait has passed */
static int registry_retrying(lazy_disk *d, const unsigned char id[32], uint32_t len, void *buf,
                             const char *what)
{
    unsigned wait = d->o.read_wait ? d->o.read_wait : LAZY_READ_WAIT_DEFAULT;
    double start = lz_now(), pause = 0.25;
    for (int n = 0;; n++) {
        int rc = remote_reader_chunk(d->rd, id, len, buf);
        if (!rc) {
            lz_count(d, &d->guest_fetches, 1);
            if (n)
                note_send(d->o.log, d->o.log_ctx, "lazy: %s came after %.1f s", what,
                          lz_now() - start);
            return 0;
        }
        char why[ERR_MESSAGE_MAX];
        snprintf(why, sizeof why, "%s", err_message_for(rc));
        if (refused_for_good(rc)) {
            note_send(d->o.log, d->o.log_ctx, "lazy: %s is not served: %s", what, why);
            return lazy_fail(EIO, "%s is not served: %s", what, why);
        }
        double waited = lz_now() - start;
        if (waited >= wait) {
            note_send(d->o.log, d->o.log_ctx,
                      "lazy: %s: the registry did not deliver it within %u s (%s); the read fails",
                      what, wait, why);
            return lazy_fail(EIO, "%s: the registry did not deliver it within %u s: %s", what,
                             wait, why);
        }
        if (!n)
            note_send(d->o.log, d->o.log_ctx, "lazy: %s: %s; trying again for up to %u s", what,
                      why, wait);
        sleep_s(pause < wait - waited ? pause : wait - waited);
        pause = pause * 2 > 5 ? 5 : pause * 2;
    }
}

/* the fill holds its GETs back while this waits on the registry (fill.c) */
static int from_registry(lazy_disk *d, const unsigned char id[32], uint32_t len, void *buf,
                         const char *what)
{
    lz_guest_on_link(d, 1);
    int rc = registry_retrying(d, id, len, buf, what);
    lz_guest_on_link(d, 0);
    return rc;
}

/* the chunk as a receive of the layer served, or of a layer below it in
 * the chain, has written it (this fill, another strata's pull, a fill cut
 * short; or published since), checked by the store: 1 if there. Below the
 * top it is looked for at the same offset, where a child's unchanged chunk
 * is; elsewhere it is not found, and comes from the registry. */
static int from_receive(lazy_disk *d, const unsigned char id[32], uint32_t len, void *buf)
{
    const lz_place *p = lz_find(d->disk_ids, d->ndisk_ids, id);
    if (!p)
        return 0;
    const store_file *f = &d->top->files[p->file];
    if (store_chunk_len(f, p->chunk) != len)
        return 0;
    const store_id *chain;
    size_t n = remote_reader_chain(d->rd, &chain);
    for (size_t i = n; i-- > 0;)
        if (!store_receive_peek(d->st, &chain[i], f->name, p->chunk * f->chunk_size, id, buf, len))
            return 1;
    return 0;
}

int lz_chunk_get(lazy_disk *d, const unsigned char id[32], uint32_t len, void *buf,
                 const char *what)
{
    if (from_store(d, id, len, buf)) {
        lz_count(d, &d->local_reads, 1);
        return 0;
    }
    if (from_receive(d, id, len, buf)) {
        lz_count(d, &d->received_reads, 1);
        return 0;
    }
    return from_registry(d, id, len, buf, what);
}
