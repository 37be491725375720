/*
 * tart VM directories (research/tart.md §1) into layers: config.json maps
 * to Settings.json, its base64 hardwareModel and ecid are VZ's own data
 * representations, so they become the HardwareModel and MachineIdentifier
 * files byte for byte (checked with libplist); nvram.bin is the macOS
 * auxiliary storage or the Linux EFI variable store. The disk is cloned
 * into a scratch bundle on the store's volume, then imported as any bundle.
 */
#define _GNU_SOURCE
#include "../base/hex.h"
#include "../boot/boot.h"
#include "../clone/clone.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_MAX (1u << 20)

static const char *const known[] = {"version",   "os",          "arch",        "ecid",
                                    "hardwareModel", "cpuCountMin", "cpuCount", "memorySizeMin",
                                    "memorySize", "macAddress", "display",     "displayRefit",
                                    "diskFormat", NULL};

typedef struct {
    const char *dir;
    json_t *root;
    int macos;
} tart_vm;

static int bad(const tart_vm *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(const tart_vm *t, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ar_fail(EINVAL, "%s/config.json: %s", t->dir, what);
}

static int get_uint(const tart_vm *t, const char *key, uint64_t *v, int required)
{
    json_t *n = json_object_get(t->root, key);
    if (!n)
        return required ? bad(t, "%s is missing", key) : 0;
    if (!json_is_integer(n) || json_integer_value(n) < 0)
        return bad(t, "%s must be a non-negative integer", key);
    *v = (uint64_t)json_integer_value(n);
    return 0;
}

static const char *get_str(const tart_vm *t, const char *key)
{
    json_t *n = json_object_get(t->root, key);
    return n && json_is_string(n) ? json_string_value(n) : NULL;
}

static int check_fields(tart_vm *t)
{
    const char *key;
    json_t *v;
    json_object_foreach(t->root, key, v) {
        int ok = 0;
        for (size_t i = 0; known[i] && !ok; i++)
            ok = !strcmp(known[i], key);
        if (!ok)
            return bad(t, "unknown field '%s' (this strata maps tart's config version 1)", key);
        if (!strcmp(key, "displayRefit") && !json_is_boolean(v))
            return bad(t, "displayRefit must be true or false");
    }
    uint64_t version = 0;
    int rc = get_uint(t, "version", &version, 1);
    if (!rc && version != 1)
        return bad(t, "version %llu; this strata maps tart's config version 1",
                   (unsigned long long)version);
    const char *os = get_str(t, "os"), *arch = get_str(t, "arch"), *fmt = get_str(t, "diskFormat");
    if (!rc && json_object_get(t->root, "os") && !os)
        return bad(t, "os must be a string");
    if (!rc && os && strcmp(os, "darwin") && strcmp(os, "linux"))
        return bad(t, "os '%s' is neither darwin nor linux", os);
    t->macos = !os || !strcmp(os, "darwin");
    if (!rc && json_object_get(t->root, "arch") && (!arch || (strcmp(arch, "arm64") && strcmp(arch, "amd64"))))
        return bad(t, "arch must be arm64 or amd64");
    if (!rc && json_object_get(t->root, "diskFormat") && (!fmt || strcmp(fmt, "raw")))
        return bad(t, "diskFormat '%s': strata versions raw disks only (convert an ASIF disk "
                      "to raw first)", fmt ? fmt : "?");
    return rc;
}

static int settings_of(tart_vm *t, boot_settings *s)
{
    uint64_t cpus = 0, mem = 0;
    int rc = get_uint(t, "cpuCount", &cpus, 1);
    if (!rc)
        rc = get_uint(t, "memorySize", &mem, 1);
    if (rc)
        return rc;
    const char *mac = get_str(t, "macAddress");
    if (!mac)
        return bad(t, "macAddress is missing");
    if (!boot_mac_valid(mac))
        return bad(t, "macAddress '%s' is not a unicast MAC address", mac);
    memset(s, 0, sizeof *s);
    s->os = t->macos ? BOOT_OS_MACOS : BOOT_OS_LINUX;
    s->cpus = (unsigned)(cpus > 1024 ? 1024 : cpus);
    s->memory_mib = mem >> 20;
    snprintf(s->mac, sizeof s->mac, "%s", mac);
    json_t *d = json_object_get(t->root, "display");
    if (d) {
        json_t *w = json_object_get(d, "width"), *h = json_object_get(d, "height");
        json_t *u = json_object_get(d, "unit");
        if (!json_is_object(d) || !json_is_integer(w) || !json_is_integer(h) ||
            json_object_size(d) != 2u + (u != NULL) ||
            (u && (!json_is_string(u) || (strcmp(json_string_value(u), "pt") &&
                                          strcmp(json_string_value(u), "px")))))
            return bad(t, "display must be {width, height, unit: pt|px}");
        s->display_width = (unsigned)json_integer_value(w);
        s->display_height = (unsigned)json_integer_value(h);
        s->display_ppi = 80; /* tart has no ppi; strata's default */
    } else if (t->macos) {
        s->display_width = 1024, s->display_height = 768, s->display_ppi = 80; /* tart's default */
    }
    s->loader = t->macos ? BOOT_LOADER_MACOS : BOOT_LOADER_EFI;
    s->efi_vars = t->macos ? NULL : "NVRAM";
    return 0;
}

/* HardwareModel / MachineIdentifier from a base64 field, checked with libplist */
static int write_identity(tart_vm *t, const char *bundle, const char *key, const char *file)
{
    const char *b64 = get_str(t, key);
    if (!b64)
        return bad(t, "%s is missing (a macOS VM needs it)", key);
    size_t len;
    unsigned char *data = base64_decode(b64, &len);
    if (!data)
        return bad(t, "%s is not base64", key);
    char *path = NULL;
    int rc = asprintf(&path, "%s/%s", bundle, file) < 0 ? ar_fail(ENOMEM, "out of memory") : 0;
    int fd = rc ? -1 : open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (!rc && (fd < 0 || write(fd, data, len) != (ssize_t)len))
        rc = ar_fail(errno, "%s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    store_identity id = {0};
    if (!rc && store_plist_identity(path, file, &id))
        rc = bad(t, "%s does not decode to a %s property list", key, file);
    free(path);
    free(data);
    return rc;
}

static int clone_in(const char *dir, const char *from, const char *bundle, const char *to,
                    int *reflinked)
{
    char *src = NULL, *dst = NULL;
    if (asprintf(&src, "%s/%s", dir, from) < 0 || asprintf(&dst, "%s/%s", bundle, to) < 0) {
        free(src);
        return ar_fail(ENOMEM, "out of memory");
    }
    struct stat s;
    clone_method how = CLONE_REFLINK;
    int rc = 0;
    if (lstat(src, &s) < 0)
        rc = ar_fail(errno, "%s: %s (a tart VM has %s)", src, strerror(errno), from);
    else if (!S_ISREG(s.st_mode))
        rc = ar_fail(EINVAL, "%s: not a regular file", src);
    else if ((rc = clone_path(src, dst, 0644, &how)))
        rc = ar_fail(-rc, "cloning %s: %s", src, strerror(-rc));
    else if (how != CLONE_REFLINK)
        *reflinked = 0;
    free(src);
    free(dst);
    return rc;
}

static int read_config(tart_vm *t)
{
    char *path = NULL;
    if (asprintf(&path, "%s/config.json", t->dir) < 0)
        return ar_fail(ENOMEM, "out of memory");
    json_error_t je;
    struct stat s;
    int rc = 0;
    if (stat(path, &s) < 0)
        rc = ar_fail(errno, "%s: %s (not a tart VM directory?)", path, strerror(errno));
    else if (s.st_size > CONFIG_MAX)
        rc = ar_fail(EFBIG, "%s: larger than a tart config (%u bytes at most)", path, CONFIG_MAX);
    else if (!(t->root = json_load_file(path, JSON_REJECT_DUPLICATES, &je)))
        rc = ar_fail(EINVAL, "%s: not JSON: %s (line %d)", path, je.text, je.line);
    else if (!json_is_object(t->root))
        rc = ar_fail(EINVAL, "%s: not a JSON object", path);
    free(path);
    return rc;
}

static int build_bundle(tart_vm *t, const char *bundle, int *reflinked)
{
    boot_settings s;
    int rc = check_fields(t);
    if (!rc)
        rc = settings_of(t, &s);
    if (!rc && t->macos && !(rc = write_identity(t, bundle, "hardwareModel", "HardwareModel")))
        rc = write_identity(t, bundle, "ecid", "MachineIdentifier");
    if (!rc)
        rc = clone_in(t->dir, "disk.img", bundle, "Disk.img", reflinked);
    if (!rc)
        rc = clone_in(t->dir, "nvram.bin", bundle, t->macos ? "AuxiliaryStorage" : "NVRAM",
                      reflinked);
    if (!rc && boot_settings_save(bundle, &s))
        rc = ar_fail(EINVAL, "%s/config.json: %s", t->dir, boot_error());
    boot_settings check;
    if (!rc && boot_settings_load(bundle, &check))
        rc = ar_fail(EINVAL, "%s/config.json: %s", t->dir, boot_error());
    else if (!rc)
        boot_settings_free(&check);
    return rc;
}

int archive_import_tart(store *st, const char *dir, const archive_import_opts *o,
                        store_commit_result *res)
{
    memset(res, 0, sizeof *res);
    tart_vm t = {.dir = dir};
    store_scratch *scratch = NULL;
    char *bundle = NULL, *msg = NULL;
    int reflinked = 1;
    int rc = read_config(&t);
    if (!rc)
        rc = store_scratch_make(st, "tart", &scratch);
    if (!rc && (asprintf(&bundle, "%s/bundle", store_scratch_path(scratch)) < 0 ||
                asprintf(&msg, "import from tart %s", dir) < 0))
        rc = ar_fail(ENOMEM, "out of memory");
    if (!rc && mkdir(bundle, 0755) < 0)
        rc = ar_fail(errno, "%s: %s", bundle, strerror(errno));
    if (!rc)
        rc = build_bundle(&t, bundle, &reflinked);
    store_commit_opts co = {.tag = o->tag, .message = msg, .note = o->note, .progress_ctx = o->ctx};
    if (!rc)
        rc = store_import(st, bundle, &co, res);
    if (!rc)
        res->reflinked = res->reflinked && reflinked;
    store_scratch_drop(scratch);
    json_decref(t.root);
    free(bundle);
    free(msg);
    return rc;
}
