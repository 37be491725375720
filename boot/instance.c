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

#include <dirent.h>
#include <ftw.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

const char *boot_default_driver(void)
{
#ifdef __APPLE__
    return "vz";
#else
    return "qemu";
#endif
}

const boot_driver *boot_driver_find(const char *name)
{
    if (!strcmp(name, "qemu"))
        return boot_qemu_driver();
    if (!strcmp(name, "vz")) {
#if (defined(__APPLE__) && defined(STRATA_HAVE_VZ)) || defined(STRATA_VZ_SIM)
        /* STRATA_VZ_SIM: build/strata-vzsim, the vz driver on the recording
         * stand-in of the framework (tests/objc_record.c), for tests only */
        return boot_vz_driver();
#else
        boot_fail(ENOTSUP, "the vz driver needs macOS with Virtualization.framework; use --driver qemu");
        return NULL;
#endif
    }
    boot_fail(EINVAL, "unknown driver '%s': use vz or qemu", name);
    return NULL;
}

/* ---------- small files in an instance ---------- */

static char *read_small(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, 8192);
    if (buf && fread(buf, 1, 8191, f) == 0) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
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

static char *vms_dir(store *st)
{
    char *d = NULL;
    if (asprintf(&d, "%s/vms", store_home(st)) < 0)
        return NULL;
    mkdir(d, 0755);
    return d;
}

static int pid_alive(int pid)
{
    return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

static int write_run(const char *dir, const char *name, const char *layer, const char *driver,
                     const char *resumed_from, int vm_pid, const char *state)
{
    char text[1024];
    snprintf(text, sizeof text, "name %s\npid %d\nvm-pid %d\nlayer %s\ndriver %s\nresumed-from %s\nstate %s\n",
             name, (int)getpid(), vm_pid, layer, driver, resumed_from ? resumed_from : "-", state);
    return boot_write_atomic(dir, ".run", text);
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
    char *slash = strrchr(path, '/');
    *slash = 0;
    int rc = boot_write_atomic(path, slash + 1, text);
    return rc;
}

static char *read_side(const char *dir, const char *what)
{
    char path[4300];
    side_path(dir, what, path, sizeof path);
    char *slash = strrchr(path, '/');
    *slash = 0;
    return read_small(path, slash + 1);
}

static void remove_side(const char *dir, const char *what)
{
    char path[4300];
    side_path(dir, what, path, sizeof path);
    unlink(path);
}

/* ---------- ps ---------- */

int boot_ps(store *st, boot_instance **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    char *vms = vms_dir(st);
    DIR *d = vms ? opendir(vms) : NULL;
    if (!d) {
        free(vms);
        return 0;
    }
    boot_instance *v = NULL;
    size_t cnt = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/%s", vms, e->d_name);
        char *run = read_small(dir, ".run");
        char pid[32], vm_pid[32], layer[80], driver[16], from[80], state[16];
        if (!run)
            continue;
        field(run, "pid", pid, sizeof pid);
        field(run, "vm-pid", vm_pid, sizeof vm_pid);
        field(run, "layer", layer, sizeof layer);
        field(run, "driver", driver, sizeof driver);
        field(run, "resumed-from", from, sizeof from);
        field(run, "state", state, sizeof state);
        free(run);
        if (!pid_alive(atoi(pid)))
            continue; /* its supervisor died: not running */
        boot_instance *nv = realloc(v, (cnt + 1) * sizeof *v);
        if (!nv)
            break;
        v = nv;
        boot_instance *x = &v[cnt++];
        memset(x, 0, sizeof *x);
        x->name = strdup(e->d_name);
        x->dir = strdup(dir);
        x->layer = strdup(layer);
        x->driver = strdup(driver);
        x->resumed_from = strdup(strcmp(from, "-") ? from : "");
        x->pid = atoi(pid);
        x->vm_pid = atoi(vm_pid);
        snprintf(x->state, sizeof x->state, "%s", state);
    }
    closedir(d);
    free(vms);
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

static void note(const boot_run_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(const boot_run_opts *o, const char *fmt, ...)
{
    if (!o->note)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    o->note(o->ctx, line);
}

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

/* the supervisor's side of suspend: pause, save, stop, commit */
static int do_suspend(store *st, const boot_driver *drv, boot_vm *vm, const char *dir,
                      const boot_settings *s)
{
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
    int rc = drv->pause(vm);
    if (!rc)
        rc = drv->save(vm, state_path);
    if (rc) {
        char keep[1024];
        snprintf(keep, sizeof keep, "%s", boot_error());
        drv->resume(vm); /* the VM goes on running if it can't be saved */
        return boot_fail(EIO, "%s", keep);
    }
    drv->stop(vm, 1);
    boot_binding *b;
    size_t nb;
    if ((rc = boot_bindings_now(drv->name, dir, s, &b, &nb)))
        return rc;
    store_binding sb[16];
    for (size_t i = 0; i < nb && i < 16; i++) {
        sb[i].key = b[i].key;
        sb[i].value = b[i].value;
    }
    store_commit_opts co = {.message = msg[0] ? msg : "suspend", .tag = tag[0] ? tag : NULL,
                            .bindings = sb, .nbindings = nb};
    store_commit_result res;
    rc = store_commit(st, dir, &co, &res);
    boot_bindings_free(b, nb);
    if (rc)
        return boot_fail(EIO, "%s", store_error());
    char text[128];
    snprintf(text, sizeof text, "ok %s\n", res.id.hex);
    return write_side(dir, "suspend-result", text);
}

int boot_run(store *st, const boot_run_opts *o)
{
    const char *driver_name = o->driver ? o->driver : boot_default_driver();
    const boot_driver *drv = boot_driver_find(driver_name);
    if (!drv)
        return -EINVAL;
    if (o->resume && o->cold)
        return boot_fail(EINVAL, "--resume and --cold contradict each other");
    if (o->resume && (o->cpus || o->memory_mib))
        return boot_fail(EINVAL, "a saved state can't change --cpus or --memory; use --cold");
    if (o->name && !name_valid(o->name))
        return boot_fail(EINVAL, "bad instance name '%s': letters, digits, '.', '_', '-'", o->name);

    char dir[4096], name[256], layer_hex[65] = "";
    struct stat sdir;
    /* a directory only if it is a clone: "bench" can be a tag and a folder */
    char marker[4200];
    snprintf(marker, sizeof marker, "%s/" STORE_INSTANCE_MARKER, o->target);
    int from_dir = stat(o->target, &sdir) == 0 && S_ISDIR(sdir.st_mode) && access(marker, F_OK) == 0;
    store_id lid;
    store_layer *layer = NULL;
    boot_settings s = {0};
    int rc = 0, cloned = 0, keep = 0;
    if (from_dir) {
        if (!realpath(o->target, dir))
            return boot_fail_errno(errno, "%s", o->target);
        if (store_instance_layer(st, dir, &lid))
            return boot_fail(EINVAL, "%s", store_error());
        const char *slash = strrchr(dir, '/');
        snprintf(name, sizeof name, "%.200s", slash ? slash + 1 : dir);
    } else if (store_resolve(st, o->target, &lid)) {
        return boot_fail(ENOENT, "%s", store_error());
    }
    memcpy(layer_hex, lid.hex, 65);
    if (store_layer_load(st, &lid, &layer))
        return boot_fail(EIO, "%s", store_error());

    if (o->resume) {
        if (!layer_file(layer, drv->state_file) || !layer->nbindings) {
            rc = boot_fail(ENOENT, "layer %.12s has no saved %s state to resume (suspend an instance into a layer first)",
                           lid.hex, drv->name);
            goto out;
        }
        /* check against the layer's own files, before anything is made */
        char *probe = store_layer_file_path(st, &lid, BOOT_SETTINGS_FILE);
        char *slash = probe ? strrchr(probe, '/') : NULL;
        if (slash)
            *slash = 0;
        const char *settings_dir = from_dir ? dir : probe;
        rc = probe ? boot_settings_load(settings_dir, &s) : -ENOMEM;
        if (!rc)
            rc = check_bindings(layer, drv->name, settings_dir, &s);
        free(probe);
        boot_settings_free(&s);
        if (rc)
            goto out;
        if (!o->allow_duplicate) {
            boot_instance *v;
            size_t n;
            boot_ps(st, &v, &n);
            for (size_t i = 0; i < n && !rc; i++)
                if (!strcmp(v[i].resumed_from, lid.hex))
                    rc = boot_fail(EBUSY,
                                   "instance %s already runs from this saved state (same MAC and "
                                   "identity); stop it or pass --allow-duplicate",
                                   v[i].name);
            boot_ps_free(v, n);
            if (rc)
                goto out;
        }
    }

    if (!from_dir) {
        char *vms = vms_dir(st);
        if (o->name)
            snprintf(name, sizeof name, "%s", o->name);
        else
            random_name(o->target, name, sizeof name);
        snprintf(dir, sizeof dir, "%s/%s", vms ? vms : ".", name);
        free(vms);
        if (access(dir, F_OK) == 0) {
            rc = boot_fail(EEXIST, "instance %s exists (%s); pick another --name", name, dir);
            goto out;
        }
        note(o, "instance %s: cloning layer %.12s", name, lid.hex);
        int reflinked;
        if (store_clone(st, lid.hex, dir, &reflinked)) {
            rc = boot_fail(EIO, "%s", store_error());
            goto out;
        }
        cloned = 1;
    }
    if ((rc = boot_settings_load(dir, &s)))
        goto out;

    char state_path[4300];
    snprintf(state_path, sizeof state_path, "%s/%s", dir, drv->state_file);
    if (!o->resume) {
        /* a new machine on the network: never share a MAC with the layer it
         * came from (a clone directory run again keeps its own) */
        if (cloned || !s.mac[0])
            boot_mac_random(s.mac); /* and a VM that may be saved needs one recorded */
        if (o->cpus)
            s.cpus = o->cpus;
        if (o->memory_mib)
            s.memory_mib = o->memory_mib;
        if ((rc = boot_settings_save(dir, &s)))
            goto out;
        unlink(state_path); /* a state never outlives the disk it was saved with */
        if (o->new_identity && s.os == BOOT_OS_LINUX) {
            /* a Linux guest's identity is VZGenericMachineIdentifier's data:
             * without the file, the vz driver makes and keeps a fresh one */
            char gid[4200];
            snprintf(gid, sizeof gid, "%s/" BOOT_GENERIC_ID_FILE, dir);
            if (unlink(gid) == 0 || errno == ENOENT) {
                if (!strcmp(drv->name, "vz"))
                    note(o, "a fresh generic machine identifier is made when the VM starts");
            } else {
                rc = boot_fail_errno(errno, "%s", gid);
                goto out;
            }
        }
        /* a MachineIdentifier is an ECID plist whatever the guest (a Linux
         * bundle under qemu may carry one too) */
        if (o->new_identity) {
            char mid[4200];
            snprintf(mid, sizeof mid, "%s/MachineIdentifier", dir);
            if (access(mid, F_OK) == 0) {
                uint64_t ecid = 0;
                int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
                if (fd < 0 || read(fd, &ecid, sizeof ecid) != sizeof ecid)
                    ecid = (uint64_t)time(NULL) * 2654435761u;
                /* below 2^63: libplist writes 8-byte integers, which every
                 * plist reader (CoreFoundation too) takes as the same number */
                ecid = (ecid & INT64_MAX) | 1;
                if (fd >= 0)
                    close(fd);
                if (store_write_machine_identifier(mid, ecid)) {
                    rc = boot_fail(EIO, "%s", store_error());
                    goto out;
                }
            } else if (s.os == BOOT_OS_MACOS) {
                note(o, "no MachineIdentifier in this bundle: the hypervisor makes a fresh one");
            }
        }
    }

    /* handlers before the instance is visible in ps: a suspend or stop that
     * comes while the VM starts must not kill this process and orphan it */
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    want_suspend = want_stop = 0;
    if ((rc = write_run(dir, name, layer_hex, drv->name, o->resume ? lid.hex : NULL, 0, "starting")))
        goto out;
    boot_start_opts so = {.bundle_dir = dir, .runtime_dir = dir, .settings = &s,
                          .restore_state = o->resume ? state_path : NULL, .console = o->console,
                          .suspendable = 1, /* if it can be: the driver checks, and notes why not */
                          .accel = o->accel,
                          .note = o->note, .note_ctx = o->ctx};
    boot_vm *vm = NULL;
    rc = drv->start(&so, &vm);
    if (rc && o->resume && o->fallback_cold) {
        note(o, "%s; booting fresh instead (--fallback-cold)", boot_error());
        unlink(state_path);
        boot_mac_random(s.mac);
        boot_settings_save(dir, &s);
        so.restore_state = NULL;
        rc = drv->start(&so, &vm);
    } else if (rc && o->resume) {
        char keep[1024];
        snprintf(keep, sizeof keep, "%s", boot_error());
        rc = boot_fail(EIO, "%s (pass --fallback-cold to boot fresh instead)", keep);
    }
    if (rc)
        goto out;
    /* restored: from here the disk moves on, so the state no longer fits it */
    unlink(state_path);
    write_run(dir, name, layer_hex, drv->name, o->resume ? lid.hex : NULL, drv->pid(vm), "running");
    if (o->started)
        o->started(o->ctx, name);

    long stop_deadline = 0;
    while (drv->alive(vm)) {
        if (want_suspend) {
            want_suspend = 0;
            write_run(dir, name, layer_hex, drv->name, o->resume ? lid.hex : NULL, drv->pid(vm), "suspending");
            int r = do_suspend(st, drv, vm, dir, &s);
            if (r && !drv->alive(vm))
                keep = 1; /* stopped but not committed: the state lives only here */
            if (r) {
                char text[1200];
                snprintf(text, sizeof text, "error %s\n", boot_error());
                write_side(dir, "suspend-result", text);
                write_run(dir, name, layer_hex, drv->name, o->resume ? lid.hex : NULL, drv->pid(vm), "running");
            }
        }
        if (want_stop && !stop_deadline) {
            char *req = read_side(dir, "stop-request");
            char t[32] = "30";
            if (req)
                field(req, "timeout", t, sizeof t);
            free(req);
            stop_deadline = (long)time(NULL) + atol(t);
            write_run(dir, name, layer_hex, drv->name, o->resume ? lid.hex : NULL, drv->pid(vm), "stopping");
            drv->stop(vm, atol(t) <= 0);
        }
        if (stop_deadline && time(NULL) >= stop_deadline)
            drv->stop(vm, 1);
        usleep(100 * 1000);
    }
    drv->release(vm);
out:
    signal(SIGUSR1, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    {
        char runf[4200];
        snprintf(runf, sizeof runf, "%s/.run", dir);
        if (cloned || from_dir)
            unlink(runf);
    }
    if (cloned && o->ephemeral && !keep && store_clone_delete(st, dir))
        remove_tree(dir); /* an ephemeral instance leaves nothing behind, record included */
    else if (keep && o->note)
        note(o, "instance %s kept at %s: its saved state could not be committed", name, dir);
    boot_settings_free(&s);
    store_layer_free(layer);
    return rc;
}

/* ---------- asking a supervisor ---------- */

static int find_running(store *st, const char *name, boot_instance *out)
{
    boot_instance *v;
    size_t n;
    boot_ps(st, &v, &n);
    int found = 0;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].name, name) && !found) {
            *out = v[i];
            memset(&v[i], 0, sizeof v[i]);
            found = 1;
        }
    boot_ps_free(v, n);
    return found ? 0 : boot_fail(ENOENT, "no running instance '%s' (see strata ps)", name);
}

static void free_instance(boot_instance *x)
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
    for (long i = 0; i < seconds * 10L; i++) {
        if (!pid_alive(pid))
            return 0;
        usleep(100 * 1000);
    }
    return -ETIMEDOUT;
}

int boot_suspend(store *st, const char *name, const char *tag, const char *message, store_id *out)
{
    if (tag && !store_tag_valid(tag))
        return boot_fail(EINVAL, "bad tag name '%s' (see strata help tag)", tag);
    boot_instance x;
    int rc = find_running(st, name, &x);
    if (rc)
        return rc;
    char req[1024];
    snprintf(req, sizeof req, "tag %s\nmessage %s\n", tag ? tag : "", message ? message : "");
    for (char *p = req; *p; p++)
        if (*p == '\r')
            *p = ' ';
    remove_side(x.dir, "suspend-result");
    rc = write_side(x.dir, "suspend-request", req);
    if (!rc && kill(x.pid, SIGUSR1) < 0)
        rc = boot_fail_errno(errno, "signalling instance %s (pid %d)", name, x.pid);
    char *res = NULL;
    for (long i = 0; !rc && i < 6000 && !(res = read_side(x.dir, "suspend-result")); i++) {
        if (!pid_alive(x.pid)) {
            res = read_side(x.dir, "suspend-result");
            if (!res)
                rc = boot_fail(EIO, "instance %s stopped before it was suspended", name);
            break;
        }
        usleep(100 * 1000);
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
    free_instance(&x);
    return rc;
}

int boot_stop(store *st, const char *name, int timeout_s)
{
    boot_instance x;
    int rc = find_running(st, name, &x);
    if (rc)
        return rc;
    char req[64];
    snprintf(req, sizeof req, "timeout %d\n", timeout_s);
    rc = write_side(x.dir, "stop-request", req);
    if (!rc && kill(x.pid, SIGTERM) < 0)
        rc = boot_fail_errno(errno, "signalling instance %s (pid %d)", name, x.pid);
    if (!rc && wait_gone(x.pid, timeout_s + 30))
        rc = boot_fail(ETIMEDOUT, "instance %s did not stop", name);
    remove_side(x.dir, "stop-request");
    free_instance(&x);
    return rc;
}
