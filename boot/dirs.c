/* boot's directories in the store's home (boot.h): the store never reads them. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

char *boot_home_subdir(store *st, const char *name)
{
    char *d = NULL;
    if (asprintf(&d, "%s/%s", store_home(st), name) < 0) {
        boot_oom();
        return NULL;
    }
    struct stat sb;
    if (mkdir(d, 0755) < 0 && (errno != EEXIST || stat(d, &sb) < 0 || !S_ISDIR(sb.st_mode))) {
        boot_fail_errno(errno == EEXIST ? ENOTDIR : errno, "%s", d);
        free(d);
        return NULL;
    }
    return d;
}

char *boot_instances_dir(store *st)
{
    return boot_home_subdir(st, "vms");
}

char *boot_running_dir(store *st)
{
    return boot_home_subdir(st, "running");
}

char *boot_cache_dir(store *st)
{
    return boot_home_subdir(st, "cache");
}
