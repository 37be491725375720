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
    char arch_buf[16];  /* where arch is kept when it is the host's */
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

/* ---- tart's images (image.c) ---- */

#define TART_DISK_MAX (4ull << 40)       /* the largest disk taken, as strata's manifests */
#define TART_SLICE_MIN (1ull << 20)      /* every disk layer but the last holds at least this */
/* 4 TiB in tart's 512 MiB slices, config and NVRAM, and room for a few
 * layers tart ignores: a manifest listing more is refused before its
 * layers are looked at */
#define TART_LAYERS_MAX 8200u
#define TART_CONFIG_MAX (1u << 20)       /* as archive/tart.c reads a config.json */
#define TART_NVRAM_MAX (256u << 20)      /* AuxiliaryStorage is ~33 MB, OVMF's vars < 1 MB */

typedef struct {
    char digest[72];   /* the compressed blob */
    uint64_t size;     /* its bytes */
    uint64_t usize;    /* decoded bytes (TART_ANN_SIZE) */
    char udigest[72];  /* their SHA-256 (TART_ANN_DIGEST) */
    uint64_t offset;   /* where they go in the disk */
} tart_disk_layer;

typedef struct {
    char config[72], nvram[72]; /* blob digests */
    uint64_t config_size, nvram_size;
    tart_disk_layer *disk;      /* in the manifest's order */
    size_t ndisk;
    uint64_t disk_size;         /* the slices' sum, = TART_ANN_DISK_SIZE where given */
    size_t ignored;             /* layers of types tart ignores too */
} tart_image;

typedef struct {
    void (*note)(void *ctx, const char *line); /* a layer ignored; may be NULL */
    void *note_ctx;
} tart_image_opts;

/* 1 if d is "sha256:" and 64 lowercase hex digits. */
int tart_digest_valid(const char *d);

/* Parse and check a tart image's OCI manifest (research/tart.md §3.1);
 * what names it in errors. -EBADMSG with one line for anything strata
 * can't take: disk.v1 or ASIF layers, a missing or second config or NVRAM
 * layer, more than TART_LAYERS_MAX layers, malformed digests, slices that
 * don't add up to the disk size. O(layers). Free with tart_image_free. */
int tart_image_parse(const char *body, size_t len, const char *what, const tart_image_opts *o,
                     tart_image *im);
void tart_image_free(tart_image *im);

/* What a tart config (len bytes of VMConfig JSON) says of its guest: OS,
 * architecture (tart's defaults darwin, arm64 where absent), and for macOS
 * its hardwareModel's minimum OS and data representation (the plist is
 * written to hw_path to be read; NULL: not looked at); *macos 1 for
 * darwin. -EBADMSG if it is not a config. The full check of its fields is
 * archive_import_tart's. */
int tart_config_guest(const char *data, size_t len, const char *what, const char *hw_path,
                      remote_guest *g, int *macos);

#endif
