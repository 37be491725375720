/*
 * base/note.h: notes for the user (progress, a fallback taken, a warning)
 * that a module hands to its caller's callback instead of printing: the
 * CLI decides where they go.
 */
#ifndef STRATA_BASE_NOTE_H
#define STRATA_BASE_NOTE_H

/* A caller's note callback: one line, without its newline. */
typedef void (*note_fn)(void *ctx, const char *line);

/* Format one line and hand it to fn(ctx, line); nothing if fn is NULL.
 * A line is cut at 1 KiB. */
void note_send(note_fn fn, void *ctx, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
