/* boot: whether this host can run a guest, from what a registry manifest
 * says the guest needs, before anything is downloaded. The
 * drivers are boot's, so the answer is too; remote/ only reads the
 * annotations and asks through remote_pull_opts.check_guest. */
#define _GNU_SOURCE
#include "internal.h"
#include "../base/platform.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

/* the HardwareModel data representations Virtualization.framework has
 * written (VZMacHardwareModel.dataRepresentation): a newer one is a format
 * this strata has not seen */
#define MACOS_DATA_REP_KNOWN 1

const char *boot_host_arch(char *buf, size_t n)
{
    struct utsname u;
    if (uname(&u))
        snprintf(u.machine, sizeof u.machine, "unknown");
    const char *m = u.machine;
    snprintf(buf, n, "%.*s", (int)sizeof u.machine, !strcmp(m, "x86_64") ? "amd64"
                           : !strcmp(m, "aarch64") || !strcmp(m, "arm64") ? "arm64" : m);
    return buf;
}

/* -1, 0 or 1 as version a ("14.2.1") is older than, the same as, or newer
 * than b; a missing part counts as 0 ("13" is "13.0.0") */
static int version_cmp(const char *a, const char *b)
{
    for (;;) { /* each turn passes a dot in a or b: it ends */
        char *ea, *eb;
        unsigned long x = strtoul(a, &ea, 10), y = strtoul(b, &eb, 10);
        if (x != y)
            return x < y ? -1 : 1;
        if (*ea != '.' && *eb != '.')
            return 0;
        a = *ea == '.' ? ea + 1 : ea;
        b = *eb == '.' ? eb + 1 : eb;
    }
}

/* 0 if this host can run a guest that needs g, else the reason (an error
 * naming what): a macOS guest needs a Mac with Apple silicon (the vz
 * driver) whose macOS is at least the guest's MinimumSupportedOS, and a
 * data representation it knows; a Linux guest needs a driver for its
 * architecture, and both drivers run the host's own. What the manifest
 * doesn't say is not held against it (an old manifest pulls as before). */
int boot_guest_runs_here(const char *what, const boot_guest_needs *g)
{
    char arch[80], ver[32] = "";
    boot_host_arch(arch, sizeof arch);
    if (!strcmp(g->os, "macos")) {
        char need[64] = "";
        if (g->macos_min[0])
            snprintf(need, sizeof need, " running macOS %s or later", g->macos_min);
        if (!os_is_macos() || strcmp(arch, "arm64") || !boot_driver_find("vz"))
            return boot_fail( ENOTSUP, "%s is a macOS guest: it runs only on a Mac with Apple "
                           "silicon%s, and this host is %s %s", what, need,
                           os_is_macos() ? "macOS on" : "Linux on", arch);
        os_product_version(ver, sizeof ver);
        if (g->macos_min[0] && ver[0] && version_cmp(ver, g->macos_min) < 0)
            return boot_fail( ENOTSUP, "%s is a macOS guest that needs macOS %s or later; "
                           "this Mac runs %s", what, g->macos_min, ver);
        if (g->macos_data_rep > MACOS_DATA_REP_KNOWN)
            return boot_fail( ENOTSUP, "%s: its hardware model's data representation %" PRId64
                           " is newer than this strata knows (%d)", what, g->macos_data_rep,
                           MACOS_DATA_REP_KNOWN);
        return 0;
    }
    if (!strcmp(g->os, "linux")) {
        if (g->arch[0] && strcmp(g->arch, arch))
            return boot_fail( ENOTSUP, "%s is a Linux guest for %s, and this host is %s (its "
                           "drivers run guests of the host's architecture)", what, g->arch, arch);
        if (!boot_driver_find(boot_default_driver()))
            return err_pass();
        return 0;
    }
    if (g->os[0])
        return boot_fail( ENOTSUP, "%s is a guest of an OS strata does not run ('%s')", what,
                       g->os);
    return 0;
}
