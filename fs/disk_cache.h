/* disk_cache.h — the persistent block cache of the filesystem (private to fs/).
 *
 * Blobs are keyed by their etag (sha256 for LFS files, git sha1 otherwise) and size, so the
 * same content is shared across repos and revisions. Each blob has a sparse data file holding
 * whole aligned blocks, and an index recording which blocks are present with a checksum per
 * block; a block is only ever reported present after its bytes are durably written and its
 * checksum recorded, so a crash never makes a torn block visible. A size cap is enforced with
 * LRU eviction of whole blobs. Files are created 0600 inside a 0700 directory.
 *
 * Thread-safe. Failures to store (disk full, I/O error) are reported but harmless: the caller
 * still has its bytes and the cache stays consistent.
 */
#ifndef HUBFS_DISK_CACHE_H
#define HUBFS_DISK_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct disk_cache disk_cache;

typedef struct disk_cache_config {
    const char *directory;       /* created 0700 when missing */
    uint64_t max_bytes;          /* cap on the data stored; 0 = no cap */
    uint32_t block_size;         /* every blob's blocks are this size (the last may be shorter) */
    const char *hf_hub_cache;    /* $HF_HUB_CACHE for complete huggingface_hub blobs; NULL = none */
    int min_free_percent;        /* free space kept on the cache's filesystem by evicting blobs or
                                  * refusing to store: 0 = the default 5%, negative = no floor */
} disk_cache_config;

/* The error string of disk_cache_open says what went wrong and what to do. Only one process may
 * use a cache directory at a time (it is locked). */

int disk_cache_open(const disk_cache_config *config, disk_cache **out, char *error, size_t error_size);
void disk_cache_close(disk_cache *cache);

/* A blob's identity: etag plus size (both checked). */
typedef struct disk_cache_blob_key {
    const char *etag;
    uint64_t size;
} disk_cache_blob_key;

/* Copies block block_index (len bytes: block_size, or less for the last block) into buf.
 * True only when the block is present and its checksum verifies; a block that fails its
 * checksum is dropped from the index. Also served from a complete huggingface_hub blob. */
bool disk_cache_read_block(disk_cache *cache, const disk_cache_blob_key *key, uint64_t block_index,
                           void *buf, size_t len);

/* Stores a complete block. Returns 0, or an errno value (ENOSPC, EIO...) on failure. */
int disk_cache_write_block(disk_cache *cache, const disk_cache_blob_key *key, uint64_t block_index,
                           const void *buf, size_t len);

/* A small prefix of a blob (a safetensors header), stored separately from the blocks and
 * replaced atomically. read_prefix is true when a prefix is stored, verifies and fits in
 * capacity; when it does not fit, *len_out still tells its length. */
bool disk_cache_read_prefix(disk_cache *cache, const disk_cache_blob_key *key, void *buf,
                            size_t capacity, size_t *len_out);
int disk_cache_write_prefix(disk_cache *cache, const disk_cache_blob_key *key, const void *buf,
                            size_t len);

/* Bytes of the blob available locally (for the user.hubfs.cached_bytes xattr). */
uint64_t disk_cache_cached_bytes(disk_cache *cache, const disk_cache_blob_key *key);

typedef struct disk_cache_counters {
    uint64_t bytes_stored;       /* current size of all data files (blocks and prefixes) */
    uint64_t block_hits;
    uint64_t block_misses;
    uint64_t evictions;
    uint64_t write_failures;
    uint64_t checksum_failures;
} disk_cache_counters;

void disk_cache_get_counters(disk_cache *cache, disk_cache_counters *out);

#endif
