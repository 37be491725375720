/*
 * The qemu driver: strata's way to run Linux guests on Linux hosts, and what
 * proves boot and resume end to end on the build machine. The bundle's raw
 * Disk.img goes on virtio; the kernel boots directly from the bundle (as
 * VZLinuxBootLoader does) or through OVMF with the bundle's variable store.
 * QEMU runs as a child; strata drives it over QMP on a unix socket. Saved
 * states go through QMP migration into a file, and come back with -incoming.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct boot_vm {
    pid_t pid;
    int qmp;
    long seq; /* QMP command id: a late reply is never taken for the next one's */
    int exited;
    char qmp_path[108];
    char log_path[4096];
    char rbuf[65536];
    size_t rlen;
};

static long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

static int reap(boot_vm *vm)
{
    if (vm->exited)
        return 1;
    int status;
    if (waitpid(vm->pid, &status, WNOHANG) == vm->pid)
        vm->exited = 1;
    return vm->exited;
}

/* the last line qemu wrote to its log: the reason it gives for failing */
static void last_log_line(const boot_vm *vm, char *out, size_t n)
{
    snprintf(out, n, "no message");
    FILE *f = fopen(vm->log_path, "r");
    if (!f)
        return;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (*line)
            snprintf(out, n, "%s", line);
    }
    fclose(f);
}

/* read one JSON line from QMP within the deadline */
static json_t *qmp_read(boot_vm *vm, long deadline)
{
    for (;;) {
        char *nl = memchr(vm->rbuf, '\n', vm->rlen);
        if (nl) {
            size_t len = (size_t)(nl - vm->rbuf) + 1;
            json_t *j = json_loadb(vm->rbuf, len, 0, NULL);
            memmove(vm->rbuf, vm->rbuf + len, vm->rlen - len);
            vm->rlen -= len;
            if (j)
                return j;
            continue;
        }
        long left = deadline - now_ms();
        if (left <= 0)
            return NULL;
        if (vm->rlen == sizeof vm->rbuf)
            vm->rlen = 0; /* a line longer than any reply we wait for: drop it */
        struct pollfd p = {.fd = vm->qmp, .events = POLLIN};
        if (poll(&p, 1, (int)(left > 250 ? 250 : left)) <= 0) {
            if (reap(vm))
                return NULL;
            continue;
        }
        ssize_t r = read(vm->qmp, vm->rbuf + vm->rlen, sizeof vm->rbuf - vm->rlen);
        if (r <= 0)
            return NULL;
        vm->rlen += (size_t)r;
    }
}

/* Run one QMP command; *ret (may be NULL) gets its "return" value. Events
 * that arrive meanwhile are skipped. */
static int qmp(boot_vm *vm, const char *cmd_json, json_t **ret, int timeout_ms)
{
    char *msg = NULL;
    long id = ++vm->seq;
    if (cmd_json[0] != '{' || asprintf(&msg, "{\"id\":%ld,%s\n", id, cmd_json + 1) < 0)
        return boot_fail(EINVAL, "bad QMP command %s", cmd_json);
    size_t len = strlen(msg);
    /* MSG_NOSIGNAL: a qemu that died must give an error, not kill us with SIGPIPE */
    ssize_t sent = send(vm->qmp, msg, len, MSG_NOSIGNAL);
    free(msg);
    if (sent != (ssize_t)len) {
        char why[1024];
        usleep(100 * 1000);
        reap(vm);
        last_log_line(vm, why, sizeof why);
        return boot_fail(EIO, "qemu stopped answering: %s", why);
    }
    long deadline = now_ms() + timeout_ms;
    for (;;) {
        json_t *j = qmp_read(vm, deadline);
        if (!j)
            return boot_fail(ETIMEDOUT, "qemu did not answer %s", cmd_json);
        json_t *r = json_object_get(j, "return"), *e = json_object_get(j, "error");
        json_t *jid = json_object_get(j, "id");
        if ((r || e) && (!json_is_integer(jid) || json_integer_value(jid) != id)) {
            json_decref(j); /* the answer to an earlier command that timed out */
            continue;
        }
        if (r) {
            if (ret)
                *ret = json_incref(r);
            json_decref(j);
            return 0;
        }
        if (e) {
            const char *d = json_string_value(json_object_get(e, "desc"));
            int rc = boot_fail(EIO, "qemu refused %s: %s", cmd_json, d ? d : "no reason given");
            json_decref(j);
            return rc;
        }
        json_decref(j); /* an event */
    }
}

static int qmp_connect(boot_vm *vm, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", vm->qmp_path);
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return boot_fail_errno(errno, "socket");
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
            vm->qmp = fd;
            break;
        }
        close(fd);
        if (reap(vm) || now_ms() > deadline) {
            char why[1024];
            last_log_line(vm, why, sizeof why);
            return boot_fail(EIO, "qemu did not start: %s", why);
        }
        usleep(50 * 1000);
    }
    json_t *greeting = qmp_read(vm, deadline + 5000);
    if (!greeting)
        return boot_fail(EIO, "qemu sent no QMP greeting");
    json_decref(greeting);
    return qmp(vm, "{\"execute\":\"qmp_capabilities\"}", NULL, 5000);
}

static const char *qemu_binary(void)
{
    const char *e = getenv("STRATA_QEMU");
    if (e && *e)
        return e;
    struct utsname u;
    if (uname(&u) == 0 && (!strcmp(u.machine, "aarch64") || !strcmp(u.machine, "arm64")))
        return "qemu-system-aarch64";
    return "qemu-system-x86_64";
}

static pid_t spawn(char **argv, const char *log_path)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
    signal(SIGINT, SIG_IGN); /* the supervisor decides how a VM stops */
    execvp(argv[0], argv);
    dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/*
 * Does KVM actually run a guest here? /dev/kvm can exist and hang (it does
 * on the build machine), so start a throwaway VM under KVM and ask for its
 * registers, which needs the vCPU to come out of the kernel: no answer in
 * a few seconds means software emulation. The answer is cached per boot.
 */
static int kvm_works(const char *runtime_dir)
{
    const char *forced = getenv("STRATA_QEMU_ACCEL");
    if (forced && *forced)
        return !strcmp(forced, "kvm");
    if (access("/dev/kvm", R_OK | W_OK) != 0)
        return 0;
    char boot_id[64] = "", cache[256];
    FILE *b = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (b) {
        if (!fgets(boot_id, sizeof boot_id, b))
            boot_id[0] = 0;
        fclose(b);
    }
    boot_id[strcspn(boot_id, "\n")] = 0;
    snprintf(cache, sizeof cache, "/tmp/strata-kvm-probe.%d", (int)getuid());
    int cfd = open(cache, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat cst;
    FILE *c = NULL;
    if (cfd >= 0 && fstat(cfd, &cst) == 0 && cst.st_uid == getuid() && (c = fdopen(cfd, "r")))
        cfd = -1;
    if (cfd >= 0)
        close(cfd);
    if (c) {
        char line[128] = "";
        int ok = fgets(line, sizeof line, c) != NULL;
        fclose(c);
        size_t n = strlen(boot_id);
        if (ok && n && !strncmp(line, boot_id, n) && line[n] == ' ')
            return line[n + 1] == '1';
    }
    boot_vm probe = {.qmp = -1};
    snprintf(probe.qmp_path, sizeof probe.qmp_path, "%s/.kvm-probe.sock", runtime_dir);
    snprintf(probe.log_path, sizeof probe.log_path, "%s/.kvm-probe.log", runtime_dir);
    char chardev[200];
    snprintf(chardev, sizeof chardev, "socket,id=q,path=%s,server=on,wait=off", probe.qmp_path);
    char *argv[] = {(char *)qemu_binary(), "-accel", "kvm", "-nodefaults", "-no-user-config",
                    "-display", "none", "-m", "32", "-chardev", chardev, "-mon",
                    "chardev=q,mode=control", NULL};
    unlink(probe.qmp_path);
    probe.pid = spawn(argv, probe.log_path);
    int works = probe.pid > 0 && qmp_connect(&probe, 3000) == 0 &&
                qmp(&probe,
                    "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"info "
                    "registers\"}}",
                    NULL, 2000) == 0;
    if (probe.pid > 0) {
        kill(probe.pid, SIGKILL);
        /* a process stuck inside a broken /dev/kvm may never die: don't wait forever */
        for (int i = 0; i < 50 && waitpid(probe.pid, NULL, WNOHANG) == 0; i++)
            usleep(100 * 1000);
    }
    if (probe.qmp >= 0)
        close(probe.qmp);
    unlink(probe.qmp_path);
    unlink(probe.log_path);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.%d", cache, (int)getpid());
    int wfd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (wfd >= 0) {
        dprintf(wfd, "%s %d\n", boot_id, works);
        close(wfd);
        if (rename(tmp, cache) < 0)
            unlink(tmp);
    }
    return works;
}

/* OVMF's code must be the build its variable store was made for: the 4 MiB
 * build's store is 540 KiB, the 2 MiB build's 128 KiB */
static const char *ovmf_code(const char *vars_path)
{
    struct stat st;
    int big = stat(vars_path, &st) == 0 && st.st_size > 256 * 1024;
    static const char *const big_paths[] = {"/usr/share/OVMF/OVMF_CODE_4M.fd", NULL};
    static const char *const small_paths[] = {"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/ovmf/OVMF.fd", NULL};
    for (const char *const *p = big ? big_paths : small_paths; *p; p++)
        if (access(*p, R_OK) == 0)
            return *p;
    return NULL;
}

#define ARG(s) (argv[argc++] = (s))

static int qemu_start(const boot_start_opts *o, boot_vm **out)
{
    const boot_settings *s = o->settings;
    if (s->os != BOOT_OS_LINUX)
        return boot_fail(ENOTSUP, "the qemu driver runs Linux guests; macOS guests need the vz "
                                  "driver on a Mac");
    boot_vm *vm = calloc(1, sizeof *vm);
    if (!vm)
        return -ENOMEM;
    vm->qmp = -1;
    if ((size_t)snprintf(vm->qmp_path, sizeof vm->qmp_path, "%s/.qmp.sock", o->runtime_dir) >=
        sizeof vm->qmp_path) {
        free(vm);
        return boot_fail(ENAMETOOLONG, "%s: path too long for a control socket; use a shorter STRATA_HOME",
                         o->runtime_dir);
    }
    snprintf(vm->log_path, sizeof vm->log_path, "%s/.qemu.log", o->runtime_dir);
    unlink(vm->qmp_path);
    unlink(vm->log_path);

    char *argv[64], mem[32], cpus[16], drive[4400], qmpdev[200], con[4400], nic[128], kernel[4200],
        initrd[4200], pflash0[4200], pflash1[4200], incoming[4200];
    char virtfs[8][4400];
    int argc = 0;
    int kvm = kvm_works(o->runtime_dir);
    ARG((char *)qemu_binary());
    ARG("-accel");
    ARG(kvm ? "kvm" : "tcg");
    ARG("-nodefaults");
    ARG("-no-user-config");
    ARG("-display");
    ARG("none");
    ARG("-machine");
    ARG("pc");
    snprintf(mem, sizeof mem, "%llu", (unsigned long long)s->memory_mib);
    snprintf(cpus, sizeof cpus, "%u", s->cpus);
    ARG("-m");
    ARG(mem);
    ARG("-smp");
    ARG(cpus);
    static const char *const cache_mode[] = {"writeback", "writeback", "none"};
    snprintf(drive, sizeof drive, "file=%s/Disk.img,format=raw,if=virtio,cache=%s",
             o->bundle_dir, s->disk_sync == BOOT_SYNC_NONE ? "unsafe" : cache_mode[s->disk_caching]);
    if (strchr(o->bundle_dir, ',')) {
        free(vm);
        return boot_fail(EINVAL, "%s: qemu can't take a path with a comma", o->bundle_dir);
    }
    ARG("-drive");
    ARG(drive);
    snprintf(qmpdev, sizeof qmpdev, "socket,id=qmp0,path=%s,server=on,wait=off", vm->qmp_path);
    ARG("-chardev");
    ARG(qmpdev);
    ARG("-mon");
    ARG("chardev=qmp0,mode=control");
    if (o->console)
        snprintf(con, sizeof con, "stdio,id=con0,signal=off,logfile=%s/.console.log", o->runtime_dir);
    else
        snprintf(con, sizeof con, "file,id=con0,path=%s/.console.log", o->runtime_dir);
    ARG("-chardev");
    ARG(con);
    ARG("-serial");
    ARG("chardev:con0");
    snprintf(nic, sizeof nic, "user,model=virtio-net-pci,mac=%s", s->mac[0] ? s->mac : "52:54:00:12:34:56");
    ARG("-nic");
    ARG(nic);
    if (s->loader == BOOT_LOADER_LINUX) {
        snprintf(kernel, sizeof kernel, "%s/%s", o->bundle_dir, s->kernel);
        ARG("-kernel");
        ARG(kernel);
        if (s->initrd) {
            snprintf(initrd, sizeof initrd, "%s/%s", o->bundle_dir, s->initrd);
            ARG("-initrd");
            ARG(initrd);
        }
        if (s->cmdline) {
            ARG("-append");
            ARG(s->cmdline);
        }
    } else {
        snprintf(pflash1, sizeof pflash1, "if=pflash,format=raw,unit=1,file=%s/%s", o->bundle_dir,
                 s->efi_vars);
        const char *code = ovmf_code(pflash1 + strlen("if=pflash,format=raw,unit=1,file="));
        if (!code) {
            free(vm);
            return boot_fail(ENOENT, "UEFI boot needs OVMF's firmware for this variable store (Debian package ovmf)");
        }
        snprintf(pflash0, sizeof pflash0, "if=pflash,format=raw,unit=0,readonly=on,file=%s", code);
        ARG("-drive");
        ARG(pflash0);
        ARG("-drive");
        ARG(pflash1);
    }
    for (size_t i = 0; i < s->nshares && i < 8; i++) {
        /* 9p: what qemu offers without a virtiofsd daemon */
        snprintf(virtfs[i], sizeof virtfs[i], "local,path=%s,mount_tag=%s,security_model=none%s",
                 s->shares[i].path, s->shares[i].tag, s->shares[i].read_only ? ",readonly=on" : "");
        ARG("-virtfs");
        ARG(virtfs[i]);
    }
    if (o->restore_state) {
        if (strchr(o->restore_state, '\'')) {
            free(vm);
            return boot_fail(EINVAL, "%s: a path with a quote can't be restored", o->restore_state);
        }
        snprintf(incoming, sizeof incoming, "exec:cat '%s'", o->restore_state);
        ARG("-incoming");
        ARG(incoming);
    }
    argv[argc] = NULL;

    vm->pid = spawn(argv, vm->log_path);
    if (vm->pid < 0) {
        free(vm);
        return boot_fail_errno(errno, "fork");
    }
    int rc = qmp_connect(vm, 15000);
    if (!rc && o->restore_state) {
        /* wait for the incoming state to load, then run from it */
        long deadline = now_ms() + 300000;
        for (;;) {
            json_t *st = NULL;
            if ((rc = qmp(vm, "{\"execute\":\"query-status\"}", &st, 5000)))
                break;
            const char *status = json_string_value(json_object_get(st, "status"));
            int waiting = status && !strcmp(status, "inmigrate");
            json_decref(st);
            if (!waiting)
                break;
            if (now_ms() > deadline) {
                rc = boot_fail(ETIMEDOUT, "qemu did not load the saved state in 5 minutes");
                break;
            }
            usleep(100 * 1000);
        }
        if (!rc)
            rc = qmp(vm, "{\"execute\":\"cont\"}", NULL, 10000);
    }
    if (rc && o->restore_state) {
        /* with -incoming, qemu exits as soon as it rejects the state, at any
         * point of the start: say that, with its own reason */
        char why[1024];
        usleep(200 * 1000);
        reap(vm);
        last_log_line(vm, why, sizeof why);
        rc = boot_fail(EIO, "qemu refused the saved state: %s", why);
    }
    if (rc) {
        char keep[1024];
        snprintf(keep, sizeof keep, "%s", boot_error());
        if (!reap(vm)) {
            kill(vm->pid, SIGKILL);
            waitpid(vm->pid, NULL, 0);
        }
        if (vm->qmp >= 0)
            close(vm->qmp);
        free(vm);
        return boot_fail(EIO, "%s", keep);
    }
    *out = vm;
    return 0;
}

static int qemu_pause(boot_vm *vm)
{
    return qmp(vm, "{\"execute\":\"stop\"}", NULL, 10000);
}

static int qemu_resume(boot_vm *vm)
{
    return qmp(vm, "{\"execute\":\"cont\"}", NULL, 10000);
}

static int qemu_save(boot_vm *vm, const char *path)
{
    char tmp[4200], cmd[8600];
    if (strchr(path, '\'') || strchr(path, '"') || strchr(path, '\\'))
        return boot_fail(EINVAL, "%s: can't save a state to a path with quotes", path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(tmp);
    snprintf(cmd, sizeof cmd,
             "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"exec:cat > '%s'\"}}", tmp);
    int rc = qmp(vm, cmd, NULL, 10000);
    long deadline = now_ms() + 600000;
    while (!rc) {
        json_t *m = NULL;
        if ((rc = qmp(vm, "{\"execute\":\"query-migrate\"}", &m, 10000)))
            break;
        const char *status = json_string_value(json_object_get(m, "status"));
        char st[64];
        snprintf(st, sizeof st, "%s", status ? status : "none");
        const char *err = json_string_value(json_object_get(m, "error-desc"));
        if (!strcmp(st, "failed") || !strcmp(st, "cancelled"))
            rc = boot_fail(EIO, "qemu could not save the state: %s", err ? err : st);
        json_decref(m);
        if (rc || !strcmp(st, "completed"))
            break;
        if (now_ms() > deadline)
            rc = boot_fail(ETIMEDOUT, "saving the state took over 10 minutes");
        usleep(50 * 1000);
    }
    if (rc) {
        unlink(tmp);
        return rc;
    }
    return boot_publish(tmp, path);
}

static int qemu_stop(boot_vm *vm, int force)
{
    if (reap(vm))
        return 0;
    if (!force)
        return qmp(vm, "{\"execute\":\"system_powerdown\"}", NULL, 5000);
    qmp(vm, "{\"execute\":\"quit\"}", NULL, 3000);
    for (int i = 0; i < 50 && !reap(vm); i++)
        usleep(100 * 1000);
    if (!reap(vm)) {
        kill(vm->pid, SIGKILL);
        waitpid(vm->pid, NULL, 0);
        vm->exited = 1;
    }
    return 0;
}

static int qemu_alive(boot_vm *vm)
{
    return !reap(vm);
}

static int qemu_pid(boot_vm *vm)
{
    return (int)vm->pid;
}

static void qemu_release(boot_vm *vm)
{
    if (!vm)
        return;
    if (!reap(vm)) {
        kill(vm->pid, SIGKILL);
        waitpid(vm->pid, NULL, 0);
    }
    if (vm->qmp >= 0)
        close(vm->qmp);
    unlink(vm->qmp_path);
    free(vm);
}

static const boot_driver qemu_driver = {
    .name = "qemu",
    .state_file = "SaveFile.qemustate",
    .start = qemu_start,
    .pause = qemu_pause,
    .save = qemu_save,
    .resume = qemu_resume,
    .stop = qemu_stop,
    .alive = qemu_alive,
    .pid = qemu_pid,
    .release = qemu_release,
};

const boot_driver *boot_qemu_driver(void)
{
    return &qemu_driver;
}
