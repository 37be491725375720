/*
 * base/lazylib.h: a shared library loaded the first time it is needed
 * (dlopen), not when strata starts. libcurl and libarchive bring ~35
 * libraries between them, which every strata run would otherwise load,
 * though most runs (suspend, run --resume, ps) need neither.
 *
 * A module lists the functions it calls as pointers it owns (its
 * internal.h names them as the library does) and hands their names and
 * addresses here; the first lazylib_load() fills them all, or fails naming
 * the library and the first function missing, and later calls return the
 * same answer at once. Thread-safe.
 */
#ifndef STRATA_BASE_LAZYLIB_H
#define STRATA_BASE_LAZYLIB_H

#include <stddef.h>

/* One function: its name in the library, and the pointer to fill. */
typedef struct {
    const char *name;
    void **slot;
} lazylib_symbol;

typedef struct {
    const char *label;  /* for messages: "libcurl" */
    const char *stem;   /* the file by platform (os_library_file): "curl" */
    int major;          /* its major version: 4 */
    const char *path;   /* a full path to use instead, or NULL (Homebrew's keg-only ones) */
    const lazylib_symbol *symbols;
    size_t nsymbols;
    void (*loaded)(void); /* called once, after every symbol was found (or NULL) */
    /* the loader's: zero-initialize */
    int tried;
    char failed[600];
} lazylib;

/* Load lib once: 0, or -ENOSYS with the thread's error (base/error.h)
 * saying which library or function is missing. */
int lazylib_load(lazylib *lib);

#endif
