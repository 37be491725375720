/* remote: references HOST[:PORT]/REPO[:TAG|@sha256:HEX] and the local tag a
 * pull gives one. */
#define _GNU_SOURCE
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void remote_ref_free(remote_ref *r)
{
    free(r->host);
    free(r->repo);
    free(r->tag);
    free(r->digest);
    memset(r, 0, sizeof *r);
}

static int host_valid(const char *h, size_t n)
{
    if (!n || n > 255)
        return 0;
    int dot_or_port = 0;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (c == '.' || c == ':' || c == '[')
            dot_or_port = 1;
        if (!isalnum((unsigned char)c) && !strchr(".-:[]", c))
            return 0;
    }
    return dot_or_port || (n == 9 && !strncmp(h, "localhost", 9));
}

/* the distribution name grammar: components [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* joined by '/' */
static int repo_valid(const char *s, size_t n)
{
    if (!n || n > 255)
        return 0;
    int need_alnum = 1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if ((c >= 'a' && c <= 'z') || isdigit((unsigned char)c)) {
            need_alnum = 0;
            continue;
        }
        if (need_alnum || !strchr("._-/", c))
            return 0;
        if (c == '/' || c == '.')
            need_alnum = 1;
        else if (c == '_' && i + 1 < n && s[i + 1] == '_')
            i++, need_alnum = 1;
        else if (c == '_')
            need_alnum = 1;
        else /* '-' runs */
            while (i + 1 < n && s[i + 1] == '-')
                i++;
        need_alnum = 1;
    }
    return !need_alnum;
}

static int tag_valid(const char *t)
{
    size_t n = strlen(t);
    if (!n || n > 128 || !(isalnum((unsigned char)t[0]) || t[0] == '_'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!isalnum((unsigned char)t[i]) && !strchr("._-", t[i]))
            return 0;
    return 1;
}

/* host (without its port) is suffix or ends in ".suffix"; a suffix that
 * starts with '-' may follow anything ("us-docker.pkg.dev") */
static int host_ends(const char *host, const char *suffix)
{
    size_t h = strcspn(host, ":"), s = strlen(suffix);
    return h >= s && !strncmp(host + h - s, suffix, s) &&
           (h == s || host[h - s - 1] == '.' || suffix[0] == '-');
}

rm_registry rm_registry_of(const char *host)
{
    if (rm_host_is_hub(host))
        return RM_REGISTRY_HUB;
    if (strstr(host, ".dkr.ecr.") && host_ends(host, "amazonaws.com"))
        return RM_REGISTRY_ECR;
    if (!strcmp(host, "public.ecr.aws"))
        return RM_REGISTRY_ECR_PUBLIC;
    if (host_ends(host, "-docker.pkg.dev"))
        return RM_REGISTRY_GAR;
    if (host_ends(host, "gcr.io"))
        return RM_REGISTRY_GCR;
    return RM_REGISTRY_OTHER;
}

int rm_host_is_hub(const char *host)
{
    return !strcmp(host, "docker.io") || !strcmp(host, "index.docker.io") ||
           !strcmp(host, RM_HUB_API);
}

const char *rm_api_host(const char *host)
{
    return rm_host_is_hub(host) ? RM_HUB_API : host;
}

const char *rm_cred_server(const char *host)
{
    return rm_host_is_hub(host) ? RM_HUB_CRED_KEY : host;
}

/* Docker Hub's names as docker reads them: docker.io and index.docker.io
 * are the names people type, registry-1.docker.io is where its API
 * answers, and a one-part repository is an official image under library/.
 * ref->host keeps the API host, not the name typed: every connection,
 * message and mount-source record is made from ref->host, and only the
 * API host is right for all of them; the local tag a pull gives maps it
 * back to docker.io (remote_ref_local_tag). */
static int hub_names(remote_ref *r)
{
    if (!rm_host_is_hub(r->host))
        return 0;
    char *host = strdup(RM_HUB_API), *repo = NULL;
    if (!strchr(r->repo, '/') && asprintf(&repo, "library/%s", r->repo) < 0)
        repo = NULL;
    if (!host || (!strchr(r->repo, '/') && !repo)) {
        free(host);
        return -ENOMEM;
    }
    free(r->host);
    r->host = host;
    if (repo) {
        free(r->repo);
        r->repo = repo;
    }
    return 0;
}

int remote_ref_parse(const char *text, int need_repo_only, remote_ref *out)
{
    memset(out, 0, sizeof *out);
    const char *slash = strchr(text, '/');
    if (!slash || !host_valid(text, (size_t)(slash - text)))
        return rm_fail(EINVAL, "'%s' is not a remote reference (HOST[:PORT]/REPO[:TAG])", text);
    const char *path = slash + 1;
    const char *at = strchr(path, '@');
    const char *last_slash = strrchr(path, '/');
    const char *colon = strchr(last_slash ? last_slash : path, ':');
    if (at && colon && colon > at)
        colon = NULL;
    size_t rlen = at ? (size_t)(at - path) : colon ? (size_t)(colon - path) : strlen(path);
    if (colon && at && colon < at)
        rlen = (size_t)(colon - path);
    if (!repo_valid(path, rlen))
        return rm_fail(EINVAL, "'%s': the repository name must be lowercase [a-z0-9._-/]", text);
    out->host = strndup(text, (size_t)(slash - text));
    out->repo = strndup(path, rlen);
    if (colon)
        out->tag = at ? strndup(colon + 1, (size_t)(at - colon - 1)) : strdup(colon + 1);
    if (at)
        out->digest = strdup(at + 1);
    int rc = (!out->host || !out->repo || (colon && !out->tag) || (at && !out->digest)) ? -ENOMEM : 0;
    if (!rc)
        rc = hub_names(out);
    if (!rc && out->tag && !tag_valid(out->tag))
        rc = rm_fail(EINVAL, "'%s': '%s' is not a valid tag", text, out->tag);
    else if (!rc && out->digest && !rm_digest_valid(out->digest))
        rc = rm_fail(EINVAL, "'%s': the digest must be sha256:<64 lowercase hex>", text);
    else if (!rc && need_repo_only && (out->tag || out->digest))
        rc = rm_fail(EINVAL, "'%s': name a repository, without a tag or digest", text);
    if (rc)
        remote_ref_free(out);
    return rc;
}


int remote_ref_local_tag(const remote_ref *ref, char *out, size_t n)
{
    if (!ref->tag)
        return rm_fail(EINVAL, "%s/%s: no tag to name the layer after (give one with -t)", ref->host,
                       ref->repo);
    char name[300];
    /* Docker Hub by the name people give it (docker.io/library/vm), not its API host */
    const char *host = rm_host_is_hub(ref->host) ? "docker.io" : ref->host;
    int len = snprintf(name, sizeof name, "%s/%s", host, ref->repo);
    size_t k = 0;
    for (int i = 0; i < len && (size_t)len < sizeof name; i++) {
        char c = (char)tolower((unsigned char)name[i]);
        if (!k && !isalnum((unsigned char)c))
            continue; /* a tag starts with a letter or digit ("[::1]:5000") */
        name[k++] = isalnum((unsigned char)c) || c == '.' || c == '-' ? c : '_';
    }
    name[k] = 0;
    if ((size_t)len >= sizeof name || (size_t)snprintf(out, n, "%s:%s", name, ref->tag) >= n ||
        !store_tag_valid(out))
        return rm_fail(EINVAL, "%s/%s:%s: too long for a local tag (give one with -t)", ref->host,
                       ref->repo, ref->tag);
    return 0;
}
