/* libarchive, loaded on first use (internal.h and base/lazylib.h say why). */
#include "internal.h"
#include "../base/lazylib.h"

/* a full path the Makefile passes where dlopen's search would not find it
 * (Homebrew's keg-only libarchive), else the platform's name for it */
#ifndef STRATA_LIBARCHIVE
#define STRATA_LIBARCHIVE NULL
#endif

#define AR_LIB_DEFINE(f) __typeof__(f) *ar_lazy_##f;
AR_LIB_FUNCS(AR_LIB_DEFINE)

#define AR_LIB_SYMBOL(f) {#f, (void **)&ar_lazy_##f},
static const lazylib_symbol symbols[] = {AR_LIB_FUNCS(AR_LIB_SYMBOL)};

static lazylib libarchive = {.label = "libarchive", .stem = "archive", .major = 13,
                             .path = STRATA_LIBARCHIVE, .symbols = symbols,
                             .nsymbols = sizeof symbols / sizeof *symbols};

int ar_lib_load(void)
{
    return lazylib_load(&libarchive);
}
