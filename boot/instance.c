/*
 * Instances: a VM always runs in a fresh clone of a layer, so the layer is
 * never written and can be started or resumed again and again, each time
 * from the same point. The process that starts an instance supervises it;
 * `suspend` and `stop` write a request file into the instance and signal
 * that process (SIGUSR1, SIGTERM), which works the same for a qemu child
 * and for a VZ machine living inside the process.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "../base/platform.h"
#include "../lazy/lazy.h"

#include <dirent.h>
#include <ftw.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want_suspend, want_stop;

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        want_suspend = 1;
    else
        want_stop = 1;
}

/* ---------- small files in an instance ---------- */

/* a record or side file's text (at most 8 KiB), or NULL: an empty one is
 * no record */
static char *read_record(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(path, 8191, &text, &len) == 0 && len == 0) {
        free(text);
        text = NULL;
    }
    return text;
}

static char *read_small(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return read_record(path);
}

/* value of "key value" line in text, copied into out */
static int field(const char *text, const char *key, char *out, size_t n)
{
    size_t k = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (!strncmp(p, key, k) && p[k] == ' ') {
            const char *v = p + k + 1;
            size_t len = strcspn(v, "\n");
            if (len >= n)
                len = n - 1;
            memcpy(out, v, len);
            out[len] = 0;
            return 0;
        }
    }
    out[0] = 0;
    return -1;
}

/* 1 if pid is a process that has not ended: a zombie has (its parent may
 * be slow to reap it, as a container's init can be) */
static int pid_alive(int pid)
{
    if (pid <= 0 || (kill(pid, 0) < 0 && errno != EPERM))
        return 0;
    return !os_pid_is_zombie(pid);
}

/* ---------- running records (boot.h) ---------- */

/* Open and flock lock_name in the running dir without waiting: 0 with *fd,
 * -EBUSY if another process holds it. */
static int lock_running(store *st, const char *lock_name, int *fd)
{
    *fd = -1;
    char *dir = boot_running_dir(st);
    if (!dir)
        return err_pass();
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", dir, lock_name);
    free(dir);
    /* lock files are never removed: unlinking one another process has open
     * would let two hold "the" lock */
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (f < 0)
        return boot_fail_errno(errno, "%s", path);
    if (flock(f, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(f);
        return e == EWOULDBLOCK ? -EBUSY : boot_fail_errno(e, "%s", path);
    }
    *fd = f;
    return 0;
}

/* 1 if a live process holds lock_name (so its record is true), else 0 */
static int lock_held(const char *running, const char *lock_name)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", running, lock_name);
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (f < 0)
        return 0;
    int held = flock(f, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
    close(f);
    return held;
}

typedef struct {
    store *st;
    const char *name, *dir, *layer, *driver, *resumed_from;
    boot_endpoints ep; /* known once the VM runs */
    boot_lazy *lazy;   /* a lazy run's engine: its fill's progress goes in the record */
} run_record;

static int write_run(const run_record *r, int vm_pid, const char *state)
{
    char text[5400], file[300];
    int len = snprintf(text, sizeof text,
             "name %s\npid %d\nvm-pid %d\nlayer %s\ndriver %s\nresumed-from %s\nstate %s\ndir %s\n",
             r->name, (int)getpid(), vm_pid, r->layer, r->driver,
             r->resumed_from ? r->resumed_from : "-", state, r->dir);
    if (r->ep.ssh_port && len > 0 && (size_t)len < sizeof text)
        len += snprintf(text + len, sizeof text - (size_t)len, "ssh %s %u\n", r->ep.ssh_host, r->ep.ssh_port);
    if (r->ep.vnc_port && len > 0 && (size_t)len < sizeof text)
        len += snprintf(text + len, sizeof text - (size_t)len, "vnc %s %u\n", r->ep.vnc_host, r->ep.vnc_port);
    if (r->lazy && len > 0 && (size_t)len < sizeof text) {
        char status[160];
        boot_lazy_status(r->lazy, status, sizeof status);
        snprintf(text + len, sizeof text - (size_t)len, "lazy %s\n", status);
    }
    snprintf(file, sizeof file, "%s.run", r->name);
    char *running = boot_running_dir(r->st);
    int rc = running ? boot_write_atomic(running, file, text) : err_pass();
    free(running);
    return rc;
}

static void remove_run(store *st, const char *name)
{
    char *running = boot_running_dir(st);
    if (!running)
        return;
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.run", running, name);
    unlink(path);
    free(running);
}

static int remove_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void remove_tree(const char *dir)
{
    nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Requests and results sit beside the instance, not in it, so they survive
 * an ephemeral instance's removal: <parent>/.<name>.<what> */
static void side_path(const char *dir, const char *what, char *out, size_t n)
{
    const char *slash = strrchr(dir, '/');
    if (slash)
        snprintf(out, n, "%.*s/.%s.%s", (int)(slash - dir), dir, slash + 1, what);
    else
        snprintf(out, n, ".%s.%s", dir, what);
}

static int write_side(const char *dir, const char *what, const char *text)
{
    char path[4300];
    side_path(dir, what, path, sizeof path);
    return atomic_file_write_all(path, text, strlen(text), 0644, 0);
}

static char *read_side(const char *dir, const char *what)
{
    char path[4300];
    side_path(dir, what, path, sizeof path);
    return read_record(path);
}

static void remove_side(const char *dir, const char *what)
{
    char path[4300];
    side_path(dir, what, path, sizeof path);
    unlink(path);
}

/* ---------- ps ---------- */

/* "ssh HOST PORT" and "vnc HOST PORT" lines of a run record */
static void read_endpoints(const char *run, boot_endpoints *ep)
{
    char v[128];
    memset(ep, 0, sizeof *ep);
    if (!field(run, "ssh", v, sizeof v) && sscanf(v, "%63s %u", ep->ssh_host, &ep->ssh_port) != 2)
        memset(ep, 0, sizeof *ep);
    if (!field(run, "vnc", v, sizeof v) && sscanf(v, "%63s %u", ep->vnc_host, &ep->vnc_port) != 2)
        ep->vnc_host[0] = 0, ep->vnc_port = 0;
}

int boot_ps(store *st, boot_instance **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    char *running = boot_running_dir(st);
    DIR *d = running ? opendir(running) : NULL;
    if (!d) {
        free(running);
        return 0;
    }
    boot_instance *v = NULL;
    size_t cnt = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 5 || strcmp(e->d_name + len - 4, ".run"))
            continue;
        char lock_name[300];
        snprintf(lock_name, sizeof lock_name, "%.*s.lock", (int)(len - 4), e->d_name);
        char *run = read_small(running, e->d_name);
        char name[256], dir[4096], pid[32], vm_pid[32], layer[80], driver[16], from[80], state[16];
        if (!run)
            continue;
        /* a record whose lock no one holds is stale: its pid may be anyone's
         * now. Holding that lock, it is ours to remove: a new supervisor
         * takes the lock before it writes its record. */
        if (!lock_held(running, lock_name)) {
            int fd;
            if (lock_running(st, lock_name, &fd) == 0) {
                char stale[4400];
                snprintf(stale, sizeof stale, "%s/%s", running, e->d_name);
                unlink(stale);
                close(fd);
            }
            free(run);
            continue;
        }
        field(run, "name", name, sizeof name);
        field(run, "dir", dir, sizeof dir);
        field(run, "pid", pid, sizeof pid);
        field(run, "vm-pid", vm_pid, sizeof vm_pid);
        field(run, "layer", layer, sizeof layer);
        field(run, "driver", driver, sizeof driver);
        field(run, "resumed-from", from, sizeof from);
        field(run, "state", state, sizeof state);
        boot_endpoints ep;
        read_endpoints(run, &ep);
        char lazy[160];
        field(run, "lazy", lazy, sizeof lazy);
        free(run);
        boot_instance *nv = realloc(v, (cnt + 1) * sizeof *v);
        if (!nv)
            break;
        v = nv;
        boot_instance *x = &v[cnt++];
        memset(x, 0, sizeof *x);
        x->name = strdup(name);
        x->dir = strdup(dir);
        x->layer = strdup(layer);
        x->driver = strdup(driver);
        x->resumed_from = strdup(strcmp(from, "-") ? from : "");
        x->pid = atoi(pid);
        x->vm_pid = atoi(vm_pid);
        snprintf(x->state, sizeof x->state, "%s", state);
        x->ep = ep;
        unsigned long long here, chunks, done, total;
        char lstate[12];
        if (sscanf(lazy, "%11s %llu %llu %llu %llu", lstate, &here, &chunks, &done, &total) == 5) {
            snprintf(x->lazy_state, sizeof x->lazy_state, "%s", lstate);
            x->lazy_chunks_here = here, x->lazy_chunks = chunks;
            x->lazy_fill_done = done, x->lazy_fill_total = total;
        }
    }
    closedir(d);
    free(running);
    *out = v;
    *n = cnt;
    return 0;
}

void boot_ps_free(boot_instance *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].dir);
        free(v[i].layer);
        free(v[i].driver);
        free(v[i].resumed_from);
    }
    free(v);
}

/* ---------- run ---------- */

#define note(o, ...) note_send((o)->note, (o)->ctx, __VA_ARGS__)

static const char *binding(const store_layer *l, const char *key)
{
    for (size_t i = 0; i < l->nbindings; i++)
        if (!strcmp(l->bindings[i].key, key))
            return l->bindings[i].value;
    return NULL;
}

static const store_file *layer_file(const store_layer *l, const char *name)
{
    for (size_t i = 0; i < l->nfiles; i++)
        if (!strcmp(l->files[i].name, name))
            return &l->files[i];
    return NULL;
}

/* Check what a saved state is bound to against where it would resume,
 * before asking the hypervisor: a clear refusal beats a cryptic one. */
static int check_bindings(const store_layer *l, const char *driver, const char *bundle_dir,
                          const boot_settings *s)
{
    boot_binding *now;
    size_t n;
    int rc = boot_bindings_now(driver, bundle_dir, s, &now, &n);
    if (rc)
        return rc;
    static const char *const what[][2] = {{"driver", "driver"},       {"host", "host"},
                                          {"user", "user"},           {"os-build", "OS build"},
                                          {"config-hash", "configuration"},
                                          {"mac", "MAC address"},     {"machine-id", "machine identifier"},
                                          {"devices", "device set"}};
    for (size_t k = 0; !rc && k < sizeof what / sizeof *what; k++) {
        const char *saved = binding(l, what[k][0]);
        const char *here = NULL;
        for (size_t i = 0; i < n; i++)
            if (!strcmp(now[i].key, what[k][0]))
                here = now[i].value;
        if (!saved && !here && !strcmp(what[k][0], "devices"))
            continue; /* a driver that doesn't describe its devices */
        if (!saved)
            rc = boot_fail(EINVAL, "layer %.12s: its saved state records no %s; boot it with --cold",
                           l->id.hex, what[k][1]);
        else if (!here || strcmp(saved, here))
            rc = boot_fail(EINVAL,
                           "can't resume layer %.12s: its state was saved with %s '%s', this is "
                           "'%s'; boot it fresh with --cold",
                           l->id.hex, what[k][1], saved, here ? here : "unknown");
    }
    boot_bindings_free(now, n);
    return rc;
}

static void random_name(const char *target, char *out, size_t n)
{
    char base[64];
    size_t k = 0;
    for (const char *p = target; *p && k < 40; p++)
        base[k++] = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ? *p : '-';
    base[k] = 0;
    char mac[18];
    boot_mac_random(mac); /* six random bytes, reused as a suffix */
    snprintf(out, n, "%s-%c%c%c%c", base, mac[12], mac[13], mac[15], mac[16]);
}

static int name_valid(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 64 && s[0] != '.' && s[0] != '-' &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

/* every bundle file a saved state of drv consists of */
static const char *const *state_files(const boot_driver *drv, size_t *n)
{
    static __thread const char *one[2];
    const char *const *v = drv->state_files;
    if (!v) {
        one[0] = drv->state_file;
        one[1] = NULL;
        v = one;
    }
    for (*n = 0; v[*n]; (*n)++)
        ;
    return v;
}

static void unlink_state(const boot_driver *drv, const char *dir)
{
    size_t n;
    const char *const *v = state_files(drv, &n);
    for (size_t i = 0; i < n; i++) {
        char path[4300];
        snprintf(path, sizeof path, "%s/%s", dir, v[i]);
        unlink(path);
    }
}

static int cmp_binding(const void *a, const void *b)
{
    return strcmp(((const store_binding *)a)->key, ((const store_binding *)b)->key);
}

/* The bindings for the store, with the kind of state the driver saved
 * (state-kind), sorted as the store wants them. */
static size_t with_kind(const boot_driver *drv, boot_vm *vm, const boot_binding *b, size_t nb,
                        store_binding *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < nb && n < max; i++, n++) {
        out[n].key = b[i].key;
        out[n].value = b[i].value;
    }
    const char *kind = drv->state_kind ? drv->state_kind(vm) : NULL;
    if (kind && n < max) {
        out[n].key = "state-kind";
        out[n++].value = (char *)kind;
    }
    qsort(out, n, sizeof *out, cmp_binding);
    return n;
}

/* The chunk size each state file is first stored at (the driver's). */
static void state_chunking(const boot_driver *drv, const boot_settings *s,
                           store_file_chunking *out, size_t max, store_commit_opts *co)
{
    size_t n;
    const char *const *names = state_files(drv, &n);
    for (size_t i = 0; drv->state_chunk_size && i < n && co->nfile_chunks < max; i++) {
        uint32_t cs = drv->state_chunk_size(s, names[i]);
        if (cs)
            out[co->nfile_chunks++] = (store_file_chunking){names[i], cs};
    }
    co->file_chunks = out;
}

/* Once the VM is paused, the store starts hashing the state files already
 * final (drv->final_at_pause): that overlaps the save, the VM's exit and
 * D's commit. NULL if none. */
static store_state_hashing *hash_at_pause(store *st, const boot_driver *drv, boot_vm *vm,
                                          const char *dir, const store_commit_opts *co)
{
    size_t n, k = 0;
    const char *const *names = state_files(drv, &n);
    const char *final[8];
    for (size_t i = 0; drv->final_at_pause && i < n && k < 8; i++)
        if (drv->final_at_pause(vm, names[i]))
            final[k++] = names[i];
    return k ? store_state_hashing_start(st, dir, final, k, co) : NULL;
}

/* the supervisor's side of suspend: pause, save, stop, commit D and S */
static int do_suspend(store *st, const boot_driver *drv, boot_vm *vm, const char *dir,
                      const boot_settings *s, const store_busy *busy, boot_lazy *lazy)
{
    boot_settings own;
    if (lazy) {
        /* the layer must be in the store and the instance a clone of it
         * before its disk can be committed: the fill ends first */
        int rc = boot_lazy_wait(lazy);
        if (rc)
            return rc;
        own = *s;
        own.disk_nbd = NULL; /* handed over: the export serves the instance's own Disk.img */
        s = &own;
    }
    char *req = read_side(dir, "suspend-request");
    char tag[160] = "", msg[600] = "";
    if (req) {
        field(req, "tag", tag, sizeof tag);
        field(req, "message", msg, sizeof msg);
        free(req);
    }
    char state_path[4300];
    snprintf(state_path, sizeof state_path, "%s/%s", dir, drv->state_file);
    if (drv->savable && !drv->savable(vm))
        return boot_fail(ENOTSUP, "this VM runs without save/restore support (see the note when it "
                                  "started), so it can't be suspended; it goes on running");
    if (s->disk_nbd) /* the state would not hold its disk; the instance's Disk.img is not it */
        return boot_fail(ENOTSUP, "this VM's boot disk is the NBD export %s, outside the instance, "
                                  "so it can't be suspended; it goes on running", s->disk_nbd);
    store_commit_opts co = {.message = msg[0] ? msg : "suspend", .tag = tag[0] ? tag : NULL,
                            .busy = busy};
    store_file_chunking chunking[8];
    state_chunking(drv, s, chunking, 8, &co);
    int rc = drv->pause(vm);
    store_state_hashing *early = rc ? NULL : hash_at_pause(st, drv, vm, dir, &co);
    if (!rc)
        rc = drv->save(vm, state_path);
    if (rc) {
        char keep[1024];
        snprintf(keep, sizeof keep, "%s", boot_error());
        store_state_hashing_free(early);
        drv->resume(vm); /* the VM goes on running if it can't be saved */
        return boot_fail(EIO, "%s", keep);
    }
    drv->stop(vm, 1);
    boot_binding *b;
    size_t nb, nstate;
    if ((rc = boot_bindings_now(drv->name, dir, s, &b, &nb))) {
        store_state_hashing_free(early);
        return rc;
    }
    store_binding sb[16];
    co.bindings = sb;
    co.nbindings = with_kind(drv, vm, b, nb, sb, 16);
    co.hashed = early;
    store_commit_result disk, saved;
    const char *const *names = state_files(drv, &nstate);
    rc = store_commit_saved_state(st, dir, names, nstate, &co, &disk, &saved);
    store_state_hashing_free(early);
    boot_bindings_free(b, nb);
    if (rc)
        return err_pass();
    char text[128];
    snprintf(text, sizeof text, "ok %s\n", saved.id.hex);
    return write_side(dir, "suspend-result", text);
}

/* Before anything is made: the saved state exists, fits this host, and no
 * other instance runs from it (its lock, held until this run ends). */
static int check_resume(store *st, const boot_run_opts *o, const boot_driver *drv,
                        const store_layer *layer, int from_dir, const char *dir, int *state_lock)
{
    const store_id *lid = &layer->id;
    if (!layer_file(layer, drv->state_file) || !layer->nbindings)
        return boot_fail(ENOENT, "layer %.12s has no saved %s state to resume (suspend an instance into a layer first)",
                         lid->hex, drv->name);
    /* a kind the driver can't restore here: refused now, or with
     * --fallback-cold left to the start, which then boots fresh */
    if (drv->can_restore && drv->can_restore(binding(layer, "state-kind")) && !o->fallback_cold)
        return -EINVAL;
    /* check against the layer's own files */
    boot_settings s = {0};
    char *probe = store_layer_file_path(st, lid, BOOT_SETTINGS_FILE);
    char *slash = probe ? strrchr(probe, '/') : NULL;
    if (slash)
        *slash = 0;
    const char *settings_dir = from_dir ? dir : probe;
    int rc = probe ? boot_settings_load(settings_dir, &s) : -ENOMEM;
    if (!rc)
        rc = check_bindings(layer, drv->name, settings_dir, &s);
    free(probe);
    boot_settings_free(&s);
    if (rc || o->allow_duplicate)
        return rc;
    char lock_name[128];
    snprintf(lock_name, sizeof lock_name, "%s.state-lock", lid->hex);
    rc = lock_running(st, lock_name, state_lock);
    if (rc != -EBUSY)
        return rc;
    boot_instance *v;
    size_t n;
    char who[300] = "another instance";
    boot_ps(st, &v, &n);
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].resumed_from, lid->hex))
            snprintf(who, sizeof who, "instance %s", v[i].name);
    boot_ps_free(v, n);
    return boot_fail(EBUSY,
                     "%s already runs from this saved state (same MAC and identity); stop it or "
                     "pass --allow-duplicate",
                     who);
}

/* A cold boot: a fresh MAC for a new clone, the sizes asked for, no state,
 * and maybe a fresh machine identifier. */
/* a fresh ECID in the bundle's MachineIdentifier plist, if it has one */
static int fresh_ecid(const boot_run_opts *o, const char *dir, const boot_settings *s)
{
    char mid[4200];
    snprintf(mid, sizeof mid, "%s/MachineIdentifier", dir);
    if (access(mid, F_OK) != 0) {
        if (s->os == BOOT_OS_MACOS)
            note(o, "no MachineIdentifier in this bundle: the hypervisor makes a fresh one");
        return 0;
    }
    uint64_t ecid = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, &ecid, sizeof ecid) != sizeof ecid)
        ecid = (uint64_t)time(NULL) * 2654435761u;
    /* below 2^63: libplist writes 8-byte integers, which every plist reader
     * (CoreFoundation too) takes as the same number */
    ecid = (ecid & INT64_MAX) | 1;
    if (fd >= 0)
        close(fd);
    return store_write_machine_identifier(mid, ecid) ? err_pass() : 0;
}

static int prepare_cold(const boot_run_opts *o, const boot_driver *drv, const char *dir,
                        int cloned, boot_settings *s)
{
    /* a new machine on the network: never share a MAC with the layer it
     * came from (a clone directory run again keeps its own); and a VM that
     * may be saved needs one recorded */
    if (cloned || !s->mac[0])
        boot_mac_random(s->mac);
    if (o->cpus)
        s->cpus = o->cpus;
    if (o->memory_mib)
        s->memory_mib = o->memory_mib;
    int rc = boot_run_devices(o, s);
    if (!rc)
        rc = boot_settings_save(dir, s);
    if (rc)
        return rc;
    unlink_state(drv, dir); /* a state never outlives the disk it was saved with */
    if (!o->new_identity)
        return 0;
    if (s->os == BOOT_OS_LINUX) {
        /* a Linux guest's identity is VZGenericMachineIdentifier's data:
         * without the file, the vz driver makes and keeps a fresh one */
        char gid[4200];
        snprintf(gid, sizeof gid, "%s/" BOOT_GENERIC_ID_FILE, dir);
        if (unlink(gid) < 0 && errno != ENOENT)
            return boot_fail_errno(errno, "%s", gid);
        if (!strcmp(drv->name, "vz"))
            note(o, "a fresh generic machine identifier is made when the VM starts");
    }
    /* a MachineIdentifier is an ECID plist whatever the guest (a Linux
     * bundle under qemu may carry one too) */
    return fresh_ecid(o, dir, s);
}

/* Start the VM; with --fallback-cold, boot fresh if the state is refused. */
static int start_vm(const boot_run_opts *o, const boot_driver *drv, const char *dir,
                    boot_settings *s, boot_start_opts *so, boot_vm **vm)
{
    int rc = drv->start(so, vm);
    if (rc && o->resume && o->fallback_cold) {
        note(o, "%s; booting fresh instead (--fallback-cold)", boot_error());
        unlink_state(drv, dir);
        boot_mac_random(s->mac);
        boot_settings_save(dir, s);
        /* the driver's copy of the settings (run-time shares) gets it too */
        memcpy(((boot_settings *)so->settings)->mac, s->mac, sizeof s->mac);
        so->restore_state = NULL;
        rc = drv->start(so, vm);
    } else if (rc && o->resume) {
        char keep[1024];
        snprintf(keep, sizeof keep, "%s", boot_error());
        rc = boot_fail(EIO, "%s (pass --fallback-cold to boot fresh instead)", keep);
    }
    return rc;
}

/* a lazy run's guest is ready when it answers ssh with its banner, or its
 * console shows a login prompt, or at this limit (seconds), whichever
 * comes first: the boot profile ends there (lazy_ready) */
#define LAZY_READY_LIMIT_S 120

typedef struct {
    time_t started, last;
    int ready;
    const char *state; /* the record's state, rewritten with the fill's progress */
} lazy_watch;

/* 1 if the console log's last 4 KiB show a login prompt */
static int console_at_login(const char *dir)
{
    char path[4300], buf[4097];
    snprintf(path, sizeof path, "%s/.console.log", dir);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    if (fseek(f, -4096, SEEK_END) < 0)
        rewind(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (!buf[i])
            buf[i] = ' ';
    buf[n] = 0;
    return strstr(buf, "login: ") != NULL;
}

/* once a second: the fill's progress into the run record (ps), and the
 * guest's readiness to the engine */
static void lazy_tick(const boot_driver *drv, boot_vm *vm, const char *dir, const boot_settings *s,
                      const run_record *r, lazy_watch *w)
{
    time_t now = time(NULL);
    if (!r->lazy || now == w->last)
        return;
    w->last = now;
    write_run(r, drv->pid(vm), w->state);
    if (w->ready)
        return;
    const char *why = boot_ssh_answers(&r->ep, s, 250) ? "its ssh server answered"
                      : console_at_login(dir)          ? "its console shows a login prompt"
                      : now - w->started >= LAZY_READY_LIMIT_S ? "the time limit passed"
                                                                : NULL;
    if (why) {
        w->ready = 1;
        boot_lazy_ready(r->lazy, why);
    }
}

/* Until the VM stops: suspend and stop requests. Returns 1 if the VM
 * stopped with a state that could not be committed. */
static int supervise(store *st, const boot_driver *drv, boot_vm *vm, const char *dir,
                     const boot_settings *s, const store_busy *busy, const run_record *r)
{
    long stop_deadline = 0;
    int keep = 0, forced = 0;
    lazy_watch w = {.started = time(NULL), .state = "running"};
    while (drv->alive(vm)) {
        lazy_tick(drv, vm, dir, s, r, &w);
        if (want_suspend) {
            want_suspend = 0;
            write_run(r, drv->pid(vm), "suspending");
            int rc = do_suspend(st, drv, vm, dir, s, busy, r->lazy);
            if (!rc)
                break; /* saved and stopped: `strata suspend` waits for this process to end */
            if (!drv->alive(vm))
                keep = 1; /* stopped but not committed: the state lives only here */
            char text[1200];
            snprintf(text, sizeof text, "error %s\n", boot_error());
            write_side(dir, "suspend-result", text);
            write_run(r, drv->pid(vm), "running");
        }
        if (want_stop && !stop_deadline) {
            char *req = read_side(dir, "stop-request");
            char t[32] = "30";
            if (req)
                field(req, "timeout", t, sizeof t);
            free(req);
            stop_deadline = (long)time(NULL) + atol(t);
            write_run(r, drv->pid(vm), w.state = "stopping");
            drv->stop(vm, atol(t) <= 0);
        }
        if (stop_deadline && time(NULL) >= stop_deadline && !forced) {
            /* the guest ignored the power button: `strata stop` says so */
            write_side(dir, "stop-result", "forced\n");
            drv->stop(vm, 1);
            forced = 1;
        }
        if (drv->wait)
            drv->wait(vm, 100); /* vz: its window's events */
        else
            usleep(100 * 1000);
    }
    return keep;
}

static void catch_signals(void (*handler)(int))
{
    struct sigaction sa = {.sa_handler = handler, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* What one run holds, for its steps and for the clean-up after them. */
typedef struct {
    char dir[4096], name[256];
    store_id lid;
    store_layer *layer;
    boot_settings s, eff; /* eff: s with the shares this run may open */
    store_busy busy;
    int from_dir, cloned, keep, recorded, name_lock, state_lock;
    char lazy_ref[600]; /* a lazy run's registry name ("" for any other run) */
    boot_lazy *lazy;    /* its engine and NBD server, for the supervisor's life */
} run_state;

/* What a run starts from: the clone directory target (its layer, or for
 * --resume the saved state it was cloned with) or a layer ref. */
static int resolve_target(store *st, const boot_run_opts *o, const char *instance_name,
                          run_state *x)
{
    boot_ref r;
    int rc = boot_resolve(st, o->target, &r);
    if (rc)
        return rc;
    x->lid = r.id;
    x->from_dir = r.kind == BOOT_REF_CLONE;
    if (!x->from_dir)
        return 0;
    snprintf(x->dir, sizeof x->dir, "%s", r.dir);
    /* a clone made before saved states had their own layer names no state:
     * its layer is the old one-layer saved state itself */
    store_id state;
    if (o->resume && !store_instance_state(st, x->dir, &state))
        x->lid = state;
    const char *slash = strrchr(x->dir, '/');
    snprintf(x->name, sizeof x->name, "%.200s",
             instance_name ? instance_name : slash ? slash + 1 : x->dir);
    return 0;
}

/* run's device options, checked before anything is made: a saved state
 * keeps the devices it was saved with */
static int check_run_devices(const boot_run_opts *o)
{
    int devices = o->disk_caching || o->disk_sync || o->disk_bus || o->rosetta ||
                  o->display_reconfigure;
    if (o->resume && (devices || o->disk_nbd))
        return boot_fail(EINVAL, "a saved state keeps the devices it was saved with: --disk-*, "
                                 "--rosetta and --display-reconfigure need --cold");
    int rc = o->disk_nbd ? boot_nbd_url_check(o->disk_nbd, "--disk-nbd") : 0;
    if (rc)
        return rc;
    /* the names, on settings of a guest that takes them all */
    boot_settings probe = {.os = BOOT_OS_LINUX};
    rc = devices ? boot_run_devices(o, &probe) : 0;
    free(probe.rosetta);
    return rc;
}

static int check_run_opts(const boot_run_opts *o, const boot_driver **drv)
{
    const char *driver_name = o->driver ? o->driver : boot_default_driver();
    if (!(*drv = boot_driver_find(driver_name)))
        return err_pass();
    if (o->resume && o->cold)
        return boot_fail(EINVAL, "--resume and --cold contradict each other");
    if (o->resume && (o->cpus || o->memory_mib))
        return boot_fail(EINVAL, "a saved state can't change --cpus or --memory; use --cold");
    if (o->name && !name_valid(o->name))
        return boot_fail(EINVAL, "bad instance name '%s': letters, digits, '.', '_', '-'", o->name);
    return check_run_devices(o);
}

/* The name an instance runs under, held by this process (its lock beside
 * the run records) for as long as it runs; a fresh instance is named first:
 * --name, else a random name made from what it runs (source). */
static int name_and_lock(store *st, const boot_run_opts *o, const char *source, int fresh,
                         run_state *x)
{
    if (fresh && o->name)
        snprintf(x->name, sizeof x->name, "%s", o->name);
    else if (fresh)
        random_name(source, x->name, sizeof x->name);
    char lock_name[300];
    snprintf(lock_name, sizeof lock_name, "%s.lock", x->name);
    int rc = lock_running(st, lock_name, &x->name_lock);
    if (rc == -EBUSY)
        return boot_fail(EEXIST, "an instance named %s is running; pick another --name", x->name);
    return rc;
}

/* a fresh instance's directory, STORE/vms/NAME, into x->dir: not there yet */
static int new_instance_dir(store *st, run_state *x)
{
    char *vms = boot_instances_dir(st);
    if (!vms)
        return err_pass();
    snprintf(x->dir, sizeof x->dir, "%s/%s", vms, x->name);
    free(vms);
    if (access(x->dir, F_OK) == 0)
        return boot_fail(EEXIST, "instance %s exists (%s); pick another --name", x->name, x->dir);
    return 0;
}

/* the instance directory's busy lock, naming what holds it */
static int hold_busy(run_state *x)
{
    char holder[400];
    snprintf(holder, sizeof holder, "running instance %s; strata suspend or stop it first", x->name);
    return store_busy_take(x->dir, holder, &x->busy) ? err_pass() : 0;
}

/* a new instance directory, STORE/vms/NAME, cloned from the layer */
static int clone_instance(store *st, const boot_run_opts *o, run_state *x)
{
    int rc = new_instance_dir(st, x);
    if (rc)
        return rc;
    note(o, "instance %s: cloning layer %.12s", x->name, x->lid.hex);
    int reflinked;
    if ((o->resume ? store_clone_saved_state : store_clone)(st, x->lid.hex, x->dir, &reflinked))
        return err_pass();
    x->cloned = 1;
    return 0;
}

/* the instance's name and directory, held by this process: its name lock,
 * the saved state's lock for a resume, and the clone's busy lock */
static int claim_instance(store *st, const boot_run_opts *o, const boot_driver *drv, run_state *x)
{
    int rc;
    if (o->resume &&
        (rc = check_resume(st, o, drv, x->layer, x->from_dir, x->dir, &x->state_lock)))
        return rc;
    if ((rc = name_and_lock(st, o, o->target, !x->from_dir, x)))
        return rc;
    if (!x->from_dir && (rc = clone_instance(st, o, x)))
        return rc;
    return hold_busy(x);
}

/* the settings the VM starts with: a cold boot's fresh MAC (and identity),
 * and only the shares this host decided on */
static int ready_settings(store *st, const boot_run_opts *o, const boot_driver *drv, run_state *x)
{
    int rc = boot_settings_load(x->dir, &x->s);
    if (!rc && !o->resume)
        rc = prepare_cold(o, drv, x->dir, x->cloned, &x->s);
    if (!rc)
        rc = boot_run_shares(st, &x->lid, &x->s, o->shares, o->nshares, o->note, o->ctx, &x->eff);
    if (!rc)
        rc = boot_run_nbd(st, &x->lid, &x->s, x->lazy ? boot_lazy_url(x->lazy) : o->disk_nbd,
                          &x->eff);
    return rc;
}

/* ---------- lazy runs (docs/lazy.md, "Running lazily") ---------- */

/* target names a lazy run's instance not yet handed over (a killed run's):
 * vms/NAME or its directory, whose .lazy/ is there and whose side record
 * keeps the registry name it was made from. 1 with x's dir, name and
 * lazy_ref set, else 0. */
static int lazy_instance(store *st, const char *target, const char *instance_name, run_state *x)
{
    char dir[4096], path[4300];
    if (strchr(target, '/') || !strcmp(target, ".")) {
        if (!realpath(target, dir))
            return 0;
    } else {
        char *vms = name_valid(target) ? boot_instances_dir(st) : NULL;
        if (!vms)
            return 0;
        snprintf(dir, sizeof dir, "%.4000s/%s", vms, target);
        free(vms);
    }
    struct stat sb;
    snprintf(path, sizeof path, "%s/" LAZY_DIR, dir);
    if (stat(path, &sb) || !S_ISDIR(sb.st_mode))
        return 0;
    char *ref = read_side(dir, "lazy-ref");
    if (!ref)
        return 0;
    ref[strcspn(ref, "\n")] = 0;
    snprintf(x->lazy_ref, sizeof x->lazy_ref, "%s", ref);
    free(ref);
    snprintf(x->dir, sizeof x->dir, "%s", dir);
    const char *slash = strrchr(dir, '/');
    snprintf(x->name, sizeof x->name, "%.200s", instance_name ? instance_name : slash ? slash + 1 : dir);
    x->from_dir = 1;
    return 1;
}

/* A lazy run's instance: named, locked, its directory made by the engine
 * (or a killed run's served again), the NBD server up. A new one that the
 * engine refuses (a saved state's layer, not a strata layer) leaves nothing
 * and sets *o->lazy_refused, as does a driver without NBD disks. */
static int claim_lazy(store *st, const boot_run_opts *o, const boot_driver *drv, run_state *x)
{
    int fresh = !x->from_dir, rc;
    if (o->resume)
        return boot_fail(EINVAL, "a lazy run boots fresh: --resume needs a saved state in the store");
    if (o->disk_nbd)
        return boot_fail(EINVAL, "a lazy run's disk is its own NBD export: --disk-nbd needs a layer in the store");
    if (drv->nbd_ok && (rc = drv->nbd_ok())) {
        if (fresh && o->lazy_refused)
            *o->lazy_refused = 1;
        return rc;
    }
    /* a guest this host can't run is refused before anything is made */
    if (fresh && (rc = boot_lazy_check(x->lazy_ref)))
        return rc;
    if ((rc = name_and_lock(st, o, x->lazy_ref, fresh, x)))
        return rc;
    if (fresh && (rc = new_instance_dir(st, x)))
        return rc;
    char log[4300];
    side_path(x->dir, "lazy.log", log, sizeof log);
    /* QEMU flushes, so its writes are made durable then; VZ never does */
    rc = boot_lazy_start(st, x->lazy_ref, x->dir, log, strcmp(drv->name, "vz") != 0, o->note, o->ctx,
                         &x->lazy);
    if (rc && fresh) {
        remove_tree(x->dir);
        remove_side(x->dir, "lazy.log");
        if ((rc == -EINVAL || rc == -EPROTOTYPE) && o->lazy_refused)
            *o->lazy_refused = 1;
    }
    if (rc)
        return rc;
    if (fresh)
        note(o, "instance %s: running %s lazily (its disk is served while the layer is pulled)",
             x->name, x->lazy_ref);
    else
        note(o, "instance %s: serving %s lazily again, filling what is missing", x->name, x->lazy_ref);
    x->cloned = fresh;
    char ref[620];
    snprintf(ref, sizeof ref, "%s\n", x->lazy_ref);
    if (fresh && (rc = write_side(x->dir, "lazy-ref", ref)))
        return rc;
    boot_lazy_layer(x->lazy, &x->lid);
    return hold_busy(x);
}

/* start (or restore) the VM, record it, and supervise it until it ends */
static int start_and_supervise(store *st, const boot_run_opts *o, const boot_driver *drv,
                               run_state *x)
{
    /* handlers before the instance is visible in ps: a suspend or stop that
     * comes while the VM starts must not kill this process and orphan it */
    catch_signals(on_signal);
    want_suspend = want_stop = 0;
    run_record r = {.st = st, .name = x->name, .dir = x->dir, .layer = x->lid.hex,
                    .driver = drv->name, .resumed_from = o->resume ? x->lid.hex : NULL,
                    .lazy = x->lazy};
    int rc = write_run(&r, 0, "starting");
    if (rc)
        return rc;
    x->recorded = 1;
    char state_path[4300];
    snprintf(state_path, sizeof state_path, "%s/%s", x->dir, drv->state_file);
    if (x->eff.disk_nbd && !x->lazy)
        note(o, "this VM can't be suspended: its boot disk is the NBD export %s, outside the "
                "instance; it runs without save/restore support", x->eff.disk_nbd);
    boot_start_opts so = {.bundle_dir = x->dir, .runtime_dir = x->dir, .settings = &x->eff,
                          .restore_state = o->resume ? state_path : NULL, .console = o->console,
                          .restore_kind = o->resume ? binding(x->layer, "state-kind") : NULL,
                          /* if it can be: the driver checks, and notes why not; an
                           * NBD disk lives outside what a state can hold */
                          .suspendable = !x->eff.disk_nbd || x->lazy,
                          .accel = o->accel, .gui = o->gui,
                          .note = o->note, .note_ctx = o->ctx};
    boot_vm *vm = NULL;
    if ((rc = start_vm(o, drv, x->dir, &x->s, &so, &vm)))
        return rc;
    /* restored: from here the disk moves on, so the state no longer fits it
     * (a RAM file among the state files is the running guest's memory now) */
    unlink(state_path);
    if (drv->endpoints && drv->endpoints(vm, &r.ep))
        note(o, "could not learn where the VM listens (%s): ip and ssh won't find it", boot_error());
    write_run(&r, drv->pid(vm), "running");
    if (o->started)
        o->started(o->ctx, x->name);
    /* eff: what the VM runs with (an NBD disk is in it only) */
    x->keep = supervise(st, drv, vm, x->dir, &x->eff, &x->busy, &r);
    drv->release(vm);
    return 0;
}

static void end_run(store *st, const boot_run_opts *o, run_state *x)
{
    err_info failure = *err_last(); /* the run's own error: the cleanup below may set others */
    catch_signals(SIG_DFL);
    if (x->recorded)
        remove_run(st, x->name); /* while its lock is held: no one else's record */
    boot_lazy_close(x->lazy); /* its server, then the engine: the fill's work stays */
    x->lazy = NULL;
    /* an ephemeral instance leaves nothing behind, record included (a lazy
     * one not yet handed over is no clone: only its directory) */
    if (x->cloned && o->ephemeral && !x->keep && store_clone_delete(st, x->dir))
        remove_tree(x->dir);
    if (x->cloned && o->ephemeral && !x->keep && x->lazy_ref[0])
        remove_side(x->dir, "lazy-ref"); /* (its lazy log stays, as a stop's result would) */
    else if (x->keep && o->note)
        note(o, "instance %s kept at %s: its saved state could not be committed", x->name, x->dir);
    store_busy_release(&x->busy);
    if (x->name_lock >= 0)
        close(x->name_lock);
    if (x->state_lock >= 0)
        close(x->state_lock);
    free(x->eff.shares); /* its strings are s's or the caller's */
    boot_settings_free(&x->s);
    store_layer_free(x->layer);
    err_restore(&failure);
}

int boot_run(store *st, const boot_run_opts *o)
{
    return boot_run_named(st, o, NULL);
}

int boot_run_named(store *st, const boot_run_opts *o, const char *instance_name)
{
    const boot_driver *drv;
    int rc = check_run_opts(o, &drv);
    if (rc)
        return rc;
    run_state *x = calloc(1, sizeof *x);
    if (!x)
        return -ENOMEM;
    x->busy = (store_busy){-1};
    x->name_lock = x->state_lock = -1;
    if (o->lazy_ref)
        snprintf(x->lazy_ref, sizeof x->lazy_ref, "%s", o->lazy_ref);
    else if (!lazy_instance(st, o->target, instance_name, x)) {
        if ((rc = resolve_target(st, o, instance_name, x))) {
            free(x);
            return rc;
        }
        if (store_layer_load(st, &x->lid, &x->layer)) {
            free(x);
            return err_pass();
        }
    }
    if (x->lazy_ref[0])
        rc = claim_lazy(st, o, drv, x);
    else
        rc = claim_instance(st, o, drv, x);
    if (!rc && !(rc = ready_settings(st, o, drv, x)))
        rc = start_and_supervise(st, o, drv, x);
    end_run(st, o, x);
    free(x);
    return rc;
}


/* ---------- asking a supervisor ---------- */

/* a running instance by name, or by its directory (internal.h) */
int boot_find_running(store *st, const char *name, boot_instance *out)
{
    boot_instance *v;
    size_t n;
    boot_ps(st, &v, &n);
    char abs[4096];
    int by_dir = strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..");
    if (!realpath(name, abs))
        abs[0] = 0;
    int found = 0;
    for (size_t i = 0; i < n; i++)
        if (!found && ((!by_dir && !strcmp(v[i].name, name)) || (abs[0] && !strcmp(v[i].dir, abs)))) {
            *out = v[i];
            memset(&v[i], 0, sizeof v[i]);
            found = 1;
        }
    boot_ps_free(v, n);
    return found ? 0 : boot_fail(ENOENT, "no running instance '%s' (see strata ps)", name);
}

/* Signal a supervisor only while it holds its record's lock: a pid from a
 * stale record may belong to anyone by now. */
static int signal_instance(store *st, const boot_instance *x, int sig)
{
    char *running = boot_running_dir(st);
    char lock_name[300];
    snprintf(lock_name, sizeof lock_name, "%s.lock", x->name);
    int live = running && lock_held(running, lock_name);
    free(running);
    if (!live)
        return boot_fail(ESRCH, "instance %s is no longer running", x->name);
    if (kill(x->pid, sig) < 0)
        return boot_fail_errno(errno, "signalling instance %s (pid %d)", x->name, x->pid);
    return 0;
}

void boot_instance_free(boot_instance *x)
{
    free(x->name);
    free(x->dir);
    free(x->layer);
    free(x->driver);
    free(x->resumed_from);
}

/* wait for the supervising process to end */
static int wait_gone(int pid, int seconds)
{
    for (long i = 0; i < seconds * 1000L; i++) {
        if (!pid_alive(pid))
            return 0;
        usleep(1000); /* a suspend's last step: its time counts */
    }
    return -ETIMEDOUT;
}

int boot_suspend(store *st, const char *name, const char *tag, const char *message, store_id *out)
{
    if (tag && !store_tag_valid(tag))
        return boot_fail(EINVAL, "bad tag name '%s' (see strata help tag)", tag);
    boot_instance x;
    int rc = boot_find_running(st, name, &x);
    if (rc)
        return rc;
    char req[1024];
    snprintf(req, sizeof req, "tag %s\nmessage %s\n", tag ? tag : "", message ? message : "");
    for (char *p = req; *p; p++)
        if (*p == '\r')
            *p = ' ';
    remove_side(x.dir, "suspend-result");
    rc = write_side(x.dir, "suspend-request", req);
    if (!rc)
        rc = signal_instance(st, &x, SIGUSR1);
    char *res = NULL;
    /* polled every 2 ms: a suspend of a RAM-file state takes a tenth of a second */
    for (long i = 0; !rc && i < 300000 && !(res = read_side(x.dir, "suspend-result")); i++) {
        if (!pid_alive(x.pid)) {
            res = read_side(x.dir, "suspend-result");
            if (!res)
                rc = boot_fail(EIO, "instance %s stopped before it was suspended", name);
            break;
        }
        usleep(2 * 1000);
    }
    if (!rc && !res)
        rc = boot_fail(ETIMEDOUT, "instance %s did not suspend in 10 minutes", name);
    if (!rc) {
        if (!strncmp(res, "ok ", 3) && strlen(res) >= 3 + STORE_ID_HEX) {
            memcpy(out->hex, res + 3, STORE_ID_HEX);
            out->hex[STORE_ID_HEX] = 0;
        } else {
            res[strcspn(res, "\n")] = 0;
            rc = boot_fail(EIO, "suspending %s: %s", name, !strncmp(res, "error ", 6) ? res + 6 : res);
        }
    }
    if (!rc)
        wait_gone(x.pid, 30);
    remove_side(x.dir, "suspend-request");
    remove_side(x.dir, "suspend-result");
    free(res);
    boot_instance_free(&x);
    return rc;
}

int boot_stop(store *st, const char *name, int timeout_s, int *forced)
{
    boot_instance x;
    *forced = 0;
    int rc = boot_find_running(st, name, &x);
    if (rc)
        return rc;
    char req[64];
    snprintf(req, sizeof req, "timeout %d\n", timeout_s);
    remove_side(x.dir, "stop-result"); /* an earlier stop's */
    rc = write_side(x.dir, "stop-request", req);
    if (!rc)
        rc = signal_instance(st, &x, SIGTERM);
    if (!rc && wait_gone(x.pid, timeout_s + 30))
        rc = boot_fail(ETIMEDOUT, "instance %s did not stop", name);
    char *result = read_side(x.dir, "stop-result");
    *forced = timeout_s > 0 && result && !strncmp(result, "forced", 6);
    free(result);
    remove_side(x.dir, "stop-result");
    remove_side(x.dir, "stop-request");
    boot_instance_free(&x);
    return rc;
}
