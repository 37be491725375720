/*
 * base/testhooks.h: every switch the tests use to reach inside strata, in
 * one place. Each is an environment variable named STRATA_TEST_*, read once,
 * at the first call, and never meant for users (the README lists the
 * switches that are: STRATA_HOME, STRATA_HOST_ID, STRATA_QEMU,
 * STRATA_QEMU_IMG, STRATA_QEMU_SAVE, STRATA_QEMU_SHIM,
 * STRATA_KVM_PROGRESS_SECONDS). Unset, each is 0 or NULL and changes
 * nothing.
 */
#ifndef STRATA_BASE_TESTHOOKS_H
#define STRATA_BASE_TESTHOOKS_H

typedef struct {
    /* STRATA_TEST_CRASH_AT=N: SIGKILL at the Nth crash point; =NAME: at the
     * named one (base/crash.h; tests/crash.sh, tests/powercut.sh) */
    long crash_at;
    const char *crash_at_name;
    /* STRATA_TEST_FAIL_AT=STEP: that publish step of a commit fails with
     * ENOSPC, and the store must be left as it was (tests/cli.sh) */
    const char *fail_at;
    /* STRATA_TEST_NO_PREHASH=1: a first saved state's RAM file is never
     * hashed ahead (test_store compares both paths) */
    int no_prehash;
    /* STRATA_TEST_RACE_RENAME=PATH: made just before a no-replace rename's
     * fallback checks, as a racing process could (tests/cli.sh) */
    const char *race_rename;
    /* STRATA_TEST_KVM_PROBE=pass|fail: the KVM probe's answer, forced
     * (tests/boot.sh) */
    const char *kvm_probe;
    /* STRATA_TEST_SCREENDUMP_PPM=1: screenshots the way of a QEMU before
     * 7.1, PPM converted here (tests/reach.sh) */
    int screendump_ppm;
    /* STRATA_TEST_DHCPD_LEASES=FILE: macOS's DHCP lease file, elsewhere
     * (tests/reach.sh, the vz stand-in) */
    const char *dhcpd_leases;
    /* STRATA_TEST_VZ_TIMEOUT_MS=N: every wait for the framework's
     * completion handlers, shortened (tests/test_vz.c, tests/vzsim.sh) */
    long vz_timeout_ms;
    /* STRATA_TEST_PACK_BYTES=N: a push's pack unit is N bytes instead of
     * 512 MiB, so a small test disk makes many packs (tests/registry_limits.sh) */
    unsigned long long pack_bytes;
    /* STRATA_TEST_TART_SLICE=N: push --format tart cuts the disk into
     * slices of N bytes instead of tart's 512 MiB, so a small test disk
     * makes several disk layers (tests/tart_push.sh) */
    unsigned long long tart_slice;
} test_hooks;

/* The switches, read from the environment at the first call. */
const test_hooks *test_hooks_get(void);

/* The same, to change: for a unit test that switches a hook within one
 * process (the environment is not read again). */
test_hooks *test_hooks_edit(void);

#endif
