/* lazy: opening an instance to serve (docs/lazy.md, "The state on disk"),
 * and closing it. */
#define _GNU_SOURCE
#include "internal.h"

#include "../base/file.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

static char *dup_or_null(const char *s, int *oom)
{
    char *p = s ? strdup(s) : NULL;
    *oom |= s && !p;
    return p;
}

/* the caller's source, options and directory, kept for the fill */
static int keep_args(lazy_disk *d, const remote_ref *src, const remote_opts *ro, const char *dir,
                     const lazy_opts *o)
{
    int oom = 0;
    d->src.host = dup_or_null(src->host, &oom);
    d->src.repo = dup_or_null(src->repo, &oom);
    d->src.tag = dup_or_null(src->tag, &oom);
    d->src.digest = dup_or_null(src->digest, &oom);
    if (ro)
        d->ro = *ro;
    d->ro.docker_dir = dup_or_null(ro ? ro->docker_dir : NULL, &oom);
    if (o)
        d->o = *o;
    d->o.tag = dup_or_null(o ? o->tag : NULL, &oom);
    d->dir = dup_or_null(dir, &oom);
    d->state_dir = d->dir ? path_join(dir, LAZY_DIR) : NULL;
    d->disk_path = d->dir ? path_join(dir, LAZY_DISK) : NULL;
    return oom || !d->state_dir || !d->disk_path ? lazy_fail(ENOMEM, "out of memory") : 0;
}

/* the top layer, parsed; its disk found */
static int top_parse(lazy_disk *d)
{
    const char *m, *info;
    size_t mlen, ilen;
    remote_reader_top(d->rd, &m, &mlen, &info, &ilen);
    int rc = store_manifest_parse(m, mlen, info, ilen, &d->top);
    if (rc)
        return rc;
    for (size_t i = 0; i < d->top->nfiles; i++)
        if (!strcmp(d->top->files[i].name, LAZY_DISK))
            d->df = &d->top->files[i];
    if (!d->df)
        return lazy_fail(EINVAL, "layer %.12s has no %s to serve", d->top->id.hex, LAZY_DISK);
    if (d->top->nbindings)
        return lazy_fail(EINVAL, "layer %.12s is a saved state; it runs only from the store "
                                 "(pull it)", d->top->id.hex);
    return 0;
}

/* A directory already handed over (an ordinary clone) is refused, before
 * anything is asked of the registry. */
static int not_handed_over(lazy_disk *d)
{
    char *marker = path_join(d->dir, STORE_INSTANCE_MARKER);
    int rc = marker ? 0 : lazy_fail(ENOMEM, "out of memory");
    if (!rc && access(marker, F_OK) == 0)
        rc = lazy_fail(EEXIST, "%s is a clone already (its lazy run was handed over): run it as "
                               "any instance", d->dir);
    free(marker);
    return rc;
}

/* An instance served before names its layer and the OCI manifest's digest
 * in LAZY_DIR/layer ("ID\nDIGEST\n"): it is served again from that very
 * manifest, wherever the tag went since. *had: 1 if there was one. */
static int source_read(lazy_disk *d, store_id *id, int *had)
{
    char *path = path_join(d->state_dir, "layer"), *text = NULL;
    size_t n = 0;
    *had = 0;
    int rc = path ? file_read_all(path, 256, &text, &n) : lazy_fail(ENOMEM, "out of memory");
    if (rc == -ENOENT) {
        free(path);
        return 0;
    }
    if (!rc && (n != STORE_ID_HEX + 1 + 71 + 1 || text[STORE_ID_HEX] != '\n' ||
                memcmp(text + STORE_ID_HEX + 1, "sha256:", 7) || text[n - 1] != '\n'))
        rc = lazy_fail(EINVAL, "%s: not a lazy instance's layer and digest", path);
    else if (rc)
        rc = lazy_fail_errno(-rc, "%s", path);
    if (!rc) {
        memcpy(id->hex, text, STORE_ID_HEX);
        id->hex[STORE_ID_HEX] = 0;
        text[n - 1] = 0;
        free(d->src.digest);
        if (!(d->src.digest = strdup(text + STORE_ID_HEX + 1)))
            rc = lazy_fail(ENOMEM, "out of memory");
        *had = 1;
    }
    free(text);
    free(path);
    return rc;
}

/* 1 if dir is absent, or holds nothing but LAZY_DIR (a first open cut short) */
static int dir_is_new(const char *dir)
{
    DIR *h = opendir(dir);
    if (!h)
        return errno == ENOENT;
    struct dirent *e;
    int fresh = 1;
    while (fresh && (e = readdir(h)))
        fresh = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, LAZY_DIR);
    closedir(h);
    return fresh;
}

/* The instance directory made (if new) with its LAZY_DIR and the layer and
 * digest it serves; the fill pulls by that digest too. */
static int dir_prepare(lazy_disk *d, const store_id *was, int had)
{
    if (had && strcmp(was->hex, d->top->id.hex))
        return lazy_fail(EBADMSG, "%s serves layer %.12s, yet manifest %s names %.12s", d->dir,
                         was->hex, d->src.digest, d->top->id.hex);
    if (!had && !dir_is_new(d->dir))
        return lazy_fail(EEXIST, "%s already exists and is not a lazy run's instance; a lazy run "
                                 "makes a new directory", d->dir);
    if ((mkdir(d->dir, 0755) < 0 && errno != EEXIST) ||
        (mkdir(d->state_dir, 0755) < 0 && errno != EEXIST))
        return lazy_fail_errno(errno, "%s", d->state_dir);
    if (had)
        return 0;
    free(d->src.digest);
    if (!(d->src.digest = strdup(remote_reader_digest(d->rd))))
        return lazy_fail(ENOMEM, "out of memory");
    char *path = path_join(d->state_dir, "layer"), line[STORE_ID_HEX + 80];
    int n = snprintf(line, sizeof line, "%s\n%s\n", d->top->id.hex, d->src.digest);
    int rc = path ? atomic_file_write_all(path, line, (size_t)n, 0644, 0) : -ENOMEM;
    if (rc)
        rc = lazy_fail_errno(-rc, "%s", path ? path : d->state_dir);
    free(path);
    return rc;
}

/* the nearest layer of the chain the store holds, pinned, its chunks by id */
static int base_find(lazy_disk *d)
{
    const store_id *ids;
    size_t n = remote_reader_chain(d->rd, &ids);
    for (size_t i = n; i-- > 0;) {
        if (store_layer_exists(d->st, &ids[i]) != 1)
            continue;
        int rc = store_pin_layer(d->st, &ids[i], &d->base_pin);
        if (!rc)
            rc = store_layer_load(d->st, &ids[i], &d->base);
        if (rc)
            return rc;
        char *any = d->base->nfiles ? store_layer_file_path(d->st, &ids[i], d->base->files[0].name)
                                    : NULL;
        if (any)
            d->base_dir = strdup(dirname(any));
        free(any);
        if (d->base->nfiles && !d->base_dir)
            return lazy_fail(ENOMEM, "out of memory");
        return lz_places(d->base, -1, &d->base_ids, &d->nbase_ids);
    }
    return 0;
}

/* a small file fetched whole (each chunk checked) and put in place at
 * once; one already there is the instance's (a restart): kept */
static int small_file(lazy_disk *d, const store_file *f)
{
    char *path = path_join(d->dir, f->name);
    if (!path)
        return lazy_fail(ENOMEM, "out of memory");
    if (access(path, F_OK) == 0) {
        free(path);
        return 0;
    }
    atomic_file af;
    unsigned char *buf = malloc(f->chunk_size);
    int rc = buf ? atomic_file_open(&af, path, f->mode, 0) : -ENOMEM;
    int opened = buf && !rc;
    if (rc)
        rc = lazy_fail_errno(-rc, "%s", path);
    if (!rc && ftruncate(af.fd, (off_t)f->size) < 0)
        rc = lazy_fail_errno(errno, "%s", path);
    for (size_t k = 0; !rc && k < f->ndata; k++) {
        uint64_t c = f->data[k].index, len = store_chunk_len(f, c);
        char what[300];
        snprintf(what, sizeof what, "%s chunk %" PRIu64, f->name, c);
        if (!(rc = lz_chunk_get(d, f->data[k].digest, (uint32_t)len, buf, what)) &&
            pwrite(af.fd, buf, len, (off_t)(c * f->chunk_size)) != (ssize_t)len)
            rc = lazy_fail_errno(errno ? errno : EIO, "%s", path);
    }
    if (!rc && (rc = atomic_file_commit(&af)))
        rc = lazy_fail_errno(-rc, "%s", path);
    else if (rc && opened)
        atomic_file_abort(&af);
    free(buf);
    free(path);
    return rc;
}

static int open_steps(lazy_disk *d)
{
    store_id was;
    int had = 0;
    int rc = not_handed_over(d);
    if (!rc)
        rc = source_read(d, &was, &had);
    if (!rc)
        rc = remote_reader_open(&d->src, &d->ro, d->o.check_guest, d->o.check_ctx, &d->rd);
    if (!rc)
        rc = top_parse(d);
    if (!rc)
        rc = dir_prepare(d, &was, had);
    if (!rc)
        rc = base_find(d);
    for (size_t i = 0; !rc && i < d->top->nfiles; i++)
        if (&d->top->files[i] != d->df)
            rc = small_file(d, &d->top->files[i]);
    if (!rc)
        rc = lz_disk_open(d);
    if (!rc)
        lz_backend_init(d);
    if (!rc)
        rc = lz_record_start(d);
    if (!rc)
        lz_prefetch_start(d);
    if (!rc && !d->o.no_fill)
        rc = lz_fill_start(d);
    else if (!rc)
        d->fstate = LAZY_IDLE;
    return rc;
}

int lazy_open(store *st, const remote_ref *src, const remote_opts *ro, const char *instance_dir,
              const lazy_opts *o, lazy_disk **out)
{
    *out = NULL;
    lazy_disk *d = calloc(1, sizeof *d);
    if (!d)
        return lazy_fail(ENOMEM, "out of memory");
    d->st = st;
    d->fd = d->state_fd = -1;
    pthread_mutex_init(&d->gate_mu, NULL);
    pthread_cond_init(&d->gate_cv, NULL);
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    for (int i = 0; i < LZ_STRIPES; i++)
        pthread_mutex_init(&d->stripes[i], NULL);
    int rc = keep_args(d, src, ro, instance_dir, o);
    if (!rc)
        rc = open_steps(d);
    if (rc) {
        lazy_close(d);
        return rc;
    }
    *out = d;
    return 0;
}

const nbd_export *lazy_export(const lazy_disk *d)
{
    return &d->e;
}

const nbd_backend *lazy_backend(const lazy_disk *d)
{
    return &d->b;
}

void lazy_progress_get(lazy_disk *d, lazy_progress *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&d->mu);
    out->state = d->fstate;
    out->layer = d->top->id;
    out->disk_size = d->df->size;
    out->chunks = d->df->ndata;
    out->chunks_here = d->chunks_here;
    out->fill_done = d->fill_done;
    out->fill_total = d->fill_total;
    out->guest_fetches = d->guest_fetches;
    out->local_reads = d->local_reads;
    out->received_reads = d->received_reads;
    out->fill_fetched = d->fill_fetched;
    out->fill_resumed = d->fill_resumed;
    out->fill_supplied = d->fill_supplied;
    out->fill_held_back = d->fill_held_back;
    out->fill_paused = d->fill_paused;
    snprintf(out->error, sizeof out->error, "%s", d->error);
    pthread_mutex_unlock(&d->mu);
}

void lazy_close(lazy_disk *d)
{
    if (!d)
        return;
    lz_fill_stop(d);
    lz_prefetch_stop(d);
    lz_record_free(d);
    if (d->fd >= 0) {
        lz_disk_flush(d);
        close(d->fd);
    }
    free(d->pending);
    if (d->state_fd >= 0)
        close(d->state_fd);
    free(d->state);
    free(d->disk_ids);
    free(d->base_ids);
    free(d->base_dir);
    store_layer_free(d->base);
    store_unpin(d->base_pin);
    store_layer_free(d->top);
    remote_reader_close(d->rd);
    free(d->src.host), free(d->src.repo), free(d->src.tag), free(d->src.digest);
    free((char *)d->ro.docker_dir);
    free((char *)d->o.tag);
    free(d->dir), free(d->state_dir), free(d->disk_path);
    for (int i = 0; i < LZ_STRIPES; i++)
        pthread_mutex_destroy(&d->stripes[i]);
    pthread_mutex_destroy(&d->gate_mu);
    pthread_cond_destroy(&d->gate_cv);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d);
}

void lazy_ready(lazy_disk *d)
{
    if (!d)
        return;
    lz_fill_go(d);
    lz_record_end(d);
}
