/* remote: reading a pushed artifact back (the pieces a pull is made of). */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define LAYER_MANIFEST_MAX (256ull << 20) /* the store's manifest bound (docs/manifest.md) */
#define INFO_MAX (1u << 20)
#define PACK_MAX (64ull << 30)

void remote_artifact_free(remote_artifact *a)
{
    free(a->layers);
    free(a->packs);
    free(a->pack_sizes);
    memset(a, 0, sizeof *a);
}

static int bad(const char *why)
{
    return rm_fail(EBADMSG, "not a strata layer manifest: %s", why);
}

/* a descriptor's media type, digest and size, checked */
static int descriptor(json_t *d, const char **mt, const char **digest, uint64_t *size)
{
    *mt = json_string_value(json_object_get(d, "mediaType"));
    *digest = json_string_value(json_object_get(d, "digest"));
    json_t *s = json_object_get(d, "size");
    if (!*mt || !rm_digest_valid(*digest) || !json_is_integer(s) || json_integer_value(s) < 0)
        return bad("a descriptor lacks a media type, sha256 digest or size");
    *size = (uint64_t)json_integer_value(s);
    return 0;
}

static int add_pack(remote_artifact *a, size_t cap, const char *digest, uint64_t size)
{
    if (size == 0 || size > PACK_MAX)
        return bad("a pack's size is out of bounds");
    if (a->npacks == cap)
        return -ENOMEM;
    memcpy(a->packs[a->npacks], digest, 72);
    a->pack_sizes[a->npacks++] = size;
    return 0;
}

/* layers[]: for each layer, manifest, info, index, then its packs */
static int parse_layers(json_t *layers, remote_artifact *a)
{
    size_t n = json_array_size(layers);
    a->layers = calloc(n / 3 + 1, sizeof *a->layers);
    a->packs = calloc(n + 1, sizeof *a->packs);
    a->pack_sizes = calloc(n + 1, sizeof *a->pack_sizes);
    if (!a->layers || !a->packs || !a->pack_sizes)
        return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        const char *mt, *digest;
        uint64_t size;
        if ((rc = descriptor(json_array_get(layers, i), &mt, &digest, &size)))
            break;
        if (!strcmp(mt, REMOTE_MT_PACK)) {
            if (!a->nlayers)
                return bad("a pack comes before any layer");
            rc = add_pack(a, n + 1, digest, size);
            a->layers[a->nlayers - 1].npacks++;
            continue;
        }
        if (strcmp(mt, REMOTE_MT_MANIFEST) || i + 2 >= n)
            return bad("the layers are not groups of manifest, info, index and packs");
        remote_artifact_layer *L = &a->layers[a->nlayers++];
        memcpy(L->manifest, digest, 72);
        L->manifest_size = size;
        L->first_pack = a->npacks;
        const char *mi, *di, *mx, *dx;
        if ((rc = descriptor(json_array_get(layers, i + 1), &mi, &di, &L->info_size)) ||
            (rc = descriptor(json_array_get(layers, i + 2), &mx, &dx, &L->index_size)))
            break;
        if (strcmp(mi, REMOTE_MT_INFO) || strcmp(mx, REMOTE_MT_INDEX))
            return bad("a layer's manifest is not followed by its info and index");
        if (size > LAYER_MANIFEST_MAX || L->info_size > INFO_MAX)
            return bad("a layer manifest or info is larger than strata makes them");
        memcpy(L->info, di, 72);
        memcpy(L->index, dx, 72);
        i += 2;
    }
    return rc;
}

static int by_text(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* 1 if any of the n digests appears twice (sorts them): O(n log n) */
static int repeats(char (*digests)[72], size_t n)
{
    qsort(digests, n, sizeof *digests, by_text);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(digests[i - 1], digests[i]))
            return 1;
    return 0;
}

/* A hostile manifest that repeats entries would cost a pull work for
 * nothing: a layer listed twice is a cycle in what should be a chain, and
 * a pack holds chunks new in one layer only, so neither is ever pushed. */
static int refuse_repeats(const remote_artifact *a)
{
    size_t n = a->nlayers > a->npacks ? a->nlayers : a->npacks;
    char(*copy)[72] = malloc((n ? n : 1) * sizeof *copy);
    if (!copy)
        return -ENOMEM;
    for (size_t i = 0; i < a->nlayers; i++)
        memcpy(copy[i], a->layers[i].manifest, 72);
    int rc = repeats(copy, a->nlayers) ? bad("a layer is listed twice in the chain") : 0;
    if (!rc) {
        memcpy(copy, a->packs, a->npacks * sizeof *copy);
        rc = repeats(copy, a->npacks) ? bad("a pack is listed twice") : 0;
    }
    free(copy);
    return rc;
}

/* a short token of [a-z0-9._-] (an OS or arch name), copied */
static int token(const char *v, char *out, size_t n)
{
    size_t len = strlen(v);
    if (!len || len >= n || strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789._-") != len)
        return -1;
    memcpy(out, v, len + 1);
    return 0;
}

/* the guest annotations; a key that is absent leaves its field empty */
static int parse_guest(json_t *ann, remote_guest *g)
{
    const char *os = json_string_value(json_object_get(ann, REMOTE_ANN_OS));
    const char *arch = json_string_value(json_object_get(ann, REMOTE_ANN_ARCH));
    const char *min = json_string_value(json_object_get(ann, REMOTE_ANN_MACOS_MIN));
    const char *rep = json_string_value(json_object_get(ann, REMOTE_ANN_MACOS_DATA_REP));
    if ((os && token(os, g->os, sizeof g->os)) || (arch && token(arch, g->arch, sizeof g->arch)))
        return bad("its guest OS or architecture annotation is malformed");
    if (min && (!*min || strlen(min) >= sizeof g->macos_min || strspn(min, "0123456789.") != strlen(min)))
        return bad("its minimum macOS annotation is not a version");
    if (min)
        strcpy(g->macos_min, min);
    char *end = NULL;
    long long r = rep ? strtoll(rep, &end, 10) : 0;
    if (rep && (!*rep || *end || r < 1 || r > INT32_MAX || *rep == '0'))
        return bad("its data representation annotation is not a version number");
    g->macos_data_rep = r;
    return 0;
}

int remote_artifact_parse(const char *body, size_t len, remote_artifact *out)
{
    memset(out, 0, sizeof *out);
    if (len > REMOTE_MANIFEST_MAX)
        return bad("larger than 4 MiB");
    json_t *j = json_loadb(body, len, 0, NULL);
    const char *at = json_string_value(json_object_get(j, "artifactType"));
    const char *mt = json_string_value(json_object_get(j, "mediaType"));
    json_t *config = json_object_get(j, "config"), *layers = json_object_get(j, "layers");
    const char *cmt, *cd;
    uint64_t csize;
    int rc = 0;
    if (!j)
        rc = bad("not JSON");
    else if (json_integer_value(json_object_get(j, "schemaVersion")) != 2 || !mt ||
             strcmp(mt, REMOTE_MT_OCI) || !at || strcmp(at, REMOTE_ARTIFACT_TYPE))
        rc = bad("not an OCI image manifest with strata's artifactType");
    else if (!(rc = descriptor(config, &cmt, &cd, &csize)) && strcmp(cmt, REMOTE_MT_MANIFEST))
        rc = bad("the config is not a layer manifest");
    else if (!rc && !json_is_array(layers))
        rc = bad("no layers");
    if (!rc)
        rc = parse_layers(layers, out);
    if (!rc && (!out->nlayers || strcmp(out->layers[out->nlayers - 1].manifest, cd) ||
                out->layers[out->nlayers - 1].manifest_size != csize))
        rc = bad("the last layer is not the config");
    if (!rc)
        rc = refuse_repeats(out);
    if (!rc) {
        json_t *ann = json_object_get(j, "annotations");
        memcpy(out->top.hex, cd + 7, STORE_ID_HEX + 1);
        const char *hb = json_string_value(json_object_get(ann, "dev.strata.host-bound"));
        out->host_bound = hb && !strcmp(hb, "true");
        rc = parse_guest(ann, &out->guest);
    }
    json_decref(j);
    if (rc)
        remote_artifact_free(out);
    return rc;
}

/* ---- blobs into memory ---- */

typedef struct {
    char *data;
    size_t len, cap;
} mem_sink;

static int to_memory(void *ctx, const void *p, size_t n)
{
    mem_sink *m = ctx;
    if (m->len + n > m->cap)
        return rm_fail(EFBIG, "a blob is longer than its descriptor says");
    memcpy(m->data + m->len, p, n);
    m->len += n;
    return 0;
}

int remote_blob_read(remote *r, const char *digest, uint64_t max, char **data, size_t *len)
{
    mem_sink m = {.data = malloc(max + 1), .cap = max};
    if (!m.data)
        return -ENOMEM;
    int rc = remote_blob_get(r, digest, 0, 0, max, to_memory, &m);
    if (rc) {
        free(m.data);
        return rc;
    }
    *data = m.data;
    *len = m.len;
    return 0;
}

int remote_chunk_get(remote *r, const char *pack, uint64_t offset, uint32_t clen, uint32_t ulen,
                     const unsigned char id[32], void *buf)
{
    if (!clen || clen > ZSTD_compressBound(ulen))
        return rm_fail(EBADMSG, "pack %s: a chunk's compressed length is impossible", pack);
    mem_sink m = {.data = malloc(clen), .cap = clen};
    if (!m.data)
        return -ENOMEM;
    int rc = remote_blob_get(r, pack, offset, clen, clen, to_memory, &m);
    size_t got = 0;
    if (!rc) {
        got = ZSTD_decompress(buf, ulen, m.data, m.len);
        unsigned long long size = ZSTD_getFrameContentSize(m.data, m.len);
        if (ZSTD_isError(got) || got != ulen || size != ulen)
            rc = rm_fail(EBADMSG, "pack %s: the chunk at %" PRIu64 " is not one zstd frame of %u bytes",
                         pack, offset, ulen);
    }
    if (!rc) {
        unsigned char d[32];
        SHA256(buf, ulen, d);
        if (memcmp(d, id, 32))
            rc = rm_fail(EBADMSG, "pack %s: the chunk at %" PRIu64 " does not match its id", pack, offset);
    }
    free(m.data);
    return rc;
}
