/*
 * boot/objc.h on Apple's Objective-C runtime and libdispatch.
 *
 * Plain C, built with clang -fblocks (completion handlers are blocks) and
 * linked with -framework Foundation -framework Virtualization. Every message
 * goes through objc_msgSend cast to the exact prototype of the method it
 * calls. No ARC: ownership is by hand, as boot/objc.h says.
 *
 * Objective-C exceptions can't be caught in C: boot/objc_try.m (built
 * only on macOS, with -fobjc-exceptions) holds the one @try, oc_objc_try(),
 * and every way into the framework here goes through it (oc_guard,
 * oc_on_queue, the message of oc_send_completion).
 *
 * Off Apple platforms the same functions exist but only report that the
 * runtime is absent, so vz.c links everywhere and fails cleanly at start.
 */
#include "objc.h"

#ifdef __APPLE__

#include <dispatch/dispatch.h>
#include <mach/mach_time.h>
#include <objc/message.h>
#include <objc/runtime.h>
#include <stdio.h>
#include <string.h>

/* NSInteger and NSUInteger on the 64-bit targets Virtualization.framework has */
typedef long oc_nsint;
typedef unsigned long oc_nsuint;

#define S(name) sel_registerName(name)

/* tags every queue made here, so a call made on its own queue is caught */
static char queue_key;

/* boot/objc_try.m: fn(ctx) inside @try; -1 with "name: reason" on an exception */
int oc_objc_try(void (*fn)(void *), void *ctx, char *why, size_t len);

int oc_guard(void (*fn)(void *), void *ctx, char *why, size_t len)
{
    if (len)
        why[0] = 0;
    return oc_objc_try(fn, ctx, why, len);
}

int oc_available(void)
{
    return (void *)objc_getClass("VZVirtualMachine") != NULL &&
           (void *)objc_getClass("NSString") != NULL;
}

objc_id oc_class(const char *name)
{
    return (objc_id)objc_getClass(name);
}

int oc_responds(objc_id obj, const char *sel)
{
    if (!obj)
        return 0;
    return class_respondsToSelector(object_getClass((id)obj), S(sel)) ? 1 : 0;
}

int oc_instances_respond(objc_id cls, const char *sel)
{
    return cls && class_respondsToSelector((Class)cls, S(sel)) ? 1 : 0;
}

objc_id oc_send(objc_id obj, const char *sel)
{
    return ((id(*)(id, SEL))objc_msgSend)((id)obj, S(sel));
}

objc_id oc_send_id(objc_id obj, const char *sel, objc_id a)
{
    return ((id(*)(id, SEL, id))objc_msgSend)((id)obj, S(sel), (id)a);
}

objc_id oc_send_id_id(objc_id obj, const char *sel, objc_id a, objc_id b)
{
    return ((id(*)(id, SEL, id, id))objc_msgSend)((id)obj, S(sel), (id)a, (id)b);
}

objc_id oc_send_id_bool(objc_id obj, const char *sel, objc_id a, int b)
{
    return ((id(*)(id, SEL, id, BOOL))objc_msgSend)((id)obj, S(sel), (id)a, b ? YES : NO);
}

objc_id oc_send_i64_i64(objc_id obj, const char *sel, int64_t a, int64_t b)
{
    return ((id(*)(id, SEL, oc_nsint, oc_nsint))objc_msgSend)((id)obj, S(sel), (oc_nsint)a,
                                                              (oc_nsint)b);
}

objc_id oc_send_i64_i64_i64(objc_id obj, const char *sel, int64_t a, int64_t b, int64_t c)
{
    return ((id(*)(id, SEL, oc_nsint, oc_nsint, oc_nsint))objc_msgSend)(
        (id)obj, S(sel), (oc_nsint)a, (oc_nsint)b, (oc_nsint)c);
}

objc_id oc_send_id_bool_i64_i64_err(objc_id obj, const char *sel, objc_id a, int b, int64_t c,
                                    int64_t d, objc_id *error_out)
{
    id err = nil;
    id r = ((id(*)(id, SEL, id, BOOL, oc_nsint, oc_nsint, id *))objc_msgSend)(
        (id)obj, S(sel), (id)a, b ? YES : NO, (oc_nsint)c, (oc_nsint)d, &err);
    if (error_out)
        *error_out = (objc_id)err;
    return (objc_id)r;
}

objc_id oc_send_id_bool_err(objc_id obj, const char *sel, objc_id a, int b, objc_id *error_out)
{
    id err = nil;
    id r = ((id(*)(id, SEL, id, BOOL, id *))objc_msgSend)((id)obj, S(sel), (id)a, b ? YES : NO, &err);
    if (error_out)
        *error_out = r ? NULL : (objc_id)err;
    return (objc_id)r;
}

void oc_send_void_id(objc_id obj, const char *sel, objc_id a)
{
    ((void (*)(id, SEL, id))objc_msgSend)((id)obj, S(sel), (id)a);
}

void oc_send_void_u64(objc_id obj, const char *sel, uint64_t a)
{
    /* NSUInteger and uint64_t are both 64-bit integer registers here */
    ((void (*)(id, SEL, uint64_t))objc_msgSend)((id)obj, S(sel), a);
}

int oc_send_bool(objc_id obj, const char *sel)
{
    return ((BOOL(*)(id, SEL))objc_msgSend)((id)obj, S(sel)) ? 1 : 0;
}

int oc_send_bool_err(objc_id obj, const char *sel, objc_id *error_out)
{
    id err = nil;
    BOOL ok = ((BOOL(*)(id, SEL, id *))objc_msgSend)((id)obj, S(sel), &err);
    if (error_out)
        *error_out = ok ? NULL : (objc_id)err;
    return ok ? 1 : 0;
}

int oc_send_bool_id_err(objc_id obj, const char *sel, objc_id a, objc_id *error_out)
{
    id err = nil;
    BOOL ok = ((BOOL(*)(id, SEL, id, id *))objc_msgSend)((id)obj, S(sel), (id)a, &err);
    if (error_out)
        *error_out = ok ? NULL : (objc_id)err;
    return ok ? 1 : 0;
}

int oc_send_bool_id_bool(objc_id obj, const char *sel, objc_id a, int b)
{
    return ((BOOL(*)(id, SEL, id, BOOL))objc_msgSend)((id)obj, S(sel), (id)a, b ? YES : NO) ? 1 : 0;
}

int64_t oc_send_i64(objc_id obj, const char *sel)
{
    return (int64_t)((oc_nsint(*)(id, SEL))objc_msgSend)((id)obj, S(sel));
}

uint64_t oc_send_u64(objc_id obj, const char *sel)
{
    return (uint64_t)((oc_nsuint(*)(id, SEL))objc_msgSend)((id)obj, S(sel));
}

/* arm64 returns a double in d0 through plain objc_msgSend (no _fpret) */
double oc_send_f64(objc_id obj, const char *sel)
{
    return ((double (*)(id, SEL))objc_msgSend)((id)obj, S(sel));
}

void oc_send_void(objc_id obj, const char *sel)
{
    ((void (*)(id, SEL))objc_msgSend)((id)obj, S(sel));
}

void oc_send_void_bool(objc_id obj, const char *sel, int a)
{
    ((void (*)(id, SEL, BOOL))objc_msgSend)((id)obj, S(sel), a ? YES : NO);
}

int oc_send_bool_i64(objc_id obj, const char *sel, int64_t a)
{
    return ((BOOL(*)(id, SEL, oc_nsint))objc_msgSend)((id)obj, S(sel), (oc_nsint)a) ? 1 : 0;
}

/* CGSize as the ABI passes it: two doubles (a homogeneous aggregate) */
typedef struct {
    double width, height;
} oc_size;

void oc_send_void_size(objc_id obj, const char *sel, double width, double height)
{
    oc_size size = {width, height};
    ((void (*)(id, SEL, oc_size))objc_msgSend)((id)obj, S(sel), size);
}

objc_id oc_send_id_u64_err(objc_id obj, const char *sel, objc_id a, uint64_t b, objc_id *error_out)
{
    id err = nil;
    id r = ((id(*)(id, SEL, id, oc_nsuint, id *))objc_msgSend)((id)obj, S(sel), (id)a,
                                                               (oc_nsuint)b, &err);
    if (error_out)
        *error_out = r ? NULL : (objc_id)err;
    return (objc_id)r;
}

objc_id oc_send_id_id_u64_err(objc_id obj, const char *sel, objc_id a, objc_id b, uint64_t c,
                              objc_id *error_out)
{
    id err = nil;
    id r = ((id(*)(id, SEL, id, id, oc_nsuint, id *))objc_msgSend)((id)obj, S(sel), (id)a, (id)b,
                                                                   (oc_nsuint)c, &err);
    if (error_out)
        *error_out = r ? NULL : (objc_id)err;
    return (objc_id)r;
}

objc_id oc_send_err(objc_id obj, const char *sel, objc_id *error_out)
{
    id err = nil;
    id r = ((id(*)(id, SEL, id *))objc_msgSend)((id)obj, S(sel), &err);
    if (error_out)
        *error_out = r ? NULL : (objc_id)err;
    return (objc_id)r;
}

objc_id oc_send_id_f64_bool_i64_err(objc_id obj, const char *sel, objc_id a, double b, int c,
                                    int64_t d, objc_id *error_out)
{
    id err = nil;
    id r = ((id(*)(id, SEL, id, double, BOOL, oc_nsint, id *))objc_msgSend)(
        (id)obj, S(sel), (id)a, b, c ? YES : NO, (oc_nsint)d, &err);
    if (error_out)
        *error_out = r ? NULL : (objc_id)err;
    return (objc_id)r;
}

objc_id oc_str(const char *utf8)
{
    return ((id(*)(id, SEL, const char *))objc_msgSend)((id)objc_getClass("NSString"),
                                                         S("stringWithUTF8String:"), utf8);
}

objc_id oc_url(const char *path)
{
    id s = (id)oc_str(path);
    return s ? oc_send_id((objc_id)objc_getClass("NSURL"), "fileURLWithPath:", s) : NULL;
}

objc_id oc_array(objc_id *items, size_t n)
{
    return ((id(*)(id, SEL, const id *, oc_nsuint))objc_msgSend)(
        (id)objc_getClass("NSArray"), S("arrayWithObjects:count:"), (const id *)items, (oc_nsuint)n);
}

objc_id oc_dict(objc_id *keys, objc_id *values, size_t n)
{
    return ((id(*)(id, SEL, const id *, const id *, oc_nsuint))objc_msgSend)(
        (id)objc_getClass("NSDictionary"), S("dictionaryWithObjects:forKeys:count:"),
        (const id *)values, (const id *)keys, (oc_nsuint)n);
}

static const char *utf8_of(id s)
{
    return s ? ((const char *(*)(id, SEL))objc_msgSend)(s, S("UTF8String")) : NULL;
}

int oc_text(objc_id str, char *buf, size_t len)
{
    const char *t = utf8_of((id)str);
    if (!t || !len)
        return -1;
    return (size_t)snprintf(buf, len, "%s", t) < len ? 0 : -1;
}

/* the strings made here are autoreleased: a pool of its own, since this
 * runs off the queue too */
void oc_error_text(objc_id error, char *buf, size_t len)
{
    if (!len)
        return;
    if (!error) {
        snprintf(buf, len, "no reason given");
        return;
    }
    objc_id pool = oc_pool_push();
    const char *desc = utf8_of(((id(*)(id, SEL))objc_msgSend)((id)error, S("localizedDescription")));
    const char *why =
        utf8_of(((id(*)(id, SEL))objc_msgSend)((id)error, S("localizedFailureReason")));
    const char *domain = utf8_of(((id(*)(id, SEL))objc_msgSend)((id)error, S("domain")));
    long code = (long)((oc_nsint(*)(id, SEL))objc_msgSend)((id)error, S("code"));
    if (!desc)
        desc = why ? why : "no reason given";
    if (why && !strstr(desc, why))
        snprintf(buf, len, "%s: %s [%s %ld]", desc, why, domain ? domain : "?", code);
    else
        snprintf(buf, len, "%s [%s %ld]", desc, domain ? domain : "?", code);
    oc_pool_pop(pool);
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

objc_id oc_retain(objc_id obj)
{
    return obj ? oc_send(obj, "retain") : NULL;
}

void oc_release(objc_id obj)
{
    if (obj)
        ((void (*)(id, SEL))objc_msgSend)((id)obj, S("release"));
}

objc_id oc_autorelease(objc_id obj)
{
    return obj ? oc_send(obj, "autorelease") : NULL;
}

objc_id oc_pool_push(void)
{
    return oc_send(oc_send((objc_id)objc_getClass("NSAutoreleasePool"), "alloc"), "init");
}

void oc_pool_pop(objc_id pool)
{
    if (pool)
        ((void (*)(id, SEL))objc_msgSend)((id)pool, S("drain"));
}

objc_id oc_queue(const char *label)
{
    dispatch_queue_attr_t attr = dispatch_queue_attr_make_with_autorelease_frequency(
        DISPATCH_QUEUE_SERIAL, DISPATCH_AUTORELEASE_FREQUENCY_WORK_ITEM);
    dispatch_queue_t q = dispatch_queue_create(label, attr);
    if (q)
        dispatch_queue_set_specific(q, &queue_key, (void *)q, NULL);
    return (objc_id)q;
}

void oc_queue_release(objc_id queue)
{
    if (queue)
        dispatch_release((dispatch_queue_t)queue);
}

static int on_queue_now(objc_id queue)
{
    return queue && dispatch_get_specific(&queue_key) == queue;
}

struct on_queue_call {
    void (*fn)(void *);
    void *ctx;
    int rc;
    char *why;
    size_t len;
};

static void on_queue_run(void *p)
{
    struct on_queue_call *c = p;
    objc_id pool = oc_pool_push();
    c->rc = oc_objc_try(c->fn, c->ctx, c->why, c->len);
    oc_pool_pop(pool);
}

int oc_on_queue(objc_id queue, void (*fn)(void *), void *ctx, char *why, size_t len)
{
    if (len)
        why[0] = 0;
    if (!queue || !fn) {
        snprintf(why, len, "no queue");
        return -1;
    }
    struct on_queue_call c = {fn, ctx, 0, why, len};
    if (on_queue_now(queue))
        on_queue_run(&c); /* dispatch_sync onto the current queue would deadlock */
    else
        dispatch_sync_f((dispatch_queue_t)queue, &c, on_queue_run);
    return c.rc ? -1 : 0;
}

struct send_call {
    id target, arg;
    SEL sel;
    void (^on_error)(id);       /* ^(NSError *error), or */
    void (^on_result)(id, id);  /* ^(id result, NSError *error) */
};

/* the message itself, on the queue, inside oc_objc_try */
static void send_now(void *p)
{
    struct send_call *c = p;
    if (c->on_result && c->arg)
        ((void (*)(id, SEL, id, void (^)(id, id)))objc_msgSend)(c->target, c->sel, c->arg, c->on_result);
    else if (c->on_result)
        ((void (*)(id, SEL, void (^)(id, id)))objc_msgSend)(c->target, c->sel, c->on_result);
    else if (c->arg)
        ((void (*)(id, SEL, id, void (^)(id)))objc_msgSend)(c->target, c->sel, c->arg, c->on_error);
    else
        ((void (*)(id, SEL, void (^)(id)))objc_msgSend)(c->target, c->sel, c->on_error);
}

/* wait for done at most timeout_ms, calling tick every tick_ms meanwhile;
 * 0 if it came */
static int wait_ticking(dispatch_semaphore_t done, unsigned timeout_ms, void (*tick)(void *),
                        void *tick_ctx, unsigned tick_ms)
{
    unsigned waited = 0;
    for (;;) {
        unsigned slice = timeout_ms - waited;
        if (tick && tick_ms && tick_ms < slice)
            slice = tick_ms;
        if (dispatch_semaphore_wait(done, dispatch_time(DISPATCH_TIME_NOW, (int64_t)slice * 1000000)) == 0)
            return 0;
        waited += slice;
        if (waited >= timeout_ms)
            return -1;
        if (tick)
            tick(tick_ctx);
    }
}

/* How long one slice of a serving wait waits for window events: the
 * handler's signal is noticed within that. */
#define SERVE_SLICE_MS 25u

/* ms of uptime (mach_absolute_time: monotonic, stops while the Mac sleeps,
 * as the framework's work does): a serving wait can't count its slices,
 * which end early whenever an event comes */
static uint64_t uptime_ms(void)
{
    static mach_timebase_info_data_t base;
    if (!base.denom)
        mach_timebase_info(&base);
    return mach_absolute_time() * base.numer / base.denom / 1000000u;
}

/* wait for done at most timeout_ms, serving window events (oc_run_events)
 * meanwhile instead of blocking; 0 if it came */
static int wait_serving(dispatch_semaphore_t done, unsigned timeout_ms,
                        void (*on_event_error)(void *, const char *), void *ctx)
{
    uint64_t end = uptime_ms() + timeout_ms;
    for (;;) {
        if (dispatch_semaphore_wait(done, DISPATCH_TIME_NOW) == 0)
            return 0;
        uint64_t now = uptime_ms();
        if (now >= end)
            return -1;
        char why[512];
        unsigned slice = end - now < SERVE_SLICE_MS ? (unsigned)(end - now) : SERVE_SLICE_MS;
        if (oc_run_events(slice, why, sizeof why) != 0 && on_event_error)
            on_event_error(ctx, why);
    }
}

typedef struct {
    objc_id queue, obj, arg;
    const char *sel;
    unsigned timeout_ms;
    void (*tick)(void *);
    void *tick_ctx;
    unsigned tick_ms;
    objc_id *result; /* NULL: the block is ^(NSError *) */
    int serve_events; /* wait by serving window events (oc_send_completion_serving) */
    void (*on_event_error)(void *, const char *);
    void *event_error_ctx;
} completion_call;

static int send_and_wait(const completion_call *k, char *err, size_t errlen)
{
    if (errlen)
        err[0] = 0;
    if (k->result)
        *k->result = NULL;
    if (!k->obj) {
        snprintf(err, errlen, "%s sent to nil", k->sel);
        return -1;
    }
    if (on_queue_now(k->queue)) {
        /* the handler runs on this queue: waiting here would never end */
        snprintf(err, errlen, "%s: waited for on its own queue", k->sel);
        return -1;
    }
    dispatch_semaphore_t done = dispatch_semaphore_create(0);
    if (!done) {
        snprintf(err, errlen, "%s: no semaphore", k->sel);
        return -1;
    }
    /* __block: moved to the heap with the copied handler, so a handler that
     * comes after the wait gave up still has somewhere to write */
    __block id failure = nil, value = nil;
    dispatch_retain(done); /* the handler's reference, dropped once it has signalled */
    void (^on_error)(id) = ^(id error) {
        if (error)
            failure = ((id(*)(id, SEL))objc_msgSend)(error, S("retain"));
        dispatch_semaphore_signal(done);
        dispatch_release(done);
    };
    void (^on_result)(id, id) = ^(id got, id error) {
        if (error)
            failure = ((id(*)(id, SEL))objc_msgSend)(error, S("retain"));
        else if (got)
            value = ((id(*)(id, SEL))objc_msgSend)(got, S("retain"));
        dispatch_semaphore_signal(done);
        dispatch_release(done);
    };
    struct send_call c = {(id)k->obj, (id)k->arg, S(k->sel), k->result ? NULL : on_error,
                          k->result ? on_result : NULL};
    struct send_call *call = &c;
    char raised[512] = "";
    char *raised_text = raised;
    __block int threw = 0;
    void (^send)(void) = ^{
        objc_id pool = oc_pool_push();
        threw = oc_objc_try(send_now, call, raised_text, sizeof raised);
        oc_pool_pop(pool);
    };
    if (k->queue)
        dispatch_sync((dispatch_queue_t)k->queue, send);
    else
        send();
    if (threw) {
        /* whether the framework kept the handler is unknown: leave it its
         * reference (at worst one semaphore leaks) */
        dispatch_release(done);
        snprintf(err, errlen, "%s raised %s", k->sel, raised);
        return -1;
    }
    int waited = k->serve_events
                     ? wait_serving(done, k->timeout_ms, k->on_event_error, k->event_error_ctx)
                     : wait_ticking(done, k->timeout_ms, k->tick, k->tick_ctx, k->tick_ms);
    if (waited != 0) {
        dispatch_release(done); /* the handler keeps its own */
        snprintf(err, errlen, "%s: no answer in %u ms", k->sel, k->timeout_ms);
        return OC_TIMED_OUT;
    }
    dispatch_release(done);
    if (!failure) {
        if (k->result)
            *k->result = (objc_id)value;
        return 0;
    }
    oc_release((objc_id)value);
    oc_error_text((objc_id)failure, err, errlen);
    oc_release((objc_id)failure);
    return -1;
}

int oc_send_completion(objc_id queue, objc_id obj, const char *sel, objc_id arg,
                       unsigned timeout_ms, char *err, size_t errlen)
{
    completion_call k = {.queue = queue, .obj = obj, .arg = arg, .sel = sel, .timeout_ms = timeout_ms};
    return send_and_wait(&k, err, errlen);
}

int oc_send_completion_ticking(objc_id queue, objc_id obj, const char *sel, objc_id arg,
                               unsigned timeout_ms, void (*tick)(void *), void *tick_ctx,
                               unsigned tick_ms, char *err, size_t errlen)
{
    completion_call k = {.queue = queue, .obj = obj, .arg = arg, .sel = sel, .timeout_ms = timeout_ms,
                         .tick = tick, .tick_ctx = tick_ctx, .tick_ms = tick_ms};
    return send_and_wait(&k, err, errlen);
}

int oc_send_completion_serving(objc_id queue, objc_id obj, const char *sel, objc_id arg,
                               unsigned timeout_ms, void (*on_event_error)(void *ctx, const char *why),
                               void *ctx, char *err, size_t errlen)
{
    completion_call k = {.queue = queue, .obj = obj, .arg = arg, .sel = sel, .timeout_ms = timeout_ms,
                         .serve_events = 1, .on_event_error = on_event_error,
                         .event_error_ctx = ctx};
    return send_and_wait(&k, err, errlen);
}

int oc_send_completion_result(objc_id queue, objc_id obj, const char *sel, objc_id arg,
                              unsigned timeout_ms, objc_id *result, char *err, size_t errlen)
{
    objc_id ignored;
    completion_call k = {.queue = queue, .obj = obj, .arg = arg, .sel = sel, .timeout_ms = timeout_ms,
                         .result = result ? result : &ignored};
    return send_and_wait(&k, err, errlen);
}

/* NSEventMaskAny */
#define OC_EVENT_MASK_ANY (~0ULL)

/* One wait for the first event (up to *ms), then whatever else is queued:
 * the loop GLFW and SDL run instead of -[NSApplication run]. Inside
 * oc_objc_try (sendEvent: runs the view's and the window's handlers). */
static void run_events_now(void *ms_p)
{
    unsigned ms = *(unsigned *)ms_p;
    id app = (id)oc_send((objc_id)objc_getClass("NSApplication"), "sharedApplication");
    if (!app)
        return;
    id date_cls = (id)objc_getClass("NSDate");
    /* NSDefaultRunLoopMode is the string kCFRunLoopDefaultMode; modes compare by value */
    id mode = (id)oc_str("kCFRunLoopDefaultMode");
    id until = ((id(*)(id, SEL, double))objc_msgSend)(date_cls, S("dateWithTimeIntervalSinceNow:"),
                                                      ms / 1000.0);
    for (;;) {
        id ev = ((id(*)(id, SEL, unsigned long long, id, id, BOOL))objc_msgSend)(
            app, S("nextEventMatchingMask:untilDate:inMode:dequeue:"), OC_EVENT_MASK_ANY, until,
            mode, YES);
        if (!ev)
            break;
        ((void (*)(id, SEL, id))objc_msgSend)(app, S("sendEvent:"), ev);
        until = ((id(*)(id, SEL))objc_msgSend)(date_cls, S("distantPast"));
    }
    ((void (*)(id, SEL))objc_msgSend)(app, S("updateWindows"));
}

/* the pool outside the @try: an exception must not leave it unbalanced */
int oc_run_events(unsigned ms, char *why, size_t len)
{
    if (len)
        why[0] = 0;
    objc_id pool = oc_pool_push();
    int rc = oc_objc_try(run_events_now, &ms, why, len);
    oc_pool_pop(pool);
    return rc ? -1 : 0;
}

#else /* no Objective-C runtime: every call says so */

#include <stdio.h>
#include <unistd.h>

int oc_instances_respond(objc_id cls, const char *sel)
{
    (void)cls, (void)sel;
    return 0;
}

objc_id oc_send_id_bool_err(objc_id obj, const char *sel, objc_id a, int b, objc_id *error_out)
{
    (void)obj, (void)sel, (void)a, (void)b;
    if (error_out)
        *error_out = NULL;
    return NULL;
}

int oc_guard(void (*fn)(void *), void *ctx, char *why, size_t len)
{
    if (len)
        why[0] = 0;
    fn(ctx);
    return 0;
}

int oc_available(void)
{
    return 0;
}

objc_id oc_class(const char *name)
{
    (void)name;
    return NULL;
}

int oc_responds(objc_id obj, const char *sel)
{
    (void)obj, (void)sel;
    return 0;
}

objc_id oc_send(objc_id obj, const char *sel)
{
    (void)obj, (void)sel;
    return NULL;
}

objc_id oc_send_id(objc_id obj, const char *sel, objc_id a)
{
    (void)obj, (void)sel, (void)a;
    return NULL;
}

objc_id oc_send_id_id(objc_id obj, const char *sel, objc_id a, objc_id b)
{
    (void)obj, (void)sel, (void)a, (void)b;
    return NULL;
}

objc_id oc_send_id_bool(objc_id obj, const char *sel, objc_id a, int b)
{
    (void)obj, (void)sel, (void)a, (void)b;
    return NULL;
}

objc_id oc_send_i64_i64(objc_id obj, const char *sel, int64_t a, int64_t b)
{
    (void)obj, (void)sel, (void)a, (void)b;
    return NULL;
}

objc_id oc_send_i64_i64_i64(objc_id obj, const char *sel, int64_t a, int64_t b, int64_t c)
{
    (void)obj, (void)sel, (void)a, (void)b, (void)c;
    return NULL;
}

objc_id oc_send_id_bool_i64_i64_err(objc_id obj, const char *sel, objc_id a, int b, int64_t c,
                                    int64_t d, objc_id *error_out)
{
    (void)obj, (void)sel, (void)a, (void)b, (void)c, (void)d;
    if (error_out)
        *error_out = NULL;
    return NULL;
}

void oc_send_void_id(objc_id obj, const char *sel, objc_id a)
{
    (void)obj, (void)sel, (void)a;
}

void oc_send_void_u64(objc_id obj, const char *sel, uint64_t a)
{
    (void)obj, (void)sel, (void)a;
}

int oc_send_bool(objc_id obj, const char *sel)
{
    (void)obj, (void)sel;
    return 0;
}

int oc_send_bool_err(objc_id obj, const char *sel, objc_id *error_out)
{
    (void)obj, (void)sel;
    if (error_out)
        *error_out = NULL;
    return 0;
}

int oc_send_bool_id_err(objc_id obj, const char *sel, objc_id a, objc_id *error_out)
{
    (void)obj, (void)sel, (void)a;
    if (error_out)
        *error_out = NULL;
    return 0;
}

int oc_send_bool_id_bool(objc_id obj, const char *sel, objc_id a, int b)
{
    (void)obj, (void)sel, (void)a, (void)b;
    return 0;
}

int64_t oc_send_i64(objc_id obj, const char *sel)
{
    (void)obj, (void)sel;
    return 0;
}

objc_id oc_str(const char *utf8)
{
    (void)utf8;
    return NULL;
}

objc_id oc_url(const char *path)
{
    (void)path;
    return NULL;
}

objc_id oc_array(objc_id *items, size_t n)
{
    (void)items, (void)n;
    return NULL;
}

objc_id oc_dict(objc_id *keys, objc_id *values, size_t n)
{
    (void)keys, (void)values, (void)n;
    return NULL;
}

void oc_error_text(objc_id error, char *buf, size_t len)
{
    (void)error;
    snprintf(buf, len, "no Objective-C runtime on this host");
}

objc_id oc_retain(objc_id obj)
{
    return obj;
}

void oc_release(objc_id obj)
{
    (void)obj;
}

objc_id oc_autorelease(objc_id obj)
{
    return obj;
}

objc_id oc_pool_push(void)
{
    return NULL;
}

void oc_pool_pop(objc_id pool)
{
    (void)pool;
}

objc_id oc_queue(const char *label)
{
    (void)label;
    return NULL;
}

void oc_queue_release(objc_id queue)
{
    (void)queue;
}

int oc_on_queue(objc_id queue, void (*fn)(void *), void *ctx, char *why, size_t len)
{
    (void)queue, (void)fn, (void)ctx;
    snprintf(why, len, "no Objective-C runtime on this host");
    return -1;
}

int oc_send_completion(objc_id queue, objc_id obj, const char *sel, objc_id arg,
                       unsigned timeout_ms, char *err, size_t errlen)
{
    (void)queue, (void)obj, (void)arg, (void)timeout_ms;
    snprintf(err, errlen, "%s: no Objective-C runtime on this host", sel);
    return -1;
}

int oc_send_completion_ticking(objc_id queue, objc_id obj, const char *sel, objc_id arg,
                               unsigned timeout_ms, void (*tick)(void *), void *tick_ctx,
                               unsigned tick_ms, char *err, size_t errlen)
{
    (void)tick, (void)tick_ctx, (void)tick_ms;
    return oc_send_completion(queue, obj, sel, arg, timeout_ms, err, errlen);
}

int oc_send_completion_serving(objc_id queue, objc_id obj, const char *sel, objc_id arg,
                               unsigned timeout_ms, void (*on_event_error)(void *ctx, const char *why),
                               void *ctx, char *err, size_t errlen)
{
    (void)on_event_error, (void)ctx;
    return oc_send_completion(queue, obj, sel, arg, timeout_ms, err, errlen);
}

int oc_send_completion_result(objc_id queue, objc_id obj, const char *sel, objc_id arg,
                              unsigned timeout_ms, objc_id *result, char *err, size_t errlen)
{
    if (result)
        *result = NULL;
    return oc_send_completion(queue, obj, sel, arg, timeout_ms, err, errlen);
}

int oc_run_events(unsigned ms, char *why, size_t len)
{
    if (len)
        why[0] = 0;
    usleep(ms * 1000);
    return 0;
}

uint64_t oc_send_u64(objc_id obj, const char *sel)
{
    (void)obj, (void)sel;
    return 0;
}

double oc_send_f64(objc_id obj, const char *sel)
{
    (void)obj, (void)sel;
    return 0;
}

void oc_send_void(objc_id obj, const char *sel)
{
    (void)obj, (void)sel;
}

void oc_send_void_bool(objc_id obj, const char *sel, int a)
{
    (void)obj, (void)sel, (void)a;
}

int oc_send_bool_i64(objc_id obj, const char *sel, int64_t a)
{
    (void)obj, (void)sel, (void)a;
    return 0;
}

void oc_send_void_size(objc_id obj, const char *sel, double width, double height)
{
    (void)obj, (void)sel, (void)width, (void)height;
}

objc_id oc_send_id_u64_err(objc_id obj, const char *sel, objc_id a, uint64_t b, objc_id *error_out)
{
    (void)obj, (void)sel, (void)a, (void)b;
    if (error_out)
        *error_out = NULL;
    return NULL;
}

objc_id oc_send_id_id_u64_err(objc_id obj, const char *sel, objc_id a, objc_id b, uint64_t c,
                              objc_id *error_out)
{
    (void)obj, (void)sel, (void)a, (void)b, (void)c;
    if (error_out)
        *error_out = NULL;
    return NULL;
}

objc_id oc_send_err(objc_id obj, const char *sel, objc_id *error_out)
{
    (void)obj, (void)sel;
    if (error_out)
        *error_out = NULL;
    return NULL;
}

objc_id oc_send_id_f64_bool_i64_err(objc_id obj, const char *sel, objc_id a, double b, int c,
                                    int64_t d, objc_id *error_out)
{
    (void)obj, (void)sel, (void)a, (void)b, (void)c, (void)d;
    if (error_out)
        *error_out = NULL;
    return NULL;
}

int oc_text(objc_id str, char *buf, size_t len)
{
    (void)str;
    if (len)
        buf[0] = 0;
    return -1;
}

#endif
