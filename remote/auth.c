/* remote: requests with auth: a registry's 401 answered with Basic
 * credentials, or a bearer token from the realm its challenge names
 * (docs/remote.md, "Credentials"), and the request sent again. Above http.c,
 * which sends without auth. */
#define _GNU_SOURCE
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    b = rm_b64_encode(plain, strlen(plain));
    rm_wipe(plain, strlen(plain));
    free(plain);
    return b;
}

static int load_creds(remote *r)
{
    if (r->creds_tried)
        return 0;
    r->creds_tried = 1;
    int rc = rm_cred_lookup(r->host, &r->opts, &r->cred);
    return rc == -ENOENT ? 0 : rc;
}

static char *url_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    char *out = e ? strdup(e) : NULL;
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

/* ask the token server named by a Bearer challenge for a token */
static int fetch_token(remote *r, const char *challenge)
{
    char *realm = challenge_param(challenge, "realm");
    char *service = challenge_param(challenge, "service");
    char *scope = NULL;
    if (asprintf(&scope, "repository:%s:%s", r->repo, r->push ? "pull,push" : "pull") < 0)
        scope = NULL;
    /* the challenge may ask for more (a mount needs pull on the source repository) */
    char *asked = challenge_param(challenge, "scope");
    if (asked && scope && strcmp(asked, scope)) {
        char *both = NULL;
        if (asprintf(&both, "%s %s", scope, asked) < 0)
            both = NULL;
        free(scope);
        scope = both;
    }
    free(asked);
    char *es = service ? url_escape(service) : NULL, *esc = scope ? scope_query(scope) : NULL;
    char *url = NULL, *basic = r->cred.user ? basic_value(&r->cred) : NULL, *authz = NULL;
    int rc = 0;
    if (!realm || (strncmp(realm, "https://", 8) &&
                   !(strncmp(realm, "http://", 7) == 0 &&
                     (r->opts.insecure || rm_host_loopback(realm + 7)))))
        rc = rm_fail(EPROTO, "%s: the token realm '%s' is not an https URL", r->host,
                     realm ? realm : "");
    else if (!esc || (service && !es) || (r->cred.user && !basic) ||
             asprintf(&url, "%s%s%s%s%s", realm, strchr(realm, '?') ? "&" : "?", esc,
                      es ? "&service=" : "", es ? es : "") < 0 ||
             (basic && asprintf(&authz, "Authorization: Basic %s", basic) < 0))
        rc = -ENOMEM;
    rm_resp resp = {0};
    if (!rc) {
        rm_req q = {.method = "GET", .url = url, .max_body = 1 << 16, .no_auth = 1, .authz = authz};
        rc = rm_perform(r, &q, &resp);
    }
    if (!rc && resp.status == 401)
        rc = rm_fail(EACCES, "%s: the token server refused the credentials%s", r->host,
                     r->cred.user ? "" : " (none are configured: strata login)");
    else if (!rc && resp.status != 200)
        rc = rm_http_fail(&resp, "token request");
    json_t *j = rc ? NULL : json_loadb(resp.body.data ? resp.body.data : "", resp.body.len, 0, NULL);
    const char *tok = j ? json_string_value(json_object_get(j, "token")) : NULL;
    if (j && !tok)
        tok = json_string_value(json_object_get(j, "access_token"));
    if (!rc && !tok)
        rc = rm_fail(EPROTO, "%s: the token server's answer has no token", r->host);
    if (!rc)
        set_authz(r, "Bearer", tok);
    if (!rc && !r->authz)
        rc = -ENOMEM;
    json_decref(j);
    rm_resp_free(&resp);
    if (basic)
        rm_wipe(basic, strlen(basic));
    if (authz)
        rm_wipe(authz, strlen(authz));
    free(realm), free(service), free(scope), free(es), free(esc), free(url), free(basic), free(authz);
    return rc;
}

/* answer a 401: 1 if there is something new to try, 0 if not */
static int answer_challenge(remote *r, const rm_resp *resp, int *rc)
{
    const char *ch = resp->www_auth;
    *rc = load_creds(r);
    if (*rc || !ch)
        return 0;
    if (!strncasecmp(ch, "Bearer", 6)) {
        *rc = fetch_token(r, ch);
        return !*rc;
    }
    if (!strncasecmp(ch, "Basic", 5) && r->cred.user) {
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

int rm_request(remote *r, const rm_req *q, rm_resp *resp)
{
    int rc = rm_perform(r, q, resp);
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
