/* remote: requests with auth: a registry's 401 answered with Basic
 * credentials, or a bearer token from the realm its challenge names (got
 * with a password, an identity token by OAuth2, or a registry token sent as
 * is), and the request sent again; credentials read again on every 401 and
 * tokens renewed before they go stale (docs/remote.md, "Credentials").
 * Above http.c, which sends without auth. */
#define _GNU_SOURCE
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* the value of param in a challenge: realm="...",service="..." */
static char *challenge_param(const char *ch, const char *param)
{
    size_t pl = strlen(param);
    for (const char *p = ch; (p = strcasestr(p, param)); p += pl) {
        if ((p != ch && isalnum((unsigned char)p[-1])) || p[pl] != '=')
            continue;
        const char *v = p + pl + 1;
        if (*v == '"') {
            const char *end = strchr(v + 1, '"');
            return end ? strndup(v + 1, (size_t)(end - v - 1)) : NULL;
        }
        return strndup(v, strcspn(v, ", "));
    }
    return NULL;
}

static void set_authz(remote *r, const char *scheme, const char *value)
{
    if (r->authz)
        rm_wipe(r->authz, strlen(r->authz));
    free(r->authz);
    if (asprintf(&r->authz, "Authorization: %s %s", scheme, value) < 0)
        r->authz = NULL;
}

static char *basic_value(const rm_cred *c)
{
    char *plain = NULL, *b = NULL;
    if (asprintf(&plain, "%s:%s", c->user, c->secret) < 0)
        return NULL;
    b = base64_encode(plain, strlen(plain));
    rm_wipe(plain, strlen(plain));
    free(plain);
    return b;
}

/* Read the credentials (again): on every 401, since a helper's answer may
 * have changed since (an ECR password lasts 12 h, a gcloud token about 1 h).
 * Credentials handed in (login) are never replaced. */
static int read_creds(remote *r)
{
    if (r->cred_given)
        return 0;
    rm_cred_clear(&r->cred);
    r->creds_tried = r->cred_read = 1;
    int rc = rm_cred_lookup(r->host, &r->opts, &r->cred);
    return rc == -ENOENT ? 0 : rc;
}

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* escaped for a URL or a form; wiped behind, as it may escape a refresh token */
static char *url_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    char *out = e ? strdup(e) : NULL;
    if (e)
        rm_wipe(e, strlen(e));
    curl_free(e);
    return out;
}

/* 1 if query ("a=1&b=2") has item as one of its parts */
static int in_query(const char *query, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = query; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL)
        if (!strncmp(p, item, n) && (p[n] == '&' || !p[n]))
            return 1;
    return 0;
}

/* "scope=a&scope=b" from space-separated scopes, each escaped, each once */
static char *scope_query(const char *scopes)
{
    sbuf b = {0};
    char *copy = strdup(scopes), *save = NULL;
    for (char *t = copy ? strtok_r(copy, " ", &save) : NULL; t; t = strtok_r(NULL, " ", &save)) {
        char *e = url_escape(t);
        if (!e) {
            b.oom = 1;
            break;
        }
        char *item = NULL;
        if (asprintf(&item, "scope=%s", e) < 0)
            b.oom = 1;
        else if (!in_query(b.data, item))
            sbuf_printf(&b, "%s%s", b.len ? "&" : "", item);
        free(item);
        free(e);
    }
    free(copy);
    if (b.oom || !b.data) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

/* what a token request asks for: the challenge's realm and service, and
 * the scopes (space-separated) */
typedef struct {
    char *realm, *service, *scope;
} token_ask;

static void ask_free(token_ask *a)
{
    free(a->realm), free(a->service), free(a->scope);
}

static int ask_from(remote *r, const char *challenge, token_ask *a)
{
    a->realm = challenge_param(challenge, "realm");
    a->service = challenge_param(challenge, "service");
    if (asprintf(&a->scope, "repository:%s:%s", r->repo, r->push ? "pull,push" : "pull") < 0)
        a->scope = NULL;
    /* the challenge may ask for more (a mount needs pull on the source repository) */
    char *asked = challenge_param(challenge, "scope");
    if (asked && a->scope && strcmp(asked, a->scope)) {
        char *both = NULL;
        if (asprintf(&both, "%s %s", a->scope, asked) < 0)
            both = NULL;
        free(a->scope);
        a->scope = both;
    }
    free(asked);
    const char *realm = a->realm;
    if (!realm || (strncmp(realm, "https://", 8) &&
                   !(strncmp(realm, "http://", 7) == 0 &&
                     (r->opts.insecure || rm_host_loopback(realm + 7)))))
        return rm_fail(EPROTO, "%s: the token realm '%s' is not an https URL", r->host,
                       realm ? realm : "");
    return a->scope ? 0 : -ENOMEM;
}

/* GET realm?scope=...&service=..., with the credentials as Basic if any */
static int token_by_get(remote *r, const token_ask *a, rm_resp *resp)
{
    char *es = a->service ? url_escape(a->service) : NULL, *esc = scope_query(a->scope);
    int with_creds = r->cred.user && r->cred.kind != RM_CRED_REGISTRY_TOKEN;
    char *url = NULL, *basic = with_creds ? basic_value(&r->cred) : NULL, *authz = NULL;
    int rc = 0;
    if (!esc || (a->service && !es) || (with_creds && !basic) ||
        asprintf(&url, "%s%s%s%s%s", a->realm, strchr(a->realm, '?') ? "&" : "?", esc,
                 es ? "&service=" : "", es ? es : "") < 0 ||
        (basic && asprintf(&authz, "Authorization: Basic %s", basic) < 0))
        rc = -ENOMEM;
    if (!rc) {
        rm_req q = {.method = "GET", .url = url, .max_body = 1 << 16, .no_auth = 1, .authz = authz};
        rc = rm_perform(r, &q, resp);
    }
    if (basic)
        rm_wipe(basic, strlen(basic));
    if (authz)
        rm_wipe(authz, strlen(authz));
    free(es), free(esc), free(url), free(basic), free(authz);
    return rc;
}

/* An identity token is an OAuth2 refresh token: POSTed to the realm as a
 * form (distribution's client and docker do so), never put in a URL. */
static int token_by_refresh(remote *r, const token_ask *a, rm_resp *resp)
{
    char *et = url_escape(r->cred.secret), *es = a->service ? url_escape(a->service) : NULL;
    char *esc = url_escape(a->scope), *body = NULL;
    int rc = 0;
    if (!et || !esc || (a->service && !es) ||
        asprintf(&body, "grant_type=refresh_token&refresh_token=%s%s%s&scope=%s&client_id=strata",
                 et, es ? "&service=" : "", es ? es : "", esc) < 0)
        rc = -ENOMEM;
    if (!rc) {
        rm_req q = {.method = "POST", .url = a->realm,
                    .content_type = "application/x-www-form-urlencoded", .body = body,
                    .body_len = strlen(body), .max_body = 1 << 16, .no_auth = 1};
        rc = rm_perform(r, &q, resp);
    }
    if (et)
        rm_wipe(et, strlen(et));
    if (body)
        rm_wipe(body, strlen(body));
    free(et), free(es), free(esc), free(body);
    return rc;
}

/* The token server's answer: its token becomes r's Authorization, to be
 * renewed a little before it expires ("expires_in", 60 s if absent, as the
 * token specification says). A new refresh token replaces the old one for
 * the rest of the command. */
static int take_token(remote *r, const rm_resp *resp, double asked_at)
{
    json_t *j = json_loadb(resp->body.data ? resp->body.data : "", resp->body.len, 0, NULL);
    const char *tok = json_string_value(json_object_get(j, "token"));
    if (!tok || !*tok)
        tok = json_string_value(json_object_get(j, "access_token"));
    json_int_t life = json_integer_value(json_object_get(j, "expires_in"));
    const char *refresh = json_string_value(json_object_get(j, "refresh_token"));
    int rc = 0;
    if (!tok || !*tok)
        rc = rm_fail(EPROTO, "%s: the token server's answer has no token", r->host);
    else {
        set_authz(r, "Bearer", tok);
        rc = r->authz ? 0 : -ENOMEM;
    }
    if (!rc && refresh && *refresh && r->cred.kind == RM_CRED_IDENTITY_TOKEN &&
        strcmp(refresh, r->cred.secret)) {
        char *keep = strdup(refresh);
        if (keep) {
            rm_wipe(r->cred.secret, strlen(r->cred.secret));
            free(r->cred.secret);
            r->cred.secret = keep;
        }
    }
    if (life <= 0 || life > 86400)
        life = 60;
    double margin = life >= 40 ? 10 : (double)life / 4;
    r->token_expires = rc ? 0 : asked_at + (double)life - margin;
    json_decref(j);
    return rc;
}

/* a token for a Bearer challenge, as r's credentials allow */
static int fetch_token(remote *r, const char *challenge)
{
    r->token_expires = 0;
    r->challenge[0] = 0;
    if (r->cred.user && r->cred.kind == RM_CRED_REGISTRY_TOKEN) {
        set_authz(r, "Bearer", r->cred.secret); /* docker sends it as is */
        return r->authz ? 0 : -ENOMEM;
    }
    token_ask a = {0};
    rm_resp resp = {0};
    double asked_at = now_mono();
    int identity = r->cred.user && r->cred.kind == RM_CRED_IDENTITY_TOKEN;
    int rc = ask_from(r, challenge, &a);
    if (!rc)
        rc = identity ? token_by_refresh(r, &a, &resp) : token_by_get(r, &a, &resp);
    /* a token server without OAuth2 answers the POST 404; the token
     * specification's GET is what every one of them takes */
    if (!rc && identity && resp.status == 404)
        rc = token_by_get(r, &a, &resp);
    if (!rc && (resp.status == 401 || resp.status == 403 || (identity && resp.status == 400)))
        rc = rm_fail(EACCES, "%s: the token server refused the credentials%s", r->host,
                     r->cred.user ? "" : " (none are configured: strata login)");
    else if (!rc && resp.status != 200)
        rc = rm_http_fail(&resp, "token request");
    if (!rc)
        rc = take_token(r, &resp, asked_at);
    if (!rc && strlen(challenge) < sizeof r->challenge)
        strcpy(r->challenge, challenge);
    if (resp.body.data)
        rm_wipe(resp.body.data, resp.body.len);
    rm_resp_free(&resp);
    ask_free(&a);
    return rc;
}

/* Renew a token known to be stale before it is used (a worker's copy of
 * the connection does not know when its token expires: its 401 renews). A
 * token server that refuses credentials read a while ago gets them read
 * again, once. */
static int renew_if_stale(remote *r)
{
    if (!r->token_expires || !r->challenge[0] || now_mono() < r->token_expires)
        return 0;
    char challenge[sizeof r->challenge];
    strcpy(challenge, r->challenge);
    int rc = r->cred_read || r->cred_given ? 0 : read_creds(r);
    if (!rc)
        rc = fetch_token(r, challenge);
    if (rc == -EACCES && r->cred_read && !(rc = read_creds(r)))
        rc = fetch_token(r, challenge);
    return rc;
}

/* answer a 401: 1 if there is something new to try, 0 if not */
static int answer_challenge(remote *r, const rm_resp *resp, int *rc)
{
    const char *ch = resp->www_auth;
    *rc = read_creds(r);
    if (*rc || !ch)
        return 0;
    if (!strncasecmp(ch, "Bearer", 6)) {
        *rc = fetch_token(r, ch);
        return !*rc;
    }
    if (!strncasecmp(ch, "Basic", 5) && r->cred.user && r->cred.kind == RM_CRED_PASSWORD) {
        char *v = basic_value(&r->cred);
        if (!v) {
            *rc = -ENOMEM;
            return 0;
        }
        set_authz(r, "Basic", v);
        rm_wipe(v, strlen(v));
        free(v);
        return r->authz != NULL;
    }
    return 0;
}

/* A 401 on any request (a token or password that expired or was rotated
 * mid-transfer, a scope the token lacks) reads the credentials again, gets
 * a new token and sends the request once more. Its body is resent from the
 * start (rewound); a GET's sink has received nothing of a 401. */
int rm_request(remote *r, const rm_req *q, rm_resp *resp)
{
    int rc = q->no_auth ? 0 : renew_if_stale(r);
    if (!rc)
        rc = rm_perform(r, q, resp);
    if (rc || resp->status != 401 || q->no_auth)
        return rc;
    char *had = r->authz ? strdup(r->authz) : NULL;
    int arc = 0;
    int fresh = answer_challenge(r, resp, &arc);
    /* a second identical Authorization would be refused the same way */
    if (fresh && had && r->authz && !strcmp(had, r->authz) && strncmp(had, "Authorization: Bearer", 21))
        fresh = 0;
    if (had)
        rm_wipe(had, strlen(had));
    free(had);
    if (arc)
        return arc;
    if (!fresh)
        return rm_fail(EACCES, "%s: authentication required%s", r->host,
                       r->cred.user ? ": the registry refused the credentials"
                                    : " (no credentials for this registry: strata login)");
    if (q->src && q->src->rewind && q->src->rewind(q->src->ctx))
        return -EIO;
    rc = rm_perform(r, q, resp);
    if (!rc && resp->status == 401)
        return rm_fail(EACCES, "%s: the registry refused the credentials", r->host);
    if (!rc && resp->status == 403)
        return rm_fail(EACCES, "%s: access to %s denied", r->host, r->repo);
    return rc;
}
