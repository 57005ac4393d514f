/* disk_cache.c — the persistent cache: loading a blob's files, reading and writing ranges of
 * units and prefixes (locking rules: disk_cache_internal.h).
 *
 * Crash safety. Every read verifies each unit's checksum (XXH3) whatever happened before: a
 * crash, a torn write, a damaged disk, someone editing the files. So units are not flushed one
 * by one: a record may reach the disk ahead of its unit's data, and after a crash that unit
 * fails its checksum and is fetched again (a flush per write cost 3-4 % of the daemon's CPU on
 * a cold read). Losing records only loses cached units. A whole blob handed out by
 * disk_cache_open_whole is read by the kernel unverified, like any local file, so it is handed
 * out only sealed: the index's UNSYNCED flag, flushed to the disk before the blob's first
 * unflushed write, is cleared once its data is flushed whole; a blob found whole with the flag
 * set by an earlier run (it died before sealing) is verified unit by unit first.
 */
#include "disk_cache_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- loading a blob's index (b->mutex held) --------------------------------------------- */

static int open_index(disk_cache *cache, blob *b, int *fd_out)
{
    char name[CACHE_NAME_MAX];
    cache_file_name(name, b->stem, ".index");
    int fd = openat(cache->dir_fd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
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
    b->unsynced = b->unsynced_before = header.unsynced;
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

static cache_index_header index_header(const disk_cache *cache, const blob *b, bool unsynced)
{
    cache_index_header header = {.block_size = cache->block_size, .blob_size = b->size, .unsynced = unsynced};
    snprintf(header.etag, sizeof header.etag, "%s", b->etag);
    return header;
}

static int create_files(disk_cache *cache, blob *b, int *index_fd_out)
{
    if (b->block_count > CACHE_MAX_BLOCKS)
        return EFBIG;
    cache_index_header header = index_header(cache, b, false);
    int err = cache_create_index(cache->dir_fd, b->stem, &header, b->block_count,
                                 atomic_fetch_add(&cache->temp_seq, 1));
    if (err)
        return err;
    /* A fresh index has no unit: whatever an old data file held is garbage now. */
    char name[CACHE_NAME_MAX];
    cache_file_name(name, b->stem, ".data");
    int data_fd = openat(cache->dir_fd, name, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (data_fd >= 0)
        close(data_fd);
    err = data_fd < 0 ? errno : open_index(cache, b, index_fd_out);
    if (err)
        dc_unlink_blob_files(cache, b->stem);
    return err;
}

/* The data file opened anew with O_DIRECT, or -1 where direct I/O is not possible here (/proc
 * absent, a file system without O_DIRECT). Kept open beside the buffered descriptor: opening it
 * for every read and write cost a path walk through /proc and two system calls a unit run. */
static int reopen_direct(int data_fd)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", data_fd);
    return open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
}

/* Opens the blob's files. With create, makes empty files when there are none (or they are
 * unusable). Returns 0, ENOENT (nothing stored) or an errno value. */
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
    int data_fd = openat(cache->dir_fd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (data_fd < 0) {
        err = errno;
        close(index_fd);
        return err;
    }
    b->index_fd = index_fd;
    b->data_fd = data_fd;
    b->direct_fd = reopen_direct(data_fd);
    b->loaded = true;
    pthread_mutex_lock(&cache->lock);
    if (!b->has_files) {
        b->has_files = true;
        dc_list_append(&cache->by_access, b, false);
    }
    dc_list_append(&cache->open_blobs, b, true);
    pthread_mutex_unlock(&cache->lock);
    return 0;
}

/* Rewrites the index header with the UNSYNCED flag as given (not flushed). b->mutex held. */
static int write_unsynced_flag(const disk_cache *cache, const blob *b, bool unsynced)
{
    cache_index_header header = index_header(cache, b, unsynced);
    return cache_write_index_header(b->index_fd, &header);
}

/* Sets the UNSYNCED flag on the disk before the blob's first unflushed write. b->mutex held. */
static int mark_unsynced(const disk_cache *cache, blob *b)
{
    if (b->unsynced)
        return 0;
    int err = write_unsynced_flag(cache, b, true);
    if (!err && fdatasync(b->index_fd) != 0)
        err = errno;
    b->unsynced = err == 0;
    return err;
}

/* Marks a unit absent on disk and frees its space. b->mutex held. */
static void drop_unit(disk_cache *cache, blob *b, uint64_t unit)
{
    uint64_t len = dc_block_length(cache, b, unit);
    cache_record absent = {.state = CACHE_BLOCK_ABSENT};
    cache_write_records(b->index_fd, unit, 1, &absent);
    dc_punch_hole(b->data_fd, unit * cache->block_size, len);
    b->block_bytes -= len;
    pthread_mutex_lock(&cache->lock);
    cache->bytes_stored -= len;
    pthread_mutex_unlock(&cache->lock);
}

/* ---- reading ------------------------------------------------------------------------------ */

enum { RECORDS_PER_STEP = 1024 };   /* records read under the blob mutex at a time */

/* What one read_range call is serving from our files. */
typedef struct range_read {
    disk_cache *cache;
    blob *b;
    int data_fd, direct_fd;
    uint64_t offset;              /* of buf[0] in the blob */
    uint64_t end;                 /* offset + len */
    uint8_t *buf;
    uint8_t *scratch;             /* one unit, for units the range covers in part */
} range_read;

/* A unit that did not verify: unless a writer replaced it meanwhile, its bytes are damaged. */
static void unit_failed(range_read *r, uint64_t unit, uint32_t expected_crc)
{
    cache_record record;
    pthread_mutex_lock(&r->b->mutex);
    if (cache_read_records(r->b->index_fd, unit, 1, &record) == 0 && record.state == CACHE_BLOCK_PRESENT &&
        record.crc == expected_crc) {
        drop_unit(r->cache, r->b, unit);
        atomic_fetch_add(&r->cache->checksum_failures, 1);
    }
    pthread_mutex_unlock(&r->b->mutex);
}

static bool unit_verifies(range_read *r, uint64_t unit, const uint8_t *bytes, uint32_t expected_crc)
{
    if (cache_checksum(bytes, dc_block_length(r->cache, r->b, unit)) == expected_crc)
        return true;
    unit_failed(r, unit, expected_crc);
    return false;
}

/* A unit the range covers in part: read whole into scratch, verified, then the part copied. */
static bool read_partial_unit(range_read *r, uint64_t unit, uint32_t expected_crc)
{
    uint64_t start = unit * r->cache->block_size, len = dc_block_length(r->cache, r->b, unit);
    if (!r->scratch && !(r->scratch = malloc(r->cache->block_size)))
        return false;
    if (cache_pread_all(r->data_fd, r->scratch, len, start) != 0) {
        unit_failed(r, unit, expected_crc);
        return false;
    }
    if (!unit_verifies(r, unit, r->scratch, expected_crc))
        return false;
    uint64_t from = start > r->offset ? start : r->offset;
    uint64_t to = start + len < r->end ? start + len : r->end;
    memcpy(r->buf + (from - r->offset), r->scratch + (from - start), to - from);
    return true;
}

static bool aligned_for_direct_io(const void *buf, size_t len, uint64_t offset)
{
    return (uintptr_t)buf % DISK_CACHE_DIRECT_ALIGNMENT == 0 && len % DISK_CACHE_DIRECT_ALIGNMENT == 0 &&
           offset % DISK_CACHE_DIRECT_ALIGNMENT == 0;
}

/* Reads bypassing the page cache when aligned for it: a buffered read copies every byte once
 * more and fills the page cache with what the kernel is about to cache for the mount anyway. */
static int read_units(int data_fd, int direct_fd, void *buf, size_t len, uint64_t offset)
{
    if (direct_fd >= 0 && aligned_for_direct_io(buf, len, offset)) {
        int err = cache_pread_all(direct_fd, buf, len, offset);
        if (err != EINVAL)   /* EINVAL: O_DIRECT refused after all; read buffered */
            return err;
    }
    return cache_pread_all(data_fd, buf, len, offset);
}

/* Units [first, first + count), all inside the range: one pread straight into buf (one per unit
 * when that fails, to find which), then each verified. Returns how many verified, from first. */
static uint64_t read_whole_units(range_read *r, uint64_t first, uint64_t count, const cache_record *records)
{
    uint32_t bs = r->cache->block_size;
    uint64_t start = first * bs, len = (count - 1) * bs + dc_block_length(r->cache, r->b, first + count - 1);
    bool one_read = read_units(r->data_fd, r->direct_fd, r->buf + (start - r->offset), len, start) == 0;
    for (uint64_t i = 0; i < count; i++) {
        uint8_t *unit_bytes = r->buf + (start + i * bs - r->offset);
        uint64_t unit_len = dc_block_length(r->cache, r->b, first + i);
        if (!one_read && cache_pread_all(r->data_fd, unit_bytes, unit_len, start + i * bs) != 0) {
            unit_failed(r, first + i, records[i].crc);
            return i;
        }
        if (!unit_verifies(r, first + i, unit_bytes, records[i].crc))
            return i;
    }
    return count;
}

static bool covered_whole(const range_read *r, uint64_t unit)
{
    uint64_t start = unit * r->cache->block_size;
    return start >= r->offset && start + dc_block_length(r->cache, r->b, unit) <= r->end;
}

/* Serves present units [first, first + count) in order; returns the units that verified. */
static uint64_t read_present_units(range_read *r, uint64_t first, uint64_t count, const cache_record *records)
{
    uint64_t done = 0;
    while (done < count) {
        if (!covered_whole(r, first + done)) {
            if (!read_partial_unit(r, first + done, records[done].crc))
                return done;
            done++;
            continue;
        }
        uint64_t run = 1;
        while (done + run < count && covered_whole(r, first + done + run))
            run++;
        uint64_t verified = read_whole_units(r, first + done, run, records + done);
        done += verified;
        if (verified < run)
            return done;
    }
    return done;
}

/* Serves the range from our own files: the bytes served from its start. */
static size_t read_own_range(disk_cache *cache, const disk_cache_blob_key *key, uint64_t offset, uint8_t *buf,
                             size_t len)
{
    blob *b = dc_acquire_blob(cache, key, false);
    if (!b)
        return 0;
    range_read r = {.cache = cache, .b = b, .offset = offset, .end = offset + len, .buf = buf};
    uint32_t bs = cache->block_size;
    uint64_t served_end = offset, last = (r.end - 1) / bs;
    cache_record records[RECORDS_PER_STEP];
    while (served_end < r.end) {
        uint64_t first = served_end / bs;
        uint64_t count = last - first + 1 < RECORDS_PER_STEP ? last - first + 1 : RECORDS_PER_STEP;
        pthread_mutex_lock(&b->mutex);
        int err = load_blob(cache, b, false);
        if (!err)
            err = cache_read_records(b->index_fd, first, count, records);
        r.data_fd = b->data_fd;
        r.direct_fd = b->direct_fd;
        pthread_mutex_unlock(&b->mutex);
        uint64_t present = 0;
        while (!err && present < count && records[present].state == CACHE_BLOCK_PRESENT)
            present++;
        uint64_t verified = present ? read_present_units(&r, first, present, records) : 0;
        if (verified == 0)
            break;
        uint64_t units_end = (first + verified) * bs;
        served_end = units_end < r.end ? units_end : r.end;
        if (verified < count)
            break;
    }
    free(r.scratch);
    dc_release_blob(cache, b, served_end > offset);
    return (size_t)(served_end - offset);
}

static bool valid_range(const disk_cache *cache, const disk_cache_blob_key *key, const void *buf, uint64_t offset,
                        size_t len)
{
    return cache && dc_valid_key(key) && (buf || !len) && offset <= key->size && len <= key->size - offset;
}

size_t disk_cache_read_range(disk_cache *cache, const disk_cache_blob_key *key, uint64_t offset, void *buf,
                             size_t len)
{
    if (!valid_range(cache, key, buf, offset, len)) {
        if (cache)
            atomic_fetch_add(&cache->block_misses, 1);
        return 0;
    }
    if (len == 0)
        return 0;
    size_t served = read_own_range(cache, key, offset, buf, len);
    if (served < len && hf_cache_read(cache->hf, key->hf_repo_folder, key->etag, key->size, offset + served,
                                      (uint8_t *)buf + served, len - served))
        served = len;
    atomic_fetch_add(served == len ? &cache->block_hits : &cache->block_misses, 1);
    return served;
}

/* ---- writing ------------------------------------------------------------------------------ */

static bool seal_blob(disk_cache *cache, const disk_cache_blob_key *key, blob *b, bool may_verify);

/* Writes the bytes bypassing the page cache when they are aligned for it: a buffered write
 * copies every fetched byte once more (a quarter of a cold read's CPU, measured) and fills the
 * page cache with data the kernel already caches for the mount. Returns false when direct I/O
 * is not possible here (unaligned, /proc absent, a file system without O_DIRECT), so the caller
 * writes through the page cache instead. */
static bool write_direct(int direct_fd, const void *buf, size_t len, uint64_t offset, int *err)
{
    if (direct_fd < 0 || !aligned_for_direct_io(buf, len, offset))
        return false;
    *err = cache_pwrite_all(direct_fd, buf, len, offset);
    return *err != EINVAL;   /* EINVAL: O_DIRECT refused after all; write buffered */
}

/* What one write_range call stores: units [first, first + count) lie completely inside the
 * caller's range; wanted[i] is unit first + i's record once written, write[i] whether this call
 * writes it (not when it is stored already, or another call is writing it). */
typedef struct range_write {
    disk_cache *cache;
    blob *b;
    int data_fd, direct_fd;
    const uint8_t *buf;
    uint64_t offset;              /* of buf[0] in the blob */
    uint64_t first, count;
    cache_record *wanted;
    bool *write;
    uint64_t write_bytes;
    unit_flight flight;
} range_write;

static bool in_flight_elsewhere(const blob *b, const unit_flight *mine, uint64_t unit)
{
    for (const unit_flight *f = b->flights; f; f = f->next)
        if (f != mine && unit >= f->first && unit < f->end)
            return true;
    return false;
}

static void remove_flight(blob *b, unit_flight *flight)
{
    for (unit_flight **slot = &b->flights; *slot; slot = &(*slot)->next) {
        if (*slot == flight) {
            *slot = flight->next;
            return;
        }
    }
}

/* Decides which units to write and claims the range. A stored unit with other bytes than ours
 * is dropped first: its record says absent before its data is overwritten. b->mutex held. */
static int plan_writes(range_write *w)
{
    blob *b = w->b;
    cache_record *stored = malloc(w->count * sizeof *stored);
    int err = stored ? cache_read_records(b->index_fd, w->first, w->count, stored) : ENOMEM;
    for (uint64_t i = 0; !err && i < w->count; i++) {
        uint64_t unit = w->first + i;
        bool present = stored[i].state == CACHE_BLOCK_PRESENT;
        w->write[i] = !(present && stored[i].crc == w->wanted[i].crc) && !in_flight_elsewhere(b, NULL, unit);
        if (w->write[i] && present)
            drop_unit(w->cache, b, unit);
        if (w->write[i])
            w->write_bytes += dc_block_length(w->cache, b, unit);
    }
    free(stored);
    if (!err) {
        w->flight = (unit_flight){.first = w->first, .end = w->first + w->count, .next = b->flights};
        b->flights = &w->flight;
    }
    return err;
}

/* Writes each run of units to write with one pwrite; nothing is flushed ("Crash safety"). */
static int write_units(range_write *w)
{
    uint32_t bs = w->cache->block_size;
    for (uint64_t i = 0; i < w->count;) {
        if (!w->write[i]) {
            i++;
            continue;
        }
        uint64_t run = 1;
        while (i + run < w->count && w->write[i + run])
            run++;
        uint64_t start = (w->first + i) * bs;
        size_t len = (size_t)((run - 1) * bs + dc_block_length(w->cache, w->b, w->first + i + run - 1));
        const uint8_t *bytes = w->buf + (start - w->offset);
        int err = 0;
        if (!write_direct(w->direct_fd, bytes, len, start, &err))
            err = cache_pwrite_all(w->data_fd, bytes, len, start);
        if (err)
            return err;
        i += run;
    }
    return 0;
}

/* The span [*from, *to) of the units written, in offsets of w->wanted. */
static void written_span(const range_write *w, uint64_t *from, uint64_t *to)
{
    *from = 0;
    while (!w->write[*from])
        (*from)++;
    *to = w->count;
    while (!w->write[*to - 1])
        (*to)--;
}

/* Records the written units present (one read and one write of the span's records), or on a
 * failure frees what was written. Releases the claim. b->mutex held. */
static int record_writes(range_write *w, int err)
{
    blob *b = w->b;
    uint64_t from, to;
    written_span(w, &from, &to);
    cache_record *records = malloc((to - from) * sizeof *records);
    if (!err)
        err = records ? cache_read_records(b->index_fd, w->first + from, to - from, records) : ENOMEM;
    for (uint64_t i = from; !err && i < to; i++)
        if (w->write[i])
            records[i - from] = w->wanted[i];
    if (!err && (err = cache_write_records(b->index_fd, w->first + from, to - from, records)) != 0) {
        for (uint64_t i = from; i < to; i++)   /* some may have reached the file: take them back */
            if (w->write[i])
                records[i - from] = (cache_record){.state = CACHE_BLOCK_ABSENT};
        cache_write_records(b->index_fd, w->first + from, to - from, records);
    }
    for (uint64_t i = from; err && i < to; i++) {
        uint64_t unit = w->first + i;
        if (w->write[i])
            dc_punch_hole(w->data_fd, unit * w->cache->block_size, dc_block_length(w->cache, b, unit));
    }
    if (!err)
        b->block_bytes += w->write_bytes;
    free(records);
    remove_flight(b, &w->flight);
    return err;
}

/* Units [*first, *first + *count) lie completely inside [offset, offset + len). */
static void complete_units(const disk_cache *cache, uint64_t blob_size, uint64_t offset, size_t len,
                           uint64_t *first, uint64_t *count)
{
    uint32_t bs = cache->block_size;
    uint64_t end = offset + len;
    *first = offset / bs + (offset % bs != 0);
    uint64_t end_unit = end == blob_size ? cache_block_count(blob_size, bs) : end / bs;
    *count = end_unit > *first ? end_unit - *first : 0;
}

static int store_units(range_write *w)
{
    pthread_mutex_lock(&w->b->mutex);
    int err = load_blob(w->cache, w->b, true);
    if (!err)
        err = plan_writes(w);
    bool planned = !err;
    if (planned && w->write_bytes > 0 && (err = mark_unsynced(w->cache, w->b)) == 0)
        w->b->writes_started++;
    if (planned && (err || w->write_bytes == 0))
        remove_flight(w->b, &w->flight);
    w->data_fd = w->b->data_fd;
    w->direct_fd = w->b->direct_fd;
    pthread_mutex_unlock(&w->b->mutex);
    if (err || w->write_bytes == 0)
        return err;
    err = dc_reserve_space(w->cache, w->write_bytes);
    bool reserved = err == 0;
    if (reserved)
        err = write_units(w);
    pthread_mutex_lock(&w->b->mutex);
    err = record_writes(w, err);
    pthread_mutex_unlock(&w->b->mutex);
    if (reserved)
        dc_finish_reservation(w->cache, w->write_bytes, err ? 0 : (int64_t)w->write_bytes);
    return err;
}

static int store_complete_units(disk_cache *cache, const disk_cache_blob_key *key, uint64_t offset,
                                const uint8_t *buf, size_t len)
{
    range_write w = {.cache = cache, .buf = buf, .offset = offset};
    complete_units(cache, key->size, offset, len, &w.first, &w.count);
    if (w.count == 0)
        return 0;
    int err = cache_block_count(key->size, cache->block_size) > CACHE_MAX_BLOCKS ? EFBIG : 0;
    w.wanted = err ? NULL : malloc(w.count * sizeof *w.wanted);
    w.write = err ? NULL : calloc(w.count, sizeof *w.write);
    if (!err && (!w.wanted || !w.write))
        err = ENOMEM;
    for (uint64_t i = 0; !err && i < w.count; i++) {
        uint64_t start = (w.first + i) * cache->block_size;
        uint64_t unit_len = key->size - start < cache->block_size ? key->size - start : cache->block_size;
        w.wanted[i] = (cache_record){.state = CACHE_BLOCK_PRESENT,
                                     .crc = cache_checksum(w.buf + (start - offset), (size_t)unit_len)};
    }
    if (!err && !(w.b = dc_acquire_blob(cache, key, true)))
        err = errno;
    if (!err)
        err = store_units(&w);
    if (!err)
        seal_blob(cache, key, w.b, false);   /* when this write completed the blob */
    if (w.b)
        dc_release_blob(cache, w.b, !err);
    if (err)
        atomic_fetch_add(&cache->write_failures, 1);
    free(w.wanted);
    free(w.write);
    return err;
}

/* Keeps the parts of units at the range's edges, and stores a unit they complete. */
static int store_completed_edges(disk_cache *cache, const disk_cache_blob_key *key, uint64_t offset,
                                 const uint8_t *buf, size_t len)
{
    uint32_t bs = cache->block_size;
    if (len == 0 || bs > EDGE_MAX_UNIT)
        return 0;
    uint64_t end = offset + len;
    uint64_t edge_units[2] = {offset / bs, (end - 1) / bs};
    int err = 0;
    for (int i = 0; i < (edge_units[1] == edge_units[0] ? 1 : 2) && !err; i++) {
        uint64_t start = edge_units[i] * bs;
        uint64_t unit_len = key->size - start < bs ? key->size - start : bs;
        uint64_t from = offset > start ? offset : start;
        uint64_t to = end < start + unit_len ? end : start + unit_len;
        if (from == start && to == start + unit_len)
            continue;   /* stored whole already */
        uint8_t *whole = dc_edges_merge(&cache->edges, key->etag, key->size, edge_units[i], (size_t)unit_len,
                                        (size_t)(from - start), buf + (from - offset), (size_t)(to - from));
        if (whole)
            err = store_complete_units(cache, key, start, whole, (size_t)unit_len);
        free(whole);
    }
    return err;
}

int disk_cache_write_range(disk_cache *cache, const disk_cache_blob_key *key, uint64_t offset, const void *buf,
                           size_t len)
{
    if (!valid_range(cache, key, buf, offset, len))
        return EINVAL;
    int err = store_complete_units(cache, key, offset, buf, len);
    int edge_err = store_completed_edges(cache, key, offset, buf, len);
    return err ? err : edge_err;
}

/* ---- units, for callers thinking in them -------------------------------------------------- */

static bool valid_block(const disk_cache *cache, const disk_cache_blob_key *key, uint64_t block_index,
                        const void *buf, size_t len)
{
    if (!cache || !dc_valid_key(key) || !buf || block_index >= cache_block_count(key->size, cache->block_size))
        return false;
    uint64_t offset = block_index * cache->block_size;
    uint64_t expected = key->size - offset < cache->block_size ? key->size - offset : cache->block_size;
    return len == expected;
}

bool disk_cache_read_block(disk_cache *cache, const disk_cache_blob_key *key, uint64_t block_index,
                           void *buf, size_t len)
{
    if (!valid_block(cache, key, block_index, buf, len)) {
        if (cache)
            atomic_fetch_add(&cache->block_misses, 1);
        return false;
    }
    return disk_cache_read_range(cache, key, block_index * cache->block_size, buf, len) == len;
}

int disk_cache_write_block(disk_cache *cache, const disk_cache_blob_key *key, uint64_t block_index,
                           const void *buf, size_t len)
{
    if (!valid_block(cache, key, block_index, buf, len))
        return EINVAL;
    return disk_cache_write_range(cache, key, block_index * cache->block_size, buf, len);
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
        /* A blob's header never changes, and a damaged prefix file is dropped when read: one of
         * this length is this one (every remount learns the header again). */
        bool stored_already = b->prefix_bytes == file_size;
        if (!err && !stored_already)
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

/* Bytes of present units' overlap with [offset, end), from the index. b->mutex held. */
static uint64_t present_in_index(disk_cache *cache, blob *b, uint64_t offset, uint64_t end)
{
    uint32_t bs = cache->block_size;
    cache_record records[RECORDS_PER_STEP];
    uint64_t bytes = 0, last = (end - 1) / bs;
    for (uint64_t first = offset / bs; first <= last; first += RECORDS_PER_STEP) {
        uint64_t count = last - first + 1 < RECORDS_PER_STEP ? last - first + 1 : RECORDS_PER_STEP;
        if (cache_read_records(b->index_fd, first, count, records) != 0)
            break;
        for (uint64_t i = 0; i < count; i++) {
            if (records[i].state != CACHE_BLOCK_PRESENT)
                continue;
            uint64_t start = (first + i) * bs, stop = start + dc_block_length(cache, b, first + i);
            bytes += (stop < end ? stop : end) - (start > offset ? start : offset);
        }
    }
    return bytes;
}

uint64_t disk_cache_present_bytes(disk_cache *cache, const disk_cache_blob_key *key, uint64_t offset, uint64_t len)
{
    if (!cache || !dc_valid_key(key) || offset >= key->size || len == 0)
        return 0;
    uint64_t end = len > key->size - offset ? key->size : offset + len;
    if (hf_cache_has_blob(cache->hf, key->hf_repo_folder, key->etag, key->size))
        return end - offset;
    blob *b = dc_acquire_blob(cache, key, false);
    if (!b)
        return 0;
    pthread_mutex_lock(&b->mutex);
    uint64_t bytes = offset == 0 && end == key->size ? b->block_bytes
                     : load_blob(cache, b, false) == 0 ? present_in_index(cache, b, offset, end) : 0;
    pthread_mutex_unlock(&b->mutex);
    dc_release_blob(cache, b, false);
    return bytes;
}

/* ---- sealing (see "Crash safety") ------------------------------------------------------- */

/* Reads the whole blob through the verifying path, which drops the units that fail. */
static bool verify_whole(disk_cache *cache, const disk_cache_blob_key *key)
{
    enum { STEP_BYTES = 8 << 20 };
    uint64_t bs = cache->block_size, step = STEP_BYTES > bs ? STEP_BYTES / bs * bs : bs;
    void *buf = NULL;
    bool ok = posix_memalign(&buf, DISK_CACHE_DIRECT_ALIGNMENT, (size_t)step) == 0;
    for (uint64_t at = 0; ok && at < key->size; at += step) {
        size_t len = (size_t)(key->size - at < step ? key->size - at : step);
        ok = read_own_range(cache, key, at, buf, len) == len;
    }
    free(buf);
    return ok;
}

/* Seals b when it is whole: flushes its data, then clears UNSYNCED. Units an earlier run
 * recorded may not have reached the disk before it died: with may_verify they are verified
 * first, else the blob stays unsealed. Holds a reference on b, not its mutex. True when sealed. */
static bool seal_blob(disk_cache *cache, const disk_cache_blob_key *key, blob *b, bool may_verify)
{
    pthread_mutex_lock(&b->mutex);
    bool whole = load_blob(cache, b, false) == 0 && b->block_bytes == b->size && !b->flights;
    bool sealed = whole && !b->unsynced, verify = b->unsynced_before;
    uint64_t writes = b->writes_started;
    int data_fd = b->data_fd;
    pthread_mutex_unlock(&b->mutex);
    if (!whole || sealed || (verify && !may_verify))
        return sealed;
    if ((verify && !verify_whole(cache, key)) || fdatasync(data_fd) != 0)
        return false;
    pthread_mutex_lock(&b->mutex);
    if (b->unsynced && b->writes_started == writes && b->block_bytes == b->size &&
        write_unsynced_flag(cache, b, false) == 0)
        b->unsynced = b->unsynced_before = false;
    sealed = !b->unsynced;
    pthread_mutex_unlock(&b->mutex);
    return sealed;
}

/* Our data file, when all its units are present, sealed, and it is as long as the blob.
 * b->mutex held. */
static int open_whole_data_file(disk_cache *cache, blob *b)
{
    if (load_blob(cache, b, false) != 0 || b->block_bytes != b->size || b->flights || b->unsynced)
        return -1;
    char name[CACHE_NAME_MAX];
    cache_file_name(name, b->stem, ".data");
    int fd = openat(cache->dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != b->size)) {
        close(fd);
        fd = -1;
    }
    return fd;
}

int disk_cache_open_whole(disk_cache *cache, const disk_cache_blob_key *key)
{
    if (!cache || !dc_valid_key(key) || key->size == 0)
        return -1;
    int fd = -1;
    blob *b = dc_acquire_blob(cache, key, false);
    if (b) {
        if (seal_blob(cache, key, b, true)) {
            pthread_mutex_lock(&b->mutex);
            fd = open_whole_data_file(cache, b);
            pthread_mutex_unlock(&b->mutex);
        }
        dc_release_blob(cache, b, fd >= 0);
    }
    if (fd < 0)
        fd = hf_cache_open_verified(cache->hf, key->hf_repo_folder, key->etag, key->size);
    return fd;
}

uint64_t disk_cache_cached_bytes(disk_cache *cache, const disk_cache_blob_key *key)
{
    return key ? disk_cache_present_bytes(cache, key, 0, key->size) : 0;
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
    hf_cache_counters hf;
    hf_cache_get_counters(cache->hf, &hf);
    out->hf_blobs_verified = hf.blobs_verified;
    out->hf_blobs_rejected = hf.blobs_rejected;
}
