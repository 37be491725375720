/*
 * Stand-in for the macOS SDK's <objc/objc.h>: exactly what strata's bridge
 * (boot/objc_apple.c, boot/objc_try.m) uses, with the SDK's types as the
 * arm64 macOS target has them (BOOL is bool there). For `make check-apple`
 * only: the bridge is compiled against it where no Mac SDK exists.
 */
#ifndef STRATA_SDK_OBJC_OBJC_H
#define STRATA_SDK_OBJC_OBJC_H

#include <stdbool.h>
#include <stddef.h>

typedef struct objc_class *Class;
struct objc_object {
    Class isa;
};
typedef struct objc_object *id;
typedef struct objc_selector *SEL;

typedef bool BOOL; /* OBJC_BOOL_IS_BOOL on arm64 */
#if __has_feature(objc_bool)
#define YES __objc_yes
#define NO __objc_no
#else
#define YES ((BOOL)1)
#define NO ((BOOL)0)
#endif

#ifndef nil
#define nil ((id)0)
#endif
#ifndef Nil
#define Nil ((Class)0)
#endif

#define OBJC_EXPORT extern

#endif
