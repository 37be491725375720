/* Verbs that make and change VMs: create, set. */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* "80G", "512M", "1T", "4096K"; a plain number is GiB (as tart's --disk-size) */
static int parse_size(const char *flag, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    int shift = 30;
    if (*end == 'T' || *end == 't')
        shift = 40, end++;
    else if (*end == 'G' || *end == 'g')
        shift = 30, end++;
    else if (*end == 'M' || *end == 'm')
        shift = 20, end++;
    else if (*end == 'K' || *end == 'k')
        shift = 10, end++;
    if (errno || *end || !*s || *s == '-' || v == 0 || v > (64ull << 40) >> shift)
        return cli_fail("%s %s: a size like 8G, 512M or 1T (at most 64T)", flag, s);
    *out = (uint64_t)v << shift;
    return 0;
}

int cli_take_shares(int *argc, char **argv, const char *flag, boot_share **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    int w = 0;
    size_t fl = strlen(flag);
    for (int i = 0; i < *argc; i++) {
        const char *spec = NULL;
        int match = 0;
        if (!strcmp(argv[i], flag)) {
            match = 1;
            spec = i + 1 < *argc ? argv[++i] : NULL;
        } else if (!strncmp(argv[i], flag, fl) && argv[i][fl] == '=') {
            match = 1;
            spec = argv[i] + fl + 1;
        }
        if (!match) {
            argv[w++] = argv[i];
            continue;
        }
        if (!spec)
            return cli_fail("%s needs TAG=PATH[:ro]", flag);
        const char *eq = strchr(spec, '=');
        if (!eq || eq == spec || !eq[1])
            return cli_fail("%s '%s': give TAG=PATH or TAG=PATH:ro", flag, spec);
        char *tag = strndup(spec, (size_t)(eq - spec)), *path = strdup(eq + 1);
        size_t pl = path ? strlen(path) : 0;
        int ro = pl > 3 && !strcmp(path + pl - 3, ":ro");
        if (ro || (pl > 3 && !strcmp(path + pl - 3, ":rw")))
            path[pl - 3] = 0;
        boot_share *more = realloc(*out, (*n + 1) * sizeof *more);
        int rc = !tag || !path || !more ? -ENOMEM : 0;
        if (more)
            *out = more;
        if (!rc && (rc = boot_share_make(tag, path, ro, &(*out)[*n])) == 0)
            (*n)++;
        free(tag);
        free(path);
        if (rc)
            return cli_failed(rc);
    }
    *argc = w;
    argv[w] = NULL;
    return 0;
}

void cli_free_shares(boot_share *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].tag);
        free(v[i].path);
    }
    free(v);
}

static int create_linux(int argc, char **argv)
{
    const char *image = NULL, *iso = NULL, *kernel = NULL, *initrd = NULL, *cmdline = NULL,
               *size = NULL, *cpus = NULL, *mem = NULL, *driver = NULL;
    cli_opt opts[] = {{"--disk-image", 1, &image, NULL}, {"--iso", 1, &iso, NULL},
                      {"--kernel", 1, &kernel, NULL},    {"--initrd", 1, &initrd, NULL},
                      {"--cmdline", 1, &cmdline, NULL},  {"--disk-size", 1, &size, NULL},
                      {"--cpus", 1, &cpus, NULL},        {"--memory", 1, &mem, NULL},
                      {"--driver", 1, &driver, NULL}};
    char *pos[1];
    int n;
    if (cli_parse(argc, argv, opts, sizeof opts / sizeof *opts, pos, 1, &n, "create") ||
        cli_need(n, 1, "create"))
        return 1;
    boot_create_linux_opts o = {.name = pos[0], .driver = driver, .disk_image = image, .iso = iso,
                                .kernel = kernel, .initrd = initrd, .cmdline = cmdline,
                                .note = cli_note};
    cli_progress_state ps = {.tty = isatty(2)};
    o.progress = cli_progress;
    o.progress_ctx = &ps;
    unsigned long c = 0;
    if ((size && parse_size("--disk-size", size, &o.disk_bytes)) ||
        (cpus && cli_parse_uint("--cpus", cpus, 64, &c)) || (mem && cli_parse_memory(mem, &o.memory_mib)))
        return 1;
    o.cpus = (unsigned)c;
    store *st;
    if (cli_open_store(&st))
        return 1;
    store_id id;
    int rc = boot_create_linux(st, &o, &id);
    store_close(st);
    if (rc)
        return cli_failed(rc);
    printf("%s\n", id.hex);
    return 0;
}

static int cmd_create(int argc, char **argv)
{
    if (argc < 2)
        return cli_fail("create needs the kind of VM: create macos NAME ... or create linux NAME ...");
    if (!strcmp(argv[1], "macos"))
        return cli_create_macos(argc - 1, argv + 1);
    if (!strcmp(argv[1], "linux"))
        return create_linux(argc - 1, argv + 1);
    return cli_fail("create: unknown kind '%s' (macos or linux)", argv[1]);
}

/* "1920x1080" */
static int parse_display(const char *s, unsigned *w, unsigned *h)
{
    char *end;
    unsigned long a = strtoul(s, &end, 10), b = 0;
    if (*end == 'x' || *end == 'X')
        b = strtoul(end + 1, &end, 10);
    if (*end || !a || !b || a > 8192 || b > 8192)
        return cli_fail("--display %s: give the size as WIDTHxHEIGHT, like 1920x1080", s);
    *w = (unsigned)a;
    *h = (unsigned)b;
    return 0;
}

/* --unshare TAG, any number of times: taken out of argv */
static int take_unshares(int *argc, char **argv, const char ***out, size_t *n)
{
    *out = calloc((size_t)*argc + 1, sizeof **out);
    *n = 0;
    if (!*out)
        return cli_failed(-ENOMEM);
    int w = 0;
    for (int i = 0; i < *argc; i++) {
        if (!strcmp(argv[i], "--unshare") && i + 1 < *argc)
            (*out)[(*n)++] = argv[++i];
        else if (!strncmp(argv[i], "--unshare=", 10))
            (*out)[(*n)++] = argv[i] + 10;
        else
            argv[w++] = argv[i];
    }
    *argc = w;
    argv[w] = NULL;
    return 0;
}

/* "PATH[:virtio|:nvme|:usb][:ro]": the suffixes, in any order, off the end */
static int disk_spec(const char *spec, boot_disk *d)
{
    char *path = strdup(spec);
    if (!path)
        return cli_failed(-ENOMEM);
    *d = (boot_disk){.bus = BOOT_BUS_VIRTIO};
    for (char *colon; (colon = strrchr(path, ':'));) {
        int bus = boot_bus_value(colon + 1);
        if (!strcmp(colon + 1, "ro"))
            d->read_only = 1;
        else if (bus >= 0)
            d->bus = (boot_bus)bus;
        else
            break; /* a colon of the path itself */
        *colon = 0;
    }
    if (!*path) {
        free(path);
        return cli_fail("--add-disk '%s': give PATH[:virtio|:nvme|:usb][:ro]", spec);
    }
    d->file = path;
    return 0;
}

/* --add-disk SPEC and --remove-disk NAME, any number of times: taken out of
 * argv into o (the paths malloc'd: free_disks) */
static int take_disks(int *argc, char **argv, boot_set_opts *o, boot_disk **add, const char ***remove)
{
    *add = calloc((size_t)*argc + 1, sizeof **add);
    *remove = calloc((size_t)*argc + 1, sizeof **remove);
    if (!*add || !*remove)
        return cli_failed(-ENOMEM);
    int w = 0;
    for (int i = 0; i < *argc; i++) {
        const char *a = argv[i], *v = NULL;
        int adding = !strcmp(a, "--add-disk") || !strncmp(a, "--add-disk=", 11);
        int removing = !strcmp(a, "--remove-disk") || !strncmp(a, "--remove-disk=", 14);
        if (!adding && !removing) {
            argv[w++] = argv[i];
            continue;
        }
        v = strchr(a, '=') ? strchr(a, '=') + 1 : i + 1 < *argc ? argv[++i] : NULL;
        if (!v)
            return cli_fail("%s needs a value", adding ? "--add-disk" : "--remove-disk");
        if (removing)
            (*remove)[o->nremove_disks++] = v;
        else if (disk_spec(v, &(*add)[o->nadd_disks++]))
            return 1;
    }
    *argc = w;
    argv[w] = NULL;
    o->add_disks = *add;
    o->remove_disks = *remove;
    return 0;
}

static void free_disks(boot_disk *add, size_t n, const char **remove)
{
    for (size_t i = 0; add && i < n; i++)
        free(add[i].file);
    free(add);
    free(remove);
}

/* set's device options changed nothing */
static int no_device_change(const boot_set_opts *o)
{
    return !o->disk_caching && !o->disk_sync && !o->disk_bus && !o->disk_nbd && !o->rosetta &&
           !o->display_reconfigure && !o->nadd_disks && !o->nremove_disks;
}

static int set_opts(int argc, char **argv, boot_set_opts *o)
{
    const char *cpus = NULL, *mem = NULL, *size = NULL, *display = NULL, *installer = NULL;
    cli_opt opts[] = {{"--cpus", 1, &cpus, NULL},         {"--memory", 1, &mem, NULL},
                      {"--disk-size", 1, &size, NULL},    {"--display", 1, &display, NULL},
                      {"--mac", 1, &o->mac, NULL},        {"--installer", 1, &installer, NULL},
                      {"-t", 1, &o->tag, NULL},           {"-m", 1, &o->message, NULL},
                      {"--disk-cache", 1, &o->disk_caching, NULL},
                      {"--disk-sync", 1, &o->disk_sync, NULL},
                      {"--disk-bus", 1, &o->disk_bus, NULL},
                      {"--disk-nbd", 1, &o->disk_nbd, NULL},
                      {"--rosetta", 1, &o->rosetta, NULL},
                      {"--display-reconfigure", 1, &o->display_reconfigure, NULL}};
    char *pos[1];
    int n;
    if (cli_parse(argc, argv, opts, sizeof opts / sizeof *opts, pos, 1, &n, "set") || cli_need(n, 1, "set"))
        return 1;
    o->target = pos[0];
    unsigned long c = 0;
    if ((cpus && cli_parse_uint("--cpus", cpus, 64, &c)) || (mem && cli_parse_memory(mem, &o->memory_mib)) ||
        (size && parse_size("--disk-size", size, &o->disk_bytes)) ||
        (display && parse_display(display, &o->display_width, &o->display_height)))
        return 1;
    o->cpus = (unsigned)c;
    if (installer && strcmp(installer, "none"))
        return cli_fail("--installer takes only 'none', which detaches the installer media");
    o->detach_installer = installer != NULL;
    if (!o->cpus && !o->memory_mib && !o->disk_bytes && !o->display_width && !o->mac &&
        !o->detach_installer && !o->nadd && !o->nremove && no_device_change(o))
        return cli_fail("set: nothing to change (see 'strata help set')");
    return 0;
}

static int cmd_set(int argc, char **argv)
{
    boot_set_opts o = {.note = cli_note};
    boot_share *add = NULL;
    const char **remove = NULL, **remove_disks = NULL;
    boot_disk *add_disks = NULL;
    int rc = cli_take_shares(&argc, argv, "--share", &add, &o.nadd) ||
             take_unshares(&argc, argv, &remove, &o.nremove) ||
             take_disks(&argc, argv, &o, &add_disks, &remove_disks);
    o.add_shares = add;
    o.remove_shares = remove;
    store *st = NULL;
    if (!rc)
        rc = set_opts(argc, argv, &o) || cli_open_store(&st);
    int made = 0;
    store_id id;
    if (!rc && (rc = boot_set(st, &o, &made, &id)))
        rc = cli_failed(rc);
    if (st)
        store_close(st);
    if (!rc && made)
        printf("%s\n", id.hex);
    cli_free_shares(add, o.nadd);
    free(remove);
    free_disks(add_disks, o.nadd_disks, remove_disks);
    return rc;
}

const cli_verb cli_create_verbs[] = {
    {"create", cmd_create,
     "create macos|linux NAME ...",
     "Make a new VM as a root layer, tagged NAME.\n"
     "  create linux NAME (--disk-image FILE | --iso FILE | --kernel FILE [--initrd FILE]\n"
     "      [--cmdline TEXT]) [--disk-size SIZE] [--cpus N] [--memory MiB] [--driver vz|qemu]\n"
     "Linux: from a disk image qemu-img reads (raw or qcow2; converted to a sparse raw\n"
     "disk, grown to --disk-size) booted by UEFI with a fresh variable store; from an ISO\n"
     "attached as installer media (qemu: a CD drive, vz: USB mass storage) with an empty\n"
     "disk of --disk-size, UEFI; or from a kernel, initrd and command line, booted\n"
     "directly. Sizes: 8G, 512M, 1T (a plain\n"     "number is GiB). Prints the new layer's id."},
    {"set", cmd_set,
     "set REF|DIR [--cpus N] [--memory MiB] [--disk-size SIZE] [--display WxH] [--mac auto|MAC] "
     "[--share TAG=PATH[:ro]]... [--unshare TAG]... [--installer none] "
     "[--disk-cache automatic|cached|uncached] [--disk-sync full|fsync|none] [--disk-bus virtio|nvme] "
     "[--disk-nbd URL|none] [--add-disk PATH[:virtio|:nvme|:usb][:ro]]... [--remove-disk NAME]... "
     "[--rosetta TAG|none] [--display-reconfigure on|off|auto] [-t TAG] [-m MESSAGE]",
     "Change a VM's hardware, with the checks Settings.json gets. On a layer REF it makes\n"
     "a child layer (a tag REF moves to it, or -t names it) and prints its id; on a clone\n"
     "directory DIR it changes the clone in place. --disk-size only grows the disk, which\n"
     "stays sparse (grow the guest's partition and filesystem inside it). --share adds a\n"
     "host folder (or replaces the one with that tag); --unshare removes one. --installer\n"
     "none detaches the installer media and drops its file.\n"
     "Devices (docs/settings.md): --disk-cache and --disk-sync set the disk's caching and\n"
     "synchronization modes; --disk-bus nvme puts the boot disk on NVMe (Linux guests);\n"
     "--disk-nbd boots from an NBD export (nbd://HOST[:PORT][/EXPORT] or\n"
     "nbd+unix:///EXPORT?socket=/PATH) instead of Disk.img; --add-disk copies a raw image\n"
     "into the bundle as an extra disk (virtio, nvme or USB mass storage, :ro read-only),\n"
     "--remove-disk drops one and its file; --rosetta shares Rosetta with a Linux guest\n"
     "under that virtiofs tag (vz); --display-reconfigure: the window resizes the guest's\n"
     "display (vz, macOS 14; auto: where the host can)."},
    {NULL, NULL, NULL, NULL},
};
