/* The range API of the disk cache: a write stores the units lying completely inside its range,
 * and the units at its edges once other writes have covered the rest of them; a read serves the exact prefix of present, verified units; a damaged unit is dropped,
 * never served, even when the read covers only part of it; presence by range; and a blob
 * claiming 128 TiB costs no memory (records stay in the sparse index file). Every byte is
 * compared with the generator of dc_test_util.h (unit u of a blob is fill_block(seed, u)). */
#include "check.h"
#include "dc_test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>

enum { U = 4096 };

typedef struct range_blob {
    char etag[65];
    uint64_t seed, size;
    disk_cache_blob_key key;
} range_blob;

static void make_blob(range_blob *blob, uint64_t seed, uint64_t size)
{
    blob->seed = seed;
    blob->size = size;
    make_etag(seed, blob->etag);
    blob->key = (disk_cache_blob_key){.etag = blob->etag, .size = size};
}

static int write_range(disk_cache *cache, const range_blob *blob, uint64_t offset, size_t len)
{
    uint8_t *buf = malloc(len ? len : 1);
    fill_range(blob->seed, U, blob->size, offset, buf, len);
    int err = disk_cache_write_range(cache, &blob->key, offset, buf, len);
    free(buf);
    return err;
}

/* The length served, or -1 when a served byte is WRONG. */
static long long read_range(disk_cache *cache, const range_blob *blob, uint64_t offset, size_t len)
{
    uint8_t *buf = malloc(len ? len : 1);
    size_t served = disk_cache_read_range(cache, &blob->key, offset, buf, len);
    bool right = range_matches(blob->seed, U, blob->size, offset, buf, served);
    free(buf);
    return right ? (long long)served : -1;
}

static uint64_t present(disk_cache *cache, const range_blob *blob, uint64_t offset, uint64_t len)
{
    return disk_cache_present_bytes(cache, &blob->key, offset, len);
}

static void test_partial_edge_units_are_skipped(void)
{
    char dir[64];
    make_scratch_dir(dir);
    disk_cache *cache = open_test_cache(dir, U, 0, NULL);
    range_blob blob;
    make_blob(&blob, 1, 10 * U + 100);   /* 11 units, the last 100 bytes */

    /* [U/2, 3.5 U): units 1 and 2 lie inside; 0 and 3 only in part. */
    CHECK_EQ_INT(write_range(cache, &blob, U / 2, 3 * U), 0);
    CHECK_EQ_INT(present(cache, &blob, 0, blob.size), 2 * U);
    CHECK_EQ_INT(present(cache, &blob, 0, U), 0);
    CHECK_EQ_INT(present(cache, &blob, 3 * U, U), 0);
    CHECK_EQ_INT(read_range(cache, &blob, U, 2 * U), 2 * U);
    CHECK_EQ_INT(read_range(cache, &blob, U / 2, U), 0);       /* starts in unit 0: absent */
    CHECK_EQ_INT(read_range(cache, &blob, U + 10, 3 * U), 2 * U - 10);

    /* Less than a unit: nothing stored, and no error. A part apart from the one kept replaces
     * it; a part meeting the kept one and covering the rest of the unit stores it. */
    CHECK_EQ_INT(write_range(cache, &blob, 5 * U + 1, U / 2), 0);
    CHECK_EQ_INT(write_range(cache, &blob, 5 * U + U / 2 + 100, U / 2 - 100), 0);
    CHECK_EQ_INT(present(cache, &blob, 0, blob.size), 2 * U);
    CHECK_EQ_INT(write_range(cache, &blob, 5 * U, U / 2 + 200), 0);
    CHECK_EQ_INT(present(cache, &blob, 0, blob.size), 3 * U);
    CHECK_EQ_INT(read_range(cache, &blob, 5 * U, U), U);

    /* A range reaching the end of the blob stores its short last unit. */
    CHECK_EQ_INT(write_range(cache, &blob, 9 * U + 5, blob.size - 9 * U - 5), 0);
    CHECK_EQ_INT(present(cache, &blob, 0, blob.size), 3 * U + 100);
    CHECK_EQ_INT(read_range(cache, &blob, 10 * U, 100), 100);
    CHECK_EQ_INT(read_range(cache, &blob, 10 * U + 40, 60), 60);
    CHECK_EQ_INT(read_range(cache, &blob, 9 * U, U + 100), 0);

    /* Out of bounds is refused, not clipped. */
    uint8_t byte = 0;
    CHECK_EQ_INT(disk_cache_write_range(cache, &blob.key, blob.size - 10, &byte, 11), EINVAL);
    CHECK_EQ_INT(disk_cache_read_range(cache, &blob.key, blob.size, &byte, 1), 0);

    /* The rest in one call: everything is there, across a restart too. */
    CHECK_EQ_INT(write_range(cache, &blob, 0, blob.size), 0);
    CHECK_EQ_INT(read_range(cache, &blob, 0, blob.size), blob.size);
    disk_cache_counters counters;
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.bytes_stored, blob.size);
    disk_cache_close(cache);
    cache = open_test_cache(dir, U, 0, NULL);
    CHECK_EQ_INT(read_range(cache, &blob, 7, blob.size - 7), blob.size - 7);
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.bytes_stored, blob.size);
    disk_cache_close(cache);
    remove_tree(dir);
}

/* A reader's runs end inside units: consecutive runs store every unit between them, although
 * none covers it whole, and what they leave is bounded (the parts least recently written go). */
static void test_runs_meeting_inside_units_store_them(void)
{
    char dir[64];
    make_scratch_dir(dir);
    disk_cache *cache = open_test_cache(dir, U, 0, NULL);
    range_blob blob;
    make_blob(&blob, 2, 10 * U + 100);
    const uint64_t cuts[] = {0, U / 2, 2 * U + 8, 2 * U + 16, 5 * U + U / 4, blob.size};
    for (size_t i = 0; i + 1 < sizeof cuts / sizeof cuts[0]; i++)
        CHECK_EQ_INT(write_range(cache, &blob, cuts[i], cuts[i + 1] - cuts[i]), 0);
    CHECK_EQ_INT(present(cache, &blob, 0, blob.size), blob.size);
    CHECK_EQ_INT(read_range(cache, &blob, 0, blob.size), blob.size);

    /* Heads of 64 units of other blobs, then the tail of the first: its head went long ago. */
    range_blob others[64];
    for (size_t i = 0; i < 64; i++) {
        make_blob(&others[i], 100 + i, 4 * U);
        CHECK_EQ_INT(write_range(cache, &others[i], 0, U / 2), 0);
    }
    CHECK_EQ_INT(write_range(cache, &others[0], U / 2, U / 2), 0);
    CHECK_EQ_INT(present(cache, &others[0], 0, U), 0);
    /* The most recent head is still kept. */
    CHECK_EQ_INT(write_range(cache, &others[63], U / 2, U), 0);
    CHECK_EQ_INT(present(cache, &others[63], 0, 4 * U), U);
    CHECK_EQ_INT(read_range(cache, &others[63], 0, U), U);
    disk_cache_close(cache);
    remove_tree(dir);
}

static void test_reads_serve_the_exact_present_prefix(void)
{
    char dir[64];
    make_scratch_dir(dir);
    disk_cache *cache = open_test_cache(dir, U, 0, NULL);
    range_blob blob;
    make_blob(&blob, 2, 8 * U - 300);    /* 8 units, the last one short */
    CHECK_EQ_INT(write_range(cache, &blob, 0, 3 * U), 0);                    /* units 0-2 */
    CHECK_EQ_INT(write_range(cache, &blob, 5 * U, blob.size - 5 * U), 0);   /* units 5-7 */

    CHECK_EQ_INT(read_range(cache, &blob, 0, blob.size), 3 * U);
    CHECK_EQ_INT(read_range(cache, &blob, U + 7, 4 * U), 2 * U - 7);
    CHECK_EQ_INT(read_range(cache, &blob, 3 * U, U), 0);
    CHECK_EQ_INT(read_range(cache, &blob, 3 * U - 1, 2), 1);
    CHECK_EQ_INT(read_range(cache, &blob, 5 * U + 1, blob.size - 5 * U - 1), blob.size - 5 * U - 1);
    CHECK_EQ_INT(read_range(cache, &blob, 2 * U + 5, 10), 10);              /* inside one unit */
    CHECK_EQ_INT(present(cache, &blob, U + 7, 4 * U), 2 * U);                /* U-7 + U + 7 */
    CHECK_EQ_INT(present(cache, &blob, 0, UINT64_MAX), blob.size - 2 * U);

    /* Whole units read through the old interface see the same. */
    uint8_t *unit = malloc(U);
    CHECK(disk_cache_read_block(cache, &blob.key, 2, unit, U));
    CHECK(!disk_cache_read_block(cache, &blob.key, 3, unit, U));
    fill_block(blob.seed, 4, unit, U);
    CHECK_EQ_INT(disk_cache_write_block(cache, &blob.key, 4, unit, U), 0);
    CHECK_EQ_INT(read_range(cache, &blob, 4 * U, blob.size - 4 * U), blob.size - 4 * U);
    free(unit);

    disk_cache_counters counters;
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.checksum_failures, 0);
    disk_cache_close(cache);
    remove_tree(dir);
}

static void test_a_damaged_unit_is_dropped_not_served(void)
{
    char dir[64], data_path[512];
    make_scratch_dir(dir);
    disk_cache *cache = open_test_cache(dir, U, 0, NULL);
    range_blob blob;
    make_blob(&blob, 3, 8 * U);
    CHECK_EQ_INT(write_range(cache, &blob, 0, blob.size), 0);
    CHECK(find_file(dir, blob.etag, ".data", data_path, sizeof data_path));

    CHECK(flip_byte(data_path, 3 * U + 1000));
    CHECK_EQ_INT(read_range(cache, &blob, 0, blob.size), 3 * U);
    disk_cache_counters counters;
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.checksum_failures, 1);
    CHECK_EQ_INT(counters.bytes_stored, 7 * U);
    CHECK_EQ_INT(present(cache, &blob, 0, blob.size), 7 * U);
    CHECK_EQ_INT(read_range(cache, &blob, 0, blob.size), 3 * U);   /* now absent: a plain miss */
    CHECK_EQ_INT(read_range(cache, &blob, 4 * U, 4 * U), 4 * U);

    /* A read of a few bytes of a damaged unit verifies the whole unit, so it is caught too. */
    CHECK(flip_byte(data_path, 6 * U + 3000));
    CHECK_EQ_INT(read_range(cache, &blob, 6 * U + 10, 100), 0);
    CHECK_EQ_INT(read_range(cache, &blob, 5 * U + 10, 2 * U), U - 10);
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.checksum_failures, 2);
    CHECK_EQ_INT(present(cache, &blob, 0, blob.size), 6 * U);

    /* Dropped for good (across a restart), and written again only by a write covering it. */
    disk_cache_close(cache);
    cache = open_test_cache(dir, U, 0, NULL);
    CHECK_EQ_INT(present(cache, &blob, 0, blob.size), 6 * U);
    CHECK_EQ_INT(write_range(cache, &blob, 0, blob.size), 0);
    CHECK_EQ_INT(read_range(cache, &blob, 0, blob.size), blob.size);
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.checksum_failures, 0);
    CHECK_EQ_INT(counters.bytes_stored, blob.size);
    disk_cache_close(cache);
    remove_tree(dir);
}

static long max_rss_kib(void)
{
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_maxrss;
}

/* A file claiming 128 TiB: with 8 MiB units its index has 2^24 records (the most allowed), which
 * must cost neither memory nor disk; with 64 KiB units it has too many, and is refused. */
static void test_a_huge_blob_costs_no_memory(void)
{
    enum { BIG_UNIT = 8 << 20 };
    char dir[64];
    make_scratch_dir(dir);
    long rss_before = max_rss_kib();
    disk_cache *cache = open_test_cache(dir, BIG_UNIT, 0, NULL);
    range_blob blob;
    make_blob(&blob, 4, UINT64_C(128) << 40);
    uint8_t *unit = malloc(BIG_UNIT), *back = malloc(BIG_UNIT);
    fill_block(blob.seed, 5, unit, BIG_UNIT);
    uint64_t offset = UINT64_C(5) * BIG_UNIT;
    CHECK_EQ_INT(disk_cache_write_range(cache, &blob.key, offset, unit, BIG_UNIT), 0);
    CHECK_EQ_INT(disk_cache_read_range(cache, &blob.key, offset, back, BIG_UNIT), BIG_UNIT);
    CHECK(memcmp(unit, back, BIG_UNIT) == 0);
    CHECK_EQ_INT(disk_cache_present_bytes(cache, &blob.key, 0, blob.size), BIG_UNIT);
    CHECK_EQ_INT(disk_cache_present_bytes(cache, &blob.key, offset - 1, 2), 1);
    disk_cache_close(cache);

    /* Reopened: the sparse index is scanned by its data, not read whole. */
    cache = open_test_cache(dir, BIG_UNIT, 0, NULL);
    CHECK_EQ_INT(disk_cache_cached_bytes(cache, &blob.key), BIG_UNIT);
    CHECK_EQ_INT(disk_cache_read_range(cache, &blob.key, offset + 100, back, 1000), 1000);
    CHECK(memcmp(unit + 100, back, 1000) == 0);
    /* Two 8 MiB buffers and the cache: anything near 128 MiB means records were allocated. */
    long grown_kib = max_rss_kib() - rss_before;
    CHECK(grown_kib < 40 * 1024);
    printf("128 TiB blob: peak RSS grew %ld KiB (two 8 MiB buffers included)\n", grown_kib);
    CHECK(allocated_bytes(dir, ".index") < (1 << 20));
    disk_cache_close(cache);
    remove_tree(dir);

    /* 2^31 units of 64 KiB: more records than an index may hold. Refused, counted, harmless. */
    make_scratch_dir(dir);
    cache = open_test_cache(dir, 64 << 10, 0, NULL);
    CHECK_EQ_INT(disk_cache_write_range(cache, &blob.key, 0, unit, 64 << 10), EFBIG);
    CHECK_EQ_INT(disk_cache_read_range(cache, &blob.key, 0, back, 64 << 10), 0);
    CHECK_EQ_INT(disk_cache_present_bytes(cache, &blob.key, 0, blob.size), 0);
    disk_cache_counters counters;
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.write_failures, 1);
    CHECK_EQ_INT(counters.bytes_stored, 0);
    disk_cache_close(cache);
    free(unit);
    free(back);
    remove_tree(dir);
}

int main(void)
{
    test_a_huge_blob_costs_no_memory();   /* first: it measures the peak RSS */
    test_partial_edge_units_are_skipped();
    test_runs_meeting_inside_units_store_them();
    test_reads_serve_the_exact_present_prefix();
    test_a_damaged_unit_is_dropped_not_served();
    return check_finish("test_disk_cache_range");
}
