/*
 * Stand-in for the macOS SDK's <dispatch/dispatch.h>, as a C file sees it
 * (OS_OBJECT_USE_OBJC 0): queues and semaphores are pointers to distinct
 * structs, and dispatch_retain/dispatch_release take any of them through a
 * transparent union. Only what strata's bridge uses; see objc/objc.h here.
 */
#ifndef STRATA_SDK_DISPATCH_H
#define STRATA_SDK_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

typedef struct dispatch_queue_s *dispatch_queue_t;
typedef struct dispatch_queue_attr_s *dispatch_queue_attr_t;
typedef struct dispatch_semaphore_s *dispatch_semaphore_t;
typedef union {
    struct dispatch_object_s *_do;
    struct dispatch_queue_s *_dq;
    struct dispatch_queue_attr_s *_dqa;
    struct dispatch_semaphore_s *_dsema;
} dispatch_object_t __attribute__((__transparent_union__));

typedef void (*dispatch_function_t)(void *);
#ifdef __BLOCKS__
typedef void (^dispatch_block_t)(void);
#endif
typedef uint64_t dispatch_time_t;
#define DISPATCH_TIME_NOW (0ull)
#define DISPATCH_TIME_FOREVER (~0ull)
#define NSEC_PER_SEC 1000000000ull
#define NSEC_PER_MSEC 1000000ull

typedef unsigned long dispatch_autorelease_frequency_t;
enum {
    DISPATCH_AUTORELEASE_FREQUENCY_INHERIT = 0,
    DISPATCH_AUTORELEASE_FREQUENCY_WORK_ITEM = 1,
    DISPATCH_AUTORELEASE_FREQUENCY_NEVER = 2,
};

#define DISPATCH_QUEUE_SERIAL NULL

extern dispatch_queue_attr_t dispatch_queue_attr_make_with_autorelease_frequency(
    dispatch_queue_attr_t attr, dispatch_autorelease_frequency_t frequency);
extern dispatch_queue_t dispatch_queue_create(const char *label, dispatch_queue_attr_t attr);
extern void dispatch_queue_set_specific(dispatch_queue_t queue, const void *key, void *context,
                                        dispatch_function_t destructor);
extern void *dispatch_get_specific(const void *key);
extern void dispatch_retain(dispatch_object_t object);
extern void dispatch_release(dispatch_object_t object);
extern void dispatch_sync_f(dispatch_queue_t queue, void *context, dispatch_function_t work);
#ifdef __BLOCKS__
extern void dispatch_sync(dispatch_queue_t queue, dispatch_block_t block);
#endif
extern dispatch_semaphore_t dispatch_semaphore_create(intptr_t value);
extern intptr_t dispatch_semaphore_wait(dispatch_semaphore_t dsema, dispatch_time_t timeout);
extern intptr_t dispatch_semaphore_signal(dispatch_semaphore_t dsema);
extern dispatch_time_t dispatch_time(dispatch_time_t when, int64_t delta);

#endif
