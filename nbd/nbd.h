/*
 * nbd: strata's NBD server: one disk served to a guest over a Unix socket
 * (docs/nbd.md).
 *
 * It speaks the baseline of the NBD protocol (NetworkBlockDevice/nbd
 * doc/proto.md) and nothing the clients strata serves need beyond it: the
 * fixed newstyle handshake; NBD_OPT_EXPORT_NAME, INFO, GO, LIST and ABORT;
 * any other option answered NBD_REP_ERR_UNSUP without losing sync; simple
 * replies only; READ, WRITE, FLUSH, TRIM, WRITE_ZEROES and DISC. QEMU's NBD
 * driver and VZ's VZNetworkBlockDeviceStorageDeviceAttachment both get by
 * with that (VZ negotiates only NBD_OPT_GO without structured replies).
 *
 * A request the server refuses is answered with an error reply, never by
 * dropping the connection: VZ reconnects and sends a refused request again
 * forever when a server hangs up on it. The connection is closed only when
 * the client breaks the protocol so that sync is lost (a bad magic number)
 * or hangs up. The export's size never changes (VZ disables the device if it
 * does).
 *
 * Where the bytes come from is the caller's: an nbd_backend. The server
 * checks every request against the export's size before a backend sees it,
 * so a backend is only ever asked for whole ranges inside the disk. One
 * thread serves each connection, so a backend's functions may run on
 * several threads at once.
 */
#ifndef STRATA_NBD_H
#define STRATA_NBD_H

#include <stdint.h>

/* The largest READ or WRITE a client may send (proto.md: a server SHOULD
 * take 32 MiB); longer ones are refused with EINVAL, a WRITE's data read
 * and dropped so the connection stays in sync. */
#define NBD_REQUEST_MAX (32u << 20)

/* Where a disk's bytes come from. Each function returns 0 or a negative
 * errno, which the client receives as the reply's error (EIO, ENOSPC, EPERM
 * and ENOMEM keep their meaning; anything else becomes EIO). off and len
 * always lie inside the export; len is not 0. */
typedef struct {
    int (*read)(void *ctx, void *buf, uint64_t off, uint32_t len);
    /* NULL for a read-only export */
    int (*write)(void *ctx, const void *buf, uint64_t off, uint32_t len);
    /* make the bytes read as zero; NULL: the server writes zeros itself */
    int (*zero)(void *ctx, uint64_t off, uint32_t len);
    /* forget the bytes (a hint: reading them later may give anything);
     * NULL: TRIM succeeds and does nothing */
    int (*trim)(void *ctx, uint64_t off, uint32_t len);
    /* make every write answered so far durable; NULL: nothing to do */
    int (*flush)(void *ctx);
    void *ctx;
} nbd_backend;

/* The disk a server offers, under one export name. */
typedef struct {
    const char *name;        /* "" for the default export (nbd+unix:///?socket=) */
    const char *description; /* shown by NBD_OPT_LIST; may be NULL */
    uint64_t size;           /* bytes; never changes */
    int read_only;           /* 1: WRITE, TRIM and WRITE_ZEROES are refused with EPERM */
} nbd_export;

/*
 * Serve one client on the connected socket fd, from the handshake until it
 * disconnects: 0 when it sent NBD_CMD_DISC, NBD_OPT_ABORT or hung up
 * between requests, a negative errno when the connection failed or the
 * client broke the protocol beyond recovery (with err_last() saying how).
 * fd is left open: the caller closes it.
 */
int nbd_serve_fd(int fd, const nbd_export *e, const nbd_backend *b);

typedef struct nbd_server nbd_server;

/*
 * Listen on a Unix socket at socket_path (which must not exist; created with
 * mode 0600, since whoever can connect can write the disk) and serve each
 * client that connects on a thread of its own. e and b must outlive the
 * server; e->name is copied. Returns 0 with *out, or a negative errno.
 */
int nbd_server_start(const char *socket_path, const nbd_export *e, const nbd_backend *b,
                     nbd_server **out);

/* Stop accepting, hang up on every client, wait for their threads, remove
 * the socket and free the server. NULL is ignored. */
void nbd_server_stop(nbd_server *s);

#endif
