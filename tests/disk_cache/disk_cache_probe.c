/* disk_cache_probe — drives the disk cache from outside, for the pytest and for measuring.
 *
 *   disk_cache_probe read DIR HF_HUB_CACHE ETAG SIZE BLOCK_SIZE INDEX
 *       writes the block to stdout; exit 0 when served, 3 when not
 *   disk_cache_probe cached-bytes DIR HF_HUB_CACHE ETAG SIZE BLOCK_SIZE
 *   disk_cache_probe bench DIR BLOCK_MIB COUNT
 *       MB/s of write_block (with its fdatasync) and of verified read_block, cold and warm
 *
 * HF_HUB_CACHE "-" means none.
 */
#include "dc_test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <time.h>
#include <zlib.h>

static double seconds_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static disk_cache *open_from_args(char **argv, uint32_t block_size)
{
    return open_test_cache(argv[2], block_size, 0, strcmp(argv[3], "-") == 0 ? NULL : argv[3]);
}

static int probe_read(char **argv)
{
    uint64_t size = strtoull(argv[5], NULL, 10), index = strtoull(argv[7], NULL, 10);
    uint32_t block_size = (uint32_t)strtoul(argv[6], NULL, 10);
    disk_cache *cache = open_from_args(argv, block_size);
    disk_cache_blob_key key = {.etag = argv[4], .size = size};
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
    disk_cache *cache = open_from_args(argv, (uint32_t)strtoul(argv[6], NULL, 10));
    disk_cache_blob_key key = {.etag = argv[4], .size = strtoull(argv[5], NULL, 10)};
    printf("%" PRIu64 "\n", disk_cache_cached_bytes(cache, &key));
    disk_cache_close(cache);
    return 0;
}

/* Drops the file's pages from the page cache (they are clean after fdatasync). */
static void evict_page_cache(const char *dir)
{
    char path[512];
    if (!find_file(dir, "", ".data", path, sizeof path))
        return;
    int fd = open(path, O_RDONLY);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

static double mb_per_s(uint64_t bytes, double seconds)
{
    return (double)bytes / 1e6 / seconds;
}

static int bench(char **argv)
{
    const char *dir = argv[2];
    uint32_t block_size = (uint32_t)strtoul(argv[3], NULL, 10) << 20;
    uint64_t count = strtoull(argv[4], NULL, 10), total = count * block_size;
    uint8_t *buf = malloc(block_size);
    char etag[65];
    make_etag(42, etag);
    disk_cache_blob_key key = {.etag = etag, .size = total};

    /* Four distinct blocks prepared up front: the generator is slower than the disk. */
    uint8_t *blocks[4];
    for (int i = 0; i < 4; i++) {
        blocks[i] = malloc(block_size);
        fill_block(42, (uint64_t)i, blocks[i], block_size);
    }
    uLong crc = crc32_z(0L, blocks[0], block_size); /* warm-up */
    double start = seconds_now();
    for (int i = 0; i < 8; i++)
        crc = crc32_z(crc, blocks[i % 4], block_size);
    printf("crc32 (zlib %s): %.0f MB/s (%lx)\n", zlibVersion(), mb_per_s(8ull * block_size, seconds_now() - start), crc);

    /* The cost of the sync alone, on a plain file in the same directory. */
    char plain[512];
    snprintf(plain, sizeof plain, "%s/plain", dir);
    for (int sync = 0; sync < 2; sync++) {
        int fd = open(plain, O_RDWR | O_CREAT | O_TRUNC, 0600);
        start = seconds_now();
        for (uint64_t i = 0; i < count; i++) {
            if (pwrite(fd, blocks[i % 4], block_size, (off_t)(i * block_size)) != (ssize_t)block_size ||
                (sync && fdatasync(fd) != 0))
                return 1;
        }
        printf("plain pwrite%s: %.0f MB/s\n", sync ? " + fdatasync per block" : " (no sync)",
               mb_per_s(total, seconds_now() - start));
        close(fd);
        unlink(plain);
    }

    disk_cache *cache = open_test_cache(dir, block_size, 0, NULL);
    start = seconds_now();
    for (uint64_t i = 0; i < count; i++) {
        blocks[i % 4][0] = (uint8_t)i;
        int err = disk_cache_write_block(cache, &key, i, blocks[i % 4], block_size);
        if (err) {
            fprintf(stderr, "write_block: %s\n", strerror(err));
            return 1;
        }
    }
    double write_s = seconds_now() - start;
    printf("write_block %u MiB x %" PRIu64 ": %.0f MB/s\n",
           block_size >> 20, count, mb_per_s(total, write_s));
    disk_cache_close(cache);

    for (int warm = 0; warm < 2; warm++) {
        if (!warm)
            evict_page_cache(dir);
        cache = open_test_cache(dir, block_size, 0, NULL);
        start = seconds_now();
        for (uint64_t i = 0; i < count; i++) {
            if (!disk_cache_read_block(cache, &key, i, buf, block_size) || buf[0] != (uint8_t)i) {
                fprintf(stderr, "read_block %" PRIu64 " failed\n", i);
                return 1;
            }
        }
        printf("read_block verified, %s: %.0f MB/s\n", warm ? "warm page cache" : "cold page cache",
               mb_per_s(total, seconds_now() - start));
        disk_cache_close(cache);
    }
    for (int i = 0; i < 4; i++)
        free(blocks[i]);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 8 && strcmp(argv[1], "read") == 0)
        return probe_read(argv);
    if (argc == 7 && strcmp(argv[1], "cached-bytes") == 0)
        return probe_cached_bytes(argv);
    if (argc == 5 && strcmp(argv[1], "bench") == 0)
        return bench(argv);
    fprintf(stderr, "usage: disk_cache_probe read DIR HF_HUB_CACHE ETAG SIZE BLOCK_SIZE INDEX\n"
                    "       disk_cache_probe cached-bytes DIR HF_HUB_CACHE ETAG SIZE BLOCK_SIZE\n"
                    "       disk_cache_probe bench DIR BLOCK_MIB COUNT\n");
    return 2;
}
