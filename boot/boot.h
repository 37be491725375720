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

/* boot's directories in the store's home, created if absent (caller frees;
 * NULL with boot_error set): its instances (STORE/vms), its records of
 * running instances (STORE/running), and downloads kept for reuse
 * (STORE/cache: macOS restore images). The store never reads them; gc
 * leaves them alone. */
char *boot_instances_dir(store *st);
char *boot_running_dir(store *st);
char *boot_cache_dir(store *st);

/* ---------- settings ---------- */

typedef enum { BOOT_OS_LINUX = 0, BOOT_OS_MACOS } boot_os;

typedef enum {
    BOOT_LOADER_LINUX = 0, /* direct kernel boot: kernel, initrd, cmdline (VZLinuxBootLoader) */
    BOOT_LOADER_EFI,       /* UEFI with the bundle's variable store (VZEFIBootLoader) */
    BOOT_LOADER_MACOS,     /* VZMacOSBootLoader */
} boot_loader;

typedef enum { BOOT_CACHE_AUTOMATIC = 0, BOOT_CACHE_CACHED, BOOT_CACHE_UNCACHED } boot_caching;
typedef enum { BOOT_SYNC_FULL = 0, BOOT_SYNC_FSYNC, BOOT_SYNC_NONE } boot_sync;

/* a disk's controller: virtio-blk, NVMe (Linux guests), or USB mass storage */
typedef enum { BOOT_BUS_VIRTIO = 0, BOOT_BUS_NVME, BOOT_BUS_USB } boot_bus;
/* the window's display follows its size: where the host can (auto), always, never */
typedef enum { BOOT_RECONFIGURE_AUTO = 0, BOOT_RECONFIGURE_ON, BOOT_RECONFIGURE_OFF } boot_reconfigure;

/* an extra disk: an image in the bundle, so a layer (and its saved state)
 * always carries it */
typedef struct {
    char *file;     /* bundle file name */
    boot_bus bus;
    int read_only;
} boot_disk;

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
    char *ssh_user; /* `strata ssh`'s user, or NULL for ssh's own default */
    char *installer; /* bundle file name of installer media (an ISO), or NULL:
                        qemu attaches it as a CD drive, vz as USB mass storage */
    boot_share *shares;
    size_t nshares;
    boot_caching disk_caching;
    boot_sync disk_sync;
    /* The Sonoma-era devices (docs/settings.md); each written to
     * Settings.json only when not its default, so the configuration hash
     * of settings without them stays what it was. */
    boot_bus disk_bus;      /* Disk.img's controller: virtio or nvme */
    char *disk_nbd;         /* the boot disk is this NBD export (nbd:// or
                               nbd+unix://) instead of Disk.img, or NULL */
    boot_disk *disks;       /* extra disks, at most BOOT_MAX_DISKS */
    size_t ndisks;
    char *rosetta;          /* Rosetta's virtiofs tag (Linux guests, vz), or NULL */
    boot_reconfigure display_reconfigure; /* the window only: not in the hash */
} boot_settings;

#define BOOT_MAX_DISKS 8

/* Settings.json's names of the modes: the value, or -1 if name isn't one. */
int boot_caching_value(const char *name);
int boot_sync_value(const char *name);
int boot_bus_value(const char *name);
int boot_reconfigure_value(const char *name); /* on, off, auto */
/* 0 if url is an NBD URL both drivers take (nbd://HOST[:PORT][/EXPORT] or
 * nbd+unix:///[EXPORT]?socket=/ABSOLUTE/PATH, no commas); else the error,
 * naming `what` (a field or an option). */
int boot_nbd_url_check(const char *url, const char *what);
/* 0 if tag is a virtiofs tag as shared_folders take ([A-Za-z0-9_-]{1,36}) */
int boot_tag_check(const char *tag, const char *what);

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

/* ---------- making a macOS VM ---------- */

typedef struct {
    const char *driver;     /* NULL: "vz", the only one that installs macOS */
    const char *bundle_dir; /* an existing, empty directory the bundle is made in */
    const char *ipsw;       /* a macOS restore image (.ipsw) file */
    uint64_t disk_bytes;    /* Disk.img's size (sparse); at least BOOT_MACOS_MIN_DISK */
    unsigned cpus;          /* 0: 4; never below the image's minimum */
    uint64_t memory_mib;    /* 0: 4096; never below the image's minimum */
    /* the install's progress (done of total), and notes; may be NULL */
    void (*progress)(void *ctx, const char *what, uint64_t done, uint64_t total);
    void (*note)(void *ctx, const char *line);
    void *ctx;
} boot_macos_opts;

#define BOOT_MACOS_MIN_DISK (20ULL << 30)

/*
 * Apple's documented sequence, into o->bundle_dir: load the restore image,
 * take its mostFeaturefulSupportedConfiguration (refused clearly where this
 * host can't run it), write HardwareModel and a fresh MachineIdentifier
 * (their data representations, plists), create AuxiliaryStorage for that
 * hardware model, a sparse Disk.img and Settings.json, then run
 * VZMacOSInstaller, reporting its progress. On failure the directory may
 * hold some of those files: the caller drops it.
 */
int boot_create_macos(const boot_macos_opts *o);
/* The URL of the newest macOS restore image this host supports
 * (fetchLatestSupported; a download, not a file). Caller frees. */
int boot_macos_latest(const char *driver, char **url);

/* ---------- drivers ---------- */

typedef struct boot_vm boot_vm; /* a driver's running VM */

/* Host-side endpoints of a running VM; empty host and port 0 where none. */
typedef struct boot_endpoints {
    char ssh_host[64];  /* an address on the host forwarded to the guest's port 22 */
    unsigned ssh_port;
    char vnc_host[64];  /* the display, served as VNC (qemu --gui) */
    unsigned vnc_port;
} boot_endpoints;

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
    int gui;                    /* vz: a window with the VM's display; qemu: VNC on a loopback port */
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
    /* May be NULL (then: the store's). The chunk size a state file of a VM
     * of these settings is first stored at, or 0 for the store's default
     * (qemu: 4 KiB for the RAM file, whose writes are scattered pages). */
    uint32_t (*state_chunk_size)(const boot_settings *s, const char *file);
    /* May be NULL (then: none). 1 if this state file holds its final
     * content as soon as pause() has returned, before save() (qemu: the RAM
     * file of a ram-file save): the store may start hashing it then. */
    int (*final_at_pause)(boot_vm *vm, const char *file);
    /* May be NULL. The device set a savable VM of these settings gets on
     * this host, as one line: recorded when a state is saved and compared
     * before it is restored, since a restore needs the same devices. */
    int (*devices)(const boot_settings *s, char *out, size_t len);
    /* May be NULL. Create a fresh, empty EFI variable store at path (qemu:
     * a copy of the firmware's template; vz: VZEFIVariableStore). */
    int (*create_efi_vars)(const char *path);
    /* May be NULL (the driver can't install macOS): boot_create_macos,
     * boot_macos_latest. */
    int (*create_macos)(const boot_macos_opts *o);
    int (*macos_latest)(char **url);
    /* May be NULL (then: sleep). Wait about ms while the VM runs, serving
     * what it shows on this host (vz: the window's events, on the main
     * thread). The supervisor calls it between its checks. */
    void (*wait)(boot_vm *vm, unsigned ms);
    /* May be NULL. Where a running VM is reached on the host: its guest's
     * ssh port forwarded (qemu) and its display served as VNC (gui). */
    int (*endpoints)(boot_vm *vm, struct boot_endpoints *out);
    /* May be NULL (then: not supported). Save the screen of the VM running
     * in runtime_dir as a PNG at path, from any process. */
    int (*screenshot)(const char *runtime_dir, const char *png_path);
    /* May be NULL (then: yes). 0 if this host's framework can boot from an
     * NBD disk (disk.nbd), else an error saying why (vz before macOS 14). */
    int (*nbd_ok)(void);
} boot_driver;

/* A driver by name; NULL (with boot_error set) if unknown or not on this host. */
const boot_driver *boot_driver_find(const char *name);
/* "vz" on macOS, "qemu" elsewhere. */
const char *boot_default_driver(void);

/* What a guest needs of its host, as a registry manifest's annotations say
 * (docs/remote.md); "" or 0 where they say nothing. */
typedef struct {
    const char *os;        /* "macos", "linux" */
    const char *arch;      /* OCI's names: "arm64", "amd64" */
    const char *macos_min; /* its HardwareModel's MinimumSupportedOS: "13.0.0" */
    int64_t macos_data_rep; /* its DataRepresentationVersion */
} boot_guest_needs;

/* 0 if this host can run a guest that needs g, else -ENOTSUP (or a
 * driver's error) with a one-line reason naming what: a macOS guest needs a
 * Mac with Apple silicon whose macOS is at least the guest's
 * MinimumSupportedOS and a hardware-model data representation this strata
 * knows; a Linux guest needs a driver for its architecture (the drivers run
 * the host's own). What g leaves unsaid is not held against it. */
int boot_guest_runs_here(const char *what, const boot_guest_needs *g);

/* This host's architecture by OCI's names ("amd64", "arm64"; else what
 * uname says) in buf (n bytes); returns buf. Both drivers run guests of
 * the host's own architecture, so it is also a Linux guest's made here. */
const char *boot_host_arch(char *buf, size_t n);

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

/* ---------- what a REF names ---------- */

typedef enum {
    BOOT_REF_LAYER = 0, /* a tag, a full layer id or a unique id prefix */
    BOOT_REF_CLONE,     /* a clone directory: one holding STORE_INSTANCE_MARKER */
    BOOT_REF_REGISTRY,  /* HOST/REPO:TAG (or @DIGEST), found under the local tag a pull gave it */
} boot_ref_kind;

typedef struct {
    boot_ref_kind kind;
    store_id id;    /* the layer; for a clone, the layer its marker names */
    char dir[4096]; /* BOOT_REF_CLONE: the directory's real path (PATH_MAX fits) */
    char tag[160];  /* BOOT_REF_REGISTRY: the local tag a pull gives ("" for a digest) */
} boot_ref;

/*
 * Resolve a REF, as every verb that names a layer takes it, in this order:
 *   1. a clone directory (a folder that is not a clone does not hide a tag
 *      of the same name): the layer store_instance_layer reads from it;
 *   2. a tag, a full layer id or a unique prefix of one (store_resolve);
 *   3. a registry name HOST/REPO:TAG, which pull tags locally as the
 *      remote name (remote_ref_local_tag: "ghcr.io/acme/vm:v1" is found
 *      as "ghcr.io_acme_vm:v1").
 * Returns 0, or a negative errno with the message in err_last():
 *   -EINVAL "ambiguous ref 'PREFIX': N layers start with it"
 *   -ENOENT "unknown ref 'NAME': no such tag or layer"
 *   -ENOENT for a registry name the store lacks, with out->kind
 *           BOOT_REF_REGISTRY and out->tag set (a caller may pull it):
 *           "unknown ref 'HOST/REPO:TAG': it was never pulled into this
 *           store (strata pull HOST/REPO:TAG)"
 */
int boot_resolve(store *st, const char *ref, boot_ref *out);

/* ---------- instances ---------- */

/*
 * Instances live in boot_instances_dir (STORE/vms/<name>), or in any clone
 * directory run as `run DIR`: a clone of a layer plus dot files
 * (.console.log, .qmp.sock) that commits never version. The process that
 * runs an instance supervises it until the VM stops or is suspended;
 * suspend and stop ask it by signal. While it lives it holds, by flock:
 *   - its record's lock, boot_running_dir/<name>.lock, beside the record
 *     <name>.run (name, pid, dir, layer, state): ps lists only records
 *     whose lock is held, and no pid is signalled unless it is;
 *   - the clone's busy lock (store_busy_take): commit refuses it;
 *   - for --resume, boot_running_dir/<state id>.state-lock: one instance
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
    int gui;                 /* show the display (boot_start_opts.gui) */
    /* devices for this instance (Settings.json's names; NULL: the layer's),
     * written into its settings like cpus; refused with resume */
    const char *disk_caching, *disk_sync, *disk_bus;
    const char *rosetta;             /* a tag, or "none" */
    const char *display_reconfigure; /* on, off or auto */
    /* the boot disk from this NBD URL for this run only (not written: the
     * export lives outside the instance, so the VM can't be suspended) */
    const char *disk_nbd;
    /* shared folders named at run time (run --share): they replace the
     * settings' folder of the same tag, or add one; the only ones a layer
     * that came from outside (an archive, a registry) gets */
    const boot_share *shares;
    size_t nshares;
    /* a registry name HOST/REPO:TAG the store lacks, run lazily (docs/lazy.md,
     * "Running lazily"): the small files fetched, Disk.img served over NBD
     * while the layer is pulled; target is then ignored. NULL: not lazy */
    const char *lazy_ref;
    /* set to 1 when a lazy run could not start and made nothing (a driver
     * without NBD disks, a saved state's layer, a tart image): the caller
     * may pull and run instead; boot_error() says why. May be NULL */
    int *lazy_refused;
    void (*note)(void *ctx, const char *line);    /* progress notes; may be NULL */
    void (*started)(void *ctx, const char *name); /* the VM runs; may be NULL */
    void *ctx;
} boot_run_opts;

/* 0 if driver (NULL: the default) can boot from an NBD disk on this host,
 * as a lazy run needs; else why not (vz before macOS 14). */
int boot_driver_nbd_ok(const char *driver);

/* Start an instance and supervise it until it stops (or is suspended). */
int boot_run(store *st, const boot_run_opts *o);

/* Pause, save state and commit it (store_commit_saved_state): layer D
 * with the disk, aux storage and settings, and its child S adding the
 * state, bound to this host; the instance then stops. Writes S's id.
 * name is an instance name or its directory. */
int boot_suspend(store *st, const char *name, const char *tag, const char *message,
                 store_id *out);

/* Ask the guest to shut down; force it off after timeout_s seconds (0: at
 * once). name is an instance name or its directory. *forced is set when
 * the guest ignored the request for timeout_s seconds and was forced off. */
int boot_stop(store *st, const char *name, int timeout_s, int *forced);

typedef struct {
    char *name;
    char *dir;
    char *layer;        /* the layer it was cloned from */
    char *driver;
    char *resumed_from; /* the saved state's layer, or "" */
    int pid;            /* the supervising strata process */
    int vm_pid;
    char state[16];     /* "starting", "running", "suspending", "stopping" */
    boot_endpoints ep;  /* recorded when the VM started */
    /* a lazy run (docs/lazy.md): lazy_state is "" for any other, else the
     * fill's "filling", "idle", "done" or "failed", with its counts */
    char lazy_state[12];
    uint64_t lazy_chunks_here, lazy_chunks, lazy_fill_done, lazy_fill_total;
} boot_instance;

/* Running instances. */
int boot_ps(store *st, boot_instance **out, size_t *n);
void boot_ps_free(boot_instance *v, size_t n);

/* ---------- reaching a running instance: ip, ssh, screenshot ---------- */

typedef enum {
    BOOT_RESOLVER_DEFAULT = 0, /* qemu: its forward; vz: the DHCP lease */
    BOOT_RESOLVER_LEASE,       /* vz: /var/db/dhcpd_leases ($STRATA_TEST_DHCPD_LEASES) */
    BOOT_RESOLVER_ARP,         /* vz: `arp -an`; opt-in, since ARP replies can be spoofed */
} boot_resolver;

typedef struct {
    char address[64];  /* where to connect: the guest's own, or qemu's forward on 127.0.0.1 */
    unsigned port;     /* its ssh port there: 22, or the forwarded one */
    char source[16];   /* "forward", "lease" or "arp" */
} boot_address;

/* The address of running instance name (a name or its directory), waiting
 * up to wait_s seconds for the instance to run and its address to be
 * known; with wait_s 0, an instance that isn't running is an error at once. */
int boot_ip(store *st, const char *name, boot_resolver how, int wait_s, boot_address *out);

typedef struct {
    const char *name;     /* instance name or directory */
    const char *user;     /* NULL: the settings' ssh_user, else ssh's own default */
    const char *identity; /* a private key file, or NULL */
    int wait_s;           /* wait this long for the address and for sshd's banner */
    boot_resolver resolver;
    char *const *command; /* the remote command's words, or NULL for a login shell */
    size_t ncommand;
} boot_ssh_opts;

/* The argv (NULL-terminated, for execvp) that runs the system's ssh to the
 * instance: its address and port, the user, and host keys kept in the
 * instance's own .known_hosts (accept-new), so a clone never meets another
 * instance's key. Free with boot_argv_free. */
int boot_ssh_argv(store *st, const boot_ssh_opts *o, char ***argv);
void boot_argv_free(char **argv);

/* Save running instance name's screen as a PNG at path (atomically). */
int boot_screenshot(store *st, const char *name, const char *png_path);

/* leases.c, exposed for tests: the address in a macOS bootpd lease file's
 * text for mac (padded or unpadded hex): the unexpired lease (expiry >
 * now) that expires last. -ENOENT if none; *duid (may be NULL) counts the
 * leases keyed by a DUID client identifier, which no MAC can match. */
int boot_lease_find(const char *text, const char *mac, long long now, char *out, size_t n,
                    unsigned *duid);
/* the address `arp -an` output gives mac, or -ENOENT */
int boot_arp_find(const char *text, const char *mac, char *out, size_t n);

/* ---------- making and changing VMs (boot/create.c) ---------- */

#define BOOT_DISK_FILE "Disk.img"
#define BOOT_EFI_VARS_FILE "NVRAM"
#define BOOT_INSTALLER_FILE "Installer.iso"

/* create linux: exactly one of disk_image, iso, kernel. */
typedef struct {
    const char *name;        /* the new root layer's tag; must be free */
    const char *driver;      /* whose EFI variable store; NULL: boot_default_driver() */
    const char *disk_image;  /* a disk image qemu-img reads (raw, qcow2): converted to a
                                sparse raw Disk.img, EFI boot with a fresh variable store */
    const char *iso;         /* installer media, copied in as Installer.iso; EFI, empty disk */
    const char *kernel;      /* direct kernel boot (the linux loader) */
    const char *initrd;      /* with kernel, may be NULL */
    const char *cmdline;     /* with kernel, may be NULL */
    uint64_t disk_bytes;     /* Disk.img's size; 0 with disk_image: the image's own */
    unsigned cpus;           /* 0: 2 */
    uint64_t memory_mib;     /* 0: 1024 */
    store_progress_fn progress; /* the import into the store; may be NULL */
    void *progress_ctx;
    void (*note)(void *ctx, const char *line); /* may be NULL */
    void *ctx;
} boot_create_linux_opts;

/* Make a Linux VM bundle in the store's scratch space and import it as a
 * root layer tagged o->name. On failure nothing is left behind. */
int boot_create_linux(store *st, const boot_create_linux_opts *o, store_id *out);

/* set: what to change (0 / NULL: leave it). */
typedef struct {
    const char *target;       /* a layer REF (a child layer is made) or a clone
                                 directory (changed in place) */
    const char *tag;          /* the child's tag; NULL: target, if target is a tag */
    const char *message;      /* the child's message; NULL: "set" */
    unsigned cpus;
    uint64_t memory_mib;
    uint64_t disk_bytes;      /* grow only; the disk stays sparse */
    unsigned display_width, display_height;
    const char *mac;          /* "auto" (a fresh one) or a MAC */
    const boot_share *add_shares; /* by tag: replaces a folder of that tag, or adds one */
    size_t nadd;
    const char *const *remove_shares; /* tags */
    size_t nremove;
    int detach_installer;     /* drop the installer media (and its file) */
    /* devices, by Settings.json's names (NULL: leave them) */
    const char *disk_caching, *disk_sync, *disk_bus;
    const char *disk_nbd;            /* a URL, or "none" */
    const char *rosetta;             /* a tag, or "none" */
    const char *display_reconfigure; /* on, off or auto */
    /* extra disks: host images copied into the bundle under their base
     * names (PATH, bus, read_only), and bundle names to drop */
    const boot_disk *add_disks;
    size_t nadd_disks;
    const char *const *remove_disks;
    size_t nremove_disks;
    void (*note)(void *ctx, const char *line); /* may be NULL */
    void *ctx;
} boot_set_opts;

/* Change a VM's settings and disk size. *made_layer is 1 and out the child
 * when target was a layer, 0 for a clone changed in place. Nothing changes
 * unless every value is valid. */
int boot_set(store *st, const boot_set_opts *o, int *made_layer, store_id *out);

/* A host folder as a share: path must be an existing directory (made
 * absolute), tag as Settings.json allows. Fills sh (strings malloc'd). */
int boot_share_make(const char *tag, const char *path, int read_only, boot_share *sh);


/* ---------- tart-compatible VMs (boot/tartvm.c; the `tart` command) ----------
 *
 * What `tart clone` makes and `tart run` runs: a VM kept by a tart name
 * (no '/'), a clone directory that lives until `tart delete`:
 * STORE/tart/vms/ and the first 20 hex digits of the name's SHA-256 (tart
 * names run long, and the VM's control sockets must fit a socket address),
 * holding the name in .tart-name. Its own namespace: it never meets a tag
 * or an instance the user made (STORE/vms). Run, it is the instance "tart:NAME" (strata ps shows
 * it; an instance name the user gives can't hold ':'). Its disk and
 * settings persist from run to run, as tart's do; a suspend commits its
 * saved state (layers D and S, as strata suspend) and the directory becomes
 * a clone of S, which the next run resumes. Images pulled through the
 * `tart` command are remembered (STORE/tart/pulled) so `tart list` shows
 * them with Source OCI. docs/tart.md, "The `tart` command".
 */

#define BOOT_TART_NAME_MAX 128

typedef enum { BOOT_TART_STOPPED = 0, BOOT_TART_RUNNING, BOOT_TART_SUSPENDED } boot_tart_state;

typedef struct {
    char name[BOOT_TART_NAME_MAX + 80]; /* a VM's name, or a pulled image's HOST/REPO:TAG */
    int oci;                /* 1: a pulled image (tart's Source "OCI"); 0: a VM ("local") */
    char dir[4096];         /* a VM's directory ("" for an image) */
    store_id layer;         /* the layer it was cloned from (an image: the layer pulled) */
    uint64_t disk_bytes;    /* apparent bytes of its files (tart's Disk) */
    uint64_t allocated_bytes; /* bytes its files take on disk (an image: its data chunks) */
    int64_t accessed;       /* unix seconds: the directory's access time (an image: made) */
    boot_tart_state state;
    int os_macos;           /* its settings say macOS */
    unsigned cpus;
    uint64_t memory_mib;
    unsigned display_width, display_height;
} boot_tart_vm;

/* 0 if name can name a tart VM here: 1..BOOT_TART_NAME_MAX of
 * [A-Za-z0-9._-], not starting with '.' or '-' (tart allows more; strata
 * keeps names that are safe as file names and in a control socket's path);
 * else -EINVAL naming it. */
int boot_tart_name_check(const char *name);

/* The VM name, with its state and sizes. -ENOENT "the specified VM "NAME"
 * does not exist" (tart's words) if there is none. */
int boot_tart_find(store *st, const char *name, boot_tart_vm *out);

/* Every VM (oci 0) and then every image pulled through the `tart`
 * command that the store still holds (oci 1), each group sorted by name.
 * Free with free(). */
int boot_tart_list(store *st, boot_tart_vm **out, size_t *n);

/* Make VM name (-EEXIST if it exists) from src: another VM (its current
 * disk, committed first as an untagged layer, so it must not be running),
 * else a REF as boot_resolve takes it (a tag, an id, a pulled HOST/REPO:TAG).
 * The new VM gets a fresh MAC, as two VMs on one network must not share
 * one; a saved state is not cloned. */
int boot_tart_clone(store *st, const char *src, const char *name,
                    void (*note)(void *ctx, const char *line), void *ctx);

/* Run VM name as boot_run runs a clone directory, under the instance name
 * tart:NAME, until it stops or is suspended; a suspended VM is resumed.
 * o->target and o->name are ignored. -EALREADY "VM "NAME" is already
 * running!" if it runs. */
int boot_tart_run(store *st, const char *name, const boot_run_opts *o);

/* Suspend running VM name (boot_suspend); its directory then holds the
 * saved state the next run resumes. -ESRCH "VM "NAME" is not running". */
int boot_tart_suspend(store *st, const char *name, store_id *state);

/* Stop VM name as boot_stop does; a suspended VM's state is dropped
 * instead (as tart). -ESRCH "VM "NAME" is not running" if neither. */
int boot_tart_stop(store *st, const char *name, int timeout_s, int *forced);

/* Delete VM name and its directory. -EBUSY "VM "NAME" is running" if it
 * runs (as tart). */
int boot_tart_delete(store *st, const char *name);

/* A fresh serial number for VM name (tart set --random-serial): a macOS
 * VM's MachineIdentifier gets a fresh ECID; a Linux VM has none, and is
 * left as it is (as tart leaves it). *changed says which. */
int boot_tart_random_serial(store *st, const char *name, int *changed);

/* Remember that remote (HOST/REPO:TAG, as given) was pulled through the
 * `tart` command, for boot_tart_list. */
int boot_tart_remember_pull(store *st, const char *remote);

#endif
