/*
 * A lazy run's serving side (docs/lazy.md, "Running lazily"): the lazy
 * engine (lazy/) on an instance directory, its Disk.img served by strata's
 * NBD server on a Unix socket the driver boots from, for as long as the
 * supervisor lives. instance.c decides when a run is lazy and keeps the
 * handle; this file owns the engine, the server and the instance's lazy log.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "../lazy/lazy.h"
#include "../remote/remote.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LAZY_SOCKET ".disk.sock"

struct boot_lazy {
    store *st;             /* the engine's own handle: the fill uses it from its thread */
    lazy_disk *disk;
    nbd_server *server;
    FILE *log;             /* the instance's lazy log (a side file: it outlives the instance) */
    pthread_mutex_t log_lock;
    note_fn note;
    void *note_ctx;
    char sock[sizeof ((struct sockaddr_un *)0)->sun_path];
    char url[200];
};

/* lazy_opts.log: each line into the instance's log, with its time, and to the run's notes */
static void log_line(void *ctx, const char *line)
{
    boot_lazy *z = ctx;
    pthread_mutex_lock(&z->log_lock);
    if (z->log) {
        fprintf(z->log, "%ld %s\n", (long)time(NULL), line);
        fflush(z->log);
    }
    pthread_mutex_unlock(&z->log_lock);
    note_send(z->note, z->note_ctx, "%s", line);
}

/* lazy_opts.check_guest: a pull's host check, before anything is fetched */
static int check_guest(void *ctx, const remote_guest *g)
{
    boot_guest_needs need = {g->os, g->arch, g->macos_min, g->macos_data_rep};
    return boot_guest_runs_here((const char *)ctx, &need);
}

int boot_lazy_check(const char *ref_text)
{
    remote_ref ref;
    int rc = remote_ref_parse(ref_text, 0, &ref);
    if (rc)
        return rc;
    remote *r = NULL;
    remote_opts ro = {0};
    char *body = NULL, digest[72];
    size_t len = 0;
    remote_artifact a;
    if (!(rc = remote_open(&ref, &ro, 0, &r)) &&
        !(rc = remote_manifest_get(r, ref.digest ? ref.digest : ref.tag, &body, &len, digest))) {
        if (remote_artifact_parse(body, len, &a) == 0) {
            rc = check_guest((void *)ref_text, &a.guest);
            remote_artifact_free(&a);
        } /* not a strata layer: lazy_open says so, and run pulls instead */
    }
    free(body);
    remote_close(r);
    remote_ref_free(&ref);
    return rc;
}

/* The socket inside the instance if its path fits a sockaddr_un (104 bytes
 * on macOS, 108 on Linux), else a short one in /tmp named after this
 * process: the driver only needs the URL. */
static int socket_path(const char *dir, char *out, size_t n)
{
    if ((size_t)snprintf(out, n, "%s/" LAZY_SOCKET, dir) < n)
        return 0;
    if ((size_t)snprintf(out, n, "/tmp/strata-lazy-%d-%ld.sock", (int)getpid(), (long)time(NULL)) < n)
        return 0;
    return boot_fail(ENAMETOOLONG, "%s: no socket path short enough for the lazy disk", dir);
}

int boot_lazy_start(store *st, const char *ref_text, const char *dir, const char *log_path,
                    int durable_on_flush, note_fn note, void *note_ctx, boot_lazy **out)
{
    *out = NULL;
    remote_ref ref;
    int rc = remote_ref_parse(ref_text, 0, &ref);
    if (rc)
        return rc;
    char tag[160] = "";
    if (ref.tag && remote_ref_local_tag(&ref, tag, sizeof tag))
        tag[0] = 0;
    boot_lazy *z = calloc(1, sizeof *z);
    if (!z) {
        remote_ref_free(&ref);
        return boot_oom();
    }
    pthread_mutex_init(&z->log_lock, NULL);
    z->note = note;
    z->note_ctx = note_ctx;
    z->log = log_path ? fopen(log_path, "ae") : NULL;
    lazy_opts lo = {.tag = tag[0] ? tag : NULL, .durable_on_flush = durable_on_flush,
                    .fill_after_ready = 1,
                    .log = log_line, .log_ctx = z,
                    .check_guest = check_guest, .check_ctx = (void *)ref_text};
    remote_opts ro = {0};
    rc = store_open(store_home(st), &z->st);
    if (!rc)
        rc = lazy_open(z->st, &ref, &ro, dir, &lo, &z->disk);
    remote_ref_free(&ref);
    if (!rc)
        rc = socket_path(dir, z->sock, sizeof z->sock);
    if (!rc) {
        unlink(z->sock); /* a killed run's */
        rc = nbd_server_start(z->sock, lazy_export(z->disk), lazy_backend(z->disk), &z->server);
    }
    if (rc) {
        boot_lazy_close(z);
        return rc;
    }
    snprintf(z->url, sizeof z->url, "nbd+unix:///?socket=%s", z->sock);
    *out = z;
    return 0;
}

const char *boot_lazy_url(const boot_lazy *z)
{
    return z->url;
}

void boot_lazy_layer(boot_lazy *z, store_id *out)
{
    lazy_progress p;
    lazy_progress_get(z->disk, &p);
    *out = p.layer;
}

static const char *state_name(lazy_fill_state s)
{
    return s == LAZY_FILLING ? "filling" : s == LAZY_IDLE ? "idle" : s == LAZY_DONE ? "done" : "failed";
}

void boot_lazy_status(boot_lazy *z, char *out, size_t n)
{
    lazy_progress p;
    lazy_progress_get(z->disk, &p);
    snprintf(out, n, "%s %llu %llu %llu %llu", state_name(p.state), (unsigned long long)p.chunks_here,
             (unsigned long long)p.chunks, (unsigned long long)p.fill_done,
             (unsigned long long)p.fill_total);
}

int boot_lazy_done(boot_lazy *z)
{
    lazy_progress p;
    lazy_progress_get(z->disk, &p);
    return p.state == LAZY_DONE;
}

int boot_lazy_wait(boot_lazy *z)
{
    boot_lazy_ready(z, "a suspend waits for the fill"); /* the fill starts at ready */
    int rc = lazy_wait(z->disk);
    if (!rc)
        return 0;
    lazy_progress p;
    lazy_progress_get(z->disk, &p);
    return boot_fail(-rc, "its lazy run's fill stopped, so the layer is not in the store yet (%s); "
                          "stop it and `strata run` it again to take the fill up",
                     p.error[0] ? p.error : err_last()->message);
}

void boot_lazy_ready(boot_lazy *z, const char *why)
{
    char line[200];
    snprintf(line, sizeof line, "lazy: the guest is ready: %s", why);
    log_line(z, line);
    lazy_ready(z->disk);
}

void boot_lazy_close(boot_lazy *z)
{
    if (!z)
        return;
    nbd_server_stop(z->server); /* before the engine: no request in flight */
    lazy_close(z->disk);
    if (z->st)
        store_close(z->st);
    if (z->log)
        fclose(z->log);
    pthread_mutex_destroy(&z->log_lock);
    free(z);
}
