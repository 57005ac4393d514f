/* disk_cache.h — the persistent cache of the filesystem (private to fs/).
 *
 * Blobs are keyed by their etag (sha256 for LFS files, git sha1 otherwise) and size, so the
 * same content is shared across repos and revisions. Each blob has a sparse data file holding
 * whole aligned units (block_size bytes; the last unit of a blob may be shorter), and an index
 * recording which units are present with a checksum per unit. Units are not flushed one by one:
 * every unit is verified whole when read through this interface, so a crash that left a record
 * ahead of its data never serves a torn unit. A blob held whole may also be handed to the kernel
 * to read itself (disk_cache_open_whole, unverified): only once sealed, its data flushed whole. A
 * size cap is enforced with LRU eviction of whole blobs. Files are created 0600 inside a 0700
 * directory that must be the daemon user's own, on a path nobody else controls
 * (disk_cache_path.h).
 *
 * Memory does not grow with blob sizes: records stay in the index file (the kernel caches it)
 * and are read and written a range at a time, so a 100 GB blob of 64 KiB units costs no more
 * than a small one.
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

/* The unit the mount and hf:// sources store in: small enough that the exact ranges readers
 * fetch (a rank's slices) are kept, large enough that a 100 GB blob's index stays small. */
#define DISK_CACHE_UNIT (64u << 10)

/* Bytes whose buffer address, offset and length are all multiples of this are read and written
 * with O_DIRECT; others pass through the page cache (a copy more, and the page cache filled). */
#define DISK_CACHE_DIRECT_ALIGNMENT 4096u

typedef struct disk_cache_config {
    const char *directory;       /* created 0700 when missing; it must be the daemon user's own,
                                  * on a trusted path (disk_cache_path.h), else it is refused */
    uint64_t max_bytes;          /* cap on the data stored; 0 = no cap */
    uint32_t block_size;         /* the unit of storage and verification, >= 512 (the last unit
                                  * of a blob may be shorter); files stored with another unit
                                  * size are dropped when the cache opens */
    const char *hf_hub_cache;    /* $HF_HUB_CACHE for complete huggingface_hub blobs; NULL = none */
    int min_free_percent;        /* free space kept on the cache's filesystem by evicting blobs or
                                  * refusing to store: 0 = the default 5%, negative = no floor */
} disk_cache_config;

/* The error string of disk_cache_open says what went wrong and what to do. Only one process may
 * use a cache directory at a time (it is locked). */

int disk_cache_open(const disk_cache_config *config, disk_cache **out, char *error, size_t error_size);
void disk_cache_close(disk_cache *cache);

/* A blob's identity: etag plus size (both checked). hf_repo_folder is the repo's folder in the
 * huggingface_hub cache ("models--org--name"): only that folder's blobs are used for the key;
 * NULL = don't look in the huggingface_hub cache. */
typedef struct disk_cache_blob_key {
    const char *etag;
    uint64_t size;
    const char *hf_repo_folder;
} disk_cache_blob_key;

/* Copies bytes of [offset, offset+len) of the blob into buf, from the start, as long as the
 * units covering them are present and verify (a unit is verified whole: read into scratch when
 * the range covers only part of it). Returns the number of bytes served from the start
 * (0..len); served bytes are exact. A unit that fails its checksum is dropped from the index.
 * Also served from a verified complete huggingface_hub blob of the key's repo folder. */
size_t disk_cache_read_range(disk_cache *cache, const disk_cache_blob_key *key, uint64_t offset, void *buf,
                             size_t len);

/* Stores the units lying COMPLETELY inside [offset, offset+len) (the last unit of the blob may
 * be short), then their records; the write that completes a blob seals it: 0 or an errno value
 * (ENOSPC, EIO, EFBIG for a blob of more than 2^24 units, EINVAL). A unit covered in part at
 * an edge is kept in memory (a few dozen at most, the least recently written go first) until
 * other writes cover the rest of it, and then stored: a reader's consecutive runs store every
 * unit between them, although each covers only part of it. */
int disk_cache_write_range(disk_cache *cache, const disk_cache_blob_key *key, uint64_t offset, const void *buf,
                           size_t len);

/* Bytes in [offset, offset+len) whose units are present, or which a complete huggingface_hub
 * blob of the key's repo folder holds (for xattrs and planning; nothing is verified). */
uint64_t disk_cache_present_bytes(disk_cache *cache, const disk_cache_blob_key *key, uint64_t offset,
                                  uint64_t len);

/* One unit (block_index counts units; len is block_size, or less for the last unit): true only
 * when all of it was served. The range functions above, for callers thinking in units. */
bool disk_cache_read_block(disk_cache *cache, const disk_cache_blob_key *key, uint64_t block_index,
                           void *buf, size_t len);
/* Stores a complete unit. Returns 0, or an errno value (ENOSPC, EIO...) on failure. */
int disk_cache_write_block(disk_cache *cache, const disk_cache_blob_key *key, uint64_t block_index,
                           const void *buf, size_t len);

/* A small prefix of a blob (a safetensors header), stored separately from the blocks and
 * replaced atomically. read_prefix is true when a prefix is stored, verifies and fits in
 * capacity; when it does not fit, *len_out still tells its length. */
bool disk_cache_read_prefix(disk_cache *cache, const disk_cache_blob_key *key, void *buf,
                            size_t capacity, size_t *len_out);
int disk_cache_write_prefix(disk_cache *cache, const disk_cache_blob_key *key, const void *buf,
                            size_t len);

/* A new read-only descriptor of a file holding the whole blob at its offsets: our data file once
 * every unit is present and the blob is sealed, else a verified complete huggingface_hub blob of
 * the key's repo folder; -1 when neither. For the kernel to read on its own: units read through
 * it are not verified again (they were when stored; a huggingface_hub blob is hashed once). A
 * whole blob that a run which died left unsealed is read and verified here first, once. */
int disk_cache_open_whole(disk_cache *cache, const disk_cache_blob_key *key);

/* Bytes of the blob available locally (for the user.hubfs.cached_bytes xattr): the whole blob's
 * disk_cache_present_bytes. */
uint64_t disk_cache_cached_bytes(disk_cache *cache, const disk_cache_blob_key *key);

typedef struct disk_cache_counters {
    uint64_t bytes_stored;       /* current size of all data files (units and prefixes) */
    uint64_t block_hits;         /* reads served whole */
    uint64_t block_misses;       /* reads served in part or not at all */
    uint64_t evictions;
    uint64_t write_failures;
    uint64_t checksum_failures;
    uint64_t hf_blobs_verified;  /* huggingface_hub blobs hashed and found to match their names */
    uint64_t hf_blobs_rejected;  /* ... and found not to: never served */
} disk_cache_counters;

void disk_cache_get_counters(disk_cache *cache, disk_cache_counters *out);

#endif
