/*
 * What a REF names (boot_resolve, boot.h): a clone directory, a tag or a
 * layer id, or a pulled registry name. Its own file, under create.c and
 * instance.c, which both resolve a REF: instance.c also calls create.c
 * (a run's shares, devices, NBD disk), so calls between them go one way.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "../remote/remote.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* text is a registry name HOST/REPO:TAG or HOST/REPO@DIGEST: 1, with the
 * local tag a pull of it gives in tag ("" for a digest, or one too long) */
static int registry_name(const char *text, char *tag, size_t n)
{
    remote_ref r;
    tag[0] = 0;
    if (!strchr(text, '/') || remote_ref_parse(text, 0, &r))
        return 0;
    int yes = r.tag || r.digest;
    if (r.tag && remote_ref_local_tag(&r, tag, n))
        tag[0] = 0;
    remote_ref_free(&r);
    return yes;
}

/* a directory only if it is a clone: "bench" can be a tag and a folder */
static int is_clone(const char *path)
{
    struct stat sdir;
    char *marker = NULL;
    if (stat(path, &sdir) || !S_ISDIR(sdir.st_mode) ||
        asprintf(&marker, "%s/" STORE_INSTANCE_MARKER, path) < 0)
        return 0;
    int yes = access(marker, F_OK) == 0;
    free(marker);
    return yes;
}

_Static_assert(sizeof ((boot_ref *)0)->dir >= PATH_MAX, "boot_ref.dir holds realpath's result");

int boot_resolve(store *st, const char *ref, boot_ref *out)
{
    out->kind = BOOT_REF_LAYER;
    out->dir[0] = out->tag[0] = 0;
    if (is_clone(ref)) {
        out->kind = BOOT_REF_CLONE;
        if (!realpath(ref, out->dir))
            return boot_fail_errno(errno, "%s", ref);
        return store_instance_layer(st, out->dir, &out->id) ? err_pass() : 0;
    }
    if (!registry_name(ref, out->tag, sizeof out->tag))
        return store_resolve(st, ref, &out->id) ? err_pass() : 0;
    out->kind = BOOT_REF_REGISTRY;
    int rc = *out->tag ? store_resolve(st, out->tag, &out->id) : -ENOENT;
    if (rc != -ENOENT)
        return rc ? err_pass() : 0;
    return boot_fail(ENOENT, "unknown ref '%s': it was never pulled into this store (strata pull %s)",
                     ref, ref);
}
