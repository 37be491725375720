/* strata: the command line. It parses, calls the store, and prints. */
#define _GNU_SOURCE
#include "../boot/boot.h"
#include "../store/store.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage;
    const char *help;
} verb;

static const verb *find_verb(const char *name);

/* ---------- output helpers ---------- */

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("strata: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static int store_failed(void)
{
    return fail("%s", store_error());
}

static void json_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", out);
        else if (*p < 0x20)
            fprintf(out, "\\u%04x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static const char *date_of(int64_t t, char *buf, size_t n);

/* {"id":..,"parent":..,"created":..,"message":..,"bytes_added":N  (left open) */
static void json_layer_head(const store_layer *l)
{
    char d[32];
    printf("{\"id\":\"%s\",\"parent\":", l->id.hex);
    if (l->has_parent)
        printf("\"%s\"", l->parent.hex);
    else
        printf("null");
    printf(",\"created\":\"%s\",\"message\":", date_of(l->created, d, sizeof d));
    json_str(stdout, l->message);
    printf(",\"bytes_added\":%" PRIu64, l->bytes_added);
}

static const char *human(uint64_t bytes, char *buf, size_t n)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 4)
        v /= 1024, u++;
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", v, units[u]);
    return buf;
}

static const char *date_of(int64_t t, char *buf, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

typedef struct {
    int tty;
    time_t last;
    char what[256];
} progress_state;

static void progress(void *ctx, const char *what, uint64_t done, uint64_t total)
{
    progress_state *p = ctx;
    if (!p->tty || !total)
        return;
    time_t now = time(NULL);
    if (now == p->last && done < total && !strcmp(p->what, what))
        return;
    p->last = now;
    snprintf(p->what, sizeof p->what, "%s", what);
    char a[32], b[32];
    fprintf(stderr, "\r\033[K%s: %s of %s (%d%%)", what, human(done, a, sizeof a),
            human(total, b, sizeof b), (int)(done * 100 / total));
    if (done >= total)
        fputc('\n', stderr);
}

static void note(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "strata: %s\n", line);
}

/* ---------- argument parsing ---------- */

typedef struct {
    const char *name; /* "--json" */
    int takes_value;
    const char **value;
    int *flag;
} opt;

/* Split argv into options (any position) and positionals. */
static int parse(int argc, char **argv, const opt *opts, size_t nopts, char **pos, int maxpos,
                 int *npos, const char *verb_name)
{
    *npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] == '-' && a[1]) {
            if (!strcmp(a, "--")) {
                for (i++; i < argc; i++) {
                    if (*npos == maxpos)
                        return fail("%s: unexpected argument '%s' (see 'strata help %s')",
                                    verb_name, argv[i], verb_name);
                    pos[(*npos)++] = argv[i];
                }
                break;
            }
            size_t k;
            for (k = 0; k < nopts; k++)
                if (!strcmp(a, opts[k].name))
                    break;
            if (k == nopts)
                return fail("%s: unknown option '%s' (see 'strata help %s')", verb_name, a,
                            verb_name);
            if (opts[k].takes_value) {
                if (i + 1 >= argc)
                    return fail("%s: %s needs a value", verb_name, a);
                *opts[k].value = argv[++i];
            } else {
                *opts[k].flag = 1;
            }
        } else {
            if (*npos == maxpos)
                return fail("%s: unexpected argument '%s' (see 'strata help %s')", verb_name, a,
                            verb_name);
            pos[(*npos)++] = argv[i];
        }
    }
    return 0;
}

/* the common case: a verb whose only option is --json */
static int parse_json_only(int argc, char **argv, char **pos, int maxpos, int *npos, int *json,
                           const char *verb_name)
{
    opt opts[] = {{"--json", 0, NULL, json}};
    return parse(argc, argv, opts, 1, pos, maxpos, npos, verb_name);
}

static int need(int npos, int min, const char *verb_name)
{
    if (npos >= min)
        return 0;
    const verb *v = find_verb(verb_name);
    return fail("usage: strata %s", v ? v->usage : verb_name);
}

static int open_store(store **st)
{
    if (store_open(NULL, st))
        return store_failed();
    return 0;
}

static int resolve(store *st, const char *ref, store_id *id)
{
    return store_resolve(st, ref, id) ? store_failed() : 0;
}

/* ---------- verbs ---------- */

static int parse_chunk_size(const char *s, uint32_t *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*end == 'K' || *end == 'k')
        v <<= 10, end++;
    else if (*end == 'M' || *end == 'm')
        v <<= 20, end++;
    if (*end || v < 4096 || v > (64ul << 20) || (v & (v - 1)))
        return fail("--chunk-size %s: a power of two from 4K to 64M", s);
    *out = (uint32_t)v;
    return 0;
}

static void print_commit(const store_commit_result *r, int verbose)
{
    char a[32], b[32];
    if (verbose)
        fprintf(stderr, "strata: read %s; %" PRIu64 " chunks known unchanged from extent maps; %s added\n",
                human(r->bytes_read, a, sizeof a), r->chunks_reused, human(r->bytes_added, b, sizeof b));
    if (r->existed)
        fprintf(stderr, "strata: the same content is already layer %.12s\n", r->id.hex);
    if (!r->reflinked)
        fprintf(stderr, "strata: note: this filesystem can't share blocks; the layer holds a "
                        "full copy of its data\n");
    printf("%s\n", r->id.hex);
}

static int cmd_import(int argc, char **argv)
{
    const char *chunk = NULL;
    int restore = 0, verbose = 0;
    opt opts[] = {{"--include-restore-image", 0, NULL, &restore},
                  {"--chunk-size", 1, &chunk, NULL}, {"-v", 0, NULL, &verbose}};
    char *pos[2];
    int n;
    if (parse(argc, argv, opts, 3, pos, 2, &n, "import") || need(n, 1, "import"))
        return 1;
    progress_state ps = {.tty = isatty(2)};
    store_commit_opts o = {.tag = n > 1 ? pos[1] : NULL, .include_restore_image = restore,
                           .progress = progress, .progress_ctx = &ps, .note = note,
                           .message = "import"};
    if (chunk && parse_chunk_size(chunk, &o.chunk_size))
        return 1;
    store *st;
    if (open_store(&st))
        return 1;
    store_commit_result r;
    int rc = store_import(st, pos[0], &o, &r);
    store_close(st);
    if (rc)
        return store_failed();
    print_commit(&r, verbose);
    return 0;
}

static int cmd_commit(int argc, char **argv)
{
    const char *msg = NULL, *tag = NULL;
    int verbose = 0;
    opt opts[] = {{"-m", 1, &msg, NULL}, {"-t", 1, &tag, NULL}, {"-v", 0, NULL, &verbose}};
    char *pos[1];
    int n;
    if (parse(argc, argv, opts, 3, pos, 1, &n, "commit") || need(n, 1, "commit"))
        return 1;
    progress_state ps = {.tty = isatty(2)};
    store_commit_opts o = {.tag = tag, .message = msg, .progress = progress, .progress_ctx = &ps,
                           .note = note};
    store *st;
    if (open_store(&st))
        return 1;
    store_commit_result r;
    int rc = store_commit(st, pos[0], &o, &r);
    store_close(st);
    if (rc)
        return store_failed();
    print_commit(&r, verbose);
    return 0;
}

static int cmd_clone(int argc, char **argv)
{
    char *pos[2];
    int n;
    if (parse(argc, argv, NULL, 0, pos, 2, &n, "clone") || need(n, 2, "clone"))
        return 1;
    store *st;
    if (open_store(&st))
        return 1;
    int reflinked = 0;
    int rc = store_clone(st, pos[0], pos[1], &reflinked);
    store_close(st);
    if (rc)
        return store_failed();
    if (!reflinked)
        fprintf(stderr, "strata: note: copied (this filesystem can't share blocks); holes kept\n");
    return 0;
}

static int cmd_log(int argc, char **argv)
{
    int json = 0;
    char *pos[1];
    int n;
    if (parse_json_only(argc, argv, pos, 1, &n, &json, "log") || need(n, 1, "log"))
        return 1;
    store *st;
    store_id id;
    if (open_store(&st))
        return 1;
    if (resolve(st, pos[0], &id)) {
        store_close(st);
        return 1;
    }
    int rc = 0, first = 1;
    if (json)
        printf("[");
    for (;;) {
        store_layer *l;
        if (store_layer_load(st, &id, &l)) {
            rc = store_failed();
            break;
        }
        char d[32], b[32];
        if (json) {
            printf("%s", first ? "" : ",");
            json_layer_head(l);
            printf("}");
        } else {
            printf("%.12s  %s  %10s  %s\n", l->id.hex, date_of(l->created, d, sizeof d),
                   human(l->bytes_added, b, sizeof b), l->message);
        }
        first = 0;
        int more = l->has_parent;
        id = l->parent;
        store_layer_free(l);
        if (!more)
            break;
    }
    if (json)
        printf("]\n");
    store_close(st);
    return rc;
}

static int cmd_diff(int argc, char **argv)
{
    int json = 0;
    char *pos[2];
    int n;
    if (parse_json_only(argc, argv, pos, 2, &n, &json, "diff") || need(n, 2, "diff"))
        return 1;
    store *st;
    store_id a, b;
    if (open_store(&st))
        return 1;
    store_diff_entry *d = NULL;
    size_t nd = 0;
    int rc = resolve(st, pos[0], &a) || resolve(st, pos[1], &b);
    if (!rc && store_diff(st, &a, &b, &d, &nd))
        rc = store_failed();
    store_close(st);
    if (rc)
        return 1;
    if (json)
        printf("[");
    for (size_t i = 0; i < nd; i++) {
        const store_diff_entry *e = &d[i];
        const char *state = !e->in_a ? "added" : !e->in_b ? "removed"
                                   : e->chunks_changed ? "modified" : "same";
        if (json) {
            printf("%s{\"file\":", i ? "," : "");
            json_str(stdout, e->name);
            printf(",\"state\":\"%s\",\"chunks_changed\":%" PRIu64 ",\"bytes_changed\":%" PRIu64
                   ",\"size_a\":%" PRIu64 ",\"size_b\":%" PRIu64 "}",
                   state, e->chunks_changed, e->bytes_changed, e->size_a, e->size_b);
        } else if (e->chunks_changed || !e->in_a || !e->in_b) {
            char h[32];
            printf("%-9s %-24s %8" PRIu64 " chunks  %10s\n", state, e->name, e->chunks_changed,
                   human(e->bytes_changed, h, sizeof h));
        }
    }
    if (json)
        printf("]\n");
    store_diff_free(d, nd);
    return 0;
}

static int cmd_ls(int argc, char **argv)
{
    int json = 0;
    char *pos[1];
    int n;
    if (parse_json_only(argc, argv, pos, 0, &n, &json, "ls"))
        return 1;
    store *st;
    if (open_store(&st))
        return 1;
    store_id *ids = NULL;
    size_t nids = 0, ntags = 0;
    store_tag_entry *tags = NULL;
    if (store_layers(st, &ids, &nids) || store_tags(st, &tags, &ntags)) {
        store_close(st);
        return store_failed();
    }
    if (json)
        printf("[");
    else
        printf("%-12s  %-20s  %10s  %-24s  %s\n", "LAYER", "CREATED", "SIZE", "TAGS", "MESSAGE");
    int rc = 0;
    for (size_t i = 0; i < nids; i++) {
        store_layer *l;
        if (store_layer_load(st, &ids[i], &l)) {
            rc = store_failed();
            continue;
        }
        uint64_t size = 0;
        for (size_t f = 0; f < l->nfiles; f++)
            size += l->files[f].size;
        char d[32], h[32], tagline[512] = "";
        size_t at = 0;
        for (size_t t = 0; t < ntags; t++)
            if (!strcmp(tags[t].id.hex, ids[i].hex) && at < sizeof tagline)
                at += (size_t)snprintf(tagline + at, sizeof tagline - at, "%s%s", at ? "," : "",
                                       tags[t].name);
        if (json) {
            printf("%s", i ? "," : "");
            json_layer_head(l);
            printf(",\"size\":%" PRIu64 ",\"tags\":[", size);
            int k = 0;
            for (size_t t = 0; t < ntags; t++)
                if (!strcmp(tags[t].id.hex, ids[i].hex)) {
                    printf("%s", k++ ? "," : "");
                    json_str(stdout, tags[t].name);
                }
            printf("]}");
        } else {
            printf("%.12s  %-20s  %10s  %-24s  %s\n", l->id.hex, date_of(l->created, d, sizeof d),
                   human(size, h, sizeof h), at ? tagline : "-", l->message);
        }
        store_layer_free(l);
    }
    if (json)
        printf("]\n");
    free(ids);
    store_tags_free(tags, ntags);
    store_close(st);
    return rc;
}

static int cmd_inspect(int argc, char **argv)
{
    int json = 0;
    char *pos[1];
    int n;
    if (parse_json_only(argc, argv, pos, 1, &n, &json, "inspect") || need(n, 1, "inspect"))
        return 1;
    store *st;
    store_id id;
    store_layer *l = NULL;
    store_identity ident;
    if (open_store(&st))
        return 1;
    int rc = resolve(st, pos[0], &id);
    if (!rc && store_layer_load(st, &id, &l))
        rc = store_failed();
    if (!rc && store_layer_identity(st, &id, &ident))
        rc = store_failed();
    store_close(st);
    if (rc) {
        store_layer_free(l);
        return 1;
    }
    char d[32], h[32];
    if (json) {
        json_layer_head(l);
        printf(",\"files\":[");
    } else {
        printf("layer       %s\nparent      %s\ncreated     %s\nmessage     %s\nbytes added "
               "%s\n",
               l->id.hex, l->has_parent ? l->parent.hex : "-", date_of(l->created, d, sizeof d),
               l->message, human(l->bytes_added, h, sizeof h));
        printf("files:\n");
    }
    for (size_t i = 0; i < l->nfiles; i++) {
        const store_file *f = &l->files[i];
        uint64_t data = 0, stored = 0;
        for (size_t c = 0; c < f->nchunks; c++)
            if (f->chunks[c].data) {
                data++;
                uint64_t off = (uint64_t)c * f->chunk_size;
                stored += f->size - off < f->chunk_size ? f->size - off : f->chunk_size;
            }
        if (json) {
            printf("%s{\"name\":", i ? "," : "");
            json_str(stdout, f->name);
            printf(",\"size\":%" PRIu64 ",\"mode\":\"%04o\",\"chunk_size\":%" PRIu32
                   ",\"chunks\":%zu,\"data_chunks\":%" PRIu64 ",\"data_bytes\":%" PRIu64 "}",
                   f->size, (unsigned)f->mode, f->chunk_size, f->nchunks, data, stored);
        } else {
            printf("  %-24s %14" PRIu64 " bytes  %04o  %zu chunks of %" PRIu32 ", %" PRIu64
                   " with data (%s)\n",
                   f->name, f->size, (unsigned)f->mode, f->nchunks, f->chunk_size, data,
                   human(stored, h, sizeof h));
        }
    }
    if (json) {
        printf("],\"hardware_model\":");
        if (ident.has_hardware_model)
            printf("{\"DataRepresentationVersion\":%" PRId64 ",\"PlatformVersion\":%" PRId64
                   ",\"MinimumSupportedOS\":\"%s\"}",
                   ident.data_representation_version, ident.platform_version,
                   ident.minimum_supported_os);
        else
            printf("null");
        printf(",\"machine_identifier\":");
        if (ident.has_machine_identifier)
            printf("{\"ECID\":%" PRIu64 "}", ident.ecid);
        else
            printf("null");
        printf(",\"saved_state\":{");
        for (size_t i = 0; i < l->nbindings; i++) {
            printf("%s", i ? "," : "");
            json_str(stdout, l->bindings[i].key);
            putchar(':');
            json_str(stdout, l->bindings[i].value);
        }
        printf("}}\n");
    } else {
        if (ident.has_hardware_model)
            printf("hardware model: PlatformVersion %" PRId64 ", MinimumSupportedOS %s, "
                   "DataRepresentationVersion %" PRId64 "\n",
                   ident.platform_version, ident.minimum_supported_os,
                   ident.data_representation_version);
        if (ident.has_machine_identifier)
            printf("machine identifier: ECID %" PRIu64 "\n", ident.ecid);
        if (l->nbindings) {
            printf("saved state bound to:\n");
            for (size_t i = 0; i < l->nbindings; i++)
                printf("  %-16s %s\n", l->bindings[i].key, l->bindings[i].value);
        }
    }
    store_layer_free(l);
    return 0;
}

static int cmd_tag(int argc, char **argv)
{
    char *pos[2];
    int n;
    if (parse(argc, argv, NULL, 0, pos, 2, &n, "tag") || need(n, 2, "tag"))
        return 1;
    store *st;
    if (open_store(&st))
        return 1;
    int rc = store_tag(st, pos[0], pos[1]);
    store_close(st);
    return rc ? store_failed() : 0;
}

static int cmd_untag(int argc, char **argv)
{
    char *pos[1];
    int n;
    if (parse(argc, argv, NULL, 0, pos, 1, &n, "untag") || need(n, 1, "untag"))
        return 1;
    store *st;
    if (open_store(&st))
        return 1;
    int rc = store_untag(st, pos[0]);
    store_close(st);
    return rc ? store_failed() : 0;
}

static int cmd_df(int argc, char **argv)
{
    int json = 0;
    char *pos[1];
    int n;
    if (parse_json_only(argc, argv, pos, 0, &n, &json, "df"))
        return 1;
    store *st;
    if (open_store(&st))
        return 1;
    store_usage u;
    int rc = store_df(st, &u);
    char *home = strdup(store_home(st));
    store_close(st);
    if (rc) {
        free(home);
        return store_failed();
    }
    if (json) {
        printf("{\"store\":");
        json_str(stdout, home);
        printf(",\"layers\":%zu,\"tags\":%zu,\"instances\":%zu,\"apparent_bytes\":%" PRIu64
               ",\"unique_bytes\":%" PRIu64 ",\"allocated_bytes\":%" PRIu64
               ",\"volume_free_bytes\":%" PRIu64 "}\n",
               u.layers, u.tags, u.instances, u.apparent_bytes, u.unique_bytes,
               u.allocated_bytes, u.volume_free);
    } else {
        char a[32], b[32], c[32], d[32];
        printf("store       %s\nlayers      %zu (%zu tags, %zu live clones)\napparent    %s\n"
               "unique data %s\nallocated   %s (shared blocks counted once per file)\n"
               "free        %s\n",
               home, u.layers, u.tags, u.instances, human(u.apparent_bytes, a, sizeof a),
               human(u.unique_bytes, b, sizeof b), human(u.allocated_bytes, c, sizeof c),
               human(u.volume_free, d, sizeof d));
    }
    free(home);
    return 0;
}

typedef struct {
    int json;
    int count;
} fsck_out;

static void fsck_line(void *ctx, const char *line)
{
    fsck_out *o = ctx;
    if (o->json) {
        printf("%s", o->count++ ? "," : "");
        json_str(stdout, line);
    } else {
        printf("%s\n", line);
    }
}

static int cmd_fsck(int argc, char **argv)
{
    int quick = 0, json = 0;
    opt opts[] = {{"--quick", 0, NULL, &quick}, {"--json", 0, NULL, &json}};
    char *pos[1];
    int n;
    if (parse(argc, argv, opts, 2, pos, 0, &n, "fsck"))
        return 1;
    store *st;
    if (open_store(&st))
        return 1;
    fsck_out o = {json, 0};
    if (json)
        printf("{\"lines\":[");
    int problems = store_fsck(st, quick, fsck_line, &o);
    store_close(st);
    if (json)
        printf("],\"problems\":%d}\n", problems < 0 ? -1 : problems);
    if (problems < 0)
        return store_failed();
    if (problems > 0)
        return fail("fsck found %d problem%s", problems, problems == 1 ? "" : "s");
    return 0;
}

static int cmd_gc(int argc, char **argv)
{
    int json = 0;
    char *pos[1];
    int n;
    if (parse_json_only(argc, argv, pos, 0, &n, &json, "gc"))
        return 1;
    store *st;
    if (open_store(&st))
        return 1;
    store_gc_result r;
    int rc = store_gc(st, &r);
    store_close(st);
    if (rc)
        return store_failed();
    if (json) {
        printf("{\"layers_removed\":%zu,\"tmp_removed\":%zu,\"instances_forgotten\":%zu,"
               "\"bytes_freed\":%" PRIu64 "}\n",
               r.layers_removed, r.tmp_removed, r.instances_forgotten, r.bytes_freed);
    } else {
        char h[32];
        printf("removed %zu layer%s, %zu stale temporary item%s, %zu record%s of deleted "
               "clones; freed %s\n",
               r.layers_removed, r.layers_removed == 1 ? "" : "s", r.tmp_removed,
               r.tmp_removed == 1 ? "" : "s", r.instances_forgotten,
               r.instances_forgotten == 1 ? "" : "s", human(r.bytes_freed, h, sizeof h));
    }
    return 0;
}

static int boot_failed(void)
{
    return fail("%s", boot_error());
}

static int parse_uint(const char *flag, const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || !*s || v == 0 || v > max)
        return fail("%s %s: a whole number from 1 to %lu", flag, s, max);
    *out = v;
    return 0;
}

/* "4096" (MiB), "512M", "4G" */
static int parse_memory(const char *s, uint64_t *mib)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end == 'G' || *end == 'g')
        v *= 1024, end++;
    else if (*end == 'M' || *end == 'm')
        end++;
    if (errno || *end || !*s || v < 64 || v > (1ull << 20))
        return fail("--memory %s: MiB from 64 to 1048576 (or with a G suffix)", s);
    *mib = v;
    return 0;
}

static void started(void *ctx, const char *name)
{
    (void)ctx;
    fprintf(stderr, "strata: instance %s is running (strata suspend %s / strata stop %s)\n", name,
            name, name);
}

static int cmd_run(int argc, char **argv)
{
    const char *name = NULL, *cpus = NULL, *mem = NULL, *driver = NULL;
    int cold = 0, resume = 0, ephemeral = 0, console = 0, new_id = 0, dup = 0, fallback = 0;
    opt opts[] = {{"--name", 1, &name, NULL},         {"--cpus", 1, &cpus, NULL},
                  {"--memory", 1, &mem, NULL},        {"--driver", 1, &driver, NULL},
                  {"--cold", 0, NULL, &cold},         {"--resume", 0, NULL, &resume},
                  {"--ephemeral", 0, NULL, &ephemeral}, {"--console", 0, NULL, &console},
                  {"--new-identity", 0, NULL, &new_id}, {"--allow-duplicate", 0, NULL, &dup},
                  {"--fallback-cold", 0, NULL, &fallback}};
    char *pos[1];
    int n;
    if (parse(argc, argv, opts, sizeof opts / sizeof *opts, pos, 1, &n, "run") || need(n, 1, "run"))
        return 1;
    boot_run_opts o = {.target = pos[0], .name = name, .driver = driver, .cold = cold,
                       .resume = resume, .ephemeral = ephemeral, .console = console,
                       .new_identity = new_id, .allow_duplicate = dup, .fallback_cold = fallback,
                       .note = note, .started = started};
    unsigned long c = 0;
    if (cpus && parse_uint("--cpus", cpus, 64, &c))
        return 1;
    o.cpus = (unsigned)c;
    if (mem && parse_memory(mem, &o.memory_mib))
        return 1;
    store *st;
    if (open_store(&st))
        return 1;
    int rc = boot_run(st, &o);
    store_close(st);
    return rc ? boot_failed() : 0;
}

static int cmd_suspend(int argc, char **argv)
{
    const char *tag = NULL, *msg = NULL;
    opt opts[] = {{"-t", 1, &tag, NULL}, {"-m", 1, &msg, NULL}};
    char *pos[1];
    int n;
    if (parse(argc, argv, opts, 2, pos, 1, &n, "suspend") || need(n, 1, "suspend"))
        return 1;
    store *st;
    if (open_store(&st))
        return 1;
    store_id id;
    int rc = boot_suspend(st, pos[0], tag, msg, &id);
    store_close(st);
    if (rc)
        return boot_failed();
    printf("%s\n", id.hex);
    return 0;
}

static int cmd_stop(int argc, char **argv)
{
    const char *timeout = NULL;
    int force = 0;
    opt opts[] = {{"--timeout", 1, &timeout, NULL}, {"--force", 0, NULL, &force}};
    char *pos[1];
    int n;
    if (parse(argc, argv, opts, 2, pos, 1, &n, "stop") || need(n, 1, "stop"))
        return 1;
    unsigned long t = 30;
    if (timeout && parse_uint("--timeout", timeout, 3600, &t))
        return 1;
    store *st;
    if (open_store(&st))
        return 1;
    int rc = boot_stop(st, pos[0], force ? 0 : (int)t);
    store_close(st);
    return rc ? boot_failed() : 0;
}

static int cmd_ps(int argc, char **argv)
{
    int json = 0;
    char *pos[1];
    int n;
    if (parse_json_only(argc, argv, pos, 0, &n, &json, "ps"))
        return 1;
    store *st;
    if (open_store(&st))
        return 1;
    boot_instance *v;
    size_t nv;
    int rc = boot_ps(st, &v, &nv);
    store_close(st);
    if (rc)
        return boot_failed();
    if (json)
        printf("[");
    else
        printf("%-24s  %-12s  %-6s  %8s  %-10s  %s\n", "NAME", "LAYER", "DRIVER", "PID", "STATE", "RESUMED FROM");
    for (size_t i = 0; i < nv; i++) {
        if (json) {
            printf("%s{\"name\":", i ? "," : "");
            json_str(stdout, v[i].name);
            printf(",\"dir\":");
            json_str(stdout, v[i].dir);
            printf(",\"layer\":\"%s\",\"driver\":\"%s\",\"pid\":%d,\"vm_pid\":%d,\"state\":\"%s\","
                   "\"resumed_from\":",
                   v[i].layer, v[i].driver, v[i].pid, v[i].vm_pid, v[i].state);
            if (*v[i].resumed_from)
                printf("\"%s\"}", v[i].resumed_from);
            else
                printf("null}");
        } else {
            printf("%-24s  %.12s  %-6s  %8d  %-10s  %.12s\n", v[i].name, v[i].layer, v[i].driver,
                   v[i].pid, v[i].state, *v[i].resumed_from ? v[i].resumed_from : "-");
        }
    }
    if (json)
        printf("]\n");
    boot_ps_free(v, nv);
    return 0;
}

static int cmd_help(int argc, char **argv);

static const verb verbs[] = {
    {"import", cmd_import, "import BUNDLE [TAG] [--include-restore-image] [--chunk-size N] [-v]",
     "Ingest a VZ bundle directory as a root layer, optionally tagged. Prints the layer id.\n"
     "RestoreImage.ipsw is skipped unless --include-restore-image is given. -v tells how\n"
     "much was read and stored."},
    {"clone", cmd_clone, "clone REF DIR",
     "Make DIR a writable bundle cloned from layer REF (copy-on-write where the filesystem\n"
     "can share blocks; holes are never filled). DIR must not exist and must be on the\n"
     "store's volume. DIR/.strata records the layer it came from."},
    {"commit", cmd_commit, "commit DIR [-m MESSAGE] [-t TAG] [-v]",
     "Make a child layer of the clone DIR's layer from DIR's current files. Only chunks\n"
     "whose blocks changed since the clone are read. Prints the new layer id."},
    {"log", cmd_log, "log REF [--json]",
     "The chain of layers from REF to its root: id, date, bytes added, message."},
    {"diff", cmd_diff, "diff REF_A REF_B [--json]",
     "Per file: chunks and bytes that differ between two layers."},
    {"ls", cmd_ls, "ls [--json]", "Every layer, with its tags."},
    {"inspect", cmd_inspect, "inspect REF [--json]",
     "A layer's files, chunks, identity (HardwareModel, MachineIdentifier decoded) and\n"
     "saved-state binding."},
    {"tag", cmd_tag, "tag REF NAME",
     "Point tag NAME at layer REF (moving it if it exists). NAME is NAME or NAME:TAG:\n"
     "NAME of [a-z0-9._-] starting with a letter or digit, TAG of [A-Za-z0-9_.-] not\n"
     "starting with '.' or '-', 128 characters in all at most."},
    {"untag", cmd_untag, "untag NAME", "Remove a tag; the layer stays until gc."},
    {"df", cmd_df, "df [--json]", "What the store holds and what it costs on disk."},
    {"fsck", cmd_fsck, "fsck [--quick] [--json]",
     "Verify every manifest, ref and clone record, and re-hash every stored chunk\n"
     "(--quick: metadata and sizes only). Exits 1 if anything is wrong."},
    {"gc", cmd_gc, "gc [--json]",
     "Remove layers that no tag, existing clone, or their descendants reach, and\n"
     "abandoned temporary work. Reports what it freed."},
    {"run", cmd_run,
     "run REF|DIR [--name N] [--cpus N] [--memory MiB] [--driver vz|qemu] [--cold|--resume] "
     "[--fallback-cold] [--ephemeral] [--console] [--new-identity] [--allow-duplicate]",
     "Run a VM in a fresh instance cloned from layer REF (or in the clone directory DIR),\n"
     "and supervise it until it stops. The layer is never written. --resume restores the\n"
     "layer's saved state (checked first against this host, user, driver, configuration,\n"
     "MAC and machine identifier); --fallback-cold boots fresh if the hypervisor refuses\n"
     "it. A new instance that is not a resume gets a fresh MAC; --new-identity also a fresh\n"
     "machine identifier. --ephemeral deletes the instance when it stops. --console puts\n"
     "the serial console on this terminal; otherwise it is logged in the instance's\n"
     ".console.log. The default driver is vz on macOS, qemu elsewhere."},
    {"suspend", cmd_suspend, "suspend NAME [-t TAG] [-m MESSAGE]",
     "Pause instance NAME, save its state, and commit disk, aux storage and state as one\n"
     "layer bound to this host. The instance stops. Prints the layer id."},
    {"stop", cmd_stop, "stop NAME [--timeout SECONDS] [--force]",
     "Ask the guest to shut down, and force it off after the timeout (30 s)."},
    {"ps", cmd_ps, "ps [--json]", "Running instances: name, layer, driver, pid, state."},
    {"help", cmd_help, "help [VERB]", "Show help for a verb."},
};

static const verb *find_verb(const char *name)
{
    for (size_t i = 0; i < sizeof verbs / sizeof *verbs; i++)
        if (!strcmp(verbs[i].name, name))
            return &verbs[i];
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: strata VERB [ARGS]\n\nThe store is $STRATA_HOME, or ~/.strata.\n"
                 "A REF is a tag, a layer id or a unique id prefix.\n\nverbs:\n");
    for (size_t i = 0; i < sizeof verbs / sizeof *verbs; i++)
        fprintf(out, "  strata %s\n", verbs[i].usage);
}

static int cmd_help(int argc, char **argv)
{
    if (argc < 2) {
        usage(stdout);
        return 0;
    }
    const verb *v = find_verb(argv[1]);
    if (!v)
        return fail("help: no verb '%s'", argv[1]);
    printf("usage: strata %s\n\n%s\n", v->usage, v->help);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const verb *v = find_verb(argv[1]);
    if (!v) {
        if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
            usage(stdout);
            return 0;
        }
        return fail("unknown verb '%s' (see 'strata help')", argv[1]);
    }
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            char *h[] = {"help", argv[1]};
            return cmd_help(2, h);
        }
    return v->run(argc - 1, argv + 1);
}
