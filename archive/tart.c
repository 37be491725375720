/* tart VM directories (research/tart.md §1) into layers. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>

int archive_import_tart(store *st, const char *dir, const archive_import_opts *o,
                        store_commit_result *res)
{
    (void)st, (void)dir, (void)o, (void)res;
    return ar_fail(ENOSYS, "not yet");
}
