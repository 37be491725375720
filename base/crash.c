/* base/crash.h: the crash tests' kill points. */
#define _POSIX_C_SOURCE 200809L
#include "crash.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void crash_point(void)
{
    static long target = -1, count;
    if (target < 0) {
        const char *e = getenv("STRATA_CRASH_AT");
        target = e && *e ? strtol(e, NULL, 10) : 0;
    }
    if (target > 0 && ++count == target)
        kill(getpid(), SIGKILL);
}

void crash_named(const char *name)
{
    const char *e = getenv("STRATA_CRASH_AT");
    if (e && !strcmp(e, name))
        kill(getpid(), SIGKILL);
}
