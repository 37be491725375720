/* strata: the command line. Finds the verb and hands it its arguments. */
#include "cli.h"

#include <string.h>

static int cmd_help(int argc, char **argv);

static const cli_verb help_verbs[] = {
    {"help", cmd_help, "help [VERB]", "Show help for a verb."},
    {NULL, NULL, NULL, NULL},
};

/* in the order `strata help` lists them */
static const cli_verb *const tables[] = {cli_layer_verbs, cli_archive_verbs, cli_upkeep_verbs,
                                         cli_vm_verbs, cli_create_verbs, cli_reach_verbs,
                                         cli_remote_verbs, cli_tart_verbs, help_verbs};

static const cli_verb *find_verb(const char *name)
{
    for (size_t t = 0; t < sizeof tables / sizeof *tables; t++)
        for (const cli_verb *v = tables[t]; v->name; v++)
            if (!strcmp(v->name, name))
                return v;
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: strata VERB [ARGS]\n\nThe store is $STRATA_HOME, or ~/.strata.\n"
                 "A REF is a tag, a layer id or a unique id prefix.\n"
                 "strata --version prints the release.\n\nverbs:\n");
    for (size_t t = 0; t < sizeof tables / sizeof *tables; t++)
        for (const cli_verb *v = tables[t]; v->name; v++)
            fprintf(out, "  strata %s\n", v->usage);
}

static int cmd_help(int argc, char **argv)
{
    if (argc < 2) {
        usage(stdout);
        return 0;
    }
    const cli_verb *v = find_verb(argv[1]);
    if (!v)
        return cli_fail("help: no verb '%s'", argv[1]);
    printf("usage: strata %s\n\n%s\n", v->usage, v->help);
    return 0;
}

/* the release, and the commit it was built from where the Makefile knows it */
#ifndef STRATA_VERSION
#define STRATA_VERSION "0.1"
#endif

int main(int argc, char **argv)
{
    /* run through a link named tart: the tart-compatible command */
    const char *self = argc > 0 ? strrchr(argv[0], '/') : NULL;
    if (argc > 0 && !strcmp(self ? self + 1 : argv[0], "tart"))
        return cli_tart(argc, argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const cli_verb *v = find_verb(argv[1]);
    if (!v) {
        if (!strcmp(argv[1], "--version")) {
            printf("strata %s\n", STRATA_VERSION);
            return 0;
        }
        if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
            usage(stdout);
            return 0;
        }
        return cli_fail("unknown verb '%s' (see 'strata help')", argv[1]);
    }
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            char *h[] = {"help", argv[1]};
            return cmd_help(2, h);
        }
    cli_running(v);
    return v->run(argc - 1, argv + 1);
}
