/* Settings.json: parsed strictly (it may come from a pulled layer), and the
 * bindings that tie a saved state to where it was made. */
#define _GNU_SOURCE
#include "internal.h"
#include "../base/platform.h"
#include "../clone/clone.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/sha.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#define SETTINGS_MAX (1u << 20)
#define F BOOT_SETTINGS_FILE

const char *boot_error(void)
{
    return err_last()->message;
}

int boot_mac_valid(const char *s)
{
    if (strlen(s) != 17)
        return 0;
    for (int i = 0; i < 17; i++) {
        char c = s[i];
        if (i % 3 == 2) {
            if (c != ':')
                return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return 0;
        }
    }
    unsigned first = (unsigned)strtoul(s, NULL, 16);
    return (first & 1) == 0; /* a multicast address can't name one NIC */
}

void boot_mac_random(char out[18])
{
    unsigned char b[6] = {0};
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, b, 6) != 6) {
        for (int i = 0; i < 6; i++)
            b[i] = (unsigned char)(rand() ^ getpid() ^ i);
    }
    if (fd >= 0)
        close(fd);
    b[0] = (unsigned char)((b[0] & 0xfc) | 0x02); /* locally administered, unicast */
    snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5]);
}

static int bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad(const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return boot_fail(EINVAL, F ": %s", msg);
}

/* only these keys, so a typo is an error rather than a silent default */
static int only_keys(json_t *obj, const char *where, const char *const *keys)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        int known = 0;
        for (const char *const *p = keys; *p; p++)
            known |= !strcmp(*p, k);
        if (!known)
            return bad("unknown field '%s%s'", where, k);
    }
    return 0;
}

static int get_uint(json_t *obj, const char *key, uint64_t lo, uint64_t hi, uint64_t def,
                    uint64_t *out, const char *what)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)lo ||
        (uint64_t)json_integer_value(v) > hi)
        return bad("%s must be a whole number from %" PRIu64 " to %" PRIu64, what, lo, hi);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int get_str(json_t *obj, const char *key, char **out, const char *what, int required)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = NULL;
        return required ? bad("%s is missing", what) : 0;
    }
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return bad("%s must be a string", what);
    *out = strdup(json_string_value(v));
    return *out ? 0 : -ENOMEM;
}

/* a bundle file name the settings point at: plain name, present if we can look */
static int bundle_file(const char *bundle_dir, const char *name, const char *what)
{
    if (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        return bad("%s '%s' must be a file name in the bundle", what, name);
    if (strchr(name, ','))
        return bad("%s '%s': no commas (qemu takes them as option separators)", what, name);
    if (!bundle_dir)
        return 0;
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", bundle_dir, name);
    if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
        return bad("%s '%s' is not in the bundle %s", what, name, bundle_dir);
    return 0;
}

static int pick(const char *v, const char *const *names, int *out)
{
    for (int i = 0; names[i]; i++)
        if (!strcmp(v, names[i])) {
            *out = i;
            return 0;
        }
    return -1;
}

static const char *const os_names[] = {"linux", "macos", NULL};
static const char *const loader_names[] = {"linux", "efi", "macos", NULL};
static const char *const caching_names[] = {"automatic", "cached", "uncached", NULL};
static const char *const sync_names[] = {"full", "fsync", "none", NULL};
static const char *const bus_names[] = {"virtio", "nvme", "usb", NULL};
static const char *const reconfigure_names[] = {"auto", "on", "off", NULL};

static int value_of(const char *name, const char *const *names)
{
    int v = -1;
    return name && !pick(name, names, &v) ? v : -1;
}

int boot_caching_value(const char *name)
{
    return value_of(name, caching_names);
}

int boot_sync_value(const char *name)
{
    return value_of(name, sync_names);
}

int boot_bus_value(const char *name)
{
    return value_of(name, bus_names);
}

int boot_reconfigure_value(const char *name)
{
    return value_of(name, reconfigure_names);
}

#define TAG_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

int boot_tag_check(const char *tag, const char *what)
{
    size_t n = strlen(tag);
    if (n == 0 || n > 36 || strspn(tag, TAG_CHARS) != n)
        return boot_fail(EINVAL, "%s '%s' must be 1-36 of [A-Za-z0-9_-]", what, tag);
    return 0;
}

/* nbd://HOST[:PORT][/EXPORT]: a host, and a port of digits if any */
static int nbd_tcp_ok(const char *rest)
{
    size_t host = strcspn(rest, ":/");
    if (host == 0)
        return 0;
    if (rest[host] != ':')
        return 1;
    const char *port = rest + host + 1;
    size_t digits = strspn(port, "0123456789");
    return digits > 0 && digits <= 5 && (port[digits] == 0 || port[digits] == '/');
}

/* nbd+unix:///[EXPORT]?socket=/PATH: no host, and an absolute socket path */
static int nbd_unix_ok(const char *rest)
{
    const char *q = strstr(rest, "?socket=/");
    return rest[0] == '/' && q && !strchr(q + 1, '?') && !strchr(q + 1, '&');
}

int boot_nbd_url_check(const char *url, const char *what)
{
    static const char tcp[] = "nbd://", unix_[] = "nbd+unix://";
    size_t n = strlen(url);
    int ok = n <= 1024 && !strpbrk(url, ", \t\n\"'\\");
    if (ok && !strncmp(url, tcp, sizeof tcp - 1))
        ok = nbd_tcp_ok(url + sizeof tcp - 1);
    else if (ok && !strncmp(url, unix_, sizeof unix_ - 1))
        ok = nbd_unix_ok(url + sizeof unix_ - 1);
    else
        ok = 0;
    if (!ok)
        return boot_fail(EINVAL, "%s '%s' must be nbd://HOST[:PORT][/EXPORT] or "
                                 "nbd+unix:///EXPORT?socket=/ABSOLUTE/PATH (no commas or spaces)",
                         what, url);
    return 0;
}

/* ssh_user: a user name ssh takes as it is (no option, no host part) */
static int parse_ssh_user(json_t *root, boot_settings *s)
{
    int rc = get_str(root, "ssh_user", &s->ssh_user, "ssh_user", 0);
    if (rc || !s->ssh_user)
        return rc;
    size_t n = strlen(s->ssh_user);
    if (n == 0 || n > 32 || s->ssh_user[0] == '-' ||
        strspn(s->ssh_user, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != n)
        return bad("ssh_user '%s' must be 1-32 of [A-Za-z0-9._-], not starting with '-'", s->ssh_user);
    return 0;
}

/* installer media: an ISO in the bundle, attached read-only (qemu: a CD
 * drive; vz: USB mass storage) for installing from it */
static int parse_installer(json_t *root, const char *bundle_dir, boot_settings *s)
{
    int rc = get_str(root, "installer", &s->installer, "installer", 0);
    if (rc || !s->installer)
        return rc;
    if (s->os == BOOT_OS_MACOS)
        return bad("installer media is for Linux guests (a macOS guest installs from its restore image)");
    return bundle_file(bundle_dir, s->installer, "installer");
}

/* An optional string that must be one of names: its index in *out (left
 * as it was when the key is absent). choices reads "a, b or c". */
static int get_enum(json_t *obj, const char *key, const char *const *names, int *out,
                    const char *what, const char *choices)
{
    char *str = NULL;
    int rc = get_str(obj, key, &str, what, 0);
    if (!rc && str && pick(str, names, out))
        rc = bad("%s '%s' must be %s", what, str, choices);
    free(str);
    return rc;
}

/* an optional object member, which must be an object when present */
static int get_object(json_t *root, const char *key, json_t **out)
{
    *out = json_object_get(root, key);
    if (*out && !json_is_object(*out))
        return bad("%s must be an object", key);
    return 0;
}

/* version, os, cpus, memory_mib, mac */
static int parse_machine(json_t *root, boot_settings *s)
{
    int rc, os = -1;
    uint64_t v;
    char *str = NULL;
    if ((rc = get_uint(root, "version", 1, 1, 0, &v, "version")))
        return rc;
    if (v != 1)
        return bad("version is missing (this strata reads version 1)");
    if ((rc = get_str(root, "os", &str, "os", 1)))
        return rc;
    free(str);
    if ((rc = get_enum(root, "os", os_names, &os, "os", "linux or macos")))
        return rc;
    s->os = (boot_os)os;
    if ((rc = get_uint(root, "cpus", 1, 64, 2, &v, "cpus")))
        return rc;
    s->cpus = (unsigned)v;
    if ((rc = get_uint(root, "memory_mib", 64, 1u << 20, s->os == BOOT_OS_MACOS ? 4096 : 1024,
                       &s->memory_mib, "memory_mib")) ||
        (rc = get_str(root, "mac", &str, "mac", 0)))
        return rc;
    if (str && !boot_mac_valid(str))
        rc = bad("mac '%s' is not a unicast MAC address like 52:54:00:12:34:56", str);
    else if (str)
        snprintf(s->mac, sizeof s->mac, "%s", str);
    free(str);
    return rc;
}

static int parse_display(json_t *root, boot_settings *s)
{
    static const char *const dk[] = {"width", "height", "ppi", "reconfigure", NULL};
    json_t *d;
    uint64_t w, h, ppi;
    int rc = get_object(root, "display", &d);
    if (rc || !d) {
        if (!rc && s->os == BOOT_OS_MACOS) {
            /* VZ needs a display for macOS guests even when nobody looks */
            s->display_width = 1920;
            s->display_height = 1200;
            s->display_ppi = 80;
        }
        return rc;
    }
    if ((rc = only_keys(d, "display.", dk)) ||
        (rc = get_uint(d, "width", 320, 8192, 1920, &w, "display.width")) ||
        (rc = get_uint(d, "height", 200, 8192, 1200, &h, "display.height")) ||
        (rc = get_uint(d, "ppi", 50, 500, 80, &ppi, "display.ppi")))
        return rc;
    s->display_width = (unsigned)w;
    s->display_height = (unsigned)h;
    s->display_ppi = (unsigned)ppi;
    json_t *rc_on = json_object_get(d, "reconfigure");
    if (rc_on && !json_is_boolean(rc_on))
        return bad("display.reconfigure must be true or false");
    if (rc_on)
        s->display_reconfigure = json_is_true(rc_on) ? BOOT_RECONFIGURE_ON : BOOT_RECONFIGURE_OFF;
    return 0;
}

/* the files the loader needs must be in the bundle */
static int check_loader_files(const char *bundle_dir, const boot_settings *s)
{
    int rc;
    if ((s->loader == BOOT_LOADER_MACOS) != (s->os == BOOT_OS_MACOS))
        return bad("boot.loader macos is for os macos, and only it");
    if (s->loader == BOOT_LOADER_LINUX) {
        if (!s->kernel)
            return bad("boot.kernel is missing: the linux loader boots a kernel from the bundle");
        if ((rc = bundle_file(bundle_dir, s->kernel, "boot.kernel")))
            return rc;
        if (s->initrd && (rc = bundle_file(bundle_dir, s->initrd, "boot.initrd")))
            return rc;
    } else if (s->loader == BOOT_LOADER_EFI) {
        if (!s->efi_vars)
            return bad("boot.variable_store is missing: the efi loader needs one in the bundle");
        if ((rc = bundle_file(bundle_dir, s->efi_vars, "boot.variable_store")))
            return rc;
    }
    if (s->cmdline && strlen(s->cmdline) > 4096)
        return bad("boot.cmdline is longer than 4096 bytes");
    return 0;
}

static int parse_boot(json_t *root, const char *bundle_dir, boot_settings *s)
{
    static const char *const bk[] = {"loader", "kernel", "initrd", "cmdline", "variable_store", NULL};
    json_t *b;
    int loader = s->os == BOOT_OS_MACOS ? BOOT_LOADER_MACOS : BOOT_LOADER_LINUX;
    int rc = get_object(root, "boot", &b);
    if (!rc && b &&
        ((rc = only_keys(b, "boot.", bk)) ||
         (rc = get_enum(b, "loader", loader_names, &loader, "boot.loader", "linux, efi or macos")) ||
         (rc = get_str(b, "kernel", &s->kernel, "boot.kernel", 0)) ||
         (rc = get_str(b, "initrd", &s->initrd, "boot.initrd", 0)) ||
         (rc = get_str(b, "cmdline", &s->cmdline, "boot.cmdline", 0)) ||
         (rc = get_str(b, "variable_store", &s->efi_vars, "boot.variable_store", 0))))
        return rc;
    if (rc)
        return rc;
    s->loader = (boot_loader)loader;
    return check_loader_files(bundle_dir, s);
}

static int parse_share(json_t *f, size_t i, boot_share *x)
{
    static const char *const fk[] = {"tag", "path", "read_only", NULL};
    int rc;
    if (!json_is_object(f))
        return bad("shared_folders[%zu] must be an object", i);
    if ((rc = only_keys(f, "shared_folders[].", fk)) ||
        (rc = get_str(f, "tag", &x->tag, "shared_folders[].tag", 1)) ||
        (rc = get_str(f, "path", &x->path, "shared_folders[].path", 1)))
        return rc;
    size_t tl = strlen(x->tag);
    /* and the one tag macOS guests mount by themselves */
    if ((tl == 0 || tl > 36 ||
         strspn(x->tag, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != tl) &&
        strcmp(x->tag, BOOT_MACOS_AUTOMOUNT_TAG))
        return bad("shared_folders tag '%s' must be 1-36 of [A-Za-z0-9_-], or " BOOT_MACOS_AUTOMOUNT_TAG,
                   x->tag);
    if (x->path[0] != '/')
        return bad("shared_folders path '%s' must be absolute", x->path);
    if (strchr(x->path, ','))
        return bad("shared_folders path '%s': no commas (qemu takes them as option separators)", x->path);
    json_t *ro = json_object_get(f, "read_only");
    if (ro && !json_is_boolean(ro))
        return bad("shared_folders[].read_only must be true or false");
    x->read_only = ro ? json_is_true(ro) : 0;
    return 0;
}

static int parse_shares(json_t *root, boot_settings *s)
{
    json_t *sh = json_object_get(root, "shared_folders"), *f;
    size_t i;
    if (!sh)
        return 0;
    if (!json_is_array(sh) || json_array_size(sh) > 64)
        return bad("shared_folders must be a list of at most 64 folders");
    s->shares = calloc(json_array_size(sh) + 1, sizeof *s->shares);
    if (!s->shares)
        return -ENOMEM;
    json_array_foreach(sh, i, f)
    {
        int rc = parse_share(f, i, &s->shares[s->nshares++]);
        if (rc)
            return rc;
    }
    return 0;
}

/* NVMe is a controller macOS guests don't boot from (Apple: Linux guests) */
static int bus_for_os(const boot_settings *s, boot_bus bus, const char *what)
{
    if (bus == BOOT_BUS_NVME && s->os == BOOT_OS_MACOS)
        return bad("%s nvme is for Linux guests (a macOS guest boots from virtio)", what);
    return 0;
}

/* disk.bus (the boot disk's controller: virtio or nvme) and disk.nbd */
static int parse_disk_devices(json_t *disk, boot_settings *s)
{
    int bus = BOOT_BUS_VIRTIO, rc;
    if ((rc = get_enum(disk, "bus", bus_names, &bus, "disk.bus", "virtio or nvme")))
        return rc;
    if (bus == BOOT_BUS_USB)
        return bad("disk.bus usb: the boot disk is virtio or nvme (USB is for extra disks)");
    s->disk_bus = (boot_bus)bus;
    if ((rc = bus_for_os(s, s->disk_bus, "disk.bus")) ||
        (rc = get_str(disk, "nbd", &s->disk_nbd, "disk.nbd", 0)))
        return rc;
    if (s->disk_nbd && boot_nbd_url_check(s->disk_nbd, "disk.nbd"))
        return bad("%s", boot_error());
    return 0;
}

static int parse_extra_disk(json_t *d, size_t i, const char *bundle_dir, boot_settings *s,
                            boot_disk *x)
{
    static const char *const ek[] = {"file", "bus", "read_only", NULL};
    int bus = BOOT_BUS_VIRTIO, rc;
    if (!json_is_object(d))
        return bad("disks[%zu] must be an object", i);
    if ((rc = only_keys(d, "disks[].", ek)) || (rc = get_str(d, "file", &x->file, "disks[].file", 1)) ||
        (rc = get_enum(d, "bus", bus_names, &bus, "disks[].bus", "virtio, nvme or usb")) ||
        (rc = bus_for_os(s, (boot_bus)bus, "disks[].bus")) ||
        (rc = bundle_file(bundle_dir, x->file, "disks[].file")))
        return rc;
    if (!strcmp(x->file, BOOT_DISK_FILE) || (s->installer && !strcmp(x->file, s->installer)))
        return bad("disks[].file '%s' is the boot disk or the installer media already", x->file);
    for (size_t j = 0; j < i; j++)
        if (!strcmp(s->disks[j].file, x->file))
            return bad("disks[].file '%s' is listed twice", x->file);
    json_t *ro = json_object_get(d, "read_only");
    if (ro && !json_is_boolean(ro))
        return bad("disks[].read_only must be true or false");
    x->bus = (boot_bus)bus;
    x->read_only = ro ? json_is_true(ro) : 0;
    return 0;
}

/* extra disks: images in the bundle, on virtio, NVMe or USB mass storage */
static int parse_disks(json_t *root, const char *bundle_dir, boot_settings *s)
{
    json_t *a = json_object_get(root, "disks"), *d;
    size_t i;
    if (!a)
        return 0;
    if (!json_is_array(a) || json_array_size(a) > BOOT_MAX_DISKS)
        return bad("disks must be a list of at most %d disks", BOOT_MAX_DISKS);
    s->disks = calloc(json_array_size(a) + 1, sizeof *s->disks);
    if (!s->disks)
        return -ENOMEM;
    json_array_foreach(a, i, d)
    {
        int rc = parse_extra_disk(d, i, bundle_dir, s, &s->disks[s->ndisks++]);
        if (rc)
            return rc;
    }
    return 0;
}

/* rosetta: {"tag": T}, Rosetta's directory share for a Linux guest (vz) */
static int parse_rosetta(json_t *root, boot_settings *s)
{
    static const char *const rk[] = {"tag", NULL};
    json_t *r;
    int rc = get_object(root, "rosetta", &r);
    if (rc || !r)
        return rc;
    if ((rc = only_keys(r, "rosetta.", rk)) || (rc = get_str(r, "tag", &s->rosetta, "rosetta.tag", 1)))
        return rc;
    if (s->os != BOOT_OS_LINUX)
        return bad("rosetta is for Linux guests (it runs x86-64 Linux binaries)");
    if (boot_tag_check(s->rosetta, "rosetta.tag"))
        return bad("%s", boot_error());
    for (size_t i = 0; i < s->nshares; i++)
        if (!strcmp(s->shares[i].tag, s->rosetta))
            return bad("rosetta.tag '%s' is a shared folder's tag too", s->rosetta);
    return 0;
}

static int parse_disk(json_t *root, boot_settings *s)
{
    static const char *const dk[] = {"caching", "sync", "bus", "nbd", NULL};
    /* Linux guests default to cached: tart and Lima chose it after reports
     * of filesystem corruption with automatic (UTM #4840) */
    int c = s->os == BOOT_OS_LINUX ? BOOT_CACHE_CACHED : BOOT_CACHE_AUTOMATIC, y = BOOT_SYNC_FULL;
    json_t *disk;
    int rc = get_object(root, "disk", &disk);
    if (!rc && disk &&
        ((rc = only_keys(disk, "disk.", dk)) ||
         (rc = get_enum(disk, "caching", caching_names, &c, "disk.caching",
                        "automatic, cached or uncached")) ||
         (rc = get_enum(disk, "sync", sync_names, &y, "disk.sync", "full, fsync or none")) ||
         (rc = parse_disk_devices(disk, s))))
        return rc;
    s->disk_caching = (boot_caching)c;
    s->disk_sync = (boot_sync)y;
    return rc;
}

static int parse_json(json_t *root, const char *bundle_dir, boot_settings *s)
{
    static const char *const top[] = {"version", "os", "cpus", "memory_mib", "mac", "display",
                                      "boot", "shared_folders", "disk", "ssh_user",
                                      "installer", "disks", "rosetta", NULL};
    int rc;
    if (!json_is_object(root))
        return bad("must be a JSON object");
    if ((rc = only_keys(root, "", top)) || (rc = parse_machine(root, s)) ||
        (rc = parse_display(root, s)) || (rc = parse_boot(root, bundle_dir, s)) ||
        (rc = parse_installer(root, bundle_dir, s)) || (rc = parse_shares(root, s)) ||
        (rc = parse_disk(root, s)) || (rc = parse_ssh_user(root, s)) ||
        (rc = parse_disks(root, bundle_dir, s)) || (rc = parse_rosetta(root, s)))
        return rc;
    return 0;
}

int boot_settings_parse(const char *json, size_t len, const char *bundle_dir, boot_settings *out)
{
    memset(out, 0, sizeof *out);
    if (len > SETTINGS_MAX)
        return bad("larger than %u bytes", SETTINGS_MAX);
    json_error_t e;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &e);
    if (!root)
        return bad("not valid JSON (line %d: %s)", e.line, e.text);
    int rc = parse_json(root, bundle_dir, out);
    json_decref(root);
    if (rc)
        boot_settings_free(out);
    return rc;
}

int boot_settings_load(const char *bundle_dir, boot_settings *out)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/" F, bundle_dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return boot_fail_errno(errno, "%s", path);
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > SETTINGS_MAX) {
        close(fd);
        return boot_fail(EINVAL, "%s: not a regular file of at most %u bytes", path, SETTINGS_MAX);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    ssize_t n = buf ? read(fd, buf, (size_t)st.st_size) : -1;
    close(fd);
    if (n != st.st_size) {
        free(buf);
        return boot_fail(EIO, "%s: could not read it", path);
    }
    int rc = boot_settings_parse(buf, (size_t)n, bundle_dir, out);
    free(buf);
    return rc;
}

/* the Sonoma-era devices, each only when not its default: settings
 * without them keep the text, and so the configuration hash, they had */
static void devices_to_json(const boot_settings *s, json_t *disk, json_t *o)
{
    if (s->disk_bus != BOOT_BUS_VIRTIO)
        json_object_set_new(disk, "bus", json_string(bus_names[s->disk_bus]));
    if (s->disk_nbd)
        json_object_set_new(disk, "nbd", json_string(s->disk_nbd));
    if (s->ndisks) {
        json_t *a = json_array();
        for (size_t i = 0; i < s->ndisks; i++) {
            json_t *d = json_object();
            json_object_set_new(d, "file", json_string(s->disks[i].file));
            json_object_set_new(d, "bus", json_string(bus_names[s->disks[i].bus]));
            json_object_set_new(d, "read_only", json_boolean(s->disks[i].read_only));
            json_array_append_new(a, d);
        }
        json_object_set_new(o, "disks", a);
    }
    if (s->rosetta) {
        json_t *r = json_object();
        json_object_set_new(r, "tag", json_string(s->rosetta));
        json_object_set_new(o, "rosetta", r);
    }
}

static json_t *to_json(const boot_settings *s, int with_mac)
{
    json_t *o = json_object();
    json_object_set_new(o, "version", json_integer(1));
    json_object_set_new(o, "os", json_string(os_names[s->os]));
    json_object_set_new(o, "cpus", json_integer(s->cpus));
    json_object_set_new(o, "memory_mib", json_integer((json_int_t)s->memory_mib));
    if (with_mac && s->mac[0])
        json_object_set_new(o, "mac", json_string(s->mac));
    if (s->display_width) {
        json_t *d = json_object();
        json_object_set_new(d, "width", json_integer(s->display_width));
        json_object_set_new(d, "height", json_integer(s->display_height));
        json_object_set_new(d, "ppi", json_integer(s->display_ppi));
        /* how the window behaves, not the VM: outside the hash like ssh_user */
        if (with_mac && s->display_reconfigure != BOOT_RECONFIGURE_AUTO)
            json_object_set_new(d, "reconfigure",
                                json_boolean(s->display_reconfigure == BOOT_RECONFIGURE_ON));
        json_object_set_new(o, "display", d);
    }
    json_t *b = json_object();
    json_object_set_new(b, "loader", json_string(loader_names[s->loader]));
    if (s->kernel)
        json_object_set_new(b, "kernel", json_string(s->kernel));
    if (s->initrd)
        json_object_set_new(b, "initrd", json_string(s->initrd));
    if (s->cmdline)
        json_object_set_new(b, "cmdline", json_string(s->cmdline));
    if (s->efi_vars)
        json_object_set_new(b, "variable_store", json_string(s->efi_vars));
    json_object_set_new(o, "boot", b);
    if (s->nshares) {
        json_t *a = json_array();
        for (size_t i = 0; i < s->nshares; i++) {
            json_t *f = json_object();
            json_object_set_new(f, "tag", json_string(s->shares[i].tag));
            json_object_set_new(f, "path", json_string(s->shares[i].path));
            json_object_set_new(f, "read_only", json_boolean(s->shares[i].read_only));
            json_array_append_new(a, f);
        }
        json_object_set_new(o, "shared_folders", a);
    }
    if (s->installer)
        json_object_set_new(o, "installer", json_string(s->installer));
    json_t *disk = json_object();
    json_object_set_new(disk, "caching", json_string(caching_names[s->disk_caching]));
    json_object_set_new(disk, "sync", json_string(sync_names[s->disk_sync]));
    devices_to_json(s, disk, o);
    json_object_set_new(o, "disk", disk);
    if (with_mac && s->ssh_user) /* how to log in, not what a saved state depends on */
        json_object_set_new(o, "ssh_user", json_string(s->ssh_user));
    return o;
}

int boot_settings_save(const char *bundle_dir, const boot_settings *s)
{
    json_t *o = to_json(s, 1);
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!text)
        return -ENOMEM;
    char *line = NULL;
    int rc = asprintf(&line, "%s\n", text) < 0 ? -ENOMEM : boot_write_atomic(bundle_dir, F, line);
    free(line);
    free(text);
    return rc;
}

char *boot_settings_json(const boot_settings *s)
{
    json_t *o = to_json(s, 1);
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    return text;
}

int boot_write_atomic(const char *dir, const char *name, const char *text)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", dir, name) < 0)
        return boot_oom();
    int rc = atomic_file_write_all(path, text, strlen(text), 0644, 0);
    free(path);
    return rc;
}

void boot_settings_free(boot_settings *s)
{
    free(s->ssh_user);
    free(s->kernel);
    free(s->initrd);
    free(s->cmdline);
    free(s->efi_vars);
    free(s->installer);
    free(s->disk_nbd);
    free(s->rosetta);
    for (size_t i = 0; i < s->ndisks; i++)
        free(s->disks[i].file);
    free(s->disks);
    for (size_t i = 0; i < s->nshares; i++) {
        free(s->shares[i].tag);
        free(s->shares[i].path);
    }
    free(s->shares);
    memset(s, 0, sizeof *s);
}

void boot_settings_config_hash(const boot_settings *s, char out[65])
{
    json_t *o = to_json(s, 0);
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    sha256_hex(text ? text : "", text ? strlen(text) : 0, out);
    free(text);
}

