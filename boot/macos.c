/*
 * Making a macOS VM: the checks every driver shares, then the driver's
 * install (only vz has one). See boot.h.
 */
#define _GNU_SOURCE

#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* the driver that installs macOS, or NULL with the reason */
static const boot_driver *installer_driver(const char *name)
{
    const boot_driver *d = boot_driver_find(name ? name : "vz");
    if (!d || !d->create_macos)
        boot_fail(ENOTSUP, "a macOS VM can only be made on a Mac with Apple silicon (macOS 12 or "
                           "later, Virtualization.framework); this host can't");
    return d && d->create_macos ? d : NULL;
}

static int empty_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return boot_fail_errno(errno, "%s", path);
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) && !rc)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            rc = boot_fail(EEXIST, "%s: not empty; a new VM is made in an empty directory", path);
    closedir(d);
    return rc;
}

/* An .ipsw is a zip archive: refuse anything else before the framework
 * spends time on it, with a line that says what the file is not. */
static int looks_like_ipsw(const char *path)
{
    unsigned char head[4];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return boot_fail_errno(errno, "%s", path);
    ssize_t n = read(fd, head, sizeof head);
    close(fd);
    if (n != (ssize_t)sizeof head || memcmp(head, "PK\x03\x04", 4))
        return boot_fail(EINVAL, "%s: not a macOS restore image (an .ipsw is a zip archive from "
                                 "Apple; this file isn't one)", path);
    return 0;
}

int boot_create_macos(const boot_macos_opts *o)
{
    if (!o || !o->bundle_dir || !o->ipsw)
        return boot_fail(EINVAL, "create macos needs a bundle directory and a restore image");
    const boot_driver *d = installer_driver(o->driver);
    if (!d)
        return err_pass();
    if (o->disk_bytes < BOOT_MACOS_MIN_DISK)
        return boot_fail(EINVAL, "--disk-size %llu bytes: macOS needs at least %lluG",
                         (unsigned long long)o->disk_bytes,
                         (unsigned long long)(BOOT_MACOS_MIN_DISK >> 30));
    if (o->cpus > 64 || (o->memory_mib && (o->memory_mib < 64 || o->memory_mib > (1ULL << 20))))
        return boot_fail(EINVAL, "cpus must be from 1 to 64, memory from 64 MiB to 1 TiB");
    int rc = empty_dir(o->bundle_dir);
    if (!rc)
        rc = looks_like_ipsw(o->ipsw);
    return rc ? rc : d->create_macos(o);
}

int boot_macos_latest(const char *driver, char **url)
{
    if (!url)
        return boot_fail(EINVAL, "no place for the URL");
    *url = NULL;
    const boot_driver *d = installer_driver(driver);
    if (!d)
        return err_pass();
    if (!d->macos_latest)
        return boot_fail(ENOTSUP, "the %s driver can't look up the latest macOS", d->name);
    return d->macos_latest(url);
}
