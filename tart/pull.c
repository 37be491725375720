/*
 * tart: pulling a tart image into a layer (docs/tart.md "Pull").
 *
 * The manifest is read and checked (image.c), then the config, whose guest
 * the caller may refuse before any disk byte is fetched. The disk is built
 * in a scratch directory on the store's volume named after the manifest's
 * digest, so an interrupted pull finds its work again: disk.img (sparse,
 * the disk's size), and "done", a line per disk layer written and synced,
 * each checked again (its range hashed) before a later pull keeps it.
 * Disk layers are fetched po->jobs at a time, each on its own connection,
 * streamed through the LZ4 decoder into its place in disk.img while its
 * compressed bytes and its decoded bytes are hashed; a transfer cut off is
 * resumed at the byte it stopped at (the decoder keeps its state). The
 * directory then holds config.json, disk.img and nvram.bin, a tart VM that
 * archive_import_tart makes the layer of. The manifest's digest and the
 * layer's id are remembered in the store's cache, so pulling the same
 * image again fetches only its manifest.
 */
#define _GNU_SOURCE
#include "../archive/archive.h"
#include "../base/crash.h"
#include "../base/file.h"
#include "../base/hex.h"
#include "../boot/boot.h"
#include "../clone/clone.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TRIES 5             /* attempts at one layer's transfer, as tart's */
#define PAGE 4096u          /* strata keeps all-zero pages as holes */
#define CACHE_FILE "tart-pulls"
#define CACHE_KEEP 512      /* manifests remembered */
#define CACHE_MAX (CACHE_KEEP * 300u)

typedef struct {
    store *st;
    const tart_pull_opts *po;
    tart_pull_result *res;
    const tart_image *im;
    const char *what;   /* HOST/REPO:TAG */
    remote *r;
    int disk_fd;
    int fresh;          /* disk.img was made by this pull: its ranges are holes */
    char *done_path;
    unsigned char *done; /* per disk layer: 1 finished, checked */
    pthread_mutex_t mu;
    size_t next;        /* the next disk layer to take */
    int failed;         /* a worker failed: the others stop */
    int rc;
    char err[ERR_MESSAGE_MAX];
    uint64_t progress_done;
    remote_guest guest; /* from the config */
    store_id *known;    /* layers earlier tart pulls made (cache/tart-pulls), still here */
    size_t nknown;
} pull_job;

/* ---- one disk layer ---- */

typedef struct {
    pull_job *j;
    const tart_disk_layer *L;
    size_t index;
    uint64_t at;        /* decoded bytes written */
    uint64_t got;       /* compressed bytes received */
    EVP_MD_CTX *zsha, *usha;
    tart_lz4_decoder *dec;
    int sink_failed;    /* the bytes were wrong (not the transfer): don't retry */
    int dirty;          /* its range may hold other bytes: zeros are written too */
} layer_ctx;

static int stopped(pull_job *j)
{
    pthread_mutex_lock(&j->mu);
    int f = j->failed;
    pthread_mutex_unlock(&j->mu);
    return f;
}

/* disk bytes done: decoded, or kept from an interrupted pull */
static void progress(pull_job *j, uint64_t add)
{
    pthread_mutex_lock(&j->mu);
    j->progress_done += add;
    if (j->po && j->po->progress)
        j->po->progress(j->po->progress_ctx, j->progress_done, j->im->disk_size);
    pthread_mutex_unlock(&j->mu);
}

static int all_zero(const unsigned char *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

static int write_at(layer_ctx *c, const unsigned char *p, size_t len, uint64_t off)
{
    int rc = file_pwrite_all(c->j->disk_fd, p, len, off);
    return rc ? tart_fail(-rc, "disk.img of %s: %s", c->j->what, strerror(-rc)) : 0;
}

/* a fresh disk's range is all holes: everything but all-zero pages is
 * written, in runs of pages of the same kind */
static int write_sparse(layer_ctx *c, const unsigned char *p, size_t len, uint64_t off)
{
    int rc = 0;
    while (len && !rc) {
        size_t n = PAGE - (size_t)(off % PAGE);
        n = n < len ? n : len;
        size_t run = n;
        int zero = all_zero(p, n);
        while (run < len && run < (8u << 20)) {
            size_t k = len - run < PAGE ? len - run : PAGE;
            if (all_zero(p + run, k) != zero)
                break;
            run += k;
        }
        if (!zero)
            rc = write_at(c, p, run, off);
        p += run, off += run, len -= run;
    }
    return rc;
}

/* the range may hold other bytes (a clone of an earlier image's disk, or
 * what an interrupted pull left): only the pages that differ are written,
 * and a page that became all zeros is punched, so the pages that did not
 * change keep sharing their blocks and holes stay holes */
static int write_changed(layer_ctx *c, const unsigned char *p, size_t len, uint64_t off)
{
    unsigned char old[PAGE];
    int rc = 0;
    while (len && !rc) {
        size_t n = PAGE - (size_t)(off % PAGE);
        n = n < len ? n : len;
        ssize_t k = pread(c->j->disk_fd, old, n, (off_t)off);
        if (k != (ssize_t)n || memcmp(old, p, n)) {
            int punched = n == PAGE && all_zero(p, n) &&
                          clone_punch_hole(c->j->disk_fd, off, n) == 0;
            rc = punched ? 0 : write_at(c, p, n, off);
        }
        p += n, off += n, len -= n;
    }
    return rc;
}

/* decoded bytes: hashed, and written at their place */
static int write_decoded(void *ctx, const void *data, size_t len)
{
    layer_ctx *c = ctx;
    EVP_DigestUpdate(c->usha, data, len);
    uint64_t off = c->L->offset + c->at;
    c->at += len;
    progress(c->j, len);
    return c->j->fresh && !c->dirty ? write_sparse(c, data, len, off)
                                    : write_changed(c, data, len, off);
}

static int on_compressed(void *ctx, const void *data, size_t len)
{
    layer_ctx *c = ctx;
    if (stopped(c->j))
        return -ECANCELED;
    if (c->got + len > c->L->size) {
        c->sink_failed = 1;
        return tart_fail(EBADMSG, "%s: disk layer %zu: the registry sent more than its %" PRIu64
                         " bytes", c->j->what, c->index + 1, c->L->size);
    }
    EVP_DigestUpdate(c->zsha, data, len);
    c->got += len;
    __atomic_add_fetch(&c->j->res->bytes_fetched, len, __ATOMIC_RELAXED);
    int rc = tart_lz4_decoder_feed(c->dec, data, len);
    if (rc)
        c->sink_failed = 1;
    return rc;
}

static void digest_final(EVP_MD_CTX *x, char out[72])
{
    unsigned char d[32];
    EVP_DigestFinal_ex(x, d, NULL);
    digest_text(d, out);
}

/* the layer's bytes all came: check both digests and the sizes */
static int layer_check(layer_ctx *c)
{
    uint64_t decoded;
    char z[72], u[72];
    int rc = tart_lz4_decoder_end(c->dec, &decoded);
    if (rc)
        return rc;
    digest_final(c->zsha, z);
    digest_final(c->usha, u);
    const char *what = c->j->what;
    size_t i = c->index + 1;
    if (strcmp(z, c->L->digest))
        return tart_fail(EBADMSG, "%s: disk layer %zu: the registry sent bytes whose digest is "
                         "%s, not %s", what, i, z, c->L->digest);
    if (decoded != c->L->usize)
        return tart_fail(EBADMSG, "%s: disk layer %zu decodes to %" PRIu64 " bytes, not the %"
                         PRIu64 " of its %s", what, i, decoded, c->L->usize, TART_ANN_SIZE);
    if (strcmp(u, c->L->udigest))
        return tart_fail(EBADMSG, "%s: disk layer %zu decodes to bytes whose digest is %s, not "
                         "its %s %s", what, i, u, TART_ANN_DIGEST, c->L->udigest);
    return 0;
}

/* GET the layer, resuming a cut transfer where it stopped */
static int layer_fetch(pull_job *j, remote *r, layer_ctx *c)
{
    char name[200];
    snprintf(name, sizeof name, "%s: disk layer %zu", j->what, c->index + 1);
    int rc = tart_lz4_decoder_new(c->L->usize, name, write_decoded, c, &c->dec);
    for (int n = 0; !rc; n++) {
        rc = remote_blob_get(r, c->L->digest, c->got, c->L->size - c->got, 0, on_compressed, c);
        if (!rc || c->sink_failed || stopped(j) || n + 1 >= TRIES || c->got >= c->L->size)
            break;
        rc = 0; /* cut off: ask for the rest */
    }
    if (!rc && c->got != c->L->size)
        rc = tart_fail(EBADMSG, "%s: the registry sent %" PRIu64 " bytes, not %" PRIu64, name,
                       c->got, c->L->size);
    if (!rc)
        rc = layer_check(c);
    return rc;
}

static int layer_pull(pull_job *j, remote *r, size_t i, int dirty)
{
    layer_ctx c = {.j = j, .L = &j->im->disk[i], .index = i, .zsha = EVP_MD_CTX_new(),
                   .usha = EVP_MD_CTX_new(), .dirty = dirty};
    int rc = !c.zsha || !c.usha || !EVP_DigestInit_ex(c.zsha, EVP_sha256(), NULL) ||
                     !EVP_DigestInit_ex(c.usha, EVP_sha256(), NULL)
                 ? tart_oom()
                 : layer_fetch(j, r, &c);
    tart_lz4_decoder_free(c.dec);
    EVP_MD_CTX_free(c.zsha);
    EVP_MD_CTX_free(c.usha);
    return rc;
}

/* ---- slices an earlier pull had ---- */

/* Each pulled image leaves cache/tart-slices/<layer id>: a line per disk
 * layer, "OFFSET USIZE DIGEST UDIGEST". A layer of a new image with the
 * same blob at the same offset and size is copied from that layer's
 * Disk.img instead of downloaded (as tart does from its cache, #825), and
 * kept only if its bytes hash to the uncompressed digest. */
#define SLICES_DIR "tart-slices"

static char *slices_path(store *st, const store_id *id)
{
    char *dir = boot_cache_dir(st), *path = NULL;
    if (dir && asprintf(&path, "%s/%s/%s", dir, SLICES_DIR, id ? id->hex : "") < 0)
        path = NULL;
    free(dir);
    return path;
}

/* best effort: a cache */
static void slices_remember(pull_job *j)
{
    char *path = slices_path(j->st, &j->res->pulled), *dir = slices_path(j->st, NULL);
    size_t cap = j->im->ndisk * 180 + 1, n = 0;
    char *text = malloc(cap);
    for (size_t i = 0; text && i < j->im->ndisk; i++) {
        const tart_disk_layer *L = &j->im->disk[i];
        n += (size_t)snprintf(text + n, cap - n, "%" PRIu64 " %" PRIu64 " %s %s\n", L->offset,
                              L->usize, L->digest, L->udigest);
    }
    if (path && dir && text && !file_mkdir_p(dir, 0755))
        atomic_file_write_all(path, text, n, 0644, 0);
    free(text), free(path), free(dir);
}

/* put [offset, offset+usize) of from into the disk as a clone of it
 * (clone_range: shared blocks where the filesystem has reflinks, so two
 * tags sharing slices share their space; a copy of its data extents
 * elsewhere, holes kept), then hash what landed: 1 if it matched the
 * uncompressed digest */
static int copy_slice(pull_job *j, const char *from, const tart_disk_layer *L)
{
    int fd = open(from, O_RDONLY | O_CLOEXEC);
    EVP_MD_CTX *x = EVP_MD_CTX_new();
    unsigned char *buf = malloc(4u << 20);
    int ok = fd >= 0 && x && buf && EVP_DigestInit_ex(x, EVP_sha256(), NULL) &&
             clone_range(fd, j->disk_fd, L->offset, L->usize) == 0;
    for (uint64_t at = 0; ok && at < L->usize;) {
        size_t want = L->usize - at < (4u << 20) ? (size_t)(L->usize - at) : (4u << 20);
        ssize_t k = pread(j->disk_fd, buf, want, (off_t)(L->offset + at));
        ok = k > 0 && EVP_DigestUpdate(x, buf, (size_t)k);
        at += ok ? (uint64_t)k : 0;
    }
    char d[72] = "";
    if (ok)
        digest_final(x, d);
    if (fd >= 0)
        close(fd);
    EVP_MD_CTX_free(x);
    free(buf);
    return ok && !strcmp(d, L->udigest);
}

/* the Disk.img of an earlier pulled layer that had layer i's blob at its offset */
static char *slice_source(pull_job *j, size_t i)
{
    const tart_disk_layer *L = &j->im->disk[i];
    char want[200], *found = NULL;
    snprintf(want, sizeof want, "%" PRIu64 " %" PRIu64 " %s %s\n", L->offset, L->usize, L->digest,
             L->udigest);
    for (size_t k = 0; k < j->nknown && !found; k++) {
        char *path = slices_path(j->st, &j->known[k]), *text = NULL;
        size_t len;
        if (path && !file_read_all(path, TART_LAYERS_MAX * 180u, &text, &len) &&
            memmem(text, len, want, strlen(want)))
            found = store_layer_file_path(j->st, &j->known[k], "Disk.img");
        free(text);
        free(path);
    }
    return found;
}

/* ---- an earlier image's disk as the start ---- */

/* slices of the image that an earlier pulled layer had at the same place */
static size_t slices_in_common(pull_job *j, const store_id *id)
{
    char *path = slices_path(j->st, id), *text = NULL;
    size_t len, same = 0;
    if (path && !file_read_all(path, TART_LAYERS_MAX * 180u, &text, &len))
        for (size_t i = 0; i < j->im->ndisk; i++) {
            const tart_disk_layer *L = &j->im->disk[i];
            char want[200];
            snprintf(want, sizeof want, "%" PRIu64 " %" PRIu64 " ", L->offset, L->usize);
            for (char *at = text; (at = memmem(at, len - (size_t)(at - text), want, strlen(want)));
                 at++)
                if ((at == text || at[-1] == '\n') && strstr(at, L->udigest) &&
                    (size_t)(strstr(at, L->udigest) - at) < 160) {
                    same++;
                    break;
                }
        }
    free(text);
    free(path);
    return same;
}

/* 1 if a file of layer id clones into dir sharing its blocks (a hint only:
 * clone_fd checks again, and copies where sharing fails) */
static int reflinks_here(pull_job *j, const store_id *id, const char *dir)
{
    char *src = store_layer_file_path(j->st, id, "Settings.json"), *probe = NULL;
    clone_method m = CLONE_SPARSE_COPY;
    int yes = src && asprintf(&probe, "%s/.reflink-probe", dir) >= 0 &&
              (unlink(probe), clone_path(src, probe, 0600, &m) == 0) && m == CLONE_REFLINK;
    if (probe)
        unlink(probe);
    free(probe);
    free(src);
    return yes;
}

/* Where the filesystem shares blocks, a new disk.img starts as a clone of
 * the disk of the earlier pulled image most like this one (the same disk
 * size; the most slices in common, then the latest): decoded pages equal
 * to the base's are then not written (write_changed), so two tags that
 * share most of their data share most of their blocks, here and in the
 * layers imported from here (tart's --deduplicate, by default). Without
 * reflinks the clone would be a copy of the whole base: the disk starts
 * empty there, and the store's chunks are shared only logically. */
static void start_from_base(pull_job *j, const char *dir)
{
    size_t best = SIZE_MAX, best_same = 0;
    for (size_t k = j->nknown; j->fresh && k-- > 0;) {
        char *path = store_layer_file_path(j->st, &j->known[k], "Disk.img");
        struct stat s;
        if (path && !stat(path, &s) && (uint64_t)s.st_size == j->im->disk_size) {
            size_t same = slices_in_common(j, &j->known[k]);
            if (best == SIZE_MAX || same > best_same)
                best = k, best_same = same;
        }
        free(path);
    }
    if (best == SIZE_MAX || !reflinks_here(j, &j->known[best], dir))
        return;
    char *path = store_layer_file_path(j->st, &j->known[best], "Disk.img");
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    clone_method m;
    if (fd >= 0 && ftruncate(j->disk_fd, 0) == 0 && clone_fd(fd, j->disk_fd, &m) == 0) {
        j->fresh = 0;
        if (j->po && j->po->note) {
            char line[200];
            snprintf(line, sizeof line, "the disk starts as a clone of layer %.12s's, pulled before: "
                     "only the pages that differ are written", j->known[best].hex);
            j->po->note(j->po->note_ctx, line);
        }
    } else if (fd >= 0 && (ftruncate(j->disk_fd, 0) < 0 ||
                           ftruncate(j->disk_fd, (off_t)j->im->disk_size) < 0)) {
        j->fresh = 0; /* whatever a failed clone left: compared page by page, so still right */
    }
    if (fd >= 0)
        close(fd);
    free(path);
}

/* ---- the record of finished layers ---- */

static int record_done(pull_job *j, size_t i)
{
    char line[96];
    int n = snprintf(line, sizeof line, "%zu %s\n", i, j->im->disk[i].udigest);
    int rc = file_fsync_fd(j->disk_fd); /* the bytes before the line that vouches for them */
    int fd = rc ? -1 : open(j->done_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (!rc && (fd < 0 || write(fd, line, (size_t)n) != n || file_fsync_fd(fd)))
        rc = tart_fail(errno ? errno : EIO, "%s: %s", j->done_path, strerror(errno ? errno : EIO));
    if (fd >= 0)
        close(fd);
    return rc;
}

/* the range of layer i hashes to its digest */
static int range_matches(pull_job *j, size_t i)
{
    const tart_disk_layer *L = &j->im->disk[i];
    EVP_MD_CTX *x = EVP_MD_CTX_new();
    unsigned char *buf = malloc(4u << 20);
    int ok = x && buf && EVP_DigestInit_ex(x, EVP_sha256(), NULL);
    for (uint64_t at = 0; ok && at < L->usize;) {
        size_t want = L->usize - at < (4u << 20) ? (size_t)(L->usize - at) : (4u << 20);
        ssize_t k = pread(j->disk_fd, buf, want, (off_t)(L->offset + at));
        ok = k > 0 && EVP_DigestUpdate(x, buf, (size_t)k);
        at += k > 0 ? (uint64_t)k : 0;
    }
    char d[72];
    if (ok)
        digest_final(x, d);
    EVP_MD_CTX_free(x);
    free(buf);
    return ok && !strcmp(d, L->udigest);
}

/* layers an interrupted pull finished, checked again */
static void take_done(pull_job *j)
{
    char *text = NULL;
    size_t len;
    if (j->fresh || file_read_all(j->done_path, (size_t)j->im->ndisk * 96 + 1, &text, &len))
        return;
    for (char *line = text, *nl; line < text + len && (nl = memchr(line, '\n', text + len - line));
         line = nl + 1) {
        *nl = 0;
        char *sp = strchr(line, ' ');
        char *end;
        unsigned long long i = strtoull(line, &end, 10);
        if (!sp || end != sp || i >= j->im->ndisk || j->done[i] ||
            strcmp(sp + 1, j->im->disk[i].udigest))
            continue;
        if (range_matches(j, (size_t)i)) {
            j->done[i] = 1;
            j->res->layers_resumed++;
            j->progress_done += j->im->disk[i].usize;
        }
    }
    free(text);
}

/* ---- the workers ---- */

typedef struct {
    pull_job *j;
    remote *r;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    pull_job *j = w->j;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        while (j->next < j->im->ndisk && j->done[j->next])
            j->next++;
        size_t i = j->next++;
        int stop = j->failed || i >= j->im->ndisk;
        pthread_mutex_unlock(&j->mu);
        if (stop)
            break;
        char *from = slice_source(j, i);
        int copied = from && copy_slice(j, from, &j->im->disk[i]);
        int rc = copied ? 0 : layer_pull(j, w->r, i, from != NULL); /* a failed copy left bytes */
        if (!rc) {
            pthread_mutex_lock(&j->mu);
            rc = record_done(j, i);
            if (copied)
                j->res->layers_copied++;
            else
                j->res->layers_fetched++;
            pthread_mutex_unlock(&j->mu);
            if (copied)
                progress(j, j->im->disk[i].usize);
        }
        free(from);
        if (!rc) {
            crash_named("tart-layer-done"); /* tests: a pull killed between layers */
            continue;
        }
        pthread_mutex_lock(&j->mu);
        if (!j->failed && rc != -ECANCELED) { /* the first failure is the one told */
            j->failed = 1;
            j->rc = rc;
            snprintf(j->err, sizeof j->err, "%s", err_last()->message);
        }
        j->failed = 1;
        pthread_mutex_unlock(&j->mu);
        break;
    }
    return NULL;
}

static int fetch_disk(pull_job *j)
{
    unsigned jobs = j->po && j->po->jobs ? j->po->jobs : 4; /* tart's default */
    jobs = jobs > 64 ? 64 : jobs;
    if (jobs > j->im->ndisk)
        jobs = (unsigned)j->im->ndisk;
    worker w[64];
    pthread_t t[64];
    unsigned started = 0;
    int rc = 0;
    for (unsigned k = 0; k < jobs && !rc; k++) {
        w[k].j = j;
        if (!(rc = remote_dup(j->r, &w[k].r)) &&
            (rc = -pthread_create(&t[k], NULL, work, &w[k]))) {
            remote_close(w[k].r);
            rc = tart_fail(-rc, "pull: no thread: %s", strerror(-rc));
        }
        if (!rc)
            started++;
    }
    if (rc) {
        pthread_mutex_lock(&j->mu);
        j->failed = 1;
        pthread_mutex_unlock(&j->mu);
    }
    for (unsigned k = 0; k < started; k++) {
        pthread_join(t[k], NULL);
        remote_close(w[k].r);
    }
    if (!rc && j->failed)
        rc = err_set(ERR_TART, -j->rc, "%s", j->err);
    return rc;
}

/* ---- the scratch VM directory ---- */

static int write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", dir, name) < 0)
        return tart_oom();
    int rc = atomic_file_write_all(path, data, len, 0644, 0);
    if (rc)
        rc = tart_fail(-rc, "%s: %s", path, strerror(-rc));
    free(path);
    return rc;
}

/* disk.img of the disk's size; fresh (holes) unless an earlier pull left it */
static int open_disk(pull_job *j, const char *dir, int existed)
{
    char *path = NULL;
    if (asprintf(&path, "%s/disk.img", dir) < 0 || asprintf(&j->done_path, "%s/done", dir) < 0) {
        free(path);
        return tart_oom();
    }
    struct stat s;
    j->fresh = !existed || stat(path, &s) < 0 || (uint64_t)s.st_size != j->im->disk_size;
    if (j->fresh) { /* what an earlier run left does not fit: start over */
        unlink(path);
        unlink(j->done_path);
    }
    int rc = 0;
    j->disk_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (j->disk_fd < 0 || (j->fresh && ftruncate(j->disk_fd, (off_t)j->im->disk_size) < 0))
        rc = tart_fail(errno, "%s: %s", path, strerror(errno));
    free(path);
    return rc;
}

/* ---- remembering what was pulled ---- */

static char *cache_path(store *st)
{
    char *dir = boot_cache_dir(st), *path = NULL;
    if (dir && asprintf(&path, "%s/%s", dir, CACHE_FILE) < 0)
        path = NULL;
    free(dir);
    return path;
}

/* cache/tart-pulls: a line per image pulled, oldest first,
 * "DIGEST LAYER OS ARCH MACOS_MIN DATA_REP" (MACOS_MIN "-" if none): the
 * guest is kept so a pull that fetches only the manifest still asks the
 * caller about it */
typedef struct {
    char digest[72];
    store_id layer;
    remote_guest guest;
} cache_entry;

/* each well-formed line of text (len bytes) as an entry; the count */
static int cache_parse_line(const char *line, size_t n, cache_entry *e)
{
    char buf[300], min[32];
    long long rep;
    if (n >= sizeof buf)
        return 0;
    memcpy(buf, line, n);
    buf[n] = 0;
    memset(e, 0, sizeof *e);
    if (sscanf(buf, "%71s %64s %15s %15s %31s %lld", e->digest, e->layer.hex, e->guest.os,
               e->guest.arch, min, &rep) != 6 ||
        !tart_digest_valid(e->digest) || strlen(e->layer.hex) != STORE_ID_HEX)
        return 0;
    snprintf(e->guest.macos_min, sizeof e->guest.macos_min, "%s", strcmp(min, "-") ? min : "");
    e->guest.macos_data_rep = rep;
    return 1;
}

static cache_entry *cache_read(store *st, size_t *n)
{
    char *path = cache_path(st), *text = NULL;
    size_t len;
    cache_entry *e = NULL;
    *n = 0;
    if (path && !file_read_all(path, CACHE_MAX, &text, &len) && (e = calloc(len / 100 + 1, sizeof *e)))
        for (char *line = text, *nl; (nl = memchr(line, '\n', text + len - line)); line = nl + 1)
            *n += cache_parse_line(line, (size_t)(nl - line), &e[*n]);
    free(text);
    free(path);
    return e;
}

/* the layer an earlier pull made of the manifest with this digest, if the
 * store still has it */
static int cache_find(store *st, const char *digest, cache_entry *out)
{
    size_t n;
    cache_entry *e = cache_read(st, &n);
    int found = 0;
    for (size_t i = n; !found && i-- > 0;)
        if (!strcmp(e[i].digest, digest) && store_layer_exists(st, &e[i].layer) == 1) {
            *out = e[i];
            found = 1;
        }
    free(e);
    return found;
}

/* the layers earlier tart pulls made that the store still has */
static void cache_known(pull_job *j)
{
    size_t n;
    cache_entry *e = cache_read(j->st, &n);
    if (e && (j->known = calloc(n + 1, sizeof *j->known)))
        for (size_t i = 0; i < n; i++)
            if (store_layer_exists(j->st, &e[i].layer) == 1)
                j->known[j->nknown++] = e[i].layer;
    free(e);
}

/* best effort: a cache */
static void cache_remember(store *st, const char *digest, const store_id *id, const remote_guest *g)
{
    char *path = cache_path(st), *dir = boot_cache_dir(st);
    size_t n = 0, at = 0;
    cache_entry *e = path && dir && !file_mkdir_p(dir, 0755) ? cache_read(st, &n) : NULL;
    char *out = malloc((n + 1) * 300);
    for (size_t i = n > CACHE_KEEP ? n - CACHE_KEEP : 0; out && i <= n; i++) {
        const cache_entry *x = i < n ? &e[i] : NULL;
        if (x && !strcmp(x->digest, digest))
            continue; /* the newest line for a digest is at the end */
        const remote_guest *xg = x ? &x->guest : g;
        at += (size_t)snprintf(out + at, 300, "%s %s %s %s %s %lld\n", x ? x->digest : digest,
                               x ? x->layer.hex : id->hex, xg->os[0] ? xg->os : "-",
                               xg->arch[0] ? xg->arch : "-", xg->macos_min[0] ? xg->macos_min : "-",
                               (long long)xg->macos_data_rep);
    }
    if (out && (e || n == 0) && path && dir)
        atomic_file_write_all(path, out, at, 0644, 0);
    free(out), free(e), free(path), free(dir);
}

/* ---- the pull ---- */

static int read_blob(pull_job *j, const char *digest, uint64_t size, const char *name, char **data,
                     size_t *len)
{
    int rc = remote_blob_read(j->r, digest, size, data, len);
    if (!rc && *len != size) {
        free(*data);
        *data = NULL;
        rc = tart_fail(EBADMSG, "%s: the %s layer is %zu bytes, not the %" PRIu64 " its "
                       "descriptor says", j->what, name, *len, size);
    }
    j->res->bytes_fetched += rc ? 0 : *len;
    return rc;
}

/* the guest, from the config, offered to the caller before any disk byte */
static int check_guest(pull_job *j, const char *dir, const char *config, size_t len)
{
    remote_guest g;
    int macos;
    char *hw = NULL;
    if (asprintf(&hw, "%s/hardware-model", dir) < 0)
        return tart_oom();
    int rc = tart_config_guest(config, len, j->what, hw, &g, &macos);
    j->guest = g;
    if (!rc && j->po && j->po->check_guest)
        rc = j->po->check_guest(j->po->check_ctx, &g);
    free(hw);
    return rc;
}

/* config.json, nvram.bin and disk.img in dir, then the layer made of them */
static int build(pull_job *j, const char *dir, const char *config, size_t clen)
{
    char *nvram = NULL;
    size_t nlen;
    int rc = write_file(dir, "config.json", config, clen);
    if (!rc)
        rc = read_blob(j, j->im->nvram, j->im->nvram_size, "NVRAM", &nvram, &nlen);
    if (!rc) {
        j->res->layers_fetched++;
        rc = write_file(dir, "nvram.bin", nvram, nlen);
    }
    free(nvram);
    if (!rc)
        rc = fetch_disk(j);
    if (!rc && file_fsync_fd(j->disk_fd))
        rc = tart_fail(errno, "%s/disk.img: %s", dir, strerror(errno));
    archive_import_opts io = {.tag = j->po ? j->po->tag : NULL};
    store_commit_result cr;
    if (!rc && (rc = archive_import_tart(j->st, dir, &io, &cr)))
        rc = err_set(ERR_TART, -rc, "%s: %s", j->what, err_last()->message);
    if (!rc) {
        j->res->pulled = cr.id;
        j->res->existed = cr.existed;
    }
    return rc;
}

/* the manifest, checked and parsed, with its digest */
static int read_image(pull_job *j, const remote_ref *src, char digest[72], tart_image *im)
{
    const remote_manifest *had = j->po ? j->po->manifest : NULL; /* remote_pull read it */
    char *fetched = NULL;
    const char *body = had ? had->body : NULL;
    size_t len = had ? had->len : 0;
    int rc = 0;
    if (had)
        memcpy(digest, had->digest, sizeof had->digest);
    else if (!(rc = remote_manifest_get(j->r, src->digest ? src->digest : src->tag, &fetched, &len,
                                        digest)))
        body = fetched;
    if (!rc && !tart_manifest_is_tart(body, len))
        rc = tart_fail(EPROTOTYPE, "%s: an OCI image that is neither a strata layer nor a tart "
                       "VM", j->what);
    tart_image_opts io = {.note = j->po ? j->po->note : NULL,
                          .note_ctx = j->po ? j->po->note_ctx : NULL};
    if (!rc)
        rc = tart_image_parse(body, len, j->what, &io, im);
    free(fetched);
    return rc;
}

/* pulled before: the guest asked about again, and only the tag set */
static int from_cache(pull_job *j, const char *digest)
{
    cache_entry e;
    if (!cache_find(j->st, digest, &e))
        return 0;
    const tart_pull_opts *po = j->po;
    int rc = po && po->check_guest ? po->check_guest(po->check_ctx, &e.guest) : 0;
    if (!rc && po && po->tag)
        rc = store_tag(j->st, e.layer.hex, po->tag);
    if (rc)
        return rc;
    j->res->pulled = e.layer;
    j->res->existed = j->res->cached = 1;
    return 1;
}

static int pull_image(pull_job *j, const remote_ref *src)
{
    char digest[72], *config = NULL;
    size_t clen;
    tart_image im;
    int rc = read_image(j, src, digest, &im);
    if (rc)
        return rc;
    j->im = &im;
    j->res->disk_size = im.disk_size;
    if ((rc = from_cache(j, digest)) != 0) {
        tart_image_free(&im);
        return rc < 0 ? rc : 0;
    }
    store_scratch *sc = NULL;
    int existed = 0, checked = 0;
    if (!(rc = read_blob(j, im.config, im.config_size, "config", &config, &clen)) &&
        !(rc = store_scratch_resumable(j->st, digest + 7, &existed, &sc)))
        checked = !(rc = check_guest(j, store_scratch_path(sc), config, clen));
    if (!rc && !(j->done = calloc(im.ndisk, 1)))
        rc = tart_oom();
    if (!rc && !(rc = open_disk(j, store_scratch_path(sc), existed))) {
        take_done(j);
        cache_known(j);
        start_from_base(j, store_scratch_path(sc));
        rc = build(j, store_scratch_path(sc), config, clen);
    }
    if (!rc) {
        cache_remember(j->st, digest, &j->res->pulled, &j->guest);
        slices_remember(j);
    }
    free(j->known);
    if (j->disk_fd >= 0)
        close(j->disk_fd);
    if (rc && (checked || existed))
        store_scratch_keep(sc); /* the layers finished stay for the next pull */
    else
        store_scratch_drop(sc); /* done, or refused before any disk byte */
    free(config);
    free(j->done);
    free(j->done_path);
    tart_image_free(&im);
    return rc;
}

int tart_pull(store *st, const remote_ref *src, const remote_opts *o, const tart_pull_opts *po,
              tart_pull_result *res)
{
    memset(res, 0, sizeof *res);
    char what[400];
    snprintf(what, sizeof what, "%s/%s%s%s", src->host, src->repo, src->digest ? "@" : ":",
             src->digest ? src->digest : src->tag ? src->tag : "?");
    if (!src->digest && !src->tag)
        return tart_fail(EINVAL, "pull: %s needs a tag or digest", what);
    pull_job j = {.st = st, .po = po, .res = res, .what = what, .disk_fd = -1};
    pthread_mutex_init(&j.mu, NULL);
    int rc = remote_open(src, o, 0, &j.r);
    if (!rc)
        rc = pull_image(&j, src);
    remote_close(j.r);
    pthread_mutex_destroy(&j.mu);
    return rc;
}
