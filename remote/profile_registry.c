/*
 * remote: a boot profile (remote/profile.c, docs/profiles.md) carried with
 * its layer. Push uploads the store's profile of the top layer as a blob and
 * names it in two annotations of the OCI manifest; an older strata's pull
 * reads neither and goes on as before (remote_artifact_parse reads only the
 * annotations it knows). Pull fetches the blob when the manifest names one,
 * checks it and keeps it beside the layer. A profile is a hint: whatever is
 * wrong with one on pull (absent from the registry, too large, another
 * layer's, garbage) becomes a note, and the pull goes on without it.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void note(void (*fn)(void *, const char *), void *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note(void (*fn)(void *, const char *), void *ctx, const char *fmt, ...)
{
    if (!fn)
        return;
    char line[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fn(ctx, line);
}

typedef struct {
    const char *data;
    size_t len, pos;
} blob_source;

static long blob_read(void *ctx, char *buf, size_t len)
{
    blob_source *m = ctx;
    size_t n = m->len - m->pos < len ? m->len - m->pos : len;
    memcpy(buf, m->data + m->pos, n);
    m->pos += n;
    return (long)n;
}

static int blob_rewind(void *ctx)
{
    ((blob_source *)ctx)->pos = 0;
    return 0;
}

/* the profile's blob in the registry, uploaded unless it is there */
static int upload(remote *r, const char *data, size_t len, const char *digest, remote_push_result *res)
{
    int there = remote_blob_exists(r, digest, len);
    if (there < 0)
        return there;
    if (there) {
        res->blobs_present++;
        return 0;
    }
    blob_source m = {data, len, 0};
    remote_source src = {blob_read, blob_rewind, &m, NULL};
    int rc = remote_blob_put(r, digest, len, &src);
    if (!rc) {
        res->blobs_uploaded++;
        res->bytes_uploaded += len;
    }
    return rc;
}

int rm_profile_push(remote *r, store *st, const store_id *top, json_t *ann, remote_push_result *res,
                    void (*note_fn)(void *, const char *), void *note_ctx)
{
    remote_profile p;
    int rc = remote_profile_load(st, top, &p);
    if (rc == -ENOENT)
        return 0;
    if (rc) { /* the local copy is a hint too: the layer goes without it */
        note(note_fn, note_ctx, "the boot profile of layer %.12s is left out: %s", top->hex, remote_error());
        return 0;
    }
    char *data;
    size_t len;
    rc = remote_profile_encode(&p, &data, &len);
    remote_profile_free(&p);
    if (rc)
        return rc;
    char digest[72], size[24];
    sha256_digest_text(data, len, digest);
    snprintf(size, sizeof size, "%zu", len);
    rc = upload(r, data, len, digest, res);
    free(data);
    if (!rc && (json_object_set_new(ann, REMOTE_ANN_PROFILE, json_string(digest)) ||
                json_object_set_new(ann, REMOTE_ANN_PROFILE_SIZE, json_string(size))))
        rc = rm_oom();
    return rc;
}

/* the profile blob's digest and size from the manifest's annotations:
 * 0, -ENOENT for none, -EBADMSG for malformed ones */
static int profile_descriptor(const char *manifest, size_t len, char digest[72], uint64_t *size)
{
    json_t *j = json_loadb(manifest, len, 0, NULL);
    json_t *ann = json_object_get(j, "annotations");
    const char *d = json_string_value(json_object_get(ann, REMOTE_ANN_PROFILE));
    const char *s = json_string_value(json_object_get(ann, REMOTE_ANN_PROFILE_SIZE));
    int rc = 0;
    char *end = NULL;
    unsigned long long n = s ? strtoull(s, &end, 10) : 0;
    if (!d && !s)
        rc = -ENOENT;
    else if (!d || !rm_digest_valid(d) || !s || !*s || *end || *s == '0' || !n)
        rc = rm_fail(EBADMSG, "boot profile: its annotations are not a sha256 digest and a size");
    else if (n > REMOTE_PROFILE_MAX)
        rc = rm_fail(EBADMSG, "boot profile: %llu bytes, larger than 64 KiB", n);
    if (!rc) {
        memcpy(digest, d, 72);
        *size = n;
    }
    json_decref(j);
    return rc;
}

int remote_profile_fetch(remote *r, const char *manifest, size_t len, const store_id *layer,
                         uint64_t disk_chunks, remote_profile *out)
{
    memset(out, 0, sizeof *out);
    char digest[72];
    uint64_t size;
    int rc = profile_descriptor(manifest, len, digest, &size);
    if (rc)
        return rc;
    char *data;
    size_t got;
    if ((rc = remote_blob_read(r, digest, size, &data, &got)))
        return rc == -ENOENT ? rm_fail(EBADMSG, "boot profile %.19s: not in the registry", digest) : rc;
    rc = got != size ? rm_fail(EBADMSG, "boot profile: %zu bytes, its annotation says %" PRIu64, got, size)
                     : remote_profile_decode(data, got, layer, disk_chunks, out);
    free(data);
    return rc;
}

void rm_profile_pull(remote *r, store *st, const char *manifest, size_t len, const store_id *layer,
                     const remote_pull_opts *po, remote_pull_result *res)
{
    void (*fn)(void *, const char *) = po ? po->note : NULL;
    void *ctx = po ? po->note_ctx : NULL;
    store_layer *l = NULL;
    uint64_t chunks = 0;
    remote_profile p;
    int rc = store_layer_load(st, layer, &l);
    if (!rc) {
        rc = remote_profile_disk_chunks(l, &chunks);
        store_layer_free(l);
    }
    /* a layer without a Disk.img of 1 MiB chunks has nothing a profile could name */
    if (!rc)
        rc = remote_profile_fetch(r, manifest, len, layer, chunks, &p);
    if (rc == -ENOENT)
        return;
    if (!rc) {
        rc = remote_profile_save(st, &p);
        remote_profile_free(&p);
    }
    if (rc)
        note(fn, ctx, "the layer's boot profile was not kept (a lazy run goes without it): %s",
             remote_error());
    else
        res->profile = 1;
}
