/*
 * remote: boot profiles (docs/profiles.md). A profile is the order in
 * which a guest first read the 1 MiB chunks of its layer's Disk.img until it
 * was ready, as runs of consecutive chunks. A lazy run fetches those chunks
 * first; nothing else reads it. It travels with the layer: push uploads the
 * store's profile of the top layer as a blob named by two manifest
 * annotations, pull keeps the blob beside the layer. It is data from
 * outside: bounded, checked here, and only ever a hint, so a bad one is
 * dropped with a note and never fails a pull.
 *
 * The blob, all integers little-endian:
 *   0  8  magic "STRATAPF"
 *   8  2  version (1)
 *  10  2  flags (0; a reader refuses others)
 *  12  4  runs
 *  16 32  the layer id (SHA-256), whose Disk.img was read
 *  48  8  Disk.img's 1 MiB chunks in that layer
 *  56  4  milliseconds from start to ready (0: unknown)
 *  60  4  reserved (0)
 *  64     the runs, in the order first read: LEB128 first chunk, LEB128 count - 1
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define MAGIC "STRATAPF"
#define HEADER 64
#define CHUNK (1u << 20)
#define DISK "Disk.img"

void remote_profile_free(remote_profile *p)
{
    free(p->runs);
    memset(p, 0, sizeof *p);
}

/* ---- from the reads a guest made ---- */

static int by_first(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int remote_profile_from_reads(const store_id *layer, uint64_t disk_chunks, uint32_t ready_ms,
                              const uint64_t *chunks, size_t n, remote_profile *out)
{
    memset(out, 0, sizeof *out);
    uint64_t *seen = malloc((n ? n : 1) * sizeof *seen);
    out->runs = malloc((n ? n : 1) * sizeof *out->runs);
    if (!seen || !out->runs) {
        free(seen);
        remote_profile_free(out);
        return rm_oom();
    }
    /* the first read of each chunk, in order: a chunk read again adds nothing */
    memcpy(seen, chunks, n * sizeof *seen);
    qsort(seen, n, sizeof *seen, by_first);
    size_t nseen = 0;
    for (size_t i = 0; i < n; i++)
        if (!nseen || seen[nseen - 1] != seen[i])
            seen[nseen++] = seen[i];
    unsigned char *taken = calloc(nseen ? nseen : 1, 1);
    int rc = taken ? 0 : rm_oom();
    for (size_t i = 0; !rc && i < n; i++) {
        uint64_t c = chunks[i];
        if (c >= disk_chunks) {
            rc = rm_fail(EINVAL, "profile: chunk %" PRIu64 " is past Disk.img's %" PRIu64, c, disk_chunks);
            break;
        }
        size_t at = (size_t)((const uint64_t *)bsearch(&c, seen, nseen, sizeof *seen, by_first) - seen);
        if (taken[at])
            continue;
        taken[at] = 1;
        remote_profile_run *last = out->nruns ? &out->runs[out->nruns - 1] : NULL;
        if (last && last->first + last->count == c)
            last->count++;
        else
            out->runs[out->nruns++] = (remote_profile_run){c, 1};
    }
    free(taken);
    free(seen);
    if (!rc && out->nruns > REMOTE_PROFILE_RUNS_MAX)
        rc = rm_fail(E2BIG, "profile: %zu runs, more than %u", out->nruns, REMOTE_PROFILE_RUNS_MAX);
    if (rc) {
        remote_profile_free(out);
        return rc;
    }
    out->layer = *layer;
    out->disk_chunks = disk_chunks;
    out->ready_ms = ready_ms;
    return 0;
}

/* ---- the blob ---- */

static void put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static size_t put_leb(unsigned char *p, uint64_t v)
{
    size_t n = 0;
    do {
        p[n++] = (unsigned char)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

/* one LEB128 number of at most 64 bits at *pos, in its shortest form */
static int get_leb(const unsigned char *p, size_t len, size_t *pos, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*pos >= len)
            return -1;
        unsigned char b = p[(*pos)++];
        if (shift == 63 && (b & 0x7e))
            return -1;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return shift && !b ? -1 : 0; /* a trailing zero byte: not the shortest form */
    }
    return -1;
}

int remote_profile_encode(const remote_profile *p, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (p->nruns > REMOTE_PROFILE_RUNS_MAX)
        return rm_fail(E2BIG, "profile: %zu runs, more than %u", p->nruns, REMOTE_PROFILE_RUNS_MAX);
    unsigned char *b = malloc(HEADER + p->nruns * 20);
    if (!b)
        return rm_oom();
    memset(b, 0, HEADER);
    memcpy(b, MAGIC, 8);
    put_le(b + 8, REMOTE_PROFILE_VERSION, 2);
    put_le(b + 12, p->nruns, 4);
    if (hex_decode(p->layer.hex, 32, b + 16)) {
        free(b);
        return rm_fail(EINVAL, "profile: %s is not a layer id", p->layer.hex);
    }
    put_le(b + 48, p->disk_chunks, 8);
    put_le(b + 56, p->ready_ms, 4);
    size_t n = HEADER;
    for (size_t i = 0; i < p->nruns; i++) {
        n += put_leb(b + n, p->runs[i].first);
        n += put_leb(b + n, p->runs[i].count - 1);
    }
    if (n > REMOTE_PROFILE_MAX) {
        free(b);
        return rm_fail(E2BIG, "profile: %zu bytes, more than %u", n, REMOTE_PROFILE_MAX);
    }
    *out = (char *)b;
    *len = n;
    return 0;
}

static int refuse(const char *why)
{
    return rm_fail(EBADMSG, "boot profile: %s", why);
}

/* the runs after the header: in range, none empty, no chunk twice */
static int decode_runs(const unsigned char *b, size_t len, remote_profile *out)
{
    size_t pos = HEADER;
    uint64_t total = 0;
    for (size_t i = 0; i < out->nruns; i++) {
        uint64_t first, more;
        if (get_leb(b, len, &pos, &first) || get_leb(b, len, &pos, &more))
            return refuse("a run is cut short or not a LEB128 number");
        if (first >= out->disk_chunks || more >= out->disk_chunks - first)
            return refuse("a run is past the end of Disk.img");
        out->runs[i] = (remote_profile_run){first, more + 1};
        total += more + 1;
    }
    if (pos != len)
        return refuse("bytes after its last run");
    if (total > out->disk_chunks)
        return refuse("it names more chunks than Disk.img has");
    /* no chunk twice: the runs sorted by first chunk must not overlap */
    remote_profile_run *s = malloc((out->nruns ? out->nruns : 1) * sizeof *s);
    if (!s)
        return rm_oom();
    memcpy(s, out->runs, out->nruns * sizeof *s);
    qsort(s, out->nruns, sizeof *s, by_first);
    int rc = 0;
    for (size_t i = 1; !rc && i < out->nruns; i++)
        if (s[i - 1].first + s[i - 1].count > s[i].first)
            rc = refuse("it names a chunk twice");
    free(s);
    return rc;
}

int remote_profile_decode(const void *data, size_t len, const store_id *layer, uint64_t disk_chunks,
                          remote_profile *out)
{
    memset(out, 0, sizeof *out);
    const unsigned char *b = data;
    if (len > REMOTE_PROFILE_MAX)
        return refuse("larger than 64 KiB");
    if (len < HEADER || memcmp(b, MAGIC, 8))
        return refuse("not a strata boot profile");
    if (get_le(b + 8, 2) != REMOTE_PROFILE_VERSION || get_le(b + 10, 2) || get_le(b + 60, 4))
        return refuse("a version or flags this strata does not know");
    char hex[STORE_ID_HEX + 1];
    hex_encode(b + 16, 32, hex);
    if (layer && strcmp(hex, layer->hex))
        return refuse("it is another layer's");
    out->disk_chunks = get_le(b + 48, 8);
    if (out->disk_chunks != disk_chunks)
        return refuse("its Disk.img has another size");
    out->nruns = (size_t)get_le(b + 12, 4);
    /* each run takes at least two bytes: a count the length can't hold is a lie */
    if (out->nruns > REMOTE_PROFILE_RUNS_MAX || out->nruns > (len - HEADER) / 2)
        return refuse("more runs than it can hold");
    out->runs = malloc((out->nruns ? out->nruns : 1) * sizeof *out->runs);
    if (!out->runs)
        return rm_oom();
    int rc = decode_runs(b, len, out);
    if (rc) {
        remote_profile_free(out);
        return rc;
    }
    memcpy(out->layer.hex, hex, sizeof hex);
    out->ready_ms = (uint32_t)get_le(b + 56, 4);
    return 0;
}

/* ---- beside a layer in the store ---- */

int remote_profile_disk_chunks(const store_layer *l, uint64_t *out)
{
    for (size_t i = 0; i < l->nfiles; i++) {
        const store_file *f = &l->files[i];
        if (strcmp(f->name, DISK))
            continue;
        if (f->chunk_size != CHUNK)
            return rm_fail(EINVAL, "layer %s: Disk.img's chunks are not 1 MiB", l->id.hex);
        *out = f->nchunks;
        return 0;
    }
    return rm_fail(ENOENT, "layer %s has no Disk.img", l->id.hex);
}

static int layer_disk_chunks(store *st, const store_id *id, uint64_t *out)
{
    store_layer *l;
    int rc = store_layer_load(st, id, &l);
    if (rc)
        return rc;
    rc = remote_profile_disk_chunks(l, out);
    store_layer_free(l);
    return rc;
}

int remote_profile_load(store *st, const store_id *layer, remote_profile *out)
{
    memset(out, 0, sizeof *out);
    char *data;
    size_t len;
    uint64_t chunks;
    int rc = store_profile_get(st, layer, REMOTE_PROFILE_MAX, &data, &len);
    if (rc == -EFBIG)
        return refuse("the store's is larger than 64 KiB");
    if (rc)
        return rc;
    if (!(rc = layer_disk_chunks(st, layer, &chunks)))
        rc = remote_profile_decode(data, len, layer, chunks, out);
    free(data);
    return rc;
}

int remote_profile_save(store *st, const remote_profile *p)
{
    char *data;
    size_t len;
    uint64_t chunks;
    int rc = layer_disk_chunks(st, &p->layer, &chunks);
    if (!rc && chunks != p->disk_chunks)
        rc = rm_fail(EINVAL, "profile: Disk.img of layer %s has %" PRIu64 " chunks, not %" PRIu64,
                     p->layer.hex, chunks, p->disk_chunks);
    if (rc || (rc = remote_profile_encode(p, &data, &len)))
        return rc;
    rc = store_profile_put(st, &p->layer, data, len);
    free(data);
    return rc;
}
