/*
 * Unit tests of tart/lz4_encode.c, Apple's LZ4 block framing as written
 * for push --format tart (tart/internal.h, docs/tart.md "Push"). Every
 * stream is decoded here by a reader of the framing written apart from
 * tart/lz4.c: it walks the block headers itself and decodes each bv41
 * block with liblz4's LZ4_decompress_safe_usingDict, the previous block's
 * decoded bytes as its dictionary, as Apple's documentation describes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lz4.h>

#include "../tart/internal.h"

typedef struct {
    unsigned char *data;
    size_t len, cap;
    int calls;
    int fail_at; /* the call that fails with -ENOSPC, or 0 */
} sink;

static int to_sink(void *ctx, const void *data, size_t len)
{
    sink *s = ctx;
    if (++s->calls == s->fail_at)
        return -ENOSPC;
    if (s->len + len > s->cap) {
        s->cap = (s->len + len) * 2;
        s->data = realloc(s->data, s->cap);
        assert_non_null(s->data);
    }
    memcpy(s->data + s->len, data, len);
    s->len += len;
    return 0;
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

typedef struct {
    size_t blocks, linked, max_block;
} decoded_stats;

/* Decode an Apple LZ4 stream; fails the test on anything out of form. */
static unsigned char *decode(const sink *s, size_t *out_len, decoded_stats *st)
{
    unsigned char *out = malloc(s->len * 300 + 16);
    assert_non_null(out);
    size_t pos = 0, n = 0, prev_len = 0;
    memset(st, 0, sizeof *st);
    for (;;) {
        assert_true(pos + 4 <= s->len);
        if (!memcmp(s->data + pos, "bv4$", 4)) {
            assert_int_equal(pos + 4, s->len); /* nothing follows the end */
            break;
        }
        assert_memory_equal(s->data + pos, "bv41", 4); /* never stored blocks */
        uint32_t dsize = le32(s->data + pos + 4), esize = le32(s->data + pos + 8);
        assert_true(dsize > 0 && dsize <= TART_LZ4_BLOCK_MAX);
        assert_true(pos + 12 + esize <= s->len);
        const char *dict = (const char *)out + n - prev_len;
        int got = LZ4_decompress_safe_usingDict((const char *)s->data + pos + 12, (char *)out + n,
                                                (int)esize, (int)dsize, dict, (int)prev_len);
        assert_int_equal(got, (int)dsize);
        /* the same block without its dictionary: does it reach back? */
        char *alone = malloc(dsize);
        int a = LZ4_decompress_safe((const char *)s->data + pos + 12, alone, (int)esize, (int)dsize);
        st->linked += a != (int)dsize || memcmp(alone, out + n, dsize);
        free(alone);
        st->blocks++;
        if (dsize > st->max_block)
            st->max_block = dsize;
        n += dsize;
        prev_len = dsize;
        pos += 12 + esize;
    }
    *out_len = n;
    return out;
}

static sink encode(const unsigned char *data, size_t len, size_t piece)
{
    sink s = {0};
    tart_lz4_encoder *e;
    assert_int_equal(tart_lz4_encoder_new(to_sink, &s, &e), 0);
    for (size_t off = 0; off < len; off += piece)
        assert_int_equal(tart_lz4_encoder_feed(e, data + off, len - off < piece ? len - off : piece), 0);
    assert_int_equal(tart_lz4_encoder_end(e), 0);
    tart_lz4_encoder_free(e);
    return s;
}

/* text with repeats near and far, then random bytes, then zeros */
static unsigned char *sample(size_t len)
{
    unsigned char *d = malloc(len);
    uint32_t x = 12345;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        if (i < len / 3)
            d[i] = (unsigned char)"the quick brown fox jumps over the lazy dog "[(i * 7 / 5) % 44];
        else if (i < 2 * len / 3)
            d[i] = (unsigned char)(x >> 16);
        else
            d[i] = 0;
    }
    /* a stretch that repeats, 40 KiB later, across a 64 KiB block boundary */
    if (len > 300000)
        memcpy(d + 190000, d + 150000, 20000);
    return d;
}

static void test_round_trip(void **state)
{
    (void)state;
    size_t len = 3 * 1024 * 1024 + 12345;
    unsigned char *d = sample(len);
    sink s = encode(d, len, 1 << 20);
    size_t n;
    decoded_stats st;
    unsigned char *back = decode(&s, &n, &st);
    assert_int_equal(n, len);
    assert_memory_equal(back, d, len);
    assert_int_equal(st.max_block, 64 * 1024);                 /* 64 KiB blocks */
    assert_int_equal(st.blocks, (len + 65535) / 65536);        /* the last one shorter */
    assert_true(st.linked > 0);                               /* matches reach the previous block */
    assert_true(s.len < len * 3 / 4);                          /* it does compress */
    free(back);
    free(s.data);
    free(d);
}

static void test_deterministic_whatever_the_pieces(void **state)
{
    (void)state;
    size_t len = 700001;
    unsigned char *d = sample(len);
    sink a = encode(d, len, len), b = encode(d, len, 1), c = encode(d, len, 65537);
    assert_int_equal(a.len, b.len);
    assert_int_equal(a.len, c.len);
    assert_memory_equal(a.data, b.data, a.len);
    assert_memory_equal(a.data, c.data, a.len);
    free(a.data), free(b.data), free(c.data);
    free(d);
}

static void test_empty_input_is_only_the_end_marker(void **state)
{
    (void)state;
    sink s = encode(NULL, 0, 1);
    assert_int_equal(s.len, 4);
    assert_memory_equal(s.data, "bv4$", 4);
    free(s.data);
}

static void test_end_marker_once_and_last(void **state)
{
    (void)state;
    unsigned char d[100] = {1, 2, 3};
    sink s = {0};
    tart_lz4_encoder *e;
    assert_int_equal(tart_lz4_encoder_new(to_sink, &s, &e), 0);
    assert_int_equal(tart_lz4_encoder_feed(e, d, sizeof d), 0);
    assert_int_equal(s.len, 0); /* a block goes out when full, or at the end */
    assert_int_equal(tart_lz4_encoder_end(e), 0);
    assert_int_equal(tart_lz4_encoder_end(e), 0); /* again: nothing more */
    assert_int_equal(s.len, 12 + le32(s.data + 8) + 4);
    assert_memory_equal(s.data + s.len - 4, "bv4$", 4);
    assert_int_equal(le32(s.data + 4), sizeof d);
    assert_int_equal(tart_lz4_encoder_feed(e, d, 1), -EINVAL); /* after the end */
    tart_lz4_encoder_free(e);
    free(s.data);
}

static void test_incompressible_stays_bv41(void **state)
{
    (void)state;
    size_t len = 200000;
    unsigned char *d = malloc(len);
    uint32_t x = 99;
    for (size_t i = 0; i < len; i++)
        x = x * 1664525u + 1013904223u, d[i] = (unsigned char)(x >> 24);
    sink s = encode(d, len, 4096);
    size_t n;
    decoded_stats st;
    unsigned char *back = decode(&s, &n, &st); /* asserts no bv4- block */
    assert_int_equal(n, len);
    assert_memory_equal(back, d, len);
    assert_true(s.len < len + len / 100 + 64); /* literals: a little over the input */
    free(back);
    free(s.data);
    free(d);
}

static void test_output_failure_is_passed_on_and_sticks(void **state)
{
    (void)state;
    size_t len = 300000;
    unsigned char *d = sample(len);
    sink s = {.fail_at = 2};
    tart_lz4_encoder *e;
    assert_int_equal(tart_lz4_encoder_new(to_sink, &s, &e), 0);
    assert_int_equal(tart_lz4_encoder_feed(e, d, len), -ENOSPC);
    assert_int_equal(tart_lz4_encoder_feed(e, d, 10), -ENOSPC);
    assert_int_equal(tart_lz4_encoder_end(e), -ENOSPC);
    tart_lz4_encoder_free(e);
    free(s.data);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_deterministic_whatever_the_pieces),
        cmocka_unit_test(test_empty_input_is_only_the_end_marker),
        cmocka_unit_test(test_end_marker_once_and_last),
        cmocka_unit_test(test_incompressible_stays_bv41),
        cmocka_unit_test(test_output_failure_is_passed_on_and_sticks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
