/* remote: what a push asks the registry before its first blob, so that a
 * refusal costs seconds, not the upload of every pack. */
#define _GNU_SOURCE
#include "preflight.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define EMPTY_BLOB "{}"
#define EMPTY_DIGEST "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
#define ACCEPTED_KEPT 64        /* lines of the "accepted" cache file */

size_t rm_listing_descriptors(const rm_listing *l)
{
    size_t n = 3 * l->nlayers;
    for (size_t i = 0; i < l->nlayers; i++)
        n += l->npacks[i];
    return n;
}

/* ---- cache files ---- */

char *rm_cache_path(const char *what)
{
    const char *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char *p = NULL;
    if (x && *x ? asprintf(&p, "%s/strata/%s", x, what) < 0
                : !home || asprintf(&p, "%s/.cache/strata/%s", home, what) < 0)
        return NULL;
    return p;
}

char *rm_cache_read(const char *what)
{
    char *p = rm_cache_path(what), *text = NULL;
    FILE *f = p ? fopen(p, "r") : NULL;
    free(p);
    if (!f)
        return NULL;
    text = calloc(1, RM_CACHE_READ_MAX + 1);
    if (text && fread(text, 1, RM_CACHE_READ_MAX, f) == 0) {
        free(text);
        text = NULL;
    }
    fclose(f);
    return text;
}

void rm_cache_record(const char *what, const char *key, const char *line, size_t keep)
{
    char *text = rm_cache_read(what), *path = rm_cache_path(what);
    size_t kl = strlen(key), lines = 0;
    sbuf out = {0};
    for (char *s = text, *nl; path && s && *s; s = nl ? nl + 1 : s + strlen(s)) {
        nl = strchr(s, '\n');
        size_t n = nl ? (size_t)(nl - s) : strlen(s);
        int same = n >= kl && !strncmp(s, key, kl) && (n == kl || s[kl] == ' ');
        if (n && !same && lines++ < keep - 1)
            sbuf_printf(&out, "%.*s\n", (int)n, s);
    }
    sbuf_printf(&out, "%s\n", line);
    if (path && !out.oom)
        rm_cache_write(path, out.data, out.len);
    sbuf_release(&out);
    free(text);
    free(path);
}

void rm_cache_write(const char *path, const void *data, size_t len)
{
    err_info keep = *err_last();
    char *dir = strdup(path), *slash = dir ? strrchr(dir, '/') : NULL;
    if (slash) {
        *slash = 0;
        if (file_mkdir_p(dir, 0700) == 0)
            atomic_file_write_all(path, data, len, 0600, 0);
    }
    free(dir);
    err_restore(&keep);
}

/* the descriptor count this host and repository accepted before, or 0 */
static size_t accepted_before(const remote *r)
{
    char *text = rm_cache_read("accepted");
    size_t best = 0, hl = strlen(r->host), rl = strlen(r->repo);
    for (char *s = text; s && *s;) {
        char *nl = strchr(s, '\n');
        if (!strncmp(s, r->host, hl) && s[hl] == ' ' && !strncmp(s + hl + 1, r->repo, rl) &&
            s[hl + 1 + rl] == ' ')
            best = strtoul(s + hl + rl + 2, NULL, 10);
        s = nl ? nl + 1 : s + strlen(s);
    }
    free(text);
    return best;
}

/* remember this host and repository took n descriptors */
static void accepted_record(const remote *r, size_t n)
{
    char key[600], line[640];
    snprintf(key, sizeof key, "%s %s", r->host, r->repo);
    snprintf(line, sizeof line, "%s %zu", key, n);
    rm_cache_record("accepted", key, line, ACCEPTED_KEPT);
}

/* ---- what the registry said ---- */

/* how to create r's repository, for the hosts whose way is known */
static void create_advice(const remote *r, char *out, size_t n)
{
    rm_registry kind = rm_registry_of(r->host);
    if (kind == RM_REGISTRY_ECR || kind == RM_REGISTRY_ECR_PUBLIC)
        snprintf(out, n, ": aws ecr create-repository --repository-name %s (or a repository "
                 "creation template with create-on-push)", r->repo);
    else if (kind == RM_REGISTRY_GAR) {
        const char *slash = strchr(r->repo, '/'); /* PROJECT/REPOSITORY/IMAGE */
        int len = slash ? (int)strcspn(slash + 1, "/") : 0;
        int loc = (int)(strcspn(r->host, ":") - strlen("-docker.pkg.dev")); /* us-central1 */
        snprintf(out, n, ": gcloud artifacts repositories create %.*s --repository-format=docker "
                 "--location=%.*s", len ? len : 10, len ? slash + 1 : "REPOSITORY", loc, r->host);
    } else
        snprintf(out, n, " in the registry (its web interface or API)");
}

/* a refusal of the upload session or the probe: one line, with what to do */
static int refused(const remote *r, const rm_resp *resp, const char *what)
{
    char says[512], advice[256];
    rm_registry_says(resp, says, sizeof says);
    if (resp->status == 404) {
        create_advice(r, advice, sizeof advice);
        return rm_fail(ENOENT, "%s/%s: the repository does not exist (%s: %s); create it first%s",
                       r->host, r->repo, what, says, advice);
    }
    if (resp->status == 401 || resp->status == 403)
        return rm_fail(EACCES, "%s/%s: pushing is not allowed (%s: %s): strata login %s as an "
                       "account that may push there%s", r->host, r->repo, what, says, r->host,
                       rm_registry_of(r->host) == RM_REGISTRY_GAR ? ", and check that the repository exists" : "");
    return rm_http_fail(resp, what);
}

/* ---- (1) an upload session, opened and cancelled ---- */

/* best effort (an abandoned upload is purged, a probe left untagged): a
 * failure leaves no error behind */
static void delete_quietly(remote *r, const char *url, const char *accept)
{
    err_info keep = *err_last();
    rm_req d = {.method = "DELETE", .url = url, .accept = accept, .max_body = 1 << 16};
    rm_resp dr = {0};
    rm_request(r, &d, &dr);
    rm_resp_free(&dr);
    err_restore(&keep);
}

static int session_check(remote *r)
{
    rm_resp resp = {0};
    int rc = rm_upload_post(r, "", &resp);
    if (!rc && resp.status == 202 && resp.location)
        delete_quietly(r, resp.location, NULL);
    else if (!rc && resp.status != 201)
        rc = refused(r, &resp, "opening an upload");
    rm_resp_free(&resp);
    return rc;
}

/* ---- (2) the probe manifest ---- */

static int add_empty(json_t *layers, const char *mt)
{
    json_t *d = json_pack("{s:s,s:s,s:i}", "mediaType", mt, "digest", EMPTY_DIGEST, "size", 2);
    return d && !json_array_append_new(layers, d) ? 0 : -ENOMEM;
}

/* the real manifest's layout, every descriptor naming the empty blob */
static char *probe_manifest(const rm_listing *l)
{
    json_t *layers = json_array();
    int rc = layers ? 0 : -ENOMEM;
    for (size_t i = 0; !rc && i < l->nlayers; i++) {
        rc = add_empty(layers, REMOTE_MT_MANIFEST);
        rc = rc ? rc : add_empty(layers, REMOTE_MT_INFO);
        rc = rc ? rc : add_empty(layers, REMOTE_MT_INDEX);
        for (size_t k = 0; !rc && k < l->npacks[i]; k++)
            rc = add_empty(layers, REMOTE_MT_PACK);
    }
    json_t *doc = rc ? NULL
                     : json_pack("{s:i,s:s,s:s,s:{s:s,s:s,s:i},s:o}", "schemaVersion", 2,
                                 "mediaType", REMOTE_MT_OCI, "artifactType", REMOTE_ARTIFACT_TYPE,
                                 "config", "mediaType", REMOTE_MT_MANIFEST, "digest", EMPTY_DIGEST,
                                 "size", 2, "layers", layers);
    if (!doc) {
        json_decref(layers);
        return NULL;
    }
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return text;
}

static long empty_read(void *ctx, char *buf, size_t len)
{
    size_t *pos = ctx, n = 2 - *pos < len ? 2 - *pos : len;
    memcpy(buf, &EMPTY_BLOB[*pos], n);
    *pos += n;
    return (long)n;
}

static int empty_rewind(void *ctx)
{
    *(size_t *)ctx = 0;
    return 0;
}

/* the probe's descriptors name the empty blob: the registry must have it */
static int empty_blob_there(remote *r)
{
    int rc = remote_blob_exists(r, EMPTY_DIGEST, 2);
    if (rc)
        return rc < 0 ? rc : 0;
    size_t pos = 0;
    remote_source src = {empty_read, empty_rewind, &pos, NULL};
    return remote_blob_put(r, EMPTY_DIGEST, 2, &src);
}

/* the probe was refused: a known refusal is one line with what to do (an
 * error); any other is left to the real manifest PUT (0) */
static int probe_refused(const remote *r, const rm_listing *l, const rm_resp *resp)
{
    char says[512];
    rm_registry_says(resp, says, sizeof says);
    if (resp->status == 401 || resp->status == 403 || resp->status == 404)
        return refused(r, resp, "a probe manifest");
    if (resp->status == 415 || strcasestr(says, "media type") || strcasestr(says, "mediatype") ||
        strstr(says, "application/vnd.strata")) {
        return rm_fail(EPROTONOSUPPORT, "%s/%s refuses strata's media types (%s): a push needs all "
                       "of %s, %s, %s, %s and the artifactType %s; this registry checks media "
                       "types against its own list (GitLab's does): push to another registry, or "
                       "ask its operators to allow these", r->host, r->repo, says,
                       REMOTE_MT_MANIFEST, REMOTE_MT_INFO, REMOTE_MT_INDEX, REMOTE_MT_PACK,
                       REMOTE_ARTIFACT_TYPE);
    }
    size_t n = rm_listing_descriptors(l), packs = n - 3 * l->nlayers;
    if (strcasestr(says, "layers") || (n > RM_ECR_DESCRIPTORS_MAX && (resp->status == 405 ||
                                                                 resp->status == 400)))
        return rm_fail(E2BIG, "%s/%s refuses a manifest of %zu descriptors (%s): this chain of "
                       "%zu layers lists 3 per layer and %zu packs (ECR takes at most %d): push a "
                       "shorter chain, e.g. strata clone %.12s DIR, strata import DIR NAME, and "
                       "push NAME (one layer)", r->host, r->repo, n, says, l->nlayers, packs,
                       RM_ECR_DESCRIPTORS_MAX, l->top ? l->top : "REF");
    return 0;
}

static int probe(remote *r, const rm_listing *l)
{
    char *body = probe_manifest(l), digest[72], *url = NULL;
    if (!body)
        return rm_oom();
    size_t len = strlen(body);
    int rc = len > REMOTE_MANIFEST_MAX
                 ? rm_fail(EFBIG, "%s/%s: this chain's manifest would list %zu descriptors, over "
                           "the %u bytes registries accept: push a shorter chain", r->host,
                           r->repo, rm_listing_descriptors(l), REMOTE_MANIFEST_MAX)
                 : empty_blob_there(r);
    sha256_digest_text(body, len, digest);
    if (!rc && !(url = rm_url(r, "/manifests/%s", digest)))
        rc = -ENOMEM;
    rm_resp resp = {0};
    if (!rc) {
        rm_req q = {.method = "PUT", .url = url, .content_type = REMOTE_MT_OCI, .body = body,
                    .body_len = len, .max_body = 1 << 16};
        rc = rm_request(r, &q, &resp);
    }
    if (!rc && (resp.status == 201 || resp.status == 200)) {
        delete_quietly(r, url, REMOTE_MT_OCI); /* some registries never delete: untagged */
        accepted_record(r, rm_listing_descriptors(l));
    } else if (!rc)
        rc = probe_refused(r, l, &resp);
    rm_resp_free(&resp);
    free(url);
    free(body);
    return rc;
}

int rm_preflight(remote *r, const rm_listing *l)
{
    int rc = session_check(r);
    if (!rc && accepted_before(r) < rm_listing_descriptors(l))
        rc = probe(r, l);
    return rc;
}
