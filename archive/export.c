/*
 * Export: a layer (and the ancestors it needs) as one pax tar, compressed
 * with zstd. Section 0 is the layer itself, in full under NAME.bundle/ (or,
 * with --since, only what differs from that layer, under NAME.strata-delta/);
 * each further section is the next ancestor, as what differs from the
 * section before it. Holes are never read: they come from zero chunks.
 */
#define _GNU_SOURCE
#include "../base/platform.h"
#include "internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define READ_BUF (4u << 20)

typedef struct {
    store *st;
    const archive_export_opts *o;
    struct archive *a;
    ar_zout z;
    unsigned char *buf;
    uint64_t done, total;
    int64_t mtime;
} exporter;

#define note(o, ...) note_send((o)->note, (o)->ctx, __VA_ARGS__)

static la_ssize_t write_cb(struct archive *a, void *ctx, const void *buf, size_t len)
{
    exporter *x = ctx;
    if (ar_zout_write(&x->z, buf, len)) {
        archive_set_error(a, EIO, "%s", archive_error());
        return -1;
    }
    return (la_ssize_t)len;
}

static int lib_failed(exporter *x, const char *what)
{
    const char *m = archive_error_string(x->a);
    return ar_fail(EIO, "%s: %s", what, m ? m : "libarchive failed");
}

static const store_file *find_file(const store_layer *l, const char *name)
{
    for (size_t i = 0; l && i < l->nfiles; i++)
        if (!strcmp(l->files[i].name, name))
            return &l->files[i];
    return NULL;
}

/* Must the bytes of chunk c travel? The same rule as store_receive_begin:
 * data that the base does not hold at the same place. */
static int needed(const store_file *f, const store_file *bf, size_t c)
{
    const store_chunk *ch = store_file_chunk(f, c);
    if (!ch)
        return 0;
    const store_chunk *was = bf && bf->chunk_size == f->chunk_size && c < bf->nchunks
                                 ? store_file_chunk(bf, c)
                                 : NULL;
    return !(was && !memcmp(was->digest, ch->digest, 32));
}

static uint64_t needed_bytes(const store_file *f, const store_file *bf, size_t *count)
{
    uint64_t n = 0;
    *count = 0;
    for (size_t c = 0; c < f->nchunks; c++)
        if (needed(f, bf, c)) {
            n += store_chunk_len(f, c);
            (*count)++;
        }
    return n;
}

static int put_small(exporter *x, const char *path, const void *data, size_t len)
{
    struct archive_entry *e = archive_entry_new();
    if (!e)
        return ar_fail(ENOMEM, "out of memory");
    archive_entry_set_pathname(e, path);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0444);
    archive_entry_set_size(e, (la_int64_t)len);
    archive_entry_set_mtime(e, x->mtime, 0);
    int rc = 0;
    if (archive_write_header(x->a, e) != ARCHIVE_OK ||
        (len && archive_write_data(x->a, data, len) != (la_ssize_t)len))
        rc = lib_failed(x, path);
    archive_entry_free(e);
    return rc;
}

/* Feed [off, off+len) of a hole: the pax writer drops bytes in holes
 * without reading them, so a zero buffer stands in for any length. */
static int feed_hole(exporter *x, uint64_t len)
{
    while (len) {
        size_t n = len < READ_BUF ? (size_t)len : READ_BUF;
        la_ssize_t w = archive_write_data(x->a, x->buf, n);
        if (w <= 0)
            return -1;
        len -= (uint64_t)w;
    }
    return 0;
}

static int feed_data(exporter *x, int fd, uint64_t off, uint64_t len, const char *path)
{
    while (len) {
        size_t n = len < READ_BUF ? (size_t)len : READ_BUF;
        ssize_t r = pread(fd, x->buf, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return ar_fail(r < 0 ? errno : EIO, "reading %s: %s", path,
                           r < 0 ? strerror(errno) : "shorter than its manifest");
        for (size_t at = 0; at < (size_t)r;) {
            la_ssize_t w = archive_write_data(x->a, x->buf + at, (size_t)r - at);
            if (w <= 0)
                return lib_failed(x, path);
            at += (size_t)w;
        }
        off += (uint64_t)r, len -= (uint64_t)r;
        x->done += (uint64_t)r;
        if (x->o->progress)
            x->o->progress(x->o->ctx, "export", x->done, x->total);
    }
    return 0;
}

/* The next run of chunks that must travel at or after *c: [*off, *off+*len). */
static int next_run(const store_file *f, const store_file *bf, size_t *c, uint64_t *off,
                    uint64_t *len)
{
    while (*c < f->nchunks && !needed(f, bf, *c))
        (*c)++;
    if (*c >= f->nchunks)
        return 0;
    *off = (uint64_t)*c * f->chunk_size;
    *len = 0;
    while (*c < f->nchunks && needed(f, bf, *c))
        *len += store_chunk_len(f, (*c)++);
    return 1;
}

static struct archive_entry *file_entry(exporter *x, const store_file *f, const store_file *bf,
                                        const char *path, int sparse)
{
    struct archive_entry *e = archive_entry_new();
    if (!e)
        return NULL;
    archive_entry_set_pathname(e, path);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, f->mode);
    archive_entry_set_size(e, (la_int64_t)f->size);
    archive_entry_set_mtime(e, x->mtime, 0);
    size_t c = 0, runs = 0;
    uint64_t off, len;
    while (sparse && next_run(f, bf, &c, &off, &len)) {
        archive_entry_sparse_add_entry(e, (la_int64_t)off, (la_int64_t)len);
        runs++;
    }
    if (sparse && !runs) /* all holes: GNU tar writes one empty region at the end */
        archive_entry_sparse_add_entry(e, (la_int64_t)f->size, 0);
    return e;
}

/* One file of a layer: a GNU sparse entry holding the chunks that must
 * travel, or a plain entry when that is every byte of the file. */
static int put_file(exporter *x, const store_id *id, const store_file *f, const store_file *bf,
                    const char *path)
{
    size_t count;
    needed_bytes(f, bf, &count);
    int sparse = count != f->nchunks;
    struct archive_entry *e = file_entry(x, f, bf, path, sparse);
    char *src = store_layer_file_path(x->st, id, f->name);
    int fd = src ? open(src, O_RDONLY | O_CLOEXEC) : -1, rc = 0;
    if (!e || !src)
        rc = ar_fail(ENOMEM, "out of memory");
    else if (fd < 0)
        rc = ar_fail(errno, "%s: %s", src, strerror(errno));
    else if (archive_write_header(x->a, e) != ARCHIVE_OK)
        rc = lib_failed(x, path);
    /* the pax writer emits the sparse map on the first data call: make
     * that call even when the file has no data at all */
    if (!rc && sparse && archive_write_data(x->a, x->buf, 0) < 0)
        rc = lib_failed(x, path);
    if (!rc)
        os_read_hint_give(fd, 0, 0, OS_READ_SEQUENTIAL);
    size_t c = 0;
    uint64_t at = 0, off, len; /* at: logical position fed so far */
    while (!rc && next_run(f, bf, &c, &off, &len)) {
        if (off > at && feed_hole(x, off - at))
            rc = lib_failed(x, path);
        if (!rc)
            rc = feed_data(x, fd, off, len, src);
        at = off + len;
    }
    if (fd >= 0)
        close(fd);
    free(src);
    if (e)
        archive_entry_free(e);
    return rc;
}

/* One section: a layer's manifest and info, then its files that carry data. */
static int put_layer(exporter *x, const char *meta, const char *files, const store_layer *l,
                     const store_layer *base, int every_file)
{
    char *m = NULL, *info = NULL;
    size_t mlen, ilen;
    int rc = store_layer_manifest(x->st, &l->id, &m, &mlen, &info, &ilen);
    if (rc)
        return rc;
    x->mtime = l->created;
    char *mp = NULL, *ip = NULL;
    if (asprintf(&mp, "%s/manifest", meta) < 0 || asprintf(&ip, "%s/info", meta) < 0)
        rc = ar_fail(ENOMEM, "out of memory");
    if (!rc && !(rc = put_small(x, mp, m, mlen)))
        rc = put_small(x, ip, info, ilen);
    for (size_t i = 0; !rc && i < l->nfiles; i++) {
        const store_file *f = &l->files[i];
        const store_file *bf = find_file(base, f->name);
        size_t count;
        needed_bytes(f, bf, &count);
        if (!count && !every_file)
            continue;
        char *p = NULL;
        if (asprintf(&p, "%s/%s", files, f->name) < 0)
            rc = ar_fail(ENOMEM, "out of memory");
        else
            rc = put_file(x, &l->id, f, bf, p);
        free(p);
    }
    free(mp);
    free(ip);
    free(m);
    free(info);
    return rc;
}

static int load(store *st, const store_id *id, store_layer **l)
{
    int rc = store_layer_load(st, id, l);
    return rc;
}

static int push_id(store_id **v, size_t *n, const store_id *id)
{
    store_id *p = realloc(*v, (*n + 1) * sizeof **v);
    if (!p)
        return ar_fail(ENOMEM, "out of memory");
    *v = p;
    p[(*n)++] = *id;
    return 0;
}

/* id's parent into *next; 0 at the root */
static int parent_of(store *st, const store_id *id, store_id *next, int *more)
{
    store_layer *l;
    int rc = load(st, id, &l);
    if (rc)
        return rc;
    *more = l->has_parent;
    *next = l->parent;
    store_layer_free(l);
    return 0;
}

/* The layers the archive carries, newest first: the layer, then ancestors
 * until one that the since layer has (or the root). */
static int plan_chain(store *st, const store_id *top, const store_id *since, store_id **out,
                      size_t *n)
{
    store_id *anc = NULL, *chain = NULL, cur;
    size_t nanc = 0, nchain = 0;
    int rc = 0, more = since != NULL;
    for (cur = since ? *since : *top; more && !rc && nanc < 65536;)
        if (!(rc = push_id(&anc, &nanc, &cur)))
            rc = parent_of(st, &cur, &cur, &more);
    for (cur = *top, more = 1; more && !rc;) {
        int known = 0;
        for (size_t i = 0; i < nanc && !known; i++)
            known = !strcmp(anc[i].hex, cur.hex);
        if (known && nchain) /* the receiver has it, and all before it */
            break;
        if (nchain >= AR_MAX_LAYERS)
            rc = ar_fail(E2BIG, "layer %.12s has more than %d ancestors to carry; export with "
                                "--since a layer the receiver has", top->hex, AR_MAX_LAYERS);
        else if (!(rc = push_id(&chain, &nchain, &cur)))
            rc = parent_of(st, &cur, &cur, &more);
    }
    free(anc);
    if (rc) {
        free(chain);
        return rc;
    }
    *out = chain;
    *n = nchain;
    return 0;
}

/* The layer to export: ref itself, or its parent when ref is a saved state
 * and the state was not asked for. */
static int pick_layer(store *st, const char *ref, const archive_export_opts *o, store_id *id,
                      int *host_bound)
{
    int rc = store_resolve(st, ref, id);
    store_layer *l = NULL;
    if (rc || (rc = store_layer_load(st, id, &l)))
        return rc;
    *host_bound = l->nbindings > 0;
    if (l->nbindings && !o->with_state) {
        if (!l->has_parent)
            rc = ar_fail(EINVAL, "%s holds a saved state and has no parent layer without it; "
                                 "pass --with-state to export it (host-bound)", ref);
        else {
            note(o, "%s holds a saved state (host-bound): exporting its parent %.12s without it "
                    "(--with-state exports the state too)", ref, l->parent.hex);
            *id = l->parent;
            *host_bound = 0;
        }
    }
    store_layer_free(l);
    return rc;
}

static int write_sections(exporter *x, const char *top, const store_id *chain, size_t n,
                          const store_layer *since)
{
    int rc = 0;
    store_layer *prev = NULL;
    for (size_t k = 0; !rc && k < n; k++) {
        store_layer *l;
        if ((rc = load(x->st, &chain[k], &l)))
            break;
        char *meta = NULL, *files = NULL;
        int ok = k == 0 ? asprintf(&meta, "%s/" AR_META, top) >= 0 &&
                              asprintf(&files, "%s", top) >= 0
                        : asprintf(&meta, "%s/" AR_META "/%s", top, l->id.hex) >= 0 &&
                              asprintf(&files, "%s/" AR_META "/%s/files", top, l->id.hex) >= 0;
        if (!ok)
            rc = ar_fail(ENOMEM, "out of memory");
        else
            rc = put_layer(x, meta, files, l, k == 0 ? since : prev, k == 0 && !since);
        free(meta);
        free(files);
        store_layer_free(prev);
        prev = l;
    }
    store_layer_free(prev);
    return rc;
}

static uint64_t plan_bytes(store *st, const store_id *chain, size_t n, const store_layer *since)
{
    uint64_t total = 0;
    store_layer *prev = NULL;
    for (size_t k = 0; k < n; k++) {
        store_layer *l;
        if (store_layer_load(st, &chain[k], &l))
            break;
        const store_layer *base = k == 0 ? since : prev;
        for (size_t i = 0; i < l->nfiles; i++) {
            size_t count;
            total += needed_bytes(&l->files[i], find_file(base, l->files[i].name), &count);
        }
        store_layer_free(prev);
        prev = l;
    }
    store_layer_free(prev);
    return total;
}

static int export_chain(exporter *x, const char *top, const store_id *chain, size_t n,
                        const store_layer *since, int out_fd)
{
    char *head = NULL, *hp = NULL;
    /* the REF as typed, if it is a tag, so a refusal can say what to fetch */
    const char *ref = since && x->o->since && store_tag_valid(x->o->since) &&
                              strncmp(since->id.hex, x->o->since, strlen(x->o->since))
                          ? x->o->since
                          : NULL;
    if (asprintf(&head, AR_HEAD "layers %zu\n%s%s%s%s%s%s", n, since ? "since " : "",
                 since ? since->id.hex : "", since ? "\n" : "", ref ? "since-ref " : "",
                 ref ? ref : "", ref ? "\n" : "") < 0 ||
        asprintf(&hp, "%s/" AR_META "/archive", top) < 0) {
        free(head);
        return ar_fail(ENOMEM, "out of memory");
    }
    x->total = plan_bytes(x->st, chain, n, since);
    /* the archive's own entries carry the top layer's time, not the clock's,
     * so a layer exports to the same bytes every time, on any machine */
    store_layer *top_layer = NULL;
    x->mtime = store_layer_load(x->st, &chain[n - 1], &top_layer) ? 0 : top_layer->created;
    store_layer_free(top_layer);
    int rc = ar_zout_open(&x->z, out_fd, x->o->level, x->o->threads);
    if (!rc && (!(x->a = archive_write_new()) || !(x->buf = calloc(1, READ_BUF))))
        rc = ar_fail(ENOMEM, "out of memory");
    /* big blocks: fewer, larger writes into zstd; the last one is not padded */
    if (!rc && (archive_write_set_format_pax(x->a) != ARCHIVE_OK ||
                archive_write_set_bytes_per_block(x->a, 1 << 20) != ARCHIVE_OK ||
                archive_write_set_bytes_in_last_block(x->a, 1) != ARCHIVE_OK ||
                archive_write_open(x->a, x, NULL, write_cb, NULL) != ARCHIVE_OK))
        rc = lib_failed(x, "starting the archive");
    if (!rc)
        rc = put_small(x, hp, head, strlen(head));
    if (!rc)
        rc = write_sections(x, top, chain, n, since);
    if (!rc && archive_write_close(x->a) != ARCHIVE_OK)
        rc = lib_failed(x, "ending the archive");
    if (!rc)
        rc = ar_zout_finish(&x->z);
    if (x->a)
        archive_write_free(x->a);
    free(head);
    free(hp);
    return rc;
}

static int name_valid(const char *s)
{
    return s && *s && *s != '.' && !strchr(s, '/') && strlen(s) < 200;
}

int archive_export(store *st, const char *ref, int out_fd, const archive_export_opts *o,
                   archive_stats *stats)
{
    memset(stats, 0, sizeof *stats);
    int loaded = ar_lib_load();
    if (loaded)
        return loaded;
    if (!name_valid(o->name))
        return ar_fail(EINVAL, "bad archive name '%s': a plain name, no '/', not starting with '.'",
                       o->name ? o->name : "");
    if (o->level < 0 || o->level > ZSTD_maxCLevel())
        return ar_fail(EINVAL, "--level %d: zstd levels are 1 to %d", o->level, ZSTD_maxCLevel());
    store_id id, since_id;
    store_layer *since = NULL;
    store_id *chain = NULL;
    size_t n = 0;
    int rc = pick_layer(st, ref, o, &id, &stats->host_bound);
    if (!rc && o->since && !(rc = store_resolve(st, o->since, &since_id)))
        rc = store_layer_load(st, &since_id, &since);
    if (!rc)
        rc = plan_chain(st, &id, since ? &since_id : NULL, &chain, &n);
    char *top = NULL;
    if (!rc && asprintf(&top, "%s.%s", o->name, since ? "strata-delta" : "bundle") < 0)
        rc = ar_fail(ENOMEM, "out of memory");
    exporter x = {.st = st, .o = o};
    if (!rc)
        rc = export_chain(&x, top, chain, n, since, out_fd);
    stats->bytes_in = x.done;
    stats->bytes_out = x.z.out;
    stats->layers = n;
    stats->id = id;
    ar_zout_free(&x.z);
    free(x.buf);
    free(top);
    free(chain);
    store_layer_free(since);
    return rc;
}
