/*
 * What the store knows about a VZ bundle's files: the size rules it checks
 * before versioning them, and the identity plists (HardwareModel,
 * MachineIdentifier: a Mac's), which come from outside and are decoded with
 * libplist under a size bound. A Linux guest's identifier under vz lives in
 * GenericMachineIdentifier, opaque framework data.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <plist/plist.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PLIST_MAX (1u << 20)          /* identity plists are a few hundred bytes */

static int is_plist_name(const char *name)
{
    return !strcmp(name, "HardwareModel") || !strcmp(name, "MachineIdentifier");
}

static int uint_of(plist_t dict, const char *key, uint64_t *v)
{
    plist_t n = plist_dict_get_item(dict, key);
    if (!n || plist_get_node_type(n) != PLIST_UINT)
        return -1;
    plist_get_uint_val(n, v);
    return 0;
}

int store_plist_identity(const char *path, const char *name, store_identity *out)
{
    char *data;
    size_t len;
    int rc = file_read_all(path, PLIST_MAX, &data, &len);
    if (rc == -EFBIG)
        return st_fail(EFBIG, "%s: too large for a %s property list (over %u bytes)", path, name,
                       PLIST_MAX);
    if (rc)
        return st_fail_errno(rc, "%s", path);
    plist_t root = NULL;
    if (len > 0)
        plist_from_memory(data, (uint32_t)len, &root);
    free(data);
    if (!root)
        return st_fail(EINVAL, "%s: not a property list (garbage or truncated)", path);
    rc = 0;
    if (plist_get_node_type(root) != PLIST_DICT) {
        rc = st_fail(EINVAL, "%s: a %s property list must be a dictionary", path, name);
    } else if (!strcmp(name, "MachineIdentifier")) {
        if (uint_of(root, "ECID", &out->ecid))
            rc = st_fail(EINVAL, "%s: no integer ECID in MachineIdentifier", path);
        else
            out->has_machine_identifier = 1;
    } else {
        uint64_t drv = 0, pv = 0;
        if (uint_of(root, "PlatformVersion", &pv))
            rc = st_fail(EINVAL, "%s: no integer PlatformVersion in HardwareModel", path);
        else {
            uint_of(root, "DataRepresentationVersion", &drv);
            out->data_representation_version = (int64_t)drv;
            out->platform_version = (int64_t)pv;
            out->minimum_supported_os[0] = 0;
            plist_t os = plist_dict_get_item(root, "MinimumSupportedOS");
            if (os && plist_get_node_type(os) == PLIST_ARRAY) {
                size_t at = 0;
                for (uint32_t i = 0; i < plist_array_get_size(os) && i < 4; i++) {
                    plist_t part = plist_array_get_item(os, i);
                    uint64_t v = 0;
                    if (plist_get_node_type(part) == PLIST_UINT)
                        plist_get_uint_val(part, &v);
                    at += (size_t)snprintf(out->minimum_supported_os + at,
                                           sizeof out->minimum_supported_os - at, "%s%" PRIu64,
                                           i ? "." : "", v % 100000);
                }
            }
            out->has_hardware_model = 1;
        }
    }
    plist_free(root);
    return rc;
}

int store_write_machine_identifier(const char *path, uint64_t ecid)
{
    plist_t root = plist_new_dict();
    plist_dict_set_item(root, "ECID", plist_new_uint(ecid));
    char *bin = NULL;
    uint32_t len = 0;
    plist_to_bin(root, &bin, &len);
    plist_free(root);
    if (!bin)
        return st_fail(ENOMEM, "%s: could not encode the property list", path);
    int rc = atomic_file_write_all(path, bin, len, 0644, 0);
    plist_to_bin_free(bin);
    return rc ? st_fail_errno(rc, "%s", path) : 0;
}

int st_bundle_check_file(const char *dir, const char *name, uint64_t size)
{
    if (size > ST_MAX_FILE_SIZE)
        return st_fail(EFBIG, "%s/%s: %" PRIu64 " bytes is more than strata versions (4 TiB)", dir,
                       name, size);
    if (!strcmp(name, "Disk.img") && size % 512)
        return st_fail(EINVAL, "%s/Disk.img: size %" PRIu64 " is not a multiple of 512", dir, size);
    /* a Linux guest's VZGenericMachineIdentifier data is opaque: only its
     * size is checked (MachineIdentifier is a Mac's ECID plist, below) */
    if (!strcmp(name, "GenericMachineIdentifier") && (size == 0 || size > PLIST_MAX))
        return st_fail(EINVAL, "%s/%s: %" PRIu64 " bytes is not a machine identifier (1 byte to 1 MiB)",
                       dir, name, size);
    if (is_plist_name(name)) {
        store_identity id = {0};
        char *path = st_printf("%s/%s", dir, name);
        if (!path)
            return -ENOMEM;
        int rc = store_plist_identity(path, name, &id);
        free(path);
        return rc;
    }
    return 0;
}

/* A layer's identity plists, those it has. */
int store_layer_identity(store *st, const store_id *id, store_identity *out)
{
    memset(out, 0, sizeof *out);
    static const char *const names[] = {"HardwareModel", "MachineIdentifier"};
    for (int i = 0; i < 2; i++) {
        char *p = store_layer_file_path(st, id, names[i]);
        if (!p)
            return -ENOMEM;
        int rc = 0;
        if (access(p, F_OK) == 0)
            rc = store_plist_identity(p, names[i], out);
        free(p);
        if (rc)
            return rc;
    }
    return 0;
}
