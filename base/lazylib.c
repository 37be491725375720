/* base/lazylib.h: libraries loaded on first use. */
#include "lazylib.h"
#include "error.h"
#include "platform.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

static pthread_mutex_t loading = PTHREAD_MUTEX_INITIALIZER;

static void load(lazylib *lib)
{
    char name[64];
    const char *file = lib->path ? lib->path : os_library_file(lib->stem, lib->major, name, sizeof name);
    void *h = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(lib->failed, sizeof lib->failed, "can't load %s (%s): %s", lib->label, file, dlerror());
        return;
    }
    for (size_t i = 0; i < lib->nsymbols; i++)
        if (!(*lib->symbols[i].slot = dlsym(h, lib->symbols[i].name))) {
            snprintf(lib->failed, sizeof lib->failed, "%s: no %s in it", file, lib->symbols[i].name);
            return;
        }
    if (lib->loaded)
        lib->loaded();
}

int lazylib_load(lazylib *lib)
{
    pthread_mutex_lock(&loading);
    if (!lib->tried) {
        load(lib);
        lib->tried = 1;
    }
    pthread_mutex_unlock(&loading);
    return lib->failed[0] ? err_set(ERR_BASE, ENOSYS, "%s", lib->failed) : 0;
}
