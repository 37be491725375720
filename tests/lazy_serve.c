/* A test tool for tests/lazy.sh: a registry layer served lazily (lazy/)
 * over strata's NBD server, as boot/ will serve a guest's disk, so real
 * NBD clients can read and write it before, during and after the fill.
 *
 * lazy_serve SOCKET HOST/REPO:TAG DIR [--no-fill] [--read-wait S] [--tag T] [--jobs N] [--quiet-ms MS]
 *            [--durable-on-flush] [--fill-after-ready]
 * The store is $STRATA_HOME. Prints "ready" on stdout once listening, then
 * "fill: done" or "fill: failed: WHY" when the fill ends; lines of the
 * instance's log go to stderr as "log: LINE". On SIGTERM or SIGINT it
 * stops, prints "progress: HERE/CHUNKS fetched=N local=N state=S" and
 * exits 0. On SIGUSR1 it calls lazy_ready (the guest is ready: the boot
 * profile ends) and prints "lazy_ready"; on SIGUSR2 it prints a
 * "progress: ..." line and goes on. Not a product: strata run --lazy is boot/'s.
 */
#define _GNU_SOURCE
#include "../base/error.h"
#include "../lazy/lazy.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void log_line(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "log: %s\n", line);
}

static void *waiter(void *arg)
{
    int rc = lazy_wait(arg);
    if (rc)
        printf("fill: failed: %s\n", err_message_for(rc));
    else {
        lazy_progress p;
        lazy_progress_get(arg, &p);
        printf("fill: done fetched=%llu resumed=%llu supplied=%llu held_back=%llu paused=%llu\n",
               (unsigned long long)p.fill_fetched, (unsigned long long)p.fill_resumed,
               (unsigned long long)p.fill_supplied, (unsigned long long)p.fill_held_back,
               (unsigned long long)p.fill_paused);
    }
    fflush(stdout);
    return NULL;
}

static void print_progress(const lazy_progress *p)
{
    printf("progress: %llu/%llu fetched=%llu local=%llu state=%d received=%llu\n",
           (unsigned long long)p->chunks_here, (unsigned long long)p->chunks,
           (unsigned long long)p->guest_fetches, (unsigned long long)p->local_reads, (int)p->state,
           (unsigned long long)p->received_reads);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: lazy_serve SOCKET HOST/REPO:TAG DIR [--no-fill] [--read-wait S] "
                        "[--tag T] [--jobs N] [--quiet-ms MS] [--fill-after-ready]\n");
        return 2;
    }
    lazy_opts o = {.log = log_line};
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--no-fill"))
            o.no_fill = 1;
        else if (!strcmp(argv[i], "--durable-on-flush"))
            o.durable_on_flush = 1;
        else if (!strcmp(argv[i], "--fill-after-ready"))
            o.fill_after_ready = 1;
        else if (!strcmp(argv[i], "--read-wait") && i + 1 < argc)
            o.read_wait = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tag") && i + 1 < argc)
            o.tag = argv[++i];
        else if (!strcmp(argv[i], "--jobs") && i + 1 < argc)
            o.fill_jobs = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quiet-ms") && i + 1 < argc)
            o.fill_quiet_ms = (unsigned)atoi(argv[++i]);
        else {
            fprintf(stderr, "lazy_serve: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGUSR1);
    sigaddset(&stop, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &stop, NULL); /* every thread inherits it */
    store *st;
    remote_ref ref;
    remote_opts ro = {0};
    lazy_disk *d = NULL;
    nbd_server *s = NULL;
    int rc = store_open(NULL, &st);
    if (!rc)
        rc = remote_ref_parse(argv[2], 0, &ref);
    if (!rc)
        rc = lazy_open(st, &ref, &ro, argv[3], &o, &d);
    if (!rc)
        rc = nbd_server_start(argv[1], lazy_export(d), lazy_backend(d), &s);
    if (rc) {
        fprintf(stderr, "lazy_serve: %s\n", err_message_for(rc));
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    pthread_t t;
    int waiting = !o.no_fill && !pthread_create(&t, NULL, waiter, d);
    int sig;
    lazy_progress p;
    while (!sigwait(&stop, &sig) && (sig == SIGUSR1 || sig == SIGUSR2)) {
        if (sig == SIGUSR2) {
            lazy_progress_get(d, &p);
            print_progress(&p);
            continue;
        }
        lazy_ready(d);
        printf("lazy_ready\n");
        fflush(stdout);
    }
    nbd_server_stop(s);
    lazy_progress_get(d, &p);
    lazy_stop(d); /* the waiter returns */
    if (waiting)
        pthread_join(t, NULL);
    lazy_close(d);
    print_progress(&p);
    remote_ref_free(&ref);
    store_close(st);
    return 0;
}
