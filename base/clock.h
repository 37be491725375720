/* base: time for timed waits. */
#ifndef STRATA_BASE_CLOCK_H
#define STRATA_BASE_CLOCK_H

#include <time.h>

/* The moment `seconds` (>= 0, fractions allowed) from now on CLOCK_REALTIME:
 * the absolute time pthread_cond_timedwait takes. */
struct timespec clock_deadline_in(double seconds);

#endif
