/* The drivers by name (boot.h): qemu everywhere, vz on macOS. */
#include "internal.h"
#include "../base/platform.h"

#include <errno.h>
#include <string.h>

const char *boot_default_driver(void)
{
    return os_is_macos() ? "vz" : "qemu";
}

const boot_driver *boot_driver_find(const char *name)
{
    if (!strcmp(name, "qemu"))
        return boot_qemu_driver();
    if (!strcmp(name, "vz")) {
#if defined(STRATA_HAVE_VZ) || defined(STRATA_VZ_SIM)
        /* STRATA_VZ_SIM: build/strata-vzsim, the vz driver on the recording
         * stand-in of the framework (tests/objc_record.c), for tests only */
        return boot_vz_driver();
#else
        boot_fail(ENOTSUP, "the vz driver needs macOS with Virtualization.framework; use --driver qemu");
        return NULL;
#endif
    }
    boot_fail(EINVAL, "unknown driver '%s': use vz or qemu", name);
    return NULL;
}

int boot_driver_nbd_ok(const char *driver)
{
    const boot_driver *drv = boot_driver_find(driver ? driver : boot_default_driver());
    if (!drv)
        return err_pass();
    return drv->nbd_ok ? drv->nbd_ok() : 0;
}
