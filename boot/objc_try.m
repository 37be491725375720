/*
 * The one place strata catches Objective-C exceptions: C has no @try, and
 * Virtualization.framework raises (NSInvalidArgumentException,
 * NSInternalInconsistencyException) for some configurations and misuses
 * instead of returning an NSError. boot/objc_apple.c runs every call into
 * the framework through oc_objc_try(). Built only on macOS, with clang
 * -fobjc-exceptions; no ARC, and nothing but the runtime itself.
 */
#include <objc/message.h>
#include <objc/runtime.h>
#include <stddef.h>
#include <stdio.h>

int oc_objc_try(void (*fn)(void *), void *ctx, char *why, size_t len);

static const char *text_of(id obj, const char *sel)
{
    id s = obj ? ((id(*)(id, SEL))objc_msgSend)(obj, sel_registerName(sel)) : nil;
    const char *t = s ? ((const char *(*)(id, SEL))objc_msgSend)(s, sel_registerName("UTF8String")) : NULL;
    return t ? t : "?";
}

int oc_objc_try(void (*fn)(void *), void *ctx, char *why, size_t len)
{
    @try {
        fn(ctx);
        return 0;
    } @catch (id e) {
        /* an NSException answers name and reason; anything else thrown is
         * reported by its class */
        Class nsexception = objc_getClass("NSException");
        BOOL is_exception = nsexception &&
            ((BOOL(*)(id, SEL, Class))objc_msgSend)(e, sel_registerName("isKindOfClass:"), nsexception);
        if (is_exception)
            snprintf(why, len, "%s: %s", text_of(e, "name"), text_of(e, "reason"));
        else
            snprintf(why, len, "an Objective-C exception of class %s",
                     e ? class_getName(object_getClass(e)) : "nil");
        return -1;
    }
}
