/*
 * Making and changing VMs: create linux (from a disk image, an ISO or a
 * kernel), set (hardware, disk size, shares, installer media), and the
 * rule that a layer from outside opens no host folder on its own.
 *
 * A new VM is built as a bundle in the store's scratch space and imported
 * as a root layer: a failure anywhere leaves nothing but that scratch
 * space, which is dropped. Disk images are read by qemu-img, run as a child
 * (no shell) and never trusted to name other files (no backing files).
 */
#define _GNU_SOURCE
#include "internal.h"
#include "../base/platform.h"
#include "../clone/clone.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define note(o, ...) note_send((o)->note, (o)->ctx, __VA_ARGS__)

static const char *qemu_img(void)
{
    const char *e = getenv("STRATA_QEMU_IMG");
    return e && *e ? e : "qemu-img";
}

static void human(uint64_t b, char *out, size_t n)
{
    if (b >= (1ull << 30) && b % (1ull << 30) == 0)
        snprintf(out, n, "%" PRIu64 "G", b >> 30);
    else if (b >= (1ull << 30))
        snprintf(out, n, "%.1fG", (double)b / (double)(1ull << 30));
    else if (b >= (1ull << 20) && b % (1ull << 20) == 0)
        snprintf(out, n, "%" PRIu64 "M", b >> 20);
    else
        snprintf(out, n, "%" PRIu64 " bytes", b);
}

/* Read all of fd into a string (at most 1 MiB kept). */
static char *slurp(int fd)
{
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    ssize_t r;
    while (buf && (r = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (cap - len < 2 && cap < (1u << 20)) {
            char *more = realloc(buf, cap * 2);
            if (!more)
                break;
            buf = more;
            cap *= 2;
        } else if (cap - len < 2) {
            len = 0; /* far more than any answer we read: keep the tail */
        }
    }
    if (buf)
        buf[len] = 0;
    return buf;
}

/* the last non-empty line of text, trimmed, into out */
static void last_line(const char *text, char *out, size_t n)
{
    snprintf(out, n, "no message");
    const char *p = text;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len)
            snprintf(out, n, "%.*s", (int)len, p);
        p = nl ? nl + 1 : NULL;
    }
}

/* Run qemu-img with args; *out gets its stdout (may be NULL). On failure
 * the message is qemu-img's last line of stderr. */
static int run_qemu_img(char *const *args, char **out)
{
    int po[2], pe[2];
    int rc = os_pipe_cloexec(po);
    if (rc)
        return boot_fail_errno(-rc, "pipe");
    if ((rc = os_pipe_cloexec(pe))) {
        close(po[0]);
        close(po[1]);
        return boot_fail_errno(-rc, "pipe");
    }
    char *argv[16];
    int argc = 0;
    argv[argc++] = (char *)qemu_img();
    for (int i = 0; args[i] && argc < 15; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        execvp(argv[0], argv);
        dprintf(2, "cannot run %s: %s (Debian package qemu-utils)\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    /* stdout is small (info's JSON) and read first; convert writes none */
    char *o = pid > 0 ? slurp(po[0]) : NULL, *e = pid > 0 ? slurp(pe[0]) : NULL;
    close(po[0]);
    close(pe[0]);
    int status = 0;
    if (pid < 0)
        rc = boot_fail_errno(errno, "fork");
    else if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char why[600];
        last_line(e, why, sizeof why);
        rc = boot_fail(EINVAL, "%s", why);
    }
    free(e);
    if (!rc && out)
        *out = o;
    else
        free(o);
    return rc;
}

/* What qemu-img makes of an image: its format and the size the guest sees. */
static int image_info(const char *path, char *format, size_t fn, uint64_t *vsize)
{
    char *args[] = {"info", "--output=json", "--", (char *)path, NULL};
    char *text = NULL;
    int rc = run_qemu_img(args, &text);
    if (rc) {
        char keep[700];
        snprintf(keep, sizeof keep, "%s", boot_error());
        return boot_fail(EINVAL, "%s: not a disk image qemu-img can read (%s)", path, keep);
    }
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    struct stat st;
    const char *f = json_string_value(json_object_get(j, "format"));
    json_t *vs = json_object_get(j, "virtual-size");
    if (!f || !json_is_integer(vs) || json_integer_value(vs) <= 0)
        rc = boot_fail(EINVAL, "%s: qemu-img gave no format and size for it", path);
    else if (json_object_get(j, "backing-filename") || json_object_get(j, "full-backing-filename"))
        rc = boot_fail(EINVAL, "%s: the image has a backing file; give a self-contained image "
                               "(qemu-img convert -O qcow2 it first)", path);
    else if (strcmp(f, "raw") && strcmp(f, "qcow2"))
        rc = boot_fail(EINVAL, "%s: a %s image; strata takes raw or qcow2", path, f);
    else if (!strcmp(f, "raw") && (stat(path, &st) < 0 || st.st_size % 512))
        /* qemu-img takes any file as raw: a disk is whole sectors */
        rc = boot_fail(EINVAL, "%s: not a disk image (neither qcow2 nor whole 512-byte sectors)", path);
    if (!rc) {
        snprintf(format, fn, "%s", f);
        *vsize = (uint64_t)json_integer_value(vs);
    }
    json_decref(j);
    return rc;
}

/* Grow path (a raw disk) to bytes with a hole: the disk stays sparse. */
static int grow_disk(const char *path, uint64_t bytes)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    int rc = fd < 0 || ftruncate(fd, (off_t)bytes) < 0 ? boot_fail_errno(errno, "%s", path) : 0;
    if (fd >= 0)
        close(fd);
    return rc;
}

static int new_empty_disk(const char *path, uint64_t bytes)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return boot_fail_errno(errno, "%s", path);
    close(fd);
    return grow_disk(path, bytes);
}

/* Disk.img from a disk image: sparse raw, as large as asked. */
static int disk_from_image(const boot_create_linux_opts *o, const char *disk)
{
    char fmt[32], have[32], want[32];
    uint64_t vsize = 0;
    int rc = image_info(o->disk_image, fmt, sizeof fmt, &vsize);
    if (rc)
        return rc;
    if (o->disk_bytes && o->disk_bytes < vsize) {
        human(o->disk_bytes, want, sizeof want);
        human(vsize, have, sizeof have);
        return boot_fail(EINVAL, "--disk-size %s is smaller than the image %s (%s): disks only grow",
                         want, o->disk_image, have);
    }
    note(o, "converting %s (%s) to a sparse raw disk", o->disk_image, fmt);
    /* -S 4k: runs of zeros become holes; -f: never guess the format again */
    char *args[] = {"convert", "-q", "-f", fmt, "-O", "raw", "-S", "4k", "--",
                    (char *)o->disk_image, (char *)disk, NULL};
    if ((rc = run_qemu_img(args, NULL))) {
        char keep[700];
        snprintf(keep, sizeof keep, "%s", boot_error());
        return boot_fail(EIO, "%s: qemu-img could not convert it: %s", o->disk_image, keep);
    }
    return o->disk_bytes > vsize ? grow_disk(disk, o->disk_bytes) : 0;
}

/* an ISO 9660 image has "CD001" in its first volume descriptor (sector 16) */
static int check_iso(const char *path)
{
    char magic[5] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return boot_fail_errno(errno, "--iso %s", path);
    ssize_t got = pread(fd, magic, 5, 16 * 2048 + 1);
    close(fd);
    if (got != 5 || memcmp(magic, "CD001", 5))
        return boot_fail(EINVAL, "--iso %s: not an ISO 9660 image (no CD001 at sector 16)", path);
    return 0;
}

static int copy_in(const char *src, const char *dir, const char *name, const char *what)
{
    char dst[4200];
    struct stat st;
    if (stat(src, &st) < 0)
        return boot_fail_errno(errno, "%s %s", what, src);
    if (!S_ISREG(st.st_mode))
        return boot_fail(EINVAL, "%s %s is not a regular file", what, src);
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    int rc = clone_path(src, dst, 0644, NULL);
    return rc ? boot_fail_errno(rc, "copying %s %s into the bundle", what, src) : 0;
}

/* the new VM's settings; file names are the bundle's */
static int fill_settings(const boot_create_linux_opts *o, boot_settings *s)
{
    s->os = BOOT_OS_LINUX;
    s->cpus = o->cpus ? o->cpus : 2;
    s->memory_mib = o->memory_mib ? o->memory_mib : 1024;
    boot_mac_random(s->mac);
    s->disk_caching = BOOT_CACHE_CACHED;
    s->loader = o->kernel ? BOOT_LOADER_LINUX : BOOT_LOADER_EFI;
    if (o->kernel) {
        s->kernel = strdup("vmlinuz");
        s->initrd = o->initrd ? strdup("initrd.img") : NULL;
        s->cmdline = o->cmdline ? strdup(o->cmdline) : NULL;
        if (!s->kernel || (o->initrd && !s->initrd) || (o->cmdline && !s->cmdline))
            return -ENOMEM;
    } else if (!(s->efi_vars = strdup(BOOT_EFI_VARS_FILE))) {
        return -ENOMEM;
    }
    if (o->iso && !(s->installer = strdup(BOOT_INSTALLER_FILE)))
        return -ENOMEM;
    return 0;
}

static int check_create(store *st, const boot_create_linux_opts *o)
{
    int sources = !!o->disk_image + !!o->iso + !!o->kernel;
    if (sources != 1)
        return boot_fail(EINVAL, "create linux takes one of --disk-image, --iso or --kernel");
    if ((o->initrd || o->cmdline) && !o->kernel)
        return boot_fail(EINVAL, "--initrd and --cmdline go with --kernel");
    if (!o->disk_image && !o->disk_bytes)
        return boot_fail(EINVAL, "--disk-size is needed: the disk is made empty");
    if (o->cmdline && strlen(o->cmdline) > 4096)
        return boot_fail(EINVAL, "--cmdline is longer than 4096 bytes");
    if (!o->name || !store_tag_valid(o->name))
        return boot_fail(EINVAL, "'%s' is not a valid name for a tag", o->name ? o->name : "");
    store_tag_entry *t;
    size_t n;
    if (store_tags(st, &t, &n))
        return err_pass();
    int taken = 0;
    for (size_t i = 0; i < n; i++)
        taken |= !strcmp(t[i].name, o->name);
    store_tags_free(t, n);
    return taken ? boot_fail(EEXIST, "a layer is already tagged %s (strata untag %s, or pick another name)",
                             o->name, o->name)
                 : 0;
}

/* the bundle's files, then its settings (checked as a run reads them) */
static int build_bundle(const boot_create_linux_opts *o, const boot_driver *drv, const char *dir)
{
    char disk[4400], vars[4400];
    snprintf(disk, sizeof disk, "%s/" BOOT_DISK_FILE, dir);
    snprintf(vars, sizeof vars, "%s/" BOOT_EFI_VARS_FILE, dir);
    int rc = o->disk_image ? disk_from_image(o, disk) : new_empty_disk(disk, o->disk_bytes);
    if (!rc && o->iso && !(rc = check_iso(o->iso)))
        rc = copy_in(o->iso, dir, BOOT_INSTALLER_FILE, "--iso");
    if (!rc && o->kernel)
        rc = copy_in(o->kernel, dir, "vmlinuz", "--kernel");
    if (!rc && o->initrd)
        rc = copy_in(o->initrd, dir, "initrd.img", "--initrd");
    if (!rc && !o->kernel) {
        if (!drv->create_efi_vars)
            return boot_fail(ENOTSUP, "the %s driver can't make an EFI variable store", drv->name);
        rc = drv->create_efi_vars(vars);
    }
    boot_settings s = {0};
    if (!rc && !(rc = fill_settings(o, &s)))
        rc = boot_settings_save(dir, &s);
    boot_settings_free(&s);
    boot_settings check;
    if (!rc && !(rc = boot_settings_load(dir, &check)))
        boot_settings_free(&check);
    return rc;
}

int boot_create_linux(store *st, const boot_create_linux_opts *o, store_id *out)
{
    const boot_driver *drv = boot_driver_find(o->driver ? o->driver : boot_default_driver());
    if (!drv)
        return err_pass();
    int rc = check_create(st, o);
    if (rc)
        return rc;
    store_scratch *scratch;
    if (store_scratch_make(st, "create", &scratch))
        return err_pass();
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/bundle", store_scratch_path(scratch));
    if (mkdir(dir, 0755) < 0)
        rc = boot_fail_errno(errno, "%s", dir);
    if (!rc)
        rc = build_bundle(o, drv, dir);
    store_commit_opts co = {.tag = o->name, .message = "create linux", .note = o->note,
                            .progress = o->progress, .progress_ctx = o->progress_ctx};
    store_commit_result res;
    if (!rc && store_import(st, dir, &co, &res))
        rc = err_pass();
    store_scratch_drop(scratch);
    if (!rc)
        *out = res.id;
    return rc;
}

/* ---------- shares ---------- */

static int tag_ok(const char *t)
{
    size_t n = strlen(t);
    return (n >= 1 && n <= 36 &&
            strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n) ||
           !strcmp(t, BOOT_MACOS_AUTOMOUNT_TAG);
}

int boot_share_make(const char *tag, const char *path, int read_only, boot_share *sh)
{
    memset(sh, 0, sizeof *sh);
    if (!tag_ok(tag))
        return boot_fail(EINVAL, "share tag '%s' must be 1-36 of [A-Za-z0-9_-], or " BOOT_MACOS_AUTOMOUNT_TAG, tag);
    char abs[PATH_MAX];
    struct stat st;
    if (!realpath(path, abs) || stat(abs, &st) < 0)
        return boot_fail_errno(errno, "share %s: %s", tag, path);
    if (!S_ISDIR(st.st_mode))
        return boot_fail(ENOTDIR, "share %s: %s is not a directory", tag, path);
    if (strchr(abs, ','))
        return boot_fail(EINVAL, "share %s: %s has a comma (qemu takes it as an option separator)", tag, abs);
    sh->tag = strdup(tag);
    sh->path = strdup(abs);
    sh->read_only = read_only;
    if (!sh->tag || !sh->path) {
        free(sh->tag);
        free(sh->path);
        return -ENOMEM;
    }
    return 0;
}

static int same_shares(const boot_settings *a, const boot_settings *b)
{
    if (a->nshares != b->nshares)
        return 0;
    for (size_t i = 0; i < a->nshares; i++)
        if (strcmp(a->shares[i].tag, b->shares[i].tag) || strcmp(a->shares[i].path, b->shares[i].path) ||
            a->shares[i].read_only != b->shares[i].read_only)
            return 0;
    return 1;
}

/* A layer's settings, parsed without looking for its files; 0 with an
 * empty s for a layer that has none. */
static int layer_settings(store *st, const store_id *id, boot_settings *s)
{
    memset(s, 0, sizeof *s);
    char *path = store_layer_file_path(st, id, BOOT_SETTINGS_FILE);
    FILE *f = path ? fopen(path, "rb") : NULL;
    free(path);
    if (!f)
        return 0;
    char *buf = malloc(1u << 20);
    size_t n = buf ? fread(buf, 1, 1u << 20, f) : 0;
    fclose(f);
    int rc = buf ? boot_settings_parse(buf, n, NULL, s) : -ENOMEM;
    free(buf);
    return rc;
}

/*
 * Did this host choose the shares in s (an instance's settings, from
 * layer)? Walk back from the instance: the first place whose shares differ
 * from its parent's chose them, and that place must have been made here. A
 * layer received from outside chose nothing for this host, nor did any
 * local layer that only kept what it inherited.
 */
static int chosen_here(store *st, const store_id *layer, const boot_settings *s,
                       int (*same)(const boot_settings *, const boot_settings *))
{
    store_id id = *layer;
    boot_settings child = *s; /* borrowed: only its shares are read */
    boot_settings held = {0};
    int here = 0;
    for (int depth = 0; depth < 10000; depth++) {
        boot_settings cur;
        if (layer_settings(st, &id, &cur))
            break; /* unreadable: decide as for outside */
        int differs = !same(&child, &cur);
        boot_settings_free(&held);
        held = cur;
        child = held;
        if (differs) {
            here = 1; /* the instance (or a layer made here) changed them */
            break;
        }
        if (store_layer_received(st, &id))
            break;
        store_layer *l;
        if (store_layer_load(st, &id, &l))
            break;
        int more = l->has_parent;
        id = l->parent;
        store_layer_free(l);
        if (!more) {
            here = 1; /* a root made here */
            break;
        }
    }
    boot_settings_free(&held);
    return here;
}

static int shares_chosen_here(store *st, const store_id *layer, const boot_settings *s)
{
    return chosen_here(st, layer, s, same_shares);
}

static int same_nbd(const boot_settings *a, const boot_settings *b)
{
    return !a->disk_nbd == !b->disk_nbd && (!a->disk_nbd || !strcmp(a->disk_nbd, b->disk_nbd));
}

int boot_run_nbd(store *st, const store_id *layer, const boot_settings *s, const char *named,
                 boot_settings *eff)
{
    if (named) {
        eff->disk_nbd = (char *)named;
        return 0;
    }
    /* a URL from outside could point the guest's disk at any server */
    if (!s->disk_nbd || chosen_here(st, layer, s, same_nbd))
        return 0;
    return boot_fail(EPERM, "layer %.12s came from outside this host (an archive or a registry): "
                            "its boot disk's NBD export %s is not opened; name it with run --disk-nbd URL",
                     layer->hex, s->disk_nbd);
}

int boot_run_shares(store *st, const store_id *layer, const boot_settings *s,
                    const boot_share *named, size_t nnamed,
                    void (*note_fn)(void *ctx, const char *line), void *ctx, boot_settings *eff)
{
    *eff = *s;
    eff->shares = calloc(s->nshares + nnamed + 1, sizeof *eff->shares);
    eff->nshares = 0;
    if (!eff->shares)
        return -ENOMEM;
    int own = !s->nshares || shares_chosen_here(st, layer, s);
    if (!own) {
        char tags[600] = "";
        for (size_t i = 0; i < s->nshares; i++)
            snprintf(tags + strlen(tags), sizeof tags - strlen(tags), "%s%s", i ? ", " : "",
                     s->shares[i].tag);
        note_send(note_fn, ctx, "layer %.12s came from outside this host (an archive or a registry): "
                                "its shared folders (%s) are not opened; name those you want with "
                                "run --share TAG=PATH[:ro]", layer->hex, tags);
    }
    for (size_t i = 0; own && i < s->nshares; i++)
        eff->shares[eff->nshares++] = s->shares[i];
    for (size_t i = 0; i < nnamed; i++) {
        size_t j = 0;
        while (j < eff->nshares && strcmp(eff->shares[j].tag, named[i].tag))
            j++;
        eff->shares[j] = named[i];
        if (j == eff->nshares)
            eff->nshares++;
    }
    for (size_t i = 0; i < eff->nshares; i++) {
        struct stat sb;
        if (stat(eff->shares[i].path, &sb) == 0 && S_ISDIR(sb.st_mode))
            continue;
        int rc = boot_fail(ENOENT, "shared folder %s: %s is not a directory on this host",
                           eff->shares[i].tag, eff->shares[i].path);
        free(eff->shares);
        eff->shares = NULL;
        eff->nshares = 0;
        return rc;
    }
    return 0;
}

/* ---------- set ---------- */

/* the shares after adding (by tag) and removing */
static int edit_shares(const boot_set_opts *o, boot_settings *s)
{
    for (size_t i = 0; i < o->nremove; i++) {
        size_t j = 0;
        while (j < s->nshares && strcmp(s->shares[j].tag, o->remove_shares[i]))
            j++;
        if (j == s->nshares)
            return boot_fail(ENOENT, "--unshare %s: no shared folder has that tag", o->remove_shares[i]);
        free(s->shares[j].tag);
        free(s->shares[j].path);
        memmove(&s->shares[j], &s->shares[j + 1], (s->nshares - j - 1) * sizeof *s->shares);
        s->nshares--;
    }
    boot_share *more = realloc(s->shares, (s->nshares + o->nadd + 1) * sizeof *more);
    if (!more)
        return -ENOMEM;
    s->shares = more;
    for (size_t i = 0; i < o->nadd; i++) {
        size_t j = 0;
        while (j < s->nshares && strcmp(s->shares[j].tag, o->add_shares[i].tag))
            j++;
        if (j < s->nshares) {
            free(s->shares[j].tag);
            free(s->shares[j].path);
        } else {
            s->nshares++;
        }
        s->shares[j].tag = strdup(o->add_shares[i].tag);
        s->shares[j].path = strdup(o->add_shares[i].path);
        s->shares[j].read_only = o->add_shares[i].read_only;
        if (!s->shares[j].tag || !s->shares[j].path)
            return -ENOMEM;
    }
    return 0;
}

/* a mode named by an option: its value, or the error naming the option */
static int option_value(const char *flag, const char *name, int (*value)(const char *),
                        const char *choices, int *out)
{
    int v = value(name);
    if (v < 0)
        return boot_fail(EINVAL, "%s '%s' must be %s", flag, name, choices);
    *out = v;
    return 0;
}

/* The device options set and run share (NULL: leave it), checked and
 * made on s; the option's name is in every error. */
static int edit_devices(const char *caching, const char *sync, const char *bus,
                        const char *rosetta, const char *reconfigure, boot_settings *s)
{
    int v = 0, rc = 0;
    if (caching && !(rc = option_value("--disk-cache", caching, boot_caching_value,
                                       "automatic, cached or uncached", &v)))
        s->disk_caching = (boot_caching)v;
    if (!rc && sync && !(rc = option_value("--disk-sync", sync, boot_sync_value, "full, fsync or none", &v)))
        s->disk_sync = (boot_sync)v;
    if (!rc && bus && !(rc = option_value("--disk-bus", bus, boot_bus_value, "virtio or nvme", &v))) {
        if (v == BOOT_BUS_USB)
            return boot_fail(EINVAL, "--disk-bus usb: the boot disk is virtio or nvme (add USB disks with --add-disk PATH:usb)");
        if (v == BOOT_BUS_NVME && s->os == BOOT_OS_MACOS)
            return boot_fail(EINVAL, "--disk-bus nvme is for Linux guests (a macOS guest boots from virtio)");
        s->disk_bus = (boot_bus)v;
    }
    if (!rc && rosetta && strcmp(rosetta, "none") && s->os != BOOT_OS_LINUX)
        return boot_fail(EINVAL, "--rosetta is for Linux guests (it runs x86-64 Linux binaries)");
    if (!rc && rosetta && strcmp(rosetta, "none") && (rc = boot_tag_check(rosetta, "--rosetta")))
        return rc;
    if (!rc && rosetta) {
        free(s->rosetta);
        s->rosetta = strcmp(rosetta, "none") ? strdup(rosetta) : NULL;
        if (strcmp(rosetta, "none") && !s->rosetta)
            return -ENOMEM;
    }
    if (!rc && reconfigure &&
        !(rc = option_value("--display-reconfigure", reconfigure, boot_reconfigure_value,
                            "on, off or auto", &v))) {
        s->display_reconfigure = (boot_reconfigure)v;
        if (!s->display_width) { /* the setting lives in the display object */
            s->display_width = 1920;
            s->display_height = 1200;
            s->display_ppi = 80;
        }
    }
    return rc;
}

int boot_run_devices(const boot_run_opts *o, boot_settings *s)
{
    return edit_devices(o->disk_caching, o->disk_sync, o->disk_bus, o->rosetta,
                        o->display_reconfigure, s);
}

/* the base name an added disk gets in the bundle */
static const char *disk_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* --add-disk and --remove-disk on s (files are copied later, once all is
 * checked) */
static int edit_disks(const boot_set_opts *o, const char *dir, boot_settings *s)
{
    for (size_t i = 0; i < o->nremove_disks; i++) {
        size_t j = 0;
        while (j < s->ndisks && strcmp(s->disks[j].file, o->remove_disks[i]))
            j++;
        if (j == s->ndisks)
            return boot_fail(ENOENT, "--remove-disk %s: no extra disk has that name", o->remove_disks[i]);
        free(s->disks[j].file);
        memmove(&s->disks[j], &s->disks[j + 1], (s->ndisks - j - 1) * sizeof *s->disks);
        s->ndisks--;
    }
    if (s->ndisks + o->nadd_disks > BOOT_MAX_DISKS)
        return boot_fail(EINVAL, "--add-disk: at most %d extra disks", BOOT_MAX_DISKS);
    boot_disk *more = realloc(s->disks, (s->ndisks + o->nadd_disks + 1) * sizeof *more);
    if (!more)
        return -ENOMEM;
    s->disks = more;
    for (size_t i = 0; i < o->nadd_disks; i++) {
        const boot_disk *a = &o->add_disks[i];
        const char *name = disk_name(a->file);
        char there[4200];
        struct stat st;
        if (stat(a->file, &st) < 0)
            return boot_fail_errno(errno, "--add-disk %s", a->file);
        if (!S_ISREG(st.st_mode))
            return boot_fail(EINVAL, "--add-disk %s: not a regular file (a raw disk image)", a->file);
        snprintf(there, sizeof there, "%s/%s", dir, name);
        if (!*name || *name == '.' || access(there, F_OK) == 0)
            return boot_fail(EEXIST, "--add-disk %s: the bundle has a file named '%s' already",
                             a->file, name);
        if (a->bus == BOOT_BUS_NVME && s->os == BOOT_OS_MACOS)
            return boot_fail(EINVAL, "--add-disk %s: nvme is for Linux guests", a->file);
        s->disks[s->ndisks] = (boot_disk){.file = strdup(name), .bus = a->bus, .read_only = a->read_only};
        if (!s->disks[s->ndisks++].file)
            return -ENOMEM;
    }
    return 0;
}

/* the added disks' images into the bundle; on failure none stays */
static int copy_disks(const boot_set_opts *o, const char *dir)
{
    int rc = 0;
    size_t i = 0;
    for (; i < o->nadd_disks && !rc; i++)
        rc = copy_in(o->add_disks[i].file, dir, disk_name(o->add_disks[i].file), "--add-disk");
    for (size_t j = 0; rc && j + 1 < i; j++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, disk_name(o->add_disks[j].file));
        unlink(path);
    }
    return rc;
}

/* the files of removed disks: the layer need not carry what nothing attaches */
static void drop_disks(const boot_set_opts *o, const char *dir)
{
    for (size_t i = 0; i < o->nremove_disks; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, o->remove_disks[i]);
        unlink(path);
    }
}

static int edit_settings(const boot_set_opts *o, boot_settings *s)
{
    if (o->cpus)
        s->cpus = o->cpus;
    if (o->memory_mib)
        s->memory_mib = o->memory_mib;
    if (o->display_width) {
        s->display_width = o->display_width;
        s->display_height = o->display_height;
        if (!s->display_ppi)
            s->display_ppi = 80;
    }
    if (o->mac && !strcmp(o->mac, "auto"))
        boot_mac_random(s->mac);
    else if (o->mac && !boot_mac_valid(o->mac))
        return boot_fail(EINVAL, "--mac '%s' must be auto or a unicast MAC like 52:54:00:12:34:56", o->mac);
    else if (o->mac)
        snprintf(s->mac, sizeof s->mac, "%s", o->mac);
    if (o->detach_installer) {
        free(s->installer);
        s->installer = NULL;
    }
    int rc = edit_devices(o->disk_caching, o->disk_sync, o->disk_bus, o->rosetta,
                          o->display_reconfigure, s);
    if (!rc && o->disk_nbd && strcmp(o->disk_nbd, "none") &&
        (rc = boot_nbd_url_check(o->disk_nbd, "--disk-nbd")))
        return rc;
    if (!rc && o->disk_nbd) {
        free(s->disk_nbd);
        s->disk_nbd = strcmp(o->disk_nbd, "none") ? strdup(o->disk_nbd) : NULL;
    }
    return rc ? rc : edit_shares(o, s);
}

/* Check every change, then make it: the disk first (growing is harmless),
 * the settings last, written atomically. */
static int set_in(const boot_set_opts *o, const char *dir)
{
    boot_settings s, check;
    int rc = boot_settings_load(dir, &s);
    if (rc)
        return rc;
    char *old_installer = s.installer ? strdup(s.installer) : NULL;
    char disk[4200], ipath[4200];
    snprintf(disk, sizeof disk, "%s/" BOOT_DISK_FILE, dir);
    struct stat st;
    if (!(rc = edit_settings(o, &s)) && !(rc = edit_disks(o, dir, &s))) {
        /* the same checks as Settings.json's, on the text a run will read */
        char *text = boot_settings_json(&s);
        rc = text ? boot_settings_parse(text, strlen(text), NULL, &check) : -ENOMEM;
        if (!rc)
            boot_settings_free(&check);
        free(text);
    }
    if (!rc && o->disk_bytes) {
        char want[32], have[32];
        if (stat(disk, &st) < 0)
            rc = boot_fail_errno(errno, "--disk-size: %s", disk);
        else if ((uint64_t)st.st_size > o->disk_bytes) {
            human(o->disk_bytes, want, sizeof want);
            human((uint64_t)st.st_size, have, sizeof have);
            rc = boot_fail(EINVAL, "--disk-size %s is smaller than the disk (%s): disks only grow", want, have);
        }
    }
    if (!rc && o->disk_bytes)
        rc = grow_disk(disk, o->disk_bytes);
    if (!rc)
        rc = copy_disks(o, dir);
    if (!rc && !(rc = boot_settings_save(dir, &s)))
        drop_disks(o, dir);
    if (!rc && o->detach_installer && old_installer) {
        snprintf(ipath, sizeof ipath, "%s/%s", dir, old_installer);
        unlink(ipath); /* the layer need not carry media nothing attaches */
    }
    free(old_installer);
    boot_settings_free(&s);
    return rc;
}

/* a clone directory (it has the marker), not a layer's name */
static int is_tag(store *st, const char *name)
{
    store_tag_entry *t;
    size_t n;
    int yes = 0;
    if (store_tags(st, &t, &n))
        return 0;
    for (size_t i = 0; i < n; i++)
        yes |= !strcmp(t[i].name, name);
    store_tags_free(t, n);
    return yes;
}

static int set_clone(const boot_set_opts *o, const boot_ref *ref)
{
    store_busy busy;
    if (store_busy_take(ref->dir, "strata set", &busy))
        return err_pass();
    int rc = set_in(o, ref->dir);
    store_busy_release(&busy);
    return rc;
}

/* a layer: a clone in scratch space, changed, committed as the child */
static int set_layer(store *st, const boot_set_opts *o, const boot_ref *ref, store_id *out)
{
    store_id id = ref->id;
    /* the tag the REF went through moves to the child, unless -t names one */
    const char *tag = o->tag                                      ? o->tag
                      : ref->kind == BOOT_REF_REGISTRY && ref->tag[0] ? ref->tag
                      : is_tag(st, o->target)                     ? o->target
                                                                  : NULL;
    if (tag && !store_tag_valid(tag))
        return boot_fail(EINVAL, "'%s' is not a valid name for a tag", tag);
    store_scratch *scratch;
    if (store_scratch_make(st, "set", &scratch))
        return err_pass();
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/vm", store_scratch_path(scratch));
    int reflinked, cloned = 0, rc = 0;
    if (store_clone(st, id.hex, dir, &reflinked))
        rc = err_pass();
    else
        cloned = 1;
    if (!rc)
        rc = set_in(o, dir);
    store_commit_opts co = {.tag = tag, .message = o->message ? o->message : "set", .note = o->note};
    store_commit_result res;
    if (!rc && store_commit(st, dir, &co, &res))
        rc = err_pass();
    if (!rc)
        *out = res.id;
    if (cloned)
        store_clone_delete(st, dir);
    store_scratch_drop(scratch);
    return rc;
}

int boot_set(store *st, const boot_set_opts *o, int *made_layer, store_id *out)
{
    for (size_t i = 0; i < o->nadd; i++) {
        struct stat sb;
        if (stat(o->add_shares[i].path, &sb) < 0 || !S_ISDIR(sb.st_mode))
            return boot_fail(ENOENT, "share %s: %s is not a directory", o->add_shares[i].tag,
                             o->add_shares[i].path);
    }
    boot_ref ref;
    int rc = boot_resolve(st, o->target, &ref);
    if (rc)
        return rc;
    *made_layer = ref.kind != BOOT_REF_CLONE;
    return *made_layer ? set_layer(st, o, &ref, out) : set_clone(o, &ref);
}
