/* base/error.h: the thread's last error. */
#include "error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local err_info last = {.code = 0, .module = ERR_NONE, .message = "no error"};

/* the one rule: positive errno; a return value's sign dropped; 0 is EIO */
static int code_of(int code)
{
    if (code < 0)
        code = -code;
    return code ? code : EIO;
}

static int set_v(err_module module, int code, int with_errno, const char *fmt, va_list ap)
{
    code = code_of(code);
    /* formatted aside first: fmt's arguments may be the old message */
    char text[ERR_MESSAGE_MAX];
    vsnprintf(text, sizeof text, fmt, ap);
    if (with_errno)
        snprintf(last.message, sizeof last.message, "%.900s: %s", text, strerror(code));
    else
        memcpy(last.message, text, sizeof text);
    last.code = code;
    last.module = module;
    return -code;
}

int err_set(err_module module, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = set_v(module, code, 0, fmt, ap);
    va_end(ap);
    return rc;
}

int err_set_errno(err_module module, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = set_v(module, code, 1, fmt, ap);
    va_end(ap);
    return rc;
}

int err_oom(err_module module)
{
    snprintf(last.message, sizeof last.message, "out of memory");
    last.code = ENOMEM;
    last.module = module;
    return -ENOMEM;
}

const err_info *err_last(void)
{
    return &last;
}

const char *err_message_for(int rc)
{
    int code = code_of(rc);
    if (last.module != ERR_NONE && last.code == code)
        return last.message;
    return code == ENOMEM ? "out of memory" : strerror(code);
}

int err_pass(void)
{
    return -code_of(last.code);
}

int err_restore(const err_info *e)
{
    last = *e;
    return -last.code;
}

void err_clear(void)
{
    last.code = 0;
    last.module = ERR_NONE;
    snprintf(last.message, sizeof last.message, "no error");
}
