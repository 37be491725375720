/* Helpers shared by the cmocka tests: files of predictable random bytes,
 * paths, and whether the test directory's filesystem can reflink.
 * Include after cmocka.h and the system headers. */
#ifndef STRATA_TESTUTIL_H
#define STRATA_TESTUTIL_H

static inline char *path_in(const char *dir, const char *name)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
    return p;
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

/* write len pseudo-random bytes at off */
static inline void write_random(int fd, uint64_t off, size_t len, uint64_t seed)
{
    unsigned char *buf = malloc(len);
    assert_non_null(buf);
    fill_random(buf, len, seed);
    pwrite_all(fd, buf, len, off);
    free(buf);
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
