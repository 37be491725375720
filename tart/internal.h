/* tart's own shared parts; nothing outside tart/ includes this. */
#ifndef STRATA_TART_INTERNAL_H
#define STRATA_TART_INTERNAL_H

#include "../base/error.h"
#include "tart.h"

#include <stddef.h>
#include <stdint.h>

#define tart_fail(err, ...) err_set(ERR_TART, (err), __VA_ARGS__)
#define tart_oom() err_oom(ERR_TART)

/* ---- Apple's LZ4 block framing (Compression.framework's COMPRESSION_LZ4)
 *
 * A stream is a sequence of blocks, each starting with a 4-byte magic:
 *   "bv41" LE32 decoded size, LE32 encoded size, then that many bytes of a
 *          raw LZ4 block; its matches may reach back into the previous
 *          block's decoded bytes (64 KiB at most, LZ4's window);
 *   "bv4-" LE32 size, then that many stored bytes;
 *   "bv4$" the end of the stream (nothing follows it in tart's layers).
 */
#define TART_LZ4_MAGIC_COMPRESSED "bv41"
#define TART_LZ4_MAGIC_STORED "bv4-"
#define TART_LZ4_MAGIC_END "bv4$"
#define TART_LZ4_BLOCK_MAX (4u << 20) /* largest decoded block accepted (and written) */

/* Receives bytes in order; returns 0 to go on, or a negative errno (its
 * error set) that stops the stream and is passed on unchanged. */
typedef int (*tart_bytes_fn)(void *ctx, const void *data, size_t len);

/* Decoding (lz4.c). Memory is bounded by two blocks, whatever the input. */
typedef struct tart_lz4_decoder tart_lz4_decoder;
/* limit: the most decoded bytes the stream may hold (a layer's
 * uncompressed-size); what: names the stream in errors ("layer 3 of
 * HOST/REPO:TAG"), copied. out receives the decoded bytes. */
int tart_lz4_decoder_new(uint64_t limit, const char *what, tart_bytes_fn out, void *ctx,
                         tart_lz4_decoder **d);
/* Feed the next len bytes of the stream (any split). -EBADMSG with a
 * one-line message on a bad magic, a block over TART_LZ4_BLOCK_MAX, a
 * block that does not decode to its stated size, bytes past the limit or
 * after the end marker. */
int tart_lz4_decoder_feed(tart_lz4_decoder *d, const void *data, size_t len);
/* The stream ended: -EBADMSG unless the end marker came; *decoded gets
 * the bytes decoded. */
int tart_lz4_decoder_end(tart_lz4_decoder *d, uint64_t *decoded);
void tart_lz4_decoder_free(tart_lz4_decoder *d);

/* Encoding (lz4_encode.c): blocks of at most TART_LZ4_BLOCK_MAX decoded
 * bytes that Apple's decoder accepts; the same input always gives the
 * same bytes. */
typedef struct tart_lz4_encoder tart_lz4_encoder;
int tart_lz4_encoder_new(tart_bytes_fn out, void *ctx, tart_lz4_encoder **e);
int tart_lz4_encoder_feed(tart_lz4_encoder *e, const void *data, size_t len);
/* Flush what is buffered and write the end marker. */
int tart_lz4_encoder_end(tart_lz4_encoder *e);
void tart_lz4_encoder_free(tart_lz4_encoder *e);

/* ---- a layer in tart's terms (compose.c), for push.c and vmdir.c ---- */

/* What tart's three files are made of, for one layer: tart's config.json
 * (VMConfig version 1, docs/tart.md "A layer as a tart VM directory"), and
 * which layer files are its disk.img and nvram.bin. */
typedef struct {
    store_id id;        /* the layer read (a saved state's base) */
    int macos;
    const char *arch;   /* tart's and OCI's name: "arm64" */
    char *nvram;        /* the layer's file that is nvram.bin: "AuxiliaryStorage" or the EFI store */
    uint64_t disk_size, nvram_size;
    char *config;       /* tart's config.json, as pushed and written */
    size_t config_len;
} tart_composed;

/* Compose layer ref of st: a saved state gives its base (noted). Settings
 * tart can't express are refused with one line naming them (a kernel and
 * initrd loader, extra disks, an NBD boot disk) or dropped with a note
 * (shares, installer media, ppi, ...): docs/tart.md lists which. */
int tart_compose(store *st, const char *ref, void (*note)(void *ctx, const char *line), void *ctx,
                 tart_composed *out);
void tart_composed_free(tart_composed *c);

/* The OCI config stub tart pushes (sorted keys, '/' as "\/"). NULL: out of memory. */
char *tart_compose_oci_config(const tart_composed *c, size_t *len);

/* One descriptor of the manifest; usize/udigest only on disk layers. */
typedef struct {
    const char *media_type;
    uint64_t size;
    char digest[72];
    int annotated;     /* tart's uncompressed-size and -content-digest annotations */
    uint64_t usize;
    char udigest[72];
} tart_descriptor;

/* The OCI manifest as tart's Foundation encoder writes it: sorted keys,
 * '/' escaped, annotations uncompressed-disk-size and upload-time (UTC,
 * seconds: "2026-12-05T14:07:33Z"). NULL: out of memory. */
char *tart_compose_manifest(const tart_descriptor *config, const tart_descriptor *layers,
                            size_t n, uint64_t disk_size, int64_t upload_time, size_t *len);

#endif
