/* The persistent block cache: round trips, damaged and truncated files, sealing whole blobs,
 * prefixes, the size cap with LRU eviction (also across restarts), permissions, odd etags and
 * the directory lock.
 * Every read is compared with the deterministic generator of dc_test_util.h. */
#include "check.h"
#include "cache_files.h"
#include "dc_test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

enum { BS = 64 * 1024 };

typedef struct test_blob {
    char etag[65];
    uint64_t seed, size;
    disk_cache_blob_key key;
} test_blob;

static void make_blob(test_blob *blob, uint64_t seed, uint64_t size)
{
    blob->seed = seed;
    blob->size = size;
    make_etag(seed, blob->etag);
    blob->key = (disk_cache_blob_key){.etag = blob->etag, .size = size};
}

static int write_block(disk_cache *cache, const test_blob *blob, uint64_t index)
{
    size_t len = block_len(blob->size, BS, index);
    uint8_t *buf = malloc(len);
    fill_block(blob->seed, index, buf, len);
    int err = disk_cache_write_block(cache, &blob->key, index, buf, len);
    free(buf);
    return err;
}

static int write_all(disk_cache *cache, const test_blob *blob)
{
    for (uint64_t i = 0; i < block_count(blob->size, BS); i++) {
        int err = write_block(cache, blob, i);
        if (err)
            return err;
    }
    return 0;
}

/* 1: present and right, 0: absent, -1: WRONG BYTES served. */
static int read_block(disk_cache *cache, const test_blob *blob, uint64_t index)
{
    size_t len = block_len(blob->size, BS, index);
    uint8_t *buf = malloc(len);
    int result = 0;
    if (disk_cache_read_block(cache, &blob->key, index, buf, len))
        result = block_matches(blob->seed, index, buf, len) ? 1 : -1;
    free(buf);
    return result;
}

static int present_blocks(disk_cache *cache, const test_blob *blob, int *wrong)
{
    int present = 0;
    for (uint64_t i = 0; i < block_count(blob->size, BS); i++) {
        int r = read_block(cache, blob, i);
        present += r == 1;
        *wrong += r < 0;
    }
    return present;
}

static void test_round_trip(void)
{
    char dir[64];
    make_scratch_dir(dir);
    disk_cache *cache = open_test_cache(dir, BS, 0, NULL);
    test_blob blob, other;
    make_blob(&blob, 1, 10 * BS + 1234);  /* 11 blocks, the last 1234 bytes */
    make_blob(&other, 2, 3 * BS);

    /* Written in a shuffled order: placement must depend on the index only. */
    uint64_t order[11] = {7, 2, 10, 0, 5, 9, 1, 8, 3, 6, 4};
    for (int i = 0; i < 11; i++)
        CHECK_EQ_INT(write_block(cache, &blob, order[i]), 0);
    for (uint64_t i = 0; i < 11; i++)
        CHECK_EQ_INT(read_block(cache, &blob, i), 1);
    CHECK_EQ_INT(disk_cache_cached_bytes(cache, &blob.key), blob.size);

    /* Absent blocks and blobs. */
    CHECK_EQ_INT(read_block(cache, &other, 0), 0);
    CHECK_EQ_INT(disk_cache_cached_bytes(cache, &other.key), 0);
    CHECK_EQ_INT(write_block(cache, &other, 1), 0);
    CHECK_EQ_INT(read_block(cache, &other, 0), 0);
    CHECK_EQ_INT(read_block(cache, &other, 1), 1);

    /* Wrong lengths and indexes are refused, never half served. */
    uint8_t *buf = malloc(BS);
    CHECK(!disk_cache_read_block(cache, &blob.key, 10, buf, BS));      /* the last is 1234 long */
    CHECK(!disk_cache_read_block(cache, &blob.key, 11, buf, 1234));
    CHECK_EQ_INT(disk_cache_write_block(cache, &blob.key, 11, buf, 1234), EINVAL);
    CHECK_EQ_INT(disk_cache_write_block(cache, &blob.key, 3, buf, BS - 1), EINVAL);
    disk_cache_blob_key wrong_size = {.etag = blob.etag, .size = blob.size + 1};
    CHECK(!disk_cache_read_block(cache, &wrong_size, 0, buf, BS));
    free(buf);

    disk_cache_counters counters;
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.block_hits, 12);
    CHECK_EQ_INT(counters.block_misses, 5);
    CHECK_EQ_INT(counters.bytes_stored, blob.size + BS);
    CHECK_EQ_INT(counters.write_failures, 0);

    /* Everything survives a restart. */
    disk_cache_close(cache);
    cache = open_test_cache(dir, BS, 0, NULL);
    int wrong = 0;
    CHECK_EQ_INT(present_blocks(cache, &blob, &wrong), 11);
    CHECK_EQ_INT(present_blocks(cache, &other, &wrong), 1);
    CHECK_EQ_INT(wrong, 0);
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.bytes_stored, blob.size + BS);

    /* A blob smaller than one block. */
    test_blob tiny;
    make_blob(&tiny, 3, 100);
    CHECK_EQ_INT(write_block(cache, &tiny, 0), 0);
    CHECK_EQ_INT(read_block(cache, &tiny, 0), 1);
    disk_cache_close(cache);
    remove_tree(dir);
}

static void test_corrupt_data(void)
{
    char dir[64], data_path[512];
    make_scratch_dir(dir);
    disk_cache *cache = open_test_cache(dir, BS, 0, NULL);
    test_blob blob;
    make_blob(&blob, 10, 6 * BS);
    CHECK_EQ_INT(write_all(cache, &blob), 0);
    CHECK(find_file(dir, blob.etag, ".data", data_path, sizeof data_path));

    CHECK(flip_byte(data_path, 3 * BS + 777));
    CHECK_EQ_INT(read_block(cache, &blob, 3), 0);
    disk_cache_counters counters;
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.checksum_failures, 1);
    CHECK_EQ_INT(counters.bytes_stored, 5 * BS);
    CHECK_EQ_INT(disk_cache_cached_bytes(cache, &blob.key), 5 * BS);
    /* Dropped: now a plain miss, not another checksum failure. */
    CHECK_EQ_INT(read_block(cache, &blob, 3), 0);
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.checksum_failures, 1);
    for (uint64_t i = 0; i < 6; i++)
        if (i != 3)
            CHECK_EQ_INT(read_block(cache, &blob, i), 1);

    /* The drop is persistent, and a rewrite works. */
    disk_cache_close(cache);
    cache = open_test_cache(dir, BS, 0, NULL);
    CHECK_EQ_INT(read_block(cache, &blob, 3), 0);
    CHECK_EQ_INT(write_block(cache, &blob, 3), 0);
    CHECK_EQ_INT(read_block(cache, &blob, 3), 1);

    /* Corruption in the last, short block too. */
    test_blob short_blob;
    make_blob(&short_blob, 11, 2 * BS + 5);
    CHECK_EQ_INT(write_all(cache, &short_blob), 0);
    CHECK(find_file(dir, short_blob.etag, ".data", data_path, sizeof data_path));
    CHECK(flip_byte(data_path, 2 * BS + 4));
    CHECK_EQ_INT(read_block(cache, &short_blob, 2), 0);
    CHECK_EQ_INT(read_block(cache, &short_blob, 1), 1);
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.checksum_failures, 1); /* counters restart with the process */
    disk_cache_close(cache);
    remove_tree(dir);
}

/* Writes an index record by hand, as a crash could leave it (format: cache_files.h). */
static void forge_present_record(const char *index_path, uint64_t block_index, uint32_t crc)
{
    uint8_t record[8] = {'P', 'R', 'E', 'S'};
    for (int i = 0; i < 4; i++)
        record[4 + i] = (uint8_t)(crc >> (8 * i));
    int fd = open(index_path, O_RDWR);
    CHECK_EQ_INT(pwrite(fd, record, sizeof record, 512 + 8 * (off_t)block_index), 8);
    close(fd);
}

static void test_truncated_files(void)
{
    char dir[64], data_path[512], index_path[512];
    make_scratch_dir(dir);
    disk_cache *cache = open_test_cache(dir, BS, 0, NULL);
    test_blob blob;
    make_blob(&blob, 20, 8 * BS);
    for (uint64_t i = 0; i < 6; i++)  /* blocks 6 and 7 never written */
        CHECK_EQ_INT(write_block(cache, &blob, i), 0);
    disk_cache_close(cache);
    CHECK(find_file(dir, blob.etag, ".data", data_path, sizeof data_path));
    CHECK(find_file(dir, blob.etag, ".index", index_path, sizeof index_path));

    /* A record claiming block 6 with the right checksum but no data behind it. */
    uint8_t *buf = malloc(BS);
    fill_block(blob.seed, 6, buf, BS);
    forge_present_record(index_path, 6, cache_checksum(buf, BS));
    /* The data file cut in the middle of block 4. */
    CHECK_EQ_INT(truncate(data_path, 4 * BS + 100), 0);

    cache = open_test_cache(dir, BS, 0, NULL);
    int wrong = 0;
    for (uint64_t i = 0; i < 4; i++)
        CHECK_EQ_INT(read_block(cache, &blob, i), 1);
    for (uint64_t i = 4; i < 8; i++) {
        int r = read_block(cache, &blob, i);
        CHECK_EQ_INT(r, 0);
        wrong += r < 0;
    }
    CHECK_EQ_INT(wrong, 0);
    disk_cache_counters counters;
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.checksum_failures, 3); /* blocks 4, 5 (cut off) and 6 (forged) */
    CHECK_EQ_INT(counters.bytes_stored, 4 * BS);
    disk_cache_close(cache);

    /* The index cut after 2 records: the rest are absent, the first 2 still served. */
    CHECK_EQ_INT(truncate(index_path, 512 + 2 * 8), 0);
    cache = open_test_cache(dir, BS, 0, NULL);
    CHECK_EQ_INT(present_blocks(cache, &blob, &wrong), 2);
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(write_block(cache, &blob, 7), 0); /* still writable */
    CHECK_EQ_INT(read_block(cache, &blob, 7), 1);
    disk_cache_close(cache);

    /* A header cut short, then garbage for a header: the blob is dropped, files and all. */
    CHECK_EQ_INT(truncate(index_path, 100), 0);
    cache = open_test_cache(dir, BS, 0, NULL);
    CHECK_EQ_INT(present_blocks(cache, &blob, &wrong), 0);
    CHECK(access(data_path, F_OK) != 0);
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.bytes_stored, 0);
    CHECK_EQ_INT(write_all(cache, &blob), 0);
    disk_cache_close(cache);
    int fd = open(index_path, O_WRONLY);
    fill_block(99, 0, buf, 512);
    CHECK_EQ_INT(pwrite(fd, buf, 512, 0), 512);
    close(fd);
    cache = open_test_cache(dir, BS, 0, NULL);
    CHECK_EQ_INT(present_blocks(cache, &blob, &wrong), 0);
    CHECK_EQ_INT(wrong, 0);

    /* A cache opened with another block size ignores (and drops) blobs of the old one. */
    CHECK_EQ_INT(write_all(cache, &blob), 0);
    disk_cache_close(cache);
    cache = open_test_cache(dir, BS / 2, 0, NULL);
    uint8_t *half = malloc(BS / 2);
    CHECK(!disk_cache_read_block(cache, &blob.key, 0, half, BS / 2));
    free(half);
    disk_cache_close(cache);
    free(buf);
    remove_tree(dir);
}

/* The UNSYNCED flag of a blob's index header, read from the file. */
static bool header_unsynced(const char *index_path)
{
    uint8_t encoded[CACHE_INDEX_HEADER_SIZE];
    cache_index_header header;
    int fd = open(index_path, O_RDONLY);
    bool read_whole = fd >= 0 && pread(fd, encoded, sizeof encoded, 0) == (ssize_t)sizeof encoded;
    if (fd >= 0)
        close(fd);
    CHECK(read_whole && cache_decode_index_header(encoded, &header));
    return header.unsynced;
}

/* Sets the flag by hand, as a run that died between a write and the blob's seal leaves it. */
static void forge_unsynced(const char *index_path, const test_blob *blob)
{
    cache_index_header header = {.block_size = BS, .blob_size = blob->size, .unsynced = true};
    snprintf(header.etag, sizeof header.etag, "%s", blob->etag);
    int fd = open(index_path, O_RDWR);
    CHECK_EQ_INT(cache_write_index_header(fd, &header), 0);
    close(fd);
}

/* Whether the cache hands the blob out whole (disk_cache_open_whole); its bytes must then be
 * the blob's. */
static bool whole_file_matches(disk_cache *cache, const test_blob *blob)
{
    int fd = disk_cache_open_whole(cache, &blob->key);
    if (fd < 0)
        return false;
    uint8_t *buf = malloc(BS);
    bool same = true;
    for (uint64_t i = 0; same && i < block_count(blob->size, BS); i++) {
        size_t len = block_len(blob->size, BS, i);
        same = pread(fd, buf, len, (off_t)(i * BS)) == (ssize_t)len && block_matches(blob->seed, i, buf, len);
    }
    free(buf);
    close(fd);
    CHECK(same);
    return true;
}

/* Units are not flushed one by one, and the kernel reads a blob handed out whole unverified: so
 * it is handed out only sealed (flushed whole; verified first after a run that died unsealed). */
static void test_whole_blob_sealing(void)
{
    char dir[64], data_path[512], index_path[512];
    make_scratch_dir(dir);
    disk_cache *cache = open_test_cache(dir, BS, 0, NULL);
    test_blob blob;
    make_blob(&blob, 30, 5 * BS + 123);
    for (uint64_t i = 0; i < 5; i++)
        CHECK_EQ_INT(write_block(cache, &blob, i), 0);
    CHECK(find_file(dir, blob.etag, ".index", index_path, sizeof index_path));
    CHECK(find_file(dir, blob.etag, ".data", data_path, sizeof data_path));
    /* Flagged on the disk before the first unflushed write; not whole, not handed out. */
    CHECK(header_unsynced(index_path));
    CHECK(!whole_file_matches(cache, &blob));
    /* The last unit completes it: flushed and sealed by the write itself. */
    CHECK_EQ_INT(write_block(cache, &blob, 5), 0);
    CHECK(!header_unsynced(index_path));
    CHECK(whole_file_matches(cache, &blob));
    disk_cache_close(cache);

    /* A run died after writing, before sealing, and a unit's data never reached the disk: the
     * whole blob is verified before it is handed out, and the bad unit dropped. */
    forge_unsynced(index_path, &blob);
    CHECK(flip_byte(data_path, 2 * BS + 5));
    cache = open_test_cache(dir, BS, 0, NULL);
    CHECK(!whole_file_matches(cache, &blob));
    disk_cache_counters counters;
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.checksum_failures, 1);
    CHECK_EQ_INT(disk_cache_cached_bytes(cache, &blob.key), 4 * BS + 123);
    CHECK(header_unsynced(index_path));
    /* Fetched again, the blob is whole: verified once more (its other units came from the run
     * that died), then sealed. */
    CHECK_EQ_INT(write_block(cache, &blob, 2), 0);
    CHECK(whole_file_matches(cache, &blob));
    CHECK(!header_unsynced(index_path));
    disk_cache_close(cache);

    /* The same left-over flag over intact data: verified, sealed, handed out. */
    forge_unsynced(index_path, &blob);
    cache = open_test_cache(dir, BS, 0, NULL);
    CHECK(whole_file_matches(cache, &blob));
    CHECK(!header_unsynced(index_path));
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.checksum_failures, 0);
    disk_cache_close(cache);
    remove_tree(dir);
}

static void test_prefix(void)
{
    char dir[64], prefix_path[512];
    make_scratch_dir(dir);
    disk_cache *cache = open_test_cache(dir, BS, 0, NULL);
    test_blob blob;
    make_blob(&blob, 30, 100 * BS);
    const char header[] = "\x20\x00\x00\x00\x00\x00\x00\x00{\"__metadata__\":{\"format\":\"pt\"}}";
    char buf[256];
    size_t len = 0;
    CHECK(!disk_cache_read_prefix(cache, &blob.key, buf, sizeof buf, &len));
    CHECK_EQ_INT(disk_cache_write_prefix(cache, &blob.key, header, sizeof header), 0);
    CHECK(disk_cache_read_prefix(cache, &blob.key, buf, sizeof buf, &len));
    CHECK_EQ_INT(len, sizeof header);
    CHECK(memcmp(buf, header, sizeof header) == 0);
    /* Too small a buffer: refused, with the length needed. */
    len = 0;
    CHECK(!disk_cache_read_prefix(cache, &blob.key, buf, 10, &len));
    CHECK_EQ_INT(len, sizeof header);
    /* A prefix needs no block, and blocks do not disturb it. */
    CHECK_EQ_INT(disk_cache_cached_bytes(cache, &blob.key), 0);
    CHECK_EQ_INT(write_block(cache, &blob, 0), 0);
    disk_cache_close(cache);

    cache = open_test_cache(dir, BS, 0, NULL);
    CHECK(disk_cache_read_prefix(cache, &blob.key, buf, sizeof buf, &len));
    CHECK_EQ_INT(len, sizeof header);
    CHECK(memcmp(buf, header, sizeof header) == 0);
    /* The same header learnt again after a restart: the file stays as it is. */
    struct stat before, after;
    CHECK(find_file(dir, blob.etag, ".prefix", prefix_path, sizeof prefix_path));
    CHECK(stat(prefix_path, &before) == 0);
    CHECK_EQ_INT(disk_cache_write_prefix(cache, &blob.key, header, sizeof header), 0);
    CHECK(stat(prefix_path, &after) == 0);
    CHECK(before.st_ino == after.st_ino);
    /* Replaced by a shorter one. */
    CHECK_EQ_INT(disk_cache_write_prefix(cache, &blob.key, "short", 5), 0);
    CHECK(disk_cache_read_prefix(cache, &blob.key, buf, sizeof buf, &len));
    CHECK_EQ_INT(len, 5);
    CHECK(memcmp(buf, "short", 5) == 0);
    disk_cache_counters counters;
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.bytes_stored, BS + 16 + 5);

    /* A damaged prefix is refused, counted and removed; a rewrite works. */
    CHECK(find_file(dir, blob.etag, ".prefix", prefix_path, sizeof prefix_path));
    CHECK(flip_byte(prefix_path, 16 + 2));
    CHECK(!disk_cache_read_prefix(cache, &blob.key, buf, sizeof buf, &len));
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.checksum_failures, 1);
    CHECK_EQ_INT(counters.bytes_stored, BS);
    CHECK(access(prefix_path, F_OK) != 0);
    CHECK_EQ_INT(disk_cache_write_prefix(cache, &blob.key, header, sizeof header), 0);
    CHECK(disk_cache_read_prefix(cache, &blob.key, buf, sizeof buf, &len));
    CHECK(memcmp(buf, header, sizeof header) == 0);
    /* A damaged length field is caught too. */
    CHECK(flip_byte(prefix_path, 8));
    CHECK(!disk_cache_read_prefix(cache, &blob.key, buf, sizeof buf, &len));
    CHECK_EQ_INT(read_block(cache, &blob, 0), 1);
    disk_cache_close(cache);
    remove_tree(dir);
}

static void read_whole(disk_cache *cache, const test_blob *blob)
{
    for (uint64_t i = 0; i < block_count(blob->size, BS); i++)
        CHECK_EQ_INT(read_block(cache, blob, i), 1);
}

static bool blob_files_exist(const char *dir, const test_blob *blob)
{
    char path[512];
    return find_file(dir, blob->etag, ".data", path, sizeof path) ||
           find_file(dir, blob->etag, ".index", path, sizeof path);
}

static void test_cap_and_lru(void)
{
    char dir[64];
    make_scratch_dir(dir);
    const uint64_t cap = 10 * BS;
    disk_cache *cache = open_test_cache(dir, BS, cap, NULL);
    test_blob a, b, c, d;
    make_blob(&a, 40, 4 * BS);
    make_blob(&b, 41, 4 * BS);
    make_blob(&c, 42, 4 * BS);
    make_blob(&d, 43, 4 * BS);

    CHECK_EQ_INT(write_all(cache, &a), 0);
    CHECK_EQ_INT(write_all(cache, &b), 0);
    read_whole(cache, &a);                /* b is now the least recently used */
    CHECK_EQ_INT(write_all(cache, &c), 0);
    disk_cache_counters counters;
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.evictions, 1);
    CHECK(counters.bytes_stored <= cap);
    CHECK_EQ_INT(counters.bytes_stored, 8 * BS);
    CHECK(!blob_files_exist(dir, &b));
    int wrong = 0;
    CHECK_EQ_INT(present_blocks(cache, &b, &wrong), 0);
    CHECK_EQ_INT(present_blocks(cache, &c, &wrong), 4);
    read_whole(cache, &a);                /* the order now: c, a */
    CHECK(allocated_bytes(dir, ".data") <= cap);
    disk_cache_close(cache);

    /* The order survives restarts: a (read last) must outlive c (written last). */
    cache = open_test_cache(dir, BS, cap, NULL);
    CHECK_EQ_INT(write_all(cache, &d), 0);
    CHECK(blob_files_exist(dir, &a));
    CHECK(!blob_files_exist(dir, &c));
    CHECK_EQ_INT(present_blocks(cache, &a, &wrong), 4);
    CHECK_EQ_INT(present_blocks(cache, &d, &wrong), 4);
    CHECK_EQ_INT(wrong, 0);
    disk_cache_close(cache);

    /* A lower cap at the next open evicts down to it. */
    cache = open_test_cache(dir, BS, 5 * BS, NULL);
    disk_cache_get_counters(cache, &counters);
    CHECK(counters.bytes_stored <= 5 * BS);
    CHECK_EQ_INT(counters.bytes_stored, 4 * BS);
    CHECK(allocated_bytes(dir, ".data") <= 5 * BS);
    /* A blob larger than the cap keeps what fits, and says the rest did not. */
    test_blob big;
    make_blob(&big, 44, 7 * BS);
    int failures = 0;
    for (uint64_t i = 0; i < 7; i++)
        failures += write_block(cache, &big, i) == ENOSPC;
    CHECK_EQ_INT(failures, 2);
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.bytes_stored, 5 * BS);
    CHECK_EQ_INT(counters.write_failures, 2);
    CHECK_EQ_INT(present_blocks(cache, &big, &wrong), 5);
    CHECK_EQ_INT(wrong, 0);
    disk_cache_close(cache);
    remove_tree(dir);
}

static void check_modes(const char *dir, int *files_seen)
{
    struct stat st;
    CHECK_EQ_INT(stat(dir, &st), 0);
    CHECK_EQ_INT(st.st_mode & 07777, 0700);
    DIR *d = opendir(dir);
    struct dirent *entry;
    char path[512];
    while ((entry = readdir(d)) != NULL) {
        if (entry->d_name[0] == '.' && (!entry->d_name[1] || strcmp(entry->d_name, "..") == 0))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
        CHECK_EQ_INT(lstat(path, &st), 0);
        CHECK(S_ISREG(st.st_mode));
        CHECK_EQ_INT(st.st_mode & 07777, 0600);
        (*files_seen)++;
    }
    closedir(d);
}

static void test_permissions_and_lock(void)
{
    char root[64], dir[128];
    make_scratch_dir(root);
    snprintf(dir, sizeof dir, "%s/nested/cache", root);
    mode_t old_umask = umask(0); /* the cache must not rely on the umask */
    disk_cache *cache = open_test_cache(dir, BS, 0, NULL);
    test_blob blob;
    make_blob(&blob, 50, 2 * BS);
    CHECK_EQ_INT(write_all(cache, &blob), 0);
    CHECK_EQ_INT(disk_cache_write_prefix(cache, &blob.key, "abc", 3), 0);
    int files_seen = 0;
    check_modes(dir, &files_seen);
    CHECK_EQ_INT(files_seen, 4); /* lock, index, data, prefix */

    /* A second opener of the same directory is refused, with a reason. */
    disk_cache_config config = {.directory = dir, .block_size = BS};
    disk_cache *second = NULL;
    char error[256];
    CHECK(disk_cache_open(&config, &second, error, sizeof error) != 0);
    CHECK(second == NULL);
    CHECK_STR_CONTAINS(error, "in use");
    disk_cache_close(cache);
    umask(old_umask);

    /* An existing directory with loose permissions is tightened. */
    CHECK_EQ_INT(chmod(dir, 0755), 0);
    cache = open_test_cache(dir, BS, 0, NULL);
    struct stat st;
    CHECK_EQ_INT(stat(dir, &st), 0);
    CHECK_EQ_INT(st.st_mode & 07777, 0700);
    disk_cache_close(cache);

    /* Bad configurations are refused with a message. */
    config.block_size = 0;
    CHECK_EQ_INT(disk_cache_open(&config, &second, error, sizeof error), EINVAL);
    CHECK_STR_CONTAINS(error, "block size");
    remove_tree(root);
}

static bool only_safe_names(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *entry;
    bool safe = true;
    while ((entry = readdir(d)) != NULL)
        if (entry->d_name[0] != '.')
            safe &= strspn(entry->d_name, "0123456789abcdefx-.lockindexdataprefix") == strlen(entry->d_name);
    closedir(d);
    return safe;
}

static void test_odd_etags(void)
{
    char root[64], dir[128], escape_path[256];
    make_scratch_dir(root);
    snprintf(dir, sizeof dir, "%s/cache", root);
    disk_cache *cache = open_test_cache(dir, BS, 0, NULL);
    const char *etags[] = {"../../escape", "W/\"0123abcd\"", "ABCDEF0123456789ABCDEF0123456789ABCDEF01",
                           "0123456789abcdef0123456789abcdef0123456"};
    test_blob blobs[4];
    for (int i = 0; i < 4; i++) {
        make_blob(&blobs[i], 60 + (uint64_t)i, 2 * BS);
        blobs[i].key.etag = etags[i];
        CHECK_EQ_INT(write_all(cache, &blobs[i]), 0);
    }
    int wrong = 0;
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(present_blocks(cache, &blobs[i], &wrong), 2);
    CHECK_EQ_INT(wrong, 0);
    CHECK(only_safe_names(dir));
    snprintf(escape_path, sizeof escape_path, "%s/escape-131072.data", root);
    CHECK(access(escape_path, F_OK) != 0);
    disk_cache_close(cache);

    cache = open_test_cache(dir, BS, 0, NULL);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(present_blocks(cache, &blobs[i], &wrong), 2);
    CHECK_EQ_INT(wrong, 0);
    /* Too long an etag is refused, not truncated into another blob's name. */
    char long_etag[400];
    memset(long_etag, 'q', sizeof long_etag - 1);
    long_etag[sizeof long_etag - 1] = '\0';
    disk_cache_blob_key long_key = {.etag = long_etag, .size = 10};
    CHECK_EQ_INT(disk_cache_write_block(cache, &long_key, 0, "0123456789", 10), EINVAL);
    disk_cache_close(cache);
    remove_tree(root);
}

int main(void)
{
    test_round_trip();
    test_corrupt_data();
    test_truncated_files();
    test_whole_blob_sealing();
    test_prefix();
    test_cap_and_lru();
    test_permissions_and_lock();
    test_odd_etags();
    return check_finish("test_disk_cache");
}
