/* base/file.h: the atomic file and the small file helpers. */
#define _GNU_SOURCE
#include "file.h"
#include "crash.h"
#include "error.h"
#include "platform.h"
#include "testhooks.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------- fsync ---------- */

int file_fsync_fd(int fd)
{
    return os_full_fsync(fd);
}

int file_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
    const char *p = buf;
    while (len) {
        ssize_t w = pwrite(fd, p, len, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        p += w, len -= (size_t)w, off += (uint64_t)w;
    }
    return 0;
}

/* file_pread_all, or with zerofill file_pread_zerofill */
static int pread_range(int fd, void *buf, size_t len, uint64_t off, int zerofill)
{
    char *p = buf;
    while (len) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (!r) { /* the end of the file */
            if (!zerofill)
                return -EIO;
            memset(p, 0, len);
            return 0;
        }
        p += r, len -= (size_t)r, off += (uint64_t)r;
    }
    return 0;
}

int file_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
    return pread_range(fd, buf, len, off, 0);
}

int file_pread_zerofill(int fd, void *buf, size_t len, uint64_t off)
{
    return pread_range(fd, buf, len, off, 1);
}

int file_fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return err_set_errno(ERR_BASE, errno, "%s", path);
    int rc = os_full_fsync(fd);
    close(fd);
    return rc ? err_set_errno(ERR_BASE, rc, "fsync %s", path) : 0;
}

/* the directory part of path ("." for a bare name), malloc'd */
static char *parent_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = 0;
    }
    return d;
}

int file_fsync_parent(const char *path)
{
    char *dir = parent_of(path);
    if (!dir)
        return err_oom(ERR_BASE);
    int rc = file_fsync_path(dir);
    free(dir);
    return rc;
}

/* ---------- rename ---------- */

int file_rename_noreplace(const char *from, const char *to)
{
    /* a test's way into the moment between the caller's check and the
     * rename: create what it names, as a racing process could */
    const char *race = test_hooks_get()->race_rename;
    if (race)
        mkdir(race, 0755);
    int rc = os_rename_noreplace(from, to);
    if (rc == -EOPNOTSUPP) {
        /* no atomic way on this filesystem: check, then rename (a
         * non-empty directory is still never replaced: ENOTEMPTY) */
        struct stat st;
        rc = lstat(to, &st) == 0 ? -EEXIST : rename(from, to) < 0 ? -errno : 0;
    }
    return rc ? err_set_errno(ERR_BASE, rc, "rename %s to %s", from, to) : 0;
}

/* ---------- the atomic file ---------- */

static void finish(atomic_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    free(f->path);
    free(f->tmp);
    f->path = f->tmp = NULL;
}

int atomic_file_open(atomic_file *f, const char *path, mode_t mode, unsigned flags)
{
    *f = (atomic_file){.fd = -1, .flags = flags};
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    int dirlen = slash ? (int)(slash - path) + 1 : 0;
    int pid = (int)getpid();
    f->path = strdup(path);
    if (!f->path || (flags & ATOMIC_FILE_KEEP_ENDING
                         ? asprintf(&f->tmp, "%.*s.tmp-%d.%s", dirlen, path, pid, name)
                         : asprintf(&f->tmp, "%.*s.%s.tmp-%d", dirlen, path, name, pid)) < 0) {
        f->tmp = NULL;
        finish(f);
        return err_oom(ERR_BASE);
    }
    unlink(f->tmp); /* a dead writer's, with our pid; never follow a planted link */
    if (flags & ATOMIC_FILE_FOREIGN)
        return 0;
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (f->fd < 0) {
        int rc = err_set_errno(ERR_BASE, errno, "%s", f->tmp);
        finish(f);
        return rc;
    }
    return 0;
}

int atomic_file_write(atomic_file *f, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(f->fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return err_set_errno(ERR_BASE, errno, "writing %s", f->tmp);
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* fsync, then the crash tests' first point, then rename (no-replace if asked) */
static int durable_rename(int fd, const char *tmp, const char *path, unsigned flags)
{
    int rc = os_full_fsync(fd);
    if (rc)
        return err_set_errno(ERR_BASE, rc, "fsync %s", tmp);
    crash_point();
    if (flags & ATOMIC_FILE_NO_REPLACE)
        return file_rename_noreplace(tmp, path);
    if (rename(tmp, path) < 0)
        return err_set_errno(ERR_BASE, errno, "rename %s to %s", tmp, path);
    return 0;
}

int file_publish(int fd, const char *tmp, const char *path)
{
    int rc = durable_rename(fd, tmp, path, 0);
    if (rc)
        return rc;
    crash_point();
    return file_fsync_parent(path);
}

int atomic_file_commit(atomic_file *f)
{
    if (!f->tmp)
        return err_set(ERR_BASE, EINVAL, "an atomic file committed twice");
    /* a foreign writer's file: opened now, to fsync what it wrote */
    if (f->fd < 0 && (f->fd = open(f->tmp, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
        int rc = err_set_errno(ERR_BASE, errno, "%s", f->tmp);
        atomic_file_abort(f);
        return rc;
    }
    int rc = durable_rename(f->fd, f->tmp, f->path, f->flags);
    if (rc) {
        atomic_file_abort(f);
        return rc;
    }
    if (close(f->fd) < 0) /* after the fsync: nothing of the file's is left to fail */
        rc = err_set_errno(ERR_BASE, errno, "closing %s", f->path);
    f->fd = -1;
    crash_point();
    if (!rc)
        rc = file_fsync_parent(f->path);
    finish(f);
    return rc;
}

void atomic_file_abort(atomic_file *f)
{
    if (f->tmp)
        unlink(f->tmp);
    finish(f);
}

int atomic_file_write_all(const char *path, const void *data, size_t len, mode_t mode,
                          unsigned flags)
{
    atomic_file f;
    int rc = atomic_file_open(&f, path, mode, flags);
    if (rc)
        return rc;
    if ((rc = atomic_file_write(&f, data, len))) {
        atomic_file_abort(&f);
        return rc;
    }
    return atomic_file_commit(&f);
}

/* ---------- reading, making directories ---------- */

static int read_fd(int fd, const char *path, size_t max, char **data, size_t *len)
{
    struct stat s;
    if (fstat(fd, &s) < 0)
        return err_set_errno(ERR_BASE, errno, "%s", path);
    if (!S_ISREG(s.st_mode))
        return err_set(ERR_BASE, EINVAL, "%s: not a regular file", path);
    if ((uint64_t)s.st_size > max)
        return err_set(ERR_BASE, EFBIG, "%s: larger than %zu bytes", path, max);
    char *buf = malloc((size_t)s.st_size + 1);
    if (!buf)
        return err_oom(ERR_BASE);
    size_t got = 0;
    while (got < (size_t)s.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)s.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break; /* it shrank meanwhile: what there was */
        got += (size_t)r;
    }
    buf[got] = 0;
    *data = buf;
    *len = got;
    return 0;
}

int file_read_all(const char *path, size_t max, char **data, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return err_set_errno(ERR_BASE, errno, "%s", path);
    int rc = read_fd(fd, path, max, data, len);
    close(fd);
    return rc;
}

int file_mkdir_p(const char *path, mode_t mode)
{
    char *p = strdup(path);
    if (!p)
        return err_oom(ERR_BASE);
    int rc = 0;
    for (char *s = p + 1; *s && !rc; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, mode) < 0 && errno != EEXIST)
            rc = err_set_errno(ERR_BASE, errno, "mkdir %s", p);
        *s = '/';
    }
    if (!rc && mkdir(p, mode) < 0 && errno != EEXIST)
        rc = err_set_errno(ERR_BASE, errno, "mkdir %s", p);
    free(p);
    return rc;
}
