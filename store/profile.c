/*
 * store: a layer's boot profile, kept beside it (layers/<id>/profile).
 *
 * The bytes are remote/'s format (docs/profiles.md); the store keeps them
 * without reading them, as it keeps the "received" mark: what a guest read
 * while booting is this host's knowledge about a layer, not part of its
 * content or id, so fsck does not check it and a gc that removes the layer
 * removes it with it. Written atomically; a newer profile replaces an older.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROFILE_FILE "profile"

static char *profile_path(store *st, const store_id *id)
{
    char *dir = st_layer_dir(st, id);
    char *p = dir ? st_printf("%s/" PROFILE_FILE, dir) : NULL;
    free(dir);
    return p;
}

int store_profile_get(store *st, const store_id *id, size_t max, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    int have = store_layer_exists(st, id);
    if (have <= 0)
        return have < 0 ? have : st_fail(ENOENT, "layer %s: no such layer", id->hex);
    char *p = profile_path(st, id);
    if (!p)
        return -ENOMEM;
    int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    int rc = 0;
    if (fd < 0)
        rc = errno == ENOENT ? -ENOENT : st_fail_errno(errno, "%s", p);
    else if (fstat(fd, &sb) < 0)
        rc = st_fail_errno(errno, "%s", p);
    else if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > max)
        rc = st_fail(EFBIG, "%s: not a file of at most %zu bytes", p, max);
    char *buf = rc ? NULL : malloc((size_t)sb.st_size + 1);
    if (!rc && !buf)
        rc = -ENOMEM;
    size_t got = 0;
    while (!rc && got < (size_t)sb.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)sb.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            rc = r < 0 ? st_fail_errno(errno, "%s", p) : st_fail(EIO, "%s: shorter than it was", p);
        else
            got += (size_t)r;
    }
    if (fd >= 0)
        close(fd);
    free(p);
    if (rc) {
        free(buf);
        return rc;
    }
    *data = buf;
    *len = got;
    return 0;
}

int store_profile_put(store *st, const store_id *id, const void *data, size_t len)
{
    int have = store_layer_exists(st, id);
    if (have <= 0)
        return have < 0 ? have : st_fail(ENOENT, "layer %s: no such layer", id->hex);
    char *p = profile_path(st, id);
    if (!p)
        return -ENOMEM;
    int rc = atomic_file_write_all(p, data, len, 0444, 0);
    if (rc)
        rc = st_fail_errno(rc, "%s", p);
    free(p);
    return rc;
}
