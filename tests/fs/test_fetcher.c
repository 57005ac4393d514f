/* The fetch pool: split reads run their parts concurrently and report the first error;
 * read-ahead blocks are loaded off the caller's thread; fetched blocks are handed to the store
 * threads after their readers were served, and every store finishes before the pool is freed. */
#include "blocks.h"
#include "check.h"
#include "fetcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

static atomic_int parts_in_flight, max_parts_in_flight;
static atomic_int stores, wrong_stores;
static atomic_int fail_at_offset = -1;

static int fake_range_read(void *context, uint64_t offset, void *buf, size_t len)
{
    (void)context;
    int now = atomic_fetch_add(&parts_in_flight, 1) + 1;
    int seen = atomic_load(&max_parts_in_flight);
    while (now > seen && !atomic_compare_exchange_weak(&max_parts_in_flight, &seen, now)) {
    }
    usleep(20000);
    for (size_t i = 0; i < len; i++)
        ((uint8_t *)buf)[i] = (uint8_t)((offset + i) * 13);
    atomic_fetch_sub(&parts_in_flight, 1);
    return (int)offset == atomic_load(&fail_at_offset) ? EIO : 0;
}

static int fake_load(void *context, uint64_t index, void *buf, size_t len, bool *fetched)
{
    *fetched = true;
    return fake_range_read(context, index * 4096, buf, len);
}

static void fake_store(void *source_context, uint64_t index, const void *data, size_t len)
{
    (void)source_context;
    const uint8_t *bytes = data;
    bool right = true;
    for (size_t i = 0; i < len; i++)
        right = right && bytes[i] == (uint8_t)((index * 4096 + i) * 13);
    if (!right)
        atomic_fetch_add(&wrong_stores, 1);   /* CHECK is not thread-safe: counted, checked in main */
    atomic_fetch_add(&stores, 1);
}

static void split_reads_run_concurrently(fetcher *pool)
{
    uint8_t buf[8 * 1000];
    atomic_store(&max_parts_in_flight, 0);
    CHECK_EQ_INT(fetcher_read_split(pool, fake_range_read, NULL, 5000, buf, sizeof buf, 1000), 0);
    bool right = true;
    for (size_t i = 0; i < sizeof buf; i++)
        right = right && buf[i] == (uint8_t)((5000 + i) * 13);
    CHECK(right);
    CHECK(atomic_load(&max_parts_in_flight) >= 4);
}

static void split_reads_report_a_failed_part(fetcher *pool)
{
    uint8_t buf[4000];
    atomic_store(&fail_at_offset, 3000);
    CHECK_EQ_INT(fetcher_read_split(pool, fake_range_read, NULL, 0, buf, sizeof buf, 1000), EIO);
    atomic_store(&fail_at_offset, -1);
    CHECK_EQ_INT(fetcher_read_split(pool, fake_range_read, NULL, 0, buf, sizeof buf, 0), 0);
}

static void read_ahead_loads_then_stores(block_cache *cache, fetcher *pool)
{
    block_source source = {.id = 9, .size = 8 * 4096};
    for (uint64_t i = 0; i < 8; i++) {
        block *blk = block_cache_prefetch(cache, &source, i);
        CHECK(blk != NULL);
        if (blk)
            fetcher_submit(pool, blk);
    }
    for (uint64_t i = 0; i < 8; i++) {
        block *blk;
        CHECK_EQ_INT(block_cache_read(cache, &source, i, &blk), 0);   /* waits for the fetch thread */
        if (blk)
            block_cache_release(cache, blk);
    }
    block_cache_counters counters;
    block_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.misses, 0);
    CHECK_EQ_INT(counters.prefetches, 8);
}

int main(void)
{
    block_cache *cache = block_cache_new(64 * 4096, 4096, fake_load);
    fetcher *pool = fetcher_new(cache, 8, fake_store, 2);
    CHECK(pool != NULL);
    split_reads_run_concurrently(pool);
    split_reads_report_a_failed_part(pool);
    read_ahead_loads_then_stores(cache, pool);
    fetcher_free(pool);   /* finishes the pending stores */
    CHECK_EQ_INT(atomic_load(&stores), 8);
    CHECK_EQ_INT(atomic_load(&wrong_stores), 0);
    block_cache_free(cache);
    return check_finish("test_fetcher");
}
