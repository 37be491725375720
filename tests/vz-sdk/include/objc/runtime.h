/* Stand-in for the macOS SDK's <objc/runtime.h>: see objc/objc.h here. */
#ifndef STRATA_SDK_OBJC_RUNTIME_H
#define STRATA_SDK_OBJC_RUNTIME_H

#include <objc/objc.h>

OBJC_EXPORT Class objc_getClass(const char *name);
OBJC_EXPORT Class object_getClass(id obj);
OBJC_EXPORT const char *class_getName(Class cls);
OBJC_EXPORT BOOL class_respondsToSelector(Class cls, SEL sel);
OBJC_EXPORT SEL sel_registerName(const char *str);

#endif
