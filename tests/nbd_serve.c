/* A test tool for tests/nbd.sh: strata's NBD server (nbd/) serving a plain
 * file, so independent clients (QEMU, libnbd's tools, a raw-socket script)
 * can check the protocol. Not a product: strata serves layers, not files.
 *
 * nbd_serve SOCKET FILE [--read-only] [--name NAME] [--no-zero] [--no-trim]
 * Serves until SIGTERM or SIGINT; prints "ready" on stdout once listening.
 */
#define _GNU_SOURCE
#include "../base/error.h"
#include "../base/platform.h"
#include "../nbd/nbd.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int file_read(void *ctx, void *buf, uint64_t off, uint32_t len)
{
    ssize_t n = pread(*(int *)ctx, buf, len, (off_t)off);
    if (n >= 0 && (uint32_t)n < len) /* a file shorter than its export: zeros */
        memset((char *)buf + n, 0, len - (size_t)n);
    return n < 0 ? -errno : 0;
}

static int file_write(void *ctx, const void *buf, uint64_t off, uint32_t len)
{
    ssize_t n = pwrite(*(int *)ctx, buf, len, (off_t)off);
    return n < 0 ? -errno : (uint32_t)n == len ? 0 : -EIO;
}

static int file_trim(void *ctx, uint64_t off, uint32_t len)
{
    int rc = os_punch_hole(*(int *)ctx, off, len);
    return rc == -EOPNOTSUPP ? 0 : rc; /* a hint: nothing lost by ignoring it */
}

static int file_flush(void *ctx)
{
    return os_full_fsync(*(int *)ctx);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: nbd_serve SOCKET FILE [--read-only] [--name NAME] [--no-trim]\n");
        return 2;
    }
    nbd_export e = {.name = "", .description = "a test file"};
    int no_trim = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--read-only"))
            e.read_only = 1;
        else if (!strcmp(argv[i], "--no-trim"))
            no_trim = 1;
        else if (!strcmp(argv[i], "--name") && i + 1 < argc)
            e.name = argv[++i];
        else {
            fprintf(stderr, "nbd_serve: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    int fd = open(argv[2], (e.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        fprintf(stderr, "nbd_serve: %s: %s\n", argv[2], strerror(errno));
        return 1;
    }
    e.size = (uint64_t)st.st_size;
    nbd_backend b = {.read = file_read, .write = e.read_only ? NULL : file_write,
                     .trim = no_trim ? NULL : file_trim, .flush = file_flush, .ctx = &fd};
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL); /* the server's threads inherit it */
    nbd_server *s;
    int rc = nbd_server_start(argv[1], &e, &b, &s);
    if (rc) {
        fprintf(stderr, "nbd_serve: %s\n", err_message_for(rc));
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    int sig;
    sigwait(&stop, &sig);
    nbd_server_stop(s);
    close(fd);
    return 0;
}
