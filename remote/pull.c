/* remote: pull, a layer chain from a registry into the store through the
 * store's receive API (docs/remote.md, "Pull"). Everything that comes from
 * the registry is checked before the store takes it: blobs by digest, the
 * layer manifest's digest is its id, chunks by their SHA-256 (in the store). */
#define _GNU_SOURCE
#include "pack.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

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
    chunk_place *map;   /* every chunk of the indexes read so far, sorted by digest */
    size_t nmap;
    char *buf;          /* one chunk */
    size_t buf_cap;
    remote_pull_result *res;
} pull_job;

static int store_failed(int rc)
{
    return rc == -ENOMEM ? rc : rm_fail(rc < 0 ? -rc : EIO, "%s", store_error());
}

static int by_digest(const void *a, const void *b)
{
    return memcmp(a, b, 32);
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
    return rc;
}

static int have_layer(store *st, const store_id *id)
{
    store_id *ids;
    size_t n;
    int rc = store_layers(st, &ids, &n);
    if (rc)
        return store_failed(rc);
    int found = 0;
    for (size_t i = 0; i < n && !found; i++)
        found = !strcmp(ids[i].hex, id->hex);
    free(ids);
    return found;
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
        static const char digits[] = "0123456789abcdef";
        memcpy(hex, "sha256:", 7);
        for (int b = 0; b < 32; b++) {
            hex[7 + 2 * b] = digits[x->pack_digest[p][b] >> 4];
            hex[8 + 2 * b] = digits[x->pack_digest[p][b] & 15];
        }
        hex[71] = 0;
        if (strcmp(hex, j->a.packs[L->first_pack + p]) ||
            x->pack_size[p] != j->a.pack_sizes[L->first_pack + p])
            return rm_fail(EBADMSG, "layer %.12s: its chunk index and manifest name different packs",
                           j->ids[i].hex);
    }
    return 0;
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
    chunk_place *m = rc ? NULL : realloc(j->map, (j->nmap + x.nchunks + 1) * sizeof *m);
    if (!rc && !m)
        rc = -ENOMEM;
    for (size_t c = 0; !rc && c < x.nchunks; c++) {
        const pk_entry *e = &x.chunks[c];
        chunk_place *p = &m[j->nmap++];
        memcpy(p->digest, e->digest, 32);
        p->pack = L->first_pack + e->pack;
        p->offset = e->offset;
        p->clen = e->clen;
        p->ulen = e->ulen;
    }
    if (m) {
        j->map = m;
        qsort(j->map, j->nmap, sizeof *j->map, by_digest);
    }
    pk_index_free(&x);
    free(ix);
    return rc;
}

static int add_local_index(pull_job *j, size_t i)
{
    store_layer *l;
    int rc = store_layer_load(j->st, &j->ids[i], &l);
    if (rc)
        return store_failed(rc);
    rc = add_index(j, i, l);
    store_layer_free(l);
    return rc;
}

/* fetch every chunk receive i still needs */
static int fetch_chunks(pull_job *j, size_t i)
{
    store_receive *rx = j->rx[i];
    const store_layer *l = store_receive_layer(rx);
    int rc = 0;
    for (size_t f = 0; !rc && f < l->nfiles; f++) {
        const store_file *file = &l->files[f];
        for (size_t d = 0; !rc && d < file->ndata; d++) {
            const store_chunk *c = &file->data[d];
            if (store_receive_needs(rx, f, c->index) != 1)
                continue;
            uint64_t len = store_chunk_len(file, c->index);
            const chunk_place *p = bsearch(c->digest, j->map, j->nmap, sizeof *j->map, by_digest);
            if (!p || p->ulen != len)
                return rm_fail(EBADMSG, "layer %.12s: %s chunk %" PRIu64 " is in no chunk index of "
                                        "its chain", l->id.hex, file->name, c->index);
            if (len > j->buf_cap) {
                char *b = realloc(j->buf, len);
                if (!b)
                    return -ENOMEM;
                j->buf = b;
                j->buf_cap = len;
            }
            rc = remote_chunk_get(j->r, j->a.packs[p->pack], p->offset, p->clen, p->ulen,
                                  c->digest, j->buf);
            if (!rc && (rc = store_receive_chunk(rx, f, c->index, j->buf, len)))
                rc = store_failed(rc);
            if (!rc) {
                j->res->chunks_fetched++;
                j->res->bytes_fetched += p->clen;
            }
        }
    }
    return rc;
}

/* begin receiving layer i (its parent is the local layer i - 1, or the receive of it) */
static int receive_layer(pull_job *j, size_t i, size_t first_missing)
{
    store_receive_opts ro = {
        .base_layer = i == first_missing && i > 0 ? &j->ids[i - 1] : NULL,
        .base_rx = i > first_missing ? j->rx[i - 1] : NULL,
        .parent_follows = i > first_missing,
    };
    int rc = store_receive_begin(j->st, j->man[i], j->mlen[i], j->info[i], j->ilen[i], &ro,
                                 &j->rx[i]);
    if (rc)
        return store_failed(rc);
    const store_layer *l = store_receive_layer(j->rx[i]);
    if (i == 0 ? l->has_parent : !l->has_parent || strcmp(l->parent.hex, j->ids[i - 1].hex))
        return rm_fail(EBADMSG, "layer %.12s: its parent is not the layer before it in the chain",
                       l->id.hex);
    rc = add_index(j, i, l);
    if (!rc)
        rc = fetch_chunks(j, i);
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
            rc = store_failed(r);
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
        int have = rc ? 0 : have_layer(j->st, &j->ids[i]);
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
    else if (!rc && tag && (rc = store_tag(j->st, j->ids[n - 1].hex, tag)))
        rc = store_failed(rc);
    for (size_t i = first; i < n; i++)
        store_receive_abort(j->rx[i]);
    return rc;
}

int remote_pull(store *st, const remote_ref *src, const remote_opts *o, const char *tag,
                remote_pull_result *res)
{
    memset(res, 0, sizeof *res);
    const char *reference = src->digest ? src->digest : src->tag;
    if (!reference)
        return rm_fail(EINVAL, "pull: the source needs a tag or digest (%s/%s:TAG)", src->host,
                       src->repo);
    pull_job j = {.st = st, .res = res};
    char *body = NULL;
    size_t len;
    char digest[72];
    int rc = remote_open(src, o, 0, &j.r);
    if (!rc)
        rc = remote_manifest_get(j.r, reference, &body, &len, digest);
    if (!rc)
        rc = remote_artifact_parse(body, len, &j.a);
    size_t n = j.a.nlayers;
    if (!rc && (!(j.ids = calloc(n, sizeof *j.ids)) || !(j.man = calloc(n, sizeof *j.man)) ||
                !(j.info = calloc(n, sizeof *j.info)) || !(j.mlen = calloc(n, sizeof *j.mlen)) ||
                !(j.ilen = calloc(n, sizeof *j.ilen)) || !(j.rx = calloc(n, sizeof *j.rx))))
        rc = -ENOMEM;
    if (!rc)
        rc = pull_chain(&j, tag);
    if (!rc)
        res->pulled = j.ids[n - 1];
    for (size_t i = 0; j.man && j.info && i < n; i++)
        free(j.man[i]), free(j.info[i]);
    free(j.ids), free(j.man), free(j.info), free(j.mlen), free(j.ilen), free(j.rx);
    free(j.map), free(j.buf), free(body);
    remote_artifact_free(&j.a);
    remote_close(j.r);
    return rc == -ENOMEM ? rm_fail(ENOMEM, "pull: out of memory") : rc;
}
