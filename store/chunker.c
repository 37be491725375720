/*
 * Cut a materialized file into fixed, aligned chunks and name each by its
 * SHA-256, sealing each data chunk with its XXH3 too (seal.c) while its
 * bytes are at hand. Three shortcuts keep the cost to what changed:
 *   - chunks lying wholly in holes are zero without reading (SEEK_DATA);
 *   - chunks whose extents are physically the same as in the base layer's
 *     file take the base's entry without reading (commit after clone);
 *   - everything else is read once, on every core, and all-zero chunks are
 *     punched out so the layer stores nothing for them.
 */
#define _GNU_SOURCE
#include "../base/platform.h"
#include "../clone/clone.h"
#include "internal.h"

#include <errno.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

/* what reading one chunk found */
typedef struct {
    unsigned char digest[32];
    uint64_t seal;
    int data;
} result;

typedef struct {
    int fd;
    uint64_t size;
    uint32_t chunk_size;
    size_t *work; /* chunk indices to read */
    result *found; /* one per work item */
    size_t nwork;
    atomic_size_t next;
    atomic_uint_fast64_t bytes_read;
    atomic_int error;
    store_progress_fn progress;
    void *progress_ctx;
    const char *name;
    uint64_t total;
} job;

#define READAHEAD 8 /* batches asked for ahead of the one being hashed */

static int all_zero(const unsigned char *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Work is taken in batches of about BATCH bytes (one chunk when chunks are
 * that large or larger), and each run of neighbouring chunks in a batch is
 * read with one pread: small chunks (a RAM file's 4 KiB) would otherwise
 * cost two system calls each. */
#define BATCH (1u << 20)

static size_t batch_items(const job *j)
{
    return j->chunk_size >= BATCH ? 1 : BATCH / j->chunk_size;
}

static uint64_t item_len(const job *j, size_t w)
{
    uint64_t off = (uint64_t)j->work[w] * j->chunk_size;
    return j->size - off < j->chunk_size ? j->size - off : j->chunk_size;
}

/* Keep the disk busy while we hash: ask for the batch READAHEAD ahead, run
 * by run, so a batch of scattered chunks (a guest's changed pages) asks
 * for those and not for everything between them. */
static void read_ahead(const job *j, size_t w, size_t k)
{
    size_t a = w + READAHEAD * k;
    size_t b = a + k < j->nwork ? a + k : j->nwork;
    while (a < b) {
        size_t r = a + 1;
        while (r < b && j->work[r] == j->work[r - 1] + 1)
            r++;
        uint64_t off = (uint64_t)j->work[a] * j->chunk_size;
        uint64_t end = (uint64_t)j->work[r - 1] * j->chunk_size + item_len(j, r - 1);
        os_read_hint_give(j->fd, off, end - off, OS_READ_SOON);
        a = r;
    }
}

/* Read and hash items [w, end): each run of neighbouring chunks at once. */
static int hash_batch(job *j, unsigned char *buf, size_t w, size_t end)
{
    while (w < end) {
        size_t r = w + 1;
        while (r < end && j->work[r] == j->work[r - 1] + 1)
            r++;
        uint64_t off = (uint64_t)j->work[w] * j->chunk_size;
        size_t len = (size_t)((r - w - 1) * (uint64_t)j->chunk_size + item_len(j, r - 1));
        int e = -file_pread_all(j->fd, buf, len, off); /* hash_batch returns a positive errno */
        if (e)
            return e;
        for (size_t i = w; i < r; i++) {
            const unsigned char *p = buf + (i - w) * (size_t)j->chunk_size;
            size_t n = (size_t)item_len(j, i);
            result *res = &j->found[i];
            res->data = !all_zero(p, n);
            if (res->data) {
                SHA256(p, n, res->digest);
                res->seal = st_seal_of(p, n);
            }
        }
        atomic_fetch_add(&j->bytes_read, len);
        w = r;
    }
    return 0;
}

static void *worker(void *arg_)
{
    struct {
        job *j;
        int first;
    } *arg = arg_;
    job *j = arg->j;
    size_t k = batch_items(j);
    unsigned char *buf = malloc(k * (size_t)j->chunk_size);
    if (!buf) {
        atomic_store(&j->error, ENOMEM);
        return NULL;
    }
    for (size_t n = 0;; n++) {
        size_t w = atomic_fetch_add(&j->next, k);
        if (w >= j->nwork || atomic_load(&j->error))
            break;
        size_t end = w + k < j->nwork ? w + k : j->nwork;
        read_ahead(j, w, k);
        int e = hash_batch(j, buf, w, end);
        if (e) {
            atomic_store(&j->error, e);
            break;
        }
        if (arg->first && j->progress && (n & 31) == 0)
            j->progress(j->progress_ctx, j->name, atomic_load(&j->bytes_read), j->total);
    }
    free(buf);
    return NULL;
}

static int threads_wanted(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 8 ? 8 : (int)n;
}

/* Which chunks of fd hold any data at all: has[c] = 1. */
static int find_data(int fd, const char *name, uint64_t size, uint32_t chunk_size, size_t n,
                     unsigned char *has)
{
    for (uint64_t off = 0; off < size;) {
        uint64_t d, h;
        int r = clone_next_data(fd, off, size, &d, &h);
        if (r == -ENXIO)
            break;
        if (r)
            return st_fail_errno(r, "%s: reading its holes", name);
        for (uint64_t c = d / chunk_size; c < n && c * chunk_size < h; c++)
            has[c] = 1;
        off = h;
    }
    return 0;
}

int st_chunk_estimate(const char *path, uint32_t chunk_size, uint64_t *chunks, uint64_t *data)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat s;
    if (fd < 0 || fstat(fd, &s) < 0) {
        int rc = st_fail_errno(errno, "%s", path);
        if (fd >= 0)
            close(fd);
        return rc;
    }
    uint64_t size = (uint64_t)s.st_size, last = UINT64_MAX;
    *chunks += (size + chunk_size - 1) / chunk_size;
    for (uint64_t off = 0; off < size;) {
        uint64_t d, h;
        int r = clone_next_data(fd, off, size, &d, &h);
        if (r == -ENXIO)
            break;
        if (r) {
            close(fd);
            return st_fail_errno(r, "%s: reading its holes", path);
        }
        uint64_t first = d / chunk_size, end = (h + chunk_size - 1) / chunk_size;
        if (first == last)
            first++; /* counted with the region before */
        if (end > first)
            *data += end - first;
        last = end - 1;
        off = h;
    }
    close(fd);
    return 0;
}

/* Can chunk c be taken from the base unread? Its blocks must be the very
 * blocks the base named, and a data chunk must come with its seal. */
static int reusable(const store_file *base, const st_seals *base_seals, size_t base_index,
                    const clone_extent_map *now, const clone_extent_map *was, uint64_t size,
                    uint64_t c, uint32_t chunk_size)
{
    uint64_t off = c * chunk_size;
    uint64_t len = size - off < chunk_size ? size - off : chunk_size;
    if (c >= base->nchunks || off + len > base->size ||
        (off + len == size) != (off + len == base->size) ||
        !clone_extent_map_same(now, was, off, len))
        return 0;
    uint64_t seal;
    return !store_file_chunk(base, c) || st_seal_get(base_seals, base_index, c, &seal) == 0;
}

static int run_workers(job *j)
{
    int nt = threads_wanted();
    if ((size_t)nt > j->nwork)
        nt = j->nwork ? (int)j->nwork : 1;
    pthread_t th[8];
    struct {
        job *j;
        int first;
    } args[8];
    int started = 0;
    for (int i = 1; i < nt; i++) {
        args[i].j = j;
        args[i].first = 0;
        if (pthread_create(&th[i], NULL, worker, &args[i]) == 0)
            started = i;
        else
            break;
    }
    args[0].j = j;
    args[0].first = 1;
    worker(&args[0]); /* this thread works too, and reports progress */
    for (int i = 1; i <= started; i++)
        pthread_join(th[i], NULL);
    return atomic_load(&j->error);
}

/* give back the blocks of chunks that turned out to be zeros */
static int punch_zeros(int fd, const char *name, const job *j)
{
    for (size_t i = 0; i < j->nwork;) {
        size_t c = j->work[i];
        if (j->found[i].data) {
            i++;
            continue;
        }
        size_t first = c;
        while (i < j->nwork && j->work[i] == c && !j->found[i].data)
            i++, c++;
        uint64_t off = (uint64_t)first * j->chunk_size;
        uint64_t end = (uint64_t)c * j->chunk_size;
        if (end > j->size)
            end = j->size;
        int r = clone_punch_hole(fd, off, end - off);
        if (r && r != -EOPNOTSUPP)
            return st_fail_errno(r, "%s: punching a hole", name);
    }
    return 0;
}

/* Mark (how[c] = 2) the data chunks that are the very blocks the base
 * layer already named; count those to read and the data chunks reused. */
static void mark_reusable(int fd, uint64_t size, uint32_t chunk_size, size_t n,
                          const st_chunk_base *b, unsigned char *how, size_t *nwork,
                          size_t *ndata, st_chunk_stats *stats)
{
    clone_extent_map now = {0}, was = {0};
    int maps = b && b->fd >= 0 && b->file && b->file->chunk_size == chunk_size &&
               clone_extent_map_read(fd, &now) == 0 && clone_extent_map_read(b->fd, &was) == 0;
    for (size_t c = 0; c < n; c++) {
        if (!how[c])
            continue;
        if (maps && reusable(b->file, b->seals, b->index, &now, &was, size, c, chunk_size)) {
            how[c] = 2;
            *ndata += store_file_chunk(b->file, c) != NULL;
            if (stats)
                stats->chunks_reused++;
        } else {
            (*nwork)++;
        }
    }
    clone_extent_map_free(&now);
    clone_extent_map_free(&was);
}

/* The data chunks in order, read or reused, each with its seal. */
static int collect_data(const job *j, const unsigned char *how, size_t n, const st_chunk_base *b,
                        store_file *out, st_seals *seals, size_t index)
{
    int rc = 0;
    for (size_t c = 0, w = 0; !rc && c < n; c++) {
        const store_chunk *from = how[c] == 2 ? store_file_chunk(b->file, c) : NULL;
        const result *r = how[c] == 1 ? &j->found[w++] : NULL;
        uint64_t seal = 0;
        if (from)
            st_seal_get(b->seals, b->index, c, &seal);
        else if (r && r->data)
            seal = r->seal;
        else
            continue;
        store_chunk *ch = &out->data[out->ndata++];
        ch->index = c;
        memcpy(ch->digest, from ? from->digest : r->digest, 32);
        rc = st_seal_set(seals, index, c, seal);
    }
    return rc;
}

int st_chunk_file(int fd, const char *name, uint32_t chunk_size, const st_chunk_base *b,
                  store_file *out, st_seals *seals, size_t index, st_chunk_stats *stats,
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
    out->ndata = 0;
    out->data = NULL;
    /* per chunk: 0 zero, 1 to read, 2 reused from the base */
    unsigned char *how = calloc(n ? n : 1, 1);
    size_t *work = NULL;
    result *found = NULL;
    int rc = how ? find_data(fd, name, size, chunk_size, n, how) : -ENOMEM;
    if (rc)
        goto out;

    size_t nwork = 0, ndata = 0;
    mark_reusable(fd, size, chunk_size, n, b, how, &nwork, &ndata, stats);
    /* memory goes with the chunks that hold data, not with the file's size */
    work = malloc((nwork ? nwork : 1) * sizeof *work);
    found = calloc(nwork ? nwork : 1, sizeof *found);
    out->data = malloc((ndata + nwork ? ndata + nwork : 1) * sizeof *out->data);
    if (!work || !found || !out->data) {
        rc = st_fail(ENOMEM, "%s: out of memory", name);
        goto out;
    }
    nwork = 0;
    for (size_t c = 0; c < n; c++)
        if (how[c] == 1)
            work[nwork++] = c;

    job j = {.fd = fd, .size = size, .chunk_size = chunk_size, .work = work, .found = found,
             .nwork = nwork, .progress = progress, .progress_ctx = progress_ctx, .name = name};
    atomic_init(&j.next, 0);
    atomic_init(&j.bytes_read, 0);
    atomic_init(&j.error, 0);
    for (size_t i = 0; i < nwork; i++) {
        uint64_t off = (uint64_t)work[i] * chunk_size;
        j.total += size - off < chunk_size ? size - off : chunk_size;
    }
    int err = run_workers(&j);
    if (err) {
        rc = st_fail_errno(err, "%s: reading", name);
        goto out;
    }
    if (progress && j.total)
        progress(progress_ctx, name, j.total, j.total);
    if (stats)
        stats->bytes_read += atomic_load(&j.bytes_read);

    rc = collect_data(&j, how, n, b, out, seals, index);
    if (!rc)
        rc = punch_zeros(fd, name, &j);
out:
    free(how);
    free(work);
    free(found);
    return rc;
}

/* ---------- hashing a new saved-state file ahead (st_prehash_*) ----------
 *
 * A saved state's RAM file with nothing to compare extents with must be
 * read whole. Its layer copy is a fresh reflink whose pages are not in the
 * page cache, while the instance's file is (QEMU's shared memory). So it is
 * hashed from the instance's file, on its own thread while the VM saves
 * and exits and D is committed, and the results are used for the copy only
 * if the file provably did not change from the start of hashing to the
 * moment the copy was made:
 *   - a read lease, taken before hashing, fails if anyone has the file open
 *     for writing (a writable shared mapping keeps its file open), and any
 *     later open for writing or truncate must break it first, waiting for
 *     us to let go, which we do only after the copy; F_GETLEASE then tells
 *     whether anyone tried;
 *   - dev, inode, size, mtime and ctime are the same before hashing, after
 *     it, and after the copy, which is made from the same open file.
 * Otherwise the copy is hashed as before. mtime alone would not do: a write
 * through a mapping updates it only when a clean page is first written.
 *
 * One writer is let in: a paused VM (writer_paused). Its RAM file is final
 * once the VM is paused, but QEMU keeps it open for writing until it exits,
 * so the lease can only be taken after that, before the copy
 * (st_prehash_lease). Until then the promise of the one who paused it
 * stands in for the lease: the state QEMU saves is only right if guest RAM
 * does not change after the pause, so nothing of QEMU's writes it. Anyone
 * else's write or open for writing in that time still shows: a write(2), or
 * a first write through a new mapping, sets mtime and ctime anew, and a
 * writer still open makes the lease fail. */

struct st_prehash {
    pthread_t thread, writeback;
    int started, writing_back;
    int fd; /* the source, read-only, holding the read lease once leased */
    int leased;
    struct stat before;
    job j;
    unsigned char *how; /* per chunk: 1 if read, as st_chunk_file's */
    size_t n;
    int usable; /* set by the thread: hashed whole, file unchanged meanwhile */
};

static int same_time(struct timespec a, struct timespec b)
{
    return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           same_time(os_stat_mtime(a), os_stat_mtime(b)) &&
           same_time(os_stat_ctime(a), os_stat_ctime(b));
}

/* the chunks st_chunk_file would read, with no base: those touching data */
static int prehash_plan(st_prehash *p, uint32_t chunk_size)
{
    uint64_t size = (uint64_t)p->before.st_size;
    p->n = (size_t)((size + chunk_size - 1) / chunk_size);
    p->how = calloc(p->n ? p->n : 1, 1);
    if (!p->how)
        return -ENOMEM;
    int r = find_data(p->fd, "a file hashed ahead", size, chunk_size, p->n, p->how);
    if (r)
        return r;
    size_t nwork = 0;
    for (size_t c = 0; c < p->n; c++)
        nwork += p->how[c];
    p->j.work = malloc((nwork ? nwork : 1) * sizeof *p->j.work);
    p->j.found = calloc(nwork ? nwork : 1, sizeof *p->j.found);
    if (!p->j.work || !p->j.found)
        return -ENOMEM;
    for (size_t c = 0; c < p->n; c++)
        if (p->how[c])
            p->j.work[p->j.nwork++] = c;
    p->j.fd = p->fd;
    p->j.size = size;
    p->j.chunk_size = chunk_size;
    return 0;
}

/* A reflink first writes the source's dirty pages out: a paused VM's RAM
 * file is mostly dirty, so that write starts at the pause, while the VM
 * saves and exits and D is committed, not when S copies the file. On its
 * own thread: starting it waits for the disk's queue (90 ms for 120 MB
 * here), which the hashing must not wait for. */
static void *writeback_thread(void *arg)
{
    os_write_back_start(((st_prehash *)arg)->fd, 0, 0);
    return NULL;
}

static void *prehash_thread(void *arg)
{
    st_prehash *p = arg;
    struct stat after;
    if (prehash_plan(p, p->j.chunk_size) || run_workers(&p->j))
        return NULL;
    p->usable = fstat(p->fd, &after) == 0 && same_file(&p->before, &after);
    return NULL;
}

/* Test hook (STRATA_TEST_NO_PREHASH=1): never hash ahead, as before. */
static int prehash_off(void)
{
    return test_hooks_get()->no_prehash;
}

st_prehash *st_prehash_start(const char *path, uint32_t chunk_size, int writer_paused)
{
    st_prehash *p = prehash_off() ? NULL : calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (p->fd >= 0)
        p->leased = os_read_lease_take(p->fd);
    if (p->fd < 0 || (!p->leased && !writer_paused) || fstat(p->fd, &p->before) < 0 ||
        !S_ISREG(p->before.st_mode)) {
        st_prehash_free(p);
        return NULL;
    }
    p->j.chunk_size = chunk_size;
    atomic_init(&p->j.next, 0);
    atomic_init(&p->j.bytes_read, 0);
    atomic_init(&p->j.error, 0);
    if (pthread_create(&p->thread, NULL, prehash_thread, p)) {
        st_prehash_free(p);
        return NULL;
    }
    p->started = 1;
    if (!p->leased && !pthread_create(&p->writeback, NULL, writeback_thread, p))
        p->writing_back = 1; /* a paused VM's file (writer_paused) */
    return p;
}

int st_prehash_lease(st_prehash *p)
{
    if (p && !p->leased)
        p->leased = os_read_lease_take(p->fd);
    return p && p->leased;
}

static void prehash_join(st_prehash *p)
{
    if (p->started)
        pthread_join(p->thread, NULL);
    p->started = 0;
    if (p->writing_back)
        pthread_join(p->writeback, NULL);
    p->writing_back = 0;
}

/* Does every chunk holding data in the copy lie where the source had data?
 * Then punching the source's zero chunks leaves the copy as st_chunk_file
 * would. A reflink keeps the source's layout and a sparse copy its holes,
 * so this holds; it is checked, not assumed. */
static int copy_within_plan(const st_prehash *p, int copy_fd)
{
    /* the copy's size is the source's (checked first), so its chunks are p->n */
    unsigned char *has = calloc(p->n ? p->n : 1, 1);
    int ok = has && !find_data(copy_fd, "a copy hashed ahead", p->j.size, p->j.chunk_size, p->n,
                               has);
    for (size_t c = 0; ok && c < p->n; c++)
        ok = !has[c] || p->how[c];
    free(has);
    return ok;
}

int st_prehash_copy(st_prehash *p, const char *to, mode_t mode, clone_method *how)
{
    return clone_fd_to_path(p->fd, to, mode, how);
}

/* Is the copy at copy_fd, made from p->fd by st_prehash_copy, what was hashed? */
static int prehash_holds(st_prehash *p, int copy_fd, uint32_t chunk_size)
{
    struct stat now, copy;
    return p->usable && p->j.chunk_size == chunk_size && fstat(p->fd, &now) == 0 &&
           same_file(&p->before, &now) && os_read_lease_held(p->fd) &&
           fstat(copy_fd, &copy) == 0 && copy.st_size == p->before.st_size &&
           copy_within_plan(p, copy_fd);
}

int st_prehash_use(st_prehash *p, const char *from, int copy_fd, uint32_t chunk_size,
                   store_file *out, st_seals *seals, size_t index, st_chunk_stats *stats)
{
    if (!p)
        return 0;
    prehash_join(p);
    if (st_prehash_test_hook)
        st_prehash_test_hook(from);
    int holds = prehash_holds(p, copy_fd, chunk_size);
    close(p->fd); /* lets go of the lease: the copy is made, a waiting writer goes on */
    p->fd = -1;
    if (!holds)
        return 0;
    out->size = p->j.size;
    out->chunk_size = chunk_size;
    out->nchunks = p->n;
    out->ndata = 0;
    out->data = malloc((p->j.nwork ? p->j.nwork : 1) * sizeof *out->data);
    if (!out->data)
        return st_fail(ENOMEM, "%s: out of memory", from);
    int rc = collect_data(&p->j, p->how, p->n, NULL, out, seals, index);
    if (!rc)
        rc = punch_zeros(copy_fd, from, &p->j);
    if (rc) {
        free(out->data);
        out->data = NULL;
        return rc;
    }
    if (stats)
        stats->bytes_read += atomic_load(&p->j.bytes_read);
    st_prehash_used++;
    return 1;
}

void st_prehash_free(st_prehash *p)
{
    if (!p)
        return;
    atomic_store(&p->j.error, ECANCELED); /* unused now: stop its workers */
    prehash_join(p);
    if (p->fd >= 0)
        close(p->fd);
    free(p->how);
    free(p->j.work);
    free(p->j.found);
    free(p);
}

void (*st_prehash_test_hook)(const char *path);
_Atomic int st_prehash_used;
