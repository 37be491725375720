/* libcurl, loaded on first use (internal.h says why). */
#include "internal.h"
#include "../base/platform.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>

/* the library's file: a full path the Makefile passes where the linker's
 * default search would not find it (Homebrew), else the platform's name */
#ifdef STRATA_LIBCURL
#define LIBRARY_FILE(buf) ((void)(buf), STRATA_LIBCURL)
#else
#define LIBRARY_FILE(buf) os_library_file("curl", 4, buf, sizeof buf)
#endif

#define RM_CURL_DEFINE(f) __typeof__(f) *rm_lazy_##f;
RM_CURL_FUNCS(RM_CURL_DEFINE)

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char failed[600]; /* empty once loaded */

static void load(void)
{
    char name[64];
    const char *lib = LIBRARY_FILE(name);
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    const char *missing = NULL;
    if (!h) {
        snprintf(failed, sizeof failed, "can't load libcurl (%s): %s", lib, dlerror());
        return;
    }
#define RM_CURL_FIND(f)                                                                           \
    if (!missing && !(rm_lazy_##f = (__typeof__(rm_lazy_##f))dlsym(h, #f)))                       \
        missing = #f;
    RM_CURL_FUNCS(RM_CURL_FIND)
    if (missing)
        snprintf(failed, sizeof failed, "%s: no %s in it", lib, missing);
    else
        curl_global_init(CURL_GLOBAL_DEFAULT);
}

int rm_curl_load(void)
{
    pthread_once(&once, load);
    return failed[0] ? rm_fail(ENOSYS, "%s", failed) : 0;
}
