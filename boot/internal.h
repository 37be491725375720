/* Shared by boot/'s own files only. */
#ifndef STRATA_BOOT_INTERNAL_H
#define STRATA_BOOT_INTERNAL_H

#include "boot.h"

/* set the thread's message and return -err (err > 0) */
int boot_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int boot_fail_errno(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* qemu.c */
const boot_driver *boot_qemu_driver(void);

/* vz.c: compiled everywhere; runs only where the Objective-C runtime is Apple's */
const boot_driver *boot_vz_driver(void);

#endif
