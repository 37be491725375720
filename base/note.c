/* base/note.h: a note to the caller's callback. */
#include "note.h"

#include <stdarg.h>
#include <stdio.h>

void note_send(note_fn fn, void *ctx, const char *fmt, ...)
{
    if (!fn)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fn(ctx, line);
}
