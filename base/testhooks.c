/* base/testhooks.h: the tests' switches, read once. */
#include "testhooks.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static test_hooks hooks;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static const char *text(const char *name)
{
    const char *e = getenv(name);
    return e && *e ? e : NULL;
}

static int flag(const char *name)
{
    const char *e = text(name);
    return e && strcmp(e, "0") != 0;
}

static void read_all(void)
{
    const char *crash = text("STRATA_TEST_CRASH_AT");
    char *end = NULL;
    long n = crash ? strtol(crash, &end, 10) : 0;
    if (crash && *end == 0 && n > 0)
        hooks.crash_at = n;
    else
        hooks.crash_at_name = crash;
    hooks.fail_at = text("STRATA_TEST_FAIL_AT");
    hooks.no_prehash = flag("STRATA_TEST_NO_PREHASH");
    hooks.race_rename = text("STRATA_TEST_RACE_RENAME");
    hooks.kvm_probe = text("STRATA_TEST_KVM_PROBE");
    hooks.screendump_ppm = flag("STRATA_TEST_SCREENDUMP_PPM");
    hooks.dhcpd_leases = text("STRATA_TEST_DHCPD_LEASES");
    const char *vz = text("STRATA_TEST_VZ_TIMEOUT_MS");
    hooks.vz_timeout_ms = vz ? atol(vz) : 0;
    const char *pack = text("STRATA_TEST_PACK_BYTES");
    hooks.pack_bytes = pack ? strtoull(pack, NULL, 10) : 0;
    const char *slice = text("STRATA_TEST_TART_SLICE");
    hooks.tart_slice = slice ? strtoull(slice, NULL, 10) : 0;
}

const test_hooks *test_hooks_get(void)
{
    pthread_once(&once, read_all);
    return &hooks;
}

test_hooks *test_hooks_edit(void)
{
    pthread_once(&once, read_all);
    return &hooks;
}
