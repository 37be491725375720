/* lazy: the boot profile a lazy run records (docs/profiles.md). */
#include "lazy.h"

void lazy_ready(lazy_disk *d)
{
    (void)d; /* recording is not built yet: a run records no profile */
}
