/*
 * Where a running guest answers on the network: a vz guest's address by
 * its MAC (macOS's DHCP leases, leases.c, or the ARP cache), and whether an
 * ssh server's banner comes from an address. Below reach.c (ip, ssh) and
 * instance.c (a lazy run's readiness), which both ask it.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "../base/platform.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LEASES_FILE "/var/db/dhcpd_leases"

static long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

/* a whole small file (at most 4 MiB), NUL-terminated, or NULL */
static char *slurp(const char *path)
{
    char *text = NULL;
    size_t len;
    return file_read_all(path, 4u << 20, &text, &len) ? NULL : text;
}

/* `arp -an`'s output (no shell), or NULL */
static char *arp_table(void)
{
    int p[2];
    if (os_pipe_cloexec(p))
        return NULL;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, 2);
        execlp("arp", "arp", "-an", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char *buf = pid > 0 ? calloc(1, 1 << 20) : NULL;
    size_t len = 0;
    ssize_t r;
    while (buf && len < (1 << 20) - 1 && (r = read(p[0], buf + len, (1 << 20) - 1 - len)) > 0)
        len += (size_t)r;
    close(p[0]);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    return buf;
}

/* a vz guest's address by its MAC: 0, -ENOENT (not yet; boot_error says
 * why), or another error */
int boot_vz_address(const char *mac, boot_resolver how, boot_address *out)
{
    if (how == BOOT_RESOLVER_ARP) {
        char *table = arp_table();
        int rc = table ? boot_arp_find(table, mac, out->address, sizeof out->address) : -ENOENT;
        free(table);
        snprintf(out->source, sizeof out->source, "arp");
        return rc == -ENOENT ? boot_fail(ENOENT, "no ARP entry for MAC %s (the guest must have sent "
                                                 "traffic; see arp -an)", mac)
                             : rc;
    }
    const char *path = test_hooks_get()->dhcpd_leases;
    if (!path)
        path = LEASES_FILE;
    char *text = slurp(path);
    if (!text)
        return boot_fail(ENOENT, "no lease for MAC %s: %s can't be read (no guest has had an "
                                 "address from this Mac yet?)", mac, path);
    unsigned duid = 0;
    int rc = boot_lease_find(text, mac, (long long)time(NULL), out->address, sizeof out->address, &duid);
    free(text);
    snprintf(out->source, sizeof out->source, "lease");
    if (rc == -ENOENT && duid)
        return boot_fail(ENOENT, "no unexpired lease for MAC %s in %s, which has %u lease(s) keyed "
                                 "by a DUID client identifier instead of a MAC: a guest that sends "
                                 "one (Ubuntu's default) can't be found by MAC; set "
                                 "'dhcp-identifier: mac' in its netplan, or use --resolver arp",
                         mac, path, duid);
    if (rc == -ENOENT)
        return boot_fail(ENOENT, "no unexpired lease for MAC %s in %s (has the guest asked DHCP "
                                 "for an address?)", mac, path);
    return rc;
}

/* 1 if an ssh server's banner ("SSH-") comes from address:port in time */
int boot_ssh_banner(const char *address, unsigned port, int timeout_ms)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    char service[16];
    snprintf(service, sizeof service, "%u", port);
    if (getaddrinfo(address, service, &hints, &ai))
        return 0;
    int fd = os_socket_cloexec(ai->ai_family, SOCK_STREAM, 1);
    int ok = 0;
    long deadline = now_ms() + timeout_ms;
    if (fd >= 0 && (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS)) {
        char buf[256];
        size_t len = 0;
        while (!ok && len < sizeof buf - 1) {
            long left = deadline - now_ms();
            struct pollfd p = {.fd = fd, .events = POLLIN};
            if (left <= 0 || poll(&p, 1, (int)left) <= 0)
                break;
            ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
            if (r <= 0)
                break; /* refused, or closed: the forward is up, the server isn't */
            len += (size_t)r;
            ok = len >= 4 && !memcmp(buf, "SSH-", 4);
        }
    }
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return ok;
}

int boot_ssh_answers(const boot_endpoints *ep, const boot_settings *s, int timeout_ms)
{
    if (ep->ssh_port)
        return boot_ssh_banner(ep->ssh_host, ep->ssh_port, timeout_ms);
    boot_address a;
    if (!s->mac[0] || boot_vz_address(s->mac, BOOT_RESOLVER_DEFAULT, &a))
        return 0; /* no lease yet */
    return boot_ssh_banner(a.address, 22, timeout_ms);
}
