/*
 * PPM (P6, 8-bit) to PNG, for a qemu older than 7.1 whose screendump writes
 * only PPM: an RGB PNG, each row unfiltered, the whole image one zlib
 * stream in one IDAT chunk. Screens are small (a few MiB), so in memory.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* next header number of a PPM, skipping whitespace and # comments */
static int ppm_number(FILE *f, unsigned long *out)
{
    int c;
    while ((c = fgetc(f)) != EOF) {
        if (c == '#')
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
        else if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
    }
    unsigned long v = 0;
    int digits = 0;
    for (; c >= '0' && c <= '9' && digits < 9; c = fgetc(f), digits++)
        v = v * 10 + (unsigned long)(c - '0');
    *out = v;
    /* the one whitespace byte after a number is the header's, not pixel data */
    return digits && (c == ' ' || c == '\t' || c == '\n' || c == '\r') ? 0 : -1;
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static int chunk(FILE *out, const char *type, const unsigned char *data, size_t len)
{
    unsigned char head[8], crc[4];
    put32(head, (uint32_t)len);
    memcpy(head + 4, type, 4);
    uLong c = crc32(0, head + 4, 4);
    if (len) /* crc32() of a NULL buffer is its start value, not a no-op */
        c = crc32(c, data, (uInt)len);
    put32(crc, (uint32_t)c);
    return fwrite(head, 1, 8, out) == 8 && (!len || fwrite(data, 1, len, out) == len) &&
                   fwrite(crc, 1, 4, out) == 4
               ? 0
               : -1;
}

/* rows of w*3 bytes from f, each prefixed with filter type 0 (none) */
static unsigned char *read_rows(FILE *f, unsigned long w, unsigned long h, size_t *len)
{
    size_t stride = w * 3 + 1;
    *len = stride * h;
    unsigned char *raw = malloc(*len);
    for (unsigned long y = 0; raw && y < h; y++) {
        raw[y * stride] = 0;
        if (fread(raw + y * stride + 1, 1, stride - 1, f) != stride - 1) {
            free(raw);
            raw = NULL;
        }
    }
    return raw;
}

int boot_ppm_to_png(const char *ppm_path, const char *png_path)
{
    FILE *f = fopen(ppm_path, "rb");
    if (!f)
        return boot_fail_errno(errno, "%s", ppm_path);
    unsigned long w = 0, h = 0, max = 0;
    int ok = fgetc(f) == 'P' && fgetc(f) == '6' && !ppm_number(f, &w) && !ppm_number(f, &h) &&
             !ppm_number(f, &max) && max == 255 && w && h && w <= 16384 && h <= 16384;
    size_t rawlen = 0;
    unsigned char *raw = ok ? read_rows(f, w, h, &rawlen) : NULL;
    fclose(f);
    if (!raw)
        return boot_fail(EINVAL, "%s: not an 8-bit PPM screen dump", ppm_path);
    uLongf zlen = compressBound((uLong)rawlen);
    unsigned char *z = malloc(zlen);
    int rc = z && compress2(z, &zlen, raw, (uLong)rawlen, 6) == Z_OK ? 0 : -ENOMEM;
    free(raw);
    FILE *out = rc ? NULL : fopen(png_path, "wb");
    if (!rc && !out)
        rc = boot_fail_errno(errno, "%s", png_path);
    if (out) {
        unsigned char ihdr[13] = {0};
        put32(ihdr, (uint32_t)w);
        put32(ihdr + 4, (uint32_t)h);
        ihdr[8] = 8; /* bits per channel */
        ihdr[9] = 2; /* RGB */
        if (fwrite("\x89PNG\r\n\x1a\n", 1, 8, out) != 8 || chunk(out, "IHDR", ihdr, 13) ||
            chunk(out, "IDAT", z, zlen) || chunk(out, "IEND", NULL, 0))
            rc = boot_fail(EIO, "%s: could not write it", png_path);
        if (fclose(out) && !rc)
            rc = boot_fail_errno(errno, "%s", png_path);
    }
    free(z);
    return rc;
}
