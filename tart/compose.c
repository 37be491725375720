/*
 * tart: a layer in tart's terms. Writes what tart's own encoders write
 * (cirruslabs/tart at 5287b59; docs/tart.md cites each rule):
 *
 * - config.json, tart's VMConfig version 1 (Sources/tart/VMConfig.swift
 *   encode(to:), Platform/Darwin.swift): keys in the order tart's encoder
 *   adds them, '/' escaped as Foundation's JSONEncoder does. It is the
 *   inverse of archive_import_tart (archive/tart.c): each field it maps is
 *   written from the setting it became, so importing the result gives the
 *   same Settings.json, HardwareModel and MachineIdentifier back;
 * - the OCI config stub and the manifest (OCI/Manifest.swift,
 *   VMDirectory+OCI.swift pushToRegistry), with Config.jsonEncoder()'s
 *   sorted keys and the same escapes.
 */
#define _GNU_SOURCE
#include "../base/file.h"
#include "../base/hex.h"
#include "../base/note.h"
#include "../boot/boot.h"
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SETTINGS_MAX (1u << 20)
#define IDENTITY_MAX (64u << 10) /* HardwareModel, MachineIdentifier: small plists */
#define TART_DISK_FORMAT_LABEL "org.cirruslabs.tart.disk.format"

/* Foundation's JSONEncoder: compact, '/' as "\/"; sorted keys where
 * tart asks (Config.jsonEncoder), else in the order the keys were added */
static char *dump(json_t *j, int sorted, size_t *len)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ESCAPE_SLASH |
                                (sorted ? JSON_SORT_KEYS : JSON_PRESERVE_ORDER));
    json_decref(j);
    if (s)
        *len = strlen(s);
    return s;
}

static const store_file *layer_file(const store_layer *l, const char *name)
{
    for (size_t i = 0; name && i < l->nfiles; i++)
        if (!strcmp(l->files[i].name, name))
            return &l->files[i];
    return NULL;
}

/* a layer file's bytes, base64 (a VZ data representation in tart's config) */
static int file_base64(store *st, const store_id *id, const char *name, json_t **out)
{
    char *path = store_layer_file_path(st, id, name), *data = NULL;
    size_t len = 0;
    int rc = path ? file_read_all(path, IDENTITY_MAX, &data, &len) : -ENOMEM;
    if (rc)
        rc = tart_fail(-rc, "layer %.12s: %s can't be read: %s", id->hex, name, strerror(-rc));
    char *b64 = rc ? NULL : base64_encode(data, len);
    if (!rc && !b64)
        rc = tart_oom();
    if (!rc)
        *out = json_string(b64);
    free(b64);
    free(data);
    free(path);
    return rc;
}

/* settings strata keeps that tart's config can't: each either refused
 * (the guest would not be the same machine) or named in one note */
static int inexpressible(const tart_composed *c, const boot_settings *s,
                         void (*note)(void *, const char *), void *ctx)
{
    if (s->loader == BOOT_LOADER_LINUX)
        return tart_fail(ENOTSUP, "layer %.12s boots a kernel and initrd (Settings.json boot.loader "
                         "linux): tart boots Linux guests through EFI only", c->id.hex);
    if (s->ndisks)
        return tart_fail(ENOTSUP, "layer %.12s has %zu extra disk(s) (Settings.json disks): a tart "
                         "VM has one disk", c->id.hex, s->ndisks);
    if (s->disk_nbd)
        return tart_fail(ENOTSUP, "layer %.12s boots from an NBD export (Settings.json disk.nbd): a "
                         "tart VM's disk is its disk.img", c->id.hex);
    char dropped[512] = "";
    size_t n = 0;
    const struct {
        int set;
        const char *name;
    } run_time[] = {
        {s->nshares > 0, "shared_folders"},
        {s->installer != NULL, "installer"},
        {s->rosetta != NULL, "rosetta"},
        {s->ssh_user != NULL, "ssh_user"},
        {s->disk_bus != BOOT_BUS_VIRTIO, "disk.bus"},
        {s->display_width && s->display_ppi != 80, "display.ppi"},
        {s->display_reconfigure != BOOT_RECONFIGURE_AUTO, "display.reconfigure"},
    };
    for (size_t i = 0; i < sizeof run_time / sizeof *run_time; i++)
        if (run_time[i].set)
            n += (size_t)snprintf(dropped + n, n < sizeof dropped ? sizeof dropped - n : 0, "%s%s",
                                  n ? ", " : "", run_time[i].name);
    if (n)
        note_send(note, ctx, "layer %.12s: tart's config has no place for %s (Settings.json); "
                  "left out (tart takes them as `tart run` options)", c->id.hex, dropped);
    return 0;
}

/* tart's VMConfig, keys in the order VMConfig.encode(to:) adds them */
static int vm_config(store *st, tart_composed *c, const boot_settings *s)
{
    json_t *j = json_object(), *ecid = NULL, *model = NULL;
    int rc = 0;
    if (c->macos && !(rc = file_base64(st, &c->id, "MachineIdentifier", &ecid)))
        rc = file_base64(st, &c->id, "HardwareModel", &model);
    if (rc || !j) {
        json_decref(j), json_decref(ecid), json_decref(model);
        return rc ? rc : tart_oom();
    }
    json_object_set_new(j, "version", json_integer(1));
    json_object_set_new(j, "os", json_string(c->macos ? "darwin" : "linux"));
    json_object_set_new(j, "arch", json_string(c->arch));
    if (c->macos) {
        json_object_set_new(j, "ecid", ecid);
        json_object_set_new(j, "hardwareModel", model);
    }
    /* strata keeps no minimum: the values themselves, so `tart set` never
     * lowers a macOS guest below what it ran with */
    json_object_set_new(j, "cpuCountMin", json_integer(s->cpus));
    json_object_set_new(j, "cpuCount", json_integer(s->cpus));
    json_object_set_new(j, "memorySizeMin", json_integer((json_int_t)(s->memory_mib << 20)));
    json_object_set_new(j, "memorySize", json_integer((json_int_t)(s->memory_mib << 20)));
    json_object_set_new(j, "macAddress", json_string(s->mac));
    if (s->display_width) /* none (a Linux guest without one): tart's default, 1024x768 */
        json_object_set_new(j, "display", json_pack("{s:i, s:i}", "width", (int)s->display_width,
                                                    "height", (int)s->display_height));
    json_object_set_new(j, "diskFormat", json_string("raw"));
    c->config = dump(j, 0, &c->config_len);
    return c->config ? 0 : tart_oom();
}

static int read_settings(store *st, const tart_composed *c, boot_settings *s)
{
    char *path = store_layer_file_path(st, &c->id, "Settings.json"), *text = NULL;
    size_t len = 0;
    int rc = path ? file_read_all(path, SETTINGS_MAX, &text, &len) : -ENOMEM;
    free(path);
    if (rc == -ENOENT)
        return tart_fail(ENOENT, "layer %.12s has no Settings.json: tart's config needs its CPUs, "
                         "memory and MAC address", c->id.hex);
    if (rc)
        return tart_fail(-rc, "layer %.12s: Settings.json can't be read: %s", c->id.hex, strerror(-rc));
    rc = boot_settings_parse(text, len, NULL, s);
    free(text);
    if (rc)
        return tart_fail(-rc, "layer %.12s: %s", c->id.hex, boot_error());
    return 0;
}

/* a saved state gives its base: tart never carries one (its push skips
 * state.vzvmsave, research/tart.md §2.2) */
static int choose(store *st, const char *ref, void (*note)(void *, const char *), void *ctx,
                  store_id *out)
{
    store_id id;
    int rc = store_resolve(st, ref, &id);
    if (!rc)
        rc = store_layer_base(st, &id, out);
    if (rc)
        return tart_fail(-rc, "%s", store_error());
    if (memcmp(id.hex, out->hex, sizeof id.hex))
        note_send(note, ctx, "%.12s is a saved state (host-bound): tart carries no saved state, so "
                  "its disk without the state goes (layer %.12s)", id.hex, out->hex);
    return 0;
}

int tart_compose(store *st, const char *ref, void (*note)(void *, const char *), void *ctx,
                 tart_composed *out)
{
    memset(out, 0, sizeof *out);
    int rc = choose(st, ref, note, ctx, &out->id);
    store_layer *l = NULL;
    if (!rc && store_layer_load(st, &out->id, &l))
        rc = tart_fail(EIO, "%s", store_error());
    boot_settings s;
    memset(&s, 0, sizeof s);
    if (!rc)
        rc = read_settings(st, out, &s);
    if (!rc) {
        out->macos = s.os == BOOT_OS_MACOS;
        /* a macOS guest is arm64; strata's settings keep no arch for a
         * Linux guest, which ran here, on this host's own (both drivers run
         * the host's architecture). tart runs only a VM of its host's arch
         * (VM.swift), so an amd64 guest is refused there, as it should. */
        out->arch = out->macos ? "arm64" : boot_host_arch(out->arch_buf, sizeof out->arch_buf);
        out->nvram = strdup(out->macos ? "AuxiliaryStorage" : s.efi_vars ? s.efi_vars : "");
        rc = out->nvram ? inexpressible(out, &s, note, ctx) : tart_oom();
    }
    const store_file *disk = l && !rc ? layer_file(l, "Disk.img") : NULL;
    const store_file *nvram = l && !rc ? layer_file(l, out->nvram) : NULL;
    if (!rc && (!disk || !disk->size))
        rc = tart_fail(ENOENT, "layer %.12s has no %s: a tart VM needs a disk", out->id.hex,
                       disk ? "data in Disk.img" : "Disk.img");
    else if (!rc && !nvram)
        rc = tart_fail(ENOENT, "layer %.12s has no %s: it is tart's nvram.bin", out->id.hex,
                       out->nvram[0] ? out->nvram : "EFI variable store");
    if (!rc) {
        out->disk_size = disk->size;
        out->nvram_size = nvram->size;
        rc = vm_config(st, out, &s);
    }
    boot_settings_free(&s);
    store_layer_free(l);
    if (rc)
        tart_composed_free(out);
    return rc;
}

void tart_composed_free(tart_composed *c)
{
    free(c->config);
    free(c->nvram);
    c->config = c->nvram = NULL;
}

char *tart_compose_oci_config(const tart_composed *c, size_t *len)
{
    json_t *j = json_pack("{s:s, s:s, s:{s:{s:s}}}", "architecture", c->arch, "os",
                          c->macos ? "darwin" : "linux", "config", "Labels",
                          TART_DISK_FORMAT_LABEL, "raw");
    return j ? dump(j, 1, len) : NULL;
}

static json_t *descriptor(const tart_descriptor *d)
{
    json_t *ann = json_object();
    if (ann && d->annotated) { /* OCIManifestLayer always has annotations, {} if none */
        char size[24];
        snprintf(size, sizeof size, "%" PRIu64, d->usize);
        json_object_set_new(ann, TART_ANN_SIZE, json_string(size));
        json_object_set_new(ann, TART_ANN_DIGEST, json_string(d->udigest));
    }
    return json_pack("{s:o, s:s, s:s, s:I}", "annotations", ann, "digest", d->digest, "mediaType",
                     d->media_type, "size", (json_int_t)d->size);
}

char *tart_compose_manifest(const tart_descriptor *config, const tart_descriptor *layers,
                            size_t n, uint64_t disk_size, int64_t upload_time, size_t *len)
{
    char size[24], when[32];
    snprintf(size, sizeof size, "%" PRIu64, disk_size);
    time_t t = (time_t)upload_time;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm))
        return NULL;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        if (json_array_append_new(arr, descriptor(&layers[i]))) {
            json_decref(arr);
            return NULL;
        }
    json_t *m = arr ? json_pack("{s:{s:s, s:s}, s:{s:s, s:s, s:I}, s:o, s:s, s:i}", "annotations",
                                TART_ANN_DISK_SIZE, size, TART_ANN_UPLOAD_TIME, when, "config",
                                "digest", config->digest, "mediaType",
                                "application/vnd.oci.image.config.v1+json", "size",
                                (json_int_t)config->size, "layers", arr, "mediaType", REMOTE_MT_OCI,
                                "schemaVersion", 2)
                    : NULL;
    return m ? dump(m, 1, len) : NULL;
}
