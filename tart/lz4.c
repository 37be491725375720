/*
 * tart: decoding Apple's LZ4 block framing (internal.h), as a stream.
 *
 * Bytes arrive in any split. A block header (4-byte magic, then one or two
 * LE32 sizes) is gathered first; then the block's payload, at most
 * TART_LZ4_BLOCK_MAX decoded bytes, is gathered and decoded with liblz4
 * into a window that starts with the last 64 KiB of what came before, so
 * a block's matches can reach into the previous block (Apple's encoder
 * makes such blocks). Memory: one encoded block and one decoded block plus
 * the 64 KiB of history, whatever the input says.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <lz4.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HISTORY (64u << 10) /* LZ4's window */

enum { WANT_HEADER, WANT_COMPRESSED, WANT_STORED, ENDED, FAILED };

struct tart_lz4_decoder {
    uint64_t limit, decoded, consumed;
    char what[160];
    tart_bytes_fn out;
    void *ctx;
    int state;
    unsigned char hdr[12];
    size_t hlen, hneed;
    uint32_t dsize, esize; /* the block being gathered */
    size_t have;           /* its payload bytes gathered */
    unsigned char *in;     /* a compressed block's payload */
    unsigned char *win;    /* history (wlen bytes), then the block decoded */
    size_t wlen;
};

static int bad(tart_lz4_decoder *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* a one-line error naming the stream and the encoded offset of the block */
static int bad(tart_lz4_decoder *d, const char *fmt, ...)
{
    char why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    d->state = FAILED;
    return tart_fail(EBADMSG, "%s: %s (LZ4 block at byte %" PRIu64 ")", d->what, why, d->consumed);
}

int tart_lz4_decoder_new(uint64_t limit, const char *what, tart_bytes_fn out, void *ctx,
                         tart_lz4_decoder **dp)
{
    tart_lz4_decoder *d = calloc(1, sizeof *d);
    if (!d || !(d->in = malloc(LZ4_COMPRESSBOUND(TART_LZ4_BLOCK_MAX))) ||
        !(d->win = malloc(HISTORY + TART_LZ4_BLOCK_MAX))) {
        tart_lz4_decoder_free(d);
        return tart_oom();
    }
    d->limit = limit;
    snprintf(d->what, sizeof d->what, "%s", what);
    d->out = out;
    d->ctx = ctx;
    d->hneed = 4;
    *dp = d;
    return 0;
}

void tart_lz4_decoder_free(tart_lz4_decoder *d)
{
    if (!d)
        return;
    free(d->in);
    free(d->win);
    free(d);
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* the header is whole (or its magic is): decide what follows */
static int header_done(tart_lz4_decoder *d)
{
    if (d->hlen == 4) {
        if (!memcmp(d->hdr, TART_LZ4_MAGIC_END, 4)) {
            d->state = ENDED;
            return 0;
        }
        if (!memcmp(d->hdr, TART_LZ4_MAGIC_COMPRESSED, 4))
            d->hneed = 12;
        else if (!memcmp(d->hdr, TART_LZ4_MAGIC_STORED, 4))
            d->hneed = 8;
        else
            return bad(d, "bad block magic %02x%02x%02x%02x (not Apple's LZ4 framing)", d->hdr[0],
                       d->hdr[1], d->hdr[2], d->hdr[3]);
        return 0;
    }
    d->dsize = le32(d->hdr + 4);
    d->esize = d->hneed == 12 ? le32(d->hdr + 8) : d->dsize;
    if (d->dsize > TART_LZ4_BLOCK_MAX)
        return bad(d, "a block of %u decoded bytes, over the %u accepted",
                   d->dsize, TART_LZ4_BLOCK_MAX);
    if (d->esize > LZ4_COMPRESSBOUND(d->dsize))
        return bad(d, "a block of %u encoded bytes can't decode to %u", d->esize,
                   d->dsize);
    if (d->decoded + d->dsize > d->limit)
        return bad(d, "the stream decodes to more than its %" PRIu64 " bytes", d->limit);
    d->state = d->hneed == 12 ? WANT_COMPRESSED : WANT_STORED;
    d->have = 0;
    return 0;
}

/* a block's decoded bytes are at win + wlen: pass them on, keep the history */
static int block_done(tart_lz4_decoder *d)
{
    int rc = d->dsize ? d->out(d->ctx, d->win + d->wlen, d->dsize) : 0;
    if (rc) {
        d->state = FAILED;
        return rc;
    }
    d->decoded += d->dsize;
    d->consumed += d->hneed + d->esize;
    size_t total = d->wlen + d->dsize, keep = total < HISTORY ? total : HISTORY;
    memmove(d->win, d->win + total - keep, keep);
    d->wlen = keep;
    d->state = WANT_HEADER;
    d->hlen = 0;
    d->hneed = 4;
    return 0;
}

static int decode_block(tart_lz4_decoder *d)
{
    int n = LZ4_decompress_safe_usingDict((const char *)d->in, (char *)d->win + d->wlen,
                                          (int)d->esize, (int)d->dsize, (const char *)d->win,
                                          (int)d->wlen);
    if (n != (int)d->dsize)
        return bad(d, "a block of %u encoded bytes does not decode to its %u bytes (corrupt)", d->esize, d->dsize);
    return block_done(d);
}

int tart_lz4_decoder_feed(tart_lz4_decoder *d, const void *data, size_t len)
{
    const unsigned char *p = data;
    if (d->state == FAILED)
        return tart_fail(EBADMSG, "%s: the LZ4 stream failed before", d->what);
    while (len) {
        int rc = 0;
        if (d->state == ENDED)
            return bad(d, "%zu bytes follow the end marker", len);
        if (d->state == WANT_HEADER) {
            size_t k = d->hneed - d->hlen < len ? d->hneed - d->hlen : len;
            memcpy(d->hdr + d->hlen, p, k);
            d->hlen += k, p += k, len -= k;
            if (d->hlen == d->hneed)
                rc = header_done(d);
            if (!rc && d->state == ENDED)
                d->consumed += 4;
        } else {
            unsigned char *to = d->state == WANT_STORED ? d->win + d->wlen : d->in;
            size_t k = d->esize - d->have < len ? d->esize - d->have : len;
            memcpy(to + d->have, p, k);
            d->have += k, p += k, len -= k;
        }
        if (!rc && (d->state == WANT_COMPRESSED || d->state == WANT_STORED) && d->have == d->esize)
            rc = d->state == WANT_STORED ? block_done(d) : decode_block(d);
        if (rc)
            return rc;
    }
    return 0;
}

int tart_lz4_decoder_end(tart_lz4_decoder *d, uint64_t *decoded)
{
    *decoded = d->decoded;
    if (d->state == FAILED)
        return tart_fail(EBADMSG, "%s: the LZ4 stream failed before", d->what);
    if (d->state != ENDED)
        return bad(d, "the stream ends without its end marker, after %" PRIu64 " decoded bytes",
                   d->decoded);
    return 0;
}
