/* blocks.c — in-memory blocks: a hash table, an LRU list, single-flight loads, the budget. */
#include "blocks.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>

#define BUCKET_COUNT 4096
/* Buffers of evicted full blocks kept for the next block: a fresh mapping costs a page fault
 * and a zeroed page per 4 KiB, a fifth of the CPU of a cold read. They count as memory used. */
#define MAX_SPARE_BUFFERS 8

/* PARTIAL: some pieces present (present_pieces), others maybe being fetched (inflight_pieces);
 * whole-block loads only ever start on absent blocks, so they never race a piece fetch. */
typedef enum block_state { BLOCK_LOADING, BLOCK_READY, BLOCK_FAILED, BLOCK_PARTIAL } block_state;

struct block {
    block_source source;
    uint64_t index;
    size_t length;
    uint8_t *data;
    block_state state;
    int load_error;
    int pins;
    uint64_t present_pieces;     /* while PARTIAL: bit i = piece i is loaded */
    uint64_t inflight_pieces;    /* while PARTIAL: bit i = a thread is fetching piece i */
    bool unread;                 /* loaded by read-ahead and not read yet */
    bool consumed;               /* its reader has gone past it: reuse its buffer first */
    bool in_table;
    pthread_cond_t loaded;
    block *hash_next;
    block *lru_prev, *lru_next;
};

struct block_cache {
    pthread_mutex_t lock;
    pthread_cond_t budget_freed;
    int budget_waiters;
    uint64_t budget;
    uint32_t block_size;
    block_load_fn load;
    block_load_range_fn load_range;
    size_t piece_size;
    block_store_hook store_hook;
    void *store_hook_context;
    block *buckets[BUCKET_COUNT];
    block *lru_oldest, *lru_newest;
    uint8_t *spares[MAX_SPARE_BUFFERS];
    int spare_count;
    block_cache_counters counters;
};

static size_t bucket_of(uint64_t source_id, uint64_t index)
{
    uint64_t h = source_id * 0x9E3779B97F4A7C15ULL ^ (index + 0x632BE59BD9B4E019ULL) * 0xBF58476D1CE4E5B9ULL;
    return (size_t)((h ^ (h >> 29)) % BUCKET_COUNT);
}

block_cache *block_cache_new(uint64_t memory_budget, uint32_t block_size, block_load_fn load)
{
    block_cache *cache = calloc(1, sizeof *cache);
    if (!cache)
        return NULL;
    pthread_mutex_init(&cache->lock, NULL);
    pthread_cond_init(&cache->budget_freed, NULL);
    cache->budget = memory_budget;
    cache->block_size = block_size;
    cache->load = load;
    cache->piece_size = (block_size + BLOCK_MAX_PIECES - 1) / BLOCK_MAX_PIECES;
    if (cache->piece_size == 0)
        cache->piece_size = 1;
    cache->counters.memory_budget = memory_budget;
    return cache;
}

uint32_t block_cache_block_size(const block_cache *cache) { return cache->block_size; }
void block_cache_set_store_hook(block_cache *cache, block_store_hook hook, void *hook_context)
{
    cache->store_hook = hook;
    cache->store_hook_context = hook_context;
}

void block_cache_set_range_loader(block_cache *cache, block_load_range_fn load_range)
{
    cache->load_range = load_range;
}

const uint8_t *block_data(const block *blk) { return blk->data; }
uint64_t block_index(const block *blk) { return blk->index; }
const block_source *block_source_of(const block *blk) { return &blk->source; }
size_t block_length(const block *blk) { return blk->length; }

static block *find_block(block_cache *cache, uint64_t source_id, uint64_t index)
{
    for (block *b = cache->buckets[bucket_of(source_id, index)]; b; b = b->hash_next)
        if (b->source.id == source_id && b->index == index)
            return b;
    return NULL;
}

static void unlink_from_table(block_cache *cache, block *blk)
{
    if (!blk->in_table)
        return;
    block **link = &cache->buckets[bucket_of(blk->source.id, blk->index)];
    while (*link != blk)
        link = &(*link)->hash_next;
    *link = blk->hash_next;
    blk->in_table = false;
}

static void lru_unlink(block_cache *cache, block *blk)
{
    if (blk->lru_prev) blk->lru_prev->lru_next = blk->lru_next;
    else cache->lru_oldest = blk->lru_next;
    if (blk->lru_next) blk->lru_next->lru_prev = blk->lru_prev;
    else cache->lru_newest = blk->lru_prev;
    blk->lru_prev = blk->lru_next = NULL;
}

static void lru_append(block_cache *cache, block *blk)
{
    blk->lru_prev = cache->lru_newest;
    blk->lru_next = NULL;
    if (cache->lru_newest) cache->lru_newest->lru_next = blk;
    else cache->lru_oldest = blk;
    cache->lru_newest = blk;
}

/* Reserves a buffer for a block of length bytes: a spare one when it has the block size, else
 * NULL with the memory counted, for map_buffer to map outside the lock (mapping and populating
 * 8 MiB takes milliseconds: under the lock it stalled every reader of every block). The lock is
 * held; memory_used already counts spares. */
static void recycle_consumed_block(block_cache *cache);

static uint8_t *take_buffer(block_cache *cache, size_t length)
{
    /* Only with a persistent cache: a consumed block is then cheap to get back (from disk) if
     * the kernel drops its pages; without one, memory is the only copy short of the network. */
    if (length == cache->block_size && cache->spare_count == 0 && cache->store_hook)
        recycle_consumed_block(cache);
    if (length == cache->block_size && cache->spare_count > 0)
        return cache->spares[--cache->spare_count];
    cache->counters.memory_used += length;
    return NULL;
}

/* Maps the buffer of a block take_buffer left unmapped; called without the lock by the thread
 * that loads the block. Returns 0 or ENOMEM. */
static int map_buffer(block *blk)
{
    if (blk->data)
        return 0;
    void *data = mmap(NULL, blk->length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (data == MAP_FAILED)
        return ENOMEM;
    /* Huge pages where the kernel allows them (best effort): fewer faults, memory-cgroup
     * charges and page pins in the kernel's FUSE copy. Zeroing them is costly, which buffer
     * reuse (spares, consumed blocks) keeps rare. Populated here, on the loading thread, and
     * not by the event loop's first write. */
    (void)madvise(data, blk->length, MADV_HUGEPAGE);
    (void)madvise(data, blk->length, MADV_POPULATE_WRITE);
    blk->data = data;
    return 0;
}

static void give_back_buffer(block_cache *cache, uint8_t *data, size_t length)
{
    if (!data) {   /* reserved, never mapped */
        cache->counters.memory_used -= length;
        return;
    }
    if (length == cache->block_size && cache->spare_count < MAX_SPARE_BUFFERS) {
        cache->spares[cache->spare_count++] = data;
        return;
    }
    munmap(data, length);
    cache->counters.memory_used -= length;
}

static bool drop_spare(block_cache *cache)
{
    if (cache->spare_count == 0)
        return false;
    munmap(cache->spares[--cache->spare_count], cache->block_size);
    cache->counters.memory_used -= cache->block_size;
    return true;
}

/* Frees a block no one pins; the lock is held. */
static void destroy_block(block_cache *cache, block *blk)
{
    unlink_from_table(cache, blk);
    lru_unlink(cache, blk);
    give_back_buffer(cache, blk->data, blk->length);
    pthread_cond_destroy(&blk->loaded);
    free(blk);
    if (cache->budget_waiters)
        pthread_cond_broadcast(&cache->budget_freed);
}

/* Evicts the least recently used unpinned, loaded block (sparing unread read-ahead blocks when
 * spare_unread is set). */
static bool evict_one(block_cache *cache, bool spare_unread)
{
    for (block *b = cache->lru_oldest; b; b = b->lru_next) {
        bool loaded = b->state == BLOCK_READY || b->state == BLOCK_PARTIAL;
        if (b->pins == 0 && loaded && !(spare_unread && b->unread)) {
            destroy_block(cache, b);
            cache->counters.evictions++;
            return true;
        }
    }
    return false;
}

/* Frees the oldest consumed block no one pins, which leaves its buffer as a spare. */
static void recycle_consumed_block(block_cache *cache)
{
    for (block *b = cache->lru_oldest; b; b = b->lru_next) {
        if (b->consumed && b->pins == 0 && b->state == BLOCK_READY && b->length == cache->block_size) {
            destroy_block(cache, b);
            cache->counters.evictions++;
            return;
        }
    }
}

/* Whether a block of length bytes can be allocated now: a spare, or room in the budget. */
static bool fits(const block_cache *cache, size_t length)
{
    if (length == cache->block_size && cache->spare_count > 0)
        return true;
    return cache->counters.memory_used + length <= cache->budget;
}

/* Makes room for a reader's block. Returns true when room was made without dropping the lock;
 * false when it waited, so the caller must look the block up again. A budget smaller than one
 * block is exceeded rather than deadlocking: with nothing allocated there is nothing to wait for. */
static bool reserve_for_reader(block_cache *cache, size_t length)
{
    while (!fits(cache, length)) {
        if (drop_spare(cache) || evict_one(cache, false))
            continue;
        if (cache->counters.memory_used == 0)
            return true;
        cache->budget_waiters++;
        pthread_cond_wait(&cache->budget_freed, &cache->lock);
        cache->budget_waiters--;
        return false;
    }
    return true;
}

static size_t length_of_block(const block_cache *cache, const block_source *source, uint64_t index)
{
    uint64_t start = index * cache->block_size;
    if (start >= source->size)
        return 0;
    uint64_t remaining = source->size - start;
    return remaining < cache->block_size ? (size_t)remaining : cache->block_size;
}

/* Inserts a new loading block pinned once; NULL when out of memory. The lock is held. */
static block *insert_loading_block(block_cache *cache, const block_source *source, uint64_t index,
                                   size_t length)
{
    block *blk = calloc(1, sizeof *blk);
    if (!blk)
        return NULL;
    blk->data = take_buffer(cache, length);
    blk->source = *source;
    blk->index = index;
    blk->length = length;
    blk->state = BLOCK_LOADING;
    blk->pins = 1;
    pthread_cond_init(&blk->loaded, NULL);
    size_t bucket = bucket_of(source->id, index);
    blk->hash_next = cache->buckets[bucket];
    cache->buckets[bucket] = blk;
    blk->in_table = true;
    lru_append(cache, blk);
    cache->counters.loads_in_flight++;
    return blk;
}

/* Records the outcome of a load and wakes the waiters; the lock is held. Returns whether the
 * store hook must be called (it then holds a pin of its own). */
static bool finish_load(block_cache *cache, block *blk, int error, bool fetched)
{
    cache->counters.loads_in_flight--;
    if (error) {
        blk->state = BLOCK_FAILED;
        blk->load_error = error;
        unlink_from_table(cache, blk);    /* a later read retries with a fresh block */
        cache->counters.load_failures++;
    } else {
        blk->state = BLOCK_READY;
    }
    pthread_cond_broadcast(&blk->loaded);
    bool store = !error && fetched && cache->store_hook;
    if (store)
        blk->pins++;
    return store;
}

static void run_store_hook(block_cache *cache, block *blk, bool store)
{
    if (store)
        cache->store_hook(cache->store_hook_context, blk);
}

static void unpin_locked(block_cache *cache, block *blk)
{
    if (--blk->pins > 0)
        return;
    if (blk->state == BLOCK_FAILED)
        destroy_block(cache, blk);
    else if (cache->budget_waiters)
        pthread_cond_broadcast(&cache->budget_freed);
}

static int wait_until_loaded(block_cache *cache, block *blk)
{
    while (blk->state == BLOCK_LOADING)
        pthread_cond_wait(&blk->loaded, &cache->lock);
    return blk->state == BLOCK_FAILED ? blk->load_error : 0;
}

/* Bits of the pieces covering [from, to) of a block; from < to. */
static uint64_t piece_mask(const block_cache *cache, size_t from, size_t to)
{
    size_t first = from / cache->piece_size, last = (to - 1) / cache->piece_size;
    uint64_t count = last - first + 1;
    uint64_t ones = count >= 64 ? ~0ULL : (1ULL << count) - 1;
    return ones << first;
}

/* Fetches the claimed pieces (runs of adjacent pieces as one range each); no lock held. */
static int load_claimed_pieces(block_cache *cache, block *blk, uint64_t claimed)
{
    for (size_t piece = 0; piece < BLOCK_MAX_PIECES; piece++) {
        if (!(claimed >> piece & 1))
            continue;
        size_t run_end = piece;
        while (run_end + 1 < BLOCK_MAX_PIECES && (claimed >> (run_end + 1) & 1))
            run_end++;
        size_t from = piece * cache->piece_size;
        size_t to = (run_end + 1) * cache->piece_size;
        if (to > blk->length)
            to = blk->length;
        int error = cache->load_range(blk->source.context, blk->index, blk->data, blk->length, from, to, NULL);
        if (error)
            return error;
        piece = run_end;
    }
    return 0;
}

/* Makes bytes [from, to) of a pinned partial block present: claims the missing pieces no one
 * fetches, fetches them without the lock, and waits for those others fetch. A failed fetch
 * leaves its pieces missing (a later read retries). The lock is held. */
static int fill_pieces(block_cache *cache, block *blk, size_t from, size_t to)
{
    uint64_t needed = piece_mask(cache, from, to);
    while ((blk->present_pieces & needed) != needed) {
        uint64_t claimed = needed & ~blk->present_pieces & ~blk->inflight_pieces;
        if (!claimed) {
            pthread_cond_wait(&blk->loaded, &cache->lock);
            continue;
        }
        blk->inflight_pieces |= claimed;
        pthread_mutex_unlock(&cache->lock);
        int error = load_claimed_pieces(cache, blk, claimed);
        pthread_mutex_lock(&cache->lock);
        blk->inflight_pieces &= ~claimed;
        bool store = false;
        if (error) {
            cache->counters.load_failures++;
        } else {
            blk->present_pieces |= claimed;
            if (blk->present_pieces == piece_mask(cache, 0, blk->length)) {
                blk->state = BLOCK_READY;
                store = cache->store_hook != NULL;
                if (store)
                    blk->pins++;
            }
        }
        pthread_cond_broadcast(&blk->loaded);
        if (error)
            return error;
        if (store) {
            pthread_mutex_unlock(&cache->lock);
            run_store_hook(cache, blk, true);
            pthread_mutex_lock(&cache->lock);
        }
    }
    return 0;
}

/* Loads a block this thread just inserted (LOADING, so it owns the buffer): the whole block, or
 * with partial only the pieces covering [from, to) unless the persistent cache has it all.
 * Called without the lock; returns with it held. */
static int load_new_block(block_cache *cache, block *blk, size_t from, size_t to, bool partial)
{
    bool fetched = false, whole = false;
    from -= from % cache->piece_size;   /* whole pieces: they are the unit of presence */
    to = (to + cache->piece_size - 1) / cache->piece_size * cache->piece_size;
    if (to > blk->length)
        to = blk->length;
    int error = map_buffer(blk);
    if (!error && partial)
        error = cache->load_range(blk->source.context, blk->index, blk->data, blk->length, from, to, &whole);
    else if (!error)
        error = cache->load(blk->source.context, blk->index, blk->data, blk->length, &fetched);
    pthread_mutex_lock(&cache->lock);
    if (!error && partial && !whole) {
        cache->counters.loads_in_flight--;
        blk->state = BLOCK_PARTIAL;
        blk->present_pieces = piece_mask(cache, from, to);
        if (blk->present_pieces == piece_mask(cache, 0, blk->length)) {
            blk->state = BLOCK_READY;
            fetched = true;
            cache->counters.loads_in_flight++;   /* finish_load below counts it down again */
        } else {
            pthread_cond_broadcast(&blk->loaded);
            return 0;
        }
    }
    bool store = finish_load(cache, blk, error, fetched);
    if (store) {
        pthread_mutex_unlock(&cache->lock);
        run_store_hook(cache, blk, true);
        pthread_mutex_lock(&cache->lock);
    }
    return error;
}

int block_cache_read_range(block_cache *cache, const block_source *source, uint64_t index, size_t from,
                           size_t to, bool partial, block **out)
{
    *out = NULL;
    size_t length = length_of_block(cache, source, index);
    if (length == 0 || from >= to || to > length)
        return EINVAL;
    partial = partial && cache->load_range;
    pthread_mutex_lock(&cache->lock);
    block *blk;
    for (;;) {
        blk = find_block(cache, source->id, index);
        if (blk || reserve_for_reader(cache, length))
            break;
    }
    int error = 0;
    if (blk) {
        cache->counters.hits++;
        blk->pins++;
        blk->consumed = false;
        lru_unlink(cache, blk);
        lru_append(cache, blk);
        error = wait_until_loaded(cache, blk);
        /* A reader that is not a young slice stream completes the block (as a whole load would). */
        if (!error && blk->state == BLOCK_PARTIAL)
            error = partial ? fill_pieces(cache, blk, from, to) : fill_pieces(cache, blk, 0, length);
    } else {
        cache->counters.misses++;
        blk = insert_loading_block(cache, source, index, length);
        if (!blk) {
            pthread_mutex_unlock(&cache->lock);
            return ENOMEM;
        }
        pthread_mutex_unlock(&cache->lock);
        error = load_new_block(cache, blk, from, to, partial);
    }
    if (error) {
        unpin_locked(cache, blk);
        blk = NULL;
    } else {
        blk->unread = false;
    }
    pthread_mutex_unlock(&cache->lock);
    *out = blk;
    return error;
}

int block_cache_read(block_cache *cache, const block_source *source, uint64_t index, block **out)
{
    size_t length = length_of_block(cache, source, index);
    if (length == 0) {
        *out = NULL;
        return EINVAL;
    }
    return block_cache_read_range(cache, source, index, 0, length, false, out);
}

void block_cache_release(block_cache *cache, block *blk)
{
    pthread_mutex_lock(&cache->lock);
    unpin_locked(cache, blk);
    pthread_mutex_unlock(&cache->lock);
}

block *block_cache_prefetch(block_cache *cache, const block_source *source, uint64_t index)
{
    size_t length = length_of_block(cache, source, index);
    if (length == 0)
        return NULL;
    block *blk = NULL;
    pthread_mutex_lock(&cache->lock);
    if (!find_block(cache, source->id, index)) {
        while (!fits(cache, length) && (drop_spare(cache) || evict_one(cache, true))) {
        }
        if (fits(cache, length)) {
            blk = insert_loading_block(cache, source, index, length);
            if (blk) {
                blk->unread = true;
                cache->counters.prefetches++;
            }
        } else {
            cache->counters.prefetch_skipped++;
        }
    }
    pthread_mutex_unlock(&cache->lock);
    return blk;
}

void block_cache_load(block_cache *cache, block *blk)
{
    bool fetched = false;
    int error = map_buffer(blk);
    if (!error)
        error = cache->load(blk->source.context, blk->index, blk->data, blk->length, &fetched);
    pthread_mutex_lock(&cache->lock);
    bool store = finish_load(cache, blk, error, fetched);
    unpin_locked(cache, blk);
    pthread_mutex_unlock(&cache->lock);
    run_store_hook(cache, blk, store);
}

void block_cache_abandon(block_cache *cache, block *blk)
{
    pthread_mutex_lock(&cache->lock);
    finish_load(cache, blk, ECANCELED, false);
    unpin_locked(cache, blk);
    pthread_mutex_unlock(&cache->lock);
}

void block_cache_mark_consumed(block_cache *cache, uint64_t source_id, uint64_t index)
{
    pthread_mutex_lock(&cache->lock);
    block *blk = find_block(cache, source_id, index);
    if (blk && blk->state == BLOCK_READY)
        blk->consumed = true;
    pthread_mutex_unlock(&cache->lock);
}

bool block_cache_contains(block_cache *cache, uint64_t source_id, uint64_t index)
{
    pthread_mutex_lock(&cache->lock);
    block *blk = find_block(cache, source_id, index);
    bool ready = blk && blk->state == BLOCK_READY;
    pthread_mutex_unlock(&cache->lock);
    return ready;
}

void block_cache_get_counters(block_cache *cache, block_cache_counters *out)
{
    pthread_mutex_lock(&cache->lock);
    *out = cache->counters;
    pthread_mutex_unlock(&cache->lock);
}

void block_cache_free(block_cache *cache)
{
    if (!cache)
        return;
    while (cache->lru_oldest)
        destroy_block(cache, cache->lru_oldest);
    while (drop_spare(cache)) {
    }
    pthread_cond_destroy(&cache->budget_freed);
    pthread_mutex_destroy(&cache->lock);
    free(cache);
}
