#include "hub.h"

const char *hub_version(void) { return HUBFS_VERSION; }
