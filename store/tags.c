/* Tags (refs/tags/<name>) and resolving a ref to a layer id. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int store_tag_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 128)
        return 0;
    const char *colon = strchr(name, ':');
    for (const char *p = name; *p; p++) {
        char c = *p;
        int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (p == name && !alnum)
            return 0;
        if (!colon || p < colon) {
            if (!alnum && c != '.' && c != '_' && c != '-')
                return 0;
        } else if (p == colon) {
            if (p[1] == 0)
                return 0;
        } else {
            int ok = alnum || (c >= 'A' && c <= 'Z') || c == '_' ||
                     (p > colon + 1 && (c == '.' || c == '-'));
            if (!ok)
                return 0;
        }
    }
    return 1;
}

char *st_tag_path(const store *st, const char *name)
{
    return st_printf("%s/refs/tags/%s", st->home, name);
}

int st_read_tag(store *st, const char *name, store_id *out)
{
    char *p = st_tag_path(st, name), *data = NULL;
    size_t len;
    int rc = p ? file_read_all(p, 4096, &data, &len) : -ENOMEM;
    if (!rc) {
        if (len != STORE_ID_HEX + 1 || data[STORE_ID_HEX] != '\n') {
            rc = st_fail(EINVAL, "%s: damaged tag", p);
        } else {
            data[STORE_ID_HEX] = 0;
            if (!st_id_valid(data))
                rc = st_fail(EINVAL, "%s: damaged tag", p);
            else
                memcpy(out->hex, data, STORE_ID_HEX + 1);
        }
    }
    free(data);
    free(p);
    return rc;
}

static int is_hex(const char *s)
{
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return 1;
}

int store_resolve(store *st, const char *ref, store_id *out)
{
    if (store_tag_valid(ref)) {
        int rc = st_read_tag(st, ref, out);
        if (rc != -ENOENT)
            return rc;
    }
    size_t n = strlen(ref);
    if (n >= 4 && n <= STORE_ID_HEX && is_hex(ref)) {
        store_id *ids;
        size_t count, found = 0;
        int rc = store_layers(st, &ids, &count);
        if (rc)
            return rc;
        for (size_t i = 0; i < count; i++)
            if (!strncmp(ids[i].hex, ref, n)) {
                *out = ids[i];
                found++;
            }
        free(ids);
        if (found == 1)
            return 0;
        if (found > 1)
            return st_fail(EINVAL, "ambiguous ref '%s': %zu layers start with it", ref, found);
    }
    return st_fail(ENOENT, "unknown ref '%s': no such tag or layer", ref);
}

static int write_tag(store *st, const char *name, const store_id *id)
{
    char *p = st_tag_path(st, name);
    char line[STORE_ID_HEX + 2];
    snprintf(line, sizeof line, "%s\n", id->hex);
    int rc = p ? atomic_file_write_all(p, line, STORE_ID_HEX + 1, 0644, 0) : -ENOMEM;
    if (rc)
        rc = st_fail_errno(rc, "tag %s", name);
    free(p);
    return rc;
}

int st_write_tag(store *st, const char *name, const store_id *id)
{
    store_id old;
    /* a moved tag may leave its old layer unreachable: its grace starts now */
    if (st_read_tag(st, name, &old) == 0 && strcmp(old.hex, id->hex)) {
        int rc = st_unreachable_stamp(st, &old);
        if (rc)
            return rc;
    }
    return write_tag(st, name, id);
}

int st_bad_tag(const char *name)
{
    return st_fail(EINVAL,
                   "bad tag name '%s': use NAME or NAME:TAG, NAME of [a-z0-9._-] starting with a "
                   "letter or digit, TAG of [A-Za-z0-9_.-] not starting with '.' or '-', 128 "
                   "characters at most",
                   name);
}

int store_tag(store *st, const char *ref, const char *name)
{
    if (!store_tag_valid(name))
        return st_bad_tag(name);
    store_id id;
    st_lock lock;
    int rc = st_lock_take(st, ST_LOCK_EXCLUSIVE, &lock);
    if (!rc && !(rc = store_resolve(st, ref, &id)) && !st_layer_exists(st, &id))
        rc = st_fail(ENOENT, "'%s' names layer %s, which is missing (see strata fsck)", ref,
                     id.hex);
    if (!rc)
        rc = st_write_tag(st, name, &id);
    st_lock_release(&lock);
    return rc;
}

int store_untag(store *st, const char *name)
{
    if (!store_tag_valid(name))
        return st_bad_tag(name);
    st_lock lock;
    int rc = st_lock_take(st, ST_LOCK_EXCLUSIVE, &lock);
    if (rc)
        return rc;
    char *p = st_tag_path(st, name);
    store_id old;
    if (!p)
        rc = -ENOMEM;
    else if (st_read_tag(st, name, &old) == 0 && (rc = st_unreachable_stamp(st, &old)))
        ; /* nothing removed: without the stamp, gc could take the layer at once */
    else if (unlink(p) < 0)
        rc = errno == ENOENT ? st_fail(ENOENT, "no tag '%s'", name) : st_fail_errno(errno, "%s", p);
    else {
        char *dir = st_printf("%s/refs/tags", st->home);
        rc = dir ? file_fsync_path(dir) : -ENOMEM;
        free(dir);
    }
    free(p);
    st_lock_release(&lock);
    return rc;
}

int store_tags(store *st, store_tag_entry **out, size_t *n)
{
    char **names;
    size_t cnt;
    int rc = st_list_home(st, "refs/tags", &names, &cnt);
    if (rc)
        return rc;
    store_tag_entry *t = calloc(cnt ? cnt : 1, sizeof *t);
    size_t k = 0;
    for (size_t i = 0; t && i < cnt; i++) {
        if (!store_tag_valid(names[i]))
            continue; /* not ours (st_list_dir skips crashed writes' dot names) */
        if (st_read_tag(st, names[i], &t[k].id) == 0) {
            t[k].name = names[i];
            names[i] = NULL;
            k++;
        }
    }
    st_free_names(names, cnt);
    if (!t)
        return -ENOMEM;
    *out = t;
    *n = k;
    return 0;
}

void store_tags_free(store_tag_entry *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(t[i].name);
    free(t);
}
