/* The block cache: claims of page runs, single flight, waiters, the memory budget and its
 * eviction order, the page pool, copies and counters, then many threads claiming, loading and
 * waiting on overlapping ranges of a few blocks with every byte checked. */
#include "blocks.h"
#include "check.h"
#include "read_path_support.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE BLOCK_PAGE_SIZE
#define BS (16 * PAGE)   /* 64 KiB blocks of 16 pages */
#define MAX_RUNS 64

static block *pinned(block_cache *cache, const block_source *source, uint64_t index)
{
    block *blk = NULL;
    CHECK_EQ_INT(block_cache_get(cache, source, index, &blk), 0);
    return blk;
}

static size_t claim(block_cache *cache, block *blk, size_t from, size_t to, bool within_budget, size_t max_run,
                    page_run *runs)
{
    return block_cache_claim(cache, blk, from, to, within_budget, max_run, runs, MAX_RUNS);
}

/* Loads runs (the file's bytes, or nothing with an error) and completes them. */
static void complete_runs(block_cache *cache, const page_run *runs, size_t count, int error)
{
    for (size_t i = 0; i < count; i++) {
        if (!error)
            fill_run(&runs[i], BS);
        block_cache_complete(cache, &runs[i], error);
    }
}

/* Claims a pinned block of block_bytes whole and loads it. */
static void load_whole(block_cache *cache, block *blk, size_t block_bytes)
{
    page_run runs[MAX_RUNS];
    size_t count = block_cache_claim(cache, blk, 0, block_bytes, false, block_bytes, runs, MAX_RUNS);
    for (size_t i = 0; i < count; i++) {
        fill_run(&runs[i], block_bytes);
        block_cache_complete(cache, &runs[i], 0);
    }
}

/* Claims [from, to) of a pinned block of block_bytes as one run and loads it. */
static void load_one_run(block_cache *cache, block *blk, size_t block_bytes, size_t from, size_t to)
{
    page_run runs[MAX_RUNS];
    CHECK_EQ_INT(block_cache_claim(cache, blk, from, to, false, block_bytes, runs, MAX_RUNS), 1);
    fill_run(&runs[0], block_bytes);
    block_cache_complete(cache, &runs[0], 0);
}

/* Loads [from, to) of a pinned block of block_bytes as one run, marks [served_from, served_to)
 * served and puts the block back. */
static void load_serve_put(block_cache *cache, block *blk, size_t block_bytes, size_t from, size_t to,
                           size_t served_from, size_t served_to)
{
    load_one_run(cache, blk, block_bytes, from, to);
    block_cache_mark_served(cache, blk, served_from, served_to);
    block_cache_put(cache, blk);
}

/* Pins block index and loads it whole (a reader's claim); returns it pinned. */
static block *loaded(block_cache *cache, const block_source *source, uint64_t index)
{
    block *blk = pinned(cache, source, index);
    page_run runs[MAX_RUNS];
    size_t count = claim(cache, blk, 0, BS, false, BS, runs);
    complete_runs(cache, runs, count, 0);
    CHECK(block_cache_has(cache, blk, 0, block_length(blk)));
    return blk;
}

static block_cache_counters counters_of(block_cache *cache)
{
    block_cache_counters c;
    block_cache_get_counters(cache, &c);
    return c;
}

static bool run_is(const page_run *run, size_t first, size_t end)
{
    return run->first_page == first && run->end_page == end && block_run_offset(run) == first * PAGE &&
           block_run_length(run) == (end - first) * PAGE;
}

/* Evicts every unpinned block: budget_blocks blocks of another file, claimed whole by readers
 * at once, leave room for nothing else; their runs then fail, and with nothing present they go
 * when put back. */
static void evict_everything(block_cache *cache, int budget_blocks)
{
    block_source filler = {.id = 0xF111, .size = (uint64_t)budget_blocks * BS};
    block *held[16];
    page_run runs[16][MAX_RUNS];
    size_t counts[16];
    for (int i = 0; i < budget_blocks; i++) {
        held[i] = pinned(cache, &filler, (uint64_t)i);
        counts[i] = claim(cache, held[i], 0, BS, false, BS, runs[i]);
    }
    for (int i = 0; i < budget_blocks; i++) {
        complete_runs(cache, runs[i], counts[i], EIO);
        block_cache_put(cache, held[i]);
    }
}

static void claims_split_and_skip(void)
{
    block_cache *cache = block_cache_new(64 * BS, BS);
    block_source source = {.id = 1, .size = 4 * BS};
    block *blk = pinned(cache, &source, 0);
    page_run runs[MAX_RUNS], in_flight[MAX_RUNS];

    CHECK_EQ_INT(claim(cache, blk, 5 * PAGE, 7 * PAGE, false, BS, runs), 1);
    CHECK(run_is(&runs[0], 5, 7));
    complete_runs(cache, runs, 1, 0);
    /* Unaligned bounds take the pages they touch; page 6 is present already. */
    CHECK_EQ_INT(claim(cache, blk, 6 * PAGE + 100, 9 * PAGE - 1, false, BS, in_flight), 1);
    CHECK(run_is(&in_flight[0], 7, 9));

    size_t count = claim(cache, blk, 0, BS, false, 3 * PAGE, runs);
    CHECK_EQ_INT(count, 5);
    if (count == 5) {
        CHECK(run_is(&runs[0], 0, 3));
        CHECK(run_is(&runs[1], 3, 5));
        CHECK(run_is(&runs[2], 9, 12));
        CHECK(run_is(&runs[3], 12, 15));
        CHECK(run_is(&runs[4], 15, 16));
    }
    CHECK_EQ_INT(counters_of(cache).pages_in_flight, 2 + 12);
    CHECK_EQ_INT(claim(cache, blk, 0, BS, false, BS, runs + count), 0);
    CHECK_EQ_INT(claim(cache, blk, 3 * PAGE, 3 * PAGE, false, BS, runs + count), 0);
    complete_runs(cache, runs, count, 0);
    complete_runs(cache, in_flight, 1, 0);
    CHECK(block_cache_has(cache, blk, 0, BS));
    CHECK(block_bytes_right(blk, BS, 0, BS));
    CHECK_EQ_INT(counters_of(cache).pages_in_flight, 0);

    /* At most max_runs runs: the rest stays free for a later claim. */
    block *second = pinned(cache, &source, 1);
    CHECK_EQ_INT(block_cache_claim(cache, second, 0, BS, false, PAGE, runs, 2), 2);
    CHECK(run_is(&runs[0], 0, 1) && run_is(&runs[1], 1, 2));
    CHECK_EQ_INT(claim(cache, second, 0, BS, false, BS, runs + 2), 1);
    CHECK(run_is(&runs[2], 2, 16));
    complete_runs(cache, runs, 3, 0);
    CHECK(block_bytes_right(second, BS, 0, BS));

    /* The file's last block is shorter, and so is its last page. */
    block_source short_file = {.id = 2, .size = BS + 5000};
    block *last = pinned(cache, &short_file, 1);
    CHECK_EQ_INT(block_length(last), 5000);
    CHECK_EQ_INT(claim(cache, last, 0, BS, false, BS, runs), 1);
    CHECK(runs[0].first_page == 0 && runs[0].end_page == 2 && block_run_length(&runs[0]) == 5000);
    complete_runs(cache, runs, 1, 0);
    CHECK(block_bytes_right(last, BS, 0, 5000));
    block *none = (block *)&runs[0];
    CHECK_EQ_INT(block_cache_get(cache, &short_file, 2, &none), EINVAL);
    CHECK(none == NULL);

    block_cache_put(cache, last);
    block_cache_put(cache, second);
    block_cache_put(cache, blk);
    block_cache_free(cache);
}

static void single_flight(void)
{
    block_cache *cache = block_cache_new(64 * BS, BS);
    block_source source = {.id = 3, .size = 2 * BS};
    block *first_reader = pinned(cache, &source, 0), *second_reader = pinned(cache, &source, 0);
    CHECK(first_reader == second_reader);
    page_run runs1[MAX_RUNS], runs2[MAX_RUNS], none[MAX_RUNS];
    CHECK_EQ_INT(claim(cache, first_reader, 0, 8 * PAGE, false, BS, runs1), 1);
    /* The second reader overlaps the first: it gets only the pages nobody claimed. */
    CHECK_EQ_INT(claim(cache, second_reader, 4 * PAGE, 12 * PAGE, false, BS, runs2), 1);
    CHECK(run_is(&runs2[0], 8, 12));
    CHECK_EQ_INT(claim(cache, second_reader, 0, 12 * PAGE, false, BS, none), 0);
    CHECK_EQ_INT(claim(cache, second_reader, 0, 12 * PAGE, true, BS, none), 0);

    latch_waiter w1, w2;
    latch_init(&w1);
    latch_init(&w2);
    CHECK_EQ_INT(block_cache_wait(cache, first_reader, 0, 8 * PAGE, &w1.waiter), 0);
    CHECK_EQ_INT(block_cache_wait(cache, second_reader, 4 * PAGE, 12 * PAGE, &w2.waiter), 0);
    complete_runs(cache, runs1, 1, 0);
    CHECK_EQ_INT(latch_fired(&w1), 1);
    CHECK_EQ_INT(w1.error, 0);
    CHECK_EQ_INT(latch_fired(&w2), 0);   /* pages 8..11 are still on their way */
    complete_runs(cache, runs2, 1, 0);
    CHECK_EQ_INT(latch_fired(&w1), 1);
    CHECK_EQ_INT(latch_fired(&w2), 1);
    CHECK_EQ_INT(w2.error, 0);
    CHECK(block_bytes_right(first_reader, BS, 0, 12 * PAGE));
    latch_destroy(&w1);
    latch_destroy(&w2);
    block_cache_put(cache, first_reader);
    block_cache_put(cache, second_reader);
    block_cache_free(cache);
}

static void waiters(void)
{
    block_cache *cache = block_cache_new(64 * BS, BS);
    block_source source = {.id = 4, .size = BS};
    block *blk = pinned(cache, &source, 0);
    latch_waiter unclaimed, on_a, on_b, on_both, withdrawn, present;
    latch_waiter *all[] = {&unclaimed, &on_a, &on_b, &on_both, &withdrawn, &present};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        latch_init(all[i]);

    CHECK_EQ_INT(block_cache_wait(cache, blk, 0, PAGE, &unclaimed.waiter), -EIO);   /* nothing failed yet */
    CHECK(!block_cache_cancel_wait(cache, &unclaimed.waiter));   /* never registered */

    page_run a[MAX_RUNS], b[MAX_RUNS];
    CHECK_EQ_INT(claim(cache, blk, 0, 4 * PAGE, false, BS, a), 1);
    CHECK_EQ_INT(claim(cache, blk, 4 * PAGE, 8 * PAGE, false, BS, b), 1);
    CHECK_EQ_INT(block_cache_wait(cache, blk, 0, 4 * PAGE, &on_a.waiter), 0);
    CHECK_EQ_INT(block_cache_wait(cache, blk, 4 * PAGE, 8 * PAGE, &on_b.waiter), 0);
    CHECK_EQ_INT(block_cache_wait(cache, blk, 2 * PAGE, 6 * PAGE, &on_both.waiter), 0);
    CHECK_EQ_INT(block_cache_wait(cache, blk, 5 * PAGE, 6 * PAGE, &withdrawn.waiter), 0);
    CHECK_EQ_INT(block_cache_wait(cache, blk, 7 * PAGE, 9 * PAGE, &unclaimed.waiter), -EIO);
    CHECK(block_cache_cancel_wait(cache, &withdrawn.waiter));
    CHECK(!block_cache_cancel_wait(cache, &withdrawn.waiter));

    /* Run a is refused: its waiters hear why, on_b still waits for run b, and a waiter that
     * comes after the failure hears the same reason. */
    complete_runs(cache, a, 1, EACCES);
    CHECK_EQ_INT(latch_fired(&on_a), 1);
    CHECK_EQ_INT(on_a.error, EACCES);
    CHECK_EQ_INT(latch_fired(&on_both), 1);
    CHECK_EQ_INT(on_both.error, EACCES);
    CHECK_EQ_INT(latch_fired(&on_b), 0);
    CHECK_EQ_INT(block_cache_wait(cache, blk, 0, PAGE, &unclaimed.waiter), -EACCES);
    CHECK_EQ_INT(counters_of(cache).load_failures, 1);

    complete_runs(cache, b, 1, 0);
    CHECK_EQ_INT(latch_fired(&on_b), 1);
    CHECK_EQ_INT(on_b.error, 0);
    CHECK_EQ_INT(latch_fired(&withdrawn), 0);
    CHECK(!block_cache_cancel_wait(cache, &on_b.waiter));   /* after it fired */
    CHECK_EQ_INT(block_cache_wait(cache, blk, 4 * PAGE, 8 * PAGE, &present.waiter), 1);
    CHECK(!block_cache_cancel_wait(cache, &present.waiter));

    /* The failed pages can be claimed again. */
    CHECK_EQ_INT(claim(cache, blk, 0, 8 * PAGE, false, BS, a), 1);
    CHECK(run_is(&a[0], 0, 4));
    complete_runs(cache, a, 1, 0);
    CHECK(block_bytes_right(blk, BS, 0, 8 * PAGE));
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        CHECK(all[i]->fired <= 1);
        latch_destroy(all[i]);
    }
    block_cache_put(cache, blk);
    block_cache_free(cache);
}

/* A waiter that came in the second half of a failed run's life is told so (its reader retries
 * rather than taking a failure it hardly waited for); one there from the start is not. */
static void late_joiners_of_a_failed_run(void)
{
    block_cache *cache = block_cache_new(64 * BS, BS);
    block_source source = {.id = 9, .size = BS};
    block *blk = pinned(cache, &source, 0);
    latch_waiter early, late;
    latch_init(&early);
    latch_init(&late);
    page_run runs[MAX_RUNS];
    CHECK_EQ_INT(claim(cache, blk, 0, 4 * PAGE, false, BS, runs), 1);
    CHECK_EQ_INT(block_cache_wait(cache, blk, 0, 4 * PAGE, &early.waiter), 0);
    struct timespec pause = {.tv_nsec = 200 * 1000 * 1000};
    nanosleep(&pause, NULL);
    CHECK_EQ_INT(block_cache_wait(cache, blk, PAGE, 2 * PAGE, &late.waiter), 0);
    complete_runs(cache, runs, 1, EIO);
    CHECK_EQ_INT(latch_fired(&early), 1);
    CHECK_EQ_INT(early.error, EIO);
    CHECK(!early.waiter.joined_late);
    CHECK_EQ_INT(latch_fired(&late), 1);
    CHECK_EQ_INT(late.error, EIO);
    CHECK(late.waiter.joined_late);

    /* A run that succeeds makes nobody late. */
    CHECK_EQ_INT(claim(cache, blk, 0, 4 * PAGE, false, BS, runs), 1);
    nanosleep(&pause, NULL);
    CHECK_EQ_INT(block_cache_wait(cache, blk, 0, PAGE, &late.waiter), 0);
    complete_runs(cache, runs, 1, 0);
    CHECK_EQ_INT(latch_fired(&late), 2);
    CHECK_EQ_INT(late.error, 0);
    CHECK(!late.waiter.joined_late);
    latch_destroy(&early);
    latch_destroy(&late);
    block_cache_put(cache, blk);
    block_cache_free(cache);
}

/* Read-ahead claims fit the budget or are refused; a reader's claim evicts, and exceeds the
 * budget when everything is pinned. */
static void budget(void)
{
    block_cache *cache = block_cache_new(2 * BS, BS);
    block_source source = {.id = 5, .size = 8 * BS};
    block_cache_put(cache, loaded(cache, &source, 0));
    block_cache_put(cache, loaded(cache, &source, 1));
    CHECK_EQ_INT(counters_of(cache).memory_used, 2 * BS);

    block *blk2 = pinned(cache, &source, 2);
    page_run runs[MAX_RUNS];
    CHECK_EQ_INT(claim(cache, blk2, 0, BS, true, BS, runs), 0);   /* only unread blocks to evict */
    block_cache_counters c = counters_of(cache);
    CHECK_EQ_INT(c.ahead_refused, 16);
    CHECK_EQ_INT(c.evictions, 0);
    CHECK_EQ_INT(c.memory_used, 2 * BS);
    uint8_t copy[64];
    CHECK(block_cache_copy_present(cache, 5, 0, 0, sizeof copy, copy));
    CHECK(block_cache_copy_present(cache, 5, 1, 0, sizeof copy, copy));

    size_t count = claim(cache, blk2, 0, BS, false, BS, runs);
    CHECK_EQ_INT(count, 1);
    complete_runs(cache, runs, count, 0);
    c = counters_of(cache);
    CHECK_EQ_INT(c.evictions, 1);
    CHECK_EQ_INT(c.memory_used, 2 * BS);
    CHECK(!block_cache_copy_present(cache, 5, 0, 0, sizeof copy, copy));   /* least recently used */
    CHECK(block_cache_copy_present(cache, 5, 1, 0, sizeof copy, copy));

    /* Every block pinned: a reader's claim exceeds the budget, read-ahead's is refused. */
    block *blk1 = pinned(cache, &source, 1), *blk3 = pinned(cache, &source, 3), *blk4 = pinned(cache, &source, 4);
    count = claim(cache, blk3, 0, BS, false, BS, runs);
    CHECK_EQ_INT(count, 1);
    CHECK_EQ_INT(counters_of(cache).memory_used, 3 * BS);
    CHECK_EQ_INT(claim(cache, blk4, 0, PAGE, true, BS, runs + 1), 0);
    complete_runs(cache, runs, count, 0);
    CHECK(block_bytes_right(blk3, BS, 0, BS));
    block_cache_put(cache, blk4);
    block_cache_put(cache, blk3);
    block_cache_put(cache, blk2);
    block_cache_put(cache, blk1);
    c = counters_of(cache);
    CHECK_EQ_INT(c.evictions, 1);
    CHECK_EQ_INT(c.blocks, 3);
    evict_everything(cache, 2);
    c = counters_of(cache);
    CHECK_EQ_INT(c.memory_used, c.pool_bytes);   /* what is left is resident pages for reuse */
    CHECK(c.pool_bytes <= 2 * BS);
    CHECK_EQ_INT(c.blocks, 0);
    block_cache_free(cache);
}

/* A block whose every page went to the kernel (whose page cache holds them) is dropped when put
 * back. A block whose present pages all went there holds nothing unread: it goes before older
 * blocks, even for read-ahead, which may not evict unread bytes. */
static void served_blocks_go_first(void)
{
    block_cache *cache = block_cache_new(2 * BS, BS);
    block_source source = {.id = 6, .size = 8 * BS};
    block *blk = loaded(cache, &source, 5);
    block_cache_mark_served(cache, blk, 0, BS);
    block_cache_put(cache, blk);
    block_cache_counters c = counters_of(cache);
    CHECK_EQ_INT(c.released, 1);
    CHECK_EQ_INT(c.blocks, 0);
    CHECK_EQ_INT(c.memory_used, BS);   /* its buffer, kept in the pool */
    CHECK_EQ_INT(c.evictions, 0);

    block_cache_put(cache, loaded(cache, &source, 0));   /* whole, unread, the oldest */
    CHECK_EQ_INT(counters_of(cache).memory_used, BS);   /* in the pool */
    block *half = pinned(cache, &source, 1);
    page_run runs[MAX_RUNS];
    CHECK_EQ_INT(claim(cache, half, 0, BS / 2, false, BS, runs), 1);
    complete_runs(cache, runs, 1, 0);
    block_cache_mark_served(cache, half, 0, BS / 2);
    block_cache_put(cache, half);
    CHECK_EQ_INT(counters_of(cache).memory_used, BS + BS / 2);

    uint8_t copy[64];
    block *blk2 = pinned(cache, &source, 2);
    size_t count = claim(cache, blk2, 0, BS, true, BS, runs);
    CHECK_EQ_INT(count, 1);
    complete_runs(cache, runs, count, 0);
    CHECK(block_cache_copy_present(cache, 6, 0, 0, sizeof copy, copy));
    CHECK(!block_cache_copy_present(cache, 6, 1, 0, sizeof copy, copy));
    CHECK_EQ_INT(counters_of(cache).evictions, 1);
    block_cache_put(cache, blk2);

    /* Only unread blocks left: read-ahead is refused, a reader evicts the oldest. */
    block *blk3 = pinned(cache, &source, 3);
    CHECK_EQ_INT(claim(cache, blk3, 0, BS, true, BS, runs), 0);
    count = claim(cache, blk3, 0, BS, false, BS, runs);
    CHECK_EQ_INT(count, 1);
    complete_runs(cache, runs, count, 0);
    CHECK(!block_cache_copy_present(cache, 6, 0, 0, sizeof copy, copy));
    CHECK(block_cache_copy_present(cache, 6, 2, 0, sizeof copy, copy));
    CHECK_EQ_INT(counters_of(cache).evictions, 2);
    block_cache_put(cache, blk3);
    block_cache_free(cache);
}

/* A block loaded whole is being streamed: its served pages stay until all are served, then its
 * buffer serves the next block whole (no fresh pages to fault in and zero). A block holding only
 * part of itself gives its served pages up at once, to the pool. */
static void streamed_blocks_pass_their_pages_on(void)
{
    enum { BIG = 64 * PAGE };   /* enough pages that serving half of one is worth giving back */
    block_cache *cache = block_cache_new(4 * BIG, BIG);
    block_source source = {.id = 8, .size = 8 * BIG};
    block *streamed = pinned(cache, &source, 0);
    load_whole(cache, streamed, BIG);
    block_cache_mark_served(cache, streamed, 0, BIG / 2);
    block_cache_put(cache, streamed);
    block_cache_counters c = counters_of(cache);
    CHECK_EQ_INT(c.served_dropped, 0);
    CHECK_EQ_INT(c.memory_used, BIG);

    load_serve_put(cache, pinned(cache, &source, 1), BIG, 0, BIG / 2, 0, BIG / 2);   /* part of a block */
    c = counters_of(cache);
    CHECK_EQ_INT(c.served_dropped, BIG / 2);
    CHECK_EQ_INT(c.pool_bytes, BIG / 2);
    CHECK_EQ_INT(c.memory_used, BIG + BIG / 2);

    streamed = pinned(cache, &source, 0);
    CHECK(block_cache_has(cache, streamed, 0, BIG));
    block_cache_mark_served(cache, streamed, BIG / 2, BIG);
    block_cache_put(cache, streamed);
    c = counters_of(cache);
    CHECK_EQ_INT(c.released, 1);
    CHECK_EQ_INT(c.pool_bytes, BIG + BIG / 2);
    CHECK_EQ_INT(c.memory_used, BIG + BIG / 2);   /* all in the pool */

    block *next = pinned(cache, &source, 2);   /* takes the whole buffer: no new memory, no moves */
    load_whole(cache, next, BIG);
    c = counters_of(cache);
    CHECK_EQ_INT(c.memory_used, BIG + BIG / 2);
    CHECK_EQ_INT(c.pool_bytes, BIG / 2);
    CHECK_EQ_INT(c.reused_bytes, 0);
    CHECK(block_bytes_right(next, BIG, 0, BIG));
    block_cache_put(cache, next);
    block_cache_free(cache);
}

/* Pages of [from, to) of a block's buffer resident in memory (mincore). */
static size_t resident_pages(const block *blk, size_t from, size_t to)
{
    unsigned char vec[2048];
    size_t pages = (to - from) / PAGE;
    CHECK(pages <= sizeof vec);
    CHECK_EQ_INT(mincore((void *)(block_data(blk) + from), to - from, vec), 0);
    size_t count = 0;
    for (size_t i = 0; i < pages; i++)
        count += vec[i] & 1;
    return count;
}

/* A whole buffer from the pool comes resident. A block that took one for a small claim and
 * then gives its served pages up must give up the pages it never claimed too: memory holds what
 * the budget counts, not a block's worth per slice read. */
static void whole_buffer_taken_by_a_slice(void)
{
    enum { BIG = 64 * PAGE };
    block_cache *cache = block_cache_new(4 * BIG, BIG);
    block_source source = {.id = 9, .size = 4 * BIG};
    page_run runs[MAX_RUNS];
    block *whole = pinned(cache, &source, 0);
    load_whole(cache, whole, BIG);
    block_cache_mark_served(cache, whole, 0, BIG);
    block_cache_put(cache, whole);   /* fully served: its buffer goes to the pool, resident */

    block *slice = pinned(cache, &source, 1);
    CHECK_EQ_INT(block_cache_claim(cache, slice, 8 * PAGE, 40 * PAGE, false, BIG, runs, MAX_RUNS), 1);
    CHECK_EQ_INT(resident_pages(slice, 0, BIG), 64);   /* the whole buffer, taken */
    fill_run(&runs[0], BIG);
    block_cache_complete(cache, &runs[0], 0);
    block_cache_mark_served(cache, slice, 8 * PAGE, 32 * PAGE);
    block_cache_put(cache, slice);
    block_cache_counters c = counters_of(cache);
    /* The 8 pages claimed and not yet served; the pool took the 24 pages after the claim and
     * the 24 served, but not the 8 before it (too few to be worth a mapping of their own). */
    CHECK_EQ_INT(c.pool_bytes, 48 * PAGE);
    CHECK_EQ_INT(c.memory_used, 8 * PAGE + c.pool_bytes);
    CHECK_EQ_INT(resident_pages(slice, 0, BIG), 8);
    CHECK(block_bytes_right(slice, BIG, 32 * PAGE, 40 * PAGE));   /* what is unread stays */
    block_cache_free(cache);
}

/* An evicted complete block's buffer goes to the next block that claims pages of itself, even a
 * read's worth (a stream claims a block that way): it is charged whole once, and the accounting
 * returns to zero when everything is gone. */
static void whole_buffers_reused(void)
{
    block_cache *cache = block_cache_new(BS, BS);
    block_source source = {.id = 7, .size = 4 * BS + 5000};
    block *blk0 = loaded(cache, &source, 0);
    const uint8_t *buffer0 = block_data(blk0);
    block_cache_put(cache, blk0);
    CHECK_EQ_INT(counters_of(cache).memory_used, BS);

    block *blk1 = pinned(cache, &source, 1);
    page_run runs[MAX_RUNS];
    CHECK_EQ_INT(claim(cache, blk1, 0, BS / 16, false, BS, runs), 1);
    block_cache_counters c = counters_of(cache);
    CHECK_EQ_INT(c.evictions, 1);
    CHECK_EQ_INT(c.memory_used, BS);   /* the reused buffer, charged whole, not 1.5 blocks */
    CHECK(block_data(blk1) == buffer0);
    complete_runs(cache, runs, 1, 0);
    CHECK(block_bytes_right(blk1, BS, 0, BS / 16));
    CHECK_EQ_INT(claim(cache, blk1, BS / 16, BS, false, BS, runs), 1);
    CHECK_EQ_INT(counters_of(cache).memory_used, BS);   /* already charged */
    complete_runs(cache, runs, 1, EIO);
    CHECK_EQ_INT(counters_of(cache).memory_used, BS);
    CHECK_EQ_INT(claim(cache, blk1, BS / 16, BS, false, BS, runs), 1);
    complete_runs(cache, runs, 1, 0);
    CHECK(block_bytes_right(blk1, BS, 0, BS));
    block_cache_put(cache, blk1);

    /* The short last block takes nothing from the pool: it is charged by the byte. */
    block *last = pinned(cache, &source, 4);
    CHECK_EQ_INT(claim(cache, last, 0, BS, false, BS, runs), 1);
    c = counters_of(cache);
    CHECK_EQ_INT(c.memory_used, 5000);
    CHECK_EQ_INT(c.evictions, 2);
    complete_runs(cache, runs, 1, EIO);
    block_cache_put(cache, last);
    c = counters_of(cache);
    CHECK_EQ_INT(c.memory_used, 0);
    CHECK_EQ_INT(c.blocks, 0);
    block_cache_free(cache);
}

/* A block of 8 MiB read from two places at once (torch's threads in one tensor) keeps its served
 * pages until an eighth of it is served: each give-up is an mremap that flushes every CPU's TLB. */
static void large_blocks_give_up_served_pages_in_eighths(void)
{
    enum { LARGE = 2048 * PAGE, EIGHTH = LARGE / 8 };
    block_cache *cache = block_cache_new(4 * LARGE, LARGE);
    block_source source = {.id = 11, .size = 4 * LARGE};
    block *blk = pinned(cache, &source, 0);
    load_one_run(cache, blk, LARGE, 0, EIGHTH);
    load_one_run(cache, blk, LARGE, LARGE / 2, LARGE / 2 + EIGHTH);
    block_cache_mark_served(cache, blk, 0, EIGHTH / 2);
    block_cache_mark_served(cache, blk, LARGE / 2, LARGE / 2 + EIGHTH / 2 - PAGE);
    block_cache_put(cache, blk);
    block_cache_counters c = counters_of(cache);
    CHECK_EQ_INT(c.served_dropped, 0);                      /* one page short of an eighth */
    CHECK_EQ_INT(resident_pages(blk, 0, EIGHTH), EIGHTH / PAGE);
    block_cache_pin(cache, blk);
    block_cache_mark_served(cache, blk, LARGE / 2 + EIGHTH / 2 - PAGE, LARGE / 2 + EIGHTH / 2);
    block_cache_put(cache, blk);
    c = counters_of(cache);
    CHECK_EQ_INT(c.served_dropped, EIGHTH);
    CHECK_EQ_INT(c.memory_used, EIGHTH + c.pool_bytes);     /* the unserved halves, and the pool */
    CHECK_EQ_INT(resident_pages(blk, 0, EIGHTH), EIGHTH / 2 / PAGE);
    CHECK(block_bytes_right(blk, LARGE, EIGHTH / 2, EIGHTH));
    block_cache_free(cache);
}

/* Whether the mapping holding addr carries the VmFlags abbreviation flag ("hg": huge pages
 * advised, "nh": advised against), read from /proc/self/smaps. */
static bool mapping_has_flag(const void *addr, const char *flag)
{
    FILE *smaps = fopen("/proc/self/smaps", "r");
    CHECK(smaps != NULL);
    char line[512];
    bool inside = false, found = false;
    while (smaps && fgets(line, sizeof line, smaps)) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            inside = (uintptr_t)addr >= start && (uintptr_t)addr < end;
        } else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            char wanted[8];
            snprintf(wanted, sizeof wanted, " %s", flag);
            for (const char *at = strstr(line, wanted); at && !found; at = strstr(at + 1, wanted))
                found = at[strlen(wanted)] == ' ' || at[strlen(wanted)] == '\n';
            break;
        }
    }
    if (smaps)
        fclose(smaps);
    return found;
}

/* Transparent huge pages back claimed spans of whole 2 MiB pages, and nothing else: a few pages
 * claimed in a new buffer stay a few resident pages whatever the system's default, and pages
 * given up are advised against huge pages again (khugepaged would fill them in, uncharged). */
static void huge_pages_back_whole_claimed_spans_only(void)
{
    enum { LARGE = 2048 * PAGE, HUGE = 512 * PAGE };
    if (access("/sys/kernel/mm/transparent_hugepage", F_OK) != 0) {
        printf("SKIP huge_pages_back_whole_claimed_spans_only: this kernel has no transparent huge pages\n");
        return;
    }
    block_cache *cache = block_cache_new(4 * LARGE, LARGE);
    block_source source = {.id = 12, .size = 4 * LARGE};
    block *blk = pinned(cache, &source, 0);
    load_one_run(cache, blk, LARGE, LARGE - 4 * PAGE, LARGE);
    CHECK(mapping_has_flag(block_data(blk), "nh"));
    CHECK_EQ_INT(resident_pages(blk, LARGE - HUGE, LARGE), 4);

    /* [1 MiB, 7 MiB) holds at least one whole huge page, wherever the buffer lies. */
    load_one_run(cache, blk, LARGE, LARGE / 8, LARGE - LARGE / 8);
    uintptr_t start = (uintptr_t)block_data(blk);
    uintptr_t huge = (start + LARGE / 8 + HUGE - 1) / HUGE * HUGE;
    CHECK(huge + HUGE <= start + LARGE - LARGE / 8);
    CHECK(mapping_has_flag((const void *)huge, "hg"));
    CHECK(!mapping_has_flag((const void *)huge, "nh"));
    CHECK(mapping_has_flag(block_data(blk), "nh"));
    CHECK(block_bytes_right(blk, LARGE, LARGE / 8, LARGE - LARGE / 8));

    block_cache_mark_served(cache, blk, huge - start, huge - start + HUGE);   /* a quarter: given up */
    block_cache_put(cache, blk);
    CHECK_EQ_INT(counters_of(cache).served_dropped, HUGE);
    CHECK(mapping_has_flag((const void *)huge, "nh"));
    CHECK_EQ_INT(resident_pages(blk, huge - start, huge - start + HUGE), 0);
    block_cache_free(cache);
}

/* Pages a block gives up go to the pool, and the next claim of another block takes them with
 * their memory resident (moved, not faulted in and zeroed) and charged once. */
static void given_up_pages_serve_the_next_claim(void)
{
    enum { BIG = 64 * PAGE };
    block_cache *cache = block_cache_new(4 * BIG, BIG);
    block_source source = {.id = 10, .size = 4 * BIG};
    page_run runs[MAX_RUNS];
    /* Half a block, all served: its pages go to the pool. */
    load_serve_put(cache, pinned(cache, &source, 0), BIG, 0, 32 * PAGE, 0, 32 * PAGE);
    block_cache_counters c = counters_of(cache);
    CHECK_EQ_INT(c.blocks, 0);
    CHECK_EQ_INT(c.pool_bytes, 32 * PAGE);
    CHECK_EQ_INT(c.memory_used, 32 * PAGE);

    block *second = pinned(cache, &source, 1);
    CHECK_EQ_INT(block_cache_claim(cache, second, 10 * PAGE, 30 * PAGE, false, BIG, runs, MAX_RUNS), 1);
    CHECK_EQ_INT(resident_pages(second, 10 * PAGE, 30 * PAGE), 20);   /* before anything is written */
    CHECK_EQ_INT(resident_pages(second, 0, 10 * PAGE) + resident_pages(second, 30 * PAGE, BIG), 0);
    c = counters_of(cache);
    CHECK_EQ_INT(c.reused_bytes, 20 * PAGE);
    CHECK_EQ_INT(c.pool_bytes, 12 * PAGE);
    CHECK_EQ_INT(c.memory_used, 32 * PAGE);   /* the claim's charge is the pool's */
    fill_run(&runs[0], BIG);
    block_cache_complete(cache, &runs[0], 0);

    /* What is left in the pool, then fresh pages. */
    CHECK_EQ_INT(block_cache_claim(cache, second, 30 * PAGE, 50 * PAGE, false, BIG, runs, MAX_RUNS), 1);
    CHECK_EQ_INT(resident_pages(second, 30 * PAGE, 50 * PAGE), 12);
    c = counters_of(cache);
    CHECK_EQ_INT(c.reused_bytes, 32 * PAGE);
    CHECK_EQ_INT(c.pool_bytes, 0);
    CHECK_EQ_INT(c.memory_used, 40 * PAGE);
    fill_run(&runs[0], BIG);
    block_cache_complete(cache, &runs[0], 0);
    CHECK(block_bytes_right(second, BIG, 10 * PAGE, 50 * PAGE));
    block_cache_mark_served(cache, second, 10 * PAGE, 50 * PAGE);
    block_cache_put(cache, second);
    c = counters_of(cache);
    CHECK_EQ_INT(c.blocks, 0);
    CHECK_EQ_INT(c.memory_used, c.pool_bytes);
    block_cache_free(cache);
}

/* A buffer assembled from pool pages and fresh ones goes back to the pool whole when its block
 * goes, and the next block takes it whole; where its mappings begin goes with it, so that pages
 * it gives up across them still reach the pool (before Linux 6.17 a move spanning two mappings
 * fails). */
static void assembled_buffers_come_back_whole(void)
{
    enum { BIG = 64 * PAGE };
    block_cache *cache = block_cache_new(16 * BIG, BIG);
    block_source source = {.id = 11, .size = 4 * BIG};
    load_serve_put(cache, pinned(cache, &source, 0), BIG, 0, 32 * PAGE, 0, 32 * PAGE);
    CHECK_EQ_INT(counters_of(cache).pool_bytes, 32 * PAGE);

    block *assembled = pinned(cache, &source, 1);   /* 32 pages moved from the pool, 32 fresh */
    load_whole(cache, assembled, BIG);
    CHECK_EQ_INT(counters_of(cache).pool_bytes, 0);
    const uint8_t *buffer = block_data(assembled);
    block_cache_mark_served(cache, assembled, 0, BIG);
    block_cache_put(cache, assembled);
    block_cache_counters c = counters_of(cache);
    CHECK_EQ_INT(c.blocks, 0);
    CHECK_EQ_INT(c.pool_bytes, BIG);

    block *next = pinned(cache, &source, 2);
    load_one_run(cache, next, BIG, 0, 4 * PAGE);
    CHECK(block_data(next) == buffer);
    CHECK_EQ_INT(counters_of(cache).pool_bytes, 0);
    /* Not the last 8 pages: a block streamed whole keeps its served pages until it goes. */
    load_one_run(cache, next, BIG, 4 * PAGE, 56 * PAGE);
    block_cache_mark_served(cache, next, 16 * PAGE, 48 * PAGE);   /* across the mapping at page 32 */
    block_cache_put(cache, next);
    c = counters_of(cache);
    CHECK_EQ_INT(c.pool_bytes, 32 * PAGE);
    CHECK_EQ_INT(c.memory_used, 24 * PAGE + c.pool_bytes);
    CHECK_EQ_INT(resident_pages(next, 16 * PAGE, 48 * PAGE), 0);
    CHECK(block_bytes_right(next, BIG, 0, 16 * PAGE));
    CHECK(block_bytes_right(next, BIG, 48 * PAGE, 56 * PAGE));
    block_cache_free(cache);
}

/* While claims come, the pool keeps every buffer streamed blocks give back (within the budget);
 * a second after the last claim a trim leaves it its idle size, 8 blocks' worth. */
static void the_pool_shrinks_when_claims_stop(void)
{
    enum { BLOCKS = 12 };
    block_cache *cache = block_cache_new(16 * BS, BS);
    block_source source = {.id = 12, .size = BLOCKS * BS};
    block *held[BLOCKS];
    for (int i = 0; i < BLOCKS; i++)
        held[i] = loaded(cache, &source, (uint64_t)i);
    for (int i = 0; i < BLOCKS; i++) {
        block_cache_mark_served(cache, held[i], 0, BS);
        block_cache_put(cache, held[i]);
    }
    block_cache_counters c = counters_of(cache);
    CHECK_EQ_INT(c.blocks, 0);
    CHECK_EQ_INT(c.pool_bytes, BLOCKS * BS);
    block_cache_trim_pool(cache);
    CHECK_EQ_INT(counters_of(cache).pool_bytes, BLOCKS * BS);   /* claims came just now */
    nanosleep(&(struct timespec){.tv_sec = 1, .tv_nsec = 100 * 1000 * 1000}, NULL);
    block_cache_trim_pool(cache);
    c = counters_of(cache);
    CHECK_EQ_INT(c.pool_bytes, 8 * BS);
    CHECK_EQ_INT(c.memory_used, 8 * BS);
    block_cache_free(cache);
}

static void copy_present(void)
{
    block_cache *cache = block_cache_new(64 * BS, BS);
    block_source source = {.id = 8, .size = 2 * BS};
    block *blk = pinned(cache, &source, 0);
    page_run runs[MAX_RUNS], in_flight[MAX_RUNS];
    CHECK_EQ_INT(claim(cache, blk, 0, 4 * PAGE, false, BS, runs), 1);
    complete_runs(cache, runs, 1, 0);
    CHECK_EQ_INT(claim(cache, blk, 4 * PAGE, 6 * PAGE, false, BS, in_flight), 1);

    static uint8_t copy[BS];
    CHECK(block_cache_copy_present(cache, 8, 0, 100, 3 * PAGE + 7, copy));
    CHECK(bytes_right(copy, 8, 100, 3 * PAGE + 7 - 100));
    CHECK(!block_cache_copy_present(cache, 8, 0, 0, 4 * PAGE + 1, copy));   /* page 4 in flight */
    CHECK(!block_cache_copy_present(cache, 8, 0, 6 * PAGE, 7 * PAGE, copy));
    CHECK(!block_cache_copy_present(cache, 8, 0, 10, 10, copy));
    CHECK(!block_cache_copy_present(cache, 8, 0, 0, BS + 1, copy));
    CHECK(!block_cache_copy_present(cache, 99, 0, 0, 10, copy));
    CHECK(!block_cache_copy_present(cache, 8, 1, 0, 10, copy));
    CHECK_EQ_INT(counters_of(cache).blocks, 1);   /* a copy never creates a block */
    CHECK(!block_cache_has(cache, blk, 3 * PAGE, 5 * PAGE));
    CHECK(block_cache_has(cache, blk, 3 * PAGE, 4 * PAGE));
    CHECK(block_cache_covered(cache, blk, 3 * PAGE, 6 * PAGE));    /* present or in flight */
    CHECK(!block_cache_covered(cache, blk, 5 * PAGE, 6 * PAGE + 1));
    CHECK(block_cache_covered(cache, blk, 9 * PAGE, 9 * PAGE));
    complete_runs(cache, in_flight, 1, 0);
    CHECK(block_cache_copy_present(cache, 8, 0, 3 * PAGE + 1, 6 * PAGE, copy));
    CHECK(bytes_right(copy, 8, 3 * PAGE + 1, 3 * PAGE - 1));
    block_cache_put(cache, blk);
    block_cache_free(cache);
}

/* What a push may hand the kernel, taken so that no other push gets it: present pages never
 * served, from where it starts, up to max (whole pages) or the block's end, the file's last
 * partial page included. */
static void unserved_runs_taken(void)
{
    block_cache *cache = block_cache_new(64 * BS, BS);
    block_source source = {.id = 9, .size = BS + 5000};
    block *blk = pinned(cache, &source, 0);
    page_run runs[MAX_RUNS];
    CHECK_EQ_INT(claim(cache, blk, 0, 10 * PAGE, false, BS, runs), 1);
    complete_runs(cache, runs, 1, 0);
    block_cache_mark_served(cache, blk, 0, 2 * PAGE);
    block_cache_mark_served(cache, blk, 6 * PAGE, 7 * PAGE);
    CHECK_EQ_INT(block_cache_take_unserved(cache, blk, 0, BS), 0);                  /* served already */
    CHECK_EQ_INT(block_cache_take_unserved(cache, blk, 2 * PAGE + 1, BS), 0);       /* not page-aligned */
    CHECK_EQ_INT(block_cache_take_unserved(cache, blk, 2 * PAGE, 3 * PAGE), 3 * PAGE);   /* up to max */
    CHECK_EQ_INT(block_cache_take_unserved(cache, blk, 2 * PAGE, BS), 0);           /* taken */
    CHECK_EQ_INT(block_cache_take_unserved(cache, blk, 5 * PAGE, BS), PAGE);        /* up to served page 6 */
    CHECK_EQ_INT(block_cache_take_unserved(cache, blk, 7 * PAGE, BS), 3 * PAGE);    /* up to absent page 10 */
    CHECK_EQ_INT(block_cache_take_unserved(cache, blk, 10 * PAGE, BS), 0);          /* absent */
    CHECK_EQ_INT(counters_of(cache).unread_bytes, 0);
    block_cache_put(cache, blk);

    block *last = pinned(cache, &source, 1);   /* 5000 bytes: a page and a part */
    CHECK_EQ_INT(claim(cache, last, 0, 5000, false, BS, runs), 1);
    complete_runs(cache, runs, 1, 0);
    CHECK_EQ_INT(block_cache_take_unserved(cache, last, PAGE, BS), 5000 - PAGE);
    CHECK_EQ_INT(block_cache_take_unserved(cache, last, 0, BS), PAGE);
    block_cache_put(cache, last);
    CHECK_EQ_INT(counters_of(cache).blocks, 1);   /* the last, served whole, went; the first stays */
    block_cache_free(cache);
}

static void counters(void)
{
    block_cache *cache = block_cache_new(BS, BS);
    block_source source = {.id = 11, .size = 2 * BS};
    block *blk = pinned(cache, &source, 0);
    page_run runs[MAX_RUNS];
    CHECK_EQ_INT(claim(cache, blk, 0, 3 * PAGE, false, BS, runs), 1);
    block_cache_counters c = counters_of(cache);
    CHECK_EQ_INT(c.memory_used, 3 * PAGE);   /* charged per page claimed */
    CHECK_EQ_INT(c.pages_in_flight, 3);
    CHECK_EQ_INT(c.blocks, 1);
    CHECK_EQ_INT(c.memory_budget, BS);

    latch_waiter w;
    latch_init(&w);
    CHECK_EQ_INT(block_cache_wait(cache, blk, 0, 2 * PAGE, &w.waiter), 0);
    complete_runs(cache, runs, 1, 0);
    CHECK_EQ_INT(block_cache_wait(cache, blk, 0, 3 * PAGE, &w.waiter), 1);
    c = counters_of(cache);
    CHECK_EQ_INT(c.misses, 2);
    CHECK_EQ_INT(c.hits, 3);
    CHECK_EQ_INT(c.pages_in_flight, 0);
    CHECK_EQ_INT(block_cache_present_bytes(cache, 11, 0), 3 * PAGE);

    /* Two pages present, two waited for. */
    CHECK_EQ_INT(claim(cache, blk, PAGE, 5 * PAGE, false, BS, runs), 1);
    CHECK_EQ_INT(block_cache_wait(cache, blk, PAGE, 5 * PAGE, &w.waiter), 0);
    c = counters_of(cache);
    CHECK_EQ_INT(c.hits, 5);
    CHECK_EQ_INT(c.misses, 4);
    CHECK_EQ_INT(c.memory_used, 5 * PAGE);
    complete_runs(cache, runs, 1, EIO);
    c = counters_of(cache);
    CHECK_EQ_INT(c.load_failures, 1);
    CHECK_EQ_INT(c.memory_used, 3 * PAGE);
    CHECK_EQ_INT(w.error, EIO);

    /* Evicting pages that were fetched and never served wastes them. */
    block_cache_mark_served(cache, blk, 0, PAGE);
    block_cache_put(cache, blk);
    block *other = pinned(cache, &source, 1);
    CHECK_EQ_INT(claim(cache, other, 0, BS, false, BS, runs), 1);
    c = counters_of(cache);
    CHECK_EQ_INT(c.evictions, 1);
    CHECK_EQ_INT(c.wasted_bytes, 2 * PAGE);
    CHECK_EQ_INT(c.memory_used, BS);
    CHECK_EQ_INT(block_cache_present_bytes(cache, 11, 0), 0);
    complete_runs(cache, runs, 1, 0);
    CHECK_EQ_INT(block_cache_present_bytes(cache, 11, 1), BS);
    latch_destroy(&w);
    block_cache_put(cache, other);
    block_cache_free(cache);
}

/* ---- many threads ------------------------------------------------------------------------- */

#define STRESS_THREADS 8
#define STRESS_ROUNDS 2000
#define STRESS_BLOCKS 6

typedef struct stress_thread {
    block_cache *cache;
    const block_source *source;
    uint64_t seed;
    int wrong_bytes, timeouts, served;
} stress_thread;

static uint64_t next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

/* Claims what is missing of [from, to), loads it (now and then failing), waits for the rest.
 * Whether the bytes are present; a wait that outlives its deadline counts as a timeout. */
static bool read_range(stress_thread *t, block *blk, size_t from, size_t to)
{
    bool within_budget = next_random(&t->seed) % 4 == 0;
    for (int attempt = 0; attempt < 50; attempt++) {
        page_run runs[16];
        size_t count = block_cache_claim(t->cache, blk, from, to, within_budget, 2 * PAGE, runs, 16);
        for (size_t i = 0; i < count; i++) {
            if (next_random(&t->seed) % 8 == 0)
                sched_yield();   /* let other readers find these pages in flight */
            int error = next_random(&t->seed) % 16 == 0 ? EIO : 0;
            if (!error)
                fill_run(&runs[i], BS);
            block_cache_complete(t->cache, &runs[i], error);
        }
        latch_waiter w;
        latch_init(&w);
        int waiting = block_cache_wait(t->cache, blk, from, to, &w.waiter);
        if (waiting == 0 && !latch_wait(&w, 20)) {
            t->timeouts++;
            if (!block_cache_cancel_wait(t->cache, &w.waiter))
                latch_wait(&w, 3600);   /* it is firing: w must outlive the call */
        }
        bool loaded_now = waiting == 0 && latch_fired(&w) && w.error == 0;
        latch_destroy(&w);
        if (waiting == 1 || loaded_now)
            return true;
        within_budget = false;   /* refused or failed: claim as a reader */
    }
    return false;
}

static void *stress_main(void *arg)
{
    stress_thread *t = arg;
    for (int round = 0; round < STRESS_ROUNDS; round++) {
        uint64_t index = next_random(&t->seed) % STRESS_BLOCKS;
        block *blk;
        if (block_cache_get(t->cache, t->source, index, &blk) != 0) {
            t->wrong_bytes++;
            continue;
        }
        size_t length = block_length(blk);
        size_t from = next_random(&t->seed) % length;
        size_t span = length - from < 5 * PAGE ? length - from : 5 * PAGE;
        size_t to = from + 1 + next_random(&t->seed) % span;
        if (!read_range(t, blk, from, to) || !block_bytes_right(blk, BS, from, to))
            t->wrong_bytes++;
        if (next_random(&t->seed) % 2) {
            block_cache_mark_served(t->cache, blk, from, to);
            t->served++;
        }
        block_cache_put(t->cache, blk);
    }
    return NULL;
}

static void many_threads(void)
{
    block_cache *cache = block_cache_new(2 * BS, BS);
    block_source source = {.id = 9, .size = (STRESS_BLOCKS - 1) * BS + 3000};
    pthread_t threads[STRESS_THREADS];
    stress_thread args[STRESS_THREADS];
    for (int i = 0; i < STRESS_THREADS; i++) {
        args[i] = (stress_thread){.cache = cache, .source = &source, .seed = 0x9E3779B97F4A7C15ULL * (i + 1)};
        CHECK_EQ_INT(pthread_create(&threads[i], NULL, stress_main, &args[i]), 0);
    }
    int wrong = 0, timeouts = 0;
    for (int i = 0; i < STRESS_THREADS; i++) {
        pthread_join(threads[i], NULL);
        wrong += args[i].wrong_bytes;
        timeouts += args[i].timeouts;
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(timeouts, 0);
    block_cache_counters c = counters_of(cache);
    CHECK_EQ_INT(c.pages_in_flight, 0);
    CHECK(c.load_failures > 0);
    CHECK(c.evictions > 0);
    CHECK(c.blocks <= STRESS_BLOCKS);
    printf("many threads: %llu evictions, %llu failed runs, %llu refused pages, %llu MiB wasted\n",
           (unsigned long long)c.evictions, (unsigned long long)c.load_failures,
           (unsigned long long)c.ahead_refused, (unsigned long long)(c.wasted_bytes >> 20));
    evict_everything(cache, 2);
    c = counters_of(cache);
    CHECK_EQ_INT(c.memory_used, c.pool_bytes);
    CHECK_EQ_INT(c.blocks, 0);
    block_cache_free(cache);
}

int main(void)
{
    claims_split_and_skip();
    single_flight();
    waiters();
    late_joiners_of_a_failed_run();
    budget();
    served_blocks_go_first();
    streamed_blocks_pass_their_pages_on();
    whole_buffers_reused();
    whole_buffer_taken_by_a_slice();
    given_up_pages_serve_the_next_claim();
    large_blocks_give_up_served_pages_in_eighths();
    huge_pages_back_whole_claimed_spans_only();
    assembled_buffers_come_back_whole();
    the_pool_shrinks_when_claims_stop();
    copy_present();
    unserved_runs_taken();
    counters();
    many_threads();
    return check_finish("test_blocks");
}
