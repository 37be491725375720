/*
 * Building a layer from a bundle directory, for import and commit
 * (commit.c), in four steps: plan (which files, at which chunk sizes, within
 * a layer's bounds), copy and chunk each file into a work directory under
 * tmp/, write the manifest, info and seals there, and publish it with what
 * goes with it (publish.c) under the exclusive lock.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define note(o, ...) note_send((o) ? (o)->note : NULL, (o) ? (o)->progress_ctx : NULL, __VA_ARGS__)

typedef struct {
    char *name;
    uint64_t size;
    uint32_t mode;
} src_file;

/* A layer being built, from its plan to its publishing. */
typedef struct {
    store *st;
    const char *src_dir;
    const store_layer *parent;
    const store_commit_opts *o;
    const st_build_extra *extra;
    store_commit_result *res;
    src_file *src; /* the plan: the bundle's files to version */
    size_t nsrc;
    st_seals *parent_seals, *state_seals; /* the bases' seals, if they have them */
    st_tmpdir tmp;                        /* tmp.path/{manifest,info,seals,bundle/} */
    char *bundle;
    store_layer l;  /* what is built: files as they are chunked */
    st_seals *seals;
    sbuf manifest, info;
} build;

static void free_src(src_file *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].name);
    free(v);
}

static st_prehash *ahead_for(const st_build_extra *extra, const char *name)
{
    for (size_t i = 0; extra && i < extra->nahead; i++)
        if (!strcmp(extra->ahead_names[i], name))
            return extra->ahead[i];
    return NULL;
}

/* The file name is chunked against, and the layer holding it (*from). */
static const store_file *file_base(const store_layer *parent, const st_build_extra *extra,
                                   const char *name, const store_layer **from)
{
    const store_file *f = parent ? st_layer_find_file(parent, name) : NULL;
    *from = parent;
    if (!f && extra && extra->state_base) {
        f = st_layer_find_file(extra->state_base, name);
        *from = extra->state_base;
    }
    return f;
}

uint32_t st_chunk_size_for(const store_commit_opts *o, const store_file *base, const char *name)
{
    if (o->chunk_size)
        return o->chunk_size;
    if (base)
        return base->chunk_size;
    for (size_t i = 0; i < o->nfile_chunks; i++)
        if (!strcmp(o->file_chunks[i].name, name))
            return o->file_chunks[i].chunk_size;
    return STORE_DEFAULT_CHUNK;
}

int st_check_chunk_sizes(const store_commit_opts *o)
{
    if (o->chunk_size && !st_chunk_size_valid(o->chunk_size))
        return st_fail(EINVAL, "chunk size %" PRIu32 ": a power of two from 4 KiB to 64 MiB",
                       o->chunk_size);
    for (size_t i = 0; i < o->nfile_chunks; i++)
        if (!st_chunk_size_valid(o->file_chunks[i].chunk_size))
            return st_fail(EINVAL, "chunk size %" PRIu32 " for %s: a power of two from 4 KiB to 64 MiB",
                           o->file_chunks[i].chunk_size, o->file_chunks[i].name);
    return 0;
}

/* ---------- plan ---------- */

static int skipped(const st_build_extra *extra, const char *name)
{
    for (size_t i = 0; extra && i < extra->nskip; i++)
        if (!strcmp(extra->skip[i], name))
            return 1;
    return 0;
}

/* Which bundle files a scan has seen: a bundle needs some together. */
typedef struct {
    int disk, hw, aux, mid;
} bundle_seen;

/* Judge one entry of the bundle: 1 to version it, 0 to leave it out (with
 * a note if it's not on purpose), or an error. */
static int scan_one(const char *dir, const char *name, const build *b, struct stat *s,
                    bundle_seen *seen)
{
    char *path = st_printf("%s/%s", dir, name);
    int rc = 0;
    if (!path)
        return -ENOMEM;
    if (skipped(b->extra, name))
        ; /* left out on purpose: not versioned, not checked */
    else if (lstat(path, s) < 0)
        rc = st_fail_errno(errno, "%s", path);
    else if (S_ISLNK(s->st_mode))
        rc = st_fail(EINVAL, "%s: a symbolic link; a bundle holds regular files only", path);
    else if (!S_ISREG(s->st_mode))
        note(b->o, "skipping %s: not a regular file", path);
    else if (!st_name_valid(name))
        rc = st_fail(EINVAL, "%s: file name not allowed", path);
    else if (!strcmp(name, STORE_RESTORE_IMAGE) && !b->o->include_restore_image)
        note(b->o, "skipping %s (%" PRIu64 " MB): pass --include-restore-image to version it",
             path, (uint64_t)s->st_size / 1000000);
    else if (!(rc = st_bundle_check_file(dir, name, (uint64_t)s->st_size))) {
        seen->disk |= !strcmp(name, "Disk.img");
        seen->hw |= !strcmp(name, "HardwareModel");
        seen->aux |= !strcmp(name, "AuxiliaryStorage");
        seen->mid |= !strcmp(name, "MachineIdentifier");
        rc = 1;
    }
    free(path);
    return rc;
}

/* The regular files of the bundle, checked against the bundle rules. */
static int scan_bundle(build *b)
{
    const char *dir = b->src_dir;
    char **names;
    size_t cnt;
    DIR *d = opendir(dir);
    if (!d)
        return st_fail_errno(errno, "%s", dir);
    closedir(d);
    /* st_list_dir skips dot files; a bundle's own hidden files are not VM state */
    int rc = st_list_dir(dir, &names, &cnt);
    if (rc)
        return st_fail_errno(rc, "%s", dir);
    src_file *v = calloc(cnt ? cnt : 1, sizeof *v);
    size_t k = 0;
    bundle_seen seen = {0};
    for (size_t i = 0; v && !rc && i < cnt; i++) {
        struct stat s;
        int take = scan_one(dir, names[i], b, &s, &seen);
        if (take < 0)
            rc = take;
        else if (take) {
            v[k++] = (src_file){names[i], (uint64_t)s.st_size, s.st_mode & 0777};
            names[i] = NULL;
        }
    }
    st_free_names(names, cnt);
    if (!v)
        rc = -ENOMEM;
    if (!rc && !seen.disk)
        rc = st_fail(ENOENT, "%s: no Disk.img; not a VM bundle", dir);
    if (!rc && seen.hw && (!seen.aux || !seen.mid))
        rc = st_fail(ENOENT, "%s: a macOS bundle (it has HardwareModel) needs %s too", dir,
                     !seen.aux ? "AuxiliaryStorage" : "MachineIdentifier");
    if (rc) {
        free_src(v, k);
        return rc;
    }
    b->src = v;
    b->nsrc = k;
    return 0;
}

/* The manifest's bounds, checked before anything is written. */
static int check_bounds(const build *b)
{
    if (b->nsrc > ST_MAX_FILES || b->o->nbindings > ST_MAX_BINDINGS)
        return st_fail(E2BIG, "%s: %zu files; a layer holds at most %d", b->src_dir, b->nsrc,
                       ST_MAX_FILES);
    uint64_t chunks = 0, data = 0;
    const store_layer *from;
    int rc = 0;
    for (size_t i = 0; !rc && i < b->nsrc; i++) {
        const store_file *base = file_base(b->parent, b->extra, b->src[i].name, &from);
        uint32_t cs = st_chunk_size_for(b->o, base, b->src[i].name);
        char *path = st_printf("%s/%s", b->src_dir, b->src[i].name);
        rc = path ? st_chunk_estimate(path, cs, &chunks, &data) : -ENOMEM;
        free(path);
    }
    if (!rc && (chunks > ST_MAX_CHUNKS || data > ST_MAX_DATA_CHUNKS))
        rc = st_fail(E2BIG,
                     "%s: %" PRIu64 " chunks, %" PRIu64 " of them data; a layer holds at most "
                     "%llu chunks, %llu of them data (use a larger --chunk-size)",
                     b->src_dir, chunks, data, (unsigned long long)ST_MAX_CHUNKS,
                     (unsigned long long)ST_MAX_DATA_CHUNKS);
    return rc;
}

/* A base's seals, if it has them: chunks reused from it unread take their
 * seal from there (a layer made before seals has none, so the chunker reads
 * those chunks instead). */
static int load_base_seals(store *st, const store_layer *base, st_seals **out)
{
    char *dir = st_layer_dir(st, &base->id);
    int rc = dir ? st_seals_load(dir, base, out) : -ENOMEM;
    free(dir);
    if (rc == -ENOENT || rc == -EINVAL)
        rc = 0; /* none to trust: read instead (fsck reports damaged seals) */
    return rc;
}

/* Plan: what to version, within bounds, and the bases' seals. */
static int plan(build *b)
{
    int rc = st_check_chunk_sizes(b->o);
    if (!rc)
        rc = scan_bundle(b);
    if (!rc)
        rc = check_bounds(b);
    if (!rc && b->parent)
        rc = load_base_seals(b->st, b->parent, &b->parent_seals);
    if (!rc && b->extra && b->extra->state_base)
        rc = load_base_seals(b->st, b->extra->state_base, &b->state_seals);
    return rc;
}

/* ---------- copy and chunk ---------- */

/* The work directory under tmp/, and room for what is built in it. */
static int make_work_dir(build *b)
{
    if (!(b->seals = st_seals_new(b->nsrc)))
        return -ENOMEM;
    int rc = st_tmpdir_make(b->st, b->parent ? "commit" : "import", &b->tmp);
    if (rc)
        return rc;
    if (!(b->bundle = st_printf("%s/bundle", b->tmp.path)) || mkdir(b->bundle, 0755) < 0)
        return b->bundle ? st_fail_errno(errno, "%s", b->bundle) : -ENOMEM;
    b->l.files = calloc(b->nsrc ? b->nsrc : 1, sizeof *b->l.files);
    return b->l.files ? 0 : -ENOMEM;
}

static uint64_t added_bytes(const store_file *f, const store_file *base)
{
    uint64_t total = 0;
    for (size_t k = 0; k < f->ndata; k++) {
        const store_chunk *ch = &f->data[k];
        const store_chunk *was = base ? store_file_chunk(base, ch->index) : NULL;
        if (!was || memcmp(was->digest, ch->digest, 32))
            total += store_chunk_len(f, ch->index);
    }
    return total;
}

/* One file on its way into the layer. */
typedef struct {
    const src_file *src;
    const store_file *base; /* what it is chunked against, or NULL */
    const store_layer *bl;  /* the layer holding base */
    uint32_t chunk_size;
    char *from, *to, *base_path;
    st_prehash *ahead;      /* hashed ahead, or NULL */
    int fd;                 /* to, open */
} file_job;

/* Copy (clone) the file into the work directory and open the copy. */
static int copy_in(build *b, file_job *j)
{
    clone_method how = CLONE_REFLINK;
    int rc = 0;
    /* hashed ahead (new in this layer): copied from the file hashed */
    j->ahead = j->base ? NULL : ahead_for(b->extra, j->src->name);
    if (j->ahead && !st_prehash_lease(j->ahead))
        j->ahead = NULL; /* a writer has it open still: hash the copy */
    if (!j->from || !j->to || (j->base && !j->base_path))
        rc = -ENOMEM;
    else if ((rc = j->ahead ? st_prehash_copy(j->ahead, j->to, 0644, &how)
                            : clone_path(j->from, j->to, 0644, &how)))
        rc = st_fail_errno(rc, "copying %s into the store", j->from);
    else if ((j->fd = open(j->to, O_RDWR | O_CLOEXEC)) < 0)
        rc = st_fail_errno(errno, "%s", j->to);
    if (!rc && how != CLONE_REFLINK)
        b->res->reflinked = 0;
    return rc;
}

/* Chunk the copy (from the hashes made ahead where they hold), then make
 * it read-only and durable. */
static int chunk_in(build *b, file_job *j)
{
    int base_fd = j->base_path ? open(j->base_path, O_RDONLY | O_CLOEXEC) : -1;
    size_t fi = b->l.nfiles;
    store_file *f = &b->l.files[b->l.nfiles++];
    f->name = strdup(j->src->name);
    f->mode = j->src->mode;
    st_chunk_stats stats = {0};
    st_chunk_base cb = {base_fd, j->base, j->bl == b->parent ? b->parent_seals : b->state_seals,
                        j->base ? (size_t)(j->base - j->bl->files) : 0};
    int rc = 0, used = 0; /* 1: chunked from the hashes made ahead */
    if (!f->name)
        rc = -ENOMEM;
    else if (j->ahead)
        used = st_prehash_use(j->ahead, j->from, j->fd, j->chunk_size, f, b->seals, fi, &stats);
    if (used < 0)
        rc = used;
    else if (!rc && !used)
        rc = st_chunk_file(j->fd, j->from, j->chunk_size, &cb, f, b->seals, fi, &stats,
                           b->o->progress, b->o->progress_ctx);
    b->res->bytes_read += stats.bytes_read;
    b->res->chunks_reused += stats.chunks_reused;
    if (!rc) {
        b->l.bytes_added += added_bytes(f, j->base);
        int e = fchmod(j->fd, 0444) < 0 ? -errno : file_fsync_fd(j->fd);
        if (e)
            rc = st_fail_errno(-e, "%s", j->to);
    }
    if (base_fd >= 0)
        close(base_fd);
    return rc;
}

static int copy_and_chunk_file(build *b, const src_file *src)
{
    file_job j = {.src = src, .fd = -1};
    j.base = file_base(b->parent, b->extra, src->name, &j.bl);
    j.chunk_size = st_chunk_size_for(b->o, j.base, src->name);
    j.from = st_printf("%s/%s", b->src_dir, src->name);
    j.to = st_printf("%s/%s", b->bundle, src->name);
    j.base_path = j.base ? store_layer_file_path(b->st, &j.bl->id, src->name) : NULL;
    int rc = copy_in(b, &j);
    crash_point();
    if (!rc)
        rc = chunk_in(b, &j);
    if (j.fd >= 0)
        close(j.fd);
    free(j.from);
    free(j.to);
    free(j.base_path);
    return rc;
}

static int copy_and_chunk(build *b)
{
    int rc = make_work_dir(b);
    if (!rc)
        b->res->reflinked = 1;
    for (size_t i = 0; !rc && i < b->nsrc; i++) {
        if (!(rc = copy_and_chunk_file(b, &b->src[i])))
            crash_point();
    }
    return rc;
}

/* ---------- write the manifest ---------- */

static int write_plain(const char *path, const sbuf *b)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
    if (fd < 0)
        return -errno;
    size_t at = 0;
    int rc = 0;
    while (at < b->len) {
        ssize_t w = write(fd, b->data + at, b->len - at);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        at += (size_t)w;
    }
    if (!rc)
        rc = file_fsync_fd(fd);
    close(fd);
    return rc;
}

/* The layer's manifest and info, and so its id. */
static int describe(build *b)
{
    store_layer *l = &b->l;
    if (b->parent) {
        l->has_parent = 1;
        l->parent = b->parent->id;
    }
    l->bindings = (store_binding *)b->o->bindings;
    l->nbindings = b->o->nbindings;
    l->created = (int64_t)time(NULL);
    l->message = (char *)(b->o->message ? b->o->message : "");
    for (size_t i = 1; i < l->nbindings; i++)
        if (strcmp(l->bindings[i - 1].key, l->bindings[i].key) >= 0)
            return st_fail(EINVAL, "saved-state bindings must be sorted and unique");
    int rc = st_manifest_format(l, &b->manifest);
    if (!rc)
        rc = st_info_format(l, &b->info);
    if (rc)
        return rc;
    unsigned char digest[32];
    st_sha256(b->manifest.data, b->manifest.len, digest);
    hex_encode(digest, 32, b->res->id.hex);
    b->res->bytes_added = l->bytes_added;
    return 0;
}

/* Manifest, info and seals into the work directory, all durable. */
static int write_manifest(build *b)
{
    int rc = describe(b);
    if (rc)
        return rc;
    const char *dir = b->tmp.path;
    char *mpath = st_printf("%s/manifest", dir), *ipath = st_printf("%s/info", dir);
    if (!mpath || !ipath)
        rc = -ENOMEM;
    else if ((rc = write_plain(mpath, &b->manifest)) || (rc = write_plain(ipath, &b->info)))
        rc = st_fail_errno(rc, "%s", dir);
    else if ((rc = st_seals_write(b->seals, &b->l, &b->res->id, dir)))
        ; /* its message is set */
    else if ((rc = file_fsync_path(b->bundle)) || (rc = file_fsync_path(dir)))
        rc = st_fail_errno(rc, "%s", dir);
    free(mpath);
    free(ipath);
    if (!rc)
        crash_point();
    return rc;
}

/* ---------- publish ---------- */

/* What a commit changes besides the layer, in this order: the unreachable
 * list (a moved tag's old layer starts its grace period), the clone's
 * record, the tag, the clone's marker. NULL where nothing changes. */
enum { STEP_UNREACHABLE, STEP_RECORD, STEP_TAG, STEP_MARKER, NSTEPS };

static int commit_steps(build *b, char *paths[NSTEPS], char *texts[NSTEPS])
{
    store *st = b->st;
    const store_id *id = &b->res->id;
    const st_build_extra *x = b->extra;
    const char *tag = b->o->tag;
    int rc = 0;
    store_id old;
    if (x && x->instance_dir) {
        paths[STEP_RECORD] = st_record_path(st, x->key);
        texts[STEP_RECORD] = st_record_text(x->instance_dir, id);
        paths[STEP_MARKER] = st_printf("%s/%s", x->instance_dir, STORE_INSTANCE_MARKER);
        texts[STEP_MARKER] = st_marker_text(st, id, x->key);
        rc = !paths[STEP_RECORD] || !texts[STEP_RECORD] || !paths[STEP_MARKER] ||
                     !texts[STEP_MARKER] ? -ENOMEM : 0;
    }
    if (!rc && tag) {
        paths[STEP_TAG] = st_tag_path(st, tag);
        texts[STEP_TAG] = st_printf("%s\n", id->hex);
        rc = !paths[STEP_TAG] || !texts[STEP_TAG] ? -ENOMEM : rc;
        if (!rc && st_read_tag(st, tag, &old) == 0 && strcmp(old.hex, id->hex) &&
            !(rc = st_unreachable_stamped(st, &old, &texts[STEP_UNREACHABLE])) &&
            !(paths[STEP_UNREACHABLE] = st_printf("%s/unreachable", st->home)))
            rc = -ENOMEM;
    }
    return rc;
}

/* The layer (unless it existed) and what goes with it, as one. */
static int publish_all(build *b, const char *layer_dir)
{
    static const char *const points[NSTEPS] = {"commit-unreachable", "commit-record",
                                               "commit-tag", "commit-marker"};
    char *paths[NSTEPS] = {NULL}, *texts[NSTEPS] = {NULL};
    st_publish tx;
    st_publish_begin(&tx, b->st);
    int rc = commit_steps(b, paths, texts);
    for (int i = 0; i < NSTEPS && !rc; i++)
        rc = st_publish_stage(&tx, paths[i], texts[i], points[i]);
    if (!rc && !b->res->existed)
        st_publish_layer(&tx, b->tmp.path, layer_dir);
    if (!rc)
        rc = st_publish_run(&tx);
    st_publish_end(&tx);
    for (int i = 0; i < NSTEPS; i++) {
        free(paths[i]);
        free(texts[i]);
    }
    return rc;
}

/* Under the exclusive lock: the parent must still be there (the upgrade
 * from shared may have let a gc in), then publish. */
static int publish(build *b, st_lock *lock)
{
    int rc = st_lock_upgrade(lock, b->st);
    if (rc)
        return rc;
    if (b->parent && !st_layer_exists(b->st, &b->parent->id))
        return st_fail(ENOENT, "layer %s disappeared during the commit", b->parent->id.hex);
    char *layer_dir = st_layer_dir(b->st, &b->res->id);
    if (!layer_dir)
        return -ENOMEM;
    b->res->existed = st_layer_exists(b->st, &b->res->id);
    rc = publish_all(b, layer_dir);
    free(layer_dir);
    return rc;
}

static void build_free(build *b)
{
    st_tmpdir_drop(&b->tmp);
    for (size_t i = 0; i < b->l.nfiles; i++) {
        free(b->l.files[i].name);
        free(b->l.files[i].data);
    }
    free(b->l.files);
    free(b->manifest.data);
    free(b->info.data);
    free(b->bundle);
    free_src(b->src, b->nsrc);
    st_seals_free(b->seals);
    st_seals_free(b->parent_seals);
    st_seals_free(b->state_seals);
}

int st_build_layer(store *st, const char *src_dir, const store_layer *parent,
                   const store_commit_opts *o, const st_build_extra *extra, st_lock *lock,
                   store_commit_result *res)
{
    build b = {.st = st, .src_dir = src_dir, .parent = parent, .o = o, .extra = extra,
               .res = res, .tmp = {.lock_fd = -1}};
    int rc = plan(&b);
    if (!rc)
        rc = copy_and_chunk(&b);
    if (!rc)
        rc = write_manifest(&b);
    if (!rc)
        rc = publish(&b, lock);
    st_lock_release(lock);
    build_free(&b);
    return rc;
}
