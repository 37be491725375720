/* Layers on disk: where they are, whether one exists, loading one, listing all. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

char *st_layer_dir(const store *st, const store_id *id)
{
    return st_printf("%s/layers/%s", st->home, id->hex);
}

char *st_layer_bundle_dir(const store *st, const store_id *id)
{
    return st_printf("%s/layers/%s/bundle", st->home, id->hex);
}

int st_layer_exists(const store *st, const store_id *id)
{
    char *d = st_layer_dir(st, id);
    struct stat s;
    int ok = d && stat(d, &s) == 0 && S_ISDIR(s.st_mode);
    free(d);
    return ok;
}

int store_layer_exists(store *st, const store_id *id)
{
    if (!st_id_valid(id->hex))
        return 0;
    char *d = st_layer_dir(st, id);
    struct stat s;
    int rc = !d ? -ENOMEM : stat(d, &s) == 0 ? S_ISDIR(s.st_mode) : -errno;
    if (rc == -ENOENT || rc == -ENOTDIR)
        rc = 0;
    else if (rc < 0 && rc != -ENOMEM)
        rc = st_fail_errno(-rc, "%s", d);
    free(d);
    return rc;
}

char *store_layer_file_path(store *st, const store_id *id, const char *name)
{
    return st_printf("%s/layers/%s/bundle/%s", st->home, id->hex, name);
}

int store_layer_load(store *st, const store_id *id, store_layer **out)
{
    char *dir = st_layer_dir(st, id);
    char *mpath = st_printf("%s/manifest", dir), *ipath = st_printf("%s/info", dir);
    char *m = NULL, *info = NULL;
    size_t mlen, ilen;
    store_layer *l = calloc(1, sizeof *l);
    int rc = (!dir || !mpath || !ipath || !l) ? -ENOMEM : 0;
    if (!rc && (rc = file_read_all(mpath, ST_MANIFEST_MAX, &m, &mlen)))
        rc = st_fail_errno(rc, "layer %s: manifest", id->hex);
    if (!rc) {
        unsigned char digest[32];
        char hex[65];
        st_sha256(m, mlen, digest);
        hex_encode(digest, 32, hex);
        if (strcmp(hex, id->hex))
            rc = st_fail(EINVAL, "layer %s: manifest does not match its id (it hashes to %s)",
                         id->hex, hex);
    }
    if (!rc && (rc = st_manifest_parse(m, mlen, l))) {
        char why[900];
        snprintf(why, sizeof why, "%s", store_error());
        rc = st_fail(-rc, "layer %s: not a canonical manifest: %s", id->hex, why);
    }
    if (!rc && (rc = file_read_all(ipath, 1 << 20, &info, &ilen)))
        rc = st_fail_errno(rc, "layer %s: info", id->hex);
    if (!rc && st_info_parse(info, ilen, l))
        rc = st_fail(EINVAL, "layer %s: info is damaged", id->hex);
    if (!rc) {
        l->id = *id;
        *out = l;
        l = NULL;
    }
    store_layer_free(l);
    free(m);
    free(info);
    free(dir);
    free(mpath);
    free(ipath);
    return rc;
}

const store_file *st_layer_find_file(const store_layer *l, const char *name)
{
    size_t lo = 0, hi = l ? l->nfiles : 0;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(l->files[mid].name, name);
        if (c == 0)
            return &l->files[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int store_layers(store *st, store_id **out, size_t *n)
{
    char **names;
    size_t cnt;
    int rc = st_list_home(st, "layers", &names, &cnt);
    if (rc)
        return rc;
    store_id *ids = calloc(cnt ? cnt : 1, sizeof *ids);
    size_t k = 0;
    for (size_t i = 0; ids && i < cnt; i++)
        if (st_id_valid(names[i]))
            memcpy(ids[k++].hex, names[i], STORE_ID_HEX + 1);
    st_free_names(names, cnt);
    if (!ids)
        return -ENOMEM;
    *out = ids;
    *n = k;
    return 0;
}
