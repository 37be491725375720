/*
 * The vz driver: Apple's Virtualization.framework, from C through the
 * Objective-C runtime (boot/objc.h). See boot/vz.h.
 *
 * start() builds the whole VZVirtualMachineConfiguration from the bundle
 * and its settings, validates it, makes a VZVirtualMachine on a serial
 * queue of its own and starts it, or restores its saved state and resumes
 * it. Save/restore support is checked, never assumed: a VM that may be
 * suspended is configured for it only where the host has the selectors
 * (on the VM class and the configuration) and
 * validateSaveRestoreSupportWithError: accepts the configuration; else it
 * runs without, and says so. Every message to the VM goes through its
 * queue; completion handlers are waited for off it, with a time limit; an
 * Objective-C exception becomes an error. Selectors and their shapes are
 * checked in the tests against tests/vz-sdk/selectors.tsv (Apple's SDK
 * metadata); enum values are the SDK headers'.
 */
#define _GNU_SOURCE

#include "internal.h"
#include "../base/platform.h"
#include "objc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

/* VZVirtualMachineState */
enum { VZ_STATE_STOPPED = 0, VZ_STATE_RUNNING = 1, VZ_STATE_PAUSED = 2, VZ_STATE_ERROR = 3 };
/* VZDiskImageCachingMode */
enum { VZ_CACHE_AUTOMATIC = 0, VZ_CACHE_UNCACHED = 1, VZ_CACHE_CACHED = 2 };
/* VZDiskImageSynchronizationMode */
enum { VZ_SYNC_FULL = 1, VZ_SYNC_FSYNC = 2, VZ_SYNC_NONE = 3 };
/* VZDiskSynchronizationMode (macOS 14: the NBD attachment's) */
enum { VZ_DISK_SYNC_FULL = 0, VZ_DISK_SYNC_NONE = 1 };
/* VZLinuxRosettaAvailability */
enum { VZ_ROSETTA_NOT_SUPPORTED = 0, VZ_ROSETTA_NOT_INSTALLED = 1, VZ_ROSETTA_INSTALLED = 2 };
/* How long VZ's NBD client waits for a reply, in seconds, before it
 * reconnects and sends the request again (Apple's header; tart uses 30,
 * Apple's containerization 5). A lazily served disk answers a read only once
 * its chunk came from the registry, retried with backoff: under 30 s a slow
 * fetch stays latency instead of a reconnect loop. A server that dies is
 * noticed at once (its socket closes), whatever this says. */
#define NBD_TIMEOUT_S 30.0
/* Rosetta's download and install, prompted by macOS */
#define T_ROSETTA 600000u

/* a macOS guest needs a display even when nobody looks at it */
#define DEFAULT_WIDTH 1920
#define DEFAULT_HEIGHT 1200
#define DEFAULT_PPI 80
#define MAX_SHARES 64
#define CONSOLE_LOG ".console.log"

/* How long a completion handler may take, in ms (STRATA_TEST_VZ_TIMEOUT_MS
 * overrides them all, for tests). A restore or save moves the guest's whole
 * memory through the disk. */
#define T_START 120000u
#define T_STATE 60000u /* pause, resume, stop */
#define T_MEMORY 600000u /* save, restore */

struct boot_vm {
    objc_id queue; /* owned serial queue: every message to vm goes through it */
    objc_id vm;    /* owned VZVirtualMachine */
    int savable;   /* configured for save/restore, and validated */
    objc_id window, view; /* owned, with --gui: the NSWindow and its VZVirtualMachineView */
    void (*note)(void *ctx, const char *line); /* the start's, for what the window reports */
    void *note_ctx;
};

static unsigned timeout_ms(unsigned normal)
{
    long v = test_hooks_get()->vz_timeout_ms;
    return v > 0 ? (unsigned)v : normal;
}

/* ---------- the terminal ---------- */

/* The terminal as it was before the console made it raw: put back by
 * release, and by exit() on any other way out (atexit). */
static struct termios tty_saved;
static int tty_raw;

static void tty_restore(void)
{
    if (tty_raw) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &tty_saved);
        tty_raw = 0;
    }
}

static void tty_make_raw(void)
{
    static int registered;
    if (tty_raw || !isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &tty_saved) != 0)
        return;
    if (!registered && atexit(tty_restore) == 0)
        registered = 1;
    /* the guest's console gets every key, as with qemu's stdio console */
    struct termios raw = tty_saved;
    cfmakeraw(&raw);
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) == 0)
        tty_raw = 1;
}

/* "what: the framework's reason", as boot_error() */
static int fail_ns(int err, objc_id nserror, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail_ns(int err, objc_id nserror, const char *fmt, ...)
{
    char head[1024], why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    oc_error_text(nserror, why, sizeof why);
    return boot_fail(err, "%s: %s", head, why);
}

/* step(arg) inside oc_guard, for calls into AppKit and the framework made
 * on the caller's thread rather than through oc_on_queue: an Objective-C
 * exception becomes an error saying what was being done, as boot/objc.h
 * promises, instead of ending the process. */
struct guarded_step {
    int (*step)(void *arg);
    void *arg;
    int rc;
};

static void run_step(void *p)
{
    struct guarded_step *g = p;
    g->rc = g->step(g->arg);
}

static int guarded(int (*step)(void *arg), void *arg, const char *what)
{
    char why[1024];
    struct guarded_step g = {step, arg, 0};
    if (oc_guard(run_step, &g, why, sizeof why) != 0)
        return boot_fail(EIO, "%s: an Objective-C exception was raised: %s", what, why);
    return g.rc;
}

/* ---------- building the configuration ---------- */

/* The first error stops the build: every step does nothing once rc is set,
 * so boot_error() keeps the first message. */
typedef struct {
    const boot_start_opts *o;
    const boot_settings *s;
    int savable; /* being configured for save/restore */
    int rc;
} build;

/* a note to the start's caller */
#define start_note(o, ...) note_send((o)->note, (o)->note_ctx, __VA_ARGS__)

static objc_id need_class(build *b, const char *name)
{
    if (b->rc)
        return NULL;
    objc_id c = oc_class(name);
    if (!c)
        b->rc = boot_fail(ENOTSUP,
                          "Virtualization.framework here has no %s: the vz driver needs macOS 13 "
                          "or later on Apple silicon",
                          name);
    return c;
}

/* [name new], handed to the autorelease pool */
static objc_id make(build *b, const char *name)
{
    objc_id c = need_class(b, name);
    if (!c)
        return NULL;
    objc_id o = oc_send(c, "new");
    if (!o)
        b->rc = boot_fail(EIO, "Virtualization.framework could not make a %s", name);
    return oc_autorelease(o);
}

static objc_id alloc(build *b, const char *name)
{
    objc_id c = need_class(b, name);
    return c ? oc_send(c, "alloc") : NULL;
}

/* [[name alloc] sel a] */
static objc_id alloc_init(build *b, const char *name, const char *sel, objc_id a)
{
    objc_id o = alloc(b, name);
    return o ? oc_send_id(o, sel, a) : NULL;
}

/* An initializer's result, handed to the pool; nil is the error described
 * (the failed init has already freed what alloc made). */
static objc_id inited(build *b, objc_id o, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static objc_id inited(build *b, objc_id o, int err, const char *fmt, ...)
{
    if (b->rc)
        return NULL;
    if (!o) {
        char what[1200];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        b->rc = boot_fail(err, "%s", what);
        return NULL;
    }
    return oc_autorelease(o);
}

static void set(build *b, objc_id obj, const char *sel, objc_id value)
{
    if (!b->rc && obj && value)
        oc_send_void_id(obj, sel, value);
}

static void set_list(build *b, objc_id obj, const char *sel, objc_id *items, size_t n)
{
    if (!b->rc && obj)
        oc_send_void_id(obj, sel, oc_array(items, n));
}

/* dir/name in out; NULL (with the error) if it doesn't fit */
static const char *join(build *b, const char *dir, const char *name, char out[PATH_MAX])
{
    if (b->rc)
        return NULL;
    if ((size_t)snprintf(out, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX) {
        b->rc = boot_fail(ENAMETOOLONG, "%s/%s: path too long", dir, name);
        return NULL;
    }
    return out;
}

/* a bundle file that must be there, with this access */
static const char *bundle_file(build *b, const char *name, int mode, char out[PATH_MAX])
{
    if (!join(b, b->o->bundle_dir, name, out))
        return NULL;
    if (access(out, mode) != 0) {
        b->rc = boot_fail_errno(errno, "%s", out);
        return NULL;
    }
    return out;
}

static objc_id file_data(build *b, const char *path)
{
    objc_id cls = need_class(b, "NSData");
    if (!cls)
        return NULL;
    objc_id d = oc_send_id(cls, "dataWithContentsOfURL:", oc_url(path));
    if (!d)
        b->rc = boot_fail(EIO, "%s: could not read it", path);
    return d;
}

static objc_id mac_platform(build *b)
{
    char path[PATH_MAX];
    objc_id platform = make(b, "VZMacPlatformConfiguration");

    objc_id hw = NULL, data = NULL;
    if (bundle_file(b, "HardwareModel", R_OK, path) && (data = file_data(b, path)))
        hw = inited(b, alloc_init(b, "VZMacHardwareModel", "initWithDataRepresentation:", data),
                    EINVAL, "%s: not a hardware model Virtualization.framework can read", path);
    if (hw && !oc_send_bool(hw, "isSupported"))
        b->rc = boot_fail(ENOTSUP,
                          "%s: this Mac can't run a VM of that hardware model (it needs a newer "
                          "macOS host)",
                          path);
    set(b, platform, "setHardwareModel:", hw);

    objc_id mid = NULL;
    if (bundle_file(b, "MachineIdentifier", R_OK, path) && (data = file_data(b, path)))
        mid = inited(b, alloc_init(b, "VZMacMachineIdentifier", "initWithDataRepresentation:", data),
                     EINVAL, "%s: not a Mac machine identifier Virtualization.framework can read",
                     path);
    set(b, platform, "setMachineIdentifier:", mid);

    objc_id aux = NULL;
    if (bundle_file(b, "AuxiliaryStorage", R_OK | W_OK, path) &&
        (aux = alloc(b, "VZMacAuxiliaryStorage"))) {
        /* initWithURL: since macOS 13; initWithContentsOfURL: before it */
        const char *sel = oc_responds(aux, "initWithURL:") ? "initWithURL:" : "initWithContentsOfURL:";
        aux = inited(b, oc_send_id(aux, sel, oc_url(path)), EINVAL,
                     "%s: not auxiliary storage Virtualization.framework can open", path);
    }
    set(b, platform, "setAuxiliaryStorage:", aux);
    return b->rc ? NULL : platform;
}

/*
 * A Linux guest's identity: VZGenericMachineIdentifier's opaque data, in a
 * file of its own (MachineIdentifier is a Mac's ECID plist, which the store
 * checks as such). Made and kept on the first start: a saved state is
 * restored only into the machine it was saved from.
 */
static objc_id generic_platform(build *b)
{
    char path[PATH_MAX];
    objc_id platform = make(b, "VZGenericPlatformConfiguration");
    objc_id mid = NULL;
    if (!join(b, b->o->bundle_dir, BOOT_GENERIC_ID_FILE, path))
        return NULL;
    if (access(path, F_OK) == 0) {
        objc_id data = file_data(b, path);
        if (data)
            mid = inited(b,
                         alloc_init(b, "VZGenericMachineIdentifier", "initWithDataRepresentation:",
                                    data),
                         EINVAL, "%s: not a generic machine identifier Virtualization.framework can read",
                         path);
    } else if (errno != ENOENT) {
        b->rc = boot_fail_errno(errno, "%s", path);
    } else if ((mid = make(b, "VZGenericMachineIdentifier"))) {
        objc_id data = oc_send(mid, "dataRepresentation");
        if (!data || !oc_send_bool_id_bool(data, "writeToURL:atomically:", oc_url(path), 1))
            b->rc = boot_fail(EIO, "%s: could not write the new machine identifier", path);
    }
    set(b, platform, "setMachineIdentifier:", mid);
    return b->rc ? NULL : platform;
}

/* What a kernel file starts with, if it is compressed: VZLinuxBootLoader
 * takes an uncompressed kernel (arm64: the Image file, not vmlinuz). */
static const char *compressed_kind(const char *path)
{
    unsigned char h[64] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, h, sizeof h) : -1;
    if (fd >= 0)
        close(fd);
    if (n < 8)
        return NULL;
    if (h[0] == 0x1f && h[1] == 0x8b)
        return "gzip";
    if (!memcmp(h, "\xfd" "7zXZ", 6))
        return "xz";
    if (!memcmp(h, "\x28\xb5\x2f\xfd", 4))
        return "zstd";
    if (!memcmp(h, "BZh", 3))
        return "bzip2";
    if (!memcmp(h, "\x04\x22\x4d\x18", 4))
        return "lz4";
    if (h[0] == 'M' && h[1] == 'Z' && !memcmp(h + 4, "zimg", 4))
        return "EFI zboot";
    return NULL;
}

static void linux_kernel(build *b, const char *path)
{
    const char *kind = compressed_kind(path);
    if (kind && !b->rc)
        b->rc = boot_fail(EINVAL,
                          "%s: a %s-compressed kernel; VZLinuxBootLoader needs an uncompressed one "
                          "(on Apple silicon the arm64 Image: e.g. gunzip -c vmlinuz > Image, then "
                          "name Image in boot.kernel)",
                          path, kind);
}

static objc_id make_loader(build *b)
{
    const boot_settings *s = b->s;
    char path[PATH_MAX];
    objc_id loader = NULL;
    if (b->rc)
        return NULL;
    if ((s->os == BOOT_OS_MACOS) != (s->loader == BOOT_LOADER_MACOS)) {
        b->rc = boot_fail(EINVAL, "the macos boot loader is for macOS guests, and only for them");
        return NULL;
    }
    switch (s->loader) {
    case BOOT_LOADER_MACOS:
        loader = make(b, "VZMacOSBootLoader");
        break;
    case BOOT_LOADER_LINUX:
        if (!s->kernel) {
            b->rc = boot_fail(EINVAL, "the linux boot loader needs a kernel");
            return NULL;
        }
        if (bundle_file(b, s->kernel, R_OK, path))
            linux_kernel(b, path);
        if (!b->rc)
            loader = inited(b, alloc_init(b, "VZLinuxBootLoader", "initWithKernelURL:", oc_url(path)),
                            EIO, "Virtualization.framework could not make a VZLinuxBootLoader");
        if (s->initrd && bundle_file(b, s->initrd, R_OK, path))
            set(b, loader, "setInitialRamdiskURL:", oc_url(path));
        if (s->cmdline)
            set(b, loader, "setCommandLine:", oc_str(s->cmdline));
        if (s->cmdline && strstr(s->cmdline, "console=ttyS") && !strstr(s->cmdline, "console=hvc0"))
            start_note(b->o, "boot.cmdline names console=ttyS*: under vz the guest's console is hvc0 "
                       "(add console=hvc0 to see it in %s)", CONSOLE_LOG);
        break;
    case BOOT_LOADER_EFI:
        if (!s->efi_vars) {
            b->rc = boot_fail(EINVAL, "the efi boot loader needs a variable store");
            return NULL;
        }
        loader = make(b, "VZEFIBootLoader");
        objc_id store = NULL;
        if (bundle_file(b, s->efi_vars, R_OK | W_OK, path))
            store = inited(b, alloc_init(b, "VZEFIVariableStore", "initWithURL:", oc_url(path)),
                           EINVAL, "%s: not an EFI variable store Virtualization.framework can open",
                           path);
        set(b, loader, "setVariableStore:", store);
        break;
    default:
        b->rc = boot_fail(EINVAL, "unknown boot loader %d", (int)s->loader);
    }
    return b->rc ? NULL : loader;
}

/* The device a disk attachment is on: virtio-blk, NVMe (macOS 14, Linux
 * guests) or USB mass storage (macOS 13). The host's version is checked
 * before the build (newer_than_host). */
static objc_id disk_device(build *b, boot_bus bus, objc_id att, const char *what)
{
    static const char *const cls[] = {[BOOT_BUS_VIRTIO] = "VZVirtioBlockDeviceConfiguration",
                                      [BOOT_BUS_NVME] = "VZNVMExpressControllerDeviceConfiguration",
                                      [BOOT_BUS_USB] = "VZUSBMassStorageDeviceConfiguration"};
    if (b->rc || !att)
        return NULL;
    if ((unsigned)bus >= sizeof cls / sizeof cls[0]) {
        b->rc = boot_fail(EINVAL, "%s: unknown bus %d", what, (int)bus);
        return NULL;
    }
    return inited(b, alloc_init(b, cls[bus], "initWithAttachment:", att), EIO,
                  "Virtualization.framework could not make the device of %s", what);
}

/*
 * The boot disk from an NBD export (macOS 14): the URL as Apple's
 * validateURL:error: takes it, a bounded wait for the server, and the
 * guest's flushes passed on (full) or not (none); an NBD disk has no
 * fsync-only mode, nor a host cache of ours to choose.
 */
static objc_id nbd_attachment(build *b)
{
    const boot_settings *s = b->s;
    objc_id cls = need_class(b, "VZNetworkBlockDeviceStorageDeviceAttachment");
    objc_id url_cls = need_class(b, "NSURL");
    if (!cls || !url_cls)
        return NULL;
    if (s->disk_sync == BOOT_SYNC_FSYNC) {
        b->rc = boot_fail(EINVAL, "disk.sync fsync: an NBD disk synchronizes full or none");
        return NULL;
    }
    objc_id err = NULL, url = oc_send_id(url_cls, "URLWithString:", oc_str(s->disk_nbd));
    if (!url || !oc_send_bool_id_err(cls, "validateURL:error:", url, &err)) {
        b->rc = fail_ns(EINVAL, err, "disk.nbd %s: not an NBD URL Virtualization.framework takes",
                        s->disk_nbd);
        return NULL;
    }
    objc_id att = oc_send_id_f64_bool_i64_err(
        oc_send(cls, "alloc"), "initWithURL:timeout:forcedReadOnly:synchronizationMode:error:", url,
        NBD_TIMEOUT_S, 0, s->disk_sync == BOOT_SYNC_NONE ? VZ_DISK_SYNC_NONE : VZ_DISK_SYNC_FULL, &err);
    if (!att) {
        b->rc = fail_ns(EIO, err, "disk.nbd %s: Virtualization.framework can't attach it", s->disk_nbd);
        return NULL;
    }
    return oc_autorelease(att);
}

/* The extra disks (settings.disks): bundle images with the boot disk's
 * caching and synchronization modes, each on its bus; into devs, counted. */
static size_t extra_disks(build *b, objc_id *devs)
{
    const boot_settings *s = b->s;
    size_t n = 0;
    for (size_t i = 0; i < s->ndisks && i < BOOT_MAX_DISKS && !b->rc; i++) {
        static const int64_t caching[] = {[BOOT_CACHE_AUTOMATIC] = VZ_CACHE_AUTOMATIC,
                                          [BOOT_CACHE_CACHED] = VZ_CACHE_CACHED,
                                          [BOOT_CACHE_UNCACHED] = VZ_CACHE_UNCACHED};
        static const int64_t sync[] = {[BOOT_SYNC_FULL] = VZ_SYNC_FULL, [BOOT_SYNC_FSYNC] = VZ_SYNC_FSYNC,
                                       [BOOT_SYNC_NONE] = VZ_SYNC_NONE};
        const boot_disk *d = &s->disks[i];
        char path[PATH_MAX];
        if (!bundle_file(b, d->file, d->read_only ? R_OK : R_OK | W_OK, path))
            break;
        objc_id err = NULL, att = alloc(b, "VZDiskImageStorageDeviceAttachment");
        if (att)
            att = oc_send_id_bool_i64_i64_err(att, "initWithURL:readOnly:cachingMode:synchronizationMode:error:",
                                              oc_url(path), d->read_only, caching[s->disk_caching],
                                              sync[s->disk_sync], &err);
        if (!att && !b->rc)
            b->rc = fail_ns(EIO, err, "%s: Virtualization.framework can't attach it as a disk", path);
        objc_id dev = disk_device(b, d->bus, oc_autorelease(att), d->file);
        if (dev)
            devs[n++] = dev;
    }
    return b->rc ? 0 : n;
}

/* Rosetta's directory share under its tag (Linux guests; macOS 13 on Apple
 * silicon): the guest mounts it with virtiofs and registers it with
 * binfmt_misc. Its availability was checked before (rosetta_ready). */
static objc_id rosetta_share(build *b)
{
    const char *tag = b->s->rosetta;
    if (b->rc || !tag)
        return NULL;
    objc_id err = NULL, share = alloc(b, "VZLinuxRosettaDirectoryShare");
    if (share)
        share = oc_send_err(share, "initWithError:", &err);
    if (!share && !b->rc) {
        b->rc = fail_ns(ENOTSUP, err, "rosetta: Virtualization.framework can't share Rosetta");
        return NULL;
    }
    oc_autorelease(share);
    objc_id dev = inited(b, alloc_init(b, "VZVirtioFileSystemDeviceConfiguration", "initWithTag:", oc_str(tag)),
                         EIO, "rosetta tag '%s': Virtualization.framework refused it", tag);
    set(b, dev, "setShare:", share);
    return b->rc ? NULL : dev;
}

static objc_id storage(build *b)
{
    static const int64_t caching[] = {[BOOT_CACHE_AUTOMATIC] = VZ_CACHE_AUTOMATIC,
                                      [BOOT_CACHE_CACHED] = VZ_CACHE_CACHED,
                                      [BOOT_CACHE_UNCACHED] = VZ_CACHE_UNCACHED};
    static const int64_t sync[] = {[BOOT_SYNC_FULL] = VZ_SYNC_FULL,
                                   [BOOT_SYNC_FSYNC] = VZ_SYNC_FSYNC,
                                   [BOOT_SYNC_NONE] = VZ_SYNC_NONE};
    const boot_settings *s = b->s;
    char path[PATH_MAX];
    if (b->rc)
        return NULL;
    if ((unsigned)s->disk_caching >= sizeof caching / sizeof caching[0] ||
        (unsigned)s->disk_sync >= sizeof sync / sizeof sync[0]) {
        b->rc = boot_fail(EINVAL, "unknown disk caching or sync mode");
        return NULL;
    }
    if (s->disk_nbd)
        return disk_device(b, s->disk_bus, nbd_attachment(b), "the boot disk");
    if (!bundle_file(b, "Disk.img", R_OK | W_OK, path))
        return NULL;
    objc_id att = alloc(b, "VZDiskImageStorageDeviceAttachment"), err = NULL;
    if (!att)
        return NULL;
    att = oc_send_id_bool_i64_i64_err(att, "initWithURL:readOnly:cachingMode:synchronizationMode:error:",
                                      oc_url(path), 0, caching[s->disk_caching], sync[s->disk_sync],
                                      &err);
    if (!att) {
        b->rc = fail_ns(EIO, err, "%s: Virtualization.framework can't attach it as a disk", path);
        return NULL;
    }
    oc_autorelease(att);
    return disk_device(b, s->disk_bus, att, "the boot disk");
}

/*
 * Installer media (settings.installer, an ISO in the bundle) as a USB
 * mass storage device, read-only: macOS 13's VZUSBMassStorageDevice-
 * Configuration, the way Apple's Linux-installer sample attaches an ISO.
 */
static objc_id installer_media(build *b)
{
    const char *iso = b->s->installer;
    char path[PATH_MAX];
    if (b->rc || !iso)
        return NULL;
    if (!oc_class("VZUSBMassStorageDeviceConfiguration")) {
        b->rc = boot_fail(ENOTSUP, "installer media %s: attaching it as USB mass storage needs "
                                   "macOS 13 or later",
                          iso);
        return NULL;
    }
    if (!bundle_file(b, iso, R_OK, path))
        return NULL;
    objc_id att = alloc(b, "VZDiskImageStorageDeviceAttachment"), err = NULL;
    if (!att)
        return NULL;
    att = oc_send_id_bool_err(att, "initWithURL:readOnly:error:", oc_url(path), 1, &err);
    if (!att) {
        b->rc = fail_ns(EIO, err, "%s: Virtualization.framework can't attach it as installer media", path);
        return NULL;
    }
    oc_autorelease(att);
    return inited(b, alloc_init(b, "VZUSBMassStorageDeviceConfiguration", "initWithAttachment:", att),
                  EIO, "Virtualization.framework could not make the USB installer device");
}

static objc_id network(build *b)
{
    const boot_settings *s = b->s;
    objc_id net = make(b, "VZVirtioNetworkDeviceConfiguration");
    set(b, net, "setAttachment:", make(b, "VZNATNetworkDeviceAttachment"));
    if (s->mac[0] && !b->rc) {
        objc_id mac = inited(b, alloc_init(b, "VZMACAddress", "initWithString:", oc_str(s->mac)),
                             EINVAL, "mac %s: not an address Virtualization.framework takes", s->mac);
        set(b, net, "setMACAddress:", mac);
    }
    return b->rc ? NULL : net;
}

/*
 * The guest's console (hvc0). A VM that may be saved always writes it to
 * runtime_dir/.console.log through a VZFileSerialPortAttachment, as Lima
 * does: a restore needs the attachment type it was saved with. Only a VM
 * that can't be saved puts it on the terminal (a file-handle attachment).
 */
static objc_id serial_port(build *b)
{
    char path[PATH_MAX];
    objc_id port = make(b, "VZVirtioConsoleDeviceSerialPortConfiguration");
    objc_id att = NULL, err = NULL;
    if (b->rc)
        return NULL;
    if (b->o->console && !b->savable) {
        objc_id fh = need_class(b, "NSFileHandle");
        objc_id in = fh ? oc_send(fh, "fileHandleWithStandardInput") : NULL;
        objc_id out = fh ? oc_send(fh, "fileHandleWithStandardOutput") : NULL;
        att = alloc(b, "VZFileHandleSerialPortAttachment");
        if (att)
            att = inited(b, oc_send_id_id(att, "initWithFileHandleForReading:fileHandleForWriting:", in, out),
                         EIO, "Virtualization.framework could not attach the console");
    } else if (join(b, b->o->runtime_dir, CONSOLE_LOG, path)) {
        /* a cold boot starts a new log; a restored VM goes on with its own */
        int flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (b->o->restore_state ? 0 : O_TRUNC);
        int fd = open(path, flags, 0644);
        if (fd < 0) {
            b->rc = boot_fail_errno(errno, "%s", path);
            return NULL;
        }
        close(fd);
        att = alloc(b, "VZFileSerialPortAttachment");
        if (att)
            att = oc_send_id_bool_err(att, "initWithURL:append:error:", oc_url(path), 1, &err);
        if (!att && !b->rc)
            b->rc = fail_ns(EIO, err, "%s: Virtualization.framework can't write the console there", path);
        oc_autorelease(att);
    }
    set(b, port, "setAttachment:", att);
    return b->rc ? NULL : port;
}

static objc_id graphics(build *b)
{
    const boot_settings *s = b->s;
    objc_id gfx = make(b, "VZMacGraphicsDeviceConfiguration");
    objc_id disp = alloc(b, "VZMacGraphicsDisplayConfiguration");
    if (!disp)
        return NULL;
    disp = inited(b,
                  oc_send_i64_i64_i64(disp, "initWithWidthInPixels:heightInPixels:pixelsPerInch:",
                                      s->display_width ? s->display_width : DEFAULT_WIDTH,
                                      s->display_height ? s->display_height : DEFAULT_HEIGHT,
                                      s->display_ppi ? s->display_ppi : DEFAULT_PPI),
                  EINVAL, "display %ux%u at %u ppi: Virtualization.framework refused it",
                  s->display_width, s->display_height, s->display_ppi);
    if (disp)
        set_list(b, gfx, "setDisplays:", &disp, 1);
    return b->rc ? NULL : gfx;
}

/* the last component of path (without trailing slashes), as [p, p+len) */
static const char *base_name(const char *path, size_t *len)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    size_t start = n;
    while (start > 0 && path[start - 1] != '/')
        start--;
    *len = n - start;
    return path + start;
}

/*
 * One virtio-fs device per tag. A tag with one folder shares that folder
 * itself (VZSingleDirectoryShare: the guest mounts the tag and sees the
 * folder, as with the qemu driver); a tag given several folders shares them
 * side by side under their base names (VZMultipleDirectoryShare).
 */
static size_t shares(build *b, objc_id *devs)
{
    const boot_settings *s = b->s;
    size_t ndevs = 0;
    if (b->rc || !s->nshares)
        return 0;
    if (s->nshares > MAX_SHARES) {
        b->rc = boot_fail(EINVAL, "at most %d shared folders", MAX_SHARES);
        return 0;
    }
    objc_id fs = need_class(b, "VZVirtioFileSystemDeviceConfiguration");
    for (size_t i = 0; i < s->nshares && !b->rc; i++) {
        const char *tag = s->shares[i].tag;
        int seen = 0;
        for (size_t j = 0; j < i; j++)
            seen |= !strcmp(s->shares[j].tag, tag);
        if (seen)
            continue;
        objc_id err = NULL, ns_tag = oc_str(tag);
        if (!oc_send_bool_id_err(fs, "validateTag:error:", ns_tag, &err)) {
            b->rc = fail_ns(EINVAL, err, "shared folder tag '%s'", tag);
            break;
        }
        objc_id dirs[MAX_SHARES], keys[MAX_SHARES];
        const char *names[MAX_SHARES];
        size_t lens[MAX_SHARES], k = 0;
        for (size_t j = i; j < s->nshares && !b->rc; j++) {
            const boot_share *sh = &s->shares[j];
            struct stat st;
            if (strcmp(sh->tag, tag))
                continue;
            if (stat(sh->path, &st) < 0) {
                b->rc = boot_fail_errno(errno, "shared folder %s", sh->path);
                break;
            }
            if (!S_ISDIR(st.st_mode)) {
                b->rc = boot_fail(ENOTDIR, "shared folder %s: not a directory", sh->path);
                break;
            }
            objc_id d = alloc(b, "VZSharedDirectory");
            if (d)
                d = oc_send_id_bool(d, "initWithURL:readOnly:", oc_url(sh->path), sh->read_only);
            dirs[k] = inited(b, d, EIO, "shared folder %s: Virtualization.framework refused it",
                             sh->path);
            names[k] = base_name(sh->path, &lens[k]);
            k++;
        }
        if (b->rc)
            break;
        objc_id share;
        if (k == 1) {
            share = inited(b, alloc_init(b, "VZSingleDirectoryShare", "initWithDirectory:", dirs[0]),
                           EIO, "shared folder %s: Virtualization.framework refused it",
                           s->shares[i].path);
        } else {
            objc_id multi = need_class(b, "VZMultipleDirectoryShare");
            for (size_t x = 0; x < k && !b->rc; x++) {
                char name[1024];
                snprintf(name, sizeof name, "%.*s", (int)lens[x], names[x]);
                for (size_t y = 0; y < x; y++)
                    if (lens[y] == lens[x] && !memcmp(names[y], names[x], lens[x]))
                        b->rc = boot_fail(EINVAL,
                                          "shared folders with tag '%s' have two folders named '%s'",
                                          tag, name);
                keys[x] = oc_str(name);
                if (!b->rc && !oc_send_bool_id_err(multi, "validateName:error:", keys[x], &err))
                    b->rc = fail_ns(EINVAL, err, "shared folder name '%s' (tag '%s')", name, tag);
            }
            share = b->rc ? NULL
                          : inited(b,
                                   alloc_init(b, "VZMultipleDirectoryShare", "initWithDirectories:",
                                              oc_dict(keys, dirs, k)),
                                   EIO, "shared folders with tag '%s': Virtualization.framework refused them",
                                   tag);
        }
        objc_id dev = inited(b, alloc_init(b, "VZVirtioFileSystemDeviceConfiguration", "initWithTag:", ns_tag),
                             EIO, "shared folder tag '%s': Virtualization.framework refused it", tag);
        set(b, dev, "setShare:", share);
        if (!b->rc)
            devs[ndevs++] = dev;
    }
    return b->rc ? 0 : ndevs;
}

/*
 * Keyboards and pointing devices, by the guest and not by the host's SDK.
 *
 * Apple's headers: VZMacKeyboardConfiguration (a macOS 14 host's) and
 * VZMacTrackpadConfiguration (macOS 13's) are "only recognized by virtual
 * machines running macOS 13.0 and later"; to support older guests too,
 * configure both the Mac device and the USB one (VZUSBKeyboardConfiguration,
 * VZUSBScreenCoordinatePointingDeviceConfiguration) and the guest uses what
 * it recognises. (Code-Hex/vz's comment and issue 18 say macOS 14 for the
 * keyboard; the header says 13.0, and this follows the header.)
 *
 * Save/restore takes no USB keyboard or pointer: tart's --suspendable
 * configuration has the Mac devices alone. So a VM that may be saved gets
 * the Mac devices alone, and a macOS guest older than 13 - which would then
 * have neither keyboard nor pointer - is never configured for save/restore
 * (cannot_save). Every other macOS VM gets both; a Linux guest (a display
 * only with --gui) gets the USB devices, the Mac ones being for macOS.
 */
#define MAC_INPUT_GUEST_MACOS 13
/* the oldest macOS guest Virtualization.framework runs: what a guest whose
 * version can't be read is taken for */
#define OLDEST_MACOS_GUEST 12

/* The macOS a guest runs, at least: its HardwareModel's MinimumSupportedOS
 * (the hardware model of the restore image it was installed from runs
 * nothing older), or OLDEST_MACOS_GUEST if the file doesn't say. A guest
 * updated in place since is taken for the older one: the cost is a
 * save/restore it could have had, never a keyboard it lacks. */
static int guest_macos_major(const char *bundle_dir)
{
    char path[PATH_MAX];
    store_identity id;
    memset(&id, 0, sizeof id);
    if ((size_t)snprintf(path, sizeof path, "%s/HardwareModel", bundle_dir) >= sizeof path ||
        store_plist_identity(path, "HardwareModel", &id) != 0 || atoi(id.minimum_supported_os) <= 0)
        return OLDEST_MACOS_GUEST;
    return atoi(id.minimum_supported_os);
}

/* the classes of one kind of input device, in order (at most 2) */
static size_t input_classes(int mac_guest, int savable, const char *mac_cls, const char *usb_cls,
                            const char *out[2])
{
    size_t n = 0;
    int mac_device = mac_guest && oc_class(mac_cls);
    if (mac_device)
        out[n++] = mac_cls;
    if (!(mac_device && savable))
        out[n++] = usb_cls;
    return n;
}

static size_t keyboard_classes(int mac_guest, int savable, const char *out[2])
{
    return input_classes(mac_guest, savable, "VZMacKeyboardConfiguration",
                         "VZUSBKeyboardConfiguration", out);
}

static size_t pointer_classes(int mac_guest, int savable, const char *out[2])
{
    return input_classes(mac_guest, savable, "VZMacTrackpadConfiguration",
                         "VZUSBScreenCoordinatePointingDeviceConfiguration", out);
}

/* one device of each class classes() names, made; how many */
static size_t input_devices(build *b, size_t (*classes)(int, int, const char *[2]), objc_id out[2])
{
    const char *names[2];
    size_t n = classes(b->s->os == BOOT_OS_MACOS, b->savable, names);
    for (size_t i = 0; i < n; i++)
        out[i] = make(b, names[i]);
    return b->rc ? 0 : n;
}

/* "A+B": the classes, for the device set a saved state is bound to */
static void class_names(size_t (*classes)(int, int, const char *[2]), int mac_guest, int savable,
                        char *out, size_t len)
{
    const char *names[2];
    size_t n = classes(mac_guest, savable, names);
    snprintf(out, len, "%s%s%s", names[0], n > 1 ? "+" : "", n > 1 ? names[1] : "");
}

/* A macOS guest that may be saved gets no entropy device: it blocked saving
 * on macOS 14 (Tart drops it for --suspendable). Linux guests keep theirs,
 * as Lima's do, and still save. */
static int has_entropy(const boot_settings *s, int savable)
{
    return !(savable && s->os == BOOT_OS_MACOS);
}

/*
 * A Linux guest's display, only with --gui: a virtio GPU with one scanout
 * of the settings' display size, a USB keyboard and a USB pointer that
 * places by screen coordinates (macOS 13; Apple's Linux GUI sample does so).
 */
static objc_id linux_display(build *b)
{
    const boot_settings *s = b->s;
    objc_id gpu = make(b, "VZVirtioGraphicsDeviceConfiguration");
    objc_id scanout = alloc(b, "VZVirtioGraphicsScanoutConfiguration");
    if (!scanout)
        return NULL;
    scanout = inited(b,
                     oc_send_i64_i64(scanout, "initWithWidthInPixels:heightInPixels:",
                                     s->display_width ? s->display_width : DEFAULT_WIDTH,
                                     s->display_height ? s->display_height : DEFAULT_HEIGHT),
                     EINVAL, "display %ux%u: Virtualization.framework refused it", s->display_width,
                     s->display_height);
    if (scanout)
        set_list(b, gpu, "setScanouts:", &scanout, 1);
    return b->rc ? NULL : gpu;
}

static objc_id configuration(build *b)
{
    const boot_settings *s = b->s;
    int mac = s->os == BOOT_OS_MACOS;
    int linux_gui = !mac && b->o->gui;
    objc_id platform = mac ? mac_platform(b) : generic_platform(b);
    objc_id loader = make_loader(b);
    objc_id disks[2 + BOOT_MAX_DISKS] = {storage(b), installer_media(b)};
    size_t ndisks = disks[1] ? 2 : 1;
    ndisks += extra_disks(b, disks + ndisks);
    objc_id net = network(b);
    objc_id rng = has_entropy(s, b->savable) ? make(b, "VZVirtioEntropyDeviceConfiguration") : NULL;
    objc_id serial = serial_port(b);
    objc_id gfx = mac ? graphics(b) : linux_gui ? linux_display(b) : NULL;
    objc_id kbds[2], ptrs[2];
    size_t nkbds = mac || linux_gui ? input_devices(b, keyboard_classes, kbds) : 0;
    size_t nptrs = mac || linux_gui ? input_devices(b, pointer_classes, ptrs) : 0;
    objc_id devs[MAX_SHARES + 1];
    size_t ndevs = shares(b, devs);
    if ((devs[ndevs] = rosetta_share(b)))
        ndevs++;

    objc_id conf = make(b, "VZVirtualMachineConfiguration");
    if (b->rc)
        return NULL;
    set(b, conf, "setPlatform:", platform);
    set(b, conf, "setBootLoader:", loader);
    oc_send_void_u64(conf, "setCPUCount:", s->cpus);
    oc_send_void_u64(conf, "setMemorySize:", s->memory_mib * 1024 * 1024);
    set_list(b, conf, "setStorageDevices:", disks, ndisks);
    set_list(b, conf, "setNetworkDevices:", &net, 1);
    if (rng)
        set_list(b, conf, "setEntropyDevices:", &rng, 1);
    set_list(b, conf, "setSerialPorts:", &serial, 1);
    if (mac || linux_gui) {
        set_list(b, conf, "setGraphicsDevices:", &gfx, 1);
        set_list(b, conf, "setKeyboards:", kbds, nkbds);
        set_list(b, conf, "setPointingDevices:", ptrs, nptrs);
    }
    if (ndevs)
        set_list(b, conf, "setDirectorySharingDevices:", devs, ndevs);

    objc_id err = NULL;
    if (!oc_send_bool_err(conf, "validateWithError:", &err)) {
        b->rc = fail_ns(EINVAL, err, "Virtualization.framework refused the VM's configuration");
        return NULL;
    }
    return conf;
}

/* 1 if this host's framework has save/restore (macOS 14) */
static int host_can_save(void)
{
    objc_id vm = oc_class("VZVirtualMachine"), conf = oc_class("VZVirtualMachineConfiguration");
    return vm && conf && oc_instances_respond(vm, "saveMachineStateToURL:completionHandler:") &&
           oc_instances_respond(vm, "restoreMachineStateFromURL:completionHandler:") &&
           oc_instances_respond(conf, "validateSaveRestoreSupportWithError:");
}

/* Why a macOS guest can't be saved for its input devices, or NULL: a VM
 * that may be saved has the Mac keyboard and trackpad alone (see
 * keyboard_classes), which a guest before macOS 13 doesn't recognise. */
static const char *guest_cannot_save(const boot_start_opts *o)
{
    static _Thread_local char why[160];
    int major = o->settings->os == BOOT_OS_MACOS ? guest_macos_major(o->bundle_dir) : 0;
    if (!major || major >= MAC_INPUT_GUEST_MACOS)
        return NULL;
    snprintf(why, sizeof why,
             "a macOS %d guest (its HardwareModel's minimum) knows only the USB keyboard and "
             "pointer, and a saved state can't hold them",
             major);
    return why;
}

/* Why this host or these settings can't have a savable VM, or NULL. */
static const char *cannot_save(const boot_start_opts *o)
{
    if (!host_can_save())
        return "saving a VM's state needs macOS 14 or later on Apple silicon";
    const char *guest = guest_cannot_save(o); /* reads the HardwareModel: once */
    if (guest)
        return guest;
    if (!o->settings->mac[0])
        return "its settings record no MAC address, and a restore needs the one it was saved with";
    if (o->settings->disk_nbd)
        return "its boot disk is an NBD export, outside the instance, which a saved state can't keep";
    if (o->console && !o->restore_state)
        return "--console puts its console on this terminal, which a saved state can't keep";
    if (o->gui && o->settings->os != BOOT_OS_MACOS)
        return "--gui gives a Linux guest a display, keyboard and pointer, which every resume of "
               "its state would need too";
    return NULL;
}

struct build_call {
    build *b;
    objc_id conf;
    char why[1024]; /* validateSaveRestoreSupportWithError:'s reason */
};

/* Build, and if it is to be savable, validate that too. On the caller's
 * thread, inside oc_guard. */
static void build_checked(void *p)
{
    struct build_call *c = p;
    c->conf = configuration(c->b);
    if (!c->conf || !c->b->savable)
        return;
    objc_id err = NULL;
    if (!oc_send_bool_err(c->conf, "validateSaveRestoreSupportWithError:", &err)) {
        oc_error_text(err, c->why, sizeof c->why);
        c->conf = NULL;
    }
}

/*
 * The configuration, savable where asked and possible. A restore must be
 * savable or it fails; any other VM falls back to a configuration without
 * save/restore, and start_note() says why.
 */
static objc_id checked_configuration(build *b)
{
    const boot_start_opts *o = b->o;
    int must = o->restore_state != NULL;
    const char *no = (o->suspendable || must) ? cannot_save(o) : NULL;
    if (no && must) {
        b->rc = boot_fail(ENOTSUP, "can't restore a saved state here: %s", no);
        return NULL;
    }
    if (no)
        start_note(o, "this VM can't be suspended: %s; it runs without save/restore support", no);
    b->savable = (o->suspendable || must) && !no;
    for (;;) {
        struct build_call c = {.b = b};
        char raised[1024];
        if (oc_guard(build_checked, &c, raised, sizeof raised) != 0) {
            b->rc = boot_fail(EINVAL, "Virtualization.framework raised an exception while the "
                                      "configuration was built: %s", raised);
            return NULL;
        }
        if (c.conf || b->rc)
            return c.conf;
        if (must) {
            b->rc = boot_fail(ENOTSUP, "this VM's configuration can't be restored: %s", c.why);
            return NULL;
        }
        start_note(o, "this VM can't be suspended: Virtualization.framework says %s; it runs without "
                "save/restore support",
             c.why);
        b->savable = 0;
    }
}

/* ---------- what this host's macOS offers ---------- */

/* A device the settings ask for that arrived in a newer macOS than this
 * host's: the reason, one line, or NULL. Checked before anything is built,
 * as the class (or selector) being there, like cannot_save. */
static const char *newer_than_host(const boot_start_opts *o)
{
    const boot_settings *s = o->settings;
    int usb = 0, nvme = s->disk_bus == BOOT_BUS_NVME;
    for (size_t i = 0; i < s->ndisks; i++) {
        usb |= s->disks[i].bus == BOOT_BUS_USB;
        nvme |= s->disks[i].bus == BOOT_BUS_NVME;
    }
    objc_id view = oc_class("VZVirtualMachineView");
    if (nvme && !oc_class("VZNVMExpressControllerDeviceConfiguration"))
        return "an NVMe disk (bus nvme) needs macOS 14 or later (VZNVMExpressControllerDeviceConfiguration)";
    if (s->disk_nbd && !oc_class("VZNetworkBlockDeviceStorageDeviceAttachment"))
        return "an NBD disk (disk.nbd) needs macOS 14 or later (VZNetworkBlockDeviceStorageDeviceAttachment)";
    if (usb && !oc_class("VZUSBMassStorageDeviceConfiguration"))
        return "a USB disk (bus usb) needs macOS 13 or later (VZUSBMassStorageDeviceConfiguration)";
    if (s->rosetta && !oc_class("VZLinuxRosettaDirectoryShare"))
        return "rosetta needs macOS 13 or later on Apple silicon (VZLinuxRosettaDirectoryShare)";
    if (o->gui && s->display_reconfigure == BOOT_RECONFIGURE_ON &&
        !(view && oc_instances_respond(view, "setAutomaticallyReconfiguresDisplay:")))
        return "display.reconfigure needs macOS 14 or later (VZVirtualMachineView's "
               "automaticallyReconfiguresDisplay); set it to auto or off here";
    return NULL;
}

struct rosetta_call {
    int64_t availability;
};

static void rosetta_availability(void *p)
{
    struct rosetta_call *c = p;
    c->availability = oc_send_i64(oc_class("VZLinuxRosettaDirectoryShare"), "availability");
}

/* macOS asks its user to install Rosetta (a download): on its own queue,
 * waited for off it, bounded */
static int install_rosetta(const boot_start_opts *o)
{
    char msg[1024];
    start_note(o, "rosetta: Rosetta is not installed on this Mac; macOS asks to install it");
    objc_id queue = oc_queue("strata.vz.rosetta");
    if (!queue)
        return boot_fail(EIO, "could not make a dispatch queue for Rosetta's install");
    unsigned ms = timeout_ms(T_ROSETTA);
    int rc = oc_send_completion(queue, oc_class("VZLinuxRosettaDirectoryShare"),
                                "installRosettaWithCompletionHandler:", NULL, ms, msg, sizeof msg);
    oc_queue_release(queue);
    if (rc == OC_TIMED_OUT)
        return boot_fail(ETIMEDOUT, "rosetta: Rosetta's install did not finish in %u s", (ms + 999) / 1000);
    if (rc)
        return boot_fail(ENOTSUP, "rosetta: Rosetta was not installed: %s", msg);
    return 0;
}

/* Rosetta, where the settings ask for it: there, or installed now */
static int rosetta_ready(const boot_start_opts *o)
{
    char why[512];
    struct rosetta_call c = {VZ_ROSETTA_NOT_SUPPORTED};
    if (!o->settings->rosetta)
        return 0;
    if (oc_guard(rosetta_availability, &c, why, sizeof why) != 0)
        return boot_fail(EIO, "rosetta: Virtualization.framework raised an exception: %s", why);
    if (c.availability == VZ_ROSETTA_INSTALLED)
        return 0;
    if (c.availability == VZ_ROSETTA_NOT_INSTALLED)
        return install_rosetta(o);
    return boot_fail(ENOTSUP, "rosetta: this Mac can't run Rosetta for Linux (it needs Apple silicon "
                              "and macOS 13 or later)");
}

/* ---------- the running VM ---------- */

struct make_vm {
    objc_id conf, queue, vm;
};

static void make_vm_on_queue(void *p)
{
    struct make_vm *m = p;
    objc_id cls = oc_class("VZVirtualMachine");
    objc_id a = cls ? oc_send(cls, "alloc") : NULL;
    m->vm = a ? oc_send_id_id(a, "initWithConfiguration:queue:", m->conf, m->queue) : NULL;
}

struct state_req {
    objc_id vm;
    int64_t state;
};

static void state_on_queue(void *p)
{
    struct state_req *r = p;
    r->state = oc_send_i64(r->vm, "state");
}

static int64_t vm_state(boot_vm *vm)
{
    char why[512];
    struct state_req r = {.vm = vm->vm, .state = VZ_STATE_STOPPED};
    if (!vm->vm || oc_on_queue(vm->queue, state_on_queue, &r, why, sizeof why) != 0)
        return VZ_STATE_ERROR;
    return r.state;
}

static void release_on_queue(void *p)
{
    oc_release(p);
}

/* what the window's event loop raised: reported, and the loop goes on */
static void window_event_error(void *vm_p, const char *why)
{
    boot_vm *vm = vm_p;
    note_send(vm->note, vm->note_ctx, "the window's event handling raised %s; that event was dropped",
              why);
}

/* Send a completion-handler message to the VM and wait for it, bounded.
 * With a window, this thread (the main one) serves its events while it
 * waits, as Code-Hex/vz's NSApp loop does: a start, or a save or restore
 * of the guest's memory, must not freeze the window for minutes. */
static int vm_call(boot_vm *vm, const char *sel, objc_id arg, unsigned normal_ms, const char *what)
{
    char msg[1024];
    unsigned ms = timeout_ms(normal_ms);
    int rc = vm->window ? oc_send_completion_serving(vm->queue, vm->vm, sel, arg, ms,
                                                     window_event_error, vm, msg, sizeof msg)
                        : oc_send_completion(vm->queue, vm->vm, sel, arg, ms, msg, sizeof msg);
    if (rc == OC_TIMED_OUT)
        return boot_fail(ETIMEDOUT, "%s: Virtualization.framework did not finish %s in %u s", what,
                         sel, (ms + 999) / 1000);
    if (rc)
        return boot_fail(EIO, "%s: %s", what, msg);
    return 0;
}

/* stop at once, whatever boot_error() says meanwhile stays as it was */
static void halt(boot_vm *vm)
{
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", boot_error());
    int64_t st = vm_state(vm);
    if (st != VZ_STATE_STOPPED && st != VZ_STATE_ERROR)
        vm_call(vm, "stopWithCompletionHandler:", NULL, T_STATE, "stop");
    boot_fail(EIO, "%s", keep);
}

/* ---------- the window (--gui) ---------- */

/* NSApplicationActivationPolicyRegular: a Dock icon and a menu bar */
#define NS_ACTIVATION_REGULAR 0

/* the window's size in points: a Retina-density display shows at half */
static double points(unsigned pixels, unsigned ppi)
{
    return ppi >= 144 ? pixels / 2.0 : (double)pixels;
}

static void window_title(build *b, objc_id window)
{
    char title[PATH_MAX + 16];
    size_t n;
    const char *base = base_name(b->o->bundle_dir, &n);
    snprintf(title, sizeof title, "strata: %.*s", (int)n, base);
    set(b, window, "setTitle:", oc_str(title));
}

/* The guest's display follows the window's size (macOS 14): auto where the
 * host has it, on (checked before the start: newer_than_host), off never. */
static void reconfigure_display(objc_id view, boot_reconfigure how)
{
    if (how != BOOT_RECONFIGURE_OFF && oc_responds(view, "setAutomaticallyReconfiguresDisplay:"))
        oc_send_void_bool(view, "setAutomaticallyReconfiguresDisplay:", 1);
}

/*
 * The VM's display in a window of this process: NSApplication (a regular
 * app), a VZVirtualMachineView showing the VM and taking the system keys,
 * inside an NSWindow through an NSViewController. On the main thread, the
 * one that later serves the window's events (vz_wait). The window and view
 * are owned by vm, closed and released with it.
 */
static int open_window(boot_vm *vm, const boot_start_opts *o)
{
    build b = {.o = o, .s = o->settings};
    const boot_settings *s = o->settings;
    objc_id app_cls = need_class(&b, "NSApplication");
    objc_id app = app_cls ? oc_send(app_cls, "sharedApplication") : NULL;
    if (app) {
        oc_send_bool_i64(app, "setActivationPolicy:", NS_ACTIVATION_REGULAR);
        oc_send_void(app, "finishLaunching");
    }
    objc_id view = alloc(&b, "VZVirtualMachineView");
    view = view ? oc_send(view, "init") : NULL;
    if (!view && !b.rc)
        b.rc = boot_fail(EIO, "AppKit could not make the VM's view");
    vm->view = view;
    if (view) {
        oc_send_void_id(view, "setVirtualMachine:", vm->vm);
        oc_send_void_bool(view, "setCapturesSystemKeys:", 1);
        reconfigure_display(view, s->display_reconfigure);
    }
    objc_id vc = make(&b, "NSViewController");
    set(&b, vc, "setView:", view);
    objc_id win_cls = need_class(&b, "NSWindow");
    objc_id window = b.rc ? NULL : oc_send_id(win_cls, "windowWithContentViewController:", vc);
    if (!window && !b.rc)
        b.rc = boot_fail(EIO, "AppKit could not make the VM's window");
    vm->window = oc_retain(window);
    if (b.rc)
        return b.rc;
    /* vm owns it and releases it: closing must not release it too */
    oc_send_void_bool(window, "setReleasedWhenClosed:", 0);
    unsigned w = s->display_width ? s->display_width : DEFAULT_WIDTH;
    unsigned h = s->display_height ? s->display_height : DEFAULT_HEIGHT;
    unsigned ppi = s->display_ppi ? s->display_ppi : DEFAULT_PPI;
    oc_send_void_size(window, "setContentSize:", points(w, ppi), points(h, ppi));
    window_title(&b, window);
    oc_send_void(window, "center");
    oc_send_void_id(window, "makeKeyAndOrderFront:", NULL);
    oc_send_void_bool(app, "activateIgnoringOtherApps:", 1);
    return b.rc;
}

struct window_call {
    boot_vm *vm;
    const boot_start_opts *o;
};

static int open_window_step(void *p)
{
    struct window_call *c = p;
    return open_window(c->vm, c->o);
}

static void close_window(boot_vm *vm)
{
    if (vm->window) {
        oc_send_void(vm->window, "close");
        oc_release(vm->window);
    }
    oc_release(vm->view);
    vm->window = vm->view = NULL;
}

/* the supervisor's pause between checks: a window's events, or a sleep */
static void vz_wait(boot_vm *vm, unsigned ms)
{
    char why[512];
    if (!vm || !vm->window)
        usleep(ms * 1000);
    else if (oc_run_events(ms, why, sizeof why) != 0)
        window_event_error(vm, why);
}

static void vz_release(boot_vm *vm)
{
    char why[512];
    tty_restore();
    if (!vm)
        return;
    close_window(vm);
    if (vm->vm) {
        halt(vm);
        oc_on_queue(vm->queue, release_on_queue, vm->vm, why, sizeof why);
    }
    if (vm->queue)
        oc_queue_release(vm->queue);
    free(vm);
}

/* make the VM on its queue: initWithConfiguration:queue: raises on a
 * configuration it can't take */
static int make_vm(boot_vm *vm, objc_id conf)
{
    char why[1024];
    struct make_vm m = {.conf = conf, .queue = vm->queue};
    if (oc_on_queue(vm->queue, make_vm_on_queue, &m, why, sizeof why) != 0)
        return boot_fail(EIO, "Virtualization.framework could not make the VM: %s", why);
    vm->vm = m.vm;
    if (!m.vm)
        return boot_fail(EIO, "Virtualization.framework could not make the VM");
    return 0;
}

static int run_vm(boot_vm *vm, const boot_start_opts *o)
{
    char what[PATH_MAX + 64];
    int rc;
    if (!o->restore_state)
        return vm_call(vm, "startWithCompletionHandler:", NULL, T_START, "the VM did not start");
    snprintf(what, sizeof what, "Virtualization.framework refused the saved state %s", o->restore_state);
    objc_id pool = oc_pool_push();
    rc = vm_call(vm, "restoreMachineStateFromURL:completionHandler:", oc_url(o->restore_state),
                 T_MEMORY, what);
    oc_pool_pop(pool);
    if (!rc)
        rc = vm_call(vm, "resumeWithCompletionHandler:", NULL, T_STATE,
                     "the VM did not resume from its saved state");
    return rc;
}

static int vz_start(const boot_start_opts *o, boot_vm **out)
{
    if (!o || !o->settings || !o->bundle_dir || !o->runtime_dir || !out)
        return boot_fail(EINVAL, "vz: start needs a bundle, a runtime directory and settings");
    if (!oc_available())
        return boot_fail(ENOTSUP, "the vz driver runs on macOS with Virtualization.framework; "
                                  "use the qemu driver here");
    if (o->restore_state && access(o->restore_state, R_OK) != 0)
        return boot_fail_errno(errno, "saved state %s", o->restore_state);

    const char *newer = newer_than_host(o);
    if (newer)
        return boot_fail(ENOTSUP, "%s", newer);
    int ready = rosetta_ready(o);
    if (ready)
        return ready;
    build b = {.o = o, .s = o->settings};
    objc_id pool = oc_pool_push();
    objc_id conf = checked_configuration(&b);
    boot_vm *vm = NULL;
    int rc = b.rc;
    if (!rc && !(vm = calloc(1, sizeof *vm)))
        rc = -ENOMEM;
    if (!rc && !(vm->queue = oc_queue("strata.vz")))
        rc = boot_fail(EIO, "could not make a dispatch queue for the VM");
    if (!rc && !(rc = make_vm(vm, conf)))
        vm->savable = b.savable;
    if (!rc) {
        vm->note = o->note;
        vm->note_ctx = o->note_ctx;
    }
    struct window_call window = {vm, o};
    if (!rc && o->gui)
        rc = guarded(open_window_step, &window, "opening the VM's window");
    if (!rc && o->console && !b.savable)
        tty_make_raw();
    if (!rc)
        rc = run_vm(vm, o);
    oc_pool_pop(pool);
    if (rc) {
        vz_release(vm);
        return rc;
    }
    *out = vm;
    return 0;
}

static int vz_pause(boot_vm *vm)
{
    return vm_call(vm, "pauseWithCompletionHandler:", NULL, T_STATE, "the VM did not pause");
}

static int vz_resume(boot_vm *vm)
{
    return vm_call(vm, "resumeWithCompletionHandler:", NULL, T_STATE, "the VM did not resume");
}

static int vz_savable(boot_vm *vm)
{
    return vm->savable;
}

/* Save into a hidden name next to path (keeping its .vzvmsave ending), made
 * durable and renamed into place (base/file.h). */
static int vz_save(boot_vm *vm, const char *path)
{
    if (!vm->savable)
        return boot_fail(ENOTSUP, "this VM was started without save/restore support (see the "
                                  "note when it started), so it can't be suspended");
    const char *slash = strrchr(path, '/');
    if (!*(slash ? slash + 1 : path))
        return boot_fail(EINVAL, "%s: not a file name", path);
    /* the framework writes the state by its name, kept ending in .vzvmsave */
    atomic_file out;
    int rc = atomic_file_open(&out, path, 0644, ATOMIC_FILE_FOREIGN | ATOMIC_FILE_KEEP_ENDING);
    if (rc)
        return rc;
    objc_id pool = oc_pool_push();
    rc = vm_call(vm, "saveMachineStateToURL:completionHandler:", oc_url(out.tmp), T_MEMORY,
                 "the VM's state was not saved");
    oc_pool_pop(pool);
    if (rc) {
        atomic_file_abort(&out);
        return rc;
    }
    return atomic_file_commit(&out);
}

struct stop_req {
    objc_id vm;
    int ok;
    char why[1024];
};

static void request_stop_on_queue(void *p)
{
    struct stop_req *r = p;
    objc_id err = NULL;
    r->ok = oc_send_bool_err(r->vm, "requestStopWithError:", &err);
    if (!r->ok)
        oc_error_text(err, r->why, sizeof r->why);
}

static int vz_alive(boot_vm *vm)
{
    int64_t st = vm_state(vm);
    return st != VZ_STATE_STOPPED && st != VZ_STATE_ERROR;
}

static int vz_stop(boot_vm *vm, int force)
{
    if (!vz_alive(vm))
        return 0;
    if (force)
        return vm_call(vm, "stopWithCompletionHandler:", NULL, T_STATE, "the VM did not stop");
    /* the guest decides when it has shut down: alive() tells */
    struct stop_req r = {.vm = vm->vm};
    char why[512];
    if (oc_on_queue(vm->queue, request_stop_on_queue, &r, why, sizeof why) != 0)
        return boot_fail(EIO, "the guest could not be asked to stop: %s", why);
    if (!r.ok)
        return boot_fail(EIO, "the guest could not be asked to stop: %s", r.why);
    return 0;
}

static int vz_pid(boot_vm *vm)
{
    (void)vm;
    return (int)getpid();
}

/*
 * The devices a savable VM of these settings gets here, beyond what the
 * settings say themselves (their config-hash binds those): the choices the
 * driver makes. A restore into a VM with other devices fails with "invalid
 * argument", so they are recorded with the state and compared first.
 */
/* the extra disks' controllers and Rosetta's share, only where there are
 * some: a device line of settings without them stays what it was */
static void more_devices(const boot_settings *s, char *out, size_t len)
{
    static const char *const bus[] = {"virtio-blk", "nvme", "usb-mass-storage"};
    size_t at = 0;
    out[0] = 0;
    for (size_t i = 0; i < s->ndisks && at < len; i++)
        at += (size_t)snprintf(out + at, len - at, "%s%s", i ? "," : " disks=",
                               bus[s->disks[i].bus % 3]);
    if (s->rosetta && at < len)
        snprintf(out + at, len - at, " rosetta=virtio-fs");
}

static int vz_devices(const boot_settings *s, char *out, size_t len)
{
    int mac = s->os == BOOT_OS_MACOS;
    char kbd[128] = "none", ptr[128] = "none", more[256];
    if (mac) {
        /* a host without save/restore gets the devices of a VM that can't be saved */
        class_names(keyboard_classes, 1, host_can_save(), kbd, sizeof kbd);
        class_names(pointer_classes, 1, host_can_save(), ptr, sizeof ptr);
    }
    more_devices(s, more, sizeof more);
    int n = snprintf(out, len,
                     "vz1 platform=%s disk=%s net=virtio-nat serial=virtio-console:file "
                     "entropy=%s keyboard=%s pointer=%s graphics=%s fs=virtio-fs%s%s",
                     mac ? "mac" : "generic", s->disk_bus == BOOT_BUS_NVME ? "nvme" : "virtio-blk",
                     has_entropy(s, 1) ? "virtio" : "none", kbd, ptr, mac ? "mac" : "none",
                     s->installer ? " installer=usb-mass-storage" : "", more);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* ---------- a fresh EFI variable store ---------- */

static int create_efi_vars_step(void *path_p)
{
    const char *path = path_p;
    objc_id err = NULL, cls = oc_class("VZEFIVariableStore");
    /* options 0: never over an existing file */
    objc_id store = oc_send_id_u64_err(oc_send(cls, "alloc"), "initCreatingVariableStoreAtURL:options:error:",
                                       oc_url(path), 0, &err);
    int rc = store ? 0 : fail_ns(EIO, err, "%s: Virtualization.framework could not create an EFI "
                                           "variable store there", path);
    oc_release(store);
    return rc;
}

/* the pool outside the guard: an exception must not leave it unbalanced */
static int vz_create_efi_vars(const char *path)
{
    if (!oc_available())
        return boot_fail(ENOTSUP, "the vz driver runs on macOS with Virtualization.framework");
    if (!oc_class("VZEFIVariableStore"))
        return boot_fail(ENOTSUP, "an EFI variable store needs macOS 13 or later (VZEFIVariableStore)");
    char what[PATH_MAX + 64];
    snprintf(what, sizeof what, "%s: creating an EFI variable store", path);
    objc_id pool = oc_pool_push();
    int rc = guarded(create_efi_vars_step, (void *)path, what);
    oc_pool_pop(pool);
    return rc;
}

/* ---------- installing macOS ---------- */

#define T_IMAGE 300000u     /* loading or looking up a restore image */
#define T_INSTALL 10800000u /* an install: 3 hours at most */
#define TICK_MS 250u        /* how often the install's progress is read */
#define MACOS_CPUS 4
#define MACOS_MIB 4096

static int install_classes(void)
{
    if (!oc_available())
        return boot_fail(ENOTSUP, "a macOS VM can only be made on a Mac with Apple silicon "
                                  "(Virtualization.framework); this host has none");
    if (!oc_class("VZMacOSRestoreImage") || !oc_class("VZMacOSInstaller"))
        return boot_fail(ENOTSUP, "Virtualization.framework here can't install macOS: that needs "
                                  "a Mac with Apple silicon and macOS 12 or later");
    return 0;
}

/* +[VZMacOSRestoreImage sel...] with its ^(VZMacOSRestoreImage *, NSError *)
 * block; the image (owned) or NULL with msg */
static objc_id restore_image(objc_id queue, const char *sel, objc_id url, char *msg, size_t len)
{
    objc_id image = NULL;
    unsigned ms = timeout_ms(T_IMAGE);
    int rc = oc_send_completion_result(queue, oc_class("VZMacOSRestoreImage"), sel, url, ms, &image,
                                       msg, len);
    if (rc == OC_TIMED_OUT)
        snprintf(msg, len, "no answer from Virtualization.framework in %u s", (ms + 999) / 1000);
    return rc ? NULL : image;
}

static int vz_macos_latest(char **url)
{
    char msg[1024], text[4096];
    int rc = install_classes();
    objc_id queue = rc ? NULL : oc_queue("strata.vz.latest");
    if (!rc && !queue)
        rc = boot_fail(EIO, "could not make a dispatch queue");
    objc_id pool = oc_pool_push();
    objc_id image = rc ? NULL : restore_image(queue, "fetchLatestSupportedWithCompletionHandler:", NULL,
                                              msg, sizeof msg);
    if (!rc && !image)
        rc = boot_fail(EIO, "could not look up the latest macOS for this Mac: %s", msg);
    objc_id link = image ? oc_send(image, "URL") : NULL;
    if (!rc && (!link || oc_text(oc_send(link, "absoluteString"), text, sizeof text) != 0))
        rc = boot_fail(EIO, "Virtualization.framework gave no URL for the latest macOS");
    if (!rc && !(*url = strdup(text)))
        rc = -ENOMEM;
    oc_release(image);
    oc_pool_pop(pool);
    if (queue)
        oc_queue_release(queue);
    return rc;
}

typedef struct {
    const boot_macos_opts *o;
    objc_id queue;          /* owned */
    objc_id image;          /* owned VZMacOSRestoreImage */
    objc_id hw;             /* its configuration's VZMacHardwareModel (pool) */
    boot_settings s;
    boot_vm vm;             /* the VM the installer runs (its queue is queue) */
    objc_id installer;      /* owned VZMacOSInstaller */
    double done;            /* the last fraction shown */
} install;

static void progress(install *in, double fraction)
{
    if (in->o->progress)
        in->o->progress(in->o->ctx, "installing macOS", (uint64_t)(fraction * 1000), 1000);
}

/* which macOS the image holds, as a note */
static void image_note(install *in)
{
    char build[64];
    if (in->o->note && oc_text(oc_send(in->image, "buildVersion"), build, sizeof build) == 0) {
        char line[PATH_MAX + 128];
        snprintf(line, sizeof line, "%s: macOS build %s", in->o->ipsw, build);
        in->o->note(in->o->ctx, line);
    }
}

/* What the restore image asks of this host: a configuration it supports. */
static int requirements(install *in)
{
    const boot_macos_opts *o = in->o;
    objc_id req = oc_send(in->image, "mostFeaturefulSupportedConfiguration");
    if (!req)
        return boot_fail(ENOTSUP, "%s: this Mac can't run the macOS in this restore image (it has "
                                  "no configuration this host supports: that needs Apple silicon "
                                  "and a host macOS at least as new as the image's)",
                         o->ipsw);
    in->hw = oc_send(req, "hardwareModel");
    if (!in->hw || !oc_send_bool(in->hw, "isSupported"))
        return boot_fail(ENOTSUP, "%s: this Mac doesn't support the image's hardware model (it "
                                  "needs a newer macOS host)", o->ipsw);
    uint64_t min_cpus = oc_send_u64(req, "minimumSupportedCPUCount");
    uint64_t min_bytes = oc_send_u64(req, "minimumSupportedMemorySize");
    uint64_t min_mib = (min_bytes + (1 << 20) - 1) >> 20;
    if (o->cpus && o->cpus < min_cpus)
        return boot_fail(EINVAL, "--cpus %u: this macOS needs at least %llu", o->cpus,
                         (unsigned long long)min_cpus);
    if (o->memory_mib && o->memory_mib < min_mib)
        return boot_fail(EINVAL, "--memory %lluM: this macOS needs at least %lluM",
                         (unsigned long long)o->memory_mib, (unsigned long long)min_mib);
    in->s.cpus = o->cpus ? o->cpus : (unsigned)(min_cpus > MACOS_CPUS ? min_cpus : MACOS_CPUS);
    in->s.memory_mib = o->memory_mib ? o->memory_mib : (min_mib > MACOS_MIB ? min_mib : MACOS_MIB);
    return 0;
}

/* obj's dataRepresentation into dir/name */
static int write_data(objc_id obj, const char *dir, const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    objc_id data = obj ? oc_send(obj, "dataRepresentation") : NULL;
    if (!data || !oc_send_bool_id_bool(data, "writeToURL:atomically:", oc_url(path), 1))
        return boot_fail(EIO, "%s: could not write it", path);
    return 0;
}

static int sparse_disk(const char *dir, uint64_t bytes)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/Disk.img", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return boot_fail_errno(errno, "%s", path);
    /* a raw image is a whole number of 512-byte sectors */
    int rc = ftruncate(fd, (off_t)((bytes + 511) & ~511ULL)) == 0 && os_full_fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc ? boot_fail_errno(-rc, "%s", path) : 0;
}

/* HardwareModel, a fresh MachineIdentifier, AuxiliaryStorage for that
 * hardware model, a sparse Disk.img and Settings.json */
static int bundle_files(install *in)
{
    const char *dir = in->o->bundle_dir;
    char aux[PATH_MAX];
    objc_id mid_cls = oc_class("VZMacMachineIdentifier");
    objc_id mid = mid_cls ? oc_autorelease(oc_send(mid_cls, "new")) : NULL;
    int rc = write_data(in->hw, dir, "HardwareModel");
    if (!rc)
        rc = write_data(mid, dir, "MachineIdentifier");
    if (rc)
        return rc;
    snprintf(aux, sizeof aux, "%s/AuxiliaryStorage", dir);
    objc_id err = NULL, storage = oc_send(oc_class("VZMacAuxiliaryStorage"), "alloc");
    storage = oc_send_id_id_u64_err(storage, "initCreatingStorageAtURL:hardwareModel:options:error:",
                                    oc_url(aux), in->hw, 0, &err);
    if (!storage)
        return fail_ns(EIO, err, "%s: Virtualization.framework could not create the auxiliary storage",
                       aux);
    oc_release(storage);
    if ((rc = sparse_disk(dir, in->o->disk_bytes)))
        return rc;
    in->s.os = BOOT_OS_MACOS;
    in->s.loader = BOOT_LOADER_MACOS;
    in->s.display_width = DEFAULT_WIDTH;
    in->s.display_height = DEFAULT_HEIGHT;
    in->s.display_ppi = DEFAULT_PPI;
    boot_mac_random(in->s.mac);
    return boot_settings_save(dir, &in->s);
}

/* the steps of a create that call the framework on this thread, guarded */
static int image_note_step(void *in)
{
    image_note(in);
    return 0;
}

static int requirements_step(void *in)
{
    return requirements(in);
}

static int bundle_files_step(void *in)
{
    return bundle_files(in);
}

static void make_installer_on_queue(void *p)
{
    install *in = p;
    objc_id a = oc_send(oc_class("VZMacOSInstaller"), "alloc");
    in->installer = oc_send_id_id(a, "initWithVirtualMachine:restoreImageURL:", in->vm.vm,
                                  oc_url(in->o->ipsw));
}

static void read_progress_on_queue(void *p)
{
    install *in = p;
    objc_id prog = oc_send(in->installer, "progress");
    in->done = prog ? oc_send_f64(prog, "fractionCompleted") : in->done;
}

/* between the waits for the install: show how far it is */
static void install_tick(void *p)
{
    install *in = p;
    char why[256];
    if (oc_on_queue(in->queue, read_progress_on_queue, in, why, sizeof why) == 0)
        progress(in, in->done);
}

/* the VM of the new bundle, as a start would configure it, and the installer */
static int installer_for(install *in)
{
    boot_start_opts so = {.bundle_dir = in->o->bundle_dir, .runtime_dir = in->o->bundle_dir,
                          .settings = &in->s, .note = in->o->note, .note_ctx = in->o->ctx};
    build b = {.o = &so, .s = &in->s};
    struct build_call c = {.b = &b};
    char why[1024];
    if (oc_guard(build_checked, &c, why, sizeof why) != 0)
        return boot_fail(EINVAL, "Virtualization.framework raised an exception while the "
                                 "configuration was built: %s", why);
    if (b.rc)
        return b.rc;
    in->vm.queue = in->queue;
    int rc = make_vm(&in->vm, c.conf);
    if (!rc && oc_on_queue(in->queue, make_installer_on_queue, in, why, sizeof why) != 0)
        rc = boot_fail(EIO, "Virtualization.framework could not make the installer: %s", why);
    if (!rc && !in->installer)
        rc = boot_fail(EIO, "Virtualization.framework could not make the installer");
    return rc;
}

static int run_installer(install *in)
{
    char msg[1024];
    unsigned ms = timeout_ms(T_INSTALL);
    progress(in, 0);
    int rc = oc_send_completion_ticking(in->queue, in->installer, "installWithCompletionHandler:", NULL,
                                        ms, install_tick, in, TICK_MS, msg, sizeof msg);
    if (rc == OC_TIMED_OUT)
        return boot_fail(ETIMEDOUT, "installing macOS: no end in %u s", (ms + 999) / 1000);
    if (rc)
        return boot_fail(EIO, "installing macOS from %s failed: %s", in->o->ipsw, msg);
    progress(in, 1);
    return 0;
}

static void install_done(install *in)
{
    char why[512], log[PATH_MAX];
    if (in->vm.vm)
        halt(&in->vm); /* an install that failed or timed out may have left it running */
    if (in->installer)
        oc_on_queue(in->queue, release_on_queue, in->installer, why, sizeof why);
    if (in->vm.vm)
        oc_on_queue(in->queue, release_on_queue, in->vm.vm, why, sizeof why);
    oc_release(in->image);
    if (in->queue)
        oc_queue_release(in->queue);
    boot_settings_free(&in->s);
    /* the install's console went into the bundle; the bundle is not its place */
    snprintf(log, sizeof log, "%s/%s", in->o->bundle_dir, CONSOLE_LOG);
    unlink(log);
}

static int vz_create_macos(const boot_macos_opts *o)
{
    char msg[1024];
    install in = {.o = o};
    int rc = install_classes();
    if (!rc && !(in.queue = oc_queue("strata.vz.install")))
        rc = boot_fail(EIO, "could not make a dispatch queue for the install");
    objc_id pool = oc_pool_push();
    if (!rc && !(in.image = restore_image(in.queue, "loadFileURL:completionHandler:", oc_url(o->ipsw),
                                          msg, sizeof msg)))
        rc = boot_fail(EINVAL, "%s: not a macOS restore image Virtualization.framework can read: %s",
                       o->ipsw, msg);
    if (!rc)
        rc = guarded(image_note_step, &in, "reading the restore image's build");
    if (!rc)
        rc = guarded(requirements_step, &in, "reading what the restore image asks of this Mac");
    if (!rc)
        rc = guarded(bundle_files_step, &in, "writing the new VM's identity and storage");
    if (!rc)
        rc = installer_for(&in);
    if (!rc)
        rc = run_installer(&in);
    install_done(&in);
    oc_pool_pop(pool);
    return rc;
}

/* boot_driver.nbd_ok: a lazy run's disk is an NBD attachment (macOS 14+) */
static int vz_nbd_ok(void)
{
    if (!oc_available())
        return boot_fail(ENOTSUP, "the vz driver runs on macOS with Virtualization.framework");
    if (!oc_class("VZNetworkBlockDeviceStorageDeviceAttachment"))
        return boot_fail(ENOTSUP, "an NBD disk needs macOS 14 or later "
                                  "(VZNetworkBlockDeviceStorageDeviceAttachment)");
    return 0;
}

static const boot_driver vz_driver = {
    .name = "vz",
    .state_file = "SaveFile.vzvmsave",
    .start = vz_start,
    .pause = vz_pause,
    .save = vz_save,
    .resume = vz_resume,
    .stop = vz_stop,
    .alive = vz_alive,
    .pid = vz_pid,
    .release = vz_release,
    .savable = vz_savable,
    .devices = vz_devices,
    .create_efi_vars = vz_create_efi_vars,
    .create_macos = vz_create_macos,
    .macos_latest = vz_macos_latest,
    .wait = vz_wait,
    .nbd_ok = vz_nbd_ok,
};

const boot_driver *boot_vz_driver(void)
{
    return &vz_driver;
}
