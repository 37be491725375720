/* base/hex.h: hexadecimal, digests and base64. */
#include "hex.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = 0;
}

static int digit_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* upper case is not canonical */
}

int hex_decode(const char *in, size_t n, unsigned char *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi = digit_value(in[2 * i]), lo = hi < 0 ? -1 : digit_value(in[2 * i + 1]);
        if (lo < 0)
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

void sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char d[32];
    SHA256(data, len, d);
    hex_encode(d, sizeof d, out);
}

void digest_text(const unsigned char sha256[32], char out[72])
{
    memcpy(out, "sha256:", 7);
    hex_encode(sha256, 32, out + 7);
}

void sha256_digest_text(const void *data, size_t len, char out[72])
{
    unsigned char d[32];
    SHA256(data, len, d);
    digest_text(d, out);
}

char *base64_encode(const void *p, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (out)
        EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    return out;
}

static int base64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

unsigned char *base64_decode(const char *s, size_t *len)
{
    size_t n = strlen(s);
    if (n % 4)
        return NULL;
    unsigned char *out = malloc(n / 4 * 3 + 1);
    size_t k = 0;
    for (size_t i = 0; out && i < n; i += 4) {
        /* '=' only at the very end: "xx==" or "xxx=" */
        int pad = i + 4 == n ? (s[i + 3] == '=') + (s[i + 3] == '=' && s[i + 2] == '=') : 0;
        unsigned x = 0;
        for (int j = 0; j < 4; j++) {
            int v = j >= 4 - pad ? 0 : base64_value(s[i + j]);
            if (v < 0) {
                free(out);
                return NULL;
            }
            x = x << 6 | (unsigned)v;
        }
        out[k++] = (unsigned char)(x >> 16);
        if (pad < 2)
            out[k++] = (unsigned char)(x >> 8);
        if (pad < 1)
            out[k++] = (unsigned char)x;
    }
    if (out) {
        out[k] = 0;
        *len = k;
    }
    return out;
}
