/* Opening a store, refs, loading layers, and making layers and clones. */
#define _GNU_SOURCE
#include "../clone/clone.h"
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FORMAT_LINE "strata-store 1\n"

/* ---------- opening ---------- */

int store_open(const char *home, store **out)
{
    char *h = NULL;
    if (home && *home)
        h = strdup(home);
    else if (getenv("STRATA_HOME") && *getenv("STRATA_HOME"))
        h = strdup(getenv("STRATA_HOME"));
    else if (getenv("HOME"))
        h = st_printf("%s/.strata", getenv("HOME"));
    else
        return st_fail(EINVAL, "no store: set STRATA_HOME or HOME");
    if (!h)
        return -ENOMEM;
    int rc = file_mkdir_p(h, 0755);
    if (rc) {
        rc = st_fail_errno(rc, "store %s", h);
        free(h);
        return rc;
    }
    char *real = realpath(h, NULL);
    free(h);
    if (!real)
        return st_fail_errno(errno, "store");
    static const char *const subdirs[] = {"layers", "refs", "refs/tags", "instances", "tmp"};
    for (size_t i = 0; i < sizeof subdirs / sizeof *subdirs; i++) {
        char *d = st_printf("%s/%s", real, subdirs[i]);
        if (!d || (mkdir(d, 0755) < 0 && errno != EEXIST)) {
            rc = d ? st_fail_errno(errno, "%s", d) : -ENOMEM;
            free(d);
            free(real);
            return rc;
        }
        free(d);
    }
    char *fmt = st_printf("%s/format", real), *data = NULL;
    size_t len;
    rc = file_read_all(fmt, 4096, &data, &len);
    if (rc == -ENOENT) {
        if ((rc = atomic_file_write_all(fmt, FORMAT_LINE, strlen(FORMAT_LINE), 0644, 0)))
            rc = st_fail_errno(rc, "%s", fmt);
    } else if (!rc && (len != strlen(FORMAT_LINE) || memcmp(data, FORMAT_LINE, len)))
        rc = st_fail(EINVAL, "%s: not a store this strata understands", fmt);
    else if (rc)
        rc = st_fail_errno(rc, "%s", fmt);
    free(data);
    free(fmt);
    if (rc) {
        free(real);
        return rc;
    }
    char *lock = st_printf("%s/lock", real);
    int fd = lock ? open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644) : -1;
    if (fd < 0) {
        rc = st_fail_errno(errno, "%s", lock ? lock : "lock");
        free(lock);
        free(real);
        return rc;
    }
    free(lock);
    store *st = calloc(1, sizeof *st);
    if (!st) {
        close(fd);
        free(real);
        return -ENOMEM;
    }
    st->home = real;
    st->lock_fd = fd;
    *out = st;
    return 0;
}

void store_close(store *st)
{
    if (!st)
        return;
    st_unlock(st);
    close(st->lock_fd);
    free(st->home);
    free(st);
}

const char *store_home(const store *st)
{
    return st->home;
}

/* ---------- layers on disk ---------- */

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

static const store_file *layer_find_file(const store_layer *l, const char *name)
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

const store_file *st_layer_find_file(const store_layer *l, const char *name)
{
    return layer_find_file(l, name);
}

/* ---------- refs ---------- */

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

static char *tag_path(const store *st, const char *name)
{
    return st_printf("%s/refs/tags/%s", st->home, name);
}

static int read_tag(store *st, const char *name, store_id *out)
{
    char *p = tag_path(st, name), *data = NULL;
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
        int rc = read_tag(st, ref, out);
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
    char *p = tag_path(st, name);
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
    if (read_tag(st, name, &old) == 0 && strcmp(old.hex, id->hex)) {
        int rc = st_unreachable_stamp(st, &old);
        if (rc)
            return rc;
    }
    return write_tag(st, name, id);
}

static int bad_tag(const char *name)
{
    return st_fail(EINVAL,
                   "bad tag name '%s': use NAME or NAME:TAG, NAME of [a-z0-9._-] starting with a "
                   "letter or digit, TAG of [A-Za-z0-9_.-] not starting with '.' or '-', 128 "
                   "characters at most",
                   name);
}

int st_bad_tag(const char *name)
{
    return bad_tag(name);
}

int store_tag(store *st, const char *ref, const char *name)
{
    if (!store_tag_valid(name))
        return bad_tag(name);
    store_id id;
    int rc = st_lock(st, 1);
    if (!rc && !(rc = store_resolve(st, ref, &id)) && !st_layer_exists(st, &id))
        rc = st_fail(ENOENT, "'%s' names layer %s, which is missing (see strata fsck)", ref,
                     id.hex);
    if (!rc)
        rc = st_write_tag(st, name, &id);
    st_unlock(st);
    return rc;
}

int store_untag(store *st, const char *name)
{
    if (!store_tag_valid(name))
        return bad_tag(name);
    int rc = st_lock(st, 1);
    if (rc)
        return rc;
    char *p = tag_path(st, name);
    store_id old;
    if (!p)
        rc = -ENOMEM;
    else if (read_tag(st, name, &old) == 0 && (rc = st_unreachable_stamp(st, &old)))
        ; /* nothing removed: without the stamp, gc could take the layer at once */
    else if (unlink(p) < 0)
        rc = errno == ENOENT ? st_fail(ENOENT, "no tag '%s'", name) : st_fail_errno(errno, "%s", p);
    else {
        char *dir = st_printf("%s/refs/tags", st->home);
        rc = dir ? file_fsync_path(dir) : -ENOMEM;
        free(dir);
    }
    free(p);
    st_unlock(st);
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* sorted names in a directory, skipping dot files */
static int list_dir(const char *path, char ***out, size_t *n)
{
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    char **v = NULL;
    size_t cnt = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            char **nv = realloc(v, cap * sizeof *v);
            if (!nv)
                goto oom;
            v = nv;
        }
        if (!(v[cnt] = strdup(e->d_name)))
            goto oom;
        cnt++;
    }
    closedir(d);
    if (cnt)
        qsort(v, cnt, sizeof *v, cmp_str);
    *out = v;
    *n = cnt;
    return 0;
oom: /* a short list would silently leave files out of a layer */
    closedir(d);
    for (size_t i = 0; i < cnt; i++)
        free(v[i]);
    free(v);
    return -ENOMEM;
}

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int store_tags(store *st, store_tag_entry **out, size_t *n)
{
    char *dir = st_printf("%s/refs/tags", st->home);
    char **names;
    size_t cnt;
    int rc = dir ? list_dir(dir, &names, &cnt) : -ENOMEM;
    free(dir);
    if (rc)
        return st_fail_errno(rc, "%s/refs/tags", st->home);
    store_tag_entry *t = calloc(cnt ? cnt : 1, sizeof *t);
    size_t k = 0;
    for (size_t i = 0; t && i < cnt; i++) {
        if (!store_tag_valid(names[i]))
            continue; /* not ours (list_dir skips crashed writes' dot names) */
        if (read_tag(st, names[i], &t[k].id) == 0) {
            t[k].name = names[i];
            names[i] = NULL;
            k++;
        }
    }
    free_names(names, cnt);
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

int store_layers(store *st, store_id **out, size_t *n)
{
    char *dir = st_printf("%s/layers", st->home);
    char **names;
    size_t cnt;
    int rc = dir ? list_dir(dir, &names, &cnt) : -ENOMEM;
    free(dir);
    if (rc)
        return st_fail_errno(rc, "%s/layers", st->home);
    store_id *ids = calloc(cnt ? cnt : 1, sizeof *ids);
    size_t k = 0;
    for (size_t i = 0; ids && i < cnt; i++)
        if (st_id_valid(names[i]))
            memcpy(ids[k++].hex, names[i], STORE_ID_HEX + 1);
    free_names(names, cnt);
    if (!ids)
        return -ENOMEM;
    *out = ids;
    *n = k;
    return 0;
}

/* ---------- instances ---------- */

#define MARKER_HEAD "strata-instance 1\n"
#define KEY_HEX 32

/* Fault injection for tests: when $STRATA_FAIL_AT names this point, the
 * step fails with ENOSPC, as a full volume would make it (tests/cli.sh). */
static int fault(const char *point)
{
    const char *e = getenv("STRATA_FAIL_AT");
    return e && !strcmp(e, point) ? -ENOSPC : 0;
}

static char *record_path(const store *st, const char *key)
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
static void new_key(const char *abs_dir, char key[KEY_HEX + 1])
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

static char *record_text(const char *abs_dir, const store_id *id)
{
    char *enc = st_encode(abs_dir);
    char *t = enc ? st_printf("path %s\nlayer %s\n", enc, id->hex) : NULL;
    free(enc);
    return t;
}

static char *marker_text(const store *st, const store_id *id, const char *key)
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
    char *p = record_path(st, key), *text = NULL;
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
static int read_clone(store *st, const char *abs_dir, store_id *layer, char key[KEY_HEX + 1])
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
        new_key(abs_dir, key);
    char *rp = record_path(st, key), *rt = record_text(abs_dir, layer);
    char *mp = st_printf("%s/%s", abs_dir, STORE_INSTANCE_MARKER);
    char *mt = marker_text(st, layer, key);
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
    int locked = st->lock_state != 0, rc = locked ? 0 : st_lock(st, 0);
    char key[KEY_HEX + 1];
    if (!rc)
        rc = read_clone(st, abs, out, key);
    if (!locked)
        st_unlock(st);
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

static int fsync_parent(const char *path)
{
    char *d = strdup(path);
    if (!d)
        return -ENOMEM;
    *strrchr(d, '/') = 0;
    int rc = file_fsync_path(d);
    free(d);
    return rc;
}

static void forget_record(store *st, const char *key)
{
    char *p = record_path(st, key);
    if (p && unlink(p) == 0)
        fsync_parent(p);
    free(p);
}

int store_clone_delete(store *st, const char *dir)
{
    char *abs = realpath(dir, NULL);
    if (!abs)
        return st_fail_errno(errno, "%s", dir);
    store_id layer, rec;
    char key[KEY_HEX + 1], *path = NULL;
    int locked = st->lock_state != 0, rc = locked ? 0 : st_lock(st, 0);
    int ours = !rc && read_marker(st, abs, &layer, key) == 0;
    if (ours && !key[0])
        legacy_key(abs, key);
    /* forget the record only if it is this clone's, not a copy's original */
    ours = ours && read_record(st, key, &path, &rec) == 0 && !strcmp(path, abs);
    if (!rc && (rc = st_rm_rf(abs)))
        rc = st_fail_errno(rc, "%s", abs);
    if (!rc && ours)
        forget_record(st, key);
    if (!locked)
        st_unlock(st);
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
    int rc = dir ? list_dir(dir, &names, &cnt) : -ENOMEM;
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
    free_names(names, cnt);
    free(dir);
    if (!v)
        return -ENOMEM;
    *out = v;
    *n = cnt;
    return 0;
}

int store_clones(store *st, store_clone_entry **out, size_t *n)
{
    int rc = st_lock(st, 0);
    if (!rc)
        rc = st_clone_scan(st, out, n);
    st_unlock(st);
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
    int rc = st_lock(st, 1);
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
        char *p = record_path(st, v[i].key);
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
    st_unlock(st);
    return rc;
}

/* ---------- changing several files as one ---------- */

/*
 * A file replaced in steps, so that a commit can change a record, a tag
 * and a marker together: stage() writes the new content beside the file
 * and links the old one aside, so every step that can run out of space is
 * done before anything is visible; publish() renames the new one in;
 * undo() puts the old one back. Names are dot names no tag or record can
 * have, and gc removes those whose writer died.
 */
typedef struct {
    char *path, *next, *prev;
    int had_old, published;
} staged;

static char *aside(const char *path, const char *what)
{
    const char *slash = strrchr(path, '/');
    return st_printf("%.*s/.%s.tmp-%d.%s", (int)(slash - path), path, slash + 1, (int)getpid(),
                     what);
}

static int stage(staged *s, const char *path, const char *text, const char *point)
{
    s->path = strdup(path);
    s->next = aside(path, "new");
    s->prev = aside(path, "old");
    if (!s->path || !s->next || !s->prev)
        return -ENOMEM;
    int rc = fault(point);
    int fd = rc ? -1 : open(s->next, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    size_t len = strlen(text);
    if (!rc && (fd < 0 || write(fd, text, len) != (ssize_t)len || fsync(fd) < 0))
        rc = -(errno ? errno : EIO);
    if (fd >= 0)
        close(fd);
    unlink(s->prev);
    if (!rc && link(path, s->prev) == 0)
        s->had_old = 1;
    else if (!rc && errno != ENOENT)
        rc = -errno;
    return rc ? st_fail_errno(rc, "%s", path) : 0;
}

static int publish(staged *s, const char *point)
{
    int rc = fault(point);
    if (!rc && rename(s->next, s->path) < 0)
        rc = -errno;
    if (rc)
        return st_fail_errno(rc, "%s", s->path);
    s->published = 1;
    return 0;
}

static int undo(staged *s)
{
    if (!s->published)
        return 0;
    int rc = s->had_old ? rename(s->prev, s->path) : unlink(s->path);
    s->published = rc < 0;
    return rc < 0 ? -errno : 0;
}

static void staged_drop(staged *s)
{
    if (s->next)
        unlink(s->next);
    if (s->prev)
        unlink(s->prev);
    free(s->path);
    free(s->next);
    free(s->prev);
    memset(s, 0, sizeof *s);
}

/* ---------- making layers ---------- */

typedef struct {
    char *name;
    uint64_t size;
    uint32_t mode;
} src_file;

static void free_src(src_file *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].name);
    free(v);
}

#define note(o, ...) note_send((o) ? (o)->note : NULL, (o) ? (o)->progress_ctx : NULL, __VA_ARGS__)

/* What the commit publishes besides the layer itself, under the same lock,
 * and what it leaves out. */
typedef struct {
    const char *instance_dir; /* move this clone onto the new layer, or NULL */
    const char *key;          /* its record */
    const char *const *skip;  /* file names left out of the layer (a saved state's) */
    size_t nskip;
    /* a file the parent lacks is chunked against this layer's file of that
     * name: a saved state's RAM against the state the instance resumed from */
    const store_layer *state_base;
    /* files hashed ahead (st_prehash_start), by name; an entry may be NULL */
    const char *const *ahead_names;
    st_prehash *const *ahead;
    size_t nahead;
} publish_extra;

static st_prehash *ahead_for(const publish_extra *extra, const char *name)
{
    for (size_t i = 0; extra && i < extra->nahead; i++)
        if (!strcmp(extra->ahead_names[i], name))
            return extra->ahead[i];
    return NULL;
}

/* The file name is chunked against, and the layer holding it (*from). */
static const store_file *file_base(const store_layer *parent, const publish_extra *extra,
                                   const char *name, const store_layer **from)
{
    const store_file *f = parent ? st_layer_find_file(parent, name) : NULL;
    *from = parent;
    if (!f && extra && extra->state_base) {
        f = st_layer_find_file(extra->state_base, name);
        *from = extra->state_base;
    }
    return f;
}

/* A file's chunk size: the caller's for every file, else its base's (so
 * chunks line up with the base's and dedup), else the caller's for this
 * file, else the default. */
static uint32_t chunk_size_for(const store_commit_opts *o, const store_file *base,
                               const char *name)
{
    if (o->chunk_size)
        return o->chunk_size;
    if (base)
        return base->chunk_size;
    for (size_t i = 0; i < o->nfile_chunks; i++)
        if (!strcmp(o->file_chunks[i].name, name))
            return o->file_chunks[i].chunk_size;
    return STORE_DEFAULT_CHUNK;
}

/* The caller's chunk sizes, checked before anything is read or written. */
static int check_chunk_sizes(const store_commit_opts *o)
{
    if (o->chunk_size && !st_chunk_size_valid(o->chunk_size))
        return st_fail(EINVAL, "chunk size %" PRIu32 ": a power of two from 4 KiB to 64 MiB",
                       o->chunk_size);
    for (size_t i = 0; i < o->nfile_chunks; i++)
        if (!st_chunk_size_valid(o->file_chunks[i].chunk_size))
            return st_fail(EINVAL, "chunk size %" PRIu32 " for %s: a power of two from 4 KiB to 64 MiB",
                           o->file_chunks[i].chunk_size, o->file_chunks[i].name);
    return 0;
}

static int skipped(const publish_extra *extra, const char *name)
{
    for (size_t i = 0; extra && i < extra->nskip; i++)
        if (!strcmp(extra->skip[i], name))
            return 1;
    return 0;
}

/* The regular files of a bundle, checked against the bundle rules. */
static int scan_bundle(const char *dir, const store_commit_opts *o, const publish_extra *extra,
                       src_file **out, size_t *n)
{
    char **names;
    size_t cnt;
    DIR *d = opendir(dir);
    if (!d)
        return st_fail_errno(errno, "%s", dir);
    closedir(d);
    /* list_dir skips dot files; a bundle's own hidden files are not VM state */
    int rc = list_dir(dir, &names, &cnt);
    if (rc)
        return st_fail_errno(rc, "%s", dir);
    src_file *v = calloc(cnt ? cnt : 1, sizeof *v);
    size_t k = 0;
    int has_disk = 0, has_hw = 0, has_aux = 0, has_mid = 0;
    for (size_t i = 0; v && !rc && i < cnt; i++) {
        char *path = st_printf("%s/%s", dir, names[i]);
        struct stat s;
        if (!path) {
            rc = -ENOMEM;
            break;
        }
        if (skipped(extra, names[i]))
            ; /* left out on purpose: not versioned, not checked */
        else if (lstat(path, &s) < 0)
            rc = st_fail_errno(errno, "%s", path);
        else if (S_ISLNK(s.st_mode))
            rc = st_fail(EINVAL, "%s: a symbolic link; a bundle holds regular files only", path);
        else if (!S_ISREG(s.st_mode))
            note(o, "skipping %s: not a regular file", path);
        else if (!st_name_valid(names[i]))
            rc = st_fail(EINVAL, "%s: file name not allowed", path);
        else if (!strcmp(names[i], STORE_RESTORE_IMAGE) && !o->include_restore_image)
            note(o, "skipping %s (%" PRIu64 " MB): pass --include-restore-image to version it",
                 path, (uint64_t)s.st_size / 1000000);
        else if (!(rc = st_bundle_check_file(dir, names[i], (uint64_t)s.st_size))) {
            has_disk |= !strcmp(names[i], "Disk.img");
            has_hw |= !strcmp(names[i], "HardwareModel");
            has_aux |= !strcmp(names[i], "AuxiliaryStorage");
            has_mid |= !strcmp(names[i], "MachineIdentifier");
            v[k].name = names[i];
            v[k].size = (uint64_t)s.st_size;
            v[k].mode = s.st_mode & 0777;
            names[i] = NULL;
            k++;
        }
        free(path);
    }
    free_names(names, cnt);
    if (!v)
        rc = -ENOMEM;
    if (!rc && !has_disk)
        rc = st_fail(ENOENT, "%s: no Disk.img; not a VM bundle", dir);
    if (!rc && has_hw && (!has_aux || !has_mid))
        rc = st_fail(ENOENT, "%s: a macOS bundle (it has HardwareModel) needs %s too", dir,
                     !has_aux ? "AuxiliaryStorage" : "MachineIdentifier");
    if (rc) {
        free_src(v, k);
        return rc;
    }
    *out = v;
    *n = k;
    return 0;
}

static int write_plain(const char *path, const sbuf *b)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
    if (fd < 0)
        return -errno;
    size_t at = 0;
    int rc = 0;
    while (at < b->len) {
        ssize_t w = write(fd, b->data + at, b->len - at);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        at += (size_t)w;
    }
    if (!rc)
        rc = clone_fsync(fd);
    close(fd);
    return rc;
}

/* are chunk c of a and of b the same content? */
static int chunk_same(const store_file *a, const store_file *b, uint64_t c)
{
    const store_chunk *x = store_file_chunk(a, c), *y = store_file_chunk(b, c);
    return !x == !y && (!x || !memcmp(x->digest, y->digest, 32));
}

static uint64_t added_bytes(const store_file *f, const store_file *base)
{
    uint64_t total = 0;
    for (size_t k = 0; k < f->ndata; k++) {
        const store_chunk *ch = &f->data[k];
        const store_chunk *was = base ? store_file_chunk(base, ch->index) : NULL;
        if (!was || memcmp(was->digest, ch->digest, 32))
            total += store_chunk_len(f, ch->index);
    }
    return total;
}

/* The parent's seals, if it has them: chunks reused from it unread take
 * their seal from there (a parent made before seals has none, so the
 * chunker reads those chunks instead). */
static int load_parent_seals(store *st, const store_layer *parent, st_seals **out)
{
    char *dir = st_layer_dir(st, &parent->id);
    int rc = dir ? st_seals_load(dir, parent, out) : -ENOMEM;
    free(dir);
    if (rc == -ENOENT || rc == -EINVAL)
        rc = 0; /* none to trust: read instead (fsck reports damaged seals) */
    return rc;
}

/* undo the steps done so far, newest first; say what could not be undone */
static int roll_back(store *st, staged *steps, int n, const char *layer_dir, const char *tmp_path,
                     int layer_published)
{
    char why[1024];
    snprintf(why, sizeof why, "%s", store_error());
    const char *left = NULL;
    for (int i = n - 1; i >= 0; i--)
        if (undo(&steps[i]) < 0 && !left)
            left = steps[i].path;
    if (layer_published && rename(layer_dir, tmp_path) < 0 && !left)
        left = layer_dir;
    for (int i = 0; i < n; i++)
        if (steps[i].path)
            fsync_parent(steps[i].path);
    char *layers = st_printf("%s/layers", st->home);
    if (layers)
        file_fsync_path(layers);
    free(layers);
    if (left)
        return st_fail(EIO, "%s; undoing it failed too, so %s is left changed (see strata fsck)",
                       why, left);
    return st_fail(EIO, "%s; nothing was changed", why);
}

/*
 * Make the layer visible, then the clone's record, the tag and the clone's
 * marker. Everything that needs space is written first; if a later rename
 * fails, the earlier ones are undone, so the commit happens whole or not at
 * all (a crash in between leaves each file whole: a tag or marker names
 * either the old layer or the new one, which is complete).
 */
static int publish_all(store *st, st_tmpdir *tmp, const char *layer_dir,
                       const store_commit_opts *o, const publish_extra *extra,
                       store_commit_result *res)
{
    enum { N = 4 };
    staged steps[N] = {{0}};
    const char *const points[N] = {"commit-unreachable", "commit-record", "commit-tag",
                                   "commit-marker"};
    char *paths[N] = {NULL}, *texts[N] = {NULL};
    int rc = 0, layer_published = 0;
    store_id old;
    if (extra && extra->instance_dir) {
        paths[1] = record_path(st, extra->key);
        texts[1] = record_text(extra->instance_dir, &res->id);
        paths[3] = st_printf("%s/%s", extra->instance_dir, STORE_INSTANCE_MARKER);
        texts[3] = marker_text(st, &res->id, extra->key);
        rc = !paths[1] || !texts[1] || !paths[3] || !texts[3] ? -ENOMEM : 0;
    }
    if (!rc && o->tag) {
        paths[2] = tag_path(st, o->tag);
        texts[2] = st_printf("%s\n", res->id.hex);
        rc = !paths[2] || !texts[2] ? -ENOMEM : rc;
        /* a moved tag's old layer may become unreachable: its grace starts now */
        if (!rc && read_tag(st, o->tag, &old) == 0 && strcmp(old.hex, res->id.hex) &&
            !(rc = st_unreachable_stamped(st, &old, &texts[0])) &&
            !(paths[0] = st_printf("%s/unreachable", st->home)))
            rc = -ENOMEM;
    }
    for (int i = 0; i < N && !rc; i++) {
        char point[32];
        snprintf(point, sizeof point, "stage-%s", points[i]);
        if (paths[i] && (rc = stage(&steps[i], paths[i], texts[i], point))) {
            char why[1024];
            snprintf(why, sizeof why, "%s", store_error());
            rc = st_fail(-rc, "%s; nothing was changed", why);
        }
    }
    crash_point();
    if (!rc && !res->existed) {
        if (rename(tmp->path, layer_dir) < 0)
            rc = st_fail_errno(errno, "publishing %s", layer_dir);
        else
            layer_published = 1;
        crash_point();
        char *layers = st_printf("%s/layers", st->home);
        if (!rc && (rc = layers ? file_fsync_path(layers) : -ENOMEM))
            rc = st_fail_errno(rc, "%s/layers", st->home);
        free(layers);
        crash_point();
    }
    int done = 0;
    for (; done < N && !rc; done++) {
        if (paths[done])
            rc = publish(&steps[done], points[done]);
        crash_point();
    }
    for (int i = 0; i < N && !rc; i++)
        if (paths[i] && (rc = fsync_parent(paths[i])))
            rc = st_fail_errno(rc, "%s", paths[i]);
    if (rc && (done || layer_published))
        rc = roll_back(st, steps, done, layer_dir, tmp->path, layer_published);
    for (int i = 0; i < N; i++) {
        staged_drop(&steps[i]);
        free(paths[i]);
        free(texts[i]);
    }
    return rc;
}

/*
 * Build a layer from the files in src_dir under tmp/, then publish it with
 * one rename. Shared by import (no parent) and commit (parent = the layer
 * the instance was cloned from, whose files give the extent shortcut).
 */
static int build_layer(store *st, const char *src_dir, const store_layer *parent,
                       const store_commit_opts *o, const publish_extra *extra,
                       store_commit_result *res)
{
    src_file *src = NULL;
    size_t nsrc = 0;
    st_tmpdir tmp = {.lock_fd = -1};
    store_layer l = {0};
    sbuf manifest = {0}, info = {0};
    char *bundle = NULL, *layer_dir = NULL;
    st_seals *seals = NULL, *parent_seals = NULL, *state_seals = NULL;
    int rc = check_chunk_sizes(o);
    if (!rc)
        rc = scan_bundle(src_dir, o, extra, &src, &nsrc);
    if (rc)
        return rc;
    if (nsrc > ST_MAX_FILES || o->nbindings > ST_MAX_BINDINGS) {
        rc = st_fail(E2BIG, "%s: %zu files; a layer holds at most %d", src_dir, nsrc, ST_MAX_FILES);
        goto out;
    }
    /* the manifest's bounds, checked before anything is written */
    uint64_t chunks = 0, data = 0;
    const store_layer *from;
    for (size_t i = 0; !rc && i < nsrc; i++) {
        const store_file *base = file_base(parent, extra, src[i].name, &from);
        uint32_t cs = chunk_size_for(o, base, src[i].name);
        char *path = st_printf("%s/%s", src_dir, src[i].name);
        rc = path ? st_chunk_estimate(path, cs, &chunks, &data) : -ENOMEM;
        free(path);
    }
    if (!rc && (chunks > ST_MAX_CHUNKS || data > ST_MAX_DATA_CHUNKS))
        rc = st_fail(E2BIG,
                     "%s: %" PRIu64 " chunks, %" PRIu64 " of them data; a layer holds at most "
                     "%llu chunks, %llu of them data (use a larger --chunk-size)",
                     src_dir, chunks, data, (unsigned long long)ST_MAX_CHUNKS,
                     (unsigned long long)ST_MAX_DATA_CHUNKS);
    if (rc)
        goto out;
    if (parent && (rc = load_parent_seals(st, parent, &parent_seals)))
        goto out;
    if (extra && extra->state_base && (rc = load_parent_seals(st, extra->state_base, &state_seals)))
        goto out;
    if (!(seals = st_seals_new(nsrc))) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = st_tmpdir_make(st, parent ? "commit" : "import", &tmp)))
        goto out;
    if (!(bundle = st_printf("%s/bundle", tmp.path)) || mkdir(bundle, 0755) < 0) {
        rc = bundle ? st_fail_errno(errno, "%s", bundle) : -ENOMEM;
        goto out;
    }
    l.files = calloc(nsrc ? nsrc : 1, sizeof *l.files);
    if (!l.files) {
        rc = -ENOMEM;
        goto out;
    }
    res->reflinked = 1;
    for (size_t i = 0; i < nsrc; i++) {
        const store_layer *bl;
        const store_file *base = file_base(parent, extra, src[i].name, &bl);
        uint32_t cs = chunk_size_for(o, base, src[i].name);
        char *from = st_printf("%s/%s", src_dir, src[i].name);
        char *to = st_printf("%s/%s", bundle, src[i].name);
        char *base_path = base ? store_layer_file_path(st, &bl->id, src[i].name) : NULL;
        clone_method how = CLONE_REFLINK;
        int fd = -1, base_fd = -1;
        /* hashed ahead (new in this layer): copied from the file hashed */
        st_prehash *ahead = base ? NULL : ahead_for(extra, src[i].name);
        if (ahead && !st_prehash_lease(ahead))
            ahead = NULL; /* a writer has it open still: hash the copy */
        if (!from || !to || (base && !base_path))
            rc = -ENOMEM;
        else if ((rc = ahead ? st_prehash_copy(ahead, to, 0644, &how)
                             : clone_path(from, to, 0644, &how)))
            rc = st_fail_errno(rc, "copying %s into the store", from);
        else if ((fd = open(to, O_RDWR | O_CLOEXEC)) < 0)
            rc = st_fail_errno(errno, "%s", to);
        crash_point();
        if (!rc) {
            if (how != CLONE_REFLINK)
                res->reflinked = 0;
            if (base_path)
                base_fd = open(base_path, O_RDONLY | O_CLOEXEC);
            store_file *f = &l.files[l.nfiles++];
            f->name = strdup(src[i].name);
            f->mode = src[i].mode;
            st_chunk_stats stats = {0};
            st_chunk_base b = {base_fd, base, bl == parent ? parent_seals : state_seals,
                               base ? (size_t)(base - bl->files) : 0};
            int used = 0; /* 1: chunked from the hashes made ahead */
            if (!f->name)
                rc = -ENOMEM;
            else if (ahead)
                used = st_prehash_use(ahead, from, fd, cs, f, seals, l.nfiles - 1, &stats);
            if (used < 0)
                rc = used;
            else if (!rc && !used)
                rc = st_chunk_file(fd, from, cs, &b, f, seals, l.nfiles - 1, &stats,
                                   o->progress, o->progress_ctx);
            res->bytes_read += stats.bytes_read;
            res->chunks_reused += stats.chunks_reused;
            if (!rc) {
                l.bytes_added += added_bytes(f, base);
                int e = fchmod(fd, 0444) < 0 ? -errno : clone_fsync(fd);
                if (e)
                    rc = st_fail_errno(-e, "%s", to);
            }
        }
        if (fd >= 0)
            close(fd);
        if (base_fd >= 0)
            close(base_fd);
        free(from);
        free(to);
        free(base_path);
        if (rc)
            goto out;
        crash_point();
    }

    if (parent) {
        l.has_parent = 1;
        l.parent = parent->id;
    }
    l.bindings = (store_binding *)o->bindings;
    l.nbindings = o->nbindings;
    l.created = (int64_t)time(NULL);
    l.message = (char *)(o->message ? o->message : "");
    for (size_t i = 1; i < l.nbindings; i++)
        if (strcmp(l.bindings[i - 1].key, l.bindings[i].key) >= 0) {
            rc = st_fail(EINVAL, "saved-state bindings must be sorted and unique");
            goto out;
        }
    if ((rc = st_manifest_format(&l, &manifest)) || (rc = st_info_format(&l, &info)))
        goto out;
    unsigned char digest[32];
    st_sha256(manifest.data, manifest.len, digest);
    hex_encode(digest, 32, res->id.hex);
    res->bytes_added = l.bytes_added;

    char *mpath = st_printf("%s/manifest", tmp.path), *ipath = st_printf("%s/info", tmp.path);
    if (!mpath || !ipath)
        rc = -ENOMEM;
    else if ((rc = write_plain(mpath, &manifest)) || (rc = write_plain(ipath, &info)))
        rc = st_fail_errno(rc, "%s", tmp.path);
    else if ((rc = st_seals_write(seals, &l, &res->id, tmp.path)))
        ; /* its message is set */
    else if ((rc = file_fsync_path(bundle)) || (rc = file_fsync_path(tmp.path)))
        rc = st_fail_errno(rc, "%s", tmp.path);
    free(mpath);
    free(ipath);
    if (rc)
        goto out;
    crash_point();

    /* publish: everything below happens under the exclusive lock */
    if ((rc = st_lock(st, 1)))
        goto out;
    if (parent && !st_layer_exists(st, &parent->id)) {
        rc = st_fail(ENOENT, "layer %s disappeared during the commit", parent->id.hex);
        goto out;
    }
    layer_dir = st_layer_dir(st, &res->id);
    if (!layer_dir) {
        rc = -ENOMEM;
        goto out;
    }
    res->existed = st_layer_exists(st, &res->id);
    rc = publish_all(st, &tmp, layer_dir, o, extra, res);
out:
    st_unlock(st);
    st_tmpdir_drop(&tmp);
    for (size_t i = 0; i < l.nfiles; i++) {
        free(l.files[i].name);
        free(l.files[i].data);
    }
    free(l.files);
    free(manifest.data);
    free(info.data);
    free(bundle);
    free(layer_dir);
    free_src(src, nsrc);
    st_seals_free(seals);
    st_seals_free(parent_seals);
    st_seals_free(state_seals);
    return rc;
}

int store_import(store *st, const char *bundle_dir, const store_commit_opts *o,
                 store_commit_result *res)
{
    memset(res, 0, sizeof *res);
    if (o->tag && !store_tag_valid(o->tag))
        return bad_tag(o->tag);
    return build_layer(st, bundle_dir, NULL, o, NULL, res);
}

int store_commit(store *st, const char *instance_dir, const store_commit_opts *o,
                 store_commit_result *res)
{
    memset(res, 0, sizeof *res);
    if (o->tag && !store_tag_valid(o->tag))
        return bad_tag(o->tag);
    char *abs = realpath(instance_dir, NULL);
    if (!abs)
        return st_fail_errno(errno, "%s", instance_dir);
    store_busy busy = {-1};
    store_id pid;
    store_layer *parent = NULL;
    int rc = st_lock(st, 0); /* the parent's files must stay while we compare */
    char key[KEY_HEX + 1];
    if (!rc)
        rc = read_clone(st, abs, &pid, key);
    if (!rc && !o->busy) /* never copy a disk a running VM writes */
        rc = store_busy_take(abs, "a commit in progress", &busy);
    if (!rc)
        rc = store_layer_load(st, &pid, &parent);
    if (!rc) {
        publish_extra extra = {.instance_dir = abs, .key = key};
        rc = build_layer(st, abs, parent, o, &extra, res);
    }
    st_unlock(st);
    store_busy_release(&busy);
    store_layer_free(parent);
    free(abs);
    return rc;
}

/* a new clone's record, then its marker: gc must never see a live clone it
 * does not know about */
static int write_clone_files(store *st, const char *key, const char *abs_dir,
                             const char *marker_dir, const store_id *id)
{
    char *rp = record_path(st, key), *rt = record_text(abs_dir, id);
    char *mp = st_printf("%s/%s", marker_dir, STORE_INSTANCE_MARKER);
    char *mt = marker_text(st, id, key);
    int rc = !rp || !rt || !mp || !mt ? -ENOMEM : 0;
    if (!rc && ((rc = fault("clone-record")) || (rc = atomic_file_write_all(rp, rt, strlen(rt), 0644, 0))))
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

/* State files S is the first to have (none in the state resumed from)
 * are read whole: hash them from the instance on their own threads while
 * D is committed (st_prehash_start), so S finds their chunks named. Those
 * the caller began hashing when the VM paused are taken from o->hashed. */
#define ST_MAX_AHEAD 8
struct store_state_hashing {
    char *names[ST_MAX_AHEAD];
    st_prehash *files[ST_MAX_AHEAD];
};

static st_prehash *take_hashed(store_state_hashing *h, const char *name)
{
    for (size_t i = 0; h && i < ST_MAX_AHEAD; i++)
        if (h->names[i] && !strcmp(h->names[i], name)) {
            st_prehash *p = h->files[i];
            h->files[i] = NULL;
            return p;
        }
    return NULL;
}

static void hash_ahead(const char *abs, const char *const *names, size_t n,
                       const store_commit_opts *o, const store_layer *was, int writer_paused,
                       st_prehash **out)
{
    for (size_t i = 0; i < n; i++) {
        if (was && st_layer_find_file(was, names[i]))
            continue; /* chunked against was's, mostly unread */
        if ((out[i] = take_hashed(o->hashed, names[i])))
            continue;
        char *path = st_printf("%s/%s", abs, names[i]);
        out[i] = path ? st_prehash_start(path, chunk_size_for(o, NULL, names[i]), writer_paused)
                      : NULL;
        free(path);
    }
}

/* The saved state an instance was resumed from, or NULL. */
static store_layer *resumed_state(store *st, const char *abs)
{
    store_id id;
    store_layer *was = NULL;
    if (store_instance_state(st, abs, &id) == 0 && store_layer_load(st, &id, &was))
        was = NULL;
    return was;
}

store_state_hashing *store_state_hashing_start(store *st, const char *instance_dir,
                                               const char *const *files, size_t n,
                                               const store_commit_opts *o)
{
    char *abs = realpath(instance_dir, NULL);
    store_state_hashing *h = abs && !check_chunk_sizes(o) ? calloc(1, sizeof *h) : NULL;
    size_t started = 0;
    if (h && !st_lock(st, 0)) {
        store_layer *was = resumed_state(st, abs);
        st_unlock(st);
        size_t k = n < ST_MAX_AHEAD ? n : ST_MAX_AHEAD;
        hash_ahead(abs, files, k, o, was, 1, h->files);
        for (size_t i = 0; i < k; i++) {
            if (h->files[i] && !(h->names[i] = strdup(files[i]))) {
                st_prehash_free(h->files[i]);
                h->files[i] = NULL;
            }
            started += h->files[i] != NULL;
        }
        store_layer_free(was);
    }
    free(abs);
    if (!started) {
        store_state_hashing_free(h);
        return NULL;
    }
    return h;
}

void store_state_hashing_free(store_state_hashing *h)
{
    for (size_t i = 0; h && i < ST_MAX_AHEAD; i++) {
        st_prehash_free(h->files[i]);
        free(h->names[i]);
    }
    free(h);
}

/* D then S (store.h). D first, and the clone moves onto D with it, so a
 * crash between them leaves a plain layer and an instance that is its
 * clone: nothing claims a state that was not committed. */
int store_commit_saved_state(store *st, const char *instance_dir, const char *const *state_files,
                             size_t nstate, const store_commit_opts *o, store_commit_result *disk,
                             store_commit_result *state)
{
    memset(disk, 0, sizeof *disk);
    memset(state, 0, sizeof *state);
    if (o->tag && !store_tag_valid(o->tag))
        return bad_tag(o->tag);
    if (!o->nbindings)
        return st_fail(EINVAL, "a saved state needs bindings");
    char *abs = realpath(instance_dir, NULL);
    if (!abs)
        return st_fail_errno(errno, "%s", instance_dir);
    store_busy busy = {-1};
    store_id pid;
    store_layer *parent = NULL, *d = NULL, *was = NULL;
    int rc = st_lock(st, 0);
    char key[KEY_HEX + 1];
    if (!rc)
        rc = read_clone(st, abs, &pid, key);
    if (!rc && !o->busy)
        rc = store_busy_take(abs, "a commit in progress", &busy);
    /* the state it was resumed from (D's commit forgets it): where the
     * state files' unchanged chunks are found */
    if (!rc)
        was = resumed_state(st, abs);
    if (!rc)
        rc = store_layer_load(st, &pid, &parent);
    if (!rc)
        rc = check_chunk_sizes(o);
    st_prehash *ahead[ST_MAX_AHEAD] = {NULL};
    size_t nahead = nstate < ST_MAX_AHEAD ? nstate : ST_MAX_AHEAD;
    if (!rc)
        hash_ahead(abs, state_files, nahead, o, was, 0, ahead);
    if (!rc) {
        store_commit_opts od = *o;
        od.tag = NULL;
        od.bindings = NULL;
        od.nbindings = 0;
        publish_extra extra = {.instance_dir = abs, .key = key, .skip = state_files, .nskip = nstate};
        rc = build_layer(st, abs, parent, &od, &extra, disk);
    }
    st_unlock(st);
    if (!rc)
        rc = st_lock(st, 0);
    if (!rc)
        rc = store_layer_load(st, &disk->id, &d);
    if (!rc) {
        /* the instance stays on D */
        publish_extra extra = {.instance_dir = NULL, .state_base = was,
                               .ahead_names = state_files, .ahead = ahead, .nahead = nahead};
        rc = build_layer(st, abs, d, o, &extra, state);
    }
    st_unlock(st);
    for (size_t i = 0; i < nahead; i++)
        st_prehash_free(ahead[i]);
    store_busy_release(&busy);
    store_layer_free(parent);
    store_layer_free(d);
    store_layer_free(was);
    free(abs);
    return rc;
}

/* Where a clone goes: the absolute path of DIR, its parent directory, and
 * a temporary name beside it, checked to be a new name on the store's volume. */
typedef struct {
    char *parent; /* realpath of DIR's parent */
    char *abs;    /* parent/leaf */
    char *tmp;    /* parent/.strata-clone-PID, where the clone is built */
} clone_target;

static void clone_target_free(clone_target *t)
{
    free(t->parent);
    free(t->abs);
    free(t->tmp);
}

static int clone_target_make(store *st, const char *dir, clone_target *t)
{
    memset(t, 0, sizeof *t);
    struct stat s;
    if (lstat(dir, &s) == 0)
        return st_fail(EEXIST, "%s already exists; clone makes a new directory", dir);
    char *copy = strdup(dir), *leaf_copy = strdup(dir);
    int rc = copy && leaf_copy ? 0 : -ENOMEM;
    const char *leaf = leaf_copy ? basename(leaf_copy) : NULL;
    if (!rc && !(t->parent = realpath(dirname(copy), NULL)))
        rc = st_fail_errno(errno, "%s", dir);
    else if (!rc && !st_name_valid(leaf))
        rc = st_fail(EINVAL, "%s: not a directory name a clone can take", dir);
    int same = rc ? 1 : clone_same_volume(t->parent, st->home);
    if (same < 0)
        rc = st_fail_errno(same, "%s", t->parent);
    else if (!same)
        rc = st_fail(EXDEV,
                     "%s is on another volume than the store %s; clones can't cross volumes "
                     "(put the clone beside the store, or set STRATA_HOME to a store on that "
                     "volume)",
                     dir, st->home);
    if (!rc) {
        t->abs = st_printf("%s/%s", strcmp(t->parent, "/") ? t->parent : "", leaf);
        /* short and fixed, so a leaf of NAME_MAX bytes still has a temporary name */
        t->tmp = st_printf("%s/.strata-clone-%d", t->parent, (int)getpid());
        if (!t->abs || !t->tmp)
            rc = -ENOMEM;
    }
    free(copy);
    free(leaf_copy);
    if (rc)
        clone_target_free(t);
    return rc;
}

/* Clone the files of layer id (all but the saved-state ones marked in
 * skip) into dir, then fsync them: durable before the clone is visible.
 * Syncing after the last clone lets the first fsync's journal flush cover
 * the others. *all_reflinked says whether every file shares its blocks. */
static int clone_layer_files(store *st, const store_id *id, const store_layer *l,
                             const int *skip, const char *dir, const char *shown,
                             int *all_reflinked)
{
    int rc = 0;
    *all_reflinked = 1;
    for (size_t i = 0; i < l->nfiles && !rc; i++) {
        if (skip[i])
            continue;
        char *from = store_layer_file_path(st, id, l->files[i].name);
        char *to = st_printf("%s/%s", dir, l->files[i].name);
        clone_method how;
        if (!from || !to)
            rc = -ENOMEM;
        else if ((rc = clone_path(from, to, l->files[i].mode, &how)))
            rc = st_fail_errno(rc, "cloning %s into %s", l->files[i].name, shown);
        else if (how != CLONE_REFLINK)
            *all_reflinked = 0;
        free(from);
        free(to);
        crash_point();
    }
    for (size_t i = 0; i < l->nfiles && !rc; i++) {
        if (skip[i])
            continue;
        char *p = st_printf("%s/%s", dir, l->files[i].name);
        int e = p ? file_fsync_path(p) : -ENOMEM;
        if (e)
            rc = st_fail_errno(-e, "%s", p ? p : dir);
        free(p);
    }
    return rc;
}

/* Make the clone built in t->tmp visible at t->abs, never over something
 * that appeared there meanwhile, and durable. */
static int publish_clone(const clone_target *t, const char *dir)
{
    int rc = file_fsync_path(t->tmp);
    if (rc)
        return st_fail_errno(rc, "%s", t->tmp);
    int e = fault("clone-publish");
    if (!e)
        e = file_rename_noreplace(t->tmp, t->abs);
    if (e == -EEXIST || e == -ENOTEMPTY)
        return st_fail(EEXIST, "%s: something was created there while cloning; left as it was",
                       dir);
    if (e)
        return st_fail_errno(-e, "%s", dir);
    if ((rc = file_fsync_path(t->parent)))
        return st_fail_errno(rc, "%s", t->parent);
    return 0;
}

static int clone_layer(store *st, const char *ref, const char *dir, int *reflinked, int with_state)
{
    clone_target t;
    int rc = clone_target_make(st, dir, &t);
    if (rc)
        return rc;
    store_layer *l = NULL;
    store_id id, base;
    int *state_file = NULL; /* per file of l: 1 if it is saved-state data */
    if ((rc = st_lock(st, 0)) || (rc = store_resolve(st, ref, &id)) ||
        (rc = store_layer_load(st, &id, &l)))
        goto out;
    if (!(state_file = calloc(l->nfiles + 1, sizeof *state_file))) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = st_saved_state_split(st, l, state_file, &base)))
        goto out;
    if (with_state)
        memset(state_file, 0, l->nfiles * sizeof *state_file);
    st_rm_rf(t.tmp); /* our pid's, so a crashed clone's: no one else's work */
    if (mkdir(t.tmp, 0755) < 0) {
        rc = st_fail_errno(errno, "%s", t.tmp);
        goto out;
    }
    int all_reflinked;
    rc = clone_layer_files(st, &id, l, state_file, t.tmp, dir, &all_reflinked);
    char key[KEY_HEX + 1];
    new_key(t.abs, key);
    int recorded = 0;
    if (!rc && !(rc = write_clone_files(st, key, t.abs, t.tmp, &base)))
        recorded = 1;
    if (!rc && with_state && l->nbindings)
        rc = st_mark_saved_state(t.tmp, &id);
    if (!rc)
        rc = publish_clone(&t, dir);
    if (rc)
        st_rm_rf(t.tmp);
    if (rc && recorded)
        forget_record(st, key);
    else if (reflinked)
        *reflinked = all_reflinked;
out:
    st_unlock(st);
    store_layer_free(l);
    free(state_file);
    clone_target_free(&t);
    return rc;
}

int store_clone(store *st, const char *ref, const char *dir, int *reflinked)
{
    return clone_layer(st, ref, dir, reflinked, 0);
}

int store_clone_saved_state(store *st, const char *ref, const char *dir, int *reflinked)
{
    return clone_layer(st, ref, dir, reflinked, 1);
}

/* ---------- identity and diff ---------- */

int store_layer_identity(store *st, const store_id *id, store_identity *out)
{
    memset(out, 0, sizeof *out);
    static const char *const names[] = {"HardwareModel", "MachineIdentifier"};
    for (int i = 0; i < 2; i++) {
        char *p = store_layer_file_path(st, id, names[i]);
        if (!p)
            return -ENOMEM;
        int rc = 0;
        if (access(p, F_OK) == 0)
            rc = store_plist_identity(p, names[i], out);
        free(p);
        if (rc)
            return rc;
    }
    return 0;
}

int store_diff(store *st, const store_id *a, const store_id *b, store_diff_entry **out, size_t *n)
{
    store_layer *la = NULL, *lb = NULL;
    int rc = store_layer_load(st, a, &la);
    if (!rc)
        rc = store_layer_load(st, b, &lb);
    store_diff_entry *v = NULL;
    size_t k = 0;
    if (!rc && !(v = calloc(la->nfiles + lb->nfiles + 1, sizeof *v)))
        rc = -ENOMEM;
    for (size_t i = 0, j = 0; !rc && (i < la->nfiles || j < lb->nfiles);) {
        const store_file *fa = i < la->nfiles ? &la->files[i] : NULL;
        const store_file *fb = j < lb->nfiles ? &lb->files[j] : NULL;
        int c = !fa ? 1 : !fb ? -1 : strcmp(fa->name, fb->name);
        store_diff_entry *e = &v[k++];
        e->name = strdup(c <= 0 ? fa->name : fb->name);
        e->in_a = c <= 0;
        e->in_b = c >= 0;
        e->size_a = e->in_a ? fa->size : 0;
        e->size_b = e->in_b ? fb->size : 0;
        const store_file *newer = e->in_b ? fb : fa;
        const store_file *older = e->in_b && e->in_a ? fa : NULL;
        /* only data chunks on either side can differ: walk those */
        size_t i_new = 0, i_old = 0, n_old = older ? older->ndata : 0;
        int comparable = older && older->chunk_size == newer->chunk_size;
        while (i_new < newer->ndata || i_old < n_old) {
            uint64_t cn = i_new < newer->ndata ? newer->data[i_new].index : UINT64_MAX;
            uint64_t co = i_old < n_old ? older->data[i_old].index : UINT64_MAX;
            uint64_t ch = cn < co ? cn : co;
            i_new += cn == ch;
            i_old += co == ch;
            if (ch >= newer->nchunks)
                continue; /* past newer's end: counted below */
            int same = comparable && chunk_same(older, newer, ch) &&
                       (ch + 1 < newer->nchunks || older->size == newer->size);
            if (same)
                continue;
            e->chunks_changed++;
            e->bytes_changed += store_chunk_len(newer, ch);
        }
        if (!comparable) {
            e->chunks_changed = newer->nchunks; /* nothing lines up: every place changed */
        } else {
            /* zero in both, yet changed: places older did not have, and a
             * last chunk whose length changed */
            for (uint64_t ch = older->nchunks; ch < newer->nchunks; ch++)
                e->chunks_changed += !store_file_chunk(newer, ch);
            uint64_t last = newer->nchunks - 1;
            if (newer->nchunks && last < older->nchunks && older->size != newer->size &&
                !store_file_chunk(newer, last) && !store_file_chunk(older, last))
                e->chunks_changed++;
        }
        if (older && older->nchunks > newer->nchunks)
            e->chunks_changed += older->nchunks - newer->nchunks;
        if (!e->name)
            rc = -ENOMEM;
        if (c <= 0)
            i++;
        if (c >= 0)
            j++;
    }
    store_layer_free(la);
    store_layer_free(lb);
    if (rc) {
        store_diff_free(v, k);
        return rc;
    }
    *out = v;
    *n = k;
    return 0;
}

void store_diff_free(store_diff_entry *d, size_t n)
{
    for (size_t i = 0; d && i < n; i++)
        free(d[i].name);
    free(d);
}
