/*
 * A small typed bridge from C to the Objective-C runtime, for the vz driver.
 *
 * Every message has one shape here, and each shape is sent through
 * objc_msgSend cast to exactly that function type (never the variadic one:
 * on arm64 variadic arguments go on the stack). Selector names are the
 * Objective-C ones ("initWithURL:readOnly:"); the argument kinds follow the
 * function's name: id, bool (BOOL), i64 (NSInteger), u64 (NSUInteger,
 * uint64_t), err (NSError **).
 *
 * Two implementations:
 *   - boot/objc_apple.c: Apple's runtime and libdispatch (macOS, clang -fblocks);
 *     elsewhere it only says the runtime is not there;
 *   - tests/objc_record.c: a recording stand-in that writes every message
 *     into a transcript, so tests on Linux check what vz.c sends.
 *
 * Memory is manual (no ARC): what alloc/new returns is owned (+1); release
 * it, or hand it to oc_autorelease inside an oc_pool_push/oc_pool_pop pair.
 * Everything else is borrowed.
 */
#ifndef STRATA_BOOT_OBJC_H
#define STRATA_BOOT_OBJC_H

#include <stddef.h>
#include <stdint.h>

typedef void *objc_id; /* an object, a class, or a dispatch queue; NULL is nil */

/* 1 where the Objective-C runtime and Virtualization.framework can be used. */
int oc_available(void);

/* The class of that name, or NULL if this host's frameworks lack it. */
objc_id oc_class(const char *name);
/* 1 if obj (an instance or a class) answers sel: check before sending
 * anything newer than the oldest macOS the driver runs on. */
int oc_responds(objc_id obj, const char *sel);
/* 1 if instances of cls answer sel (class_respondsToSelector on the class) */
int oc_instances_respond(objc_id cls, const char *sel);

/* ---------- messages, one function per shape ---------- */

objc_id oc_send(objc_id obj, const char *sel);                          /* -(id)sel */
objc_id oc_send_id(objc_id obj, const char *sel, objc_id a);            /* -(id)sel:(id) */
objc_id oc_send_id_id(objc_id obj, const char *sel, objc_id a, objc_id b);
objc_id oc_send_id_bool(objc_id obj, const char *sel, objc_id a, int b); /* -(id)sel:(id) x:(BOOL) */
objc_id oc_send_i64_i64(objc_id obj, const char *sel, int64_t a, int64_t b);
objc_id oc_send_i64_i64_i64(objc_id obj, const char *sel, int64_t a, int64_t b, int64_t c);
/* -(id)sel:(id) x:(BOOL) y:(NSInteger) z:(NSInteger) error:(NSError **) */
objc_id oc_send_id_bool_i64_i64_err(objc_id obj, const char *sel, objc_id a, int b, int64_t c,
                                    int64_t d, objc_id *error_out);
/* -(id)sel:(id) x:(BOOL) error:(NSError **) */
objc_id oc_send_id_bool_err(objc_id obj, const char *sel, objc_id a, int b, objc_id *error_out);
void oc_send_void_id(objc_id obj, const char *sel, objc_id a);      /* -(void)sel:(id), setters */
void oc_send_void_u64(objc_id obj, const char *sel, uint64_t a);    /* -(void)sel:(NSUInteger/uint64_t) */
int oc_send_bool(objc_id obj, const char *sel);                     /* -(BOOL)sel */
int oc_send_bool_err(objc_id obj, const char *sel, objc_id *error_out); /* -(BOOL)sel:(NSError **) */
int oc_send_bool_id_err(objc_id obj, const char *sel, objc_id a, objc_id *error_out);
int oc_send_bool_id_bool(objc_id obj, const char *sel, objc_id a, int b);
int64_t oc_send_i64(objc_id obj, const char *sel);                  /* -(NSInteger)sel */
uint64_t oc_send_u64(objc_id obj, const char *sel);                 /* -(NSUInteger/uint64_t)sel */
double oc_send_f64(objc_id obj, const char *sel);                   /* -(double)sel */
void oc_send_void(objc_id obj, const char *sel);                    /* -(void)sel */
void oc_send_void_bool(objc_id obj, const char *sel, int a);        /* -(void)sel:(BOOL) */
int oc_send_bool_i64(objc_id obj, const char *sel, int64_t a);      /* -(BOOL)sel:(NSInteger) */
/* -(void)sel:(NSSize) (CGSize: two doubles) */
void oc_send_void_size(objc_id obj, const char *sel, double width, double height);
/* -(id)sel:(id) x:(NSUInteger) error:(NSError **) */
objc_id oc_send_id_u64_err(objc_id obj, const char *sel, objc_id a, uint64_t b, objc_id *error_out);
/* -(id)sel:(id) x:(id) y:(NSUInteger) error:(NSError **) */
objc_id oc_send_id_id_u64_err(objc_id obj, const char *sel, objc_id a, objc_id b, uint64_t c,
                              objc_id *error_out);
/* -(id)sel:(NSError **), e.g. -[VZLinuxRosettaDirectoryShare initWithError:] */
objc_id oc_send_err(objc_id obj, const char *sel, objc_id *error_out);
/* -(id)sel:(id) x:(NSTimeInterval) y:(BOOL) z:(NSInteger) error:(NSError **), e.g.
 * VZNetworkBlockDeviceStorageDeviceAttachment's initWithURL:timeout:... */
objc_id oc_send_id_f64_bool_i64_err(objc_id obj, const char *sel, objc_id a, double b, int c,
                                    int64_t d, objc_id *error_out);

/* ---------- values ---------- */

objc_id oc_str(const char *utf8);      /* NSString stringWithUTF8String: (borrowed) */
objc_id oc_url(const char *path);      /* NSURL fileURLWithPath: (borrowed) */
objc_id oc_array(objc_id *items, size_t n);  /* NSArray arrayWithObjects:count: (borrowed) */
objc_id oc_dict(objc_id *keys, objc_id *values, size_t n); /* NSDictionary dictionaryWithObjects:forKeys:count: */
/* An NSString's UTF-8 text copied into buf (UTF8String); 0, or -1 if str
 * is nil or the text does not fit. */
int oc_text(objc_id str, char *buf, size_t len);
/* An NSError's localizedDescription (and failure reason), as one line;
 * inside an autorelease pool of its own, so it is safe off the queue. */
void oc_error_text(objc_id error, char *buf, size_t len);

/* ---------- exceptions ---------- */

/*
 * Run fn(ctx); if it raises an Objective-C exception (the framework raises
 * NSInvalidArgumentException for some bad configurations), catch it: -1
 * with "name: reason" in why, else 0. C frames between the raise and here
 * are left without cleanup, as with any Objective-C exception.
 */
int oc_guard(void (*fn)(void *), void *ctx, char *why, size_t len);

/* ---------- ownership ---------- */

objc_id oc_retain(objc_id obj);
void oc_release(objc_id obj);
objc_id oc_autorelease(objc_id obj); /* returns obj; NULL stays NULL */
objc_id oc_pool_push(void);          /* an NSAutoreleasePool */
void oc_pool_pop(objc_id pool);

/* ---------- queues and completion handlers ---------- */

/* A new serial dispatch queue (owned: oc_queue_release it). */
objc_id oc_queue(const char *label);
void oc_queue_release(objc_id queue);
/* Run fn(ctx) on queue and wait for it (dispatch_sync_f), inside an
 * autorelease pool and oc_guard. Never call it from fn itself. 0, or -1 if
 * it can't or fn raised (the exception's text in why). */
int oc_on_queue(objc_id queue, void (*fn)(void *), void *ctx, char *why, size_t len);
/*
 * Send obj the completion-handler message sel ("startWithCompletionHandler:",
 * or with one object argument first, "saveMachineStateToURL:completionHandler:")
 * with a block ^(NSError *error), and wait until the block has run. The
 * message is sent on queue (NULL: this thread); the framework calls the block
 * on the same queue, so the wait happens here, off the queue: call this from
 * outside the queue. The wait is bounded: after timeout_ms it gives up
 * with OC_TIMED_OUT (the handler may still run later; it then only frees
 * what it holds). Returns 0, or -1 with the error's (or the exception's)
 * text in err.
 */
#define OC_TIMED_OUT (-2)
int oc_send_completion(objc_id queue, objc_id obj, const char *sel, objc_id arg,
                       unsigned timeout_ms, char *err, size_t errlen);
/* The same, calling tick(ctx) every tick_ms while it waits (off the queue:
 * tick may use oc_on_queue), e.g. to show an NSProgress. */
int oc_send_completion_ticking(objc_id queue, objc_id obj, const char *sel, objc_id arg,
                               unsigned timeout_ms, void (*tick)(void *), void *tick_ctx,
                               unsigned tick_ms, char *err, size_t errlen);
/*
 * The same wait, serving this process's window events (oc_run_events) in
 * slices of a few tens of ms instead of blocking: for the main thread of a
 * run with a window, which would otherwise freeze for as long as the
 * framework takes (up to minutes: a start, a save or restore of the guest's
 * memory). The VM is still driven on its queue; only the wait changes. An
 * exception raised while an event is handled goes to on_event_error(ctx,
 * "name: reason") (may be NULL) and the wait goes on.
 */
int oc_send_completion_serving(objc_id queue, objc_id obj, const char *sel, objc_id arg,
                               unsigned timeout_ms, void (*on_event_error)(void *ctx, const char *why),
                               void *ctx, char *err, size_t errlen);
/*
 * Send obj (an object or a class) sel with a block ^(id result, NSError
 * *error), as +[VZMacOSRestoreImage loadFileURL:completionHandler:] and
 * fetchLatestSupportedWithCompletionHandler: take, and wait for it like
 * oc_send_completion. On success *result is the result, retained (owned:
 * release it); on failure NULL.
 */
int oc_send_completion_result(objc_id queue, objc_id obj, const char *sel, objc_id arg,
                              unsigned timeout_ms, objc_id *result, char *err, size_t errlen);

/* ---------- windows ---------- */

/* Serve this process's window events (NSApp, on the main thread) for up to
 * ms: the loop a VZVirtualMachineView needs to draw and take input. Does
 * nothing but wait where there is no window server. 0, or -1 if handling
 * an event raised an Objective-C exception ("name: reason" in why): that
 * event is dropped, as -[NSApplication run] drops one it reports, and the
 * next call serves the rest. */
int oc_run_events(unsigned ms, char *why, size_t len);

#endif
