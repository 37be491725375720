/*
 * A recording stand-in for boot/objc.h: see tests/objc_record.h.
 *
 * Like the framework, each dispatch queue is a thread of its own: work sent
 * with oc_on_queue runs there while the caller waits, and a completion
 * handler runs later, as a separate item on the VM's queue, while the
 * caller waits for it with its time limit. One lock (L) guards all state;
 * a queue's thread holds it only while it records, never while it runs the
 * driver's code.
 */
#define _GNU_SOURCE
#include "objc_record.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum kind { K_CLASS, K_OBJ, K_STR, K_URL, K_ARRAY, K_DICT, K_QUEUE, K_ERROR, K_POOL };

typedef struct rec *rec_owner_t;

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
    struct worker *worker; /* a queue's thread */
    rec_owner_t owner;     /* a VZMacOSInstaller's VM; an NSProgress's installer */
    long t0_ms;            /* an installer: when install began (0: not yet) */
    int remote;            /* a URL that is not a file URL (text is the whole URL) */
} rec;

/* ---------- the SDK table (tests/vz-sdk/selectors.tsv) ---------- */

typedef struct {
    char kind;       /* 'c' class, '+', '-', 'x' unavailable */
    char *cls, *sel; /* a class row: sel is its superclass */
    char *ret, *args;
    int since;       /* macOS major version */
} sig;

static struct {
    sig *rows;
    size_t n;
    int loaded;
} T;

#ifndef VZ_SDK_TSV
#define VZ_SDK_TSV "tests/vz-sdk/selectors.tsv"
#endif

static struct {
    rec **all;
    size_t n, cap;
    int next_id;
    char *log;
    size_t len, cap_log;
    int depth;
    rec **arp; /* autoreleased objects; pools hold an index into it */
    size_t narp, cap_arp;
    int pools; /* pools open */
    struct {
        char *sel, *msg;
    } fails[16];
    size_t nfails;
    char *absent[16];
    size_t nabsent;
    struct {
        char *sel, *msg;
    } raises[8], hangs[8];
    size_t nraises, nhangs;
    struct {
        char *sel;
        long ms;
    } delays[8];
    size_t ndelays;
    rec *last_vm;
    int host;        /* the macOS major version pretended; 0: newest */
    long shutdown_ms; /* a guest asked to stop stops after this; <0: never */
    FILE *live;      /* VZREC_LOG: every line also goes here as it is made */
    long install_ms; /* how long a macOS install takes (VZREC_INSTALL_MS) */
    int events_noted; /* oc_run_events said so once */
    long rosetta;    /* +[VZLinuxRosettaDirectoryShare availability]: 0 unsupported,
                        1 not installed, 2 installed (VZREC_ROSETTA) */
} R;

static pthread_mutex_t L = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t C = PTHREAD_COND_INITIALIZER; /* any task finished */
static __thread rec *tl_queue;                      /* the queue this thread is */
static __thread jmp_buf *tl_catch;                  /* innermost oc_guard frame */
static __thread char tl_raised[512];

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void add_failure(const char *sel, const char *message);
static void check_caught(void);

/* VZREC_FAIL="selector=message" queues a failure (as oc_record_fail), for
 * build/strata-vzsim; VZREC_INSTALL_MS is how long an install takes */
static void env_hooks(void)
{
    const char *e = getenv("VZREC_FAIL");
    const char *eq = e ? strchr(e, '=') : NULL;
    if (eq) {
        char *sel = strndup(e, (size_t)(eq - e));
        if (!sel)
            abort();
        add_failure(sel, eq + 1);
        free(sel);
    }
    e = getenv("VZREC_INSTALL_MS");
    R.install_ms = e ? atol(e) : 40;
    e = getenv("VZREC_ROSETTA");
    R.rosetta = e ? atol(e) : 2;
}

/* what the environment asks, read before anything else */
static void init_globals(void)
{
    const char *e = getenv("VZREC_HOST_MACOS");
    R.host = e ? atoi(e) : 0;
    e = getenv("VZREC_SHUTDOWN_MS");
    R.shutdown_ms = e ? atol(e) : -1;
    e = getenv("VZREC_LOG");
    if (e && *e)
        R.live = fopen(e, "a");
    env_hooks();
}

#define LOCK() (pthread_once(&once, init_globals), pthread_mutex_lock(&L))
#define UNLOCK() pthread_mutex_unlock(&L)

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
    if (R.live) {
        fprintf(R.live, "%*s%s\n", R.depth * 2, "", line);
        fflush(R.live);
    }
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

/* ---------- queues: a thread each ---------- */

typedef struct task {
    void (*fn)(void *);   /* run without L */
    void *ctx;
    long due_ms;          /* not before (monotonic ms) */
    int done, raised;
    int heap; /* posted and forgotten: freed once it ran */
    char why[512];
    struct task *next;
} task;

typedef struct worker {
    pthread_t thread;
    pthread_cond_t wake;
    task *head;
    int quit;
    rec *q;
} worker;

static long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

/* with L held: the first task that is due, unlinked, or NULL with the wait;
 * due tasks run in the order posted (a serial queue) */
static task *next_due(worker *w, long *wait_ms)
{
    long now = now_ms();
    *wait_ms = -1;
    for (task **p = &w->head; *p; p = &(*p)->next) {
        if ((*p)->due_ms <= now) {
            task *t = *p;
            *p = t->next;
            return t;
        }
        /* an item not yet due is a dispatch_after (a handler the framework
         * calls when its work ends): it holds nothing up meanwhile */
        long left = (*p)->due_ms - now;
        if (*wait_ms < 0 || left < *wait_ms)
            *wait_ms = left;
    }
    return NULL;
}

/* without L: the task's function, catching what it raises (a frame of its
 * own, so nothing of the caller's lives across the longjmp) */
static void run_task(task *t)
{
    jmp_buf here, *saved = tl_catch;
    tl_catch = &here;
    if (setjmp(here) == 0) {
        t->fn(t->ctx);
    } else {
        t->raised = 1;
        snprintf(t->why, sizeof t->why, "%s", tl_raised);
        LOCK();
        check_caught();
        UNLOCK();
    }
    tl_catch = saved;
}

static void *worker_main(void *p)
{
    worker *w = p;
    tl_queue = w->q;
    LOCK();
    for (;;) {
        long wait_ms;
        task *t = next_due(w, &wait_ms);
        if (!t && w->quit)
            break;
        if (!t) {
            if (wait_ms < 0) {
                pthread_cond_wait(&w->wake, &L);
            } else {
                struct timespec until;
                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_sec += wait_ms / 1000;
                until.tv_nsec += (wait_ms % 1000) * 1000000L;
                if (until.tv_nsec >= 1000000000L) {
                    until.tv_sec++;
                    until.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&w->wake, &L, &until);
            }
            continue;
        }
        UNLOCK();
        run_task(t);
        LOCK();
        t->done = 1;
        if (t->heap)
            free(t);
        pthread_cond_broadcast(&C);
    }
    UNLOCK();
    return NULL;
}

/* with L held */
static void post(rec *q, task *t, long delay_ms)
{
    worker *w = q->worker;
    t->due_ms = now_ms() + delay_ms;
    t->next = NULL;
    task **p = &w->head;
    while (*p)
        p = &(*p)->next;
    *p = t;
    pthread_cond_signal(&w->wake);
}

/* with L held; the task was posted by this thread: wait till it ran */
static void wait_done(task *t)
{
    while (!t->done)
        pthread_cond_wait(&C, &L);
}

/* with L held: stop a queue's thread, dropping what it has not run */
static void stop_worker(rec *q)
{
    worker *w = q->worker;
    if (!w)
        return;
    w->quit = 1;
    for (task *t = w->head, *n; t; t = n) {
        n = t->next;
        if (t->heap)
            free(t); /* a handler nobody waits for any more, a timer */
        else
            t->done = -1;
    }
    w->head = NULL;
    pthread_cond_signal(&w->wake);
    UNLOCK();
    pthread_join(w->thread, NULL);
    LOCK();
    pthread_cond_destroy(&w->wake);
    free(w);
    q->worker = NULL;
}

static void load_table(void);

/* a guest that was asked to stop has shut down */
static void guest_stopped(void *p)
{
    rec *vm = p;
    LOCK();
    vm->state = 0;
    emit("# the guest of VZVirtualMachine#%d shut down", vm->id);
    UNLOCK();
}

void oc_record_reset(void)
{
    LOCK();
    for (size_t i = 0; i < R.n; i++)
        if (R.all[i]->kind == K_QUEUE)
            stop_worker(R.all[i]);
    for (size_t i = 0; i < R.n; i++)
        free_rec(R.all[i]);
    free(R.all);
    free(R.log);
    free(R.arp);
    for (size_t i = 0; i < R.nfails; i++) {
        free(R.fails[i].sel);
        free(R.fails[i].msg);
    }
    for (size_t i = 0; i < R.nraises; i++) {
        free(R.raises[i].sel);
        free(R.raises[i].msg);
    }
    for (size_t i = 0; i < R.nhangs; i++)
        free(R.hangs[i].sel);
    for (size_t i = 0; i < R.ndelays; i++)
        free(R.delays[i].sel);
    for (size_t i = 0; i < R.nabsent; i++)
        free(R.absent[i]);
    FILE *live = R.live;
    memset(&R, 0, sizeof R);
    R.live = live;
    R.shutdown_ms = -1;
    const char *e = getenv("VZREC_HOST_MACOS");
    R.host = e ? atoi(e) : 0;
    e = getenv("VZREC_SHUTDOWN_MS");
    if (e)
        R.shutdown_ms = atol(e);
    env_hooks();
    UNLOCK();
}

/* with L held */
static void add_failure(const char *sel, const char *message)
{
    if (R.nfails == sizeof R.fails / sizeof R.fails[0])
        abort();
    R.fails[R.nfails].sel = dup_or_die(sel);
    R.fails[R.nfails].msg = dup_or_die(message);
    R.nfails++;
}

void oc_record_fail(const char *sel, const char *message)
{
    LOCK();
    add_failure(sel, message);
    UNLOCK();
}

void oc_record_raise(const char *sel, const char *reason)
{
    LOCK();
    if (R.nraises == sizeof R.raises / sizeof R.raises[0])
        abort();
    R.raises[R.nraises].sel = dup_or_die(sel);
    R.raises[R.nraises].msg = dup_or_die(reason);
    R.nraises++;
    UNLOCK();
}

void oc_record_hang(const char *sel)
{
    LOCK();
    if (R.nhangs == sizeof R.hangs / sizeof R.hangs[0])
        abort();
    R.hangs[R.nhangs].sel = dup_or_die(sel);
    R.nhangs++;
    UNLOCK();
}

void oc_record_delay(const char *sel, long ms)
{
    LOCK();
    if (R.ndelays == sizeof R.delays / sizeof R.delays[0])
        abort();
    R.delays[R.ndelays].sel = dup_or_die(sel);
    R.delays[R.ndelays].ms = ms;
    R.ndelays++;
    UNLOCK();
}

/* with L held: the delay asked for sel's next handler, or fallback */
static long take_delay(const char *sel, long fallback)
{
    for (size_t i = 0; i < R.ndelays; i++)
        if (!strcmp(R.delays[i].sel, sel)) {
            long ms = R.delays[i].ms;
            free(R.delays[i].sel);
            memmove(&R.delays[i], &R.delays[i + 1], (R.ndelays - i - 1) * sizeof R.delays[0]);
            R.ndelays--;
            return ms;
        }
    return fallback;
}

void oc_record_rosetta(long availability)
{
    LOCK();
    R.rosetta = availability;
    UNLOCK();
}

void oc_record_host(int macos_major)
{
    LOCK();
    R.host = macos_major;
    UNLOCK();
}

void oc_record_guest_stops_after(long ms)
{
    LOCK();
    R.shutdown_ms = ms;
    UNLOCK();
}

void oc_record_absent(const char *name)
{
    LOCK();
    if (R.nabsent == sizeof R.absent / sizeof R.absent[0])
        abort();
    R.absent[R.nabsent++] = dup_or_die(name);
    UNLOCK();
}

void oc_record_set_vm_state(long state)
{
    LOCK();
    if (R.last_vm) {
        R.last_vm->state = state;
        emit("# test: VZVirtualMachine#%d state is now %ld", R.last_vm->id, state);
    }
    UNLOCK();
}

int oc_record_leaks(char *buf, size_t len)
{
    LOCK();
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
    UNLOCK();
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

/* ---------- the signature oracle ---------- */

static char *field_dup(char **p)
{
    char *tab = strchr(*p, '\t');
    size_t n = tab ? (size_t)(tab - *p) : strcspn(*p, "\n");
    char *f = strndup(*p, n);
    if (!f)
        abort();
    *p += n + (tab ? 1 : 0);
    return f;
}

static void load_table(void)
{
    if (T.loaded)
        return;
    const char *path = getenv("VZREC_SDK");
    path = path && *path ? path : VZ_SDK_TSV;
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "objc_record: no SDK table %s: %s\n", path, strerror(errno));
        abort();
    }
    char line[1024];
    size_t cap = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (T.n == cap) {
            cap = cap ? cap * 2 : 256;
            T.rows = realloc(T.rows, cap * sizeof *T.rows);
            if (!T.rows)
                abort();
        }
        sig *r = &T.rows[T.n++];
        char *p = line, *kind = field_dup(&p);
        r->kind = !strcmp(kind, "class") ? 'c' : kind[0];
        free(kind);
        r->cls = field_dup(&p);
        r->sel = field_dup(&p);
        if (r->kind == 'c') {
            r->ret = dup_or_die("");
            r->args = dup_or_die("");
        } else {
            r->ret = field_dup(&p);
            r->args = field_dup(&p);
        }
        char *v = field_dup(&p);
        r->since = atoi(v);
        free(v);
    }
    fclose(f);
    T.loaded = 1;
}

static const sig *class_row(const char *cls)
{
    load_table();
    for (size_t i = 0; i < T.n; i++)
        if (T.rows[i].kind == 'c' && !strcmp(T.rows[i].cls, cls))
            return &T.rows[i];
    return NULL;
}

/* the row for kind ('+' or '-') cls sel, on cls or a superclass; an 'x'
 * row on the way wins (unavailable there) */
static const sig *method_row(char kind, const char *cls, const char *sel)
{
    for (const sig *c = class_row(cls); c; c = class_row(c->sel)) {
        for (size_t i = 0; i < T.n; i++) {
            const sig *r = &T.rows[i];
            if ((r->kind == kind || r->kind == 'x') && !strcmp(r->cls, c->cls) && !strcmp(r->sel, sel))
                return r;
        }
        if (!strcmp(c->sel, "-"))
            break;
    }
    return NULL;
}

static int host_has(int since)
{
    return !R.host || since <= R.host;
}

/*
 * Check a message against the SDK table: the target (class or instance),
 * the selector, its shape (return and argument encodings) and, on a host
 * pretending an older macOS, that it exists there. "!!" lines say what is
 * wrong. ret/args are the shape the bridge sends it with.
 */
static void check_sig(const rec *recv, const char *sel, const char *ret, const char *args)
{
    if (!recv || (recv->kind != K_CLASS && recv->kind != K_OBJ && recv->kind != K_URL &&
                  recv->kind != K_STR))
        return;
    char kind = recv->kind == K_CLASS ? '+' : '-';
    const char *cls = recv->cls;
    if (!class_row(cls)) {
        emit("!! %c[%s %s]: no class %s in Apple's SDK (tests/vz-sdk/selectors.tsv)", kind, cls,
             sel, cls);
        return;
    }
    const sig *r = method_row(kind, cls, sel);
    if (!r) {
        const sig *other = method_row(kind == '+' ? '-' : '+', cls, sel);
        emit("!! %c[%s %s]: %s", kind, cls, sel,
             other ? (kind == '+' ? "an instance method, sent to the class"
                                  : "a class method, sent to an instance")
                   : "not in Apple's SDK (tests/vz-sdk/selectors.tsv)");
        return;
    }
    if (r->kind == 'x') {
        emit("!! %c[%s %s]: unavailable on %s (NS_UNAVAILABLE)", kind, cls, sel, cls);
        return;
    }
    if (strcmp(r->ret, ret) || strcmp(r->args, args))
        emit("!! %c[%s %s] sent as (%s; %s), but Apple's SDK has (%s; %s)", kind, cls, sel, ret,
             args, r->ret, r->args);
    if (!host_has(r->since))
        emit("!! %c[%s %s] arrived in macOS %d; this host is macOS %d", kind, cls, sel, r->since,
             R.host);
}

/* a helper of boot/objc.h that sends a fixed message in objc_apple.c:
 * the table must have it with that shape */
static void check_fixed(char kind, const char *cls, const char *sel, const char *ret, const char *args)
{
    rec r = {.kind = kind == '+' ? K_CLASS : K_OBJ, .cls = (char *)cls};
    check_sig(&r, sel, ret, args);
}

/* ---------- exceptions on demand ---------- */

/* with L held: what boot/objc_try.m sends the exception it caught (it is
 * not built here), checked against the table like the bridge's other fixed
 * messages */
static void check_caught(void)
{
    check_fixed('-', "NSException", "isKindOfClass:", "B", "@");
    check_fixed('-', "NSException", "name", "@", "-");
    check_fixed('-', "NSException", "reason", "@", "-");
    check_fixed('-', "NSString", "UTF8String", "r*", "-");
}

/* with L held: if sel is to raise, record it and unwind to the innermost
 * oc_guard (or queue task) of this thread, releasing L */
static void maybe_raise(const char *sel)
{
    for (size_t i = 0; i < R.nraises; i++) {
        if (strcmp(R.raises[i].sel, sel))
            continue;
        snprintf(tl_raised, sizeof tl_raised, "NSInvalidArgumentException: %s", R.raises[i].msg);
        free(R.raises[i].sel);
        free(R.raises[i].msg);
        memmove(&R.raises[i], &R.raises[i + 1], (R.nraises - i - 1) * sizeof R.raises[0]);
        R.nraises--;
        emit("!> %s raised %s", sel, tl_raised);
        if (!tl_catch) {
            emit("!! uncaught Objective-C exception from %s: the process would crash", sel);
            fprintf(stderr, "%s", R.log);
            abort();
        }
        UNLOCK();
        longjmp(*tl_catch, 1);
    }
}

static int take_hang(const char *sel)
{
    for (size_t i = 0; i < R.nhangs; i++)
        if (!strcmp(R.hangs[i].sel, sel)) {
            free(R.hangs[i].sel);
            memmove(&R.hangs[i], &R.hangs[i + 1], (R.nhangs - i - 1) * sizeof R.hangs[0]);
            R.nhangs--;
            return 1;
        }
    return 0;
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

static void msg_begin(msg *m, objc_id obj, const char *sel, const char *ret, const char *args)
{
    maybe_raise(sel);
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
    if (m->recv && m->recv->vm && m->recv->queue != tl_queue)
        emit("!! VZVirtualMachine#%d sent %s off its queue", m->recv->id, sel);
    /* Apple: the installer is used on its virtual machine's queue */
    if (m->recv && m->recv->owner && !strcmp(m->recv->cls, "VZMacOSInstaller") &&
        m->recv->owner->queue != tl_queue)
        emit("!! VZMacOSInstaller#%d sent %s off its VM's queue", m->recv->id, sel);
    check_sig(m->recv, sel, ret, args);
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

/* Apple's plists, as dataRepresentation makes them for a Mac's hardware
 * model and machine identifier (the store reads both on import) */
static rec *plist_data(const char *cls)
{
    static unsigned long serial;
    char text[1024];
    const char *head = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC "
                       "\"-//Apple//DTD PLIST 1.0//EN\" "
                       "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">\n";
    if (!strcmp(cls, "VZMacHardwareModel")) {
        snprintf(text, sizeof text,
                 "%s<dict><key>DataRepresentationVersion</key><integer>1</integer>"
                 "<key>MinimumSupportedOS</key><array><integer>14</integer><integer>0</integer>"
                 "<integer>0</integer></array><key>PlatformVersion</key><integer>2</integer>"
                 "</dict>\n</plist>\n", head);
    } else {
        /* a fresh identity: unique across processes, below 2^63 */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        unsigned long long ecid = ((unsigned long long)now.tv_sec * 1000000000ULL +
                                   (unsigned long long)now.tv_nsec) ^
                                  ((unsigned long long)getpid() << 40) ^ (++serial << 20);
        snprintf(text, sizeof text, "%s<dict><key>ECID</key><integer>%llu</integer></dict>\n</plist>\n",
                 head, ecid & 0x7fffffffffffffffULL);
    }
    rec *r = new_rec(K_OBJ, "NSData");
    r->is_data = 1;
    r->bytes = (unsigned char *)dup_or_die(text);
    r->nbytes = strlen(text);
    return r;
}

/* The URL +fetchLatestSupportedWithCompletionHandler: finds (VZREC_LATEST_URL) */
static const char *latest_url(void)
{
    const char *e = getenv("VZREC_LATEST_URL");
    return e && *e ? e
                   : "https://updates.cdn-apple.com/2026SummerFCS/fullrestores/000-00000/"
                     "UniversalMac_27.0_26A000_Restore.ipsw";
}

/* What the messages of the macOS install path return: objects of the
 * classes Apple's headers name, or NULL for anything else. */
static rec *typed_result(rec *recv, const char *sel)
{
    static const struct {
        const char *cls, *sel, *result;
    } typed[] = {
        {"VZMacOSRestoreImage", "mostFeaturefulSupportedConfiguration", "VZMacOSConfigurationRequirements"},
        {"VZMacOSConfigurationRequirements", "hardwareModel", "VZMacHardwareModel"},
        {"VZMacOSInstaller", "progress", "NSProgress"},
    };
    for (size_t i = 0; i < sizeof typed / sizeof typed[0]; i++)
        if (!strcmp(recv->cls, typed[i].cls) && !strcmp(sel, typed[i].sel)) {
            rec *r = new_rec(K_OBJ, typed[i].result);
            if (!strcmp(sel, "progress"))
                r->owner = recv;
            return r;
        }
    if (!strcmp(sel, "dataRepresentation") &&
        (!strcmp(recv->cls, "VZMacHardwareModel") || !strcmp(recv->cls, "VZMacMachineIdentifier")))
        return plist_data(recv->cls);
    if (!strcmp(recv->cls, "VZMacOSRestoreImage") && !strcmp(sel, "URL")) {
        rec *r = new_rec(K_URL, "NSURL");
        r->text = dup_or_die(recv->text);
        r->remote = recv->remote;
        return r;
    }
    if (!strcmp(recv->cls, "VZMacOSRestoreImage") && !strcmp(sel, "buildVersion")) {
        rec *r = new_rec(K_STR, "NSString");
        r->text = dup_or_die("26A000");
        return r;
    }
    if (recv->kind == K_URL && !strcmp(sel, "absoluteString")) {
        rec *r = new_rec(K_STR, "NSString");
        if (recv->remote)
            r->text = dup_or_die(recv->text);
        else if (asprintf(&r->text, "file://%s", recv->text) < 0)
            abort();
        return r;
    }
    return NULL;
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
    rec *typed = typed_result(recv, m->sel);
    if (typed)
        return typed;
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
        /* unique across processes too, as a fresh identifier is */
        static unsigned long serial;
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        snprintf(text, sizeof text, "%s#%d data representation %ld.%09ld.%d.%lu\n", recv->cls,
                 recv->id, (long)now.tv_sec, now.tv_nsec, (int)getpid(), ++serial);
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

/* The class, as the runtime would give it: NULL if absent on this host
 * (oc_record_absent, or newer than oc_record_host). A name Apple's SDK
 * doesn't have is a misuse. */
objc_id oc_class(const char *name)
{
    LOCK();
    rec *r = NULL;
    const sig *row = class_row(name);
    if (!row)
        emit("!! objc_getClass(\"%s\"): no such class in Apple's SDK (tests/vz-sdk/selectors.tsv)", name);
    if (row && !is_absent(name) && host_has(row->since)) {
        for (size_t i = 0; i < R.n && !r; i++)
            if (R.all[i]->kind == K_CLASS && !strcmp(R.all[i]->cls, name))
                r = R.all[i];
        if (!r)
            r = new_rec(K_CLASS, name);
    }
    UNLOCK();
    return r;
}

/* with L held */
static int responds(const char *cls, char kind, const char *sel)
{
    const sig *r = method_row(kind, cls, sel);
    return r && r->kind != 'x' && host_has(r->since) && !is_absent(sel);
}

int oc_responds(objc_id obj, const char *sel)
{
    LOCK();
    rec *r = find(obj);
    int yes = r && (r->kind == K_CLASS || r->kind == K_OBJ) &&
              responds(r->cls, r->kind == K_CLASS ? '+' : '-', sel);
    UNLOCK();
    return yes;
}

int oc_instances_respond(objc_id cls, const char *sel)
{
    LOCK();
    rec *r = find(cls);
    if (r && r->kind != K_CLASS)
        emit("!! class_respondsToSelector given an instance (%s#%d)", r->cls, r->id);
    int yes = r && r->kind == K_CLASS && responds(r->cls, '-', sel);
    UNLOCK();
    return yes;
}

/* Run fn(ctx), catching what the stand-in raises (oc_record_raise). */
int oc_guard(void (*fn)(void *), void *ctx, char *why, size_t len)
{
    jmp_buf here, *saved = tl_catch;
    if (len)
        why[0] = 0;
    tl_catch = &here;
    if (setjmp(here) != 0) {
        tl_catch = saved;
        snprintf(why, len, "%s", tl_raised);
        LOCK();
        check_caught();
        UNLOCK();
        return -1;
    }
    fn(ctx);
    tl_catch = saved;
    return 0;
}

objc_id oc_send(objc_id obj, const char *sel)
{
    msg m;
    int failed = 0;
    LOCK();
    msg_begin(&m, obj, sel, "@", "-");
    rec *r = plain_result(&m, &failed);
    msg_end_obj(&m, r, NULL);
    UNLOCK();
    return r;
}

objc_id oc_send_id(objc_id obj, const char *sel, objc_id a)
{
    msg m;
    int failed = 0;
    LOCK();
    msg_begin(&m, obj, sel, "@", "@");
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
    } else if (m.recv && m.recv->kind == K_CLASS && !strcmp(sel, "URLWithString:")) {
        char *why = take_failure(sel);
        if (!why && arg && arg->kind == K_STR) { /* a URL of any scheme, as given */
            r = new_rec(K_URL, "NSURL");
            r->text = dup_or_die(arg->text);
            r->remote = 1;
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
    UNLOCK();
    return r;
}

objc_id oc_send_id_id(objc_id obj, const char *sel, objc_id a, objc_id b)
{
    msg m;
    int failed = 0;
    LOCK();
    msg_begin(&m, obj, sel, "@", "@,@");
    arg_obj(&m, a);
    arg_obj(&m, b);
    rec *r = plain_result(&m, &failed);
    if (r && !strcmp(sel, "initWithVirtualMachine:restoreImageURL:")) {
        rec *vm = find(a), *url = find(b);
        r->owner = vm;
        if (!vm || !vm->vm)
            emit("!! VZMacOSInstaller#%d made without a VZVirtualMachine", r->id);
        else if (vm->queue != tl_queue)
            emit("!! VZMacOSInstaller#%d made off its VM's queue", r->id);
        if (!url || url->kind != K_URL || url->remote)
            emit("!! VZMacOSInstaller#%d needs a file URL (Apple raises otherwise)", r->id);
    }
    if (r && !strcmp(sel, "initWithConfiguration:queue:")) {
        rec *q = find(b);
        r->vm = 1;
        r->state = 0;
        r->queue = q;
        R.last_vm = r;
        if (!q || q->kind != K_QUEUE)
            emit("!! %s#%d made without a dispatch queue", r->cls, r->id);
        else if (q != tl_queue)
            emit("!! %s#%d made off its queue", r->cls, r->id);
    }
    msg_end_obj(&m, r, NULL);
    UNLOCK();
    return r;
}

objc_id oc_send_id_bool(objc_id obj, const char *sel, objc_id a, int b)
{
    msg m;
    int failed = 0;
    LOCK();
    msg_begin(&m, obj, sel, "@", "@,B");
    arg_obj(&m, a);
    arg_bool(&m, b);
    rec *r = plain_result(&m, &failed);
    msg_end_obj(&m, r, NULL);
    UNLOCK();
    return r;
}

objc_id oc_send_i64_i64(objc_id obj, const char *sel, int64_t a, int64_t b)
{
    msg m;
    int failed = 0;
    LOCK();
    msg_begin(&m, obj, sel, "@", "q,q");
    arg_int(&m, a);
    arg_int(&m, b);
    rec *r = plain_result(&m, &failed);
    msg_end_obj(&m, r, NULL);
    UNLOCK();
    return r;
}

objc_id oc_send_i64_i64_i64(objc_id obj, const char *sel, int64_t a, int64_t b, int64_t c)
{
    msg m;
    int failed = 0;
    LOCK();
    msg_begin(&m, obj, sel, "@", "q,q,q");
    arg_int(&m, a);
    arg_int(&m, b);
    arg_int(&m, c);
    rec *r = plain_result(&m, &failed);
    msg_end_obj(&m, r, NULL);
    UNLOCK();
    return r;
}

/* The result of an initializer that takes a file URL and an error out:
 * a failure queued for the selector, or a file that can't be opened with
 * access mode `mode` (0: not checked), is the error; an init returns its
 * receiver, anything else a new object. Ends the message. */
static rec *init_with_file(msg *m, const char *sel, rec *url, int mode, objc_id *error_out)
{
    rec *r = NULL, *err = NULL;
    char *why = take_failure(sel);
    if (why) {
        err = make_error(why);
        free(why);
    } else if (mode && url && url->kind == K_URL && access(url->text, mode) != 0) {
        char text[4200];
        snprintf(text, sizeof text, "The file \"%s\" couldn't be opened: %s", url->text,
                 strerror(errno));
        err = make_error(text);
    } else if (m->recv && m->recv->kind == K_OBJ && starts(sel, "init")) {
        r = m->recv;
    } else if (m->recv) {
        r = new_rec(K_OBJ, "NSObject");
    }
    if (!r && m->recv && m->recv->kind == K_OBJ)
        m->recv->rc = 0;
    if (error_out)
        *error_out = err;
    msg_end_obj(m, r, err);
    return r;
}

objc_id oc_send_id_bool_i64_i64_err(objc_id obj, const char *sel, objc_id a, int b, int64_t c,
                                    int64_t d, objc_id *error_out)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "@", "@,B,q,q,^@");
    arg_obj(&m, a);
    arg_bool(&m, b);
    arg_int(&m, c);
    arg_int(&m, d);
    arg_raw(&m, "&error");
    rec *r = init_with_file(&m, sel, find(a), b ? R_OK : R_OK | W_OK, error_out);
    UNLOCK();
    return r;
}

objc_id oc_send_id_bool_err(objc_id obj, const char *sel, objc_id a, int b, objc_id *error_out)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "@", "@,B,^@");
    arg_obj(&m, a);
    arg_bool(&m, b);
    arg_raw(&m, "&error");
    int mode = !strcmp(sel, "initWithURL:append:error:") ? W_OK : 0;
    rec *r = init_with_file(&m, sel, find(a), mode, error_out);
    UNLOCK();
    return r;
}

objc_id oc_send_err(objc_id obj, const char *sel, objc_id *error_out)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "@", "^@");
    arg_raw(&m, "&error");
    rec *r = init_with_file(&m, sel, NULL, 0, error_out);
    UNLOCK();
    return r;
}

/* an NBD attachment: the URL is not a file; a failure queued is the error */
objc_id oc_send_id_f64_bool_i64_err(objc_id obj, const char *sel, objc_id a, double b, int c,
                                    int64_t d, objc_id *error_out)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "@", "@,d,B,q,^@");
    arg_obj(&m, a);
    msg_piece(&m);
    sb_add(&m.line, "%g", b);
    arg_bool(&m, c);
    arg_int(&m, d);
    arg_raw(&m, "&error");
    rec *r = init_with_file(&m, sel, find(a), 0, error_out);
    UNLOCK();
    return r;
}

void oc_send_void_id(objc_id obj, const char *sel, objc_id a)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "v", "@");
    arg_obj(&m, a);
    msg_end(&m, NULL);
    UNLOCK();
}

void oc_send_void_u64(objc_id obj, const char *sel, uint64_t a)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "v", "Q");
    msg_piece(&m);
    sb_add(&m.line, "%llu", (unsigned long long)a);
    msg_end(&m, NULL);
    UNLOCK();
}

int oc_send_bool(objc_id obj, const char *sel)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "B", "-");
    char *why = take_failure(sel);
    int ok = !why && !m.nil_recv;
    free(why);
    msg_end_bool(&m, ok, NULL);
    UNLOCK();
    return ok;
}

int oc_send_bool_err(objc_id obj, const char *sel, objc_id *error_out)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "B", "^@");
    arg_raw(&m, "&error");
    rec *err = NULL;
    char *why = take_failure(sel);
    if (why) {
        err = make_error(why);
        free(why);
    } else if (m.recv && m.recv->vm && !strcmp(sel, "requestStopWithError:") &&
               m.recv->state != 1) {
        err = make_error("The virtual machine is not running.");
    } else if (m.recv && m.recv->vm && !strcmp(sel, "requestStopWithError:") &&
               R.shutdown_ms >= 0 && m.recv->queue && m.recv->queue->worker) {
        /* the guest shuts down a while later, on the VM's queue */
        task *t = calloc(1, sizeof *t);
        if (!t)
            abort();
        t->fn = guest_stopped;
        t->ctx = m.recv;
        t->heap = 1;
        post(m.recv->queue, t, R.shutdown_ms);
    } else if (m.nil_recv) {
        err = make_error("message to nil");
    }
    if (error_out)
        *error_out = err;
    msg_end_bool(&m, !err, err);
    UNLOCK();
    return !err;
}

int oc_send_bool_id_err(objc_id obj, const char *sel, objc_id a, objc_id *error_out)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "B", "@,^@");
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
    UNLOCK();
    return !err;
}

int oc_send_bool_id_bool(objc_id obj, const char *sel, objc_id a, int b)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "B", "@,B");
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
    UNLOCK();
    return ok;
}

int64_t oc_send_i64(objc_id obj, const char *sel)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "q", "-");
    long long v = 0;
    if (m.recv && m.recv->vm && !strcmp(sel, "state"))
        v = m.recv->state;
    else if (m.recv && m.recv->kind == K_CLASS && !strcmp(m.recv->cls, "VZLinuxRosettaDirectoryShare") &&
             !strcmp(sel, "availability"))
        v = R.rosetta;
    char text[32];
    snprintf(text, sizeof text, "%lld", v);
    msg_end(&m, text);
    UNLOCK();
    return v;
}

uint64_t oc_send_u64(objc_id obj, const char *sel)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "Q", "-");
    unsigned long long v = 0;
    const char *e = NULL;
    if (!strcmp(sel, "minimumSupportedCPUCount"))
        v = (e = getenv("VZREC_MIN_CPUS")) ? strtoull(e, NULL, 10) : 2;
    else if (!strcmp(sel, "minimumSupportedMemorySize"))
        v = (e = getenv("VZREC_MIN_MEMORY")) ? strtoull(e, NULL, 10) : 4ULL << 30;
    char text[32];
    snprintf(text, sizeof text, "%llu", v);
    msg_end(&m, text);
    UNLOCK();
    return v;
}

/* an NSProgress of an installer: the share of the install's time gone */
double oc_send_f64(objc_id obj, const char *sel)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "d", "-");
    double v = 0;
    rec *inst = m.recv ? m.recv->owner : NULL;
    if (!strcmp(sel, "fractionCompleted") && inst && inst->t0_ms) {
        long span = R.install_ms > 0 ? R.install_ms : 1;
        v = (double)(now_ms() - inst->t0_ms) / (double)span;
        v = v > 1 ? 1 : v;
    }
    char text[32];
    snprintf(text, sizeof text, "%.2f", v);
    msg_end(&m, text);
    UNLOCK();
    return v;
}

void oc_send_void(objc_id obj, const char *sel)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "v", "-");
    msg_end(&m, NULL);
    UNLOCK();
}

void oc_send_void_bool(objc_id obj, const char *sel, int a)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "v", "B");
    arg_bool(&m, a);
    msg_end(&m, NULL);
    UNLOCK();
}

int oc_send_bool_i64(objc_id obj, const char *sel, int64_t a)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "B", "q");
    arg_int(&m, a);
    char *why = take_failure(sel);
    int ok = !why && !m.nil_recv;
    free(why);
    msg_end_bool(&m, ok, NULL);
    UNLOCK();
    return ok;
}

void oc_send_void_size(objc_id obj, const char *sel, double width, double height)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "v", "{CGSize=dd}");
    msg_piece(&m);
    sb_add(&m.line, "NSMakeSize(%g, %g)", width, height);
    msg_end(&m, NULL);
    UNLOCK();
}

/* with L held: an initializer that creates its file (aux storage, an EFI
 * variable store) of size bytes at url; option bit 0 allows overwriting */
static rec *init_creating(msg *m, rec *url, uint64_t options, off_t size, objc_id *error_out)
{
    rec *r = NULL, *err = NULL;
    char *why = take_failure(m->sel);
    if (why) {
        err = make_error(why);
        free(why);
    } else if (!url || url->kind != K_URL) {
        err = make_error("Invalid URL.");
    } else if (!(options & 1) && access(url->text, F_OK) == 0) {
        err = make_error("The file already exists.");
    } else {
        int fd = open(url->text, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || ftruncate(fd, size) < 0) {
            char text[4200];
            snprintf(text, sizeof text, "The file \"%s\" couldn't be created: %s", url->text,
                     strerror(errno));
            err = make_error(text);
        } else {
            r = m->recv;
        }
        if (fd >= 0)
            close(fd);
    }
    if (!r && m->recv && m->recv->kind == K_OBJ)
        m->recv->rc = 0;
    if (error_out)
        *error_out = err;
    msg_end_obj(m, r, err);
    return r;
}

objc_id oc_send_id_u64_err(objc_id obj, const char *sel, objc_id a, uint64_t b, objc_id *error_out)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "@", "@,Q,^@");
    arg_obj(&m, a);
    arg_int(&m, (long long)b);
    arg_raw(&m, "&error");
    rec *r = init_creating(&m, find(a), b, 128 << 10, error_out);
    UNLOCK();
    return r;
}

objc_id oc_send_id_id_u64_err(objc_id obj, const char *sel, objc_id a, objc_id b, uint64_t c,
                              objc_id *error_out)
{
    msg m;
    LOCK();
    msg_begin(&m, obj, sel, "@", "@,@,Q,^@");
    arg_obj(&m, a);
    arg_obj(&m, b);
    arg_int(&m, (long long)c);
    arg_raw(&m, "&error");
    rec *r = init_creating(&m, find(a), c, 32 << 20, error_out);
    UNLOCK();
    return r;
}

int oc_text(objc_id str, char *buf, size_t len)
{
    LOCK();
    check_fixed('-', "NSString", "UTF8String", "r*", "-");
    rec *r = find(str);
    int rc = -1;
    if (r && r->kind == K_STR && len)
        rc = (size_t)snprintf(buf, len, "%s", r->text) < len ? 0 : -1;
    else if (str && !r)
        emit("!! UTF8String sent to an unknown pointer");
    UNLOCK();
    return rc;
}

/* the window server's events: the stand-in has none, so it only waits;
 * the first call after a reset is noted. sendEvent: can be made to raise
 * (oc_record_raise), as a view's event handler may. */
static void serve_events(void *ms_p)
{
    LOCK();
    check_fixed('+', "NSApplication", "sharedApplication", "@", "-");
    check_fixed('+', "NSDate", "dateWithTimeIntervalSinceNow:", "@", "d");
    check_fixed('-', "NSApplication", "nextEventMatchingMask:untilDate:inMode:dequeue:", "@", "Q,@,@,B");
    check_fixed('-', "NSApplication", "sendEvent:", "v", "@");
    check_fixed('+', "NSDate", "distantPast", "@", "-");
    check_fixed('-', "NSApplication", "updateWindows", "v", "-");
    if (!R.events_noted) {
        R.events_noted = 1;
        emit("# NSApp: serving window events on the main thread");
    }
    maybe_raise("sendEvent:");
    UNLOCK();
    usleep(*(unsigned *)ms_p * 1000);
}

/* the bridge runs the loop inside its @try: here, oc_guard */
int oc_run_events(unsigned ms, char *why, size_t len)
{
    return oc_guard(serve_events, &ms, why, len);
}

objc_id oc_str(const char *utf8)
{
    if (!utf8)
        return NULL;
    LOCK();
    check_fixed('+', "NSString", "stringWithUTF8String:", "@", "r*");
    rec *r = new_rec(K_STR, "NSString");
    r->text = dup_or_die(utf8);
    UNLOCK();
    return r;
}

objc_id oc_url(const char *path)
{
    if (!path)
        return NULL;
    LOCK();
    check_fixed('+', "NSURL", "fileURLWithPath:", "@", "@");
    rec *r = new_rec(K_URL, "NSURL");
    r->text = dup_or_die(path);
    UNLOCK();
    return r;
}

objc_id oc_array(objc_id *items, size_t n)
{
    LOCK();
    check_fixed('+', "NSArray", "arrayWithObjects:count:", "@", "r^@,Q");
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
    UNLOCK();
    return r;
}

objc_id oc_dict(objc_id *keys, objc_id *values, size_t n)
{
    LOCK();
    check_fixed('+', "NSDictionary", "dictionaryWithObjects:forKeys:count:", "@", "r^@,r^@,Q");
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
    UNLOCK();
    return r;
}

void oc_error_text(objc_id error, char *buf, size_t len)
{
    LOCK();
    check_fixed('-', "NSError", "localizedDescription", "@", "-");
    check_fixed('-', "NSError", "localizedFailureReason", "@", "-");
    check_fixed('-', "NSError", "domain", "@", "-");
    check_fixed('-', "NSError", "code", "q", "-");
    check_fixed('-', "NSString", "UTF8String", "r*", "-");
    rec *r = find(error);
    snprintf(buf, len, "%s", r && r->kind == K_ERROR ? r->text : "no reason given");
    UNLOCK();
}

/* with L held */
static void release_locked(rec *r)
{
    if (r && r->kind == K_OBJ && --r->rc < 0)
        emit("!! %s#%d released more than it was owned", r->cls, r->id);
}

objc_id oc_retain(objc_id obj)
{
    LOCK();
    check_fixed('-', "NSObject", "retain", "@", "-");
    rec *r = find(obj);
    if (r)
        r->rc++;
    UNLOCK();
    return obj;
}

void oc_release(objc_id obj)
{
    LOCK();
    check_fixed('-', "NSObject", "release", "v", "-");
    release_locked(find(obj));
    UNLOCK();
}

objc_id oc_autorelease(objc_id obj)
{
    LOCK();
    check_fixed('-', "NSObject", "autorelease", "@", "-");
    rec *r = find(obj);
    if (r) {
        if (!R.pools)
            emit("!! %s#%d autoreleased with no pool", r->cls, r->id);
        if (R.narp == R.cap_arp) {
            R.cap_arp = R.cap_arp ? R.cap_arp * 2 : 64;
            R.arp = realloc(R.arp, R.cap_arp * sizeof *R.arp);
            if (!R.arp)
                abort();
        }
        R.arp[R.narp++] = r;
    }
    UNLOCK();
    return obj;
}

/* with L held */
static rec *pool_push_locked(void)
{
    check_fixed('+', "NSAutoreleasePool", "alloc", "@", "-");
    check_fixed('-', "NSAutoreleasePool", "init", "@", "-");
    rec *p = new_rec(K_POOL, "NSAutoreleasePool");
    p->mark = R.narp;
    R.pools++;
    return p;
}

static void pool_pop_locked(rec *p)
{
    check_fixed('-', "NSAutoreleasePool", "drain", "v", "-");
    if (!p || p->kind != K_POOL) {
        emit("!! oc_pool_pop of something not a pool");
        return;
    }
    while (R.narp > p->mark)
        release_locked(R.arp[--R.narp]);
    R.pools--;
}

objc_id oc_pool_push(void)
{
    LOCK();
    rec *p = pool_push_locked();
    UNLOCK();
    return p;
}

void oc_pool_pop(objc_id pool)
{
    LOCK();
    pool_pop_locked(find(pool));
    UNLOCK();
}

objc_id oc_queue(const char *label)
{
    LOCK();
    rec *q = new_rec(K_QUEUE, "dispatch_queue");
    q->rc = 1;
    worker *w = calloc(1, sizeof *w);
    if (!w)
        abort();
    w->q = q;
    pthread_cond_init(&w->wake, NULL);
    q->worker = w;
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        abort();
    emit("dispatch_queue_create(\"%s\", DISPATCH_QUEUE_SERIAL) -> dispatch_queue#%d", label, q->id);
    UNLOCK();
    return q;
}

void oc_queue_release(objc_id queue)
{
    LOCK();
    rec *q = find(queue);
    if (!q || q->kind != K_QUEUE) {
        emit("!! dispatch_release of something not a queue");
    } else {
        q->rc--;
        emit("dispatch_release(dispatch_queue#%d)", q->id);
        if (q->rc == 0)
            stop_worker(q);
    }
    UNLOCK();
}

/* ---------- work on a queue's thread ---------- */

struct sync_call {
    void (*fn)(void *);
    void *ctx;
};

/* a dispatch_sync_f item: the driver's function inside a pool */
static void run_sync(void *p)
{
    struct sync_call *c = p;
    LOCK();
    rec *pool = pool_push_locked();
    UNLOCK();
    c->fn(c->ctx);
    LOCK();
    pool_pop_locked(pool);
    UNLOCK();
}

/* with L held: run fn on q's thread and wait (dispatch_sync_f); 0, or -1
 * with the raised exception in why */
static int sync_on(rec *q, void (*fn)(void *), void *ctx, char *why, size_t len)
{
    struct sync_call c = {fn, ctx};
    task t = {.fn = run_sync, .ctx = &c};
    emit("dispatch_sync_f(dispatch_queue#%d) {", q->id);
    R.depth++;
    post(q, &t, 0);
    wait_done(&t);
    R.depth--;
    emit("}");
    if (t.raised) {
        snprintf(why, len, "%s", t.why);
        return -1;
    }
    return 0;
}

int oc_on_queue(objc_id queue, void (*fn)(void *), void *ctx, char *why, size_t len)
{
    if (len)
        why[0] = 0;
    LOCK();
    rec *q = find(queue);
    int rc = -1;
    if (!q || q->kind != K_QUEUE || !q->worker) {
        emit("!! dispatch_sync_f onto something not a queue");
        snprintf(why, len, "not a queue");
    } else if (q == tl_queue) {
        emit("!! dispatch_sync_f onto dispatch_queue#%d from itself: a deadlock", q->id);
        snprintf(why, len, "deadlock");
    } else {
        rc = sync_on(q, fn, ctx, why, len);
    }
    UNLOCK();
    return rc;
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

/* A completion handler's call: made by the framework later, as an item of
 * its own on the VM's queue. */
typedef struct {
    rec *vm;
    char sel[128];
    char *problem; /* NULL: success */
    long next;
    int has_next;
    int called, abandoned; /* the handler ran; the waiter gave up */
    int with_result;       /* the block is ^(id result, NSError *error) */
    rec *result;           /* what it is given on success */
} completion;

static void run_completion(void *p)
{
    completion *c = p;
    LOCK();
    if (c->has_next && c->vm)
        c->vm->state = c->next;
    if (c->result && !c->problem)
        c->result->rc = 1; /* the bridge retains it for the caller */
    if (c->with_result) {
        sb b = {0};
        describe(&b, c->problem ? NULL : c->result);
        if (c->problem)
            emit("^ %s completion(nil, NSError(\"%s\"))", c->sel, c->problem);
        else
            emit("^ %s completion(%s, nil)", c->sel, b.s);
        free(b.s);
    } else if (c->problem) {
        emit("^ %s completion(NSError(\"%s\"))", c->sel, c->problem);
    } else {
        emit("^ %s completion(nil)", c->sel);
    }
    c->called = 1;
    pthread_cond_broadcast(&C);
    int free_it = c->abandoned;
    UNLOCK();
    if (free_it) {
        free(c->problem);
        free(c);
    }
}

struct send_req {
    rec *q;
    objc_id obj, arg;
    const char *sel;
    completion *c;
    int hang;
};

/* with L held: the outcome of the macOS install path's completion-handler
 * messages (restore images, the installer), or NULL if sel is not one;
 * *delay is when the handler comes */
static const char *install_outcome(rec *recv, const char *sel, rec *arg, completion *c, long *delay)
{
    if (!strcmp(sel, "loadFileURL:completionHandler:")) {
        if (!arg || arg->kind != K_URL || access(arg->text, R_OK) != 0)
            return "The file couldn't be opened because there is no such file.";
        c->result = new_rec(K_OBJ, "VZMacOSRestoreImage");
        c->result->text = dup_or_die(arg->text);
        return "";
    }
    if (!strcmp(sel, "installRosettaWithCompletionHandler:")) {
        if (R.rosetta == 0)
            return "Rosetta is not supported on this Mac.";
        R.rosetta = 2; /* the user agreed, and it was installed */
        return "";
    }
    if (!strcmp(sel, "fetchLatestSupportedWithCompletionHandler:")) {
        c->result = new_rec(K_OBJ, "VZMacOSRestoreImage");
        c->result->text = dup_or_die(latest_url());
        c->result->remote = 1;
        return "";
    }
    if (!strcmp(sel, "installWithCompletionHandler:") && recv && recv->owner) {
        rec *vm = recv->owner;
        if (recv->t0_ms)
            return "The installer is already installing.";
        if (vm->state != 0)
            return "Invalid virtual machine state: the installer needs a stopped VM.";
        recv->t0_ms = now_ms();
        vm->state = 1; /* the installer runs the VM */
        c->vm = vm;
        c->next = 0;
        c->has_next = 1;
        *delay = R.install_ms;
        return "";
    }
    return NULL;
}

/* the message itself, on the VM's queue: it decides the outcome and posts
 * the handler's call for later */
static void send_on_queue(void *p)
{
    struct send_req *r = p;
    msg m;
    LOCK();
    completion *c = r->c;
    msg_begin(&m, r->obj, r->sel, "v", r->arg ? "@,@?" : "@?");
    if (r->arg)
        arg_obj(&m, r->arg);
    arg_raw(&m, c->with_result ? "^(id, NSError *)" : "^(NSError *)");
    msg_end(&m, NULL);
    char *why = take_failure(r->sel);
    const char *problem = why;
    long delay = 2;
    if (!problem && m.recv && m.recv->vm) {
        problem = vm_transition(m.recv, r->sel, find(r->arg), &c->next);
        c->has_next = !problem;
    } else if (!problem && m.recv &&
               (problem = install_outcome(m.recv, r->sel, find(r->arg), c, &delay)) && !*problem) {
        problem = NULL;
    } else if (!problem && !m.recv)
        problem = "message to nil";
    c->problem = problem ? dup_or_die(problem) : NULL;
    delay = take_delay(r->sel, delay);
    if (!c->vm)
        c->vm = m.recv && m.recv->vm ? m.recv : NULL;
    free(why);
    r->hang = take_hang(r->sel);
    if (!r->hang) {
        task *t = calloc(1, sizeof *t);
        if (!t)
            abort();
        t->fn = run_completion;
        t->ctx = c;
        t->heap = 1;
        post(r->q, t, delay); /* later, and never inline */
    }
    UNLOCK();
}

static struct timespec after_ms(unsigned ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    return until;
}

typedef struct {
    void (*fn)(void *);
    void *ctx;
    unsigned ms;
    int serving; /* serve window events instead of blocking (the bridge's serving wait) */
    void (*on_event_error)(void *, const char *);
    void *error_ctx;
} ticker;

/* as the bridge's SERVE_SLICE_MS */
#define SERVE_SLICE_MS 25L

/* with L held: one slice of a serving wait for sel, L released meanwhile */
static void serve_slice(const char *sel, long ms, const ticker *tk)
{
    char why[512];
    emit("# NSApp: window events served while %s is pending", sel);
    UNLOCK();
    if (oc_run_events((unsigned)ms, why, sizeof why) != 0 && tk->on_event_error)
        tk->on_event_error(tk->error_ctx, why);
    LOCK();
}

/* with L held: wait for the handler's call, at most timeout_ms, calling
 * the ticker (without L) every tk->ms meanwhile */
static int handler_came(completion *c, unsigned timeout_ms, const ticker *tk)
{
    long end = now_ms() + timeout_ms;
    while (!c->called) {
        long left = end - now_ms();
        if (left <= 0)
            break;
        if (tk->serving) {
            serve_slice(c->sel, left < SERVE_SLICE_MS ? left : SERVE_SLICE_MS, tk);
            continue;
        }
        unsigned slice = tk->fn && tk->ms && (long)tk->ms < left ? tk->ms : (unsigned)left;
        struct timespec until = after_ms(slice);
        while (!c->called)
            if (pthread_cond_timedwait(&C, &L, &until) == ETIMEDOUT)
                break;
        if (!c->called && tk->fn && now_ms() < end) {
            UNLOCK();
            tk->fn(tk->ctx);
            LOCK();
        }
    }
    return c->called;
}

static int send_completion(objc_id queue, objc_id obj, const char *sel, objc_id arg,
                           unsigned timeout_ms, const ticker *tk, objc_id *result, char *err,
                           size_t errlen)
{
    if (errlen)
        err[0] = 0;
    if (result)
        *result = NULL;
    LOCK();
    rec *q = find(queue);
    if (!q || q->kind != K_QUEUE || !q->worker) {
        emit("!! %s: queue is not a queue (the stand-in wants every VM message on one)", sel);
        snprintf(err, errlen, "not a queue");
        UNLOCK();
        return -1;
    }
    if (q == tl_queue) {
        emit("!! %s waited for on its own dispatch_queue#%d: a deadlock", sel, q->id);
        snprintf(err, errlen, "deadlock");
        UNLOCK();
        return -1;
    }
    completion *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    snprintf(c->sel, sizeof c->sel, "%s", sel);
    c->with_result = result != NULL;
    struct send_req r = {.q = q, .obj = obj, .arg = arg, .sel = sel, .c = c};
    char raised[512];
    if (sync_on(q, send_on_queue, &r, raised, sizeof raised) != 0) {
        snprintf(err, errlen, "%s raised %s", sel, raised);
        free(c);
        UNLOCK();
        return -1;
    }
    if (!handler_came(c, timeout_ms, tk)) {
        emit("# %s: no completion in %u ms", sel, timeout_ms);
        snprintf(err, errlen, "%s: no answer in %u ms", sel, timeout_ms);
        if (r.hang) {
            free(c->problem);
            free(c);
        } else {
            c->abandoned = 1; /* the handler frees it when it comes */
        }
        UNLOCK();
        return OC_TIMED_OUT;
    }
    int rc = c->problem ? -1 : 0;
    if (c->problem)
        snprintf(err, errlen, "%s", c->problem);
    else if (result)
        *result = c->result;
    free(c->problem);
    free(c);
    UNLOCK();
    return rc;
}

int oc_send_completion(objc_id queue, objc_id obj, const char *sel, objc_id arg,
                       unsigned timeout_ms, char *err, size_t errlen)
{
    ticker none = {0};
    return send_completion(queue, obj, sel, arg, timeout_ms, &none, NULL, err, errlen);
}

int oc_send_completion_ticking(objc_id queue, objc_id obj, const char *sel, objc_id arg,
                               unsigned timeout_ms, void (*tick)(void *), void *tick_ctx,
                               unsigned tick_ms, char *err, size_t errlen)
{
    ticker tk = {.fn = tick, .ctx = tick_ctx, .ms = tick_ms};
    return send_completion(queue, obj, sel, arg, timeout_ms, &tk, NULL, err, errlen);
}

int oc_send_completion_serving(objc_id queue, objc_id obj, const char *sel, objc_id arg,
                               unsigned timeout_ms, void (*on_event_error)(void *ctx, const char *why),
                               void *ctx, char *err, size_t errlen)
{
    ticker tk = {.serving = 1, .on_event_error = on_event_error, .error_ctx = ctx};
    return send_completion(queue, obj, sel, arg, timeout_ms, &tk, NULL, err, errlen);
}

int oc_send_completion_result(objc_id queue, objc_id obj, const char *sel, objc_id arg,
                              unsigned timeout_ms, objc_id *result, char *err, size_t errlen)
{
    objc_id ignored;
    ticker none = {0};
    return send_completion(queue, obj, sel, arg, timeout_ms, &none, result ? result : &ignored,
                           err, errlen);
}
