/* Opening a store: its directories, its format line and its lock file. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FORMAT_LINE "strata-store 1\n"

/* The store's directory, made if absent, as an absolute path: home, or
 * $STRATA_HOME, or ~/.strata. */
static int home_path(const char *home, char **out)
{
    char *h = NULL;
    if (home && *home)
        h = strdup(home);
    else if (getenv("STRATA_HOME") && *getenv("STRATA_HOME"))
        h = strdup(getenv("STRATA_HOME"));
    else if (getenv("HOME"))
        h = st_printf("%s/.strata", getenv("HOME"));
    else
        return st_fail(EINVAL, "no store: set STRATA_HOME or HOME");
    if (!h)
        return -ENOMEM;
    int rc = file_mkdir_p(h, 0755);
    if (rc) {
        rc = st_fail_errno(rc, "store %s", h);
        free(h);
        return rc;
    }
    *out = realpath(h, NULL);
    free(h);
    return *out ? 0 : st_fail_errno(errno, "store");
}

/* The store's own directories, and its format line (written if absent). */
static int make_layout(const char *real)
{
    static const char *const subdirs[] = {"layers", "refs", "refs/tags", "instances", "tmp"};
    int rc = 0;
    for (size_t i = 0; i < sizeof subdirs / sizeof *subdirs; i++) {
        char *d = st_printf("%s/%s", real, subdirs[i]);
        if (!d || (mkdir(d, 0755) < 0 && errno != EEXIST))
            rc = d ? st_fail_errno(errno, "%s", d) : -ENOMEM;
        free(d);
        if (rc)
            return rc;
    }
    char *fmt = st_printf("%s/format", real), *data = NULL;
    size_t len;
    if (!fmt)
        return -ENOMEM;
    rc = file_read_all(fmt, 4096, &data, &len);
    if (rc == -ENOENT) {
        if ((rc = atomic_file_write_all(fmt, FORMAT_LINE, strlen(FORMAT_LINE), 0644, 0)))
            rc = st_fail_errno(rc, "%s", fmt);
    } else if (!rc && (len != strlen(FORMAT_LINE) || memcmp(data, FORMAT_LINE, len)))
        rc = st_fail(EINVAL, "%s: not a store this strata understands", fmt);
    else if (rc)
        rc = st_fail_errno(rc, "%s", fmt);
    free(data);
    free(fmt);
    return rc;
}

int store_open(const char *home, store **out)
{
    char *real = NULL;
    int rc = home_path(home, &real);
    if (!rc)
        rc = make_layout(real);
    char *lock = rc ? NULL : st_printf("%s/lock", real);
    int fd = lock ? open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644) : -1;
    if (!rc && fd < 0)
        rc = st_fail_errno(errno, "%s", lock ? lock : "lock");
    free(lock);
    store *st = rc ? NULL : calloc(1, sizeof *st);
    if (!rc && !st)
        rc = -ENOMEM;
    if (rc) {
        if (fd >= 0)
            close(fd);
        free(real);
        return rc;
    }
    st->home = real;
    st->lock_fd = fd;
    *out = st;
    return 0;
}

void store_close(store *st)
{
    if (!st)
        return;
    close(st->lock_fd); /* drops the flock, whatever handles were left held */
    free(st->home);
    free(st);
}

const char *store_home(const store *st)
{
    return st->home;
}
