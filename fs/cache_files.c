/* cache_files.c — encoding and atomic writing of the persistent cache's files. */
#include "cache_files.h"

#include "hf_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#ifdef HUBFS_XXH_DISPATCH
/* XXH3 in the widest vectors the CPU has: the same hashes, 1.5x as fast as the SSE2 build. */
#include <xxh_x86dispatch.h>
#endif

/* Version 2: checksums are XXH3 (64 bits folded to 32), not zlib's crc32, which cost a sixth of
 * the daemon's CPU on a cold read; caches of version 1 are dropped at open. */
static const char INDEX_MAGIC[8] = {'H', 'U', 'B', 'F', 'S', 'I', 'X', '1'};
static const char PREFIX_MAGIC[8] = {'H', 'U', 'B', 'F', 'S', 'P', 'F', '2'};
enum { INDEX_VERSION = 2, INDEX_ETAG_OFFSET = 32, RECORDS_PER_READ = 4096 };
/* Flags follow the etag's room; headers written before they existed hold zeros there. */
enum { INDEX_FLAGS_OFFSET = INDEX_ETAG_OFFSET + CACHE_MAX_ETAG_LEN, INDEX_FLAG_UNSYNCED = 1 };
_Static_assert(INDEX_FLAGS_OFFSET + 4 <= CACHE_INDEX_HEADER_SIZE, "the flags lie inside the header");
/* "PRES": a record is present only with this exact marker, never by a stray non-zero byte. */
#define RECORD_PRESENT UINT32_C(0x53455250)

static void put_u32(uint8_t *out, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *out, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *in)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | in[i];
    return v;
}

static uint64_t get_u64(const uint8_t *in)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | in[i];
    return v;
}

static uint32_t fold(uint64_t hash) { return (uint32_t)(hash ^ hash >> 32); }

uint32_t cache_checksum(const void *buf, size_t len)
{
    return fold(XXH3_64bits(buf, len));
}

/* FNV-1a from two offset bases, each finished with a 64-bit mixer: a name, not a security hash
 * (the index holds the real etag and is compared on every open). */
static uint64_t hash_etag(const char *etag, uint64_t basis)
{
    uint64_t h = basis;
    for (const char *c = etag; *c; c++)
        h = (h ^ (unsigned char)*c) * UINT64_C(1099511628211);
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    return h ^ (h >> 33);
}

void cache_blob_stem(const char *etag, uint64_t size, char stem[CACHE_STEM_MAX])
{
    if (hf_cache_is_hex_digest(etag)) {
        snprintf(stem, CACHE_STEM_MAX, "%s-%" PRIu64, etag, size);
        return;
    }
    snprintf(stem, CACHE_STEM_MAX, "x%016" PRIx64 "%016" PRIx64 "-%" PRIu64,
             hash_etag(etag, UINT64_C(14695981039346656037)), hash_etag(etag, UINT64_C(0x9e3779b97f4a7c15)),
             size);
}

bool cache_split_name(const char *name, const char *suffix, char stem[CACHE_STEM_MAX])
{
    size_t name_len = strlen(name), suffix_len = strlen(suffix);
    if (name_len <= suffix_len || name_len - suffix_len >= CACHE_STEM_MAX || name[0] == '.' ||
        strcmp(name + name_len - suffix_len, suffix) != 0)
        return false;
    memcpy(stem, name, name_len - suffix_len);
    stem[name_len - suffix_len] = '\0';
    return true;
}

void cache_file_name(char *name, const char *stem, const char *suffix)
{
    snprintf(name, CACHE_NAME_MAX, "%s%s", stem, suffix);
}

uint64_t cache_block_count(uint64_t blob_size, uint32_t block_size)
{
    return blob_size / block_size + (blob_size % block_size != 0);
}

void cache_encode_index_header(const cache_index_header *header, uint8_t out[CACHE_INDEX_HEADER_SIZE])
{
    memset(out, 0, CACHE_INDEX_HEADER_SIZE);
    size_t etag_len = strnlen(header->etag, CACHE_MAX_ETAG_LEN);
    memcpy(out, INDEX_MAGIC, sizeof INDEX_MAGIC);
    put_u32(out + 8, INDEX_VERSION);
    put_u32(out + 12, header->block_size);
    put_u64(out + 16, header->blob_size);
    put_u32(out + 24, (uint32_t)etag_len);
    memcpy(out + INDEX_ETAG_OFFSET, header->etag, etag_len);
    put_u32(out + INDEX_FLAGS_OFFSET, header->unsynced ? INDEX_FLAG_UNSYNCED : 0);
    put_u32(out + 28, cache_checksum(out, CACHE_INDEX_HEADER_SIZE));  /* checksum taken with this field 0 */
}

bool cache_decode_index_header(const uint8_t in[CACHE_INDEX_HEADER_SIZE], cache_index_header *header)
{
    uint8_t copy[CACHE_INDEX_HEADER_SIZE];
    memcpy(copy, in, sizeof copy);
    uint32_t stored_crc = get_u32(copy + 28);
    put_u32(copy + 28, 0);
    uint32_t etag_len = get_u32(in + 24);
    if (memcmp(in, INDEX_MAGIC, sizeof INDEX_MAGIC) != 0 || get_u32(in + 8) != INDEX_VERSION ||
        stored_crc != cache_checksum(copy, sizeof copy) || etag_len == 0 || etag_len > CACHE_MAX_ETAG_LEN)
        return false;
    header->block_size = get_u32(in + 12);
    header->blob_size = get_u64(in + 16);
    memcpy(header->etag, in + INDEX_ETAG_OFFSET, etag_len);
    header->etag[etag_len] = '\0';
    header->unsynced = (get_u32(in + INDEX_FLAGS_OFFSET) & INDEX_FLAG_UNSYNCED) != 0;
    return strlen(header->etag) == etag_len && header->block_size > 0;
}

int cache_pread_all(int fd, void *buf, size_t len, uint64_t offset)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return EIO;
        done += (size_t)n;
    }
    return 0;
}

int cache_pwrite_all(int fd, const void *buf, size_t len, uint64_t offset)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(fd, (const char *)buf + done, len - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return EIO;
        done += (size_t)n;
    }
    return 0;
}

static void encode_record(uint8_t *out, const cache_record *record)
{
    bool present = record->state == CACHE_BLOCK_PRESENT;
    put_u32(out, present ? RECORD_PRESENT : 0);
    put_u32(out + 4, present ? record->crc : 0);
}

static void decode_record(const uint8_t *in, cache_record *record)
{
    bool present = get_u32(in) == RECORD_PRESENT;
    record->state = present ? CACHE_BLOCK_PRESENT : CACHE_BLOCK_ABSENT;
    record->crc = present ? get_u32(in + 4) : 0;
}

static off_t record_offset(uint64_t unit)
{
    return (off_t)(CACHE_INDEX_HEADER_SIZE + unit * CACHE_RECORD_SIZE);
}

int cache_write_records(int index_fd, uint64_t first, uint64_t count, const cache_record *records)
{
    uint8_t *encoded = malloc(count ? count * CACHE_RECORD_SIZE : 1);
    if (!encoded)
        return ENOMEM;
    for (uint64_t i = 0; i < count; i++)
        encode_record(encoded + i * CACHE_RECORD_SIZE, &records[i]);
    int err = cache_pwrite_all(index_fd, encoded, count * CACHE_RECORD_SIZE, (uint64_t)record_offset(first));
    free(encoded);
    return err;
}

/* Reads what the file holds of the records of [first, first + count): the rest is absent. */
static int read_record_chunk(int index_fd, uint64_t first, uint64_t count, uint8_t *chunk, cache_record *records)
{
    size_t want = count * CACHE_RECORD_SIZE, got = 0;
    while (got < want) {
        ssize_t n = pread(index_fd, chunk + got, want - got, record_offset(first) + (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            break;   /* a truncated index: the missing records stay absent */
        got += (size_t)n;
    }
    memset(chunk + got, 0, want - got);
    for (uint64_t i = 0; i < count; i++)
        decode_record(chunk + i * CACHE_RECORD_SIZE, &records[i]);
    return 0;
}

int cache_read_records(int index_fd, uint64_t first, uint64_t count, cache_record *records)
{
    enum { STACK_RECORDS = 512 };   /* 4 KiB: a read path call needs no allocation */
    uint8_t chunk[STACK_RECORDS * CACHE_RECORD_SIZE];
    int err = 0;
    for (uint64_t done = 0; !err && done < count; done += STACK_RECORDS) {
        uint64_t n = count - done < STACK_RECORDS ? count - done : STACK_RECORDS;
        err = read_record_chunk(index_fd, first + done, n, chunk, records + done);
    }
    return err;
}

/* The first unit at or after unit whose record may be non-zero (SEEK_DATA), or unit_count. */
static uint64_t next_data_unit(int index_fd, uint64_t unit, uint64_t unit_count)
{
    off_t data = lseek(index_fd, record_offset(unit), SEEK_DATA);
    if (data < 0)
        return errno == ENXIO ? unit_count : unit;   /* ENXIO: only a hole is left */
    uint64_t data_unit = (uint64_t)(data - CACHE_INDEX_HEADER_SIZE) / CACHE_RECORD_SIZE;
    return data_unit < unit ? unit : data_unit < unit_count ? data_unit : unit_count;
}

int cache_scan_records(int index_fd, uint64_t unit_count, cache_records_visitor *visit, void *context)
{
    uint8_t *chunk = malloc(RECORDS_PER_READ * CACHE_RECORD_SIZE);
    cache_record *records = malloc(RECORDS_PER_READ * sizeof *records);
    int err = chunk && records ? 0 : ENOMEM;
    for (uint64_t unit = 0; !err && unit < unit_count;) {
        uint64_t data_unit = next_data_unit(index_fd, unit, unit_count);
        if (data_unit > unit) {
            visit(context, unit, data_unit - unit, NULL);
            unit = data_unit;
            continue;
        }
        uint64_t count = unit_count - unit < RECORDS_PER_READ ? unit_count - unit : RECORDS_PER_READ;
        err = read_record_chunk(index_fd, unit, count, chunk, records);
        if (!err)
            visit(context, unit, count, records);
        unit += count;
    }
    free(chunk);
    free(records);
    return err;
}

/* Writes a temporary file with parts[] and renames it to final_name. Data is synced before the
 * rename so the new name never points at a file whose bytes are not on disk. */
static int write_file_atomically(int dir_fd, const char *final_name, const void *const *parts,
                                 const size_t *part_lens, int part_count, uint64_t total_size,
                                 uint64_t temp_seq)
{
    char temp_name[CACHE_NAME_MAX + 32];
    snprintf(temp_name, sizeof temp_name, ".tmp-%" PRIu64 "-%s", temp_seq, final_name);
    int fd = openat(dir_fd, temp_name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno;
    int err = 0;
    uint64_t offset = 0;
    for (int i = 0; i < part_count && !err; i++) {
        err = cache_pwrite_all(fd, parts[i], part_lens[i], offset);
        offset += part_lens[i];
    }
    if (!err && total_size > offset && ftruncate(fd, (off_t)total_size) != 0)
        err = errno;
    if (!err && fdatasync(fd) != 0)
        err = errno;
    if (close(fd) != 0 && !err)
        err = errno;
    if (!err && renameat(dir_fd, temp_name, dir_fd, final_name) != 0)
        err = errno;
    if (err)
        unlinkat(dir_fd, temp_name, 0);
    return err;
}

int cache_write_index_header(int index_fd, const cache_index_header *header)
{
    uint8_t encoded[CACHE_INDEX_HEADER_SIZE];
    cache_encode_index_header(header, encoded);
    return cache_pwrite_all(index_fd, encoded, sizeof encoded, 0);
}

int cache_create_index(int dir_fd, const char *stem, const cache_index_header *header,
                       uint64_t block_count, uint64_t temp_seq)
{
    uint8_t encoded[CACHE_INDEX_HEADER_SIZE];
    cache_encode_index_header(header, encoded);
    char name[CACHE_NAME_MAX];
    cache_file_name(name, stem, ".index");
    const void *parts[] = {encoded};
    size_t lens[] = {sizeof encoded};
    /* The records are a hole of zeros: every block absent. */
    return write_file_atomically(dir_fd, name, parts, lens, 1,
                                 CACHE_INDEX_HEADER_SIZE + block_count * CACHE_RECORD_SIZE, temp_seq);
}

/* The length is the seed: a prefix cut short does not verify. */
static uint32_t prefix_crc(uint32_t len, const void *buf)
{
    return fold(XXH3_64bits_withSeed(buf, len, len));
}

uint64_t cache_prefix_file_size(size_t len)
{
    return CACHE_PREFIX_HEADER_SIZE + (uint64_t)len;
}

int cache_write_prefix(int dir_fd, const char *stem, const void *buf, size_t len, uint64_t temp_seq)
{
    if (len > CACHE_MAX_PREFIX_LEN)
        return EINVAL;
    uint8_t header[CACHE_PREFIX_HEADER_SIZE];
    memcpy(header, PREFIX_MAGIC, sizeof PREFIX_MAGIC);
    put_u32(header + 8, (uint32_t)len);
    put_u32(header + 12, prefix_crc((uint32_t)len, buf));
    char name[CACHE_NAME_MAX];
    cache_file_name(name, stem, ".prefix");
    const void *parts[] = {header, buf};
    size_t lens[] = {sizeof header, len};
    return write_file_atomically(dir_fd, name, parts, lens, 2, cache_prefix_file_size(len), temp_seq);
}

int cache_read_prefix(int dir_fd, const char *stem, void *buf, size_t capacity, size_t *len_out)
{
    char name[CACHE_NAME_MAX];
    cache_file_name(name, stem, ".prefix");
    int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno;
    uint8_t header[CACHE_PREFIX_HEADER_SIZE];
    struct stat st;
    int err = cache_pread_all(fd, header, sizeof header, 0);
    if (!err && fstat(fd, &st) != 0)
        err = errno;
    uint32_t len = get_u32(header + 8);
    if (err == EIO || (!err && (memcmp(header, PREFIX_MAGIC, sizeof PREFIX_MAGIC) != 0 ||
                                len > CACHE_MAX_PREFIX_LEN ||
                                (uint64_t)st.st_size != cache_prefix_file_size(len))))
        err = EBADMSG;
    if (!err && len > capacity) {
        *len_out = len;
        err = ENOBUFS;
    }
    if (!err)
        err = cache_pread_all(fd, buf, len, CACHE_PREFIX_HEADER_SIZE);
    if (!err && prefix_crc(len, buf) != get_u32(header + 12))
        err = EBADMSG;
    close(fd);
    if (!err)
        *len_out = len;
    return err;
}
