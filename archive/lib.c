/* libarchive, loaded on first use (internal.h says why). */
#include "internal.h"
#include "../base/platform.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>

/* the library's file: a full path the Makefile passes where the linker's
 * default search would not find it (Homebrew), else the platform's name */
#ifdef STRATA_LIBARCHIVE
#define LIBRARY_FILE(buf) ((void)(buf), STRATA_LIBARCHIVE)
#else
#define LIBRARY_FILE(buf) os_library_file("archive", 13, buf, sizeof buf)
#endif

#define AR_LIB_DEFINE(f) __typeof__(f) *ar_lazy_##f;
AR_LIB_FUNCS(AR_LIB_DEFINE)

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char failed[600]; /* empty once loaded */

static void load(void)
{
    char name[64];
    const char *lib = LIBRARY_FILE(name);
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    const char *missing = NULL;
    if (!h) {
        snprintf(failed, sizeof failed, "can't load libarchive (%s): %s", lib, dlerror());
        return;
    }
#define AR_LIB_FIND(f)                                                                           \
    if (!missing && !(ar_lazy_##f = (__typeof__(ar_lazy_##f))dlsym(h, #f)))                       \
        missing = #f;
    AR_LIB_FUNCS(AR_LIB_FIND)
    if (missing)
        snprintf(failed, sizeof failed, "%s: no %s in it", lib, missing);
}

int ar_lib_load(void)
{
    pthread_once(&once, load);
    return failed[0] ? ar_fail(ENOSYS, "%s", failed) : 0;
}
