/*
 * Finding a vz guest's address from the host: macOS's bootpd hands out the
 * NAT addresses and keeps them in /var/db/dhcpd_leases, one block per lease:
 *
 *   {
 *       name=debian
 *       ip_address=192.168.64.7
 *       hw_address=1,a2:b:c3:4:e5:f6
 *       identifier=1,a2:b:c3:4:e5:f6
 *       lease=0x67f0c1a2
 *   }
 *
 * hw_address is "<type>,<MAC>", the MAC's bytes in unpadded hex ("b" for
 * 0b); lease is the expiry time, hex seconds since 1970. A guest that sends
 * a DUID as its DHCP client identifier (Ubuntu's default) gets a block
 * keyed by that DUID ("ff,..."), which no MAC lookup can match. `arp -an`
 * prints "? (192.168.64.7) at a2:b:c3:4:e5:f6 on bridge100 ...", unpadded
 * too. Pure text functions, so they are tested on recorded files.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* six bytes from "a2:b:c3:4:e5:f6" or "a2:0b:..." (1-2 hex digits each);
 * len is how much of s to read. 0 on success. */
static int mac_bytes(const char *s, size_t len, unsigned char out[6])
{
    size_t i = 0;
    for (int k = 0; k < 6; k++) {
        unsigned v = 0;
        size_t digits = 0;
        while (i < len && isxdigit((unsigned char)s[i]) && digits < 2) {
            char c = (char)tolower((unsigned char)s[i++]);
            v = v * 16 + (unsigned)(c <= '9' ? c - '0' : c - 'a' + 10);
            digits++;
        }
        if (!digits)
            return -1;
        out[k] = (unsigned char)v;
        if (k < 5 && (i >= len || s[i++] != ':'))
            return -1;
    }
    return i == len ? 0 : -1;
}

/* the value of "key=" on the line at p (up to the end of the line) */
static int line_value(const char *p, const char *end, const char *key, const char **v, size_t *n)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    size_t k = strlen(key);
    if ((size_t)(end - p) <= k || strncmp(p, key, k) || p[k] != '=')
        return 0;
    *v = p + k + 1;
    *n = (size_t)(end - *v);
    while (*n && ((*v)[*n - 1] == '\r' || (*v)[*n - 1] == ' '))
        (*n)--;
    return 1;
}

typedef struct {
    char ip[64];
    unsigned char mac[6];
    int has_mac, duid;
    long long expires;
} lease;

/* fill l from the block's lines [p, end) */
static void parse_block(const char *p, const char *end, lease *l)
{
    memset(l, 0, sizeof *l);
    l->expires = -1;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        const char *v;
        size_t n;
        if (line_value(p, eol, "ip_address", &v, &n) && n < sizeof l->ip) {
            memcpy(l->ip, v, n);
            l->ip[n] = 0;
        } else if (line_value(p, eol, "hw_address", &v, &n)) {
            const char *comma = memchr(v, ',', n);
            if (comma && comma - v == 2 && !strncasecmp(v, "ff", 2))
                l->duid = 1; /* type 255: a DUID-based client identifier */
            else if (comma)
                l->has_mac = mac_bytes(comma + 1, n - (size_t)(comma + 1 - v), l->mac) == 0;
        } else if (line_value(p, eol, "lease", &v, &n)) {
            char num[32];
            if (n < sizeof num) {
                memcpy(num, v, n);
                num[n] = 0;
                char *e;
                errno = 0;
                long long t = strtoll(num, &e, 0);
                if (!errno && *e == 0 && e != num)
                    l->expires = t;
            }
        }
        p = eol + 1;
    }
}

int boot_lease_find(const char *text, const char *mac, long long now, char *out, size_t n,
                    unsigned *duid)
{
    unsigned char want[6];
    if (duid)
        *duid = 0;
    if (mac_bytes(mac, strlen(mac), want))
        return boot_fail(EINVAL, "'%s' is not a MAC address", mac);
    long long best = -1;
    for (const char *p = text; (p = strchr(p, '{'));) {
        const char *end = strchr(p, '}');
        if (!end)
            break;
        lease l;
        parse_block(p + 1, end, &l);
        p = end + 1;
        if (l.duid && duid)
            (*duid)++;
        if (!l.has_mac || memcmp(l.mac, want, 6) || !l.ip[0] || l.expires <= now)
            continue;
        if (l.expires > best) {
            best = l.expires;
            snprintf(out, n, "%s", l.ip);
        }
    }
    return best < 0 ? -ENOENT : 0;
}

int boot_arp_find(const char *text, const char *mac, char *out, size_t n)
{
    unsigned char want[6], got[6];
    if (mac_bytes(mac, strlen(mac), want))
        return boot_fail(EINVAL, "'%s' is not a MAC address", mac);
    for (const char *p = text; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        const char *open = memchr(p, '(', len), *close = open ? memchr(open, ')', len - (size_t)(open - p)) : NULL;
        const char *at = close ? strstr(close, ") at ") : NULL;
        if (at && at < p + len) {
            const char *m = at + 5;
            size_t mlen = strcspn(m, " \t\n");
            if (mac_bytes(m, mlen, got) == 0 && !memcmp(got, want, 6) &&
                (size_t)(close - open - 1) < n) {
                snprintf(out, n, "%.*s", (int)(close - open - 1), open + 1);
                return 0;
            }
        }
        p = eol ? eol + 1 : NULL;
    }
    return -ENOENT;
}
