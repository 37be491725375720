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

#define MANIFEST_MAX (256u << 20)
#define FORMAT_LINE "strata-store 1\n"

/* ---------- opening ---------- */

static int mkdir_p(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return -ENOMEM;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, 0755) < 0 && errno != EEXIST) {
            int e = -errno;
            free(p);
            return e;
        }
        *s = '/';
    }
    int rc = mkdir(p, 0755) < 0 && errno != EEXIST ? -errno : 0;
    free(p);
    return rc;
}

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
    int rc = mkdir_p(h);
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
    rc = st_read_file(fmt, 4096, &data, &len);
    if (rc == -ENOENT) {
        if ((rc = st_write_atomic(fmt, FORMAT_LINE, strlen(FORMAT_LINE), 0644)))
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
    if (!rc && (rc = st_read_file(mpath, MANIFEST_MAX, &m, &mlen)))
        rc = st_fail_errno(rc, "layer %s: manifest", id->hex);
    if (!rc) {
        unsigned char digest[32];
        char hex[65];
        st_sha256(m, mlen, digest);
        st_hex(digest, 32, hex);
        if (strcmp(hex, id->hex))
            rc = st_fail(EINVAL, "layer %s: manifest does not match its id (it hashes to %s)",
                         id->hex, hex);
    }
    if (!rc && st_manifest_parse(m, mlen, l))
        rc = st_fail(EINVAL, "layer %s: manifest is not in canonical form", id->hex);
    if (!rc && (rc = st_read_file(ipath, 1 << 20, &info, &ilen)))
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
    int rc = p ? st_read_file(p, 4096, &data, &len) : -ENOMEM;
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
    int rc = p ? st_write_atomic(p, line, STORE_ID_HEX + 1, 0644) : -ENOMEM;
    if (rc)
        rc = st_fail_errno(rc, "tag %s", name);
    free(p);
    return rc;
}

static int bad_tag(const char *name)
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
        return bad_tag(name);
    store_id id;
    int rc = st_lock(st, 1);
    if (!rc && !(rc = store_resolve(st, ref, &id)))
        rc = write_tag(st, name, &id);
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
    if (!p)
        rc = -ENOMEM;
    else if (unlink(p) < 0)
        rc = errno == ENOENT ? st_fail(ENOENT, "no tag '%s'", name) : st_fail_errno(errno, "%s", p);
    else {
        char *dir = st_printf("%s/refs/tags", st->home);
        rc = dir ? st_fsync_dir(dir) : -ENOMEM;
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

static char *instance_record_path(const store *st, const char *abs_dir)
{
    unsigned char d[32];
    char hex[65];
    st_sha256(abs_dir, strlen(abs_dir), d);
    st_hex(d, 16, hex);
    return st_printf("%s/instances/%s", st->home, hex);
}

static int write_instance(store *st, const char *abs_dir, const char *marker_dir,
                          const store_id *id)
{
    char *enc_store = st_encode(st->home), *enc_dir = st_encode(abs_dir);
    char *marker = st_printf("%s/%s", marker_dir, STORE_INSTANCE_MARKER);
    char *record = instance_record_path(st, abs_dir);
    char *mtext = st_printf(MARKER_HEAD "layer %s\nstore %s\n", id->hex, enc_store ? enc_store : "");
    char *rtext = st_printf("path %s\nlayer %s\n", enc_dir ? enc_dir : "", id->hex);
    int rc = (!enc_store || !enc_dir || !marker || !record || !mtext || !rtext) ? -ENOMEM : 0;
    /* record first: gc must never see a live clone it does not know about */
    if (!rc && (rc = st_write_atomic(record, rtext, strlen(rtext), 0644)))
        rc = st_fail_errno(rc, "%s", record);
    st_crash_point();
    if (!rc && (rc = st_write_atomic(marker, mtext, strlen(mtext), 0644)))
        rc = st_fail_errno(rc, "%s", marker);
    free(enc_store);
    free(enc_dir);
    free(marker);
    free(record);
    free(mtext);
    free(rtext);
    return rc;
}

/* parse a marker's text: its layer and whether it names this store */
static int parse_marker(const char *text, store_id *id, char **store_path)
{
    if (strncmp(text, MARKER_HEAD, strlen(MARKER_HEAD)))
        return -1;
    const char *l = strstr(text, "\nlayer "), *s = strstr(text, "\nstore ");
    if (!l || !s)
        return -1;
    char hex[65];
    if (sscanf(l + 7, "%64s", hex) != 1 || !st_id_valid(hex))
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

int store_instance_layer(store *st, const char *instance_dir, store_id *out)
{
    char *marker = st_printf("%s/%s", instance_dir, STORE_INSTANCE_MARKER), *text = NULL;
    size_t len;
    int rc = marker ? st_read_file(marker, 4096, &text, &len) : -ENOMEM;
    char *owner = NULL;
    if (rc == -ENOENT)
        rc = st_fail(ENOENT, "%s: not a strata clone (no %s file)", instance_dir,
                     STORE_INSTANCE_MARKER);
    else if (rc)
        rc = st_fail_errno(rc, "%s", marker);
    else if (parse_marker(text, out, &owner))
        rc = st_fail(EINVAL, "%s: damaged marker file", marker);
    else if (strcmp(owner, st->home))
        rc = st_fail(EINVAL, "%s: cloned from the store at %s, not %s (set STRATA_HOME)",
                     instance_dir, owner, st->home);
    free(owner);
    free(text);
    free(marker);
    return rc;
}

int st_instance_live(store *st, const char *record_text, store_id *out, char **path_out)
{
    const char *p = strncmp(record_text, "path ", 5) ? NULL : record_text + 5;
    const char *nl = p ? strchr(p, '\n') : NULL;
    if (!nl)
        return -EINVAL;
    char *enc = strndup(p, (size_t)(nl - p));
    char *path = enc ? st_decode(enc) : NULL;
    free(enc);
    if (!path)
        return -EINVAL;
    *path_out = path;
    char *marker = st_printf("%s/%s", path, STORE_INSTANCE_MARKER), *text = NULL, *owner = NULL;
    size_t len;
    int rc = marker ? st_read_file(marker, 4096, &text, &len) : -ENOMEM;
    if (!rc && (parse_marker(text, out, &owner) || strcmp(owner, st->home)))
        rc = -ENOENT; /* that directory is no longer our clone */
    free(owner);
    free(text);
    free(marker);
    return rc;
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

static void note(const store_commit_opts *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void note(const store_commit_opts *o, const char *fmt, ...)
{
    if (!o || !o->note)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    o->note(o->progress_ctx, line);
}

/* What the commit publishes besides the layer itself, under the same lock,
 * and what it leaves out. */
typedef struct {
    const char *instance_dir; /* move this clone onto the new layer, or NULL */
    const char *const *skip;  /* file names left out of the layer (a saved state's) */
    size_t nskip;
} publish_extra;

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

static int write_plain(const char *path, const st_buf *b)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
    if (fd < 0)
        return -errno;
    size_t at = 0;
    int rc = 0;
    while (at < b->n) {
        ssize_t w = write(fd, b->p + at, b->n - at);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        at += (size_t)w;
    }
    if (!rc && fsync(fd) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

static int chunk_equal(const store_chunk *a, const store_chunk *b)
{
    return a->data == b->data && (!a->data || !memcmp(a->digest, b->digest, 32));
}

static uint64_t added_bytes(const store_file *f, const store_file *base)
{
    uint64_t total = 0;
    for (size_t c = 0; c < f->nchunks; c++) {
        if (!f->chunks[c].data)
            continue;
        if (base && c < base->nchunks && chunk_equal(&f->chunks[c], &base->chunks[c]))
            continue;
        uint64_t off = (uint64_t)c * f->chunk_size;
        total += f->size - off < f->chunk_size ? f->size - off : f->chunk_size;
    }
    return total;
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
    st_buf manifest = {0}, info = {0};
    char *bundle = NULL, *layer_dir = NULL;
    int rc = scan_bundle(src_dir, o, extra, &src, &nsrc);
    if (rc)
        return rc;
    uint64_t chunks = 0;
    for (size_t i = 0; i < nsrc; i++) {
        const store_file *base = parent ? layer_find_file(parent, src[i].name) : NULL;
        uint32_t cs = o->chunk_size ? o->chunk_size : base ? base->chunk_size : STORE_DEFAULT_CHUNK;
        chunks += (src[i].size + cs - 1) / cs;
    }
    if (nsrc > ST_MAX_FILES || o->nbindings > ST_MAX_BINDINGS) {
        rc = st_fail(E2BIG, "%s: %zu files; a layer holds at most %d", src_dir, nsrc, ST_MAX_FILES);
        goto out;
    }
    if (chunks > ST_MAX_CHUNKS) {
        rc = st_fail(E2BIG, "%s: %" PRIu64 " chunks; a layer holds at most %llu (use a larger --chunk-size)",
                     src_dir, chunks, (unsigned long long)ST_MAX_CHUNKS);
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
        const store_file *base = parent ? layer_find_file(parent, src[i].name) : NULL;
        uint32_t cs = o->chunk_size ? o->chunk_size : base ? base->chunk_size : STORE_DEFAULT_CHUNK;
        char *from = st_printf("%s/%s", src_dir, src[i].name);
        char *to = st_printf("%s/%s", bundle, src[i].name);
        char *base_path = base ? store_layer_file_path(st, &parent->id, src[i].name) : NULL;
        clone_method how = CLONE_REFLINK;
        int fd = -1, base_fd = -1;
        if (!from || !to || (base && !base_path))
            rc = -ENOMEM;
        else if ((rc = clone_path(from, to, 0644, &how)))
            rc = st_fail_errno(rc, "copying %s into the store", from);
        else if ((fd = open(to, O_RDWR | O_CLOEXEC)) < 0)
            rc = st_fail_errno(errno, "%s", to);
        st_crash_point();
        if (!rc) {
            if (how != CLONE_REFLINK)
                res->reflinked = 0;
            if (base_path)
                base_fd = open(base_path, O_RDONLY | O_CLOEXEC);
            store_file *f = &l.files[l.nfiles++];
            f->name = strdup(src[i].name);
            f->mode = src[i].mode;
            st_chunk_stats stats = {0};
            if (!f->name)
                rc = -ENOMEM;
            else
                rc = st_chunk_file(fd, from, cs, base_fd, base, f, &stats, o->progress,
                                   o->progress_ctx);
            res->bytes_read += stats.bytes_read;
            res->chunks_reused += stats.chunks_reused;
            if (!rc) {
                l.bytes_added += added_bytes(f, base);
                if (fchmod(fd, 0444) < 0 || fsync(fd) < 0)
                    rc = st_fail_errno(errno, "%s", to);
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
        st_crash_point();
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
    st_sha256(manifest.p, manifest.n, digest);
    st_hex(digest, 32, res->id.hex);
    res->bytes_added = l.bytes_added;

    char *mpath = st_printf("%s/manifest", tmp.path), *ipath = st_printf("%s/info", tmp.path);
    if (!mpath || !ipath)
        rc = -ENOMEM;
    else if ((rc = write_plain(mpath, &manifest)) || (rc = write_plain(ipath, &info)))
        rc = st_fail_errno(rc, "%s", tmp.path);
    else if ((rc = st_fsync_dir(bundle)) || (rc = st_fsync_dir(tmp.path)))
        rc = st_fail_errno(rc, "%s", tmp.path);
    free(mpath);
    free(ipath);
    if (rc)
        goto out;
    st_crash_point();

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
    if (!res->existed) {
        if (rename(tmp.path, layer_dir) < 0) {
            rc = st_fail_errno(errno, "publishing %s", layer_dir);
            goto out;
        }
        st_crash_point();
        char *layers = st_printf("%s/layers", st->home);
        rc = layers ? st_fsync_dir(layers) : -ENOMEM;
        free(layers);
        if (rc) {
            rc = st_fail_errno(rc, "%s/layers", st->home);
            goto out;
        }
        st_crash_point();
    }
    if (extra && extra->instance_dir &&
        (rc = write_instance(st, extra->instance_dir, extra->instance_dir, &res->id)))
        goto out;
    st_crash_point();
    if (o->tag)
        rc = write_tag(st, o->tag, &res->id);
out:
    st_unlock(st);
    st_tmpdir_drop(&tmp);
    for (size_t i = 0; i < l.nfiles; i++) {
        free(l.files[i].name);
        free(l.files[i].chunks);
    }
    free(l.files);
    free(manifest.p);
    free(info.p);
    free(bundle);
    free(layer_dir);
    free_src(src, nsrc);
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
    if (!rc)
        rc = store_instance_layer(st, abs, &pid);
    if (!rc && !o->busy) /* never copy a disk a running VM writes */
        rc = store_busy_take(abs, "a commit in progress", &busy);
    if (!rc)
        rc = store_layer_load(st, &pid, &parent);
    if (!rc) {
        publish_extra extra = {.instance_dir = abs};
        rc = build_layer(st, abs, parent, o, &extra, res);
    }
    st_unlock(st);
    store_busy_release(&busy);
    store_layer_free(parent);
    free(abs);
    return rc;
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
    store_layer *parent = NULL, *d = NULL;
    int rc = st_lock(st, 0);
    if (!rc)
        rc = store_instance_layer(st, abs, &pid);
    if (!rc && !o->busy)
        rc = store_busy_take(abs, "a commit in progress", &busy);
    if (!rc)
        rc = store_layer_load(st, &pid, &parent);
    if (!rc) {
        store_commit_opts od = *o;
        od.tag = NULL;
        od.bindings = NULL;
        od.nbindings = 0;
        publish_extra extra = {.instance_dir = abs, .skip = state_files, .nskip = nstate};
        rc = build_layer(st, abs, parent, &od, &extra, disk);
    }
    st_unlock(st);
    if (!rc)
        rc = st_lock(st, 0);
    if (!rc)
        rc = store_layer_load(st, &disk->id, &d);
    if (!rc) {
        publish_extra extra = {.instance_dir = NULL}; /* the instance stays on D */
        rc = build_layer(st, abs, d, o, &extra, state);
    }
    st_unlock(st);
    store_busy_release(&busy);
    store_layer_free(parent);
    store_layer_free(d);
    free(abs);
    return rc;
}

static int clone_layer(store *st, const char *ref, const char *dir, int *reflinked, int with_state)
{
    struct stat s;
    if (lstat(dir, &s) == 0)
        return st_fail(EEXIST, "%s already exists; clone makes a new directory", dir);
    char *copy = strdup(dir), *leaf_copy = strdup(dir);
    if (!copy || !leaf_copy) {
        free(copy);
        free(leaf_copy);
        return -ENOMEM;
    }
    char *parent = realpath(dirname(copy), NULL);
    const char *leaf = basename(leaf_copy);
    char *abs = NULL, *tmp = NULL;
    store_layer *l = NULL;
    store_id id, base;
    int *state_file = NULL; /* per file of l: 1 if it is saved-state data */
    int rc = 0;
    if (!parent) {
        rc = st_fail_errno(errno, "%s", dir);
        goto out;
    }
    if (!st_name_valid(leaf)) {
        rc = st_fail(EINVAL, "%s: not a directory name a clone can take", dir);
        goto out;
    }
    int same = clone_same_volume(parent, st->home);
    if (same < 0) {
        rc = st_fail_errno(same, "%s", parent);
        goto out;
    }
    if (!same) {
        rc = st_fail(EXDEV,
                     "%s is on another volume than the store %s; clones can't cross volumes "
                     "(put the clone beside the store, or set STRATA_HOME to a store on that "
                     "volume)",
                     dir, st->home);
        goto out;
    }
    abs = st_printf("%s/%s", strcmp(parent, "/") ? parent : "", leaf);
    tmp = st_printf("%s/.%s.strata-tmp-%d", parent, leaf, (int)getpid());
    if (!abs || !tmp) {
        rc = -ENOMEM;
        goto out;
    }
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
    st_rm_rf(tmp); /* our pid's, so a crashed clone's: no one else's work */
    if (mkdir(tmp, 0755) < 0) {
        rc = st_fail_errno(errno, "%s", tmp);
        goto out;
    }
    int all_reflinked = 1;
    for (size_t i = 0; i < l->nfiles && !rc; i++) {
        if (state_file[i])
            continue;
        char *from = store_layer_file_path(st, &id, l->files[i].name);
        char *to = st_printf("%s/%s", tmp, l->files[i].name);
        clone_method how;
        if (!from || !to)
            rc = -ENOMEM;
        else if ((rc = clone_path(from, to, l->files[i].mode, &how)))
            rc = st_fail_errno(rc, "cloning %s into %s", l->files[i].name, dir);
        else if (how != CLONE_REFLINK)
            all_reflinked = 0;
        free(from);
        free(to);
        st_crash_point();
    }
    /* durable before it is visible; syncing after the last clone lets the
     * first fsync's journal flush cover the others */
    for (size_t i = 0; i < l->nfiles && !rc; i++) {
        if (state_file[i])
            continue;
        char *p = st_printf("%s/%s", tmp, l->files[i].name);
        int fd = p ? open(p, O_RDONLY | O_CLOEXEC) : -1;
        if (fd < 0 || fsync(fd) < 0)
            rc = st_fail_errno(errno, "%s", p ? p : tmp);
        if (fd >= 0)
            close(fd);
        free(p);
    }
    if (!rc)
        rc = write_instance(st, abs, tmp, &base);
    if (!rc && with_state && l->nbindings)
        rc = st_mark_saved_state(tmp, &id);
    if (!rc && (rc = st_fsync_dir(tmp)))
        rc = st_fail_errno(rc, "%s", tmp);
    if (!rc && rename(tmp, abs) < 0)
        rc = st_fail_errno(errno, "%s", dir);
    if (!rc && (rc = st_fsync_dir(parent)))
        rc = st_fail_errno(rc, "%s", parent);
    if (rc)
        st_rm_rf(tmp);
    else if (reflinked)
        *reflinked = all_reflinked;
out:
    st_unlock(st);
    store_layer_free(l);
    free(state_file);
    free(parent);
    free(abs);
    free(tmp);
    free(copy);
    free(leaf_copy);
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
        for (size_t ch = 0; ch < newer->nchunks; ch++) {
            int same = older && older->chunk_size == newer->chunk_size && ch < older->nchunks &&
                       chunk_equal(&older->chunks[ch], &newer->chunks[ch]) &&
                       (ch + 1 < newer->nchunks || older->size == newer->size);
            if (same)
                continue;
            uint64_t off = (uint64_t)ch * newer->chunk_size;
            e->chunks_changed++;
            if (newer->chunks[ch].data || (older && ch < older->nchunks && older->chunks[ch].data))
                e->bytes_changed +=
                    newer->size - off < newer->chunk_size ? newer->size - off : newer->chunk_size;
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
