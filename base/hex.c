/* base/hex.h: hexadecimal and digests. */
#include "hex.h"

#include <openssl/sha.h>
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
