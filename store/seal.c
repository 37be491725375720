/*
 * Seals: an XXH3-64 of every data chunk of a layer, kept beside its
 * manifest in layers/<id>/seals. SHA-256 names the chunks; the seals only
 * let `fsck --quick` re-read every stored byte at memory speed. They are
 * written by this store for its own files, so a collision made on purpose
 * buys nothing: seals are never sent, never trusted from outside, never an
 * id (docs/manifest.md).
 *
 * The file: "strata-seals 1 xxh3-64 <layer id>\n", then one line of 16
 * lowercase hex digits per data chunk, in the manifest's order.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define HEAD "strata-seals 1 xxh3-64 "

typedef struct {
    uint64_t *index; /* sorted chunk indices */
    uint64_t *seal;
    size_t n, cap;
} file_seals;

struct st_seals {
    size_t nfiles;
    file_seals *files;
};

uint64_t st_seal_of(const void *data, size_t len)
{
    return (uint64_t)XXH3_64bits(data, len);
}

st_seals *st_seals_new(size_t nfiles)
{
    st_seals *s = calloc(1, sizeof *s);
    if (s && !(s->files = calloc(nfiles ? nfiles : 1, sizeof *s->files))) {
        free(s);
        return NULL;
    }
    if (s)
        s->nfiles = nfiles;
    return s;
}

void st_seals_free(st_seals *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nfiles; i++) {
        free(s->files[i].index);
        free(s->files[i].seal);
    }
    free(s->files);
    free(s);
}

/* where chunk c is, or would go, in f's sorted list */
static size_t find(const file_seals *f, uint64_t c)
{
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (f->index[mid] < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int st_seal_set(st_seals *s, size_t file_index, uint64_t chunk_index, uint64_t seal)
{
    if (!s || file_index >= s->nfiles)
        return st_fail(EINVAL, "seals: no file %zu", file_index);
    file_seals *f = &s->files[file_index];
    /* in order (as the chunker and a reader go) it is an append */
    size_t at = f->n && f->index[f->n - 1] < chunk_index ? f->n : find(f, chunk_index);
    if (at < f->n && f->index[at] == chunk_index) {
        f->seal[at] = seal;
        return 0;
    }
    if (f->n == f->cap) {
        size_t nc = f->cap ? f->cap * 2 : 64;
        uint64_t *i = realloc(f->index, nc * sizeof *i);
        if (i)
            f->index = i;
        uint64_t *v = i ? realloc(f->seal, nc * sizeof *v) : NULL;
        if (!v)
            return st_fail(ENOMEM, "seals: out of memory");
        f->seal = v;
        f->cap = nc;
    }
    memmove(f->index + at + 1, f->index + at, (f->n - at) * sizeof *f->index);
    memmove(f->seal + at + 1, f->seal + at, (f->n - at) * sizeof *f->seal);
    f->index[at] = chunk_index;
    f->seal[at] = seal;
    f->n++;
    return 0;
}

int st_seal_get(const st_seals *s, size_t file_index, uint64_t chunk_index, uint64_t *seal)
{
    if (!s || file_index >= s->nfiles)
        return -ENOENT;
    const file_seals *f = &s->files[file_index];
    size_t at = find(f, chunk_index);
    if (at >= f->n || f->index[at] != chunk_index)
        return -ENOENT;
    *seal = f->seal[at];
    return 0;
}

int st_seals_write(const st_seals *s, const store_layer *l, const store_id *id, const char *dir)
{
    if (!s || s->nfiles != l->nfiles)
        return st_fail(EINVAL, "layer %s: seals for another layer", id->hex);
    sbuf b = {0};
    sbuf_printf(&b, HEAD "%s\n", id->hex);
    for (size_t i = 0; i < l->nfiles; i++) {
        const store_file *f = &l->files[i];
        for (size_t k = 0; k < f->ndata; k++) {
            uint64_t seal;
            if (st_seal_get(s, i, f->data[k].index, &seal)) {
                free(b.data);
                return st_fail(EINVAL, "layer %s: %s chunk %" PRIu64 " has no seal", id->hex,
                               f->name, f->data[k].index);
            }
            sbuf_printf(&b, "%016" PRIx64 "\n", seal);
        }
    }
    char *path = st_printf("%s/%s", dir, ST_SEALS_FILE);
    int rc = b.oom || !path ? -ENOMEM : atomic_file_write_all(path, b.data, b.len, 0444, 0);
    if (rc)
        rc = st_fail_errno(rc, "%s", path ? path : dir);
    free(path);
    free(b.data);
    return rc;
}

static int parse_seal(const char *p, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < 16; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        x = x << 4 | (uint64_t)d;
    }
    *v = x;
    return p[16] == '\n' ? 0 : -1;
}

int st_seals_load(const char *dir, const store_layer *l, st_seals **out)
{
    size_t ndata = 0;
    for (size_t i = 0; i < l->nfiles; i++)
        ndata += l->files[i].ndata;
    size_t head = strlen(HEAD) + STORE_ID_HEX + 1, want = head + 17 * ndata;
    char *path = st_printf("%s/%s", dir, ST_SEALS_FILE), *text = NULL;
    size_t len;
    int rc = path ? file_read_all(path, want, &text, &len) : -ENOMEM;
    if (rc == -ENOENT) {
        free(path);
        return -ENOENT; /* made by a strata before seals: not an error */
    }
    if (rc == -EFBIG || (!rc && (len != want || strncmp(text, HEAD, strlen(HEAD)) ||
                                 strncmp(text + strlen(HEAD), l->id.hex, STORE_ID_HEX) ||
                                 text[head - 1] != '\n')))
        rc = st_fail(EINVAL, "%s: damaged, or not this layer's (%zu data chunks)", path, ndata);
    else if (rc)
        rc = st_fail_errno(rc, "%s", path);
    st_seals *s = rc ? NULL : st_seals_new(l->nfiles);
    if (!rc && !s)
        rc = st_fail(ENOMEM, "%s: out of memory", path);
    const char *p = text ? text + head : NULL;
    for (size_t i = 0; !rc && i < l->nfiles; i++)
        for (size_t k = 0; !rc && k < l->files[i].ndata; k++, p += 17) {
            uint64_t v;
            if (parse_seal(p, &v))
                rc = st_fail(EINVAL, "%s: damaged at line %zu", path,
                             (size_t)(p - text - head) / 17 + 2);
            else
                rc = st_seal_set(s, i, l->files[i].data[k].index, v);
        }
    free(text);
    free(path);
    if (rc) {
        st_seals_free(s);
        return rc;
    }
    *out = s;
    return 0;
}
