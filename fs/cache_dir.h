/* cache_dir.h — where the persistent cache lives, shared by the mount and the hf:// sources of
 * `hubfs load` and `hubfs inspect` (glue/), so that what one fetched the other reuses.
 *
 *   DIR/blocks   the disk cache (disk_cache.h): blocks and header prefixes by etag + size
 *   DIR/repos    repo metadata (repo_meta.h): pinned commits and tree listings, for offline use
 *
 * DIR defaults to $HF_HOME/hubfs, else ~/.cache/huggingface/hubfs where ~ is $HOME or, when HOME
 * is unset (systemd mounts fstab entries so), the home of the user's password entry; root with
 * no home there uses /var/cache/hubfs. Never /tmp. DIR, DIR/blocks and DIR/repos must belong to
 * the daemon's user, on a path nobody else controls (disk_cache_path.h). */
#ifndef HUBFS_CACHE_DIR_H
#define HUBFS_CACHE_DIR_H

#include "disk_cache.h"

#include <stddef.h>
#include <stdint.h>

#define CACHE_DIR_DEFAULT_MAX_BYTES (50ULL << 30)
#define CACHE_DIR_DEFAULT_BLOCK_SIZE (8u << 20)
#define CACHE_DIR_ROOT_FALLBACK "/var/cache/hubfs"

/* The default DIR above (malloc'd). NULL when the user has no home to keep it in (or no memory):
 * the caller asks for --cache-dir. */
char *cache_dir_default(void);

/* $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (~ as above): complete blobs
 * of the huggingface_hub cache (malloc'd). NULL: no home, so none (or no memory). */
char *cache_dir_hf_hub_cache(void);

/* DIR/repos (malloc'd; NULL when out of memory). */
char *cache_dir_metadata(const char *dir);

/* Opens DIR/blocks (DIR, DIR/blocks and DIR/repos created 0700 when missing, and checked),
 * serving complete huggingface_hub blobs too. Returns 0, or an errno value with the reason in
 * error: EPERM when the path is not safe (the reason says why), EWOULDBLOCK when another
 * process (a mount, another load) holds the cache. */
int cache_dir_open_blocks(const char *dir, uint64_t max_bytes, uint32_t block_size,
                          disk_cache **out, char *error, size_t error_size);

#endif
