/* base/platform.h on Linux. The Makefile builds this file only there. */
#define _GNU_SOURCE
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <linux/falloc.h>
#include <linux/fiemap.h>
#include <linux/fs.h>

int os_pipe_cloexec(int fds[2])
{
    return pipe2(fds, O_CLOEXEC) < 0 ? -errno : 0;
}

int os_socket_cloexec(int domain, int type, int nonblock)
{
    int fd = socket(domain, type | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    return fd < 0 ? -errno : fd;
}

ssize_t os_send_nosignal(int fd, const void *buf, size_t n)
{
    return send(fd, buf, n, MSG_NOSIGNAL);
}

int os_full_fsync(int fd)
{
    return fsync(fd) < 0 ? -errno : 0;
}

int os_rename_noreplace(const char *from, const char *to)
{
    /* renameat2 is in glibc from 2.28 (2018) */
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    return errno == EINVAL || errno == ENOSYS || errno == ENOTSUP ? -EOPNOTSUPP : -errno;
}

void os_write_back_start(int fd, uint64_t off, uint64_t len)
{
    (void)sync_file_range(fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE);
}

void os_write_back_wait(int fd, uint64_t off, uint64_t len)
{
    (void)sync_file_range(fd, (off_t)off, (off_t)len,
                          SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
}

void os_read_hint_give(int fd, uint64_t off, uint64_t len, os_read_hint hint)
{
    int advice = hint == OS_READ_SEQUENTIAL ? POSIX_FADV_SEQUENTIAL : POSIX_FADV_WILLNEED;
    (void)posix_fadvise(fd, (off_t)off, (off_t)len, advice);
}

int os_read_lease_take(int fd)
{
    return fcntl(fd, F_SETSIG, SIGURG) == 0 && fcntl(fd, F_SETLEASE, F_RDLCK) == 0;
}

int os_read_lease_held(int fd)
{
    return fcntl(fd, F_GETLEASE) == F_RDLCK;
}

struct timespec os_stat_mtime(const struct stat *st)
{
    return st->st_mtim;
}

struct timespec os_stat_ctime(const struct stat *st)
{
    return st->st_ctim;
}

int os_self_exe(char *out, size_t n)
{
    ssize_t got = readlink("/proc/self/exe", out, n);
    if (got < 0)
        return -errno;
    if ((size_t)got >= n)
        return -ENAMETOOLONG;
    out[got] = 0;
    return 0;
}

int os_boot_id(char *out, size_t n)
{
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (!f)
        return -errno;
    int rc = fgets(out, (int)n, f) ? 0 : -EIO;
    fclose(f);
    out[strcspn(out, "\n")] = 0;
    return rc;
}

int os_thread_background(void)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    /* ten steps nicer than now (at most 19); threads made later by this one
     * start with its nice and I/O priority */
    errno = 0;
    int now = getpriority(PRIO_PROCESS, (id_t)tid);
    if (now == -1 && errno)
        return -errno;
    if (setpriority(PRIO_PROCESS, (id_t)tid, now + 10 > 19 ? 19 : now + 10) < 0)
        return -errno;
    /* ioprio_set(IOPRIO_WHO_PROCESS, tid, best-effort class 2, level 7): no libc wrapper */
    if (syscall(SYS_ioprio_set, 1, tid, (2 << 13) | 7) < 0)
        return -errno;
    return 0;
}

int os_pid_is_zombie(int pid)
{
    char path[64], stat[256] = "";
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    if (!fgets(stat, sizeof stat, f))
        stat[0] = 0;
    fclose(f);
    /* "PID (COMM) STATE ...": COMM may hold spaces and parentheses */
    const char *paren = strrchr(stat, ')');
    return paren && paren[1] == ' ' && paren[2] == 'Z';
}

void os_build_describe(char *out, size_t n)
{
    struct utsname u;
    if (uname(&u) == 0)
        snprintf(out, n, "%s %s", u.sysname, u.release);
    else if (n)
        out[0] = 0;
}

void os_product_version(char *out, size_t n)
{
    if (n)
        out[0] = 0; /* not macOS */
}

int os_is_macos(void)
{
    return 0;
}

const char *os_library_file(const char *stem, int major, char *out, size_t n)
{
    snprintf(out, n, "lib%s.so.%d", stem, major);
    return out;
}

int os_clone_file(const char *src, const char *dst)
{
    (void)src, (void)dst;
    return -EOPNOTSUPP;
}

int os_reflink_fd(int src_fd, int dst_fd)
{
    return ioctl(dst_fd, FICLONE, src_fd) < 0 ? -errno : 0;
}

int os_reflink_range(int src_fd, int dst_fd, uint64_t off, uint64_t len)
{
    if (len == 0)
        return -EINVAL;
    struct file_clone_range r = {.src_fd = src_fd, .src_offset = off, .src_length = len,
                                 .dest_offset = off};
    return ioctl(dst_fd, FICLONERANGE, &r) < 0 ? -errno : 0;
}

int64_t os_copy_range(int src_fd, int dst_fd, uint64_t off, uint64_t len)
{
    loff_t in = (loff_t)off, out = (loff_t)off;
    size_t want = len > (1u << 30) ? (1u << 30) : (size_t)len;
    for (;;) {
        ssize_t n = copy_file_range(src_fd, &in, dst_fd, &out, want, 0);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        /* not between these files or on this kernel: read and write */
        if (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS ||
            errno == EBADF || errno == ETXTBSY)
            return -EOPNOTSUPP;
        return -errno;
    }
}

int os_punch_hole(int fd, uint64_t off, uint64_t len)
{
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0)
        return -errno;
    return 0;
}

/* one FIEMAP batch from *start: its runs to visit; *last once the file's
 * last extent was seen */
static int fiemap_batch(int fd, struct fiemap *fm, unsigned batch, uint64_t *start, int *last,
                        os_extent_visit visit, void *ctx)
{
    memset(fm, 0, sizeof *fm);
    fm->fm_start = *start;
    fm->fm_length = ~0ULL - *start;
    fm->fm_flags = FIEMAP_FLAG_SYNC; /* dirty pages have no address yet */
    fm->fm_extent_count = batch;
    if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0)
        return errno == ENOTTY || errno == EINVAL ? -EOPNOTSUPP : -errno;
    if (fm->fm_mapped_extents == 0)
        *last = 1;
    const uint32_t unsure = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC |
                            FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_DATA_TAIL |
                            FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_DATA_ENCRYPTED;
    for (uint32_t i = 0; i < fm->fm_mapped_extents; i++) {
        const struct fiemap_extent *x = &fm->fm_extents[i];
        int rc = visit(ctx, x->fe_logical, x->fe_physical, x->fe_length,
                       (x->fe_flags & unsure) != 0);
        if (rc)
            return rc;
        *start = x->fe_logical + x->fe_length;
        if (x->fe_flags & FIEMAP_EXTENT_LAST)
            *last = 1;
    }
    return 0;
}

int os_extent_map_walk(int fd, os_extent_visit visit, void *ctx)
{
    enum { BATCH = 256 };
    struct fiemap *fm = calloc(1, sizeof *fm + BATCH * sizeof(struct fiemap_extent));
    if (!fm)
        return -ENOMEM;
    uint64_t start = 0;
    int last = 0, rc = 0;
    while (!last && !rc)
        rc = fiemap_batch(fd, fm, BATCH, &start, &last, visit, ctx);
    free(fm);
    return rc;
}
