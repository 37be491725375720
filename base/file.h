/*
 * base/file.h: files written so that a crash or a power cut at any moment
 * loses nothing committed, and the small file helpers every module needs.
 *
 * The atomic file (libgit2's git_filebuf, git's lockfile): the new contents
 * go to a temporary file beside the target, which is fsynced (F_FULLFSYNC on
 * macOS), renamed over the target (or next to it, never over it, if asked),
 * and then the directory is fsynced, so after a crash the target is either
 * wholly old or wholly new, and a rename that returned is on the disk.
 *
 * The temporary name is ".NAME.tmp-PID" in the target's directory: a dot
 * name, which no tag, record or bundle file strata versions can have, and
 * the pid, so the store's gc can tell a dead writer's leftover from a live
 * one (store/check.c). It is created with O_EXCL|O_NOFOLLOW: a link planted
 * under that name is never followed.
 *
 * Every function returns 0 or a negative errno value and sets the thread's
 * error (base/error.h) with the path it concerns.
 */
#ifndef STRATA_BASE_FILE_H
#define STRATA_BASE_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* atomic_file_open's flags */
#define ATOMIC_FILE_NO_REPLACE 1u /* commit fails with -EEXIST if the target exists */
/* Another program writes the temporary file (QEMU, Virtualization.framework),
 * by its path f->tmp: open only names it (fd stays -1), and commit opens
 * what was written there to fsync it. */
#define ATOMIC_FILE_FOREIGN 2u
/* The temporary name ends as the target's does (".tmp-PID.NAME"), for a
 * writer that goes by a file's ending. */
#define ATOMIC_FILE_KEEP_ENDING 4u

typedef struct {
    int fd;     /* the temporary file, open for writing; -1 once closed */
    char *path; /* the target */
    char *tmp;  /* the temporary file's path */
    unsigned flags;
} atomic_file;

/*
 * Start writing `path`: create its temporary file with `mode` (removing a
 * leftover of a dead writer with our pid); with ATOMIC_FILE_FOREIGN, only
 * name it. On failure f needs no abort.
 */
int atomic_file_open(atomic_file *f, const char *path, mode_t mode, unsigned flags);

/* Append len bytes to the temporary file. */
int atomic_file_write(atomic_file *f, const void *data, size_t len);

/*
 * Make it the target: fsync, close, rename (no-replace if asked), fsync the
 * directory. On failure the temporary file is removed and the target is as
 * it was (but for a failed directory fsync, after which the rename may or
 * may not survive a power cut). f is finished either way. The crash tests'
 * points (base/crash.h) are just before and just after the rename.
 */
int atomic_file_commit(atomic_file *f);

/* Give up: remove the temporary file, leave the target as it was. Safe on
 * a finished f. */
void atomic_file_abort(atomic_file *f);

/*
 * The commit step alone, for a writer whose temporary file outlives one run
 * (a resumable download's part) and so can't be an atomic_file: fsync fd,
 * which holds tmp, rename tmp over path, fsync the directory. On failure
 * tmp stays where it is. Closes nothing.
 */
int file_publish(int fd, const char *tmp, const char *path);

/* open, write, commit: the whole of data as path's new contents. */
int atomic_file_write_all(const char *path, const void *data, size_t len, mode_t mode,
                          unsigned flags);

/* fsync what fd holds all the way to the disk (F_FULLFSYNC on macOS) */
int file_fsync_fd(int fd);

/* Write all len bytes at off (pwrite, again after a short write or EINTR):
 * 0, or the negative errno (-EIO if nothing could be written). Raises no
 * message: the caller names the file. */
int file_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
/* Read all len bytes at off into buf (pread, again after a short read or
 * EINTR): 0, or the negative errno (-EIO if the file ends first). Raises no
 * message: the caller names the file. */
int file_pread_all(int fd, void *buf, size_t len, uint64_t off);
/* The same, but where the file ends first the rest of buf is zeros and 0 is
 * returned: a file not (yet) written that far reads as a sparse one would. */
int file_pread_zerofill(int fd, void *buf, size_t len, uint64_t off);
/* the same by path, for a file or a directory, not following a link */
int file_fsync_path(const char *path);
/* fsync the directory that holds path (its entries: a rename, a create) */
int file_fsync_parent(const char *path);

/*
 * rename(2) that never replaces: -EEXIST if `to` exists. Atomic where the
 * platform and filesystem can (base/platform.h); elsewhere checked, then
 * renamed, which a racing creator could beat, and a non-empty directory is
 * still never replaced.
 */
int file_rename_noreplace(const char *from, const char *to);

/*
 * Read the whole regular file path, not following a link: *data (malloc'd,
 * NUL-terminated) and *len. -EFBIG if it is larger than max, -EINVAL if it
 * is not a regular file.
 */
int file_read_all(const char *path, size_t max, char **data, size_t *len);

/* mkdir -p: path and its missing parents, each with mode. */
int file_mkdir_p(const char *path, mode_t mode);

#endif
