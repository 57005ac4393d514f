/* The fetch scheduler: a file whose loads hang cannot take every thread from the others;
 * DEMAND runs overtake read-ahead, files take turns, a promoted run goes first; only runs from
 * the network are stored, and their block stays pinned meanwhile, unless the disk lags too far
 * behind; stopping cancels what is queued. Waits have deadlines: a scheduler that starves a run fails a check, never hangs. */
#include "blocks.h"
#include "check.h"
#include "fetcher.h"
#include "read_path_support.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define PAGE BLOCK_PAGE_SIZE
#define BS (16 * PAGE)
#define DEADLINE_S 10.0

/* ---- a gate a load can be held at --------------------------------------------------------- */

typedef struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool open;
} gate;

static void gate_init(gate *g)
{
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->open = false;
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->open = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

static void gate_pass(gate *g)
{
    pthread_mutex_lock(&g->lock);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static void gate_destroy(gate *g)
{
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
}

/* ---- fake files and what happened to them -------------------------------------------------- */

typedef struct fake_file {
    block_source source;
    gate *hold;                  /* loads wait here; NULL: they don't */
    bool network;                /* runs starting at a multiple of 8 pages come from the Hub */
    int error;                   /* what every load returns */
    atomic_int running, most_running;
} fake_file;

static void fake_file_init(fake_file *file, uint64_t id, gate *hold)
{
    memset(file, 0, sizeof *file);
    file->source = (block_source){.id = id, .size = 16 * BS, .context = file};
    file->hold = hold;
}

/* A run as the journal records it. */
typedef struct run_id {
    uint64_t file, index;
    size_t first_page;
} run_id;

#define JOURNAL_MAX 256

static struct {
    pthread_mutex_t lock;
    pthread_cond_t moved;
    run_id started[JOURNAL_MAX];
    int start_count;
    run_id stored[JOURNAL_MAX];
    int store_count;
    int wrong_stores;
    int stores_entered;          /* stores begun, held or not */
    gate *store_hold;
} journal = {.lock = PTHREAD_MUTEX_INITIALIZER, .moved = PTHREAD_COND_INITIALIZER};

static run_id id_of(const page_run *run)
{
    return (run_id){block_source_of(run->blk)->id, block_index(run->blk), run->first_page};
}

static void journal_reset(void)
{
    pthread_mutex_lock(&journal.lock);
    journal.start_count = journal.store_count = journal.wrong_stores = journal.stores_entered = 0;
    journal.store_hold = NULL;
    pthread_mutex_unlock(&journal.lock);
}

static void journal_add(run_id *list, int *count, run_id id)
{
    pthread_mutex_lock(&journal.lock);
    if (*count < JOURNAL_MAX)
        list[(*count)++] = id;
    pthread_cond_broadcast(&journal.moved);
    pthread_mutex_unlock(&journal.lock);
}

/* Waits until *count reaches n or the deadline passes; whether it did. */
static bool journal_wait(const int *count, int n)
{
    struct timespec until = deadline_after(DEADLINE_S);
    pthread_mutex_lock(&journal.lock);
    int rc = 0;
    while (*count < n && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&journal.moved, &journal.lock, &until);
    bool reached = *count >= n;
    pthread_mutex_unlock(&journal.lock);
    return reached;
}

static int fake_load(void *context, const page_run *run, bool *from_network)
{
    fake_file *file = context;
    int now = atomic_fetch_add(&file->running, 1) + 1;
    int most = atomic_load(&file->most_running);
    while (now > most && !atomic_compare_exchange_weak(&file->most_running, &most, now)) {
    }
    journal_add(journal.started, &journal.start_count, id_of(run));
    if (file->hold)
        gate_pass(file->hold);
    fill_run(run, BS);
    *from_network = file->network && run->first_page % 8 == 0;
    atomic_fetch_sub(&file->running, 1);
    return file->error;
}

/* Stores check the bytes they are given (CHECK is not thread-safe: counted, checked later). */
static void fake_store(void *context, const page_run *run)
{
    (void)context;
    pthread_mutex_lock(&journal.lock);
    gate *hold = journal.store_hold;
    journal.stores_entered++;
    pthread_cond_broadcast(&journal.moved);
    pthread_mutex_unlock(&journal.lock);
    if (hold)
        gate_pass(hold);
    bool right = bytes_right(block_run_buffer(run), block_source_of(run->blk)->id, run_file_offset(run, BS),
                             block_run_length(run));
    pthread_mutex_lock(&journal.lock);
    journal.wrong_stores += !right;
    pthread_mutex_unlock(&journal.lock);
    journal_add(journal.stored, &journal.store_count, id_of(run));
}

static bool started_is(int position, const fake_file *file, uint64_t index, size_t first_page)
{
    if (position >= journal.start_count)
        return false;
    run_id id = journal.started[position];
    return id.file == file->source.id && id.index == index && id.first_page == first_page;
}

/* ---- reads through the fetcher -------------------------------------------------------------- */

/* A reader of pages [first_page, end_page) of a block, waiting on the run it submitted. */
typedef struct pending_read {
    block *blk;
    latch_waiter latch;
    int waiting;                 /* what block_cache_wait said */
} pending_read;

static void start_read(block_cache *cache, fetcher *pool, fake_file *file, uint64_t index, size_t first_page,
                       size_t end_page, fetch_priority priority, pending_read *read)
{
    latch_init(&read->latch);
    read->blk = NULL;
    CHECK_EQ_INT(block_cache_get(cache, &file->source, index, &read->blk), 0);
    page_run run;
    size_t count = block_cache_claim(cache, read->blk, first_page * PAGE, end_page * PAGE, false, BS, &run, 1);
    CHECK_EQ_INT(count, 1);
    read->waiting = block_cache_wait(cache, read->blk, first_page * PAGE, end_page * PAGE, &read->latch.waiter);
    CHECK_EQ_INT(read->waiting, 0);
    if (count == 1)
        fetcher_submit(pool, &run, priority);
}

/* Waits for the read to be answered; its error (ETIMEDOUT when it was not in time). */
static int finish_read(block_cache *cache, pending_read *read)
{
    bool fired = latch_wait(&read->latch, DEADLINE_S);
    if (!fired && !block_cache_cancel_wait(cache, &read->latch.waiter))
        fired = latch_wait(&read->latch, 3600);   /* firing right now */
    int error = fired ? read->latch.error : ETIMEDOUT;
    CHECK(latch_fired(&read->latch) <= 1);
    if (error == 0)
        CHECK(block_bytes_right(read->blk, BS, read->latch.waiter.first_page * PAGE,
                                read->latch.waiter.end_page * PAGE));
    latch_destroy(&read->latch);
    block_cache_put(cache, read->blk);
    return error;
}

static fetcher *new_pool(block_cache *cache, int threads, int per_file_cap, bool store)
{
    fetcher_config config = {.threads = threads, .per_file_cap = per_file_cap, .load = fake_load,
                             .store = store ? fake_store : NULL, .store_threads = store ? 1 : 0};
    fetcher *pool = fetcher_new(cache, &config);
    CHECK(pool != NULL);
    return pool;
}

static fetcher_counters counters_of(fetcher *pool)
{
    fetcher_counters c;
    fetcher_get_counters(pool, &c);
    return c;
}

/* A thread counts itself out of running just after completing its run: the counters once it
 * has (or at the deadline). */
static fetcher_counters counters_once_running(fetcher *pool, uint64_t running)
{
    struct timespec until = deadline_after(DEADLINE_S), now;
    fetcher_counters c = counters_of(pool);
    for (; c.running != running; c = counters_of(pool)) {
        clock_gettime(CLOCK_REALTIME, &now);
        if (now.tv_sec > until.tv_sec || (now.tv_sec == until.tv_sec && now.tv_nsec > until.tv_nsec))
            break;
        sched_yield();
    }
    return c;
}

/* ---- the tests -------------------------------------------------------------------------------- */

static void hung_file_leaves_threads_to_others(void)
{
    journal_reset();
    block_cache *cache = block_cache_new(64 * BS, BS);
    gate hang;
    gate_init(&hang);
    fake_file a, b;
    fake_file_init(&a, 21, &hang);
    fake_file_init(&b, 22, NULL);
    fetcher *pool = new_pool(cache, 4, 2, false);
    pending_read reads_a[6], reads_b[3];
    for (uint64_t i = 0; i < 6; i++)
        start_read(cache, pool, &a, i, 0, 16, FETCH_DEMAND, &reads_a[i]);
    CHECK(journal_wait(&journal.start_count, 2));
    for (uint64_t i = 0; i < 3; i++)
        start_read(cache, pool, &b, i, 0, 16, FETCH_DEMAND, &reads_b[i]);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(finish_read(cache, &reads_b[i]), 0);   /* while a's loads still hang */
    CHECK_EQ_INT(atomic_load(&a.most_running), 2);
    fetcher_counters c = counters_once_running(pool, 2);
    CHECK_EQ_INT(c.running, 2);
    CHECK_EQ_INT(c.queued[FETCH_DEMAND], 4);
    gate_open(&hang);
    for (int i = 0; i < 6; i++)
        CHECK_EQ_INT(finish_read(cache, &reads_a[i]), 0);
    CHECK_EQ_INT(atomic_load(&a.most_running), 2);
    fetcher_free(pool);
    block_cache_free(cache);
    gate_destroy(&hang);
}

/* One thread, held on file x while the rest is queued: the order the rest then runs in. */
typedef struct held_pool {
    block_cache *cache;
    fetcher *pool;
    gate hold;
    fake_file x;
    pending_read held_read;
} held_pool;

static void held_pool_start(held_pool *h)
{
    journal_reset();
    h->cache = block_cache_new(64 * BS, BS);
    gate_init(&h->hold);
    fake_file_init(&h->x, 30, &h->hold);
    h->pool = new_pool(h->cache, 1, 8, false);
    start_read(h->cache, h->pool, &h->x, 0, 0, 16, FETCH_DEMAND, &h->held_read);
    CHECK(journal_wait(&journal.start_count, 1));
}

static void held_pool_release(held_pool *h, pending_read *reads, int count)
{
    gate_open(&h->hold);
    CHECK_EQ_INT(finish_read(h->cache, &h->held_read), 0);
    for (int i = 0; i < count; i++)
        CHECK_EQ_INT(finish_read(h->cache, &reads[i]), 0);
    CHECK_EQ_INT(journal.start_count, count + 1);
}

static void held_pool_free(held_pool *h)
{
    fetcher_free(h->pool);
    block_cache_free(h->cache);
    gate_destroy(&h->hold);
}

static void demand_before_read_ahead(void)
{
    held_pool h;
    held_pool_start(&h);
    fake_file a;
    fake_file_init(&a, 32, NULL);
    pending_read reads[8];
    for (int i = 0; i < 5; i++)
        start_read(h.cache, h.pool, &a, 0, (size_t)i, (size_t)i + 1, FETCH_AHEAD, &reads[i]);
    for (int i = 0; i < 2; i++)
        start_read(h.cache, h.pool, &a, 1, (size_t)i, (size_t)i + 1, FETCH_BACKGROUND, &reads[5 + i]);
    start_read(h.cache, h.pool, &a, 2, 0, 1, FETCH_DEMAND, &reads[7]);
    fetcher_counters c = counters_of(h.pool);
    CHECK_EQ_INT(c.queued[FETCH_DEMAND], 1);
    CHECK_EQ_INT(c.queued[FETCH_AHEAD], 5);
    CHECK_EQ_INT(c.queued[FETCH_BACKGROUND], 2);
    CHECK_EQ_INT(c.running, 1);
    held_pool_release(&h, reads, 8);
    CHECK(started_is(1, &a, 2, 0));
    for (int i = 0; i < 5; i++)
        CHECK(started_is(2 + i, &a, 0, (size_t)i));
    CHECK(started_is(7, &a, 1, 0));
    CHECK(started_is(8, &a, 1, 1));
    c = counters_once_running(h.pool, 0);
    CHECK_EQ_INT(c.queued[FETCH_DEMAND] + c.queued[FETCH_AHEAD] + c.queued[FETCH_BACKGROUND] + c.running, 0);
    CHECK_EQ_INT(c.queued_bytes[FETCH_DEMAND] + c.queued_bytes[FETCH_AHEAD] + c.queued_bytes[FETCH_BACKGROUND], 0);
    held_pool_free(&h);
}

static void files_take_turns(void)
{
    held_pool h;
    held_pool_start(&h);
    fake_file a, b;
    fake_file_init(&a, 41, NULL);
    fake_file_init(&b, 42, NULL);
    pending_read reads[6];
    for (int i = 0; i < 3; i++)
        start_read(h.cache, h.pool, &a, 0, (size_t)i, (size_t)i + 1, FETCH_AHEAD, &reads[i]);
    for (int i = 0; i < 3; i++)
        start_read(h.cache, h.pool, &b, 0, (size_t)i, (size_t)i + 1, FETCH_AHEAD, &reads[3 + i]);
    held_pool_release(&h, reads, 6);
    for (int i = 0; i < 3; i++) {
        CHECK(started_is(1 + 2 * i, &a, 0, (size_t)i));
        CHECK(started_is(2 + 2 * i, &b, 0, (size_t)i));
    }
    held_pool_free(&h);
}

static void promoted_runs_go_first(void)
{
    held_pool h;
    held_pool_start(&h);
    fake_file a;
    fake_file_init(&a, 51, NULL);
    pending_read reads[7];
    for (int i = 0; i < 5; i++)
        start_read(h.cache, h.pool, &a, 0, 2 * (size_t)i, 2 * (size_t)i + 2, FETCH_AHEAD, &reads[i]);
    for (int i = 0; i < 2; i++)
        start_read(h.cache, h.pool, &a, 1, 4 * (size_t)i, 4 * (size_t)i + 4, FETCH_BACKGROUND, &reads[5 + i]);

    fetcher_promote(h.pool, 51, 6 * PAGE + 100, 10);                 /* inside run (6,8) */
    fetcher_promote(h.pool, 51, BS + 8 * PAGE - 1, 1);               /* last byte of (4,8) of block 1 */
    fetcher_promote(h.pool, 51, 0, 2 * PAGE);                        /* (0,2), not (2,4) */
    fetcher_promote(h.pool, 51, 15 * BS, BS);                        /* nothing queued there */
    fetcher_promote(h.pool, 999, 0, BS);                             /* no such file */
    fetcher_counters c = counters_of(h.pool);
    CHECK_EQ_INT(c.promoted, 3);
    CHECK_EQ_INT(c.queued[FETCH_DEMAND], 3);
    CHECK_EQ_INT(c.queued[FETCH_AHEAD], 3);
    CHECK_EQ_INT(c.queued[FETCH_BACKGROUND], 1);
    CHECK_EQ_INT(c.queued_bytes[FETCH_DEMAND], (2 + 4 + 2) * PAGE);   /* what hint pacing reads */
    CHECK_EQ_INT(c.queued_bytes[FETCH_AHEAD], 3 * 2 * PAGE);
    CHECK_EQ_INT(c.queued_bytes[FETCH_BACKGROUND], 4 * PAGE);
    held_pool_release(&h, reads, 7);
    CHECK(started_is(1, &a, 0, 6));
    CHECK(started_is(2, &a, 1, 4));
    CHECK(started_is(3, &a, 0, 0));
    CHECK(started_is(4, &a, 0, 2));
    CHECK(started_is(5, &a, 0, 4));
    CHECK(started_is(6, &a, 0, 8));
    CHECK(started_is(7, &a, 1, 0));
    held_pool_free(&h);
}

/* Loads and completes a whole block as a reader would, outside the fetcher, and puts it back. */
static void load_block(block_cache *cache, fake_file *file, uint64_t index)
{
    block *blk = NULL;
    CHECK_EQ_INT(block_cache_get(cache, &file->source, index, &blk), 0);
    page_run run;
    CHECK_EQ_INT(block_cache_claim(cache, blk, 0, BS, false, BS, &run, 1), 1);
    fill_run(&run, BS);
    block_cache_complete(cache, &run, 0);
    block_cache_put(cache, blk);
}

/* Stores wait at store_hold until it opens. */
static void hold_stores(gate *store_hold)
{
    gate_init(store_hold);
    pthread_mutex_lock(&journal.lock);
    journal.store_hold = store_hold;
    pthread_mutex_unlock(&journal.lock);
}

/* A pool of 2 fetch threads and 1 store thread that gives up stores as fetcher.h says. */
static fetcher *new_storing_pool(block_cache *cache, int64_t store_lag_max_ns)
{
    fetcher_config config = {.threads = 2, .per_file_cap = 2, .load = fake_load, .store = fake_store,
                             .store_threads = 1, .store_lag_max_ns = store_lag_max_ns};
    fetcher *pool = fetcher_new(cache, &config);
    CHECK(pool != NULL);
    return pool;
}

/* Runs from the network are stored, nothing else; a block being stored cannot be evicted. */
static void stores_keep_their_block(void)
{
    journal_reset();
    block_cache *cache = block_cache_new(2 * BS, BS);
    gate store_hold;
    hold_stores(&store_hold);
    fake_file a, failing;
    fake_file_init(&a, 61, NULL);
    a.network = true;
    fake_file_init(&failing, 62, NULL);
    failing.network = true;
    failing.error = EIO;
    fetcher *pool = new_pool(cache, 2, 4, true);

    pending_read reads[5];
    for (int i = 0; i < 4; i++)   /* pages 0 and 8 come from the network, 4 and 12 from disk */
        start_read(cache, pool, &a, 0, 4 * (size_t)i, 4 * (size_t)i + 4, FETCH_DEMAND, &reads[i]);
    start_read(cache, pool, &failing, 0, 0, 4, FETCH_DEMAND, &reads[4]);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(finish_read(cache, &reads[i]), 0);
    CHECK_EQ_INT(finish_read(cache, &reads[4]), EIO);

    /* Block 0, the least recently used, is held only by its pending stores: block 1 goes. */
    load_block(cache, &a, 1);
    load_block(cache, &a, 2);
    uint8_t byte;
    CHECK(block_cache_copy_present(cache, 61, 0, 0, 1, &byte));
    CHECK(!block_cache_copy_present(cache, 61, 1, 0, 1, &byte));
    block_cache_counters bc;
    block_cache_get_counters(cache, &bc);
    CHECK_EQ_INT(bc.evictions, 1);

    gate_open(&store_hold);
    CHECK(journal_wait(&journal.store_count, 2));
    fetcher_free(pool);   /* writes what is still queued */
    CHECK_EQ_INT(journal.store_count, 2);
    CHECK_EQ_INT(journal.wrong_stores, 0);
    bool stored_0 = false, stored_8 = false;
    for (int i = 0; i < journal.store_count; i++) {
        run_id id = journal.stored[i];
        CHECK(id.file == 61 && id.index == 0);
        stored_0 |= id.first_page == 0;
        stored_8 |= id.first_page == 8;
    }
    CHECK(stored_0 && stored_8);

    /* Stored and unpinned, block 0 is the one to go now. */
    load_block(cache, &a, 3);
    CHECK(!block_cache_copy_present(cache, 61, 0, 0, 1, &byte));
    CHECK(block_cache_copy_present(cache, 61, 2, 0, 1, &byte));
    block_cache_free(cache);
    gate_destroy(&store_hold);
}

/* A disk far behind the network: a run completed while the oldest queued store has waited longer
 * than the lag allowed is not stored (its bytes counted), so that no reader waits for the disk;
 * once the queue moves again, runs are stored again. */
static void a_lagging_disk_is_not_waited_for(void)
{
    journal_reset();
    block_cache *cache = block_cache_new(64 * BS, BS);
    gate store_hold;
    hold_stores(&store_hold);
    fake_file a;
    fake_file_init(&a, 81, NULL);
    a.network = true;
    fetcher *pool = new_storing_pool(cache, 50 * 1000 * 1000);

    pending_read read;
    for (uint64_t index = 0; index < 2; index++) {   /* stored: the queue is young */
        start_read(cache, pool, &a, index, 0, 4, FETCH_DEMAND, &read);
        CHECK_EQ_INT(finish_read(cache, &read), 0);
    }
    struct timespec pause = {.tv_nsec = 120 * 1000 * 1000};
    nanosleep(&pause, NULL);
    start_read(cache, pool, &a, 2, 0, 4, FETCH_DEMAND, &read);   /* the disk lags: not stored */
    CHECK_EQ_INT(finish_read(cache, &read), 0);
    CHECK_EQ_INT(counters_of(pool).stores_skipped_bytes, 4 * PAGE);

    gate_open(&store_hold);
    CHECK(journal_wait(&journal.store_count, 2));
    start_read(cache, pool, &a, 3, 0, 4, FETCH_DEMAND, &read);   /* caught up: stored again */
    CHECK_EQ_INT(finish_read(cache, &read), 0);
    CHECK(journal_wait(&journal.store_count, 3));
    fetcher_free(pool);
    CHECK_EQ_INT(journal.store_count, 3);
    CHECK_EQ_INT(journal.wrong_stores, 0);
    for (int i = 0; i < journal.store_count; i++)
        CHECK(journal.stored[i].file == 81 && journal.stored[i].index != 2);
    block_cache_free(cache);
    gate_destroy(&store_hold);
}

/* Readers' claims, never refused, took the memory cache past its budget (what waits for the disk
 * cannot be evicted): the stores not yet begun are given up, and a run completed then is not kept
 * for the disk either. */
static void an_overfull_memory_cache_is_not_held_for_the_disk(void)
{
    journal_reset();
    block_cache *cache = block_cache_new(BS, BS);
    gate store_hold;
    hold_stores(&store_hold);
    fake_file a;
    fake_file_init(&a, 91, NULL);
    a.network = true;
    fetcher *pool = new_storing_pool(cache, 3600 * INT64_C(1000000000));
    pending_read read;
    start_read(cache, pool, &a, 0, 0, 4, FETCH_DEMAND, &read);    /* being stored, held */
    CHECK_EQ_INT(finish_read(cache, &read), 0);
    CHECK(journal_wait(&journal.stores_entered, 1));
    start_read(cache, pool, &a, 0, 8, 12, FETCH_DEMAND, &read);   /* queued behind it */
    CHECK_EQ_INT(finish_read(cache, &read), 0);
    CHECK_EQ_INT(counters_of(pool).stores_queued, 1);
    start_read(cache, pool, &a, 1, 0, 16, FETCH_DEMAND, &read);   /* a whole budget more */
    CHECK_EQ_INT(finish_read(cache, &read), 0);
    fetcher_counters c = counters_of(pool);
    CHECK_EQ_INT(c.stores_skipped_bytes, (4 + 16) * PAGE);
    CHECK_EQ_INT(c.stores_queued, 0);
    gate_open(&store_hold);
    fetcher_free(pool);
    CHECK(journal.store_count == 1 && journal.stored[0].file == 91 && journal.stored[0].index == 0 &&
          journal.stored[0].first_page == 0);
    /* Nothing holds block 0 any more: a claim that needs the room evicts it. */
    load_block(cache, &a, 2);
    uint8_t byte;
    CHECK(!block_cache_copy_present(cache, 91, 0, 0, 1, &byte));
    block_cache_free(cache);
    gate_destroy(&store_hold);
}

static void *free_pool_main(void *pool)
{
    fetcher_free(pool);
    return NULL;
}

/* Stopping: queued runs complete with ECANCELED at once, the running one finishes, later
 * submissions are cancelled. */
static void stopping_cancels_queued_runs(void)
{
    journal_reset();
    block_cache *cache = block_cache_new(64 * BS, BS);
    gate hold;
    gate_init(&hold);
    fake_file a;
    fake_file_init(&a, 71, &hold);
    fetcher *pool = new_pool(cache, 1, 4, false);
    pending_read running, queued[3], late;
    start_read(cache, pool, &a, 0, 0, 4, FETCH_DEMAND, &running);
    CHECK(journal_wait(&journal.start_count, 1));
    start_read(cache, pool, &a, 0, 4, 8, FETCH_DEMAND, &queued[0]);
    start_read(cache, pool, &a, 1, 0, 4, FETCH_AHEAD, &queued[1]);
    start_read(cache, pool, &a, 2, 0, 4, FETCH_BACKGROUND, &queued[2]);

    pthread_t stopper;
    CHECK_EQ_INT(pthread_create(&stopper, NULL, free_pool_main, pool), 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(finish_read(cache, &queued[i]), ECANCELED);
    start_read(cache, pool, &a, 3, 0, 4, FETCH_DEMAND, &late);   /* the pool is stopping */
    CHECK_EQ_INT(latch_fired(&late.latch), 1);
    CHECK_EQ_INT(finish_read(cache, &late), ECANCELED);
    gate_open(&hold);
    CHECK_EQ_INT(finish_read(cache, &running), 0);
    pthread_join(stopper, NULL);
    CHECK_EQ_INT(journal.start_count, 1);
    block_cache_free(cache);
    gate_destroy(&hold);
}

int main(void)
{
    hung_file_leaves_threads_to_others();
    demand_before_read_ahead();
    files_take_turns();
    promoted_runs_go_first();
    stores_keep_their_block();
    a_lagging_disk_is_not_waited_for();
    an_overfull_memory_cache_is_not_held_for_the_disk();
    stopping_cancels_queued_runs();
    return check_finish("test_fetcher");
}
