/*
 * tart: a layer pushed as a tart image (docs/tart.md, "Push"), the way
 * tart's VMDirectory.pushToRegistry and DiskV2.push do it: the config
 * layer, the disk in slices of 512 MiB (the last shorter), each slice an
 * Apple LZ4 stream of its own, the NVRAM as it is, then the OCI config
 * stub and the manifest. A blob the registry has (HEAD, as tart since
 * #887) is not sent again. A slice's digest must be known before its
 * upload starts, so each is compressed into a temporary file under the
 * store's tmp/ while both its digests are computed, then sent from there:
 * memory stays at a few buffers per job, disk at one compressed slice per
 * job. The manifest goes last, so a push cut short publishes nothing.
 */
#define _GNU_SOURCE
#include "../base/file.h"
#include "../base/hex.h"
#include "../base/note.h"
#include "../base/testhooks.h"
#include "../clone/clone.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define READ_BUF (1u << 20)
#define JOBS_DEFAULT 4 /* tart push's --concurrency default */

typedef struct {
    store *st;
    const remote_ref *dst;
    const remote_opts *o;
    const tart_push_opts *po;
    const char *disk;    /* the layer's Disk.img */
    const char *scratch; /* where compressed slices wait for their upload */
    uint64_t disk_size, slice;
    size_t nslices;
    tart_descriptor *desc;
    remote_upload_plan plan;
    pthread_mutex_t mu;
    size_t next;
    int rc;
    err_info err;
    uint64_t done;
    tart_push_result *res;
    /* a slice that is all hole, once compressed: the same bytes, so the
     * same descriptor, for every other slice of its size that is too */
    int zero_known;
    tart_descriptor zero;
} push_job;

static void job_fail(push_job *j, int rc)
{
    pthread_mutex_lock(&j->mu);
    if (!j->rc) {
        j->rc = rc;
        j->err = *err_last();
    }
    pthread_mutex_unlock(&j->mu);
}

static void job_count(push_job *j, int uploaded, uint64_t bytes)
{
    pthread_mutex_lock(&j->mu);
    if (uploaded) {
        j->res->blobs_uploaded++;
        j->res->bytes_uploaded += bytes;
    } else
        j->res->blobs_present++;
    pthread_mutex_unlock(&j->mu);
}

/* ---- blob sources: a file (a compressed slice, the NVRAM), or memory ---- */

typedef struct {
    int fd;
    const char *data; /* or memory */
    uint64_t size, pos;
} blob_source;

static long source_read(void *ctx, char *buf, size_t len)
{
    blob_source *s = ctx;
    size_t n = s->size - s->pos < len ? (size_t)(s->size - s->pos) : len;
    if (!n)
        return 0;
    if (s->data)
        memcpy(buf, s->data + s->pos, n);
    else {
        ssize_t got = pread(s->fd, buf, n, (off_t)s->pos);
        if (got <= 0)
            return -1;
        n = (size_t)got;
    }
    s->pos += n;
    return (long)n;
}

static int source_rewind(void *ctx)
{
    ((blob_source *)ctx)->pos = 0;
    return 0;
}

static int source_seek(void *ctx, uint64_t offset)
{
    blob_source *s = ctx;
    if (offset > s->size)
        return -EINVAL;
    s->pos = offset;
    return 0;
}

/* HEAD, then upload only what the registry lacks */
static int send_blob(remote *r, push_job *j, const char *digest, blob_source *s)
{
    int has = remote_blob_exists(r, digest, s->size);
    if (has < 0)
        return has;
    if (has) {
        job_count(j, 0, 0);
        return 0;
    }
    remote_source src = {source_read, source_rewind, s, source_seek};
    int rc = remote_blob_upload(r, digest, s->size, &src, &j->plan, NULL);
    if (!rc)
        job_count(j, 1, s->size);
    return rc;
}

static int send_memory(remote *r, push_job *j, const char *data, size_t len, tart_descriptor *d)
{
    sha256_digest_text(data, len, d->digest);
    d->size = len;
    blob_source s = {.fd = -1, .data = data, .size = len};
    return send_blob(r, j, d->digest, &s);
}

/* ---- a disk slice: compressed into a file, both digests on the way ---- */

typedef struct {
    int fd;
    const char *path;
    uint64_t size;
    EVP_MD_CTX *sha;
} slice_out;

static int slice_write(void *ctx, const void *data, size_t len)
{
    slice_out *o = ctx;
    const char *p = data;
    EVP_DigestUpdate(o->sha, data, len);
    for (size_t done = 0; done < len;) {
        ssize_t n = write(o->fd, p + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return tart_fail(errno, "%s: %s", o->path, strerror(errno));
        done += (size_t)n;
    }
    o->size += len;
    return 0;
}

static int compress_slice(push_job *j, int disk_fd, size_t i, slice_out *out, char *buf)
{
    uint64_t off = (uint64_t)i * j->slice;
    uint64_t len = j->disk_size - off < j->slice ? j->disk_size - off : j->slice;
    EVP_MD_CTX *plain = EVP_MD_CTX_new();
    tart_lz4_encoder *e = NULL;
    int rc = plain && EVP_DigestInit_ex(plain, EVP_sha256(), NULL) ? 0 : tart_oom();
    if (!rc)
        rc = tart_lz4_encoder_new(slice_write, out, &e);
    for (uint64_t done = 0; !rc && done < len;) {
        size_t want = len - done < READ_BUF ? (size_t)(len - done) : READ_BUF;
        ssize_t n = pread(disk_fd, buf, want, (off_t)(off + done));
        if (n <= 0) {
            rc = tart_fail(n < 0 ? errno : EIO, "%s: reading at %llu: %s", j->disk,
                           (unsigned long long)(off + done), n < 0 ? strerror(errno) : "cut short");
            break;
        }
        EVP_DigestUpdate(plain, buf, (size_t)n);
        rc = tart_lz4_encoder_feed(e, buf, (size_t)n);
        done += (uint64_t)n;
    }
    if (!rc)
        rc = tart_lz4_encoder_end(e);
    tart_descriptor *d = &j->desc[i];
    unsigned char h[32];
    if (!rc) {
        EVP_DigestFinal_ex(plain, h, NULL);
        digest_text(h, d->udigest);
        EVP_DigestFinal_ex(out->sha, h, NULL);
        digest_text(h, d->digest);
        d->media_type = TART_MT_DISK_V2;
        d->size = out->size;
        d->annotated = 1;
        d->usize = len;
    }
    tart_lz4_encoder_free(e);
    EVP_MD_CTX_free(plain);
    return rc;
}

/* 1 if slice i of the disk is all hole (reads as zeros without being read) */
static int all_hole(const push_job *j, int disk_fd, size_t i)
{
    uint64_t off = (uint64_t)i * j->slice, data = 0, hole = 0;
    uint64_t end = j->disk_size - off < j->slice ? j->disk_size : off + j->slice;
    int rc = clone_next_data(disk_fd, off, j->disk_size, &data, &hole);
    return rc == -ENXIO || (!rc && data >= end);
}

/* a hole slice the registry already has, as an earlier one of this push
 * or of another: no need to read, hash and compress 512 MiB of zeros */
static int known_hole(remote *r, push_job *j, int disk_fd, size_t i, int *done)
{
    *done = 0;
    uint64_t len = j->disk_size - (uint64_t)i * j->slice < j->slice
                       ? j->disk_size - (uint64_t)i * j->slice : j->slice;
    pthread_mutex_lock(&j->mu);
    int known = j->zero_known && j->zero.usize == len;
    if (known)
        j->desc[i] = j->zero;
    pthread_mutex_unlock(&j->mu);
    if (!known || !all_hole(j, disk_fd, i))
        return 0;
    int has = remote_blob_exists(r, j->desc[i].digest, j->desc[i].size);
    if (has > 0) {
        job_count(j, 0, 0);
        *done = 1;
    }
    return has < 0 ? has : 0;
}

static void remember_hole(push_job *j, int disk_fd, size_t i)
{
    if (!all_hole(j, disk_fd, i))
        return;
    pthread_mutex_lock(&j->mu);
    j->zero = j->desc[i];
    j->zero_known = 1;
    pthread_mutex_unlock(&j->mu);
}

static int push_slice(remote *r, push_job *j, int disk_fd, size_t i, char *buf)
{
    int done;
    int rc = known_hole(r, j, disk_fd, i, &done);
    if (rc || done)
        return rc;
    char *path = NULL;
    if (asprintf(&path, "%s/slice-%zu", j->scratch, i) < 0)
        return tart_oom();
    slice_out out = {.fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), .path = path,
                     .sha = EVP_MD_CTX_new()};
    if (out.fd < 0)
        rc = tart_fail(errno, "%s: %s", path, strerror(errno));
    else if (!out.sha || !EVP_DigestInit_ex(out.sha, EVP_sha256(), NULL))
        rc = tart_oom();
    if (!rc)
        rc = compress_slice(j, disk_fd, i, &out, buf);
    blob_source s = {.fd = out.fd, .size = out.size};
    if (!rc)
        rc = send_blob(r, j, j->desc[i].digest, &s);
    if (!rc)
        remember_hole(j, disk_fd, i);
    if (out.fd >= 0)
        close(out.fd);
    unlink(path);
    EVP_MD_CTX_free(out.sha);
    free(path);
    return rc;
}

static void progress(push_job *j, uint64_t bytes)
{
    pthread_mutex_lock(&j->mu);
    j->done += bytes;
    if (j->po && j->po->progress)
        j->po->progress(j->po->progress_ctx, j->done, j->disk_size);
    pthread_mutex_unlock(&j->mu);
}

static void *worker(void *arg)
{
    push_job *j = arg;
    remote *r = NULL;
    char *buf = malloc(READ_BUF);
    int fd = open(j->disk, O_RDONLY | O_CLOEXEC);
    int rc = !buf ? tart_oom() : fd < 0 ? tart_fail(errno, "%s: %s", j->disk, strerror(errno)) : 0;
    if (!rc)
        rc = remote_open(j->dst, j->o, 1, &r);
    if (rc)
        job_fail(j, rc);
    for (;;) {
        pthread_mutex_lock(&j->mu);
        size_t i = !j->rc && j->next < j->nslices ? j->next++ : SIZE_MAX;
        pthread_mutex_unlock(&j->mu);
        if (i == SIZE_MAX)
            break;
        if ((rc = push_slice(r, j, fd, i, buf)))
            job_fail(j, rc);
        else
            progress(j, j->desc[i].usize);
    }
    remote_close(r);
    if (fd >= 0)
        close(fd);
    free(buf);
    return NULL;
}

static int push_disk(push_job *j)
{
    unsigned jobs = j->po && j->po->jobs ? j->po->jobs : JOBS_DEFAULT;
    if (jobs > 64)
        jobs = 64;
    if (jobs > j->nslices)
        jobs = (unsigned)j->nslices;
    pthread_t t[64];
    unsigned started = 0;
    while (started < jobs && !pthread_create(&t[started], NULL, worker, j))
        started++;
    if (!started)
        return tart_fail(EAGAIN, "push: could not start a thread");
    for (unsigned i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    if (j->rc)
        err_restore(&j->err);
    return j->rc;
}

static int push_nvram(remote *r, push_job *j, const tart_composed *c, tart_descriptor *d)
{
    char *path = store_layer_file_path(j->st, &c->id, c->nvram);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    int rc = !path ? tart_oom() : fd < 0 ? tart_fail(errno, "%s: %s", path, strerror(errno)) : 0;
    EVP_MD_CTX *sha = rc ? NULL : EVP_MD_CTX_new();
    if (!rc && (!sha || !EVP_DigestInit_ex(sha, EVP_sha256(), NULL)))
        rc = tart_oom();
    char buf[65536];
    for (uint64_t off = 0; !rc && off < c->nvram_size;) {
        ssize_t n = pread(fd, buf, sizeof buf, (off_t)off);
        if (n <= 0)
            rc = tart_fail(n < 0 ? errno : EIO, "%s: %s", path, n < 0 ? strerror(errno) : "cut short");
        else {
            EVP_DigestUpdate(sha, buf, (size_t)n);
            off += (uint64_t)n;
        }
    }
    unsigned char h[32];
    if (!rc) {
        EVP_DigestFinal_ex(sha, h, NULL);
        digest_text(h, d->digest);
        d->media_type = TART_MT_NVRAM;
        d->size = c->nvram_size;
        blob_source s = {.fd = fd, .size = c->nvram_size};
        rc = send_blob(r, j, d->digest, &s);
    }
    EVP_MD_CTX_free(sha);
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

/* config, disk, NVRAM; then the stub and the manifest */
static int push_all(push_job *j, remote *r, const tart_composed *c, tart_push_result *res)
{
    size_t n = j->nslices + 2;
    tart_descriptor *layers = j->desc - 1; /* desc sits in layers[1..nslices] */
    layers[0].media_type = TART_MT_CONFIG;
    int rc = send_memory(r, j, c->config, c->config_len, &layers[0]);
    if (!rc)
        rc = push_disk(j);
    if (!rc)
        rc = push_nvram(r, j, c, &layers[n - 1]);
    size_t stub_len = 0, mlen = 0;
    char *stub = rc ? NULL : tart_compose_oci_config(c, &stub_len), *manifest = NULL;
    tart_descriptor config = {0};
    if (!rc && !stub)
        rc = tart_oom();
    if (!rc)
        rc = send_memory(r, j, stub, stub_len, &config);
    if (!rc && !(manifest = tart_compose_manifest(&config, layers, n, c->disk_size,
                                                  (int64_t)time(NULL), &mlen)))
        rc = tart_oom();
    if (!rc && !(rc = remote_manifest_put(r, j->dst->tag, manifest, mlen))) {
        sha256_digest_text(manifest, mlen, res->digest);
        res->layers = n;
    }
    free(manifest);
    free(stub);
    return rc;
}

int tart_push(store *st, const char *ref, const remote_ref *dst, const remote_opts *o,
              const tart_push_opts *po, tart_push_result *res)
{
    memset(res, 0, sizeof *res);
    int rc = remote_push_check_dest(dst);
    if (rc)
        return rc;
    tart_composed c;
    rc = tart_compose(st, ref, po ? po->note : NULL, po ? po->note_ctx : NULL, &c);
    if (rc)
        return rc;
    push_job j = {.st = st, .dst = dst, .o = o, .po = po, .res = res, .mu = PTHREAD_MUTEX_INITIALIZER};
    j.slice = test_hooks_get()->tart_slice ? test_hooks_get()->tart_slice : TART_SLICE_SIZE;
    j.disk_size = c.disk_size;
    j.nslices = (size_t)((c.disk_size + j.slice - 1) / j.slice);
    tart_descriptor *layers = calloc(j.nslices + 2, sizeof *layers);
    j.desc = layers ? layers + 1 : NULL;
    store_pin *pin = NULL; /* gc, meanwhile, keeps the layer being read */
    store_scratch *scratch = NULL;
    char *disk = store_layer_file_path(st, &c.id, "Disk.img");
    if (!layers || !disk)
        rc = tart_oom();
    else if (store_pin_layer(st, &c.id, &pin) || store_scratch_make(st, "tart-push", &scratch))
        rc = tart_fail(EIO, "%s", store_error());
    remote *r = NULL;
    if (!rc) {
        j.disk = disk;
        j.scratch = store_scratch_path(scratch);
        remote_upload_plan_init(&j.plan, dst->host, po ? po->chunk_size : 0);
        rc = remote_open(dst, o, 1, &r);
    }
    if (!rc)
        rc = push_all(&j, r, &c, res);
    remote_close(r);
    store_scratch_drop(scratch);
    store_unpin(pin);
    free(disk);
    free(layers);
    tart_composed_free(&c);
    return rc;
}
