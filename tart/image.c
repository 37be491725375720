/*
 * tart: reading a tart image's OCI manifest and its VM config
 * (research/tart.md §3.1, tart's OCI/Manifest.swift, VMDirectory+OCI.swift,
 * VMConfig.swift at 5287b59).
 *
 * A tart manifest lists a config layer (tart's VMConfig JSON), the disk as
 * disk.v2 layers in order (each an LZ4 stream of one slice, whose size and
 * SHA-256 decoded are annotations), and the NVRAM. Slice sizes come from
 * the annotations only: tart cut 512 MiB slices since #866, 500,000,000
 * bytes before (#821), and by compressed size before that (#589). Every
 * number is bounded before anything is sized by it.
 */
#define _GNU_SOURCE
#include "../base/file.h"
#include "../base/hex.h"
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int bad(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(const char *what, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return tart_fail(EBADMSG, "%s: %s", what, why);
}

int tart_digest_valid(const char *d)
{
    if (!d || strlen(d) != 71 || strncmp(d, "sha256:", 7))
        return 0;
    for (const char *p = d + 7; *p; p++)
        if (!strchr("0123456789abcdef", *p))
            return 0;
    return 1;
}

/* a decimal annotation without sign, spaces or leading zeros */
static int decimal(const char *s, uint64_t max, uint64_t *v)
{
    if (!s || !*s || strlen(s) > 20 || (s[0] == '0' && s[1]))
        return 0;
    uint64_t n = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9' || n > (UINT64_MAX - 9) / 10)
            return 0;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    *v = n;
    return n <= max;
}

static const char *media_type(json_t *d)
{
    return json_string_value(json_object_get(d, "mediaType"));
}

int tart_manifest_is_tart(const char *body, size_t len)
{
    if (len > REMOTE_MANIFEST_MAX)
        return 0;
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *layers = json_object_get(root, "layers");
    int tart = 0;
    for (size_t i = 0; !tart && i < json_array_size(layers); i++) {
        const char *mt = media_type(json_array_get(layers, i));
        tart = mt && !strncmp(mt, "application/vnd.cirruslabs.tart.", 32);
    }
    json_decref(root);
    return tart;
}

/* a descriptor's digest and size, checked */
static int descriptor(const char *what, size_t i, json_t *d, char digest[72], uint64_t max,
                      uint64_t *size)
{
    const char *dg = json_string_value(json_object_get(d, "digest"));
    json_t *s = json_object_get(d, "size");
    if (!tart_digest_valid(dg))
        return bad(what, "layer %zu: its digest is not sha256:<64 hex>", i + 1);
    if (!json_is_integer(s) || json_integer_value(s) < 0 || (uint64_t)json_integer_value(s) > max)
        return bad(what, "layer %zu: its size is missing or over %" PRIu64 " bytes", i + 1, max);
    memcpy(digest, dg, 72);
    *size = (uint64_t)json_integer_value(s);
    return 0;
}

/* the most an LZ4 stream of usize bytes can take: LZ4's bound per block,
 * each block's header, the end marker */
static uint64_t encoded_max(uint64_t usize)
{
    uint64_t blocks = usize / (64u << 10) + 1;
    return usize + usize / 255 + blocks * (16 + 12) + 4;
}

static int disk_layer(const char *what, size_t i, json_t *d, tart_image *im)
{
    tart_disk_layer *L = &im->disk[im->ndisk];
    json_t *ann = json_object_get(d, "annotations");
    const char *us = json_string_value(json_object_get(ann, TART_ANN_SIZE));
    const char *ud = json_string_value(json_object_get(ann, TART_ANN_DIGEST));
    if (!decimal(us, TART_DISK_MAX, &L->usize))
        return bad(what, "disk layer %zu: %s is missing or not a size up to 4 TiB", im->ndisk + 1,
                   TART_ANN_SIZE);
    if (!tart_digest_valid(ud))
        return bad(what, "disk layer %zu: %s is missing or not sha256:<64 hex>", im->ndisk + 1,
                   TART_ANN_DIGEST);
    memcpy(L->udigest, ud, 72);
    int rc = descriptor(what, i, d, L->digest, encoded_max(L->usize), &L->size);
    if (rc)
        return rc;
    if (im->disk_size + L->usize > TART_DISK_MAX)
        return bad(what, "the disk layers add up to more than 4 TiB");
    L->offset = im->disk_size;
    im->disk_size += L->usize;
    im->ndisk++;
    return 0;
}

/* the one config or NVRAM layer */
static int single_layer(const char *what, size_t i, json_t *d, const char *name, char digest[72],
                        uint64_t max, uint64_t *size)
{
    if (digest[0])
        return bad(what, "more than one %s layer", name);
    return descriptor(what, i, d, digest, max, size);
}

static int layer(const char *what, size_t i, json_t *d, const tart_image_opts *o, tart_image *im)
{
    const char *mt = media_type(d);
    if (!json_is_object(d) || !mt)
        return bad(what, "layer %zu has no media type", i + 1);
    if (!strcmp(mt, TART_MT_DISK_V2))
        return disk_layer(what, i, d, im);
    if (!strcmp(mt, TART_MT_CONFIG))
        return single_layer(what, i, d, "config", im->config, TART_CONFIG_MAX, &im->config_size);
    if (!strcmp(mt, TART_MT_NVRAM))
        return single_layer(what, i, d, "NVRAM", im->nvram, TART_NVRAM_MAX, &im->nvram_size);
    if (!strcmp(mt, TART_MT_DISK_V1))
        return bad(what, "a disk.v1 layer: tart's legacy disk format, which strata does not read "
                         "(tart pull refuses it too since #1204); push it again with a newer tart");
    if (!strcmp(mt, TART_MT_ASIF_OVERLAY))
        return bad(what, "a disk.asif.overlay.v1 layer: a stacked disk in Apple's ASIF format, "
                         "which strata can't read");
    im->ignored++;
    if (o && o->note) { /* as tart: a layer of a type it doesn't know is left alone */
        char line[300];
        snprintf(line, sizeof line, "%s: ignoring layer %zu of type %.200s", what, i + 1, mt);
        o->note(o->note_ctx, line);
    }
    return 0;
}

static int check_sizes(const char *what, json_t *root, tart_image *im)
{
    if (!im->config[0])
        return bad(what, "no config layer (%s)", TART_MT_CONFIG);
    if (!im->nvram[0])
        return bad(what, "no NVRAM layer (%s)", TART_MT_NVRAM);
    if (!im->ndisk || !im->disk_size)
        return bad(what, "no disk layers (%s)", TART_MT_DISK_V2);
    for (size_t i = 0; i + 1 < im->ndisk; i++)
        if (im->disk[i].usize < TART_SLICE_MIN)
            return bad(what, "disk layer %zu holds %" PRIu64 " bytes; only the last may be under "
                             "1 MiB", i + 1, im->disk[i].usize);
    if (im->disk_size % 512)
        return bad(what, "the disk layers add up to %" PRIu64 " bytes, not whole 512-byte "
                         "sectors", im->disk_size);
    json_t *ann = json_object_get(root, "annotations");
    json_t *ds = json_object_get(ann, TART_ANN_DISK_SIZE);
    uint64_t size;
    if (ds && !decimal(json_string_value(ds), TART_DISK_MAX, &size))
        return bad(what, "%s is not a size up to 4 TiB", TART_ANN_DISK_SIZE);
    if (ds && size != im->disk_size) /* older images lack it: the sum decides, as in tart */
        return bad(what, "the disk layers add up to %" PRIu64 " bytes, not the %" PRIu64
                         " of %s", im->disk_size, size, TART_ANN_DISK_SIZE);
    return 0;
}

int tart_image_parse(const char *body, size_t len, const char *what, const tart_image_opts *o,
                     tart_image *im)
{
    memset(im, 0, sizeof *im);
    if (len > REMOTE_MANIFEST_MAX)
        return bad(what, "the manifest is over %u bytes", REMOTE_MANIFEST_MAX);
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    json_t *layers = json_object_get(root, "layers");
    size_t n = json_array_size(layers);
    int rc = 0;
    if (!json_is_object(root))
        rc = bad(what, "the manifest is not a JSON object");
    else if (!json_is_array(layers))
        rc = bad(what, "the manifest has no layers");
    else if (n > TART_LAYERS_MAX)
        rc = bad(what, "%zu layers, more than the %u tart's slicing makes of a 4 TiB disk",
                 n, TART_LAYERS_MAX);
    else if (!(im->disk = calloc(n ? n : 1, sizeof *im->disk)))
        rc = tart_oom();
    for (size_t i = 0; !rc && i < n; i++)
        rc = layer(what, i, json_array_get(layers, i), o, im);
    if (!rc)
        rc = check_sizes(what, root, im);
    json_decref(root);
    if (rc)
        tart_image_free(im);
    return rc;
}

void tart_image_free(tart_image *im)
{
    free(im->disk);
    memset(im, 0, sizeof *im);
}

/* ---- tart's VM config ---- */

/* VZ's HardwareModel data, written to path and read as import reads it */
static int hardware_model_guest(const char *what, const unsigned char *model, size_t n,
                                const char *path, remote_guest *g)
{
    int rc = atomic_file_write_all(path, model, n, 0644, 0);
    if (rc)
        return tart_fail(-rc, "%s: %s", path, strerror(-rc));
    store_identity id = {0};
    if (store_plist_identity(path, "HardwareModel", &id) || !id.has_hardware_model)
        return bad(what, "the config's hardwareModel is not a HardwareModel property list");
    snprintf(g->macos_min, sizeof g->macos_min, "%s", id.minimum_supported_os);
    g->macos_data_rep = id.data_representation_version;
    return 0;
}

int tart_config_guest(const char *data, size_t len, const char *what, const char *hw_path,
                      remote_guest *g, int *macos)
{
    memset(g, 0, sizeof *g);
    json_error_t je;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    int rc = 0;
    if (!json_is_object(root))
        rc = bad(what, "the config layer is not a JSON object (line %d: %s)", je.line, je.text);
    const char *os = rc ? NULL : json_string_value(json_object_get(root, "os"));
    const char *arch = rc ? NULL : json_string_value(json_object_get(root, "arch"));
    /* tart's defaults (VMConfig.init(from:)): darwin, arm64 */
    if (!rc && json_object_get(root, "os") && (!os || (strcmp(os, "darwin") && strcmp(os, "linux"))))
        rc = bad(what, "the config's os is neither darwin nor linux");
    if (!rc && json_object_get(root, "arch") &&
        (!arch || (strcmp(arch, "arm64") && strcmp(arch, "amd64"))))
        rc = bad(what, "the config's arch is neither arm64 nor amd64");
    if (!rc) {
        *macos = !os || !strcmp(os, "darwin");
        snprintf(g->os, sizeof g->os, "%s", *macos ? "macos" : "linux");
        snprintf(g->arch, sizeof g->arch, "%s", arch ? arch : "arm64");
    }
    const char *hw = rc ? NULL : json_string_value(json_object_get(root, "hardwareModel"));
    size_t n = 0;
    unsigned char *model = rc || !*macos ? NULL : base64_decode(hw, &n);
    if (!rc && *macos && !model)
        rc = bad(what, "a macOS config without a base64 hardwareModel");
    if (!rc && model && hw_path) /* its minimum macOS, as a strata manifest's annotations say */
        rc = hardware_model_guest(what, model, n, hw_path, g);
    free(model);
    json_decref(root);
    return rc;
}
