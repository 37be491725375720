/*
 * Stand-in for the macOS SDK's <objc/message.h>. With
 * OBJC_OLD_DISPATCH_PROTOTYPES 0 (the default on arm64) objc_msgSend takes
 * and returns nothing: every call must cast it to the method's exact
 * prototype, which is what the bridge does.
 */
#ifndef STRATA_SDK_OBJC_MESSAGE_H
#define STRATA_SDK_OBJC_MESSAGE_H

#include <objc/objc.h>

#define OBJC_OLD_DISPATCH_PROTOTYPES 0
OBJC_EXPORT void objc_msgSend(void);

#endif
