/* base/crash.h: the crash tests' kill points. */
#define _POSIX_C_SOURCE 200809L
#include "crash.h"
#include "testhooks.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

void crash_point(void)
{
    static long count;
    long target = test_hooks_get()->crash_at;
    if (target > 0 && ++count == target)
        kill(getpid(), SIGKILL);
}

void crash_named(const char *name)
{
    const char *at = test_hooks_get()->crash_at_name;
    if (at && !strcmp(at, name))
        kill(getpid(), SIGKILL);
}
