/*
 * tart-compatible VMs (boot.h): what the `tart` command's clone makes and
 * its run, stop, suspend and delete act on. A VM is a clone directory
 * STORE/tart/vms/NAME that persists between runs, as a tart VM directory
 * does; run, it is the instance "tart:NAME". Everything else is the
 * ordinary machinery: store_clone, boot_set, boot_run on a clone
 * directory, boot_suspend, boot_stop.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "../remote/remote.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PULLED_FILE "pulled"

int boot_tart_name_check(const char *name)
{
    size_t n = strlen(name);
    if (strchr(name, '/'))
        return boot_fail(EINVAL, "'%s' is a remote name: a local VM's name has no '/'", name);
    if (n == 0 || n > BOOT_TART_NAME_MAX || name[0] == '.' || name[0] == '-' ||
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != n)
        return boot_fail(EINVAL,
                         "bad VM name '%s': 1 to %d letters, digits, '.', '_' or '-', not starting "
                         "with '.' or '-'",
                         name, BOOT_TART_NAME_MAX);
    return 0;
}

/* STORE/tart, or STORE/tart/SUB, made if missing (boot_home_subdir; caller
 * frees; NULL with the error set) */
static char *tart_dir(store *st, const char *sub)
{
    char *d = boot_home_subdir(st, "tart");
    if (!d || !sub)
        return d;
    free(d);
    char name[64];
    snprintf(name, sizeof name, "tart/%s", sub);
    return boot_home_subdir(st, name);
}

/* The directory VM name has (or would have): STORE/tart/vms/ and the
 * first 20 hex digits of its name's SHA-256, which holds the name in
 * NAME_FILE. Not the name itself: tart names run long (Orchard's are
 * "orchard-NAME-UUID-N"), and a VM's control sockets live in its
 * directory, whose path must fit a socket address (104-108 bytes). */
#define NAME_FILE ".tart-name"
#define DIR_HEX 20

static int vm_path(store *st, const char *name, char *out, size_t n)
{
    int rc = boot_tart_name_check(name);
    if (rc)
        return rc;
    char *vms = tart_dir(st, "vms");
    if (!vms)
        return err_pass();
    char hex[65];
    sha256_hex(name, strlen(name), hex);
    snprintf(out, n, "%s/%.*s", vms, DIR_HEX, hex);
    free(vms);
    return 0;
}

/* the name dir holds (NAME_FILE), into out; -ENOENT if none */
static int dir_name(const char *dir, char *out, size_t n)
{
    char path[4300], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/" NAME_FILE, dir);
    if (file_read_all(path, BOOT_TART_NAME_MAX + 1, &text, &len)) {
        err_clear();
        return -ENOENT;
    }
    snprintf(out, n, "%.*s", (int)strcspn(text, "\n"), text);
    free(text);
    return 0;
}

static int write_name(const char *dir, const char *name)
{
    char text[BOOT_TART_NAME_MAX + 2];
    snprintf(text, sizeof text, "%s\n", name);
    return boot_write_atomic(dir, NAME_FILE, text);
}

static void instance_name(const char *name, char *out, size_t n)
{
    snprintf(out, n, "tart:%s", name);
}

/* apparent and allocated bytes of the bundle files in dir (not its dot files) */
static void dir_sizes(const char *dir, uint64_t *apparent, uint64_t *allocated)
{
    *apparent = *allocated = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        struct stat sb;
        if (e->d_name[0] == '.' || fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) ||
            !S_ISREG(sb.st_mode))
            continue;
        *apparent += (uint64_t)sb.st_size;
        *allocated += (uint64_t)sb.st_blocks * 512;
    }
    if (d)
        closedir(d);
}

/* 1 if dir holds a saved state the next run resumes: cloned with one
 * (suspend leaves it so) and its state file still there (a resume
 * consumes it, as tart's run does) */
static int holds_state(store *st, const char *dir)
{
    store_id state;
    const boot_driver *drv = boot_driver_find(boot_default_driver());
    if (!drv || store_instance_state(st, dir, &state))
        return 0;
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", dir, drv->state_file);
    return access(path, F_OK) == 0;
}

int boot_tart_find(store *st, const char *name, boot_tart_vm *out)
{
    memset(out, 0, sizeof *out);
    int rc = vm_path(st, name, out->dir, sizeof out->dir);
    if (rc)
        return rc;
    struct stat sb;
    char held[BOOT_TART_NAME_MAX + 2];
    if (stat(out->dir, &sb) || !S_ISDIR(sb.st_mode) || dir_name(out->dir, held, sizeof held) ||
        strcmp(held, name) || store_instance_layer(st, out->dir, &out->layer))
        return boot_fail(ENOENT, "the specified VM \"%s\" does not exist", name);
    snprintf(out->name, sizeof out->name, "%s", name);
    dir_sizes(out->dir, &out->disk_bytes, &out->allocated_bytes);
    out->accessed = (int64_t)sb.st_atime;
    char iname[BOOT_TART_NAME_MAX + 8];
    instance_name(name, iname, sizeof iname);
    boot_instance x;
    if (!boot_find_running(st, iname, &x)) {
        out->state = BOOT_TART_RUNNING;
        boot_instance_free(&x);
    } else {
        out->state = holds_state(st, out->dir) ? BOOT_TART_SUSPENDED : BOOT_TART_STOPPED;
    }
    boot_settings s = {0};
    if (!boot_settings_load(out->dir, &s)) {
        out->os_macos = s.os == BOOT_OS_MACOS;
        out->cpus = s.cpus;
        out->memory_mib = s.memory_mib;
        out->display_width = s.display_width;
        out->display_height = s.display_height;
    }
    boot_settings_free(&s);
    err_clear();
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const boot_tart_vm *)a)->name, ((const boot_tart_vm *)b)->name);
}

/* one pulled image, by the remote name it was pulled as, if the store still
 * has its local tag */
static int pulled_image(store *st, const char *remote_name, boot_tart_vm *out)
{
    remote_ref r;
    char tag[160];
    memset(out, 0, sizeof *out);
    if (remote_ref_parse(remote_name, 0, &r))
        return -EINVAL;
    int rc = r.tag ? remote_ref_local_tag(&r, tag, sizeof tag) : -EINVAL;
    remote_ref_free(&r);
    store_layer *l = NULL;
    if (rc || store_resolve(st, tag, &out->layer) || store_layer_load(st, &out->layer, &l))
        return -ENOENT;
    snprintf(out->name, sizeof out->name, "%s", remote_name);
    out->oci = 1;
    out->accessed = l->created;
    for (size_t i = 0; i < l->nfiles; i++) {
        out->disk_bytes += l->files[i].size;
        out->allocated_bytes += (uint64_t)l->files[i].ndata * l->files[i].chunk_size;
    }
    store_layer_free(l);
    return 0;
}

/* append e to *v (growing it); 0 or -ENOMEM */
static int push_entry(boot_tart_vm **v, size_t *n, const boot_tart_vm *e)
{
    boot_tart_vm *nv = realloc(*v, (*n + 1) * sizeof **v);
    if (!nv)
        return boot_oom();
    *v = nv;
    nv[(*n)++] = *e;
    return 0;
}

static int list_images(store *st, boot_tart_vm **v, size_t *n)
{
    char *dir = tart_dir(st, NULL);
    if (!dir)
        return err_pass();
    char path[4300], *text = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/" PULLED_FILE, dir);
    free(dir);
    if (file_read_all(path, 1 << 20, &text, &len))
        return 0; /* nothing pulled yet */
    size_t first = *n;
    int rc = 0;
    for (char *line = strtok(text, "\n"); line && !rc; line = strtok(NULL, "\n")) {
        boot_tart_vm e;
        if (!pulled_image(st, line, &e))
            rc = push_entry(v, n, &e);
    }
    free(text);
    if (*n > first)
        qsort(*v + first, *n - first, sizeof **v, cmp_name);
    err_clear();
    return rc;
}

int boot_tart_list(store *st, boot_tart_vm **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    char *vms = tart_dir(st, "vms");
    if (!vms)
        return err_pass();
    DIR *d = opendir(vms);
    struct dirent *e;
    int rc = 0;
    while (d && !rc && (e = readdir(d))) {
        boot_tart_vm vm;
        char path[4400], name[BOOT_TART_NAME_MAX + 2];
        snprintf(path, sizeof path, "%s/%s", vms, e->d_name);
        if (e->d_name[0] != '.' && !dir_name(path, name, sizeof name) && !boot_tart_find(st, name, &vm))
            rc = push_entry(out, n, &vm);
    }
    if (d)
        closedir(d);
    free(vms);
    if (*n) /* qsort takes no NULL, even for nothing */
        qsort(*out, *n, sizeof **out, cmp_name);
    if (!rc)
        rc = list_images(st, out, n);
    if (rc) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    err_clear();
    return rc;
}

int boot_tart_clone(store *st, const char *src, const char *name,
                    void (*note)(void *ctx, const char *line), void *ctx)
{
    char dir[4096];
    int rc = vm_path(st, name, dir, sizeof dir);
    if (rc)
        return rc;
    boot_tart_vm vm;
    if (!boot_tart_find(st, name, &vm))
        return boot_fail(EEXIST, "VM \"%s\" already exists (tart delete it first)", name);
    err_clear();
    if (access(dir, F_OK) == 0 && store_clone_delete(st, dir)) /* a clone cut short before its name */
        return err_pass();
    store_id from;
    if (!strchr(src, '/') && !boot_tart_name_check(src) && !boot_tart_find(st, src, &vm)) {
        /* another VM: its disk as it is now, committed (a running VM is
         * refused by the commit: its disk is being written) */
        store_commit_opts co = {.message = "tart clone", .note = note};
        co.progress_ctx = ctx;
        store_commit_result res;
        if (store_commit(st, vm.dir, &co, &res))
            return err_pass();
        from = res.id;
        note_send(note, ctx, "VM %s committed as layer %.12s to clone it", src, from.hex);
    } else {
        err_clear();
        boot_ref r;
        if ((rc = boot_resolve(st, src, &r)))
            return rc;
        from = r.id;
    }
    int reflinked;
    if (store_clone(st, from.hex, dir, &reflinked))
        return err_pass();
    /* two VMs on one network must not share a MAC (tart makes a new one
     * when another VM has it; strata always does, as for a run) */
    boot_set_opts so = {.target = dir, .mac = "auto", .note = note, .ctx = ctx};
    int made;
    store_id unused;
    if ((rc = write_name(dir, name)) || (rc = boot_set(st, &so, &made, &unused))) {
        char keep[ERR_MESSAGE_MAX];
        snprintf(keep, sizeof keep, "%s", err_last()->message);
        store_clone_delete(st, dir);
        return boot_fail(-rc, "%s", keep);
    }
    return 0;
}

/* drop the saved state files in dir: the next run boots */
static int drop_state(const char *dir)
{
    const boot_driver *drv = boot_driver_find(boot_default_driver());
    if (!drv)
        return err_pass();
    const char *one[2] = {drv->state_file, NULL};
    for (const char *const *f = drv->state_files ? drv->state_files : one; *f; f++) {
        char path[4300];
        snprintf(path, sizeof path, "%s/%s", dir, *f);
        if (unlink(path) < 0 && errno != ENOENT)
            return boot_fail_errno(errno, "%s", path);
    }
    return 0;
}

/* 1 if the saved state layer dir was cloned from is still in the store
 * (an untagged layer: gc's expiry may have taken it) */
static int state_kept(store *st, const char *dir)
{
    store_id s;
    store_layer *l = NULL;
    int kept = !store_instance_state(st, dir, &s) && !store_layer_load(st, &s, &l);
    store_layer_free(l);
    err_clear();
    return kept;
}

int boot_tart_run(store *st, const char *name, const boot_run_opts *o)
{
    boot_tart_vm vm;
    int rc = boot_tart_find(st, name, &vm);
    if (rc)
        return rc;
    if (vm.state == BOOT_TART_RUNNING)
        return boot_fail(EALREADY, "VM \"%s\" is already running!", name);
    boot_run_opts ro = *o;
    ro.target = vm.dir;
    ro.name = NULL;
    ro.resume = vm.state == BOOT_TART_SUSPENDED;
    if (ro.resume && !state_kept(st, vm.dir)) {
        note_send(o->note, o->ctx, "VM %s was suspended, but gc has removed its saved state: "
                                   "booting it fresh", name);
        if ((rc = drop_state(vm.dir)))
            return rc;
        ro.resume = 0;
    }
    ro.cold = !ro.resume;
    if (ro.resume)
        note_send(o->note, o->ctx, "VM %s was suspended: resuming it", name);
    char iname[BOOT_TART_NAME_MAX + 8];
    instance_name(name, iname, sizeof iname);
    return boot_run_named(st, &ro, iname);
}

/* VM name, which must be running */
static int find_running(store *st, const char *name, boot_tart_vm *vm, char *iname, size_t n)
{
    int rc = boot_tart_find(st, name, vm);
    if (rc)
        return rc;
    instance_name(name, iname, n);
    return vm->state == BOOT_TART_RUNNING ? 0 : boot_fail(ESRCH, "VM \"%s\" is not running", name);
}

int boot_tart_suspend(store *st, const char *name, store_id *state)
{
    boot_tart_vm vm;
    char iname[BOOT_TART_NAME_MAX + 8];
    int rc = find_running(st, name, &vm, iname, sizeof iname);
    if (!rc)
        rc = boot_suspend(st, iname, NULL, "tart suspend", state);
    if (rc)
        return rc;
    /* the directory becomes a clone of the saved state S, state files and
     * all, which the next run resumes in place */
    if (store_clone_delete(st, vm.dir) ||
        store_clone_saved_state(st, state->hex, vm.dir, &(int){0}) || write_name(vm.dir, name))
        return boot_fail(EIO, "VM %s was suspended into layer %.12s, but its directory could not "
                              "be made from it (%s): strata clone --with-state %.12s recovers it",
                         name, state->hex, err_last()->message, state->hex);
    return 0;
}

int boot_tart_stop(store *st, const char *name, int timeout_s, int *forced)
{
    boot_tart_vm vm;
    *forced = 0;
    int rc = boot_tart_find(st, name, &vm);
    if (rc)
        return rc;
    if (vm.state == BOOT_TART_SUSPENDED) /* tart's stop of a suspended VM drops its state */
        return drop_state(vm.dir);
    char iname[BOOT_TART_NAME_MAX + 8];
    if ((rc = find_running(st, name, &vm, iname, sizeof iname)))
        return rc;
    return boot_stop(st, iname, timeout_s, forced);
}

int boot_tart_delete(store *st, const char *name)
{
    boot_tart_vm vm;
    int rc = boot_tart_find(st, name, &vm);
    if (rc)
        return rc;
    if (vm.state == BOOT_TART_RUNNING)
        return boot_fail(EBUSY, "VM \"%s\" is running", name);
    return store_clone_delete(st, vm.dir) ? err_pass() : 0;
}

int boot_tart_random_serial(store *st, const char *name, int *changed)
{
    boot_tart_vm vm;
    *changed = 0;
    int rc = boot_tart_find(st, name, &vm);
    if (rc || !vm.os_macos)
        return rc;
    char path[4300];
    snprintf(path, sizeof path, "%s/MachineIdentifier", vm.dir);
    if (access(path, F_OK) != 0)
        return 0; /* none yet: the hypervisor makes a fresh one */
    uint64_t ecid = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, &ecid, sizeof ecid) : -1;
    if (fd >= 0)
        close(fd);
    if (got != (ssize_t)sizeof ecid)
        return boot_fail_errno(errno ? errno : EIO, "/dev/urandom");
    /* below 2^63, as every plist reader takes an 8-byte integer alike */
    if (store_write_machine_identifier(path, (ecid & INT64_MAX) | 1))
        return err_pass();
    *changed = 1;
    return 0;
}

int boot_tart_remember_pull(store *st, const char *remote_name)
{
    remote_ref r;
    if (remote_ref_parse(remote_name, 0, &r))
        return err_pass();
    int has_tag = r.tag != NULL;
    remote_ref_free(&r);
    if (!has_tag || strchr(remote_name, '\n'))
        return 0; /* a digest names no tag to list */
    char *dir = tart_dir(st, NULL);
    if (!dir)
        return err_pass();
    char path[4300], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/" PULLED_FILE, dir);
    if (file_read_all(path, 1 << 20, &text, &len)) {
        err_clear();
        text = NULL;
        len = 0;
    }
    int rc = 0;
    size_t k = strlen(remote_name);
    int known = 0;
    for (const char *p = text; p && *p && !known; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        known = !strncmp(p, remote_name, k) && (p[k] == '\n' || !p[k]);
    if (!known) {
        char *all = NULL;
        if (asprintf(&all, "%.*s%s%s\n", (int)len, text ? text : "",
                     len && text[len - 1] != '\n' ? "\n" : "", remote_name) < 0)
            rc = boot_oom();
        else
            rc = boot_write_atomic(dir, PULLED_FILE, all);
        free(all);
    }
    free(text);
    free(dir);
    return rc;
}
