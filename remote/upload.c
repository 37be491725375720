/* remote: blob uploads: cross-repository mounts and the upload flow. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* POST an upload; *location is where to PUT (or NULL if mounted: 201) */
static int start_upload(remote *r, const char *query, char **location)
{
    char *url = rm_url(r, "/blobs/uploads/%s", query);
    if (!url)
        return -ENOMEM;
    rm_req q = {.method = "POST", .url = url, .max_body = 1 << 16};
    rm_resp resp = {0};
    int rc = rm_request(r, &q, &resp);
    free(url);
    *location = NULL;
    if (!rc && resp.status == 202 && resp.location) {
        *location = resp.location;
        resp.location = NULL;
    } else if (!rc && resp.status != 201)
        rc = rm_http_fail(&resp, "blob upload");
    rm_resp_free(&resp);
    return rc;
}

static void cancel_upload(remote *r, const char *location)
{
    rm_req q = {.method = "DELETE", .url = location, .max_body = 1 << 16};
    rm_resp resp = {0};
    /* best effort: an abandoned upload is purged by the registry anyway */
    rm_request(r, &q, &resp);
    rm_resp_free(&resp);
}

int remote_blob_mount(remote *r, const char *digest, const char *from_repo)
{
    char *query = NULL;
    if (asprintf(&query, "?mount=%s&from=%s", digest, from_repo) < 0)
        return -ENOMEM;
    char *location = NULL;
    int rc = start_upload(r, query, &location);
    free(query);
    if (rc == -EACCES) /* no pull right on from_repo: not an error, just no mount */
        return 0;
    if (rc)
        return rc;
    if (location) { /* 202: declined, and an upload session was opened */
        cancel_upload(r, location);
        free(location);
        return 0;
    }
    return 1;
}

static char *put_url(const char *location, const char *digest)
{
    char *u = NULL;
    if (asprintf(&u, "%s%sdigest=%s", location, strchr(location, '?') ? "&" : "?", digest) < 0)
        return NULL;
    return u;
}

int remote_blob_put(remote *r, const char *digest, uint64_t size, const remote_source *src)
{
    int rc = 0;
    for (int n = 0; n < RM_TRIES; n++) {
        if (n) {
            rm_backoff(n - 1, 0);
            if (src->rewind && (rc = src->rewind(src->ctx)))
                return rc;
        }
        char *location = NULL;
        if ((rc = start_upload(r, "", &location)))
            return rc;
        if (!location)
            return rm_fail(EPROTO, "blob %s: the registry created it without data", digest);
        char *url = put_url(location, digest);
        free(location);
        if (!url)
            return -ENOMEM;
        rm_req q = {.method = "PUT", .url = url, .content_type = "application/octet-stream",
                    .src = src, .src_len = size, .max_body = 1 << 16};
        rm_resp resp = {0};
        rc = rm_request(r, &q, &resp);
        free(url);
        int transient = rc == -EIO || (!rc && (resp.status >= 500 || resp.status == 429));
        if (!rc && resp.status != 201)
            rc = rm_http_fail(&resp, digest);
        long after = resp.retry_after;
        rm_resp_free(&resp);
        if (!rc || !transient)
            return rc;
        if (after > 0)
            rm_backoff(0, after);
    }
    return rc;
}
