/*
 * base/error.h: strata's one error facility (libgit2's git_error_last).
 *
 * A failing function sets the thread's last error (a message for the user,
 * the errno behind it and the module that raised it) and returns the
 * negative errno; whoever passes that return value up passes the error
 * with it, unchanged, up to the CLI, which prints the message. Each module
 * raises through a one-line wrapper that names it (st_fail, boot_fail,
 * rm_fail, ar_fail), and reads nothing but this facility.
 *
 * One rule for the code: it is a positive errno value, and a negative one
 * is taken as its absolute value (callers pass a return value on). Code 0,
 * "errno was not set", becomes EIO: a failure is never reported as success.
 *
 * The message is the thread's own (thread-local); it is one line, at most
 * ERR_MESSAGE_MAX - 1 bytes, cut there.
 */
#ifndef STRATA_BASE_ERROR_H
#define STRATA_BASE_ERROR_H

/* Where an error was raised. */
typedef enum {
    ERR_NONE = 0, /* no error since err_clear() or the thread's start */
    ERR_BASE,
    ERR_CLONE,
    ERR_STORE,
    ERR_BOOT,
    ERR_REMOTE,
    ERR_ARCHIVE,
    ERR_NBD,
    ERR_TART,
    ERR_LAZY,
    ERR_CLI,
} err_module;

#define ERR_MESSAGE_MAX 1024

typedef struct {
    int code;          /* positive errno; 0 with ERR_NONE */
    err_module module; /* who raised it */
    char message[ERR_MESSAGE_MAX];
} err_info;

/*
 * Set the thread's last error: code (the rule above), module, and the
 * message fmt makes. Returns -code, for `return err_set(...)`.
 */
int err_set(err_module module, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The same, with ": " and strerror(code) after the message. */
int err_set_errno(err_module module, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "out of memory" with ENOMEM: returns -ENOMEM. Needs no memory itself. */
int err_oom(err_module module);

/* The thread's last error; never NULL ("no error", ERR_NONE, before any). */
const err_info *err_last(void);

/*
 * The message to show for a failure that returned rc (negative errno): the
 * last error's message when its code is rc's, else strerror(-rc), so an
 * error raised without a message (an allocation that failed deep down)
 * never shows another failure's stale text.
 */
const char *err_message_for(int rc);

/*
 * Pass on the error a callee raised, unchanged (errno, message, module):
 * returns -code of the thread's last error, -EIO if there is none. For a
 * caller whose callee failed without returning its code (a NULL result).
 */
int err_pass(void);

/*
 * Make e the thread's last error: a worker thread's error (copied with
 * `saved = *err_last()`) handed to the thread that reports it. Returns
 * -e->code.
 */
int err_restore(const err_info *e);

/* Forget the thread's last error (a caller that recovered from it). */
void err_clear(void);

#endif
