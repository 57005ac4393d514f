/* blob_cache.h — the persistent cache as the Hub source uses it (private to glue/).
 *
 * The mount's disk cache (fs/cache_dir.h) when this process can hold it: one handle per cache
 * directory is shared by every Hub source of the process. When another process holds it (a
 * mount, another load), or it is disabled, complete huggingface_hub blobs are still read
 * (they need no lock). The repo metadata directory (pinned commits, tree listings) is used in
 * every case: its files are replaced atomically, so several processes may share it. */
#ifndef HUBFS_GLUE_BLOB_CACHE_H
#define HUBFS_GLUE_BLOB_CACHE_H

#include "disk_cache.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct blob_cache blob_cache;

/* cache_dir NULL: the mount's default. Fails only when out of memory; a cache that cannot be
 * used leaves a notice (GLUE_NOTICE_LEN bytes) saying so and why. */
int blob_cache_open(const char *cache_dir, bool use_disk, blob_cache **out, char *notice,
                    char *err, size_t errlen);
void blob_cache_close(blob_cache *cache);

/* DIR/repos of the cache directory, for repo_meta.h; NULL when there is no cache directory. */
const char *blob_cache_metadata_dir(const blob_cache *cache);

/* Bytes of [offset, offset + len) served from the start (0..len). */
size_t blob_cache_read(blob_cache *cache, const disk_cache_blob_key *key, uint64_t offset,
                       void *buf, size_t len);

/* Whether stored bytes are kept on disk (blob_cache_store does something). */
bool blob_cache_stores(const blob_cache *cache);

/* Keeps what it can of the bytes (whole units only); failures to store are harmless. */
void blob_cache_store(blob_cache *cache, const disk_cache_blob_key *key, uint64_t offset,
                      const void *buf, size_t len);

/* Widens [*first, *end) to whole units of the cache (DISK_CACHE_UNIT: at most two units more
 * per read), within the blob's size, so that every fetched unit can be stored and a later read
 * finds it whole. Leaves them when nothing would be stored. */
void blob_cache_widen(const blob_cache *cache, uint64_t blob_size, uint64_t *first, uint64_t *end);

/* A safetensors header prefix stored beside the blob (disk_cache_read_prefix): the stored
 * bytes in a malloc'd buffer, or NULL. */
uint8_t *blob_cache_read_prefix(blob_cache *cache, const disk_cache_blob_key *key, size_t *len);
void blob_cache_store_prefix(blob_cache *cache, const disk_cache_blob_key *key, const void *buf,
                             size_t len);

#endif
