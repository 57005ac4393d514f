/* glue.c — a model from wherever its location says: a local path or an hf:// URL. */
#include "sources.h"

#include "fs.h"
#include "hub_url.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

bool glue_is_hub_url(const char *location)
{
    return strncmp(location, HUB_URL_SCHEME, strlen(HUB_URL_SCHEME)) == 0;
}

/* Hands a load's plan of one file to a hubfs mount (HUBFS_IOC_WILLNEED, fs/fs.h), in calls of
 * at most HUBFS_WILLNEED_MAX_RANGES ranges; false when the file is not on hubfs. */
static bool send_plan_to_mount(int fd, const loader_range *ranges, size_t count)
{
    struct hubfs_willneed *hint = calloc(1, sizeof *hint);
    bool taken = hint != NULL;
    for (size_t done = 0; taken && done < count;) {
        size_t n = count - done < HUBFS_WILLNEED_MAX_RANGES ? count - done : HUBFS_WILLNEED_MAX_RANGES;
        hint->count = (uint32_t)n;
        for (size_t i = 0; i < n; i++)
            hint->ranges[i] = (struct hubfs_willneed_range){ranges[done + i].offset, ranges[done + i].length};
        taken = ioctl(fd, HUBFS_IOC_WILLNEED, hint) == 0;
        done += n;
    }
    free(hint);
    return taken;
}

int glue_model_open(const char *location, const glue_options *options, loader_model **out,
                    char *notice, char *err, size_t errlen)
{
    *out = NULL;
    notice[0] = '\0';
    if (!glue_is_hub_url(location)) return loader_model_open_hooked(location, send_plan_to_mount, out, err, errlen);
    loader_source *source;
    char *file;
    if (glue_hub_source_open(location, options, &source, &file, notice, err, errlen) != 0) return -1;
    int rc = loader_model_open_source(source, file, out, err, errlen);
    free(file);
    return rc;
}
