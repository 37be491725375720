/*
 * tart: a layer written as a tart VM directory (docs/tart.md, "A layer as
 * a tart VM directory"): config.json, disk.img and nvram.bin, the three
 * files that make a directory "initialized" for tart (VMDirectory.swift),
 * so one made in ~/.tart/vms/NAME is listed and runs. The files are
 * cloned from the layer's (shared blocks where the filesystem can, a
 * sparse copy elsewhere), in a temporary sibling that is fsynced and then
 * renamed into place, so DIR is whole or absent.
 */
#define _GNU_SOURCE
#include "../base/file.h"
#include "../clone/clone.h"
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const made[] = {"config.json", "disk.img", "nvram.bin"};

static int clone_in(store *st, const store_id *id, const char *from, const char *tmp,
                    const char *to)
{
    char *src = store_layer_file_path(st, id, from), *dst = NULL;
    if (!src || asprintf(&dst, "%s/%s", tmp, to) < 0) {
        free(src);
        return tart_oom();
    }
    clone_method how;
    int rc = clone_path(src, dst, 0644, &how);
    if (rc)
        rc = tart_fail(-rc, "%s: %s (from layer %.12s's %s)", dst, strerror(-rc), id->hex, from);
    else if ((rc = file_fsync_path(dst)))
        rc = tart_fail(-rc, "%s: fsync: %s", dst, strerror(-rc));
    free(src);
    free(dst);
    return rc;
}

static int write_config(const tart_composed *c, const char *tmp)
{
    char *path = NULL;
    if (asprintf(&path, "%s/config.json", tmp) < 0)
        return tart_oom();
    int rc = atomic_file_write_all(path, c->config, c->config_len, 0644, ATOMIC_FILE_NO_REPLACE);
    if (rc)
        rc = tart_fail(-rc, "%s: %s", path, strerror(-rc));
    free(path);
    return rc;
}

static void remove_tmp(const char *tmp)
{
    for (size_t i = 0; i < sizeof made / sizeof *made; i++) {
        char *p = NULL;
        if (asprintf(&p, "%s/%s", tmp, made[i]) >= 0)
            unlink(p);
        free(p);
    }
    rmdir(tmp);
}

/* ".NAME.tmp-PID" beside dir */
static char *sibling(const char *dir)
{
    const char *slash = strrchr(dir, '/');
    const char *name = slash ? slash + 1 : dir;
    int plen = slash ? (int)(slash - dir + 1) : 0;
    char *tmp = NULL;
    if (asprintf(&tmp, "%.*s.%s.tmp-%ld", plen, dir, name, (long)getpid()) < 0)
        return NULL;
    return tmp;
}

int tart_vm_write(store *st, const char *ref, const char *dir)
{
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    char *clean = strndup(dir, dl);
    if (!clean)
        return tart_oom();
    struct stat sb;
    int rc = 0;
    if (!lstat(clean, &sb))
        rc = tart_fail(EEXIST, "%s exists: clone --tart makes a new directory", clean);
    else if (errno != ENOENT)
        rc = tart_fail(errno, "%s: %s", clean, strerror(errno));
    tart_composed c = {0};
    if (!rc)
        rc = tart_compose(st, ref, NULL, NULL, &c);
    store_pin *pin = NULL; /* gc, meanwhile, keeps the layer being read */
    if (!rc && store_pin_layer(st, &c.id, &pin))
        rc = tart_fail(EIO, "%s", store_error());
    char *tmp = rc ? NULL : sibling(clean);
    if (!rc && !tmp)
        rc = tart_oom();
    int mkdir_done = 0;
    if (!rc && mkdir(tmp, 0755) < 0)
        rc = tart_fail(errno, "%s: %s", tmp, strerror(errno));
    else if (!rc)
        mkdir_done = 1;
    if (!rc)
        rc = clone_in(st, &c.id, "Disk.img", tmp, "disk.img");
    if (!rc)
        rc = clone_in(st, &c.id, c.nvram, tmp, "nvram.bin");
    if (!rc)
        rc = write_config(&c, tmp);
    if (!rc && (rc = file_fsync_path(tmp)))
        rc = tart_fail(-rc, "%s: fsync: %s", tmp, strerror(-rc));
    if (!rc && (rc = file_rename_noreplace(tmp, clean)))
        rc = tart_fail(-rc, "%s: %s", clean, strerror(-rc));
    if (!rc && (rc = file_fsync_parent(clean)))
        rc = tart_fail(-rc, "%s: fsync of its directory: %s", clean, strerror(-rc));
    if (rc && mkdir_done)
        remove_tmp(tmp);
    store_unpin(pin);
    tart_composed_free(&c);
    free(tmp);
    free(clean);
    return rc;
}
