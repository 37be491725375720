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
#include <time.h>
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
    char *bundle = st_layer_bundle_dir(st, id);
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
    if (!p || file_read_all(p, 8192, &text, &len)) {
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
    st_lock lock;
    int rc = st_lock_take(st, ST_LOCK_SHARED, &lock);
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
    st_lock_release(&lock);
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

/* Every layer and what reaches it. Built whole before gc removes anything. */
typedef struct {
    store_id *ids; /* sorted */
    size_t n;
    long *parent;  /* index of the parent, -1 if none or not in the store */
    char *reach;   /* reached from a tag or a clone record */
    char *keep;    /* reached, or in its grace period, or an ancestor of one */
    int64_t *since;
    size_t clones_missing;
} gc_graph;

static void graph_free(gc_graph *g)
{
    free(g->ids);
    free(g->parent);
    free(g->reach);
    free(g->keep);
    free(g->since);
}

static long graph_find(const gc_graph *g, const store_id *id)
{
    size_t lo = 0, hi = g->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(g->ids[mid].hex, id->hex);
        if (!c)
            return (long)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static void graph_mark(gc_graph *g, char *set, long i)
{
    for (size_t depth = 0; i >= 0 && !set[i] && depth <= g->n; depth++) {
        set[i] = 1;
        i = g->parent[i];
    }
}

static int doubt(const char *what)
{
    char why[900];
    snprintf(why, sizeof why, "%s", what);
    return st_fail(EIO, "gc removed nothing: %s (see strata fsck)", why);
}

static int graph_layers(store *st, gc_graph *g)
{
    int rc = store_layers(st, &g->ids, &g->n);
    if (rc)
        return rc;
    size_t n = g->n ? g->n : 1;
    g->parent = calloc(n, sizeof *g->parent);
    g->reach = calloc(n, 1);
    g->keep = calloc(n, 1);
    g->since = calloc(n, sizeof *g->since);
    if (!g->parent || !g->reach || !g->keep || !g->since)
        return -ENOMEM;
    store_id *parents = calloc(n, sizeof *parents);
    if (!parents)
        return -ENOMEM;
    for (size_t i = 0; !rc && i < g->n; i++) {
        store_layer *l = NULL;
        if (store_layer_load(st, &g->ids[i], &l)) {
            rc = doubt(store_error());
            break;
        }
        parents[i] = l->has_parent ? l->parent : (store_id){{0}};
        store_layer_free(l);
    }
    for (size_t i = 0; !rc && i < g->n; i++)
        g->parent[i] = parents[i].hex[0] ? graph_find(g, &parents[i]) : -1;
    free(parents);
    return rc;
}

typedef struct {
    store *st;
    gc_graph *g;
    int rc;
} tag_walk;

static int graph_tag(void *ctx_, const char *name)
{
    tag_walk *w = ctx_;
    store_id id;
    if (name[0] == '.')
        return 0; /* a write in progress or abandoned; the tag itself is intact */
    if (!store_tag_valid(name)) {
        char what[600];
        snprintf(what, sizeof what, "%s/refs/tags/%s: not a tag name", w->st->home, name);
        return w->rc = doubt(what);
    }
    if (store_resolve(w->st, name, &id))
        return w->rc = doubt(store_error());
    graph_mark(w->g, w->g->reach, graph_find(w->g, &id));
    return 0;
}

static int graph_refs(store *st, gc_graph *g)
{
    char *tags = st_printf("%s/refs/tags", st->home);
    tag_walk w = {st, g, 0};
    int rc = tags ? each_entry(tags, graph_tag, &w) : -ENOMEM;
    if (rc && !w.rc)
        rc = st_fail_errno(rc, "%s", tags);
    free(tags);
    if (rc)
        return rc;
    store_clone_entry *c = NULL;
    size_t nc = 0;
    if ((rc = st_clone_scan(st, &c, &nc)))
        return doubt(store_error());
    for (size_t i = 0; !rc && i < nc; i++) {
        if (!c[i].has_layer) {
            rc = doubt(c[i].why ? c[i].why : "a clone record");
            break;
        }
        /* whatever state the clone is in, its record keeps its layer */
        graph_mark(g, g->reach, graph_find(g, &c[i].record_layer));
        graph_mark(g, g->reach, graph_find(g, &c[i].layer));
        g->clones_missing += c[i].state == STORE_CLONE_MISSING || c[i].state == STORE_CLONE_MOVED;
    }
    store_clones_free(c, nc);
    return rc;
}

/* A live pin (store_pin_layer: tmp/pin-*, its lock held by its owner)
 * keeps its layer and the layer's chain. */
typedef struct {
    store *st;
    gc_graph *g;
} pin_walk;

static int graph_pin(void *ctx_, const char *name)
{
    pin_walk *w = ctx_;
    size_t n = strlen(name);
    if (strncmp(name, "pin-", 4) || (n > 5 && !strcmp(name + n - 5, ".lock")))
        return 0;
    char *dir = st_printf("%s/tmp/%s", w->st->home, name);
    char *lock = st_printf("%s.lock", dir ? dir : ""), *layer = st_printf("%s/layer", dir ? dir : "");
    char *text = NULL;
    size_t len = 0;
    int fd = lock ? open(lock, O_RDWR | O_CLOEXEC) : -1;
    int live = fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
    if (fd >= 0)
        close(fd);
    if (live && layer && !file_read_all(layer, 100, &text, &len) && len >= STORE_ID_HEX) {
        store_id id;
        memcpy(id.hex, text, STORE_ID_HEX);
        id.hex[STORE_ID_HEX] = 0;
        if (st_id_valid(id.hex))
            graph_mark(w->g, w->g->keep, graph_find(w->g, &id));
    }
    free(text);
    free(dir);
    free(lock);
    free(layer);
    return 0;
}

/* Which layers to keep; since[] says since when the others are unreachable. */
static int gc_plan(store *st, int64_t expire, int64_t now, gc_graph *g)
{
    st_unreachable_list sl;
    int rc = graph_layers(st, g);
    if (!rc)
        rc = graph_refs(st, g);
    if (!rc && (rc = st_unreachable_read(st, &sl)))
        return doubt(store_error());
    if (rc)
        return rc;
    for (size_t i = 0; i < g->n; i++) {
        if (g->reach[i])
            continue;
        const store_unreachable_entry *e = st_unreachable_find(&sl, &g->ids[i]);
        g->since[i] = e ? e->since : now;
    }
    free(sl.v);
    for (size_t i = 0; i < g->n; i++)
        if (g->reach[i] || (expire > 0 && now - g->since[i] < expire))
            graph_mark(g, g->keep, (long)i); /* and its parents, which its manifest names */
    char *tmp = st_printf("%s/tmp", st->home);
    pin_walk w = {st, g};
    if (tmp)
        each_entry(tmp, graph_pin, &w);
    free(tmp);
    return tmp ? 0 : -ENOMEM;
}

int store_unreachable(store *st, store_unreachable_entry **out, size_t *n)
{
    gc_graph g = {0};
    st_unreachable_list sl = {0};
    st_lock lock;
    int rc = st_lock_take(st, ST_LOCK_SHARED, &lock);
    if (!rc)
        rc = gc_plan(st, STORE_GC_PRUNE_EXPIRE, (int64_t)time(NULL), &g);
    if (!rc)
        rc = st_unreachable_read(st, &sl);
    store_unreachable_entry *v = rc ? NULL : calloc(g.n ? g.n : 1, sizeof *v);
    size_t k = 0;
    if (!rc && !v)
        rc = -ENOMEM;
    for (size_t i = 0; !rc && i < g.n; i++) {
        if (g.reach[i])
            continue;
        const store_unreachable_entry *e = st_unreachable_find(&sl, &g.ids[i]);
        v[k].id = g.ids[i];
        v[k++].since = e ? e->since : 0;
    }
    free(sl.v);
    graph_free(&g);
    st_lock_release(&lock);
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    *n = k;
    return 0;
}

typedef struct {
    store *st;
    const char *dir;
    store_gc_result *res;
} gc_ctx;

/* st_write_atomic's ".<name>.tmp-<pid>" and a commit's ".<name>.tmp-<pid>.new"
 * or ".old", left when their writer died */
static int gc_stale_write(void *ctx_, const char *name)
{
    gc_ctx *g = ctx_;
    if (stale_write(name)) {
        char *p = st_printf("%s/%s", g->dir, name);
        if (p)
            unlink(p);
        free(p);
    }
    return 0;
}

/* An interrupted resumable receive (tmp/receive-<id>, store_receive_opts):
 * kept for the grace period after it was last touched, unless its layer is
 * in the store already. */
static int partial_kept(store *st, const char *name)
{
    size_t n = strlen(name);
    size_t p = strlen(ST_RECEIVE);
    if (strncmp(name, ST_RECEIVE, p) ||
        !(n == p + STORE_ID_HEX || (n == p + 5 + STORE_ID_HEX && !strcmp(name + n - 5, ".lock"))))
        return 0;
    store_id id;
    memcpy(id.hex, name + p, STORE_ID_HEX);
    id.hex[STORE_ID_HEX] = 0;
    if (!st_id_valid(id.hex) || st_layer_exists(st, &id))
        return 0;
    char *lock = st_receive_path(st, id.hex, ".lock");
    struct stat s;
    int young = lock && stat(lock, &s) == 0 && time(NULL) - s.st_mtime < STORE_GC_PRUNE_EXPIRE;
    free(lock);
    return young;
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
        int abandoned = fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0;
        if (abandoned && partial_kept(g->st, name)) {
            g->res->partial_kept++;
        } else if (abandoned) {
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
        if (lock && stat(lock, &s) < 0 && errno == ENOENT && lstat(p, &s) == 0 &&
            !partial_kept(g->st, name)) {
            st_rm_rf(p);
            g->res->tmp_removed++;
        }
        free(lock);
    }
    free(p);
    return 0;
}

/* the unreachable layers gc keeps, with since when, for the next gc */
static int gc_remember(store *st, const gc_graph *g)
{
    st_unreachable_list l = {0};
    l.v = calloc(g->n ? g->n : 1, sizeof *l.v);
    if (!l.v)
        return -ENOMEM;
    for (size_t i = 0; i < g->n; i++)
        if (!g->reach[i] && g->keep[i]) {
            l.v[l.n].id = g->ids[i];
            l.v[l.n++].since = g->since[i];
        }
    int rc = st_unreachable_write(st, &l);
    free(l.v);
    return rc;
}

static void gc_remove(store *st, const store_id *id, store_gc_result *res)
{
    /* move the whole layer out of sight in one rename, then delete it:
     * a crash leaves either the intact layer or garbage under tmp/ */
    char *layers = st_printf("%s/layers", st->home);
    char *from = st_printf("%s/layers/%s", st->home, id->hex);
    char *to = st_printf("%s/tmp/gc-%s", st->home, id->hex);
    if (layers && from && to) {
        uint64_t bytes = st_allocated(from);
        crash_point();
        if (rename(from, to) == 0) {
            crash_point();
            file_fsync_path(layers);
            crash_point();
            st_rm_rf(to);
            res->layers_removed++;
            res->bytes_freed += bytes;
        }
    }
    free(layers);
    free(from);
    free(to);
}

int store_gc_expire(store *st, int64_t expire, store_gc_result *res)
{
    memset(res, 0, sizeof *res);
    st_lock lock;
    int rc = st_lock_take(st, ST_LOCK_EXCLUSIVE, &lock);
    if (rc)
        return rc;
    gc_graph g = {0};
    if (!(rc = gc_plan(st, expire, (int64_t)time(NULL), &g)) && !(rc = gc_remember(st, &g))) {
        res->clones_missing = g.clones_missing;
        for (size_t i = 0; i < g.n; i++) {
            if (!g.keep[i])
                gc_remove(st, &g.ids[i], res);
            else if (!g.reach[i])
                res->layers_waiting++;
        }
        static const char *const dirs[] = {"refs/tags", "instances", "."};
        for (size_t d = 0; d < 3; d++) {
            char *dir = st_printf("%s/%s", st->home, dirs[d]);
            gc_ctx c = {st, dir, res};
            if (dir)
                each_entry(dir, gc_stale_write, &c);
            free(dir);
        }
        char *tmp = st_printf("%s/tmp", st->home);
        gc_ctx c = {st, tmp, res};
        if (tmp)
            each_entry(tmp, gc_tmp, &c);
        free(tmp);
    }
    graph_free(&g);
    st_lock_release(&lock);
    return rc;
}

int store_gc(store *st, store_gc_result *res)
{
    return store_gc_expire(st, 0, res);
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
    if (p && file_read_all(p, 8192, &text, &len) == 0 &&
        st_instance_live(c->st, text, &id, &path) == 0)
        c->live++;
    free(path);
    free(text);
    free(p);
    return 0;
}

/* Sizes over all layers: apparent (file sizes) and unique (distinct chunk
 * digests, each counted once with its length). */
static int layer_bytes(store *st, const store_id *ids, size_t n, store_usage *out)
{
    unsigned char *digests = NULL; /* 32 bytes of digest then 8 of length */
    size_t nd = 0, cap = 0;
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
                        free(digests);
                        return -ENOMEM;
                    }
                    digests = a;
                }
                uint64_t len = store_chunk_len(file, file->data[k].index);
                memcpy(digests + nd * 40, file->data[k].digest, 32);
                memcpy(digests + nd * 40 + 32, &len, 8);
                nd++;
            }
        }
        store_layer_free(l);
    }
    if (nd)
        qsort(digests, nd, 40, cmp_digest);
    for (size_t i = 0; i < nd; i++) {
        const unsigned char *e = digests + i * 40;
        if (i > 0 && !memcmp(e, e - 40, 32))
            continue;
        uint64_t len;
        memcpy(&len, e + 32, 8);
        out->unique_bytes += len;
    }
    free(digests);
    return 0;
}

int store_df(store *st, store_usage *out)
{
    memset(out, 0, sizeof *out);
    st_lock lock;
    int rc = st_lock_take(st, ST_LOCK_SHARED, &lock);
    if (rc)
        return rc;
    store_id *ids = NULL;
    size_t n = 0;
    store_tag_entry *tags = NULL;
    size_t ntags = 0;
    if ((rc = store_layers(st, &ids, &n)) || (rc = store_tags(st, &tags, &ntags)))
        goto out;
    out->layers = n;
    out->tags = ntags;
    if ((rc = layer_bytes(st, ids, n, out)))
        goto out;
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
    free(ids);
    store_tags_free(tags, ntags);
    st_lock_release(&lock);
    return rc;
}
