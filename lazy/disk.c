/* lazy: the instance's Disk.img and the NBD backend over it (docs/lazy.md,
 * "Reads and writes"). One byte per chunk says what the instance file holds
 * there (LZ_*); a chunk's lock (a stripe) is held while it changes state,
 * so two reads of an absent chunk fetch it once, and a write into an absent
 * chunk first puts the layer's checked bytes around it. */
#define _GNU_SOURCE
#include "internal.h"

#include "../base/file.h"
#include "../clone/clone.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The gate between I/O and the handover's file swap: any number of
 * requests at once, or the swap alone. A swap waiting keeps new requests
 * out, so a guest that is never idle can't starve it (a reader-preferring
 * rwlock could). */
static void io_enter(lazy_disk *d)
{
    pthread_mutex_lock(&d->gate_mu);
    while (d->swapping)
        pthread_cond_wait(&d->gate_cv, &d->gate_mu);
    d->in_io++;
    pthread_mutex_unlock(&d->gate_mu);
}

static void io_leave(lazy_disk *d)
{
    pthread_mutex_lock(&d->gate_mu);
    if (!--d->in_io)
        pthread_cond_broadcast(&d->gate_cv);
    pthread_mutex_unlock(&d->gate_mu);
}

static void swap_begin(lazy_disk *d)
{
    pthread_mutex_lock(&d->gate_mu);
    d->swapping = 1;
    while (d->in_io)
        pthread_cond_wait(&d->gate_cv, &d->gate_mu);
    pthread_mutex_unlock(&d->gate_mu);
}

static void swap_end(lazy_disk *d)
{
    pthread_mutex_lock(&d->gate_mu);
    d->swapping = 0;
    pthread_cond_broadcast(&d->gate_cv);
    pthread_mutex_unlock(&d->gate_mu);
}

static pthread_mutex_t *stripe(lazy_disk *d, uint64_t c)
{
    return &d->stripes[c % LZ_STRIPES];
}

/* state of chunk c, kept in the state file too (durable only when asked) */
static int state_put(lazy_disk *d, uint64_t c, unsigned char s)
{
    d->state[c] = s;
    return file_pwrite_all(d->state_fd, &s, 1, c);
}

/* ---- opening: the file, the states, and the states checked again ---- */

/* A chunk the state file says holds the layer's bytes is read and checked
 * again (its bytes and its state byte were written without a sync): if it
 * does not match, it is absent again. */
static int recheck(lazy_disk *d, unsigned char *buf)
{
    const store_file *f = d->df;
    for (size_t k = 0; k < f->ndata; k++) {
        uint64_t c = f->data[k].index;
        if (d->state[c] != LZ_LAYER)
            continue;
        size_t len = (size_t)store_chunk_len(f, c);
        unsigned char sum[32];
        int rc = file_pread_zerofill(d->fd, buf, len, c * f->chunk_size);
        if (rc)
            return lazy_fail_errno(-rc, "%s", d->disk_path);
        SHA256(buf, len, sum);
        if (memcmp(sum, f->data[k].digest, 32) && (rc = state_put(d, c, LZ_ABSENT)))
            return lazy_fail_errno(-rc, "%s/chunks", d->state_dir);
    }
    return 0;
}

static int states_load(lazy_disk *d)
{
    const store_file *f = d->df;
    char path[4096];
    snprintf(path, sizeof path, "%s/chunks", d->state_dir);
    d->state_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (d->state_fd < 0)
        return lazy_fail_errno(errno, "%s", path);
    if (!(d->state = calloc(f->nchunks ? f->nchunks : 1, 1)))
        return lazy_fail(ENOMEM, "out of memory");
    int rc = file_pread_zerofill(d->state_fd, d->state, f->nchunks, 0);
    if (rc)
        return lazy_fail_errno(-rc, "%s", path);
    for (size_t c = 0; c < f->nchunks; c++) {
        if (d->state[c] > LZ_GUEST || (d->state[c] == LZ_LAYER && !store_file_chunk(f, c)))
            d->state[c] = LZ_ABSENT; /* damaged, or no layer bytes to hold: start again */
        d->chunks_here += d->state[c] != LZ_ABSENT && store_file_chunk(f, c);
    }
    if (ftruncate(d->state_fd, (off_t)f->nchunks) < 0)
        return lazy_fail_errno(errno, "%s", path);
    return 0;
}

int lz_disk_open(lazy_disk *d)
{
    const store_file *f = d->df;
    d->fd = open(d->disk_path, O_RDWR | O_CREAT | O_CLOEXEC, f->mode ? f->mode : 0644);
    struct stat s;
    if (d->fd < 0 || fstat(d->fd, &s) < 0)
        return lazy_fail_errno(errno, "%s", d->disk_path);
    if ((uint64_t)s.st_size != f->size && ftruncate(d->fd, (off_t)f->size) < 0)
        return lazy_fail_errno(errno, "%s", d->disk_path);
    int rc = states_load(d);
    unsigned char *buf = rc ? NULL : malloc(f->chunk_size);
    if (!rc && !buf)
        rc = lazy_fail(ENOMEM, "out of memory");
    if (!rc)
        rc = recheck(d, buf);
    free(buf);
    if (!rc)
        rc = lz_places(d->top, (int)(f - d->top->files), &d->disk_ids, &d->ndisk_ids);
    return rc;
}

/* ---- a chunk made present ---- */

/* chunk c made to read as zeros in the file (a zero chunk the guest writes
 * into part of: what a crash left there must not show) */
static int clear_chunk(lazy_disk *d, uint64_t c)
{
    uint64_t off = c * d->df->chunk_size, len = store_chunk_len(d->df, c);
    int rc = clone_punch_hole(d->fd, off, len);
    if (rc != -EOPNOTSUPP)
        return rc;
    static const char zeros[65536];
    for (uint64_t at = 0; at < len && !rc; at += sizeof zeros)
        rc = file_pwrite_all(d->fd, zeros, len - at < sizeof zeros ? (size_t)(len - at) : sizeof zeros,
                        off + at);
    return rc;
}

/* in the instance file: read from there */
static int in_file(const lazy_disk *d, uint64_t c)
{
    return d->state[c] == LZ_LAYER || d->state[c] == LZ_GUEST;
}

/* data chunk c not in the file (stripe held): its checked bytes into buf and the file */
static int fetch_chunk(lazy_disk *d, uint64_t c, unsigned char *buf)
{
    const store_file *f = d->df;
    const store_chunk *k = store_file_chunk(f, c);
    size_t len = (size_t)store_chunk_len(f, c);
    char what[128];
    snprintf(what, sizeof what, "%s chunk %" PRIu64 " (offset %" PRIu64 ")", f->name, c,
             c * f->chunk_size);
    int rc = lz_chunk_get(d, k->digest, (uint32_t)len, buf, what);
    if (rc)
        return rc;
    int counted = d->state[c] == LZ_RECEIVED;
    if ((rc = file_pwrite_all(d->fd, buf, len, c * f->chunk_size)) || (rc = state_put(d, c, LZ_LAYER)))
        return lazy_fail_errno(-rc, "%s", d->disk_path);
    if (!counted)
        lz_count(d, &d->chunks_here, 1);
    return 0;
}

/* ---- the backend ---- */

typedef struct {
    uint64_t c, off, len; /* chunk, offset in it, bytes */
} piece;

/* the pieces of [off, off + len) chunk by chunk: call fn on each */
#define EACH_PIECE(d, off, len, p)                                                                \
    for (piece p = {(off) / (d)->df->chunk_size, (off) % (d)->df->chunk_size, 0};                 \
         p.c * (d)->df->chunk_size + p.off < (off) + (len) &&                                     \
         ((p.len = (d)->df->chunk_size - p.off) > (off) + (len) - p.c * (d)->df->chunk_size - p.off \
              ? (p.len = (off) + (len) - p.c * (d)->df->chunk_size - p.off)                       \
              : 0,                                                                                \
          1);                                                                                     \
         p.c++, p.off = 0)

static int read_piece(lazy_disk *d, const piece *p, char *out, unsigned char **buf)
{
    const store_file *f = d->df;
    uint64_t at = p->c * f->chunk_size + p->off;
    pthread_mutex_lock(stripe(d, p->c));
    int rc = 0;
    if (in_file(d, p->c)) {
        rc = file_pread_zerofill(d->fd, out, p->len, at);
    } else if (!store_file_chunk(f, p->c)) {
        memset(out, 0, p->len);
    } else {
        if (!*buf && !(*buf = malloc(f->chunk_size)))
            rc = -ENOMEM;
        if (!rc && !(rc = fetch_chunk(d, p->c, *buf)))
            memcpy(out, *buf + p->off, p->len);
    }
    pthread_mutex_unlock(stripe(d, p->c));
    return rc;
}

static int lz_read(void *ctx, void *buf, uint64_t off, uint32_t len)
{
    lazy_disk *d = ctx;
    unsigned char *chunk = NULL;
    int rc = 0;
    lz_record_read(d, off, len); /* the boot profile (profile.c) */
    io_enter(d);
    if (d->handed_over)
        rc = file_pread_zerofill(d->fd, buf, len, off);
    else
        EACH_PIECE(d, off, len, p) {
            if ((rc = read_piece(d, &p, (char *)buf + (p.c * d->df->chunk_size + p.off - off),
                                 &chunk)))
                break;
        }
    io_leave(d);
    free(chunk);
    lz_guest_io(d, len);
    return rc;
}

/* Write one piece (stripe held). A chunk not in the file that the piece
 * does not cover whole gets the layer's bytes first (fetched and checked; a
 * zero chunk cleared), so nothing unchecked is ever around the guest's bytes. *became:
 * the chunk turned LZ_GUEST here (its state byte is written after the
 * data is durable). */
static int write_piece(lazy_disk *d, const piece *p, const char *data, unsigned char **buf,
                       int *became)
{
    const store_file *f = d->df;
    int rc = 0;
    *became = d->state[p->c] != LZ_GUEST;
    if (!in_file(d, p->c) && p->len < store_chunk_len(f, p->c)) {
        if (!store_file_chunk(f, p->c))
            rc = clear_chunk(d, p->c);
        else if (!*buf && !(*buf = malloc(f->chunk_size)))
            rc = -ENOMEM;
        else
            rc = fetch_chunk(d, p->c, *buf);
    }
    if (!rc)
        rc = file_pwrite_all(d->fd, data, p->len, p->c * f->chunk_size + p->off);
    if (!rc && *became) {
        if (d->state[p->c] == LZ_ABSENT && store_file_chunk(f, p->c))
            lz_count(d, &d->chunks_here, 1);
        d->state[p->c] = LZ_GUEST; /* in memory now; on disk once the data is */
    }
    return rc;
}

/* the chunks that became the guest's, recorded once their bytes are durable */
static int guest_chunks_record(lazy_disk *d, const uint64_t *v, size_t n)
{
    static const unsigned char guest = LZ_GUEST;
    int rc = 0;
    for (size_t i = 0; !rc && i < n; i++)
        rc = file_pwrite_all(d->state_fd, &guest, 1, v[i]);
    if (!rc && n)
        rc = file_fsync_fd(d->state_fd);
    return rc;
}

/* with durable_on_flush: chunks that became the guest's since the last
 * flush, recorded by the next one */
static int pending_add(lazy_disk *d, const uint64_t *v, size_t n)
{
    if (!n)
        return 0; /* (nothing became the guest's; memcpy must not see a NULL pending) */
    pthread_mutex_lock(&d->mu);
    if (d->npending + n > d->cap_pending) {
        size_t cap = d->cap_pending ? d->cap_pending : 64;
        while (cap < d->npending + n)
            cap *= 2;
        uint64_t *p = realloc(d->pending, cap * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&d->mu);
            return lazy_fail(ENOMEM, "out of memory");
        }
        d->pending = p;
        d->cap_pending = cap;
    }
    memcpy(d->pending + d->npending, v, n * sizeof *v);
    d->npending += n;
    pthread_mutex_unlock(&d->mu);
    return 0;
}

static int lz_write(void *ctx, const void *data, uint64_t off, uint32_t len)
{
    lazy_disk *d = ctx;
    unsigned char *chunk = NULL;
    uint64_t became[NBD_REQUEST_MAX / (4u << 10) + 2];
    size_t nbecame = 0;
    int rc = 0;
    io_enter(d);
    if (d->handed_over) {
        rc = file_pwrite_all(d->fd, data, len, off);
        /* until the state is gone (the instance recorded as a clone), a
         * handover done again after a crash must still find these chunks */
        EACH_PIECE(d, off, len, p) {
            if (rc || d->state_fd < 0)
                break;
            pthread_mutex_lock(stripe(d, p.c));
            if (d->state[p.c] != LZ_GUEST && nbecame < sizeof became / sizeof *became) {
                d->state[p.c] = LZ_GUEST;
                became[nbecame++] = p.c;
            }
            pthread_mutex_unlock(stripe(d, p.c));
        }
    } else {
        EACH_PIECE(d, off, len, p) {
            int b = 0;
            pthread_mutex_lock(stripe(d, p.c));
            rc = write_piece(d, &p, (const char *)data + (p.c * d->df->chunk_size + p.off - off),
                             &chunk, &b);
            pthread_mutex_unlock(stripe(d, p.c));
            if (rc)
                break;
            if (b && nbecame < sizeof became / sizeof *became)
                became[nbecame++] = p.c;
        }
    }
    if (!rc && d->o.durable_on_flush) /* the client flushes: recorded then */
        rc = pending_add(d, became, nbecame);
    else if (!rc) { /* durable before it is answered: VZ never sends FLUSH */
        rc = file_fsync_fd(d->fd);
        if (!rc && d->state_fd >= 0)
            rc = guest_chunks_record(d, became, nbecame);
    }
    io_leave(d);
    free(chunk);
    lz_guest_io(d, len);
    if (rc && err_last()->code != -rc)
        lazy_fail_errno(-rc, "%s", d->disk_path);
    return rc;
}

int lz_disk_flush(lazy_disk *d)
{
    pthread_mutex_lock(&d->mu); /* taken before the sync: every write answered so far is in it */
    uint64_t *v = d->pending;
    size_t n = d->npending;
    d->pending = NULL;
    d->npending = d->cap_pending = 0;
    pthread_mutex_unlock(&d->mu);
    int rc = file_fsync_fd(d->fd);
    if (!rc && d->state_fd >= 0)
        rc = guest_chunks_record(d, v, n);
    if (rc && n)
        pending_add(d, v, n); /* kept for the next flush */
    free(v);
    return rc;
}

static int lz_flush(void *ctx)
{
    lazy_disk *d = ctx;
    io_enter(d);
    int rc = lz_disk_flush(d);
    io_leave(d);
    return rc;
}

void lz_backend_init(lazy_disk *d)
{
    d->e = (nbd_export){.name = "", .description = "a registry layer, served lazily",
                        .size = d->df->size};
    d->b = (nbd_backend){.read = lz_read, .write = lz_write, .flush = lz_flush, .ctx = d};
}

/* ---- the fill's hooks ---- */

int lz_hook_source(void *ctx, const unsigned char id[32], uint32_t len, void *buf)
{
    lazy_disk *d = ctx;
    pthread_mutex_lock(&d->mu);
    int stop = d->stopping;
    pthread_mutex_unlock(&d->mu);
    if (stop)
        return lazy_fail(ECANCELED, "the fill was stopped");
    int held = 0;
    io_enter(d);
    for (const lz_place *p = lz_find(d->disk_ids, d->ndisk_ids, id);
         !held && !d->handed_over && p && p < d->disk_ids + d->ndisk_ids && !memcmp(p->digest, id, 32);
         p++) {
        pthread_mutex_lock(stripe(d, p->chunk));
        if (d->state[p->chunk] == LZ_LAYER && store_chunk_len(d->df, p->chunk) == len)
            held = !file_pread_zerofill(d->fd, buf, len, p->chunk * d->df->chunk_size);
        pthread_mutex_unlock(stripe(d, p->chunk));
    }
    io_leave(d);
    if (held)
        lz_count(d, &d->fill_supplied, 1);
    return held; /* the store checks the bytes against id again */
}

/* each place of chunk id whose state is from, of len bytes: to it (written
 * into the file first when data is given) */
static void mark_places(lazy_disk *d, const unsigned char id[32], const void *data, size_t len,
                        unsigned from_mask, unsigned char to)
{
    io_enter(d);
    for (const lz_place *p = lz_find(d->disk_ids, d->ndisk_ids, id);
         !d->handed_over && p && p < d->disk_ids + d->ndisk_ids && !memcmp(p->digest, id, 32); p++) {
        pthread_mutex_lock(stripe(d, p->chunk));
        unsigned char was = d->state[p->chunk];
        int moved = 0; /* (not written: left as it was, the chunk is got when read) */
        if ((from_mask & 1u << was) && store_chunk_len(d->df, p->chunk) == len)
            moved = data ? !file_pwrite_all(d->fd, data, len, p->chunk * d->df->chunk_size) &&
                               !state_put(d, p->chunk, to)
                         : (d->state[p->chunk] = to, 1); /* in memory only */
        if (moved && was == LZ_ABSENT)
            lz_count(d, &d->chunks_here, 1);
        pthread_mutex_unlock(stripe(d, p->chunk));
    }
    io_leave(d);
}

void lz_hook_received(void *ctx, const unsigned char id[32], const void *data, size_t len)
{
    (void)data;
    mark_places(ctx, id, NULL, len, 1u << LZ_ABSENT, LZ_RECEIVED);
}

void lz_chunk_keep(lazy_disk *d, const unsigned char id[32], const void *data, size_t len)
{
    mark_places(d, id, data, len, 1u << LZ_ABSENT | 1u << LZ_RECEIVED, LZ_LAYER);
}

/* ---- the handover ---- */

/* the guest's chunks copied from the instance file onto the clone */
static int copy_guest_chunks(lazy_disk *d, int to)
{
    const store_file *f = d->df;
    unsigned char *buf = malloc(f->chunk_size);
    int rc = buf ? 0 : -ENOMEM;
    for (uint64_t c = 0; !rc && c < f->nchunks; c++) {
        if (d->state[c] != LZ_GUEST)
            continue;
        size_t len = (size_t)store_chunk_len(f, c);
        if (!(rc = file_pread_zerofill(d->fd, buf, len, c * f->chunk_size)))
            rc = file_pwrite_all(to, buf, len, c * f->chunk_size);
    }
    free(buf);
    return rc;
}

/* the engine's state removed: the instance is an ordinary clone now (exclusive held) */
static void state_drop(lazy_disk *d)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/chunks", d->state_dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/layer", d->state_dir);
    unlink(p);
    rmdir(d->state_dir);
    file_fsync_path(d->dir);
    close(d->state_fd);
    d->state_fd = -1;
}

int lz_disk_handover(lazy_disk *d, const char *layer_disk, const store_id *id)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/%s.new", d->state_dir, LAZY_DISK);
    unlink(tmp); /* a handover cut short */
    clone_method how = CLONE_REFLINK;
    /* paced: where blocks can't be shared this is a copy of the layer */
    int rc = clone_path_paced(layer_disk, tmp, d->df->mode | 0200, &how, lz_handover_pace, d);
    if (rc)
        return lazy_fail_errno(-rc, "cloning %s", layer_disk);
    int to = open(tmp, O_RDWR | O_CLOEXEC);
    if (to < 0)
        return lazy_fail_errno(errno, "%s", tmp);
    swap_begin(d);
    rc = copy_guest_chunks(d, to);
    if (!rc)
        rc = file_publish(to, tmp, d->disk_path);
    if (rc) {
        swap_end(d);
        close(to);
        unlink(tmp);
        return lazy_fail_errno(-rc, "handing %s over", d->disk_path);
    }
    close(d->fd);
    d->fd = to;
    d->handed_over = 1;
    /* recorded as a clone, then the state dropped, with no write between:
     * a crash before the drop hands over again, to the same bytes */
    rc = store_clone_adopt(d->st, d->dir, id);
    if (!rc)
        state_drop(d);
    swap_end(d);
    return rc;
}
