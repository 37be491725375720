/* Verbs that look after the store: df, fsck, gc. */
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
        return cli_store_failed();
    }
    if (json) {
        printf("{\"store\":");
        cli_json_str(stdout, home);
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
               home, u.layers, u.tags, u.instances, cli_human(u.apparent_bytes, a, sizeof a),
               cli_human(u.unique_bytes, b, sizeof b), cli_human(u.allocated_bytes, c, sizeof c),
               cli_human(u.volume_free, d, sizeof d));
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
        cli_json_str(stdout, line);
    } else {
        printf("%s\n", line);
    }
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
    fsck_out o = {json, 0};
    if (json)
        printf("{\"lines\":[");
    int problems = store_fsck(st, quick, fsck_line, &o);
    store_close(st);
    if (json)
        printf("],\"problems\":%d}\n", problems < 0 ? -1 : problems);
    if (problems < 0)
        return cli_store_failed();
    if (problems > 0)
        return cli_fail("fsck found %d problem%s", problems, problems == 1 ? "" : "s");
    return 0;
}

static int cmd_gc(int argc, char **argv)
{
    int json = 0;
    char *pos[1];
    int n;
    if (cli_parse_json_only(argc, argv, pos, 0, &n, &json, "gc"))
        return 1;
    store *st;
    if (cli_open_store(&st))
        return 1;
    store_gc_result r;
    int rc = store_gc(st, &r);
    store_close(st);
    if (rc)
        return cli_store_failed();
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
               r.instances_forgotten == 1 ? "" : "s", cli_human(r.bytes_freed, h, sizeof h));
    }
    return 0;
}

const cli_verb cli_upkeep_verbs[] = {
    {"df", cmd_df, "df [--json]", "What the store holds and what it costs on disk."},
    {"fsck", cmd_fsck, "fsck [--quick] [--json]",
     "Verify every manifest, ref and clone record, and re-hash every stored chunk\n"
     "(SHA-256), sealing layers that have no seals yet. --quick reads every stored\n"
     "byte too, but checks it against the layer's XXH3 seals, at disk speed.\n"
     "Exits 1 if anything is wrong."},
    {"gc", cmd_gc, "gc [--json]",
     "Remove layers that no tag, existing clone, or their descendants reach, and\n"
     "abandoned temporary work. Reports what it freed."},
    {NULL, NULL, NULL, NULL},
};
