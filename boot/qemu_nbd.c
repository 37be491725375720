/*
 * The qemu driver's NBD boot disk (settings' disk.nbd): the URL turned into
 * QEMU's own -blockdev words, so the drive survives its server going away.
 *
 * `-drive file=nbd+unix://...` gives QEMU's NBD client reconnect-delay=0: the
 * first request after the server closes fails, the client gives up for good
 * and the guest's filesystem sees I/O errors. With reconnect-delay=N QEMU
 * keeps reconnecting and holds the guest's requests for up to N seconds, then
 * fails them (and later ones) until a reconnect succeeds (QEMU's
 * qapi/block-core.json, BlockdevOptionsNbd; since 4.2). open-timeout=T
 * (since 7.0) retries the first connection for T seconds, so a server started
 * beside the VM (strata's own lazy server) may come up a little later.
 */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* A restarted strata or a registry outage (issue 22 §5 tests 20 s) stays
 * latency; past five minutes the guest sees I/O errors rather than hanging. */
#define NBD_RECONNECT_S 300
/* how long the first connection is retried (QEMU >= 7.0) */
#define NBD_OPEN_TIMEOUT_S 60
#define NBD_DEFAULT_PORT "10809"

/* "QEMU emulator version 7.2.19 (Debian ...)" -> 7; 0 when unknown */
int qemu_major_version(const char *qemu, const char *runtime_dir)
{
    char log[4200];
    if (snprintf(log, sizeof log, "%s/.qemu-version", runtime_dir) >= (int)sizeof log)
        return 0;
    unlink(log);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0)
            dup2(fd, 1);
        execlp(qemu, qemu, "--version", (char *)NULL);
        _exit(127);
    }
    int status = 0, major = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
        goto out;
    FILE *f = fopen(log, "r");
    char line[256];
    if (f && fgets(line, sizeof line, f)) {
        const char *v = strstr(line, "version ");
        if (v && sscanf(v + 8, "%d.", &major) != 1)
            major = 0;
    }
    if (f)
        fclose(f);
out:
    unlink(log);
    return major;
}

/* the server's words: nbd+unix:///EXPORT?socket=PATH or nbd://HOST[:PORT][/EXPORT]
 * (boot_nbd_url_check has admitted the URL: no commas, an absolute socket) */
static int server_words(const char *url, char *out, size_t n)
{
    static const char tcp[] = "nbd://", unix_[] = "nbd+unix://";
    int w;
    if (!strncmp(url, unix_, sizeof unix_ - 1)) {
        const char *exp = url + sizeof unix_ - 1 + 1; /* past the path's '/' */
        const char *q = strstr(exp, "?socket=");
        if (!q)
            return boot_fail(EINVAL, "disk.nbd %s: no socket", url);
        w = snprintf(out, n, "server.type=unix,server.path=%s,export=%.*s", q + 8, (int)(q - exp), exp);
    } else if (!strncmp(url, tcp, sizeof tcp - 1)) {
        const char *host = url + sizeof tcp - 1;
        size_t hlen = strcspn(host, ":/");
        const char *port = host[hlen] == ':' ? host + hlen + 1 : NBD_DEFAULT_PORT;
        size_t plen = host[hlen] == ':' ? strcspn(port, "/") : strlen(port);
        const char *slash = strchr(host, '/');
        w = snprintf(out, n, "server.type=inet,server.host=%.*s,server.port=%.*s,export=%s", (int)hlen,
                     host, (int)plen, port, slash ? slash + 1 : "");
    } else {
        return boot_fail(EINVAL, "disk.nbd %s: not an NBD URL", url);
    }
    return w < 0 || (size_t)w >= n ? boot_fail(ENAMETOOLONG, "disk.nbd %s: too long", url) : 0;
}

/*
 * -blockdev for the boot disk from disk.nbd, node disk0: the server, the
 * reconnect bounds, and the cache mode's two blockdev flags (cache=none is
 * direct, unsafe is no-flush).
 */
int qemu_nbd_blockdev(const char *url, const char *cache, int qemu_major, char *out, size_t n)
{
    char server[4200];
    int rc = server_words(url, server, sizeof server);
    if (rc)
        return rc;
    char open_timeout[40] = "";
    if (qemu_major >= 7)
        snprintf(open_timeout, sizeof open_timeout, ",open-timeout=%d", NBD_OPEN_TIMEOUT_S);
    int w = snprintf(out, n, "driver=nbd,node-name=disk0,%s,reconnect-delay=%d%s,cache.direct=%s,cache.no-flush=%s",
                     server, NBD_RECONNECT_S, open_timeout, strcmp(cache, "none") ? "off" : "on",
                     strcmp(cache, "unsafe") ? "off" : "on");
    return w < 0 || (size_t)w >= n ? boot_fail(ENAMETOOLONG, "disk.nbd %s: too long", url) : 0;
}
