/*
 * Unit tests of store_receive_* (store/store.h): a layer made elsewhere,
 * given as its manifest and then its chunks in any order, from any thread,
 * each checked before it is written; published only when complete.
 * Files are made under $TEST_DIR (default: a fresh mkdtemp under /var/tmp).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#ifdef __linux__
#include <linux/fiemap.h>
#include <linux/fs.h>
#endif

#include "../store/internal.h"
#include "testutil.h"

#define MiB (1024u * 1024u)
#define CH MiB
/* Disk.img: chunk 0 data, 1 hole, 2 data, 3 data, 4 a short data chunk */
#define DISK_SIZE (4u * MiB + 100u)
#define NCH 5

static char g_root[PATH_MAX];
static const char INFO[] = "created 1700000000\nmessage received\nbytes-added 3145828\n";

typedef struct {
    char *home;
    store *st;
    unsigned char *disk; /* the content Disk.img must end with */
} fixture;

static uint64_t clen(size_t c)
{
    return c == NCH - 1 ? 100u : CH;
}

static void chunk_hex(const unsigned char *p, size_t n, char hex[65])
{
    unsigned char d[32];
    st_sha256(p, n, d);
    hex_encode(d, 32, hex);
}

/* the manifest of disk (hole at chunk 1), with an optional parent */
static char *manifest_of(const unsigned char *disk, const char *parent)
{
    sbuf b = {0};
    sbuf_printf(&b, "strata-layer 1\n");
    if (parent)
        sbuf_printf(&b, "parent %s\n", parent);
    sbuf_printf(&b, "file Disk.img %u 0644 %u\n", DISK_SIZE, CH);
    for (size_t c = 0; c < NCH; c++) {
        char hex[65];
        if (c == 1) {
            sbuf_printf(&b, "zero 1\n");
            continue;
        }
        chunk_hex(disk + c * CH, clen(c), hex);
        sbuf_printf(&b, "%s\n", hex);
    }
    assert_false(b.oom);
    sbuf_add(&b, "", 1);
    return b.data;
}

static void id_of(const char *m, char hex[65])
{
    chunk_hex((const unsigned char *)m, strlen(m), hex);
}

static int group_setup(void **state)
{
    (void)state;
    return test_root_make(g_root, sizeof g_root, "test_receive");
}

static int group_teardown(void **state)
{
    (void)state;
    test_root_remove(g_root);
    return 0;
}

static int setup(void **state)
{
    static int n;
    fixture *f = calloc(1, sizeof *f);
    if (!f || asprintf(&f->home, "%s/store-%d", g_root, n++) < 0)
        return -1;
    if (store_open(f->home, &f->st))
        return -1;
    f->disk = calloc(1, DISK_SIZE);
    fill_random(f->disk, DISK_SIZE, 7);
    memset(f->disk + CH, 0, CH);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    store_close(f->st);
    free(f->home);
    free(f->disk);
    free(f);
    return 0;
}

static int tmp_empty(const fixture *f)
{
    char *tmp = path_in(f->home, "tmp");
    int ok = dir_is_empty(tmp);
    free(tmp);
    return ok;
}

static void assert_layer_is(fixture *f, const char *hex, const unsigned char *disk)
{
    store_id id;
    memcpy(id.hex, hex, 65);
    char *p = store_layer_file_path(f->st, &id, "Disk.img");
    unsigned char *got = malloc(DISK_SIZE + 1);
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, got, DISK_SIZE + 1, 0), DISK_SIZE);
    assert_memory_equal(got, disk, DISK_SIZE);
    close(fd);
    free(got);
    free(p);
    /* sealed in full, each seal of the bytes disk has there (fsck --quick) */
    store_layer *l;
    st_seals *seals = NULL;
    assert_int_equal(store_layer_load(f->st, &id, &l), 0);
    char *dir = st_layer_dir(f->st, &id);
    assert_int_equal(st_seals_load(dir, l, &seals), 0);
    for (size_t k = 0; k < l->files[0].ndata; k++) {
        uint64_t c = l->files[0].data[k].index, seal;
        assert_int_equal(st_seal_get(seals, 0, c, &seal), 0);
        assert_true(seal == st_seal_of(disk + c * CH, clen(c)));
    }
    st_seals_free(seals);
    free(dir);
    store_layer_free(l);
}

/* Publish rx and check that the layer it made holds disk, sealed; its id
 * goes to hex (65 bytes) when hex is not NULL. */
static void finish_as(fixture *f, store_receive *rx, const unsigned char *disk, char *hex)
{
    store_commit_result res;
    assert_int_equal(store_receive_finish(rx, NULL, &res), 0);
    assert_layer_is(f, res.id.hex, disk);
    if (hex)
        memcpy(hex, res.id.hex, 65);
}

/* Make layer hex look as if made before seals: no seals file. */
static void drop_seals(fixture *f, const char *hex)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/layers/%s/seals", f->home, hex) > 0);
    assert_int_equal(unlink(p), 0);
    free(p);
}

/* Flip one byte of the layer's Disk.img, as damage on disk would. */
static void damage(fixture *f, const char *hex, uint64_t off)
{
    char *p = NULL;
    unsigned char b;
    assert_true(asprintf(&p, "%s/layers/%s/bundle/Disk.img", f->home, hex) > 0);
    assert_int_equal(chmod(p, 0644), 0);
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0x20;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
    free(p);
}

static void test_out_of_order_and_checked(void **state)
{
    fixture *f = *state;
    char *m = manifest_of(f->disk, NULL), hex[65];
    id_of(m, hex);
    store_receive *rx;
    assert_int_equal(store_receive_begin(f->st, m, strlen(m), INFO, strlen(INFO), NULL, &rx), 0);
    assert_string_equal(store_receive_layer(rx)->id.hex, hex);
    assert_int_equal(store_receive_missing(rx), 4);
    assert_int_equal(store_receive_needs(rx, 0, 1), 0); /* a hole */
    assert_int_equal(store_receive_needs(rx, 0, 4), 1);
    unsigned char *bad = malloc(CH);
    memcpy(bad, f->disk, CH);
    bad[77] ^= 1;
    assert_int_equal(store_receive_chunk(rx, 0, 0, bad, CH), -EINVAL);
    assert_non_null(strstr(store_error(), "does not match the manifest"));
    assert_int_equal(store_receive_chunk(rx, 0, 1, bad, CH), -EINVAL);
    assert_non_null(strstr(store_error(), "hole"));
    assert_int_equal(store_receive_chunk(rx, 0, 0, f->disk, CH - 1), -EINVAL);
    assert_int_equal(store_receive_missing(rx), 4);
    for (size_t c = NCH; c-- > 0;)
        if (c != 1)
            assert_int_equal(store_receive_chunk(rx, 0, c, f->disk + c * CH, clen(c)), 0);
    /* again: verified and dropped */
    assert_int_equal(store_receive_chunk(rx, 0, 2, f->disk + 2 * CH, CH), 0);
    assert_int_equal(store_receive_missing(rx), 0);
    store_commit_result res;
    assert_int_equal(store_receive_finish(rx, "got:it", &res), 0);
    assert_string_equal(res.id.hex, hex);
    assert_false(res.existed);
    assert_layer_is(f, hex, f->disk);
    store_id t;
    assert_int_equal(store_resolve(f->st, "got:it", &t), 0);
    assert_string_equal(t.hex, hex);
    /* where it came from is kept beside it: its shares open nothing alone */
    assert_true(store_layer_received(f->st, &t));
    store_id unknown;
    memset(unknown.hex, 'a', 64);
    unknown.hex[64] = 0;
    assert_false(store_layer_received(f->st, &unknown));
    assert_true(tmp_empty(f));
    free(bad);
    free(m);
}

static void test_incomplete_is_not_published(void **state)
{
    fixture *f = *state;
    char *m = manifest_of(f->disk, NULL), hex[65];
    id_of(m, hex);
    store_receive *rx;
    assert_int_equal(store_receive_begin(f->st, m, strlen(m), INFO, strlen(INFO), NULL, &rx), 0);
    assert_int_equal(store_receive_chunk(rx, 0, 0, f->disk, CH), 0);
    store_commit_result res;
    assert_int_equal(store_receive_finish(rx, NULL, &res), -EINVAL);
    assert_non_null(strstr(store_error(), "Disk.img: chunk 2 (offset 2097152) never arrived"));
    store_id id;
    memcpy(id.hex, hex, 65);
    store_layer *l;
    assert_int_not_equal(store_layer_load(f->st, &id, &l), 0);
    assert_true(tmp_empty(f));
    free(m);
}

/* a resumable receive cut short keeps its work; the next one takes up
 * what is intact (checked), gc keeps it meanwhile, publishing clears it */
static void test_resume(void **state)
{
    fixture *f = *state;
    char *m = manifest_of(f->disk, NULL), hex[65];
    id_of(m, hex);
    store_receive_opts o = {.resume = 1};
    store_receive *rx;
    assert_int_equal(store_receive_begin(f->st, m, strlen(m), INFO, strlen(INFO), &o, &rx), 0);
    assert_int_equal(store_receive_resumed(rx), 0);
    assert_int_equal(store_receive_chunk(rx, 0, 0, f->disk, CH), 0);
    assert_int_equal(store_receive_chunk(rx, 0, 2, f->disk + 2 * CH, CH), 0);
    assert_int_equal(store_receive_chunk(rx, 0, 3, f->disk + 3 * CH, CH), 0);
    store_receive_abort(rx);
    assert_false(tmp_empty(f));
    /* damage chunk 3 of the kept work: it must be fetched again */
    char *path = NULL;
    assert_true(asprintf(&path, "%s/tmp/receive-%s/bundle/Disk.img", f->home, hex) > 0);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "x", 1, 3 * CH + 5), 1);
    close(fd);
    store_gc_result g;
    assert_int_equal(store_gc(f->st, &g), 0);
    assert_int_equal(g.partial_kept, 1);
    assert_int_equal(access(path, F_OK), 0);
    assert_int_equal(store_receive_begin(f->st, m, strlen(m), INFO, strlen(INFO), &o, &rx), 0);
    assert_int_equal(store_receive_resumed(rx), 2);
    assert_int_equal(store_receive_missing(rx), 2);
    assert_int_equal(store_receive_needs(rx, 0, 0), 0);
    assert_int_equal(store_receive_needs(rx, 0, 3), 1);
    /* a second resumable receive of the same layer meanwhile works apart */
    store_receive *other;
    assert_int_equal(store_receive_begin(f->st, m, strlen(m), INFO, strlen(INFO), &o, &other), 0);
    assert_int_equal(store_receive_resumed(other), 0);
    store_receive_abort(other);
    assert_int_equal(store_receive_chunk(rx, 0, 3, f->disk + 3 * CH, CH), 0);
    assert_int_equal(store_receive_chunk(rx, 0, 4, f->disk + 4 * CH, 100), 0);
    store_commit_result res;
    assert_int_equal(store_receive_finish(rx, NULL, &res), 0);
    assert_layer_is(f, hex, f->disk);
    assert_true(tmp_empty(f));
    free(path);
    free(m);
}

/* busy_wait of test_wait_for_other: the other receive (on another store
 * handle) writes chunk 0 in the first round, is cut short in the second */
typedef struct {
    fixture *f;
    store_receive *other;
    char hex[65];
    unsigned rounds;
} waiting;

static int other_works(void *ctx, const store_id *id, unsigned round)
{
    waiting *w = ctx;
    assert_string_equal(id->hex, w->hex);
    assert_int_equal(round, w->rounds++);
    unsigned char d[32], *buf = malloc(CH);
    assert_non_null(buf);
    st_sha256(w->f->disk, CH, d);
    if (round == 0) {
        /* before it is written, nothing to peek at; after, the checked bytes */
        assert_int_equal(store_receive_peek(w->f->st, id, "Disk.img", 0, d, buf, CH), -ENOENT);
        assert_int_equal(store_receive_chunk(w->other, 0, 0, w->f->disk, CH), 0);
        assert_int_equal(store_receive_peek(w->f->st, id, "Disk.img", 0, d, buf, CH), 0);
        assert_memory_equal(buf, w->f->disk, CH);
        d[0] ^= 1; /* bytes that are not what the id says are never handed out */
        assert_int_equal(store_receive_peek(w->f->st, id, "Disk.img", 0, d, buf, CH), -ENOENT);
        assert_int_equal(store_receive_peek(w->f->st, id, "../Disk.img", 0, d, buf, CH), -ENOENT);
    } else {
        store_receive_abort(w->other); /* cut short: its lock is free */
        w->other = NULL;
    }
    free(buf);
    return 0;
}

static int give_up(void *ctx, const store_id *id, unsigned round)
{
    (void)id, (void)round;
    (*(unsigned *)ctx)++;
    return -ECANCELED;
}

/* a receive of a layer another handle (process) is receiving waits for it
 * (busy_wait) and takes up its work; it can give up; a handle holding the
 * store lock does not wait */
static void test_wait_for_other(void **state)
{
    fixture *f = *state;
    char *m = manifest_of(f->disk, NULL);
    waiting w = {.f = f};
    id_of(m, w.hex);
    store *st2;
    assert_int_equal(store_open(f->home, &st2), 0);
    store_receive_opts plain = {.resume = 1};
    assert_int_equal(store_receive_begin(st2, m, strlen(m), INFO, strlen(INFO), &plain, &w.other), 0);
    unsigned asked = 0;
    store_receive_opts quit = {.resume = 1, .busy_wait = give_up, .busy_ctx = &asked};
    store_receive *rx;
    assert_int_equal(store_receive_begin(f->st, m, strlen(m), INFO, strlen(INFO), &quit, &rx), -ECANCELED);
    assert_int_equal(asked, 1);
    store_receive_opts wait = {.resume = 1, .busy_wait = other_works, .busy_ctx = &w};
    assert_int_equal(store_receive_begin(f->st, m, strlen(m), INFO, strlen(INFO), &wait, &rx), 0);
    assert_int_equal(w.rounds, 2);
    assert_int_equal(store_receive_resumed(rx), 1); /* the other's chunk 0, checked */
    assert_int_equal(store_receive_needs(rx, 0, 0), 0);
    /* this handle holds the store lock now: a third receive works apart */
    store_receive *third;
    asked = 0;
    assert_int_equal(store_receive_begin(f->st, m, strlen(m), INFO, strlen(INFO), &quit, &third), 0);
    assert_int_equal(asked, 0);
    assert_int_equal(store_receive_resumed(third), 0);
    store_receive_abort(third);
    assert_int_equal(store_receive_chunk(rx, 0, 2, f->disk + 2 * CH, CH), 0);
    assert_int_equal(store_receive_chunk(rx, 0, 3, f->disk + 3 * CH, CH), 0);
    assert_int_equal(store_receive_chunk(rx, 0, 4, f->disk + 4 * CH, 100), 0);
    char hex[65];
    finish_as(f, rx, f->disk, hex);
    assert_string_equal(hex, w.hex);
    store_close(st2);
    free(m);
}

static void receive_all(fixture *f, const char *m, const unsigned char *disk, char hex[65]);

/* gc drops kept work after the grace period, or once its layer is in */
static void test_resume_cleaned(void **state)
{
    fixture *f = *state;
    char *m = manifest_of(f->disk, NULL), hex[65], *lock = NULL;
    id_of(m, hex);
    store_receive_opts o = {.resume = 1};
    store_receive *rx;
    store_gc_result g;
    assert_int_equal(store_receive_begin(f->st, m, strlen(m), INFO, strlen(INFO), &o, &rx), 0);
    assert_int_equal(store_receive_chunk(rx, 0, 0, f->disk, CH), 0);
    store_receive_abort(rx);
    assert_true(asprintf(&lock, "%s/tmp/receive-%s.lock", f->home, hex) > 0);
    struct timespec old[2] = {{time(NULL) - STORE_GC_PRUNE_EXPIRE - 60, 0},
                              {time(NULL) - STORE_GC_PRUNE_EXPIRE - 60, 0}};
    assert_int_equal(utimensat(AT_FDCWD, lock, old, 0), 0);
    assert_int_equal(store_gc(f->st, &g), 0);
    assert_int_equal(g.partial_kept, 0);
    assert_true(tmp_empty(f));
    /* again, then the layer arrives by another way (a receive that is not resumable) */
    assert_int_equal(store_receive_begin(f->st, m, strlen(m), INFO, strlen(INFO), &o, &rx), 0);
    assert_int_equal(store_receive_chunk(rx, 0, 0, f->disk, CH), 0);
    store_receive_abort(rx);
    char h2[65];
    receive_all(f, m, f->disk, h2);
    assert_int_equal(store_tag(f->st, h2, "have:it"), 0);
    assert_int_equal(store_gc(f->st, &g), 0);
    assert_int_equal(g.partial_kept, 0);
    assert_true(tmp_empty(f));
    free(lock);
    free(m);
}

static void test_refuses_bad_input(void **state)
{
    fixture *f = *state;
    char *m = manifest_of(f->disk, "1111111111111111111111111111111111111111111111111111111111111111");
    store_receive *rx;
    assert_int_equal(store_receive_begin(f->st, m, strlen(m), INFO, strlen(INFO), NULL, &rx), -ENOENT);
    assert_non_null(strstr(store_error(), "needs layer 1111"));
    free(m);
    const char *noncanon = "strata-layer 1\nfile Disk.img 4096 0644 4096\nzero 1\nzero 0\n";
    assert_int_equal(store_receive_begin(f->st, noncanon, strlen(noncanon), INFO, strlen(INFO),
                                         NULL, &rx), -EINVAL);
    assert_non_null(strstr(store_error(), "manifest line 4: ")); /* the parser's why */
    m = manifest_of(f->disk, NULL);
    assert_int_equal(store_receive_begin(f->st, m, strlen(m), "garbage", 7, NULL, &rx), -EINVAL);
    assert_true(tmp_empty(f));
    free(m);
}

static void receive_all(fixture *f, const char *m, const unsigned char *disk, char hex[65])
{
    store_receive *rx;
    assert_int_equal(store_receive_begin(f->st, m, strlen(m), INFO, strlen(INFO), NULL, &rx), 0);
    for (size_t c = 0; c < NCH; c++)
        if (store_receive_needs(rx, 0, c))
            assert_int_equal(store_receive_chunk(rx, 0, c, disk + c * CH, clen(c)), 0);
    store_commit_result res;
    assert_int_equal(store_receive_finish(rx, NULL, &res), 0);
    memcpy(hex, res.id.hex, 65);
}

/* A child needs only what differs from its parent; the rest is cloned. */
static void test_child_takes_parent_chunks(void **state)
{
    fixture *f = *state;
    char *m1 = manifest_of(f->disk, NULL), p[65];
    receive_all(f, m1, f->disk, p);
    unsigned char *d2 = malloc(DISK_SIZE);
    memcpy(d2, f->disk, DISK_SIZE);
    fill_random(d2 + 2 * CH, CH, 99);
    memset(d2 + 3 * CH, 0, CH); /* data in the parent, a hole now: manifest says zero */
    char *m2 = manifest_of(d2, p);
    /* make chunk 3 a hole in the child's manifest too */
    char hex3[65], *at;
    chunk_hex(d2 + 3 * CH, CH, hex3);
    assert_non_null(at = strstr(m2, hex3));
    memmove(at + 6, at + 64, strlen(at + 64) + 1);
    memcpy(at, "zero 1", 6);
    store_receive *rx;
    assert_int_equal(store_receive_begin(f->st, m2, strlen(m2), INFO, strlen(INFO), NULL, &rx), 0);
    assert_int_equal(store_receive_missing(rx), 1);
    assert_int_equal(store_receive_needs(rx, 0, 2), 1);
    assert_int_equal(store_receive_chunk(rx, 0, 2, d2 + 2 * CH, CH), 0);
    finish_as(f, rx, d2, NULL);
    free(d2);
    free(m1);
    free(m2);
}

/* 1 if Disk.img of layer hex has no block allocated at [off, off + 4 KiB).
 * Linux asks FIEMAP: XFS's SEEK_HOLE reports a punched range as data while
 * copy-on-write staging extents of a reflinked file still cover it. */
static int hole_at(fixture *f, const char *hex, uint64_t off)
{
    store_id id;
    memcpy(id.hex, hex, 65);
    char *p = store_layer_file_path(f->st, &id, "Disk.img");
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
#ifdef __linux__
    struct {
        struct fiemap m;
        struct fiemap_extent e[1];
    } q = {.m = {.fm_start = off, .fm_length = 4096, .fm_flags = FIEMAP_FLAG_SYNC,
                 .fm_extent_count = 1}};
    int hole = ioctl(fd, FS_IOC_FIEMAP, &q) == 0 ? q.m.fm_mapped_extents == 0
                                                 : lseek(fd, (off_t)off, SEEK_HOLE) == (off_t)off;
#else
    int hole = lseek(fd, (off_t)off, SEEK_HOLE) == (off_t)off;
#endif
    close(fd);
    free(p);
    return hole;
}

/* All-zero 4 KiB blocks of a received chunk stay holes, or are punched where
 * the file (a clone of the parent) had data; the bytes are exact either way. */
static void test_zero_blocks_are_holes(void **state)
{
    fixture *f = *state;
    memset(f->disk, 0, 8192);                 /* chunk 0: two zero blocks, then data */
    memset(f->disk + 2 * CH + 4096, 0, 4096); /* chunk 2: one zero block inside */
    char *m1 = manifest_of(f->disk, NULL), p[65];
    receive_all(f, m1, f->disk, p);
    assert_layer_is(f, p, f->disk);
    unsigned char *d2 = malloc(DISK_SIZE);
    memcpy(d2, f->disk, DISK_SIZE);
    fill_random(d2 + 3 * CH, CH, 5);
    memset(d2 + 3 * CH, 0, 3 * 4096); /* chunk 3: zeros over the parent's data */
    memset(d2 + 3 * CH + CH - 4096, 0, 4096);
    char *m2 = manifest_of(d2, p), c[65];
    store_receive *rx;
    assert_int_equal(store_receive_begin(f->st, m2, strlen(m2), INFO, strlen(INFO), NULL, &rx), 0);
    assert_int_equal(store_receive_missing(rx), 1);
    assert_int_equal(store_receive_chunk(rx, 0, 3, d2 + 3 * CH, CH), 0);
    finish_as(f, rx, d2, c);
    if (!hole_at(f, p, CH)) { /* chunk 1 is a hole in the manifest */
        printf("SKIP hole checks: this filesystem does not report holes\n");
    } else {
        assert_true(hole_at(f, p, 0));
        assert_true(hole_at(f, p, 2 * CH + 4096));
        assert_false(hole_at(f, p, 2 * CH));
        assert_true(hole_at(f, c, 3 * CH));
        assert_true(hole_at(f, c, 3 * CH + 2 * 4096));
        assert_false(hole_at(f, c, 3 * CH + 3 * 4096));
        assert_true(hole_at(f, c, 4 * CH - 4096));
    }
    free(d2);
    free(m1);
    free(m2);
}

/* A base without seals: the cloned chunks are read, checked and sealed; one
 * that no longer matches its hash is due from the sender instead. */
static void test_unsealed_base_is_read(void **state)
{
    fixture *f = *state;
    char *m1 = manifest_of(f->disk, NULL), p[65];
    receive_all(f, m1, f->disk, p);
    drop_seals(f, p);
    damage(f, p, 3 * CH + 5);
    unsigned char *d2 = malloc(DISK_SIZE);
    memcpy(d2, f->disk, DISK_SIZE);
    fill_random(d2 + 2 * CH, CH, 98);
    char *m2 = manifest_of(d2, p);
    store_receive *rx;
    assert_int_equal(store_receive_begin(f->st, m2, strlen(m2), INFO, strlen(INFO), NULL, &rx), 0);
    assert_int_equal(store_receive_missing(rx), 2);
    assert_int_equal(store_receive_needs(rx, 0, 0), 0); /* read, checked, sealed */
    assert_int_equal(store_receive_needs(rx, 0, 2), 1); /* changed */
    assert_int_equal(store_receive_needs(rx, 0, 3), 1); /* damaged in the base */
    for (size_t c = 2; c <= 3; c++)
        assert_int_equal(store_receive_chunk(rx, 0, c, d2 + c * CH, CH), 0);
    finish_as(f, rx, d2, NULL);
    free(d2);
    free(m1);
    free(m2);
}

/* A child whose chunk 2 holds the bytes of the parent's chunk 0 (and whose
 * chunk 0 is new): chunk 2 is copied from the parent, checked, unless the
 * parent's copy is damaged, when it stays due. */
static void moved_chunk(fixture *f, int damaged)
{
    char *m1 = manifest_of(f->disk, NULL), p[65];
    receive_all(f, m1, f->disk, p);
    if (damaged)
        damage(f, p, 5);
    unsigned char *d2 = malloc(DISK_SIZE);
    memcpy(d2, f->disk, DISK_SIZE);
    memcpy(d2 + 2 * CH, f->disk, CH);
    fill_random(d2, CH, 55);
    char *m2 = manifest_of(d2, p);
    store_receive *rx;
    assert_int_equal(store_receive_begin(f->st, m2, strlen(m2), INFO, strlen(INFO), NULL, &rx), 0);
    assert_int_equal(store_receive_copied(rx), damaged ? 0 : 1);
    assert_int_equal(store_receive_needs(rx, 0, 2), damaged);
    assert_int_equal(store_receive_missing(rx), damaged ? 2 : 1);
    for (size_t c = 0; c < NCH; c++)
        if (store_receive_needs(rx, 0, c))
            assert_int_equal(store_receive_chunk(rx, 0, c, d2 + c * CH, clen(c)), 0);
    finish_as(f, rx, d2, NULL);
    free(d2);
    free(m1);
    free(m2);
}

static void test_moved_chunk_is_copied(void **state)
{
    moved_chunk(*state, 0);
}

static void test_damaged_copy_is_not_taken(void **state)
{
    moved_chunk(*state, 1);
}

typedef struct {
    store_receive *rx;
    const unsigned char *disk;
    int first, rc;
} worker;

static void *send_half(void *arg)
{
    worker *w = arg;
    for (size_t c = (size_t)w->first; c < NCH; c += 2)
        if (c != 1 && store_receive_chunk(w->rx, 0, c, w->disk + c * CH, clen(c)))
            w->rc = -1;
    return NULL;
}

static void test_parallel(void **state)
{
    fixture *f = *state;
    char *m = manifest_of(f->disk, NULL);
    store_receive *rx;
    assert_int_equal(store_receive_begin(f->st, m, strlen(m), INFO, strlen(INFO), NULL, &rx), 0);
    worker w[2] = {{rx, f->disk, 0, 0}, {rx, f->disk, 1, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, send_half, &w[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(w[0].rc | w[1].rc, 0);
    finish_as(f, rx, f->disk, NULL);
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_out_of_order_and_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incomplete_is_not_published, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_cleaned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_for_other, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuses_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_child_takes_parent_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsealed_base_is_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_blocks_are_holes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_moved_chunk_is_copied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_copy_is_not_taken, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
