/* cache_files.h — the on-disk formats of the persistent cache (private to disk_cache*.c).
 *
 * A blob is stored under a stem: its etag when that is a sha256/sha1 in lowercase hex, otherwise
 * "x" + a 128-bit hash of the etag (the index keeps the real etag, so a name clash never mixes
 * two blobs up); then "-" and the blob size. Files, all 0600 in the cache directory:
 *
 *   STEM.data    sparse; unit i at offset i * block_size
 *   STEM.index   a 512-byte header {magic "HUBFSIX1", version, block (unit) size, blob size,
 *                etag, checksum of the header, flags} then one 8-byte record per unit {marker,
 *                checksum of the unit}; the marker is RECORD_PRESENT once the unit's data was
 *                written, not necessarily flushed: the UNSYNCED flag, flushed before the first
 *                such write, says a crash may have left records ahead of their data (caches of
 *                earlier versions flushed every unit and have no flags).
 *                Sparse: a hole reads as absent records
 *   STEM.prefix  {magic "HUBFSPF2", length, checksum of the bytes seeded with the length} then the bytes;
 *                replaced whole by renaming a temporary file
 *   .tmp-*       temporary files, removed when the cache opens
 *
 * All integers little-endian.
 */
#ifndef HUBFS_CACHE_FILES_H
#define HUBFS_CACHE_FILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    CACHE_INDEX_HEADER_SIZE = 512,
    CACHE_RECORD_SIZE = 8,
    CACHE_MAX_ETAG_LEN = 256,
    CACHE_STEM_MAX = 64 + 1 + 20 + 1,        /* hex digest, '-', decimal size, NUL */
    CACHE_NAME_MAX = CACHE_STEM_MAX + 32,    /* a stem with a suffix or a temporary name */
    CACHE_PREFIX_HEADER_SIZE = 16,
};
#define CACHE_MAX_BLOCKS (UINT64_C(1) << 24)          /* 128 MiB of (sparse) index at most */
#define CACHE_MAX_PREFIX_LEN (UINT32_C(128) << 20)    /* safetensors headers are <= 100 MB */

enum cache_block_state { CACHE_BLOCK_ABSENT, CACHE_BLOCK_PRESENT };

typedef struct cache_record {
    uint32_t crc;
    uint8_t state;
} cache_record;

typedef struct cache_index_header {
    uint32_t block_size;
    uint64_t blob_size;
    char etag[CACHE_MAX_ETAG_LEN + 1];
    bool unsynced;               /* units may be recorded present ahead of their data */
} cache_index_header;

/* The stem for (etag, size); etag must be at most CACHE_MAX_ETAG_LEN characters. */
void cache_blob_stem(const char *etag, uint64_t size, char stem[CACHE_STEM_MAX]);

/* If name is STEM + suffix, copies STEM out and returns true. */
bool cache_split_name(const char *name, const char *suffix, char stem[CACHE_STEM_MAX]);

/* "STEM.suffix" into name (CACHE_NAME_MAX bytes). */
void cache_file_name(char *name, const char *stem, const char *suffix);

uint64_t cache_block_count(uint64_t blob_size, uint32_t block_size);

void cache_encode_index_header(const cache_index_header *header, uint8_t out[CACHE_INDEX_HEADER_SIZE]);
/* False when the bytes are not a valid header of this version. */
bool cache_decode_index_header(const uint8_t in[CACHE_INDEX_HEADER_SIZE], cache_index_header *header);
/* Rewrites the header of an open index in place (one sector: a torn write fails its checksum,
 * and the blob's cache is dropped). Returns 0 or an errno value. */
int cache_write_index_header(int index_fd, const cache_index_header *header);

/* Writes the records of units [first, first + count) with one pwrite. Returns 0 or an errno
 * value. */
int cache_write_records(int index_fd, uint64_t first, uint64_t count, const cache_record *records);

/* Reads the records of units [first, first + count); records past the end of a short file are
 * absent. Returns 0 or an errno value. */
int cache_read_records(int index_fd, uint64_t first, uint64_t count, cache_record *records);

/* Calls visit for the records of units [0, unit_count) in order, a chunk at a time; holes of
 * the index (every record absent) come as records == NULL and are skipped over, not read.
 * Returns 0 or an errno value. */
typedef void cache_records_visitor(void *context, uint64_t first, uint64_t count, const cache_record *records);
int cache_scan_records(int index_fd, uint64_t unit_count, cache_records_visitor *visit, void *context);

/* Creates STEM.index with the header and every record absent, atomically (temporary file and
 * rename). temp_seq makes the temporary name unique. Returns 0 or an errno value. */
int cache_create_index(int dir_fd, const char *stem, const cache_index_header *header,
                       uint64_t block_count, uint64_t temp_seq);

/* Replaces STEM.prefix atomically. Returns 0 or an errno value. */
int cache_write_prefix(int dir_fd, const char *stem, const void *buf, size_t len, uint64_t temp_seq);

/* Reads STEM.prefix into buf. Returns 0, ENOENT (none), EBADMSG (corrupt), ENOBUFS (longer
 * than capacity; *len_out says how long) or another errno value. */
int cache_read_prefix(int dir_fd, const char *stem, void *buf, size_t capacity, size_t *len_out);

/* The size of a prefix file holding len bytes. */
uint64_t cache_prefix_file_size(size_t len);

/* Whole-buffer pread/pwrite: 0 or an errno value (EIO when the file ends early). */
int cache_pread_all(int fd, void *buf, size_t len, uint64_t offset);
int cache_pwrite_all(int fd, const void *buf, size_t len, uint64_t offset);

/* The checksum of a unit: XXH3 of its bytes, folded to 32 bits. */
uint32_t cache_checksum(const void *buf, size_t len);

#endif
