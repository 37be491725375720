/*
 * Unit tests of tart/ that need no registry: the Apple LZ4 framing decoder
 * (block boundaries, matches reaching into the previous block, stored
 * blocks, any split of the input, truncation, the limit, hostile headers)
 * and the checks of a tart manifest. Streams are made here with liblz4's
 * streaming compressor, whose blocks refer back into the block before, as
 * Apple's encoder's do; tests/tart_pull.sh pulls images made by a separate
 * encoder (tests/tart_craft.py).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lz4.h>

#include "../tart/internal.h"

typedef struct {
    unsigned char *data;
    size_t len, cap;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->data = realloc(b->data, b->cap);
        assert_non_null(b->data);
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put32(buf *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    put(b, x, 4);
}

static int sink(void *ctx, const void *data, size_t len)
{
    put(ctx, data, len);
    return 0;
}

/* plain: len bytes, text that repeats across block boundaries, with zeros
 * and a few random runs */
static unsigned char *sample(size_t len)
{
    unsigned char *p = malloc(len);
    assert_non_null(p);
    uint32_t x = 12345;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        size_t r = (i / 70000) % 4;
        p[i] = r == 0 ? (unsigned char)"strata reads tart"[i % 17]
             : r == 1 ? 0
             : r == 2 ? (unsigned char)(x >> 24)
                      : (unsigned char)"0123456789"[(i / 3) % 10];
    }
    return p;
}

/* Apple's framing of plain: blocks of `block` bytes compressed with
 * liblz4's streaming API (matches reach into the previous block), every
 * `stored_every`th block stored (0: none) */
static buf frame(const unsigned char *plain, size_t len, size_t block, int stored_every)
{
    buf out = {0};
    LZ4_stream_t *s = LZ4_createStream();
    char *z = malloc(LZ4_COMPRESSBOUND(block));
    assert_non_null(z);
    for (size_t at = 0, n = 0; at < len; at += block, n++) {
        size_t k = len - at < block ? len - at : block;
        if (stored_every && n % (size_t)stored_every == (size_t)stored_every - 1) {
            put(&out, TART_LZ4_MAGIC_STORED, 4);
            put32(&out, (uint32_t)k);
            put(&out, plain + at, k);
            LZ4_loadDict(s, (const char *)plain + (at + k > 65536 ? at + k - 65536 : 0),
                         (int)(at + k > 65536 ? 65536 : at + k));
            continue;
        }
        int zn = LZ4_compress_fast_continue(s, (const char *)plain + at, z, (int)k,
                                            LZ4_COMPRESSBOUND(block), 1);
        assert_true(zn > 0);
        put(&out, TART_LZ4_MAGIC_COMPRESSED, 4);
        put32(&out, (uint32_t)k);
        put32(&out, (uint32_t)zn);
        put(&out, z, (size_t)zn);
    }
    put(&out, TART_LZ4_MAGIC_END, 4);
    free(z);
    LZ4_freeStream(s);
    return out;
}

/* decode stream in pieces of `step` bytes (0: at once) */
static int decode(const buf *stream, uint64_t limit, size_t step, buf *out, uint64_t *decoded)
{
    tart_lz4_decoder *d;
    assert_int_equal(tart_lz4_decoder_new(limit, "test stream", sink, out, &d), 0);
    int rc = 0;
    for (size_t at = 0; !rc && at < stream->len;) {
        size_t k = step && stream->len - at > step ? step : stream->len - at;
        rc = tart_lz4_decoder_feed(d, stream->data + at, k);
        at += k;
    }
    uint64_t n = 0;
    if (!rc)
        rc = tart_lz4_decoder_end(d, &n);
    if (decoded)
        *decoded = n;
    tart_lz4_decoder_free(d);
    return rc;
}

static void round_trip(size_t len, size_t block, int stored_every, size_t step)
{
    unsigned char *plain = sample(len);
    buf s = frame(plain, len, block, stored_every), out = {0};
    uint64_t n;
    assert_int_equal(decode(&s, len, step, &out, &n), 0);
    assert_int_equal(n, len);
    assert_int_equal(out.len, len);
    assert_memory_equal(out.data, plain, len);
    free(out.data);
    free(s.data);
    free(plain);
}

static void test_round_trips(void **state)
{
    (void)state;
    round_trip(1 << 20, 64 << 10, 0, 0);         /* back-references across 16 blocks */
    round_trip(1 << 20, 64 << 10, 3, 0);         /* every third block stored */
    round_trip(300001, 65536, 2, 1);             /* fed a byte at a time */
    round_trip(300001, 4096, 4, 13);             /* small blocks, odd splits */
    round_trip(5 << 20, TART_LZ4_BLOCK_MAX, 0, 0); /* the largest block accepted */
    round_trip(0, 65536, 0, 0);                  /* the end marker alone */
}

/* one literal-only block made by hand: the format, not liblz4's output */
static void test_hand_made_block(void **state)
{
    (void)state;
    buf s = {0}, out = {0};
    put(&s, "bv41", 4);
    put32(&s, 5);
    put32(&s, 6);
    put(&s, "\x50hello", 6);
    put(&s, "bv4-", 4);
    put32(&s, 3);
    put(&s, "abc", 3);
    /* "hellohello": 0 literals, a match of 10 at offset 8 into both blocks
     * before it (token 0x06: 4 + 6); then the 5 last literals LZ4 needs */
    put(&s, "bv41", 4);
    put32(&s, 15);
    put32(&s, 9);
    put(&s, "\x06\x08\x00\x50world", 9);
    put(&s, "bv4$", 4);
    assert_int_equal(decode(&s, 100, 0, &out, NULL), 0);
    assert_int_equal(out.len, 23);
    assert_memory_equal(out.data, "helloabchelloabcheworld", 23);
    free(s.data);
    free(out.data);
}

static void expect_bad(const buf *s, uint64_t limit, const char *words)
{
    buf out = {0};
    assert_int_equal(decode(s, limit, 0, &out, NULL), -EBADMSG);
    if (!strstr(tart_error(), words))
        fail_msg("'%s' lacks '%s'", tart_error(), words);
    assert_null(strchr(tart_error(), '\n'));
    assert_non_null(strstr(tart_error(), "test stream"));
    free(out.data);
}

static void test_hostile(void **state)
{
    (void)state;
    unsigned char *plain = sample(200000);
    buf s = frame(plain, 200000, 65536, 0);
    buf t = {0};

    expect_bad(&s, 199999, "decodes to more than its 199999 bytes"); /* the limit */

    put(&t, s.data, s.len - 4); /* no end marker */
    expect_bad(&t, 200000, "without its end marker");
    t.len = s.len / 2; /* cut mid-block */
    expect_bad(&t, 200000, "without its end marker");

    t.len = 0;
    put(&t, s.data, s.len);
    put(&t, "x", 1); /* bytes after the end */
    expect_bad(&t, 200000, "follow the end marker");

    memcpy(t.data, "bv42", 4);
    expect_bad(&t, 200000, "bad block magic 62763432");

    t.len = 0; /* a block over the largest accepted */
    put(&t, "bv4-", 4);
    put32(&t, TART_LZ4_BLOCK_MAX + 1);
    expect_bad(&t, UINT64_MAX, "over the");

    t.len = 0; /* an encoded size no block of that size can have */
    put(&t, "bv41", 4);
    put32(&t, 100);
    put32(&t, 1000);
    expect_bad(&t, UINT64_MAX, "can't decode to 100");

    t.len = 0; /* a block that decodes to less than it says */
    put(&t, "bv41", 4);
    put32(&t, 6);
    put32(&t, 6);
    put(&t, "\x50hello", 6);
    put(&t, "bv4$", 4);
    expect_bad(&t, 100, "does not decode to its 6 bytes");

    t.len = 0; /* a match reaching before the stream's start */
    put(&t, "bv41", 4);
    put32(&t, 15);
    put32(&t, 9);
    put(&t, "\x06\x08\x00\x50world", 9);
    put(&t, "bv4$", 4);
    expect_bad(&t, 100, "corrupt");

    free(t.data);
    free(s.data);
    free(plain);
}

/* ---- manifests ---- */

#define DG(c) "sha256:" c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c

static char *manifest(const char *layers, const char *disk_size)
{
    char *m = NULL;
    assert_true(asprintf(&m, "{\"schemaVersion\":2,\"layers\":[%s],\"annotations\":{%s%s%s}}", layers,
                         disk_size ? "\"" TART_ANN_DISK_SIZE "\":\"" : "", disk_size ? disk_size : "",
                         disk_size ? "\"" : "") > 0);
    return m;
}

static const char *config_l = "{\"mediaType\":\"" TART_MT_CONFIG "\",\"size\":10,\"digest\":\"" DG("a") "\"}";
static const char *nvram_l = "{\"mediaType\":\"" TART_MT_NVRAM "\",\"size\":10,\"digest\":\"" DG("b") "\"}";

static char *disk_l(uint64_t usize, uint64_t size)
{
    char *d = NULL;
    assert_true(asprintf(&d, "{\"mediaType\":\"" TART_MT_DISK_V2 "\",\"size\":%llu,\"digest\":\"" DG("c")
                             "\",\"annotations\":{\"" TART_ANN_SIZE "\":\"%llu\",\"" TART_ANN_DIGEST
                             "\":\"" DG("d") "\"}}",
                         (unsigned long long)size, (unsigned long long)usize) > 0);
    return d;
}

static int parse(const char *layers, const char *disk_size, tart_image *im)
{
    char *m = manifest(layers, disk_size);
    int rc = tart_image_parse(m, strlen(m), "reg/x:y", NULL, im);
    free(m);
    return rc;
}

static void parse_bad(const char *layers, const char *disk_size, const char *words)
{
    tart_image im;
    assert_int_equal(parse(layers, disk_size, &im), -EBADMSG);
    if (!strstr(tart_error(), words))
        fail_msg("'%s' lacks '%s'", tart_error(), words);
}

static void test_manifests(void **state)
{
    (void)state;
    char *d1 = disk_l(2 << 20, 1000), *d2 = disk_l(1536, 100), *small = disk_l(512, 100);
    char *l = NULL;
    tart_image im;
    assert_true(asprintf(&l, "%s,%s,%s,%s", config_l, d1, d2, nvram_l) > 0);
    assert_int_equal(parse(l, "2098688", &im), 0);
    assert_int_equal(im.ndisk, 2);
    assert_int_equal(im.disk[1].offset, 2 << 20);
    assert_int_equal(im.disk_size, (2 << 20) + 1536);
    tart_image_free(&im);
    assert_int_equal(parse(l, NULL, &im), 0); /* older images lack the disk size */
    tart_image_free(&im);
    parse_bad(l, "2098689", "add up to 2098688 bytes, not the 2098689");
    free(l);

    assert_true(asprintf(&l, "%s,%s,%s,%s", config_l, small, d2, nvram_l) > 0);
    parse_bad(l, NULL, "only the last may be under 1 MiB");
    free(l);
    assert_true(asprintf(&l, "%s,%s,%s", config_l, d1, config_l) > 0);
    parse_bad(l, NULL, "more than one config layer");
    free(l);
    assert_true(asprintf(&l, "%s,%s", config_l, d1) > 0);
    parse_bad(l, NULL, "no NVRAM layer");
    free(l);
    assert_true(asprintf(&l, "%s,%s,{\"mediaType\":\"" TART_MT_DISK_V1 "\",\"size\":1,\"digest\":\"" DG("e")
                             "\"},%s", config_l, d1, nvram_l) > 0);
    parse_bad(l, NULL, "disk.v1");
    free(l);
    assert_true(asprintf(&l, "%s,%s,{\"mediaType\":\"" TART_MT_ASIF_OVERLAY "\",\"size\":1,\"digest\":\"" DG("e")
                             "\"},%s", config_l, d1, nvram_l) > 0);
    parse_bad(l, NULL, "ASIF");
    free(l);
    assert_true(asprintf(&l, "%s,{\"mediaType\":\"" TART_MT_DISK_V2 "\",\"size\":1,\"digest\":\"sha256:00\","
                             "\"annotations\":{\"" TART_ANN_SIZE "\":\"512\",\"" TART_ANN_DIGEST "\":\"" DG("d")
                             "\"}},%s", config_l, nvram_l) > 0);
    parse_bad(l, NULL, "not sha256:<64 hex>");
    free(l);
    char *huge = disk_l(1 << 20, 1 << 30); /* more than LZ4 makes of 1 MiB */
    assert_true(asprintf(&l, "%s,%s,%s", config_l, huge, nvram_l) > 0);
    parse_bad(l, NULL, "size is missing or over");
    free(l);
    free(huge);

    /* 10,000 layers: refused by count, before any is looked at */
    size_t one = strlen(d1) + 1;
    char *many = malloc(one * 10000 + 1), *p = many;
    assert_non_null(many);
    for (int i = 0; i < 10000; i++)
        p += sprintf(p, "%s%s", i ? "," : "", d1);
    parse_bad(many, NULL, "10000 layers, more than");
    free(many);
    free(d1), free(d2), free(small);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_hand_made_block),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_manifests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
