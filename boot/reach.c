/*
 * Reaching a running instance from the host: its address (`ip`), the ssh
 * command line to log in (`ssh`), and its screen (`screenshot`).
 *
 * qemu guests sit behind user-mode NAT: the driver forwards a loopback port
 * to the guest's port 22 when it starts, and the run record keeps it. vz
 * guests get an address from macOS's DHCP server: their MAC is looked up
 * in its lease file (leases.c), or, only when asked, in the ARP cache.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "../base/platform.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

/* where running instance x is reached now: 0, -ENOENT (not yet), or an error */
static int address_of(const boot_instance *x, boot_resolver how, boot_address *out)
{
    memset(out, 0, sizeof *out);
    if (x->ep.ssh_port) {
        if (how != BOOT_RESOLVER_DEFAULT)
            return boot_fail(EINVAL, "--resolver is for vz instances: %s's guest is reached "
                                     "through the port qemu forwards", x->name);
        snprintf(out->address, sizeof out->address, "%s", x->ep.ssh_host);
        out->port = x->ep.ssh_port;
        snprintf(out->source, sizeof out->source, "forward");
        return 0;
    }
    if (strcmp(x->driver, "vz")) {
        if (!strcmp(x->state, "starting"))
            return boot_fail(ENOENT, "instance %s is still starting", x->name);
        return boot_fail(ENOENT, "instance %s records no ssh forward (started by an older strata? "
                                 "restart it)", x->name);
    }
    boot_settings s;
    int rc = boot_settings_load(x->dir, &s);
    if (rc)
        return rc;
    rc = s.mac[0] ? boot_vz_address(s.mac, how, out)
                  : boot_fail(EINVAL, "instance %s has no MAC in its settings", x->name);
    boot_settings_free(&s);
    out->port = 22;
    return rc;
}

/* find the running instance and its address, waiting up to wait_s for
 * both; x is the instance (free it) when 0 is returned */
static int locate(store *st, const char *name, boot_resolver how, int wait_s, boot_address *out,
                  boot_instance *x)
{
    long deadline = now_ms() + (long)wait_s * 1000;
    for (;;) {
        /* not running (yet: `run NAME & ip NAME --wait 60` races the
         * clone) is waited for like an unknown address */
        int rc = boot_find_running(st, name, x);
        if (!rc) {
            rc = address_of(x, how, out);
            if (!rc)
                return 0;
            boot_instance_free(x);
        }
        if (rc != -ENOENT || now_ms() >= deadline)
            return rc;
        usleep(500 * 1000);
    }
}

int boot_ip(store *st, const char *name, boot_resolver how, int wait_s, boot_address *out)
{
    boot_instance x;
    int rc = locate(st, name, how, wait_s, out, &x);
    if (!rc)
        boot_instance_free(&x);
    return rc;
}

/* ---------- ssh ---------- */

static int wait_banner(const char *name, const boot_address *a, int wait_s)
{
    long deadline = now_ms() + (long)wait_s * 1000;
    while (!boot_ssh_banner(a->address, a->port, 5000)) {
        if (now_ms() >= deadline)
            return boot_fail(ETIMEDOUT, "instance %s: no ssh server answered on %s port %u in %d s",
                             name, a->address, a->port, wait_s);
        usleep(1000 * 1000);
    }
    return 0;
}

void boot_argv_free(char **argv)
{
    for (size_t i = 0; argv && argv[i]; i++)
        free(argv[i]);
    free(argv);
}

/* "Key=value" for ssh's -o: quoted, '%' doubled (ssh expands tokens in
 * file names); NULL for a value ssh can't take */
static char *ssh_file_option(const char *key, const char *path)
{
    if (strchr(path, '"') || strchr(path, '\n'))
        return NULL;
    char buf[8400];
    size_t k = (size_t)snprintf(buf, sizeof buf, "%s=\"", key);
    for (const char *p = path; *p && k < sizeof buf - 4; p++) {
        if (*p == '%')
            buf[k++] = '%';
        buf[k++] = *p;
    }
    buf[k++] = '"';
    buf[k] = 0;
    return strdup(buf);
}

static int build_argv(const boot_ssh_opts *o, const boot_instance *x, const boot_address *a,
                      const char *user, char ***out)
{
    size_t cap = 24 + o->ncommand, n = 0;
    char **v = calloc(cap, sizeof *v);
    if (!v)
        return -ENOMEM;
    char known[4200], port[16];
    snprintf(known, sizeof known, "%s/.known_hosts", x->dir);
    snprintf(port, sizeof port, "%u", a->port);
    char *known_opt = ssh_file_option("UserKnownHostsFile", known);
    if (!known_opt) {
        free(v);
        return boot_fail(EINVAL, "%s: ssh can't take a path with a quote", known);
    }
#define ADD(s) (v[n++] = strdup(s))
    ADD("ssh");
    ADD("-o");
    v[n++] = known_opt;
    ADD("-o");
    ADD("StrictHostKeyChecking=accept-new");
    ADD("-o"); /* a file of its own: readable beats hidden */
    ADD("HashKnownHosts=no");
    ADD("-o"); /* the instance's own file only: a stale global entry for 127.0.0.1 must not matter */
    ADD("GlobalKnownHostsFile=/dev/null");
    ADD("-o"); /* keyed by instance, not by a forwarded port another instance may get next */
    char alias[300];
    snprintf(alias, sizeof alias, "HostKeyAlias=strata-%s", x->name);
    ADD(alias);
    ADD("-p");
    ADD(port);
    if (user) {
        ADD("-l");
        ADD(user);
    }
    if (o->identity) {
        char *id = ssh_file_option("IdentityFile", o->identity);
        if (!id) {
            boot_argv_free(v);
            return boot_fail(EINVAL, "%s: ssh can't take a path with a quote", o->identity);
        }
        ADD("-o");
        v[n++] = id;
        ADD("-o");
        ADD("IdentitiesOnly=yes");
    }
    ADD("--");
    ADD(a->address);
    for (size_t i = 0; i < o->ncommand; i++)
        ADD(o->command[i]);
#undef ADD
    for (size_t i = 0; i < n; i++)
        if (!v[i]) {
            boot_argv_free(v);
            return -ENOMEM;
        }
    *out = v;
    return 0;
}

int boot_ssh_argv(store *st, const boot_ssh_opts *o, char ***argv)
{
    *argv = NULL;
    if (o->identity && access(o->identity, R_OK) != 0)
        return boot_fail_errno(errno, "--identity %s", o->identity);
    boot_address a;
    boot_instance x;
    int rc = locate(st, o->name, o->resolver, o->wait_s, &a, &x);
    if (rc)
        return rc;
    boot_settings s = {0};
    if (!o->user && (rc = boot_settings_load(x.dir, &s)))
        goto out;
    if (o->wait_s > 0 && (rc = wait_banner(x.name, &a, o->wait_s)))
        goto out;
    rc = build_argv(o, &x, &a, o->user ? o->user : s.ssh_user, argv);
out:
    boot_settings_free(&s);
    boot_instance_free(&x);
    return rc;
}

/* ---------- screenshot ---------- */

/* path made absolute (the VM's process writes it from elsewhere), its
 * directory checked */
static int absolute_target(const char *path, char *out, size_t n)
{
    char *a = strdup(path), *b = strdup(path);
    int rc = a && b ? 0 : -ENOMEM;
    char dir[4096];
    if (!rc && !realpath(dirname(a), dir))
        rc = boot_fail_errno(errno, "%s: its directory", path);
    const char *base = b ? basename(b) : "";
    if (!rc && (!*base || !strcmp(base, ".") || !strcmp(base, "..") || !strcmp(base, "/")))
        rc = boot_fail(EINVAL, "%s: not a file name", path);
    if (!rc && (size_t)snprintf(out, n, "%s/%s", dir, base) >= n)
        rc = boot_fail(ENAMETOOLONG, "%s: path too long", path);
    struct stat st;
    if (!rc && stat(out, &st) == 0 && S_ISDIR(st.st_mode))
        rc = boot_fail(EISDIR, "%s is a directory", path);
    free(a);
    free(b);
    return rc;
}

int boot_screenshot(store *st, const char *name, const char *png_path)
{
    char target[4200];
    int rc = absolute_target(png_path, target, sizeof target);
    if (rc)
        return rc;
    boot_instance x;
    if ((rc = boot_find_running(st, name, &x)))
        return rc;
    const boot_driver *drv = boot_driver_find(x.driver);
    if (!drv)
        rc = err_pass();
    else if (!drv->screenshot)
        rc = boot_fail(ENOTSUP, "the %s driver can't take screenshots", drv->name);
    else
        rc = drv->screenshot(x.dir, target);
    boot_instance_free(&x);
    return rc;
}
