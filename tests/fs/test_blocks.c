/* The block cache: single flight, failure then retry, the budget, read-ahead refusal, and no
 * deadlock when many readers need more blocks than the budget holds. */
#include "blocks.h"
#include "check.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#define BLOCK 4096u

static atomic_int loads;
static atomic_int fail_next;
static atomic_int slow_ms;

/* Fills a block with bytes derived from (index, position) so a mix-up shows. */
static int fake_load(void *context, uint64_t index, void *buf, size_t len, bool *fetched)
{
    (void)context;
    *fetched = true;
    atomic_fetch_add(&loads, 1);
    if (atomic_load(&slow_ms))
        usleep((useconds_t)atomic_load(&slow_ms) * 1000);
    if (atomic_exchange(&fail_next, 0))
        return EIO;
    for (size_t i = 0; i < len; i++)
        ((uint8_t *)buf)[i] = (uint8_t)(index * 31 + i * 7);
    return 0;
}

static bool block_is_right(const block *blk, uint64_t index)
{
    for (size_t i = 0; i < block_length(blk); i++)
        if (block_data(blk)[i] != (uint8_t)(index * 31 + i * 7))
            return false;
    return true;
}

typedef struct reader_args {
    block_cache *cache;
    const block_source *source;
    uint64_t first, count;
    int errors;
} reader_args;

static void *reader_main(void *arg)
{
    reader_args *a = arg;
    for (uint64_t i = 0; i < a->count; i++) {
        uint64_t index = (a->first + i * 7) % (a->source->size / BLOCK);
        block *blk;
        if (block_cache_read(a->cache, a->source, index, &blk) != 0 || !block_is_right(blk, index)) {
            a->errors++;
            continue;
        }
        block_cache_release(a->cache, blk);
    }
    return NULL;
}

static void concurrent_readers_share_one_load(void)
{
    block_cache *cache = block_cache_new(64 * BLOCK, BLOCK, fake_load);
    block_source source = {.id = 1, .size = 16 * BLOCK};
    atomic_store(&loads, 0);
    atomic_store(&slow_ms, 50);
    pthread_t threads[8];
    reader_args args[8];
    for (int t = 0; t < 8; t++) {
        args[t] = (reader_args){.cache = cache, .source = &source, .first = 3, .count = 1};
        pthread_create(&threads[t], NULL, reader_main, &args[t]);
    }
    for (int t = 0; t < 8; t++) {
        pthread_join(threads[t], NULL);
        CHECK_EQ_INT(args[t].errors, 0);
    }
    CHECK_EQ_INT(atomic_load(&loads), 1);
    atomic_store(&slow_ms, 0);
    block_cache_free(cache);
}

static void failed_load_is_retried(void)
{
    block_cache *cache = block_cache_new(8 * BLOCK, BLOCK, fake_load);
    block_source source = {.id = 2, .size = 4 * BLOCK + 100};
    block *blk = NULL;
    atomic_store(&fail_next, 1);
    CHECK_EQ_INT(block_cache_read(cache, &source, 0, &blk), EIO);
    CHECK(blk == NULL);
    CHECK_EQ_INT(block_cache_read(cache, &source, 0, &blk), 0);
    CHECK(blk && block_is_right(blk, 0));
    block_cache_release(cache, blk);
    CHECK_EQ_INT(block_cache_read(cache, &source, 4, &blk), 0);   /* the short last block */
    CHECK_EQ_INT(block_length(blk), 100);
    block_cache_release(cache, blk);
    CHECK_EQ_INT(block_cache_read(cache, &source, 5, &blk), EINVAL);
    block_cache_counters counters;
    block_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.load_failures, 1);
    block_cache_free(cache);
}

static void budget_is_kept_with_lru_eviction(void)
{
    block_cache *cache = block_cache_new(4 * BLOCK, BLOCK, fake_load);
    block_source source = {.id = 3, .size = 32 * BLOCK};
    for (uint64_t i = 0; i < 32; i++) {
        block *blk;
        CHECK_EQ_INT(block_cache_read(cache, &source, i, &blk), 0);
        block_cache_release(cache, blk);
        block_cache_counters counters;
        block_cache_get_counters(cache, &counters);
        CHECK(counters.memory_used <= 4 * BLOCK);
    }
    CHECK(block_cache_contains(cache, 3, 31));
    CHECK(!block_cache_contains(cache, 3, 0));
    block_cache_free(cache);
}

static void read_ahead_never_evicts_unread_read_ahead(void)
{
    block_cache *cache = block_cache_new(4 * BLOCK, BLOCK, fake_load);
    block_source source = {.id = 4, .size = 32 * BLOCK};
    int started = 0;
    for (uint64_t i = 0; i < 8; i++) {
        block *blk = block_cache_prefetch(cache, &source, i);
        if (blk) {
            block_cache_load(cache, blk);
            started++;
        }
    }
    CHECK_EQ_INT(started, 4);
    block_cache_counters counters;
    block_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.prefetch_skipped, 4);
    CHECK(block_cache_prefetch(cache, &source, 2) == NULL);   /* present */
    block *blk;
    CHECK_EQ_INT(block_cache_read(cache, &source, 9, &blk), 0);   /* a reader may evict them */
    block_cache_release(cache, blk);
    block_cache_free(cache);
}

static void many_readers_small_budget_no_deadlock(void)
{
    block_cache *cache = block_cache_new(4 * BLOCK, BLOCK, fake_load);
    block_source source = {.id = 5, .size = 64 * BLOCK};
    atomic_store(&slow_ms, 1);
    pthread_t threads[32];
    reader_args args[32];
    for (int t = 0; t < 32; t++) {
        args[t] = (reader_args){.cache = cache, .source = &source, .first = (uint64_t)t, .count = 20};
        pthread_create(&threads[t], NULL, reader_main, &args[t]);
    }
    for (int t = 0; t < 32; t++) {
        pthread_join(threads[t], NULL);
        CHECK_EQ_INT(args[t].errors, 0);
    }
    block_cache_counters counters;
    block_cache_get_counters(cache, &counters);
    CHECK(counters.memory_used <= 4 * BLOCK);
    atomic_store(&slow_ms, 0);
    block_cache_free(cache);
}

static void release_at_once(void *hook_context, block *blk)
{
    block_cache_release(hook_context, blk);   /* stands for a store to disk */
}

/* Reads 32 blocks in order, marking each block consumed once the next is read; returns the
 * memory used at the end. */
static uint64_t read_in_order_marking_consumed(block_cache *cache)
{
    block_source source = {.id = 5, .size = 32 * BLOCK};
    for (uint64_t i = 0; i < 32; i++) {
        block *blk;
        CHECK_EQ_INT(block_cache_read(cache, &source, i, &blk), 0);
        if (blk) {
            CHECK(block_is_right(blk, i));
            block_cache_release(cache, blk);
        }
        if (i > 0)
            block_cache_mark_consumed(cache, 5, i - 1);
    }
    block_cache_counters counters;
    block_cache_get_counters(cache, &counters);
    return counters.memory_used;
}

static void consumed_blocks_are_reused_only_when_stored(void)
{
    block_cache *stored = block_cache_new(64 * BLOCK, BLOCK, fake_load);
    block_cache_set_store_hook(stored, release_at_once, stored);
    CHECK(read_in_order_marking_consumed(stored) <= 3 * BLOCK);
    CHECK(block_cache_contains(stored, 5, 31));
    block_cache_free(stored);

    block_cache *memory_only = block_cache_new(64 * BLOCK, BLOCK, fake_load);
    CHECK_EQ_INT(read_in_order_marking_consumed(memory_only), 32 * BLOCK);
    CHECK(block_cache_contains(memory_only, 5, 0));
    block_cache_free(memory_only);
}

static atomic_ulong range_bytes_loaded;
static atomic_int stores;

/* Loads bytes [from, to) with the same pattern as fake_load, counting them; never the whole. */
static int fake_load_range(void *context, uint64_t index, uint8_t *block_buf, size_t block_len, size_t from,
                           size_t to, bool *whole)
{
    (void)context;
    (void)whole;
    if (to > block_len || from >= to)
        return EINVAL;
    if (atomic_load(&slow_ms))
        usleep((useconds_t)atomic_load(&slow_ms) * 1000);
    if (atomic_exchange(&fail_next, 0))
        return EIO;
    atomic_fetch_add(&range_bytes_loaded, to - from);
    for (size_t i = from; i < to; i++)
        block_buf[i] = (uint8_t)(index * 31 + i * 7);
    return 0;
}

static void count_store(void *hook_context, block *blk)
{
    atomic_fetch_add(&stores, 1);
    block_cache_release(hook_context, blk);
}

static bool range_is_right(const block *blk, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        if (block_data(blk)[i] != (uint8_t)(block_index(blk) * 31 + i * 7))
            return false;
    return true;
}

typedef struct piece_reader_args {
    block_cache *cache;
    const block_source *source;
    size_t from, to;
    int errors;
} piece_reader_args;

static void *piece_reader_main(void *arg)
{
    piece_reader_args *a = arg;
    block *blk;
    if (block_cache_read_range(a->cache, a->source, 1, a->from, a->to, true, &blk) != 0) {
        a->errors++;
        return NULL;
    }
    if (!range_is_right(blk, a->from, a->to))
        a->errors++;
    block_cache_release(a->cache, blk);
    return NULL;
}

/* A slice read fetches only its pieces; concurrent readers of other pieces share nothing twice;
 * a whole read completes the block, which is then stored once; a failed piece is retried. */
static void partial_blocks_fetch_only_touched_pieces(void)
{
    block_cache *cache = block_cache_new(8 * BLOCK, BLOCK, fake_load);
    block_cache_set_range_loader(cache, fake_load_range);
    block_cache_set_store_hook(cache, count_store, cache);
    block_source source = {.id = 9, .size = 4 * BLOCK};
    size_t piece = BLOCK / BLOCK_MAX_PIECES;
    atomic_store(&loads, 0);
    atomic_store(&range_bytes_loaded, 0);

    block *blk;
    CHECK_EQ_INT(block_cache_read_range(cache, &source, 1, piece + 5, 3 * piece - 1, true, &blk), 0);
    CHECK(range_is_right(blk, piece + 5, 3 * piece - 1));
    block_cache_release(cache, blk);
    CHECK_EQ_INT(atomic_load(&range_bytes_loaded), 2 * piece);
    CHECK(!block_cache_contains(cache, 9, 1));

    atomic_store(&fail_next, 1);
    CHECK_EQ_INT(block_cache_read_range(cache, &source, 1, 10 * piece, 11 * piece, true, &blk), EIO);

    atomic_store(&slow_ms, 2);
    enum { READERS = 8 };
    pthread_t threads[READERS];
    piece_reader_args args[READERS];
    for (int i = 0; i < READERS; i++) {
        /* overlapping ranges over pieces 0..16 (1 and 2 already present), some shared by two readers */
        args[i] = (piece_reader_args){.cache = cache, .source = &source, .from = (size_t)i * 2 * piece + 3,
                                      .to = (size_t)(i * 2 + 3) * piece};
        pthread_create(&threads[i], NULL, piece_reader_main, &args[i]);
    }
    for (int i = 0; i < READERS; i++) {
        pthread_join(threads[i], NULL);
        CHECK_EQ_INT(args[i].errors, 0);
    }
    atomic_store(&slow_ms, 0);
    CHECK_EQ_INT(atomic_load(&range_bytes_loaded), 17 * piece);
    CHECK_EQ_INT(atomic_load(&stores), 0);

    CHECK_EQ_INT(block_cache_read(cache, &source, 1, &blk), 0);
    CHECK(block_is_right(blk, 1));
    block_cache_release(cache, blk);
    CHECK_EQ_INT(atomic_load(&range_bytes_loaded), BLOCK);
    CHECK_EQ_INT(atomic_load(&loads), 0);
    CHECK_EQ_INT(atomic_load(&stores), 1);
    CHECK(block_cache_contains(cache, 9, 1));

    /* a read that is not partial loads an absent block whole, as before */
    CHECK_EQ_INT(block_cache_read_range(cache, &source, 2, 5, 6, false, &blk), 0);
    CHECK(block_is_right(blk, 2));
    block_cache_release(cache, blk);
    CHECK_EQ_INT(atomic_load(&loads), 1);
    block_cache_free(cache);
}

int main(void)
{
    partial_blocks_fetch_only_touched_pieces();
    consumed_blocks_are_reused_only_when_stored();
    concurrent_readers_share_one_load();
    failed_load_is_retried();
    budget_is_kept_with_lru_eviction();
    read_ahead_never_evicts_unread_read_ahead();
    many_readers_small_budget_no_deadlock();
    return check_finish("test_blocks");
}
