/*
 * Saved states and instances in use (store.h).
 *
 * A saved state is a layer with bindings. Suspend makes it as D (content)
 * and S (D's child: D's files plus the state files, with bindings), so an
 * export without the state can carry D and keep every id. Stores made
 * before that rule hold one layer with both; they are read as they are,
 * with no upgrade: the state files of such a layer are the files its
 * parent's content lacks, and the layer is its own base.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define BUSY_FILE ".strata-busy" /* in a clone; dot files are never versioned */
#define MAX_CHAIN 4096           /* saved states resumed and saved again, in a row */

static int same_content(const store_file *a, const store_file *b)
{
    if (a->size != b->size || a->mode != b->mode || a->chunk_size != b->chunk_size ||
        a->nchunks != b->nchunks || a->ndata != b->ndata)
        return 0;
    for (size_t i = 0; i < a->ndata; i++)
        if (a->data[i].index != b->data[i].index ||
            memcmp(a->data[i].digest, b->data[i].digest, 32))
            return 0;
    return 1;
}

static long find_file(const store_layer *l, const char *name)
{
    for (size_t i = 0; i < l->nfiles; i++)
        if (!strcmp(l->files[i].name, name))
            return (long)i;
    return -1;
}

static int split(store *st, const store_layer *l, int *state, store_id *base, int depth)
{
    memset(state, 0, l->nfiles * sizeof *state);
    *base = l->id;
    if (!l->nbindings || !l->has_parent || depth > MAX_CHAIN)
        return 0; /* not a saved state, or one whose state files can't be told */
    store_layer *p = NULL;
    int rc = store_layer_load(st, &l->parent, &p);
    int *pstate = rc ? NULL : calloc(p->nfiles + 1, sizeof *pstate);
    store_id pbase;
    if (!rc && !pstate)
        rc = -ENOMEM;
    if (!rc)
        rc = split(st, p, pstate, &pbase, depth + 1);
    if (rc)
        goto out;
    /* made by suspend: the parent is plain, and l is the parent plus files */
    int separate = !p->nbindings;
    size_t content = 0, pcontent = 0;
    for (size_t i = 0; i < l->nfiles; i++) {
        long j = find_file(p, l->files[i].name);
        if (j < 0 || pstate[j]) {
            state[i] = 1;
            continue;
        }
        content++;
        if (!same_content(&l->files[i], &p->files[j]))
            separate = 0;
    }
    for (size_t j = 0; j < p->nfiles; j++)
        pcontent += !pstate[j];
    if (separate && content == pcontent)
        *base = p->id;
out:
    free(pstate);
    store_layer_free(p);
    return rc;
}

int st_saved_state_split(store *st, const store_layer *l, int *state, store_id *base)
{
    return split(st, l, state, base, 0);
}

int store_layer_base(store *st, const store_id *id, store_id *base)
{
    store_layer *l = NULL;
    int rc = store_layer_load(st, id, &l);
    int *state = rc ? NULL : calloc(l->nfiles + 1, sizeof *state);
    if (!rc && !state)
        rc = -ENOMEM;
    if (!rc)
        rc = st_saved_state_split(st, l, state, base);
    free(state);
    store_layer_free(l);
    return rc;
}

int st_mark_saved_state(const char *dir, const store_id *state)
{
    char *path = st_printf("%s/%s", dir, STORE_INSTANCE_MARKER), *text = NULL;
    size_t len;
    int rc = path ? file_read_all(path, 4096, &text, &len) : -ENOMEM;
    char *more = rc ? NULL : st_printf("%sstate %s\n", text, state->hex);
    if (!rc && !more)
        rc = -ENOMEM;
    if (!rc && (rc = atomic_file_write_all(path, more, strlen(more), 0644, 0)))
        rc = st_fail_errno(rc, "%s", path);
    free(more);
    free(text);
    free(path);
    return rc;
}

int store_instance_state(store *st, const char *instance_dir, store_id *out)
{
    store_id layer;
    int rc = store_instance_layer(st, instance_dir, &layer);
    if (rc)
        return rc;
    char *path = st_printf("%s/%s", instance_dir, STORE_INSTANCE_MARKER), *text = NULL;
    size_t len;
    rc = path ? file_read_all(path, 4096, &text, &len) : -ENOMEM;
    const char *s = rc ? NULL : strstr(text, "\nstate ");
    char hex[65] = "";
    if (!rc && (!s || sscanf(s + 7, "%64s", hex) != 1 || !st_id_valid(hex)))
        rc = st_fail(ENOENT, "%s holds no saved state (clone one with clone --with-state)",
                     instance_dir);
    if (!rc)
        memcpy(out->hex, hex, sizeof hex);
    free(text);
    free(path);
    return rc;
}

/* ---------- instances in use ---------- */

int store_busy_take(const char *instance_dir, const char *holder, store_busy *out)
{
    out->fd = -1;
    char *path = st_printf("%s/%s", instance_dir, BUSY_FILE);
    if (!path)
        return -ENOMEM;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    int rc = 0;
    if (fd < 0) {
        rc = st_fail_errno(errno, "%s", path);
    } else if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        rc = -errno;
        char who[512] = "";
        ssize_t n = pread(fd, who, sizeof who - 1, 0);
        who[n > 0 ? n : 0] = 0;
        who[strcspn(who, "\n")] = 0;
        if (rc == -EWOULDBLOCK)
            rc = st_fail(EBUSY, "%s is in use by %s", instance_dir,
                         who[0] ? who : "another process");
        else
            rc = st_fail_errno(-rc, "%s", path);
        close(fd);
    } else {
        /* who holds it, for the message others get; not needed for safety */
        size_t n = strlen(holder);
        if (ftruncate(fd, 0) < 0 || pwrite(fd, holder, n, 0) != (ssize_t)n ||
            pwrite(fd, "\n", 1, (off_t)n) != 1)
            (void)0;
        out->fd = fd;
    }
    free(path);
    return rc;
}

void store_busy_release(store_busy *b)
{
    if (b->fd >= 0)
        close(b->fd);
    b->fd = -1;
}
