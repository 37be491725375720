/*
 * What a saved state is bound to (boot.h, boot_bindings_now): the host,
 * user, OS build, driver, configuration and identity it was saved with,
 * which a resume must match.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "../base/platform.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int add(boot_binding *v, size_t *n, const char *k, const char *val)
{
    v[*n].key = strdup(k);
    v[*n].value = strdup(val && *val ? val : "unknown");
    return v[(*n)++].value && v[*n - 1].key ? 0 : -ENOMEM;
}

/* STRATA_HOST_ID names the host where hostnames are not stable (CI) */
static void host_name(char *out, size_t n)
{
    const char *hid = getenv("STRATA_HOST_ID");
    if (hid && *hid)
        snprintf(out, n, "%s", hid);
    else if (gethostname(out, n - 1) < 0)
        out[0] = 0;
}

/* the SHA-256 of the identity file the driver gives the guest, or "none" */
static void machine_id_digest(const char *driver, const char *bundle_dir, const boot_settings *s,
                              char out[65])
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", bundle_dir,
             s->os == BOOT_OS_LINUX && !strcmp(driver, "vz") ? BOOT_GENERIC_ID_FILE : "MachineIdentifier");
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(out, 65, "none");
        return;
    }
    char buf[1 << 16];
    size_t got = fread(buf, 1, sizeof buf, f);
    fclose(f);
    sha256_hex(buf, got, out);
}

/* the devices the driver adds, where it says (a restore needs them all) */
static void driver_devices(const char *driver, const boot_settings *s, char *out, size_t n)
{
    err_info keep = *err_last();
    const boot_driver *drv = boot_driver_find(driver);
    err_restore(&keep); /* an unknown driver is no error here */
    if (!drv || !drv->devices || drv->devices(s, out, n) != 0)
        out[0] = 0;
}

int boot_bindings_now(const char *driver, const char *bundle_dir, const boot_settings *s,
                      boot_binding **out, size_t *n)
{
    boot_binding *v = calloc(9, sizeof *v);
    size_t k = 0;
    if (!v)
        return boot_oom();
    char hash[65], host[256] = "", build[512] = "", mid[65], devices[512] = "";
    boot_settings_config_hash(s, hash);
    host_name(host, sizeof host);
    struct passwd *pw = getpwuid(getuid());
    os_build_describe(build, sizeof build);
    machine_id_digest(driver, bundle_dir, s, mid);
    driver_devices(driver, s, devices, sizeof devices);
    int rc = add(v, &k, "config-hash", hash) || (devices[0] && add(v, &k, "devices", devices)) ||
             add(v, &k, "driver", driver) || add(v, &k, "host", host) || add(v, &k, "mac", s->mac) ||
             add(v, &k, "machine-id", mid) || add(v, &k, "os-build", build) ||
             add(v, &k, "user", pw ? pw->pw_name : "");
    if (rc) {
        boot_bindings_free(v, k);
        return boot_oom();
    }
    *out = v;
    *n = k;
    return 0;
}

void boot_bindings_free(boot_binding *b, size_t n)
{
    for (size_t i = 0; b && i < n; i++) {
        free(b[i].key);
        free(b[i].value);
    }
    free(b);
}
