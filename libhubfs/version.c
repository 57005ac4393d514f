/* The version of libhubfs, for bindings that check what they loaded (python/hubfs). */
#include "hubfs.h"

const char *hubfs_library_version(void)
{
    return HUBFS_VERSION;
}
