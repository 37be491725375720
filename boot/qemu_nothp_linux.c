/*
 * strata-qemu-nothp.so: preloaded into QEMU by the qemu driver (Linux).
 *
 * QEMU 7.2 advises MADV_HUGEPAGE on every RAM block, with no option to turn
 * it off. On guest RAM that is a shared file mapping (strata's RAM file)
 * the page cache then faults the file in as 2 MiB folios, and one guest
 * write dirties, writes back and unshares a whole 2 MiB of a reflinked RAM
 * file: measured here, 46 MB unshared where the guest changed 0.9 MB.
 * This library turns that hint into MADV_NOHUGEPAGE and MADV_RANDOM (no
 * read-ahead, which would build large folios too), so pages stay 4 KiB:
 * 1.3 MB unshared for the same 0.9 MB. PR_SET_THP_DISABLE does not help: it
 * leaves the page cache's large folios alone.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <sys/mman.h>

int madvise(void *addr, size_t len, int advice)
{
    static int (*real)(void *, size_t, int);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "madvise");
    if (!real)
        return 0; /* advice is advice: nothing breaks without it */
    if (advice != MADV_HUGEPAGE)
        return real(addr, len, advice);
    real(addr, len, MADV_NOHUGEPAGE);
    return real(addr, len, MADV_RANDOM);
}
