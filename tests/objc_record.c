/*
 * A recording stand-in for boot/objc.h: see tests/objc_record.h. Single
 * threaded; the "queues" run their work at once, on the caller's thread.
 */
#define _GNU_SOURCE
#include "objc_record.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum kind { K_CLASS, K_OBJ, K_STR, K_URL, K_ARRAY, K_DICT, K_QUEUE, K_ERROR, K_POOL };

typedef struct rec {
    enum kind kind;
    int id;                /* objects and queues: their number */
    char *cls;             /* class name */
    char *text;            /* NSString value, NSURL path, NSError message, NSFileHandle path */
    unsigned char *bytes;  /* NSData contents */
    size_t nbytes;
    int is_data;
    struct rec **items;    /* NSArray; NSDictionary: keys then values */
    size_t nitems;
    int rc;                /* references the driver owns */
    int vm;                /* a VZVirtualMachine, initialized */
    long state;
    struct rec *queue;     /* a VZVirtualMachine's queue */
    size_t mark;           /* a pool: where its autoreleased objects start */
} rec;

static struct {
    rec **all;
    size_t n, cap;
    int next_id;
    char *log;
    size_t len, cap_log;
    int depth;
    rec *cur_queue;
    rec **arp; /* autoreleased objects; pools hold an index into it */
    size_t narp, cap_arp;
    int pools; /* pools open */
    struct {
        char *sel, *msg;
    } fails[16];
    size_t nfails;
    char *absent[16];
    size_t nabsent;
    rec *last_vm;
} R;

/* ---------- the transcript ---------- */

typedef struct {
    char *s;
    size_t len, cap;
} sb;

static void sb_add(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sb *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s)
            abort();
        b->s = s;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void emit(const char *fmt, ...)
{
    char *line;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&line, fmt, ap) < 0)
        abort();
    va_end(ap);
    sb b = {R.log, R.len, R.cap_log};
    sb_add(&b, "%*s%s\n", R.depth * 2, "", line);
    R.log = b.s;
    R.len = b.len;
    R.cap_log = b.cap;
    free(line);
}

const char *oc_record_transcript(void)
{
    return R.log ? R.log : "";
}

/* ---------- objects ---------- */

static char *dup_or_die(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        abort();
    return d;
}

static rec *new_rec(enum kind k, const char *cls)
{
    rec *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->kind = k;
    r->cls = dup_or_die(cls);
    if (k == K_OBJ || k == K_QUEUE)
        r->id = ++R.next_id;
    if (R.n == R.cap) {
        R.cap = R.cap ? R.cap * 2 : 64;
        R.all = realloc(R.all, R.cap * sizeof *R.all);
        if (!R.all)
            abort();
    }
    R.all[R.n++] = r;
    return r;
}

static rec *find(objc_id p)
{
    for (size_t i = 0; p && i < R.n; i++)
        if (R.all[i] == p)
            return R.all[i];
    return NULL;
}

static void free_rec(rec *r)
{
    free(r->cls);
    free(r->text);
    free(r->bytes);
    free(r->items);
    free(r);
}

void oc_record_reset(void)
{
    for (size_t i = 0; i < R.n; i++)
        free_rec(R.all[i]);
    free(R.all);
    free(R.log);
    free(R.arp);
    for (size_t i = 0; i < R.nfails; i++) {
        free(R.fails[i].sel);
        free(R.fails[i].msg);
    }
    for (size_t i = 0; i < R.nabsent; i++)
        free(R.absent[i]);
    memset(&R, 0, sizeof R);
}

void oc_record_fail(const char *sel, const char *message)
{
    if (R.nfails == sizeof R.fails / sizeof R.fails[0])
        abort();
    R.fails[R.nfails].sel = dup_or_die(sel);
    R.fails[R.nfails].msg = dup_or_die(message);
    R.nfails++;
}

void oc_record_absent(const char *name)
{
    if (R.nabsent == sizeof R.absent / sizeof R.absent[0])
        abort();
    R.absent[R.nabsent++] = dup_or_die(name);
}

void oc_record_set_vm_state(long state)
{
    if (!R.last_vm)
        return;
    R.last_vm->state = state;
    emit("# test: VZVirtualMachine#%d state is now %ld", R.last_vm->id, state);
}

int oc_record_leaks(char *buf, size_t len)
{
    int count = 0;
    sb b = {0};
    for (size_t i = 0; i < R.n; i++) {
        rec *r = R.all[i];
        if ((r->kind == K_OBJ || r->kind == K_QUEUE) && r->rc > 0) {
            sb_add(&b, "%s%s#%d", count ? ", " : "", r->kind == K_QUEUE ? "dispatch_queue" : r->cls,
                   r->id);
            count++;
        }
    }
    if (len)
        snprintf(buf, len, "%s", b.s ? b.s : "");
    free(b.s);
    return count;
}

/* the next failure asked for with this selector, or NULL */
static char *take_failure(const char *sel)
{
    for (size_t i = 0; i < R.nfails; i++)
        if (!strcmp(R.fails[i].sel, sel)) {
            char *text = R.fails[i].msg;
            free(R.fails[i].sel);
            memmove(&R.fails[i], &R.fails[i + 1], (R.nfails - i - 1) * sizeof R.fails[0]);
            R.nfails--;
            return text;
        }
    return NULL;
}

static int is_absent(const char *name)
{
    for (size_t i = 0; i < R.nabsent; i++)
        if (!strcmp(R.absent[i], name))
            return 1;
    return 0;
}

static rec *make_error(const char *msg)
{
    rec *e = new_rec(K_ERROR, "NSError");
    e->text = dup_or_die(msg);
    return e;
}

/* how an object appears as an argument or a result */
static void describe(sb *b, rec *r)
{
    if (!r) {
        sb_add(b, "nil");
        return;
    }
    switch (r->kind) {
    case K_CLASS:
        sb_add(b, "%s", r->cls);
        break;
    case K_STR:
        sb_add(b, "\"");
        for (const char *p = r->text; *p; p++) {
            if (*p == '"' || *p == '\\')
                sb_add(b, "\\%c", *p);
            else if ((unsigned char)*p < 0x20)
                sb_add(b, "\\x%02x", (unsigned char)*p);
            else
                sb_add(b, "%c", *p);
        }
        sb_add(b, "\"");
        break;
    case K_URL:
        sb_add(b, "url(\"%s\")", r->text);
        break;
    case K_ARRAY:
        sb_add(b, "@[");
        for (size_t i = 0; i < r->nitems; i++) {
            if (i)
                sb_add(b, ", ");
            describe(b, r->items[i]);
        }
        sb_add(b, "]");
        break;
    case K_DICT:
        sb_add(b, "@{");
        for (size_t i = 0; i < r->nitems; i++) {
            if (i)
                sb_add(b, ", ");
            describe(b, r->items[i]);
            sb_add(b, ": ");
            describe(b, r->items[r->nitems + i]);
        }
        sb_add(b, "}");
        break;
    case K_QUEUE:
        sb_add(b, "dispatch_queue#%d", r->id);
        break;
    case K_ERROR:
        sb_add(b, "NSError(\"%s\")", r->text);
        break;
    case K_POOL:
        sb_add(b, "NSAutoreleasePool");
        break;
    case K_OBJ:
        sb_add(b, "%s#%d", r->cls, r->id);
        if (r->is_data)
            sb_add(b, "(%zu bytes)", r->nbytes);
        break;
    }
}

/* A message being recorded: "-[Cls#3 piece: arg piece: arg" so far. */
typedef struct {
    sb line;
    rec *recv;
    const char *sel;
    const char *next; /* the rest of the selector, for the next argument */
    int nil_recv;
} msg;

static void msg_begin(msg *m, objc_id obj, const char *sel)
{
    memset(m, 0, sizeof *m);
    m->sel = sel;
    m->next = sel;
    m->recv = find(obj);
    if (!m->recv) {
        emit("!! %s sent to %s", sel, obj ? "an unknown pointer" : "nil");
        m->nil_recv = 1;
    }
    if (m->recv && m->recv->kind == K_CLASS)
        sb_add(&m->line, "+[%s", m->recv->cls);
    else if (m->recv)
        sb_add(&m->line, "-[%s#%d", m->recv->cls, m->recv->id);
    else
        sb_add(&m->line, "-[nil");
    if (!strchr(sel, ':'))
        sb_add(&m->line, " %s", sel);
    if (m->recv && m->recv->vm && m->recv->queue != R.cur_queue)
        emit("!! VZVirtualMachine#%d sent %s off its queue", m->recv->id, sel);
}

/* the selector piece up to the next ':' */
static void msg_piece(msg *m)
{
    const char *colon = strchr(m->next, ':');
    size_t n = colon ? (size_t)(colon - m->next) + 1 : strlen(m->next);
    sb_add(&m->line, " %.*s ", (int)n, m->next);
    m->next += n;
}

static void arg_obj(msg *m, objc_id a)
{
    msg_piece(m);
    rec *r = find(a);
    if (a && !r)
        emit("!! %s given an unknown pointer", m->sel);
    describe(&m->line, r);
}

static void arg_bool(msg *m, int v)
{
    msg_piece(m);
    sb_add(&m->line, "%s", v ? "YES" : "NO");
}

static void arg_int(msg *m, long long v)
{
    msg_piece(m);
    sb_add(&m->line, "%lld", v);
}

static void arg_raw(msg *m, const char *text)
{
    msg_piece(m);
    sb_add(&m->line, "%s", text);
}

/* close the bracket, add " -> result" (result may be NULL: void) and emit */
static void msg_end(msg *m, const char *result)
{
    sb_add(&m->line, "]");
    if (result)
        sb_add(&m->line, " -> %s", result);
    emit("%s", m->line.s);
    free(m->line.s);
}

static void msg_end_obj(msg *m, rec *r, rec *error)
{
    sb b = {0};
    describe(&b, r);
    if (!r && error) {
        sb_add(&b, ", error: ");
        describe(&b, error);
    }
    msg_end(m, b.s);
    free(b.s);
}

static void msg_end_bool(msg *m, int v, rec *error)
{
    sb b = {0};
    sb_add(&b, "%s", v ? "YES" : "NO");
    if (!v && error) {
        sb_add(&b, ", error: ");
        describe(&b, error);
    }
    msg_end(m, b.s);
    free(b.s);
}

static int starts(const char *s, const char *prefix)
{
    return !strncmp(s, prefix, strlen(prefix));
}

static int read_file(const char *path, unsigned char **out, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            unsigned char *b = realloc(buf, cap);
            if (!b)
                abort();
            buf = b;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    fclose(f);
    *out = buf;
    *n = len;
    return 0;
}

/*
 * What a message with no special meaning returns: alloc and new make an
 * owned object, init... returns the receiver, other class methods make a
 * borrowed object of that class, anything else a borrowed NSObject.
 */
static rec *plain_result(msg *m, int *failed)
{
    rec *recv = m->recv;
    if (!recv)
        return NULL;
    char *why = take_failure(m->sel);
    if (why) {
        free(why);
        *failed = 1;
        if (recv->kind == K_OBJ && starts(m->sel, "init"))
            recv->rc = 0; /* a failing init releases what alloc made */
        return NULL;
    }
    if (recv->kind == K_CLASS) {
        rec *r = new_rec(K_OBJ, recv->cls);
        if (!strcmp(m->sel, "alloc") || !strcmp(m->sel, "new"))
            r->rc = 1;
        return r;
    }
    if (starts(m->sel, "init"))
        return recv;
    if (!strcmp(m->sel, "copy")) {
        rec *r = new_rec(K_OBJ, recv->cls);
        r->rc = 1;
        return r;
    }
    if (!strcmp(m->sel, "dataRepresentation")) {
        rec *r = new_rec(K_OBJ, "NSData");
        char text[128];
        snprintf(text, sizeof text, "%s#%d data representation\n", recv->cls, recv->id);
        r->is_data = 1;
        r->bytes = (unsigned char *)dup_or_die(text);
        r->nbytes = strlen(text);
        return r;
    }
    return new_rec(K_OBJ, "NSObject");
}

/* ---------- boot/objc.h ---------- */

int oc_available(void)
{
    return 1;
}

objc_id oc_class(const char *name)
{
    if (is_absent(name))
        return NULL;
    for (size_t i = 0; i < R.n; i++)
        if (R.all[i]->kind == K_CLASS && !strcmp(R.all[i]->cls, name))
            return R.all[i];
    return new_rec(K_CLASS, name);
}

int oc_responds(objc_id obj, const char *sel)
{
    return find(obj) && !is_absent(sel);
}

objc_id oc_send(objc_id obj, const char *sel)
{
    msg m;
    int failed = 0;
    msg_begin(&m, obj, sel);
    rec *r = plain_result(&m, &failed);
    msg_end_obj(&m, r, NULL);
    return r;
}

objc_id oc_send_id(objc_id obj, const char *sel, objc_id a)
{
    msg m;
    int failed = 0;
    msg_begin(&m, obj, sel);
    arg_obj(&m, a);
    rec *arg = find(a), *r = NULL;
    if (m.recv && m.recv->kind == K_CLASS && !strcmp(sel, "dataWithContentsOfURL:")) {
        unsigned char *bytes;
        size_t n;
        char *why = take_failure(sel);
        if (!why && arg && arg->kind == K_URL && read_file(arg->text, &bytes, &n) == 0) {
            r = new_rec(K_OBJ, "NSData");
            r->is_data = 1;
            r->bytes = bytes;
            r->nbytes = n;
        }
        free(why);
    } else if (m.recv && m.recv->kind == K_CLASS && !strcmp(sel, "fileHandleForWritingAtPath:")) {
        char *why = take_failure(sel);
        if (!why && arg && arg->kind == K_STR && access(arg->text, W_OK) == 0) {
            r = new_rec(K_OBJ, "NSFileHandle");
            r->text = dup_or_die(arg->text);
        }
        free(why);
    } else if (m.recv && m.recv->kind == K_OBJ && !strcmp(sel, "initWithDataRepresentation:") &&
               (!arg || !arg->is_data || arg->nbytes == 0)) {
        free(take_failure(sel));
        m.recv->rc = 0; /* nil: not data this class reads */
    } else {
        r = plain_result(&m, &failed);
    }
    msg_end_obj(&m, r, NULL);
    return r;
}

objc_id oc_send_id_id(objc_id obj, const char *sel, objc_id a, objc_id b)
{
    msg m;
    int failed = 0;
    msg_begin(&m, obj, sel);
    arg_obj(&m, a);
    arg_obj(&m, b);
    rec *r = plain_result(&m, &failed);
    if (r && !strcmp(sel, "initWithConfiguration:queue:")) {
        rec *q = find(b);
        r->vm = 1;
        r->state = 0;
        r->queue = q;
        R.last_vm = r;
        if (!q || q->kind != K_QUEUE)
            emit("!! %s#%d made without a dispatch queue", r->cls, r->id);
        else if (q != R.cur_queue)
            emit("!! %s#%d made off its queue", r->cls, r->id);
    }
    msg_end_obj(&m, r, NULL);
    return r;
}

objc_id oc_send_id_bool(objc_id obj, const char *sel, objc_id a, int b)
{
    msg m;
    int failed = 0;
    msg_begin(&m, obj, sel);
    arg_obj(&m, a);
    arg_bool(&m, b);
    rec *r = plain_result(&m, &failed);
    msg_end_obj(&m, r, NULL);
    return r;
}

objc_id oc_send_i64_i64_i64(objc_id obj, const char *sel, int64_t a, int64_t b, int64_t c)
{
    msg m;
    int failed = 0;
    msg_begin(&m, obj, sel);
    arg_int(&m, a);
    arg_int(&m, b);
    arg_int(&m, c);
    rec *r = plain_result(&m, &failed);
    msg_end_obj(&m, r, NULL);
    return r;
}

objc_id oc_send_id_bool_i64_i64_err(objc_id obj, const char *sel, objc_id a, int b, int64_t c,
                                    int64_t d, objc_id *error_out)
{
    msg m;
    msg_begin(&m, obj, sel);
    arg_obj(&m, a);
    arg_bool(&m, b);
    arg_int(&m, c);
    arg_int(&m, d);
    arg_raw(&m, "&error");
    rec *arg = find(a), *r = NULL, *err = NULL;
    char *why = take_failure(sel);
    if (why) {
        err = make_error(why);
        free(why);
    } else if (arg && arg->kind == K_URL && access(arg->text, b ? R_OK : R_OK | W_OK) != 0) {
        char text[4200];
        snprintf(text, sizeof text, "The file \"%s\" couldn't be opened: %s", arg->text,
                 strerror(errno));
        err = make_error(text);
    } else if (m.recv && m.recv->kind == K_OBJ && starts(sel, "init")) {
        r = m.recv;
    } else if (m.recv) {
        r = new_rec(K_OBJ, "NSObject");
    }
    if (!r && m.recv && m.recv->kind == K_OBJ)
        m.recv->rc = 0;
    if (error_out)
        *error_out = err;
    msg_end_obj(&m, r, err);
    return r;
}

void oc_send_void_id(objc_id obj, const char *sel, objc_id a)
{
    msg m;
    msg_begin(&m, obj, sel);
    arg_obj(&m, a);
    msg_end(&m, NULL);
}

void oc_send_void_u64(objc_id obj, const char *sel, uint64_t a)
{
    msg m;
    msg_begin(&m, obj, sel);
    msg_piece(&m);
    sb_add(&m.line, "%llu", (unsigned long long)a);
    msg_end(&m, NULL);
}

int oc_send_bool(objc_id obj, const char *sel)
{
    msg m;
    msg_begin(&m, obj, sel);
    char *why = take_failure(sel);
    int ok = !why && !m.nil_recv;
    free(why);
    msg_end_bool(&m, ok, NULL);
    return ok;
}

int oc_send_bool_err(objc_id obj, const char *sel, objc_id *error_out)
{
    msg m;
    msg_begin(&m, obj, sel);
    arg_raw(&m, "&error");
    rec *err = NULL;
    char *why = take_failure(sel);
    if (why) {
        err = make_error(why);
        free(why);
    } else if (m.recv && m.recv->vm && !strcmp(sel, "requestStopWithError:") &&
               m.recv->state != 1) {
        err = make_error("The virtual machine is not running.");
    } else if (m.nil_recv) {
        err = make_error("message to nil");
    }
    if (error_out)
        *error_out = err;
    msg_end_bool(&m, !err, err);
    return !err;
}

int oc_send_bool_id_err(objc_id obj, const char *sel, objc_id a, objc_id *error_out)
{
    msg m;
    msg_begin(&m, obj, sel);
    arg_obj(&m, a);
    arg_raw(&m, "&error");
    rec *arg = find(a), *err = NULL;
    char *why = take_failure(sel);
    if (why) {
        err = make_error(why);
        free(why);
    } else if (!strcmp(sel, "validateTag:error:") && arg && arg->kind == K_STR &&
               (!*arg->text || strlen(arg->text) >= 36)) {
        /* Apple: "non-empty and less than 36 bytes when encoded in UTF-8" */
        err = make_error("The tag must be non-empty and less than 36 bytes.");
    } else if (m.nil_recv) {
        err = make_error("message to nil");
    }
    if (error_out)
        *error_out = err;
    msg_end_bool(&m, !err, err);
    return !err;
}

int oc_send_bool_id_bool(objc_id obj, const char *sel, objc_id a, int b)
{
    msg m;
    msg_begin(&m, obj, sel);
    arg_obj(&m, a);
    arg_bool(&m, b);
    rec *arg = find(a);
    char *why = take_failure(sel);
    int ok = !why && !m.nil_recv;
    free(why);
    if (ok && !strcmp(sel, "writeToURL:atomically:")) {
        ok = 0;
        if (arg && arg->kind == K_URL && m.recv->is_data) {
            FILE *f = fopen(arg->text, "wb");
            if (f) {
                ok = fwrite(m.recv->bytes, 1, m.recv->nbytes, f) == m.recv->nbytes;
                ok &= fclose(f) == 0;
            }
        }
    }
    msg_end_bool(&m, ok, NULL);
    return ok;
}

int64_t oc_send_i64(objc_id obj, const char *sel)
{
    msg m;
    msg_begin(&m, obj, sel);
    long long v = 0;
    if (m.recv && m.recv->vm && !strcmp(sel, "state"))
        v = m.recv->state;
    char text[32];
    snprintf(text, sizeof text, "%lld", v);
    msg_end(&m, text);
    return v;
}

objc_id oc_str(const char *utf8)
{
    if (!utf8)
        return NULL;
    rec *r = new_rec(K_STR, "NSString");
    r->text = dup_or_die(utf8);
    return r;
}

objc_id oc_url(const char *path)
{
    if (!path)
        return NULL;
    rec *r = new_rec(K_URL, "NSURL");
    r->text = dup_or_die(path);
    return r;
}

objc_id oc_array(objc_id *items, size_t n)
{
    rec *r = new_rec(K_ARRAY, "NSArray");
    r->items = calloc(n ? n : 1, sizeof *r->items);
    if (!r->items)
        abort();
    for (size_t i = 0; i < n; i++) {
        r->items[i] = find(items[i]);
        if (!r->items[i])
            emit("!! arrayWithObjects:count: given %s at %zu", items[i] ? "an unknown pointer" : "nil",
                 i);
    }
    r->nitems = n;
    return r;
}

objc_id oc_dict(objc_id *keys, objc_id *values, size_t n)
{
    rec *r = new_rec(K_DICT, "NSDictionary");
    r->items = calloc(n ? 2 * n : 1, sizeof *r->items);
    if (!r->items)
        abort();
    for (size_t i = 0; i < n; i++) {
        r->items[i] = find(keys[i]);
        r->items[n + i] = find(values[i]);
        if (!r->items[i] || !r->items[n + i])
            emit("!! dictionaryWithObjects:forKeys:count: given nil at %zu", i);
    }
    r->nitems = n;
    return r;
}

void oc_error_text(objc_id error, char *buf, size_t len)
{
    rec *r = find(error);
    snprintf(buf, len, "%s", r && r->kind == K_ERROR ? r->text : "no reason given");
}

objc_id oc_retain(objc_id obj)
{
    rec *r = find(obj);
    if (r)
        r->rc++;
    return obj;
}

void oc_release(objc_id obj)
{
    rec *r = find(obj);
    if (!r)
        return;
    if (r->kind == K_OBJ && --r->rc < 0)
        emit("!! %s#%d released more than it was owned", r->cls, r->id);
}

objc_id oc_autorelease(objc_id obj)
{
    rec *r = find(obj);
    if (!r)
        return obj;
    if (!R.pools)
        emit("!! %s#%d autoreleased with no pool", r->cls, r->id);
    if (R.narp == R.cap_arp) {
        R.cap_arp = R.cap_arp ? R.cap_arp * 2 : 64;
        R.arp = realloc(R.arp, R.cap_arp * sizeof *R.arp);
        if (!R.arp)
            abort();
    }
    R.arp[R.narp++] = r;
    return obj;
}

objc_id oc_pool_push(void)
{
    rec *p = new_rec(K_POOL, "NSAutoreleasePool");
    p->mark = R.narp;
    R.pools++;
    return p;
}

void oc_pool_pop(objc_id pool)
{
    rec *p = find(pool);
    if (!p || p->kind != K_POOL) {
        emit("!! oc_pool_pop of something not a pool");
        return;
    }
    while (R.narp > p->mark)
        oc_release(R.arp[--R.narp]);
    R.pools--;
}

objc_id oc_queue(const char *label)
{
    rec *q = new_rec(K_QUEUE, "dispatch_queue");
    q->rc = 1;
    emit("dispatch_queue_create(\"%s\", DISPATCH_QUEUE_SERIAL) -> dispatch_queue#%d", label, q->id);
    return q;
}

void oc_queue_release(objc_id queue)
{
    rec *q = find(queue);
    if (!q || q->kind != K_QUEUE) {
        emit("!! dispatch_release of something not a queue");
        return;
    }
    q->rc--;
    emit("dispatch_release(dispatch_queue#%d)", q->id);
}

int oc_on_queue(objc_id queue, void (*fn)(void *), void *ctx)
{
    rec *q = find(queue);
    if (!q || q->kind != K_QUEUE) {
        emit("!! dispatch_sync_f onto something not a queue");
        return -1;
    }
    if (q == R.cur_queue) {
        emit("!! dispatch_sync_f onto dispatch_queue#%d from itself: a deadlock", q->id);
        return -1;
    }
    emit("dispatch_sync_f(dispatch_queue#%d) {", q->id);
    rec *saved = R.cur_queue;
    R.cur_queue = q;
    R.depth++;
    objc_id pool = oc_pool_push();
    fn(ctx);
    oc_pool_pop(pool);
    R.depth--;
    R.cur_queue = saved;
    emit("}");
    return 0;
}

/* Apple's state rules for the completion-handler methods of VZVirtualMachine */
static const char *vm_transition(rec *vm, const char *sel, rec *arg, long *next)
{
    long s = vm->state;
    *next = s;
    if (!strcmp(sel, "startWithCompletionHandler:")) {
        if (s != 0 && s != 3)
            return "Invalid virtual machine state transition: start needs a stopped VM.";
        *next = 1;
    } else if (!strcmp(sel, "pauseWithCompletionHandler:")) {
        if (s != 1)
            return "Invalid virtual machine state transition: pause needs a running VM.";
        *next = 2;
    } else if (!strcmp(sel, "resumeWithCompletionHandler:")) {
        if (s != 2)
            return "Invalid virtual machine state transition: resume needs a paused VM.";
        *next = 1;
    } else if (!strcmp(sel, "stopWithCompletionHandler:")) {
        if (s != 1 && s != 2)
            return "Invalid virtual machine state transition: stop needs a running or paused VM.";
        *next = 0;
    } else if (!strcmp(sel, "saveMachineStateToURL:completionHandler:")) {
        if (s != 2)
            return "Invalid virtual machine state: save needs a paused VM.";
        if (!arg || arg->kind != K_URL)
            return "Invalid argument: no URL.";
        FILE *f = fopen(arg->text, "wb");
        if (!f || fputs("recorded VZ saved state\n", f) < 0) {
            if (f)
                fclose(f);
            return "Failed to save the virtual machine: can't write the file.";
        }
        fclose(f);
    } else if (!strcmp(sel, "restoreMachineStateFromURL:completionHandler:")) {
        if (s != 0)
            return "Invalid virtual machine state transition: restore needs a stopped VM.";
        if (!arg || arg->kind != K_URL || access(arg->text, R_OK) != 0)
            return "Failed to restore the virtual machine: no such file.";
        *next = 2;
    }
    return NULL;
}

int oc_send_completion(objc_id queue, objc_id obj, const char *sel, objc_id arg, char *err,
                       size_t errlen)
{
    if (errlen)
        err[0] = 0;
    rec *q = find(queue);
    if (queue && (!q || q->kind != K_QUEUE)) {
        emit("!! %s: queue is not a queue", sel);
        snprintf(err, errlen, "not a queue");
        return -1;
    }
    if (q && q == R.cur_queue) {
        emit("!! %s waited for on its own dispatch_queue#%d: a deadlock", sel, q->id);
        snprintf(err, errlen, "deadlock");
        return -1;
    }
    rec *saved = R.cur_queue;
    if (q) {
        emit("dispatch_sync_f(dispatch_queue#%d) {", q->id);
        R.depth++;
        R.cur_queue = q;
    }
    msg m;
    msg_begin(&m, obj, sel);
    if (arg)
        arg_obj(&m, arg);
    arg_raw(&m, "^(NSError *)");
    msg_end(&m, NULL);
    if (q) {
        R.depth--;
        emit("}");
    }
    /* the framework calls the handler later, on the VM's queue */
    char *why = take_failure(sel);
    const char *problem = why;
    long next = 0;
    if (!problem && m.recv && m.recv->vm)
        problem = vm_transition(m.recv, sel, find(arg), &next);
    else if (!problem && !m.recv)
        problem = "message to nil";
    if (problem) {
        emit("^ %s completion(NSError(\"%s\"))", sel, problem);
        snprintf(err, errlen, "%s", problem);
    } else {
        if (m.recv && m.recv->vm)
            m.recv->state = next;
        emit("^ %s completion(nil)", sel);
    }
    free(why);
    R.cur_queue = saved;
    return problem ? -1 : 0;
}
