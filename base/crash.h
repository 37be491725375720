/*
 * base/crash.h: fault injection for the crash tests (tests/crash.sh,
 * tests/powercut.sh): a process killed with SIGKILL at a chosen moment, as
 * a power cut would stop it.
 *
 * STRATA_TEST_CRASH_AT=N (base/testhooks.h) kills the process at the Nth
 * crash_point() it reaches; STRATA_TEST_CRASH_AT=NAME at crash_named(NAME),
 * which crash_point() does not count.
 */
#ifndef STRATA_BASE_CRASH_H
#define STRATA_BASE_CRASH_H

/* A moment a crash must be survivable at: the Nth one dies if asked. */
void crash_point(void);

/* One exact moment, by name, where a test needs it. */
void crash_named(const char *name);

#endif
