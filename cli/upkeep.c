/* Verbs that look after the store: df, fsck, gc, clones. */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cmd_df(int argc, char **argv)
{
    int json = 0;
    char *pos[1];
    int n;
    if (cli_parse_json_only(argc, argv, pos, 0, &n, &json, "df"))
        return 1;
    store *st;
    if (cli_open_store(&st))
        return 1;
    store_usage u;
    int rc = store_df(st, &u);
    char *home = strdup(store_home(st));
    store_close(st);
    if (rc) {
        free(home);
        return cli_failed(rc);
    }
    if (json) {
        rc = cli_json_print(json_pack("{s:o, s:I, s:I, s:I, s:o, s:o, s:o, s:o}", "store",
                                      cli_json_text(home), "layers", (json_int_t)u.layers, "tags",
                                      (json_int_t)u.tags, "instances", (json_int_t)u.instances,
                                      "apparent_bytes", cli_json_u64(u.apparent_bytes),
                                      "unique_bytes", cli_json_u64(u.unique_bytes),
                                      "allocated_bytes", cli_json_u64(u.allocated_bytes),
                                      "volume_free_bytes", cli_json_u64(u.volume_free)));
    } else {
        char a[32], b[32], c[32], d[32];
        printf("store       %s\nlayers      %zu (%zu tags, %zu live clones)\napparent    %s\n"
               "unique data %s\nallocated   %s (shared blocks counted once per file)\n"
               "free        %s\n",
               home, u.layers, u.tags, u.instances, cli_human(u.apparent_bytes, a, sizeof a),
               cli_human(u.unique_bytes, b, sizeof b), cli_human(u.allocated_bytes, c, sizeof c),
               cli_human(u.volume_free, d, sizeof d));
    }
    free(home);
    return rc;
}

/* one line of fsck's report: printed, or with --json kept in the array ctx */
static void fsck_line(void *ctx, const char *line)
{
    if (ctx)
        json_array_append_new(ctx, cli_json_text(line));
    else
        printf("%s\n", line);
}

static int cmd_fsck(int argc, char **argv)
{
    int quick = 0, json = 0;
    cli_opt opts[] = {{"--quick", 0, NULL, &quick}, {"--json", 0, NULL, &json}};
    char *pos[1];
    int n;
    if (cli_parse(argc, argv, opts, 2, pos, 0, &n, "fsck"))
        return 1;
    store *st;
    if (cli_open_store(&st))
        return 1;
    json_t *lines = json ? json_array() : NULL;
    int problems = store_fsck(st, quick, fsck_line, lines);
    store_close(st);
    if (json && cli_json_print(json_pack("{s:o, s:i}", "lines", lines, "problems",
                                         problems < 0 ? -1 : problems)))
        return 1;
    if (problems < 0)
        return cli_failed(problems);
    if (problems > 0)
        return cli_fail("fsck found %d problem%s", problems, problems == 1 ? "" : "s");
    return 0;
}

/* "now", "never", or N followed by s, m, h, d (the default) or w */
static int parse_age(const char *flag, const char *s, int64_t *secs)
{
    if (!strcmp(s, "now")) {
        *secs = 0;
        return 0;
    }
    if (!strcmp(s, "never")) {
        *secs = INT64_MAX;
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    int64_t unit = !*end ? 86400 : !strcmp(end, "s") ? 1 : !strcmp(end, "m") ? 60
                 : !strcmp(end, "h") ? 3600 : !strcmp(end, "d") ? 86400
                 : !strcmp(end, "w") ? 7 * 86400 : 0;
    if (end == s || *s == '-' || !unit || errno || n > (unsigned long long)(INT64_MAX / unit))
        return cli_fail("%s %s: 'now', 'never', or a number with s, m, h, d or w (14d)", flag, s);
    *secs = (int64_t)n * unit;
    return 0;
}

static int cmd_gc(int argc, char **argv)
{
    int json = 0;
    const char *prune = NULL;
    cli_opt opts[] = {{"--json", 0, NULL, &json}, {"--prune", 1, &prune, NULL}};
    char *pos[1];
    int n;
    int64_t expire = STORE_GC_PRUNE_EXPIRE;
    if (cli_parse(argc, argv, opts, 2, pos, 0, &n, "gc") ||
        (prune && parse_age("--prune", prune, &expire)))
        return 1;
    store *st;
    if (cli_open_store(&st))
        return 1;
    store_gc_result r;
    int rc = store_gc_expire(st, expire, &r);
    store_close(st);
    if (rc)
        return cli_failed(rc);
    if (json)
        return cli_json_print(json_pack("{s:I, s:I, s:I, s:o, s:I, s:I, s:I}", "layers_removed",
                                        (json_int_t)r.layers_removed, "tmp_removed",
                                        (json_int_t)r.tmp_removed, "instances_forgotten",
                                        (json_int_t)r.instances_forgotten, "bytes_freed",
                                        cli_json_u64(r.bytes_freed), "layers_waiting",
                                        (json_int_t)r.layers_waiting, "clones_missing",
                                        (json_int_t)r.clones_missing, "partial_kept",
                                        (json_int_t)r.partial_kept));
    char h[32];
    printf("removed %zu layer%s, %zu stale temporary item%s; freed %s\n", r.layers_removed,
           r.layers_removed == 1 ? "" : "s", r.tmp_removed, r.tmp_removed == 1 ? "" : "s",
           cli_human(r.bytes_freed, h, sizeof h));
    if (r.layers_waiting)
        printf("kept %zu unreachable layer%s for the grace period (strata ls --unreachable; "
               "gc --prune=now removes them)\n",
               r.layers_waiting, r.layers_waiting == 1 ? "" : "s");
    if (r.partial_kept)
        printf("kept %zu interrupted pull%s under tmp/ (the next pull of its layer takes it up; "
               "removed 14 days after it was last touched)\n",
               r.partial_kept, r.partial_kept == 1 ? "" : "s");
    if (r.clones_missing)
        printf("kept the layers of %zu clone record%s whose clone is not where recorded "
               "(see strata clones)\n",
               r.clones_missing, r.clones_missing == 1 ? "" : "s");
    return 0;
}

/* one clone record: a line, or with --json an object added to all */
static void print_clone(const store_clone_entry *e, json_t *all)
{
    const char *state = store_clone_state_name(e->state);
    char d[32];
    if (!all) {
        printf("%-10s  %.12s  %s%s%s\n", state, e->has_layer ? e->layer.hex : "-",
               e->path ? e->path : e->key, e->why ? "  " : "", e->why ? e->why : "");
        return;
    }
    json_t *one = json_pack("{s:o, s:o?, s:s?, s:s, s:s}", "record", cli_json_text(e->key), "path",
                            e->path ? cli_json_text(e->path) : NULL, "layer",
                            e->has_layer ? e->layer.hex : NULL, "state", state, "recorded",
                            cli_date_of(e->recorded, d, sizeof d));
    if (e->why)
        json_object_set_new(one, "error", cli_json_text(e->why));
    json_array_append_new(all, one);
}

static int cmd_clones(int argc, char **argv)
{
    int json = 0, prune = 0;
    const char *expire_s = NULL;
    cli_opt opts[] = {{"--json", 0, NULL, &json}, {"--prune", 0, NULL, &prune},
                      {"--expire", 1, &expire_s, NULL}};
    char *pos[1];
    int n;
    int64_t expire = STORE_CLONE_PRUNE_EXPIRE;
    if (cli_parse(argc, argv, opts, 3, pos, 0, &n, "clones") ||
        (expire_s && parse_age("--expire", expire_s, &expire)))
        return 1;
    if (expire_s && !prune)
        return cli_fail("clones: --expire goes with --prune");
    store *st;
    if (cli_open_store(&st))
        return 1;
    size_t forgotten = 0, nc = 0;
    store_clone_entry *c = NULL;
    int rc = prune ? store_clones_prune(st, expire, &forgotten) : 0;
    if (!rc)
        rc = store_clones(st, &c, &nc);
    store_close(st);
    if (rc)
        return cli_failed(rc);
    if (prune)
        fprintf(stderr, "strata: forgot %zu record%s of missing clones\n", forgotten,
                forgotten == 1 ? "" : "s");
    json_t *all = json ? json_array() : NULL;
    for (size_t i = 0; i < nc; i++)
        print_clone(&c[i], all);
    store_clones_free(c, nc);
    return json ? cli_json_print(all) : 0;
}

const cli_verb cli_upkeep_verbs[] = {
    {"df", cmd_df, "df [--json]", "What the store holds and what it costs on disk."},
    {"fsck", cmd_fsck, "fsck [--quick] [--json]",
     "Verify every manifest, ref and clone record, and re-hash every stored chunk\n"
     "(SHA-256), sealing layers that have no seals yet. --quick reads every stored\n"
     "byte too, but checks it against the layer's XXH3 seals, at disk speed.\n"
     "Exits 1 if anything is wrong."},
    {"gc", cmd_gc, "gc [--prune=AGE] [--json]",
     "Remove layers that no tag, clone record, or their descendants reach and that have\n"
     "been unreachable for AGE (default 14d; 'now' for all of them, 'never' for none),\n"
     "and abandoned temporary work. If any tag, clone record or layer can't be read,\n"
     "removes nothing and names it. Undo a wrong untag with 'tag ID NAME' (ls --unreachable)."},
    {"clones", cmd_clones, "clones [--json] [--prune [--expire AGE]]",
     "Every clone record: state (ok, moved, missing, unreadable), layer, path. A record\n"
     "keeps its layer from gc until --prune forgets it; --prune forgets records of\n"
     "missing clones not written for AGE (default 90d, 'now'). A moved clone is found\n"
     "again by the next command that uses it."},
    {NULL, NULL, NULL, NULL},
};
