/*
 * Import: read an archive (docs/archive.md) strictly, in one pass, and hand
 * every chunk to the store's receive, which checks it against the manifest
 * before writing it. Entry names are only compared with the names the
 * format expects, never used as paths, so nothing can be written outside
 * the store; anything unexpected is refused with the entry named.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NO_CHUNK ((size_t)-1)

typedef struct {
    store *st;
    const archive_import_opts *o;
    struct archive *a;
    ar_zin z;
    struct archive_entry *e; /* the entry read, not yet handled */
    int at_end;
    char *top;
    size_t nlayers;
    int has_since;
    store_id since;
    char since_ref[130]; /* the tag it had where it was exported, if any */
    store_receive *rx[AR_MAX_LAYERS];
    size_t nrx;
    uint64_t manifest_bytes, written;
    unsigned char *chunk; /* the chunk being gathered, a buffer of v's */
    ar_verifier v;
} importer;

/* an entry name fit for a one-line message */
static const char *shown(const char *path, char *buf, size_t n)
{
    size_t k = 0;
    for (const char *p = path ? path : "(no name)"; *p && k + 4 < n; p++)
        buf[k++] = (unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p;
    buf[k] = 0;
    return buf;
}

static int entry_fail(importer *im, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int entry_fail(importer *im, const char *fmt, ...)
{
    char name[300], what[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ar_fail(EINVAL, "%s: %s",
                   shown(im->e ? archive_entry_pathname(im->e) : "archive", name, sizeof name),
                   what);
}

static int lib_failed(importer *im)
{
    if (im->z.err[0])
        return ar_fail(EINVAL, "%s", im->z.err);
    const char *m = archive_error_string(im->a);
    char name[300];
    return ar_fail(EINVAL, "%s: %s", im->e ? shown(archive_entry_pathname(im->e), name, sizeof name)
                                           : "archive",
                   m ? m : "damaged or truncated archive");
}

/* Read the next header; at the end of the archive im->at_end is set. */
static int next_entry(importer *im)
{
    im->e = NULL;
    struct archive_entry *e;
    int r = archive_read_next_header(im->a, &e);
    if (r == ARCHIVE_EOF) {
        im->at_end = 1;
        return 0;
    }
    if (r != ARCHIVE_OK)
        return lib_failed(im);
    im->e = e;
    const char *p = archive_entry_pathname(e);
    if (!p || !*p)
        return entry_fail(im, "an entry without a name");
    if (p[0] == '/' || !strncmp(p, "../", 3) || strstr(p, "/../") ||
        (strlen(p) >= 3 && !strcmp(p + strlen(p) - 3, "/..")) || !strcmp(p, ".."))
        return entry_fail(im, "path leaves the bundle (absolute or '..'); refused");
    if (archive_entry_hardlink(e))
        return entry_fail(im, "a hard link; an archive of a layer holds regular files only");
    switch (archive_entry_filetype(e)) {
    case AE_IFREG:
        return 0;
    case AE_IFLNK:
        return entry_fail(im, "a symbolic link; an archive of a layer holds regular files only");
    case AE_IFDIR:
        return entry_fail(im, "a directory entry; an archive of a layer holds regular files only");
    default:
        return entry_fail(im, "a device, FIFO or socket; an archive of a layer holds regular "
                              "files only");
    }
}

/* Read a small entry (manifest, info) whole. */
static int read_small(importer *im, size_t max, char **out, size_t *len)
{
    la_int64_t size = archive_entry_size(im->e);
    if (size < 0 || (uint64_t)size > max)
        return entry_fail(im, "%lld bytes; at most %zu expected", (long long)size, max);
    im->z.limit += (uint64_t)size + (64u << 10);
    char *buf = malloc((size_t)size + 1);
    if (!buf)
        return ar_fail(ENOMEM, "out of memory");
    size_t at = 0;
    for (;;) {
        la_ssize_t r = archive_read_data(im->a, buf + at, (size_t)size - at + 1);
        if (r < 0) {
            free(buf);
            return lib_failed(im);
        }
        if (r == 0)
            break;
        at += (size_t)r;
        if (at > (size_t)size) {
            free(buf);
            return entry_fail(im, "more data than its size says");
        }
    }
    if (at != (size_t)size) {
        free(buf);
        return entry_fail(im, "truncated (%zu of %lld bytes)", at, (long long)size);
    }
    buf[at] = 0;
    *out = buf;
    *len = at;
    return 0;
}

static int expect_path(importer *im, const char *want)
{
    if (im->at_end)
        return ar_fail(EINVAL, "the archive is truncated: it ends before %s", want);
    if (strcmp(archive_entry_pathname(im->e), want))
        return entry_fail(im, "unexpected here; the format wants %s (docs/archive.md)", want);
    return 0;
}

/* "layers N\n", then for a delta "since <id>\n" and maybe "since-ref <tag>\n":
 * read, then written back, and it must be the same text. */
static int parse_head(importer *im, const char *text)
{
    char hex[65] = "", ref[130] = "", canon[400];
    unsigned long n = 0;
    const char *body = text + strlen(AR_HEAD);
    if (strncmp(text, AR_HEAD, strlen(AR_HEAD)))
        return entry_fail(im, "not a strata archive of a version this strata reads");
    int got = sscanf(body, "layers %lu\nsince %64[0-9a-f]\nsince-ref %128[^\n]", &n, hex, ref);
    snprintf(canon, sizeof canon, "layers %lu\n%s%s%s%s%s", n, got >= 2 ? "since " : "",
             got >= 2 ? hex : "", got >= 2 ? "\n" : "", got == 3 ? "since-ref " : "",
             got == 3 ? ref : "");
    if (got == 3)
        strcat(canon, "\n");
    if (got < 1 || strcmp(canon, body) || n < 1 || n > AR_MAX_LAYERS ||
        (got >= 2 && strlen(hex) != 64) || (got == 3 && !store_tag_valid(ref)))
        return entry_fail(im, "damaged archive header");
    im->nlayers = n;
    if ((im->has_since = got >= 2))
        memcpy(im->since.hex, hex, 65);
    snprintf(im->since_ref, sizeof im->since_ref, "%s", got == 3 ? ref : "");
    return 0;
}

/* The first entry: TOP/.strata-layer/archive. */
static int read_head(importer *im)
{
    int rc = next_entry(im);
    if (rc)
        return rc;
    if (im->at_end)
        return ar_fail(EINVAL, "the archive is empty");
    const char *p = archive_entry_pathname(im->e), *slash = strchr(p, '/');
    if (!slash || strcmp(slash, "/" AR_META "/archive"))
        return entry_fail(im, "not a strata archive: it must begin with NAME.bundle/" AR_META
                              "/archive (docs/archive.md)");
    im->top = strndup(p, (size_t)(slash - p));
    char *text;
    size_t len;
    if (!im->top)
        return ar_fail(ENOMEM, "out of memory");
    if ((rc = read_small(im, 4096, &text, &len)))
        return rc;
    rc = parse_head(im, text);
    free(text);
    size_t tl = strlen(im->top);
    const char *want = im->has_since ? ".strata-delta" : ".bundle";
    if (!rc && (tl <= strlen(want) || strcmp(im->top + tl - strlen(want), want)))
        rc = entry_fail(im, "a %s archive must be named NAME%s", im->has_since ? "delta" : "full",
                        want);
    if (!rc && im->has_since) {
        store_layer *l = NULL;
        if (store_layer_load(im->st, &im->since, &l))
            rc = ar_fail(ENOENT, "this archive holds only what changed since layer %s%s%s%s: "
                                 "import needs that layer: import or pull it first",
                         im->since.hex, im->since_ref[0] ? " (tag '" : "", im->since_ref,
                         im->since_ref[0] ? "' where it was exported)" : "");
        store_layer_free(l);
    }
    return rc;
}

/* How many decompressed bytes a section may add: its data and, per file,
 * a tar header, a pax header and a sparse map. */
static uint64_t section_bound(const store_layer *l)
{
    uint64_t n = 64u << 10;
    for (size_t i = 0; i < l->nfiles; i++) {
        const store_file *f = &l->files[i];
        n += (64u << 10) + (uint64_t)f->nchunks * 48;
        for (size_t k = 0; k < f->ndata; k++)
            n += store_chunk_len(f, f->data[k].index);
    }
    return n;
}

/* ---------- one file entry ---------- */

typedef struct {
    importer *im;
    store_receive *rx;
    size_t fi;
    const store_file *f;
    size_t cur;       /* data chunk being gathered, or NO_CHUNK */
    uint64_t fill;    /* bytes of it so far */
    uint64_t end;     /* where the last block ended: blocks only move forward */
} gather;

/* A whole chunk: to the verifier thread, which checks and writes it. */
static int deliver(gather *g)
{
    importer *im = g->im;
    ar_job j = {.rx = g->rx, .file = g->fi, .chunk = g->cur, .len = (size_t)g->fill,
                .buf = im->chunk};
    shown(archive_entry_pathname(im->e), j.entry, sizeof j.entry);
    im->chunk = NULL;
    int rc = ar_verifier_submit(&im->v, &j);
    if (rc)
        return rc;
    if (!(im->chunk = ar_verifier_buffer(&im->v, g->f->chunk_size)))
        return ar_fail(ENOMEM, "out of memory");
    im->written += g->fill;
    if (im->o->progress)
        im->o->progress(im->o->ctx, "import", im->written, 0);
    g->cur = NO_CHUNK;
    g->fill = 0;
    return 0;
}

static int take_block(gather *g, const unsigned char *buf, size_t size, uint64_t off)
{
    const store_file *f = g->f;
    if (off < g->end)
        return entry_fail(g->im, "data at offset %" PRIu64 " overlaps what came before", off);
    if (off > f->size || size > f->size - off)
        return entry_fail(g->im, "data runs past the end of the file (%" PRIu64 " bytes)",
                          f->size);
    g->end = off + size;
    while (size) {
        size_t c = (size_t)(off / f->chunk_size);
        uint64_t in = off - (uint64_t)c * f->chunk_size, clen = store_chunk_len(f, c);
        size_t take = clen - in < size ? (size_t)(clen - in) : size;
        if (g->cur != NO_CHUNK && (g->cur != c || in != g->fill))
            return entry_fail(g->im, "chunk %zu is cut short by the sparse map", g->cur);
        if (!store_file_chunk(f, c)) {
            for (size_t i = 0; i < take; i++)
                if (buf[i])
                    return entry_fail(g->im, "data at offset %" PRIu64 " where the manifest "
                                             "has a hole", off + i);
        } else {
            if (g->cur == NO_CHUNK) {
                if (in)
                    return entry_fail(g->im, "a data region starts inside chunk %zu", c);
                g->cur = c;
            }
            memcpy(g->im->chunk + g->fill, buf, take);
            g->fill += take;
            if (g->fill == clen) {
                int rc = deliver(g);
                if (rc)
                    return rc;
            }
        }
        buf += take, size -= take, off += take;
    }
    return 0;
}

static int check_sparse_map(importer *im, const store_file *f)
{
    int n = archive_entry_sparse_reset(im->e);
    la_int64_t off, len;
    uint64_t end = 0;
    for (int i = 0; i < n; i++) {
        if (archive_entry_sparse_next(im->e, &off, &len) != ARCHIVE_OK)
            break;
        if (off < 0 || len < 0 || (uint64_t)off < end || (uint64_t)len > f->size ||
            (uint64_t)off > f->size - (uint64_t)len)
            return entry_fail(im, "sparse map overlaps or runs past the end of the file");
        end = (uint64_t)off + (uint64_t)len;
    }
    return 0;
}

static int read_file_entry(importer *im, store_receive *rx, size_t fi)
{
    const store_file *f = &store_receive_layer(rx)->files[fi];
    if (archive_entry_size(im->e) < 0 || (uint64_t)archive_entry_size(im->e) != f->size)
        return entry_fail(im, "size %lld, but the manifest says %" PRIu64,
                          (long long)archive_entry_size(im->e), f->size);
    int rc = check_sparse_map(im, f);
    if (rc)
        return rc;
    if (!(im->chunk = ar_verifier_buffer(&im->v, f->chunk_size)))
        return ar_fail(ENOMEM, "out of memory");
    gather g = {.im = im, .rx = rx, .fi = fi, .f = f, .cur = NO_CHUNK};
    for (;;) {
        const void *buf;
        size_t size;
        la_int64_t off;
        int r = archive_read_data_block(im->a, &buf, &size, &off);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK) {
            rc = lib_failed(im);
            break;
        }
        if (off < 0) {
            rc = entry_fail(im, "a negative offset");
            break;
        }
        if ((rc = take_block(&g, buf, size, (uint64_t)off)))
            break;
    }
    if (!rc && g.cur != NO_CHUNK)
        rc = entry_fail(im, "ends inside chunk %zu", g.cur);
    ar_verifier_release(&im->v, im->chunk);
    im->chunk = NULL;
    return rc;
}

/* ---------- sections ---------- */

static int section_complete(importer *im, store_receive *rx, const char *files)
{
    const store_layer *l = store_receive_layer(rx);
    if (!store_receive_missing(rx))
        return 0;
    for (size_t i = 0; i < l->nfiles; i++)
        for (size_t c = 0; c < l->files[i].nchunks; c++)
            if (store_receive_needs(rx, i, c))
                return ar_fail(EINVAL, "%s/%s: chunk %zu (offset %" PRIu64 ") is not in the "
                                       "archive (truncated, or not made from this manifest?)",
                               files, l->files[i].name, c, (uint64_t)c * l->files[i].chunk_size);
    (void)im;
    return 0;
}

/* The file entries of a section, in manifest order, each at most once. */
static int read_files(importer *im, store_receive *rx, const char *files, const char *next_meta)
{
    const store_layer *l = store_receive_layer(rx);
    size_t next = 0, plen = strlen(files);
    int rc;
    while (!(rc = next_entry(im)) && !im->at_end) {
        const char *p = archive_entry_pathname(im->e);
        if (next_meta && !strcmp(p, next_meta))
            break;
        if (strncmp(p, files, plen) || p[plen] != '/')
            return entry_fail(im, "not a file of this layer (expected %s/NAME)", files);
        const char *name = p + plen + 1;
        size_t fi = next;
        while (fi < l->nfiles && strcmp(l->files[fi].name, name))
            fi++;
        if (fi == l->nfiles) {
            for (size_t j = 0; j < next; j++)
                if (!strcmp(l->files[j].name, name))
                    return entry_fail(im, "a duplicate entry (or out of order)");
            return entry_fail(im, "a file the layer's manifest does not name");
        }
        if ((rc = read_file_entry(im, rx, fi)))
            return rc;
        next = fi + 1;
    }
    if (!rc)
        rc = ar_verifier_flush(&im->v);
    return rc ? rc : section_complete(im, rx, files);
}

static int read_section(importer *im, size_t k, const store_id *expect)
{
    char *meta = NULL, *files = NULL, *mp = NULL, *ip = NULL, *next_meta = NULL;
    char *m = NULL, *info = NULL;
    size_t mlen = 0, ilen = 0;
    int rc = 0;
    if (k == 0 ? asprintf(&meta, "%s/" AR_META, im->top) < 0 || asprintf(&files, "%s", im->top) < 0
               : asprintf(&meta, "%s/" AR_META "/%s", im->top, expect->hex) < 0 ||
                     asprintf(&files, "%s/" AR_META "/%s/files", im->top, expect->hex) < 0)
        rc = ar_fail(ENOMEM, "out of memory");
    if (!rc && (asprintf(&mp, "%s/manifest", meta) < 0 || asprintf(&ip, "%s/info", meta) < 0))
        rc = ar_fail(ENOMEM, "out of memory");
    /* section k > 0 begins with the entry that ended section k - 1 */
    if (!rc && k == 0)
        rc = next_entry(im);
    if (!rc && !(rc = expect_path(im, mp)))
        rc = read_small(im, AR_MANIFESTS_MAX - im->manifest_bytes, &m, &mlen);
    im->manifest_bytes += mlen;
    if (!rc && !(rc = next_entry(im)) && !(rc = expect_path(im, ip)))
        rc = read_small(im, 1u << 20, &info, &ilen);
    store_receive *rx = NULL;
    if (!rc) {
        store_receive_opts ro = {
            .base_layer = k == 0 && im->has_since ? &im->since : NULL,
            .base_rx = k > 0 ? im->rx[k - 1] : NULL,
            .parent_follows = k + 1 < im->nlayers,
        };
        if ((rc = store_receive_begin(im->st, m, mlen, info, ilen, &ro, &rx)))
            rc = ar_fail(-rc, "%s: %s", mp, store_error());
    }
    if (!rc) {
        im->rx[im->nrx++] = rx;
        const store_layer *l = store_receive_layer(rx);
        if (k > 0 && strcmp(l->id.hex, expect->hex))
            rc = ar_fail(EINVAL, "%s: this manifest is layer %s, not the %s its path names", mp,
                         l->id.hex, expect->hex);
        im->z.limit += section_bound(l);
        if (!rc && k + 1 < im->nlayers) {
            if (!l->has_parent)
                rc = ar_fail(EINVAL, "%s: a root layer, yet the archive carries more layers", mp);
            else if (asprintf(&next_meta, "%s/" AR_META "/%s/manifest", im->top,
                              l->parent.hex) < 0)
                rc = ar_fail(ENOMEM, "out of memory");
        }
    }
    if (!rc)
        rc = read_files(im, rx, files, next_meta);
    free(meta), free(files), free(mp), free(ip), free(next_meta), free(m), free(info);
    return rc;
}

static int finish_all(importer *im, archive_stats *stats)
{
    /* oldest first: each layer's parent is published before it */
    int rc = 0;
    while (im->nrx) {
        size_t k = --im->nrx;
        store_commit_result res;
        int r = store_receive_finish(im->rx[k], k == 0 ? im->o->tag : NULL, &res);
        im->rx[k] = NULL;
        if (r && !rc)
            rc = r;
        if (k == 0 && !r) {
            stats->id = res.id;
            stats->existed = res.existed;
        }
        if (rc) /* the rest can't be published without this one */
            break;
    }
    return rc;
}

int archive_import(store *st, int in_fd, const archive_import_opts *o, archive_stats *stats)
{
    memset(stats, 0, sizeof *stats);
    importer im = {.st = st, .o = o};
    int rc = ar_lib_load();
    if (rc)
        return rc;
    rc = ar_zin_open(&im.z, in_fd);
    if (!rc)
        rc = ar_verifier_start(&im.v);
    if (!rc && !(im.a = archive_read_new()))
        rc = ar_fail(ENOMEM, "out of memory");
    if (!rc && (archive_read_support_format_tar(im.a) != ARCHIVE_OK ||
                archive_read_open(im.a, &im.z, NULL, ar_zin_read,
                                  NULL) != ARCHIVE_OK))
        rc = lib_failed(&im);
    if (!rc)
        rc = read_head(&im);
    store_id expect = {{0}};
    for (size_t k = 0; !rc && k < im.nlayers; k++) {
        rc = read_section(&im, k, &expect);
        if (!rc) {
            const store_layer *l = store_receive_layer(im.rx[k]);
            expect = l->parent;
            if (k == 0)
                stats->host_bound = l->nbindings > 0;
        }
    }
    if (!rc && !im.at_end)
        rc = entry_fail(&im, "more than the archive header says it holds");
    if (!rc)
        rc = ar_zin_drain(&im.z);
    stats->layers = im.nlayers;
    ar_verifier_stop(&im.v); /* no chunk in flight from here on */
    if (!rc)
        rc = finish_all(&im, stats);
    for (size_t k = 0; k < im.nrx; k++)
        store_receive_abort(im.rx[k]);
    stats->bytes_in = im.z.bytes_in;
    stats->bytes_out = im.written;
    if (im.a)
        archive_read_free(im.a);
    ar_zin_free(&im.z);
    free(im.top);
    return rc;
}
