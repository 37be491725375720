/*
 * A second thread for import: while the main thread decompresses and
 * parses the tar, this one hands finished chunks to store_receive_chunk,
 * which hashes and writes them. Three chunk buffers: one being filled,
 * one queued, one being verified; memory stays at three chunks.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *worker(void *arg)
{
    ar_verifier *v = arg;
    pthread_mutex_lock(&v->mu);
    for (;;) {
        while (!v->queued && !v->stop)
            pthread_cond_wait(&v->cv, &v->mu);
        if (!v->queued)
            break;
        ar_job j = v->job;
        v->queued = 0;
        v->busy = 1;
        pthread_cond_broadcast(&v->cv);
        pthread_mutex_unlock(&v->mu);
        int rc = v->failed ? 0 : store_receive_chunk(j.rx, j.file, j.chunk, j.buf, j.len);
        pthread_mutex_lock(&v->mu);
        if (rc && !v->failed) {
            v->failed = rc;
            snprintf(v->err, sizeof v->err, "%s: %s", j.entry, store_error());
        }
        v->free_buf[v->nfree++] = j.buf;
        v->busy = 0;
        pthread_cond_broadcast(&v->cv);
    }
    pthread_mutex_unlock(&v->mu);
    return NULL;
}

int ar_verifier_start(ar_verifier *v)
{
    memset(v, 0, sizeof *v);
    pthread_mutex_init(&v->mu, NULL);
    pthread_cond_init(&v->cv, NULL);
    if (pthread_create(&v->thread, NULL, worker, v))
        return ar_fail(EAGAIN, "cannot start a thread");
    v->running = 1;
    return 0;
}

static int failed(ar_verifier *v)
{
    return v->failed ? ar_fail(-v->failed, "%s", v->err) : 0;
}

/* Wait until every queued chunk is written (or failed). */
int ar_verifier_flush(ar_verifier *v)
{
    pthread_mutex_lock(&v->mu);
    while (v->queued || v->busy)
        pthread_cond_wait(&v->cv, &v->mu);
    pthread_mutex_unlock(&v->mu);
    return failed(v);
}

unsigned char *ar_verifier_buffer(ar_verifier *v, size_t size)
{
    if (size > v->cap) { /* a larger chunk size: the caller holds no buffer now */
        ar_verifier_flush(v);
        for (size_t i = 0; i < v->nfree; i++)
            free(v->free_buf[i]);
        v->nfree = 0;
        for (int i = 0; i < 3; i++) {
            unsigned char *b = malloc(size);
            if (!b)
                return NULL;
            v->free_buf[v->nfree++] = b;
        }
        v->cap = size;
    }
    pthread_mutex_lock(&v->mu);
    while (!v->nfree)
        pthread_cond_wait(&v->cv, &v->mu);
    unsigned char *b = v->free_buf[--v->nfree];
    pthread_mutex_unlock(&v->mu);
    return b;
}

void ar_verifier_release(ar_verifier *v, unsigned char *buf)
{
    if (!buf)
        return;
    pthread_mutex_lock(&v->mu);
    v->free_buf[v->nfree++] = buf;
    pthread_cond_broadcast(&v->cv);
    pthread_mutex_unlock(&v->mu);
}

int ar_verifier_submit(ar_verifier *v, const ar_job *j)
{
    pthread_mutex_lock(&v->mu);
    while (v->queued)
        pthread_cond_wait(&v->cv, &v->mu);
    v->job = *j;
    v->queued = 1;
    pthread_cond_broadcast(&v->cv);
    pthread_mutex_unlock(&v->mu);
    return failed(v);
}

void ar_verifier_stop(ar_verifier *v)
{
    if (!v->running)
        return; /* never started: nothing to join or free */
    {
        pthread_mutex_lock(&v->mu);
        v->stop = 1;
        pthread_cond_broadcast(&v->cv);
        pthread_mutex_unlock(&v->mu);
        pthread_join(v->thread, NULL);
    }
    v->running = 0;
    for (size_t i = 0; i < v->nfree; i++)
        free(v->free_buf[i]);
    v->nfree = 0;
    pthread_mutex_destroy(&v->mu);
    pthread_cond_destroy(&v->cv);
}
