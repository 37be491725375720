/*
 * Unit tests of the vz driver (boot/vz.c) on the recording stand-in of the
 * Objective-C runtime (tests/objc_record.c): what vz.c would send to
 * Virtualization.framework, checked for classes, selectors, arguments and
 * order against Apple's documented API.
 *
 * Bundles are made under $TEST_DIR (default: a fresh mkdtemp under /var/tmp;
 * KEEP_TEST_DIR=1 keeps it).
 * VZ_TRANSCRIPT=1 prints the transcript of the macOS cold start.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../boot/internal.h"
#include "objc_record.h"
#include "testutil.h"

static char g_root[1024];

/* ---------- files ---------- */

static void mkdir_or_fail(const char *path)
{
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        fail_msg("mkdir %s: %s", path, strerror(errno));
}

static void sparse_file(const char *path, off_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, size) < 0)
        fail_msg("truncate %s: %s", path, strerror(errno));
    close(fd);
}

static int exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* ---------- a bundle, its settings, the driver ---------- */

/* a HardwareModel as Apple's dataRepresentation has it (XML here; the
 * driver reads the guest's macOS from MinimumSupportedOS) */
static void write_hardware_model(const char *bundle, int minimum_macos)
{
    char path[PATH_MAX], text[1024];
    snprintf(path, sizeof path, "%s/HardwareModel", bundle);
    int n = snprintf(text, sizeof text,
                     "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\">\n<dict>"
                     "<key>DataRepresentationVersion</key><integer>1</integer>"
                     "<key>MinimumSupportedOS</key><array><integer>%d</integer><integer>0</integer>"
                     "<integer>0</integer></array><key>PlatformVersion</key><integer>2</integer>"
                     "</dict>\n</plist>\n",
                     minimum_macos);
    put_file(path, text, (size_t)n);
}

static char g_notes[4096];

static void collect_note(void *ctx, const char *line)
{
    (void)ctx;
    size_t n = strlen(g_notes);
    snprintf(g_notes + n, sizeof g_notes - n, "%s\n", line);
}

typedef struct {
    char dir[1200], bundle[1300], run[1400];
    boot_settings s;
    boot_start_opts o;
    const boot_driver *d;
    boot_vm *vm;
} fx;

static char *in(const fx *f, const char *where, const char *name)
{
    static char bufs[8][PATH_MAX];
    static int next;
    (void)f;
    char *b = bufs[next++ % 8];
    snprintf(b, PATH_MAX, "%s/%s", where, name);
    return b;
}

static void fx_init(fx *f, const char *name, int macos)
{
    memset(f, 0, sizeof *f);
    oc_record_reset();
    snprintf(f->dir, sizeof f->dir, "%s/%s", g_root, name);
    snprintf(f->bundle, sizeof f->bundle, "%s/bundle", f->dir);
    snprintf(f->run, sizeof f->run, "%s/.run", f->bundle);
    mkdir_or_fail(f->dir);
    mkdir_or_fail(f->bundle);
    mkdir_or_fail(f->run);
    mkdir_or_fail(in(f, f->dir, "src"));
    mkdir_or_fail(in(f, f->dir, "out"));
    sparse_file(in(f, f->bundle, "Disk.img"), 64 << 20);
    if (macos) {
        write_hardware_model(f->bundle, 14);
        put_file(in(f, f->bundle, "MachineIdentifier"), "machine-identifier-bytes", 24);
        sparse_file(in(f, f->bundle, "AuxiliaryStorage"), 32 << 20);
    } else {
        put_file(in(f, f->bundle, "vmlinuz"), "kernel", 6);
        put_file(in(f, f->bundle, "initrd.img"), "initrd", 6);
        sparse_file(in(f, f->bundle, "efivars"), 64 << 10);
    }
    f->d = boot_vz_driver();
    f->o.bundle_dir = f->bundle;
    f->o.runtime_dir = f->run;
    f->o.settings = &f->s;
    f->o.note = collect_note;
    g_notes[0] = 0;
}

/* Settings.json text; %s in it is replaced by the fixture's directory */
static void fx_settings(fx *f, const char *json_fmt)
{
    char json[8192];
    char *out = json;
    for (const char *p = json_fmt; *p; p++) {
        if (p[0] == '%' && p[1] == 's') {
            out += sprintf(out, "%s", f->dir);
            p++;
        } else {
            *out++ = *p;
        }
    }
    *out = 0;
    int rc = boot_settings_parse(json, strlen(json), f->bundle, &f->s);
    if (rc)
        fail_msg("settings: %s", boot_error());
}

static void fx_done(fx *f)
{
    if (f->vm)
        f->d->release(f->vm);
    f->vm = NULL;
    char leaks[2048];
    int n = oc_record_leaks(leaks, sizeof leaks);
    if (n)
        fail_msg("the driver still owns %d objects: %s\n%s", n, leaks, oc_record_transcript());
    if (strstr(oc_record_transcript(), "!!"))
        fail_msg("the stand-in caught a misuse:\n%s", oc_record_transcript());
    boot_settings_free(&f->s);
    oc_record_reset();
}

static const char *MACOS_JSON =
    "{\"version\":1,\"os\":\"macos\",\"cpus\":4,\"memory_mib\":8192,"
    "\"mac\":\"52:54:00:12:34:56\",\"display\":{\"width\":1440,\"height\":900,\"ppi\":144},"
    "\"shared_folders\":[{\"tag\":\"src\",\"path\":\"%s/src\",\"read_only\":true},"
    "{\"tag\":\"out\",\"path\":\"%s/out\"}],"
    "\"disk\":{\"caching\":\"cached\",\"sync\":\"fsync\"}}";

static const char *LINUX_JSON =
    "{\"version\":1,\"os\":\"linux\",\"cpus\":2,\"memory_mib\":1024,"
    "\"mac\":\"52:54:00:ab:cd:ef\","
    "\"boot\":{\"loader\":\"linux\",\"kernel\":\"vmlinuz\",\"initrd\":\"initrd.img\","
    "\"cmdline\":\"console=hvc0 root=/dev/vda\"}}";

/* ---------- reading the transcript ---------- */

/* the 0-based number of the first (or last) line from line `from` on that
 * holds needle, or -1 */
static int line_of_from(const char *needle, int from, int last)
{
    const char *t = oc_record_transcript();
    int n = 0, found = -1;
    while (*t) {
        const char *nl = strchr(t, '\n');
        size_t len = nl ? (size_t)(nl - t) : strlen(t);
        if (n >= from) {
            char *line = strndup(t, len);
            int hit = line && strstr(line, needle) != NULL;
            free(line);
            if (hit) {
                found = n;
                if (!last)
                    return n;
            }
        }
        n++;
        t += len + (nl ? 1 : 0);
    }
    return found;
}

static int line_of(const char *needle)
{
    return line_of_from(needle, 0, 0);
}

static int last_line_of(const char *needle)
{
    return line_of_from(needle, 0, 1);
}

static int count_of(const char *needle)
{
    int n = 0;
    for (int at = line_of(needle); at >= 0; at = line_of_from(needle, at + 1, 0))
        n++;
    return n;
}

static int lines(void)
{
    int n = 0;
    for (const char *t = oc_record_transcript(); *t; t++)
        n += *t == '\n';
    return n;
}

#define HAS(needle)                                                                                \
    do {                                                                                           \
        if (line_of(needle) < 0)                                                                   \
            fail_msg("no line with: %s\n--- transcript ---\n%s", needle, oc_record_transcript());   \
    } while (0)

#define LACKS(needle)                                                                              \
    do {                                                                                           \
        if (line_of(needle) >= 0)                                                                  \
            fail_msg("unexpected line with: %s\n--- transcript ---\n%s", needle,                   \
                     oc_record_transcript());                                                      \
    } while (0)

#define BEFORE(a, b)                                                                               \
    do {                                                                                           \
        int la_ = line_of(a), lb_ = line_of(b);                                                    \
        if (la_ < 0 || lb_ < 0 || la_ >= lb_)                                                      \
            fail_msg("expected '%s' (line %d) before '%s' (line %d)\n--- transcript ---\n%s", a,   \
                     la_, b, lb_, oc_record_transcript());                                         \
    } while (0)

static void has_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void has_fmt(const char *fmt, ...)
{
    char needle[PATH_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(needle, sizeof needle, fmt, ap);
    va_end(ap);
    HAS(needle);
}

/* every setter on any object comes before validateWithError:, which comes
 * before the VM is made, which comes before it runs */
static void configuration_then_vm(const char *run_sel)
{
    int validate = line_of("validateWithError:");
    int last_setter = last_line_of(" set");
    int make_vm = line_of("initWithConfiguration: VZVirtualMachineConfiguration#");
    int run = line_of(run_sel);
    if (!(validate > last_setter && make_vm > validate && run > make_vm))
        fail_msg("order: last setter %d, validateWithError: %d, initWithConfiguration:queue: %d, "
                 "%s %d\n%s",
                 last_setter, validate, make_vm, run_sel, run, oc_record_transcript());
    /* the VM is made on its queue */
    int q = line_of("dispatch_queue_create(\"strata.vz\"");
    int sync = line_of_from("dispatch_sync_f(dispatch_queue#", q, 0);
    assert_true(q > validate && sync > q && sync < make_vm);
}

/* ---------- tests ---------- */

static void test_driver_table(void **state)
{
    (void)state;
    const boot_driver *d = boot_vz_driver();
    assert_string_equal(d->name, "vz");
    assert_string_equal(d->state_file, "SaveFile.vzvmsave");
    assert_non_null(d->start);
    assert_non_null(d->pause);
    assert_non_null(d->save);
    assert_non_null(d->resume);
    assert_non_null(d->stop);
    assert_non_null(d->alive);
    assert_non_null(d->pid);
    assert_non_null(d->release);
}

static void test_macos_cold_start(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "macos-cold", 1);
    fx_settings(&f, MACOS_JSON);
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    assert_non_null(f.vm);
    if (getenv("VZ_TRANSCRIPT"))
        fprintf(stderr, "--- macOS cold start (%s) ---\n%s---\n", f.dir, oc_record_transcript());

    /* platform: the bundle's hardware model, machine identifier and aux storage */
    HAS("+[VZMacPlatformConfiguration new] -> VZMacPlatformConfiguration#");
    has_fmt("+[NSData dataWithContentsOfURL: url(\"%s/HardwareModel\")] -> NSData#", f.bundle);
    HAS("initWithDataRepresentation: NSData#");
    HAS("-[VZMacHardwareModel#");
    HAS("isSupported] -> YES");
    HAS("setHardwareModel: VZMacHardwareModel#");
    has_fmt("+[NSData dataWithContentsOfURL: url(\"%s/MachineIdentifier\")] -> NSData#", f.bundle);
    HAS("setMachineIdentifier: VZMacMachineIdentifier#");
    has_fmt("initWithURL: url(\"%s/AuxiliaryStorage\")] -> VZMacAuxiliaryStorage#", f.bundle);
    HAS("setAuxiliaryStorage: VZMacAuxiliaryStorage#");
    HAS("setPlatform: VZMacPlatformConfiguration#");
    /* boot loader, CPUs, memory in bytes */
    HAS("+[VZMacOSBootLoader new]");
    HAS("setBootLoader: VZMacOSBootLoader#");
    HAS("setCPUCount: 4]");
    HAS("setMemorySize: 8589934592]");
    /* disk: cached = 2, fsync = 2 (VZDiskImageCachingMode / SynchronizationMode) */
    has_fmt("initWithURL: url(\"%s/Disk.img\") readOnly: NO cachingMode: 2 synchronizationMode: 2 "
            "error: &error] -> VZDiskImageStorageDeviceAttachment#",
            f.bundle);
    HAS("initWithAttachment: VZDiskImageStorageDeviceAttachment#");
    HAS("setStorageDevices: @[VZVirtioBlockDeviceConfiguration#");
    /* network: NAT with the settings' MAC */
    HAS("+[VZNATNetworkDeviceAttachment new]");
    HAS("setAttachment: VZNATNetworkDeviceAttachment#");
    HAS("initWithString: \"52:54:00:12:34:56\"] -> VZMACAddress#");
    HAS("setMACAddress: VZMACAddress#");
    HAS("setNetworkDevices: @[VZVirtioNetworkDeviceConfiguration#");
    HAS("setEntropyDevices: @[VZVirtioEntropyDeviceConfiguration#");
    /* serial console into the runtime directory's log, by a file attachment */
    has_fmt("initWithURL: url(\"%s/.console.log\") append: YES error: &error] -> VZFileSerialPortAttachment#", f.run);
    HAS("setAttachment: VZFileSerialPortAttachment#");
    LACKS("NSFileHandle");
    HAS("setSerialPorts: @[VZVirtioConsoleDeviceSerialPortConfiguration#");
    assert_true(exists(in(&f, f.run, ".console.log")));
    /* display, keyboard, trackpad */
    HAS("initWithWidthInPixels: 1440 heightInPixels: 900 pixelsPerInch: 144]");
    HAS("setDisplays: @[VZMacGraphicsDisplayConfiguration#");
    HAS("setGraphicsDevices: @[VZMacGraphicsDeviceConfiguration#");
    HAS("setKeyboards: @[VZMacKeyboardConfiguration#");
    HAS("setPointingDevices: @[VZMacTrackpadConfiguration#");
    /* shared folders: one virtio-fs device per tag, read-only per folder */
    HAS("+[VZVirtioFileSystemDeviceConfiguration validateTag: \"src\" error: &error] -> YES");
    has_fmt("initWithURL: url(\"%s/src\") readOnly: YES] -> VZSharedDirectory#", f.dir);
    has_fmt("initWithURL: url(\"%s/out\") readOnly: NO] -> VZSharedDirectory#", f.dir);
    HAS("initWithDirectory: VZSharedDirectory#");
    HAS("initWithTag: \"src\"] -> VZVirtioFileSystemDeviceConfiguration#");
    HAS("initWithTag: \"out\"] -> VZVirtioFileSystemDeviceConfiguration#");
    HAS("setShare: VZSingleDirectoryShare#");
    HAS("setDirectorySharingDevices: @[VZVirtioFileSystemDeviceConfiguration#");
    /* validate, make the VM on its queue, start it there */
    HAS("validateWithError: &error] -> YES");
    LACKS("validateSaveRestoreSupportWithError:");
    HAS("initWithConfiguration: VZVirtualMachineConfiguration#");
    HAS("queue: dispatch_queue#");
    HAS("startWithCompletionHandler: ^(NSError *)]");
    HAS("^ startWithCompletionHandler: completion(nil)");
    LACKS("restoreMachineStateFromURL:");
    LACKS("resumeWithCompletionHandler:");
    configuration_then_vm("startWithCompletionHandler:");
    /* the start is sent inside a dispatch_sync onto the VM's queue */
    int start = line_of("startWithCompletionHandler: ^(NSError *)]");
    assert_true(start > 0);
    const char *t = oc_record_transcript();
    for (int i = 0; i < start - 1; i++)
        t = strchr(t, '\n') + 1;
    assert_true(strncmp(t, "dispatch_sync_f(dispatch_queue#", 31) == 0);

    assert_int_equal(f.d->alive(f.vm), 1);
    assert_int_equal(f.d->pid(f.vm), getpid());
    fx_done(&f);
}

static void test_macos_resume(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "macos-resume", 1);
    fx_settings(&f, MACOS_JSON);
    put_file(in(&f, f.bundle, "SaveFile.vzvmsave"), "state", 5);
    f.o.restore_state = in(&f, f.bundle, "SaveFile.vzvmsave");
    f.o.suspendable = 1;
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);

    HAS("validateSaveRestoreSupportWithError: &error] -> YES");
    BEFORE("validateWithError:", "validateSaveRestoreSupportWithError:");
    BEFORE("validateSaveRestoreSupportWithError:", "initWithConfiguration:");
    configuration_then_vm("restoreMachineStateFromURL:");
    has_fmt("restoreMachineStateFromURL: url(\"%s/SaveFile.vzvmsave\") completionHandler: ^(NSError *)]",
            f.bundle);
    HAS("^ restoreMachineStateFromURL:completionHandler: completion(nil)");
    BEFORE("^ restoreMachineStateFromURL:completionHandler: completion(nil)",
           "resumeWithCompletionHandler: ^(NSError *)]");
    HAS("^ resumeWithCompletionHandler: completion(nil)");
    LACKS("startWithCompletionHandler:");
    /* a VM that may be saved has no entropy device */
    LACKS("VZVirtioEntropyDeviceConfiguration");
    assert_int_equal(f.d->alive(f.vm), 1);
    fx_done(&f);
}

static void test_suspend(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "macos-suspend", 1);
    fx_settings(&f, MACOS_JSON);
    f.o.suspendable = 1;
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    HAS("validateSaveRestoreSupportWithError: &error] -> YES");
    int mark = lines();

    char *path = in(&f, f.bundle, "SaveFile.vzvmsave");
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/.tmp-%d.SaveFile.vzvmsave", f.bundle, (int)getpid());
    assert_int_equal(f.d->pause(f.vm), 0);
    assert_int_equal(f.d->save(f.vm, path), 0);

    int pause = line_of_from("pauseWithCompletionHandler: ^(NSError *)]", mark, 0);
    int paused = line_of_from("^ pauseWithCompletionHandler: completion(nil)", mark, 0);
    char save_line[PATH_MAX + 128];
    snprintf(save_line, sizeof save_line,
             "saveMachineStateToURL: url(\"%s\") completionHandler: ^(NSError *)]", tmp);
    int save = line_of_from(save_line, mark, 0);
    int saved = line_of_from("^ saveMachineStateToURL:completionHandler: completion(nil)", mark, 0);
    if (!(pause > mark && paused > pause && save > paused && saved > save))
        fail_msg("pause %d/%d then save %d/%d after line %d\n%s", pause, paused, save, saved, mark,
                 oc_record_transcript());
    assert_int_equal(line_of_from("startWithCompletionHandler:", mark, 0), -1);
    assert_int_equal(line_of_from("resumeWithCompletionHandler:", mark, 0), -1);
    /* the state is in place, the temporary name gone */
    assert_true(exists(path));
    assert_false(exists(tmp));
    /* paused is still alive; a forced stop ends it */
    assert_int_equal(f.d->alive(f.vm), 1);
    assert_int_equal(f.d->stop(f.vm, 1), 0);
    HAS("^ stopWithCompletionHandler: completion(nil)");
    assert_int_equal(f.d->alive(f.vm), 0);
    fx_done(&f);
}

static void test_save_failure_leaves_nothing(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "macos-save-fails", 1);
    fx_settings(&f, MACOS_JSON);
    f.o.suspendable = 1;
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    char *path = in(&f, f.bundle, "SaveFile.vzvmsave");
    /* not paused: the framework refuses */
    assert_true(f.d->save(f.vm, path) < 0);
    assert_non_null(strstr(boot_error(), "save needs a paused VM"));
    assert_false(exists(path));
    assert_int_equal(f.d->pause(f.vm), 0);
    oc_record_fail("saveMachineStateToURL:completionHandler:", "Failed to save the virtual machine.");
    assert_true(f.d->save(f.vm, path) < 0);
    assert_non_null(strstr(boot_error(), "Failed to save the virtual machine."));
    assert_false(exists(path));
    assert_int_equal(f.d->resume(f.vm), 0);
    HAS("^ resumeWithCompletionHandler: completion(nil)");
    fx_done(&f);
}

static void test_linux_start(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "linux", 0);
    fx_settings(&f, LINUX_JSON);
    char *mid = in(&f, f.bundle, "GenericMachineIdentifier");
    assert_false(exists(mid));
    assert_false(exists(in(&f, f.bundle, "MachineIdentifier")));
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);

    HAS("+[VZGenericPlatformConfiguration new] -> VZGenericPlatformConfiguration#");
    /* no identifier in the bundle: a new one, written there for next time */
    HAS("+[VZGenericMachineIdentifier new] -> VZGenericMachineIdentifier#");
    HAS("dataRepresentation] -> NSData#");
    has_fmt("writeToURL: url(\"%s/GenericMachineIdentifier\") atomically: YES] -> YES", f.bundle);
    HAS("setMachineIdentifier: VZGenericMachineIdentifier#");
    assert_true(exists(mid));
    /* a Mac's MachineIdentifier (an ECID plist the store checks) is not touched */
    assert_false(exists(in(&f, f.bundle, "MachineIdentifier")));
    /* direct kernel boot */
    has_fmt("initWithKernelURL: url(\"%s/vmlinuz\")] -> VZLinuxBootLoader#", f.bundle);
    has_fmt("setInitialRamdiskURL: url(\"%s/initrd.img\")]", f.bundle);
    HAS("setCommandLine: \"console=hvc0 root=/dev/vda\"]");
    HAS("setBootLoader: VZLinuxBootLoader#");
    HAS("setPlatform: VZGenericPlatformConfiguration#");
    HAS("setCPUCount: 2]");
    HAS("setMemorySize: 1073741824]");
    /* the Linux defaults: cached = 2 (tart, Lima: UTM #4840), full = 1 */
    HAS("readOnly: NO cachingMode: 2 synchronizationMode: 1 error: &error]");
    HAS("initWithString: \"52:54:00:ab:cd:ef\"]");
    HAS("setEntropyDevices: @[VZVirtioEntropyDeviceConfiguration#");
    /* nothing a Mac guest needs */
    LACKS("VZMac");
    LACKS("setGraphicsDevices:");
    LACKS("setKeyboards:");
    LACKS("setDirectorySharingDevices:");
    configuration_then_vm("startWithCompletionHandler:");
    HAS("^ startWithCompletionHandler: completion(nil)");
    f.d->release(f.vm);
    f.vm = NULL;

    /* the second start reads the identifier the first one wrote */
    oc_record_reset();
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    has_fmt("+[NSData dataWithContentsOfURL: url(\"%s\")] -> NSData#", mid);
    HAS("-[VZGenericMachineIdentifier#");
    HAS("initWithDataRepresentation: NSData#");
    LACKS("+[VZGenericMachineIdentifier new]");
    LACKS("writeToURL:");
    fx_done(&f);
}

static void test_linux_efi(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "linux-efi", 0);
    fx_settings(&f, "{\"version\":1,\"os\":\"linux\",\"boot\":{\"loader\":\"efi\","
                    "\"variable_store\":\"efivars\"},\"disk\":{\"caching\":\"uncached\",\"sync\":\"none\"}}");
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    HAS("+[VZEFIBootLoader new] -> VZEFIBootLoader#");
    has_fmt("initWithURL: url(\"%s/efivars\")] -> VZEFIVariableStore#", f.bundle);
    HAS("setVariableStore: VZEFIVariableStore#");
    HAS("setBootLoader: VZEFIBootLoader#");
    LACKS("VZLinuxBootLoader");
    /* uncached = 1, none = 3 */
    HAS("readOnly: NO cachingMode: 1 synchronizationMode: 3 error: &error]");
    /* no MAC in the settings: the framework picks one */
    LACKS("VZMACAddress");
    fx_done(&f);
}

static void test_start_failure(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "start-fails", 1);
    fx_settings(&f, MACOS_JSON);
    oc_record_fail("startWithCompletionHandler:",
                   "The virtual machine failed to start. Internal Virtualization error.");
    boot_vm *vm = (boot_vm *)0x1;
    int rc = f.d->start(&f.o, &vm);
    assert_int_equal(rc, -EIO);
    assert_ptr_equal(vm, (boot_vm *)0x1); /* untouched on failure */
    assert_non_null(strstr(boot_error(), "the VM did not start"));
    assert_non_null(strstr(boot_error(), "The virtual machine failed to start. Internal Virtualization error."));
    HAS("^ startWithCompletionHandler: completion(NSError(\"The virtual machine failed to start.");
    /* what was made is released: fx_done checks the stand-in's count */
    HAS("dispatch_release(dispatch_queue#");
    fx_done(&f);
}

/* validateSaveRestoreSupportWithError: says no: the VM runs without, and
 * says why; suspending it then fails before anything is paused */
static void test_save_restore_unsupported(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "not-savable", 1);
    fx_settings(&f, MACOS_JSON);
    f.o.suspendable = 1;
    oc_record_fail("validateSaveRestoreSupportWithError:",
                   "The storage device attachment is not supported for save and restore.");
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    assert_non_null(strstr(g_notes, "can't be suspended"));
    assert_non_null(strstr(g_notes, "not supported for save and restore"));
    HAS("validateSaveRestoreSupportWithError: &error] -> NO, error: NSError(");
    /* built again without save/restore: a macOS guest gets its entropy device back */
    assert_int_equal(count_of("+[VZVirtualMachineConfiguration new]"), 2);
    int second = last_line_of("+[VZVirtualMachineConfiguration new]");
    assert_true(line_of_from("setEntropyDevices:", second, 0) > second);
    HAS("^ startWithCompletionHandler: completion(nil)");
    assert_int_equal(f.d->savable(f.vm), 0);
    int mark = lines();
    assert_int_equal(f.d->save(f.vm, in(&f, f.bundle, "SaveFile.vzvmsave")), -ENOTSUP);
    assert_non_null(strstr(boot_error(), "without save/restore support"));
    assert_int_equal(line_of_from("saveMachineStateToURL:", mark, 0), -1);
    fx_done(&f);

    /* a restore can't fall back: it fails, and says why */
    fx_init(&f, "not-restorable", 1);
    fx_settings(&f, MACOS_JSON);
    put_file(in(&f, f.bundle, "SaveFile.vzvmsave"), "state", 5);
    f.o.restore_state = in(&f, f.bundle, "SaveFile.vzvmsave");
    oc_record_fail("validateSaveRestoreSupportWithError:", "The entropy device is not supported.");
    boot_vm *vm = NULL;
    assert_int_equal(f.d->start(&f.o, &vm), -ENOTSUP);
    assert_null(vm);
    assert_non_null(strstr(boot_error(), "can't be restored: The entropy device is not supported."));
    LACKS("initWithConfiguration:");
    fx_done(&f);
}

/* macOS 13 (and Intel Macs) have no save/restore: every VM still boots */
static void test_old_macos_cannot_suspend(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "macos13", 1);
    fx_settings(&f, MACOS_JSON);
    f.o.suspendable = 1;
    oc_record_host(13);
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    assert_non_null(strstr(g_notes, "needs macOS 14"));
    LACKS("validateSaveRestoreSupportWithError:"); /* never sent where it doesn't exist */
    HAS("+[VZUSBKeyboardConfiguration new]");      /* macOS 13's keyboard */
    HAS("+[VZMacTrackpadConfiguration new]");      /* macOS 13 has the trackpad */
    HAS("setEntropyDevices: @[VZVirtioEntropyDeviceConfiguration#");
    HAS("^ startWithCompletionHandler: completion(nil)");
    assert_int_equal(f.d->savable(f.vm), 0);
    fx_done(&f);

    /* the same host can't resume: a clear refusal before anything is made */
    fx_init(&f, "macos13-resume", 1);
    fx_settings(&f, MACOS_JSON);
    put_file(in(&f, f.bundle, "SaveFile.vzvmsave"), "state", 5);
    f.o.restore_state = in(&f, f.bundle, "SaveFile.vzvmsave");
    oc_record_host(13);
    boot_vm *vm = NULL;
    assert_int_equal(f.d->start(&f.o, &vm), -ENOTSUP);
    assert_non_null(strstr(boot_error(), "can't restore a saved state here"));
    assert_non_null(strstr(boot_error(), "macOS 14"));
    LACKS("initWithConfiguration:");
    fx_done(&f);

    /* where a VM class has no save (the bridge asks the class, not just the
     * configuration) it runs without too */
    fx_init(&f, "no-save-selector", 0);
    fx_settings(&f, LINUX_JSON);
    f.o.suspendable = 1;
    oc_record_absent("saveMachineStateToURL:completionHandler:");
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    assert_non_null(strstr(g_notes, "needs macOS 14"));
    assert_int_equal(f.d->savable(f.vm), 0);
    fx_done(&f);
}

/* a Linux guest that may be saved keeps its entropy device (as Lima's do);
 * no MAC in the settings means no save (a restore needs the same MAC) */
static void test_linux_savable(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "linux-savable", 0);
    fx_settings(&f, LINUX_JSON);
    f.o.suspendable = 1;
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    HAS("validateSaveRestoreSupportWithError: &error] -> YES");
    HAS("setEntropyDevices: @[VZVirtioEntropyDeviceConfiguration#");
    assert_int_equal(f.d->savable(f.vm), 1);
    assert_string_equal(g_notes, "");
    assert_int_equal(f.d->pause(f.vm), 0);
    assert_int_equal(f.d->save(f.vm, in(&f, f.bundle, "SaveFile.vzvmsave")), 0);
    fx_done(&f);

    fx_init(&f, "linux-no-mac", 0);
    fx_settings(&f, "{\"version\":1,\"os\":\"linux\",\"boot\":{\"kernel\":\"vmlinuz\"}}");
    f.o.suspendable = 1;
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    assert_non_null(strstr(g_notes, "no MAC address"));
    LACKS("validateSaveRestoreSupportWithError:");
    assert_int_equal(f.d->savable(f.vm), 0);
    fx_done(&f);

    /* --console on a VM that may be saved: the terminal can't be kept in a
     * saved state, so it runs without; a restore writes to the log file */
    fx_init(&f, "linux-console", 0);
    fx_settings(&f, LINUX_JSON);
    f.o.suspendable = 1;
    f.o.console = 1;
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    assert_non_null(strstr(g_notes, "--console"));
    HAS("setAttachment: VZFileHandleSerialPortAttachment#");
    assert_int_equal(f.d->savable(f.vm), 0);
    fx_done(&f);
}

/* what a saved state is bound to beyond the settings: the driver's devices */
static void test_devices(void **state)
{
    (void)state;
    fx f;
    char mac[512], lin[512];
    fx_init(&f, "devices", 1);
    fx_settings(&f, MACOS_JSON);
    assert_int_equal(f.d->devices(&f.s, mac, sizeof mac), 0);
    assert_non_null(strstr(mac, "entropy=none"));
    assert_non_null(strstr(mac, "serial=virtio-console:file"));
    assert_non_null(strstr(mac, "keyboard=VZMacKeyboardConfiguration"));
    boot_settings_free(&f.s);
    put_file(in(&f, f.bundle, "vmlinuz"), "kernel", 6);
    put_file(in(&f, f.bundle, "initrd.img"), "initrd", 6);
    fx_settings(&f, LINUX_JSON);
    assert_int_equal(f.d->devices(&f.s, lin, sizeof lin), 0);
    assert_non_null(strstr(lin, "platform=generic"));
    assert_non_null(strstr(lin, "entropy=virtio"));
    /* an older host picks other input devices: another device set */
    oc_record_host(13);
    boot_settings_free(&f.s);
    fx_settings(&f, MACOS_JSON);
    char old[512];
    assert_int_equal(f.d->devices(&f.s, old, sizeof old), 0);
    assert_string_not_equal(old, mac);
    fx_done(&f);
}

/* the line of a setter, from its selector to the end of the line */
static const char *setter_line(const char *sel, char *buf, size_t len)
{
    const char *t = oc_record_transcript(), *at = strstr(t, sel);
    size_t n = at ? strcspn(at, "\n") : 0;
    snprintf(buf, len, "%.*s", (int)n, at ? at : "");
    return buf;
}

/* the setKeyboards:/setPointingDevices: arrays, as class names only */
static void input_arrays(char *kbd, char *ptr, size_t len)
{
    char line[512];
    const char *p[2] = {setter_line("setKeyboards: ", line, sizeof line), NULL};
    char *out[2] = {kbd, ptr};
    for (int k = 0; k < 2; k++) {
        if (k)
            p[1] = setter_line("setPointingDevices: ", line, sizeof line);
        size_t o = 0;
        for (const char *c = p[k]; *c && o + 1 < len; c++)
            if (*c == '#')
                while (c[1] >= '0' && c[1] <= '9')
                    c++;
            else
                out[k][o++] = *c;
        out[k][o] = 0;
    }
}

/*
 * Keyboard and pointer by the guest's macOS (its HardwareModel's
 * MinimumSupportedOS), as Apple's headers advise: the Mac device and the
 * USB one side by side, the guest using what it recognises; the Mac devices
 * alone for a VM that may be saved (save/restore takes no USB input
 * device), so a guest before macOS 13 is never configured for it.
 */
static void test_input_devices_by_guest(void **state)
{
    (void)state;
    static const struct {
        int guest, host, suspendable, savable;
        const char *kbd, *ptr;
    } cases[] = {
        /* a VM that isn't to be saved: both, the Mac device where the host has it */
        {14, 0, 0, 0, "setKeyboards: @[VZMacKeyboardConfiguration, VZUSBKeyboardConfiguration]]",
         "setPointingDevices: @[VZMacTrackpadConfiguration, VZUSBScreenCoordinatePointingDeviceConfiguration]]"},
        {12, 0, 0, 0, "setKeyboards: @[VZMacKeyboardConfiguration, VZUSBKeyboardConfiguration]]",
         "setPointingDevices: @[VZMacTrackpadConfiguration, VZUSBScreenCoordinatePointingDeviceConfiguration]]"},
        /* one that may be saved: the Mac devices alone (macOS 13 guests recognise them) */
        {14, 0, 1, 1, "setKeyboards: @[VZMacKeyboardConfiguration]]",
         "setPointingDevices: @[VZMacTrackpadConfiguration]]"},
        {13, 0, 1, 1, "setKeyboards: @[VZMacKeyboardConfiguration]]",
         "setPointingDevices: @[VZMacTrackpadConfiguration]]"},
        /* a macOS 12 guest would have neither: it runs without save/restore */
        {12, 0, 1, 0, "setKeyboards: @[VZMacKeyboardConfiguration, VZUSBKeyboardConfiguration]]",
         "setPointingDevices: @[VZMacTrackpadConfiguration, VZUSBScreenCoordinatePointingDeviceConfiguration]]"},
        /* a macOS 13 host has the trackpad but no Mac keyboard; 12 neither */
        {14, 13, 1, 0, "setKeyboards: @[VZUSBKeyboardConfiguration]]",
         "setPointingDevices: @[VZMacTrackpadConfiguration, VZUSBScreenCoordinatePointingDeviceConfiguration]]"},
        {12, 12, 0, 0, "setKeyboards: @[VZUSBKeyboardConfiguration]]",
         "setPointingDevices: @[VZUSBScreenCoordinatePointingDeviceConfiguration]]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fx f;
        char name[64], kbd[512], ptr[512];
        snprintf(name, sizeof name, "input-%zu", i);
        fx_init(&f, name, 1);
        write_hardware_model(f.bundle, cases[i].guest);
        fx_settings(&f, MACOS_JSON);
        f.o.suspendable = cases[i].suspendable;
        oc_record_host(cases[i].host);
        assert_int_equal(f.d->start(&f.o, &f.vm), 0);
        input_arrays(kbd, ptr, sizeof kbd);
        if (strcmp(kbd, cases[i].kbd) || strcmp(ptr, cases[i].ptr))
            fail_msg("case %zu (guest macOS %d, host %d, suspendable %d):\n  %s\n  %s\nwanted\n  %s\n  %s",
                     i, cases[i].guest, cases[i].host, cases[i].suspendable, kbd, ptr, cases[i].kbd,
                     cases[i].ptr);
        assert_int_equal(f.d->savable(f.vm), cases[i].savable);
        if (cases[i].guest < 13 && cases[i].suspendable && !cases[i].host) {
            assert_non_null(strstr(g_notes, "can't be suspended: a macOS 12 guest (its HardwareModel's "
                                            "minimum) knows only the USB keyboard and pointer"));
            LACKS("validateSaveRestoreSupportWithError:"); /* decided before the framework is asked */
        }
        fx_done(&f);
    }

    /* a HardwareModel that names no version: taken for the oldest guest */
    fx f;
    fx_init(&f, "input-unknown", 1);
    put_file(in(&f, f.bundle, "HardwareModel"), "hardware-model-16", 16);
    fx_settings(&f, MACOS_JSON);
    f.o.suspendable = 1;
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    assert_non_null(strstr(g_notes, "a macOS 12 guest"));
    HAS("setKeyboards: @[VZMacKeyboardConfiguration#");
    HAS(", VZUSBKeyboardConfiguration#");
    fx_done(&f);

    /* ... and a restore of such a guest's state is refused, not attempted */
    fx_init(&f, "input-restore-12", 1);
    write_hardware_model(f.bundle, 12);
    fx_settings(&f, MACOS_JSON);
    put_file(in(&f, f.bundle, "SaveFile.vzvmsave"), "state", 5);
    f.o.restore_state = in(&f, f.bundle, "SaveFile.vzvmsave");
    boot_vm *vm = NULL;
    assert_int_equal(f.d->start(&f.o, &vm), -ENOTSUP);
    assert_non_null(strstr(boot_error(), "can't restore a saved state here: a macOS 12 guest"));
    fx_done(&f);

    /* the device set a saved state is bound to names the savable set */
    char devs[512];
    fx_init(&f, "input-devices", 1);
    fx_settings(&f, MACOS_JSON);
    assert_int_equal(f.d->devices(&f.s, devs, sizeof devs), 0);
    assert_non_null(strstr(devs, " keyboard=VZMacKeyboardConfiguration pointer=VZMacTrackpadConfiguration "));
    oc_record_host(13);
    assert_int_equal(f.d->devices(&f.s, devs, sizeof devs), 0);
    assert_non_null(strstr(devs, " keyboard=VZUSBKeyboardConfiguration pointer=VZMacTrackpadConfiguration+"
                                 "VZUSBScreenCoordinatePointingDeviceConfiguration "));
    fx_done(&f);
}

/* an Objective-C exception is an error, wherever it is raised */
static void test_exceptions(void **state)
{
    (void)state;
    fx f;
    boot_vm *vm = NULL;
    fx_init(&f, "raise-build", 0);
    fx_settings(&f, LINUX_JSON);
    oc_record_raise("setStorageDevices:", "storageDevices must be VZStorageDeviceConfiguration");
    assert_int_equal(f.d->start(&f.o, &vm), -EINVAL);
    assert_null(vm);
    assert_non_null(strstr(boot_error(), "raised an exception"));
    assert_non_null(strstr(boot_error(), "NSInvalidArgumentException: storageDevices must be"));
    HAS("!> setStorageDevices: raised NSInvalidArgumentException");
    LACKS("initWithConfiguration:");
    LACKS("!! "); /* what objc_try.m asks the exception is in Apple's SDK too */
    oc_record_reset(); /* unwound C frames leak, as on a Mac: not checked */
    boot_settings_free(&f.s);

    fx_init(&f, "raise-start", 0);
    fx_settings(&f, LINUX_JSON);
    oc_record_raise("startWithCompletionHandler:", "Start may only be invoked from the virtual machine's queue.");
    assert_int_equal(f.d->start(&f.o, &vm), -EIO);
    assert_null(vm);
    assert_non_null(strstr(boot_error(), "the VM did not start"));
    assert_non_null(strstr(boot_error(), "raised NSInvalidArgumentException: Start may only"));
    HAS("dispatch_release(dispatch_queue#");
    char leaks[1024];
    assert_int_equal(oc_record_leaks(leaks, sizeof leaks), 0);
    oc_record_reset();
    boot_settings_free(&f.s);

    /* the VM's initializer raises on a configuration it can't take */
    fx_init(&f, "raise-init", 0);
    fx_settings(&f, LINUX_JSON);
    oc_record_raise("initWithConfiguration:queue:", "Invalid virtual machine configuration.");
    assert_int_equal(f.d->start(&f.o, &vm), -EIO);
    assert_non_null(strstr(boot_error(), "could not make the VM: NSInvalidArgumentException"));
    oc_record_reset();
    boot_settings_free(&f.s);
}

/* a completion handler that never comes is a clear error, not a hang */
static void test_timeouts(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "hang", 0);
    fx_settings(&f, LINUX_JSON);
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    test_hooks_edit()->vz_timeout_ms = 300;
    oc_record_hang("pauseWithCompletionHandler:");
    assert_int_equal(f.d->pause(f.vm), -ETIMEDOUT);
    assert_non_null(strstr(boot_error(), "did not finish pauseWithCompletionHandler: in 1 s"));
    HAS("# pauseWithCompletionHandler:: no completion in 300 ms");
    test_hooks_edit()->vz_timeout_ms = 0;
    fx_done(&f);
}

/* completion handlers come later, on the VM's queue, never inline */
static void test_handlers_run_later(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "later", 0);
    fx_settings(&f, LINUX_JSON);
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    int send = line_of("startWithCompletionHandler: ^(NSError *)]");
    int close = line_of_from("}", send, 0);
    int handler = line_of("^ startWithCompletionHandler: completion(nil)");
    assert_true(send > 0 && close > send && handler > close);
    fx_done(&f);
}

/* VZLinuxBootLoader takes no compressed kernel: say so before the framework */
static void test_compressed_kernel(void **state)
{
    (void)state;
    fx f;
    boot_vm *vm = NULL;
    fx_init(&f, "gzip-kernel", 0);
    put_file(in(&f, f.bundle, "vmlinuz"), "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03kernel", 16);
    fx_settings(&f, LINUX_JSON);
    assert_int_equal(f.d->start(&f.o, &vm), -EINVAL);
    assert_non_null(strstr(boot_error(), "vmlinuz: a gzip-compressed kernel"));
    assert_non_null(strstr(boot_error(), "uncompressed"));
    LACKS("initWithKernelURL:");
    fx_done(&f);

    /* an EFI zboot image (arm64 vmlinuz.efi) too */
    fx_init(&f, "zboot-kernel", 0);
    put_file(in(&f, f.bundle, "vmlinuz"), "MZ\0\0zimg\0\0\0\0\0\0\0\0", 16);
    fx_settings(&f, LINUX_JSON);
    assert_int_equal(f.d->start(&f.o, &vm), -EINVAL);
    assert_non_null(strstr(boot_error(), "EFI zboot"));
    fx_done(&f);

    /* console=ttyS0 gets a note: the vz console is hvc0 */
    fx_init(&f, "ttyS0", 0);
    fx_settings(&f, "{\"version\":1,\"os\":\"linux\",\"mac\":\"52:54:00:ab:cd:ef\","
                    "\"boot\":{\"kernel\":\"vmlinuz\",\"cmdline\":\"console=ttyS0\"}}");
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    assert_non_null(strstr(g_notes, "hvc0"));
    fx_done(&f);
}

/* the oracle itself: a message Apple's SDK lacks, or with the wrong shape,
 * or to the wrong target, is caught */
static void test_oracle(void **state)
{
    (void)state;
    oc_record_reset();
    objc_id cls = oc_class("VZVirtualMachineConfiguration");
    objc_id conf = oc_send(cls, "new");
    oc_send_void_id(conf, "setCPUCount:", NULL);                    /* NSUInteger, not id */
    oc_send_void_u64(conf, "setCPUcount:", 2);                      /* no such selector */
    oc_send_bool_err(cls, "validateWithError:", NULL);              /* an instance method */
    oc_send(oc_class("VZVirtualMachine"), "new");                   /* NS_UNAVAILABLE */
    assert_null(oc_class("VZNoSuchThing"));
    const char *t = oc_record_transcript();
    assert_non_null(strstr(t, "!! -[VZVirtualMachineConfiguration setCPUCount:] sent as (v; @), but Apple's SDK has (v; Q)"));
    assert_non_null(strstr(t, "!! -[VZVirtualMachineConfiguration setCPUcount:]: not in Apple's SDK"));
    assert_non_null(strstr(t, "!! +[VZVirtualMachineConfiguration validateWithError:]: an instance method, sent to the class"));
    assert_non_null(strstr(t, "!! +[VZVirtualMachine new]: unavailable"));
    assert_non_null(strstr(t, "!! objc_getClass(\"VZNoSuchThing\")"));
    /* and what is newer than the host */
    oc_record_host(13);
    oc_send_bool_err(conf, "validateSaveRestoreSupportWithError:", NULL);
    assert_non_null(strstr(oc_record_transcript(), "arrived in macOS 14; this host is macOS 13"));
    assert_null(oc_class("VZMacKeyboardConfiguration"));
    oc_record_reset();
}

static void test_validate_refused(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "invalid", 1);
    fx_settings(&f, MACOS_JSON);
    oc_record_fail("validateWithError:", "The number of CPUs exceeds the host's limit.");
    boot_vm *vm = NULL;
    assert_int_equal(f.d->start(&f.o, &vm), -EINVAL);
    assert_non_null(strstr(boot_error(), "refused the VM's configuration"));
    assert_non_null(strstr(boot_error(), "The number of CPUs exceeds the host's limit."));
    LACKS("initWithConfiguration:");
    fx_done(&f);
}

static void test_restore_refused(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "restore-refused", 1);
    fx_settings(&f, MACOS_JSON);
    put_file(in(&f, f.bundle, "SaveFile.vzvmsave"), "state", 5);
    f.o.restore_state = in(&f, f.bundle, "SaveFile.vzvmsave");
    oc_record_fail("restoreMachineStateFromURL:completionHandler:", "invalid argument");
    boot_vm *vm = NULL;
    assert_int_equal(f.d->start(&f.o, &vm), -EIO);
    assert_null(vm);
    assert_non_null(strstr(boot_error(), "refused the saved state"));
    assert_non_null(strstr(boot_error(), "invalid argument"));
    LACKS("resumeWithCompletionHandler:");
    LACKS("startWithCompletionHandler:");
    fx_done(&f);

    /* a state file that isn't there is caught before the framework is asked */
    fx_init(&f, "restore-missing", 1);
    fx_settings(&f, MACOS_JSON);
    f.o.restore_state = in(&f, f.bundle, "SaveFile.vzvmsave");
    assert_int_equal(f.d->start(&f.o, &vm), -ENOENT);
    assert_non_null(strstr(boot_error(), "SaveFile.vzvmsave"));
    assert_int_equal(lines(), 0);
    fx_done(&f);
}

static void test_missing_bundle_files(void **state)
{
    (void)state;
    fx f;
    boot_vm *vm = NULL;
    fx_init(&f, "no-hw-model", 1);
    fx_settings(&f, MACOS_JSON);
    unlink(in(&f, f.bundle, "HardwareModel"));
    assert_int_equal(f.d->start(&f.o, &vm), -ENOENT);
    assert_non_null(strstr(boot_error(), "HardwareModel"));
    LACKS("VZVirtualMachine");
    fx_done(&f);

    /* data the framework can't read (the stand-in refuses empty data) */
    fx_init(&f, "bad-machine-id", 1);
    fx_settings(&f, MACOS_JSON);
    put_file(in(&f, f.bundle, "MachineIdentifier"), "", 0);
    assert_int_equal(f.d->start(&f.o, &vm), -EINVAL);
    assert_non_null(strstr(boot_error(), "MachineIdentifier: not a Mac machine identifier"));
    fx_done(&f);

    /* a hardware model this Mac can't run */
    fx_init(&f, "unsupported-model", 1);
    fx_settings(&f, MACOS_JSON);
    oc_record_fail("isSupported", "-");
    assert_int_equal(f.d->start(&f.o, &vm), -ENOTSUP);
    assert_non_null(strstr(boot_error(), "can't run a VM of that hardware model"));
    fx_done(&f);

    /* the disk attachment's error is passed on */
    fx_init(&f, "disk-refused", 1);
    fx_settings(&f, MACOS_JSON);
    oc_record_fail("initWithURL:readOnly:cachingMode:synchronizationMode:error:",
                   "The disk image is locked by another process.");
    assert_int_equal(f.d->start(&f.o, &vm), -EIO);
    assert_non_null(strstr(boot_error(), "Disk.img"));
    assert_non_null(strstr(boot_error(), "locked by another process"));
    fx_done(&f);

    /* a shared folder that is gone */
    fx_init(&f, "share-gone", 1);
    fx_settings(&f, MACOS_JSON);
    rmdir(in(&f, f.dir, "out"));
    assert_int_equal(f.d->start(&f.o, &vm), -ENOENT);
    assert_non_null(strstr(boot_error(), "shared folder"));
    fx_done(&f);
}

static void test_shared_folders_one_tag(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "shares", 0);
    fx_settings(&f, "{\"version\":1,\"os\":\"linux\",\"boot\":{\"kernel\":\"vmlinuz\"},"
                    "\"shared_folders\":[{\"tag\":\"host\",\"path\":\"%s/src\",\"read_only\":true},"
                    "{\"tag\":\"host\",\"path\":\"%s/out/\"}]}");
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    assert_int_equal(count_of("initWithTag:"), 1);
    HAS("+[VZMultipleDirectoryShare validateName: \"src\" error: &error] -> YES");
    HAS("initWithDirectories: @{\"src\": VZSharedDirectory#");
    HAS(", \"out\": VZSharedDirectory#");
    HAS("setShare: VZMultipleDirectoryShare#");
    LACKS("VZSingleDirectoryShare");
    fx_done(&f);

    /* two folders of one name under one tag can't be told apart */
    fx_init(&f, "shares-clash", 0);
    mkdir_or_fail(in(&f, f.dir, "out/src"));
    fx_settings(&f, "{\"version\":1,\"os\":\"linux\",\"boot\":{\"kernel\":\"vmlinuz\"},"
                    "\"shared_folders\":[{\"tag\":\"host\",\"path\":\"%s/src\"},"
                    "{\"tag\":\"host\",\"path\":\"%s/out/src\"}]}");
    boot_vm *vm = NULL;
    assert_int_equal(f.d->start(&f.o, &vm), -EINVAL);
    assert_non_null(strstr(boot_error(), "two folders named 'src'"));
    fx_done(&f);

    /* the tag macOS guests mount by themselves (macOSGuestAutomountTag) */
    fx_init(&f, "automount", 1);
    fx_settings(&f, "{\"version\":1,\"os\":\"macos\",\"shared_folders\":[{\"tag\":"
                    "\"com.apple.virtio-fs.automount\",\"path\":\"%s/src\"}]}");
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    HAS("initWithTag: \"com.apple.virtio-fs.automount\"] -> VZVirtioFileSystemDeviceConfiguration#");
    HAS("setShare: VZSingleDirectoryShare#");
    fx_done(&f);

    /* a tag Virtualization.framework refuses (36 bytes: it wants fewer) */
    fx_init(&f, "long-tag", 0);
    fx_settings(&f, "{\"version\":1,\"os\":\"linux\",\"boot\":{\"kernel\":\"vmlinuz\"},"
                    "\"shared_folders\":[{\"tag\":\"abcdefghijklmnopqrstuvwxyz0123456789\","
                    "\"path\":\"%s/src\"}]}");
    assert_int_equal(f.d->start(&f.o, &vm), -EINVAL);
    assert_non_null(strstr(boot_error(), "shared folder tag"));
    LACKS("initWithTag:");
    fx_done(&f);
}

static void test_graceful_stop(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "stop", 0);
    fx_settings(&f, LINUX_JSON);
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    int mark = lines();
    assert_int_equal(f.d->stop(f.vm, 0), 0);
    int req = line_of_from("requestStopWithError: &error] -> YES", mark, 0);
    assert_true(req > mark);
    assert_int_equal(line_of_from("stopWithCompletionHandler:", mark, 0), -1);
    /* the guest decides: still alive until it has shut down */
    assert_int_equal(f.d->alive(f.vm), 1);
    oc_record_set_vm_state(0);
    assert_int_equal(f.d->alive(f.vm), 0);
    HAS("state] -> 0");
    /* stopping a stopped VM is done already */
    mark = lines();
    assert_int_equal(f.d->stop(f.vm, 1), 0);
    assert_int_equal(line_of_from("stopWithCompletionHandler:", mark, 0), -1);
    /* a guest that stopped with an error is not alive either */
    oc_record_set_vm_state(3);
    assert_int_equal(f.d->alive(f.vm), 0);
    fx_done(&f);
}

static void test_refused_graceful_stop(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "stop-refused", 0);
    fx_settings(&f, LINUX_JSON);
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    assert_int_equal(f.d->pause(f.vm), 0);
    /* paused: the guest can't be asked */
    assert_int_equal(f.d->stop(f.vm, 0), -EIO);
    assert_non_null(strstr(boot_error(), "The virtual machine is not running."));
    fx_done(&f); /* releasing the paused VM stops it */
}

static void test_release_stops_a_running_vm(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "release", 0);
    fx_settings(&f, LINUX_JSON);
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    int mark = lines();
    f.d->release(f.vm);
    f.vm = NULL;
    int stop = line_of_from("stopWithCompletionHandler: ^(NSError *)]", mark, 0);
    int drop = line_of_from("dispatch_release(dispatch_queue#", mark, 0);
    assert_true(stop > mark && drop > stop);
    fx_done(&f);
}


/* ---------- making a macOS VM ---------- */

typedef struct {
    uint64_t done[64], total;
    int n;
} progress_log;

static void record_progress(void *ctx, const char *what, uint64_t done, uint64_t total)
{
    progress_log *p = ctx;
    assert_string_equal(what, "installing macOS");
    if (p->n < 64)
        p->done[p->n++] = done;
    p->total = total;
}

/* an empty bundle directory and a zip-shaped restore image */
static void fx_macos_create(fx *f, const char *name, boot_macos_opts *o, progress_log *pl)
{
    fx_init(f, name, 0);
    snprintf(f->bundle, sizeof f->bundle, "%s/new", f->dir);
    mkdir_or_fail(f->bundle);
    put_file(in(f, f->dir, "UniversalMac.ipsw"), "PK\x03\x04 restore image", 18);
    memset(o, 0, sizeof *o);
    memset(pl, 0, sizeof *pl);
    o->bundle_dir = f->bundle;
    o->ipsw = in(f, f->dir, "UniversalMac.ipsw");
    o->disk_bytes = 64ULL << 30;
    o->progress = record_progress;
    o->note = collect_note;
    o->ctx = pl;
}

static void test_create_macos(void **state)
{
    (void)state;
    fx f;
    boot_macos_opts o;
    progress_log pl;
    setenv("VZREC_INSTALL_MS", "900", 1); /* long enough for the progress to be read */
    fx_macos_create(&f, "create-macos", &o, &pl);
    assert_int_equal(f.d->create_macos(&o), 0);
    unsetenv("VZREC_INSTALL_MS");
    if (getenv("VZ_TRANSCRIPT"))
        fprintf(stderr, "--- create macos ---\n%s---\n", oc_record_transcript());

    /* the restore image, loaded through its completion handler, on a queue */
    HAS("dispatch_queue_create(\"strata.vz.install\", DISPATCH_QUEUE_SERIAL)");
    has_fmt("+[VZMacOSRestoreImage loadFileURL: url(\"%s\") completionHandler: ^(id, NSError *)]", o.ipsw);
    HAS("^ loadFileURL:completionHandler: completion(VZMacOSRestoreImage#");
    /* its most featureful configuration this host supports */
    HAS("mostFeaturefulSupportedConfiguration] -> VZMacOSConfigurationRequirements#");
    HAS("-[VZMacOSConfigurationRequirements#");
    HAS("hardwareModel] -> VZMacHardwareModel#");
    HAS("isSupported] -> YES");
    HAS("minimumSupportedCPUCount] -> 2");
    HAS("minimumSupportedMemorySize] -> 4294967296");
    BEFORE("^ loadFileURL:completionHandler: completion(", "mostFeaturefulSupportedConfiguration");
    HAS("buildVersion] -> \"26A000\"");
    assert_non_null(strstr(g_notes, "UniversalMac.ipsw: macOS build 26A000"));
    /* the bundle's identity: the hardware model, a fresh machine identifier,
     * aux storage created for that hardware model */
    has_fmt("writeToURL: url(\"%s/HardwareModel\") atomically: YES] -> YES", f.bundle);
    HAS("+[VZMacMachineIdentifier new] -> VZMacMachineIdentifier#");
    has_fmt("writeToURL: url(\"%s/MachineIdentifier\") atomically: YES] -> YES", f.bundle);
    has_fmt("initCreatingStorageAtURL: url(\"%s/AuxiliaryStorage\") hardwareModel: VZMacHardwareModel#",
            f.bundle);
    HAS("options: 0 error: &error] -> VZMacAuxiliaryStorage#");
    /* then the VM as a start configures it, and the installer on its queue */
    BEFORE("initCreatingStorageAtURL:", "validateWithError:");
    BEFORE("validateWithError: &error] -> YES", "initWithConfiguration: VZVirtualMachineConfiguration#");
    HAS("initWithVirtualMachine: VZVirtualMachine#");
    has_fmt("restoreImageURL: url(\"%s\")] -> VZMacOSInstaller#", o.ipsw);
    BEFORE("initWithConfiguration: VZVirtualMachineConfiguration#", "initWithVirtualMachine:");
    HAS("installWithCompletionHandler: ^(NSError *)]");
    HAS("progress] -> NSProgress#");
    HAS("-[NSProgress#");
    HAS("fractionCompleted] -> ");
    HAS("^ installWithCompletionHandler: completion(nil)");
    BEFORE("installWithCompletionHandler: ^(NSError *)]", "^ installWithCompletionHandler: completion(nil)");
    LACKS("startWithCompletionHandler:");

    /* the progress went from 0 to the whole, never back */
    assert_true(pl.n >= 3);
    assert_int_equal(pl.total, 1000);
    assert_int_equal(pl.done[0], 0);
    assert_int_equal(pl.done[pl.n - 1], 1000);
    for (int i = 1; i < pl.n; i++)
        assert_true(pl.done[i] >= pl.done[i - 1]);
    int between = 0;
    for (int i = 0; i < pl.n; i++)
        between |= pl.done[i] > 0 && pl.done[i] < 1000;
    assert_true(between);

    /* the files: Apple's plists, a sparse disk of the size asked, settings */
    store_identity id;
    assert_int_equal(store_plist_identity(in(&f, f.bundle, "HardwareModel"), "HardwareModel", &id), 0);
    assert_true(id.has_hardware_model);
    assert_int_equal(store_plist_identity(in(&f, f.bundle, "MachineIdentifier"), "MachineIdentifier", &id), 0);
    assert_true(id.has_machine_identifier && id.ecid != 0);
    assert_true(exists(in(&f, f.bundle, "AuxiliaryStorage")));
    struct stat st;
    assert_int_equal(stat(in(&f, f.bundle, "Disk.img"), &st), 0);
    assert_int_equal(st.st_size, 64LL << 30);
    assert_true(st.st_blocks * 512 < (1 << 20));
    boot_settings s;
    assert_int_equal(boot_settings_load(f.bundle, &s), 0);
    assert_int_equal(s.os, BOOT_OS_MACOS);
    assert_int_equal(s.loader, BOOT_LOADER_MACOS);
    assert_int_equal(s.cpus, 4);
    assert_int_equal(s.memory_mib, 4096);
    assert_true(boot_mac_valid(s.mac));
    boot_settings_free(&s);
    assert_false(exists(in(&f, f.bundle, ".console.log")));
    fx_done(&f);
}

static void test_create_macos_sizes_from_image(void **state)
{
    (void)state;
    fx f;
    boot_macos_opts o;
    progress_log pl;
    setenv("VZREC_MIN_CPUS", "6", 1);
    setenv("VZREC_MIN_MEMORY", "8589934592", 1);
    fx_macos_create(&f, "create-macos-min", &o, &pl);
    assert_int_equal(f.d->create_macos(&o), 0);
    boot_settings s;
    assert_int_equal(boot_settings_load(f.bundle, &s), 0);
    assert_int_equal(s.cpus, 6);           /* the image's minimum is above 4 */
    assert_int_equal(s.memory_mib, 8192);
    boot_settings_free(&s);
    fx_done(&f);

    fx_macos_create(&f, "create-macos-low", &o, &pl);
    o.cpus = 4;
    assert_int_equal(f.d->create_macos(&o), -EINVAL);
    assert_string_equal(boot_error(), "--cpus 4: this macOS needs at least 6");
    assert_true(dir_is_empty(f.bundle));
    fx_done(&f);

    fx_macos_create(&f, "create-macos-low-memory", &o, &pl);
    o.memory_mib = 4096;
    assert_int_equal(f.d->create_macos(&o), -EINVAL);
    assert_string_equal(boot_error(), "--memory 4096M: this macOS needs at least 8192M");
    assert_true(dir_is_empty(f.bundle));
    unsetenv("VZREC_MIN_CPUS");
    unsetenv("VZREC_MIN_MEMORY");
    fx_done(&f);
}

static void test_create_macos_refused(void **state)
{
    (void)state;
    fx f;
    boot_macos_opts o;
    progress_log pl;

    /* a file the framework can't read as a restore image */
    fx_macos_create(&f, "create-bad-image", &o, &pl);
    oc_record_fail("loadFileURL:completionHandler:", "The file couldn't be opened because it isn't in the correct format.");
    assert_int_equal(f.d->create_macos(&o), -EINVAL);
    assert_non_null(strstr(boot_error(), "not a macOS restore image Virtualization.framework can read"));
    assert_non_null(strstr(boot_error(), "isn't in the correct format"));
    HAS("^ loadFileURL:completionHandler: completion(nil, NSError(");
    LACKS("mostFeaturefulSupportedConfiguration");
    assert_true(dir_is_empty(f.bundle));
    fx_done(&f);

    /* a host that can't run it: no supported configuration */
    fx_macos_create(&f, "create-unsupported", &o, &pl);
    oc_record_fail("mostFeaturefulSupportedConfiguration", "none");
    assert_int_equal(f.d->create_macos(&o), -ENOTSUP);
    assert_non_null(strstr(boot_error(), "this Mac can't run the macOS in this restore image"));
    LACKS("VZMacAuxiliaryStorage");
    assert_true(dir_is_empty(f.bundle));
    fx_done(&f);

    /* ... or a hardware model it doesn't support */
    fx_macos_create(&f, "create-hw", &o, &pl);
    oc_record_fail("isSupported", "no");
    assert_int_equal(f.d->create_macos(&o), -ENOTSUP);
    assert_non_null(strstr(boot_error(), "doesn't support the image's hardware model"));
    assert_true(dir_is_empty(f.bundle));
    fx_done(&f);

    /* a macOS 11 host: no installer at all */
    fx_macos_create(&f, "create-old", &o, &pl);
    oc_record_host(11);
    assert_int_equal(f.d->create_macos(&o), -ENOTSUP);
    assert_non_null(strstr(boot_error(), "needs a Mac with Apple silicon and macOS 12"));
    fx_done(&f);

    /* the install fails: its reason, and the progress never claimed the end */
    fx_macos_create(&f, "create-install-fails", &o, &pl);
    oc_record_fail("installWithCompletionHandler:", "The installation failed (no space).");
    assert_int_equal(f.d->create_macos(&o), -EIO);
    assert_non_null(strstr(boot_error(), "installing macOS from"));
    assert_non_null(strstr(boot_error(), "The installation failed (no space)."));
    assert_true(pl.n >= 1 && pl.done[pl.n - 1] < 1000);
    fx_done(&f);

    /* an install that never ends: the wait is bounded */
    fx_macos_create(&f, "create-install-hangs", &o, &pl);
    test_hooks_edit()->vz_timeout_ms = 400;
    oc_record_hang("installWithCompletionHandler:");
    assert_int_equal(f.d->create_macos(&o), -ETIMEDOUT);
    test_hooks_edit()->vz_timeout_ms = 0;
    assert_string_equal(boot_error(), "installing macOS: no end in 1 s");
    HAS("# installWithCompletionHandler:: no completion in 400 ms");
    HAS("stopWithCompletionHandler: ^(NSError *)]"); /* the VM the installer ran is stopped */
    fx_done(&f);

    /* loading the image raises (a URL the framework won't take) */
    fx_macos_create(&f, "create-raises", &o, &pl);
    oc_record_raise("loadFileURL:completionHandler:", "not a file URL");
    assert_int_equal(f.d->create_macos(&o), -EINVAL);
    assert_non_null(strstr(boot_error(), "raised NSInvalidArgumentException: not a file URL"));
    fx_done(&f);

    /* on this host (no vz driver in boot_driver_find): one clear line */
    fx_macos_create(&f, "create-here", &o, &pl);
    assert_int_equal(boot_create_macos(&o), -ENOTSUP);
    assert_string_equal(boot_error(), "a macOS VM can only be made on a Mac with Apple silicon "
                                      "(macOS 12 or later, Virtualization.framework); this host can't");
    char *url = NULL;
    assert_int_equal(boot_macos_latest(NULL, &url), -ENOTSUP);
    assert_null(url);
    fx_done(&f);
}

static void test_latest_restore_image(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "latest", 0);
    setenv("VZREC_LATEST_URL", "https://updates.cdn-apple.com/x/UniversalMac_15.1_24B83_Restore.ipsw", 1);
    char *url = NULL;
    assert_int_equal(f.d->macos_latest(&url), 0);
    assert_string_equal(url, "https://updates.cdn-apple.com/x/UniversalMac_15.1_24B83_Restore.ipsw");
    free(url);
    HAS("+[VZMacOSRestoreImage fetchLatestSupportedWithCompletionHandler: ^(id, NSError *)]");
    HAS("^ fetchLatestSupportedWithCompletionHandler: completion(VZMacOSRestoreImage#");
    HAS("URL] -> url(\"https://updates.cdn-apple.com/x/UniversalMac_15.1_24B83_Restore.ipsw\")");
    HAS("absoluteString] -> \"https://updates.cdn-apple.com/x/UniversalMac_15.1_24B83_Restore.ipsw\"");
    unsetenv("VZREC_LATEST_URL");
    fx_done(&f);

    fx_init(&f, "latest-offline", 0);
    oc_record_fail("fetchLatestSupportedWithCompletionHandler:", "The Internet connection appears to be offline.");
    url = NULL;
    assert_int_equal(f.d->macos_latest(&url), -EIO);
    assert_null(url);
    assert_string_equal(boot_error(), "could not look up the latest macOS for this Mac: The Internet "
                                      "connection appears to be offline.");
    fx_done(&f);
}

/* ---------- EFI variable stores, installer media, the window ---------- */

static void test_create_efi_vars(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "efivars-new", 0);
    char *path = in(&f, f.dir, "fresh-efivars");
    assert_int_equal(f.d->create_efi_vars(path), 0);
    assert_true(exists(path));
    has_fmt("-[VZEFIVariableStore#%s", "");
    has_fmt("initCreatingVariableStoreAtURL: url(\"%s\") options: 0 error: &error] -> VZEFIVariableStore#", path);
    /* never over an existing file */
    assert_int_equal(f.d->create_efi_vars(path), -EIO);
    assert_non_null(strstr(boot_error(), "could not create an EFI variable store there: The file already exists."));
    fx_done(&f);

    fx_init(&f, "efivars-old", 0);
    oc_record_host(12);
    assert_int_equal(f.d->create_efi_vars(in(&f, f.dir, "efivars2")), -ENOTSUP);
    assert_non_null(strstr(boot_error(), "needs macOS 13"));
    fx_done(&f);
}

static const char *LINUX_EFI_JSON =
    "{\"version\":1,\"os\":\"linux\",\"cpus\":2,\"memory_mib\":1024,"
    "\"mac\":\"52:54:00:ab:cd:ef\",\"boot\":{\"loader\":\"efi\",\"variable_store\":\"efivars\"}}";

static void test_usb_installer(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "usb-installer", 0);
    fx_settings(&f, LINUX_EFI_JSON);
    put_file(in(&f, f.bundle, "Installer.iso"), "CD001", 5);
    f.s.installer = strdup("Installer.iso");
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    has_fmt("initWithURL: url(\"%s/Installer.iso\") readOnly: YES error: &error] -> "
            "VZDiskImageStorageDeviceAttachment#", f.bundle);
    HAS("+[VZUSBMassStorageDeviceConfiguration alloc]");
    HAS("initWithAttachment: VZDiskImageStorageDeviceAttachment#");
    HAS("-> VZUSBMassStorageDeviceConfiguration#");
    HAS("setStorageDevices: @[VZVirtioBlockDeviceConfiguration#");
    HAS(", VZUSBMassStorageDeviceConfiguration#");
    configuration_then_vm("startWithCompletionHandler:");
    char devs[512];
    assert_int_equal(f.d->devices(&f.s, devs, sizeof devs), 0);
    assert_non_null(strstr(devs, " installer=usb-mass-storage"));
    free(f.s.installer);
    f.s.installer = NULL;
    fx_done(&f);

    /* macOS 12 has no USB mass storage: said before anything is made */
    fx_init(&f, "usb-installer-old", 1);
    fx_settings(&f, MACOS_JSON);
    put_file(in(&f, f.bundle, "Installer.iso"), "CD001", 5);
    f.s.installer = strdup("Installer.iso");
    oc_record_host(12);
    boot_vm *vm = NULL;
    assert_int_equal(f.d->start(&f.o, &vm), -ENOTSUP);
    assert_string_equal(boot_error(), "installer media Installer.iso: attaching it as USB mass storage "
                                      "needs macOS 13 or later");
    LACKS("initWithConfiguration:");
    free(f.s.installer);
    f.s.installer = NULL;
    fx_done(&f);

    /* installer media that isn't there */
    fx_init(&f, "usb-installer-missing", 0);
    fx_settings(&f, LINUX_JSON);
    f.s.installer = strdup("Missing.iso");
    assert_int_equal(f.d->start(&f.o, &vm), -ENOENT);
    assert_non_null(strstr(boot_error(), "Missing.iso"));
    free(f.s.installer);
    f.s.installer = NULL;
    fx_done(&f);
}

/* ---------- the Sonoma-era devices ---------- */

/* LINUX_JSON with more fields before its closing brace */
static void fx_linux_with(fx *f, const char *more)
{
    char json[4096];
    snprintf(json, sizeof json, "%.*s,%s}", (int)strlen(LINUX_JSON) - 1, LINUX_JSON, more);
    fx_settings(f, json);
}

/* a start that must be refused in one line, before any configuration */
static void refused_before_build(fx *f, const char *why)
{
    assert_int_equal(f->d->start(&f->o, &f->vm), -ENOTSUP);
    assert_string_equal(boot_error(), why);
    assert_null(f->vm);
    LACKS("VZVirtualMachineConfiguration");
}

static void test_nvme_disk(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "nvme", 0);
    fx_linux_with(&f, "\"disk\":{\"bus\":\"nvme\",\"caching\":\"uncached\",\"sync\":\"none\"}");
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    /* uncached = 1, none = 3; the same attachment, on an NVMe controller */
    has_fmt("initWithURL: url(\"%s/Disk.img\") readOnly: NO cachingMode: 1 synchronizationMode: 3 "
            "error: &error] -> VZDiskImageStorageDeviceAttachment#", f.bundle);
    HAS("+[VZNVMExpressControllerDeviceConfiguration alloc] -> VZNVMExpressControllerDeviceConfiguration#");
    HAS("initWithAttachment: VZDiskImageStorageDeviceAttachment#");
    HAS("setStorageDevices: @[VZNVMExpressControllerDeviceConfiguration#");
    LACKS("VZVirtioBlockDeviceConfiguration");
    configuration_then_vm("startWithCompletionHandler:");
    fx_done(&f);

    fx_init(&f, "nvme-13", 0);
    oc_record_host(13);
    fx_linux_with(&f, "\"disk\":{\"bus\":\"nvme\"}");
    refused_before_build(&f, "an NVMe disk (bus nvme) needs macOS 14 or later "
                             "(VZNVMExpressControllerDeviceConfiguration)");
    fx_done(&f);

    /* a macOS guest: refused when the settings are read */
    boot_settings s;
    const char *mac = "{\"version\":1,\"os\":\"macos\",\"disk\":{\"bus\":\"nvme\"}}";
    assert_int_equal(boot_settings_parse(mac, strlen(mac), NULL, &s), -EINVAL);
    assert_string_equal(boot_error(), "Settings.json: disk.bus nvme is for Linux guests (a macOS "
                                      "guest boots from virtio)");
}

/* A lazy run (docs/lazy.md, "Running lazily"): its disk is strata's own
 * export on a socket in the instance, "nbd+unix:///?socket=.../.disk.sock"
 * (no export name), attached with the instance's sync mode (VZ never sends
 * FLUSH; the server makes each write durable itself); and nbd_ok says,
 * before a lazy run makes anything, whether this macOS can (14+), so run
 * falls back to a full pull on 13. */
static void test_lazy_nbd(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "lazy", 0);
    fx_linux_with(&f, "\"disk\":{\"nbd\":\"nbd+unix:///?socket=/s/vms/lz/.disk.sock\"}");
    assert_int_equal(f.d->nbd_ok(), 0);
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    HAS("+[VZNetworkBlockDeviceStorageDeviceAttachment validateURL: "
        "url(\"nbd+unix:///?socket=/s/vms/lz/.disk.sock\") error: &error] -> YES");
    HAS("initWithURL: url(\"nbd+unix:///?socket=/s/vms/lz/.disk.sock\") timeout: 30 "
        "forcedReadOnly: NO synchronizationMode: 0 error: &error] -> "
        "VZNetworkBlockDeviceStorageDeviceAttachment#");
    LACKS("Disk.img");
    fx_done(&f);

    fx_init(&f, "lazy-13", 0);
    oc_record_host(13);
    assert_int_equal(f.d->nbd_ok(), -ENOTSUP);
    assert_string_equal(boot_error(), "an NBD disk needs macOS 14 or later "
                                      "(VZNetworkBlockDeviceStorageDeviceAttachment)");
    fx_done(&f);
}

static void test_nbd_disk(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "nbd", 0);
    fx_linux_with(&f, "\"disk\":{\"nbd\":\"nbd+unix:///disk?socket=/run/strata/x.sock\",\"sync\":\"none\"}");
    f.o.suspendable = 1;
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    HAS("+[NSURL URLWithString: \"nbd+unix:///disk?socket=/run/strata/x.sock\"] -> "
        "url(\"nbd+unix:///disk?socket=/run/strata/x.sock\")");
    HAS("+[VZNetworkBlockDeviceStorageDeviceAttachment validateURL: "
        "url(\"nbd+unix:///disk?socket=/run/strata/x.sock\") error: &error] -> YES");
    /* 30 s for each reply; none = VZDiskSynchronizationModeNone (1) */
    HAS("initWithURL: url(\"nbd+unix:///disk?socket=/run/strata/x.sock\") timeout: 30 "
        "forcedReadOnly: NO synchronizationMode: 1 error: &error] -> "
        "VZNetworkBlockDeviceStorageDeviceAttachment#");
    HAS("initWithAttachment: VZNetworkBlockDeviceStorageDeviceAttachment#");
    HAS("setStorageDevices: @[VZVirtioBlockDeviceConfiguration#");
    LACKS("Disk.img");
    /* the export lives outside the instance: no saved state can hold it */
    LACKS("validateSaveRestoreSupportWithError:");
    assert_string_equal(g_notes, "this VM can't be suspended: its boot disk is an NBD export, outside "
                                 "the instance, which a saved state can't keep; it runs without "
                                 "save/restore support\n");
    assert_int_equal(f.d->savable(f.vm), 0);
    fx_done(&f);

    /* the default sync passes the guest's flushes on: VZDiskSynchronizationModeFull (0) */
    fx_init(&f, "nbd-tcp", 0);
    fx_linux_with(&f, "\"disk\":{\"nbd\":\"nbd://127.0.0.1:10809/disk\"}");
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    HAS("initWithURL: url(\"nbd://127.0.0.1:10809/disk\") timeout: 30 forcedReadOnly: NO "
        "synchronizationMode: 0 error: &error] -> VZNetworkBlockDeviceStorageDeviceAttachment#");
    fx_done(&f);

    fx_init(&f, "nbd-fsync", 0);
    fx_linux_with(&f, "\"disk\":{\"nbd\":\"nbd://127.0.0.1:10809/disk\",\"sync\":\"fsync\"}");
    assert_int_equal(f.d->start(&f.o, &f.vm), -EINVAL);
    assert_string_equal(boot_error(), "disk.sync fsync: an NBD disk synchronizes full or none");
    fx_done(&f);

    fx_init(&f, "nbd-13", 0);
    oc_record_host(13);
    fx_linux_with(&f, "\"disk\":{\"nbd\":\"nbd://127.0.0.1/disk\"}");
    refused_before_build(&f, "an NBD disk (disk.nbd) needs macOS 14 or later "
                             "(VZNetworkBlockDeviceStorageDeviceAttachment)");
    fx_done(&f);

    /* the URL is checked when the settings are read */
    boot_settings s;
    const char *bad = "{\"version\":1,\"os\":\"linux\",\"boot\":{\"loader\":\"linux\",\"kernel\":\"k\"},"
                      "\"disk\":{\"nbd\":\"nbd+unix:///disk?socket=relative.sock\"}}";
    assert_int_equal(boot_settings_parse(bad, strlen(bad), NULL, &s), -EINVAL);
    assert_string_equal(boot_error(), "Settings.json: disk.nbd 'nbd+unix:///disk?socket=relative.sock' "
                                      "must be nbd://HOST[:PORT][/EXPORT] or "
                                      "nbd+unix:///EXPORT?socket=/ABSOLUTE/PATH (no commas or spaces)");
}

static void test_extra_disks(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "extra-disks", 0);
    sparse_file(in(&f, f.bundle, "Data.img"), 1 << 20);
    sparse_file(in(&f, f.bundle, "Stick.img"), 1 << 20);
    sparse_file(in(&f, f.bundle, "Fast.img"), 1 << 20);
    fx_linux_with(&f, "\"disks\":[{\"file\":\"Data.img\"},"
                      "{\"file\":\"Stick.img\",\"bus\":\"usb\",\"read_only\":true},"
                      "{\"file\":\"Fast.img\",\"bus\":\"nvme\"}]");
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    /* each with the boot disk's modes (Linux: cached = 2, full = 1) */
    has_fmt("initWithURL: url(\"%s/Data.img\") readOnly: NO cachingMode: 2 synchronizationMode: 1",
            f.bundle);
    has_fmt("initWithURL: url(\"%s/Stick.img\") readOnly: YES cachingMode: 2 synchronizationMode: 1",
            f.bundle);
    has_fmt("initWithURL: url(\"%s/Fast.img\") readOnly: NO cachingMode: 2 synchronizationMode: 1",
            f.bundle);
    HAS("+[VZUSBMassStorageDeviceConfiguration alloc]");
    HAS("+[VZNVMExpressControllerDeviceConfiguration alloc]");
    /* the boot disk first, then the extras in their order */
    HAS("setStorageDevices: @[VZVirtioBlockDeviceConfiguration#");
    int at = line_of("setStorageDevices:");
    const char *t = oc_record_transcript();
    for (int i = 0; i < at; i++)
        t = strchr(t, '\n') + 1;
    const char *virtio2 = strstr(t, ", VZVirtioBlockDeviceConfiguration#");
    const char *usb = strstr(t, ", VZUSBMassStorageDeviceConfiguration#");
    const char *nvme = strstr(t, ", VZNVMExpressControllerDeviceConfiguration#");
    assert_true(virtio2 && usb && nvme && virtio2 < usb && usb < nvme);
    fx_done(&f);

    fx_init(&f, "extra-usb-12", 0);
    oc_record_host(12);
    sparse_file(in(&f, f.bundle, "Stick.img"), 1 << 20);
    fx_linux_with(&f, "\"disks\":[{\"file\":\"Stick.img\",\"bus\":\"usb\"}]");
    refused_before_build(&f, "a USB disk (bus usb) needs macOS 13 or later "
                             "(VZUSBMassStorageDeviceConfiguration)");
    fx_done(&f);
}

static void test_rosetta(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "rosetta", 0);
    fx_linux_with(&f, "\"rosetta\":{\"tag\":\"rosetta\"}");
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    HAS("+[VZLinuxRosettaDirectoryShare availability] -> 2");
    LACKS("installRosettaWithCompletionHandler:");
    HAS("+[VZLinuxRosettaDirectoryShare alloc] -> VZLinuxRosettaDirectoryShare#");
    HAS("initWithError: &error] -> VZLinuxRosettaDirectoryShare#");
    HAS("initWithTag: \"rosetta\"] -> VZVirtioFileSystemDeviceConfiguration#");
    HAS("setShare: VZLinuxRosettaDirectoryShare#");
    HAS("setDirectorySharingDevices: @[VZVirtioFileSystemDeviceConfiguration#");
    BEFORE("availability]", "+[VZVirtualMachineConfiguration new]");
    fx_done(&f);

    /* not installed: macOS asks its user, then the share as before */
    fx_init(&f, "rosetta-install", 0);
    oc_record_rosetta(1);
    fx_linux_with(&f, "\"rosetta\":{\"tag\":\"rosetta\"}");
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    HAS("+[VZLinuxRosettaDirectoryShare availability] -> 1");
    HAS("+[VZLinuxRosettaDirectoryShare installRosettaWithCompletionHandler: ^(NSError *)]");
    HAS("^ installRosettaWithCompletionHandler: completion(nil)");
    BEFORE("^ installRosettaWithCompletionHandler: completion(nil)", "initWithError: &error]");
    assert_string_equal(g_notes, "rosetta: Rosetta is not installed on this Mac; macOS asks to install it\n");
    fx_done(&f);

    /* the user declines */
    fx_init(&f, "rosetta-declined", 0);
    oc_record_rosetta(1);
    oc_record_fail("installRosettaWithCompletionHandler:", "The user canceled the installation.");
    fx_linux_with(&f, "\"rosetta\":{\"tag\":\"rosetta\"}");
    assert_int_equal(f.d->start(&f.o, &f.vm), -ENOTSUP);
    assert_string_equal(boot_error(), "rosetta: Rosetta was not installed: The user canceled the installation.");
    LACKS("VZVirtualMachineConfiguration");
    fx_done(&f);

    /* an Intel Mac */
    fx_init(&f, "rosetta-unsupported", 0);
    oc_record_rosetta(0);
    fx_linux_with(&f, "\"rosetta\":{\"tag\":\"rosetta\"}");
    assert_int_equal(f.d->start(&f.o, &f.vm), -ENOTSUP);
    assert_string_equal(boot_error(), "rosetta: this Mac can't run Rosetta for Linux (it needs Apple "
                                      "silicon and macOS 13 or later)");
    LACKS("installRosettaWithCompletionHandler:");
    fx_done(&f);

    fx_init(&f, "rosetta-12", 0);
    oc_record_host(12);
    fx_linux_with(&f, "\"rosetta\":{\"tag\":\"rosetta\"}");
    refused_before_build(&f, "rosetta needs macOS 13 or later on Apple silicon (VZLinuxRosettaDirectoryShare)");
    fx_done(&f);

    /* Rosetta is for Linux guests, and its tag is no shared folder's */
    boot_settings s;
    const char *mac = "{\"version\":1,\"os\":\"macos\",\"rosetta\":{\"tag\":\"rosetta\"}}";
    assert_int_equal(boot_settings_parse(mac, strlen(mac), NULL, &s), -EINVAL);
    assert_string_equal(boot_error(), "Settings.json: rosetta is for Linux guests (it runs x86-64 Linux binaries)");
}

static void test_display_reconfigure(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "reconf-off", 1);
    static const char *fmt = "{\"version\":1,\"os\":\"macos\",\"mac\":\"52:54:00:12:34:56\","
                             "\"display\":{\"width\":1440,\"height\":900,\"ppi\":144,"
                             "\"reconfigure\":%s}}";
    char json[512];
    snprintf(json, sizeof json, fmt, "false");
    fx_settings(&f, json);
    assert_int_equal(f.s.display_reconfigure, BOOT_RECONFIGURE_OFF);
    f.o.gui = 1;
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    HAS("setCapturesSystemKeys: YES]");
    LACKS("setAutomaticallyReconfiguresDisplay:");
    fx_done(&f);

    /* asked for on a macOS 13 host: refused, nothing made */
    fx_init(&f, "reconf-on-13", 1);
    oc_record_host(13);
    snprintf(json, sizeof json, fmt, "true");
    fx_settings(&f, json);
    f.o.gui = 1;
    refused_before_build(&f, "display.reconfigure needs macOS 14 or later (VZVirtualMachineView's "
                             "automaticallyReconfiguresDisplay); set it to auto or off here");
    fx_done(&f);

    /* without --gui there is no window, so nothing to refuse */
    fx_init(&f, "reconf-on-13-headless", 1);
    oc_record_host(13);
    fx_settings(&f, json);
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    fx_done(&f);
}

/* What a saved state is bound to changes with every device set change:
 * the settings' hash (config-hash) and the driver's device line. A
 * default written out changes neither, nor does the window's setting. */
static void test_device_bindings(void **state)
{
    (void)state;
    static const char *const variants[] = {
        "\"disk\":{\"bus\":\"nvme\"}",
        "\"disk\":{\"nbd\":\"nbd://127.0.0.1/disk\"}",
        "\"disk\":{\"caching\":\"uncached\"}",
        "\"disk\":{\"sync\":\"none\"}",
        "\"disks\":[{\"file\":\"Data.img\"}]",
        "\"disks\":[{\"file\":\"Data.img\",\"bus\":\"usb\"}]",
        "\"rosetta\":{\"tag\":\"rosetta\"}",
    };
    fx f;
    char base_hash[65], hash[65], base_dev[512], dev[512];
    fx_init(&f, "bindings", 0);
    sparse_file(in(&f, f.bundle, "Data.img"), 1 << 20);
    fx_settings(&f, LINUX_JSON);
    boot_settings_config_hash(&f.s, base_hash);
    assert_int_equal(f.d->devices(&f.s, base_dev, sizeof base_dev), 0);
    /* the line of settings without the new devices is what it was */
    assert_string_equal(base_dev, "vz1 platform=generic disk=virtio-blk net=virtio-nat "
                                  "serial=virtio-console:file entropy=virtio keyboard=none "
                                  "pointer=none graphics=none fs=virtio-fs");
    boot_settings_free(&f.s);
    fx_linux_with(&f, "\"disk\":{\"bus\":\"virtio\",\"caching\":\"cached\",\"sync\":\"full\"}");
    boot_settings_config_hash(&f.s, hash);
    assert_string_equal(hash, base_hash);
    /* the window's setting is not the VM's */
    char display_hash[65];
    boot_settings_free(&f.s);
    fx_linux_with(&f, "\"display\":{\"width\":1024,\"height\":768}");
    boot_settings_config_hash(&f.s, display_hash);
    boot_settings_free(&f.s);
    fx_linux_with(&f, "\"display\":{\"width\":1024,\"height\":768,\"reconfigure\":false}");
    boot_settings_config_hash(&f.s, hash);
    assert_string_equal(hash, display_hash);
    for (size_t i = 0; i < sizeof variants / sizeof *variants; i++) {
        boot_settings_free(&f.s);
        fx_linux_with(&f, variants[i]);
        boot_settings_config_hash(&f.s, hash);
        if (!strcmp(hash, base_hash))
            fail_msg("%s does not change the configuration hash", variants[i]);
    }
    boot_settings_free(&f.s);
    fx_linux_with(&f, "\"disk\":{\"bus\":\"nvme\"},\"disks\":[{\"file\":\"Data.img\",\"bus\":\"usb\"}],"
                      "\"rosetta\":{\"tag\":\"rosetta\"}");
    assert_int_equal(f.d->devices(&f.s, dev, sizeof dev), 0);
    assert_string_equal(dev, "vz1 platform=generic disk=nvme net=virtio-nat serial=virtio-console:file "
                             "entropy=virtio keyboard=none pointer=none graphics=none fs=virtio-fs "
                             "disks=usb-mass-storage rosetta=virtio-fs");
    fx_done(&f);
}

static void test_gui_window(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "gui", 1);
    fx_settings(&f, MACOS_JSON);
    f.o.gui = 1;
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    if (getenv("VZ_TRANSCRIPT"))
        fprintf(stderr, "--- gui ---\n%s---\n", oc_record_transcript());
    HAS("+[NSApplication sharedApplication] -> NSApplication#");
    HAS("setActivationPolicy: 0] -> YES");
    HAS("finishLaunching]");
    HAS("+[VZVirtualMachineView alloc] -> VZVirtualMachineView#");
    HAS("setVirtualMachine: VZVirtualMachine#");
    HAS("setCapturesSystemKeys: YES]");
    HAS("setAutomaticallyReconfiguresDisplay: YES]");
    HAS("+[NSViewController new] -> NSViewController#");
    HAS("setView: VZVirtualMachineView#");
    HAS("+[NSWindow windowWithContentViewController: NSViewController#");
    HAS("setReleasedWhenClosed: NO]");
    HAS("setContentSize: NSMakeSize(720, 450)]"); /* 1440x900 at 144 ppi: Retina points */
    HAS("setTitle: \"strata: bundle\"]");
    HAS("center]");
    HAS("makeKeyAndOrderFront: nil]");
    HAS("activateIgnoringOtherApps: YES]");
    /* the view shows the VM before it starts */
    BEFORE("setVirtualMachine: VZVirtualMachine#", "startWithCompletionHandler:");
    BEFORE("initWithConfiguration: VZVirtualMachineConfiguration#", "setVirtualMachine:");
    /* the supervisor's waits serve the window's events */
    f.d->wait(f.vm, 5);
    HAS("# NSApp: serving window events on the main thread");
    f.d->release(f.vm);
    f.vm = NULL;
    HAS("-[NSWindow#");
    HAS("close]");
    fx_done(&f);

    /* macOS 13: no display reconfiguration, the rest as before */
    fx_init(&f, "gui-13", 1);
    fx_settings(&f, MACOS_JSON);
    f.o.gui = 1;
    oc_record_host(13);
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    HAS("setCapturesSystemKeys: YES]");
    LACKS("setAutomaticallyReconfiguresDisplay:");
    fx_done(&f);

    /* without --gui: no window, and the waits only sleep */
    fx_init(&f, "no-gui", 1);
    fx_settings(&f, MACOS_JSON);
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    f.d->wait(f.vm, 5);
    LACKS("NSApplication");
    LACKS("NSApp:");
    fx_done(&f);

    /* a Linux guest gets a virtio GPU, a USB keyboard and pointer, and
     * runs without save/restore (a resume would need them too) */
    fx_init(&f, "gui-linux", 0);
    fx_settings(&f, LINUX_JSON);
    f.o.gui = 1;
    f.o.suspendable = 1;
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    HAS("+[VZVirtioGraphicsDeviceConfiguration new] -> VZVirtioGraphicsDeviceConfiguration#");
    HAS("initWithWidthInPixels: 1920 heightInPixels: 1200] -> VZVirtioGraphicsScanoutConfiguration#");
    HAS("setScanouts: @[VZVirtioGraphicsScanoutConfiguration#");
    HAS("setGraphicsDevices: @[VZVirtioGraphicsDeviceConfiguration#");
    HAS("setKeyboards: @[VZUSBKeyboardConfiguration#");
    HAS("setPointingDevices: @[VZUSBScreenCoordinatePointingDeviceConfiguration#");
    LACKS("VZMacKeyboardConfiguration"); /* the Mac devices are for macOS guests */
    LACKS("VZMacTrackpadConfiguration");
    HAS("setVirtualMachine: VZVirtualMachine#");
    HAS("setContentSize: NSMakeSize(1920, 1200)]");
    LACKS("validateSaveRestoreSupportWithError:");
    assert_non_null(strstr(g_notes, "can't be suspended: --gui gives a Linux guest a display"));
    fx_done(&f);

    /* ... and without --gui, none of that */
    fx_init(&f, "no-gui-linux", 0);
    fx_settings(&f, LINUX_JSON);
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    LACKS("VZVirtioGraphicsDeviceConfiguration");
    LACKS("setKeyboards:");
    fx_done(&f);
}

/* an exception raised where the driver calls AppKit or the framework on
 * its own thread (not through the VM's queue) is an error too: the window,
 * the window's event loop, a new EFI variable store, the steps of a macOS
 * create. Without the guard the stand-in reports it uncaught and aborts. */
static void test_exceptions_off_the_queue(void **state)
{
    (void)state;
    fx f;
    boot_vm *vm = NULL;
    fx_init(&f, "raise-window", 1);
    fx_settings(&f, MACOS_JSON);
    f.o.gui = 1;
    oc_record_raise("windowWithContentViewController:", "contentViewController has no view");
    assert_int_equal(f.d->start(&f.o, &vm), -EIO);
    assert_null(vm);
    assert_string_equal(boot_error(), "opening the VM's window: an Objective-C exception was raised: "
                                      "NSInvalidArgumentException: contentViewController has no view");
    LACKS("startWithCompletionHandler:");
    HAS("dispatch_release(dispatch_queue#"); /* the VM made before it is released */
    LACKS("!! ");
    oc_record_reset(); /* unwound C frames leak, as on a Mac: not checked */
    boot_settings_free(&f.s);

    /* the event loop: one event's exception is reported, the loop goes on */
    fx_init(&f, "raise-event", 1);
    fx_settings(&f, MACOS_JSON);
    f.o.gui = 1;
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    oc_record_raise("sendEvent:", "-[NSView keyDown:]: unrecognized selector");
    f.d->wait(f.vm, 5);
    assert_non_null(strstr(g_notes, "the window's event handling raised NSInvalidArgumentException: "
                                    "-[NSView keyDown:]: unrecognized selector; that event was dropped"));
    g_notes[0] = 0;
    f.d->wait(f.vm, 5);
    assert_string_equal(g_notes, "");
    assert_int_equal(f.d->alive(f.vm), 1);
    fx_done(&f);

    fx_init(&f, "raise-efivars", 0);
    char *path = in(&f, f.dir, "efivars-raise");
    oc_record_raise("initCreatingVariableStoreAtURL:options:error:", "url must be a file URL");
    assert_int_equal(f.d->create_efi_vars(path), -EIO);
    assert_non_null(strstr(boot_error(), "efivars-raise: creating an EFI variable store: an "
                                         "Objective-C exception was raised: NSInvalidArgumentException: "
                                         "url must be a file URL"));
    LACKS("!! ");
    oc_record_reset();

    static const struct {
        const char *sel, *what;
    } create_steps[] = {
        {"buildVersion", "reading the restore image's build"},
        {"mostFeaturefulSupportedConfiguration", "reading what the restore image asks of this Mac"},
        {"initCreatingStorageAtURL:hardwareModel:options:error:",
         "writing the new VM's identity and storage"},
    };
    for (size_t i = 0; i < sizeof create_steps / sizeof create_steps[0]; i++) {
        boot_macos_opts o;
        progress_log pl;
        char name[64];
        snprintf(name, sizeof name, "raise-create-%zu", i);
        fx_macos_create(&f, name, &o, &pl);
        oc_record_raise(create_steps[i].sel, "an unexpected argument");
        assert_int_equal(f.d->create_macos(&o), -EIO);
        assert_non_null(strstr(boot_error(), create_steps[i].what));
        assert_non_null(strstr(boot_error(), "NSInvalidArgumentException: an unexpected argument"));
        LACKS("installWithCompletionHandler:");
        HAS("dispatch_release(dispatch_queue#"); /* the install's queue */
        LACKS("!! ");
        oc_record_reset();
    }
}

/* lines holding needle strictly between lines from and to */
static int count_between(const char *needle, int from, int to)
{
    int n = 0;
    for (int at = line_of_from(needle, from + 1, 0); at >= 0 && at < to;
         at = line_of_from(needle, at + 1, 0))
        n++;
    return n;
}

/* With a window, the main thread serves its events while it waits for the
 * framework (a start, a save), instead of blocking on a semaphore for up
 * to minutes with the window frozen; the VM is driven on its queue all the
 * same. Without a window the wait still blocks. */
static void test_gui_serves_events_while_waiting(void **state)
{
    (void)state;
    fx f;
    const char *serving_start = "# NSApp: window events served while startWithCompletionHandler: is pending";
    fx_init(&f, "gui-serving", 1);
    fx_settings(&f, MACOS_JSON);
    f.o.gui = 1;
    f.o.suspendable = 1;
    oc_record_delay("startWithCompletionHandler:", 200);
    oc_record_raise("sendEvent:", "a view's handler failed");
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    if (getenv("VZ_TRANSCRIPT"))
        fprintf(stderr, "--- gui start, served ---\n%s---\n", oc_record_transcript());
    int sent = line_of("startWithCompletionHandler: ^(NSError *)]");
    int done = line_of("^ startWithCompletionHandler: completion(nil)");
    assert_true(sent > 0 && done > sent);
    int served = count_between(serving_start, sent, done);
    if (served < 3)
        fail_msg("%d event slices served while the start was pending (at least 3 of 25 ms in "
                 "200 ms)\n%s", served, oc_record_transcript());
    assert_int_equal(count_between(serving_start, done, lines()), 0);
    /* an event whose handler raised is reported; the start went on */
    assert_non_null(strstr(g_notes, "the window's event handling raised NSInvalidArgumentException: "
                                    "a view's handler failed; that event was dropped"));

    /* a save moves the guest's memory: the window is served meanwhile too */
    assert_int_equal(f.d->savable(f.vm), 1);
    assert_int_equal(f.d->pause(f.vm), 0);
    oc_record_delay("saveMachineStateToURL:completionHandler:", 150);
    assert_int_equal(f.d->save(f.vm, in(&f, f.bundle, "SaveFile.vzvmsave")), 0);
    int save = line_of("saveMachineStateToURL: url(");
    int saved = line_of("^ saveMachineStateToURL:completionHandler: completion(nil)");
    assert_true(count_between("# NSApp: window events served while saveMachineStateToURL:completionHandler: "
                              "is pending", save, saved) >= 2);
    fx_done(&f);

    /* no window: nothing to serve, the wait blocks as before */
    fx_init(&f, "no-gui-blocking", 1);
    fx_settings(&f, MACOS_JSON);
    oc_record_delay("startWithCompletionHandler:", 100);
    assert_int_equal(f.d->start(&f.o, &f.vm), 0);
    HAS("^ startWithCompletionHandler: completion(nil)");
    LACKS("window events served");
    LACKS("NSApp:");
    fx_done(&f);
}

static int setup_root(void **state)
{
    (void)state;
    return test_root_make(g_root, sizeof g_root, "test_vz");
}

static int teardown_root(void **state)
{
    (void)state;
    test_root_remove(g_root);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_driver_table),
        cmocka_unit_test(test_macos_cold_start),
        cmocka_unit_test(test_macos_resume),
        cmocka_unit_test(test_suspend),
        cmocka_unit_test(test_save_failure_leaves_nothing),
        cmocka_unit_test(test_linux_start),
        cmocka_unit_test(test_linux_efi),
        cmocka_unit_test(test_start_failure),
        cmocka_unit_test(test_save_restore_unsupported),
        cmocka_unit_test(test_old_macos_cannot_suspend),
        cmocka_unit_test(test_linux_savable),
        cmocka_unit_test(test_devices),
        cmocka_unit_test(test_input_devices_by_guest),
        cmocka_unit_test(test_exceptions),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_handlers_run_later),
        cmocka_unit_test(test_compressed_kernel),
        cmocka_unit_test(test_oracle),
        cmocka_unit_test(test_validate_refused),
        cmocka_unit_test(test_restore_refused),
        cmocka_unit_test(test_missing_bundle_files),
        cmocka_unit_test(test_shared_folders_one_tag),
        cmocka_unit_test(test_graceful_stop),
        cmocka_unit_test(test_refused_graceful_stop),
        cmocka_unit_test(test_release_stops_a_running_vm),
        cmocka_unit_test(test_create_macos),
        cmocka_unit_test(test_create_macos_sizes_from_image),
        cmocka_unit_test(test_create_macos_refused),
        cmocka_unit_test(test_latest_restore_image),
        cmocka_unit_test(test_create_efi_vars),
        cmocka_unit_test(test_usb_installer),
        cmocka_unit_test(test_gui_window),
        cmocka_unit_test(test_exceptions_off_the_queue),
        cmocka_unit_test(test_gui_serves_events_while_waiting),
        cmocka_unit_test(test_nvme_disk),
        cmocka_unit_test(test_nbd_disk),
        cmocka_unit_test(test_lazy_nbd),
        cmocka_unit_test(test_extra_disks),
        cmocka_unit_test(test_rosetta),
        cmocka_unit_test(test_display_reconfigure),
        cmocka_unit_test(test_device_bindings),
    };
    return cmocka_run_group_tests_name("vz driver (recorded)", tests, setup_root, teardown_root);
}
