/*
 * boot: run VMs from strata bundles.
 *
 * Three parts:
 *   - settings: the bundle's Settings.json (CPU, memory, MAC, display, boot
 *     loader, shared folders, disk modes), parsed and validated;
 *   - drivers behind one interface: "vz" (Apple Virtualization.framework,
 *     macOS on Apple silicon) and "qemu" (Linux hosts, Linux guests);
 *   - instances: a VM running from a fresh clone of a layer, supervised by
 *     the process that started it, suspended into a new layer, resumed only
 *     where its saved state is valid.
 *
 * Functions return 0 or a negative errno; boot_error() has the one-line
 * message. Nothing here prints, except the console a caller asks for.
 */
#ifndef STRATA_BOOT_H
#define STRATA_BOOT_H

#include <stddef.h>
#include <stdint.h>

#include "../store/store.h"

#define BOOT_SETTINGS_FILE "Settings.json"
/* A Linux guest's VZGenericMachineIdentifier.dataRepresentation (opaque);
 * MachineIdentifier is a Mac's ECID plist and only that. */
#define BOOT_GENERIC_ID_FILE "GenericMachineIdentifier"
/* the tag that macOS guests mount by themselves (macOSGuestAutomountTag) */
#define BOOT_MACOS_AUTOMOUNT_TAG "com.apple.virtio-fs.automount"

const char *boot_error(void);

/* ---------- settings ---------- */

typedef enum { BOOT_OS_LINUX = 0, BOOT_OS_MACOS } boot_os;

typedef enum {
    BOOT_LOADER_LINUX = 0, /* direct kernel boot: kernel, initrd, cmdline (VZLinuxBootLoader) */
    BOOT_LOADER_EFI,       /* UEFI with the bundle's variable store (VZEFIBootLoader) */
    BOOT_LOADER_MACOS,     /* VZMacOSBootLoader */
} boot_loader;

typedef enum { BOOT_CACHE_AUTOMATIC = 0, BOOT_CACHE_CACHED, BOOT_CACHE_UNCACHED } boot_caching;
typedef enum { BOOT_SYNC_FULL = 0, BOOT_SYNC_FSYNC, BOOT_SYNC_NONE } boot_sync;

typedef struct {
    char *tag;      /* virtiofs tag the guest mounts, [A-Za-z0-9_-]{1,36} */
    char *path;     /* absolute host directory */
    int read_only;
} boot_share;

typedef struct {
    boot_os os;
    unsigned cpus;        /* 1..64 */
    uint64_t memory_mib;  /* 64 MiB .. 1 TiB */
    char mac[18];         /* "aa:bb:cc:dd:ee:ff", unicast */
    unsigned display_width, display_height, display_ppi; /* 0 = none (Linux) */
    boot_loader loader;
    char *kernel;   /* bundle file names, for BOOT_LOADER_LINUX */
    char *initrd;   /* may be NULL */
    char *cmdline;  /* may be NULL */
    char *efi_vars; /* bundle file name, for BOOT_LOADER_EFI */
    boot_share *shares;
    size_t nshares;
    boot_caching disk_caching;
    boot_sync disk_sync;
} boot_settings;

/* Parse and validate Settings.json text. bundle_dir (may be NULL) is where
 * the files it names must exist. Errors name the field: "Settings.json: cpus
 * must be from 1 to 64". */
int boot_settings_parse(const char *json, size_t len, const char *bundle_dir, boot_settings *out);
/* Read BUNDLE/Settings.json (at most 1 MiB). */
int boot_settings_load(const char *bundle_dir, boot_settings *out);
/* Write BUNDLE/Settings.json atomically. */
int boot_settings_save(const char *bundle_dir, const boot_settings *s);
void boot_settings_free(boot_settings *s);

/* SHA-256 hex of everything in the settings that a saved state depends on
 * (all but the MAC, which is bound separately). */
void boot_settings_config_hash(const boot_settings *s, char out[65]);

/* 1 if s is "xx:xx:xx:xx:xx:xx" hex and unicast. */
int boot_mac_valid(const char *s);
/* A fresh random locally administered unicast MAC. */
void boot_mac_random(char out[18]);

/* ---------- drivers ---------- */

typedef struct boot_vm boot_vm; /* a driver's running VM */

typedef struct {
    const char *bundle_dir;     /* the instance's files */
    const char *runtime_dir;    /* sockets and logs (inside the instance, dot names) */
    const boot_settings *settings;
    const char *restore_state;  /* resume from this state file, or NULL for a cold boot */
    const char *restore_kind;   /* its state-kind binding (NULL: none recorded) */
    int console;                /* attach the serial console to this terminal */
    /* configure for save/restore if this host and configuration allow it
     * (vz: validateSaveRestoreSupport); where they don't, the VM runs
     * without, and note() says why. A restore always needs it. */
    int suspendable;
    const char *accel;          /* qemu: "kvm", "tcg", or NULL/"auto" (KVM if a probe guest runs) */
    void (*note)(void *ctx, const char *line); /* may be NULL */
    void *note_ctx;
} boot_start_opts;

typedef struct {
    const char *name;       /* "qemu", "vz" */
    const char *state_file; /* the bundle file save() writes the state to */
    /* every bundle file a saved state consists of (state_file and any
     * others, e.g. RAM), NULL-terminated; NULL means just state_file */
    const char *const *state_files;
    /* Start (or restore, then resume) a VM. */
    int (*start)(const boot_start_opts *o, boot_vm **vm);
    int (*pause)(boot_vm *vm);
    /* Save a paused VM's state to path (atomically). */
    int (*save)(boot_vm *vm, const char *path);
    int (*resume)(boot_vm *vm);
    /* Ask the guest to shut down; force ends it at once. */
    int (*stop)(boot_vm *vm, int force);
    /* 1 while the VM runs, 0 once it has stopped. */
    int (*alive)(boot_vm *vm);
    /* Host pid running the VM (qemu's; vz: this process). */
    int (*pid)(boot_vm *vm);
    void (*release)(boot_vm *vm);
    /* May be NULL (then: always). 1 if this VM can be saved. */
    int (*savable)(boot_vm *vm);
    /* May be NULL. After save(): the kind of state it wrote, recorded as
     * the binding state-kind and handed back as restore_kind (qemu:
     * "ram-file" or "classic", docs/settings.md). */
    const char *(*state_kind)(boot_vm *vm);
    /* May be NULL (then: any). 0 if a state of this kind (NULL: none
     * recorded) can be restored here, else an error saying why: checked
     * before a resume makes anything. */
    int (*can_restore)(const char *kind);
    /* May be NULL. The device set a savable VM of these settings gets on
     * this host, as one line: recorded when a state is saved and compared
     * before it is restored, since a restore needs the same devices. */
    int (*devices)(const boot_settings *s, char *out, size_t len);
} boot_driver;

/* A driver by name; NULL (with boot_error set) if unknown or not on this host. */
const boot_driver *boot_driver_find(const char *name);
/* "vz" on macOS, "qemu" elsewhere. */
const char *boot_default_driver(void);

/* What a saved state was made with, in the order store bindings are sorted. */
typedef struct {
    char *key;
    char *value;
} boot_binding;

/* The bindings a state saved now, by this driver, of this bundle, would
 * carry: config-hash, driver, host, mac, machine-id, os-build, user, and
 * devices where the driver describes them. machine-id hashes
 * MachineIdentifier (macOS) or GenericMachineIdentifier (Linux on vz). */
int boot_bindings_now(const char *driver, const char *bundle_dir, const boot_settings *s,
                      boot_binding **out, size_t *n);
void boot_bindings_free(boot_binding *b, size_t n);

/* ---------- instances ---------- */

/*
 * Instances live in store_instances_dir (STORE/vms/<name>), or in any clone
 * directory run as `run DIR`: a clone of a layer plus dot files
 * (.console.log, .qmp.sock) that commits never version. The process that
 * runs an instance supervises it until the VM stops or is suspended;
 * suspend and stop ask it by signal. While it lives it holds, by flock:
 *   - its record's lock, store_running_dir/<name>.lock, beside the record
 *     <name>.run (name, pid, dir, layer, state): ps lists only records
 *     whose lock is held, and no pid is signalled unless it is;
 *   - the clone's busy lock (store_busy_take): commit refuses it;
 *   - for --resume, store_running_dir/<state id>.state-lock: one instance
 *     per saved state unless --allow-duplicate.
 */
typedef struct {
    const char *target;      /* a layer REF, or an existing clone directory */
    const char *name;        /* instance name, or NULL for one made up */
    const char *driver;      /* NULL: boot_default_driver() */
    unsigned cpus;           /* 0: the bundle's */
    uint64_t memory_mib;     /* 0: the bundle's */
    int resume;              /* restore the layer's saved state */
    int cold;                /* boot fresh even if the layer has a saved state */
    int fallback_cold;       /* if the hypervisor refuses the state, boot fresh */
    int ephemeral;           /* delete the instance when it stops */
    int console;             /* serial console on this terminal */
    int new_identity;        /* a fresh machine identifier too */
    int allow_duplicate;     /* allow a second running resume of one state */
    const char *accel;       /* qemu: kvm, tcg or auto (NULL) */
    void (*note)(void *ctx, const char *line);    /* progress notes; may be NULL */
    void (*started)(void *ctx, const char *name); /* the VM runs; may be NULL */
    void *ctx;
} boot_run_opts;

/* Start an instance and supervise it until it stops (or is suspended). */
int boot_run(store *st, const boot_run_opts *o);

/* Pause, save state and commit it (store_commit_saved_state): layer D
 * with the disk, aux storage and settings, and its child S adding the
 * state, bound to this host; the instance then stops. Writes S's id.
 * name is an instance name or its directory. */
int boot_suspend(store *st, const char *name, const char *tag, const char *message,
                 store_id *out);

/* Ask the guest to shut down; force it off after timeout_s seconds. name
 * is an instance name or its directory. */
int boot_stop(store *st, const char *name, int timeout_s);

typedef struct {
    char *name;
    char *dir;
    char *layer;        /* the layer it was cloned from */
    char *driver;
    char *resumed_from; /* the saved state's layer, or "" */
    int pid;            /* the supervising strata process */
    int vm_pid;
    char state[16];     /* "starting", "running", "suspending", "stopping" */
} boot_instance;

/* Running instances. */
int boot_ps(store *st, boot_instance **out, size_t *n);
void boot_ps_free(boot_instance *v, size_t n);

#endif
