/* Errors, listing and removing directories, temporary directories and text
 * encoding. */
#define _GNU_SOURCE
#include "internal.h"
#include "../base/platform.h"
#include "../clone/clone.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *store_error(void)
{
    return err_last()->message;
}

char *st_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

char *st_printf(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

int st_rm_rf(const char *path)
{
    struct stat s;
    if (lstat(path, &s) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISDIR(s.st_mode))
        return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *sub = st_printf("%s/%s", path, e->d_name);
        if (!sub) {
            rc = -ENOMEM;
            break;
        }
        int r = st_rm_rf(sub);
        if (r && !rc)
            rc = r;
        free(sub);
    }
    closedir(d);
    if (rmdir(path) < 0 && !rc)
        rc = -errno;
    return rc;
}

uint64_t st_allocated(const char *path)
{
    struct stat s;
    if (lstat(path, &s) < 0)
        return 0;
    uint64_t total = (uint64_t)s.st_blocks * 512;
    if (!S_ISDIR(s.st_mode))
        return total;
    DIR *d = opendir(path);
    if (!d)
        return total;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *sub = st_printf("%s/%s", path, e->d_name);
        if (sub)
            total += st_allocated(sub);
        free(sub);
    }
    closedir(d);
    return total;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int st_list_dir(const char *path, char ***out, size_t *n)
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
    st_free_names(v, cnt);
    return -ENOMEM;
}

int st_list_home(const store *st, const char *sub, char ***out, size_t *n)
{
    char *dir = st_printf("%s/%s", st->home, sub);
    int rc = dir ? st_list_dir(dir, out, n) : -ENOMEM;
    free(dir);
    return rc ? st_fail_errno(rc, "%s/%s", st->home, sub) : 0;
}

void st_free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int st_fault(const char *point)
{
    const char *at = test_hooks_get()->fail_at;
    return at && !strcmp(at, point) ? -ENOSPC : 0;
}

int st_tmpdir_make(store *st, const char *kind, st_tmpdir *t)
{
    memset(t, 0, sizeof *t);
    t->lock_fd = -1;
    unsigned seed = (unsigned)getpid() ^ (unsigned)time(NULL) ^ (unsigned)(uintptr_t)t;
    for (int tries = 0; tries < 100; tries++) {
        seed = seed * 1103515245u + 12345u;
        free(t->path);
        free(t->lock_path);
        t->path = st_printf("%s/tmp/%s-%d-%08x", st->home, kind, (int)getpid(), seed);
        t->lock_path = st_printf("%s.lock", t->path);
        if (!t->path || !t->lock_path)
            return -ENOMEM;
        /* The lock is taken under a dot name and then renamed into place,
         * so gc never finds an unlocked lock file of live work. */
        char *fresh = st_printf("%s/tmp/.%s-%d-%08x.new", st->home, kind, (int)getpid(), seed);
        if (!fresh)
            return -ENOMEM;
        t->lock_fd = open(fresh, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (t->lock_fd < 0) {
            int e = errno;
            free(fresh);
            if (e == EEXIST)
                continue;
            return st_fail_errno(e, "%s/tmp", st->home);
        }
        int linked = 0;
        if (flock(t->lock_fd, LOCK_EX) < 0 || !(linked = link(fresh, t->lock_path) == 0) ||
            mkdir(t->path, 0755) < 0) {
            int e = errno;
            if (linked)
                unlink(t->lock_path);
            close(t->lock_fd);
            unlink(fresh);
            free(fresh);
            t->lock_fd = -1;
            if (e == EEXIST)
                continue;
            return st_fail_errno(e, "%s", t->path);
        }
        unlink(fresh);
        free(fresh);
        return 0;
    }
    return st_fail(EEXIST, "%s/tmp: could not make a temporary directory", st->home);
}

int st_tmpdir_named(store *st, const char *name, st_tmpdir *t, int *existed)
{
    memset(t, 0, sizeof *t);
    t->path = st_printf("%s/tmp/%s", st->home, name);
    t->lock_path = st_printf("%s.lock", t->path ? t->path : "");
    t->lock_fd = -1;
    if (!t->path || !t->lock_path)
        return -ENOMEM;
    int fd = open(t->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return st_fail_errno(errno, "%s", t->lock_path);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(fd);
        return e == EWOULDBLOCK ? -EBUSY : st_fail_errno(e, "%s", t->lock_path);
    }
    t->lock_fd = fd;
    futimens(fd, NULL); /* gc keeps it for its grace period from now */
    *existed = mkdir(t->path, 0755) < 0 && errno == EEXIST;
    if (!*existed && access(t->path, F_OK) < 0)
        return st_fail_errno(errno, "%s", t->path);
    return 0;
}

void st_tmpdir_keep(st_tmpdir *t)
{
    if (t->lock_fd >= 0) {
        futimens(t->lock_fd, NULL);
        close(t->lock_fd);
    }
    free(t->path);
    free(t->lock_path);
    memset(t, 0, sizeof *t);
    t->lock_fd = -1;
}

void st_tmpdir_drop(st_tmpdir *t)
{
    if (t->path)
        st_rm_rf(t->path);
    if (t->lock_fd >= 0) {
        unlink(t->lock_path);
        close(t->lock_fd);
    }
    free(t->path);
    free(t->lock_path);
    memset(t, 0, sizeof *t);
    t->lock_fd = -1;
}

int st_id_valid(const char *hex)
{
    if (strlen(hex) != STORE_ID_HEX)
        return 0;
    for (const char *p = hex; *p; p++)
        if (!strchr("0123456789abcdef", *p))
            return 0;
    return 1;
}

static int plain(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '+' || c == '-';
}

char *st_encode(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1), *o = out;
    if (!out)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (plain(*p)) {
            *o++ = (char)*p;
        } else {
            static const char digits[] = "0123456789ABCDEF";
            *o++ = '%';
            *o++ = digits[*p >> 4];
            *o++ = digits[*p & 15];
        }
    }
    *o = 0;
    return out;
}

char *st_decode(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(n + 1), *o = out;
    if (!out)
        return NULL;
    for (const char *p = s; *p; p++) {
        if (*p != '%') {
            if (!plain((unsigned char)*p))
                goto bad;
            *o++ = *p;
            continue;
        }
        int v = 0;
        for (int k = 1; k <= 2; k++) {
            char c = p[k];
            int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
            if (d < 0)
                goto bad;
            v = v * 16 + d;
        }
        if (v == 0 || plain((unsigned char)v))
            goto bad; /* NUL, or an escape where the plain byte is canonical */
        *o++ = (char)v;
        p += 2;
    }
    *o = 0;
    return out;
bad:
    free(out);
    return NULL;
}

