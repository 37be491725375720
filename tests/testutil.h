/* Fixtures shared by the cmocka tests: a directory of the run's own under
 * TEST_DIR, removing it, files of predictable random bytes, reading and
 * writing whole ranges, directories' entries, whether the test directory's
 * filesystem can reflink, and a skip that says why.
 * Define _GNU_SOURCE first; include after cmocka.h (and its setjmp.h,
 * stdarg.h, stddef.h, stdint.h). */
#ifndef STRATA_TESTUTIL_H
#define STRATA_TESTUTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/fs.h>
#endif

/* Skip this test, saying why on the line before cmocka's SKIPPED, where
 * tests/run.sh takes the reason from. FMT ends with \n. */
#define skip_because(...)                                                                          \
    do {                                                                                           \
        print_message(__VA_ARGS__);                                                                \
        skip();                                                                                    \
    } while (0)

static inline char *path_in(const char *dir, const char *name)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
    return p;
}

/* mkdir -p with mode 0755: 0, or -1 with errno */
static inline int mkdir_p(const char *path)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return -1;
    for (char *s = tmp + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
            return -1;
        *s = '/';
    }
    return mkdir(tmp, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

static inline int rm_one_(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path) < 0 ? -1 : 0;
}

/* rm -rf, without a shell: 0, or -1 if something could not be removed */
static inline int rm_rf(const char *path)
{
    return nftw(path, rm_one_, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh directory of this run's own, NAME-XXXXXX, in TEST_DIR (made if
 * missing), or /var/tmp/strata-NAME-XXXXXX where TEST_DIR is unset: into
 * root. 0, or -1 with the reason on stderr (for a cmocka setup). */
static inline int test_root_make(char *root, size_t size, const char *name)
{
    const char *t = getenv("TEST_DIR");
    int n;
    if (t && *t) {
        if (mkdir_p(t) < 0) {
            fprintf(stderr, "cannot make TEST_DIR %s: %s\n", t, strerror(errno));
            return -1;
        }
        n = snprintf(root, size, "%s/%s-XXXXXX", t, name);
    } else {
        n = snprintf(root, size, "/var/tmp/strata-%s-XXXXXX", name);
    }
    if (n < 0 || (size_t)n >= size) {
        fprintf(stderr, "TEST_DIR too long\n");
        return -1;
    }
    if (!mkdtemp(root)) {
        fprintf(stderr, "mkdtemp %s: %s\n", root, strerror(errno));
        return -1;
    }
    return 0;
}

/* root removed, unless KEEP_TEST_DIR is set (to look at what a test left):
 * rm_rf's answer */
static inline int test_root_remove(const char *root)
{
    if (getenv("KEEP_TEST_DIR")) {
        fprintf(stderr, "kept %s (KEEP_TEST_DIR)\n", root);
        return 0;
    }
    int rc = rm_rf(root);
    if (rc != 0)
        fprintf(stderr, "could not remove %s\n", root);
    return rc;
}

/* deterministic pseudo-random bytes (xorshift64) */
static inline void fill_random(unsigned char *buf, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        if (i % 8 == 0)
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (unsigned char)(x >> (8 * (i % 8)));
    }
}

static inline void pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        assert_true(w > 0);
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
}

static inline void pread_all(int fd, void *buf, size_t n, uint64_t off)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        assert_true(r > 0);
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
}

/* write len pseudo-random bytes at off */
static inline void write_random(int fd, uint64_t off, size_t len, uint64_t seed)
{
    unsigned char *buf = malloc(len);
    assert_non_null(buf);
    fill_random(buf, len, seed);
    pwrite_all(fd, buf, len, off);
    free(buf);
}

/* write (replace) a whole file */
static inline void put_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        fail_msg("write %s: %s", path, strerror(errno));
    if (len)
        pwrite_all(fd, data, len, 0);
    assert_int_equal(close(fd), 0);
}

/* a new file dir/name, open for reading and writing */
static inline int open_new(const char *dir, const char *name)
{
    char *p = path_in(dir, name);
    int fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    free(p);
    assert_true(fd >= 0);
    return fd;
}

/* entries of a directory, "." and ".." left out */
static inline size_t count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

/* 1 if dir has no entries, or is not there */
static inline int dir_is_empty(const char *dir)
{
    struct stat s;
    if (stat(dir, &s) < 0 && errno == ENOENT)
        return 1;
    return count_entries(dir) == 0;
}

/* Does FICLONE work in dir? Tried on two files of our own. */
static inline int reflink_works(const char *dir)
{
#ifdef FICLONE
    char *a = path_in(dir, ".probe-a"), *b = path_in(dir, ".probe-b");
    int fa = open(a, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int fb = open(b, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fa >= 0 && fb >= 0);
    write_random(fa, 0, 4096, 99);
    assert_int_equal(fsync(fa), 0);
    int ok = ioctl(fb, FICLONE, fa) == 0;
    close(fa);
    close(fb);
    unlink(a);
    unlink(b);
    free(a);
    free(b);
    return ok;
#else
    (void)dir;
    return 0;
#endif
}

#endif
