/* base/platform.h on macOS. The Makefile builds this file only there;
 * `make check-macos` compiles it against macOS's libc headers elsewhere. */
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <mach-o/dyld.h>
#include <pthread.h>
#include <pthread/qos.h>
#include <stdio.h>
#include <string.h>
#include <sys/attr.h>
#include <sys/clonefile.h>
#include <sys/socket.h>
#include <sys/sysctl.h>
#include <unistd.h>

/* macOS has no pipe2 and no SOCK_CLOEXEC: the flags are set just after */
static int set_cloexec(int fd, int nonblock)
{
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return -errno;
    if (nonblock) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
            return -errno;
    }
    return 0;
}

int os_pipe_cloexec(int fds[2])
{
    if (pipe(fds) < 0)
        return -errno;
    int rc = set_cloexec(fds[0], 0);
    if (!rc)
        rc = set_cloexec(fds[1], 0);
    if (rc) {
        close(fds[0]);
        close(fds[1]);
    }
    return rc;
}

int os_socket_cloexec(int domain, int type, int nonblock)
{
    int fd = socket(domain, type, 0);
    if (fd < 0)
        return -errno;
    int rc = set_cloexec(fd, nonblock);
    if (rc) {
        close(fd);
        return rc;
    }
    return fd;
}

ssize_t os_send_nosignal(int fd, const void *buf, size_t n)
{
    /* no MSG_NOSIGNAL here: the socket option, set again each time since
     * it costs one call and keeps the function free of state */
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
    return send(fd, buf, n, 0);
}

int os_full_fsync(int fd)
{
    /* fsync leaves the data in the drive's cache; F_FULLFSYNC flushes it
     * (SQLite's fullfsync). Some filesystems refuse it: fsync then. */
    if (fcntl(fd, F_FULLFSYNC) == 0)
        return 0;
    return fsync(fd) < 0 ? -errno : 0;
}

int os_rename_noreplace(const char *from, const char *to)
{
    if (renamex_np(from, to, RENAME_EXCL) == 0)
        return 0;
    return errno == EINVAL || errno == ENOTSUP ? -EOPNOTSUPP : -errno;
}

void os_write_back_start(int fd, uint64_t off, uint64_t len)
{
    (void)fd, (void)off, (void)len; /* no such call: F_FULLFSYNC writes it all later */
}

void os_write_back_wait(int fd, uint64_t off, uint64_t len)
{
    (void)fd, (void)off, (void)len; /* as os_write_back_start */
}

void os_read_hint_give(int fd, uint64_t off, uint64_t len, os_read_hint hint)
{
    if (hint == OS_READ_SEQUENTIAL) {
        (void)fcntl(fd, F_RDAHEAD, 1);
        return;
    }
    /* F_RDADVISE takes an int count: a longer range is advised in part */
    struct radvisory r = {.ra_offset = (off_t)off,
                          .ra_count = len > (uint64_t)INT32_MAX ? INT32_MAX : (int)len};
    (void)fcntl(fd, F_RDADVISE, &r);
}

int os_read_lease_take(int fd)
{
    (void)fd; /* macOS has no leases: nothing is hashed ahead */
    return 0;
}

int os_read_lease_held(int fd)
{
    (void)fd;
    return 0;
}

struct timespec os_stat_mtime(const struct stat *st)
{
    return st->st_mtimespec;
}

struct timespec os_stat_ctime(const struct stat *st)
{
    return st->st_ctimespec;
}

int os_self_exe(char *out, size_t n)
{
    uint32_t size = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
    return _NSGetExecutablePath(out, &size) == 0 ? 0 : -ENAMETOOLONG;
}

int os_boot_id(char *out, size_t n)
{
    size_t len = n;
    if (sysctlbyname("kern.bootsessionuuid", out, &len, NULL, 0) < 0)
        return -errno;
    return 0;
}

int os_thread_background(void)
{
    /* utility QoS lowers the thread's CPU and I/O priority together;
     * threads it creates inherit it */
    int rc = pthread_set_qos_class_self_np(QOS_CLASS_UTILITY, 0);
    return rc ? -rc : 0;
}

int os_pid_is_zombie(int pid)
{
    int mib[4] = {CTL_KERN, KERN_PROC, KERN_PROC_PID, pid};
    struct kinfo_proc kp;
    size_t len = sizeof kp;
    if (sysctl(mib, 4, &kp, &len, NULL, 0) < 0 || len == 0)
        return 0;
    return kp.kp_proc.p_stat == SZOMB;
}

void os_build_describe(char *out, size_t n)
{
    size_t len = n;
    if (sysctlbyname("kern.osversion", out, &len, NULL, 0) < 0 && n)
        out[0] = 0;
}

void os_product_version(char *out, size_t n)
{
    size_t len = n;
    if (sysctlbyname("kern.osproductversion", out, &len, NULL, 0) < 0 && n)
        out[0] = 0;
}

int os_is_macos(void)
{
    return 1;
}

const char *os_library_file(const char *stem, int major, char *out, size_t n)
{
    snprintf(out, n, "lib%s.%d.dylib", stem, major);
    return out;
}

int os_clone_file(const char *src, const char *dst)
{
    if (clonefile(src, dst, CLONE_NOFOLLOW | CLONE_NOOWNERCOPY) == 0)
        return 0;
    return errno == EEXIST ? -EEXIST : -EOPNOTSUPP;
}

int os_reflink_fd(int src_fd, int dst_fd)
{
    /* fclonefileat makes a new file; there is no clone into an open one */
    (void)src_fd, (void)dst_fd;
    return -EOPNOTSUPP;
}

int os_reflink_range(int src_fd, int dst_fd, uint64_t off, uint64_t len)
{
    (void)src_fd, (void)dst_fd, (void)off, (void)len;
    return -EOPNOTSUPP;
}

int64_t os_copy_range(int src_fd, int dst_fd, uint64_t off, uint64_t len)
{
    (void)src_fd, (void)dst_fd, (void)off, (void)len;
    return -EOPNOTSUPP;
}

int os_punch_hole(int fd, uint64_t off, uint64_t len)
{
    /* APFS wants block-aligned holes; the store only punches whole chunks */
    fpunchhole_t p = {.fp_flags = 0, .reserved = 0, .fp_offset = (off_t)off,
                      .fp_length = (off_t)len};
    return fcntl(fd, F_PUNCHHOLE, &p) < 0 ? -errno : 0;
}

/* the runs of one data region [d, h): where each lives on the device */
static int map_region(int fd, uint64_t d, uint64_t h, os_extent_visit visit, void *ctx)
{
    while (d < h) {
        struct log2phys l = {.l2p_flags = 0, .l2p_contigbytes = (off_t)(h - d),
                             .l2p_devoffset = (off_t)d};
        if (fcntl(fd, F_LOG2PHYS_EXT, &l) < 0 || l.l2p_contigbytes <= 0)
            return -EOPNOTSUPP; /* any refusal is "no map" */
        uint64_t n = (uint64_t)l.l2p_contigbytes;
        if (n > h - d)
            n = h - d;
        int rc = visit(ctx, d, (uint64_t)l.l2p_devoffset, n, 0);
        if (rc)
            return rc;
        d += n;
    }
    return 0;
}

int os_extent_map_walk(int fd, os_extent_visit visit, void *ctx)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    fsync(fd); /* dirty pages have no address yet */
    off_t off = 0;
    while (off < st.st_size) {
        off_t d = lseek(fd, off, SEEK_DATA);
        if (d < 0)
            return errno == ENXIO ? 0 : -EOPNOTSUPP;
        off_t h = lseek(fd, d, SEEK_HOLE);
        if (h < 0)
            return -EOPNOTSUPP;
        if (h > st.st_size)
            h = st.st_size;
        int rc = map_region(fd, (uint64_t)d, (uint64_t)h, visit, ctx);
        if (rc)
            return rc;
        off = h;
    }
    return 0;
}
