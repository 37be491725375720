/* remote: the deterministic cut of a layer chain into packs, and the chunk index. */
#define _GNU_SOURCE
#include "pack.h"

#include "../base/testhooks.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a set of chunk digests (open addressing; digests are uniform) ---- */

typedef struct {
    unsigned char (*slot)[32];
    char *used;
    size_t cap, n;
} dset;

static uint64_t dhash(const unsigned char *d)
{
    uint64_t h;
    memcpy(&h, d, sizeof h);
    return h;
}

static int dset_grow(dset *s)
{
    size_t cap = s->cap ? s->cap * 2 : 1024;
    dset t = {calloc(cap, 32), calloc(cap, 1), cap, 0};
    if (!t.slot || !t.used) {
        free(t.slot);
        free(t.used);
        return -ENOMEM;
    }
    for (size_t i = 0; i < s->cap; i++)
        if (s->used[i]) {
            size_t j = dhash(s->slot[i]) & (cap - 1);
            while (t.used[j])
                j = (j + 1) & (cap - 1);
            memcpy(t.slot[j], s->slot[i], 32);
            t.used[j] = 1;
            t.n++;
        }
    free(s->slot);
    free(s->used);
    *s = t;
    return 0;
}

/* 1 if added, 0 if it was there, negative on error */
static int dset_add(dset *s, const unsigned char *d)
{
    if ((s->n + 1) * 2 > s->cap && dset_grow(s))
        return -ENOMEM;
    size_t j = dhash(d) & (s->cap - 1);
    while (s->used[j]) {
        if (!memcmp(s->slot[j], d, 32))
            return 0;
        j = (j + 1) & (s->cap - 1);
    }
    memcpy(s->slot[j], d, 32);
    s->used[j] = 1;
    s->n++;
    return 1;
}

static void dset_free(dset *s)
{
    free(s->slot);
    free(s->used);
}

/* ---- the plan ---- */

void pk_plan_free(pk_plan *p)
{
    for (size_t i = 0; i < p->nlayers; i++) {
        store_layer_free(p->layers[i].layer);
        free(p->layers[i].chunks);
    }
    free(p->layers);
    free(p->packs);
    memset(p, 0, sizeof *p);
}

/* the new chunks of l, in manifest order, added to seen */
static int new_chunks(const store_layer *l, dset *seen, pk_layer *out)
{
    size_t cap = 0;
    for (size_t f = 0; f < l->nfiles; f++) {
        const store_file *file = &l->files[f];
        for (size_t d = 0; d < file->ndata; d++) {
            const store_chunk *sc = &file->data[d];
            int fresh = dset_add(seen, sc->digest);
            if (fresh < 0)
                return fresh;
            if (!fresh)
                continue;
            if (out->nchunks == cap) {
                cap = cap ? cap * 2 : 256;
                pk_chunk *n = realloc(out->chunks, cap * sizeof *n);
                if (!n)
                    return -ENOMEM;
                out->chunks = n;
            }
            pk_chunk *k = &out->chunks[out->nchunks++];
            memcpy(k->digest, sc->digest, 32);
            k->file = (uint32_t)f;
            k->chunk = sc->index;
            k->ulen = (uint32_t)store_chunk_len(file, sc->index);
            k->clen = 0;
        }
    }
    return 0;
}

static int add_pack(pk_plan *p, size_t *cap, size_t layer, size_t first)
{
    if (p->npacks == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        pk_pack *n = realloc(p->packs, *cap * sizeof *n);
        if (!n)
            return -ENOMEM;
        p->packs = n;
    }
    p->packs[p->npacks++] = (pk_pack){.layer = layer, .first = first};
    return 0;
}

/* Why this bounds the manifest: a layer's packs are all full (S, less a
 * chunk at worst) but its last. The limit S is the smallest power of two at
 * least D/64, so it is S while the chain's data D grows from 32 S to 64 S:
 * at most 32 full packs per doubling of D (a layer that spans several
 * doublings is cut at the largest S, fewer packs still). With 512 MiB up to 32 GiB (64 packs), 32 per doubling
 * to 512 GiB (4 x 32) and 8 GiB packs from there to 1 TiB (64), a 1 TiB
 * chain of L layers has at most 256 full packs and L partial ones: with 3
 * descriptors per layer, 4 L + 256, under ECR's 500 for L up to 61. */
uint64_t pk_pack_limit(uint64_t chain_bytes)
{
    uint64_t unit = test_hooks_get()->pack_bytes ? test_hooks_get()->pack_bytes : PACK_UNIT_BYTES;
    uint64_t limit = unit;
    while (limit < PACK_MAX_UNITS * unit && limit * PACK_CHAIN_SHARE < chain_bytes)
        limit *= 2;
    return limit;
}

/* A new pack whenever the next chunk would take this one past the layer's
 * pack limit, which depends on the data of the layer and its ancestors only
 * (p->data_bytes before this layer, plus its own). */
static int cut_packs(pk_plan *p, size_t li, size_t *cap)
{
    pk_layer *L = &p->layers[li];
    L->first_pack = p->npacks;
    uint64_t own = 0;
    for (size_t i = 0; i < L->nchunks; i++)
        own += L->chunks[i].ulen;
    L->pack_limit = pk_pack_limit(p->data_bytes + own);
    for (size_t i = 0; i < L->nchunks; i++) {
        pk_pack *cur = p->npacks > L->first_pack ? &p->packs[p->npacks - 1] : NULL;
        if (!cur || cur->ubytes + L->chunks[i].ulen > L->pack_limit) {
            if (add_pack(p, cap, li, i))
                return -ENOMEM;
            cur = &p->packs[p->npacks - 1];
        }
        cur->count++;
        cur->ubytes += L->chunks[i].ulen;
        p->data_bytes += L->chunks[i].ulen;
        p->data_chunks++;
    }
    L->npacks = p->npacks - L->first_pack;
    return 0;
}

int pk_plan_make(store_layer **chain, size_t n, pk_plan *out)
{
    memset(out, 0, sizeof *out);
    out->layers = calloc(n, sizeof *out->layers);
    if (!out->layers) {
        for (size_t i = 0; i < n; i++)
            store_layer_free(chain[i]);
        return -ENOMEM;
    }
    out->nlayers = n;
    for (size_t i = 0; i < n; i++)
        out->layers[i].layer = chain[i];
    dset seen = {0};
    size_t cap = 0;
    int rc = 0;
    for (size_t i = 0; !rc && i < n; i++)
        if (!(rc = new_chunks(chain[i], &seen, &out->layers[i])))
            rc = cut_packs(out, i, &cap);
    dset_free(&seen);
    if (rc)
        pk_plan_free(out);
    return rc;
}

/* ---- the index blob ---- */

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

int pk_index_make(const pk_plan *p, size_t li, sbuf *out)
{
    const pk_layer *L = &p->layers[li];
    unsigned char h[INDEX_HEADER];
    memcpy(h, INDEX_MAGIC, 8);
    put32(h + 8, 1);
    put32(h + 12, (uint32_t)L->npacks);
    put64(h + 16, L->nchunks);
    sbuf_add(out, h, sizeof h);
    for (size_t k = 0; k < L->npacks; k++) {
        const pk_pack *pk = &p->packs[L->first_pack + k];
        unsigned char e[INDEX_PACK_ENTRY];
        memcpy(e, pk->digest, 32);
        put64(e + 32, pk->csize);
        sbuf_add(out, e, sizeof e);
    }
    for (size_t k = 0; k < L->npacks; k++) {
        const pk_pack *pk = &p->packs[L->first_pack + k];
        uint64_t off = 0;
        for (size_t c = pk->first; c < pk->first + pk->count; c++) {
            const pk_chunk *ch = &L->chunks[c];
            unsigned char e[INDEX_CHUNK_ENTRY];
            memcpy(e, ch->digest, 32);
            put32(e + 32, (uint32_t)k);
            put32(e + 36, ch->ulen);
            put64(e + 40, off);
            put32(e + 48, ch->clen);
            sbuf_add(out, e, sizeof e);
            off += ch->clen;
        }
    }
    return out->oom ? -ENOMEM : 0;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* every record agrees with the plan: same chunks, packs, offsets */
static int index_matches(const pk_plan *p, const pk_layer *L, const unsigned char *u)
{
    const unsigned char *c = u + INDEX_HEADER + (size_t)L->npacks * INDEX_PACK_ENTRY;
    for (size_t k = 0; k < L->npacks; k++) {
        const pk_pack *pk = &p->packs[L->first_pack + k];
        uint64_t off = 0;
        for (size_t i = pk->first; i < pk->first + pk->count; i++, c += INDEX_CHUNK_ENTRY) {
            if (memcmp(c, L->chunks[i].digest, 32) || get32(c + 32) != k ||
                get32(c + 36) != L->chunks[i].ulen || get64(c + 40) != off)
                return 0;
            off += get32(c + 48);
        }
        if (off != get64(u + INDEX_HEADER + k * INDEX_PACK_ENTRY + 32))
            return 0;
    }
    return 1;
}

int pk_index_apply(pk_plan *p, size_t li, const void *data, size_t len)
{
    pk_layer *L = &p->layers[li];
    const unsigned char *u = data;
    if (len != INDEX_HEADER + L->npacks * INDEX_PACK_ENTRY + L->nchunks * INDEX_CHUNK_ENTRY ||
        memcmp(u, INDEX_MAGIC, 8) || get32(u + 8) != 1 || get32(u + 12) != L->npacks ||
        get64(u + 16) != L->nchunks || !index_matches(p, L, u))
        return -EINVAL;
    const unsigned char *c = u + INDEX_HEADER + L->npacks * INDEX_PACK_ENTRY;
    for (size_t i = 0; i < L->nchunks; i++)
        L->chunks[i].clen = get32(c + i * INDEX_CHUNK_ENTRY + 48);
    for (size_t k = 0; k < L->npacks; k++) {
        pk_pack *pk = &p->packs[L->first_pack + k];
        memcpy(pk->digest, u + INDEX_HEADER + k * INDEX_PACK_ENTRY, 32);
        pk->csize = get64(u + INDEX_HEADER + k * INDEX_PACK_ENTRY + 32);
        pk->known = 1;
    }
    return 0;
}

void pk_index_free(pk_index *x)
{
    free(x->pack_digest);
    free(x->pack_size);
    free(x->chunks);
    memset(x, 0, sizeof *x);
}

/* records in pack order, contiguous from offset 0, summing to each pack's size */
static int index_records(const unsigned char *c, uint32_t max_ulen, pk_index *x)
{
    uint64_t off = 0;
    uint32_t pack = 0;
    for (size_t i = 0; i < x->nchunks; i++, c += INDEX_CHUNK_ENTRY) {
        pk_entry *e = &x->chunks[i];
        memcpy(e->digest, c, 32);
        e->pack = get32(c + 32);
        e->ulen = get32(c + 36);
        e->offset = get64(c + 40);
        e->clen = get32(c + 48);
        if (e->pack == pack + 1 && off == x->pack_size[pack] && i)
            pack++, off = 0;
        if (e->pack != pack || e->offset != off)
            return rm_fail(EBADMSG, "chunk index: record %zu is out of order", i);
        if (!e->ulen || e->ulen > max_ulen || !e->clen || e->clen > ZSTD_compressBound(e->ulen))
            return rm_fail(EBADMSG, "chunk index: record %zu has impossible lengths", i);
        off += e->clen;
        if (off > x->pack_size[pack])
            return rm_fail(EBADMSG, "chunk index: pack %u is longer than its size", pack);
    }
    if (x->nchunks && (pack + 1 != x->npacks || off != x->pack_size[pack]))
        return rm_fail(EBADMSG, "chunk index: the packs' sizes do not match their chunks");
    return 0;
}

int pk_index_parse(const void *data, size_t len, uint64_t max_chunks, uint32_t max_ulen,
                   pk_index *out)
{
    const unsigned char *u = data;
    memset(out, 0, sizeof *out);
    if (len < INDEX_HEADER || memcmp(u, INDEX_MAGIC, 8) || get32(u + 8) != 1)
        return rm_fail(EBADMSG, "chunk index: not a version 1 index");
    uint64_t npacks = get32(u + 12), nchunks = get64(u + 16);
    if (nchunks > max_chunks || npacks > nchunks || (nchunks && !npacks) ||
        len != INDEX_HEADER + npacks * INDEX_PACK_ENTRY + nchunks * INDEX_CHUNK_ENTRY)
        return rm_fail(EBADMSG, "chunk index: its counts (%" PRIu64 " packs, %" PRIu64
                       " chunks) do not fit its size or the layer", npacks, nchunks);
    out->npacks = npacks;
    out->nchunks = nchunks;
    out->pack_digest = malloc(npacks * 32 + 1);
    out->pack_size = malloc(npacks * sizeof *out->pack_size + 1);
    out->chunks = malloc(nchunks * sizeof *out->chunks + 1);
    if (!out->pack_digest || !out->pack_size || !out->chunks) {
        pk_index_free(out);
        return -ENOMEM;
    }
    for (size_t k = 0; k < npacks; k++) {
        memcpy(out->pack_digest[k], u + INDEX_HEADER + k * INDEX_PACK_ENTRY, 32);
        out->pack_size[k] = get64(u + INDEX_HEADER + k * INDEX_PACK_ENTRY + 32);
    }
    int rc = index_records(u + INDEX_HEADER + npacks * INDEX_PACK_ENTRY, max_ulen, out);
    if (rc)
        pk_index_free(out);
    return rc;
}

/* ---- reading and compressing chunks ---- */

int pk_reader_init(pk_reader *r, store *st, const pk_layer *l)
{
    memset(r, 0, sizeof *r);
    r->st = st;
    r->layer = l;
    r->fd = -1;
    uint32_t max = 0;
    for (size_t f = 0; f < l->layer->nfiles; f++)
        if (l->layer->files[f].chunk_size > max)
            max = l->layer->files[f].chunk_size;
    r->in_cap = max ? max : 4096;
    r->out_cap = ZSTD_compressBound(r->in_cap);
    r->in = malloc(r->in_cap);
    r->out = malloc(r->out_cap);
    r->cctx = ZSTD_createCCtx();
    if (!r->in || !r->out || !r->cctx) {
        pk_reader_done(r);
        return -ENOMEM;
    }
    /* fixed parameters: the same chunk gives the same frame on every machine */
    ZSTD_CCtx_setParameter(r->cctx, ZSTD_c_compressionLevel, PACK_ZSTD_LEVEL);
    ZSTD_CCtx_setParameter(r->cctx, ZSTD_c_checksumFlag, 0);
    ZSTD_CCtx_setParameter(r->cctx, ZSTD_c_contentSizeFlag, 1);
    ZSTD_CCtx_setParameter(r->cctx, ZSTD_c_dictIDFlag, 0);
    return 0;
}

void pk_reader_done(pk_reader *r)
{
    if (r->fd >= 0)
        close(r->fd);
    free(r->in);
    free(r->out);
    ZSTD_freeCCtx(r->cctx);
    r->in = r->out = NULL;
    r->cctx = NULL;
    r->fd = -1;
}

static int open_file(pk_reader *r, uint32_t f)
{
    if (r->fd >= 0 && r->fd_file == f)
        return 0;
    if (r->fd >= 0)
        close(r->fd);
    const store_layer *l = r->layer->layer;
    char *path = store_layer_file_path(r->st, &l->id, l->files[f].name);
    if (!path)
        return -ENOMEM;
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc = r->fd < 0 ? rm_fail(errno, "%s: %s", path, strerror(errno)) : 0;
    free(path);
    r->fd_file = f;
    return rc;
}

int pk_reader_frame(pk_reader *r, const pk_chunk *c, const char **frame, size_t *len)
{
    int rc = open_file(r, c->file);
    if (rc)
        return rc;
    const store_file *f = &r->layer->layer->files[c->file];
    uint64_t off = c->chunk * f->chunk_size;
    size_t got = 0;
    while (got < c->ulen) {
        ssize_t n = pread(r->fd, r->in + got, c->ulen - got, (off_t)(off + got));
        if (n <= 0)
            return rm_fail(n < 0 ? errno : EIO, "layer %.12s: %s: %s", r->layer->layer->id.hex,
                           f->name, n < 0 ? strerror(errno) : "shorter than its manifest says");
        got += (size_t)n;
    }
    size_t z = ZSTD_compress2(r->cctx, r->out, r->out_cap, r->in, c->ulen);
    if (ZSTD_isError(z))
        return rm_fail(EIO, "zstd: %s", ZSTD_getErrorName(z));
    *frame = r->out;
    *len = z;
    return 0;
}
