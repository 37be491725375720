/*
 * clone: copy-on-write file copies that never fill holes.
 *
 * The one place that knows how each filesystem shares blocks:
 *   - macOS APFS: clonefile(2) for whole files;
 *   - Linux XFS/btrfs: FICLONE / FICLONERANGE;
 *   - anywhere else: a sparse copy that walks SEEK_DATA/SEEK_HOLE and moves
 *     each data extent with copy_file_range, then read/write.
 * A failed clone always falls back to copying that range: a capability probe
 * is never trusted on its own (OpenZFS passes probes and fails later).
 *
 * It also reads extent maps (Linux FIEMAP, macOS F_LOG2PHYS_EXT), which the
 * store compares to learn which chunks of a clone may have been written.
 *
 * Every function returns 0 on success or a negative errno value; none prints.
 */
#ifndef STRATA_CLONE_H
#define STRATA_CLONE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* How a file (or the last range) was placed; the weakest method used wins. */
typedef enum {
    CLONE_REFLINK = 0, /* blocks shared with the source: costs no space */
    CLONE_SPARSE_COPY, /* data extents copied, holes kept as holes */
} clone_method;

/*
 * Copy the whole regular file open as src_fd into dst_fd (an empty file open
 * for writing). Holes stay holes. dst ends with src's size. *method (may be
 * NULL) tells whether blocks are shared. fsyncs nothing: callers decide.
 */
int clone_fd(int src_fd, int dst_fd, clone_method *method);

/*
 * A copy's caller between its pieces: dst_fd's [off, off+len) was just
 * written (len at most CLONE_STEP_MAX). Here the caller writes the piece
 * back, waits for a busy disk, and so on; a non-zero (negative errno)
 * return stops the copy and is what it returns.
 */
typedef int (*clone_step_fn)(void *ctx, int dst_fd, uint64_t off, uint64_t len);
#define CLONE_STEP_MAX (8u << 20)

/*
 * clone_fd() for a copy made beside other work: where blocks can't be
 * shared, the copy calls step(ctx, ...) after each piece it writes, so a
 * large copy never leaves gigabytes dirty for one fsync to write at once.
 * A reflink shares the blocks at once and calls nothing. step may be NULL:
 * clone_fd().
 */
int clone_fd_paced(int src_fd, int dst_fd, clone_method *method, clone_step_fn step, void *ctx);

/*
 * Create dst (which must not exist: -EEXIST) as a clone of src, with mode
 * `mode`. On macOS this is clonefile(2); elsewhere clone_fd(). Nothing is
 * fsynced: a caller cloning several files syncs them after the last, so one
 * journal flush covers them all.
 */
int clone_path(const char *src, const char *dst, mode_t mode, clone_method *method);

/* clone_path() with a copy paced as clone_fd_paced()'s; step may be NULL */
int clone_path_paced(const char *src, const char *dst, mode_t mode, clone_method *method,
                     clone_step_fn step, void *ctx);

/*
 * The same from an open file: create dst (-EEXIST if it exists) as a clone
 * of what src_fd holds (clone_fd()), with mode `mode`; for a caller that
 * must copy the very file it opened, not whatever its path names by now.
 */
int clone_fd_to_path(int src_fd, const char *dst, mode_t mode, clone_method *method);

/*
 * Make [off, off+len) of dst_fd read as the same range of src_fd:
 * FICLONERANGE when the filesystem takes it (block-aligned ranges on one
 * XFS/btrfs volume), else the range is punched and the source's data
 * extents copied in; where punching is impossible every byte is copied.
 */
int clone_range(int src_fd, int dst_fd, uint64_t off, uint64_t len);

/* Deallocate [off, off+len) of fd, keeping its size. -EOPNOTSUPP if the
 * filesystem can't; the range then still reads as whatever it held. */
int clone_punch_hole(int fd, uint64_t off, uint64_t len);

/*
 * Find the next data at or after off: *data is its start, *hole the start
 * of the hole that follows it. Returns -ENXIO when only holes remain.
 * Filesystems without SEEK_DATA report the whole file as data.
 */
int clone_next_data(int fd, uint64_t off, uint64_t size, uint64_t *data, uint64_t *hole);

/* 1 if both paths are on one filesystem (clones can't cross volumes), 0 if
 * not. Directories on different devices that still share blocks (btrfs
 * subvolumes) count as one: that is tried with a real clone of a probe. */
int clone_same_volume(const char *a, const char *b);

/* One run of a file's logical bytes and where they live on the device. */
typedef struct {
    uint64_t logical;
    uint64_t physical;
    uint64_t length;
    uint32_t flags; /* CLONE_EXTENT_* */
} clone_extent;

#define CLONE_EXTENT_UNSURE 1u /* location unknown, delayed, inline or packed: compare by content */

typedef struct {
    clone_extent *v;
    size_t n;
} clone_extent_map;

/*
 * Read fd's extent map after flushing its dirty data. -EOPNOTSUPP where the
 * platform or filesystem has none: the caller then compares content.
 */
int clone_extent_map_read(int fd, clone_extent_map *map);
void clone_extent_map_free(clone_extent_map *map);

/*
 * 1 if [off, off+len) maps to the same physical bytes in a and b (and so
 * holds the same content, both being holes counting as the same), 0 if it
 * may differ. Ranges touching an UNSURE extent always count as different.
 */
int clone_extent_map_same(const clone_extent_map *a, const clone_extent_map *b, uint64_t off,
                          uint64_t len);

#endif
