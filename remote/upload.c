/* remote: blob uploads: cross-repository mounts, chunked uploads that resume
 * where the registry says they stand, and the monolithic fallback
 * (docs/remote.md "Transport"). */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Chunk sizes registries accept (docs/remote.md "Transport" has the sources):
 * GHCR refuses PATCH bodies over 4 MiB (416), ECR wants every chunk but the
 * last at least 5 MiB (S3 multipart parts), Google's registries take no
 * PATCH at all. 4 MiB takes 1.7 s at 20 Mbit/s, 27 s when 16 uploads share
 * that link: far inside GHCR's 10-minute cut of a request. */
#define CHUNK_DEFAULT (4ull << 20)
#define CHUNK_TOO_SMALL (5ull << 20) /* ECR's (S3's) smallest part */
#define CHUNK_LARGE (8ull << 20)     /* for a registry that wants at least CHUNK_TOO_SMALL */
#define CHUNK_FLOOR (256ull << 10)   /* smaller refused too: the registry takes no chunks */
#define CHUNK_MIN_MAX (64ull << 20)  /* an OCI-Chunk-Min-Length above this: monolithic */
#define TAIL_MIN (64u << 10)         /* a closing PUT cut with less: the next one is empty */

void remote_upload_plan_init(remote_upload_plan *p, const char *host, uint64_t chunk_size)
{
    rm_registry kind = rm_registry_of(host);
    p->fixed = chunk_size != 0;
    if (chunk_size == REMOTE_CHUNK_MONOLITHIC)
        p->chunk = 0;
    else if (chunk_size)
        p->chunk = chunk_size;
    else if (kind == RM_REGISTRY_GCR || kind == RM_REGISTRY_GAR)
        p->chunk = 0; /* no chunked upload */
    else if (kind == RM_REGISTRY_ECR || kind == RM_REGISTRY_ECR_PUBLIC)
        p->chunk = CHUNK_LARGE;
    else
        p->chunk = CHUNK_DEFAULT;
}

static uint64_t plan_chunk(const remote_upload_plan *p)
{
    return __atomic_load_n(&p->chunk, __ATOMIC_RELAXED);
}

static void plan_learn(remote_upload_plan *p, uint64_t chunk)
{
    __atomic_store_n(&p->chunk, chunk, __ATOMIC_RELAXED);
}

/* ---- sessions ---- */

typedef struct {
    char *location; /* the newest Location: where the next request goes */
    uint64_t chunk_min; /* OCI-Chunk-Min-Length, 0 if not said */
} session;

static void take_location(session *s, rm_resp *resp)
{
    if (resp->location) {
        free(s->location);
        s->location = resp->location;
        resp->location = NULL;
    }
}

/* POST /blobs/uploads/QUERY: *status is 201 (created: a mount), 202 (s has
 * the session) or anything else, for the caller to judge */
int rm_upload_post(remote *r, const char *query, rm_resp *resp)
{
    char *url = rm_url(r, "/blobs/uploads/%s", query);
    if (!url)
        return -ENOMEM;
    rm_req q = {.method = "POST", .url = url, .max_body = 1 << 16};
    int rc = rm_request(r, &q, resp);
    free(url);
    return rc;
}

static int post_upload(remote *r, const char *query, long *status, session *s)
{
    rm_resp resp = {0};
    int rc = rm_upload_post(r, query, &resp);
    *status = rc ? 0 : resp.status;
    if (!rc && resp.status == 202) {
        if (!resp.location)
            rc = rm_fail(EPROTO, "%s: an upload session without a Location", r->host);
        take_location(s, &resp);
        s->chunk_min = resp.chunk_min;
    } else if (!rc && resp.status != 201)
        rc = rm_http_fail(&resp, "blob upload");
    rm_resp_free(&resp);
    return rc;
}

static int open_session(remote *r, session *s)
{
    long status;
    int rc = post_upload(r, "", &status, s);
    if (!rc && status != 202)
        rc = rm_fail(EPROTO, "%s: the registry created a blob without data", r->host);
    return rc;
}

void remote_upload_abandon(remote *r, char *location)
{
    if (!location)
        return;
    rm_req q = {.method = "DELETE", .url = location, .max_body = 1 << 16};
    rm_resp resp = {0};
    /* best effort: an abandoned session is purged by the registry anyway */
    err_info keep = *err_last();
    rm_request(r, &q, &resp);
    err_restore(&keep);
    rm_resp_free(&resp);
    free(location);
}

int remote_blob_mount(remote *r, const char *digest, const char *from_repo, char **held)
{
    char *query = NULL;
    if (asprintf(&query, "?mount=%s&from=%s", digest, from_repo) < 0)
        return -ENOMEM;
    session s = {0};
    long status;
    int rc = post_upload(r, query, &status, &s);
    free(query);
    /* the spec lets a registry decline: 202 with a session to upload into,
     * 404 (it does not mount), no pull right on from_repo */
    if (rc == -EACCES || (rc == -ENOENT && status == 404))
        return 0;
    if (rc)
        return rc;
    if (status == 201) {
        remote_upload_abandon(r, *held);
        *held = NULL;
        return 1;
    }
    if (*held)
        remote_upload_abandon(r, s.location);
    else
        *held = s.location;
    return 0;
}

/* ---- one body: a PUT of the whole blob, or one chunk's PATCH ---- */

static char *put_url(const char *location, const char *digest)
{
    char *u = NULL;
    if (asprintf(&u, "%s%sdigest=%s", location, strchr(location, '?') ? "&" : "?", digest) < 0)
        return NULL;
    return u;
}

static int transient(int rc, const rm_resp *resp)
{
    return rc == -EIO || (!rc && (resp->status >= 500 || resp->status == 429));
}

/* bytes [start, start+len) of a blob source, as a source of its own */
typedef struct {
    const remote_source *src;
    uint64_t start, len, pos;
} chunk_source;

static long chunk_read(void *ctx, char *buf, size_t len)
{
    chunk_source *c = ctx;
    if (c->pos == c->len)
        return 0;
    if (len > c->len - c->pos)
        len = (size_t)(c->len - c->pos);
    long got = c->src->read(c->src->ctx, buf, len);
    if (got == 0)
        return rm_fail(EIO, "an upload's source ended %" PRIu64 " bytes early", c->len - c->pos);
    if (got > 0)
        c->pos += (uint64_t)got;
    return got;
}

static int chunk_rewind(void *ctx)
{
    chunk_source *c = ctx;
    c->pos = 0;
    return c->src->seek(c->src->ctx, c->start);
}

/* bytes [off, off+n) into s: a PATCH, or with last the closing PUT
 * ?digest= (an empty closing PUT gets 500 from ECR: tart#159); *resp is the
 * answer */
static int send_piece(remote *r, session *s, const char *digest, const remote_source *src,
                      uint64_t off, uint64_t n, int last, rm_resp *resp)
{
    int rc = src->seek(src->ctx, off);
    if (rc)
        return rc;
    chunk_source c = {src, off, n, 0};
    remote_source body = {chunk_read, chunk_rewind, &c, NULL};
    char range[48];
    snprintf(range, sizeof range, "%" PRIu64 "-%" PRIu64, off, off + n - 1);
    char *url = last ? put_url(s->location, digest) : NULL;
    if (last && !url)
        return -ENOMEM;
    rm_req q = {.method = last ? "PUT" : "PATCH", .url = last ? url : s->location,
                .content_type = "application/octet-stream", .content_range = n ? range : NULL,
                .src = &body, .src_len = n, .max_body = 1 << 16, .no_resend = 1};
    rc = rm_request(r, &q, resp);
    free(url);
    /* a PATCH: 202 per the spec, ECR answers 201 */
    if (!rc && !last && (resp->status == 202 || resp->status == 201))
        take_location(s, resp);
    return rc;
}

/* GET the session: 0 and *off = the bytes it holds (204, Range: 0-<last>),
 * or -ENOENT if the registry lost it or won't say */
static int session_offset(remote *r, session *s, uint64_t *off)
{
    rm_req q = {.method = "GET", .url = s->location, .max_body = 1 << 16};
    rm_resp resp = {0};
    int rc = rm_request(r, &q, &resp);
    unsigned long long first, last;
    if (!rc && resp.status == 204) {
        take_location(s, &resp);
        /* no Range: nothing yet; distribution says "0-0" for 0 bytes, too */
        *off = resp.range && sscanf(resp.range, "%llu-%llu", &first, &last) == 2 && last ? last + 1 : 0;
    } else if (!rc)
        rc = -ENOENT;
    rm_resp_free(&resp);
    return rc;
}

static int is_digest_refusal(const rm_resp *resp)
{
    return resp->body.len && memmem(resp->body.data, resp->body.len, "DIGEST_INVALID", 14);
}

/* ---- the chunked flow ---- */

typedef struct {
    remote *r;
    const char *digest;
    uint64_t size;
    const remote_source *src;
    remote_upload_plan *plan;
    session s;
    uint64_t off;    /* bytes the session holds */
    uint64_t smallest; /* the smallest PATCH the session took (UINT64_MAX: none) */
    uint64_t tail;   /* at most this much rides in the closing PUT (UINT64_MAX: all) */
    int stalls;      /* failures in a row without progress */
    int closes;      /* closing PUTs refused for the chunk size */
} chunked;

static uint64_t chunk_now(const chunked *u)
{
    uint64_t c = plan_chunk(u->plan);
    if (!u->plan->fixed && u->s.chunk_min > c && u->s.chunk_min <= CHUNK_MIN_MAX)
        c = u->s.chunk_min;
    return c;
}

/* a new session from the start: the old one is gone or unusable */
static int restart(chunked *u)
{
    remote_upload_abandon(u->r, u->s.location);
    u->s = (session){0};
    u->off = 0;
    u->smallest = UINT64_MAX;
    return open_session(u->r, &u->s);
}

/* after a chunk that failed on the way: resume from the registry's count */
static int resume(chunked *u, long retry_after)
{
    if (++u->stalls >= RM_TRIES)
        return 1;
    rm_backoff(u->stalls - 1, retry_after);
    uint64_t off;
    int rc = session_offset(u->r, &u->s, &off);
    if (rc == -ENOENT || (!rc && off > u->size))
        return restart(u);
    if (!rc && off > u->off)
        u->stalls = 0; /* the cut request got somewhere: tries count failures without progress */
    if (!rc)
        u->off = off;
    return rc;
}

/* a PATCH refused with 4xx: -EOPNOTSUPP for the monolithic fallback, 0 to
 * go on with a smaller chunk, or the error */
static int refused(chunked *u, const rm_resp *resp, uint64_t n)
{
    uint64_t held;
    if ((resp->status == 416 || resp->status == 413) && !session_offset(u->r, &u->s, &held) &&
        held != u->off && held <= u->size && ++u->stalls < RM_TRIES) {
        u->off = held; /* we were out of step (an answer lost): go on from its count */
        return 0;
    }
    if (resp->status == 404 && ++u->stalls < RM_TRIES)
        return restart(u); /* the registry lost the session */
    if (resp->status == 401 || resp->status == 403 || resp->status == 404)
        return rm_http_fail(resp, u->digest);
    /* GHCR: 416 "exceeds the maximum permissible limit of 4.00MiB" */
    if ((resp->status == 416 || resp->status == 413) && !u->plan->fixed && n > CHUNK_FLOOR) {
        plan_learn(u->plan, n > CHUNK_DEFAULT ? CHUNK_DEFAULT : n / 2);
        u->s.chunk_min = 0;
        return ++u->stalls < RM_TRIES ? 0 : rm_http_fail(resp, u->digest);
    }
    if (u->off == 0) { /* the first PATCH refused: chunks are not taken here */
        plan_learn(u->plan, 0);
        return -EOPNOTSUPP;
    }
    return rm_http_fail(resp, u->digest);
}

/* the closing PUT refused: 1 to upload again in larger chunks, else the error */
static int close_refused(chunked *u, const rm_resp *resp)
{
    /* ECR: parts but the last must be 5 MiB or more, checked only here */
    if (resp->status == 400 && !is_digest_refusal(resp) && !u->plan->fixed &&
        u->smallest < CHUNK_TOO_SMALL && !u->closes++) {
        if (plan_chunk(u->plan) < CHUNK_LARGE) /* another worker may have learnt it first */
            plan_learn(u->plan, CHUNK_LARGE);
        return 1;
    }
    return rm_http_fail(resp, u->digest);
}

/* one piece: the next chunk, or the rest in the closing PUT. 0 when it went
 * in (*done: the blob is complete), 1 to upload again from the start, or
 * the error */
static int next_piece(chunked *u, int *done)
{
    uint64_t n = chunk_now(u);
    if (!n)
        return -EOPNOTSUPP; /* another worker learnt that chunks are refused */
    uint64_t left = u->size - u->off;
    int last = left <= n && left <= u->tail;
    if (last)
        n = left;
    else if (left <= n) /* the rest but the closing PUT's share */
        n = left - u->tail;
    rm_resp resp = {0};
    int rc = send_piece(u->r, &u->s, u->digest, u->src, u->off, n, last, &resp);
    long after = resp.retry_after;
    if (!rc && last && resp.status == 201) {
        *done = 1;
    } else if (!rc && !last && (resp.status == 202 || resp.status == 201)) {
        u->off += n;
        u->stalls = 0;
        if (n < u->smallest)
            u->smallest = n;
    } else if (transient(rc, &resp)) {
        if (last && remote_blob_exists(u->r, u->digest, u->size) == 1) {
            *done = 1; /* the answer was lost, not the blob */
        } else {
            if (last) /* a PUT is kept whole or not at all: leave the next one less */
                u->tail = n / 4 < TAIL_MIN ? 0 : n / 4;
            if ((rc = resume(u, after)) == 1) /* out of tries: the last failure's error */
                rc = resp.status ? rm_http_fail(&resp, u->digest) : -EIO;
        }
    } else if (!rc && last && resp.status != 416 && resp.status != 413)
        rc = close_refused(u, &resp);
    else if (!rc)
        rc = refused(u, &resp, n);
    rm_resp_free(&resp);
    return rc;
}

static int chunks_then_close(chunked *u)
{
    for (int done = 0; !done;) {
        int rc = next_piece(u, &done);
        if (rc == 1)
            rc = restart(u);
        if (rc)
            return rc;
    }
    free(u->s.location);
    u->s.location = NULL;
    return 0;
}

static int put_chunked(remote *r, const char *digest, uint64_t size, const remote_source *src,
                       remote_upload_plan *plan, char **held)
{
    chunked u = {.r = r, .digest = digest, .size = size, .src = src, .plan = plan,
                 .s = {.location = *held}, .smallest = UINT64_MAX, .tail = UINT64_MAX};
    *held = NULL;
    int rc = u.s.location ? 0 : open_session(r, &u.s);
    if (!rc)
        rc = chunks_then_close(&u);
    remote_upload_abandon(r, u.s.location); /* left only on failure */
    return rc;
}

/* ---- the monolithic flow: POST (or the session given), one PUT ---- */

static int put_whole(remote *r, const char *digest, uint64_t size, const remote_source *src,
                     char *held)
{
    int rc = 0;
    for (int n = 0; n < RM_TRIES; n++) {
        session s = {.location = held};
        held = NULL;
        if (n) {
            rm_backoff(n - 1, 0);
            if (src->rewind && (rc = src->rewind(src->ctx)))
                return rc;
        }
        if (!s.location && (rc = open_session(r, &s)))
            return rc;
        char *url = put_url(s.location, digest);
        free(s.location);
        if (!url)
            return -ENOMEM;
        rm_req q = {.method = "PUT", .url = url, .content_type = "application/octet-stream",
                    .src = src, .src_len = size, .max_body = 1 << 16};
        rm_resp resp = {0};
        rc = rm_request(r, &q, &resp);
        free(url);
        int again = transient(rc, &resp);
        if (!rc && resp.status != 201)
            rc = rm_http_fail(&resp, digest);
        long after = resp.retry_after;
        rm_resp_free(&resp);
        if (!rc || !again)
            return rc;
        if (after > 0)
            rm_backoff(0, after);
    }
    return rc;
}

int remote_blob_put(remote *r, const char *digest, uint64_t size, const remote_source *src)
{
    return put_whole(r, digest, size, src, NULL);
}

int remote_blob_upload(remote *r, const char *digest, uint64_t size, const remote_source *src,
                       remote_upload_plan *plan, char *session)
{
    uint64_t chunk = plan_chunk(plan);
    if (chunk && size > chunk && src->seek) {
        int rc = put_chunked(r, digest, size, src, plan, &session);
        if (rc != -EOPNOTSUPP)
            return rc;
        if (src->rewind && (rc = src->rewind(src->ctx)))
            return rc;
    }
    return put_whole(r, digest, size, src, session);
}
