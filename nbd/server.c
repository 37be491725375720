/* nbd: the protocol (NetworkBlockDevice/nbd doc/proto.md, the baseline):
 * the fixed newstyle handshake, then simple replies to requests. */
#define _GNU_SOURCE
#include "nbd.h"
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- constants of the protocol ---- */

#define NBD_MAGIC 0x4e42444d41474943ull       /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC 0x49484156454f5054ull  /* "IHAVEOPT" */
#define NBD_REP_MAGIC 0x3e889045565a9ull      /* option replies */
#define NBD_REQUEST_MAGIC 0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u

#define NBD_FLAG_FIXED_NEWSTYLE (1u << 0) /* handshake flags, and the client's */
#define NBD_FLAG_NO_ZEROES (1u << 1)

enum { OPT_EXPORT_NAME = 1, OPT_ABORT = 2, OPT_LIST = 3, OPT_INFO = 6, OPT_GO = 7 };
enum { REP_ACK = 1, REP_SERVER = 2, REP_INFO = 3 };
#define REP_ERR(n) ((1u << 31) + (n))
#define REP_ERR_UNSUP REP_ERR(1)
#define REP_ERR_INVALID REP_ERR(3)
#define REP_ERR_UNKNOWN REP_ERR(6)
enum { INFO_EXPORT = 0, INFO_BLOCK_SIZE = 3 };

/* transmission flags */
#define TF_HAS_FLAGS (1u << 0)
#define TF_READ_ONLY (1u << 1)
#define TF_SEND_FLUSH (1u << 2)
#define TF_SEND_FUA (1u << 3)
#define TF_SEND_TRIM (1u << 5)
#define TF_SEND_WRITE_ZEROES (1u << 6)

enum { CMD_READ = 0, CMD_WRITE = 1, CMD_DISC = 2, CMD_FLUSH = 3, CMD_TRIM = 4, CMD_WRITE_ZEROES = 6 };
#define CMD_FLAG_FUA (1u << 0)
#define CMD_FLAG_NO_HOLE (1u << 1)

/* the protocol's error values: fixed numbers, not the host's errno
 * (macOS's ENOTSUP is 45, the protocol's 95) */
enum { NBD_EPERM = 1, NBD_EIO = 5, NBD_ENOMEM = 12, NBD_EINVAL = 22, NBD_ENOSPC = 28 };

#define OPTION_DATA_MAX 8192 /* a name (at most 4096 bytes) and its info requests */
#define NAME_MAX_BYTES 4096

static uint32_t nbd_error(int rc)
{
    switch (-rc) {
    case 0: return 0;
    case EPERM: case EROFS: return NBD_EPERM;
    case ENOMEM: return NBD_ENOMEM;
    case EINVAL: return NBD_EINVAL;
    case ENOSPC: case EDQUOT: case EFBIG: return NBD_ENOSPC;
    default: return NBD_EIO;
    }
}

/* ---- the handshake ---- */

typedef struct {
    int fd;
    const nbd_export *e;
    const nbd_backend *b;
    int no_zeroes; /* the client asked for NBD_FLAG_C_NO_ZEROES */
} conn;

static uint16_t transmission_flags(const conn *c)
{
    uint16_t f = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA | TF_SEND_TRIM | TF_SEND_WRITE_ZEROES;
    return c->e->read_only || !c->b->write ? f | TF_READ_ONLY : f;
}

static int opt_reply(conn *c, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
    unsigned char h[20];
    put_be64(h, NBD_REP_MAGIC);
    put_be32(h + 8, opt);
    put_be32(h + 12, type);
    put_be32(h + 16, len);
    int rc = nbd_write_full(c->fd, h, sizeof h);
    return rc || !len ? rc : nbd_write_full(c->fd, data, len);
}

static int name_is_ours(const conn *c, const char *name, uint32_t len)
{
    return len == strlen(c->e->name) && !memcmp(name, c->e->name, len);
}

/* NBD_OPT_EXPORT_NAME: no reply header; an unknown name can only be refused
 * by hanging up (the reason NBD_OPT_GO exists) */
static int export_name(conn *c, const char *data, uint32_t len, int *go)
{
    if (!name_is_ours(c, data, len))
        return nbd_fail(ENOENT, "the client asked for an export this server does not have");
    unsigned char r[10 + 124] = {0};
    put_be64(r, c->e->size);
    put_be16(r + 8, transmission_flags(c));
    *go = 1;
    return nbd_write_full(c->fd, r, c->no_zeroes ? 10 : sizeof r);
}

static int list_exports(conn *c, uint32_t len)
{
    if (len)
        return opt_reply(c, OPT_LIST, REP_ERR_INVALID, NULL, 0);
    size_t n = strlen(c->e->name), d = c->e->description ? strlen(c->e->description) : 0;
    unsigned char *r = malloc(4 + n + d);
    if (!r)
        return nbd_oom();
    put_be32(r, (uint32_t)n);
    memcpy(r + 4, c->e->name, n);
    if (d)
        memcpy(r + 4 + n, c->e->description, d);
    int rc = opt_reply(c, OPT_LIST, REP_SERVER, r, (uint32_t)(4 + n + d));
    free(r);
    return rc ? rc : opt_reply(c, OPT_LIST, REP_ACK, NULL, 0);
}

/* NBD_OPT_INFO and NBD_OPT_GO: name length, name, count of info requests,
 * the requests (16 bits each) */
static int info_or_go(conn *c, uint32_t opt, const unsigned char *data, uint32_t len, int *go)
{
    uint32_t nlen = len >= 4 ? get_be32(data) : UINT32_MAX;
    if (nlen > NAME_MAX_BYTES || len < 6 + nlen)
        return opt_reply(c, opt, REP_ERR_INVALID, NULL, 0);
    uint16_t nreq = get_be16(data + 4 + nlen);
    if (len != 6 + nlen + 2u * nreq)
        return opt_reply(c, opt, REP_ERR_INVALID, NULL, 0);
    if (!name_is_ours(c, (const char *)data + 4, nlen))
        return opt_reply(c, opt, REP_ERR_UNKNOWN, NULL, 0);
    unsigned char info[12];
    put_be16(info, INFO_EXPORT);
    put_be64(info + 2, c->e->size);
    put_be16(info + 10, transmission_flags(c));
    int rc = opt_reply(c, opt, REP_INFO, info, sizeof info);
    for (uint16_t i = 0; !rc && i < nreq; i++) {
        if (get_be16(data + 6 + nlen + 2u * i) != INFO_BLOCK_SIZE)
            continue; /* the others (name, description) are optional */
        unsigned char bs[14];
        put_be16(bs, INFO_BLOCK_SIZE);
        put_be32(bs + 2, 1);    /* any alignment */
        put_be32(bs + 6, 4096); /* preferred */
        put_be32(bs + 10, NBD_REQUEST_MAX);
        rc = opt_reply(c, opt, REP_INFO, bs, sizeof bs);
    }
    if (!rc)
        rc = opt_reply(c, opt, REP_ACK, NULL, 0);
    if (!rc && opt == OPT_GO)
        *go = 1;
    return rc;
}

/* one option; *go: transmission starts; *done: the client aborted */
static int option(conn *c, int *go, int *done)
{
    unsigned char h[16];
    int rc = nbd_read_full(c->fd, h, sizeof h);
    if (rc == -ENODATA) { /* hung up between options */
        *done = 1;
        return 0;
    }
    if (rc)
        return rc;
    if (get_be64(h) != NBD_OPTS_MAGIC)
        return nbd_fail(EPROTO, "the client sent an option without its magic number");
    uint32_t opt = get_be32(h + 8), len = get_be32(h + 12);
    if (len > OPTION_DATA_MAX) { /* read past it to stay in sync */
        if ((rc = nbd_discard(c->fd, len)))
            return rc;
        return opt_reply(c, opt, opt == OPT_ABORT ? REP_ACK : REP_ERR_INVALID, NULL, 0);
    }
    unsigned char data[OPTION_DATA_MAX];
    if ((rc = nbd_read_full(c->fd, data, len)))
        return rc;
    switch (opt) {
    case OPT_EXPORT_NAME: return export_name(c, (const char *)data, len, go);
    case OPT_ABORT: *done = 1; return opt_reply(c, opt, REP_ACK, NULL, 0);
    case OPT_LIST: return list_exports(c, len);
    case OPT_INFO: case OPT_GO: return info_or_go(c, opt, data, len, go);
    default: return opt_reply(c, opt, REP_ERR_UNSUP, NULL, 0);
    }
}

static int handshake(conn *c, int *go)
{
    unsigned char hello[18];
    put_be64(hello, NBD_MAGIC);
    put_be64(hello + 8, NBD_OPTS_MAGIC);
    put_be16(hello + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    unsigned char cf[4];
    int rc = nbd_write_full(c->fd, hello, sizeof hello);
    if (!rc)
        rc = nbd_read_full(c->fd, cf, sizeof cf);
    if (rc)
        return rc;
    uint32_t flags = get_be32(cf);
    if (flags & ~(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))
        return nbd_fail(EPROTO, "the client sent handshake flags this server does not know");
    c->no_zeroes = !!(flags & NBD_FLAG_NO_ZEROES);
    int done = 0;
    while (!rc && !*go && !done)
        rc = option(c, go, &done);
    return rc;
}

/* ---- transmission ---- */

static int simple_reply(conn *c, uint64_t cookie, uint32_t error, const void *data, uint32_t len)
{
    unsigned char h[16];
    put_be32(h, NBD_SIMPLE_REPLY_MAGIC);
    put_be32(h + 4, error);
    put_be64(h + 8, cookie);
    int rc = nbd_write_full(c->fd, h, sizeof h);
    return rc || error || !len ? rc : nbd_write_full(c->fd, data, len);
}

/* the flags each command takes */
static uint16_t flags_allowed(uint16_t type)
{
    switch (type) {
    case CMD_WRITE: case CMD_TRIM: return CMD_FLAG_FUA;
    case CMD_WRITE_ZEROES: return CMD_FLAG_FUA | CMD_FLAG_NO_HOLE;
    default: return 0;
    }
}

/* the error a request gets before the backend sees it, 0 if none */
static uint32_t check_request(const conn *c, uint16_t type, uint16_t flags, uint64_t off, uint32_t len)
{
    int writes = type == CMD_WRITE || type == CMD_TRIM || type == CMD_WRITE_ZEROES;
    if (flags & ~flags_allowed(type))
        return NBD_EINVAL;
    if (type == CMD_FLUSH)
        return 0;
    if (!len || ((type == CMD_READ || type == CMD_WRITE) && len > NBD_REQUEST_MAX))
        return NBD_EINVAL;
    if (writes && (transmission_flags(c) & TF_READ_ONLY))
        return NBD_EPERM;
    if (off > c->e->size || len > c->e->size - off)
        return type == CMD_WRITE || type == CMD_WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL;
    return 0;
}

static int zero_range(conn *c, void *buf, uint64_t off, uint32_t len)
{
    if (c->b->zero)
        return c->b->zero(c->b->ctx, off, len);
    memset(buf, 0, len < NBD_REQUEST_MAX ? len : NBD_REQUEST_MAX);
    int rc = 0;
    for (uint64_t done = 0; !rc && done < len;) {
        uint32_t n = len - done < NBD_REQUEST_MAX ? (uint32_t)(len - done) : NBD_REQUEST_MAX;
        rc = c->b->write(c->b->ctx, buf, off + done, n);
        done += n;
    }
    return rc;
}

/* what the backend answers to a request that passed check_request */
static int run_request(conn *c, uint16_t type, uint16_t flags, uint64_t off, uint32_t len, void *buf)
{
    const nbd_backend *b = c->b;
    int rc = 0;
    switch (type) {
    case CMD_READ: return b->read(b->ctx, buf, off, len);
    case CMD_WRITE: rc = b->write(b->ctx, buf, off, len); break;
    case CMD_TRIM: rc = b->trim ? b->trim(b->ctx, off, len) : 0; break;
    case CMD_WRITE_ZEROES: rc = zero_range(c, buf, off, len); break;
    case CMD_FLUSH: return b->flush ? b->flush(b->ctx) : 0;
    }
    if (!rc && (flags & CMD_FLAG_FUA) && b->flush)
        rc = b->flush(b->ctx);
    return rc;
}

/* one request; *done: the client disconnected */
static int request(conn *c, void *buf, int *done)
{
    unsigned char h[28];
    int rc = nbd_read_full(c->fd, h, sizeof h);
    if (rc == -ENODATA) { /* hung up between requests */
        *done = 1;
        return 0;
    }
    if (rc)
        return rc;
    if (get_be32(h) != NBD_REQUEST_MAGIC)
        return nbd_fail(EPROTO, "the client sent a request without its magic number");
    uint16_t flags = get_be16(h + 4), type = get_be16(h + 6);
    uint64_t cookie = get_be64(h + 8), off = get_be64(h + 16);
    uint32_t len = get_be32(h + 24);
    if (type == CMD_DISC) {
        *done = 1;
        return 0;
    }
    int known = type == CMD_READ || type == CMD_WRITE || type == CMD_FLUSH || type == CMD_TRIM ||
                type == CMD_WRITE_ZEROES;
    uint32_t error = known ? check_request(c, type, flags, off, len) : NBD_EINVAL;
    if (type == CMD_WRITE) { /* its data follows whatever the answer */
        rc = error ? nbd_discard(c->fd, len) : nbd_read_full(c->fd, buf, len);
        if (rc)
            return rc;
    }
    if (!error)
        error = nbd_error(run_request(c, type, flags, off, len, buf));
    return simple_reply(c, cookie, error, buf, type == CMD_READ ? len : 0);
}

int nbd_serve_fd(int fd, const nbd_export *e, const nbd_backend *b)
{
    conn c = {.fd = fd, .e = e, .b = b};
    int go = 0, done = 0;
    int rc = handshake(&c, &go);
    if (rc || !go)
        return rc;
    void *buf = malloc(NBD_REQUEST_MAX);
    if (!buf)
        return nbd_oom();
    while (!rc && !done)
        rc = request(&c, buf, &done);
    free(buf);
    return rc;
}
