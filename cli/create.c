/* Verbs that make and change VMs: create, set. */
#define _GNU_SOURCE
#include "cli.h"

#include <string.h>

static int create_linux(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_fail("create linux: not built yet");
}

static int cmd_create(int argc, char **argv)
{
    if (argc < 2)
        return cli_fail("create: which kind? create macos|linux NAME ...");
    if (!strcmp(argv[1], "macos"))
        return cli_create_macos(argc - 1, argv + 1);
    if (!strcmp(argv[1], "linux"))
        return create_linux(argc - 1, argv + 1);
    return cli_fail("create: unknown kind '%s' (macos or linux)", argv[1]);
}

const cli_verb cli_create_verbs[] = {
    {"create", cmd_create, "create macos|linux NAME ...", "Make a new VM as a root layer, tagged NAME."},
    {NULL, NULL, NULL, NULL},
};
