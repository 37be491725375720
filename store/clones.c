/* Clone records (instances/<key>) and clone markers (<clone>/.strata),
 * git-worktree style: which clone stands on which layer, where it is. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MARKER_HEAD "strata-instance 1\n"
#define KEY_HEX ST_CLONE_KEY_HEX

char *st_record_path(const store *st, const char *key)
{
    return st_printf("%s/instances/%s", st->home, key);
}

/* Records made before markers carried their key were named by the clone's path. */
static void legacy_key(const char *abs_dir, char key[KEY_HEX + 1])
{
    unsigned char d[32];
    st_sha256(abs_dir, strlen(abs_dir), d);
    hex_encode(d, KEY_HEX / 2, key);
}

/* A record's name for a new clone: unique, and unrelated to the path, so the
 * clone can move and keep it. */
void st_clone_new_key(const char *abs_dir, char key[KEY_HEX + 1])
{
    static unsigned counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char *seed = st_printf("%s\n%lld.%09ld %d %u", abs_dir, (long long)ts.tv_sec, ts.tv_nsec,
                           (int)getpid(), counter++);
    unsigned char d[32];
    st_sha256(seed ? seed : abs_dir, strlen(seed ? seed : abs_dir), d);
    hex_encode(d, KEY_HEX / 2, key);
    free(seed);
}

char *st_record_text(const char *abs_dir, const store_id *id)
{
    char *enc = st_encode(abs_dir);
    char *t = enc ? st_printf("path %s\nlayer %s\n", enc, id->hex) : NULL;
    free(enc);
    return t;
}

char *st_marker_text(const store *st, const store_id *id, const char *key)
{
    char *enc = st_encode(st->home);
    char *t = enc ? st_printf(MARKER_HEAD "layer %s\nstore %s\nid %s\n", id->hex, enc, key) : NULL;
    free(enc);
    return t;
}

/* parse a marker's text: its layer, the store it names and its record key
 * ("" in markers older than keys) */
static int parse_marker(const char *text, store_id *id, char **store_path, char key[KEY_HEX + 1])
{
    if (strncmp(text, MARKER_HEAD, strlen(MARKER_HEAD)))
        return -1;
    const char *l = strstr(text, "\nlayer "), *s = strstr(text, "\nstore ");
    const char *k = strstr(text, "\nid ");
    if (!l || !s)
        return -1;
    char hex[65];
    if (sscanf(l + 7, "%64s", hex) != 1 || !st_id_valid(hex))
        return -1;
    key[0] = 0;
    if (k && (sscanf(k + 4, "%32s", key) != 1 || strlen(key) != KEY_HEX))
        return -1;
    const char *end = strchr(s + 7, '\n');
    if (!end)
        return -1;
    char *enc = strndup(s + 7, (size_t)(end - s - 7));
    *store_path = enc ? st_decode(enc) : NULL;
    free(enc);
    if (!*store_path)
        return -1;
    memcpy(id->hex, hex, 65);
    return 0;
}

/* parse a record's text: "path <encoded dir>\nlayer <id>\n" */
static int parse_record(const char *text, char **path, store_id *id)
{
    const char *p = strncmp(text, "path ", 5) ? NULL : text + 5;
    const char *nl = p ? strchr(p, '\n') : NULL;
    if (!nl || strncmp(nl, "\nlayer ", 7) || sscanf(nl + 7, "%64s", id->hex) != 1 ||
        !st_id_valid(id->hex))
        return -1;
    char *enc = strndup(p, (size_t)(nl - p));
    *path = enc ? st_decode(enc) : NULL;
    free(enc);
    return *path ? 0 : -1;
}

static int read_marker(store *st, const char *dir, store_id *id, char key[KEY_HEX + 1])
{
    char *marker = st_printf("%s/%s", dir, STORE_INSTANCE_MARKER), *text = NULL, *owner = NULL;
    size_t len;
    int rc = marker ? file_read_all(marker, 4096, &text, &len) : -ENOMEM;
    if (rc == -ENOENT)
        rc = st_fail(ENOENT, "%s: not a strata clone (no %s file)", dir, STORE_INSTANCE_MARKER);
    else if (rc)
        rc = st_fail_errno(rc, "%s", marker);
    else if (parse_marker(text, id, &owner, key))
        rc = st_fail(EINVAL, "%s: damaged marker file", marker);
    else if (strcmp(owner, st->home))
        rc = st_fail(EINVAL, "%s: cloned from the store at %s, not %s (set STRATA_HOME)", dir,
                     owner, st->home);
    free(owner);
    free(text);
    free(marker);
    return rc;
}

/* Where a clone's record says it is and stands, or an error (ENOENT: no record). */
static int read_record(store *st, const char *key, char **path, store_id *id)
{
    char *p = st_record_path(st, key), *text = NULL;
    size_t len;
    int rc = p ? file_read_all(p, 8192, &text, &len) : -ENOMEM;
    if (rc && rc != -ENOENT)
        rc = st_fail_errno(rc, "%s", p);
    else if (!rc && parse_record(text, path, id))
        rc = st_fail(EINVAL, "%s: damaged clone record", p);
    free(text);
    free(p);
    return rc;
}

/* 1 if dir holds a marker of this store with this key (so dir is that clone) */
static int marker_has_key(store *st, const char *dir, const char *key)
{
    store_id id;
    char k[KEY_HEX + 1];
    return read_marker(st, dir, &id, k) == 0 && !strcmp(k, key);
}

/*
 * The clone at abs_dir: its layer and record key. A clone found at a path
 * its record does not name was moved (or copied), and is registered again
 * here, git-worktree style: a moved clone's record gets the new path; a
 * copy, whose original still stands at the old path, gets a record of its
 * own, and so does a clone whose record is gone.
 */
int st_clone_read(store *st, const char *abs_dir, store_id *layer, char key[KEY_HEX + 1])
{
    int rc = read_marker(st, abs_dir, layer, key);
    if (rc)
        return rc;
    int legacy = !key[0], fresh = 0;
    if (legacy)
        legacy_key(abs_dir, key);
    char *path = NULL;
    store_id rec;
    rc = read_record(st, key, &path, &rec);
    if (!rc && !strcmp(path, abs_dir)) {
        free(path);
        return 0;
    }
    if (rc == -ENOENT)
        fresh = legacy; /* give an old marker a key, so it can move again */
    else if (rc)
        return rc;
    else
        fresh = marker_has_key(st, path, key); /* a copy: the original is still there */
    free(path);
    if (fresh)
        st_clone_new_key(abs_dir, key);
    char *rp = st_record_path(st, key), *rt = st_record_text(abs_dir, layer);
    char *mp = st_printf("%s/%s", abs_dir, STORE_INSTANCE_MARKER);
    char *mt = st_marker_text(st, layer, key);
    rc = !rp || !rt || !mp || !mt ? -ENOMEM : 0;
    if (!rc && (rc = atomic_file_write_all(rp, rt, strlen(rt), 0644, 0)))
        rc = st_fail_errno(rc, "registering the moved clone %s: %s", abs_dir, rp);
    if (!rc && fresh && (rc = atomic_file_write_all(mp, mt, strlen(mt), 0644, 0)))
        rc = st_fail_errno(rc, "registering the moved clone %s: %s", abs_dir, mp);
    free(rp);
    free(rt);
    free(mp);
    free(mt);
    return rc;
}

int store_instance_layer(store *st, const char *instance_dir, store_id *out)
{
    char *abs = realpath(instance_dir, NULL);
    if (!abs)
        return st_fail_errno(errno, "%s", instance_dir);
    st_lock lock;
    int rc = st_lock_take(st, ST_LOCK_SHARED, &lock);
    char key[KEY_HEX + 1];
    if (!rc)
        rc = st_clone_read(st, abs, out, key);
    st_lock_release(&lock);
    free(abs);
    return rc;
}

int st_instance_live(store *st, const char *record_text, store_id *out, char **path_out)
{
    store_id rec;
    if (parse_record(record_text, path_out, &rec))
        return -EINVAL;
    char *marker = st_printf("%s/%s", *path_out, STORE_INSTANCE_MARKER), *text = NULL;
    char *owner = NULL, key[KEY_HEX + 1];
    size_t len;
    int rc = marker ? file_read_all(marker, 4096, &text, &len) : -ENOMEM;
    if (!rc && (parse_marker(text, out, &owner, key) || strcmp(owner, st->home)))
        rc = -ENOENT; /* that directory is no longer our clone */
    free(owner);
    free(text);
    free(marker);
    return rc;
}

void st_clone_forget(store *st, const char *key)
{
    char *p = st_record_path(st, key);
    if (p && unlink(p) == 0)
        file_fsync_parent(p);
    free(p);
}

int store_clone_delete(store *st, const char *dir)
{
    char *abs = realpath(dir, NULL);
    if (!abs)
        return st_fail_errno(errno, "%s", dir);
    store_id layer, rec;
    char key[KEY_HEX + 1], *path = NULL;
    st_lock lock;
    int rc = st_lock_take(st, ST_LOCK_SHARED, &lock);
    int ours = !rc && read_marker(st, abs, &layer, key) == 0;
    if (ours && !key[0])
        legacy_key(abs, key);
    /* forget the record only if it is this clone's, not a copy's original */
    ours = ours && read_record(st, key, &path, &rec) == 0 && !strcmp(path, abs);
    if (!rc && (rc = st_rm_rf(abs)))
        rc = st_fail_errno(rc, "%s", abs);
    if (!rc && ours)
        st_clone_forget(st, key);
    st_lock_release(&lock);
    free(path);
    free(abs);
    return rc;
}

/* ---------- the clone records, as `strata clones` shows them ---------- */

static void clone_state(store *st, store_clone_entry *e)
{
    struct stat s;
    if (stat(e->path, &s) < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            e->state = STORE_CLONE_MISSING;
        else {
            e->state = STORE_CLONE_UNREADABLE;
            e->why = st_printf("%s: %s", e->path, strerror(errno));
        }
        return;
    }
    char key[KEY_HEX + 1];
    int rc = read_marker(st, e->path, &e->layer, key);
    if (rc == -ENOENT) {
        e->state = STORE_CLONE_MOVED; /* something else is there now */
    } else if (rc == -EINVAL && strstr(store_error(), "cloned from the store")) {
        e->state = STORE_CLONE_MOVED;
    } else if (rc) {
        e->state = STORE_CLONE_UNREADABLE;
        e->why = st_strdup(store_error());
    } else {
        char want[KEY_HEX + 1];
        if (!key[0])
            legacy_key(e->path, want);
        e->state = strcmp(key[0] ? key : want, e->key) ? STORE_CLONE_MOVED : STORE_CLONE_OK;
        if (e->state != STORE_CLONE_OK)
            e->layer = e->record_layer;
    }
}

int st_clone_scan(store *st, store_clone_entry **out, size_t *n)
{
    char *dir = st_printf("%s/instances", st->home);
    char **names;
    size_t cnt;
    int rc = dir ? st_list_dir(dir, &names, &cnt) : -ENOMEM;
    if (rc) {
        rc = st_fail_errno(rc, "%s", dir ? dir : "instances");
        free(dir);
        return rc;
    }
    store_clone_entry *v = calloc(cnt ? cnt : 1, sizeof *v);
    for (size_t i = 0; v && i < cnt; i++) {
        store_clone_entry *e = &v[i];
        snprintf(e->key, sizeof e->key, "%.32s", names[i]);
        char *p = st_printf("%s/%s", dir, names[i]);
        struct stat s;
        if (p && stat(p, &s) == 0)
            e->recorded = (int64_t)s.st_mtime;
        free(p);
        if (strlen(names[i]) != KEY_HEX) {
            e->state = STORE_CLONE_UNREADABLE;
            e->why = st_printf("%s/%s: not a clone record", dir, names[i]);
        } else if (read_record(st, names[i], &e->path, &e->record_layer)) {
            e->state = STORE_CLONE_UNREADABLE;
            e->why = st_strdup(store_error());
        } else {
            e->has_layer = 1;
            e->layer = e->record_layer;
            clone_state(st, e);
        }
    }
    st_free_names(names, cnt);
    free(dir);
    if (!v)
        return -ENOMEM;
    *out = v;
    *n = cnt;
    return 0;
}

int store_clones(store *st, store_clone_entry **out, size_t *n)
{
    st_lock lock;
    int rc = st_lock_take(st, ST_LOCK_SHARED, &lock);
    if (!rc)
        rc = st_clone_scan(st, out, n);
    st_lock_release(&lock);
    return rc;
}

void store_clones_free(store_clone_entry *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        free(v[i].path);
        free(v[i].why);
    }
    free(v);
}

const char *store_clone_state_name(store_clone_state s)
{
    static const char *const names[] = {"ok", "moved", "missing", "unreadable"};
    return (unsigned)s < 4 ? names[s] : "?";
}

int store_clones_prune(store *st, int64_t expire, size_t *forgotten)
{
    *forgotten = 0;
    st_lock lock;
    int rc = st_lock_take(st, ST_LOCK_EXCLUSIVE, &lock);
    store_clone_entry *v = NULL;
    size_t n = 0;
    if (!rc)
        rc = st_clone_scan(st, &v, &n);
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; !rc && i < n; i++) {
        if (v[i].state != STORE_CLONE_MISSING || now - v[i].recorded < expire)
            continue;
        /* the layer's grace period before gc starts now, not when it was cloned */
        if ((rc = st_unreachable_stamp(st, &v[i].record_layer)))
            break;
        char *p = st_record_path(st, v[i].key);
        if (!p || (unlink(p) < 0 && errno != ENOENT))
            rc = p ? st_fail_errno(errno, "%s", p) : -ENOMEM;
        else
            (*forgotten)++;
        free(p);
    }
    char *dir = st_printf("%s/instances", st->home);
    if (!rc && *forgotten && dir && (rc = file_fsync_path(dir)))
        rc = st_fail_errno(rc, "%s", dir);
    free(dir);
    store_clones_free(v, n);
    st_lock_release(&lock);
    return rc;
}

int st_clone_register(store *st, const char *key, const char *abs_dir,
                             const char *marker_dir, const store_id *id)
{
    char *rp = st_record_path(st, key), *rt = st_record_text(abs_dir, id);
    char *mp = st_printf("%s/%s", marker_dir, STORE_INSTANCE_MARKER);
    char *mt = st_marker_text(st, id, key);
    int rc = !rp || !rt || !mp || !mt ? -ENOMEM : 0;
    if (!rc && ((rc = st_fault("clone-record")) || (rc = atomic_file_write_all(rp, rt, strlen(rt), 0644, 0))))
        rc = st_fail_errno(rc, "%s", rp);
    crash_point();
    if (!rc && (rc = atomic_file_write_all(mp, mt, strlen(mt), 0644, 0))) {
        rc = st_fail_errno(rc, "%s", mp);
        unlink(rp);
    }
    free(rp);
    free(rt);
    free(mp);
    free(mt);
    return rc;
}
