/* remote: what a repository holds (ls --remote). */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

void remote_list_free(remote_tag_info *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(t[i].tag);
    free(t);
}

static uint64_t annotation_u64(json_t *ann, const char *key)
{
    const char *v = json_string_value(json_object_get(ann, key));
    return v ? strtoull(v, NULL, 10) : 0;
}

/* fill what a strata manifest says; a manifest of something else is left as not strata */
static void describe(const char *body, size_t len, remote_tag_info *t)
{
    json_t *j = json_loadb(body, len, 0, NULL);
    const char *at = json_string_value(json_object_get(j, "artifactType"));
    json_t *config = json_object_get(j, "config");
    const char *cd = json_string_value(json_object_get(config, "digest"));
    json_t *ann = json_object_get(j, "annotations");
    if (at && !strcmp(at, REMOTE_ARTIFACT_TYPE) && rm_digest_valid(cd)) {
        t->strata = 1;
        memcpy(t->layer.hex, cd + 7, STORE_ID_HEX + 1);
        t->size = annotation_u64(ann, "dev.strata.layer.size");
        t->chain = (size_t)annotation_u64(ann, "dev.strata.chain");
        const char *hb = json_string_value(json_object_get(ann, "dev.strata.host-bound"));
        t->host_bound = hb && !strcmp(hb, "true");
        t->pull_bytes = (uint64_t)json_integer_value(json_object_get(config, "size"));
        size_t i;
        json_t *d;
        json_array_foreach(json_object_get(j, "layers"), i, d) {
            json_int_t s = json_integer_value(json_object_get(d, "size"));
            if (s > 0)
                t->pull_bytes += (uint64_t)s;
        }
        /* what the guest needs: only from a manifest a pull would take */
        remote_artifact a;
        if (!remote_artifact_parse(body, len, &a)) {
            t->guest = a.guest;
            remote_artifact_free(&a);
        }
    }
    json_decref(j);
}

int remote_list(const remote_ref *repo, const remote_opts *o, remote_tag_info **out, size_t *n)
{
    remote *r;
    char **tags = NULL;
    size_t ntags = 0;
    *out = NULL;
    *n = 0;
    int rc = remote_open(repo, o, 0, &r);
    if (rc)
        return rc;
    rc = remote_tags(r, &tags, &ntags);
    remote_tag_info *t = !rc && ntags ? calloc(ntags, sizeof *t) : NULL;
    if (!rc && ntags && !t)
        rc = -ENOMEM;
    for (size_t i = 0; !rc && i < ntags; i++) {
        char *body = NULL;
        size_t len;
        t[i].tag = tags[i];
        tags[i] = NULL;
        rc = remote_manifest_get(r, t[i].tag, &body, &len, t[i].digest);
        if (rc == -ENOENT) { /* a tag of something that is not an OCI manifest */
            rc = 0;
            continue;
        }
        if (!rc)
            describe(body, len, &t[i]);
        free(body);
    }
    if (!rc) {
        *out = t;
        *n = ntags;
    } else
        remote_list_free(t, ntags);
    remote_strings_free(tags, ntags);
    remote_close(r);
    return rc;
}
