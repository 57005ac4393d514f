/* disk_cache_probe — drives the disk cache from outside, for the pytest and for measuring.
 *
 *   disk_cache_probe read DIR HF_HUB_CACHE REPO_FOLDER ETAG SIZE BLOCK_SIZE INDEX
 *       writes the block to stdout; exit 0 when served, 3 when not
 *   disk_cache_probe cached-bytes DIR HF_HUB_CACHE REPO_FOLDER ETAG SIZE BLOCK_SIZE
 *   disk_cache_probe counters DIR HF_HUB_CACHE REPO_FOLDER ETAG SIZE BLOCK_SIZE
 *       reads the whole blob, then prints the cache's counters as key=value lines
 *   disk_cache_probe bench DIR UNIT_KIB CALL_KIB TOTAL_MIB
 *       MB/s of write_range (units not flushed) and of verified read_range, cold and warm,
 *       with units of UNIT_KIB in calls of CALL_KIB
 *
 * HF_HUB_CACHE and REPO_FOLDER "-" mean none.
 */
#include "dc_test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <time.h>
#include <xxhash.h>

static double seconds_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static const char *optional(const char *arg)
{
    return strcmp(arg, "-") == 0 ? NULL : arg;
}

static disk_cache *open_from_args(char **argv, uint32_t block_size)
{
    return open_test_cache(argv[2], block_size, 0, optional(argv[3]));
}

static disk_cache_blob_key key_from_args(char **argv)
{
    return (disk_cache_blob_key){.etag = argv[5], .size = strtoull(argv[6], NULL, 10),
                                 .hf_repo_folder = optional(argv[4])};
}

static int probe_read(char **argv)
{
    uint64_t index = strtoull(argv[8], NULL, 10);
    uint32_t block_size = (uint32_t)strtoul(argv[7], NULL, 10);
    disk_cache *cache = open_from_args(argv, block_size);
    disk_cache_blob_key key = key_from_args(argv);
    uint64_t size = key.size;
    size_t len = index * block_size < size ? block_len(size, block_size, index) : block_size;
    uint8_t *buf = malloc(len);
    bool hit = disk_cache_read_block(cache, &key, index, buf, len);
    if (hit)
        fwrite(buf, 1, len, stdout);
    free(buf);
    disk_cache_close(cache);
    return hit ? 0 : 3;
}

static int probe_cached_bytes(char **argv)
{
    disk_cache *cache = open_from_args(argv, (uint32_t)strtoul(argv[7], NULL, 10));
    disk_cache_blob_key key = key_from_args(argv);
    printf("%" PRIu64 "\n", disk_cache_cached_bytes(cache, &key));
    disk_cache_close(cache);
    return 0;
}

static int probe_counters(char **argv)
{
    disk_cache *cache = open_from_args(argv, (uint32_t)strtoul(argv[7], NULL, 10));
    disk_cache_blob_key key = key_from_args(argv);
    uint8_t *buf = malloc(key.size ? key.size : 1);
    size_t served = disk_cache_read_range(cache, &key, 0, buf, key.size);
    disk_cache_counters counters;
    disk_cache_get_counters(cache, &counters);
    printf("served=%zu\nhf_blobs_verified=%" PRIu64 "\nhf_blobs_rejected=%" PRIu64 "\n", served,
           counters.hf_blobs_verified, counters.hf_blobs_rejected);
    free(buf);
    disk_cache_close(cache);
    return 0;
}

/* Drops the file's pages from the page cache (flushed first: only clean pages are dropped). */
static void evict_page_cache(const char *dir)
{
    char path[512];
    if (!find_file(dir, "", ".data", path, sizeof path))
        return;
    int fd = open(path, O_RDONLY);
    (void)fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

static double mb_per_s(uint64_t bytes, double seconds)
{
    return (double)bytes / 1e6 / seconds;
}

/* Calls of call_len bytes over the whole blob: write_range, or read_range verified against
 * blocks[] (each call's first byte is its number). Returns MB/s, or -1 on a failure. */
static double timed_calls(disk_cache *cache, const disk_cache_blob_key *key, uint8_t **blocks, size_t call_len,
                          bool writing, uint8_t *buf)
{
    uint64_t calls = key->size / call_len;
    double start = seconds_now();
    for (uint64_t i = 0; i < calls; i++) {
        uint8_t *data = blocks[i % 4];
        data[0] = (uint8_t)i;
        int err = writing ? disk_cache_write_range(cache, key, i * call_len, data, call_len) : 0;
        /* The first byte tells the calls apart; the cache's own crc32 checks the rest. */
        bool read_ok = writing || (disk_cache_read_range(cache, key, i * call_len, buf, call_len) == call_len &&
                                   buf[0] == data[0]);
        if (err || !read_ok) {
            fprintf(stderr, "%s_range of call %" PRIu64 " failed: %s\n", writing ? "write" : "read", i,
                    err ? strerror(err) : "not served, or wrong bytes");
            return -1;
        }
    }
    return mb_per_s(calls * call_len, seconds_now() - start);
}

static int bench(char **argv)
{
    const char *dir = argv[2];
    uint32_t unit = (uint32_t)strtoul(argv[3], NULL, 10) << 10;
    size_t call_len = (size_t)strtoul(argv[4], NULL, 10) << 10;
    uint64_t total = strtoull(argv[5], NULL, 10) << 20;
    if (!unit || !call_len || call_len % unit || total % call_len) {
        fprintf(stderr, "bench: CALL_KIB must be a multiple of UNIT_KIB, TOTAL_MIB of CALL_KIB\n");
        return 2;
    }
    char etag[65];
    make_etag(42, etag);
    disk_cache_blob_key key = {.etag = etag, .size = total};
    /* Four distinct calls' worth prepared up front: the generator is slower than the disk. */
    uint8_t *blocks[4], *buf = malloc(call_len);
    for (int i = 0; i < 4; i++) {
        blocks[i] = malloc(call_len);
        fill_block(42, (uint64_t)i, blocks[i], call_len);
    }
    uint64_t sum = XXH3_64bits(blocks[0], call_len); /* warm-up */
    double start = seconds_now();
    for (int i = 0; i < 8; i++)
        sum ^= XXH3_64bits(blocks[i % 4], call_len);
    printf("checksum (XXH3 %u): %.0f MB/s (%llx)\n", XXH_versionNumber(), mb_per_s(8ull * call_len, seconds_now() - start),
           (unsigned long long)sum);

    disk_cache *cache = open_test_cache(dir, unit, 0, NULL);
    double write_mb_s = timed_calls(cache, &key, blocks, call_len, true, buf);
    disk_cache_close(cache);
    if (write_mb_s < 0)
        return 1;
    printf("write_range, %u KiB units, %zu KiB calls: %.0f MB/s\n", unit >> 10, call_len >> 10, write_mb_s);
    for (int warm = 0; warm < 2; warm++) {
        if (!warm)
            evict_page_cache(dir);
        cache = open_test_cache(dir, unit, 0, NULL);
        double read_mb_s = timed_calls(cache, &key, blocks, call_len, false, buf);
        disk_cache_close(cache);
        if (read_mb_s < 0)
            return 1;
        printf("read_range verified, %u KiB units, %zu KiB calls, %s page cache: %.0f MB/s\n", unit >> 10,
               call_len >> 10, warm ? "warm" : "cold", read_mb_s);
    }
    for (int i = 0; i < 4; i++)
        free(blocks[i]);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 9 && strcmp(argv[1], "read") == 0)
        return probe_read(argv);
    if (argc == 8 && strcmp(argv[1], "cached-bytes") == 0)
        return probe_cached_bytes(argv);
    if (argc == 8 && strcmp(argv[1], "counters") == 0)
        return probe_counters(argv);
    if (argc == 6 && strcmp(argv[1], "bench") == 0)
        return bench(argv);
    fprintf(stderr, "usage: disk_cache_probe read DIR HF_HUB_CACHE REPO_FOLDER ETAG SIZE BLOCK_SIZE INDEX\n"
                    "       disk_cache_probe cached-bytes DIR HF_HUB_CACHE REPO_FOLDER ETAG SIZE BLOCK_SIZE\n"
                    "       disk_cache_probe counters DIR HF_HUB_CACHE REPO_FOLDER ETAG SIZE BLOCK_SIZE\n"
                    "       disk_cache_probe bench DIR UNIT_KIB CALL_KIB TOTAL_MIB\n");
    return 2;
}
