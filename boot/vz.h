/*
 * The "vz" driver (boot/vz.c): Apple's Virtualization.framework, driven
 * from C through the Objective-C runtime (boot/objc.h).
 *
 * One VZVirtualMachine per boot_vm, built from the bundle (Disk.img,
 * HardwareModel, MachineIdentifier, AuxiliaryStorage, or a kernel / EFI
 * variable store for Linux) and its Settings.json, on a serial dispatch queue
 * of its own; every message to the VM is sent on that queue, and each
 * completion handler is waited for off it. Saved states go to
 * SaveFile.vzvmsave (macOS 14 or later on Apple silicon).
 *
 * vz.c is compiled everywhere: with boot/objc_apple.c it runs VMs on macOS
 * and refuses to start anywhere else; with tests/objc_record.c it records
 * what it would send, for the tests on Linux.
 */
#ifndef STRATA_BOOT_VZ_H
#define STRATA_BOOT_VZ_H

#include "boot.h"

const boot_driver *boot_vz_driver(void);

#endif
