/* remote: pushing a layer chain as one OCI manifest (docs/remote.md). */
#define _GNU_SOURCE
#include "../base/clock.h"
#include "pack.h"
#include "preflight.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MOUNT_FROM_MAX 3 /* sibling repositories tried for a cross-repository mount */
#define PUSH_BUFFERS_MAX (128ull << 20) /* chunk buffers of all workers together */

static void index_cache_store(const store_id *id, const sbuf *index);

typedef struct {
    store *st;
    pk_plan *plan;
    const remote *proto; /* authenticated; each worker has its own copy */
    char **mount_from;
    size_t nmount;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t next, running;
    int rc;
    err_info err; /* the first worker's error, for the caller's thread */
    uint64_t done; /* uncompressed bytes of packs dealt with */
    remote_push_result *res;
    remote_upload_plan upload; /* chunk size, learnt from the registry as the workers go */
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

static void job_add(push_job *j, uint64_t *field, uint64_t v)
{
    pthread_mutex_lock(&j->mu);
    *field += v;
    pthread_mutex_unlock(&j->mu);
}

/* ---- pass 1: compress a pack to learn its digest and frame sizes ---- */

static int measure_pack(pk_reader *rd, pk_pack *pk, pk_layer *L)
{
    EVP_MD_CTX *sha = EVP_MD_CTX_new();
    if (!sha || !EVP_DigestInit_ex(sha, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(sha);
        return -ENOMEM;
    }
    int rc = 0;
    pk->csize = 0;
    for (size_t c = pk->first; !rc && c < pk->first + pk->count; c++) {
        const char *frame;
        size_t len;
        if (!(rc = pk_reader_frame(rd, &L->chunks[c], &frame, &len))) {
            EVP_DigestUpdate(sha, frame, len);
            L->chunks[c].clen = (uint32_t)len;
            pk->csize += len;
        }
    }
    if (!rc)
        EVP_DigestFinal_ex(sha, pk->digest, NULL);
    EVP_MD_CTX_free(sha);
    return rc;
}

/* ---- pass 2: the same frames again, streamed into the upload ---- */

typedef struct {
    pk_reader *rd;
    pk_pack *pk;
    pk_layer *L;
    push_job *job;
    size_t next;    /* the next frame to load */
    size_t counted; /* frames already in the progress count (a resent one is not again) */
    const char *frame;
    size_t flen, fpos;
} pack_source;

/* compress frame s->next again (the registry wants its bytes) */
static int load_frame(pack_source *s)
{
    const pk_chunk *c = &s->L->chunks[s->next++];
    if (pk_reader_frame(s->rd, c, &s->frame, &s->flen))
        return err_pass();
    if (s->flen != c->clen) /* the file changed, or zstd is not deterministic */
        return rm_fail(EIO, "layer %.12s: a chunk compressed differently the second time",
                       s->L->layer->id.hex);
    s->fpos = 0;
    if (s->next > s->counted) {
        s->counted = s->next;
        job_add(s->job, &s->job->done, c->ulen);
    }
    return 0;
}

static long pack_read(void *ctx, char *buf, size_t len)
{
    pack_source *s = ctx;
    while (s->fpos == s->flen) {
        if (s->next == s->pk->first + s->pk->count)
            return 0;
        if (load_frame(s))
            return -1;
    }
    size_t n = s->flen - s->fpos < len ? s->flen - s->fpos : len;
    memcpy(buf, s->frame + s->fpos, n);
    s->fpos += n;
    return (long)n;
}

/* To offset of the pack: the frames before it are skipped by their sizes
 * (pass 1 learnt them), only the one it falls in is compressed again. */
static int pack_seek(void *ctx, uint64_t offset)
{
    pack_source *s = ctx;
    size_t end = s->pk->first + s->pk->count;
    uint64_t at = 0;
    s->next = s->pk->first;
    s->flen = s->fpos = 0;
    while (s->next < end && at + s->L->chunks[s->next].clen <= offset)
        at += s->L->chunks[s->next++].clen;
    if (at == offset)
        return 0;
    if (s->next == end)
        return rm_fail(EINVAL, "layer %.12s: offset %" PRIu64 " is past its pack's end",
                       s->L->layer->id.hex, offset);
    int rc = load_frame(s);
    if (!rc)
        s->fpos = (size_t)(offset - at);
    return rc;
}

static int pack_rewind(void *ctx)
{
    return pack_seek(ctx, 0);
}

/* 1 if the registry has it now (present or mounted), 0 if it must be sent:
 * then *session may hold the upload session a declined mount opened */
static int blob_there(remote *r, push_job *j, const char *digest, uint64_t size, char **session)
{
    *session = NULL;
    int rc = remote_blob_exists(r, digest, size);
    for (size_t m = 0; rc == 0 && m < j->nmount; m++)
        rc = remote_blob_mount(r, digest, j->mount_from[m], session);
    if (rc) {
        remote_upload_abandon(r, *session);
        *session = NULL;
    }
    return rc;
}

/* HEAD, mount, else upload one pack whose digest and sizes are known */
static int send_pack(remote *r, push_job *j, pk_pack *pk, pk_layer *L, pk_reader *rd)
{
    char digest[72], *session;
    digest_text(pk->digest, digest);
    int rc = blob_there(r, j, digest, pk->csize, &session);
    if (rc == 1) {
        job_add(j, &j->done, pk->ubytes);
        job_add(j, &j->res->blobs_present, 1);
        job_add(j, &j->res->chunks_present, pk->count);
        return 0;
    }
    if (rc < 0)
        return rc;
    pack_source s = {.rd = rd, .pk = pk, .L = L, .job = j, .next = pk->first, .counted = pk->first};
    remote_source src = {pack_read, pack_rewind, &s, pack_seek};
    if ((rc = remote_blob_upload(r, digest, pk->csize, &src, &j->upload, session)))
        return rc;
    job_add(j, &j->res->blobs_uploaded, 1);
    job_add(j, &j->res->bytes_uploaded, pk->csize);
    job_add(j, &j->res->chunks_uploaded, pk->count);
    return 0;
}

static int push_pack(remote *r, push_job *j, pk_pack *pk)
{
    pk_layer *L = &j->plan->layers[pk->layer];
    pk_reader rd;
    int rc = pk_reader_init(&rd, j->st, L);
    if (rc)
        return rc;
    int cached = pk->known;
    if (!cached)
        rc = measure_pack(&rd, pk, L);
    if (!rc)
        rc = send_pack(r, j, pk, L, &rd);
    if (rc && cached) { /* the cache was wrong (the registry refused the digest): learn it */
        pk->known = 0;
        if (!(rc = measure_pack(&rd, pk, L)))
            rc = send_pack(r, j, pk, L, &rd);
    }
    pk_reader_done(&rd);
    return rc;
}

static void *worker(void *arg)
{
    push_job *j = arg;
    remote *r = NULL;
    int rc = rm_dup(j->proto, &r);
    if (rc)
        job_fail(j, rc);
    for (;;) {
        pthread_mutex_lock(&j->mu);
        size_t i = j->next < j->plan->npacks && !j->rc && r ? j->next++ : SIZE_MAX;
        pthread_mutex_unlock(&j->mu);
        if (i == SIZE_MAX)
            break;
        if ((rc = push_pack(r, j, &j->plan->packs[i])))
            job_fail(j, rc);
    }
    remote_close(r);
    pthread_mutex_lock(&j->mu);
    j->running--;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

static unsigned default_jobs(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    /* uploads wait on the network more than on zstd: a few per core */
    n = n < 1 ? 4 : n * 2;
    return (unsigned)(n < 4 ? 4 : n > 16 ? 16 : n);
}

static int push_packs(push_job *j, const remote_push_opts *po)
{
    unsigned jobs = po && po->jobs ? po->jobs : default_jobs();
    /* each worker holds a chunk and its compressed bound: keep all of them
     * under PUSH_BUFFERS_MAX even with 64 MiB chunks */
    uint64_t per_job = 0;
    for (size_t i = 0; i < j->plan->nlayers; i++)
        for (size_t f = 0; f < j->plan->layers[i].layer->nfiles; f++)
            if (2ull * j->plan->layers[i].layer->files[f].chunk_size > per_job)
                per_job = 2ull * j->plan->layers[i].layer->files[f].chunk_size;
    if (per_job && jobs > PUSH_BUFFERS_MAX / per_job)
        jobs = PUSH_BUFFERS_MAX / per_job ? (unsigned)(PUSH_BUFFERS_MAX / per_job) : 1;
    if (jobs > j->plan->npacks)
        jobs = j->plan->npacks ? (unsigned)j->plan->npacks : 1;
    pthread_t t[64];
    if (jobs > 64)
        jobs = 64;
    unsigned started = 0;
    for (; started < jobs; started++) {
        pthread_mutex_lock(&j->mu);
        j->running++;
        pthread_mutex_unlock(&j->mu);
        if (pthread_create(&t[started], NULL, worker, j)) {
            pthread_mutex_lock(&j->mu);
            j->running--;
            pthread_mutex_unlock(&j->mu);
            break;
        }
    }
    if (!started)
        return rm_fail(EAGAIN, "push: could not start a thread");
    pthread_mutex_lock(&j->mu);
    while (j->running) {
        uint64_t done = j->done;
        pthread_mutex_unlock(&j->mu);
        if (po && po->progress)
            po->progress(po->progress_ctx, done, j->plan->data_bytes);
        pthread_mutex_lock(&j->mu);
        struct timespec until = clock_deadline_in(0.2);
        if (j->running)
            pthread_cond_timedwait(&j->cv, &j->mu, &until);
    }
    pthread_mutex_unlock(&j->mu);
    for (unsigned i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    if (po && po->progress && !j->rc)
        po->progress(po->progress_ctx, j->plan->data_bytes, j->plan->data_bytes);
    if (j->rc)
        err_restore(&j->err);
    return j->rc;
}

/* ---- small blobs: layer manifests, infos, indexes ---- */

typedef struct {
    const char *data;
    size_t len, pos;
} mem_source;

static long mem_read(void *ctx, char *buf, size_t len)
{
    mem_source *m = ctx;
    size_t n = m->len - m->pos < len ? m->len - m->pos : len;
    memcpy(buf, m->data + m->pos, n);
    m->pos += n;
    return (long)n;
}

static int mem_seek(void *ctx, uint64_t offset)
{
    mem_source *m = ctx;
    if (offset > m->len)
        return rm_fail(EINVAL, "offset %" PRIu64 " is past a blob of %zu bytes", offset, m->len);
    m->pos = (size_t)offset;
    return 0;
}

static int mem_rewind(void *ctx)
{
    return mem_seek(ctx, 0);
}

static int put_small(remote *r, push_job *j, const char *data, size_t len, char digest[72])
{
    sha256_digest_text(data, len, digest);
    char *session;
    int rc = blob_there(r, j, digest, len, &session);
    if (rc == 1) {
        j->res->blobs_present++;
        return 0;
    }
    mem_source m = {data, len, 0};
    remote_source src = {mem_read, mem_rewind, &m, mem_seek};
    if (!rc && !(rc = remote_blob_upload(r, digest, len, &src, &j->upload, session))) {
        j->res->blobs_uploaded++;
        j->res->bytes_uploaded += len;
    }
    return rc;
}

static int add_desc(json_t *layers, const char *mt, const char *digest, uint64_t size)
{
    json_t *d = json_pack("{s:s,s:s,s:I}", "mediaType", mt, "digest", digest, "size", (json_int_t)size);
    return d && !json_array_append_new(layers, d) ? 0 : -ENOMEM;
}

/* the blobs of layer i, uploaded where missing, and their descriptors */
static int push_layer_blobs(remote *r, push_job *j, size_t i, json_t *layers, char config[72],
                            uint64_t *config_size)
{
    const pk_layer *L = &j->plan->layers[i];
    char *m = NULL, *info = NULL, d[72];
    size_t mlen, ilen;
    sbuf index = {0};
    int rc = store_layer_manifest(j->st, &L->layer->id, &m, &mlen, &info, &ilen);
    if (!rc && !(rc = put_small(r, j, m, mlen, d)))
        rc = add_desc(layers, REMOTE_MT_MANIFEST, d, mlen);
    if (!rc) {
        memcpy(config, d, 72);
        *config_size = mlen;
    }
    if (!rc && !(rc = put_small(r, j, info, ilen, d)))
        rc = add_desc(layers, REMOTE_MT_INFO, d, ilen);
    if (!rc && !(rc = pk_index_make(j->plan, i, &index)) &&
        !(rc = put_small(r, j, index.data, index.len, d)))
        rc = add_desc(layers, REMOTE_MT_INDEX, d, index.len);
    if (!rc)
        index_cache_store(&L->layer->id, &index);
    for (size_t k = 0; !rc && k < L->npacks; k++) {
        const pk_pack *pk = &j->plan->packs[L->first_pack + k];
        digest_text(pk->digest, d);
        rc = add_desc(layers, REMOTE_MT_PACK, d, pk->csize);
    }
    free(m);
    free(info);
    free(index.data);
    return rc;
}

/* The architecture a Linux kernel image in the layer is built for (OCI's
 * names), from its header: an arm64 Image has "ARM\x64" at 0x38, an x86
 * bzImage "HdrS" at 0x202. NULL if the file is neither (a compressed
 * arm64 vmlinuz, say): then the manifest does not say. */
static const char *kernel_arch(store *st, const store_id *id, const char *kernel)
{
    char *path = store_layer_file_path(st, id, kernel), head[0x206];
    FILE *f = path && !strchr(kernel, '/') ? fopen(path, "rb") : NULL;
    size_t n = f ? fread(head, 1, sizeof head, f) : 0;
    if (f)
        fclose(f);
    free(path);
    if (n >= 0x3c && !memcmp(head + 0x38, "ARM\x64", 4))
        return "arm64";
    if (n >= 0x206 && !memcmp(head + 0x202, "HdrS", 4))
        return "amd64";
    return NULL;
}

/* What the top layer's guest needs of a host, as annotations a pull reads
 * before any pack (docs/remote.md): its OS from Settings.json (what run
 * goes by: a bundle without one runs nowhere as it is), its architecture
 * (macOS guests run on Apple silicon only; a Linux guest's from its
 * kernel's header, where the linux loader names one), and its
 * HardwareModel's minimum OS and data representation, if it has one. What
 * can't be known is left out, never guessed: a plist that doesn't decode
 * (the store refuses such layers) or a Settings.json that doesn't parse
 * says nothing. */
static void guest_annotations(store *st, const store_layer *top, json_t *ann)
{
    store_identity ident;
    if (store_layer_identity(st, &top->id, &ident))
        memset(&ident, 0, sizeof ident);
    char *path = store_layer_file_path(st, &top->id, "Settings.json"), *text = NULL;
    size_t len = 0;
    json_t *settings = path && !file_read_all(path, 1u << 20, &text, &len)
                           ? json_loadb(text, len, 0, NULL) : NULL;
    free(path);
    free(text);
    const char *os = json_string_value(json_object_get(settings, "os"));
    const char *arch = NULL;
    if (os && !strcmp(os, "macos"))
        arch = "arm64";
    json_t *boot = json_object_get(settings, "boot");
    const char *loader = json_string_value(json_object_get(boot, "loader"));
    const char *kernel = json_string_value(json_object_get(boot, "kernel"));
    if (os && !strcmp(os, "linux") && (!loader || !strcmp(loader, "linux")) && kernel)
        arch = kernel_arch(st, &top->id, kernel);
    if (os && (!strcmp(os, "macos") || !strcmp(os, "linux")))
        json_object_set_new(ann, REMOTE_ANN_OS, json_string(os));
    if (arch)
        json_object_set_new(ann, REMOTE_ANN_ARCH, json_string(arch));
    if (ident.has_hardware_model) {
        char rep[24];
        snprintf(rep, sizeof rep, "%" PRId64, ident.data_representation_version);
        if (ident.minimum_supported_os[0])
            json_object_set_new(ann, REMOTE_ANN_MACOS_MIN, json_string(ident.minimum_supported_os));
        if (ident.data_representation_version > 0)
            json_object_set_new(ann, REMOTE_ANN_MACOS_DATA_REP, json_string(rep));
    }
    json_decref(settings);
}

static char *oci_manifest(push_job *j, remote *r, int host_bound, const remote_push_opts *po, size_t *len)
{
    json_t *layers = json_array();
    char config[72] = "";
    uint64_t config_size = 0;
    int rc = layers ? 0 : -ENOMEM;
    for (size_t i = 0; !rc && i < j->plan->nlayers; i++)
        rc = push_layer_blobs(r, j, i, layers, config, &config_size);
    const store_layer *top = j->plan->layers[j->plan->nlayers - 1].layer;
    uint64_t size = 0;
    for (size_t f = 0; f < top->nfiles; f++)
        size += top->files[f].size;
    char created[32], sz[24], chain[24];
    time_t t = (time_t)top->created;
    struct tm tm;
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    snprintf(sz, sizeof sz, "%" PRIu64, size);
    snprintf(chain, sizeof chain, "%zu", j->plan->nlayers);
    json_t *ann = json_pack("{s:s,s:s,s:s,s:s}", "org.opencontainers.image.created", created,
                            "dev.strata.layer.id", top->id.hex, "dev.strata.layer.size", sz,
                            "dev.strata.chain", chain);
    if (ann && host_bound)
        json_object_set_new(ann, "dev.strata.host-bound", json_string("true"));
    if (!rc && ann)
        guest_annotations(j->st, top, ann);
    if (!rc && ann) /* a boot profile, named where an older pull does not look */
        rc = rm_profile_push(r, j->st, &top->id, ann, j->res, po ? po->note : NULL, po ? po->note_ctx : NULL);
    json_t *doc = rc || !ann ? NULL
                             : json_pack("{s:i,s:s,s:s,s:{s:s,s:s,s:I},s:o,s:o}", "schemaVersion", 2,
                                         "mediaType", REMOTE_MT_OCI, "artifactType", REMOTE_ARTIFACT_TYPE,
                                         "config", "mediaType", REMOTE_MT_MANIFEST, "digest", config,
                                         "size", (json_int_t)config_size, "layers", layers,
                                         "annotations", ann);
    if (!doc) {
        if (rc || !ann) { /* json_pack did not take them */
            json_decref(layers);
            json_decref(ann);
        }
        if (!rc)
            rm_fail(ENOMEM, "push: out of memory");
        return NULL;
    }
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text)
        rm_fail(ENOMEM, "push: out of memory");
    *len = text ? strlen(text) : 0;
    return text;
}

/* ---- a local cache of index blobs: a push knows pack digests without compressing ---- */

/* best effort: a missing or stale entry only costs compressing again */
static void index_cache_load(pk_plan *p, size_t i)
{
    char name[96];
    snprintf(name, sizeof name, "index/%s", p->layers[i].layer->id.hex);
    char *path = rm_cache_path(name);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    struct stat s;
    size_t want = INDEX_HEADER + p->layers[i].npacks * INDEX_PACK_ENTRY +
                  p->layers[i].nchunks * INDEX_CHUNK_ENTRY;
    char *data = NULL;
    if (fd >= 0 && !fstat(fd, &s) && (uint64_t)s.st_size == want && (data = malloc(want)) &&
        read(fd, data, want) == (ssize_t)want)
        pk_index_apply(p, i, data, want);
    free(data);
    if (fd >= 0)
        close(fd);
    free(path);
}

static void index_cache_store(const store_id *id, const sbuf *index)
{
    char name[96];
    snprintf(name, sizeof name, "index/%s", id->hex);
    char *path = rm_cache_path(name);
    if (path)
        rm_cache_write(path, index->data, index->len);
    free(path);
}

/* ---- which sibling repositories may hold our blobs ---- */

static void mount_candidates(push_job *j, const remote_ref *dst)
{
    char *text = rm_cache_read("pushed"); /* lines "host repo", most recent last */
    if (!text)
        return;
    j->mount_from = calloc(MOUNT_FROM_MAX, sizeof *j->mount_from);
    size_t hl = strlen(dst->host);
    /* newest first: walk the lines backwards */
    for (char *end = text + strlen(text); j->mount_from && end > text && j->nmount < MOUNT_FROM_MAX;) {
        char *start = end - 1;
        while (start > text && start[-1] != '\n')
            start--;
        char *line = strndup(start, (size_t)(end - start));
        end = start;
        if (!line)
            break;
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, dst->host, hl) && line[hl] == ' ' && strcmp(line + hl + 1, dst->repo) &&
            line[hl + 1])
            j->mount_from[j->nmount++] = strdup(line + hl + 1);
        free(line);
    }
    free(text);
}

/* best effort: remember dst for later pushes' mounts (64 repositories) */
static void record_push(const remote_ref *dst)
{
    char key[600];
    snprintf(key, sizeof key, "%s %s", dst->host, dst->repo);
    rm_cache_record("pushed", key, key, 64);
}

/* ---- the push ---- */

static int load_chain(store *st, const store_id *top, store_layer ***out, size_t *n)
{
    store_layer **chain = NULL;
    size_t count = 0, cap = 0;
    store_id id = *top;
    for (int more = 1; more;) {
        store_layer *l;
        int rc = store_layer_load(st, &id, &l);
        if (!rc && count == cap) {
            cap = cap ? cap * 2 : 8;
            store_layer **c = realloc(chain, cap * sizeof *c);
            if (!c) {
                store_layer_free(l);
                rc = -ENOMEM;
            } else
                chain = c;
        }
        if (rc) {
            for (size_t i = 0; i < count; i++)
                store_layer_free(chain[i]);
            free(chain);
            return rc;
        }
        chain[count++] = l;
        more = l->has_parent;
        id = l->parent;
    }
    for (size_t i = 0; i < count / 2; i++) { /* root first */
        store_layer *t = chain[i];
        chain[i] = chain[count - 1 - i];
        chain[count - 1 - i] = t;
    }
    *out = chain;
    *n = count;
    return 0;
}

/* a saved state without --with-state: its parent goes instead */
static int choose_layer(store *st, const store_id *id, const remote_push_opts *po, store_id *out,
                        int *host_bound)
{
    store_layer *l;
    if (store_layer_load(st, id, &l))
        return err_pass();
    *out = *id;
    *host_bound = l->nbindings > 0;
    int rc = 0;
    if (l->nbindings && !(po && po->with_state)) {
        if (!l->has_parent)
            rc = rm_fail(EINVAL, "layer %.12s is a saved state with no parent to push", id->hex);
        else if (po && po->note) {
            char line[256];
            snprintf(line, sizeof line,
                     "%.12s is a saved state (host-bound): pushing its parent %.12s instead "
                     "(--with-state pushes the state)", id->hex, l->parent.hex);
            po->note(po->note_ctx, line);
        }
        *out = l->parent;
        *host_bound = 0;
    }
    store_layer_free(l);
    return rc;
}

/* what the registry must accept of this manifest, asked before the first blob */
static int preflight(remote *r, const pk_plan *plan, const store_id *top,
                     const remote_push_opts *po)
{
    size_t *npacks = calloc(plan->nlayers + 1, sizeof *npacks);
    if (!npacks)
        return rm_oom();
    for (size_t i = 0; i < plan->nlayers; i++)
        npacks[i] = plan->layers[i].npacks;
    rm_listing l = {plan->nlayers, npacks, top->hex};
    int rc = rm_preflight(r, &l);
    size_t n = rm_listing_descriptors(&l);
    if (!rc && n > RM_ECR_DESCRIPTORS_MAX && po && po->note) {
        char line[256];
        snprintf(line, sizeof line, "this manifest lists %zu descriptors: %s takes them, but ECR "
                 "takes at most %d, so this tag cannot be copied there", n, r->host,
                 RM_ECR_DESCRIPTORS_MAX);
        po->note(po->note_ctx, line);
    }
    free(npacks);
    return rc;
}

int remote_push_check_dest(const remote_ref *dst)
{
    if (!dst->tag)
        return rm_fail(EINVAL, "push: the destination needs a tag (%s/%s:TAG)", dst->host, dst->repo);
    return 0;
}

int remote_push(store *st, const store_id *id, const remote_ref *dst, const remote_opts *o,
                const remote_push_opts *po, remote_push_result *res)
{
    memset(res, 0, sizeof *res);
    int rc = remote_push_check_dest(dst);
    if (rc)
        return rc;
    int host_bound;
    store_id top;
    rc = choose_layer(st, id, po, &top, &host_bound);
    store_pin *pin = NULL; /* gc, meanwhile, keeps the chain being read */
    if (!rc)
        rc = store_pin_layer(st, &top, &pin);
    store_layer **chain = NULL;
    size_t n = 0;
    pk_plan plan = {0};
    if (!rc && !(rc = load_chain(st, &top, &chain, &n)))
        rc = pk_plan_make(chain, n, &plan);
    free(chain);
    remote *r = NULL;
    if (!rc)
        rc = remote_open(dst, o, 1, &r);
    push_job j = {.st = st, .plan = &plan, .proto = r, .res = res,
                  .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    if (!rc) {
        res->pushed = top;
        res->chunk_bytes = plan.data_bytes;
        for (size_t i = 0; i < plan.nlayers; i++)
            index_cache_load(&plan, i);
        mount_candidates(&j, dst);
        remote_upload_plan_init(&j.upload, dst->host, po ? po->chunk_size : 0);
        /* before the first blob (and authenticated, so the workers start
         * with a token): a refusal now costs no upload */
        rc = preflight(r, &plan, &top, po);
        rc = rc < 0 ? rc : push_packs(&j, po);
    }
    size_t len = 0;
    char *manifest = rc ? NULL : oci_manifest(&j, r, host_bound, po, &len);
    if (!rc && !manifest)
        rc = -ENOMEM;
    if (!rc && !(rc = remote_manifest_put(r, dst->tag, manifest, len))) {
        sha256_digest_text(manifest, len, res->digest);
        record_push(dst);
    }
    free(manifest);
    for (size_t m = 0; m < j.nmount; m++)
        free(j.mount_from[m]);
    free(j.mount_from);
    remote_close(r);
    pk_plan_free(&plan);
    store_unpin(pin);
    return rc;
}
