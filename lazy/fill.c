/* lazy: the background fill. It is remote_pull itself, resumable, with
 * lazy's hooks: chunks the guest already fetched are taken from the
 * instance file instead of the registry, and chunks the pull fetched are
 * marked received, for a guest read to take from the receive. Its GETs
 * wait, and pause once sent, while the guest needs the link or its disk
 * (bounded: a busy guest slows the fill, never stops it). A transient
 * failure (the registry away) is retried with backoff, forever, since the
 * pull takes up its own work; a chunk that is not what its id says stops
 * it for good.
 * Once the layer is published, the instance is handed over (disk.c). */
#define _GNU_SOURCE
#include "internal.h"
#include "../base/clock.h"
#include "../base/platform.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void fill_progress(void *ctx, uint64_t done, uint64_t total)
{
    lazy_disk *d = ctx;
    pthread_mutex_lock(&d->mu);
    d->fill_done = done;
    d->fill_total = total;
    pthread_mutex_unlock(&d->mu);
}

static int transient(int rc)
{
    return rc == -EIO || rc == -EAGAIN || rc == -ETIMEDOUT || rc == -ECONNREFUSED ||
           rc == -ECONNRESET || rc == -EHOSTUNREACH || rc == -ENETUNREACH || rc == -EPIPE;
}

/* wait s seconds, or less if the engine is stopping; 1 if it is */
static int pause_unless_stopping(lazy_disk *d, int s)
{
    struct timespec until = clock_deadline_in(s);
    pthread_mutex_lock(&d->mu);
    while (!d->stopping && pthread_cond_timedwait(&d->cv, &d->mu, &until) != ETIMEDOUT)
        ;
    int stop = d->stopping;
    pthread_mutex_unlock(&d->mu);
    return stop;
}

/* Wait while the guest uses the link (a read waiting on the registry, and
 * the quiet window after it: a guest reads in bursts) or its disk is busy
 * (LAZY_GUEST_BUSY_*), so the fill's transfers, writes and their writeback
 * stay out of its way. The link is waited for until link_end (0: as long as
 * it takes), a busy disk until disk_end: a guest never idle slows the
 * fill, never stops it. 1 if it waited, -1 if the engine is stopping. */
static int hold_for_guest(lazy_disk *d, double link_end, double disk_end)
{
    int held = 0;
    double window = (d->o.fill_quiet_ms ? d->o.fill_quiet_ms : LAZY_FILL_QUIET_MS) / 1000.0;
    pthread_mutex_lock(&d->mu);
    for (;;) {
        double now = lz_now();
        double link = d->guest_on_link ? window : d->guest_link_end + window - now;
        double busy = d->guest_busy_until - now;
        if (link_end && link > link_end - now)
            link = link_end - now;
        if (busy > disk_end - now)
            busy = disk_end - now;
        if (d->stopping || (link <= 0 && busy <= 0))
            break;
        held = 1;
        struct timespec until = clock_deadline_in(link > busy ? link : busy);
        pthread_cond_timedwait(&d->cv, &d->mu, &until);
    }
    int stop = d->stopping;
    pthread_mutex_unlock(&d->mu);
    return stop ? -1 : held;
}

/* remote_pull_opts.before_fetch: the fill's next GET waits for the guest,
 * for its disk at most LAZY_FILL_HOLD_MAX_MS. GETs already sent are held
 * by fill_pace. */
static int fill_yield(void *ctx)
{
    lazy_disk *d = ctx;
    int held = hold_for_guest(d, 0, lz_now() + LAZY_FILL_HOLD_MAX_MS / 1000.0);
    if (held > 0)
        lz_count(d, &d->fill_held_back, 1);
    return held < 0 ? lazy_fail(ECANCELED, "the fill was stopped") : 0;
}

/* remote_pull_opts.while_fetching: a GET already sent pauses for the guest
 * too (its link and its disk), at most LAZY_FILL_HOLD_MAX_MS in all, so a
 * guest read waits behind none of the fill's ranges and a busy disk gets
 * the machine within a few KiB of the fill's */
static int fill_pace(void *ctx, uint32_t *held_ms)
{
    lazy_disk *d = ctx;
    /* *held_ms never passes the bound, so end >= start (> 0: bounded) */
    double start = lz_now(), end = start + (LAZY_FILL_HOLD_MAX_MS - *held_ms) / 1000.0;
    int held = hold_for_guest(d, end, end);
    if (held > 0) {
        if (!*held_ms)
            lz_count(d, &d->fill_paused, 1); /* a GET paused, however often */
        double ms = *held_ms + (lz_now() - start) * 1000.0 + 1.0; /* > 0 once held */
        *held_ms = ms > LAZY_FILL_HOLD_MAX_MS ? LAZY_FILL_HOLD_MAX_MS : (uint32_t)ms;
    }
    return held < 0 ? lazy_fail(ECANCELED, "the fill was stopped") : 0;
}

/* Where the filesystem can't share blocks, the handover copies the whole
 * layer (gigabytes) while the guest runs. Left to the kernel, the copy's
 * dirty pages were written all at once, by its fsync or by writeback,
 * and the guest's own writes and flushes queued behind them: its disk
 * command took 1.6-2.2 s for ~1.1 s as the fill ended (bench/RESULTS.md).
 * Written back piece by piece, at most two pieces are ever in flight. */
int lz_handover_pace(void *ctx, int fd, uint64_t off, uint64_t len)
{
    lazy_disk *d = ctx;
    os_write_back_start(fd, off, len);
    if (off)
        os_write_back_wait(fd, 0, off);
    double end = lz_now() + LAZY_HANDOVER_HOLD_MS / 1000.0;
    return hold_for_guest(d, end, end) < 0 ? lazy_fail(ECANCELED, "the fill was stopped") : 0;
}

void lz_fill_go(lazy_disk *d)
{
    pthread_mutex_lock(&d->mu);
    d->ready = 1;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

/* fill_after_ready: until lazy_ready (the guest boots with the link to
 * itself: its reads never queue behind the fill's); 1 if stopping */
static int wait_ready(lazy_disk *d)
{
    pthread_mutex_lock(&d->mu);
    int waited = d->o.fill_after_ready && !d->ready && !d->stopping;
    while (d->o.fill_after_ready && !d->ready && !d->stopping)
        pthread_cond_wait(&d->cv, &d->mu);
    int stop = d->stopping;
    pthread_mutex_unlock(&d->mu);
    if (!stop && waited)
        note_send(d->o.log, d->o.log_ctx, "lazy: the guest is ready; the fill starts");
    return stop;
}

static void fill_end(lazy_disk *d, lazy_fill_state s, int rc)
{
    pthread_mutex_lock(&d->mu);
    d->fstate = s;
    d->fill_rc = rc;
    if (rc)
        snprintf(d->error, sizeof d->error, "%s", err_message_for(rc));
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

/* remote_pull_opts.note: the pull's notes (waiting for another strata
 * receiving the layer) into the instance's log */
static void fill_note(void *ctx, const char *line)
{
    lazy_disk *d = ctx;
    note_send(d->o.log, d->o.log_ctx, "lazy: fill: %s", line);
}

/* remote_pull_opts.pause: a second while another strata receives the
 * layer, less if the engine is stopping */
static int fill_pause(void *ctx)
{
    return pause_unless_stopping(ctx, 1) ? lazy_fail(ECANCELED, "the fill was stopped") : 0;
}

/* the pull, again and again while the registry is away */
static int fill_pull(lazy_disk *d, remote_pull_result *res)
{
    remote_pull_opts po = {.tag = d->o.tag, .jobs = d->o.fill_jobs ? d->o.fill_jobs : LAZY_FILL_JOBS_DEFAULT,
                           .progress = fill_progress, .progress_ctx = d,
                           .chunk_source = lz_hook_source, .chunk_received = lz_hook_received,
                           .before_fetch = fill_yield, .while_fetching = fill_pace, .chunk_ctx = d,
                           .range_max = LAZY_FILL_RANGE_MAX,
                           .note = fill_note, .note_ctx = d,
                           .pause = fill_pause, .pause_ctx = d};
    int pause = 1;
    for (;;) {
        int rc = remote_pull(d->st, &d->src, &d->ro, &po, res);
        if (!rc || !transient(rc))
            return rc;
        note_send(d->o.log, d->o.log_ctx, "lazy: fill: %s; trying again in %d s",
                  err_message_for(rc), pause);
        if (pause_unless_stopping(d, pause))
            return lazy_fail(ECANCELED, "the fill was stopped");
        pause = pause * 2 > 30 ? 30 : pause * 2;
    }
}

static void *fill_main(void *arg)
{
    lazy_disk *d = arg;
    /* the fill and the pull's workers it starts take the CPU and disk the
     * guest (qemu, and this process's NBD server) leaves */
    os_thread_background();
    remote_pull_result res;
    /* the boot profile's chunks come first (prefetch.c) */
    int rc = lz_prefetch_wait(d) || wait_ready(d) ? lazy_fail(ECANCELED, "the fill was stopped")
                                                  : fill_pull(d, &res);
    if (!rc) {
        pthread_mutex_lock(&d->mu);
        d->fill_fetched = res.chunks_fetched;
        d->fill_resumed = res.chunks_resumed;
        pthread_mutex_unlock(&d->mu);
    }
    if (!rc && strcmp(res.pulled.hex, d->top->id.hex))
        rc = lazy_fail(ESTALE, "the fill pulled layer %.12s, not the layer served (%.12s)",
                       res.pulled.hex, d->top->id.hex);
    char *disk = rc ? NULL : store_layer_file_path(d->st, &d->top->id, LAZY_DISK);
    if (!rc && !disk)
        rc = lazy_fail(ENOMEM, "out of memory");
    if (!rc)
        rc = lz_disk_handover(d, disk, &d->top->id);
    free(disk);
    if (!rc)
        lz_record_published(d);
    if (rc == -ECANCELED) {
        fill_end(d, LAZY_FILLING, rc); /* stopped: the next lazy_open goes on */
        return NULL;
    }
    if (rc)
        note_send(d->o.log, d->o.log_ctx, "lazy: the fill failed: %s", err_message_for(rc));
    else
        note_send(d->o.log, d->o.log_ctx, "lazy: layer %.12s is in the store; %s is a clone of it",
                  d->top->id.hex, d->dir);
    fill_end(d, rc ? LAZY_FAILED : LAZY_DONE, rc);
    return NULL;
}

int lz_fill_start(lazy_disk *d)
{
    d->fstate = LAZY_FILLING;
    if (pthread_create(&d->fill, NULL, fill_main, d))
        return lazy_fail(EAGAIN, "could not start the fill's thread");
    d->fill_started = 1;
    return 0;
}

void lz_fill_stop(lazy_disk *d)
{
    if (!d->fill_started)
        return;
    pthread_mutex_lock(&d->mu);
    d->stopping = 1;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->fill, NULL);
    d->fill_started = 0;
}

void lazy_stop(lazy_disk *d)
{
    lz_fill_stop(d);
}

int lazy_wait(lazy_disk *d)
{
    pthread_mutex_lock(&d->mu);
    while (d->fill_started && d->fstate == LAZY_FILLING && !d->fill_rc)
        pthread_cond_wait(&d->cv, &d->mu);
    int rc = d->fill_rc;
    char why[256];
    snprintf(why, sizeof why, "%s", d->error);
    pthread_mutex_unlock(&d->mu);
    return rc ? lazy_fail(-rc, "%s", why) : 0;
}
