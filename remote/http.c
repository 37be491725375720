/* remote: requests to a registry through libcurl, with auth and retries. */
#define _GNU_SOURCE
#include "internal.h"

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
    if (!rc && r->creds_tried) {
        (*out)->creds_tried = 1;
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
} xfer;

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

static struct curl_slist *headers_for(const remote *r, const rm_req *q)
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
    if (authz)
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
    int plain_ok = r->opts.insecure || rm_host_loopback(r->host);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, plain_ok ? "http,https" : "https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, plain_ok ? "http,https" : "https");
    /* blob GETs may redirect to storage: follow, and libcurl drops our
     * Authorization header when the host changes */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, !strcmp(q->method, "GET") ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
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

/* one attempt; 0 with resp->status set, or a curl failure as -EIO */
static int attempt(remote *r, const rm_req *q, rm_resp *resp, CURLcode *cc)
{
    rm_resp_free(resp);
    resp->content_length = -1;
    xfer x = {.q = q, .resp = resp, .curl = r->curl};
    char *url = full_url(r, q->url);
    struct curl_slist *h = headers_for(r, q);
    if (!url || !h) {
        free(url);
        curl_slist_free_all(h);
        return -ENOMEM;
    }
    setup(r, q, &x, url, h);
    *cc = curl_easy_perform(r->curl);
    curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &resp->status);
    curl_easy_setopt(r->curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h);
    free(url);
    if (x.too_big)
        return rm_fail(EFBIG, "%s: the registry's answer is larger than %zu bytes", r->host,
                       q->max_body);
    if (x.sink_failed && x.sink_rc < 0)
        return x.sink_rc; /* the sink's error, with the code it was raised with */
    if (x.sink_failed || x.src_failed)
        return -ECANCELED; /* the sink stopped on purpose, or the source set the error */
    if (resp->body.oom)
        return -ENOMEM;
    if (*cc != CURLE_OK)
        return rm_fail(EIO, "%s: %s", r->host, curl_easy_strerror(*cc));
    return 0;
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
        int rc = attempt(r, q, resp, &cc);
        int again = (rc == -EIO && transient_curl(cc)) ||
                    (!rc && (resp->status >= 500 || resp->status == 429));
        if (!again || q->src || q->sink || n + 1 >= RM_TRIES)
            return rc;
        rm_backoff(n, resp->retry_after);
    }
}

/* the registry's own error message, if its body is the standard JSON */
static void registry_message(const rm_resp *resp, char *out, size_t n)
{
    out[0] = 0;
    json_t *j = resp->body.len ? json_loadb(resp->body.data, resp->body.len, 0, NULL) : NULL;
    json_t *e = json_array_get(json_object_get(j, "errors"), 0);
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (code || msg)
        snprintf(out, n, ": %s%s%s", code ? code : "", code && msg ? " " : "", msg ? msg : "");
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    json_decref(j);
}

int rm_http_fail(const rm_resp *resp, const char *what)
{
    char msg[256];
    registry_message(resp, msg, sizeof msg);
    int err = resp->status == 404 ? ENOENT : resp->status == 401 || resp->status == 403 ? EACCES : EPROTO;
    return rm_fail(err, "%s: the registry answered HTTP %ld%s", what, resp->status, msg);
}
