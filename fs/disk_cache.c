/* disk_cache.c — the persistent block cache: loading a blob's index, reading and writing
 * blocks and prefixes (locking rules: disk_cache_internal.h).
 *
 * Crash safety. A block is written and fdatasync'ed before its index record says PRESENT, so
 * a record never precedes its data onto the disk; the record itself is not synced, as losing
 * it only loses a cached block. Every read verifies the block's crc32 whatever happened
 * before: a crash, a torn write, a damaged disk, someone editing the files.
 */
#include "disk_cache_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- loading a blob's index (b->mutex held) --------------------------------------------- */

static int open_index(disk_cache *cache, blob *b, int *fd_out)
{
    char name[CACHE_NAME_MAX];
    cache_file_name(name, b->stem, ".index");
    int fd = openat(cache->dir_fd, name, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return errno;
    uint8_t encoded[CACHE_INDEX_HEADER_SIZE];
    cache_index_header header;
    int err = cache_pread_all(fd, encoded, sizeof encoded, 0);
    if (!err && (!cache_decode_index_header(encoded, &header) || header.block_size != cache->block_size ||
                 header.blob_size != b->size || strcmp(header.etag, b->etag) != 0))
        err = EBADMSG;
    if (err == EIO)
        err = EBADMSG; /* a truncated header */
    if (err) {
        close(fd);
        return err;
    }
    *fd_out = fd;
    return 0;
}

/* Forgets an unusable blob's files (only while not loaded: nobody holds its descriptors). */
static void discard_files(disk_cache *cache, blob *b)
{
    dc_unlink_blob_files(cache, b->stem);
    pthread_mutex_lock(&cache->lock);
    cache->bytes_stored -= b->block_bytes + b->prefix_bytes;
    if (dc_list_contains(&cache->by_access, b, false))
        dc_list_remove(&cache->by_access, b, false);
    pthread_mutex_unlock(&cache->lock);
    b->block_bytes = b->prefix_bytes = 0;
    b->has_files = false;
}

static int create_files(disk_cache *cache, blob *b, int *index_fd_out)
{
    if (b->block_count > CACHE_MAX_BLOCKS)
        return EFBIG;
    cache_index_header header = {.block_size = cache->block_size, .blob_size = b->size};
    snprintf(header.etag, sizeof header.etag, "%s", b->etag);
    int err = cache_create_index(cache->dir_fd, b->stem, &header, b->block_count,
                                 atomic_fetch_add(&cache->temp_seq, 1));
    if (err)
        return err;
    /* A fresh index has no block: whatever an old data file held is garbage now. */
    char name[CACHE_NAME_MAX];
    cache_file_name(name, b->stem, ".data");
    int data_fd = openat(cache->dir_fd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (data_fd >= 0)
        close(data_fd);
    err = data_fd < 0 ? errno : open_index(cache, b, index_fd_out);
    if (err)
        dc_unlink_blob_files(cache, b->stem);
    return err;
}

/* Opens the blob's files and reads its records. With create, makes empty files when there are
 * none (or they are unusable). Returns 0, ENOENT (nothing stored) or an errno value. */
static int load_blob(disk_cache *cache, blob *b, bool create)
{
    if (b->loaded)
        return 0;
    if (!b->has_files && !create)
        return ENOENT;
    if (b->block_count > CACHE_MAX_BLOCKS)
        return EFBIG;
    int index_fd = -1;
    int err = b->has_files ? open_index(cache, b, &index_fd) : ENOENT;
    if (err == ENOENT || err == EBADMSG) {
        if (b->has_files)
            discard_files(cache, b);
        err = create ? create_files(cache, b, &index_fd) : ENOENT;
    }
    if (err)
        return err;

    char name[CACHE_NAME_MAX];
    cache_file_name(name, b->stem, ".data");
    int data_fd = openat(cache->dir_fd, name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    cache_record *records = calloc(b->block_count ? b->block_count : 1, sizeof *records);
    err = data_fd < 0 ? errno : !records ? ENOMEM : cache_read_records(index_fd, b->block_count, records);
    if (err) {
        close(index_fd);
        if (data_fd >= 0)
            close(data_fd);
        free(records);
        return err;
    }
    uint64_t block_bytes = 0;
    for (uint64_t i = 0; i < b->block_count; i++)
        if (records[i].state == CACHE_BLOCK_PRESENT)
            block_bytes += dc_block_length(cache, b, i);

    b->index_fd = index_fd;
    b->data_fd = data_fd;
    b->records = records;
    b->loaded = true;
    pthread_mutex_lock(&cache->lock);
    cache->bytes_stored += block_bytes - b->block_bytes; /* 0 unless the index changed under us */
    b->block_bytes = block_bytes;
    if (!b->has_files) {
        b->has_files = true;
        dc_list_append(&cache->by_access, b, false);
    }
    dc_list_append(&cache->open_blobs, b, true);
    pthread_mutex_unlock(&cache->lock);
    return 0;
}

/* Marks a block absent on disk and in memory and frees its space. b->mutex held. */
static void drop_block(disk_cache *cache, blob *b, uint64_t block_index)
{
    uint64_t len = dc_block_length(cache, b, block_index);
    cache_write_record(b->index_fd, block_index, false, 0);
    b->records[block_index].state = CACHE_BLOCK_ABSENT;
    dc_punch_hole(b->data_fd, block_index * cache->block_size, len);
    b->block_bytes -= len;
    pthread_mutex_lock(&cache->lock);
    cache->bytes_stored -= len;
    pthread_mutex_unlock(&cache->lock);
}

/* ---- blocks ------------------------------------------------------------------------------- */

static bool valid_block(const disk_cache *cache, const disk_cache_blob_key *key, uint64_t block_index,
                        const void *buf, size_t len)
{
    if (!cache || !dc_valid_key(key) || !buf || block_index >= cache_block_count(key->size, cache->block_size))
        return false;
    uint64_t offset = block_index * cache->block_size;
    uint64_t expected = key->size - offset < cache->block_size ? key->size - offset : cache->block_size;
    return len == expected;
}

/* Serves a block of our own files, verifying its checksum. */
static bool read_own_block(disk_cache *cache, const disk_cache_blob_key *key, uint64_t block_index,
                           void *buf, size_t len)
{
    blob *b = dc_acquire_blob(cache, key, false);
    if (!b)
        return false;
    pthread_mutex_lock(&b->mutex);
    bool present = load_blob(cache, b, false) == 0 && b->records[block_index].state == CACHE_BLOCK_PRESENT;
    uint32_t expected_crc = present ? b->records[block_index].crc : 0;
    int data_fd = b->data_fd;
    pthread_mutex_unlock(&b->mutex);

    bool verified = present && cache_pread_all(data_fd, buf, len, block_index * cache->block_size) == 0 &&
                    cache_crc32(buf, len) == expected_crc;
    if (present && !verified) {
        pthread_mutex_lock(&b->mutex);
        /* Unless a writer replaced the block meanwhile, its bytes are damaged: drop them. */
        if (b->records[block_index].state == CACHE_BLOCK_PRESENT && b->records[block_index].crc == expected_crc) {
            drop_block(cache, b, block_index);
            atomic_fetch_add(&cache->checksum_failures, 1);
        }
        pthread_mutex_unlock(&b->mutex);
    }
    dc_release_blob(cache, b, verified);
    return verified;
}

bool disk_cache_read_block(disk_cache *cache, const disk_cache_blob_key *key, uint64_t block_index,
                           void *buf, size_t len)
{
    if (!valid_block(cache, key, block_index, buf, len)) {
        if (cache)
            atomic_fetch_add(&cache->block_misses, 1);
        return false;
    }
    bool hit = read_own_block(cache, key, block_index, buf, len) ||
               hf_cache_read(cache->hf, key->etag, key->size, block_index * cache->block_size, buf, len);
    atomic_fetch_add(hit ? &cache->block_hits : &cache->block_misses, 1);
    return hit;
}

#define DIRECT_IO_ALIGNMENT 4096

/* Writes the bytes bypassing the page cache when they are aligned for it: a buffered write
 * copies every fetched byte once more (a quarter of a cold read's CPU, measured) and fills the
 * page cache with data the kernel already caches for the mount. Returns false when direct I/O
 * is not possible here (unaligned, /proc absent, a file system without O_DIRECT), so the caller
 * writes through the page cache instead. */
static bool write_direct(int data_fd, const void *buf, size_t len, uint64_t offset, int *err)
{
    if ((uintptr_t)buf % DIRECT_IO_ALIGNMENT || len % DIRECT_IO_ALIGNMENT || offset % DIRECT_IO_ALIGNMENT)
        return false;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", data_fd);
    int direct_fd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
    if (direct_fd < 0)
        return false;
    *err = cache_pwrite_all(direct_fd, buf, len, offset);
    close(direct_fd);
    return *err != EINVAL;   /* EINVAL: O_DIRECT refused after all; write buffered */
}

/* Writes the data durably, then the record. Returns 0 or an errno value. */
static int store_block(disk_cache *cache, blob *b, int data_fd, uint64_t block_index, const void *buf,
                       size_t len, uint32_t crc)
{
    uint64_t offset = block_index * cache->block_size;
    int err = 0;
    if (!write_direct(data_fd, buf, len, offset, &err))
        err = cache_pwrite_all(data_fd, buf, len, offset);
    if (!err && fdatasync(data_fd) != 0)
        err = errno;
    pthread_mutex_lock(&b->mutex);
    if (!err)
        err = cache_write_record(b->index_fd, block_index, true, crc);
    if (err) {
        b->records[block_index].state = CACHE_BLOCK_ABSENT;
        dc_punch_hole(data_fd, offset, len);
    } else {
        b->records[block_index].state = CACHE_BLOCK_PRESENT;
        b->records[block_index].crc = crc;
        b->block_bytes += len;
    }
    pthread_mutex_unlock(&b->mutex);
    return err;
}

int disk_cache_write_block(disk_cache *cache, const disk_cache_blob_key *key, uint64_t block_index,
                           const void *buf, size_t len)
{
    if (!valid_block(cache, key, block_index, buf, len))
        return EINVAL;
    uint32_t crc = cache_crc32(buf, len);
    blob *b = dc_acquire_blob(cache, key, true);
    if (!b) {
        atomic_fetch_add(&cache->write_failures, 1);
        return errno;
    }
    pthread_mutex_lock(&b->mutex);
    int err = load_blob(cache, b, true);
    cache_record *record = err ? NULL : &b->records[block_index];
    bool already_stored = record && ((record->state == CACHE_BLOCK_PRESENT && record->crc == crc) ||
                                     record->state == CACHE_BLOCK_WRITING); /* the other writer stores it */
    bool write_it = record && !already_stored;
    if (write_it) {
        if (record->state == CACHE_BLOCK_PRESENT) /* different bytes than stored: replace them */
            drop_block(cache, b, block_index);
        record->state = CACHE_BLOCK_WRITING;
    }
    int data_fd = b->data_fd;
    pthread_mutex_unlock(&b->mutex);

    if (write_it) {
        err = dc_reserve_space(cache, len);
        if (err) {
            pthread_mutex_lock(&b->mutex);
            b->records[block_index].state = CACHE_BLOCK_ABSENT;
            pthread_mutex_unlock(&b->mutex);
        } else {
            err = store_block(cache, b, data_fd, block_index, buf, len, crc);
            dc_finish_reservation(cache, len, err ? 0 : (int64_t)len);
        }
    }
    if (err)
        atomic_fetch_add(&cache->write_failures, 1);
    dc_release_blob(cache, b, !err);
    return err;
}

/* ---- prefixes ----------------------------------------------------------------------------- */

bool disk_cache_read_prefix(disk_cache *cache, const disk_cache_blob_key *key, void *buf,
                            size_t capacity, size_t *len_out)
{
    if (!cache || !dc_valid_key(key) || (!buf && capacity) || !len_out)
        return false;
    blob *b = dc_acquire_blob(cache, key, false);
    if (!b)
        return false;
    pthread_mutex_lock(&b->mutex);
    bool has_files = b->has_files;
    pthread_mutex_unlock(&b->mutex);
    /* The file is replaced by rename, so it is read unlocked. */
    int err = has_files ? cache_read_prefix(cache->dir_fd, b->stem, buf, capacity, len_out) : ENOENT;
    if (err == EBADMSG) {
        atomic_fetch_add(&cache->checksum_failures, 1);
        pthread_mutex_lock(&b->mutex);
        /* Writers rename under the mutex: if it is still damaged now, it is not a new one. */
        if (cache_read_prefix(cache->dir_fd, b->stem, buf, capacity, len_out) == EBADMSG) {
            dc_unlink_blob_file(cache, b->stem, ".prefix");
            pthread_mutex_lock(&cache->lock);
            cache->bytes_stored -= b->prefix_bytes;
            pthread_mutex_unlock(&cache->lock);
            b->prefix_bytes = 0;
        }
        pthread_mutex_unlock(&b->mutex);
    }
    dc_release_blob(cache, b, err == 0);
    return err == 0;
}

int disk_cache_write_prefix(disk_cache *cache, const disk_cache_blob_key *key, const void *buf, size_t len)
{
    if (!cache || !dc_valid_key(key) || (!buf && len) || len > CACHE_MAX_PREFIX_LEN)
        return EINVAL;
    blob *b = dc_acquire_blob(cache, key, true);
    if (!b) {
        atomic_fetch_add(&cache->write_failures, 1);
        return errno;
    }
    uint64_t file_size = cache_prefix_file_size(len);
    int err = dc_reserve_space(cache, file_size);
    if (!err) {
        /* Under the mutex (prefixes are small and written once): see disk_cache_read_prefix. */
        pthread_mutex_lock(&b->mutex);
        err = load_blob(cache, b, true); /* the index makes the blob known and evictable */
        if (!err)
            err = cache_write_prefix(cache->dir_fd, b->stem, buf, len, atomic_fetch_add(&cache->temp_seq, 1));
        int64_t delta = err ? 0 : (int64_t)file_size - (int64_t)b->prefix_bytes;
        if (!err)
            b->prefix_bytes = file_size;
        pthread_mutex_unlock(&b->mutex);
        dc_finish_reservation(cache, file_size, delta);
    }
    if (err)
        atomic_fetch_add(&cache->write_failures, 1);
    dc_release_blob(cache, b, !err);
    return err;
}

/* ---- queries ------------------------------------------------------------------------------ */

uint64_t disk_cache_cached_bytes(disk_cache *cache, const disk_cache_blob_key *key)
{
    if (!cache || !dc_valid_key(key))
        return 0;
    if (hf_cache_has_blob(cache->hf, key->etag, key->size))
        return key->size;
    blob *b = dc_acquire_blob(cache, key, false);
    if (!b)
        return 0;
    pthread_mutex_lock(&b->mutex);
    uint64_t bytes = b->block_bytes;
    pthread_mutex_unlock(&b->mutex);
    dc_release_blob(cache, b, false);
    return bytes;
}

void disk_cache_get_counters(disk_cache *cache, disk_cache_counters *out)
{
    memset(out, 0, sizeof *out);
    if (!cache)
        return;
    pthread_mutex_lock(&cache->lock);
    out->bytes_stored = cache->bytes_stored;
    out->evictions = cache->evictions;
    pthread_mutex_unlock(&cache->lock);
    out->block_hits = atomic_load(&cache->block_hits);
    out->block_misses = atomic_load(&cache->block_misses);
    out->write_failures = atomic_load(&cache->write_failures);
    out->checksum_failures = atomic_load(&cache->checksum_failures);
}
