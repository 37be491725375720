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
 * "... completion(NSError("message"))". A wait that serves window events
 * (oc_send_completion_serving) writes "# NSApp: window events served while
 * SEL is pending" for each slice it serves before the handler comes.
 *
 * Every message is checked against Apple's signatures (the SDK table
 * tests/vz-sdk/selectors.tsv, or $VZREC_SDK): a class or selector the SDK
 * lacks, a class method sent to an instance or the reverse, another
 * argument or return shape, NS_UNAVAILABLE, or newer than the pretended
 * host is a "!!" line.
 *
 * Like the framework, every queue is a thread: oc_on_queue runs its work
 * there while the caller waits; a completion handler is called later, as
 * its own item on the VM's queue, never inline. $VZREC_LOG names a file
 * that gets every line as it is made (for build/strata-vzsim).
 *
 * It also keeps the rules the real framework would enforce, and writes a
 * line starting "!!" when they are broken: a VZVirtualMachine used off its
 * queue, a dispatch_sync onto the current queue, a message to nil or to an
 * unknown pointer, an over-release. A VZVirtualMachine follows Apple's
 * states (stopped, running, paused): start, pause, resume, save, restore
 * and stop fail from the wrong state, save writes the file it is given,
 * restore needs its file to exist. Files named by dataWithContentsOfURL:,
 * initWithURL:...error: and fileHandleForWritingAtPath: must exist.
 *
 * The macOS install path is played too: +[VZMacOSRestoreImage
 * loadFileURL:completionHandler:] needs its file, fetchLatestSupported...
 * gives $VZREC_LATEST_URL (else an Apple-shaped URL); the image's
 * configuration asks for $VZREC_MIN_CPUS (2) and $VZREC_MIN_MEMORY (4 GiB);
 * dataRepresentation of a VZMacHardwareModel or VZMacMachineIdentifier is
 * the plist Apple writes; the creating initializers of VZMacAuxiliaryStorage
 * and VZEFIVariableStore create their file (not over one unless option 1);
 * a VZMacOSInstaller must be made and used on its VM's queue, runs the VM
 * for $VZREC_INSTALL_MS (40 ms), and its progress's fractionCompleted grows
 * with the time gone. A handler not yet due (dispatch_after-like) holds no
 * later item of its queue up. $VZREC_FAIL="selector=message" queues one
 * failure at each reset, as oc_record_fail does (for build/strata-vzsim).
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
/* What +[VZLinuxRosettaDirectoryShare availability] answers: 0 not
 * supported, 1 not installed (installRosettaWithCompletionHandler: then
 * installs it, unless a failure is queued), 2 installed (the default;
 * VZREC_ROSETTA at reset). */
void oc_record_rosetta(long availability);
/* Pretend this host runs macOS `major` (0: the newest): what arrived later
 * (tests/vz-sdk/selectors.tsv) is absent, and sending it is a misuse.
 * VZREC_HOST_MACOS sets it at each reset. */
void oc_record_host(int macos_major);
/* The next message with this selector raises an NSInvalidArgumentException
 * with this reason: unwound to the innermost oc_guard, queue item or
 * oc_send_completion; with none, the transcript says so and it aborts. */
void oc_record_raise(const char *sel, const char *reason);
/* The next completion-handler message with this selector never calls its
 * handler (the caller's wait runs out). */
void oc_record_hang(const char *sel);
/* The next completion-handler message with this selector calls its handler
 * ms later (the default is 2 ms), as a long start or save would. */
void oc_record_delay(const char *sel, long ms);
/* A guest asked to stop (requestStopWithError:) shuts down ms later; < 0
 * (the default; VZREC_SHUTDOWN_MS at reset) never. */
void oc_record_guest_stops_after(long ms);
/* Set the state of the last VZVirtualMachine made (0 stopped, 1 running,
 * 2 paused, 3 error), as a guest shutting down would. */
void oc_record_set_vm_state(long state);
/* Objects the driver still owns (made by alloc/new/copy, retained, not yet
 * released or drained): how many, and their names in buf. */
int oc_record_leaks(char *buf, size_t len);

#endif
