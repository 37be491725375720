/* tart: the module's error message. */
#include "internal.h"

const char *tart_error(void)
{
    return err_last()->message;
}
