/* remote: the distribution API calls (manifests, blobs, tags). */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int remote_manifest_get(remote *r, const char *reference, char **body, size_t *len,
                        char digest[72])
{
    char *url = rm_url(r, "/manifests/%s", reference);
    if (!url)
        return -ENOMEM;
    rm_req q = {.method = "GET", .url = url, .accept = REMOTE_MT_OCI, .max_body = REMOTE_MANIFEST_MAX};
    rm_resp resp = {0};
    int rc = rm_request(r, &q, &resp);
    free(url);
    if (!rc && resp.status == 404)
        rc = rm_fail(ENOENT, "%s/%s:%s: no such manifest", r->host, r->repo, reference);
    else if (!rc && resp.status != 200)
        rc = rm_http_fail(&resp, reference);
    if (!rc) {
        sha256_digest_text(resp.body.data ? resp.body.data : "", resp.body.len, digest);
        if (!strncmp(reference, "sha256:", 7) && strcmp(reference, digest))
            rc = rm_fail(EBADMSG, "manifest %s: the registry sent bytes with digest %s",
                         reference, digest);
    }
    if (!rc) {
        *body = resp.body.data ? resp.body.data : strdup("");
        *len = resp.body.len;
        resp.body.data = NULL;
        if (!*body)
            rc = -ENOMEM;
    }
    rm_resp_free(&resp);
    return rc;
}

int remote_manifest_put(remote *r, const char *reference, const void *body, size_t len)
{
    if (len > REMOTE_MANIFEST_MAX)
        return rm_fail(EFBIG, "the manifest is %zu bytes, over the %u registries accept", len,
                       REMOTE_MANIFEST_MAX);
    char *url = rm_url(r, "/manifests/%s", reference);
    if (!url)
        return -ENOMEM;
    rm_req q = {.method = "PUT", .url = url, .content_type = REMOTE_MT_OCI, .body = body,
                .body_len = len, .max_body = 1 << 16};
    rm_resp resp = {0};
    int rc = rm_request(r, &q, &resp);
    free(url);
    /* the spec says 201; some registries answer 200 or 202 (accepted, stored
     * asynchronously), and each means the manifest was taken */
    if (!rc && resp.status != 201 && resp.status != 200 && resp.status != 202)
        rc = rm_http_fail(&resp, "manifest upload");
    rm_resp_free(&resp);
    return rc;
}

int remote_blob_exists(remote *r, const char *digest, uint64_t size)
{
    char *url = rm_url(r, "/blobs/%s", digest);
    if (!url)
        return -ENOMEM;
    rm_req q = {.method = "HEAD", .url = url};
    rm_resp resp = {0};
    int rc = rm_request(r, &q, &resp);
    free(url);
    /* A registry that answers the HEAD with a redirect (to S3, GCS, Azure)
     * has the blob: it redirects only to content it holds, and on a 404
     * it says 404 itself. Storage's own answer to the followed HEAD is
     * used for the size check when it gives one (2xx with a length);
     * anything else from storage (GHCR's presigned URLs are signed for GET
     * and may answer a HEAD 403; 404 or 5xx from a storage that lags) is
     * not the registry's word, so the blob counts as present, its size
     * unchecked: the digest names the bytes, the size check only guards
     * against a registry that is broken, and refusing here would fail
     * every push to such a registry. */
    int redirected = !rc && resp.redirects > 0;
    if (!rc && resp.status >= 200 && resp.status < 300)
        rc = !size || resp.content_length < 0 || (uint64_t)resp.content_length == size;
    else if (redirected)
        rc = 1;
    else if (!rc && resp.status != 404)
        rc = rm_http_fail(&resp, digest);
    rm_resp_free(&resp);
    return rc;
}

/* ---- downloads ---- */

typedef struct {
    remote_sink sink;
    void *ctx;
    rm_resp *resp;
    uint64_t offset, len; /* what was asked; len 0 = all */
    uint64_t max;
    uint64_t at;      /* bytes of the body seen */
    uint64_t given;   /* bytes handed on */
    EVP_MD_CTX *sha;
    int whole;        /* hashing the whole blob */
    int stopped;      /* the range is complete; the rest of a full body is not wanted */
} get_ctx;

static int get_sink(void *ctx, const void *data, size_t n)
{
    get_ctx *g = ctx;
    const char *p = data;
    /* 200 to a Range request: the whole blob, so skip to the offset */
    uint64_t body_start = g->resp->status == 206 ? g->offset : 0;
    uint64_t pos = body_start + g->at;
    g->at += n;
    if (g->whole)
        EVP_DigestUpdate(g->sha, p, n);
    uint64_t want_end = g->len ? g->offset + g->len : g->max;
    if (pos + n > g->offset && pos < want_end) {
        uint64_t from = pos < g->offset ? g->offset - pos : 0;
        uint64_t to = pos + n > want_end ? want_end - pos : n;
        if (g->given + (to - from) > (g->len ? g->len : g->max))
            return rm_fail(EFBIG, "a blob is longer than %" PRIu64 " bytes", g->max);
        int rc = g->sink(g->ctx, p + from, (size_t)(to - from));
        if (rc)
            return rc;
        g->given += to - from;
    }
    if (!g->len && g->at > g->max)
        return rm_fail(EFBIG, "a blob is longer than %" PRIu64 " bytes", g->max);
    /* the rest of a full body is not needed */
    if (g->len && pos + n >= want_end) {
        g->stopped = 1;
        return 1;
    }
    return 0;
}

/* one GET into g; *again says it failed transiently before any byte reached the sink */
static int blob_get_once(remote *r, const char *url, const char *range, get_ctx *g, int *again)
{
    rm_req q = {.method = "GET", .url = url, .range = range, .sink = get_sink, .sink_ctx = g,
                .max_body = 1 << 16};
    int rc = rm_request(r, &q, g->resp);
    *again = !g->at && (rc == -EIO || (!rc && (g->resp->status >= 500 || g->resp->status == 429)));
    return rc;
}

/* a blob's URL, and in range the Range value for len bytes at offset (len
 * 0: the whole blob, no Range) */
static char *blob_url(remote *r, const char *digest, uint64_t offset, uint64_t len, char range[64])
{
    if (len)
        snprintf(range, 64, "bytes=%" PRIu64 "-%" PRIu64, offset, offset + len - 1);
    return rm_url(r, "/blobs/%s", digest);
}

int remote_blob_get(remote *r, const char *digest, uint64_t offset, uint64_t len, uint64_t max,
                    remote_sink sink, void *ctx)
{
    char range[64];
    char *url = blob_url(r, digest, offset, len, range);
    if (!url)
        return -ENOMEM;
    rm_resp resp = {0};
    get_ctx g = {.sink = sink, .ctx = ctx, .resp = &resp, .offset = offset, .len = len,
                 .max = max, .whole = !len, .sha = EVP_MD_CTX_new()};
    if (!g.sha || !EVP_DigestInit_ex(g.sha, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(g.sha);
        free(url);
        return -ENOMEM;
    }
    int rc, again;
    /* rm_request does not retry a streamed body; nothing was streamed yet here */
    for (int n = 0; (rc = blob_get_once(r, url, len ? range : NULL, &g, &again)), again; n++) {
        if (n + 1 >= RM_TRIES)
            break;
        rm_backoff(n, resp.retry_after);
        rm_resp_free(&resp);
        memset(&resp, 0, sizeof resp);
    }
    free(url);
    if (rc == -ECANCELED && g.stopped)
        rc = 0; /* stopped on purpose after the range, in a full body */
    if (!rc && resp.status != 200 && resp.status != 206)
        rc = rm_http_fail(&resp, digest);
    if (!rc && g.given != (len ? len : g.at))
        rc = rm_fail(EBADMSG, "blob %s: the registry sent %" PRIu64 " bytes, %" PRIu64 " were asked",
                     digest, g.given, len ? len : g.at);
    if (!rc && g.whole) {
        unsigned char d[32];
        char hex[72];
        EVP_DigestFinal_ex(g.sha, d, NULL);
        digest_text(d, hex);
        if (strcmp(hex, digest))
            rc = rm_fail(EBADMSG, "blob %s: the registry sent different bytes (%s)", digest, hex);
    }
    EVP_MD_CTX_free(g.sha);
    rm_resp_free(&resp);
    return rc;
}

/* ---- tags ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

#define TAGS_PAGE 1000
#define TAGS_MAX 100000

/* the target of a Link header's rel="next", or NULL */
static char *link_next(const char *link)
{
    const char *lt = link ? strchr(link, '<') : NULL, *gt = lt ? strchr(lt, '>') : NULL;
    if (!gt || !strstr(gt, "rel=\"next\""))
        return NULL;
    return strndup(lt + 1, (size_t)(gt - lt - 1));
}

/* one page of the tags list, appended to *out; *next is the next page's URL or NULL */
static int tags_page(remote *r, const char *url, char ***out, size_t *n, char **next)
{
    rm_req q = {.method = "GET", .url = url, .accept = "application/json", .max_body = 16 << 20};
    rm_resp resp = {0};
    int rc = rm_request(r, &q, &resp);
    *next = NULL;
    if (!rc && resp.status == 404 && !*n) {
        rm_resp_free(&resp);
        return 0; /* no such repository yet: no tags */
    }
    if (!rc && resp.status != 200)
        rc = rm_http_fail(&resp, "tags list");
    json_t *j = rc ? NULL : json_loadb(resp.body.data ? resp.body.data : "", resp.body.len, 0, NULL);
    json_t *arr = json_object_get(j, "tags");
    if (!rc && !j)
        rc = rm_fail(EPROTO, "%s: the tags list is not JSON", r->host);
    size_t count = json_is_array(arr) ? json_array_size(arr) : 0;
    if (!rc && *n + count > TAGS_MAX)
        rc = rm_fail(EFBIG, "%s/%s: more than %d tags", r->host, r->repo, TAGS_MAX);
    char **grown = rc || !count ? NULL : realloc(*out, (*n + count) * sizeof **out);
    if (!rc && count && !grown)
        rc = -ENOMEM;
    if (grown)
        *out = grown;
    for (size_t i = 0; !rc && i < count; i++) {
        const char *t = json_string_value(json_array_get(arr, i));
        if (!t || !((*out)[*n] = strdup(t)))
            rc = t ? -ENOMEM : rm_fail(EPROTO, "%s: a tag in the list is not a string", r->host);
        else
            (*n)++;
    }
    if (!rc && count)
        *next = link_next(resp.link);
    json_decref(j);
    rm_resp_free(&resp);
    return rc;
}

int remote_tags(remote *r, char ***tags, size_t *n)
{
    char first[32];
    snprintf(first, sizeof first, "/tags/list?n=%d", TAGS_PAGE);
    char *url = rm_url(r, "%s", first), *next = NULL;
    *tags = NULL;
    *n = 0;
    int rc = url ? 0 : -ENOMEM;
    for (int page = 0; !rc && url; page++) {
        rc = tags_page(r, url, tags, n, &next);
        free(url);
        url = next;
        if (!rc && url && page + 1 >= TAGS_MAX / TAGS_PAGE + 1)
            rc = rm_fail(EPROTO, "%s/%s: the tags list does not end", r->host, r->repo);
    }
    free(url);
    if (rc) {
        remote_strings_free(*tags, *n);
        *tags = NULL;
        *n = 0;
        return rc;
    }
    if (*n)
        qsort(*tags, *n, sizeof **tags, cmp_str);
    return 0;
}

/* ---- streamed blob bodies (pull) ---- */

typedef struct {
    rm_body_fn fn;
    void *ctx;
    rm_resp *resp;
} stream_ctx;

static int stream_sink(void *ctx, const void *data, size_t n)
{
    stream_ctx *s = ctx;
    return s->fn(s->ctx, s->resp->status, data, n);
}

int rm_blob_stream(remote *r, const char *digest, uint64_t offset, uint64_t len, rm_body_fn fn,
                   void *ctx, long *status)
{
    char range[64];
    char *url = blob_url(r, digest, offset, len, range);
    if (!url)
        return -ENOMEM;
    rm_resp resp = {0};
    stream_ctx s = {fn, ctx, &resp};
    rm_req q = {.method = "GET", .url = url, .range = len ? range : NULL, .sink = stream_sink,
                .sink_ctx = &s, .max_body = 1 << 16};
    int rc = rm_request(r, &q, &resp);
    free(url);
    *status = resp.status;
    if (!rc && resp.status != 200 && resp.status != 206)
        rc = rm_http_fail(&resp, digest);
    rm_resp_free(&resp);
    return rc;
}
