/* remote: pull, a layer chain from a registry into the store through the
 * store's receive API (docs/remote.md, "Pull"). Everything that comes from
 * the registry is checked before the store takes it: blobs by digest, the
 * layer manifest's digest is its id, chunks by their SHA-256 (in the store). */
#define _GNU_SOURCE
#include "../base/note.h"
#include "../base/clock.h"
#include "pack.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PULL_INFO_MAX (1u << 20)

/* where a chunk's bytes are in the registry */
typedef struct {
    unsigned char digest[32];
    size_t pack; /* in remote_artifact.packs */
    uint64_t offset;
    uint32_t clen, ulen;
} chunk_place;

typedef struct {
    store *st;
    remote *r;
    remote_artifact a;
    store_id *ids;      /* of each layer of the chain, root first */
    char **man, **info; /* their manifest and info blobs */
    size_t *mlen, *ilen;
    store_receive **rx; /* for the layers the store lacks */
    /* every chunk of the indexes read so far, each once, in runs sorted by
     * digest: a layer's index is sorted alone and merged with the run
     * before it while that one is at most twice as long, so a chain of n
     * chunks costs O(n log n) however it is cut into layers, and a lookup
     * searches at most log2(n) + 1 runs */
    chunk_place *map;
    size_t nmap, cap;
    size_t run[66]; /* where each run starts; run[nruns] is nmap */
    size_t nruns;
    /* per pack of the artifact, for the layer being fetched: its wants and
     * whether a worker fetched it whole; entries are cleared after each
     * layer, so a chain of many layers costs no O(layers x packs) */
    size_t *pack_first, *pack_count;
    unsigned char *pack_claimed;
    unsigned jobs;      /* asked for; 0: one for the machine */
    int probed;         /* the first chunk request was made alone */
    int norange;        /* the registry refused Range: packs come whole */
    uint64_t done, planned; /* pack bytes received, and asked for so far */
    const remote_pull_opts *po;
    remote_pull_result *res;
} pull_job;

/* the total grows layer by layer, so only the end says done == total */
static void pull_progress(pull_job *j, int end)
{
    uint64_t done = __atomic_load_n(&j->done, __ATOMIC_RELAXED);
    uint64_t total = end ? done : done >= j->planned ? done + 1 : j->planned;
    if (j->po && j->po->progress)
        j->po->progress(j->po->progress_ctx, done, total);
}

static int by_digest(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

/* 1 if a layer manifest's parent line names parent (NULL: it has none).
 * Checked as each manifest arrives, so a manifest listing layers that are
 * no chain costs two GETs, not two per layer it lists; the store checks
 * the whole manifest when it receives the layer. */
static int parent_is(const char *m, size_t len, const store_id *parent)
{
    static const char head[] = "strata-layer 1\nparent ";
    size_t h = sizeof head - 1;
    int has = len > h && !memcmp(m, head, h);
    if (!parent)
        return !has;
    return has && len > h + STORE_ID_HEX && !memcmp(m + h, parent->hex, STORE_ID_HEX) &&
           m[h + STORE_ID_HEX] == '\n';
}

/* the manifest and info blobs of layer i; the manifest's digest is the layer id */
static int read_meta(pull_job *j, size_t i)
{
    const remote_artifact_layer *L = &j->a.layers[i];
    if (L->manifest_size > store_manifest_max() || L->info_size > PULL_INFO_MAX)
        return rm_fail(EBADMSG, "layer %zu of the chain: its manifest or info is larger than a "
                                "layer's can be", i);
    int rc = remote_blob_read(j->r, L->manifest, L->manifest_size, &j->man[i], &j->mlen[i]);
    if (!rc)
        rc = remote_blob_read(j->r, L->info, L->info_size, &j->info[i], &j->ilen[i]);
    if (!rc)
        snprintf(j->ids[i].hex, sizeof j->ids[i].hex, "%s", L->manifest + 7);
    if (!rc && i + 1 == j->a.nlayers && strcmp(j->ids[i].hex, j->a.top.hex))
        rc = rm_fail(EBADMSG, "the tag names layer %.12s, yet its chain ends at %.12s",
                     j->a.top.hex, j->ids[i].hex);
    if (!rc && !parent_is(j->man[i], j->mlen[i], i ? &j->ids[i - 1] : NULL))
        rc = rm_fail(EBADMSG, "layer %.12s: its parent is not the layer before it in the chain",
                     j->ids[i].hex);
    return rc;
}

/* the data chunks of l and its largest chunk size: the bounds of its index */
static void index_bounds(const store_layer *l, uint64_t *ndata, uint32_t *max_ulen)
{
    *ndata = 0;
    *max_ulen = 1;
    for (size_t f = 0; f < l->nfiles; f++) {
        *ndata += l->files[f].ndata;
        if (l->files[f].chunk_size > *max_ulen)
            *max_ulen = l->files[f].chunk_size;
    }
}

static int index_packs_match(const pull_job *j, size_t i, const pk_index *x)
{
    const remote_artifact_layer *L = &j->a.layers[i];
    if (x->npacks != L->npacks)
        return rm_fail(EBADMSG, "layer %.12s: its chunk index names %zu packs, the manifest %zu",
                       j->ids[i].hex, x->npacks, L->npacks);
    for (size_t p = 0; p < x->npacks; p++) {
        char hex[72];
        digest_text(x->pack_digest[p], hex);
        if (strcmp(hex, j->a.packs[L->first_pack + p]) ||
            x->pack_size[p] != j->a.pack_sizes[L->first_pack + p])
            return rm_fail(EBADMSG, "layer %.12s: its chunk index and manifest name different packs",
                           j->ids[i].hex);
    }
    return 0;
}

/* the chunk's place in the map, or NULL */
static const chunk_place *map_find(const pull_job *j, const unsigned char digest[32])
{
    for (size_t r = 0; r < j->nruns; r++) {
        const chunk_place *p = bsearch(digest, j->map + j->run[r], j->run[r + 1] - j->run[r],
                                       sizeof *j->map, by_digest);
        if (p)
            return p;
    }
    return NULL;
}

/* sorted [a, a + na) and [b, b + nb) into out, a digest in both once (at
 * a's place, an earlier layer's: any place holds the same bytes, which are
 * checked on arrival); the count written */
static size_t merge_unique(const chunk_place *a, size_t na, const chunk_place *b, size_t nb,
                           chunk_place *out)
{
    size_t n = 0, i = 0, k = 0;
    while (i < na || k < nb) {
        int c = i == na ? 1 : k == nb ? -1 : memcmp(a[i].digest, b[k].digest, 32);
        const chunk_place *next = c <= 0 ? &a[i++] : &b[k++];
        if (c == 0)
            k++;
        if (!n || memcmp(out[n - 1].digest, next->digest, 32))
            out[n++] = *next;
    }
    return n;
}

/* the top run merged into the one below it while that is at most twice as long */
static int map_settle(pull_job *j)
{
    while (j->nruns >= 2) {
        size_t a = j->run[j->nruns - 2], b = j->run[j->nruns - 1], end = j->run[j->nruns];
        if (b - a > 2 * (end - b))
            break;
        chunk_place *tmp = malloc((end - a) * sizeof *tmp);
        if (!tmp)
            return -ENOMEM;
        size_t n = merge_unique(j->map + a, b - a, j->map + b, end - b, tmp);
        memcpy(j->map + a, tmp, n * sizeof *tmp);
        free(tmp);
        j->nmap = a + n;
        j->run[--j->nruns] = j->nmap;
    }
    return 0;
}

/* layer L's index x as a new run of the map */
static int map_add(pull_job *j, const remote_artifact_layer *L, const pk_index *x)
{
    if (!x->nchunks)
        return 0;
    if (j->nmap + x->nchunks > j->cap) {
        size_t cap = j->cap ? j->cap : 1024;
        while (cap < j->nmap + x->nchunks)
            cap *= 2;
        chunk_place *m = realloc(j->map, cap * sizeof *m);
        if (!m)
            return -ENOMEM;
        j->map = m;
        j->cap = cap;
    }
    chunk_place *run = j->map + j->nmap;
    for (size_t c = 0; c < x->nchunks; c++) {
        const pk_entry *e = &x->chunks[c];
        memcpy(run[c].digest, e->digest, 32);
        run[c].pack = L->first_pack + e->pack;
        run[c].offset = e->offset;
        run[c].clen = e->clen;
        run[c].ulen = e->ulen;
    }
    qsort(run, x->nchunks, sizeof *run, by_digest);
    size_t n = 1; /* an id twice in one index: one of its places, as above */
    for (size_t c = 1; c < x->nchunks; c++)
        if (memcmp(run[n - 1].digest, run[c].digest, 32))
            run[n++] = run[c];
    j->run[j->nruns++] = j->nmap;
    j->nmap += n;
    j->run[j->nruns] = j->nmap;
    return map_settle(j);
}

/* read layer i's index blob (l: its parsed manifest) and add its chunks to the map */
static int add_index(pull_job *j, size_t i, const store_layer *l)
{
    const remote_artifact_layer *L = &j->a.layers[i];
    uint64_t ndata;
    uint32_t max_ulen;
    index_bounds(l, &ndata, &max_ulen);
    uint64_t max_size = INDEX_HEADER + (uint64_t)L->npacks * INDEX_PACK_ENTRY +
                        ndata * INDEX_CHUNK_ENTRY;
    if (L->index_size > max_size)
        return rm_fail(EBADMSG, "layer %.12s: its chunk index is larger than its chunks need",
                       j->ids[i].hex);
    char *ix = NULL;
    size_t xl;
    pk_index x = {0};
    int rc = remote_blob_read(j->r, L->index, L->index_size, &ix, &xl);
    if (!rc)
        rc = pk_index_parse(ix, xl, ndata, max_ulen, &x);
    if (!rc)
        rc = index_packs_match(j, i, &x);
    if (!rc)
        rc = map_add(j, L, &x);
    pk_index_free(&x);
    free(ix);
    return rc;
}

static int add_local_index(pull_job *j, size_t i)
{
    store_layer *l;
    int rc = store_layer_load(j->st, &j->ids[i], &l);
    if (rc)
        return rc;
    rc = add_index(j, i, l);
    store_layer_free(l);
    return rc;
}

/* ---- fetching the chunks a receive needs, in parallel ----
 *
 * The chunk positions a receive still needs are sorted by where their
 * frames lie (pack, offset) and cut into ranges of adjacent frames, each one
 * Range request. Workers (each with its own connection, a frame buffer and
 * a chunk buffer) take ranges in turn and hand each frame, decompressed, to
 * store_receive_chunk, which checks it against its id before writing. A
 * registry that answers a Range with the whole blob (200) or with 416 puts
 * the pull in whole-pack mode: each pack with needed frames is then fetched
 * once, streamed, its needed frames taken as they pass and its digest
 * checked at the end. Memory is the positions (40 bytes each) and two
 * chunk-sized buffers per worker; nothing is buffered per range or pack. */

#define RANGE_MAX (8u << 20)   /* compressed bytes asked in one request (one frame may be more) */
#define RANGE_MIN (1u << 20)   /* ...at least, unless the layer needs less; and the probe's */
#define RANGE_GAP (256u << 10) /* unneeded bytes between two frames still fetched in one request */
#define PULL_BUFFERS_MAX (128ull << 20) /* frame and chunk buffers of all workers together */

typedef struct {
    uint64_t offset;         /* of its frame in the pack */
    const unsigned char *id; /* the chunk's id, in the receive's layer */
    uint64_t chunk;
    uint32_t pack, file, clen, ulen;
} want;

typedef struct {
    size_t first, count; /* its wants */
    uint64_t start, end; /* the bytes asked for */
} want_range;

typedef struct {
    pull_job *j;
    store_receive *rx;
    int on_local_base; /* the first layer received: what it need not fetch was here before */
    want *w;
    size_t nw;
    want_range *r;
    size_t nr;
    size_t *pack_first, *pack_count; /* each pack's wants */
    unsigned char *pack_claimed;     /* fetched whole by some worker */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int probing;          /* the probe's answer (Range or not) is still unknown */
    pthread_cond_t probe_cv;
    size_t next, running;
    int rc;
    err_info err; /* the first worker's error, for the caller's thread */
} fetch_job;

typedef struct {
    fetch_job *f;
    remote *r;
    ZSTD_DCtx *dctx;
    char *frame, *chunk;
    int probe; /* fetch range 0 first, while the others wait for its answer */
} worker;

/* the registry's answer to the probe is known (or it failed): the other
 * workers may start; f->mu held */
static void probe_answered_locked(fetch_job *f)
{
    if (f->probing) {
        f->probing = 0;
        pthread_cond_broadcast(&f->probe_cv);
    }
}

static void probe_answered(fetch_job *f)
{
    pthread_mutex_lock(&f->mu);
    probe_answered_locked(f);
    pthread_mutex_unlock(&f->mu);
}

static void fetch_fail(fetch_job *f, int rc)
{
    pthread_mutex_lock(&f->mu);
    if (!f->rc) {
        f->rc = rc;
        f->err = *err_last();
    }
    pthread_mutex_unlock(&f->mu);
}

static void count(uint64_t *field, uint64_t v)
{
    __atomic_add_fetch(field, v, __ATOMIC_RELAXED);
}

/* the frame in w->frame holds the bytes of wants [a, b) (one place): give them to the store */
static int deliver(worker *w, const want *a, const want *b)
{
    fetch_job *f = w->f;
    int needed = 0;
    for (const want *x = a; x < b && !needed; x++)
        needed = store_receive_needs(f->rx, x->file, x->chunk) == 1;
    if (!needed)
        return 0; /* received already (a retry, or the pack came whole) */
    const char *pack = f->j->a.packs[a->pack];
    size_t got = ZSTD_decompressDCtx(w->dctx, w->chunk, a->ulen, w->frame, a->clen);
    if (ZSTD_isError(got) || got != a->ulen ||
        ZSTD_getFrameContentSize(w->frame, a->clen) != a->ulen)
        return rm_fail(EBADMSG, "pack %s: the chunk at %" PRIu64 " is not one zstd frame of %u bytes",
                       pack, a->offset, a->ulen);
    for (const want *x = a; x < b; x++) {
        if (store_receive_needs(f->rx, x->file, x->chunk) != 1)
            continue;
        int rc = store_receive_chunk(f->rx, x->file, x->chunk, w->chunk, x->ulen);
        if (rc == -EINVAL)
            return rm_fail(EBADMSG, "pack %s: the chunk at %" PRIu64 " does not match its id", pack,
                           a->offset);
        if (rc)
            return rc;
    }
    const remote_pull_opts *po = f->j->po;
    if (po && po->chunk_received)
        po->chunk_received(po->chunk_ctx, a->id, w->chunk, a->ulen);
    count(&f->j->res->chunks_fetched, 1); /* one download, however many places take it */
    return 0;
}

/* one GET's body as it arrives: the frames of a range, or of a whole pack */
typedef struct {
    worker *w;
    size_t pack;
    const want *k, *kend; /* the frames still to take, by offset */
    uint64_t pos;         /* offset in the pack of the next body byte */
    uint64_t body, limit; /* bytes received, and at most expected */
    size_t have;          /* bytes of *k's frame in w->frame */
    int started, whole;
    uint32_t held_ms; /* how long while_fetching held this GET */
    EVP_MD_CTX *sha; /* the whole pack, checked against its digest */
} stream;

static void stream_whole(stream *s)
{
    fetch_job *f = s->w->f;
    s->whole = 1;
    s->pos = 0;
    s->k = f->w + f->pack_first[s->pack];
    s->kend = s->k + f->pack_count[s->pack];
    s->limit = f->j->a.pack_sizes[s->pack];
}

static int take_bytes(stream *s, const char *p, size_t n)
{
    while (n && s->k < s->kend) {
        const want *k = s->k;
        if (s->pos < k->offset) { /* bytes between needed frames */
            uint64_t skip = k->offset - s->pos < n ? k->offset - s->pos : n;
            p += skip, n -= (size_t)skip, s->pos += skip;
            continue;
        }
        size_t take = k->clen - s->have < n ? k->clen - s->have : n;
        memcpy(s->w->frame + s->have, p, take);
        p += take, n -= take, s->pos += take, s->have += take;
        if (s->have < k->clen)
            break;
        const want *b = k;
        while (b < s->kend && b->pack == k->pack && b->offset == k->offset)
            b++;
        int rc = deliver(s->w, k, b);
        if (rc)
            return rc;
        s->k = b;
        s->have = 0;
    }
    return 0;
}

static int on_body(void *ctx, long status, const void *data, size_t n)
{
    stream *s = ctx;
    fetch_job *f = s->w->f;
    if (!s->started) {
        s->started = 1;
        pthread_mutex_lock(&f->mu);
        if (status == 200 && !s->whole) { /* Range ignored: take every needed frame of the pack */
            stream_whole(s);
            f->j->norange = 1;
            f->pack_claimed[s->pack] = 1;
        }
        probe_answered_locked(f); /* its status is the answer; the body may still take a while */
        pthread_mutex_unlock(&f->mu);
    }
    s->body += n;
    if (s->body > s->limit)
        return rm_fail(EBADMSG, "blob %s: the registry sent more than %" PRIu64 " bytes",
                       f->j->a.packs[s->pack], s->limit);
    if (s->whole)
        EVP_DigestUpdate(s->sha, data, n);
    count(&f->j->res->bytes_fetched, n);
    count(&f->j->done, n);
    int rc = take_bytes(s, data, n);
    const remote_pull_opts *po = f->j->po;
    if (!rc && po && po->while_fetching) /* may block: the server stops once the socket is full */
        rc = po->while_fetching(po->chunk_ctx, &s->held_ms);
    return rc;
}

/* one GET of range r (or of its whole pack, *whole); *whole is set if the registry sent it all */
static int fetch_once(worker *w, const want_range *r, size_t pack, int *whole, long *status)
{
    fetch_job *f = w->f;
    stream s = {.w = w, .pack = pack, .k = f->w + r->first, .kend = f->w + r->first + r->count,
                .pos = r->start, .limit = r->end - r->start, .sha = EVP_MD_CTX_new()};
    if (*whole)
        stream_whole(&s);
    if (!s.sha || !EVP_DigestInit_ex(s.sha, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(s.sha);
        return -ENOMEM;
    }
    const char *digest = f->j->a.packs[pack];
    count(&f->j->res->requests, 1);
    int rc = rm_blob_stream(w->r, digest, *whole ? 0 : r->start, *whole ? 0 : r->end - r->start,
                            on_body, &s, status);
    *whole = s.whole;
    if (!rc && s.k != s.kend)
        rc = rm_fail(EBADMSG, "blob %s: the registry sent %" PRIu64 " bytes, fewer than asked",
                     digest, s.body);
    if (!rc && s.whole) {
        unsigned char d[32];
        char hex[72];
        EVP_DigestFinal_ex(s.sha, d, NULL);
        digest_text(d, hex);
        if (s.body != s.limit || strcmp(hex, digest))
            rc = rm_fail(EBADMSG, "blob %s: the registry sent different bytes (%s)", digest, hex);
    }
    EVP_MD_CTX_free(s.sha);
    return rc;
}

/* claim pack for a whole fetch: 0 if another worker has it already */
static int claim_pack(fetch_job *f, size_t pack)
{
    pthread_mutex_lock(&f->mu);
    int mine = !f->pack_claimed[pack];
    f->pack_claimed[pack] = 1;
    f->j->norange = 1;
    probe_answered_locked(f);
    pthread_mutex_unlock(&f->mu);
    return mine;
}

/* The caller's chunk_source hook holds the bytes of some wants of range r
 * (a lazily served guest read them first): give those to the store. 1 if
 * the range needs nothing more, so its GET is not sent; a negative errno
 * from the hook ends the pull with it. */
static int range_supplied(worker *w, const want_range *r)
{
    fetch_job *f = w->f;
    const remote_pull_opts *po = f->j->po;
    if (!po || !po->chunk_source)
        return 0;
    int left = 0;
    for (size_t i = r->first; i < r->first + r->count; i++) {
        const want *x = &f->w[i];
        if (store_receive_needs(f->rx, x->file, x->chunk) != 1)
            continue;
        int held = po->chunk_source(po->chunk_ctx, x->id, x->ulen, w->chunk);
        if (held < 0)
            return held; /* the caller stops the pull (its receive stays resumable) */
        if (held != 1 || store_receive_chunk(f->rx, x->file, x->chunk, w->chunk, x->ulen))
            left = 1; /* not held, or not the chunk: fetched as usual */
    }
    return !left;
}

/* range ri, retried on transient failures; in whole-pack mode its pack, once */
static int fetch_range(worker *w, size_t ri)
{
    fetch_job *f = w->f;
    const want_range *r = &f->r[ri];
    size_t pack = f->w[r->first].pack;
    pthread_mutex_lock(&f->mu);
    int whole = f->j->norange;
    pthread_mutex_unlock(&f->mu);
    int supplied = whole ? 0 : range_supplied(w, r);
    if (supplied)
        return supplied < 0 ? supplied : 0;
    if (whole && !claim_pack(f, pack))
        return 0;
    const remote_pull_opts *po = f->j->po;
    int held_back = po && po->before_fetch ? po->before_fetch(po->chunk_ctx) : 0;
    if (held_back)
        return held_back;
    for (int n = 0;; n++) {
        long status = 0;
        int rc = fetch_once(w, r, pack, &whole, &status);
        if (!rc)
            return 0;
        if (status == 416 && !whole) { /* Range refused: the whole pack instead */
            if (!claim_pack(f, pack))
                return 0;
            whole = 1;
            n--;
            continue;
        }
        int transient = rc == -EIO || status >= 500 || status == 429;
        if (!transient || n + 1 >= RM_TRIES)
            return rc;
        rm_backoff(n, 0);
    }
}

static void *fetch_worker(void *arg)
{
    worker *w = arg;
    fetch_job *f = w->f;
    if (w->probe) {
        int rc = fetch_range(w, 0);
        if (rc)
            fetch_fail(f, rc);
        probe_answered(f);
    }
    pthread_mutex_lock(&f->mu);
    while (f->probing)
        pthread_cond_wait(&f->probe_cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
    for (;;) {
        pthread_mutex_lock(&f->mu);
        size_t i = f->next < f->nr && !f->rc ? f->next++ : SIZE_MAX;
        pthread_mutex_unlock(&f->mu);
        if (i == SIZE_MAX)
            break;
        int rc = fetch_range(w, i);
        if (rc)
            fetch_fail(f, rc);
    }
    pthread_mutex_lock(&f->mu);
    f->running--;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

static int by_place(const void *a_, const void *b_)
{
    const want *a = a_, *b = b_;
    if (a->pack != b->pack)
        return a->pack < b->pack ? -1 : 1;
    if (a->offset != b->offset)
        return a->offset < b->offset ? -1 : 1;
    if (a->file != b->file)
        return a->file < b->file ? -1 : 1;
    return a->chunk < b->chunk ? -1 : a->chunk > b->chunk;
}

/* every position the receive still needs, with its frame's place, sorted by place */
static int plan_wants(fetch_job *f, uint32_t *max_ulen)
{
    const store_layer *l = store_receive_layer(f->rx);
    pull_job *j = f->j;
    size_t n = 0, k = 0;
    for (size_t i = 0; i < l->nfiles; i++)
        for (size_t d = 0; d < l->files[i].ndata; d++)
            n += store_receive_needs(f->rx, i, l->files[i].data[d].index) == 1;
    if (!(f->w = calloc(n ? n : 1, sizeof *f->w)))
        return -ENOMEM;
    *max_ulen = 1;
    for (size_t i = 0; i < l->nfiles; i++) {
        const store_file *file = &l->files[i];
        for (size_t d = 0; d < file->ndata; d++) {
            const store_chunk *c = &file->data[d];
            if (store_receive_needs(f->rx, i, c->index) != 1) {
                j->res->chunks_present += f->on_local_base;
                continue;
            }
            uint64_t len = store_chunk_len(file, c->index);
            const chunk_place *p = map_find(j, c->digest);
            if (!p || p->ulen != len)
                return rm_fail(EBADMSG, "layer %.12s: %s chunk %" PRIu64 " is in no chunk index of "
                                        "its chain", l->id.hex, file->name, c->index);
            f->w[k++] = (want){.offset = p->offset, .id = c->digest, .chunk = c->index,
                               .pack = (uint32_t)p->pack, .file = (uint32_t)i, .clen = p->clen,
                               .ulen = p->ulen};
            if (p->ulen > *max_ulen)
                *max_ulen = p->ulen;
        }
    }
    f->nw = n;
    qsort(f->w, n, sizeof *f->w, by_place);
    return 0;
}

/* compressed bytes of the frames wants [from, nw) still need, each frame once */
static uint64_t frame_bytes(const fetch_job *f, size_t from)
{
    uint64_t total = 0;
    for (size_t i = from; i < f->nw; i++)
        if (i == from || f->w[i].pack != f->w[i - 1].pack || f->w[i].offset != f->w[i - 1].offset)
            total += f->w[i].clen;
    return total;
}

/* The size of a range that starts with `left` bytes still to plan: a share
 * of what is left, so ranges shrink towards the layer's end (guided
 * scheduling): early ones are large (few requests), the last ones, which
 * run while other workers have nothing left, are short. */
static uint64_t range_size(uint64_t left, unsigned jobs, uint64_t most)
{
    uint64_t size = left / jobs; /* pull_jobs is at least 1; half this made a third more requests */
    size = size < RANGE_MIN ? RANGE_MIN : size;
    return size > most ? most : size;
}

/* the caller's cap on a GET (remote_pull_opts.range_max), else RANGE_MAX */
static uint64_t range_most(const fetch_job *f)
{
    const remote_pull_opts *po = f->j->po;
    return po && po->range_max && po->range_max < RANGE_MAX ? po->range_max : RANGE_MAX;
}

/* cut the sorted wants into ranges of nearby frames of one pack, each of at
 * most range_size bytes (the first of a pull, made alone, of RANGE_MIN) */
static int plan_ranges(fetch_job *f, unsigned jobs)
{
    if (!(f->r = calloc(f->nw ? f->nw : 1, sizeof *f->r)))
        return -ENOMEM;
    f->pack_first = f->j->pack_first;
    f->pack_count = f->j->pack_count;
    f->pack_claimed = f->j->pack_claimed;
    uint64_t most = range_most(f), left = frame_bytes(f, 0);
    uint64_t first = RANGE_MIN < most ? RANGE_MIN : most, max = first;
    for (size_t i = 0; i < f->nw;) {
        const want *a = &f->w[i];
        size_t g = i;
        while (g < f->nw && f->w[g].pack == a->pack && f->w[g].offset == a->offset)
            g++;
        if (!f->pack_count[a->pack])
            f->pack_first[a->pack] = i;
        f->pack_count[a->pack] += g - i;
        want_range *cur = f->nr ? &f->r[f->nr - 1] : NULL;
        uint64_t end = a->offset + a->clen;
        if (cur && f->w[cur->first].pack == a->pack && a->offset >= cur->end &&
            a->offset - cur->end <= RANGE_GAP && end - cur->start <= max) {
            cur->end = end;
            cur->count += g - i;
        } else {
            f->r[f->nr++] = (want_range){.first = i, .count = g - i, .start = a->offset, .end = end};
            max = f->nr == 1 && !f->j->probed ? first : range_size(left, jobs, most);
        }
        left -= left < a->clen ? left : a->clen;
        i = g;
    }
    for (size_t i = 0; i < f->nr; i++)
        f->j->planned += f->r[i].end - f->r[i].start;
    return 0;
}

static unsigned pull_jobs(const pull_job *j, size_t nr, uint32_t max_ulen)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned jobs = j->jobs;
    if (!jobs) /* downloads wait on the network more than on zstd: a few per core */
        jobs = cores < 2 ? 4 : cores * 2 > 16 ? 16 : (unsigned)cores * 2;
    uint64_t per = (uint64_t)max_ulen + ZSTD_compressBound(max_ulen);
    if (jobs > PULL_BUFFERS_MAX / per)
        jobs = PULL_BUFFERS_MAX / per ? (unsigned)(PULL_BUFFERS_MAX / per) : 1;
    if (jobs > nr)
        jobs = nr ? (unsigned)nr : 1;
    return jobs > 64 ? 64 : jobs;
}

static int worker_init(worker *w, fetch_job *f, uint32_t max_ulen)
{
    w->f = f;
    int rc = rm_dup(f->j->r, &w->r);
    if (!rc && (!(w->dctx = ZSTD_createDCtx()) || !(w->frame = malloc(ZSTD_compressBound(max_ulen))) ||
                !(w->chunk = malloc(max_ulen))))
        rc = -ENOMEM;
    return rc;
}

static void worker_done(worker *w)
{
    remote_close(w->r);
    ZSTD_freeDCtx(w->dctx);
    free(w->frame);
    free(w->chunk);
}

/* run the workers over the ranges; the main thread reports progress */
static int run_workers(fetch_job *f, worker *w, unsigned jobs)
{
    pthread_t t[64];
    unsigned started = 0;
    for (; started < jobs; started++) {
        pthread_mutex_lock(&f->mu);
        f->running++;
        pthread_mutex_unlock(&f->mu);
        if (pthread_create(&t[started], NULL, fetch_worker, &w[started])) {
            pthread_mutex_lock(&f->mu);
            f->running--;
            pthread_mutex_unlock(&f->mu);
            break;
        }
    }
    if (!started)
        return rm_fail(EAGAIN, "pull: could not start a thread");
    pthread_mutex_lock(&f->mu);
    while (f->running) {
        pthread_mutex_unlock(&f->mu);
        pull_progress(f->j, 0);
        pthread_mutex_lock(&f->mu);
        struct timespec until = clock_deadline_in(0.2);
        if (f->running)
            pthread_cond_timedwait(&f->cv, &f->mu, &until);
    }
    pthread_mutex_unlock(&f->mu);
    for (unsigned i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    return 0;
}

/* fetch every chunk receive i still needs */
static int fetch_chunks(pull_job *j, size_t i, int on_local_base)
{
    fetch_job f = {.j = j, .rx = j->rx[i], .on_local_base = on_local_base};
    pthread_mutex_init(&f.mu, NULL);
    pthread_cond_init(&f.cv, NULL);
    pthread_cond_init(&f.probe_cv, NULL);
    uint32_t max_ulen = 1;
    int rc = plan_wants(&f, &max_ulen);
    if (!rc)
        rc = plan_ranges(&f, pull_jobs(j, f.nw, max_ulen));
    unsigned jobs = rc ? 0 : pull_jobs(j, f.nr, max_ulen);
    worker *w = rc || !f.nr ? NULL : calloc(jobs, sizeof *w);
    if (!rc && f.nr && !w)
        rc = -ENOMEM;
    for (unsigned k = 0; w && !rc && k < jobs; k++)
        rc = worker_init(&w[k], &f, max_ulen);
    if (!rc && f.nr && !j->probed) {
        /* the first request alone until its status is in: a registry that
         * ignores Range then costs each pack once */
        j->probed = 1;
        f.next = 1;
        f.probing = 1;
        w[0].probe = 1;
    }
    if (!rc && f.nr)
        rc = run_workers(&f, w, jobs);
    if (!rc && f.rc) {
        err_restore(&f.err);
        rc = f.rc;
    }
    for (unsigned k = 0; w && k < jobs; k++)
        worker_done(&w[k]);
    free(w);
    for (size_t k = 0; k < f.nw; k++) { /* clean for the next layer, in O(its wants) */
        uint32_t p = f.w[k].pack;
        j->pack_first[p] = j->pack_count[p] = 0;
        j->pack_claimed[p] = 0;
    }
    free(f.w), free(f.r);
    pthread_mutex_destroy(&f.mu);
    pthread_cond_destroy(&f.cv);
    pthread_cond_destroy(&f.probe_cv);
    return rc;
}

/* store_receive_opts.busy_wait: another strata receives the layer */
static int other_receive_wait(void *ctx, const store_id *id, unsigned round)
{
    const remote_pull_opts *po = ctx;
    if (!round && po && po->note)
        note_send(po->note, po->note_ctx,
                  "layer %.12s is being received by another strata; waiting for it", id->hex);
    if (po && po->pause)
        return po->pause(po->pause_ctx);
    struct timespec t = {1, 0};
    nanosleep(&t, NULL);
    return 0;
}

/* begin receiving layer i (its parent is the local layer i - 1, or the receive of it) */
static int receive_layer(pull_job *j, size_t i, size_t first_missing)
{
    store_receive_opts ro = {
        .base_layer = i == first_missing && i > 0 ? &j->ids[i - 1] : NULL,
        .base_rx = i > first_missing ? j->rx[i - 1] : NULL,
        .parent_follows = i > first_missing,
        .resume = 1,
        .busy_wait = other_receive_wait,
        .busy_ctx = (void *)j->po,
    };
    int rc = store_receive_begin(j->st, j->man[i], j->mlen[i], j->info[i], j->ilen[i], &ro,
                                 &j->rx[i]);
    if (rc)
        return rc;
    const store_layer *l = store_receive_layer(j->rx[i]);
    uint64_t resumed = store_receive_resumed(j->rx[i]);
    j->res->chunks_resumed += resumed;
    if (i > first_missing) /* the first layer counts them among its chunks present */
        j->res->chunks_present += resumed;
    if (i == 0 ? l->has_parent : !l->has_parent || strcmp(l->parent.hex, j->ids[i - 1].hex))
        return rm_fail(EBADMSG, "layer %.12s: its parent is not the layer before it in the chain",
                       l->id.hex);
    uint64_t copied = store_receive_copied(j->rx[i]);
    j->res->chunks_local += copied;
    rc = add_index(j, i, l);
    if (!rc)
        rc = fetch_chunks(j, i, i == first_missing);
    if (i == first_missing) /* counted among its chunks present, which they were not */
        j->res->chunks_present -= copied;
    if (!rc && store_receive_missing(j->rx[i]))
        rc = rm_fail(EBADMSG, "layer %.12s: chunks are still missing after the fetch", l->id.hex);
    return rc;
}

/* publish the received layers root first, the top one under tag */
static int finish_all(pull_job *j, size_t first, const char *tag)
{
    int rc = 0;
    for (size_t i = first; i < j->a.nlayers; i++) {
        store_commit_result cr;
        int r = store_receive_finish(j->rx[i], i + 1 == j->a.nlayers ? tag : NULL, &cr);
        j->rx[i] = NULL;
        if (r && !rc)
            rc = r;
        if (rc)
            break;
        j->res->layers_received++;
    }
    return rc;
}

static int pull_chain(pull_job *j, const char *tag)
{
    size_t n = j->a.nlayers, first = n;
    int rc = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        rc = read_meta(j, i);
        int have = rc ? 0 : store_layer_exists(j->st, &j->ids[i]);
        if (have < 0)
            rc = have;
        else if (!have && first == n)
            first = i;
    }
    /* chunks a missing layer shares with local ancestors may sit elsewhere in them */
    for (size_t i = 0; !rc && i < first; i++)
        rc = add_local_index(j, i);
    for (size_t i = first; !rc && i < n; i++)
        rc = receive_layer(j, i, first);
    if (!rc && first < n)
        rc = finish_all(j, first, tag);
    else if (!rc && tag)
        rc = store_tag(j->st, j->ids[n - 1].hex, tag);
    for (size_t i = first; i < n; i++)
        store_receive_abort(j->rx[i]);
    return rc;
}

/* what a pull and a reader both begin with: the OCI manifest read and
 * parsed, the guest checked, the per-layer arrays allocated */
static int job_start(pull_job *j, const remote_ref *src, const remote_opts *o,
                     int (*check_guest)(void *, const remote_guest *), void *check_ctx,
                     char **body, size_t *len, char digest[72])
{
    const char *reference = src->digest ? src->digest : src->tag;
    if (!reference)
        return rm_fail(EINVAL, "pull: the source needs a tag or digest (%s/%s:TAG)", src->host,
                       src->repo);
    int rc = remote_open(src, o, 0, &j->r);
    if (!rc)
        rc = remote_manifest_get(j->r, reference, body, len, digest);
    if (!rc && (rc = remote_artifact_parse(*body, *len, &j->a)) == -EBADMSG &&
        !memmem(*body, *len, REMOTE_ARTIFACT_TYPE, strlen(REMOTE_ARTIFACT_TYPE)) &&
        !memmem(*body, *len, REMOTE_MT_MANIFEST, strlen(REMOTE_MT_MANIFEST)))
        rc = rm_fail(EPROTOTYPE, "%s/%s %s: an OCI image of another kind, not a strata layer",
                     src->host, src->repo, reference);
    if (!rc && check_guest) /* before any blob: a host that can't run it fetches nothing */
        rc = check_guest(check_ctx, &j->a.guest);
    size_t n = j->a.nlayers, np = j->a.npacks ? j->a.npacks : 1;
    if (!rc && (!(j->ids = calloc(n, sizeof *j->ids)) || !(j->man = calloc(n, sizeof *j->man)) ||
                !(j->info = calloc(n, sizeof *j->info)) || !(j->mlen = calloc(n, sizeof *j->mlen)) ||
                !(j->ilen = calloc(n, sizeof *j->ilen)) || !(j->rx = calloc(n, sizeof *j->rx)) ||
                !(j->pack_first = calloc(np, sizeof *j->pack_first)) ||
                !(j->pack_count = calloc(np, sizeof *j->pack_count)) ||
                !(j->pack_claimed = calloc(np, 1))))
        rc = -ENOMEM;
    return rc;
}

static void job_free(pull_job *j)
{
    for (size_t i = 0; j->man && j->info && i < j->a.nlayers; i++)
        free(j->man[i]), free(j->info[i]);
    free(j->ids), free(j->man), free(j->info), free(j->mlen), free(j->ilen), free(j->rx);
    free(j->map);
    free(j->pack_first), free(j->pack_count), free(j->pack_claimed);
    remote_artifact_free(&j->a);
    remote_close(j->r);
}

int remote_pull(store *st, const remote_ref *src, const remote_opts *o,
                const remote_pull_opts *po, remote_pull_result *res)
{
    const char *tag = po ? po->tag : NULL;
    memset(res, 0, sizeof *res);
    pull_job j = {.st = st, .res = res, .po = po, .jobs = po ? po->jobs : 0};
    char *body = NULL, digest[72];
    size_t len = 0;
    int rc = job_start(&j, src, o, po ? po->check_guest : NULL, po ? po->check_ctx : NULL, &body,
                       &len, digest);
    if (!rc)
        rc = pull_chain(&j, tag);
    if (!rc) {
        res->pulled = j.ids[j.a.nlayers - 1];
        res->whole_packs = j.norange;
        pull_progress(&j, 1);
        rm_profile_pull(j.r, st, body, len, &res->pulled, po, res); /* a hint: never fails the pull */
    }
    if (po && po->other) {
        memset(po->other, 0, sizeof *po->other);
        if (rc == -EPROTOTYPE) { /* handed over: another puller reads it */
            *po->other = (remote_manifest){.body = body, .len = len};
            memcpy(po->other->digest, digest, sizeof digest);
            body = NULL;
        }
    }
    free(body);
    job_free(&j);
    return rc == -ENOMEM ? rm_fail(ENOMEM, "pull: out of memory") : rc;
}

/* ---- a layer read in place ----
 *
 * The same job a pull begins with, stopped once every layer's manifest,
 * info and chunk index are read: its chunk map then places any chunk of
 * the chain, and stays as it is, so threads may search it at once. Each
 * chunk fetch takes a connection from a small pool (a connection is for
 * one thread at a time). */

#define READER_POOL 8

struct remote_reader {
    pull_job j;
    remote_pull_result res; /* the job's counters, unused */
    pthread_mutex_t mu;
    remote *idle[READER_POOL];
    size_t nidle;
    char digest[72]; /* of the OCI manifest read */
    char *body;      /* the OCI manifest read (its boot profile's annotations) */
    size_t blen;
};

static int reader_indexes(remote_reader *rd)
{
    pull_job *j = &rd->j;
    int rc = 0;
    for (size_t i = 0; !rc && i < j->a.nlayers; i++)
        rc = read_meta(j, i);
    for (size_t i = 0; !rc && i < j->a.nlayers; i++) {
        store_layer *l;
        if (!(rc = store_manifest_parse(j->man[i], j->mlen[i], j->info[i], j->ilen[i], &l))) {
            rc = add_index(j, i, l);
            store_layer_free(l);
        } else {
            rc = rm_fail(EBADMSG, "layer %.12s: %s", j->ids[i].hex, store_error());
        }
    }
    return rc;
}

int remote_reader_open(const remote_ref *src, const remote_opts *o,
                       int (*check_guest)(void *ctx, const remote_guest *g), void *check_ctx,
                       remote_reader **out)
{
    *out = NULL;
    remote_reader *rd = calloc(1, sizeof *rd);
    if (!rd)
        return rm_fail(ENOMEM, "reader: out of memory");
    rd->j.res = &rd->res;
    pthread_mutex_init(&rd->mu, NULL);
    char *body = NULL;
    size_t len = 0;
    int rc = job_start(&rd->j, src, o, check_guest, check_ctx, &body, &len, rd->digest);
    rd->body = body;
    rd->blen = len;
    if (!rc && !rd->j.a.nlayers)
        rc = rm_fail(EBADMSG, "%s/%s: the manifest names no layer", src->host, src->repo);
    if (!rc)
        rc = reader_indexes(rd);
    if (rc) {
        remote_reader_close(rd);
        return rc == -ENOMEM ? rm_fail(ENOMEM, "reader: out of memory") : rc;
    }
    *out = rd;
    return 0;
}

const store_id *remote_reader_top(const remote_reader *rd, const char **manifest, size_t *mlen,
                                  const char **info, size_t *ilen)
{
    size_t top = rd->j.a.nlayers - 1;
    *manifest = rd->j.man[top];
    *mlen = rd->j.mlen[top];
    *info = rd->j.info[top];
    *ilen = rd->j.ilen[top];
    return &rd->j.ids[top];
}

const char *remote_reader_digest(const remote_reader *rd)
{
    return rd->digest;
}

size_t remote_reader_chain(const remote_reader *rd, const store_id **ids)
{
    *ids = rd->j.ids;
    return rd->j.a.nlayers;
}

int remote_reader_place(const remote_reader *rd, const unsigned char id[32], char pack[72],
                        uint64_t *offset)
{
    const chunk_place *p = map_find(&rd->j, id);
    if (!p)
        return -ENOENT;
    snprintf(pack, 72, "%s", rd->j.a.packs[p->pack]);
    *offset = p->offset;
    return 0;
}

static const chunk_place *reader_find(const remote_reader *rd, const unsigned char id[32], uint32_t len)
{
    const chunk_place *p = map_find(&rd->j, id);
    if (!p || p->ulen != len) {
        char hex[72];
        digest_text(id, hex);
        rm_fail(ENOENT, "chunk %s is in no chunk index of the layer's chain", hex);
        return NULL;
    }
    return p;
}

/* a connection of the pool's, or a new one */
static int conn_take(remote_reader *rd, remote **c)
{
    *c = NULL;
    pthread_mutex_lock(&rd->mu);
    if (rd->nidle)
        *c = rd->idle[--rd->nidle];
    pthread_mutex_unlock(&rd->mu);
    return *c ? 0 : rm_dup(rd->j.r, c);
}

static void conn_give_back(remote_reader *rd, remote *c)
{
    pthread_mutex_lock(&rd->mu);
    if (c && rd->nidle < READER_POOL)
        rd->idle[rd->nidle++] = c, c = NULL;
    pthread_mutex_unlock(&rd->mu);
    remote_close(c);
}

int remote_reader_chunk(remote_reader *rd, const unsigned char id[32], uint32_t len, void *buf)
{
    const chunk_place *p = reader_find(rd, id, len);
    if (!p)
        return -ENOENT;
    remote *c;
    int rc = conn_take(rd, &c);
    if (!rc)
        rc = remote_chunk_get(c, rd->j.a.packs[p->pack], p->offset, p->clen, p->ulen, id, buf);
    conn_give_back(rd, c);
    return rc;
}

int remote_reader_profile(remote_reader *rd, uint64_t disk_chunks, remote_profile *out)
{
    return remote_profile_fetch(rd->j.r, rd->body, rd->blen, &rd->j.ids[rd->j.a.nlayers - 1],
                                disk_chunks, out);
}

typedef struct {
    unsigned char *data;
    size_t len, cap;
} span_sink;

static int to_span(void *ctx, const void *data, size_t len)
{
    span_sink *m = ctx;
    if (len > m->cap - m->len)
        return rm_fail(EBADMSG, "reader: the registry sent more than the range asked for");
    memcpy(m->data + m->len, data, len);
    m->len += len;
    return 0;
}

/* how many of pl[from..n) are frames one after another in one pack, from pl[from] on */
static size_t span_of(const chunk_place *const *pl, size_t from, size_t n, uint64_t *bytes)
{
    size_t to = from + 1;
    *bytes = pl[from]->clen;
    while (to < n && pl[to]->pack == pl[from]->pack &&
           pl[to]->offset == pl[to - 1]->offset + pl[to - 1]->clen &&
           *bytes + pl[to]->clen <= REMOTE_READER_SPAN_MAX)
        *bytes += pl[to++]->clen;
    return to;
}

/* the frames of pl[from..to), fetched as one range into m, each checked and given to got */
static int span_deliver(remote_reader *rd, remote *c, const chunk_place *const *pl, size_t from,
                        size_t to, span_sink *m, unsigned char *out, remote_chunks_fn got, void *ctx)
{
    const char *pack = rd->j.a.packs[pl[from]->pack];
    m->len = 0;
    int rc = remote_blob_get(c, pack, pl[from]->offset, m->cap, m->cap, to_span, m);
    if (!rc && m->len != m->cap)
        rc = rm_fail(EBADMSG, "pack %s: a range came short", pack);
    for (size_t k = from; !rc && k < to; k++) {
        const chunk_place *p = pl[k];
        const unsigned char *frame = m->data + (p->offset - pl[from]->offset);
        size_t got_len = ZSTD_decompress(out, p->ulen, frame, p->clen);
        unsigned char sum[32];
        if (ZSTD_isError(got_len) || got_len != p->ulen ||
            ZSTD_getFrameContentSize(frame, p->clen) != p->ulen)
            return rm_fail(EBADMSG, "pack %s: the chunk at %" PRIu64 " is not one zstd frame of %u bytes",
                           pack, p->offset, p->ulen);
        SHA256(out, p->ulen, sum);
        if (memcmp(sum, p->digest, 32))
            return rm_fail(EBADMSG, "pack %s: the chunk at %" PRIu64 " does not match its id", pack, p->offset);
        rc = got(ctx, k, out, p->ulen);
    }
    return rc;
}

int remote_reader_chunks(remote_reader *rd, const unsigned char *const *ids, const uint32_t *lens,
                         size_t n, remote_chunks_fn got, void *ctx, unsigned *requests)
{
    const chunk_place **pl = calloc(n ? n : 1, sizeof *pl);
    uint32_t max_ulen = 0;
    if (!pl)
        return rm_oom();
    int rc = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        if (!(pl[i] = reader_find(rd, ids[i], lens[i])))
            rc = -ENOENT;
        else if (!pl[i]->clen || pl[i]->clen > ZSTD_compressBound(pl[i]->ulen))
            rc = rm_fail(EBADMSG, "pack %s: a chunk's compressed length is impossible",
                         rd->j.a.packs[pl[i]->pack]);
        else if (pl[i]->ulen > max_ulen)
            max_ulen = pl[i]->ulen;
    }
    remote *c = NULL;
    span_sink m = {0};
    unsigned char *out = rc ? NULL : malloc(max_ulen ? max_ulen : 1);
    if (!rc && !out)
        rc = rm_oom();
    if (!rc)
        rc = conn_take(rd, &c);
    for (size_t i = 0, to; !rc && i < n; i = to) {
        uint64_t bytes;
        to = span_of(pl, i, n, &bytes);
        unsigned char *grown = bytes > m.cap ? realloc(m.data, bytes) : m.data;
        if (!grown) {
            rc = rm_oom();
            break;
        }
        m.data = grown;
        m.cap = bytes;
        rc = span_deliver(rd, c, pl, i, to, &m, out, got, ctx);
        ++*requests;
    }
    conn_give_back(rd, c);
    free(m.data);
    free(out);
    free((void *)pl);
    return rc;
}

void remote_reader_close(remote_reader *rd)
{
    if (!rd)
        return;
    for (size_t i = 0; i < rd->nidle; i++)
        remote_close(rd->idle[i]);
    job_free(&rd->j);
    free(rd->body);
    pthread_mutex_destroy(&rd->mu);
    free(rd);
}
