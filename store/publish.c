/*
 * A publish transaction (internal.h): a new layer directory and the small
 * files that go with it (the unreachable list, a clone record, a tag, a
 * clone's marker) made visible as one. Every step that needs space is done
 * when a file is staged, before anything is visible; run then renames, and
 * if a rename fails, undoes the ones done, newest first. A crash in between
 * leaves each file whole: a tag or marker names either the old layer or the
 * new one, which is complete.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void st_publish_begin(st_publish *tx, store *st)
{
    memset(tx, 0, sizeof *tx);
    tx->st = st;
}

/* ".<name>.tmp-<pid>.<what>" beside path: a dot name no tag or record has */
static char *aside(const char *path, const char *what)
{
    const char *slash = strrchr(path, '/');
    return st_printf("%.*s/.%s.tmp-%d.%s", (int)(slash - path), path, slash + 1, (int)getpid(),
                     what);
}

/* Write the new content beside the file and link the old one aside. */
static int stage(st_staged *s, const char *path, const char *text, const char *point)
{
    s->path = strdup(path);
    s->next = aside(path, "new");
    s->prev = aside(path, "old");
    if (!s->path || !s->next || !s->prev)
        return -ENOMEM;
    int rc = st_fault(point);
    int fd = rc ? -1 : open(s->next, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    size_t len = strlen(text);
    if (!rc && (fd < 0 || write(fd, text, len) != (ssize_t)len || fsync(fd) < 0))
        rc = -(errno ? errno : EIO);
    if (fd >= 0)
        close(fd);
    unlink(s->prev);
    if (!rc && link(path, s->prev) == 0)
        s->had_old = 1;
    else if (!rc && errno != ENOENT)
        rc = -errno;
    return rc ? st_fail_errno(rc, "%s", path) : 0;
}

int st_publish_stage(st_publish *tx, const char *path, const char *text, const char *point)
{
    if (tx->nsteps == ST_PUBLISH_STEPS)
        return st_fail(E2BIG, "a publish changes at most %d files", ST_PUBLISH_STEPS);
    st_staged *s = &tx->steps[tx->nsteps++];
    s->point = point;
    if (!path)
        return 0;
    char stage_point[64];
    snprintf(stage_point, sizeof stage_point, "stage-%s", point);
    int rc = stage(s, path, text, stage_point);
    if (rc) {
        char why[1024];
        snprintf(why, sizeof why, "%s", store_error());
        rc = st_fail(-rc, "%s; nothing was changed", why);
    }
    return rc;
}

void st_publish_layer(st_publish *tx, const char *tmp_dir, const char *layer_dir)
{
    tx->layer_tmp = tmp_dir;
    tx->layer_dir = layer_dir;
}

static int publish_layer(st_publish *tx)
{
    int rc = 0;
    if (rename(tx->layer_tmp, tx->layer_dir) < 0)
        rc = st_fail_errno(errno, "publishing %s", tx->layer_dir);
    else
        tx->layer_published = 1;
    crash_point();
    char *layers = st_printf("%s/layers", tx->st->home);
    if (!rc && (rc = layers ? file_fsync_path(layers) : -ENOMEM))
        rc = st_fail_errno(rc, "%s/layers", tx->st->home);
    free(layers);
    crash_point();
    return rc;
}

static int publish_step(st_staged *s)
{
    int rc = st_fault(s->point);
    if (!rc && rename(s->next, s->path) < 0)
        rc = -errno;
    if (rc)
        return st_fail_errno(rc, "%s", s->path);
    s->published = 1;
    return 0;
}

int st_publish_run(st_publish *tx)
{
    crash_point();
    int rc = tx->layer_dir ? publish_layer(tx) : 0;
    for (; tx->done < tx->nsteps && !rc; tx->done++) {
        st_staged *s = &tx->steps[tx->done];
        if (s->path)
            rc = publish_step(s);
        crash_point(); /* one per step, changed or not: every commit counts the same */
    }
    for (int i = 0; i < tx->nsteps && !rc; i++)
        if (tx->steps[i].path && (rc = file_fsync_parent(tx->steps[i].path)))
            rc = st_fail_errno(rc, "%s", tx->steps[i].path);
    if (rc && (tx->done || tx->layer_published))
        rc = st_publish_roll_back(tx);
    return rc;
}

static int undo(st_staged *s)
{
    if (!s->published)
        return 0;
    int rc = s->had_old ? rename(s->prev, s->path) : unlink(s->path);
    s->published = rc < 0;
    return rc < 0 ? -errno : 0;
}

int st_publish_roll_back(st_publish *tx)
{
    char why[1024];
    snprintf(why, sizeof why, "%s", store_error());
    const char *left = NULL;
    for (int i = tx->done - 1; i >= 0; i--)
        if (undo(&tx->steps[i]) < 0 && !left)
            left = tx->steps[i].path;
    if (tx->layer_published && rename(tx->layer_dir, tx->layer_tmp) < 0 && !left)
        left = tx->layer_dir;
    tx->layer_published = 0;
    for (int i = 0; i < tx->done; i++)
        if (tx->steps[i].path)
            file_fsync_parent(tx->steps[i].path);
    char *layers = st_printf("%s/layers", tx->st->home);
    if (layers)
        file_fsync_path(layers);
    free(layers);
    if (left)
        return st_fail(EIO, "%s; undoing it failed too, so %s is left changed (see strata fsck)",
                       why, left);
    return st_fail(EIO, "%s; nothing was changed", why);
}

void st_publish_end(st_publish *tx)
{
    for (int i = 0; i < tx->nsteps; i++) {
        st_staged *s = &tx->steps[i];
        if (s->next)
            unlink(s->next);
        if (s->prev)
            unlink(s->prev);
        free(s->path);
        free(s->next);
        free(s->prev);
    }
    memset(tx, 0, sizeof *tx);
}
