/* nbd's own shared parts; nothing outside nbd/ includes this. */
#ifndef STRATA_NBD_INTERNAL_H
#define STRATA_NBD_INTERNAL_H

#include "../base/error.h"

#include <stddef.h>
#include <stdint.h>

#define nbd_fail(err, ...) err_set(ERR_NBD, (err), __VA_ARGS__)
#define nbd_oom() err_oom(ERR_NBD)

/* Read exactly n bytes: 0; -ENODATA if the peer hung up before the first
 * byte (between messages: not an error of the protocol, and raised without
 * a message), -ECONNRESET if it hung up in the middle; another negative
 * errno. Interrupted calls are retried. */
int nbd_read_full(int fd, void *buf, size_t n);
/* Write exactly n bytes (never raising SIGPIPE). */
int nbd_write_full(int fd, const void *buf, size_t n);
/* Read and drop n bytes: a refused request's data, to stay in sync. */
int nbd_discard(int fd, uint64_t n);

/* big-endian, as the protocol sends every number */
static inline void put_be16(unsigned char *p, uint16_t v) { p[0] = (unsigned char)(v >> 8), p[1] = (unsigned char)v; }
static inline void put_be32(unsigned char *p, uint32_t v)
{
    put_be16(p, (uint16_t)(v >> 16));
    put_be16(p + 2, (uint16_t)v);
}
static inline void put_be64(unsigned char *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}
static inline uint16_t get_be16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t get_be32(const unsigned char *p)
{
    return (uint32_t)get_be16(p) << 16 | get_be16(p + 2);
}
static inline uint64_t get_be64(const unsigned char *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

#endif
