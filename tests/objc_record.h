/*
 * The recording stand-in for boot/objc.h (tests/objc_record.c).
 *
 * It implements the whole boot/objc.h API without any Objective-C runtime:
 * each message becomes one line of a transcript, in the order sent:
 *
 *   +[VZMacPlatformConfiguration new] -> VZMacPlatformConfiguration#2
 *   -[VZMacPlatformConfiguration#2 setHardwareModel: VZMacHardwareModel#4]
 *   -[VZDiskImageStorageDeviceAttachment#9 initWithURL: url("/b/Disk.img") readOnly: NO
 *       cachingMode: 2 synchronizationMode: 2 error: &error] -> VZDiskImage...#9
 *
 * Objects are numbered from 1 after each reset. Values print as literals:
 * strings "quoted", URLs url("/path"), arrays @[a, b], dictionaries
 * @{"k": v}, BOOLs YES/NO, integers in decimal. Work run through
 * oc_on_queue / oc_send_completion appears between "dispatch_sync_f(q) {"
 * and "}", and a completion handler's call as
 * "^ startWithCompletionHandler: completion(nil)" or
 * "... completion(NSError("message"))".
 *
 * It also keeps the rules the real framework would enforce, and writes a
 * line starting "!!" when they are broken: a VZVirtualMachine used off its
 * queue, a dispatch_sync onto the current queue, a message to nil or to an
 * unknown pointer, an over-release. A VZVirtualMachine follows Apple's
 * states (stopped, running, paused): start, pause, resume, save, restore
 * and stop fail from the wrong state, save writes the file it is given,
 * restore needs its file to exist. Files named by dataWithContentsOfURL:,
 * initWithURL:...error: and fileHandleForWritingAtPath: must exist.
 */
#ifndef STRATA_TESTS_OBJC_RECORD_H
#define STRATA_TESTS_OBJC_RECORD_H

#include <stddef.h>

#include "../boot/objc.h"

/* Everything recorded since the last reset. */
const char *oc_record_transcript(void);
/* Forget every object, hook and line. */
void oc_record_reset(void);

/* Make the next message with this selector fail with message: a completion
 * handler gets an NSError, a BOOL ...error: method returns NO with one, an
 * initializer returns nil (with one if it takes an error:). */
void oc_record_fail(const char *sel, const char *message);
/* Pretend this host lacks a class (oc_class gives NULL) or a selector
 * (oc_responds gives 0), as an older macOS would. */
void oc_record_absent(const char *class_or_selector);
/* Set the state of the last VZVirtualMachine made (0 stopped, 1 running,
 * 2 paused, 3 error), as a guest shutting down would. */
void oc_record_set_vm_state(long state);
/* Objects the driver still owns (made by alloc/new/copy, retained, not yet
 * released or drained): how many, and their names in buf. */
int oc_record_leaks(char *buf, size_t len);

#endif
