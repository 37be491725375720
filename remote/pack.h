/* remote: how a layer chain is cut into packs (docs/remote.md, "Packs"). */
#ifndef STRATA_REMOTE_PACK_H
#define STRATA_REMOTE_PACK_H

#include "internal.h"

#include <zstd.h>

/* A layer's packs hold at most pk_pack_limit(D) uncompressed bytes, D being
 * the new-chunk data of that layer and its ancestors (docs/remote.md,
 * "Packs"): PACK_UNIT_BYTES up to 64 times that, then doubling with D
 * (the smallest power-of-two multiple of the unit at least D/64) up to
 * PACK_MAX_UNITS units. D is fixed once the layer exists, so a layer's packs
 * never change when a child is pushed. */
#define PACK_UNIT_BYTES (512ull << 20)
#define PACK_CHAIN_SHARE 64 /* a pack is at least 1/64 of the chain's data so far */
#define PACK_MAX_UNITS 16   /* 8 GiB: compressed, still under GHCR's 10 GB per blob */
#define PACK_ZSTD_LEVEL 3
#define INDEX_MAGIC "STRATACI"
#define INDEX_HEADER 24     /* magic, u32 version, u32 npacks, u64 nchunks */
#define INDEX_PACK_ENTRY 40 /* digest, u64 compressed size */
#define INDEX_CHUNK_ENTRY 52 /* digest, u32 pack, u32 ulen, u64 offset, u32 clen */

typedef struct {
    unsigned char digest[32];
    uint32_t file;  /* index into the layer's files */
    uint32_t ulen;  /* uncompressed length */
    uint64_t chunk; /* chunk number within the file */
    uint32_t clen;  /* compressed length, once compressed */
} pk_chunk;

typedef struct {
    size_t layer;        /* index into the chain */
    size_t first, count; /* its chunks, in the layer's list */
    uint64_t ubytes;
    uint64_t csize;      /* once compressed */
    unsigned char digest[32];
    int known;           /* csize, digest and the chunks' clen are filled */
} pk_pack;

typedef struct {
    store_layer *layer;
    pk_chunk *chunks; /* chunks new in this layer: not in any ancestor, first occurrence */
    size_t nchunks;
    size_t first_pack, npacks; /* in the plan's pack list */
    uint64_t pack_limit;       /* pk_pack_limit of its chain's data */
} pk_layer;

typedef struct {
    pk_layer *layers; /* the chain, root first */
    size_t nlayers;
    pk_pack *packs;
    size_t npacks;
    uint64_t data_bytes; /* uncompressed, all new chunks of the chain */
    uint64_t data_chunks;
} pk_plan;

/* the pack size for a layer whose chain (it and its ancestors) holds
 * chain_bytes of new-chunk data; STRATA_TEST_PACK_BYTES replaces the unit */
uint64_t pk_pack_limit(uint64_t chain_bytes);

/* cut the chain (root first; the plan takes the layers) into packs */
int pk_plan_make(store_layer **chain, size_t n, pk_plan *out);
void pk_plan_free(pk_plan *p);

/* the index blob of layer i of the plan (packs compressed) */
int pk_index_make(const pk_plan *p, size_t i, sbuf *out);

/* Fill the packs and compressed lengths of layer i from an index blob made
 * for the same layer before (a local cache): 0 if it matches the plan chunk
 * for chunk and pack for pack, -EINVAL (nothing changed) if not. */
int pk_index_apply(pk_plan *p, size_t i, const void *data, size_t len);

/* An index blob as received from a registry, checked (for pull). */
typedef struct {
    unsigned char digest[32];
    uint32_t pack, ulen, clen;
    uint64_t offset;
} pk_entry;

typedef struct {
    size_t npacks, nchunks;
    unsigned char (*pack_digest)[32];
    uint64_t *pack_size;
    pk_entry *chunks; /* in pack order, by offset */
} pk_index;

/* Parse and check an index blob (layout in docs/remote.md): max_chunks is
 * the number of data chunks in the layer's manifest and max_ulen its
 * largest chunk size. Sizes are checked before anything is allocated.
 * -EBADMSG with a one-line message if the blob is not a valid index. The
 * caller still checks that each chunk id is one the layer lacks. */
int pk_index_parse(const void *data, size_t len, uint64_t max_chunks, uint32_t max_ulen,
                   pk_index *out);
void pk_index_free(pk_index *x);

/* compresses chunks of one layer, one zstd frame each, reading the layer's files */
typedef struct {
    store *st;
    const pk_layer *layer;
    ZSTD_CCtx *cctx;
    int fd;
    uint32_t fd_file;
    char *in, *out; /* chunk_size and its compress bound */
    size_t in_cap, out_cap;
} pk_reader;

int pk_reader_init(pk_reader *r, store *st, const pk_layer *l);
void pk_reader_done(pk_reader *r);
/* compress chunk c of the layer; *frame points into r->out */
int pk_reader_frame(pk_reader *r, const pk_chunk *c, const char **frame, size_t *len);

#endif
