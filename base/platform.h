/*
 * base/platform.h: the one seam between strata and its operating system.
 *
 * Every call that Linux and macOS spell differently is here, implemented
 * once per platform: base/platform_linux.c and base/platform_macos.c, of
 * which the Makefile builds the one for the host. No other product file
 * tests __linux__ or __APPLE__; a Linux-only call anywhere else fails
 * `make check-macos`, which compiles every product file against macOS's
 * own libc headers.
 *
 * Conventions: a function returning int returns 0 (or a count, where said)
 * on success and a negative errno value on failure; none prints. Where a
 * platform has no such thing, the call says so with -EOPNOTSUPP, and the
 * caller has a portable way round it (its comment says which).
 */
#ifndef STRATA_BASE_PLATFORM_H
#define STRATA_BASE_PLATFORM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

/* ---------- file descriptors ---------- */

/*
 * pipe(2) with both ends close-on-exec. Linux sets the flag atomically
 * (pipe2); macOS has no pipe2, so it is set just after, and a fork in
 * another thread in between could inherit the pipe: strata forks only from
 * the thread that makes its pipes.
 */
int os_pipe_cloexec(int fds[2]);

/*
 * socket(2) close-on-exec, and non-blocking if nonblock is non-zero: type
 * is SOCK_STREAM or SOCK_DGRAM alone (macOS has no SOCK_CLOEXEC or
 * SOCK_NONBLOCK flags to or into it). Returns the fd, or -errno.
 */
int os_socket_cloexec(int domain, int type, int nonblock);

/*
 * send(2) on a connected socket that never raises SIGPIPE when the peer
 * has gone (EPIPE instead): MSG_NOSIGNAL on Linux, SO_NOSIGPIPE on macOS,
 * which has no MSG_NOSIGNAL. Returns what send returns, errno set.
 */
ssize_t os_send_nosignal(int fd, const void *buf, size_t n);

/* ---------- durability ---------- */

/*
 * Make what fd holds durable against a power cut: F_FULLFSYNC on macOS,
 * where fsync(2) leaves data in the drive's cache (fsync when the
 * filesystem refuses F_FULLFSYNC), fsync(2) on Linux. Works on directory
 * fds too.
 */
int os_full_fsync(int fd);

/*
 * rename(2) that never replaces: -EEXIST if `to` exists. Linux:
 * renameat2(RENAME_NOREPLACE); macOS: renamex_np(RENAME_EXCL).
 * -EOPNOTSUPP where the filesystem or libc has no atomic way: the caller
 * then checks and renames.
 */
int os_rename_noreplace(const char *from, const char *to);

/*
 * Start writing fd's dirty pages in [off, off+len) back to the disk
 * without waiting for it (len 0: to the end). A hint: Linux's
 * sync_file_range(SYNC_FILE_RANGE_WRITE); nothing on macOS, which has no
 * such call (its F_FULLFSYNC later does the whole write).
 */
void os_write_back_start(int fd, uint64_t off, uint64_t len);

/*
 * Wait until fd's pages in [off, off+len) are on the disk, writing those
 * still dirty (len 0: to the end), without the journal commit an fsync
 * makes: a writer pacing itself to the disk. Nothing durable is promised.
 * Linux: sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER); nothing on
 * macOS (see os_write_back_start).
 */
void os_write_back_wait(int fd, uint64_t off, uint64_t len);

/* ---------- reading ahead ---------- */

typedef enum {
    OS_READ_SEQUENTIAL, /* the whole file, in order: read ahead further */
    OS_READ_SOON,       /* this range will be read soon: start reading it */
} os_read_hint;

/*
 * Tell the kernel how fd's [off, off+len) will be read (len 0: to the end).
 * A hint; nothing fails. Linux: posix_fadvise. macOS has no posix_fadvise:
 * F_RDAHEAD for a sequential read, F_RDADVISE for a range read soon.
 */
void os_read_hint_give(int fd, uint64_t off, uint64_t len, os_read_hint hint);

/* ---------- read leases ---------- */

/*
 * Take a read lease on fd (open read-only): 1 if taken, 0 if not. While it
 * is held, anyone's open for writing breaks it, so whoever holds it knows
 * nobody wrote the file meanwhile. Linux only (F_SETLEASE, with SIGURG as
 * the break signal, which is ignored unless handled, instead of SIGIO,
 * which would kill the process); elsewhere 0, always: callers must work
 * without one.
 */
int os_read_lease_take(int fd);

/* 1 if the read lease os_read_lease_take() took on fd still holds. */
int os_read_lease_held(int fd);

/* ---------- files and processes ---------- */

/* struct stat's nanosecond modification and change times (the fields are
 * st_mtim/st_ctim on Linux, st_mtimespec/st_ctimespec on macOS). */
struct timespec os_stat_mtime(const struct stat *st);
struct timespec os_stat_ctime(const struct stat *st);

/*
 * The running program's own path into out (n bytes); -ENAMETOOLONG if it
 * does not fit. Linux: /proc/self/exe; macOS: _NSGetExecutablePath.
 */
int os_self_exe(char *out, size_t n);

/*
 * This host's boot session, an id that changes at every boot, into out
 * (n bytes, at least 37). Linux: /proc/sys/kernel/random/boot_id; macOS:
 * kern.bootsessionuuid.
 */
int os_boot_id(char *out, size_t n);

/* The calling thread, and the threads it starts from now on, yield CPU
 * and disk to the rest of the process and the host: on Linux ten steps
 * nicer (at most 19) and the lowest best-effort I/O priority, on macOS
 * the utility QoS (CPU and I/O).
 * Best effort: 0, or a negative errno if the system refused (harmless).
 * lazy/'s background fill, so a guest served meanwhile keeps its pace. */
int os_thread_background(void);

/* 1 if pid has exited but not been reaped (a zombie), 0 if it has not
 * exited or can't be looked at. */
int os_pid_is_zombie(int pid);

/*
 * The running OS's name and build, for what a saved state is bound to:
 * macOS's build ("23F79"), Linux's "Linux RELEASE". Empty if unknown.
 */
void os_build_describe(char *out, size_t n);

/* The running macOS's version ("14.5"), for what a guest's macOS needs of
 * its host; empty elsewhere, or if unknown. */
void os_product_version(char *out, size_t n);

/* 1 on macOS, 0 elsewhere: for defaults that follow the host (the vz
 * driver is macOS's). */
int os_is_macos(void);

/*
 * The file name dlopen() finds a shared library by, from its stem and its
 * major version: ("archive", 13) is "libarchive.so.13" on Linux,
 * "libarchive.13.dylib" on macOS. Returns out.
 */
const char *os_library_file(const char *stem, int major, char *out, size_t n);

/* ---------- copy-on-write and sparse files (clone/ builds on these) ---------- */

/*
 * Create dst as a copy-on-write clone of the file src names, not following
 * a link, with dst's owner the caller: macOS's clonefile(2). -EEXIST if dst
 * exists; -EOPNOTSUPP on Linux, which clones only between open files
 * (os_reflink_fd), and for any other failure the caller falls back on.
 */
int os_clone_file(const char *src, const char *dst);

/* Share all of src_fd's blocks into dst_fd (Linux FICLONE). -EOPNOTSUPP
 * or another error where the filesystem can't: the caller copies. */
int os_reflink_fd(int src_fd, int dst_fd);

/* The same for [off, off+len) at the same offset in both (FICLONERANGE);
 * len must not be 0 (FICLONERANGE reads 0 as "to the end"). */
int os_reflink_range(int src_fd, int dst_fd, uint64_t off, uint64_t len);

/*
 * Copy [off, off+len) of src_fd to the same offset in dst_fd inside the
 * kernel (Linux copy_file_range): returns the bytes copied, which may be
 * fewer (0 at the source's end), or -errno. -EOPNOTSUPP (also for the
 * errors that mean "not between these files") tells the caller to
 * read and write instead; macOS always says so.
 */
int64_t os_copy_range(int src_fd, int dst_fd, uint64_t off, uint64_t len);

/* Free the blocks of [off, off+len), which then read as zeros, without
 * changing the size (Linux fallocate PUNCH_HOLE, macOS F_PUNCHHOLE, which
 * wants block-aligned ranges). */
int os_punch_hole(int fd, uint64_t off, uint64_t len);

/*
 * One run of a file's extent map: logical bytes [logical, logical+length)
 * live at `physical` on the device. `unsure` is set where the filesystem
 * says the address may change or is not a plain block (delayed allocation,
 * inline data, encrypted...).
 */
typedef int (*os_extent_visit)(void *ctx, uint64_t logical, uint64_t physical, uint64_t length,
                               int unsure);

/*
 * Call visit for each run of fd's data, in logical order, after making
 * dirty pages addressable. Linux: FIEMAP; macOS: F_LOG2PHYS_EXT per data
 * region. Stops at, and returns, the first non-zero visit; -EOPNOTSUPP
 * where the filesystem gives no map (the caller then compares contents).
 */
int os_extent_map_walk(int fd, os_extent_visit visit, void *ctx);

#endif
