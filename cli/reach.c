/* Verbs that reach a running VM: ip, ssh, screenshot. */
#define _GNU_SOURCE
#include "cli.h"

const cli_verb cli_reach_verbs[] = {
    {NULL, NULL, NULL, NULL},
};
