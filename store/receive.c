/*
 * Receiving a layer made elsewhere: the one seam every chunk source (an
 * archive, a registry) goes through. The manifest says what the layer is;
 * chunks the store already holds at the same place in a base layer are
 * cloned, the others arrive from the caller in any order and are checked
 * against their SHA-256 before they are written. The layer is built under
 * tmp/ and published with one rename, as commit does (store.c).
 */
#define _GNU_SOURCE
#include "../clone/clone.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define INFO_MAX (1u << 20)

enum { CH_NONE = 0, CH_NEEDED, CH_HAVE }; /* per chunk: hole, bytes due, in place */

struct store_receive {
    store *st;
    store_layer *l;      /* parsed manifest and info; l->id is the id */
    char *manifest;      /* the canonical bytes, written as they came */
    size_t mlen;
    int existed;         /* already a layer: chunks are only verified */
    int reflinked;       /* every base file was cloned, not copied */
    int parent_follows;
    st_tmpdir tmp;       /* tmp.path/{manifest,info,bundle/} */
    char *files_dir;     /* where the layer's files are (tmp bundle, or the layer's) */
    unsigned char **state; /* [file][chunk] CH_* */
    uint64_t missing;
    pthread_mutex_t mu;  /* state and missing, for callers receiving in parallel */
};

static uint64_t chunk_len(const store_file *f, size_t c)
{
    uint64_t off = (uint64_t)c * f->chunk_size;
    return f->size - off < f->chunk_size ? f->size - off : f->chunk_size;
}

/*
 * SEAL HOOK: the single place where the bytes of every chunk that arrives
 * from outside are in hand, already verified against the manifest's
 * SHA-256 and about to be written at file `file`, chunk `chunk`. The local
 * XXH3 seals of a materialized layer (store/seal.c) are to be fed from here;
 * chunks cloned from a base keep the base's seals.
 */
static void chunk_verified(store_receive *rx, size_t file, size_t chunk, const void *data,
                           size_t len)
{
    (void)rx, (void)file, (void)chunk, (void)data, (void)len;
}

static void release_lock(store *st)
{
    if (--st->receiving > 0)
        st_lock(st, 0); /* others still build on their bases */
    else
        st_unlock(st);
}

const store_layer *store_receive_layer(const store_receive *rx)
{
    return rx->l;
}

uint64_t store_receive_missing(const store_receive *rx)
{
    return rx->missing;
}

int store_receive_needs(const store_receive *rx, size_t file, size_t chunk)
{
    if (file >= rx->l->nfiles || chunk >= rx->l->files[file].nchunks)
        return 0;
    return rx->state[file][chunk] == CH_NEEDED;
}

/* Where a base's files and chunk lists are: a published layer or a receive. */
typedef struct {
    const store_layer *l;
    char *dir;
} base_src;

static int base_open(store_receive *rx, const store_receive_opts *o, store_layer **owned,
                     base_src *b)
{
    store *st = rx->st;
    memset(b, 0, sizeof *b);
    if (o && o->base_rx) {
        if (o->base_rx->missing)
            return st_fail(EINVAL, "layer %.12s: its base %.12s has not arrived in full",
                           rx->l->id.hex, o->base_rx->l->id.hex);
        b->l = o->base_rx->l;
        b->dir = st_strdup(o->base_rx->files_dir);
        return b->dir ? 0 : -ENOMEM;
    }
    const store_id *id = o && o->base_layer ? o->base_layer : NULL;
    if (!id && rx->l->has_parent && st_layer_exists(st, &rx->l->parent))
        id = &rx->l->parent;
    if (!id)
        return 0;
    if (!st_layer_exists(st, id))
        return st_fail(ENOENT, "needs layer %s (the base it was made against): import or pull "
                               "it first", id->hex);
    int rc = store_layer_load(st, id, owned);
    if (rc)
        return rc;
    b->l = *owned;
    b->dir = st_printf("%s/layers/%s/bundle", st->home, id->hex);
    return b->dir ? 0 : -ENOMEM;
}

static int same_chunk(const store_file *a, const store_file *b, size_t c)
{
    return b && b->chunk_size == a->chunk_size && c < b->nchunks && b->chunks[c].data &&
           a->chunks[c].data && !memcmp(a->chunks[c].digest, b->chunks[c].digest, 32);
}

/* Make one file of the layer under tmp/: a clone of the base's file of the
 * same name, cut to size, with holes where the new layer has zero chunks;
 * mark which chunks must still arrive. */
static int materialize_file(store_receive *rx, size_t i, const base_src *b)
{
    const store_file *f = &rx->l->files[i];
    const store_file *bf = b->l ? st_layer_find_file(b->l, f->name) : NULL;
    if (bf && bf->chunk_size != f->chunk_size)
        bf = NULL; /* chunks at other places: nothing to take by position */
    char *to = st_printf("%s/%s", rx->files_dir, f->name);
    char *from = bf ? st_printf("%s/%s", b->dir, f->name) : NULL;
    int rc = (!to || (bf && !from)) ? -ENOMEM : 0, fd = -1;
    if (!rc && bf) {
        clone_method how = CLONE_REFLINK;
        if ((rc = clone_path(from, to, 0644, &how)))
            rc = st_fail_errno(rc, "cloning %s into the store", from);
        else if (how != CLONE_REFLINK)
            rx->reflinked = 0;
    }
    if (!rc && (fd = open(to, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0)
        rc = st_fail_errno(errno, "%s", to);
    if (!rc && ftruncate(fd, (off_t)f->size) < 0)
        rc = st_fail_errno(errno, "%s", to);
    for (size_t c = 0; !rc && c < f->nchunks; c++) {
        uint64_t off = (uint64_t)c * f->chunk_size;
        if (same_chunk(f, bf, c)) {
            rx->state[i][c] = CH_HAVE;
        } else if (f->chunks[c].data) {
            rx->state[i][c] = CH_NEEDED;
            rx->missing++;
        } else if (bf && c < bf->nchunks && bf->chunks[c].data) {
            /* a hole here, data in the base: punch, or write zeros */
            int p = clone_punch_hole(fd, off, chunk_len(f, c));
            if (p == -EOPNOTSUPP) {
                static const char zeros[4096];
                for (uint64_t at = 0; !p && at < chunk_len(f, c); at += sizeof zeros) {
                    uint64_t n = chunk_len(f, c) - at < sizeof zeros ? chunk_len(f, c) - at
                                                                      : sizeof zeros;
                    if (pwrite(fd, zeros, n, (off_t)(off + at)) != (ssize_t)n)
                        p = -errno;
                }
            }
            if (p)
                rc = st_fail_errno(p, "%s", to);
        }
    }
    if (fd >= 0)
        close(fd);
    free(to);
    free(from);
    return rc;
}

static int receive_setup(store_receive *rx, const store_receive_opts *o)
{
    store *st = rx->st;
    const store_layer *l = rx->l;
    if (l->has_parent && !(o && o->parent_follows) && !st_layer_exists(st, &l->parent))
        return st_fail(ENOENT, "layer %.12s needs layer %s (its parent): import or pull it first",
                       l->id.hex, l->parent.hex);
    if (!(rx->state = calloc(l->nfiles ? l->nfiles : 1, sizeof *rx->state)))
        return -ENOMEM;
    for (size_t i = 0; i < l->nfiles; i++)
        if (!(rx->state[i] = calloc(l->files[i].nchunks ? l->files[i].nchunks : 1, 1)))
            return -ENOMEM;
    if ((rx->existed = st_layer_exists(st, &l->id))) {
        rx->files_dir = st_printf("%s/layers/%s/bundle", st->home, l->id.hex);
        return rx->files_dir ? 0 : -ENOMEM;
    }
    int rc = st_tmpdir_make(st, "receive", &rx->tmp);
    if (rc)
        return rc;
    if (!(rx->files_dir = st_printf("%s/bundle", rx->tmp.path)))
        return -ENOMEM;
    if (mkdir(rx->files_dir, 0755) < 0)
        return st_fail_errno(errno, "%s", rx->files_dir);
    store_layer *owned = NULL;
    base_src b;
    rc = base_open(rx, o, &owned, &b);
    for (size_t i = 0; !rc && i < l->nfiles; i++)
        rc = materialize_file(rx, i, &b);
    store_layer_free(owned);
    free(b.dir);
    return rc;
}

int store_receive_begin(store *st, const char *manifest, size_t mlen, const char *info,
                        size_t ilen, const store_receive_opts *o, store_receive **out)
{
    *out = NULL;
    if (ilen > INFO_MAX)
        return st_fail(EFBIG, "layer info: %zu bytes; at most %u", ilen, INFO_MAX);
    store_receive *rx = calloc(1, sizeof *rx);
    if (!rx || !(rx->l = calloc(1, sizeof *rx->l)) || !(rx->manifest = malloc(mlen ? mlen : 1))) {
        if (rx)
            free(rx->l);
        free(rx);
        return -ENOMEM;
    }
    pthread_mutex_init(&rx->mu, NULL);
    rx->st = st;
    rx->tmp.lock_fd = -1;
    rx->reflinked = 1;
    memcpy(rx->manifest, manifest, mlen);
    rx->mlen = mlen;
    int rc = st_manifest_parse(manifest, mlen, rx->l);
    if (rc == -EINVAL)
        rc = st_fail(EINVAL, "layer manifest is malformed or not in canonical form");
    if (!rc && st_info_parse(info, ilen, rx->l))
        rc = st_fail(EINVAL, "layer info is malformed");
    unsigned char d[32];
    st_sha256(manifest, mlen, d);
    st_hex(d, 32, rx->l->id.hex);
    if (!rc && !(rc = st_lock(st, 0))) {
        st->receiving++;
        rc = receive_setup(rx, o);
    } else {
        st->receiving++; /* so abort's release balances */
    }
    if (rc) {
        store_receive_abort(rx);
        return rc;
    }
    *out = rx;
    return 0;
}

static int write_all(int fd, const void *data, size_t len, uint64_t off)
{
    const char *p = data;
    while (len) {
        ssize_t w = pwrite(fd, p, len, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        p += w, len -= (size_t)w, off += (uint64_t)w;
    }
    return 0;
}

int store_receive_chunk(store_receive *rx, size_t file, size_t chunk, const void *data,
                        size_t len)
{
    const store_layer *l = rx->l;
    if (file >= l->nfiles || chunk >= l->files[file].nchunks)
        return st_fail(EINVAL, "layer %.12s: no chunk %zu of file %zu", l->id.hex, chunk, file);
    const store_file *f = &l->files[file];
    if (!f->chunks[chunk].data)
        return st_fail(EINVAL, "%s: chunk %zu is a hole in the manifest, yet data came for it",
                       f->name, chunk);
    if (len != chunk_len(f, chunk))
        return st_fail(EINVAL, "%s: chunk %zu is %zu bytes; the manifest says %" PRIu64,
                       f->name, chunk, len, chunk_len(f, chunk));
    unsigned char d[32];
    st_sha256(data, len, d);
    if (memcmp(d, f->chunks[chunk].digest, 32))
        return st_fail(EINVAL, "%s: chunk %zu (offset %" PRIu64 ") does not match the manifest",
                       f->name, chunk, (uint64_t)chunk * f->chunk_size);
    pthread_mutex_lock(&rx->mu);
    int due = rx->state[file][chunk] == CH_NEEDED;
    pthread_mutex_unlock(&rx->mu);
    if (!due)
        return 0; /* already in place: verified, dropped */
    chunk_verified(rx, file, chunk, data, len);
    char *path = st_printf("%s/%s", rx->files_dir, f->name);
    int fd = path ? open(path, O_WRONLY | O_CLOEXEC) : -1, rc = 0;
    if (fd < 0)
        rc = path ? st_fail_errno(errno, "%s", path) : -ENOMEM;
    else if ((rc = write_all(fd, data, len, (uint64_t)chunk * f->chunk_size)))
        rc = st_fail_errno(rc, "%s", path);
    if (fd >= 0)
        close(fd);
    free(path);
    if (rc)
        return rc;
    pthread_mutex_lock(&rx->mu);
    if (rx->state[file][chunk] == CH_NEEDED) {
        rx->state[file][chunk] = CH_HAVE;
        rx->missing--;
    }
    pthread_mutex_unlock(&rx->mu);
    return 0;
}

static int first_missing(const store_receive *rx)
{
    for (size_t i = 0; i < rx->l->nfiles; i++)
        for (size_t c = 0; c < rx->l->files[i].nchunks; c++)
            if (rx->state[i][c] == CH_NEEDED)
                return st_fail(EINVAL, "%s: chunk %zu (offset %" PRIu64 ") never arrived",
                               rx->l->files[i].name, c,
                               (uint64_t)c * rx->l->files[i].chunk_size);
    return 0;
}

/* Everything under tmp/ durable before the rename makes it visible. */
static int make_durable(store_receive *rx)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < rx->l->nfiles; i++) {
        char *p = st_printf("%s/%s", rx->files_dir, rx->l->files[i].name);
        int fd = p ? open(p, O_RDONLY | O_CLOEXEC) : -1;
        if (fd < 0 || fchmod(fd, 0444) < 0 || fsync(fd) < 0)
            rc = p ? st_fail_errno(errno, "%s", p) : -ENOMEM;
        if (fd >= 0)
            close(fd);
        free(p);
    }
    st_buf info = {0};
    char *mpath = st_printf("%s/manifest", rx->tmp.path);
    char *ipath = st_printf("%s/info", rx->tmp.path);
    if (!rc && (!mpath || !ipath || st_info_format(rx->l, &info)))
        rc = -ENOMEM;
    if (!rc && ((rc = st_write_atomic(mpath, rx->manifest, rx->mlen, 0444)) ||
                (rc = st_write_atomic(ipath, info.p, info.n, 0444))))
        rc = st_fail_errno(rc, "%s", rx->tmp.path);
    if (!rc && ((rc = st_fsync_dir(rx->files_dir)) || (rc = st_fsync_dir(rx->tmp.path))))
        rc = st_fail_errno(rc, "%s", rx->tmp.path);
    free(info.p);
    free(mpath);
    free(ipath);
    return rc;
}

static int publish(store_receive *rx, store_commit_result *res)
{
    store *st = rx->st;
    const store_layer *l = rx->l;
    if (l->has_parent && !st_layer_exists(st, &l->parent))
        return st_fail(ENOENT, "layer %.12s needs layer %s (its parent): import or pull it first",
                       l->id.hex, l->parent.hex);
    res->existed = st_layer_exists(st, &l->id);
    if (res->existed)
        return 0;
    char *dir = st_layer_dir(st, &l->id), *layers = st_printf("%s/layers", st->home);
    int rc = (!dir || !layers) ? -ENOMEM : 0;
    if (!rc && rename(rx->tmp.path, dir) < 0)
        rc = st_fail_errno(errno, "publishing %s", dir);
    if (!rc)
        st_crash_point();
    if (!rc && (rc = st_fsync_dir(layers)))
        rc = st_fail_errno(rc, "%s", layers);
    free(dir);
    free(layers);
    return rc;
}

int store_receive_finish(store_receive *rx, const char *tag, store_commit_result *res)
{
    memset(res, 0, sizeof *res);
    res->id = rx->l->id;
    res->reflinked = rx->reflinked;
    res->bytes_added = rx->l->bytes_added;
    int rc = tag && !store_tag_valid(tag) ? st_bad_tag(tag) : first_missing(rx);
    if (!rc && !rx->existed && !(rc = make_durable(rx)))
        st_crash_point();
    if (!rc && !(rc = st_lock(rx->st, 1))) {
        if (rx->existed)
            res->existed = 1;
        else
            rc = publish(rx, res);
        st_crash_point();
        if (!rc && tag)
            rc = st_write_tag(rx->st, tag, &rx->l->id);
    }
    store_receive_abort(rx);
    return rc;
}

void store_receive_abort(store_receive *rx)
{
    if (!rx)
        return;
    st_tmpdir_drop(&rx->tmp); /* after a publish, the path is gone: nothing to remove */
    release_lock(rx->st);
    if (rx->state)
        for (size_t i = 0; i < rx->l->nfiles; i++)
            free(rx->state[i]);
    free(rx->state);
    store_layer_free(rx->l);
    free(rx->manifest);
    free(rx->files_dir);
    pthread_mutex_destroy(&rx->mu);
    free(rx);
}

int store_layer_manifest(store *st, const store_id *id, char **manifest, size_t *mlen,
                         char **info, size_t *ilen)
{
    char *dir = st_layer_dir(st, id);
    char *mp = st_printf("%s/manifest", dir ? dir : ""), *ip = st_printf("%s/info", dir ? dir : "");
    *manifest = *info = NULL;
    int rc = (!dir || !mp || !ip) ? -ENOMEM : 0;
    if (!rc && (rc = st_read_file(mp, 256u << 20, manifest, mlen)))
        rc = st_fail_errno(rc, "layer %s: manifest", id->hex);
    if (!rc && (rc = st_read_file(ip, INFO_MAX, info, ilen)))
        rc = st_fail_errno(rc, "layer %s: info", id->hex);
    if (!rc) {
        unsigned char d[32];
        char hex[65];
        st_sha256(*manifest, *mlen, d);
        st_hex(d, 32, hex);
        if (strcmp(hex, id->hex))
            rc = st_fail(EINVAL, "layer %s: manifest does not match its id", id->hex);
    }
    if (rc) {
        free(*manifest);
        free(*info);
        *manifest = *info = NULL;
    }
    free(dir);
    free(mp);
    free(ip);
    return rc;
}

/* ---------- scratch directories ---------- */

struct store_scratch {
    st_tmpdir t;
};

int store_scratch_make(store *st, const char *kind, store_scratch **out)
{
    store_scratch *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    int rc = st_tmpdir_make(st, kind, &s->t);
    if (rc) {
        st_tmpdir_drop(&s->t);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

const char *store_scratch_path(const store_scratch *s)
{
    return s->t.path;
}

void store_scratch_drop(store_scratch *s)
{
    if (!s)
        return;
    st_tmpdir_drop(&s->t);
    free(s);
}
