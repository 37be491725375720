/* remote: errors, secrets, digests, base64, string lists. */
#define _GNU_SOURCE
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *remote_error(void)
{
    return err_last()->message;
}

void rm_wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

int rm_digest_valid(const char *d)
{
    if (!d || strncmp(d, "sha256:", 7) || strlen(d) != 71)
        return 0;
    for (const char *p = d + 7; *p; p++)
        if (!isdigit((unsigned char)*p) && !(*p >= 'a' && *p <= 'f'))
            return 0;
    return 1;
}

int rm_host_loopback(const char *host)
{
    size_t n = strcspn(host, ":");
    if (host[0] == '[') /* [::1]:port */
        return !strncmp(host, "[::1]", 5);
    return (n == 9 && !strncmp(host, "localhost", 9)) || !strncmp(host, "127.", 4);
}

char *rm_b64_encode(const void *p, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (out)
        EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    return out;
}

char *rm_b64_decode(const char *s, size_t *n)
{
    size_t len = strlen(s);
    if (len % 4 || len > (1u << 20))
        return NULL;
    unsigned char *out = malloc(len / 4 * 3 + 1);
    if (!out)
        return NULL;
    int got = EVP_DecodeBlock(out, (const unsigned char *)s, (int)len);
    if (got < 0) {
        free(out);
        return NULL;
    }
    /* EVP_DecodeBlock counts the padding as bytes */
    if (len && s[len - 1] == '=')
        got--;
    if (len > 1 && s[len - 2] == '=')
        got--;
    out[got] = 0;
    *n = (size_t)got;
    return (char *)out;
}

void remote_strings_free(char **s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(s[i]);
    free(s);
}
