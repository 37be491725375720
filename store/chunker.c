/*
 * Cut a materialized file into fixed, aligned chunks and name each by its
 * SHA-256. Three shortcuts keep the cost to what changed:
 *   - chunks lying wholly in holes are zero without reading (SEEK_DATA);
 *   - chunks whose extents are physically the same as in the base layer's
 *     file take the base's entry without reading (commit after clone);
 *   - everything else is read once, on every core, and all-zero chunks are
 *     punched out so the layer stores nothing for them.
 */
#define _GNU_SOURCE
#include "../clone/clone.h"
#include "internal.h"

#include <errno.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

typedef struct {
    int fd;
    uint64_t size;
    uint32_t chunk_size;
    store_file *out;
    size_t *work; /* chunk indices to read */
    size_t nwork;
    atomic_size_t next;
    atomic_uint_fast64_t bytes_read;
    atomic_int error;
    store_progress_fn progress;
    void *progress_ctx;
    const char *name;
    uint64_t total;
} job;

#define READAHEAD 8 /* chunks asked for ahead of the one being hashed */

static int all_zero(const unsigned char *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

static void *worker(void *arg_)
{
    struct {
        job *j;
        int first;
    } *arg = arg_;
    job *j = arg->j;
    unsigned char *buf = malloc(j->chunk_size);
    if (!buf) {
        atomic_store(&j->error, ENOMEM);
        return NULL;
    }
    for (;;) {
        size_t w = atomic_fetch_add(&j->next, 1);
        if (w >= j->nwork || atomic_load(&j->error))
            break;
        size_t c = j->work[w];
        uint64_t off = (uint64_t)c * j->chunk_size;
        if (w + READAHEAD < j->nwork) /* keep the disk busy while we hash */
            posix_fadvise(j->fd, (off_t)((uint64_t)j->work[w + READAHEAD] * j->chunk_size),
                          (off_t)j->chunk_size, POSIX_FADV_WILLNEED);
        size_t len = (size_t)(j->size - off < j->chunk_size ? j->size - off : j->chunk_size);
        size_t got = 0;
        while (got < len) {
            ssize_t r = pread(j->fd, buf + got, len - got, (off_t)(off + got));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                atomic_store(&j->error, r < 0 ? errno : EIO);
                break;
            }
            got += (size_t)r;
        }
        if (got < len)
            break;
        store_chunk *ch = &j->out->chunks[c];
        if (all_zero(buf, len))
            ch->data = 0;
        else {
            SHA256(buf, len, ch->digest);
            ch->data = 1;
        }
        uint64_t done = atomic_fetch_add(&j->bytes_read, len) + len;
        if (arg->first && j->progress && (w & 31) == 0)
            j->progress(j->progress_ctx, j->name, done, j->total);
    }
    free(buf);
    return NULL;
}

static int threads_wanted(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 8 ? 8 : (int)n;
}

int st_chunk_file(int fd, const char *name, uint32_t chunk_size, int base_fd,
                  const store_file *base_file, store_file *out, st_chunk_stats *stats,
                  store_progress_fn progress, void *progress_ctx)
{
    struct stat s;
    if (fstat(fd, &s) < 0)
        return st_fail_errno(errno, "%s", name);
    uint64_t size = (uint64_t)s.st_size;
    size_t n = (size_t)((size + chunk_size - 1) / chunk_size);
    out->size = size;
    out->chunk_size = chunk_size;
    out->nchunks = n;
    out->chunks = calloc(n ? n : 1, sizeof *out->chunks);
    unsigned char *has_data = calloc(n ? n : 1, 1);
    size_t *work = malloc((n ? n : 1) * sizeof *work);
    int rc = 0;
    if (!out->chunks || !has_data || !work) {
        rc = st_fail(ENOMEM, "%s: out of memory", name);
        goto out;
    }

    /* which chunks hold any data at all */
    for (uint64_t off = 0; off < size;) {
        uint64_t d, h;
        int r = clone_next_data(fd, off, size, &d, &h);
        if (r == -ENXIO)
            break;
        if (r) {
            rc = st_fail_errno(r, "%s: reading its holes", name);
            goto out;
        }
        for (uint64_t c = d / chunk_size; c < n && c * chunk_size < h; c++)
            has_data[c] = 1;
        off = h;
    }

    /* which of those are the very blocks the base layer already named */
    clone_extent_map now = {0}, base = {0};
    int maps = base_fd >= 0 && base_file && base_file->chunk_size == chunk_size &&
               clone_extent_map_read(fd, &now) == 0 && clone_extent_map_read(base_fd, &base) == 0;
    size_t nwork = 0;
    for (size_t c = 0; c < n; c++) {
        if (!has_data[c])
            continue; /* calloc made it a zero chunk */
        uint64_t off = (uint64_t)c * chunk_size;
        uint64_t len = size - off < chunk_size ? size - off : chunk_size;
        if (maps && c < base_file->nchunks && off + len <= base_file->size &&
            (off + len == size) == (off + len == base_file->size) &&
            clone_extent_map_same(&now, &base, off, len)) {
            out->chunks[c] = base_file->chunks[c];
            if (stats)
                stats->chunks_reused++;
            continue;
        }
        work[nwork++] = c;
    }
    clone_extent_map_free(&now);
    clone_extent_map_free(&base);

    job j = {.fd = fd, .size = size, .chunk_size = chunk_size, .out = out, .work = work,
             .nwork = nwork, .progress = progress, .progress_ctx = progress_ctx, .name = name};
    atomic_init(&j.next, 0);
    atomic_init(&j.bytes_read, 0);
    atomic_init(&j.error, 0);
    for (size_t i = 0; i < nwork; i++) {
        uint64_t off = (uint64_t)work[i] * chunk_size;
        j.total += size - off < chunk_size ? size - off : chunk_size;
    }
    int nt = threads_wanted();
    if ((size_t)nt > nwork)
        nt = nwork ? (int)nwork : 1;
    pthread_t th[8];
    struct {
        job *j;
        int first;
    } args[8];
    int started = 0;
    for (int i = 1; i < nt; i++) {
        args[i].j = &j;
        args[i].first = 0;
        if (pthread_create(&th[i], NULL, worker, &args[i]) == 0)
            started = i;
        else
            break;
    }
    args[0].j = &j;
    args[0].first = 1;
    worker(&args[0]); /* this thread works too, and reports progress */
    for (int i = 1; i <= started; i++)
        pthread_join(th[i], NULL);
    if (atomic_load(&j.error)) {
        rc = st_fail_errno(atomic_load(&j.error), "%s: reading", name);
        goto out;
    }
    if (progress && j.total)
        progress(progress_ctx, name, j.total, j.total);
    if (stats)
        stats->bytes_read += atomic_load(&j.bytes_read);

    /* give back the blocks of chunks that turned out to be zeros */
    for (size_t i = 0; i < nwork;) {
        size_t c = work[i];
        if (out->chunks[c].data) {
            i++;
            continue;
        }
        size_t first = c;
        while (i < nwork && work[i] == c && !out->chunks[c].data)
            i++, c++;
        uint64_t off = (uint64_t)first * chunk_size;
        uint64_t end = (uint64_t)c * chunk_size;
        if (end > size)
            end = size;
        int r = clone_punch_hole(fd, off, end - off);
        if (r && r != -EOPNOTSUPP) {
            rc = st_fail_errno(r, "%s: punching a hole", name);
            goto out;
        }
    }
out:
    free(has_data);
    free(work);
    return rc;
}
