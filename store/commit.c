/* import, commit, and suspend's commit of a saved state (D then S). */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int store_import(store *st, const char *bundle_dir, const store_commit_opts *o,
                 store_commit_result *res)
{
    memset(res, 0, sizeof *res);
    if (o->tag && !store_tag_valid(o->tag))
        return st_bad_tag(o->tag);
    st_lock lock = ST_LOCK_INIT; /* none while copying: taken to publish */
    return st_build_layer(st, bundle_dir, NULL, o, NULL, &lock, res);
}

/* An instance being committed, from its record to its parent layer. */
typedef struct {
    char *abs; /* the instance's real path */
    char key[ST_CLONE_KEY_HEX + 1];
    store_busy busy;
    store_layer *parent;
    st_lock lock; /* shared: the parent's files must stay while we compare */
} commit_src;

static int commit_open(store *st, const char *instance_dir, const store_commit_opts *o,
                       commit_src *c)
{
    *c = (commit_src){.busy = {-1}};
    if (o->tag && !store_tag_valid(o->tag))
        return st_bad_tag(o->tag);
    if (!(c->abs = realpath(instance_dir, NULL)))
        return st_fail_errno(errno, "%s", instance_dir);
    store_id pid;
    int rc = st_lock_take(st, ST_LOCK_SHARED, &c->lock);
    if (!rc)
        rc = st_clone_read(st, c->abs, &pid, c->key);
    if (!rc && !o->busy) /* never copy a disk a running VM writes */
        rc = store_busy_take(c->abs, "a commit in progress", &c->busy);
    if (!rc)
        rc = store_layer_load(st, &pid, &c->parent);
    return rc;
}

static void commit_close(commit_src *c)
{
    st_lock_release(&c->lock);
    store_busy_release(&c->busy);
    store_layer_free(c->parent);
    free(c->abs);
}

int store_commit(store *st, const char *instance_dir, const store_commit_opts *o,
                 store_commit_result *res)
{
    memset(res, 0, sizeof *res);
    commit_src c;
    int rc = commit_open(st, instance_dir, o, &c);
    if (!rc) {
        st_build_extra extra = {.instance_dir = c.abs, .key = c.key};
        rc = st_build_layer(st, c.abs, c.parent, o, &extra, &c.lock, res);
    }
    commit_close(&c);
    return rc;
}

/* State files S is the first to have (none in the state resumed from)
 * are read whole: hash them from the instance on their own threads while
 * D is committed (st_prehash_start), so S finds their chunks named. Those
 * the caller began hashing when the VM paused are taken from o->hashed. */
#define ST_MAX_AHEAD 8
struct store_state_hashing {
    char *names[ST_MAX_AHEAD];
    st_prehash *files[ST_MAX_AHEAD];
};

static st_prehash *take_hashed(store_state_hashing *h, const char *name)
{
    for (size_t i = 0; h && i < ST_MAX_AHEAD; i++)
        if (h->names[i] && !strcmp(h->names[i], name)) {
            st_prehash *p = h->files[i];
            h->files[i] = NULL;
            return p;
        }
    return NULL;
}

static void hash_ahead(const char *abs, const char *const *names, size_t n,
                       const store_commit_opts *o, const store_layer *was, int writer_paused,
                       st_prehash **out)
{
    for (size_t i = 0; i < n; i++) {
        if (was && st_layer_find_file(was, names[i]))
            continue; /* chunked against was's, mostly unread */
        if ((out[i] = take_hashed(o->hashed, names[i])))
            continue;
        char *path = st_printf("%s/%s", abs, names[i]);
        out[i] = path ? st_prehash_start(path, st_chunk_size_for(o, NULL, names[i]), writer_paused)
                      : NULL;
        free(path);
    }
}

/* The saved state an instance was resumed from, or NULL. */
static store_layer *resumed_state(store *st, const char *abs)
{
    store_id id;
    store_layer *was = NULL;
    if (store_instance_state(st, abs, &id) == 0 && store_layer_load(st, &id, &was))
        was = NULL;
    return was;
}

store_state_hashing *store_state_hashing_start(store *st, const char *instance_dir,
                                               const char *const *files, size_t n,
                                               const store_commit_opts *o)
{
    char *abs = realpath(instance_dir, NULL);
    store_state_hashing *h = abs && !st_check_chunk_sizes(o) ? calloc(1, sizeof *h) : NULL;
    size_t started = 0;
    st_lock lock;
    if (h && !st_lock_take(st, ST_LOCK_SHARED, &lock)) {
        store_layer *was = resumed_state(st, abs);
        st_lock_release(&lock);
        size_t k = n < ST_MAX_AHEAD ? n : ST_MAX_AHEAD;
        hash_ahead(abs, files, k, o, was, 1, h->files);
        for (size_t i = 0; i < k; i++) {
            if (h->files[i] && !(h->names[i] = strdup(files[i]))) {
                st_prehash_free(h->files[i]);
                h->files[i] = NULL;
            }
            started += h->files[i] != NULL;
        }
        store_layer_free(was);
    }
    free(abs);
    if (!started) {
        store_state_hashing_free(h);
        return NULL;
    }
    return h;
}

void store_state_hashing_free(store_state_hashing *h)
{
    for (size_t i = 0; h && i < ST_MAX_AHEAD; i++) {
        st_prehash_free(h->files[i]);
        free(h->names[i]);
    }
    free(h);
}

/* D: the instance without its state files and bindings; the clone moves
 * onto D. Publishing lets go of the lock c holds. */
static int commit_disk(store *st, commit_src *c, const char *const *state_files, size_t nstate,
                       const store_commit_opts *o, store_commit_result *disk)
{
    store_commit_opts od = *o;
    od.tag = NULL;
    od.bindings = NULL;
    od.nbindings = 0;
    st_build_extra extra = {.instance_dir = c->abs, .key = c->key, .skip = state_files,
                            .nskip = nstate};
    return st_build_layer(st, c->abs, c->parent, &od, &extra, &c->lock, disk);
}

/* S: D's child with the state files (chunked against was's, or from the
 * hashes made ahead) and the bindings. The instance stays on D. */
static int commit_state(store *st, commit_src *c, const store_layer *was,
                        const char *const *state_files, st_prehash **ahead, size_t nahead,
                        const store_commit_opts *o, const store_id *disk, store_commit_result *state)
{
    store_layer *d = NULL;
    int rc = st_lock_take(st, ST_LOCK_SHARED, &c->lock);
    if (!rc)
        rc = store_layer_load(st, disk, &d);
    if (!rc) {
        st_build_extra extra = {.instance_dir = NULL, .state_base = was,
                                .ahead_names = state_files, .ahead = ahead, .nahead = nahead};
        rc = st_build_layer(st, c->abs, d, o, &extra, &c->lock, state);
    }
    store_layer_free(d);
    return rc;
}

/* D then S (store.h). D first, and the clone moves onto D with it, so a
 * crash between them leaves a plain layer and an instance that is its
 * clone: nothing claims a state that was not committed. */
int store_commit_saved_state(store *st, const char *instance_dir, const char *const *state_files,
                             size_t nstate, const store_commit_opts *o, store_commit_result *disk,
                             store_commit_result *state)
{
    memset(disk, 0, sizeof *disk);
    memset(state, 0, sizeof *state);
    if (o->tag && !store_tag_valid(o->tag))
        return st_bad_tag(o->tag);
    if (!o->nbindings)
        return st_fail(EINVAL, "a saved state needs bindings");
    commit_src c;
    store_layer *was = NULL;
    int rc = commit_open(st, instance_dir, o, &c);
    /* the state it was resumed from (D's commit forgets it): where the
     * state files' unchanged chunks are found */
    if (!rc)
        was = resumed_state(st, c.abs);
    if (!rc)
        rc = st_check_chunk_sizes(o);
    st_prehash *ahead[ST_MAX_AHEAD] = {NULL};
    size_t nahead = nstate < ST_MAX_AHEAD ? nstate : ST_MAX_AHEAD;
    if (!rc)
        hash_ahead(c.abs, state_files, nahead, o, was, 0, ahead);
    if (!rc)
        rc = commit_disk(st, &c, state_files, nstate, o, disk);
    st_lock_release(&c.lock);
    if (!rc)
        rc = commit_state(st, &c, was, state_files, ahead, nahead, o, &disk->id, state);
    for (size_t i = 0; i < nahead; i++)
        st_prehash_free(ahead[i]);
    commit_close(&c);
    store_layer_free(was);
    return rc;
}
