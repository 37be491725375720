/* remote: requests to a registry through libcurl, with auth and retries. */
#define _GNU_SOURCE
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static int open_conn(const char *host, const char *repo, const remote_opts *o, int push,
                     remote **out)
{
    int rc = rm_curl_load();
    if (rc)
        return rc;
    remote *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    const char *scheme = (o && o->insecure) || rm_host_loopback(host) ? "http" : "https";
    r->host = strdup(host);
    r->repo = strdup(repo);
    r->push = push;
    if (o)
        r->opts = *o;
    r->docker_dir = o && o->docker_dir ? strdup(o->docker_dir) : NULL;
    r->opts.docker_dir = r->docker_dir;
    if (asprintf(&r->scheme_host, "%s://%s", scheme, host) < 0)
        r->scheme_host = NULL;
    if (asprintf(&r->base, "%s://%s/v2/%s", scheme, host, repo) < 0)
        r->base = NULL;
    r->curl = curl_easy_init();
    if (!r->host || !r->repo || !r->scheme_host || !r->base || !r->curl ||
        (o && o->docker_dir && !r->docker_dir)) {
        remote_close(r);
        return -ENOMEM;
    }
    *out = r;
    return 0;
}

int remote_open(const remote_ref *ref, const remote_opts *o, int push, remote **out)
{
    return open_conn(ref->host, ref->repo, o, push, out);
}

int rm_dup(const remote *r, remote **out)
{
    int rc = open_conn(r->host, r->repo, &r->opts, r->push, out);
    if (!rc && r->authz && !((*out)->authz = strdup(r->authz)))
        rc = -ENOMEM;
    if (!rc) { /* so a worker renews the token before it goes stale, as r would */
        (*out)->token_expires = r->token_expires;
        memcpy((*out)->challenge, r->challenge, sizeof r->challenge);
    }
    if (!rc && r->creds_tried) {
        (*out)->creds_tried = 1;
        (*out)->cred_read = r->cred_read;
        (*out)->cred_given = r->cred_given;
        (*out)->cred.kind = r->cred.kind;
        if (r->cred.user && (!((*out)->cred.user = strdup(r->cred.user)) ||
                             !((*out)->cred.secret = strdup(r->cred.secret))))
            rc = -ENOMEM;
    }
    if (rc && !*out)
        return rc;
    if (rc) {
        remote_close(*out);
        *out = NULL;
    }
    return rc;
}

int remote_dup(const remote *r, remote **out)
{
    *out = NULL;
    return rm_dup(r, out);
}

void remote_close(remote *r)
{
    if (!r)
        return;
    if (r->curl)
        curl_easy_cleanup(r->curl);
    if (r->authz)
        rm_wipe(r->authz, strlen(r->authz));
    free(r->authz);
    rm_cred_clear(&r->cred);
    free(r->host);
    free(r->repo);
    free(r->base);
    free(r->scheme_host);
    free(r->docker_dir);
    free(r);
}

char *rm_url(const remote *r, const char *fmt, const char *arg)
{
    char *p = NULL, *tail = NULL;
    if (asprintf(&tail, fmt, arg) < 0)
        return NULL;
    if (asprintf(&p, "%s%s", r->base, tail) < 0)
        p = NULL;
    free(tail);
    return p;
}

void rm_resp_free(rm_resp *r)
{
    free(r->body.data);
    free(r->location);
    free(r->digest);
    free(r->www_auth);
    free(r->content_range);
    free(r->content_type);
    free(r->link);
    free(r->range);
    free(r->host);
    memset(r, 0, sizeof *r);
}

/* ---- one exchange ---- */

typedef struct {
    const rm_req *q;
    rm_resp *resp;
    CURL *curl;
    size_t sent; /* of a memory body */
    int too_big, sink_failed, src_failed;
    int sink_rc; /* what the sink returned: a negative errno, or >0 to stop on purpose */
    int follow;  /* a redirect answer will be followed */
} xfer;

static int is_redirect(long status)
{
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

static void set_header(char **slot, const char *v, size_t n)
{
    free(*slot);
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
        n--;
    *slot = strndup(v, n);
}

static size_t on_header(char *line, size_t size, size_t nitems, void *ctx)
{
    xfer *x = ctx;
    size_t n = size * nitems;
    rm_resp *r = x->resp;
    if (n >= 5 && !strncmp(line, "HTTP/", 5)) { /* a new response (after a redirect) */
        free(r->location), free(r->digest), free(r->www_auth), free(r->content_range);
        free(r->content_type), free(r->link), free(r->range);
        r->location = r->digest = r->www_auth = r->content_range = r->content_type = r->link = NULL;
        r->range = NULL;
        r->retry_after = 0;
        r->chunk_min = 0;
        r->content_length = -1;
        return n;
    }
    const char *colon = memchr(line, ':', n);
    if (!colon)
        return n;
    size_t klen = (size_t)(colon - line);
    const char *v = colon + 1;
    while (v < line + n && *v == ' ')
        v++;
    size_t vlen = (size_t)(line + n - v);
#define IS(k) (klen == strlen(k) && !strncasecmp(line, k, klen))
    if (IS("Location"))
        set_header(&r->location, v, vlen);
    else if (IS("Docker-Content-Digest"))
        set_header(&r->digest, v, vlen);
    else if (IS("WWW-Authenticate"))
        set_header(&r->www_auth, v, vlen);
    else if (IS("Content-Range"))
        set_header(&r->content_range, v, vlen);
    else if (IS("Content-Type"))
        set_header(&r->content_type, v, vlen);
    else if (IS("Link"))
        set_header(&r->link, v, vlen);
    else if (IS("Retry-After"))
        r->retry_after = strtol(v, NULL, 10);
    else if (IS("Range"))
        set_header(&r->range, v, vlen);
    else if (IS("OCI-Chunk-Min-Length"))
        r->chunk_min = strtoull(v, NULL, 10);
    else if (IS("Content-Length"))
        r->content_length = strtoll(v, NULL, 10);
#undef IS
    return n;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
    xfer *x = ctx;
    size_t n = size * nmemb;
    curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &x->resp->status);
    if (x->follow && is_redirect(x->resp->status))
        return n; /* a redirect's body says nothing we need */
    /* an error's body is kept for its message, not given to the sink */
    if (x->q->sink && x->resp->status >= 200 && x->resp->status < 300) {
        if ((x->sink_rc = x->q->sink(x->q->sink_ctx, data, n))) {
            x->sink_failed = 1;
            return 0;
        }
        return n;
    }
    size_t max = x->q->sink ? 1 << 16 : x->q->max_body;
    if (x->resp->body.len + n > max) {
        x->too_big = 1;
        return 0;
    }
    sbuf_add(&x->resp->body, data, n);
    return x->resp->body.oom ? 0 : n;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *ctx)
{
    xfer *x = ctx;
    size_t n = size * nitems;
    if (x->q->src) {
        long got = x->q->src->read(x->q->src->ctx, buf, n);
        if (got < 0) {
            x->src_failed = 1;
            return CURL_READFUNC_ABORT;
        }
        return (size_t)got;
    }
    size_t left = x->q->body_len - x->sent;
    if (n > left)
        n = left;
    memcpy(buf, (const char *)x->q->body + x->sent, n);
    x->sent += n;
    return n;
}

/* libcurl rewinds a body to send it again (a reused connection that was
 * closed, a redirect): only back to the start is needed */
static int on_seek(void *ctx, curl_off_t offset, int origin)
{
    xfer *x = ctx;
    if (offset != 0 || origin != SEEK_SET || x->q->no_resend)
        return CURL_SEEKFUNC_CANTSEEK;
    if (x->q->src)
        return x->q->src->rewind && !x->q->src->rewind(x->q->src->ctx) ? CURL_SEEKFUNC_OK
                                                                        : CURL_SEEKFUNC_FAIL;
    x->sent = 0;
    return CURL_SEEKFUNC_OK;
}

static int transient_curl(CURLcode c)
{
    return c == CURLE_COULDNT_CONNECT || c == CURLE_RECV_ERROR || c == CURLE_SEND_ERROR ||
           c == CURLE_GOT_NOTHING || c == CURLE_PARTIAL_FILE || c == CURLE_OPERATION_TIMEDOUT ||
           c == CURLE_HTTP2 || c == CURLE_HTTP2_STREAM || c == CURLE_SSL_CONNECT_ERROR;
}

static char *full_url(const remote *r, const char *url)
{
    char *u = NULL;
    if (!strncmp(url, "http://", 7) || !strncmp(url, "https://", 8))
        return strdup(url);
    if (asprintf(&u, "%s%s", r->scheme_host, url) < 0)
        return NULL;
    return u;
}

/* ---- where a URL goes: scheme, host and port ---- */

#define RM_AUTHORITY_MAX 256

/* the host[:port] of an absolute http(s) URL, without user info, in out;
 * the length of its scheme ("http" or "https"), or 0 if it is neither */
static size_t url_authority(const char *url, char out[RM_AUTHORITY_MAX])
{
    size_t scheme = !strncasecmp(url, "https://", 8) ? 5 : !strncasecmp(url, "http://", 7) ? 4 : 0;
    out[0] = 0;
    if (!scheme)
        return 0;
    const char *a = url + scheme + 3;
    size_t n = strcspn(a, "/?#");
    for (const char *at; (at = memchr(a, '@', n));)
        n -= (size_t)(at + 1 - a), a = at + 1;
    if (!n || n >= RM_AUTHORITY_MAX)
        return 0;
    memcpy(out, a, n);
    out[n] = 0;
    return scheme;
}

/* "scheme://host:port" of a URL, lowercased, the port always written (the
 * scheme's default if absent), so two spellings of one origin compare
 * equal; 0 if the URL is not absolute http(s) */
static int url_origin(const char *url, char out[RM_AUTHORITY_MAX + 16])
{
    char auth[RM_AUTHORITY_MAX];
    size_t scheme = url_authority(url, auth);
    if (!scheme)
        return 0;
    const char *end = auth[0] == '[' ? strchr(auth, ']') : auth;
    const char *colon = end ? strrchr(end, ':') : NULL;
    size_t hostlen = colon ? (size_t)(colon - auth) : strlen(auth);
    long port = colon ? strtol(colon + 1, NULL, 10) : scheme == 5 ? 443 : 80;
    snprintf(out, RM_AUTHORITY_MAX + 16, "%s://%.*s:%ld", scheme == 5 ? "https" : "http",
             (int)hostlen, auth, port);
    for (char *p = out; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return 1;
}

static int same_origin(const char *a, const char *b)
{
    char oa[RM_AUTHORITY_MAX + 16], ob[RM_AUTHORITY_MAX + 16];
    return url_origin(a, oa) && url_origin(b, ob) && !strcmp(oa, ob);
}

/* The plain-HTTP rule, for every URL a request goes to (redirects too):
 * https anywhere; http only to a loopback host, or with --insecure. */
static int url_allowed(const remote *r, const char *url)
{
    char auth[RM_AUTHORITY_MAX];
    size_t scheme = url_authority(url, auth);
    return scheme == 5 || (scheme == 4 && (r->opts.insecure || rm_host_loopback(auth)));
}

/* "GET /v2/repo/blobs/sha256:..." for messages: no query (a presigned
 * storage URL carries its signature there), bounded */
static void describe(const rm_req *q, const char *url, char *out, size_t n)
{
    const char *path = url;
    char auth[RM_AUTHORITY_MAX];
    size_t scheme = url_authority(url, auth);
    if (scheme)
        path = url + scheme + 3 + strcspn(url + scheme + 3, "/?#");
    int len = (int)strcspn(path, "?#");
    if (!len)
        path = "/", len = 1;
    snprintf(out, n, "%s %.*s%s", q->method, len > 160 ? 160 : len, path, len > 160 ? "..." : "");
}

static struct curl_slist *headers_for(const remote *r, const rm_req *q, int with_authz)
{
    struct curl_slist *h = NULL;
    char line[300];
    if (q->accept) {
        snprintf(line, sizeof line, "Accept: %s", q->accept);
        h = curl_slist_append(h, line);
    }
    if (q->content_type) {
        snprintf(line, sizeof line, "Content-Type: %s", q->content_type);
        h = curl_slist_append(h, line);
    }
    const char *authz = q->no_auth ? q->authz : r->authz;
    if (authz && with_authz)
        h = curl_slist_append(h, authz);
    h = curl_slist_append(h, "Expect:"); /* proxies may never answer 100-continue */
    if (q->range) {
        snprintf(line, sizeof line, "Range: %s", q->range);
        h = curl_slist_append(h, line);
    }
    if (q->content_range) {
        snprintf(line, sizeof line, "Content-Range: %s", q->content_range);
        h = curl_slist_append(h, line);
    }
    return h;
}

static void setup(remote *r, const rm_req *q, xfer *x, const char *url, struct curl_slist *h)
{
    CURL *c = r->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    /* a stalled transfer (under 1 KiB/s for a minute) is an error, retried */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "strata");
    /* url_allowed checked the scheme; this says it to libcurl as well.
     * Redirects are followed by exchange(), never by libcurl. */
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, strncasecmp(url, "https:", 6) ? "http" : "https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    if (!strcmp(q->method, "HEAD"))
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (!strcmp(q->method, "PUT") || !strcmp(q->method, "POST") ||
             !strcmp(q->method, "PATCH")) { /* with a body, maybe empty */
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, x);
        curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(c, CURLOPT_SEEKDATA, x);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE,
                         (curl_off_t)(q->src ? q->src_len : q->body_len));
        if (strcmp(q->method, "PUT"))
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, q->method);
    } else if (strcmp(q->method, "GET")) /* DELETE...: else curl would send GET */
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, q->method);
}

static int follows_redirects(const rm_req *q)
{
    return !strcmp(q->method, "GET") || !strcmp(q->method, "HEAD");
}

/* one request to url, one answer; 0 with resp->status set (and *next, the
 * redirect's target resolved against url, if it is one to follow), or a
 * curl failure as -EIO naming the host and the request */
static int attempt(remote *r, const rm_req *q, const char *url, int with_authz, rm_resp *resp,
                   CURLcode *cc, char **next)
{
    rm_resp_free(resp);
    resp->content_length = -1;
    char auth[RM_AUTHORITY_MAX];
    url_authority(url, auth);
    xfer x = {.q = q, .resp = resp, .curl = r->curl, .follow = follows_redirects(q)};
    struct curl_slist *h = headers_for(r, q, with_authz);
    if (!h || !(resp->host = strdup(auth[0] ? auth : r->host))) {
        curl_slist_free_all(h);
        return -ENOMEM;
    }
    setup(r, q, &x, url, h);
    *cc = curl_easy_perform(r->curl);
    curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &resp->status);
    const char *target = NULL;
    if (*cc == CURLE_OK && x.follow && is_redirect(resp->status))
        curl_easy_getinfo(r->curl, CURLINFO_REDIRECT_URL, &target);
    *next = target ? strdup(target) : NULL;
    curl_easy_setopt(r->curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h);
    char asked[200];
    describe(q, url, asked, sizeof asked);
    if (target && !*next)
        return -ENOMEM;
    if (x.too_big)
        return rm_fail(EFBIG, "%s: %s: the answer is larger than %zu bytes", resp->host, asked,
                       q->max_body);
    if (x.sink_failed && x.sink_rc < 0)
        return x.sink_rc; /* the sink's error, with the code it was raised with */
    if (x.sink_failed || x.src_failed)
        return -ECANCELED; /* the sink stopped on purpose, or the source set the error */
    if (resp->body.oom)
        return -ENOMEM;
    if (*cc != CURLE_OK)
        return rm_fail(EIO, "%s: %s: %s", resp->host, asked, curl_easy_strerror(*cc));
    return 0;
}

/* at most this many redirects per request (registries use one: to storage) */
#define RM_REDIRECTS 5

/* One request and the redirects of its answer, if it is a GET or HEAD.
 * They are followed here, not by libcurl, because of what a hop may carry:
 * the Authorization header only while the hop stays on the origin (scheme,
 * host and port) the request was made to, so a registry's credentials or
 * token never reach its storage (S3, GCS, Azure: presigned URLs that need
 * none) or any other host; Range and Accept on every hop, since storage
 * answers the Range itself; and the plain-HTTP rule checked for every hop.
 * A relative Location is resolved by libcurl (CURLINFO_REDIRECT_URL). */
static int exchange(remote *r, const rm_req *q, rm_resp *resp, CURLcode *cc)
{
    char *first = full_url(r, q->url), *url = first, *next = NULL;
    int rc = first ? 0 : -ENOMEM;
    char asked[200];
    for (int hop = 0; !rc; hop++) {
        if (!url_allowed(r, url)) {
            char to[RM_AUTHORITY_MAX];
            url_authority(url, to);
            describe(q, first, asked, sizeof asked);
            rc = rm_fail(EPROTO, "%s: %s: %s%s: plain HTTP is refused (https only, unless the host "
                         "is loopback or --insecure is given)", r->host, asked,
                         hop ? "redirected to " : "", hop ? to : "");
            break;
        }
        rc = attempt(r, q, url, hop == 0 || same_origin(first, url), resp, cc, &next);
        resp->redirects = hop;
        if (rc || !next)
            break;
        if (hop == RM_REDIRECTS) {
            describe(q, first, asked, sizeof asked);
            rc = rm_fail(EPROTO, "%s: %s: more than %d redirects", r->host, asked, RM_REDIRECTS);
            break;
        }
        if (url != first)
            free(url);
        url = next;
        next = NULL;
    }
    free(next);
    if (url != first)
        free(url);
    free(first);
    return rc;
}

void rm_backoff(int n, long retry_after)
{
    long ms = 250L << n; /* 0.25, 0.5, 1, 2 s */
    if (retry_after > 0)
        ms = (retry_after > 30 ? 30 : retry_after) * 1000;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int rm_perform(remote *r, const rm_req *q, rm_resp *resp)
{
    for (int n = 0;; n++) {
        CURLcode cc = CURLE_OK;
        int rc = exchange(r, q, resp, &cc);
        int again = (rc == -EIO && transient_curl(cc)) ||
                    (!rc && (resp->status >= 500 || resp->status == 429));
        if (!again || q->src || q->sink || n + 1 >= RM_TRIES)
            return rc;
        rm_backoff(n, resp->retry_after);
    }
}

void rm_registry_says(const rm_resp *resp, char *out, size_t n)
{
    json_t *j = resp->body.len ? json_loadb(resp->body.data, resp->body.len, 0, NULL) : NULL;
    json_t *e = json_array_get(json_object_get(j, "errors"), 0);
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    /* the detail often says what was wrong (the media type, the name) */
    json_t *dj = json_object_get(e, "detail");
    char *detail = json_is_string(dj) ? strdup(json_string_value(dj))
                   : dj && !json_is_null(dj) && json_object_size(dj) ? json_dumps(dj, JSON_COMPACT)
                                                                      : NULL;
    snprintf(out, n, "HTTP %ld%s%s%s%s%s%s", resp->status, code || msg ? ": " : "", code ? code : "",
             code && msg ? " " : "", msg ? msg : "", detail ? "; " : "", detail ? detail : "");
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    free(detail);
    json_decref(j);
}

int rm_http_fail(const rm_resp *resp, const char *what)
{
    char says[512];
    rm_registry_says(resp, says, sizeof says);
    int err = resp->status == 404 ? ENOENT : resp->status == 401 || resp->status == 403 ? EACCES : EPROTO;
    const char *who = resp->redirects ? "the storage the registry redirected to" : "the registry";
    if (!resp->host)
        return rm_fail(err, "%s: %s answered %s", what, who, says);
    return rm_fail(err, "%s: %s: %s answered %s", resp->host, what, who, says);
}
