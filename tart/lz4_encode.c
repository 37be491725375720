/*
 * tart: Apple's LZ4 block framing, written (internal.h, docs/tart.md "Push").
 *
 * Every block is a "bv41" block of ENC_BLOCK (64 KiB) decoded bytes, the
 * last one shorter, compressed by liblz4's streaming call so that its
 * matches may reach back into the previous block, and never further:
 * LZ4's window is 64 KiB, the size of one block. That is the form Apple's
 * documentation asks a decoder to take ("a compressed block may refer to
 * data from the previous block") and the form found in Apple's own output,
 * so Compression.framework's decoder (tart pull's OutputFilter) reads it.
 * No "bv4-" (stored) block is ever written: an incompressible block is a
 * bv41 block of literals a few bytes longer, so no decoder has to decide
 * whether a stored block is the next one's dictionary. The stream ends
 * with "bv4$". liblz4's streaming compressor, started afresh, is a
 * function of its input, so the same bytes always give the same stream
 * (a second push finds its blobs by digest).
 */
#include "internal.h"

#include <errno.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>

#define ENC_BLOCK (64u << 10)
#define HEADER 12u

_Static_assert(ENC_BLOCK <= TART_LZ4_BLOCK_MAX, "a block the decoder takes");
_Static_assert(ENC_BLOCK <= 65536, "matches reach the previous block only");

struct tart_lz4_encoder {
    tart_bytes_fn out;
    void *ctx;
    LZ4_stream_t *lz;
    char *ring;   /* two blocks: the one being filled and the previous one,
                     which its matches may reach, kept where liblz4 saw it */
    unsigned half;
    size_t fill;
    char *cbuf;   /* a header and the compressed block */
    int ended;
    int rc;       /* the first failure: the stream can't go on */
};

static void le32(char *p, uint32_t v)
{
    p[0] = (char)(v & 0xff), p[1] = (char)(v >> 8 & 0xff);
    p[2] = (char)(v >> 16 & 0xff), p[3] = (char)(v >> 24 & 0xff);
}

int tart_lz4_encoder_new(tart_bytes_fn out, void *ctx, tart_lz4_encoder **e)
{
    tart_lz4_encoder *n = calloc(1, sizeof *n);
    if (n) {
        n->lz = LZ4_createStream();
        n->ring = malloc(2 * ENC_BLOCK);
        n->cbuf = malloc(HEADER + (size_t)LZ4_COMPRESSBOUND(ENC_BLOCK));
    }
    if (!n || !n->lz || !n->ring || !n->cbuf) {
        tart_lz4_encoder_free(n);
        return tart_oom();
    }
    n->out = out;
    n->ctx = ctx;
    *e = n;
    return 0;
}

/* compress the block being filled and pass it on; the other half becomes
 * the next block, and this one its dictionary */
static int emit(tart_lz4_encoder *e)
{
    const char *src = e->ring + (size_t)e->half * ENC_BLOCK;
    int n = LZ4_compress_fast_continue(e->lz, src, e->cbuf + HEADER, (int)e->fill,
                                       LZ4_COMPRESSBOUND(ENC_BLOCK), 1);
    if (n <= 0)
        return e->rc = tart_fail(EIO, "LZ4 compression of a %zu-byte block failed", e->fill);
    memcpy(e->cbuf, TART_LZ4_MAGIC_COMPRESSED, 4);
    le32(e->cbuf + 4, (uint32_t)e->fill);
    le32(e->cbuf + 8, (uint32_t)n);
    int rc = e->out(e->ctx, e->cbuf, HEADER + (size_t)n);
    if (rc)
        return e->rc = rc;
    e->half ^= 1;
    e->fill = 0;
    return 0;
}

int tart_lz4_encoder_feed(tart_lz4_encoder *e, const void *data, size_t len)
{
    if (e->rc)
        return e->rc;
    if (e->ended)
        return e->rc = tart_fail(EINVAL, "LZ4 stream: data after its end");
    const char *p = data;
    while (len) {
        size_t n = ENC_BLOCK - e->fill < len ? ENC_BLOCK - e->fill : len;
        memcpy(e->ring + (size_t)e->half * ENC_BLOCK + e->fill, p, n);
        e->fill += n, p += n, len -= n;
        int rc = e->fill == ENC_BLOCK ? emit(e) : 0;
        if (rc)
            return rc;
    }
    return 0;
}

int tart_lz4_encoder_end(tart_lz4_encoder *e)
{
    if (e->rc)
        return e->rc;
    if (e->ended)
        return 0;
    int rc = e->fill ? emit(e) : 0;
    if (rc)
        return rc;
    e->ended = 1;
    if ((rc = e->out(e->ctx, TART_LZ4_MAGIC_END, 4)))
        e->rc = rc;
    return rc;
}

void tart_lz4_encoder_free(tart_lz4_encoder *e)
{
    if (!e)
        return;
    if (e->lz)
        LZ4_freeStream(e->lz);
    free(e->ring);
    free(e->cbuf);
    free(e);
}
