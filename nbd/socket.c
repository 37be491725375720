/* nbd: the Unix socket a server listens on, a thread per client, and the
 * byte-exact reads and writes the protocol is made of. */
#define _GNU_SOURCE
#include "nbd.h"
#include "internal.h"
#include "../base/platform.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int nbd_read_full(int fd, void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t got = read(fd, (char *)buf + done, n - done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return nbd_fail(errno, "reading from the client: %s", strerror(errno));
        if (got == 0)
            return done ? nbd_fail(ECONNRESET, "the client hung up in the middle of a message")
                        : -ENODATA;
        done += (size_t)got;
    }
    return 0;
}

int nbd_write_full(int fd, const void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t put = os_send_nosignal(fd, (const char *)buf + done, n - done);
        if (put < 0 && errno == EINTR)
            continue;
        if (put < 0)
            return nbd_fail(errno, "writing to the client: %s", strerror(errno));
        done += (size_t)put;
    }
    return 0;
}

int nbd_discard(int fd, uint64_t n)
{
    char sink[65536];
    while (n) {
        size_t step = n < sizeof sink ? (size_t)n : sizeof sink;
        int rc = nbd_read_full(fd, sink, step);
        if (rc)
            return rc == -ENODATA ? nbd_fail(ECONNRESET, "the client hung up in the middle of a message") : rc;
        n -= step;
    }
    return 0;
}

/* ---- the listener ---- */

typedef struct client {
    int fd;
    pthread_t thread;
    int finished;
    struct client *next;
    nbd_server *server;
} client;

struct nbd_server {
    char *path;
    int listen_fd;
    int wake[2]; /* written to stop the accepting thread */
    nbd_export export;
    char *name;
    const nbd_backend *backend;
    pthread_t acceptor;
    pthread_mutex_t mu;
    client *clients;
};

static void *serve_client(void *arg)
{
    client *cl = arg;
    nbd_serve_fd(cl->fd, &cl->server->export, cl->server->backend);
    /* the connection's fate is the client's business: a protocol error
     * ends this connection only, and the server goes on */
    shutdown(cl->fd, SHUT_RDWR);
    pthread_mutex_lock(&cl->server->mu);
    cl->finished = 1;
    pthread_mutex_unlock(&cl->server->mu);
    return NULL;
}

/* join and free the clients that are done (the list stays short) */
static void reap(nbd_server *s, int all)
{
    pthread_mutex_lock(&s->mu);
    client **p = &s->clients;
    while (*p) {
        client *cl = *p;
        if (!cl->finished && !all) {
            p = &cl->next;
            continue;
        }
        *p = cl->next;
        pthread_mutex_unlock(&s->mu);
        if (all)
            shutdown(cl->fd, SHUT_RDWR); /* its thread's read returns */
        pthread_join(cl->thread, NULL);
        close(cl->fd);
        free(cl);
        pthread_mutex_lock(&s->mu);
        p = &s->clients;
    }
    pthread_mutex_unlock(&s->mu);
}

static void start_client(nbd_server *s, int fd)
{
    client *cl = calloc(1, sizeof *cl);
    if (!cl) {
        close(fd);
        return;
    }
    cl->fd = fd;
    cl->server = s;
    pthread_mutex_lock(&s->mu);
    if (pthread_create(&cl->thread, NULL, serve_client, cl)) {
        pthread_mutex_unlock(&s->mu);
        close(fd);
        free(cl);
        return;
    }
    cl->next = s->clients;
    s->clients = cl;
    pthread_mutex_unlock(&s->mu);
}

static void *accept_loop(void *arg)
{
    nbd_server *s = arg;
    for (;;) {
        struct pollfd p[2] = {{s->listen_fd, POLLIN, 0}, {s->wake[0], POLLIN, 0}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[1].revents)
            break;
        if (!(p[0].revents & POLLIN))
            continue;
        int fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0)
            continue; /* a client that gave up while queued, or no fds now */
        reap(s, 0);
        start_client(s, fd);
    }
    return NULL;
}

static int listen_at(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path)
        return nbd_fail(ENAMETOOLONG, "%s: longer than a socket path may be (%zu bytes)", path,
                        sizeof a.sun_path - 1);
    strcpy(a.sun_path, path);
    int fd = os_socket_cloexec(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        return nbd_fail(-fd, "%s: socket: %s", path, strerror(-fd));
    /* 0600 from the start: whoever connects can write the disk */
    mode_t old = umask(077);
    int rc = bind(fd, (struct sockaddr *)&a, sizeof a);
    umask(old);
    if (rc || listen(fd, 16)) {
        int e = errno;
        close(fd);
        return nbd_fail(e, "%s: %s", path, strerror(e));
    }
    return fd;
}

int nbd_server_start(const char *socket_path, const nbd_export *e, const nbd_backend *b,
                     nbd_server **out)
{
    nbd_server *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(socket_path)) || !(s->name = strdup(e->name))) {
        if (s)
            free(s->path);
        free(s);
        return nbd_oom();
    }
    s->export = *e;
    s->export.name = s->name;
    s->backend = b;
    s->wake[0] = s->wake[1] = -1;
    pthread_mutex_init(&s->mu, NULL);
    int rc = os_pipe_cloexec(s->wake);
    if (rc)
        rc = nbd_fail(-rc, "pipe: %s", strerror(-rc));
    s->listen_fd = rc ? -1 : listen_at(socket_path);
    if (!rc && s->listen_fd < 0)
        rc = s->listen_fd;
    if (!rc && pthread_create(&s->acceptor, NULL, accept_loop, s)) {
        unlink(socket_path);
        rc = nbd_fail(EAGAIN, "could not start the NBD server's thread");
    }
    if (rc) {
        if (s->listen_fd >= 0)
            close(s->listen_fd);
        if (s->wake[0] >= 0)
            close(s->wake[0]), close(s->wake[1]);
        pthread_mutex_destroy(&s->mu);
        free(s->name), free(s->path), free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void nbd_server_stop(nbd_server *s)
{
    if (!s)
        return;
    char byte = 1;
    while (write(s->wake[1], &byte, 1) < 0 && errno == EINTR)
        ;
    pthread_join(s->acceptor, NULL);
    close(s->listen_fd);
    unlink(s->path);
    reap(s, 1);
    close(s->wake[0]), close(s->wake[1]);
    pthread_mutex_destroy(&s->mu);
    free(s->name), free(s->path), free(s);
}
