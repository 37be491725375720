/* Upkeep: fsck re-verifies what the store claims, gc removes what nothing
 * reaches, df says what it costs. */
#define _GNU_SOURCE
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

typedef struct {
    store_report_fn fn;
    void *ctx;
    int problems;
    size_t unsealed; /* layers quick fsck could not read against seals */
} reporter;

static void problem(reporter *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(reporter *r, const char *fmt, ...)
{
    char line[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    r->problems++;
    if (r->fn)
        r->fn(r->ctx, line);
}

static void notice(reporter *r, const char *line)
{
    if (r->fn)
        r->fn(r->ctx, line);
}

/* each name in dir (dot files included), or NULL list on error */
static int each_entry(const char *dir, int (*fn)(void *, const char *), void *ctx)
{
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            rc = fn(ctx, e->d_name);
    closedir(d);
    return rc;
}

/* What checking a layer's files works with. */
typedef struct {
    reporter *r;
    const store_layer *l;
    int quick;
    const st_seals *seals; /* the layer's, or NULL */
    st_seals *made;        /* full fsck: the seals it derives, to write if missing */
    size_t fi;             /* the file being checked */
    int wrong_seals;       /* full fsck: data right, seal wrong */
} layer_check;

static void found(void *ctx, int what, uint64_t first, uint64_t last)
{
    layer_check *c = ctx;
    const char *id = c->l->id.hex, *name = c->l->files[c->fi].name;
    if (what == ST_NOT_ZEROS)
        problem(c->r, "layer %s: %s chunks %" PRIu64 "-%" PRIu64 " should be zeros and are not",
                id, name, first, last);
    else if (what == ST_BAD_SEAL)
        problem(c->r, "layer %s: %s chunk %" PRIu64 " does not match its seal", id, name, first);
    else if (what == ST_BAD_HASH)
        problem(c->r, "layer %s: %s chunk %" PRIu64 " does not match its hash", id, name, first);
    else if (what == ST_UNREADABLE)
        problem(c->r, "layer %s: %s chunk %" PRIu64 " can't be read", id, name, first);
    else {
        c->wrong_seals++;
        problem(c->r,
                "layer %s: %s chunk %" PRIu64 " matches its hash but not its seal: the seals "
                "file is damaged",
                id, name, first);
    }
}

typedef struct {
    reporter *r;
    const store_layer *l;
    const char *dir;
} extra_ctx;

static int extra_file(void *ctx_, const char *name)
{
    extra_ctx *x = ctx_;
    for (size_t i = 0; i < x->l->nfiles; i++)
        if (!strcmp(x->l->files[i].name, name))
            return 0;
    problem(x->r, "layer %s: unexpected file %s/%s", x->l->id.hex, x->dir, name);
    return 0;
}

/* Load the layer's seals. Quick fsck needs them; full fsck checks them
 * and writes them where they are missing or damaged. */
static void seals_for(layer_check *c, const char *dir, st_seals **out, int *missing)
{
    int rc = st_seals_load(dir, c->l, out);
    *missing = rc != 0;
    if (rc == -ENOENT && c->quick) {
        c->r->unsealed++;
        char line[200];
        snprintf(line, sizeof line, "layer %s: no seals: run full fsck to verify (and seal) it",
                 c->l->id.hex);
        notice(c->r, line);
    } else if (rc && rc != -ENOENT) {
        problem(c->r, "%s", store_error());
    }
}

/* full fsck found every chunk right: give the layer the seals it lacked */
static void write_seals(layer_check *c, const char *dir)
{
    char line[1200];
    if (st_seals_write(c->made, c->l, &c->l->id, dir))
        snprintf(line, sizeof line, "layer %s: could not seal it: %s", c->l->id.hex,
                 store_error());
    else
        snprintf(line, sizeof line, "layer %s: sealed (fsck --quick can now verify it)",
                 c->l->id.hex);
    notice(c->r, line);
}

static void check_files(layer_check *c, const char *bundle)
{
    const store_layer *l = c->l;
    for (size_t i = 0; i < l->nfiles; i++) {
        const store_file *f = &l->files[i];
        char *p = st_printf("%s/%s", bundle, f->name);
        int fd = p ? open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) : -1;
        struct stat s;
        c->fi = i;
        if (fd < 0 || fstat(fd, &s) < 0 || !S_ISREG(s.st_mode))
            problem(c->r, "layer %s: %s is missing", l->id.hex, f->name);
        else if ((uint64_t)s.st_size != f->size)
            problem(c->r, "layer %s: %s is %jd bytes, the manifest says %" PRIu64, l->id.hex,
                    f->name, (intmax_t)s.st_size, f->size);
        else if ((!c->quick || c->seals) &&
                 st_verify_file(fd, f, i, c->seals, c->quick, c->made, found, c))
            problem(c->r, "layer %s: %s: out of memory", l->id.hex, f->name);
        if (fd >= 0)
            close(fd);
        free(p);
    }
}

static void check_layer(store *st, reporter *r, const store_id *id, int quick)
{
    store_layer *l = NULL;
    if (store_layer_load(st, id, &l)) {
        problem(r, "%s", store_error());
        return;
    }
    if (l->has_parent && !st_layer_exists(st, &l->parent))
        problem(r, "layer %s: parent %s is missing", id->hex, l->parent.hex);
    char *dir = st_layer_dir(st, id);
    char *bundle = st_printf("%s/layers/%s/bundle", st->home, id->hex);
    layer_check c = {.r = r, .l = l, .quick = quick};
    st_seals *seals = NULL;
    int missing = 1;
    if (dir)
        seals_for(&c, dir, &seals, &missing);
    c.seals = seals;
    if (!quick)
        c.made = st_seals_new(l->nfiles);
    int before = r->problems;
    if (bundle)
        check_files(&c, bundle);
    /* reseal only what was wholly verified: every problem is a wrong seal */
    if (c.made && dir && (missing || c.wrong_seals) && r->problems - before == c.wrong_seals)
        write_seals(&c, dir);
    if (bundle) {
        extra_ctx x = {r, l, bundle};
        each_entry(bundle, extra_file, &x);
    }
    st_seals_free(seals);
    st_seals_free(c.made);
    free(dir);
    free(bundle);
    store_layer_free(l);
}

typedef struct {
    store *st;
    reporter *r;
    const char *dir;
} walk_ctx;

static int check_layer_entry(void *ctx_, const char *name)
{
    walk_ctx *w = ctx_;
    if (!st_id_valid(name))
        problem(w->r, "%s/layers/%s: not a layer", w->st->home, name);
    return 0;
}

static int stale_write(const char *name)
{
    /* st_write_atomic's ".<name>.tmp-<pid>", left when its writer died */
    const char *t = name[0] == '.' ? strstr(name, ".tmp-") : NULL;
    if (!t)
        return 0;
    long pid = strtol(t + 5, NULL, 10);
    return pid > 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

static int check_tag_entry(void *ctx_, const char *name)
{
    walk_ctx *w = ctx_;
    if (name[0] == '.')
        return 0; /* an interrupted write; the tag itself is intact */
    store_id id;
    if (!store_tag_valid(name))
        problem(w->r, "%s/refs/tags/%s: not a valid tag name", w->st->home, name);
    else if (store_resolve(w->st, name, &id) || !st_layer_exists(w->st, &id))
        problem(w->r, "tag %s: points to a missing layer", name);
    return 0;
}

static int check_instance_entry(void *ctx_, const char *name)
{
    walk_ctx *w = ctx_;
    if (name[0] == '.')
        return 0;
    char *p = st_printf("%s/instances/%s", w->st->home, name), *text = NULL, *path = NULL;
    size_t len;
    store_id id;
    if (!p || st_read_file(p, 8192, &text, &len)) {
        problem(w->r, "%s: unreadable instance record", p ? p : name);
    } else {
        int live = st_instance_live(w->st, text, &id, &path);
        if (live == -EINVAL)
            problem(w->r, "%s: damaged instance record", p);
        else if (live == 0 && !st_layer_exists(w->st, &id))
            problem(w->r, "clone %s: its layer %s is missing", path, id.hex);
    }
    free(path);
    free(text);
    free(p);
    return 0;
}

int store_fsck(store *st, int quick, store_report_fn report, void *ctx)
{
    reporter r = {report, ctx, 0, 0};
    int rc = st_lock(st, 0);
    if (rc)
        return rc;
    store_id *ids = NULL;
    size_t n = 0;
    if ((rc = store_layers(st, &ids, &n)))
        goto out;
    for (size_t i = 0; i < n; i++)
        check_layer(st, &r, &ids[i], quick);
    char *layers = st_printf("%s/layers", st->home);
    char *tags = st_printf("%s/refs/tags", st->home);
    char *inst = st_printf("%s/instances", st->home);
    walk_ctx w = {st, &r, NULL};
    if (layers)
        each_entry(layers, check_layer_entry, &w);
    if (tags)
        each_entry(tags, check_tag_entry, &w);
    if (inst)
        each_entry(inst, check_instance_entry, &w);
    free(layers);
    free(tags);
    free(inst);
    rc = r.problems;
out:
    free(ids);
    st_unlock(st);
    if (rc >= 0 && r.problems == 0 && quick && r.unsealed) {
        char line[200];
        snprintf(line, sizeof line,
                 "ok (quick: manifests, refs, and the stored bytes of sealed layers; %zu "
                 "layer%s without seals not read)",
                 r.unsealed, r.unsealed == 1 ? "" : "s");
        notice(&r, line);
    } else if (rc >= 0 && r.problems == 0) {
        notice(&r, quick ? "ok (quick: manifests, refs, and every stored byte against its seal)"
                         : "ok");
    }
    return rc;
}

/* ---------- gc ---------- */

typedef struct {
    store_id *v;
    size_t n, cap;
} id_set;

static int id_set_has(const id_set *s, const store_id *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->v[i].hex, id->hex))
            return 1;
    return 0;
}

/* Add id and its ancestors. A layer that exists but can't be read stops gc:
 * without its parent line, gc can't tell which layers it still needs. */
static int keep_chain(store *st, id_set *s, store_id id)
{
    for (int depth = 0; depth < 100000 && !id_set_has(s, &id); depth++) {
        if (s->n == s->cap) {
            size_t nc = s->cap ? s->cap * 2 : 32;
            store_id *v = realloc(s->v, nc * sizeof *v);
            if (!v)
                return st_fail(ENOMEM, "gc: out of memory");
            s->v = v;
            s->cap = nc;
        }
        s->v[s->n++] = id;
        if (!st_layer_exists(st, &id))
            return 0; /* nothing here to delete; fsck reports it */
        store_layer *l = NULL;
        if (store_layer_load(st, &id, &l)) {
            char why[900];
            snprintf(why, sizeof why, "%s", store_error());
            return st_fail(EIO, "gc stopped, nothing removed: %s (see strata fsck)", why);
        }
        int more = l->has_parent;
        id = l->parent;
        store_layer_free(l);
        if (!more)
            return 0;
    }
    return 0;
}

typedef struct {
    store *st;
    id_set *keep;
    store_gc_result *res;
    int failed; /* a callback set the error message */
} gc_ctx;

static int gc_tag(void *ctx_, const char *name)
{
    gc_ctx *g = ctx_;
    store_id id;
    if (name[0] == '.') {
        if (stale_write(name)) {
            char *p = st_printf("%s/refs/tags/%s", g->st->home, name);
            if (p)
                unlink(p);
            free(p);
        }
        return 0;
    }
    if (store_tag_valid(name) && store_resolve(g->st, name, &id) == 0) {
        int rc = keep_chain(g->st, g->keep, id);
        g->failed = rc != 0;
        return rc;
    }
    return 0;
}

static int gc_instance(void *ctx_, const char *name)
{
    gc_ctx *g = ctx_;
    int rc = 0;
    char *p = st_printf("%s/instances/%s", g->st->home, name), *text = NULL, *path = NULL;
    size_t len;
    if (!p)
        return -ENOMEM;
    if (name[0] == '.') {
        if (stale_write(name))
            unlink(p);
    } else if (st_read_file(p, 8192, &text, &len) == 0) {
        store_id id;
        int live = st_instance_live(g->st, text, &id, &path);
        if (live == -ENOENT) {
            unlink(p);
            g->res->instances_forgotten++;
        } else {
            /* live, or unreadable just now: keep what it may stand on, and
             * the record's own layer too (a clone being made is recorded first) */
            if (live == 0)
                rc = keep_chain(g->st, g->keep, id);
            const char *l = strstr(text, "\nlayer ");
            store_id rec;
            if (!rc && l && sscanf(l + 7, "%64s", rec.hex) == 1 && st_id_valid(rec.hex))
                rc = keep_chain(g->st, g->keep, rec);
            g->failed = rc != 0;
        }
    }
    free(path);
    free(text);
    free(p);
    return rc;
}

static int gc_tmp(void *ctx_, const char *name)
{
    gc_ctx *g = ctx_;
    size_t n = strlen(name);
    char *p = st_printf("%s/tmp/%s", g->st->home, name);
    if (!p)
        return -ENOMEM;
    if (n > 5 && !strcmp(name + n - 5, ".lock")) {
        int fd = open(p, O_RDWR | O_CLOEXEC);
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0) {
            p[strlen(p) - 5] = 0; /* the work directory beside the lock */
            st_rm_rf(p);
            p[strlen(p)] = '.';
            unlink(p);
            g->res->tmp_removed++;
        }
        if (fd >= 0)
            close(fd);
    } else if (name[0] == '.') {
        /* ".<kind>-<pid>-<seed>.new": a lock file being born. It is only
         * abandoned once the process making it is gone: between its open
         * and its flock, a live maker's file is not yet locked. */
        const char *dash = strchr(name, '-');
        long pid = dash ? strtol(dash + 1, NULL, 10) : 0;
        if (pid > 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH)
            unlink(p);
    } else {
        char *lock = st_printf("%s.lock", p);
        struct stat s;
        /* work whose owner is gone (and not already removed with its lock) */
        if (lock && stat(lock, &s) < 0 && errno == ENOENT && lstat(p, &s) == 0) {
            st_rm_rf(p);
            g->res->tmp_removed++;
        }
        free(lock);
    }
    free(p);
    return 0;
}

int store_gc(store *st, store_gc_result *res)
{
    memset(res, 0, sizeof *res);
    int rc = st_lock(st, 1);
    if (rc)
        return rc;
    id_set keep = {0};
    gc_ctx g = {st, &keep, res, 0};
    char *tags = st_printf("%s/refs/tags", st->home);
    char *inst = st_printf("%s/instances", st->home);
    char *tmp = st_printf("%s/tmp", st->home);
    char *layers = st_printf("%s/layers", st->home);
    store_id *ids = NULL;
    size_t n = 0;
    if (!tags || !inst || !tmp || !layers) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = each_entry(tags, gc_tag, &g)) || (rc = each_entry(inst, gc_instance, &g))) {
        if (!g.failed)
            rc = st_fail_errno(rc, "%s", st->home);
        goto out;
    }
    if ((rc = store_layers(st, &ids, &n)))
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (id_set_has(&keep, &ids[i]))
            continue;
        /* move the whole layer out of sight in one rename, then delete it:
         * a crash leaves either the intact layer or garbage under tmp/ */
        char *from = st_printf("%s/%s", layers, ids[i].hex);
        char *to = st_printf("%s/gc-%s", tmp, ids[i].hex);
        if (from && to) {
            uint64_t bytes = st_allocated(from);
            st_crash_point();
            if (rename(from, to) == 0) {
                st_crash_point();
                st_fsync_dir(layers);
                st_crash_point();
                st_rm_rf(to);
                res->layers_removed++;
                res->bytes_freed += bytes;
            }
        }
        free(from);
        free(to);
    }
    each_entry(tmp, gc_tmp, &g);
out:
    free(ids);
    free(keep.v);
    free(tags);
    free(inst);
    free(tmp);
    free(layers);
    st_unlock(st);
    return rc;
}

/* ---------- df ---------- */

static int cmp_digest(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

typedef struct {
    store *st;
    size_t live;
} count_ctx;

static int count_instance(void *ctx_, const char *name)
{
    count_ctx *c = ctx_;
    if (name[0] == '.')
        return 0;
    char *p = st_printf("%s/instances/%s", c->st->home, name), *text = NULL, *path = NULL;
    size_t len;
    store_id id;
    if (p && st_read_file(p, 8192, &text, &len) == 0 &&
        st_instance_live(c->st, text, &id, &path) == 0)
        c->live++;
    free(path);
    free(text);
    free(p);
    return 0;
}

int store_df(store *st, store_usage *out)
{
    memset(out, 0, sizeof *out);
    int rc = st_lock(st, 0);
    if (rc)
        return rc;
    store_id *ids = NULL;
    size_t n = 0;
    store_tag_entry *tags = NULL;
    size_t ntags = 0;
    unsigned char(*digests)[32] = NULL;
    size_t nd = 0, cap = 0;
    if ((rc = store_layers(st, &ids, &n)) || (rc = store_tags(st, &tags, &ntags)))
        goto out;
    out->layers = n;
    out->tags = ntags;
    /* unique data: distinct chunk digests, each counted once with its length */
    for (size_t i = 0; i < n; i++) {
        store_layer *l = NULL;
        if (store_layer_load(st, &ids[i], &l))
            continue;
        for (size_t f = 0; f < l->nfiles; f++) {
            const store_file *file = &l->files[f];
            out->apparent_bytes += file->size;
            for (size_t k = 0; k < file->ndata; k++) {
                if (nd == cap) {
                    cap = cap ? cap * 2 : 1024;
                    void *a = realloc(digests, cap * 40);
                    if (!a) {
                        store_layer_free(l);
                        rc = -ENOMEM;
                        goto out;
                    }
                    digests = a;
                }
                /* 32 bytes of digest then 8 of length, sorted by digest */
                uint64_t len = store_chunk_len(file, file->data[k].index);
                memcpy((unsigned char *)digests + nd * 40, file->data[k].digest, 32);
                memcpy((unsigned char *)digests + nd * 40 + 32, &len, 8);
                nd++;
            }
        }
        store_layer_free(l);
    }
    if (nd)
        qsort(digests, nd, 40, cmp_digest);
    for (size_t i = 0; i < nd; i++) {
        const unsigned char *e = (unsigned char *)digests + i * 40;
        if (i > 0 && !memcmp(e, e - 40, 32))
            continue;
        uint64_t len;
        memcpy(&len, e + 32, 8);
        out->unique_bytes += len;
    }
    char *layers = st_printf("%s/layers", st->home);
    out->allocated_bytes = layers ? st_allocated(layers) : 0;
    free(layers);
    count_ctx cc = {st, 0};
    char *inst = st_printf("%s/instances", st->home);
    if (inst)
        each_entry(inst, count_instance, &cc);
    free(inst);
    out->instances = cc.live;
    struct statvfs v;
    if (statvfs(st->home, &v) == 0)
        out->volume_free = (uint64_t)v.f_bavail * v.f_frsize;
out:
    free(digests);
    free(ids);
    store_tags_free(tags, ntags);
    st_unlock(st);
    return rc;
}
