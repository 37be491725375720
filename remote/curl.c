/* libcurl, loaded on first use (internal.h and base/lazylib.h say why). */
#include "internal.h"
#include "../base/lazylib.h"

/* a full path the Makefile passes where dlopen's search would not find it
 * (Homebrew's keg-only curl), else the platform's name for it */
#ifndef STRATA_LIBCURL
#define STRATA_LIBCURL NULL
#endif

#define RM_CURL_DEFINE(f) __typeof__(f) *rm_lazy_##f;
RM_CURL_FUNCS(RM_CURL_DEFINE)

#define RM_CURL_SYMBOL(f) {#f, (void **)&rm_lazy_##f},
static const lazylib_symbol symbols[] = {RM_CURL_FUNCS(RM_CURL_SYMBOL)};

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static lazylib libcurl = {.label = "libcurl", .stem = "curl", .major = 4, .path = STRATA_LIBCURL,
                          .symbols = symbols, .nsymbols = sizeof symbols / sizeof *symbols,
                          .loaded = global_init};

int rm_curl_load(void)
{
    return lazylib_load(&libcurl);
}
