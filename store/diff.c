/* Comparing two layers chunk by chunk. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* are chunk c of a and of b the same content? */
static int chunk_same(const store_file *a, const store_file *b, uint64_t c)
{
    const store_chunk *x = store_file_chunk(a, c), *y = store_file_chunk(b, c);
    return !x == !y && (!x || !memcmp(x->digest, y->digest, 32));
}

/* Count the chunk places of newer that differ from older (NULL: a file
 * only one side has, so every place counts). */
static void diff_chunks(store_diff_entry *e, const store_file *older, const store_file *newer)
{
    /* only data chunks on either side can differ: walk those */
    size_t i_new = 0, i_old = 0, n_old = older ? older->ndata : 0;
    int comparable = older && older->chunk_size == newer->chunk_size;
    while (i_new < newer->ndata || i_old < n_old) {
        uint64_t cn = i_new < newer->ndata ? newer->data[i_new].index : UINT64_MAX;
        uint64_t co = i_old < n_old ? older->data[i_old].index : UINT64_MAX;
        uint64_t ch = cn < co ? cn : co;
        i_new += cn == ch;
        i_old += co == ch;
        if (ch >= newer->nchunks)
            continue; /* past newer's end: counted below */
        int same = comparable && chunk_same(older, newer, ch) &&
                   (ch + 1 < newer->nchunks || older->size == newer->size);
        if (same)
            continue;
        e->chunks_changed++;
        e->bytes_changed += store_chunk_len(newer, ch);
    }
    if (!comparable) {
        e->chunks_changed = newer->nchunks; /* nothing lines up: every place changed */
    } else {
        /* zero in both, yet changed: places older did not have, and a
         * last chunk whose length changed */
        for (uint64_t ch = older->nchunks; ch < newer->nchunks; ch++)
            e->chunks_changed += !store_file_chunk(newer, ch);
        uint64_t last = newer->nchunks - 1;
        if (newer->nchunks && last < older->nchunks && older->size != newer->size &&
            !store_file_chunk(newer, last) && !store_file_chunk(older, last))
            e->chunks_changed++;
    }
    if (older && older->nchunks > newer->nchunks)
        e->chunks_changed += older->nchunks - newer->nchunks;
}

int store_diff(store *st, const store_id *a, const store_id *b, store_diff_entry **out, size_t *n)
{
    store_layer *la = NULL, *lb = NULL;
    int rc = store_layer_load(st, a, &la);
    if (!rc)
        rc = store_layer_load(st, b, &lb);
    store_diff_entry *v = NULL;
    size_t k = 0;
    if (!rc && !(v = calloc(la->nfiles + lb->nfiles + 1, sizeof *v)))
        rc = -ENOMEM;
    /* both file lists are sorted by name: walk them side by side */
    for (size_t i = 0, j = 0; !rc && (i < la->nfiles || j < lb->nfiles);) {
        const store_file *fa = i < la->nfiles ? &la->files[i] : NULL;
        const store_file *fb = j < lb->nfiles ? &lb->files[j] : NULL;
        int c = !fa ? 1 : !fb ? -1 : strcmp(fa->name, fb->name);
        store_diff_entry *e = &v[k++];
        e->name = strdup(c <= 0 ? fa->name : fb->name);
        e->in_a = c <= 0;
        e->in_b = c >= 0;
        e->size_a = e->in_a ? fa->size : 0;
        e->size_b = e->in_b ? fb->size : 0;
        diff_chunks(e, e->in_b && e->in_a ? fa : NULL, e->in_b ? fb : fa);
        if (!e->name)
            rc = -ENOMEM;
        if (c <= 0)
            i++;
        if (c >= 0)
            j++;
    }
    store_layer_free(la);
    store_layer_free(lb);
    if (rc) {
        store_diff_free(v, k);
        return rc;
    }
    *out = v;
    *n = k;
    return 0;
}

void store_diff_free(store_diff_entry *d, size_t n)
{
    for (size_t i = 0; d && i < n; i++)
        free(d[i].name);
    free(d);
}
