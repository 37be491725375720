/*
 * Stand-in for the macOS SDK's <mach/mach_time.h>: the monotonic clock the
 * bridge's serving wait measures its time limit by. Only what strata's
 * bridge uses, with the SDK's types (kern_return_t is an int).
 */
#ifndef STRATA_SDK_MACH_TIME_H
#define STRATA_SDK_MACH_TIME_H

#include <stdint.h>

typedef int kern_return_t;

struct mach_timebase_info {
    uint32_t numer;
    uint32_t denom;
};
typedef struct mach_timebase_info *mach_timebase_info_t;
typedef struct mach_timebase_info mach_timebase_info_data_t;

extern kern_return_t mach_timebase_info(mach_timebase_info_t info);
extern uint64_t mach_absolute_time(void);

#endif
