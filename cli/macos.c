/* create macos: a macOS VM from an .ipsw (vz driver, Apple silicon). */
#define _GNU_SOURCE
#include "cli.h"

int cli_create_macos(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_fail("create macos: not built yet");
}
