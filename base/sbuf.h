/*
 * base/sbuf.h: a growable byte buffer (git's strbuf), always NUL-terminated.
 *
 * Appends never fail on the spot: an allocation that fails sets `oom` and
 * every later append does nothing, so a writer appends a whole text and
 * checks once, at the end. Start from `sbuf b = {0};`; release with
 * sbuf_release().
 */
#ifndef STRATA_BASE_SBUF_H
#define STRATA_BASE_SBUF_H

#include <stddef.h>

typedef struct {
    char *data; /* NULL until the first append; then len bytes and a NUL */
    size_t len; /* bytes appended, without the NUL */
    size_t cap; /* bytes allocated at data */
    int oom;    /* an append failed: the contents are incomplete */
} sbuf;

/* Append n bytes from p (which may hold NULs). */
void sbuf_add(sbuf *b, const void *p, size_t n);

/* Append what printf would print. */
void sbuf_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Free the contents and start empty again. */
void sbuf_release(sbuf *b);

#endif
