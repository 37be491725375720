/*
 * fsck's reader: re-read every chunk of a materialized file, on every core
 * with reads asked for ahead, so that --quick (XXH3 against the seals) runs
 * at disk speed and full fsck (SHA-256) at hashing speed. Data chunks are
 * read; of zero chunks only the data regions (holes are zeros). What is
 * wrong is reported afterwards, in chunk order, from the calling thread.
 */
#define _GNU_SOURCE
#include "../base/platform.h"
#include "../clone/clone.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AHEAD_BYTES (32u << 20) /* asked for ahead of the chunk being checked */

typedef struct {
    int fd;
    const store_file *f;
    size_t fi;
    const st_seals *seals;
    int quick, sealing;
    unsigned char *verdict; /* per data chunk: st_verdict */
    uint64_t *sealv;        /* per data chunk, when sealing: its XXH3 */
    atomic_size_t next;
    atomic_int oom;
} vjob;

static int all_zero(const unsigned char *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* the verdict on one data chunk whose bytes are in buf */
static unsigned char judge(vjob *j, size_t k, const unsigned char *buf, size_t len)
{
    const store_chunk *ch = &j->f->data[k];
    uint64_t want = 0;
    int sealed = st_seal_get(j->seals, j->fi, ch->index, &want) == 0;
    if (j->quick)
        return sealed && st_seal_of(buf, len) == want ? ST_OK : ST_BAD_SEAL;
    unsigned char digest[32];
    SHA256(buf, len, digest);
    if (memcmp(digest, ch->digest, 32))
        return ST_BAD_HASH;
    uint64_t seal = st_seal_of(buf, len);
    if (j->sealing)
        j->sealv[k] = seal;
    return sealed && seal != want ? ST_WRONG_SEAL : ST_OK;
}

static void *worker(void *arg)
{
    vjob *j = arg;
    const store_file *f = j->f;
    unsigned char *buf = malloc(f->chunk_size);
    if (!buf) {
        atomic_store(&j->oom, 1);
        return NULL;
    }
    size_t ahead = AHEAD_BYTES / f->chunk_size;
    ahead = ahead < 2 ? 2 : ahead;
    for (;;) {
        size_t k = atomic_fetch_add(&j->next, 1);
        if (k >= f->ndata)
            break;
        if (k + ahead < f->ndata) /* keep the disk busy while we hash */
            os_read_hint_give(j->fd, f->data[k + ahead].index * f->chunk_size, f->chunk_size,
                              OS_READ_SOON);
        uint64_t c = f->data[k].index;
        size_t len = (size_t)store_chunk_len(f, c);
        j->verdict[k] = file_pread_all(j->fd, buf, len, c * f->chunk_size) ? ST_UNREADABLE
                                                                      : judge(j, k, buf, len);
    }
    free(buf);
    return NULL;
}

static int run(vjob *j)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = cores < 1 ? 1 : cores > 8 ? 8 : (int)cores;
    if ((size_t)nt > j->f->ndata)
        nt = j->f->ndata ? (int)j->f->ndata : 1;
    pthread_t th[8];
    int started = 0;
    for (int i = 1; i < nt && pthread_create(&th[i], NULL, worker, j) == 0; i++)
        started = i;
    worker(j);
    for (int i = 1; i <= started; i++)
        pthread_join(th[i], NULL);
    return atomic_load(&j->oom) ? -ENOMEM : 0;
}

/* 1 if every byte of [off, end) that is not a hole reads as zero */
static int zeros_only(int fd, uint64_t off, uint64_t end, unsigned char *buf, size_t bufsize)
{
    uint64_t d, h;
    for (uint64_t at = off; at < end && clone_next_data(fd, at, end, &d, &h) == 0; at = h)
        for (uint64_t p = d; p < h;) {
            size_t n = (size_t)(h - p < bufsize ? h - p : bufsize);
            if (file_pread_all(fd, buf, n, p) || !all_zero(buf, n))
                return 0;
            p += n;
        }
    return 1;
}

/* report, in chunk order: zero runs that are not zeros, and data verdicts */
static void report_all(const vjob *j, st_verify_fn found, void *ctx)
{
    const store_file *f = j->f;
    unsigned char buf[64 << 10];
    uint64_t next = 0;
    for (size_t k = 0; k <= f->ndata; k++) {
        uint64_t at = k < f->ndata ? f->data[k].index : f->nchunks;
        if (at > next) {
            uint64_t end = at * f->chunk_size < f->size ? at * f->chunk_size : f->size;
            if (!zeros_only(j->fd, next * f->chunk_size, end, buf, sizeof buf))
                found(ctx, ST_NOT_ZEROS, next, at - 1);
        }
        if (k < f->ndata && j->verdict[k] != ST_OK)
            found(ctx, j->verdict[k], at, at);
        next = at + 1;
    }
}

int st_verify_file(int fd, const store_file *f, size_t fi, const st_seals *seals, int quick,
                   st_seals *made, st_verify_fn found, void *ctx)
{
    vjob j = {.fd = fd, .f = f, .fi = fi, .seals = seals, .quick = quick,
              .sealing = !quick && made};
    j.verdict = calloc(f->ndata ? f->ndata : 1, 1);
    j.sealv = j.sealing ? calloc(f->ndata ? f->ndata : 1, sizeof *j.sealv) : NULL;
    atomic_init(&j.next, 0);
    atomic_init(&j.oom, 0);
    int rc = !j.verdict || (j.sealing && !j.sealv) ? -ENOMEM : 0;
    os_read_hint_give(fd, 0, 0, OS_READ_SEQUENTIAL);
    if (!rc)
        rc = run(&j);
    if (!rc)
        report_all(&j, found, ctx);
    for (size_t k = 0; !rc && j.sealing && k < f->ndata; k++)
        if (j.verdict[k] == ST_OK || j.verdict[k] == ST_WRONG_SEAL)
            rc = st_seal_set(made, fi, f->data[k].index, j.sealv[k]);
    free(j.verdict);
    free(j.sealv);
    return rc;
}
