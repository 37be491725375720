/* Shared by boot/'s own files only. */
#ifndef STRATA_BOOT_INTERNAL_H
#define STRATA_BOOT_INTERNAL_H

#include "../base/error.h"
#include "../base/file.h"
#include "../base/hex.h"
#include "../base/note.h"
#include "../base/testhooks.h"
#include "boot.h"

/* errors (base/error.h), raised by boot/: set the thread's error and
 * return -err; boot_fail_errno appends ": strerror(err)" */
#define boot_fail(err, ...) err_set(ERR_BOOT, (err), __VA_ARGS__)
#define boot_fail_errno(err, ...) err_set_errno(ERR_BOOT, (err), __VA_ARGS__)
#define boot_oom() err_oom(ERR_BOOT)

/* settings.c: text as dir/name's contents, atomically (base/file.h) */
int boot_write_atomic(const char *dir, const char *name, const char *text);

/* instance.c: a running instance by name or directory (ENOENT: "no running
 * instance"); free with boot_instance_free */
int boot_find_running(store *st, const char *name, boot_instance *out);
void boot_instance_free(boot_instance *x);
/* instance.c: boot_run, with instance_name (not NULL) naming the instance
 * of a clone directory target instead of the directory's base name: the
 * tart VMs' "tart:NAME" (tartvm.c), which no user-given name can be */
int boot_run_named(store *st, const boot_run_opts *o, const char *instance_name);

/* dirs.c: STORE/name (name may be a path under a directory made first),
 * made with mode 0755 if missing; ENOTDIR if something else is there.
 * Caller frees; NULL with the error set. */
char *boot_home_subdir(store *st, const char *name);

/* png.c: an 8-bit P6 PPM (a screen dump) rewritten as an RGB PNG */
int boot_ppm_to_png(const char *ppm_path, const char *png_path);

/* settings.c: the settings as Settings.json text (malloc'd; NULL if out of memory) */
char *boot_settings_json(const boot_settings *s);

/* create.c: the shared folders a run may open. A layer that came from
 * outside (store_receive) opens none of its own; run-time shares (named
 * by the user) replace or add by tag. eff gets a copy of s whose shares
 * array is its own (free only eff->shares; the strings are borrowed). */
int boot_run_shares(store *st, const store_id *layer, const boot_settings *s,
                    const boot_share *named, size_t nnamed,
                    void (*note)(void *ctx, const char *line), void *ctx, boot_settings *eff);

/* create.c: run's device options (boot_run_opts: disk_caching, disk_sync,
 * disk_bus, rosetta, display_reconfigure) made on s, with set's checks;
 * errors name the option */
int boot_run_devices(const boot_run_opts *o, boot_settings *s);

/* create.c: the NBD export a run's boot disk comes from, into eff (borrowed):
 * named (run --disk-nbd), else the settings' own where this host chose it
 * (as with shares); a layer from outside has its URL refused */
int boot_run_nbd(store *st, const store_id *layer, const boot_settings *s, const char *named,
                 boot_settings *eff);

/* qemu.c */
const boot_driver *boot_qemu_driver(void);
/* qemu_nbd.c: the NBD boot disk as -blockdev words (node disk0) */
int qemu_major_version(const char *qemu, const char *runtime_dir);
int qemu_nbd_blockdev(const char *url, const char *cache, int qemu_major, char *out, size_t n);

/*
 * vz.c: Apple's Virtualization.framework, driven from C through the
 * Objective-C runtime (boot/objc.h). One VZVirtualMachine per boot_vm, on a
 * serial dispatch queue of its own; every message to the VM is sent on that
 * queue, and each completion handler is waited for off it. Compiled
 * everywhere: with boot/objc_apple.c it runs VMs on macOS; with
 * tests/objc_record.c it records what it would send, for tests on Linux
 * (test_vz, and build/strata-vzsim for tests/vzsim.sh).
 */
const boot_driver *boot_vz_driver(void);

/* guestnet.c: where a running guest answers on the network */
/* a vz guest's address by its MAC: 0, -ENOENT (not yet; boot_error says
 * why), or another error; source in out says how it was found */
int boot_vz_address(const char *mac, boot_resolver how, boot_address *out);
/* 1 if an ssh server's banner ("SSH-") comes from address:port within timeout_ms */
int boot_ssh_banner(const char *address, unsigned port, int timeout_ms);
/* 1 if a running VM's guest answers ssh with its banner within
 * timeout_ms: through qemu's forward (ep), else (vz) at the address its
 * DHCP lease gives the settings' MAC. A lazy run's readiness (instance.c). */
int boot_ssh_answers(const boot_endpoints *ep, const boot_settings *s, int timeout_ms);

/* lazyrun.c: a lazy run's engine (lazy/) on an instance directory and the
 * NBD server its driver boots from (docs/lazy.md, "Running lazily") */
typedef struct boot_lazy boot_lazy;
/* Before a new lazy instance is made: 0 if the registry's manifest for
 * ref_text says this host can run its guest (or is not a strata layer,
 * which boot_lazy_start then refuses), else the refusal, with nothing made. */
int boot_lazy_check(const char *ref_text);
/* lazy_open of the registry name ref_text into dir (new, or a killed lazy
 * run's), with the local tag a pull gives it and a pull's host check, and
 * the server started on a socket in dir (or a shorter path); lines for the
 * instance go to log_path (appended) and note. */
int boot_lazy_start(store *st, const char *ref_text, const char *dir, const char *log_path,
                    int durable_on_flush, note_fn note, void *note_ctx, boot_lazy **out);
const char *boot_lazy_url(const boot_lazy *z); /* nbd+unix:///?socket=... */
void boot_lazy_layer(boot_lazy *z, store_id *out);
/* "STATE CHUNKS_HERE CHUNKS FILL_DONE FILL_TOTAL" for the run record (ps) */
void boot_lazy_status(boot_lazy *z, char *out, size_t n);
int boot_lazy_done(boot_lazy *z);  /* 1 once handed over */
int boot_lazy_wait(boot_lazy *z);  /* the fill's end: 0 once handed over, else why not */
/* the guest is ready (why: for the log): the boot profile ends */
void boot_lazy_ready(boot_lazy *z, const char *why);
void boot_lazy_close(boot_lazy *z); /* the server stopped, then the engine; NULL is fine */

#endif
