/*
 * Receiving a layer made elsewhere: the one seam every chunk source (an
 * archive, a registry) goes through. The manifest says what the layer is;
 * chunks the store already holds at the same place in a base layer are
 * cloned, the others arrive from the caller in any order and are checked
 * against their SHA-256 before they are written. The layer is built under
 * tmp/ and published with one rename, as commit does (build.c).
 */
#define _GNU_SOURCE
#include "../base/platform.h"
#include "../clone/clone.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
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
    unsigned char *based;  /* [file] 1: may hold data where it is to be zero (a clone, earlier work) */
    int *fds;              /* [file] open for writing chunks, -1 until the first one */
    uint64_t missing;
    st_seals *seals;     /* every data chunk's seal, written beside the manifest; NULL if existed */
    int keep;            /* resumable: leave tmp/ as it is unless published */
    int adopted;         /* took up an earlier receive's work */
    uint64_t resumed;    /* chunks found in it */
    uint64_t copied;     /* chunks taken from another place in the store */
    pthread_mutex_t mu;  /* state, missing and seals, for callers receiving in parallel */
    st_lock lock;        /* shared, begin to end: the bases must stay */
};

/*
 * The single place where the bytes of every chunk that arrives from outside
 * are in hand, already verified against the manifest's SHA-256 and about to
 * be written at file `file`, chunk `chunk`: its seal is made from exactly
 * these bytes. Chunks cloned from a base take the base's seals (see
 * seal_cloned), so the published layer is sealed in full.
 */
static int chunk_verified(store_receive *rx, size_t file, size_t chunk, const void *data,
                          size_t len)
{
    uint64_t seal = st_seal_of(data, len);
    pthread_mutex_lock(&rx->mu);
    int rc = st_seal_set(rx->seals, file, chunk, seal);
    pthread_mutex_unlock(&rx->mu);
    return rc;
}

const store_layer *store_receive_layer(const store_receive *rx)
{
    return rx->l;
}

uint64_t store_receive_resumed(const store_receive *rx)
{
    return rx->resumed;
}

uint64_t store_receive_copied(const store_receive *rx)
{
    return rx->copied;
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

/* Where a base's files, chunk lists and seals are: a published layer or a
 * receive. seals is NULL if the base has none to trust (made before seals,
 * or its seals file is damaged): its chunks are then read and checked. */
typedef struct {
    const store_layer *l;
    char *dir;
    const st_seals *seals;
    st_seals *owned_seals;
} base_src;

/* A published layer's seals, or none (NULL) if it has no usable ones. */
static int base_seals_load(store *st, const store_layer *l, base_src *b)
{
    char *dir = st_layer_dir(st, &l->id);
    int rc = dir ? st_seals_load(dir, l, &b->owned_seals) : -ENOMEM;
    free(dir);
    if (rc == -ENOENT || rc == -EINVAL)
        rc = 0; /* read the chunks instead; fsck reports damaged seals */
    b->seals = b->owned_seals;
    return rc;
}

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
        if (!b->dir)
            return -ENOMEM;
        if (!o->base_rx->existed) {
            b->seals = o->base_rx->seals; /* complete: every chunk of it has arrived */
            return 0;
        }
        return base_seals_load(st, b->l, b);
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
    b->dir = st_layer_bundle_dir(st, id);
    return b->dir ? base_seals_load(st, b->l, b) : -ENOMEM;
}

/* The base's data chunk c if it holds the same bytes as f's, else NULL. */
static const store_chunk *same_chunk(const store_file *f, const store_file *bf, uint64_t c)
{
    const store_chunk *a = store_file_chunk(f, c);
    const store_chunk *b = a && bf && c < bf->nchunks ? store_file_chunk(bf, c) : NULL;
    return b && !memcmp(a->digest, b->digest, 32) ? b : NULL;
}

/*
 * Chunk c of file i was cloned from the base: take the base's seal for it.
 * A base without seals is read here, its bytes checked against the
 * manifest's SHA-256 and sealed; if they do not match (the base is
 * damaged), the chunk is due from the caller instead. *buf is a chunk-sized
 * buffer, allocated on first need, which the caller frees.
 */
static int seal_cloned(store_receive *rx, size_t i, uint64_t c, const base_src *b,
                       const store_file *bf, int fd, unsigned char **buf)
{
    const store_file *f = &rx->l->files[i];
    uint64_t seal;
    if (!st_seal_get(b->seals, (size_t)(bf - b->l->files), c, &seal))
        return st_seal_set(rx->seals, i, c, seal);
    size_t len = (size_t)store_chunk_len(f, c);
    if (!*buf && !(*buf = malloc(f->chunk_size)))
        return st_fail(ENOMEM, "%s: out of memory", f->name);
    int rc = file_pread_all(fd, *buf, len, c * f->chunk_size);
    if (rc)
        return st_fail_errno(rc, "%s/%s", rx->files_dir, f->name);
    unsigned char d[32];
    st_sha256(*buf, len, d);
    if (memcmp(d, store_file_chunk(f, c)->digest, 32)) {
        rx->state[i][c] = CH_NEEDED;
        rx->missing++;
        return 0;
    }
    return st_seal_set(rx->seals, i, c, st_seal_of(*buf, len));
}

/* A hole in f at chunk c, over data in the base's clone: punch, or write zeros. */
static int clear_chunk(int fd, const store_file *f, uint64_t c)
{
    uint64_t off = c * f->chunk_size, len = store_chunk_len(f, c);
    int p = clone_punch_hole(fd, off, len);
    if (p == -EOPNOTSUPP) {
        static const char zeros[4096];
        p = 0;
        for (uint64_t at = 0; !p && at < len; at += sizeof zeros) {
            uint64_t n = len - at < sizeof zeros ? len - at : sizeof zeros;
            if (pwrite(fd, zeros, n, (off_t)(off + at)) != (ssize_t)n)
                p = -errno;
        }
    }
    return p;
}

/*
 * An earlier receive of this layer may have written chunk c of file i
 * before it was cut short: 1 if the bytes there are the chunk (checked
 * against the manifest's SHA-256, then sealed), 0 if not. A hole is
 * skipped without reading.
 */
static int received_before(store_receive *rx, size_t i, uint64_t c, int fd, unsigned char **buf)
{
    const store_file *f = &rx->l->files[i];
    uint64_t off = c * f->chunk_size, len = store_chunk_len(f, c);
    off_t data = lseek(fd, (off_t)off, SEEK_DATA);
    if (data < 0 || (uint64_t)data >= off + len)
        return 0;
    if (!*buf && !(*buf = malloc(f->chunk_size)))
        return -ENOMEM;
    int rc = file_pread_all(fd, *buf, (size_t)len, off);
    if (rc)
        return rc;
    unsigned char d[32];
    st_sha256(*buf, (size_t)len, d);
    if (memcmp(d, store_file_chunk(f, c)->digest, 32))
        return 0;
    rx->resumed++;
    rc = st_seal_set(rx->seals, i, c, st_seal_of(*buf, (size_t)len));
    return rc ? rc : 1;
}

/* Mark each chunk of file i: in place from the base (and sealed), due from
 * the caller, or a hole (cleared where the base had data). */
static int mark_chunks(store_receive *rx, size_t i, const base_src *b, const store_file *bf,
                       int fd, const char *path)
{
    const store_file *f = &rx->l->files[i];
    unsigned char *buf = NULL;
    int rc = 0;
    for (uint64_t c = 0; !rc && c < f->nchunks; c++) {
        if (same_chunk(f, bf, c)) {
            rx->state[i][c] = CH_HAVE;
            rc = seal_cloned(rx, i, c, b, bf, fd, &buf);
        } else if (store_file_chunk(f, c)) {
            int have = rx->adopted ? received_before(rx, i, c, fd, &buf) : 0;
            if (have < 0)
                rc = st_fail_errno(have, "%s", path);
            rx->state[i][c] = have > 0 ? CH_HAVE : CH_NEEDED;
            rx->missing += have == 0;
        } else if (bf && c < bf->nchunks && store_file_chunk(bf, c)) {
            int p = clear_chunk(fd, f, c);
            if (p)
                rc = st_fail_errno(p, "%s", path);
        }
    }
    free(buf);
    return rc;
}

/* The base's file cloned to `to`, all of it or nothing: a resumed receive
 * takes every chunk the layer shares with its base from a file it finds
 * there, unread, so a clone (or a sparse copy, where there are no reflinks)
 * cut short must never be found under that name. It is made under another
 * name outside the bundle, synced, and renamed into place. */
static int clone_whole(store_receive *rx, size_t i, const char *from, const char *to)
{
    char *tmp = st_printf("%s/clone-%zu", rx->tmp.path, i);
    if (!tmp)
        return -ENOMEM;
    unlink(tmp); /* an earlier receive's, cut short */
    clone_method how = CLONE_REFLINK;
    int rc = clone_path(from, tmp, 0644, &how);
    if (rc)
        rc = st_fail_errno(rc, "cloning %s into the store", from);
    else if (how != CLONE_REFLINK)
        rx->reflinked = 0;
    if (!rc)
        crash_named("receive-clone"); /* tests: a clone not yet in place */
    if (!rc && (rc = file_fsync_path(tmp)))
        rc = st_fail_errno(rc, "%s", tmp);
    if (!rc && rename(tmp, to) < 0)
        rc = st_fail_errno(errno, "%s", to);
    if (rc)
        unlink(tmp);
    free(tmp);
    return rc;
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
    /* an earlier receive's file was cloned from the same base: keep what it got */
    int reuse = rx->adopted && to && access(to, F_OK) == 0;
    if (reuse && chmod(to, 0644) < 0) /* made read-only by a finish that was cut short */
        rc = st_fail_errno(errno, "%s", to);
    if (!rc && bf && !reuse)
        rc = clone_whole(rx, i, from, to);
    if (!rc && (fd = open(to, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0)
        rc = st_fail_errno(errno, "%s", to);
    rx->based[i] = bf || reuse;
    if (!rc && ftruncate(fd, (off_t)f->size) < 0)
        rc = st_fail_errno(errno, "%s", to);
    if (!rc)
        rc = mark_chunks(rx, i, b, bf, fd, to);
    if (fd >= 0)
        close(fd);
    free(to);
    free(from);
    return rc;
}

/* The directory the layer is built in: a fresh one, or for a resumable
 * receive tmp/receive-<id>, taken up again if an earlier receive left it
 * (and no other process holds it; then a fresh one). */
static int work_dir(store_receive *rx, const store_receive_opts *o)
{
    int rc = -EBUSY, existed = 0;
    if (o && o->resume) {
        char name[80];
        snprintf(name, sizeof name, ST_RECEIVE "%s", rx->l->id.hex);
        rc = st_tmpdir_named(rx->st, name, &rx->tmp, &existed);
        if (rc == -EBUSY)
            st_tmpdir_keep(&rx->tmp); /* not ours: leave it */
        else if (!rc)
            rx->keep = 1;
    }
    if (rc == -EBUSY)
        rc = st_tmpdir_make(rx->st, "receive", &rx->tmp);
    if (rc)
        return rc;
    if (!(rx->files_dir = st_printf("%s/bundle", rx->tmp.path)))
        return -ENOMEM;
    rx->adopted = existed && access(rx->files_dir, F_OK) == 0;
    if (!rx->adopted && mkdir(rx->files_dir, 0755) < 0 && errno != EEXIST)
        return st_fail_errno(errno, "%s", rx->files_dir);
    return 0;
}

/* An earlier receive's files were cloned from its base: take them up only
 * if the base is the same layer now; else start again. */
static int base_agrees(store_receive *rx, const base_src *b)
{
    if (!rx->keep)
        return 0;
    char *path = st_printf("%s/base", rx->tmp.path), *was = NULL;
    const char *now = b->l ? b->l->id.hex : "-";
    size_t n = 0;
    if (!path)
        return -ENOMEM;
    if (rx->adopted && (file_read_all(path, 100, &was, &n) || n != strlen(now) ||
                        memcmp(was, now, n))) {
        rx->adopted = 0;
        st_rm_rf(rx->files_dir);
        if (mkdir(rx->files_dir, 0755) < 0) {
            free(was);
            free(path);
            return st_fail_errno(errno, "%s", rx->files_dir);
        }
    }
    int rc = rx->adopted ? 0 : atomic_file_write_all(path, now, strlen(now), 0644, 0);
    free(was);
    free(path);
    return rc ? st_fail_errno(rc, "%s/base", rx->tmp.path) : 0;
}

static int take_local(store_receive *rx, const base_src *b);

static int receive_setup(store_receive *rx, const store_receive_opts *o)
{
    store *st = rx->st;
    const store_layer *l = rx->l;
    if (l->has_parent && !(o && o->parent_follows) && !st_layer_exists(st, &l->parent))
        return st_fail(ENOENT, "layer %.12s needs layer %s (its parent): import or pull it first",
                       l->id.hex, l->parent.hex);
    if (!(rx->state = calloc(l->nfiles ? l->nfiles : 1, sizeof *rx->state)) ||
        !(rx->based = calloc(l->nfiles ? l->nfiles : 1, 1)) ||
        !(rx->fds = malloc((l->nfiles ? l->nfiles : 1) * sizeof *rx->fds)))
        return -ENOMEM;
    for (size_t i = 0; i < l->nfiles; i++)
        rx->fds[i] = -1;
    for (size_t i = 0; i < l->nfiles; i++)
        if (!(rx->state[i] = calloc(l->files[i].nchunks ? l->files[i].nchunks : 1, 1)))
            return -ENOMEM;
    if ((rx->existed = st_layer_exists(st, &l->id))) {
        rx->files_dir = st_layer_bundle_dir(st, &l->id);
        return rx->files_dir ? 0 : -ENOMEM;
    }
    if (!(rx->seals = st_seals_new(l->nfiles)))
        return -ENOMEM;
    int rc = work_dir(rx, o);
    if (rc)
        return rc;
    store_layer *owned = NULL;
    base_src b;
    rc = base_open(rx, o, &owned, &b);
    if (!rc)
        rc = base_agrees(rx, &b);
    for (size_t i = 0; !rc && i < l->nfiles; i++)
        rc = materialize_file(rx, i, &b);
    if (!rc)
        rc = take_local(rx, &b);
    store_layer_free(owned);
    st_seals_free(b.owned_seals);
    free(b.dir);
    return rc;
}

/* Parse the manifest strictly and the info into l; l->id is the manifest's
 * SHA-256 either way, so a refusal can name the layer. */
static int parse_layer(store_layer *l, const char *manifest, size_t mlen, const char *info,
                       size_t ilen)
{
    unsigned char d[32];
    st_sha256(manifest, mlen, d);
    hex_encode(d, 32, l->id.hex);
    char hex[STORE_ID_HEX + 1];
    memcpy(hex, l->id.hex, sizeof hex); /* a failed parse clears l */
    int rc = mlen > ST_MANIFEST_MAX
                 ? st_fail(EFBIG, "layer %.12s: manifest of %zu bytes; at most %zu", hex, mlen,
                           (size_t)ST_MANIFEST_MAX)
                 : st_manifest_parse(manifest, mlen, l);
    if (rc == -EINVAL) {
        char why[512]; /* the parser's message names the line and the rule */
        snprintf(why, sizeof why, "%s", store_error());
        rc = st_fail(EINVAL, "layer %.12s: %s", hex, why);
    }
    if (!rc && st_info_parse(info, ilen, l))
        rc = st_fail(EINVAL, "layer %.12s: layer info is malformed", hex);
    memcpy(l->id.hex, hex, sizeof hex);
    return rc;
}

int store_manifest_parse(const char *manifest, size_t mlen, const char *info, size_t ilen,
                         store_layer **out)
{
    *out = NULL;
    if (ilen > INFO_MAX)
        return st_fail(EFBIG, "layer info: %zu bytes; at most %u", ilen, INFO_MAX);
    store_layer *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    int rc = parse_layer(l, manifest, mlen, info, ilen);
    if (rc) {
        store_layer_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

char *st_receive_path(const store *st, const char *hex, const char *tail)
{
    return st_printf("%s/tmp/" ST_RECEIVE "%s%s", st->home, hex, tail);
}

/* 1 if another process holds tmp/receive-<id> (its lock), 0 if not. A
 * shared probe, let go at once: it never takes the receive from anyone. */
static int receive_busy(store *st, const store_id *id)
{
    char *lock = st_receive_path(st, id->hex, ".lock");
    int fd = lock ? open(lock, O_RDONLY | O_CLOEXEC) : -1;
    free(lock);
    if (fd < 0)
        return 0; /* none: nobody receives it */
    int busy = flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
    close(fd); /* lets go of the probe's lock too */
    return busy;
}

/* store_receive_opts.busy_wait: wait, holding no store lock, until no
 * other process holds the layer's receive or the layer is in the store.
 * A handle that holds the store lock (an open receive) never waits: the
 * other receive needs the lock exclusive to publish. */
static int wait_other_receive(store *st, const store_id *id, const store_receive_opts *o)
{
    if (!o || !o->resume || !o->busy_wait || st->lock_shared || st->lock_exclusive)
        return 0;
    for (unsigned round = 0; receive_busy(st, id) && !st_layer_exists(st, id); round++) {
        int rc = o->busy_wait(o->busy_ctx, id, round);
        if (rc)
            return rc;
    }
    return 0;
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
    int rc = parse_layer(rx->l, manifest, mlen, info, ilen);
    if (!rc)
        rc = wait_other_receive(st, &rx->l->id, o);
    if (!rc && !(rc = st_lock_take(st, ST_LOCK_SHARED, &rx->lock)))
        rc = receive_setup(rx, o);
    if (rc) {
        store_receive_abort(rx);
        return rc;
    }
    *out = rx;
    return 0;
}

#define ZERO_BLOCK 4096u

static const char zero_block[ZERO_BLOCK];

static int block_is_zero(const char *p)
{
    return !memcmp(p, zero_block, ZERO_BLOCK);
}

/* Bytes [off, off + len) of fd are to read as zeros: punch them if the file
 * may hold data there (a clone of a base, earlier work), else leave the hole;
 * where punching is impossible, write the zeros. */
static int zero_range(int fd, uint64_t off, uint64_t len, int based)
{
    if (!based)
        return 0;
    off_t data = lseek(fd, (off_t)off, SEEK_DATA);
    if ((data < 0 && errno == ENXIO) || (data >= 0 && (uint64_t)data >= off + len))
        return 0; /* a hole there already */
    int rc = clone_punch_hole(fd, off, len);
    if (rc != -EOPNOTSUPP)
        return rc;
    rc = 0;
    for (uint64_t at = 0; !rc && at < len; at += ZERO_BLOCK)
        rc = file_pwrite_all(fd, zero_block, len - at < ZERO_BLOCK ? (size_t)(len - at) : ZERO_BLOCK,
                       off + at);
    return rc;
}

/*
 * A verified chunk at off: its non-zero 4 KiB blocks written, its all-zero
 * ones left (or made) holes, so a received file is as sparse as the one it
 * was made from. Writeback starts at once (Linux), so a clone of this file
 * (XFS flushes before it clones) and the fsync before publishing find
 * little left to write.
 */
static int write_sparse(int fd, const char *data, size_t len, uint64_t off, int based)
{
    int rc = 0;
    for (size_t at = 0; !rc && at < len;) {
        size_t n = len - at < ZERO_BLOCK ? len - at : ZERO_BLOCK;
        int zero = n == ZERO_BLOCK && block_is_zero(data + at);
        size_t run = n;
        while (at + run < len && len - at - run >= ZERO_BLOCK &&
               block_is_zero(data + at + run) == zero)
            run += ZERO_BLOCK;
        if (!zero && at + run < len && len - at - run < ZERO_BLOCK)
            run = len - at; /* the short tail goes with the data before it */
        rc = zero ? zero_range(fd, off + at, run, based) : file_pwrite_all(fd, data + at, run, off + at);
        at += run;
    }
    if (!rc)
        os_write_back_start(fd, off, len);
    return rc;
}

static int put_verified(store_receive *rx, size_t file, size_t chunk, const void *data,
                        size_t len);

int store_receive_chunk(store_receive *rx, size_t file, size_t chunk, const void *data,
                        size_t len)
{
    const store_layer *l = rx->l;
    if (file >= l->nfiles || chunk >= l->files[file].nchunks)
        return st_fail(EINVAL, "layer %.12s: no chunk %zu of file %zu", l->id.hex, chunk, file);
    const store_file *f = &l->files[file];
    const store_chunk *want = store_file_chunk(f, chunk);
    if (!want)
        return st_fail(EINVAL, "%s: chunk %zu is a hole in the manifest, yet data came for it",
                       f->name, chunk);
    if (len != store_chunk_len(f, chunk))
        return st_fail(EINVAL, "%s: chunk %zu is %zu bytes; the manifest says %" PRIu64,
                       f->name, chunk, len, store_chunk_len(f, chunk));
    unsigned char d[32];
    st_sha256(data, len, d);
    if (memcmp(d, want->digest, 32))
        return st_fail(EINVAL, "%s: chunk %zu (offset %" PRIu64 ") does not match the manifest",
                       f->name, chunk, (uint64_t)chunk * f->chunk_size);
    return put_verified(rx, file, chunk, data, len);
}

/* file's descriptor for writing chunks, opened once for all of them */
static int chunk_fd(store_receive *rx, size_t file, int *fd)
{
    int rc = 0;
    pthread_mutex_lock(&rx->mu);
    if (rx->fds[file] < 0) {
        char *path = st_printf("%s/%s", rx->files_dir, rx->l->files[file].name);
        rx->fds[file] = path ? open(path, O_WRONLY | O_CLOEXEC) : -1;
        if (rx->fds[file] < 0)
            rc = path ? st_fail_errno(errno, "%s", path) : -ENOMEM;
        free(path);
    }
    *fd = rx->fds[file];
    pthread_mutex_unlock(&rx->mu);
    return rc;
}

/* Bytes already checked against chunk `chunk` of file `file`'s id: sealed,
 * written in place (if still due) and marked as arrived. */
static int put_verified(store_receive *rx, size_t file, size_t chunk, const void *data, size_t len)
{
    const store_file *f = &rx->l->files[file];
    pthread_mutex_lock(&rx->mu);
    int due = rx->state[file][chunk] == CH_NEEDED;
    pthread_mutex_unlock(&rx->mu);
    if (!due)
        return 0; /* already in place: verified, dropped */
    int rc = chunk_verified(rx, file, chunk, data, len);
    if (rc)
        return rc;
    int fd;
    if ((rc = chunk_fd(rx, file, &fd)))
        return rc;
    if ((rc = write_sparse(fd, data, len, (uint64_t)chunk * f->chunk_size, rx->based[file])))
        return st_fail_errno(rc, "%s/%s", rx->files_dir, f->name);
    pthread_mutex_lock(&rx->mu);
    if (rx->state[file][chunk] == CH_NEEDED) {
        rx->state[file][chunk] = CH_HAVE;
        rx->missing--;
    }
    pthread_mutex_unlock(&rx->mu);
    return 0;
}

/* ---------- chunks the store holds at another place ----------
 *
 * A chunk still due may be in the store already under the same id at
 * another place: elsewhere in the base (a block moved, or the same bytes
 * twice), in an older ancestor, or, for the next layer of a chain, in the
 * layer received just before. It is read from there, checked against its id
 * (a damaged store file is never copied in: the chunk stays due and comes
 * from the caller), and written as an arriving chunk is. Memory is one
 * entry per due chunk, whatever the size of the layers searched. */

#define LOCAL_DEPTH 16 /* ancestors of the base searched, besides the base */

typedef struct {
    const unsigned char *digest; /* the due chunk's id */
    uint64_t chunk;
    uint32_t file;
    uint32_t src;        /* where a copy is: sources[src]'s file from, chunk from_chunk */
    const store_file *from;
    uint64_t from_chunk;
} local_want;

typedef struct {
    const store_layer *l;
    char *dir;
    store_layer *owned;
} local_src;

static int by_want_id(const void *a, const void *b)
{
    return memcmp(((const local_want *)a)->digest, ((const local_want *)b)->digest, 32);
}

/* every chunk still due, sorted by id */
static local_want *due_by_id(const store_receive *rx, size_t *n)
{
    local_want *w = calloc(rx->missing ? rx->missing : 1, sizeof *w);
    *n = 0;
    for (size_t i = 0; w && i < rx->l->nfiles; i++) {
        const store_file *f = &rx->l->files[i];
        for (size_t d = 0; d < f->ndata && *n < rx->missing; d++)
            if (rx->state[i][f->data[d].index] == CH_NEEDED)
                w[(*n)++] = (local_want){.digest = f->data[d].digest, .chunk = f->data[d].index,
                                         .file = (uint32_t)i};
    }
    if (w)
        qsort(w, *n, sizeof *w, by_want_id);
    return w;
}

/* the first due chunk with this id, or NULL */
static local_want *first_due(local_want *w, size_t n, const unsigned char *digest)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (memcmp(w[mid].digest, digest, 32) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && !memcmp(w[lo].digest, digest, 32) ? &w[lo] : NULL;
}

/* note where source s holds due ids not yet placed; returns how many it placed */
static size_t find_in(local_want *w, size_t n, const local_src *src, uint32_t s)
{
    size_t placed = 0;
    for (size_t i = 0; i < src->l->nfiles; i++) {
        const store_file *sf = &src->l->files[i];
        for (size_t d = 0; d < sf->ndata; d++) {
            local_want *k = first_due(w, n, sf->data[d].digest);
            for (; k && k < w + n && !memcmp(k->digest, sf->data[d].digest, 32); k++)
                if (!k->from) {
                    k->src = s, k->from = sf, k->from_chunk = sf->data[d].index;
                    placed++;
                }
        }
    }
    return placed;
}

/* chunk `c` of source file f read into buf and checked against digest: 1 if it matches */
static int read_checked(const local_src *src, const store_file *f, uint64_t c,
                        const unsigned char *digest, unsigned char *buf, size_t len)
{
    char *path = st_printf("%s/%s", src->dir, f->name);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    free(path);
    if (fd < 0)
        return 0; /* gone or unreadable: the chunk comes from the caller */
    int ok = store_chunk_len(f, c) == len && !file_pread_all(fd, buf, len, c * f->chunk_size);
    close(fd);
    unsigned char d[32];
    if (ok)
        st_sha256(buf, len, d);
    return ok && !memcmp(d, digest, 32);
}

/* copy each placed id once checked, to every place that is due for it */
static int copy_placed(store_receive *rx, local_want *w, size_t n, const local_src *srcs)
{
    unsigned char *buf = NULL;
    size_t cap = 0;
    int rc = 0;
    for (size_t g = 0; !rc && g < n;) {
        size_t e = g + 1;
        while (e < n && !memcmp(w[e].digest, w[g].digest, 32))
            e++;
        const store_file *f = &rx->l->files[w[g].file];
        size_t len = (size_t)store_chunk_len(f, w[g].chunk);
        if (w[g].from && len > cap) {
            free(buf);
            if (!(buf = malloc(len)))
                return st_fail(ENOMEM, "%s: out of memory", f->name);
            cap = len;
        }
        if (w[g].from &&
            read_checked(&srcs[w[g].src], w[g].from, w[g].from_chunk, w[g].digest, buf, len))
            for (size_t k = g; !rc && k < e; k++)
                if (!(rc = put_verified(rx, w[k].file, w[k].chunk, buf, len)))
                    rx->copied++;
        g = e;
    }
    free(buf);
    return rc;
}

/* the base and its published ancestors, nearest first, until every due id is placed */
static int take_local(store_receive *rx, const base_src *b)
{
    size_t n = 0, left;
    if (!rx->missing || !b->l)
        return 0;
    local_want *w = due_by_id(rx, &n);
    local_src srcs[LOCAL_DEPTH + 1] = {{.l = b->l, .dir = b->dir}};
    uint32_t nsrc = 1;
    int rc = w ? 0 : -ENOMEM;
    left = n;
    for (uint32_t s = 0; !rc && left && s < nsrc; s++) {
        left -= find_in(w, n, &srcs[s], s);
        const store_layer *l = srcs[s].l;
        if (!left || nsrc > LOCAL_DEPTH || !l->has_parent || !st_layer_exists(rx->st, &l->parent))
            continue;
        local_src *next = &srcs[nsrc];
        if ((rc = store_layer_load(rx->st, &l->parent, &next->owned))) {
            rc = rc == -ENOMEM ? rc : 0; /* an unreadable ancestor: search no further */
            break;
        }
        next->l = next->owned;
        if (!(next->dir = st_layer_bundle_dir(rx->st, &l->parent)))
            rc = -ENOMEM;
        nsrc++;
    }
    if (!rc && left < n)
        rc = copy_placed(rx, w, n, srcs);
    for (uint32_t s = 1; s < nsrc; s++) {
        store_layer_free(srcs[s].owned);
        free(srcs[s].dir);
    }
    free(w);
    return rc;
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
/* beside manifest and info: this layer came from outside (store_layer_received) */
#define RECEIVED_MARK "received"

int store_layer_received(store *st, const store_id *id)
{
    char *dir = st_layer_dir(st, id);
    char *p = dir ? st_printf("%s/" RECEIVED_MARK, dir) : NULL;
    int yes = p && access(p, F_OK) == 0;
    free(p);
    free(dir);
    return yes;
}

static int make_durable(store_receive *rx)
{
    int rc = 0;
    if (rx->keep) { /* the resume note is no part of the layer */
        char *base = st_printf("%s/base", rx->tmp.path);
        if (!base)
            return -ENOMEM;
        unlink(base);
        free(base);
    }
    for (size_t i = 0; !rc && i < rx->l->nfiles; i++) {
        char *p = st_printf("%s/%s", rx->files_dir, rx->l->files[i].name);
        int fd = p ? open(p, O_RDONLY | O_CLOEXEC) : -1;
        if (fd < 0 || fchmod(fd, 0444) < 0 || fsync(fd) < 0)
            rc = p ? st_fail_errno(errno, "%s", p) : -ENOMEM;
        if (fd >= 0)
            close(fd);
        free(p);
    }
    sbuf info = {0};
    char *mpath = st_printf("%s/manifest", rx->tmp.path);
    char *ipath = st_printf("%s/info", rx->tmp.path);
    if (!rc && (!mpath || !ipath || st_info_format(rx->l, &info)))
        rc = -ENOMEM;
    char *rpath = st_printf("%s/" RECEIVED_MARK, rx->tmp.path);
    if (!rc && !rpath)
        rc = -ENOMEM;
    if (!rc && ((rc = atomic_file_write_all(mpath, rx->manifest, rx->mlen, 0444, 0)) ||
                (rc = atomic_file_write_all(ipath, info.data, info.len, 0444, 0)) ||
                (rc = atomic_file_write_all(rpath, "received\n", 9, 0444, 0))))
        rc = st_fail_errno(rc, "%s", rx->tmp.path);
    free(rpath);
    if (!rc) /* fsynced, as build_layer does: fsck --quick reads against them */
        rc = st_seals_write(rx->seals, rx->l, &rx->l->id, rx->tmp.path);
    if (!rc && ((rc = file_fsync_path(rx->files_dir)) || (rc = file_fsync_path(rx->tmp.path))))
        rc = st_fail_errno(rc, "%s", rx->tmp.path);
    free(info.data);
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
        crash_point();
    if (!rc && (rc = file_fsync_path(layers)))
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
        crash_point();
    /* exclusive to publish; the receive's own shared hold ends with it,
     * while other receives' holds stay (then the lock is shared again) */
    st_lock lock = ST_LOCK_INIT;
    if (!rc && !(rc = st_lock_take(rx->st, ST_LOCK_EXCLUSIVE, &lock))) {
        if (rx->existed)
            res->existed = 1;
        else
            rc = publish(rx, res);
        if (!rc)
            rx->keep = 0; /* published: nothing left to take up */
        crash_point();
        if (!rc && tag)
            rc = st_write_tag(rx->st, tag, &rx->l->id);
    }
    store_receive_abort(rx);
    st_lock_release(&lock);
    return rc;
}

void store_receive_abort(store_receive *rx)
{
    if (!rx)
        return;
    if (rx->keep)
        st_tmpdir_keep(&rx->tmp); /* for the next resumable receive of this layer */
    else
        st_tmpdir_drop(&rx->tmp); /* after a publish, the path is gone: nothing to remove */
    st_lock_release(&rx->lock);
    if (rx->state)
        for (size_t i = 0; i < rx->l->nfiles; i++)
            free(rx->state[i]);
    free(rx->state);
    free(rx->based);
    for (size_t i = 0; rx->fds && i < rx->l->nfiles; i++)
        if (rx->fds[i] >= 0)
            close(rx->fds[i]);
    free(rx->fds);
    store_layer_free(rx->l);
    st_seals_free(rx->seals);
    free(rx->manifest);
    free(rx->files_dir);
    pthread_mutex_destroy(&rx->mu);
    free(rx);
}

int store_receive_peek(const store *st, const store_id *id, const char *name, uint64_t offset,
                       const unsigned char digest[32], void *buf, size_t len)
{
    if (!st_id_valid(id->hex) || !name[0] || name[0] == '/' || strstr(name, ".."))
        return -ENOENT; /* names come from a parsed manifest: never a path trick */
    char *tail = st_printf("/bundle/%s", name);
    char *path = tail ? st_receive_path(st, id->hex, tail) : NULL;
    free(tail);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    free(path);
    if (fd < 0) { /* published meanwhile: the same files, renamed into layers/ */
        char *dir = st_layer_bundle_dir(st, id);
        path = dir ? st_printf("%s/%s", dir, name) : NULL;
        fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        free(dir);
        free(path);
    }
    if (fd < 0)
        return -ENOENT;
    /* a hole: not written yet, nothing to read and hash */
    off_t data = lseek(fd, (off_t)offset, SEEK_DATA);
    int rc = data < 0 || (uint64_t)data >= offset + len ? -ENOENT : file_pread_all(fd, buf, len, offset);
    close(fd);
    unsigned char d[32];
    if (!rc)
        st_sha256(buf, len, d);
    return !rc && !memcmp(d, digest, 32) ? 0 : -ENOENT;
}

size_t store_manifest_max(void)
{
    return ST_MANIFEST_MAX;
}

int store_layer_manifest(store *st, const store_id *id, char **manifest, size_t *mlen,
                         char **info, size_t *ilen)
{
    char *dir = st_layer_dir(st, id);
    char *mp = st_printf("%s/manifest", dir ? dir : ""), *ip = st_printf("%s/info", dir ? dir : "");
    *manifest = *info = NULL;
    int rc = (!dir || !mp || !ip) ? -ENOMEM : 0;
    if (!rc && (rc = file_read_all(mp, ST_MANIFEST_MAX, manifest, mlen)))
        rc = st_fail_errno(rc, "layer %s: manifest", id->hex);
    if (!rc && (rc = file_read_all(ip, INFO_MAX, info, ilen)))
        rc = st_fail_errno(rc, "layer %s: info", id->hex);
    if (!rc) {
        unsigned char d[32];
        char hex[65];
        st_sha256(*manifest, *mlen, d);
        hex_encode(d, 32, hex);
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

int store_scratch_resumable(store *st, const char *key, int *existed, store_scratch **out)
{
    if (!st_id_valid(key))
        return st_fail(EINVAL, "scratch key '%s' is not 64 hex digits", key);
    store_scratch *s = calloc(1, sizeof *s);
    char *name = st_printf(ST_RECEIVE "%s", key);
    int rc = !s || !name ? -ENOMEM : st_tmpdir_named(st, name, &s->t, existed);
    free(name);
    if (rc == -EBUSY)
        rc = st_fail(EBUSY, "%s/tmp/" ST_RECEIVE "%s: another process is working there", st->home, key);
    if (rc) {
        if (s)
            st_tmpdir_keep(&s->t); /* not ours, or never made: leave it */
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void store_scratch_keep(store_scratch *s)
{
    if (!s)
        return;
    st_tmpdir_keep(&s->t);
    free(s);
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

/* ---------- pins ---------- */

struct store_pin {
    st_tmpdir t;
};

int store_pin_layer(store *st, const store_id *id, store_pin **out)
{
    store_pin *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    st_lock lock; /* shared: gc is not halfway through */
    int rc = st_lock_take(st, ST_LOCK_SHARED, &lock);
    if (!rc && !st_layer_exists(st, id))
        rc = st_fail(ENOENT, "layer %s: not in the store", id->hex);
    if (!rc)
        rc = st_tmpdir_make(st, "pin", &p->t);
    char *path = rc ? NULL : st_printf("%s/layer", p->t.path);
    if (!rc && !path)
        rc = -ENOMEM;
    if (!rc && (rc = atomic_file_write_all(path, id->hex, STORE_ID_HEX, 0644, 0)))
        rc = st_fail_errno(rc, "%s", path);
    free(path);
    st_lock_release(&lock);
    if (rc) {
        st_tmpdir_drop(&p->t);
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

void store_unpin(store_pin *p)
{
    if (!p)
        return;
    st_tmpdir_drop(&p->t);
    free(p);
}
