/*
 * Unit tests of the layer store (store/store.h), and of a few internals
 * (store/internal.h): the manifest's canonical form and the text encoding.
 *
 * Every file is made under $TEST_DIR (default: a fresh mkdtemp under
 * /var/tmp), in a directory of its own per run and per test, and each test
 * opens a store of its own there. Bundles are made here in C.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <plist/plist.h>

#ifdef __linux__
#include <linux/fs.h>
#endif

#include "../clone/clone.h"
#include "../store/internal.h"
#include "testutil.h"

#define KiB (1024ull)
#define MiB (1024ull * 1024)
#define TEST_ECID 13061332575042855156ull

/* ---------- helpers ---------- */

static char g_root[PATH_MAX]; /* this run's directory */

static void read_whole(const char *path, unsigned char **data, size_t *len)
{
    char *d = NULL;
    assert_int_equal(file_read_all(path, 64 << 20, &d, len), 0);
    *data = (unsigned char *)d;
}

static uint64_t file_size(const char *path)
{
    struct stat s;
    assert_int_equal(stat(path, &s), 0);
    return (uint64_t)s.st_size;
}

static size_t count_layers(store *st)
{
    store_id *ids = NULL;
    size_t n = 99;
    assert_int_equal(store_layers(st, &ids, &n), 0);
    free(ids);
    return n;
}

/* HardwareModel as Apple writes it (the shape fixtures/mkbundle.c uses) */
static void write_hardware_model(const char *path)
{
    plist_t hw = plist_new_dict();
    plist_dict_set_item(hw, "DataRepresentationVersion", plist_new_uint(1));
    plist_t os = plist_new_array();
    plist_array_append_item(os, plist_new_uint(13));
    plist_array_append_item(os, plist_new_uint(0));
    plist_array_append_item(os, plist_new_uint(0));
    plist_dict_set_item(hw, "MinimumSupportedOS", os);
    plist_dict_set_item(hw, "PlatformVersion", plist_new_uint(2));
    char *bin = NULL;
    uint32_t len = 0;
    plist_to_bin(hw, &bin, &len);
    plist_free(hw);
    assert_non_null(bin);
    put_file(path, bin, len);
    plist_to_bin_free(bin);
}

/*
 * A macOS bundle: a sparse Disk.img of disk_size with random data in
 * [0, 1 MiB) and, if it is big enough, [10.5 MiB, 10.75 MiB) and a 1 MiB
 * run of written zeros at 20 MiB; AuxiliaryStorage of 2 MiB with 64 KiB of
 * data; and the two identity plists.
 */
static void make_bundle(const char *dir, uint64_t disk_size)
{
    assert_int_equal(mkdir(dir, 0755), 0);
    int fd = open_new(dir, "Disk.img");
    assert_int_equal(ftruncate(fd, (off_t)disk_size), 0);
    write_random(fd, 0, 1 * MiB, 1);
    if (disk_size >= 11 * MiB)
        write_random(fd, 10 * MiB + 512 * KiB, 256 * KiB, 2);
    if (disk_size >= 21 * MiB) {
        unsigned char *z = calloc(1, 1 * MiB);
        assert_non_null(z);
        pwrite_all(fd, z, 1 * MiB, 20 * MiB);
        free(z);
    }
    assert_int_equal(close(fd), 0);

    fd = open_new(dir, "AuxiliaryStorage");
    assert_int_equal(ftruncate(fd, (off_t)(2 * MiB)), 0);
    write_random(fd, 0, 64 * KiB, 7);
    assert_int_equal(close(fd), 0);

    char *p = path_in(dir, "HardwareModel");
    write_hardware_model(p);
    free(p);
    p = path_in(dir, "MachineIdentifier");
    assert_int_equal(store_write_machine_identifier(p, TEST_ECID), 0);
    free(p);
}

static const store_file *find_file(const store_layer *l, const char *name)
{
    for (size_t i = 0; i < l->nfiles; i++)
        if (!strcmp(l->files[i].name, name))
            return &l->files[i];
    return NULL;
}

static const store_diff_entry *find_diff(const store_diff_entry *d, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(d[i].name, name))
            return &d[i];
    return NULL;
}

/* collects what fsck reports */
typedef struct {
    char text[8192];
    int lines;
} report_buf;

static void collect(void *ctx, const char *line)
{
    report_buf *r = ctx;
    size_t n = strlen(r->text);
    snprintf(r->text + n, sizeof r->text - n, "%s\n", line);
    r->lines++;
}

/* ---------- fixtures ---------- */

typedef struct {
    char *dir;  /* this test's directory */
    char *home; /* its store */
    store *st;
} fixture;

static int group_setup(void **state)
{
    (void)state;
    return test_root_make(g_root, sizeof g_root, "test_store");
}

static int group_teardown(void **state)
{
    (void)state;
    test_root_remove(g_root);
    return 0;
}

static int test_setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || asprintf(&f->dir, "%s/t-XXXXXX", g_root) < 0 || !mkdtemp(f->dir))
        return -1;
    if (asprintf(&f->home, "%s/store", f->dir) < 0)
        return -1;
    if (store_open(f->home, &f->st)) {
        fprintf(stderr, "store_open: %s\n", store_error());
        return -1;
    }
    *state = f;
    return 0;
}

static int test_teardown(void **state)
{
    fixture *f = *state;
    store_close(f->st);
    st_rm_rf(f->dir);
    free(f->dir);
    free(f->home);
    free(f);
    return 0;
}

/* ---------- manifest ---------- */

static store_layer *parse(const char *text, size_t len, int *rc)
{
    store_layer *l = calloc(1, sizeof *l);
    assert_non_null(l);
    *rc = st_manifest_parse(text, len, l);
    return l;
}

/* 0 if text parses, else its error */
static int parses(const char *text)
{
    int rc;
    store_layer *l = parse(text, strlen(text), &rc);
    if (rc) {
        /* a rejected parse leaves nothing behind */
        assert_int_equal(l->nfiles, 0);
        assert_int_equal(l->nbindings, 0);
        assert_null(l->files);
        assert_null(l->bindings);
        assert_int_equal(l->has_parent, 0);
    }
    store_layer_free(l);
    return rc;
}

static void manifest_id(const sbuf *b, char hex[65])
{
    unsigned char d[32];
    st_sha256(b->data, b->len, d);
    hex_encode(d, 32, hex);
}

static void test_manifest_round_trip(void **state)
{
    (void)state;
    store_chunk chunks[3]; /* 0, 3 and 5 hold data; 1, 2 and 4 are zero chunks */
    memset(chunks, 0, sizeof chunks);
    chunks[0].index = 0;
    chunks[1].index = 3;
    chunks[2].index = 5;
    st_sha256("zero", 4, chunks[0].digest);
    st_sha256("three", 5, chunks[1].digest);
    st_sha256("five", 4, chunks[2].digest);
    char n0[] = "Disk.img", n1[] = "empty file";
    store_file files[2] = {
        {.name = n0, .size = 5 * MiB + 100, .mode = 0644, .chunk_size = 1 << 20, .nchunks = 6,
         .ndata = 3, .data = chunks},
        {.name = n1, .size = 0, .mode = 0600, .chunk_size = 4096, .nchunks = 0, .data = NULL},
    };
    char k0[] = "host", v0[] = "mac mini/1 %", k1[] = "mac", v1[] = "aa:bb:cc";
    store_binding binds[2] = {{k0, v0}, {k1, v1}};
    store_layer l = {0};
    l.has_parent = 1;
    memcpy(l.parent.hex, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", 65);
    l.files = files;
    l.nfiles = 2;
    l.bindings = binds;
    l.nbindings = 2;

    sbuf a = {0}, b = {0};
    assert_int_equal(st_manifest_format(&l, &a), 0);
    assert_non_null(a.data);
    char h0[65], h3[65], h5[65];
    hex_encode(chunks[0].digest, 32, h0);
    hex_encode(chunks[1].digest, 32, h3);
    hex_encode(chunks[2].digest, 32, h5);
    char *want = NULL;
    assert_true(asprintf(&want,
                         "strata-layer 1\n"
                         "parent %s\n"
                         "bind host mac%%20mini%%2F1%%20%%25\n"
                         "bind mac aa%%3Abb%%3Acc\n"
                         "file Disk.img 5242980 0644 1048576\n"
                         "%s\nzero 2\n%s\nzero 1\n%s\n"
                         "file empty%%20file 0 0600 4096\n",
                         l.parent.hex, h0, h3, h5) > 0);
    assert_string_equal(a.data, want);
    free(want);

    int rc;
    store_layer *p = parse(a.data, a.len, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(p->has_parent, 1);
    assert_string_equal(p->parent.hex, l.parent.hex);
    assert_int_equal(p->nbindings, 2);
    assert_string_equal(p->bindings[0].key, "host");
    assert_string_equal(p->bindings[0].value, "mac mini/1 %");
    assert_string_equal(p->bindings[1].key, "mac");
    assert_string_equal(p->bindings[1].value, "aa:bb:cc");
    assert_int_equal(p->nfiles, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(p->files[i].name, files[i].name);
        assert_int_equal(p->files[i].size, files[i].size);
        assert_int_equal(p->files[i].mode, files[i].mode);
        assert_int_equal(p->files[i].chunk_size, files[i].chunk_size);
        assert_int_equal(p->files[i].nchunks, files[i].nchunks);
        assert_int_equal(p->files[i].ndata, files[i].ndata);
        for (size_t k = 0; k < files[i].ndata; k++) {
            assert_int_equal(p->files[i].data[k].index, files[i].data[k].index);
            assert_memory_equal(p->files[i].data[k].digest, files[i].data[k].digest, 32);
        }
    }
    /* formatting what was parsed gives the very same bytes */
    assert_int_equal(st_manifest_format(p, &b), 0);
    assert_int_equal(b.len, a.len);
    assert_memory_equal(b.data, a.data, a.len);
    store_layer_free(p);

    /* the same layer formatted twice has the same id; any change, another */
    char id1[65], id2[65], id3[65];
    manifest_id(&a, id1);
    free(b.data);
    b = (sbuf){0};
    assert_int_equal(st_manifest_format(&l, &b), 0);
    manifest_id(&b, id2);
    assert_string_equal(id1, id2);
    assert_true(st_id_valid(id1));
    files[1].mode = 0644;
    free(b.data);
    b = (sbuf){0};
    assert_int_equal(st_manifest_format(&l, &b), 0);
    manifest_id(&b, id3);
    assert_string_not_equal(id1, id3);

    /* a root layer without bindings round-trips too */
    l.has_parent = 0;
    l.nbindings = 0;
    free(b.data);
    b = (sbuf){0};
    assert_int_equal(st_manifest_format(&l, &b), 0);
    assert_int_equal(strncmp(b.data, "strata-layer 1\nfile ", 20), 0);
    p = parse(b.data, b.len, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(p->has_parent, 0);
    assert_int_equal(p->nfiles, 2);
    store_layer_free(p);
    free(a.data);
    free(b.data);
}

static void test_manifest_rejects(void **state)
{
    (void)state;
    unsigned char d[32];
    char D[65], U[65];
    st_sha256("x", 1, d);
    hex_encode(d, 32, D);
    memcpy(U, D, 65);
    char *letter = strpbrk(U, "abcdef");
    assert_non_null(letter);
    *letter = (char)(*letter - 'a' + 'A');
    char buf[4096];

#define FILE_A "file a 3145728 0644 1048576\n"
#define FILE_B "file b 0 0644 1048576\n"
    /* the base case, and each mutation of it */
    snprintf(buf, sizeof buf, "strata-layer 1\n" FILE_A "%s\nzero 2\n" FILE_B, D);
    assert_int_equal(parses(buf), 0);
    /* upper-case hex digit */
    snprintf(buf, sizeof buf, "strata-layer 1\n" FILE_A "%s\nzero 2\n" FILE_B, U);
    assert_int_equal(parses(buf), -EINVAL);
    /* a zero run split in two */
    snprintf(buf, sizeof buf, "strata-layer 1\n" FILE_A "%s\nzero 1\nzero 1\n" FILE_B, D);
    assert_int_equal(parses(buf), -EINVAL);
    snprintf(buf, sizeof buf, "strata-layer 1\nfile a 3145728 0644 1048576\nzero 1\nzero 2\n");
    assert_int_equal(parses(buf), -EINVAL);
    assert_int_equal(parses("strata-layer 1\nfile a 3145728 0644 1048576\nzero 3\n"), 0);
    /* files out of order, and twice */
    snprintf(buf, sizeof buf, "strata-layer 1\n" FILE_B FILE_A "%s\nzero 2\n", D);
    assert_int_equal(parses(buf), -EINVAL);
    snprintf(buf, sizeof buf, "strata-layer 1\n" FILE_A "%s\nzero 2\n" FILE_A "%s\nzero 2\n", D,
             D);
    assert_int_equal(parses(buf), -EINVAL);
    assert_int_equal(parses("strata-layer 1\n" FILE_B FILE_B), -EINVAL);
    /* a name holding '/', and a plain byte needlessly escaped */
    assert_int_equal(parses("strata-layer 1\nfile a%2Fb 0 0644 1048576\n"), -EINVAL);
    assert_int_equal(parses("strata-layer 1\nfile a%20b 0 0644 1048576\n"), 0);
    assert_int_equal(parses("strata-layer 1\nfile %41 0 0644 1048576\n"), -EINVAL);
    assert_int_equal(parses("strata-layer 1\nfile A 0 0644 1048576\n"), 0);
    assert_int_equal(parses("strata-layer 1\nfile a%2fb 0 0644 1048576\n"), -EINVAL);
    assert_int_equal(parses("strata-layer 1\nfile .. 0 0644 1048576\n"), -EINVAL);
    /* no newline after the last line */
    snprintf(buf, sizeof buf, "strata-layer 1\n" FILE_A "%s\nzero 2\nfile b 0 0644 1048576", D);
    assert_int_equal(parses(buf), -EINVAL);
    assert_int_equal(parses("strata-layer 1"), -EINVAL);
    assert_int_equal(parses(""), -EINVAL);
    /* too few chunks, too many, and too few before the next file */
    snprintf(buf, sizeof buf, "strata-layer 1\n" FILE_A "%s\nzero 1\n", D);
    assert_int_equal(parses(buf), -EINVAL);
    snprintf(buf, sizeof buf, "strata-layer 1\n" FILE_A "%s\nzero 3\n", D);
    assert_int_equal(parses(buf), -EINVAL);
    snprintf(buf, sizeof buf, "strata-layer 1\n" FILE_A "%s\nzero 2\n%s\n", D, D);
    assert_int_equal(parses(buf), -EINVAL);
    snprintf(buf, sizeof buf, "strata-layer 1\n" FILE_A "%s\n" FILE_B, D);
    assert_int_equal(parses(buf), -EINVAL);
    snprintf(buf, sizeof buf, "strata-layer 1\n" FILE_B "%s\n", D);
    assert_int_equal(parses(buf), -EINVAL);
    /* chunk size: a power of two from 4 KiB to 64 MiB */
    assert_int_equal(parses("strata-layer 1\nfile c 0 0644 3000000\n"), -EINVAL);
    assert_int_equal(parses("strata-layer 1\nfile c 0 0644 3145728\n"), -EINVAL);
    assert_int_equal(parses("strata-layer 1\nfile c 0 0644 2048\n"), -EINVAL);
    assert_int_equal(parses("strata-layer 1\nfile c 0 0644 134217728\n"), -EINVAL);
    assert_int_equal(parses("strata-layer 1\nfile c 0 0644 4096\n"), 0);
    assert_int_equal(parses("strata-layer 1\nfile c 0 0644 67108864\n"), 0);
    /* size: 4 TiB at most */
    assert_int_equal(parses("strata-layer 1\nfile big 4398046511105 0644 67108864\nzero 65537\n"),
                     -EINVAL);
    assert_int_equal(parses("strata-layer 1\nfile big 4398046511104 0644 67108864\nzero 65536\n"),
                     0);
    /* lines nobody knows, before and after the files */
    snprintf(buf, sizeof buf, "strata-layer 1\n" FILE_A "%s\nzero 2\n" FILE_B "hello world\n", D);
    assert_int_equal(parses(buf), -EINVAL);
    assert_int_equal(parses("strata-layer 1\nhello world\n" FILE_B), -EINVAL);
    assert_int_equal(parses("strata-layer 2\n" FILE_B), -EINVAL);
    assert_int_equal(parses("strata-layer 1\n\n" FILE_B), -EINVAL);
    /* numbers in canonical form only */
    assert_int_equal(parses("strata-layer 1\nfile b 00 0644 1048576\n"), -EINVAL);
    assert_int_equal(parses("strata-layer 1\nfile b 0 644 1048576\n"), -EINVAL);
    assert_int_equal(parses("strata-layer 1\nfile b 0 +644 1048576\n"), -EINVAL);
    assert_int_equal(parses("strata-layer 1\nfile b 0 0644 1048576 \n"), -EINVAL);
    /* a NUL byte anywhere */
    static const char nul[] = "strata-layer 1\nfile a\0b 0 0644 1048576\n";
    int rc;
    store_layer *l = parse(nul, sizeof nul - 1, &rc);
    assert_int_equal(rc, -EINVAL);
    store_layer_free(l);
    static const char nul_end[] = "strata-layer 1\nfile b 0 0644 1048576\n\0";
    l = parse(nul_end, sizeof nul_end - 1, &rc);
    assert_int_equal(rc, -EINVAL);
    store_layer_free(l);
    /* parent first, bindings next and sorted, files last */
    char parent[200];
    snprintf(parent, sizeof parent, "parent %s\n", D);
    snprintf(buf, sizeof buf, "strata-layer 1\n%sbind a 1\nbind b 2\n" FILE_B, parent);
    assert_int_equal(parses(buf), 0);
    snprintf(buf, sizeof buf, "strata-layer 1\nbind a 1\n%s" FILE_B, parent);
    assert_int_equal(parses(buf), -EINVAL);
    snprintf(buf, sizeof buf, "strata-layer 1\n%sbind b 2\nbind a 1\n" FILE_B, parent);
    assert_int_equal(parses(buf), -EINVAL);
    snprintf(buf, sizeof buf, "strata-layer 1\n%s%s" FILE_B, parent, parent);
    assert_int_equal(parses(buf), -EINVAL);
    snprintf(buf, sizeof buf, "strata-layer 1\n" FILE_B "%s", parent);
    assert_int_equal(parses(buf), -EINVAL);
    assert_int_equal(parses("strata-layer 1\nbind A 1\n" FILE_B), -EINVAL);
#undef FILE_A
#undef FILE_B
}

/* SHA-256 of n zero bytes, as hex */
static void zeros_hex(size_t n, char out[65])
{
    unsigned char *z = calloc(1, n ? n : 1), d[32];
    assert_non_null(z);
    st_sha256(z, n, d);
    hex_encode(d, 32, out);
    free(z);
}

static int parse_error_has(const char *text, const char *why)
{
    int rc = parses(text);
    if (rc != -EINVAL || !strstr(store_error(), why))
        fail_msg("wanted '%s', got %d: %s", why, rc, store_error());
    return 1;
}

/* runs that claim huge files in a line or two */
static const char *const huge_runs[] = {
    "strata-layer 1\nfile a 34359738368 0644 4096\nzero 8388608\n",
    "strata-layer 1\nfile a 17179869184 0644 4096\nzero 4194304\n"
    "file b 17179869184 0644 4096\nzero 4194304\n",
    "strata-layer 1\nfile a 4398046511104 0644 4096\nzero 1073741824\n",
    "strata-layer 1\nfile a 4398046511104 0644 1048576\nzero 4194304\n",
};
static const int huge_want[] = {0, 0, -EINVAL, 0};

static void test_manifest_hostile(void **state)
{
    (void)state;
    char Z[65], buf[512];
    /* a data line that is the hash of an all-zero chunk: full, and short last */
    zeros_hex(4096, Z);
    snprintf(buf, sizeof buf, "strata-layer 1\nfile a 8192 0644 4096\nzero 1\n%s\n", Z);
    assert_true(parse_error_has(buf, "line 4: a chunk of all zeros must be written as a zero run"));
    zeros_hex(1 * MiB, Z);
    snprintf(buf, sizeof buf, "strata-layer 1\nfile a 1048576 0644 1048576\n%s\n", Z);
    assert_true(parse_error_has(buf, "all zeros"));
    zeros_hex(100, Z);
    snprintf(buf, sizeof buf, "strata-layer 1\nfile a 4196 0644 4096\nzero 1\n%s\n", Z);
    assert_true(parse_error_has(buf, "all zeros"));
    /* the hash of 100 zeros is fine where the chunk is 4096 bytes long */
    snprintf(buf, sizeof buf, "strata-layer 1\nfile a 8192 0644 4096\nzero 1\n%s\n", Z);
    assert_int_equal(parses(buf), 0);
    assert_true(st_digest_is_zero((unsigned char[32]){0}, 0) == 0);

    /* dot-names: the clone marker, hidden files, temporary names */
    assert_true(parse_error_has("strata-layer 1\nfile .strata 0 0644 4096\n",
                                "not starting with '.'"));
    assert_true(parse_error_has("strata-layer 1\nfile .a 0 0644 4096\n", "line 2"));
    assert_int_equal(parses("strata-layer 1\nfile .. 0 0644 4096\n"), -EINVAL);
    assert_int_equal(parses("strata-layer 1\nfile a. 0 0644 4096\n"), 0);
    assert_false(st_name_valid(".strata"));
    assert_false(st_name_valid(".Disk.img.tmp-1"));
    assert_true(st_name_valid("Disk.img"));

    /* bindings: values are bounded too */
    char *big = malloc(ST_MAX_BIND_VALUE + 40);
    assert_non_null(big);
    memset(big, 'v', ST_MAX_BIND_VALUE + 1);
    big[ST_MAX_BIND_VALUE + 1] = 0;
    char *m = NULL;
    assert_true(asprintf(&m, "strata-layer 1\nbind k %s\n", big) > 0);
    assert_true(parse_error_has(m, "1024 bytes at most"));
    free(m);
    big[ST_MAX_BIND_VALUE] = 0;
    assert_true(asprintf(&m, "strata-layer 1\nbind k %s\n", big) > 0);
    assert_int_equal(parses(m), 0);
    free(m);
    free(big);

    for (size_t i = 0; i < 4; i++)
        assert_int_equal(parses(huge_runs[i]), huge_want[i]);

    /* 4096 short last chunks of almost 64 MiB: checking each for zeros must
     * not mean hashing 256 GiB of zeros (minutes); it takes well under 30 s */
    sbuf many = {0};
    sbuf_printf(&many, "strata-layer 1\n");
    unsigned char d[32];
    char hex[65];
    for (int i = 0; i < ST_MAX_FILES; i++) {
        st_sha256(&i, sizeof i, d);
        hex_encode(d, 32, hex);
        sbuf_printf(&many, "file f%04d %u 0644 67108864\n%s\n", i, (64u << 20) - 1 - i, hex);
    }
    assert_false(many.oom);
    time_t t0 = time(NULL);
    assert_int_equal(parses(many.data), 0);
    assert_true(time(NULL) - t0 < 30);
    free(many.data);
}

/* A huge zero run costs nothing: parsed under an address space limit that
 * a dense table of its chunks (300 MB for 2^23) could never fit in. */
static void test_manifest_zero_run_memory(void **state)
{
    (void)state;
    const char *const *runs = huge_runs;
    const int *want = huge_want;
#if defined(__SANITIZE_ADDRESS__)
    int sanitized = 1;
#else
    int sanitized = getenv("STRATA_SANITIZED") != NULL;
#endif
    if (sanitized) {
        skip_because("a sanitizer reserves terabytes of address space, so no limit "
                     "can be set; test_manifest_hostile checked the results\n");
    }
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* 64 MiB more than now: a dense table of 2^23 chunks is 300 MB */
        FILE *st = fopen("/proc/self/statm", "r");
        unsigned long pages = 0;
        if (!st || fscanf(st, "%lu", &pages) != 1)
            _exit(3);
        fclose(st);
        rlim_t lim = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (64u << 20);
        struct rlimit rl = {lim, lim};
        if (setrlimit(RLIMIT_AS, &rl))
            _exit(4);
        for (size_t i = 0; i < 4; i++) {
            store_layer l = {0};
            int rc = st_manifest_parse(runs[i], strlen(runs[i]), &l);
            if (rc != want[i])
                _exit(10 + (int)i);
            store_file *files = l.files;
            for (size_t k = 0; k < l.nfiles; k++)
                if (files[k].ndata || files[k].data)
                    _exit(20);
            sbuf out = {0};
            if (rc == 0 && (st_manifest_format(&l, &out) || out.len != strlen(runs[i]) ||
                            memcmp(out.data, runs[i], out.len)))
                _exit(30 + (int)i);
            free(out.data);
            for (size_t k = 0; k < l.nfiles; k++)
                free(files[k].name);
            free(files);
        }
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* The manifest bound is derived from the longest line of each kind: check
 * those lengths against real lines. */
static void test_manifest_bounds(void **state)
{
    (void)state;
    store_file file = {0};
    char name[ST_MAX_NAME + 1];
    memset(name, ' ', ST_MAX_NAME); /* every byte escaped: the longest encoding */
    name[ST_MAX_NAME] = 0;
    file.name = name;
    file.size = ST_MAX_FILE_SIZE;
    file.mode = 0777;
    file.chunk_size = 64u << 20;
    file.nchunks = (size_t)(ST_MAX_FILE_SIZE / file.chunk_size);
    char key[ST_MAX_BIND_KEY + 1], value[ST_MAX_BIND_VALUE + 1];
    memset(key, 'k', ST_MAX_BIND_KEY);
    key[ST_MAX_BIND_KEY] = 0;
    memset(value, '%', ST_MAX_BIND_VALUE);
    value[ST_MAX_BIND_VALUE] = 0;
    store_binding b = {key, value};
    store_layer l = {0};
    l.has_parent = 1;
    memset(l.parent.hex, 'a', 64);
    l.files = &file;
    l.nfiles = 1;
    l.bindings = &b;
    l.nbindings = 1;
    sbuf out = {0};
    assert_int_equal(st_manifest_format(&l, &out), 0);
    size_t zero = strlen("zero 65536\n");
    assert_int_equal(out.len, ST_HEAD_LINE_MAX + ST_PARENT_LINE_MAX + ST_BIND_LINE_MAX +
                                ST_FILE_LINE_MAX + zero);
    assert_true(zero <= ST_ZERO_LINE_MAX);
    assert_true(snprintf(NULL, 0, "zero %llu\n", (unsigned long long)ST_MAX_CHUNKS) ==
                ST_ZERO_LINE_MAX);
    int rc;
    store_layer *p = parse(out.data, out.len, &rc);
    assert_int_equal(rc, 0);
    store_layer_free(p);
    free(out.data);
    /* what the reader takes covers the fullest layer import may make, and
     * stays within what a machine can hold */
    /* the writer refuses what a reader would */
    store_layer over = {0};
    char fname[] = "a", dname[] = ".a";
    store_file big_file = {.name = fname, .size = (ST_MAX_CHUNKS + 1) * 4096, .mode = 0644,
                           .chunk_size = 4096, .nchunks = ST_MAX_CHUNKS + 1};
    over.files = &big_file;
    over.nfiles = 1;
    sbuf none = {0};
    assert_int_equal(st_manifest_format(&over, &none), -E2BIG);
    assert_non_null(strstr(store_error(), "use a larger --chunk-size"));
    big_file.name = dname;
    big_file.size = 0;
    big_file.nchunks = 0;
    assert_int_equal(st_manifest_format(&over, &none), -EINVAL);
    assert_null(none.data);
    assert_true(ST_MANIFEST_MAX >= ST_MAX_DATA_CHUNKS * (ST_DATA_LINE_MAX + ST_ZERO_LINE_MAX));
    assert_true(ST_MANIFEST_MAX < (400u << 20));
    assert_true(ST_MAX_DATA_CHUNKS * STORE_DEFAULT_CHUNK >= ST_MAX_FILE_SIZE);
}

static void test_encode_decode(void **state)
{
    (void)state;
    char *e = st_encode("a b/c%d");
    assert_non_null(e);
    assert_string_equal(e, "a%20b%2Fc%25d");
    char *d = st_decode(e);
    assert_non_null(d);
    assert_string_equal(d, "a b/c%d");
    free(e);
    free(d);
    /* plain bytes stay plain */
    e = st_encode("Az09._+-");
    assert_string_equal(e, "Az09._+-");
    free(e);
    e = st_encode("\xe9t\xe9");
    assert_string_equal(e, "%E9t%E9");
    d = st_decode(e);
    assert_string_equal(d, "\xe9t\xe9");
    free(e);
    free(d);
    e = st_encode("");
    assert_string_equal(e, "");
    free(e);
    /* only the canonical encoding decodes */
    assert_null(st_decode("a%2fb"));
    assert_null(st_decode("%e9"));
    assert_null(st_decode("a%2Fc%2f"));
    assert_null(st_decode("%41"));    /* a plain byte, escaped */
    assert_null(st_decode("%00"));    /* NUL */
    assert_null(st_decode("a b"));    /* a byte that must be escaped, raw */
    assert_null(st_decode("a/b"));
    assert_null(st_decode("%2"));     /* cut short */
    assert_null(st_decode("%"));
    assert_null(st_decode("%G0"));
    d = st_decode("a%2Fb");
    assert_string_equal(d, "a/b");
    free(d);
}

static void test_tag_valid(void **state)
{
    (void)state;
    static const char *const good[] = {"macos-base", "macos-base:xcode16", "a", "x.y_z-1:V1.2",
                                       "0", "a:_b", "a:B-.c"};
    static const char *const bad[] = {"", "Bad", "-x", ".x", "a:", "a:.b", "a:-b", "a/b",
                                      "a:b:c", "_x", ":x", "a b", "a:b/c", "a:b c", "x\n"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        if (!store_tag_valid(good[i]))
            fail_msg("'%s' should be a valid tag", good[i]);
    }
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (store_tag_valid(bad[i]))
            fail_msg("'%s' should not be a valid tag", bad[i]);
    }
    char longest[130];
    memset(longest, 'a', sizeof longest);
    longest[128] = 0;
    assert_int_equal(store_tag_valid(longest), 1);
    longest[128] = 'a';
    longest[129] = 0;
    assert_int_equal(store_tag_valid(longest), 0);
}

/* ---------- import, clone, commit, diff, fsck ---------- */

static void test_import_clone_commit(void **state)
{
    fixture *f = *state;
    int reflink = reflink_works(f->dir);
    char *bundle = path_in(f->dir, "bundle");
    make_bundle(bundle, 64 * MiB);

    store_commit_opts o = {.message = "base", .tag = "macos-base"};
    store_commit_result r;
    int rc = store_import(f->st, bundle, &o, &r);
    if (rc)
        fail_msg("store_import: %s", store_error());
    assert_true(st_id_valid(r.id.hex));
    assert_int_equal(r.existed, 0);
    assert_int_equal(r.reflinked, reflink);
    store_id root = r.id, got;
    assert_int_equal(store_resolve(f->st, "macos-base", &got), 0);
    assert_string_equal(got.hex, root.hex);

    /* bytes_added: whole data chunks; written zeros and holes count nothing */
    char *hw = path_in(bundle, "HardwareModel"), *mid = path_in(bundle, "MachineIdentifier");
    uint64_t plists = file_size(hw) + file_size(mid);
    assert_int_equal(r.bytes_added, 2 * MiB + 1 * MiB + plists);

    store_layer *l = NULL;
    assert_int_equal(store_layer_load(f->st, &root, &l), 0);
    assert_int_equal(l->has_parent, 0);
    assert_string_equal(l->message, "base");
    assert_int_equal(l->bytes_added, r.bytes_added);
    assert_int_equal(l->nfiles, 4);
    assert_string_equal(l->files[0].name, "AuxiliaryStorage");
    assert_string_equal(l->files[1].name, "Disk.img");
    assert_string_equal(l->files[2].name, "HardwareModel");
    assert_string_equal(l->files[3].name, "MachineIdentifier");
    const store_file *disk = find_file(l, "Disk.img");
    assert_int_equal(disk->size, 64 * MiB);
    assert_int_equal(disk->chunk_size, STORE_DEFAULT_CHUNK);
    assert_int_equal(disk->nchunks, 64);
    assert_int_equal(disk->mode, 0644);
    for (size_t c = 0; c < disk->nchunks; c++)
        assert_int_equal(store_file_chunk(disk, c) != NULL, c == 0 || c == 10);
    assert_int_equal(disk->ndata, 2);
    store_layer_free(l);

    /* the materialized file: read-only, and the zeros written at 20 MiB punched out */
    char *disk_path = store_layer_file_path(f->st, &root, "Disk.img");
    struct stat s;
    assert_int_equal(stat(disk_path, &s), 0);
    assert_int_equal(s.st_mode & 0777, 0444);
    int fd = open(disk_path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    uint64_t data, hole;
    rc = clone_next_data(fd, 20 * MiB, 64 * MiB, &data, &hole);
    assert_true(rc == -ENXIO || (rc == 0 && data >= 21 * MiB));
    close(fd);

    store_identity ident;
    assert_int_equal(store_layer_identity(f->st, &root, &ident), 0);
    assert_int_equal(ident.has_hardware_model, 1);
    assert_int_equal(ident.platform_version, 2);
    assert_int_equal(ident.data_representation_version, 1);
    assert_string_equal(ident.minimum_supported_os, "13.0.0");
    assert_int_equal(ident.has_machine_identifier, 1);
    assert_int_equal(ident.ecid, TEST_ECID);

    /* the same bundle again: the same layer, already there */
    store_commit_opts plain = {0};
    assert_int_equal(store_import(f->st, bundle, &plain, &r), 0);
    assert_string_equal(r.id.hex, root.hex);
    assert_int_equal(r.existed, 1);
    assert_int_equal(count_layers(f->st), 1);

    /* the same bundle into another store: the same id */
    char *home2 = path_in(f->dir, "store2");
    store *st2 = NULL;
    assert_int_equal(store_open(home2, &st2), 0);
    assert_int_equal(store_import(st2, bundle, &plain, &r), 0);
    assert_string_equal(r.id.hex, root.hex);
    assert_int_equal(r.existed, 0);
    store_close(st2);

    /* clone, write as a guest would, commit */
    char *inst = path_in(f->dir, "inst");
    int reflinked = -1;
    rc = store_clone(f->st, "macos-base", inst, &reflinked);
    if (rc)
        fail_msg("store_clone: %s", store_error());
    assert_int_equal(reflinked, reflink);
    assert_int_equal(store_instance_layer(f->st, inst, &got), 0);
    assert_string_equal(got.hex, root.hex);
    /* a second clone onto the same directory is refused */
    assert_int_equal(store_clone(f->st, "macos-base", inst, NULL), -EEXIST);

    char *inst_disk = path_in(inst, "Disk.img");
    assert_int_equal(stat(inst_disk, &s), 0);
    assert_int_equal(s.st_mode & 0777, 0644);
    assert_int_equal(s.st_size, 64 * MiB);
    fd = open(inst_disk, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    write_random(fd, 5 * MiB + 100, 4 * KiB, 101);          /* chunk 5, a hole before */
    write_random(fd, 30 * MiB + 512 * KiB, 1536 * KiB, 102); /* chunks 30 and 31 */
    write_random(fd, 512 * KiB, 4 * KiB, 103);               /* chunk 0, data before */
    close(fd);
    const uint64_t written_chunks = 4;

    store_commit_opts co = {.message = "child", .tag = "macos-base:child"};
    rc = store_commit(f->st, inst, &co, &r);
    if (rc)
        fail_msg("store_commit: %s", store_error());
    store_id child = r.id;
    assert_string_not_equal(child.hex, root.hex);
    assert_int_equal(r.existed, 0);
    assert_int_equal(r.bytes_added, written_chunks * MiB);
    print_message("commit: bytes_read %llu, chunks_reused %llu, reflinked %d\n",
                  (unsigned long long)r.bytes_read, (unsigned long long)r.chunks_reused,
                  r.reflinked);
    assert_int_equal(r.reflinked, reflink);
    if (reflink) {
        /* unchanged chunks are known from the extent maps, not read */
        assert_true(r.chunks_reused >= 2);
        assert_true(r.bytes_read <= written_chunks * MiB + 64 * KiB);
    }
    assert_int_equal(store_resolve(f->st, "macos-base:child", &got), 0);
    assert_string_equal(got.hex, child.hex);
    assert_int_equal(store_instance_layer(f->st, inst, &got), 0);
    assert_string_equal(got.hex, child.hex);
    assert_int_equal(store_layer_load(f->st, &child, &l), 0);
    assert_int_equal(l->has_parent, 1);
    assert_string_equal(l->parent.hex, root.hex);
    assert_string_equal(l->message, "child");
    assert_int_equal(l->bytes_added, written_chunks * MiB);
    store_layer_free(l);

    store_diff_entry *dv = NULL;
    size_t dn = 0;
    assert_int_equal(store_diff(f->st, &root, &child, &dv, &dn), 0);
    assert_int_equal(dn, 4);
    const store_diff_entry *de = find_diff(dv, dn, "Disk.img");
    assert_non_null(de);
    assert_true(de->in_a && de->in_b);
    assert_int_equal(de->chunks_changed, written_chunks);
    assert_int_equal(de->bytes_changed, written_chunks * MiB);
    assert_int_equal(de->size_a, 64 * MiB);
    assert_int_equal(de->size_b, 64 * MiB);
    static const char *const same[] = {"AuxiliaryStorage", "HardwareModel", "MachineIdentifier"};
    for (size_t i = 0; i < 3; i++) {
        de = find_diff(dv, dn, same[i]);
        assert_non_null(de);
        assert_int_equal(de->chunks_changed, 0);
        assert_int_equal(de->bytes_changed, 0);
    }
    store_diff_free(dv, dn);

    /* and a layer against itself differs nowhere */
    assert_int_equal(store_diff(f->st, &child, &child, &dv, &dn), 0);
    for (size_t i = 0; i < dn; i++)
        assert_int_equal(dv[i].chunks_changed, 0);
    store_diff_free(dv, dn);

    report_buf rep = {{0}, 0};
    rc = store_fsck(f->st, 0, collect, &rep);
    if (rc)
        fail_msg("store_fsck found %d problems:\n%s", rc, rep.text);

    /* one byte of the root layer's Disk.img changes behind the store's back */
    assert_int_equal(chmod(disk_path, 0644), 0);
    fd = open(disk_path, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    unsigned char byte;
    assert_int_equal(pread(fd, &byte, 1, 100), 1);
    byte ^= 0xFF;
    pwrite_all(fd, &byte, 1, 100);
    assert_int_equal(fsync(fd), 0);
    close(fd);
    memset(&rep, 0, sizeof rep);
    rc = store_fsck(f->st, 0, collect, &rep);
    assert_true(rc > 0);
    assert_non_null(strstr(rep.text, root.hex));
    assert_non_null(strstr(rep.text, "does not match its hash"));
    /* quick fsck reads every stored byte too, against the seals */
    memset(&rep, 0, sizeof rep);
    rc = store_fsck(f->st, 1, collect, &rep);
    assert_int_equal(rc, 1);
    char want[200];
    snprintf(want, sizeof want, "layer %s: Disk.img chunk 0 does not match its seal", root.hex);
    if (!strstr(rep.text, want))
        fail_msg("quick fsck said:\n%s", rep.text);

    free(inst_disk);
    free(inst);
    free(home2);
    free(disk_path);
    free(hw);
    free(mid);
    free(bundle);
}

/* ---------- import errors ---------- */

typedef enum {
    NO_DISK,
    DISK_1000,
    GARBAGE_HW,
    TRUNCATED_MID,
    HUGE_HW,
    SYMLINK,
    UNSORTED_BINDINGS,
} breakage;

static void import_fails(fixture *f, breakage how, const char *want)
{
    static int serial;
    char name[64];
    snprintf(name, sizeof name, "bundle-%d", serial++);
    char *b = path_in(f->dir, name);
    make_bundle(b, 4 * MiB);
    char *disk = path_in(b, "Disk.img"), *hw = path_in(b, "HardwareModel");
    char *mid = path_in(b, "MachineIdentifier"), *link = path_in(b, "Notes");
    store_commit_opts o = {.tag = "broken"};
    char k0[] = "zz", v0[] = "1", k1[] = "aa", v1[] = "2";
    store_binding binds[2] = {{k0, v0}, {k1, v1}};
    switch (how) {
    case NO_DISK:
        assert_int_equal(unlink(disk), 0);
        break;
    case DISK_1000:
        assert_int_equal(truncate(disk, 1000), 0);
        break;
    case GARBAGE_HW: {
        unsigned char junk[300];
        fill_random(junk, sizeof junk, 5);
        put_file(hw, junk, sizeof junk);
        break;
    }
    case TRUNCATED_MID: {
        unsigned char *data;
        size_t len;
        read_whole(mid, &data, &len);
        assert_true(len > 16);
        assert_memory_equal(data, "bplist00", 8);
        put_file(mid, data, len / 2);
        free(data);
        break;
    }
    case HUGE_HW:
        assert_int_equal(truncate(hw, 2 * MiB), 0);
        break;
    case SYMLINK:
        assert_int_equal(symlink("Disk.img", link), 0);
        break;
    case UNSORTED_BINDINGS:
        o.bindings = binds;
        o.nbindings = 2;
        break;
    }
    store_commit_result r;
    int rc = store_import(f->st, b, &o, &r);
    assert_true(rc < 0);
    if (!strstr(store_error(), want))
        fail_msg("import error '%s' does not say '%s'", store_error(), want);
    assert_int_equal(count_layers(f->st), 0);
    char *tmp = path_in(f->home, "tmp"), *tags = path_in(f->home, "refs/tags");
    assert_int_equal(count_entries(tmp), 0);
    assert_int_equal(count_entries(tags), 0);
    store_id id;
    assert_int_equal(store_resolve(f->st, "broken", &id), -ENOENT);
    free(tmp);
    free(tags);
    free(disk);
    free(hw);
    free(mid);
    free(link);
    free(b);
}

static void test_import_errors(void **state)
{
    fixture *f = *state;
    import_fails(f, NO_DISK, "no Disk.img");
    import_fails(f, DISK_1000, "not a multiple of 512");
    import_fails(f, GARBAGE_HW, "not a property list");
    import_fails(f, TRUNCATED_MID, "not a property list");
    import_fails(f, HUGE_HW, "too large");
    import_fails(f, SYMLINK, "symbolic link");
    /* one that fails after work began under tmp/ */
    import_fails(f, UNSORTED_BINDINGS, "sorted");

    /* a bundle that is not there at all */
    char *none = path_in(f->dir, "no-such-bundle");
    store_commit_opts o = {0};
    store_commit_result r;
    assert_int_equal(store_import(f->st, none, &o, &r), -ENOENT);
    free(none);
    /* a bad tag is refused before anything is read */
    char *b = path_in(f->dir, "good");
    make_bundle(b, 4 * MiB);
    o.tag = "Bad Tag";
    assert_int_equal(store_import(f->st, b, &o, &r), -EINVAL);
    assert_non_null(strstr(store_error(), "bad tag name"));
    assert_int_equal(count_layers(f->st), 0);
    /* and the same bundle, unbroken, imports */
    o.tag = "good";
    assert_int_equal(store_import(f->st, b, &o, &r), 0);
    assert_int_equal(count_layers(f->st), 1);
    free(b);
}

/* ---------- gc ---------- */

static void import_small(fixture *f, const char *name, const char *tag, store_id *id)
{
    char *b = path_in(f->dir, name);
    make_bundle(b, 4 * MiB);
    store_commit_opts o = {.tag = tag};
    store_commit_result r;
    int rc = store_import(f->st, b, &o, &r);
    if (rc)
        fail_msg("store_import: %s", store_error());
    *id = r.id;
    free(b);
}

static void test_gc(void **state)
{
    fixture *f = *state;
    store_gc_result g;
    store_id id, got;

    /* untagged, never cloned: collected */
    import_small(f, "b1", "t1", &id);
    assert_int_equal(store_gc(f->st, &g), 0);
    assert_int_equal(g.layers_removed, 0);
    assert_int_equal(count_layers(f->st), 1);
    assert_int_equal(store_untag(f->st, "t1"), 0);
    assert_int_equal(store_untag(f->st, "t1"), -ENOENT);
    assert_int_equal(store_gc(f->st, &g), 0);
    assert_int_equal(g.layers_removed, 1);
    assert_int_equal(g.instances_forgotten, 0);
    assert_true(g.bytes_freed > 0);
    assert_int_equal(count_layers(f->st), 0);
    assert_false(st_layer_exists(f->st, &id));
    assert_int_equal(store_resolve(f->st, id.hex, &got), -ENOENT);

    /* untagged but with a live clone: kept until the clone is gone */
    import_small(f, "b2", "t2", &id);
    char *inst = path_in(f->dir, "inst");
    int rc = store_clone(f->st, "t2", inst, NULL);
    if (rc)
        fail_msg("store_clone: %s", store_error());
    assert_int_equal(store_untag(f->st, "t2"), 0);
    assert_int_equal(store_gc(f->st, &g), 0);
    assert_int_equal(g.layers_removed, 0);
    assert_int_equal(g.instances_forgotten, 0);
    assert_true(st_layer_exists(f->st, &id));
    assert_int_equal(count_layers(f->st), 1);
    store_usage u;
    assert_int_equal(store_df(f->st, &u), 0);
    assert_int_equal(u.layers, 1);
    assert_int_equal(u.instances, 1);
    assert_int_equal(u.tags, 0);

    /* a deleted clone's record keeps its layer until clones --prune forgets it */
    assert_int_equal(st_rm_rf(inst), 0);
    assert_int_equal(store_gc(f->st, &g), 0);
    assert_int_equal(g.layers_removed, 0);
    assert_int_equal(g.clones_missing, 1);
    size_t forgotten;
    assert_int_equal(store_clones_prune(f->st, STORE_CLONE_PRUNE_EXPIRE, &forgotten), 0);
    assert_int_equal(forgotten, 0); /* written just now: within its grace period */
    assert_int_equal(store_clones_prune(f->st, 0, &forgotten), 0);
    assert_int_equal(forgotten, 1);
    /* forgetting the record starts the layer's grace period */
    assert_int_equal(store_gc_expire(f->st, STORE_GC_PRUNE_EXPIRE, &g), 0);
    assert_int_equal(g.layers_removed, 0);
    assert_int_equal(g.layers_waiting, 1);
    assert_int_equal(store_gc(f->st, &g), 0);
    assert_int_equal(g.layers_removed, 1);
    assert_int_equal(count_layers(f->st), 0);
    char *instances = path_in(f->home, "instances");
    assert_int_equal(count_entries(instances), 0);
    /* nothing left to do */
    assert_int_equal(store_gc(f->st, &g), 0);
    assert_int_equal(g.layers_removed + g.instances_forgotten + g.tmp_removed, 0);

    /* a parent reached only through its tagged child is kept */
    import_small(f, "b3", "t3", &id);
    assert_int_equal(store_clone(f->st, "t3", inst, NULL), 0);
    char *disk = path_in(inst, "Disk.img");
    int fd = open(disk, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    write_random(fd, 2 * MiB, 4 * KiB, 9);
    close(fd);
    store_commit_opts co = {.tag = "t3:child"};
    store_commit_result r;
    rc = store_commit(f->st, inst, &co, &r);
    if (rc)
        fail_msg("store_commit: %s", store_error());
    assert_int_equal(st_rm_rf(inst), 0);
    assert_int_equal(store_clones_prune(f->st, 0, &forgotten), 0);
    assert_int_equal(forgotten, 1);
    assert_int_equal(store_untag(f->st, "t3"), 0);
    assert_int_equal(store_gc(f->st, &g), 0);
    assert_int_equal(g.layers_removed, 0);
    assert_true(st_layer_exists(f->st, &id));
    assert_int_equal(count_layers(f->st), 2);
    /* a clone strata deletes itself (an ephemeral instance) leaves no record */
    assert_int_equal(store_clone(f->st, "t3:child", inst, NULL), 0);
    assert_int_equal(count_entries(instances), 1);
    assert_int_equal(store_clone_delete(f->st, inst), 0);
    assert_int_equal(count_entries(instances), 0);
    assert_int_equal(access(inst, F_OK), -1);
    assert_int_equal(store_untag(f->st, "t3:child"), 0);
    assert_int_equal(store_gc(f->st, &g), 0);
    assert_int_equal(g.layers_removed, 2);
    assert_int_equal(count_layers(f->st), 0);
    report_buf rep = {{0}, 0};
    assert_int_equal(store_fsck(f->st, 0, collect, &rep), 0);
    free(disk);
    free(instances);
    free(inst);
}

/* ---------- seals and fsck --quick ---------- */

static char *seals_path(fixture *f, const store_id *id)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/layers/%s/seals", f->home, id->hex) > 0);
    return p;
}

static int fsck_says(fixture *f, int quick, const char *text, report_buf *rep)
{
    memset(rep, 0, sizeof *rep);
    int rc = store_fsck(f->st, quick, collect, rep);
    if (text && !strstr(rep->text, text))
        fail_msg("fsck%s said:\n%s\nnot: %s", quick ? " --quick" : "", rep->text, text);
    return rc;
}

/* overwrite n bytes of a layer's file at off, as damage would */
static void damage(fixture *f, const store_id *id, const char *name, uint64_t off, const void *b,
                   size_t n)
{
    char *p = store_layer_file_path(f->st, id, name);
    assert_int_equal(chmod(p, 0644), 0);
    int fd = open(p, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    pwrite_all(fd, b, n, off);
    assert_int_equal(fsync(fd), 0);
    close(fd);
    free(p);
}

static void test_seals(void **state)
{
    fixture *f = *state;
    store_id id;
    report_buf rep;
    char want[300];
    import_small(f, "b", "t", &id);
    char *sp = seals_path(f, &id);
    struct stat s;
    assert_int_equal(stat(sp, &s), 0);
    /* header, and a line per data chunk: Disk.img 1, aux 1, plists 2 */
    assert_int_equal(s.st_size, 23 + 65 + 4 * 17);
    assert_int_equal(fsck_says(f, 1, "ok (quick", &rep), 0);

    /* a layer from before seals: noted, not passed silently; full fsck seals it */
    assert_int_equal(unlink(sp), 0);
    snprintf(want, sizeof want, "layer %s: no seals: run full fsck to verify (and seal) it",
             id.hex);
    assert_int_equal(fsck_says(f, 1, want, &rep), 0);
    snprintf(want, sizeof want, "layer %s: sealed", id.hex);
    assert_int_equal(fsck_says(f, 0, want, &rep), 0);
    assert_int_equal(stat(sp, &s), 0);
    assert_int_equal(fsck_says(f, 1, "ok (quick", &rep), 0);
    assert_null(strstr(rep.text, "no seals"));

    /* a wrong seal: quick says the chunk; full finds the data right and reseals */
    char *text = NULL;
    size_t len;
    assert_int_equal(file_read_all(sp, 1 << 20, &text, &len), 0);
    text[88] = text[88] == '0' ? '1' : '0'; /* the first seal: AuxiliaryStorage chunk 0 */
    assert_int_equal(unlink(sp), 0);
    put_file(sp, text, len);
    free(text);
    snprintf(want, sizeof want, "layer %s: AuxiliaryStorage chunk 0 does not match its seal",
             id.hex);
    assert_int_equal(fsck_says(f, 1, want, &rep), 1);
    assert_int_equal(fsck_says(f, 0, "matches its hash but not its seal", &rep), 1);
    assert_non_null(strstr(rep.text, "sealed"));
    assert_int_equal(fsck_says(f, 1, "ok (quick", &rep), 0);
    /* a seals file cut short, or another layer's */
    assert_int_equal(chmod(sp, 0644), 0); /* as its owner could */
    assert_int_equal(truncate(sp, 40), 0);
    assert_int_equal(fsck_says(f, 1, "seals: damaged", &rep), 1);
    assert_int_equal(fsck_says(f, 0, "sealed", &rep), 1);
    assert_int_equal(fsck_says(f, 1, "ok (quick", &rep), 0);

    /* data where a zero chunk is (Disk.img chunk 2 is a hole) */
    damage(f, &id, "Disk.img", 2 * MiB + 5, "x", 1);
    snprintf(want, sizeof want, "layer %s: Disk.img chunks 1-3 should be zeros and are not",
             id.hex);
    assert_int_equal(fsck_says(f, 1, want, &rep), 1);
    assert_int_equal(fsck_says(f, 0, want, &rep), 1);
    assert_null(strstr(rep.text, "sealed"));
    damage(f, &id, "Disk.img", 2 * MiB + 5, "", 1);
    assert_int_equal(fsck_says(f, 1, "ok (quick", &rep), 0);
    /* a byte in the middle of a plist (a short, single chunk) */
    unsigned char one;
    char *hw = store_layer_file_path(f->st, &id, "HardwareModel");
    int fd = open(hw, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0 && pread(fd, &one, 1, 10) == 1);
    close(fd);
    free(hw);
    one ^= 1;
    damage(f, &id, "HardwareModel", 10, &one, 1);
    snprintf(want, sizeof want, "layer %s: HardwareModel chunk 0 does not match its seal", id.hex);
    assert_int_equal(fsck_says(f, 1, want, &rep), 1);
    assert_int_equal(fsck_says(f, 0, "HardwareModel chunk 0 does not match its hash", &rep), 1);
    free(sp);
}

/* A commit takes unread chunks' seals from its parent, and reads the
 * chunks of a parent that has none. */
static void test_seals_commit(void **state)
{
    fixture *f = *state;
    store_id id;
    report_buf rep;
    import_small(f, "b", "t", &id);
    char *inst = path_in(f->dir, "inst");
    for (int round = 0; round < 2; round++) {
        if (round == 1) { /* the parent made by an older strata */
            char *sp = seals_path(f, &id);
            assert_int_equal(unlink(sp), 0);
            free(sp);
        }
        st_rm_rf(inst);
        assert_int_equal(store_clone(f->st, "t", inst, NULL), 0);
        char *disk = path_in(inst, "Disk.img");
        int fd = open(disk, O_RDWR | O_CLOEXEC);
        assert_true(fd >= 0);
        write_random(fd, 3 * MiB, 4 * KiB, 50 + (uint64_t)round);
        close(fd);
        free(disk);
        store_commit_opts co = {.tag = round ? "t:old" : "t:new"};
        store_commit_result r;
        int rc = store_commit(f->st, inst, &co, &r);
        if (rc)
            fail_msg("store_commit: %s", store_error());
        if (round == 0 && reflink_works(f->dir))
            assert_true(r.chunks_reused > 0); /* with the parent's seals */
        if (round == 1)
            assert_int_equal(r.chunks_reused, 0); /* nothing to take seals from */
        char *sp = seals_path(f, &r.id);
        struct stat s;
        assert_int_equal(stat(sp, &s), 0);
        assert_int_equal(s.st_size, 23 + 65 + 5 * 17);
        free(sp);
        rc = fsck_says(f, 1, NULL, &rep);
        if (round == 0 && rc)
            fail_msg("fsck --quick: %s", rep.text);
        assert_int_equal(rc, 0);
        assert_int_equal(store_untag(f->st, co.tag), 0);
    }
    st_rm_rf(inst);
    free(inst);
}

/* ---------- bounds at import ---------- */

static void test_import_bounds(void **state)
{
    fixture *f = *state;
    /* the estimate counts chunks, and the chunks data regions touch */
    char *p = path_in(f->dir, "sparse");
    int fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)(64 * MiB)), 0);
    write_random(fd, 0, 8 * KiB, 1);            /* chunks 0-1 at 4K */
    write_random(fd, 1 * MiB, 12 * KiB, 2);     /* 256-258 */
    write_random(fd, 64 * MiB - 4 * KiB, 4 * KiB, 3);
    assert_int_equal(fsync(fd), 0);
    close(fd);
    uint64_t chunks = 0, data = 0;
    assert_int_equal(st_chunk_estimate(p, 4096, &chunks, &data), 0);
    assert_int_equal(chunks, 16384);
    assert_true(data >= 6 && data <= 16); /* exact where the fs reports holes */
    chunks = data = 0;
    assert_int_equal(st_chunk_estimate(p, 1u << 20, &chunks, &data), 0);
    assert_int_equal(chunks, 64);
    assert_true(data >= 3 && data <= 64);
    free(p);

    /* a bundle over the chunk bound at 4 KiB is refused before any work */
    store_id id;
    import_small(f, "b", "t", &id);
    char *b = path_in(f->dir, "big");
    make_bundle(b, 4 * MiB);
    char *disk = path_in(b, "Disk.img");
    assert_int_equal(truncate(disk, (off_t)((ST_MAX_CHUNKS + 1) * 4096)), 0);
    store_commit_opts o = {.tag = "big", .chunk_size = 4096};
    store_commit_result r;
    assert_int_equal(store_import(f->st, b, &o, &r), -E2BIG);
    assert_non_null(strstr(store_error(), "a layer holds at most 8388608 chunks, 4194304 of "
                                          "them data (use a larger --chunk-size)"));
    assert_int_equal(count_layers(f->st), 1);
    char *tmp = path_in(f->home, "tmp");
    assert_int_equal(count_entries(tmp), 0);
    store_id got;
    assert_int_equal(store_resolve(f->st, "big", &got), -ENOENT);
    /* at the default chunk size it is fine */
    o.chunk_size = 0;
    assert_int_equal(store_import(f->st, b, &o, &r), 0);
    free(tmp);
    free(disk);
    free(b);
}

/* ---------- saved states ---------- */

static int has_file(const char *dir, const char *name)
{
    char *p = path_in(dir, name);
    int yes = access(p, F_OK) == 0;
    free(p);
    return yes;
}

static void put_state(const char *dir)
{
    char *p = path_in(dir, "SaveFile.x");
    put_file(p, "state", 5);
    free(p);
}

/* What a suspend finds: an instance of tag t (a small import named b)
 * whose 8 MiB RAM file holds random bytes (seed) at [off, off + len), and a
 * state file. Returns the instance's path, which the caller frees. */
static char *instance_with_ram(fixture *f, uint64_t off, uint64_t len, unsigned seed)
{
    store_id root;
    import_small(f, "b", "t", &root);
    char *inst = path_in(f->dir, "inst"), *ram = path_in(inst, "SaveFile.ram");
    assert_int_equal(store_clone(f->st, "t", inst, NULL), 0);
    int fd = open(ram, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    write_random(fd, off, len, seed);
    assert_int_equal(ftruncate(fd, 8 * MiB), 0);
    close(fd);
    put_state(inst);
    free(ram);
    return inst;
}

static store_layer *load(fixture *f, const store_id *id)
{
    store_layer *l = NULL;
    assert_int_equal(store_layer_load(f->st, id, &l), 0);
    return l;
}

static void assert_base(fixture *f, const store_id *id, const store_id *want)
{
    store_id base;
    assert_int_equal(store_layer_base(f->st, id, &base), 0);
    assert_string_equal(base.hex, want->hex);
}

static void assert_clone_of(fixture *f, const char *dir, const store_id *want)
{
    store_id got;
    assert_int_equal(store_instance_layer(f->st, dir, &got), 0);
    assert_string_equal(got.hex, want->hex);
}

static void test_saved_state_layers(void **state)
{
    fixture *f = *state;
    static const char *const names[] = {"SaveFile.x"};
    store_binding bind[] = {{"driver", "qemu"}, {"host", "h1"}};
    store_id root, got;
    import_small(f, "b", "t", &root);
    char *inst = path_in(f->dir, "inst");
    assert_int_equal(store_clone(f->st, "t", inst, NULL), 0);
    char *disk = path_in(inst, "Disk.img");
    int fd = open(disk, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    write_random(fd, 2 * MiB, 4 * KiB, 11);
    close(fd);
    put_state(inst);

    /* suspend's commit: D without the state, S = D + state, tag on S */
    store_commit_opts o = {.tag = "t:warm", .message = "suspend", .bindings = bind, .nbindings = 2};
    store_commit_result d, sv;
    if (store_commit_saved_state(f->st, inst, names, 1, &o, &d, &sv))
        fail_msg("store_commit_saved_state: %s", store_error());
    store_layer *ld = load(f, &d.id), *ls = load(f, &sv.id);
    assert_true(ld->has_parent);
    assert_string_equal(ld->parent.hex, root.hex);
    assert_int_equal(ld->nbindings, 0);
    assert_null(find_file(ld, "SaveFile.x"));
    assert_non_null(find_file(ld, "Disk.img"));
    assert_string_equal(ls->parent.hex, d.id.hex);
    assert_int_equal(ls->nbindings, 2);
    assert_non_null(find_file(ls, "SaveFile.x"));
    assert_int_equal(ls->nfiles, ld->nfiles + 1);
    assert_int_equal(ls->bytes_added, 5);
    assert_int_equal(store_resolve(f->st, "t:warm", &got), 0);
    assert_string_equal(got.hex, sv.id.hex);
    assert_base(f, &sv.id, &d.id);
    assert_base(f, &d.id, &d.id);
    assert_base(f, &root, &root);
    assert_clone_of(f, inst, &d.id); /* the instance stays on D */

    /* clone S: D's content; with the state only when asked */
    char *c1 = path_in(f->dir, "c1"), *c2 = path_in(f->dir, "c2");
    assert_int_equal(store_clone(f->st, "t:warm", c1, NULL), 0);
    assert_false(has_file(c1, "SaveFile.x"));
    assert_true(has_file(c1, "Disk.img"));
    assert_clone_of(f, c1, &d.id);
    assert_int_equal(store_instance_state(f->st, c1, &got), -ENOENT);
    assert_int_equal(store_clone_saved_state(f->st, "t:warm", c2, NULL), 0);
    assert_true(has_file(c2, "SaveFile.x"));
    assert_clone_of(f, c2, &d.id);
    assert_int_equal(store_instance_state(f->st, c2, &got), 0);
    assert_string_equal(got.hex, sv.id.hex);

    /* a busy clone is not committed, unless by its holder */
    store_busy busy;
    assert_int_equal(store_busy_take(c1, "running instance c1; stop it", &busy), 0);
    store_commit_opts co = {.message = "later"};
    store_commit_result r;
    store_busy other;
    assert_int_equal(store_busy_take(c1, "someone", &other), -EBUSY);
    assert_int_equal(store_commit(f->st, c1, &co, &r), -EBUSY);
    assert_non_null(strstr(store_error(), "c1 is in use by running instance c1; stop it"));
    co.busy = &busy;
    assert_int_equal(store_commit(f->st, c1, &co, &r), 0);
    store_busy_release(&busy);
    store_layer *lr = load(f, &r.id);
    assert_string_equal(lr->parent.hex, d.id.hex); /* later commits start from D */
    co.busy = NULL;
    assert_int_equal(store_commit(f->st, c1, &co, &r), 0);

    /* a saved state made before D/S: one layer, read as it is */
    char *c3 = path_in(f->dir, "c3"), *c4 = path_in(f->dir, "c4"), *c5 = path_in(f->dir, "c5");
    char *c6 = path_in(f->dir, "c6");
    assert_int_equal(store_clone(f->st, "t", c3, NULL), 0);
    char *disk3 = path_in(c3, "Disk.img");
    fd = open(disk3, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    write_random(fd, 3 * MiB, 4 * KiB, 12);
    close(fd);
    put_state(c3);
    store_commit_opts old = {.bindings = bind, .nbindings = 2};
    store_commit_result lo;
    assert_int_equal(store_commit(f->st, c3, &old, &lo), 0);
    assert_base(f, &lo.id, &lo.id);
    assert_int_equal(store_clone(f->st, lo.id.hex, c4, NULL), 0);
    assert_false(has_file(c4, "SaveFile.x"));
    assert_true(has_file(c4, "Disk.img"));
    assert_clone_of(f, c4, &lo.id);
    assert_int_equal(store_clone_saved_state(f->st, lo.id.hex, c5, NULL), 0);
    assert_true(has_file(c5, "SaveFile.x"));
    /* resumed and saved again, the old way: its state is still told apart */
    store_commit_result lo2;
    assert_int_equal(store_commit(f->st, c5, &old, &lo2), 0);
    assert_base(f, &lo2.id, &lo2.id);
    assert_int_equal(store_clone(f->st, lo2.id.hex, c6, NULL), 0);
    assert_false(has_file(c6, "SaveFile.x"));

    /* boot's directories in the home (boot_instances_dir...) are no
     * concern of fsck */
    char *vms = path_in(f->home, "vms"), *running = path_in(f->home, "running");
    assert_int_equal(mkdir(vms, 0755), 0);
    assert_int_equal(mkdir(running, 0755), 0);
    report_buf rep = {{0}, 0};
    assert_int_equal(store_fsck(f->st, 0, collect, &rep), 0);

    free(vms), free(running);
    store_layer_free(ld), store_layer_free(ls), store_layer_free(lr);
    free(disk), free(disk3), free(inst), free(c1), free(c2), free(c3), free(c4), free(c5), free(c6);
}

/* A state file D lacks (a guest's RAM) is chunked against the same file of
 * the saved state the instance was resumed from: a second saved state adds
 * only the chunks that changed. */
static void test_saved_state_against_resumed(void **state)
{
    fixture *f = *state;
    static const char *const names[] = {"SaveFile.x", "SaveFile.ram"};
    store_binding bind[] = {{"driver", "qemu"}, {"host", "h1"}};
    char *inst = instance_with_ram(f, 0, 8 * MiB, 21), *again = path_in(f->dir, "again");
    store_commit_opts o = {.message = "suspend", .bindings = bind, .nbindings = 2};
    store_commit_result d, s1, s2;
    if (store_commit_saved_state(f->st, inst, names, 2, &o, &d, &s1))
        fail_msg("store_commit_saved_state: %s", store_error());
    assert_int_equal(s1.bytes_added, 8 * MiB + 5); /* nothing to compare with: all of it */

    /* resumed, one page written, saved again: one chunk added */
    assert_int_equal(store_clone_saved_state(f->st, s1.id.hex, again, NULL), 0);
    char *ram2 = path_in(again, "SaveFile.ram");
    int fd = open(ram2, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    write_random(fd, 3 * MiB + 8 * KiB, 4 * KiB, 22);
    close(fd);
    if (store_commit_saved_state(f->st, again, names, 2, &o, &d, &s2))
        fail_msg("store_commit_saved_state: %s", store_error());
    assert_int_equal(s2.bytes_added, 1 * MiB);
    store_layer *l2 = load(f, &s2.id);
    assert_string_equal(l2->parent.hex, d.id.hex);
    assert_int_equal(find_file(l2, "SaveFile.ram")->ndata, 8);
    report_buf rep = {{0}, 0};
    assert_int_equal(store_fsck(f->st, 0, collect, &rep), 0);
    store_layer_free(l2);
    free(inst), free(again), free(ram2);
}

/* What a first saved state made of instance_with_ram's RAM file (with
 * zero pages inside its data, which are punched) stored. */
typedef struct {
    store_id id;
    uint64_t bytes_added;
    unsigned char *seals, *ram; /* the layer's seals file and RAM file */
    size_t nseals, nram;
    blkcnt_t ram_blocks;
    int ahead; /* how many of its state files were chunked from hashes made ahead */
} first_state;

static const char *const ram_state_names[] = {"SaveFile.x", "SaveFile.ram"};

static const store_file_chunking ram4k[] = {{"SaveFile.ram", 4096}};

/* Commit inst's first saved state in f, with the hashing begun at the
 * pause, if any; hook runs after its RAM file was hashed ahead, before
 * the check that it did not change. */
static void commit_first_state(fixture *f, const char *inst, store_state_hashing *hashed,
                               void (*hook)(const char *), first_state *out)
{
    store_binding bind[] = {{"driver", "qemu"}, {"host", "h1"}};
    store_commit_opts o = {.message = "suspend", .bindings = bind, .nbindings = 2,
                           .file_chunks = ram4k, .nfile_chunks = 1, .hashed = hashed};
    store_commit_result d, s;
    int used = st_prehash_used;
    st_prehash_test_hook = hook;
    int rc = store_commit_saved_state(f->st, inst, ram_state_names, 2, &o, &d, &s);
    st_prehash_test_hook = NULL;
    if (rc)
        fail_msg("store_commit_saved_state: %s", store_error());
    out->id = s.id;
    out->bytes_added = s.bytes_added;
    out->ahead = st_prehash_used - used;
    char *dir = st_layer_dir(f->st, &s.id), *seals = path_in(dir, ST_SEALS_FILE);
    char *ram = store_layer_file_path(f->st, &s.id, "SaveFile.ram");
    struct stat sb;
    assert_int_equal(stat(ram, &sb), 0);
    out->ram_blocks = sb.st_blocks;
    read_whole(seals, &out->seals, &out->nseals);
    read_whole(ram, &out->ram, &out->nram);
    report_buf rep = {{0}, 0};
    assert_int_equal(store_fsck(f->st, 0, collect, &rep), 0);
    free(dir), free(seals), free(ram);
}

static void first_state_free(first_state *s)
{
    free(s->seals);
    free(s->ram);
}

/* instance_with_ram's, with two zero pages inside the written range */
static char *instance_with_zero_pages(fixture *f)
{
    char *inst = instance_with_ram(f, 1 * MiB, 2 * MiB, 41), *ram = path_in(inst, "SaveFile.ram");
    static const char zeros[8192];
    int fd = open(ram, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, zeros, sizeof zeros, (off_t)(1 * MiB + 64 * KiB)), sizeof zeros);
    close(fd);
    free(ram);
    return inst;
}

/* The first saved state of instance_with_zero_pages in a store of its
 * own; no_prehash: as before hashing ahead (hashing the copy). */
static void first_state_in_new_store(int no_prehash, first_state *out)
{
    void *fs = NULL;
    assert_int_equal(test_setup(&fs), 0);
    char *inst = instance_with_zero_pages(fs);
    if (no_prehash)
        test_hooks_edit()->no_prehash = 1;
    commit_first_state(fs, inst, NULL, NULL, out);
    test_hooks_edit()->no_prehash = 0;
    free(inst);
    test_teardown(&fs);
}

/* a and b are the same layer: id, bytes added, seals, stored blocks, RAM */
static void assert_same_first_state(const first_state *a, const first_state *b)
{
    assert_string_equal(a->id.hex, b->id.hex);
    assert_int_equal(a->bytes_added, b->bytes_added);
    assert_int_equal(a->nseals, b->nseals);
    assert_memory_equal(a->seals, b->seals, a->nseals);
    assert_int_equal(a->ram_blocks, b->ram_blocks);
    assert_int_equal(a->nram, b->nram);
    assert_memory_equal(a->ram, b->ram, a->nram);
}

/* A first saved state hashed ahead (from the instance, while D is
 * committed) is the very layer hashing its copy makes: same id, bytes
 * added, seals and stored blocks. */
static void test_first_state_hashed_ahead(void **state)
{
    (void)state;
#ifndef F_SETLEASE
    skip_because("no leases (Linux's) here: nothing is hashed ahead\n");
#endif
    first_state ahead, old;
    first_state_in_new_store(0, &ahead);
    first_state_in_new_store(1, &old);
    assert_int_equal(ahead.ahead, 2); /* onto a reflink or a sparse copy */
    assert_int_equal(old.ahead, 0);
    assert_same_first_state(&ahead, &old);
    assert_int_equal(ahead.bytes_added, 2 * MiB - 8 * KiB + 5);
    first_state_free(&ahead);
    first_state_free(&old);
}

static int is_ram(const char *path)
{
    size_t n = strlen(path);
    return n >= 12 && !strcmp(path + n - 12, "SaveFile.ram");
}

static void touch_file(const char *path)
{
    if (!is_ram(path))
        return;
    struct timespec t[2] = {{1, 0}, {1, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, t, 0), 0);
}

static pid_t writer_pid;

/* A writer comes while the RAM file is held: a first open for writing is
 * refused (the lease), a second one, in a child, waits until the store
 * lets go, then writes a page. */
static void write_after_hashing(const char *path)
{
    if (!is_ram(path))
        return;
    int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    assert_int_equal(fd, -1);
    assert_int_equal(errno, EWOULDBLOCK);
    writer_pid = fork();
    assert_true(writer_pid >= 0);
    if (writer_pid == 0) {
        /* another process, as a real writer is: without the store's open
         * files, whose lease would otherwise hold this open until the
         * kernel's lease-break-time (45 s) instead of the store's close */
        for (int i = 3; i < 1024; i++)
            close(i);
        int w = open(path, O_WRONLY | O_CLOEXEC);
        static char page[4096];
        memset(page, 0x5a, sizeof page);
        _exit(w >= 0 && pwrite(w, page, sizeof page, (off_t)(1 * MiB)) == sizeof page ? 0 : 1);
    }
}

/* The RAM file changes after it was hashed ahead, before S's copy: the
 * change is seen, the copy is hashed instead, and S holds what was copied. */
static void test_first_state_changed_after_hashing(void **state)
{
    fixture *f = *state;
#ifndef F_SETLEASE
    skip_because("no leases (Linux's) here: nothing is hashed ahead\n");
#endif
    char *inst = instance_with_zero_pages(f), *ram = path_in(inst, "SaveFile.ram");
    size_t norig;
    unsigned char *orig;
    read_whole(ram, &orig, &norig);
    first_state s;
    /* its times changed (no lease breaks for that): not used */
    commit_first_state(f, inst, NULL, touch_file, &s);
    assert_int_equal(s.ahead, 1); /* SaveFile.x only */
    assert_int_equal(s.nram, norig);
    assert_memory_equal(s.ram, orig, norig);
    first_state_free(&s);

    /* a writer: kept out until the copy is made; S holds the old bytes */
    char *again = path_in(f->dir, "again");
    assert_int_equal(store_clone(f->st, "t", again, NULL), 0);
    char *ram2 = path_in(again, "SaveFile.ram");
    put_file(ram2, orig, norig);
    put_state(again);
    commit_first_state(f, again, NULL, write_after_hashing, &s);
    int status;
    assert_int_equal(waitpid(writer_pid, &status, 0), writer_pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(s.ahead, 1); /* SaveFile.x only */
    assert_memory_equal(s.ram, orig, norig);
    size_t nnow;
    unsigned char *now;
    read_whole(ram2, &now, &nnow);
    assert_int_equal(now[1 * MiB], 0x5a); /* the writer did write, after */
    first_state_free(&s);

    /* a file open for writing when the commit starts: never hashed ahead */
    int wfd = open(ram2, O_RDWR | O_CLOEXEC);
    assert_true(wfd >= 0);
    commit_first_state(f, again, NULL, NULL, &s);
    close(wfd);
    assert_int_equal(s.ahead, 1); /* SaveFile.x only */
    assert_memory_equal(s.ram, now, nnow);
    first_state_free(&s);
    free(inst), free(ram), free(orig), free(again), free(ram2), free(now);
}

/* store_state_hashing_start, as a supervisor calls it once its VM is
 * paused: the RAM file still open for writing (by the paused VM). */
static store_state_hashing *hash_at_pause(fixture *f, const char *inst)
{
    static const char *const ram_only[] = {"SaveFile.ram"};
    store_commit_opts o = {.file_chunks = ram4k, .nfile_chunks = 1};
    store_state_hashing *h = store_state_hashing_start(f->st, inst, ram_only, 1, &o);
    assert_non_null(h);
    return h;
}

/* Hashing begun while a paused VM still has the RAM file open for writing
 * is used once that writer is gone, and makes the very layer hashing the
 * copy makes; a writer still there at the copy, or a write meanwhile,
 * and the copy is hashed instead. */
static void test_first_state_hashed_at_pause(void **state)
{
    (void)state;
#ifndef F_SETLEASE
    skip_because("no leases (Linux's) here: nothing is hashed ahead\n");
#endif
    first_state want, got;
    first_state_in_new_store(1, &want);
    void *fs = NULL;
    assert_int_equal(test_setup(&fs), 0);
    fixture *f = fs;
    char *inst = instance_with_zero_pages(f);
    char *ram = path_in(inst, "SaveFile.ram");
    int vm = open(ram, O_RDWR | O_CLOEXEC); /* the paused VM */
    assert_true(vm >= 0);
    store_state_hashing *h = hash_at_pause(f, inst);
    close(vm); /* it exits */
    commit_first_state(f, inst, h, NULL, &got);
    store_state_hashing_free(h);
    assert_int_equal(got.ahead, 2); /* the RAM file from the pause, SaveFile.x from the commit */
    assert_same_first_state(&got, &want);
    first_state_free(&got);

    /* the writer still has it open when S copies it: the copy is hashed */
    char *again = path_in(f->dir, "again"), *ram2 = path_in(again, "SaveFile.ram");
    assert_int_equal(store_clone(f->st, "t", again, NULL), 0);
    put_file(ram2, want.ram, want.nram);
    put_state(again);
    vm = open(ram2, O_RDWR | O_CLOEXEC);
    assert_true(vm >= 0);
    h = hash_at_pause(f, again);
    commit_first_state(f, again, h, NULL, &got);
    store_state_hashing_free(h);
    assert_int_equal(got.ahead, 1); /* SaveFile.x only */
    assert_memory_equal(got.ram, want.ram, want.nram);
    first_state_free(&got);

    /* a write after hashing began (not the paused VM's): seen by its times,
     * so S holds what it copied, the new page, hashed from the copy */
    h = hash_at_pause(f, again);
    /* a kernel before 6.13 stamps times by the tick: a write within the
     * tick hashing began in would go unseen (docs/manifest.md) */
    usleep(20 * 1000);
    static char page[4096];
    memset(page, 0x6b, sizeof page);
    assert_int_equal(pwrite(vm, page, sizeof page, (off_t)(1 * MiB)), sizeof page);
    close(vm);
    commit_first_state(f, again, h, NULL, &got);
    store_state_hashing_free(h);
    assert_int_equal(got.ahead, 1);
    assert_int_equal(got.nram, want.nram);
    assert_int_equal(got.ram[1 * MiB], 0x6b);
    assert_memory_equal(got.ram + 1 * MiB + 4096, want.ram + 1 * MiB + 4096,
                        want.nram - 1 * MiB - 4096);
    first_state_free(&got);

    /* begun, then the suspend failed: freed without a commit */
    store_state_hashing_free(hash_at_pause(f, again));
    /* nothing to start (no such file): NULL */
    static const char *const missing[] = {"SaveFile.none"};
    store_commit_opts o = {.file_chunks = ram4k, .nfile_chunks = 1};
    assert_null(store_state_hashing_start(f->st, again, missing, 1, &o));
    first_state_free(&want);
    free(inst), free(ram), free(again), free(ram2);
    test_teardown(&fs);
}

/* A chunk size asked per file applies where the file is new, a file its
 * base has keeps the base's, and a bad one is refused before anything. */
static void test_file_chunk_sizes(void **state)
{
    fixture *f = *state;
    static const char *const names[] = {"SaveFile.x", "SaveFile.ram"};
    store_binding bind[] = {{"driver", "qemu"}, {"host", "h1"}};
    char *inst = instance_with_ram(f, 1 * MiB, 2 * MiB, 31), *again = path_in(f->dir, "again");

    /* a bad size: refused, nothing made */
    store_file_chunking bad[] = {{"SaveFile.ram", 3000}};
    store_commit_opts o = {.message = "suspend", .bindings = bind, .nbindings = 2,
                           .file_chunks = bad, .nfile_chunks = 1};
    store_commit_result d, s1, s2;
    size_t before = count_layers(f->st);
    assert_int_equal(store_commit_saved_state(f->st, inst, names, 2, &o, &d, &s1), -EINVAL);
    assert_non_null(strstr(store_error(), "chunk size 3000 for SaveFile.ram"));
    assert_int_equal(count_layers(f->st), before);

    /* a size that puts the layer over the manifest's chunk bound: refused
     * with the numbers before anything is made */
    char *huge = path_in(inst, "Huge.img");
    int fd = open(huge, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 40 * (uint64_t)1024 * MiB), 0);
    close(fd);
    store_file_chunking tiny[] = {{"Huge.img", 4096}};
    o.file_chunks = tiny;
    assert_int_equal(store_commit_saved_state(f->st, inst, names, 2, &o, &d, &s1), -E2BIG);
    assert_non_null(strstr(store_error(), "10485"));
    assert_non_null(strstr(store_error(), "use a larger --chunk-size"));
    assert_int_equal(count_layers(f->st), before);
    assert_int_equal(unlink(huge), 0);

    /* new file: the size asked; the others the parent's or the default */
    store_file_chunking fine[] = {{"SaveFile.ram", 4096}};
    o.file_chunks = fine;
    if (store_commit_saved_state(f->st, inst, names, 2, &o, &d, &s1))
        fail_msg("store_commit_saved_state: %s", store_error());
    store_layer *l1 = load(f, &s1.id);
    assert_int_equal(find_file(l1, "SaveFile.ram")->chunk_size, 4096);
    assert_int_equal(find_file(l1, "SaveFile.ram")->ndata, 512);
    assert_int_equal(find_file(l1, "SaveFile.x")->chunk_size, STORE_DEFAULT_CHUNK);
    assert_int_equal(find_file(l1, "Disk.img")->chunk_size, STORE_DEFAULT_CHUNK);
    assert_int_equal(s1.bytes_added, 2 * MiB + 5);

    /* resumed, two pages written: the base's 4 KiB kept though 64 KiB is
     * asked, and only those pages added */
    assert_int_equal(store_clone_saved_state(f->st, s1.id.hex, again, NULL), 0);
    char *ram2 = path_in(again, "SaveFile.ram");
    fd = open(ram2, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    write_random(fd, 1 * MiB + 12 * KiB, 4 * KiB, 32);
    write_random(fd, 6 * MiB, 4 * KiB, 33);
    close(fd);
    store_file_chunking coarse[] = {{"SaveFile.ram", 64 * 1024}};
    o.file_chunks = coarse;
    if (store_commit_saved_state(f->st, again, names, 2, &o, &d, &s2))
        fail_msg("store_commit_saved_state: %s", store_error());
    assert_int_equal(s2.bytes_added, 8 * KiB);
    store_layer *l2 = load(f, &s2.id);
    assert_int_equal(find_file(l2, "SaveFile.ram")->chunk_size, 4096);
    assert_int_equal(find_file(l2, "SaveFile.ram")->ndata, 513);
    report_buf rep = {{0}, 0};
    assert_int_equal(store_fsck(f->st, 0, collect, &rep), 0);
    store_layer_free(l1), store_layer_free(l2);
    free(inst), free(again), free(ram2), free(huge);
}

/* ---------- resolve ---------- */

static void test_resolve(void **state)
{
    fixture *f = *state;
    store_id id, got;
    import_small(f, "b", "base", &id);

    char prefix[7];
    memcpy(prefix, id.hex, 6);
    prefix[6] = 0;
    memset(&got, 0, sizeof got);
    int rc = store_resolve(f->st, prefix, &got);
    if (rc)
        fail_msg("store_resolve('%s'): %s", prefix, store_error());
    assert_string_equal(got.hex, id.hex);
    assert_int_equal(store_resolve(f->st, id.hex, &got), 0);
    assert_string_equal(got.hex, id.hex);
    assert_int_equal(store_resolve(f->st, "base", &got), 0);
    assert_string_equal(got.hex, id.hex);

    assert_int_equal(store_resolve(f->st, "nosuch", &got), -ENOENT);
    assert_non_null(strstr(store_error(), "unknown ref"));
    assert_non_null(strstr(store_error(), "nosuch"));
    /* a prefix of no layer, and one too short to count */
    prefix[0] = prefix[0] == '0' ? '1' : '0';
    assert_int_equal(store_resolve(f->st, prefix, &got), -ENOENT);
    assert_non_null(strstr(store_error(), "unknown ref"));
    memcpy(prefix, id.hex, 3);
    prefix[3] = 0;
    assert_int_equal(store_resolve(f->st, prefix, &got), -ENOENT);
    assert_non_null(strstr(store_error(), "unknown ref"));

    /* tags: another name for the same layer, listed */
    assert_int_equal(store_tag(f->st, id.hex, "other:v1"), 0);
    assert_int_equal(store_resolve(f->st, "other:v1", &got), 0);
    assert_string_equal(got.hex, id.hex);
    assert_int_equal(store_tag(f->st, "nosuch", "x"), -ENOENT);
    assert_int_equal(store_tag(f->st, "base", "Bad"), -EINVAL);
    store_tag_entry *t = NULL;
    size_t n = 0;
    assert_int_equal(store_tags(f->st, &t, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(t[0].name, "base");
    assert_string_equal(t[1].name, "other:v1");
    assert_string_equal(t[1].id.hex, id.hex);
    store_tags_free(t, n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_manifest_round_trip),
        cmocka_unit_test(test_manifest_rejects),
        cmocka_unit_test(test_manifest_hostile),
        cmocka_unit_test(test_manifest_zero_run_memory),
        cmocka_unit_test(test_manifest_bounds),
        cmocka_unit_test(test_encode_decode),
        cmocka_unit_test(test_tag_valid),
        cmocka_unit_test_setup_teardown(test_import_clone_commit, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_import_errors, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_gc, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_resolve, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_seals, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_seals_commit, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_import_bounds, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_saved_state_layers, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_saved_state_against_resumed, test_setup, test_teardown),
        cmocka_unit_test(test_first_state_hashed_ahead),
        cmocka_unit_test(test_first_state_hashed_at_pause),
        cmocka_unit_test_setup_teardown(test_first_state_changed_after_hashing, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_file_chunk_sizes, test_setup, test_teardown),
    };
    return cmocka_run_group_tests_name("store", tests, group_setup, group_teardown) ? 1 : 0;
}
