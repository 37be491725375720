/* Making a clone of a layer: a writable bundle directory beside the store. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Where a clone goes: the absolute path of DIR, its parent directory, and
 * a temporary name beside it, checked to be a new name on the store's volume. */
typedef struct {
    char *parent; /* realpath of DIR's parent */
    char *abs;    /* parent/leaf */
    char *tmp;    /* parent/.strata-clone-PID, where the clone is built */
} clone_target;

static void clone_target_free(clone_target *t)
{
    free(t->parent);
    free(t->abs);
    free(t->tmp);
}

static int clone_target_make(store *st, const char *dir, clone_target *t)
{
    memset(t, 0, sizeof *t);
    struct stat s;
    if (lstat(dir, &s) == 0)
        return st_fail(EEXIST, "%s already exists; clone makes a new directory", dir);
    char *copy = strdup(dir), *leaf_copy = strdup(dir);
    int rc = copy && leaf_copy ? 0 : -ENOMEM;
    const char *leaf = leaf_copy ? basename(leaf_copy) : NULL;
    if (!rc && !(t->parent = realpath(dirname(copy), NULL)))
        rc = st_fail_errno(errno, "%s", dir);
    else if (!rc && !st_name_valid(leaf))
        rc = st_fail(EINVAL, "%s: not a directory name a clone can take", dir);
    int same = rc ? 1 : clone_same_volume(t->parent, st->home);
    if (same < 0)
        rc = st_fail_errno(same, "%s", t->parent);
    else if (!same)
        rc = st_fail(EXDEV,
                     "%s is on another volume than the store %s; clones can't cross volumes "
                     "(put the clone beside the store, or set STRATA_HOME to a store on that "
                     "volume)",
                     dir, st->home);
    if (!rc) {
        t->abs = st_printf("%s/%s", strcmp(t->parent, "/") ? t->parent : "", leaf);
        /* short and fixed, so a leaf of NAME_MAX bytes still has a temporary name */
        t->tmp = st_printf("%s/.strata-clone-%d", t->parent, (int)getpid());
        if (!t->abs || !t->tmp)
            rc = -ENOMEM;
    }
    free(copy);
    free(leaf_copy);
    if (rc)
        clone_target_free(t);
    return rc;
}

/* Clone the files of layer id (all but the saved-state ones marked in
 * skip) into dir, then fsync them: durable before the clone is visible.
 * Syncing after the last clone lets the first fsync's journal flush cover
 * the others. *all_reflinked says whether every file shares its blocks. */
static int clone_layer_files(store *st, const store_id *id, const store_layer *l,
                             const int *skip, const char *dir, const char *shown,
                             int *all_reflinked)
{
    int rc = 0;
    *all_reflinked = 1;
    for (size_t i = 0; i < l->nfiles && !rc; i++) {
        if (skip[i])
            continue;
        char *from = store_layer_file_path(st, id, l->files[i].name);
        char *to = st_printf("%s/%s", dir, l->files[i].name);
        clone_method how;
        if (!from || !to)
            rc = -ENOMEM;
        else if ((rc = clone_path(from, to, l->files[i].mode, &how)))
            rc = st_fail_errno(rc, "cloning %s into %s", l->files[i].name, shown);
        else if (how != CLONE_REFLINK)
            *all_reflinked = 0;
        free(from);
        free(to);
        crash_point();
    }
    for (size_t i = 0; i < l->nfiles && !rc; i++) {
        if (skip[i])
            continue;
        char *p = st_printf("%s/%s", dir, l->files[i].name);
        int e = p ? file_fsync_path(p) : -ENOMEM;
        if (e)
            rc = st_fail_errno(-e, "%s", p ? p : dir);
        free(p);
    }
    return rc;
}

/* Make the clone built in t->tmp visible at t->abs, never over something
 * that appeared there meanwhile, and durable. */
static int publish_clone(const clone_target *t, const char *dir)
{
    int rc = file_fsync_path(t->tmp);
    if (rc)
        return st_fail_errno(rc, "%s", t->tmp);
    int e = st_fault("clone-publish");
    if (!e)
        e = file_rename_noreplace(t->tmp, t->abs);
    if (e == -EEXIST || e == -ENOTEMPTY)
        return st_fail(EEXIST, "%s: something was created there while cloning; left as it was",
                       dir);
    if (e)
        return st_fail_errno(-e, "%s", dir);
    if ((rc = file_fsync_path(t->parent)))
        return st_fail_errno(rc, "%s", t->parent);
    return 0;
}

static int clone_layer(store *st, const char *ref, const char *dir, int *reflinked, int with_state)
{
    clone_target t;
    int rc = clone_target_make(st, dir, &t);
    if (rc)
        return rc;
    store_layer *l = NULL;
    store_id id, base;
    int *state_file = NULL; /* per file of l: 1 if it is saved-state data */
    st_lock lock; /* shared: the layer must stay while it is cloned */
    if ((rc = st_lock_take(st, ST_LOCK_SHARED, &lock)) || (rc = store_resolve(st, ref, &id)) ||
        (rc = store_layer_load(st, &id, &l)))
        goto out;
    if (!(state_file = calloc(l->nfiles + 1, sizeof *state_file))) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = st_saved_state_split(st, l, state_file, &base)))
        goto out;
    if (with_state)
        memset(state_file, 0, l->nfiles * sizeof *state_file);
    st_rm_rf(t.tmp); /* our pid's, so a crashed clone's: no one else's work */
    if (mkdir(t.tmp, 0755) < 0) {
        rc = st_fail_errno(errno, "%s", t.tmp);
        goto out;
    }
    int all_reflinked;
    rc = clone_layer_files(st, &id, l, state_file, t.tmp, dir, &all_reflinked);
    char key[ST_CLONE_KEY_HEX + 1];
    st_clone_new_key(t.abs, key);
    int recorded = 0;
    if (!rc && !(rc = st_clone_register(st, key, t.abs, t.tmp, &base)))
        recorded = 1;
    if (!rc && with_state && l->nbindings)
        rc = st_mark_saved_state(t.tmp, &id);
    if (!rc)
        rc = publish_clone(&t, dir);
    if (rc)
        st_rm_rf(t.tmp);
    if (rc && recorded)
        st_clone_forget(st, key);
    else if (reflinked)
        *reflinked = all_reflinked;
out:
    st_lock_release(&lock);
    store_layer_free(l);
    free(state_file);
    clone_target_free(&t);
    return rc;
}

int store_clone(store *st, const char *ref, const char *dir, int *reflinked)
{
    return clone_layer(st, ref, dir, reflinked, 0);
}

int store_clone_saved_state(store *st, const char *ref, const char *dir, int *reflinked)
{
    return clone_layer(st, ref, dir, reflinked, 1);
}

int store_clone_adopt(store *st, const char *dir, const store_id *id)
{
    char *abs = realpath(dir, NULL);
    if (!abs)
        return st_fail_errno(errno, "%s", dir);
    st_lock lock; /* shared: the layer must stay while the record is written */
    int rc = st_lock_take(st, ST_LOCK_SHARED, &lock);
    if (!rc && !st_layer_exists(st, id))
        rc = st_fail(ENOENT, "layer %s: not in the store", id->hex);
    if (!rc) {
        char key[ST_CLONE_KEY_HEX + 1];
        st_clone_new_key(abs, key);
        rc = st_clone_register(st, key, abs, abs, id);
    }
    st_lock_release(&lock);
    free(abs);
    return rc;
}
