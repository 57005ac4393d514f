/* cache_dir.c — the persistent cache's directories and how its block store opens. */
#include "cache_dir.h"

#include "disk_cache_path.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *joined_path(const char *dir, const char *leaf)
{
    size_t size = strlen(dir) + strlen(leaf) + 2;
    char *path = malloc(size);
    if (path)
        snprintf(path, size, "%s/%s", dir, leaf);
    return path;
}

/* $HF_HOME/leaf, else HOME/.cache/huggingface/leaf with the home of disk_cache_path.h ($HOME,
 * else the password database's: systemd runs fstab mounts without HOME). Never /tmp, where
 * anyone may have prepared a directory. NULL when there is no home (or no memory). */
static char *under_hf_home(const char *leaf)
{
    const char *hf_home = getenv("HF_HOME");
    if (hf_home && *hf_home)
        return joined_path(hf_home, leaf);
    char home[PATH_MAX];
    if (!cache_path_home(home, sizeof home))
        return NULL;
    char *base = joined_path(home, ".cache/huggingface");
    char *path = base ? joined_path(base, leaf) : NULL;
    free(base);
    return path;
}

char *cache_dir_default(void)
{
    char *dir = under_hf_home("hubfs");
    /* root without a home (a passwd entry saying "/" or nothing) still gets a system place. */
    return dir || geteuid() != 0 ? dir : strdup(CACHE_DIR_ROOT_FALLBACK);
}

char *cache_dir_hf_hub_cache(void)
{
    const char *explicit_dir = getenv("HF_HUB_CACHE");
    if (explicit_dir && *explicit_dir)
        return strdup(explicit_dir);
    return under_hf_home("hub");
}

char *cache_dir_metadata(const char *dir)
{
    char *absolute = cache_path_absolute(dir);   /* used by path after the daemon left for "/" */
    char *path = absolute ? joined_path(absolute, "repos") : NULL;
    free(absolute);
    return path;
}

/* DIR and DIR/repos must be ours (disk_cache_path.h), like DIR/blocks: repo metadata is written
 * there by path. */
static int prepare_directory(const char *path, char *error, size_t error_size)
{
    char reason[768];
    int fd = cache_path_open_dir(path, CACHE_PATH_CREATE | CACHE_PATH_OWN, reason, sizeof reason);
    if (fd < 0) {
        int err = errno;
        snprintf(error, error_size, "cannot use cache directory %s: %s", path, reason);
        return err;
    }
    close(fd);
    return 0;
}

int cache_dir_open_blocks(const char *dir, uint64_t max_bytes, uint32_t block_size,
                          disk_cache **out, char *error, size_t error_size)
{
    *out = NULL;
    char *blocks_dir = joined_path(dir, "blocks");
    char *metadata_dir = cache_dir_metadata(dir);
    char *hub_cache = cache_dir_hf_hub_cache();   /* NULL: none */
    int result = ENOMEM;
    if (!blocks_dir || !metadata_dir) {
        snprintf(error, error_size, "out of memory");
    } else if ((result = prepare_directory(dir, error, error_size)) == 0 &&
               (result = prepare_directory(metadata_dir, error, error_size)) == 0) {
        disk_cache_config config = {.directory = blocks_dir, .max_bytes = max_bytes,
                                    .block_size = block_size, .hf_hub_cache = hub_cache};
        result = disk_cache_open(&config, out, error, error_size);
    }
    free(blocks_dir);
    free(metadata_dir);
    free(hub_cache);
    return result;
}
