/*
 * The unreachable list, <store>/unreachable: "<id> <unix seconds>\n" per
 * layer, sorted by id: when gc first saw the layer unreachable, or when the
 * last tag or clone record naming it went away, whichever is later. gc's
 * grace period counts from it, so a wrong untag followed by gc can still be
 * undone with `tag <id> NAME`.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int st_unreachable_read(store *st, st_unreachable_list *l)
{
    char *p = st_printf("%s/unreachable", st->home), *data = NULL;
    size_t len;
    int rc = p ? file_read_all(p, 64u << 20, &data, &len) : -ENOMEM;
    memset(l, 0, sizeof *l);
    if (rc == -ENOENT)
        rc = 0;
    else if (rc)
        rc = st_fail_errno(rc, "%s", p);
    for (const char *at = data; !rc && at && at < data + len;) {
        store_unreachable_entry e;
        long long t;
        int used = 0;
        if (sscanf(at, "%64[0-9a-f] %lld\n%n", e.id.hex, &t, &used) != 2 || !used ||
            !st_id_valid(e.id.hex) || at[used - 1] != '\n') {
            rc = st_fail(EINVAL, "%s: damaged at byte %zu", p, (size_t)(at - data));
            break;
        }
        e.since = t;
        if (l->n == l->cap) {
            size_t nc = l->cap ? l->cap * 2 : 64;
            store_unreachable_entry *v = realloc(l->v, nc * sizeof *v);
            if (!v) {
                rc = -ENOMEM;
                break;
            }
            l->v = v;
            l->cap = nc;
        }
        l->v[l->n++] = e;
        at += used;
    }
    free(data);
    free(p);
    return rc;
}

static char *since_text(const st_unreachable_list *l)
{
    sbuf b = {0};
    sbuf_add(&b, "", 1);
    b.len = 0;
    for (size_t i = 0; i < l->n; i++)
        sbuf_printf(&b, "%s %lld\n", l->v[i].id.hex, (long long)l->v[i].since);
    if (b.oom) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

int st_unreachable_write(store *st, const st_unreachable_list *l)
{
    char *text = since_text(l);
    char *p = st_printf("%s/unreachable", st->home);
    int rc = !p || !text ? -ENOMEM : atomic_file_write_all(p, text, strlen(text), 0644, 0);
    if (rc)
        rc = st_fail_errno(rc, "%s", p ? p : "unreachable");
    free(p);
    free(text);
    return rc;
}

store_unreachable_entry *st_unreachable_find(const st_unreachable_list *l, const store_id *id)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i].id.hex, id->hex))
            return &l->v[i];
    return NULL;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const store_unreachable_entry *)a)->id.hex,
                  ((const store_unreachable_entry *)b)->id.hex);
}

int st_unreachable_stamped(store *st, const store_id *id, char **text)
{
    st_unreachable_list l;
    int rc = st_unreachable_read(st, &l);
    store_unreachable_entry *e = rc ? NULL : st_unreachable_find(&l, id);
    if (!rc && !e) {
        store_unreachable_entry *v = realloc(l.v, (l.n + 1) * sizeof *v);
        if (!v)
            rc = -ENOMEM;
        else {
            l.v = v;
            e = &l.v[l.n++];
            e->id = *id;
        }
    }
    if (!rc) {
        e->since = (int64_t)time(NULL);
        qsort(l.v, l.n, sizeof *l.v, cmp_entry);
        if (!(*text = since_text(&l)))
            rc = -ENOMEM;
    }
    free(l.v);
    return rc;
}

int st_unreachable_stamp(store *st, const store_id *id)
{
    char *text = NULL, *p = st_printf("%s/unreachable", st->home);
    int rc = p ? st_unreachable_stamped(st, id, &text) : -ENOMEM;
    if (!rc && (rc = atomic_file_write_all(p, text, strlen(text), 0644, 0)))
        rc = st_fail_errno(rc, "%s", p);
    free(text);
    free(p);
    return rc;
}
