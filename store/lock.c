/*
 * The store lock (internal.h, "The store lock"): one flock(2) on
 * <store>/lock per store handle, held through st_lock handles. The flock
 * follows the handles held: exclusive while any exclusive one is, shared
 * while any is, released when none is.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <sys/file.h>

/* Bring the flock in line with the handles held: LOCK_EX, LOCK_SH or none. */
static int lock_apply(store *st)
{
    int want = st->lock_exclusive ? LOCK_EX : st->lock_shared ? LOCK_SH : 0;
    if (want == st->lock_flock)
        return 0;
    if (!want) {
        flock(st->lock_fd, LOCK_UN);
        st->lock_flock = 0;
        return 0;
    }
    /* flock converts in place; shared->exclusive may briefly drop, which is
     * why callers re-check what they read under a shared lock */
    int rc;
    while ((rc = flock(st->lock_fd, want)) < 0 && errno == EINTR)
        ; /* a signal (stop, Ctrl-C) must not abort a commit half way */
    if (rc < 0)
        return st_fail_errno(errno, "%s/lock", st->home);
    st->lock_flock = want;
    return 0;
}

static unsigned *holders(store *st, st_lock_mode mode)
{
    return mode == ST_LOCK_EXCLUSIVE ? &st->lock_exclusive : &st->lock_shared;
}

int st_lock_take(store *st, st_lock_mode mode, st_lock *out)
{
    out->st = NULL;
    out->mode = ST_LOCK_NONE;
    (*holders(st, mode))++;
    int rc = lock_apply(st);
    if (rc) {
        (*holders(st, mode))--;
        return rc;
    }
    out->st = st;
    out->mode = mode;
    return 0;
}

int st_lock_upgrade(st_lock *l, store *st)
{
    if (l->st && l->mode == ST_LOCK_EXCLUSIVE)
        return 0;
    if (!l->st)
        return st_lock_take(st, ST_LOCK_EXCLUSIVE, l);
    st->lock_shared--;
    st->lock_exclusive++;
    int rc = lock_apply(st);
    if (rc) {
        st->lock_exclusive--;
        st->lock_shared++;
        return rc;
    }
    l->mode = ST_LOCK_EXCLUSIVE;
    return 0;
}

void st_lock_release(st_lock *l)
{
    if (!l || !l->st)
        return;
    (*holders(l->st, l->mode))--;
    lock_apply(l->st); /* a downgrade that fails leaves it exclusive: still safe */
    l->st = NULL;
    l->mode = ST_LOCK_NONE;
}
