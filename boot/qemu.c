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
#include "../base/platform.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
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
    char ram_path[4200];    /* guest RAM's file in the instance, or "" for anonymous RAM */
    int ignore_shared;      /* QEMU offers x-ignore-shared (probed on QMP) */
    int saved;              /* save() wrote a state: the RAM file is part of it */
    const char *saved_kind; /* what save() wrote: STATE_RAM_FILE or STATE_CLASSIC */
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
    if (vm->pid <= 0)
        return 0; /* a qemu another process runs (screenshot): not ours to wait for */
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

/* Send msg on the monitor, with fd as SCM_RIGHTS if fd >= 0 (getfd). */
static ssize_t qmp_send(boot_vm *vm, const char *msg, size_t len, int fd)
{
    struct iovec iov = {(void *)msg, len};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(&ctl, 0, sizeof ctl);
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof ctl.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    /* MSG_NOSIGNAL: a qemu that died must give an error, not kill us with SIGPIPE */
    return sendmsg(vm->qmp, &mh, MSG_NOSIGNAL);
}

/* Run one QMP command, passing fd along if fd >= 0; *ret (may be NULL)
 * gets its "return" value. Events that arrive meanwhile are skipped. */
static int qmp_fd(boot_vm *vm, const char *cmd_json, int fd, json_t **ret, int timeout_ms)
{
    char *msg = NULL;
    long id = ++vm->seq;
    if (cmd_json[0] != '{' || asprintf(&msg, "{\"id\":%ld,%s\n", id, cmd_json + 1) < 0)
        return boot_fail(EINVAL, "bad QMP command %s", cmd_json);
    size_t len = strlen(msg);
    ssize_t sent = qmp_send(vm, msg, len, fd);
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

static int qmp(boot_vm *vm, const char *cmd_json, json_t **ret, int timeout_ms)
{
    return qmp_fd(vm, cmd_json, -1, ret, timeout_ms);
}

static int qmp_connect(boot_vm *vm, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", vm->qmp_path);
    for (;;) {
        int fd = os_socket_cloexec(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0)
            return boot_fail_errno(-fd, "socket");
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
        usleep(10 * 1000); /* a resume waits on this: poll often */
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

/*
 * Keep guest RAM in 4 KiB pages: QEMU 7.2 advises huge pages on it, and on a
 * RAM file that unshares 2 MiB of a reflinked file per guest write (see
 * boot/qemu_nothp_linux.c, preloaded to turn the hint off). The library lies
 * beside the strata binary; STRATA_QEMU_SHIM names another, "none" none.
 * Called in the child, before exec.
 */
static void no_huge_pages(void)
{
    const char *e = getenv("STRATA_QEMU_SHIM");
    char path[4096];
    if (e && !strcmp(e, "none"))
        return;
    if (e && *e) {
        snprintf(path, sizeof path, "%s", e);
    } else {
        char *slash = os_self_exe(path, sizeof path - 40) ? NULL : strrchr(path, '/');
        if (!slash)
            return;
        strcpy(slash + 1, "strata-qemu-nothp.so");
    }
    if (access(path, R_OK) == 0)
        setenv("LD_PRELOAD", path, 1);
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
    no_huge_pages();
    execvp(argv[0], argv);
    dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/*
 * The KVM probe's guest: a multiboot image (a.out kludge, loaded at 1 MiB)
 * that enters long mode and writes PROBE_LINE on COM1. From this source
 * (GNU as; `as --64` then `objcopy -O binary -j .text`):
 *
 *   header: .long 0x1BADB002, 0x00010000, -(0x1BADB002 + 0x00010000)
 *           .long BASE, BASE, BASE + (end - header), BASE + (end - header)
 *           .long BASE + (start - header)             # BASE = 0x100000
 *   start:  cld; mov $0x2000,%edi; xor %eax,%eax; mov $3072,%ecx; rep stosl
 *           movl $0x3003,0x2000; movl $0x4003,0x3000  # PML4 -> PDPT -> PD
 *           movl $0x83,0x4000                         # first 2 MiB, 1:1
 *           mov $0x2000,%eax; mov %eax,%cr3
 *           mov %cr4,%eax; or $0x20,%eax; mov %eax,%cr4          # PAE
 *           mov $0xC0000080,%ecx; rdmsr; or $0x100,%eax; wrmsr   # EFER.LME
 *           mov %cr0,%eax; or $0x80000001,%eax; mov %eax,%cr0    # PG|PE
 *           lgdt BASE + (gdtr - header); ljmp $8, $BASE + (long64 - header)
 *   long64: lea msg(%rip),%rsi; mov $36,%ecx; mov $0x3f8,%dx; rep outsb
 *   1:      hlt; jmp 1b
 *   gdt:    .quad 0, 0x00209A0000000000               # 64-bit code
 *   gdtr:   .word 15; .long BASE + (gdt - header)
 *   msg:    .ascii "strata-kvm-probe: 64-bit guest runs\n"
 */
static const unsigned char probe_image[] = {
    0x02, 0xb0, 0xad, 0x1b, 0x00, 0x00, 0x01, 0x00, 0xfe, 0x4f, 0x51, 0xe4,
    0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x10, 0x00, 0xdc, 0x00, 0x10, 0x00,
    0xdc, 0x00, 0x10, 0x00, 0x20, 0x00, 0x10, 0x00, 0xfc, 0xbf, 0x00, 0x20,
    0x00, 0x00, 0x31, 0xc0, 0xb9, 0x00, 0x0c, 0x00, 0x00, 0xf3, 0xab, 0xc7,
    0x05, 0x00, 0x20, 0x00, 0x00, 0x03, 0x30, 0x00, 0x00, 0xc7, 0x05, 0x00,
    0x30, 0x00, 0x00, 0x03, 0x40, 0x00, 0x00, 0xc7, 0x05, 0x00, 0x40, 0x00,
    0x00, 0x83, 0x00, 0x00, 0x00, 0xb8, 0x00, 0x20, 0x00, 0x00, 0x0f, 0x22,
    0xd8, 0x0f, 0x20, 0xe0, 0x83, 0xc8, 0x20, 0x0f, 0x22, 0xe0, 0xb9, 0x80,
    0x00, 0x00, 0xc0, 0x0f, 0x32, 0x0d, 0x00, 0x01, 0x00, 0x00, 0x0f, 0x30,
    0x0f, 0x20, 0xc0, 0x0d, 0x01, 0x00, 0x00, 0x80, 0x0f, 0x22, 0xc0, 0x0f,
    0x01, 0x15, 0xb0, 0x00, 0x10, 0x00, 0xea, 0x85, 0x00, 0x10, 0x00, 0x08,
    0x00, 0x48, 0x8d, 0x35, 0x2a, 0x00, 0x00, 0x00, 0xb9, 0x24, 0x00, 0x00,
    0x00, 0x66, 0xba, 0xf8, 0x03, 0xf3, 0x6e, 0xf4, 0xeb, 0xfd, 0x66, 0x0f,
    0x1f, 0x44, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x9a, 0x20, 0x00, 0x0f, 0x00, 0xa0, 0x00,
    0x10, 0x00, 0x73, 0x74, 0x72, 0x61, 0x74, 0x61, 0x2d, 0x6b, 0x76, 0x6d,
    0x2d, 0x70, 0x72, 0x6f, 0x62, 0x65, 0x3a, 0x20, 0x36, 0x34, 0x2d, 0x62,
    0x69, 0x74, 0x20, 0x67, 0x75, 0x65, 0x73, 0x74, 0x20, 0x72, 0x75, 0x6e,
    0x73, 0x0a, 0x66, 0x90,
};
#define PROBE_LINE "strata-kvm-probe: 64-bit guest runs"
#define PROBE_MS 5000         /* qemu starts and the image prints in well under 1 s */
#define PROBE_KERNEL_MS 15000 /* a kernel under KVM prints its banner in 1-2 s */

/* Where verdicts are kept: one small file per boot of this host and
 * probed image, so a host that was fixed and rebooted is probed again. */
static int verdict_path(const char *key, char *out, size_t n)
{
    char boot_id[64] = "unknown";
    if (os_boot_id(boot_id, sizeof boot_id))
        snprintf(boot_id, sizeof boot_id, "unknown");
    char dir[256];
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg && *xdg && strlen(xdg) < 200)
        snprintf(dir, sizeof dir, "%s/strata-kvm", xdg);
    else
        snprintf(dir, sizeof dir, "/tmp/strata-kvm.%d", (int)getuid());
    struct stat st;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return -1;
    /* a directory someone else made for us in /tmp is not ours to trust */
    if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid())
        return -1;
    snprintf(out, n, "%s/%s.%s", dir, boot_id, key);
    return 0;
}

/* the cached verdict for key: 1 works, 0 doesn't, -1 not probed yet */
static int verdict_read(const char *key)
{
    char path[400];
    if (verdict_path(key, path, sizeof path))
        return -1;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    char c = 0;
    int got = fd >= 0 && read(fd, &c, 1) == 1;
    if (fd >= 0)
        close(fd);
    return got && (c == '0' || c == '1') ? c - '0' : -1;
}

/* best effort: a verdict not kept is probed again next time */
static void verdict_write(const char *key, int works)
{
    char path[400];
    if (verdict_path(key, path, sizeof path))
        return;
    err_info keep = *err_last();
    atomic_file_write_all(path, works ? "1\n" : "0\n", 2, 0600, 0);
    err_restore(&keep);
}

/* 1 if the file holds text, within the deadline (or once qemu has died) */
static int wait_for_text(const char *path, const char *text, pid_t pid, long deadline)
{
    for (;;) {
        FILE *f = fopen(path, "r");
        if (f) {
            char line[512];
            int found = 0;
            while (!found && fgets(line, sizeof line, f))
                found = strstr(line, text) != NULL;
            fclose(f);
            if (found)
                return 1;
        }
        if (now_ms() > deadline || waitpid(pid, NULL, WNOHANG) == pid)
            return 0;
        usleep(50 * 1000);
    }
}

static void kill_bounded(pid_t pid)
{
    kill(pid, SIGKILL);
    /* a process stuck inside a broken /dev/kvm may never die: don't wait forever */
    for (int i = 0; i < 50 && waitpid(pid, NULL, WNOHANG) == 0; i++)
        usleep(100 * 1000);
}

/*
 * Boot image (the probe image, or a Linux kernel with its early console on)
 * under KVM and wait for `expect` on its serial port: the proof that a
 * guest executes, which opening /dev/kvm, answering QMP or running the
 * real-mode BIOS is not (a host can do all three and hang a 64-bit kernel).
 */
static int probe_boot(const char *runtime_dir, const char *image, const char *append,
                      const char *expect, int timeout_ms)
{
    char serial[4200], sarg[4300];
    snprintf(serial, sizeof serial, "%s/.kvm-probe.serial", runtime_dir);
    snprintf(sarg, sizeof sarg, "file:%s", serial);
    unlink(serial);
    char *argv[] = {(char *)qemu_binary(), "-accel", "kvm", "-nodefaults", "-no-user-config",
                    "-display", "none", "-machine", "pc", "-m", "128", "-serial", sarg,
                    "-kernel", (char *)image, append ? "-append" : NULL, (char *)append, NULL};
    char log[4200];
    snprintf(log, sizeof log, "%s/.kvm-probe.log", runtime_dir);
    pid_t pid = spawn(argv, log);
    int works = pid > 0 && wait_for_text(serial, expect, pid, now_ms() + timeout_ms);
    if (pid > 0)
        kill_bounded(pid);
    unlink(serial);
    unlink(log);
    return works;
}

/* a verdict's key for a kernel: what it is, not where it lies */
static void kernel_key(const char *path, char out[32])
{
    snprintf(out, 32, "kernel-unreadable");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned char buf[65536], md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1;
    ssize_t r;
    while (ok && (r = read(fd, buf, sizeof buf)) > 0)
        ok = EVP_DigestUpdate(c, buf, (size_t)r) == 1;
    ok = ok && EVP_DigestFinal_ex(c, md, &mdlen) == 1 && mdlen >= 8;
    EVP_MD_CTX_free(c);
    close(fd);
    if (!ok)
        return;
    memcpy(out, "kernel-", 7);
    hex_encode(md, 8, out + 7);
}

#define note(o, ...) note_send((o)->note, (o)->note_ctx, __VA_ARGS__)

/*
 * Does KVM run this guest here? First the probe image (long mode, a line
 * on the serial port); then, for a guest that boots a Linux kernel
 * directly, that kernel up to its banner. Verdicts are cached per boot of
 * the host (and kernel); the first "no" is said once, as a note.
 * STRATA_TEST_KVM_PROBE=pass|fail forces the answer (for tests).
 */
static int kvm_works(const boot_start_opts *o, const char *kernel)
{
    const char *forced = test_hooks_get()->kvm_probe;
    if (forced && !strcmp(forced, "pass"))
        return 1;
    if (forced && !strcmp(forced, "fail")) {
        note(o, "KVM probe forced to fail (STRATA_TEST_KVM_PROBE=fail): using software emulation");
        return 0;
    }
    if (access("/dev/kvm", R_OK | W_OK) != 0)
        return 0;
    char key[32] = "image";
    int v = verdict_read(key);
    if (v < 0) {
        char image[4200];
        snprintf(image, sizeof image, "%s/.kvm-probe.img", o->runtime_dir);
        unlink(image);
        int fd = open(image, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        int ok = fd >= 0 && write(fd, probe_image, sizeof probe_image) == (ssize_t)sizeof probe_image;
        if (fd >= 0)
            close(fd);
        v = ok && probe_boot(o->runtime_dir, image, NULL, PROBE_LINE, PROBE_MS);
        unlink(image);
        verdict_write(key, v);
        if (!v)
            note(o, "KVM does not run a 64-bit guest on this host (the probe printed nothing in "
                    "%d s): using software emulation, which is slower", PROBE_MS / 1000);
    }
    if (!v || !kernel)
        return v;
    kernel_key(kernel, key);
    v = verdict_read(key);
    if (v < 0) {
        v = probe_boot(o->runtime_dir, kernel, "earlyprintk=serial,ttyS0 console=ttyS0 panic=-1",
                       "Linux version", PROBE_KERNEL_MS);
        verdict_write(key, v);
        if (!v)
            note(o, "KVM does not run this guest's kernel on this host (no banner in %d s): "
                    "using software emulation, which is slower", PROBE_KERNEL_MS / 1000);
    }
    return v;
}

/* How long a guest under KVM may show nothing before it counts as hung:
 * STRATA_KVM_PROGRESS_SECONDS, 0 for no limit. */
static long progress_limit_ms(void)
{
    const char *e = getenv("STRATA_KVM_PROGRESS_SECONDS");
    return e && *e ? atol(e) * 1000L : 30000L;
}

/* Has the guest written a console line that its real-mode start did not?
 * A Linux kernel's setup code prints before it leaves real mode, and a
 * host can run that and hang the 64-bit kernel that follows. */
static int console_progress(const char *path)
{
    static const char *const real_mode[] = {"early console in setup code", "Probing EDD", NULL};
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[512];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        found = line[0] != 0;
        for (const char *const *r = real_mode; found && *r; r++)
            found = strncmp(line, *r, strlen(*r)) != 0;
    }
    fclose(f);
    return found;
}

/*
 * Under KVM, a guest proves it runs by writing to its disk or a line to its
 * console that 64-bit code wrote.
 * One that does neither within the limit is stopped: a host whose KVM hangs
 * guests must fail loudly, never leave a silent VM.
 */
static int wait_progress(boot_vm *vm, const boot_start_opts *o, long limit_ms)
{
    char console[4200], disk[4200];
    snprintf(console, sizeof console, "%s/.console.log", o->runtime_dir);
    snprintf(disk, sizeof disk, "%s/Disk.img", o->bundle_dir);
    struct stat d0, now;
    int have_disk = stat(disk, &d0) == 0;
    long deadline = now_ms() + limit_ms;
    while (now_ms() < deadline) {
        if (console_progress(console))
            return 0;
        if (have_disk && stat(disk, &now) == 0 &&
            now.st_mtime != d0.st_mtime)
            return 0;
        if (reap(vm))
            return 0; /* it ended on its own: the supervisor reports that */
        usleep(100 * 1000);
    }
    return -ETIMEDOUT;
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

/* 1 for KVM, 0 for software emulation, or an error for a bad --accel */
static int choose_accel(const boot_start_opts *o, int forced_kvm)
{
    const char *a = o->accel && *o->accel ? o->accel : "auto";
    if (!strcmp(a, "tcg"))
        return 0;
    if (forced_kvm) {
        if (access("/dev/kvm", R_OK | W_OK) != 0)
            return boot_fail_errno(errno, "--accel kvm: /dev/kvm");
        return 1;
    }
    if (strcmp(a, "auto"))
        return boot_fail(EINVAL, "--accel '%s' must be kvm, tcg or auto", a);
    const boot_settings *s = o->settings;
    char kernel[4200];
    if (s->loader == BOOT_LOADER_LINUX)
        snprintf(kernel, sizeof kernel, "%s/%s", o->bundle_dir, s->kernel);
    return kvm_works(o, s->loader == BOOT_LOADER_LINUX ? kernel : NULL);
}

/* A guest started under KVM that shows no progress: stop it. Told --accel
 * kvm, that is the error; under auto, the caller emulates instead. */
static int no_progress(boot_vm *vm, const boot_start_opts *o, int forced_kvm, long limit_ms)
{
    kill_bounded(vm->pid);
    vm->exited = 1;
    long secs = limit_ms / 1000;
    if (forced_kvm)
        return boot_fail(ETIMEDOUT, "the guest showed no progress under KVM in %ld s (no console "
                                    "output, no disk write): KVM does not work on this host; "
                                    "run it with --accel tcg", secs);
    verdict_write("image", 0); /* the next runs emulate from the start */
    note(o, "the guest showed no progress under KVM in %ld s although the KVM probe passed: "
            "restarting it with software emulation, which strata uses on this host from now on "
            "(until it reboots)", secs);
    return -EAGAIN;
}

#define ARG(s) (argv[argc++] = (s))

/* The monitor other strata commands use (screenshot) while the supervisor
 * holds .qmp.sock: a QMP socket serves one client at a time. */
#define QMP_CLI_SOCK ".qmp-cli.sock"

/* What makes the guest reachable from the host: its ssh port forwarded
 * from a loopback port qemu picks (0: any free one; endpoints() reads
 * which), a second monitor, and with gui a VGA display served as VNC on
 * the first free loopback display. */
typedef struct {
    char nic[160], qmp_cli[260];
} reach_bufs;

static int reach_args(const boot_start_opts *o, const char *mac, char **argv, int argc,
                      reach_bufs *b)
{
    snprintf(b->nic, sizeof b->nic, "user,model=virtio-net-pci,mac=%s,hostfwd=tcp:127.0.0.1:0-:22",
             mac);
    ARG("-nic");
    ARG(b->nic);
    char path[200];
    if ((size_t)snprintf(path, sizeof path, "%s/" QMP_CLI_SOCK, o->runtime_dir) < 108) {
        unlink(path);
        snprintf(b->qmp_cli, sizeof b->qmp_cli, "socket,id=qmp1,path=%s,server=on,wait=off", path);
        ARG("-chardev");
        ARG(b->qmp_cli);
        ARG("-mon");
        ARG("chardev=qmp1,mode=control");
    }
    if (o->gui) {
        ARG("-device");
        ARG("VGA");
        ARG("-vnc");
        ARG("127.0.0.1:0,to=99");
    }
    return argc;
}

/* Installer media (an ISO in the bundle) as a read-only CD drive on the
 * IDE bus: what Linux installers and OVMF look for. buf holds the -drive
 * value; returns the new argc. */
static int add_installer(const boot_start_opts *o, char **argv, int argc, char *buf, size_t n)
{
    if (!o->settings->installer)
        return argc;
    snprintf(buf, n, "file=%s/%s,format=raw,if=ide,index=2,media=cdrom,readonly=on", o->bundle_dir,
             o->settings->installer);
    ARG("-drive");
    ARG(buf);
    return argc;
}

/* wait for the incoming state to load, then run from it */
static int wait_restored(boot_vm *vm)
{
    long deadline = now_ms() + 300000;
    for (;;) {
        json_t *st = NULL;
        int rc = qmp(vm, "{\"execute\":\"query-status\"}", &st, 5000);
        if (rc)
            return rc;
        const char *status = json_string_value(json_object_get(st, "status"));
        int waiting = status && !strcmp(status, "inmigrate");
        json_decref(st);
        if (!waiting)
            break;
        if (now_ms() > deadline)
            return boot_fail(ETIMEDOUT, "qemu did not load the saved state in 5 minutes");
        usleep(10 * 1000);
    }
    return qmp(vm, "{\"execute\":\"cont\"}", NULL, 10000);
}

/*
 * Saved states come in two kinds (the binding state-kind records which):
 *   ram-file: guest RAM lives in RAM_FILE in the instance (a shared file
 *     mapping), and the state file holds only the device state, saved with
 *     the x-ignore-shared migration capability; a resume maps a reflink of
 *     the saved RAM file and faults pages in as the guest touches them;
 *   classic: all RAM streamed into the state file (no binding: states
 *     made before the RAM file are classic).
 * STRATA_QEMU_SAVE=classic runs with anonymous RAM and saves classic.
 */
#define RAM_FILE "SaveFile.qemuram"
#define STATE_RAM_FILE "ram-file"
#define STATE_CLASSIC "classic"

static int classic_forced(void)
{
    const char *e = getenv("STRATA_QEMU_SAVE");
    return e && !strcmp(e, "classic");
}

static int restoring_ram_file(const boot_start_opts *o)
{
    return o->restore_state && o->restore_kind && !strcmp(o->restore_kind, STATE_RAM_FILE);
}

/* Every kind restores here, but a ram-file state not when forced classic
 * (a QEMU without x-ignore-shared is found out once it runs). */
static int qemu_can_restore(const char *kind)
{
    if (kind && !strcmp(kind, STATE_RAM_FILE) && classic_forced())
        return boot_fail(EINVAL, "this saved state keeps guest RAM in %s (state-kind %s), which a "
                                 "classic resume can't use (STRATA_QEMU_SAVE=classic); resume it "
                                 "without that, or boot it with --cold", RAM_FILE, STATE_RAM_FILE);
    if (kind && strcmp(kind, STATE_RAM_FILE) && strcmp(kind, STATE_CLASSIC))
        return boot_fail(EINVAL, "this saved state is of kind '%s', which this strata can't resume; "
                                 "boot it with --cold", kind);
    return 0;
}

/* The RAM file a VM starts with: the saved one for a ram-file resume (it
 * must be whole), else an empty file QEMU sizes (a sparse file, zeros). */
static int prepare_ram_file(const boot_start_opts *o, const char *path)
{
    uint64_t want = o->settings->memory_mib << 20;
    if (restoring_ram_file(o)) {
        struct stat st;
        if (stat(path, &st) < 0)
            return boot_fail_errno(errno, "%s: the saved state's RAM", path);
        if ((uint64_t)st.st_size != want)
            return boot_fail(EINVAL, "%s: %llu bytes, but the guest has %llu MiB of RAM", path,
                             (unsigned long long)st.st_size, (unsigned long long)o->settings->memory_mib);
        return 0;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return boot_fail_errno(errno, "%s", path);
    close(fd);
    return 0;
}

/* Guest RAM in a file of the instance, mapped shared, so strata can clone
 * it; or, forced classic, QEMU's anonymous RAM. The backend takes the id of
 * the pc machine's own RAM block, "pc.ram": a migration stream names RAM
 * blocks, and a classic state saved with anonymous RAM must load into it. */
static int add_memory_backend(char **argv, int *argc, const boot_start_opts *o, boot_vm *vm,
                              char *obj, size_t n)
{
    if (classic_forced())
        return o->restore_state ? qemu_can_restore(o->restore_kind) : 0;
    snprintf(vm->ram_path, sizeof vm->ram_path, "%s/%s", o->bundle_dir, RAM_FILE);
    int rc = prepare_ram_file(o, vm->ram_path);
    if (rc)
        return rc;
    snprintf(obj, n, "memory-backend-file,id=pc.ram,size=%lluM,mem-path=%s,share=on",
             (unsigned long long)o->settings->memory_mib, vm->ram_path);
    argv[(*argc)++] = "-machine";
    argv[(*argc)++] = "memory-backend=pc.ram";
    argv[(*argc)++] = "-object";
    argv[(*argc)++] = obj;
    return 0;
}

/* A classic state streams in from the start; a ram-file state waits for
 * the capability to be set (restore_ram_file). */
static int add_incoming(char **argv, int *argc, const boot_start_opts *o, char *arg, size_t n)
{
    if (!o->restore_state)
        return 0;
    if (strchr(o->restore_state, '\''))
        return boot_fail(EINVAL, "%s: a path with a quote can't be restored", o->restore_state);
    if (restoring_ram_file(o))
        snprintf(arg, n, "defer");
    else
        snprintf(arg, n, "exec:cat '%s'", o->restore_state);
    argv[(*argc)++] = "-incoming";
    argv[(*argc)++] = arg;
    return 0;
}

/* Does this QEMU offer x-ignore-shared? (experimental, QMP-only on 7.2) */
static int probe_ignore_shared(boot_vm *vm)
{
    json_t *caps = NULL;
    if (qmp(vm, "{\"execute\":\"query-migrate-capabilities\"}", &caps, 5000))
        return 0;
    int found = 0;
    size_t i;
    json_t *c;
    json_array_foreach(caps, i, c) {
        const char *name = json_string_value(json_object_get(c, "capability"));
        found |= name && !strcmp(name, "x-ignore-shared");
    }
    json_decref(caps);
    return found;
}

static int set_ignore_shared(boot_vm *vm)
{
    return qmp(vm, "{\"execute\":\"migrate-set-capabilities\",\"arguments\":{\"capabilities\":"
                   "[{\"capability\":\"x-ignore-shared\",\"state\":true}]}}", NULL, 5000);
}

/* A ram-file state: the capability, then the device state from its file. */
static int restore_ram_file(boot_vm *vm, const boot_start_opts *o)
{
    if (!vm->ignore_shared)
        return boot_fail(ENOTSUP, "this saved state keeps guest RAM in %s (state-kind %s) and needs "
                                  "QEMU's x-ignore-shared migration capability, which %s lacks; boot "
                                  "it with --cold", RAM_FILE, STATE_RAM_FILE, qemu_binary());
    char cmd[8600];
    snprintf(cmd, sizeof cmd,
             "{\"execute\":\"migrate-incoming\",\"arguments\":{\"uri\":\"exec:cat '%s'\"}}",
             o->restore_state);
    int rc = set_ignore_shared(vm);
    return rc ? rc : qmp(vm, cmd, NULL, 10000);
}

/* After QMP is up: learn what QEMU offers, and for a restore, load the
 * state and run from it. */
static int after_connect(boot_vm *vm, const boot_start_opts *o)
{
    vm->ignore_shared = !classic_forced() && probe_ignore_shared(vm);
    if (vm->ram_path[0] && !vm->ignore_shared && !o->restore_state)
        note(o, "this QEMU lacks the x-ignore-shared migration capability: a suspend saves all "
                "guest RAM into the state file (classic)");
    if (!o->restore_state)
        return 0;
    int rc = restoring_ram_file(o) ? restore_ram_file(vm, o) : 0;
    return rc ? rc : wait_restored(vm);
}

/* qemu's command line: its words and the buffers they point into */
typedef struct {
    char *argv[160];
    int argc;
    char mem[32], cpus[16], drive[4400], qmpdev[200], con[4400], kernel[4200], initrd[4200],
        pflash0[4200], pflash1[4200], incoming[4200], cdrom[4400], ramobj[4400];
    char virtfs[8][4400];
    reach_bufs rb;
    char disk_dev[200], extra[BOOT_MAX_DISKS][4400], extra_dev[BOOT_MAX_DISKS][200];
} qemu_cmdline;

#define CARG(s) (c->argv[c->argc++] = (char *)(s))

static void add_machine(qemu_cmdline *c, const boot_settings *s, int kvm)
{
    CARG(qemu_binary());
    CARG("-accel");
    CARG(kvm ? "kvm" : "tcg");
    CARG("-nodefaults");
    CARG("-no-user-config");
    CARG("-display");
    CARG("none");
    CARG("-machine");
    CARG("pc");
    snprintf(c->mem, sizeof c->mem, "%llu", (unsigned long long)s->memory_mib);
    snprintf(c->cpus, sizeof c->cpus, "%u", s->cpus);
    CARG("-m");
    CARG(c->mem);
    CARG("-smp");
    CARG(c->cpus);
}

/* the -drive words that put the boot disk on its bus: virtio's if=, or a
 * drive of its own for an NVMe controller, whose -device words go into
 * c->disk_dev (the serial names it in the guest: /dev/disk/by-id) */
static const char *boot_disk_bus(qemu_cmdline *c, boot_bus bus)
{
    if (bus != BOOT_BUS_NVME)
        return "if=virtio";
    snprintf(c->disk_dev, sizeof c->disk_dev, "nvme,drive=disk0,serial=strata-disk");
    return "if=none,id=disk0";
}

/* the extra disks (settings.disks): virtio-blk, an NVMe controller each,
 * or USB mass storage on one xHCI controller; with the boot disk's cache */
static void add_extra_disks(qemu_cmdline *c, const boot_start_opts *o)
{
    static const char *const cache_mode[] = {"writeback", "writeback", "none"};
    const boot_settings *s = o->settings;
    const char *cache = s->disk_sync == BOOT_SYNC_NONE ? "unsafe" : cache_mode[s->disk_caching];
    int usb = 0;
    for (size_t i = 0; i < s->ndisks && i < BOOT_MAX_DISKS; i++) {
        const boot_disk *d = &s->disks[i];
        snprintf(c->extra[i], sizeof c->extra[i], "file=%s/%s,format=raw,cache=%s%s,%s%zu",
                 o->bundle_dir, d->file, cache, d->read_only ? ",readonly=on" : "",
                 d->bus == BOOT_BUS_VIRTIO ? "if=virtio,index=" : "if=none,id=extra", i + 1);
        CARG("-drive");
        CARG(c->extra[i]);
        if (d->bus == BOOT_BUS_VIRTIO)
            continue;
        if (d->bus == BOOT_BUS_USB && !usb++) {
            CARG("-device");
            CARG("qemu-xhci,id=xhci");
        }
        snprintf(c->extra_dev[i], sizeof c->extra_dev[i], d->bus == BOOT_BUS_USB
                 ? "usb-storage,bus=xhci.0,drive=extra%zu,removable=on"
                 : "nvme,drive=extra%zu,serial=strata-extra%zu", i + 1, i + 1);
        CARG("-device");
        CARG(c->extra_dev[i]);
    }
}

/* the disk, the monitor the supervisor drives, the serial console */
static int add_disk_monitor_console(qemu_cmdline *c, const boot_start_opts *o, const boot_vm *vm)
{
    const boot_settings *s = o->settings;
    static const char *const cache_mode[] = {"writeback", "writeback", "none"};
    if (strchr(o->bundle_dir, ','))
        return boot_fail(EINVAL, "%s: qemu can't take a path with a comma", o->bundle_dir);
    const char *cache = s->disk_sync == BOOT_SYNC_NONE ? "unsafe" : cache_mode[s->disk_caching];
    if (s->disk_nbd) { /* a node of its own, so it can reconnect (boot/qemu_nbd.c) */
        int rc = qemu_nbd_blockdev(s->disk_nbd, cache, qemu_major_version(qemu_binary(), o->runtime_dir),
                                   c->drive, sizeof c->drive);
        if (rc)
            return rc;
        CARG("-blockdev");
        CARG(c->drive);
        if (s->disk_bus != BOOT_BUS_NVME)
            snprintf(c->disk_dev, sizeof c->disk_dev, "virtio-blk-pci,drive=disk0");
        else
            boot_disk_bus(c, s->disk_bus);
        CARG("-device");
        CARG(c->disk_dev);
    } else {
        snprintf(c->drive, sizeof c->drive, "file=%s/Disk.img,format=raw,%s,cache=%s", o->bundle_dir,
                 boot_disk_bus(c, s->disk_bus), cache);
        CARG("-drive");
        CARG(c->drive);
    }
    if (!s->disk_nbd && s->disk_bus == BOOT_BUS_NVME) {
        CARG("-device");
        CARG(c->disk_dev);
    }
    snprintf(c->qmpdev, sizeof c->qmpdev, "socket,id=qmp0,path=%s,server=on,wait=off", vm->qmp_path);
    CARG("-chardev");
    CARG(c->qmpdev);
    CARG("-mon");
    CARG("chardev=qmp0,mode=control");
    if (o->console)
        snprintf(c->con, sizeof c->con, "stdio,id=con0,signal=off,logfile=%s/.console.log",
                 o->runtime_dir);
    else
        snprintf(c->con, sizeof c->con, "file,id=con0,path=%s/.console.log", o->runtime_dir);
    CARG("-chardev");
    CARG(c->con);
    CARG("-serial");
    CARG("chardev:con0");
    return 0;
}

/* a kernel from the bundle, or OVMF with the bundle's variable store */
static int add_loader(qemu_cmdline *c, const boot_start_opts *o)
{
    const boot_settings *s = o->settings;
    if (s->loader == BOOT_LOADER_LINUX) {
        snprintf(c->kernel, sizeof c->kernel, "%s/%s", o->bundle_dir, s->kernel);
        CARG("-kernel");
        CARG(c->kernel);
        if (s->initrd) {
            snprintf(c->initrd, sizeof c->initrd, "%s/%s", o->bundle_dir, s->initrd);
            CARG("-initrd");
            CARG(c->initrd);
        }
        if (s->cmdline) {
            CARG("-append");
            CARG(s->cmdline);
        }
        return 0;
    }
    snprintf(c->pflash1, sizeof c->pflash1, "if=pflash,format=raw,unit=1,file=%s/%s", o->bundle_dir,
             s->efi_vars);
    const char *code = ovmf_code(c->pflash1 + strlen("if=pflash,format=raw,unit=1,file="));
    if (!code)
        return boot_fail(ENOENT, "UEFI boot needs OVMF's firmware for this variable store (Debian package ovmf)");
    snprintf(c->pflash0, sizeof c->pflash0, "if=pflash,format=raw,unit=0,readonly=on,file=%s", code);
    CARG("-drive");
    CARG(c->pflash0);
    CARG("-drive");
    CARG(c->pflash1);
    return 0;
}

static void add_shares(qemu_cmdline *c, const boot_settings *s)
{
    for (size_t i = 0; i < s->nshares && i < 8; i++) {
        /* 9p: what qemu offers without a virtiofsd daemon */
        snprintf(c->virtfs[i], sizeof c->virtfs[i], "local,path=%s,mount_tag=%s,security_model=none%s",
                 s->shares[i].path, s->shares[i].tag, s->shares[i].read_only ? ",readonly=on" : "");
        CARG("-virtfs");
        CARG(c->virtfs[i]);
    }
}

static int build_cmdline(qemu_cmdline *c, const boot_start_opts *o, boot_vm *vm, int kvm)
{
    const boot_settings *s = o->settings;
    int rc;
    add_machine(c, s, kvm);
    if ((rc = add_disk_monitor_console(c, o, vm)))
        return rc;
    c->argc = reach_args(o, s->mac[0] ? s->mac : "52:54:00:12:34:56", c->argv, c->argc, &c->rb);
    if ((rc = add_loader(c, o)))
        return rc;
    c->argc = add_installer(o, c->argv, c->argc, c->cdrom, sizeof c->cdrom);
    add_extra_disks(c, o);
    add_shares(c, s);
    if ((rc = add_memory_backend(c->argv, &c->argc, o, vm, c->ramobj, sizeof c->ramobj)) ||
        (rc = add_incoming(c->argv, &c->argc, o, c->incoming, sizeof c->incoming)))
        return rc;
    c->argv[c->argc] = NULL;
    return 0;
}

/* a VM not yet started, with its socket and log paths (old ones removed) */
static int new_vm(const boot_start_opts *o, boot_vm **out)
{
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
    *out = vm;
    return 0;
}

/* build the command line and start qemu */
static int launch(boot_vm *vm, const boot_start_opts *o, int kvm)
{
    qemu_cmdline *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    int rc = build_cmdline(c, o, vm, kvm);
    if (!rc && (vm->pid = spawn(c->argv, vm->log_path)) < 0)
        rc = boot_fail_errno(errno, "fork");
    free(c);
    return rc;
}

/* with -incoming, qemu exits as soon as it rejects the state, at any point
 * of the start: say that, with its own reason */
static int refused_state(boot_vm *vm)
{
    char why[1024];
    usleep(200 * 1000);
    reap(vm);
    last_log_line(vm, why, sizeof why);
    return boot_fail(EIO, "qemu refused the saved state: %s", why);
}

/* end a started qemu that failed; the error stays the one that ended it */
static int discard_started(boot_vm *vm)
{
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

static int qemu_start(const boot_start_opts *o, boot_vm **out)
{
    if (o->settings->os != BOOT_OS_LINUX)
        return boot_fail(ENOTSUP, "the qemu driver runs Linux guests; macOS guests need the vz "
                                  "driver on a Mac");
    if (o->settings->rosetta) /* the bundle stays runnable under both drivers */
        note(o, "rosetta: Rosetta for Linux is Apple's (the vz driver); under qemu its share is left out");
    boot_vm *vm = NULL;
    int rc = new_vm(o, &vm);
    if (rc)
        return rc;
    int forced_kvm = o->accel && !strcmp(o->accel, "kvm");
    int kvm = choose_accel(o, forced_kvm);
    if ((rc = kvm < 0 ? kvm : launch(vm, o, kvm))) {
        free(vm);
        return rc;
    }
    rc = qmp_connect(vm, 15000);
    if (!rc)
        rc = after_connect(vm, o);
    if (rc && o->restore_state && rc != -ENOTSUP)
        rc = refused_state(vm);
    long limit_ms = progress_limit_ms();
    if (!rc && kvm && limit_ms > 0 && wait_progress(vm, o, limit_ms) &&
        (rc = no_progress(vm, o, forced_kvm, limit_ms)) == -EAGAIN) {
        /* nothing ran, so nothing was written: start again, emulated */
        if (vm->qmp >= 0)
            close(vm->qmp);
        free(vm);
        boot_start_opts emulated = *o;
        emulated.accel = "tcg";
        return qemu_start(&emulated, out);
    }
    if (rc)
        return discard_started(vm);
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

/* A classic state holds all RAM: a RAM file beside it is no part of it. */
static void saved_as(boot_vm *vm, int ram_file)
{
    vm->saved = 1;
    vm->saved_kind = ram_file ? STATE_RAM_FILE : STATE_CLASSIC;
    if (!ram_file && vm->ram_path[0]) {
        unlink(vm->ram_path); /* QEMU keeps its mapping until it quits */
        vm->ram_path[0] = 0;
    }
}

static const char *qemu_state_kind(boot_vm *vm)
{
    return vm->saved_kind;
}

/* Will save() keep guest RAM in the RAM file (x-ignore-shared)? */
static int saves_ram_file(const boot_vm *vm)
{
    return vm->ram_path[0] && vm->ignore_shared;
}

static int qemu_save(boot_vm *vm, const char *path)
{
    /* QEMU writes to a file we open and hand it (getfd), not to a shell
     * it would start for exec:, which costs a suspend 10-20 ms */
    atomic_file out;
    int rc = atomic_file_open(&out, path, 0644, 0);
    if (rc)
        return rc;
    int ram_file = saves_ram_file(vm);
    rc = ram_file ? set_ignore_shared(vm) : 0;
    if (!rc)
        rc = qmp_fd(vm, "{\"execute\":\"getfd\",\"arguments\":{\"fdname\":\"strata-save\"}}",
                    out.fd, NULL, 10000);
    if (!rc)
        rc = qmp(vm, "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"fd:strata-save\"}}",
                 NULL, 10000);
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
        usleep(2 * 1000); /* a RAM-file save takes ~15 ms */
    }
    if (rc) {
        atomic_file_abort(&out);
        return rc;
    }
    /* QEMU's writes, through its own descriptor, are the file's: our fsync
     * covers them */
    if ((rc = atomic_file_commit(&out)))
        return rc;
    saved_as(vm, ram_file);
    return 0;
}

static int qemu_stop(boot_vm *vm, int force)
{
    if (reap(vm))
        return 0;
    if (!force)
        return qmp(vm, "{\"execute\":\"system_powerdown\"}", NULL, 5000);
    /* Once saved, nothing of QEMU's is left to lose: the pause flushed its
     * disk, and its RAM is in the saved file or the page cache. Its quit
     * takes 20-30 ms, which a suspend would wait for. */
    if (!vm->saved)
        qmp(vm, "{\"execute\":\"quit\"}", NULL, 3000);
    for (int i = 0; i < 5000 && !vm->saved && !reap(vm); i++)
        usleep(1000); /* QEMU quits in 20-30 ms */
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

/* the other monitor's socket, beside the supervisor's */
static void unlink_cli_monitor(const char *qmp_path)
{
    char path[200];
    const char *slash = strrchr(qmp_path, '/');
    if (slash && (size_t)snprintf(path, sizeof path, "%.*s/" QMP_CLI_SOCK, (int)(slash - qmp_path),
                                  qmp_path) < sizeof path)
        unlink(path);
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
    unlink_cli_monitor(vm->qmp_path);
    if (vm->ram_path[0] && !vm->saved)
        unlink(vm->ram_path); /* a stopped guest's RAM is nothing to keep */
    free(vm);
}

/* ---------- reaching the guest: endpoints and screenshots ---------- */

/* the host port of the ssh forward, from HMP's "info usernet" table:
 * "  TCP[HOST_FORWARD]  9  127.0.0.1 35431  10.0.2.15  22  0  0" */
static unsigned forwarded_port(const char *table, char *host, size_t n)
{
    for (const char *p = table; (p = strstr(p, "HOST_FORWARD]")); p++) {
        char src[64], dst[64];
        unsigned sport, dport;
        int fd;
        if (sscanf(p, "HOST_FORWARD] %d %63s %u %63s %u", &fd, src, &sport, dst, &dport) == 5 &&
            dport == 22) {
            snprintf(host, n, "%s", src);
            return sport;
        }
    }
    return 0;
}

static int qemu_endpoints(boot_vm *vm, boot_endpoints *out)
{
    memset(out, 0, sizeof *out);
    json_t *r = NULL;
    int rc = qmp(vm, "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"info usernet\"}}",
                 &r, 5000);
    if (!rc && json_is_string(r))
        out->ssh_port = forwarded_port(json_string_value(r), out->ssh_host, sizeof out->ssh_host);
    json_decref(r);
    r = NULL;
    if (!rc && !qmp(vm, "{\"execute\":\"query-vnc\"}", &r, 5000) && json_is_true(json_object_get(r, "enabled"))) {
        const char *host = json_string_value(json_object_get(r, "host"));
        const char *port = json_string_value(json_object_get(r, "service"));
        snprintf(out->vnc_host, sizeof out->vnc_host, "%s", host ? host : "");
        out->vnc_port = port ? (unsigned)atoi(port) : 0;
    }
    json_decref(r);
    return rc;
}

/* connect to the monitor kept for other strata commands, and greet it */
static int cli_monitor(const char *runtime_dir, boot_vm *vm)
{
    vm->qmp = -1;
    snprintf(vm->log_path, sizeof vm->log_path, "%s/.qemu.log", runtime_dir);
    if ((size_t)snprintf(vm->qmp_path, sizeof vm->qmp_path, "%s/" QMP_CLI_SOCK, runtime_dir) >=
        sizeof vm->qmp_path)
        return boot_fail(ENAMETOOLONG, "%s: path too long for a control socket", runtime_dir);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", vm->qmp_path);
    int fd = os_socket_cloexec(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        return boot_fail_errno(-fd, "socket");
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return boot_fail(ENOTCONN, "no control socket %s: the instance was started by an older "
                                   "strata, or is stopping", vm->qmp_path);
    }
    vm->qmp = fd;
    json_t *greeting = qmp_read(vm, now_ms() + 5000);
    if (!greeting)
        return boot_fail(EIO, "qemu sent no QMP greeting on %s", vm->qmp_path);
    json_decref(greeting);
    return qmp(vm, "{\"execute\":\"qmp_capabilities\"}", NULL, 5000);
}

/* screendump to file, in format (NULL: qemu's default, PPM); -EPROTONOSUPPORT
 * when this qemu doesn't know the format argument */
static int screendump(boot_vm *vm, const char *file, const char *format)
{
    json_t *cmd = json_pack("{s:s, s:{s:s}}", "execute", "screendump", "arguments", "filename", file);
    if (cmd && format)
        json_object_set_new(json_object_get(cmd, "arguments"), "format", json_string(format));
    char *text = cmd ? json_dumps(cmd, JSON_COMPACT) : NULL;
    json_decref(cmd);
    int rc = text ? qmp(vm, text, NULL, 30000) : -ENOMEM;
    free(text);
    if (rc && rc != -ENOMEM) {
        char why[1024];
        snprintf(why, sizeof why, "%s", boot_error());
        if (strstr(why, "no console") || strstr(why, "not a graphic"))
            rc = boot_fail(ENOTSUP, "this instance has no display to capture: run it with --gui");
        else if (format && strstr(why, "'format'"))
            rc = -EPROTONOSUPPORT;
    }
    return rc;
}

/* QMP screendump (format png since QEMU 7.1) into a temporary name beside
 * path, then published: a reader never sees half a picture */
static int qemu_screenshot(const char *runtime_dir, const char *png_path)
{
    boot_vm *vm = calloc(1, sizeof *vm);
    if (!vm)
        return boot_oom();
    atomic_file png; /* QEMU writes it, by its name */
    int rc = atomic_file_open(&png, png_path, 0644, ATOMIC_FILE_FOREIGN);
    if (rc) {
        free(vm);
        return rc;
    }
    const char *tmp = png.tmp;
    rc = cli_monitor(runtime_dir, vm);
    /* the old qemu's way, forced for a test */
    int force_ppm = test_hooks_get()->screendump_ppm;
    if (!rc && !force_ppm)
        rc = screendump(vm, tmp, "png");
    if (force_ppm ? !rc : rc == -EPROTONOSUPPORT) {
        /* before 7.1 screendump writes PPM only: convert it here */
        char ppm[4300];
        snprintf(ppm, sizeof ppm, "%s.ppm", tmp);
        rc = screendump(vm, ppm, NULL);
        if (!rc)
            rc = boot_ppm_to_png(ppm, tmp);
        unlink(ppm);
    }
    if (vm->qmp >= 0)
        close(vm->qmp);
    free(vm);
    if (rc) {
        atomic_file_abort(&png);
        return rc;
    }
    return atomic_file_commit(&png);
}

/* A fresh EFI variable store: a copy of OVMF's empty template, the 4 MiB
 * build where it is installed (ovmf_code picks the code to match by size). */
static int qemu_create_efi_vars(const char *path)
{
    static const char *const templates[] = {"/usr/share/OVMF/OVMF_VARS_4M.fd",
                                            "/usr/share/OVMF/OVMF_VARS.fd", NULL};
    const char *src = NULL;
    for (const char *const *t = templates; *t && !src; t++)
        if (access(*t, R_OK) == 0)
            src = *t;
    if (!src)
        return boot_fail(ENOENT, "no OVMF variable store template (OVMF_VARS*.fd): install the "
                                 "Debian package ovmf");
    /* a dot-named temporary beside it, so a crash leaves nothing a commit versions */
    char *data = NULL;
    size_t len = 0;
    int rc = file_read_all(src, 64u << 20, &data, &len);
    if (!rc)
        rc = atomic_file_write_all(path, data, len, 0644, 0);
    free(data);
    return rc;
}

/* A ram-file save leaves guest RAM as it was at the pause: the RAM file. */
static int qemu_final_at_pause(boot_vm *vm, const char *file)
{
    return !strcmp(file, RAM_FILE) && saves_ram_file(vm);
}

static const char *const qemu_state_files[] = {"SaveFile.qemustate", RAM_FILE, NULL};

/* A guest writes scattered pages, and a saved state adds the chunks of its
 * RAM file that differ from the state it was resumed from: so 4 KiB, the
 * page size, or for a guest over 4 GiB the smallest power of two that
 * keeps the file within 2^20 chunks (a quarter of a layer's data bound). */
static uint32_t qemu_state_chunk_size(const boot_settings *s, const char *file)
{
    if (strcmp(file, RAM_FILE))
        return 0;
    uint32_t cs = 4096;
    while (cs < s->memory_mib && cs < (64u << 20))
        cs <<= 1;
    return cs;
}

static const boot_driver qemu_driver = {
    .name = "qemu",
    .state_file = "SaveFile.qemustate",
    .state_files = qemu_state_files,
    .state_kind = qemu_state_kind,
    .can_restore = qemu_can_restore,
    .state_chunk_size = qemu_state_chunk_size,
    .final_at_pause = qemu_final_at_pause,
    .start = qemu_start,
    .pause = qemu_pause,
    .save = qemu_save,
    .resume = qemu_resume,
    .stop = qemu_stop,
    .alive = qemu_alive,
    .pid = qemu_pid,
    .release = qemu_release,
    .endpoints = qemu_endpoints,
    .screenshot = qemu_screenshot,
    .create_efi_vars = qemu_create_efi_vars,
};

const boot_driver *boot_qemu_driver(void)
{
    return &qemu_driver;
}
