/* remote: errors, secrets, digests, string lists. */
#define _GNU_SOURCE
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

/* 1 if s starts with a literal IPv4 address in 127.0.0.0/8 (four decimal
 * octets, each at most 255); *end is where it stops */
static int ipv4_loopback(const char *s, const char **end)
{
    for (int octet = 0; octet < 4; octet++) {
        if (octet && *s++ != '.')
            return 0;
        unsigned v = 0;
        int digits = 0;
        for (; isdigit((unsigned char)*s) && digits < 4; s++, digits++)
            v = v * 10 + (unsigned)(*s - '0');
        if (!digits || digits > 3 || v > 255 || (octet == 0 && v != 127))
            return 0;
    }
    *end = s;
    return 1;
}

/* Loopback is what cannot leave the machine whatever DNS says: a literal
 * 127.x.y.z, [::1], or the name localhost, each with an optional port
 * (":digits") and nothing after it but a URL's path, query or fragment
 * (so the rest of a URL can be passed as it stands: the token realm). "127.example.com" and "localhost.evil.com" are
 * names anyone can point anywhere. */
int rm_host_loopback(const char *host)
{
    const char *p = NULL;
    if (!strncmp(host, "[::1]", 5))
        p = host + 5;
    else if (!strncasecmp(host, "localhost", 9))
        p = host + 9;
    else if (!ipv4_loopback(host, &p))
        return 0;
    if (*p == ':') {
        const char *port = ++p;
        while (isdigit((unsigned char)*p))
            p++;
        if (p == port || p - port > 5)
            return 0;
    }
    return !*p || *p == '/' || *p == '?' || *p == '#';
}

void remote_strings_free(char **s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(s[i]);
    free(s);
}
