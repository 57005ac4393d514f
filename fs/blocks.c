/* blocks.c — in-memory blocks: a hash table, an LRU list, page bitmaps, claims, waiters and the
 * memory budget. */
#include "blocks.h"

#include "clock.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define BUCKET_COUNT 4096
/* Buffers of evicted complete blocks kept for new blocks: a fresh mapping costs a page fault
 * and a zeroed page per 4 KiB, a fifth of the CPU of a cold read. They count as memory used
 * and go first when room is needed. A reader's window opens blocks in bursts (a tensor's rest
 * at once) while served blocks come free one by one: with two kept, 214 of a cold 3 GB read's
 * 375 blocks were mapped afresh; with eight, 66. */
#define MAX_SPARE_BUFFERS 8

struct block {
    block_source source;
    uint64_t index;
    size_t length;
    size_t page_count;
    uint8_t *data;               /* mapped at the first claim */
    bool whole_charge;           /* a spare buffer: charged whole, already resident */
    uint64_t charged;            /* bytes of the budget this block holds */
    uint64_t *present, *inflight, *served;   /* one bit per page each */
    size_t present_count, inflight_count, served_count;
    bool fully_served;           /* every page went to the kernel: its page cache holds them */
    int pins;
    int last_failure;            /* errno of the latest failed load, for a waiter that comes after it */
    block_waiter *waiters;
    block *hash_next;
    block *lru_prev, *lru_next;
};

struct block_cache {
    pthread_mutex_t lock;
    uint64_t budget;
    uint32_t block_size;
    block *buckets[BUCKET_COUNT];
    block *lru_oldest, *lru_newest;
    uint8_t *spares[MAX_SPARE_BUFFERS];
    int spare_count;
    block_cache_counters counters;
};

/* ---- page bitmaps ---------------------------------------------------------------------- */

static bool bit_test(const uint64_t *bits, size_t i) { return bits[i / 64] >> (i % 64) & 1; }
static void bit_set(uint64_t *bits, size_t i) { bits[i / 64] |= 1ULL << (i % 64); }
static void bit_clear(uint64_t *bits, size_t i) { bits[i / 64] &= ~(1ULL << (i % 64)); }

static bool all_set(const uint64_t *bits, size_t first, size_t end)
{
    for (size_t i = first; i < end; i++)
        if (!bit_test(bits, i))
            return false;
    return true;
}

static size_t count_set(const uint64_t *bits, size_t first, size_t end)
{
    size_t count = 0;
    for (size_t i = first; i < end; i++)
        count += bit_test(bits, i);
    return count;
}

static size_t first_page_of(size_t offset) { return offset / BLOCK_PAGE_SIZE; }
static size_t end_page_of(size_t offset) { return (offset + BLOCK_PAGE_SIZE - 1) / BLOCK_PAGE_SIZE; }

static size_t page_bytes(const block *blk, size_t first, size_t end)
{
    size_t to = end * BLOCK_PAGE_SIZE < blk->length ? end * BLOCK_PAGE_SIZE : blk->length;
    return to - first * BLOCK_PAGE_SIZE;
}

/* ---- table, LRU, buffers ----------------------------------------------------------------- */

static size_t bucket_of(uint64_t source_id, uint64_t index)
{
    uint64_t h = source_id * 0x9E3779B97F4A7C15ULL ^ (index + 0x632BE59BD9B4E019ULL) * 0xBF58476D1CE4E5B9ULL;
    return (size_t)((h ^ (h >> 29)) % BUCKET_COUNT);
}

static block *find_block(block_cache *cache, uint64_t source_id, uint64_t index)
{
    for (block *b = cache->buckets[bucket_of(source_id, index)]; b; b = b->hash_next)
        if (b->source.id == source_id && b->index == index)
            return b;
    return NULL;
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

static bool drop_spare(block_cache *cache)
{
    if (cache->spare_count == 0)
        return false;
    munmap(cache->spares[--cache->spare_count], cache->block_size);
    cache->counters.memory_used -= cache->block_size;
    return true;
}

/* Frees a block no one pins (so none of its pages is claimed); keeps a complete buffer as a
 * spare. The lock is held. */
static void destroy_block(block_cache *cache, block *blk)
{
    block **link = &cache->buckets[bucket_of(blk->source.id, blk->index)];
    while (*link != blk)
        link = &(*link)->hash_next;
    *link = blk->hash_next;
    lru_unlink(cache, blk);
    cache->counters.wasted_bytes += (uint64_t)(blk->present_count - blk->served_count) * BLOCK_PAGE_SIZE;
    cache->counters.unread_bytes -= (uint64_t)(blk->present_count - blk->served_count) * BLOCK_PAGE_SIZE;
    cache->counters.memory_used -= blk->charged;
    bool reusable = blk->data && blk->length == cache->block_size && blk->present_count == blk->page_count;
    if (reusable && cache->spare_count < MAX_SPARE_BUFFERS) {
        cache->spares[cache->spare_count++] = blk->data;
        cache->counters.memory_used += cache->block_size;
    } else if (blk->data) {
        munmap(blk->data, blk->length);
    }
    cache->counters.blocks--;
    free(blk->present);
    free(blk);
}

/* Whether a block may go without losing bytes nobody has read: everything it holds was served
 * (the kernel's page cache has it) or it holds nothing. */
static bool holds_nothing_unread(const block *blk)
{
    return blk->served_count == blk->present_count;
}

/* Evicts one unpinned block: first one holding nothing unread, then (unless keep_unread) the
 * least recently used. The lock is held. */
static bool evict_one(block_cache *cache, bool keep_unread)
{
    block *victim = NULL;
    for (block *b = cache->lru_oldest; b && !victim; b = b->lru_next)
        if (b->pins == 0 && holds_nothing_unread(b))
            victim = b;
    for (block *b = cache->lru_oldest; b && !victim && !keep_unread; b = b->lru_next)
        if (b->pins == 0)
            victim = b;
    if (!victim)
        return false;
    destroy_block(cache, victim);
    cache->counters.evictions++;
    return true;
}

/* Hands a spare buffer (resident already, charged whole) to a block about to claim its first
 * pages. A stream claims a block a read's worth at a time, so its first claim is small: were a
 * spare kept for claims of half a block, every streamed block would be mapped afresh and its
 * pages faulted in and zeroed (a fifth of a streaming daemon's CPU). The lock is held. */
static bool take_spare(block_cache *cache, block *blk)
{
    if (blk->data || blk->length != cache->block_size || cache->spare_count == 0)
        return false;
    blk->data = cache->spares[--cache->spare_count];
    blk->whole_charge = true;
    blk->charged = blk->length;   /* the spare's charge, now the block's */
    return true;
}

/* Makes room for the bytes blk wants to claim. Evicting a complete block frees no memory by
 * itself (its buffer becomes a spare): the claiming block takes that buffer when it can, else
 * the spare is dropped. Returns false only when within_budget and it cannot fit. */
static bool make_room(block_cache *cache, block *blk, uint64_t wanted, bool within_budget)
{
    for (;;) {
        uint64_t charge = blk->whole_charge ? 0 : wanted;
        if (cache->counters.memory_used + charge <= cache->budget)
            return true;
        if (take_spare(cache, blk) || drop_spare(cache) || evict_one(cache, within_budget))
            continue;
        return !within_budget || blk->whole_charge;
    }
}

/* Gives the block its buffer: a spare when one fits, else a lazy mapping. */
static int map_buffer(block_cache *cache, block *blk)
{
    if (blk->data || take_spare(cache, blk))
        return 0;
    void *data = mmap(NULL, blk->length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                      -1, 0);
    if (data == MAP_FAILED)
        return ENOMEM;
    blk->data = data;
    return 0;
}

static size_t length_of_block(const block_cache *cache, const block_source *source, uint64_t index)
{
    if (index > UINT64_MAX / cache->block_size)
        return 0;
    uint64_t start = index * cache->block_size;
    if (start >= source->size)
        return 0;
    uint64_t remaining = source->size - start;
    return remaining < cache->block_size ? (size_t)remaining : cache->block_size;
}

/* ---- public ---------------------------------------------------------------------------- */

block_cache *block_cache_new(uint64_t memory_budget, uint32_t block_size)
{
    if (block_size < BLOCK_PAGE_SIZE || block_size % BLOCK_PAGE_SIZE)
        return NULL;
    block_cache *cache = calloc(1, sizeof *cache);
    if (!cache)
        return NULL;
    pthread_mutex_init(&cache->lock, NULL);
    cache->budget = memory_budget;
    cache->block_size = block_size;
    cache->counters.memory_budget = memory_budget;
    return cache;
}

void block_cache_free(block_cache *cache)
{
    if (!cache)
        return;
    while (cache->lru_oldest)
        destroy_block(cache, cache->lru_oldest);
    while (drop_spare(cache)) {
    }
    pthread_mutex_destroy(&cache->lock);
    free(cache);
}

uint32_t block_cache_block_size(const block_cache *cache) { return cache->block_size; }
const uint8_t *block_data(const block *blk) { return blk->data; }
size_t block_length(const block *blk) { return blk->length; }
uint64_t block_index(const block *blk) { return blk->index; }
const block_source *block_source_of(const block *blk) { return &blk->source; }

static block *new_block(const block_source *source, uint64_t index, size_t length)
{
    block *blk = calloc(1, sizeof *blk);
    size_t pages = (length + BLOCK_PAGE_SIZE - 1) / BLOCK_PAGE_SIZE;
    size_t words = (pages + 63) / 64;
    uint64_t *bits = blk ? calloc(3 * words, sizeof *bits) : NULL;   /* one allocation, 3 maps */
    if (!bits) {
        free(blk);
        return NULL;
    }
    blk->source = *source;
    blk->index = index;
    blk->length = length;
    blk->page_count = pages;
    blk->present = bits;
    blk->inflight = bits + words;
    blk->served = bits + 2 * words;
    return blk;
}

int block_cache_get(block_cache *cache, const block_source *source, uint64_t index, block **out)
{
    *out = NULL;
    size_t length = length_of_block(cache, source, index);
    if (length == 0)
        return EINVAL;
    pthread_mutex_lock(&cache->lock);
    block *blk = find_block(cache, source->id, index);
    if (!blk && (blk = new_block(source, index, length)) != NULL) {
        size_t bucket = bucket_of(source->id, index);
        blk->hash_next = cache->buckets[bucket];
        cache->buckets[bucket] = blk;
        cache->counters.blocks++;
    } else if (blk) {
        lru_unlink(cache, blk);
    }
    if (blk) {
        lru_append(cache, blk);
        blk->pins++;
    }
    pthread_mutex_unlock(&cache->lock);
    *out = blk;
    return blk ? 0 : ENOMEM;
}

void block_cache_pin(block_cache *cache, block *blk)
{
    pthread_mutex_lock(&cache->lock);
    blk->pins++;
    pthread_mutex_unlock(&cache->lock);
}

/* Served pages of an unpinned block go back to the system: the kernel's page cache has them
 * (a reader that comes back finds them there, or refetches a page the kernel dropped). Worth a
 * syscall only from a few pages on. The lock is held. */
#define DROP_SERVED_MIN_PAGES 16

/* A whole block whose every page is loaded or on its way is being streamed through: once
 * fully served it becomes a spare buffer and the next block reuses its pages, where dropped
 * pages would be faulted in and zeroed again (a fifth of a streaming daemon's CPU, measured). */
static bool streamed_whole(const block_cache *cache, const block *blk)
{
    return blk->length == cache->block_size && blk->present_count + blk->inflight_count == blk->page_count;
}

/* A spare buffer came resident whole: the pages its block never claimed go back with the
 * per-page charge, or they would stay in memory uncounted. The lock is held. */
static void release_unclaimed_pages(block *blk)
{
    for (size_t i = 0; i < blk->page_count; i++) {
        if (bit_test(blk->present, i) || bit_test(blk->inflight, i))
            continue;
        size_t end = i + 1;
        while (end < blk->page_count && !bit_test(blk->present, end) && !bit_test(blk->inflight, end))
            end++;
        (void)madvise(blk->data + i * BLOCK_PAGE_SIZE, page_bytes(blk, i, end), MADV_DONTNEED);
        i = end;
    }
}

static void drop_served_pages(block_cache *cache, block *blk)
{
    if (blk->served_count < DROP_SERVED_MIN_PAGES || blk->fully_served || streamed_whole(cache, blk))
        return;
    if (blk->whole_charge) {   /* from here on charged per page, like a fresh mapping */
        uint64_t kept = (uint64_t)(blk->present_count + blk->inflight_count) * BLOCK_PAGE_SIZE;
        kept = kept < blk->length ? kept : blk->length;
        cache->counters.memory_used -= blk->charged - kept;
        blk->charged = kept;
        blk->whole_charge = false;
        release_unclaimed_pages(blk);
    }
    for (size_t i = 0; i < blk->page_count; i++) {
        if (!bit_test(blk->served, i))
            continue;
        size_t end = i + 1;
        while (end < blk->page_count && bit_test(blk->served, end))
            end++;
        uint64_t bytes = page_bytes(blk, i, end);
        (void)madvise(blk->data + i * BLOCK_PAGE_SIZE, bytes, MADV_DONTNEED);
        for (size_t k = i; k < end; k++) {
            bit_clear(blk->served, k);
            bit_clear(blk->present, k);
        }
        blk->served_count -= end - i;
        blk->present_count -= end - i;
        blk->charged -= bytes;
        cache->counters.memory_used -= bytes;
        cache->counters.served_dropped += bytes;
        i = end;
    }
}

void block_cache_put(block_cache *cache, block *blk)
{
    pthread_mutex_lock(&cache->lock);
    blk->pins--;
    if (blk->pins == 0)
        drop_served_pages(cache, blk);
    /* Nothing present, or everything already in the kernel's page cache (the mount keeps its
     * pages: memory holds what is in flight or ahead of readers, not a second copy). */
    if (blk->pins == 0 && blk->fully_served) {
        destroy_block(cache, blk);
        cache->counters.released++;
    } else if (blk->pins == 0 && blk->present_count == 0) {
        destroy_block(cache, blk);
    }
    pthread_mutex_unlock(&cache->lock);
}

/* Claims pages [first, end), all free, as one run. The lock is held. */
static void claim_pages(block_cache *cache, block *blk, size_t first, size_t end, page_run *run)
{
    for (size_t i = first; i < end; i++)
        bit_set(blk->inflight, i);
    blk->inflight_count += end - first;
    cache->counters.pages_in_flight += end - first;
    if (!blk->whole_charge) {
        uint64_t bytes = page_bytes(blk, first, end);
        blk->charged += bytes;
        cache->counters.memory_used += bytes;
    }
    blk->pins++;
    *run = (page_run){.blk = blk, .first_page = first, .end_page = end, .claimed_ns = monotonic_ns()};
}

static uint64_t missing_bytes(const block *blk, size_t first, size_t end)
{
    size_t count = 0;
    for (size_t i = first; i < end; i++)
        count += !bit_test(blk->present, i) && !bit_test(blk->inflight, i);
    return (uint64_t)count * BLOCK_PAGE_SIZE;
}

size_t block_cache_claim(block_cache *cache, block *blk, size_t from, size_t to, bool within_budget,
                         size_t max_run_bytes, page_run *runs, size_t max_runs)
{
    size_t max_pages = max_run_bytes / BLOCK_PAGE_SIZE ? max_run_bytes / BLOCK_PAGE_SIZE : 1;
    if (to > blk->length)
        to = blk->length;
    if (from >= to || max_runs == 0)
        return 0;
    size_t first = first_page_of(from), end = end_page_of(to);
    pthread_mutex_lock(&cache->lock);
    size_t count = 0;
    uint64_t wanted = missing_bytes(blk, first, end);
    bool room = wanted == 0 || blk->whole_charge || make_room(cache, blk, wanted, within_budget);
    if (room && wanted && map_buffer(cache, blk) != 0)
        room = false;
    if (!room)
        cache->counters.ahead_refused += wanted / BLOCK_PAGE_SIZE;
    for (size_t i = first; room && i < end && count < max_runs; i++) {
        if (bit_test(blk->present, i) || bit_test(blk->inflight, i))
            continue;
        size_t run_end = i + 1;
        while (run_end < end && run_end - i < max_pages && !bit_test(blk->present, run_end) &&
               !bit_test(blk->inflight, run_end))
            run_end++;
        claim_pages(cache, blk, i, run_end, &runs[count++]);
        i = run_end - 1;   /* the loop steps to run_end */
    }
    pthread_mutex_unlock(&cache->lock);
    return count;
}

uint8_t *block_run_buffer(const page_run *run) { return run->blk->data + block_run_offset(run); }
size_t block_run_offset(const page_run *run) { return run->first_page * BLOCK_PAGE_SIZE; }
size_t block_run_length(const page_run *run) { return page_bytes(run->blk, run->first_page, run->end_page); }

static bool waiter_satisfied(const block *blk, const block_waiter *w)
{
    return all_set(blk->present, w->first_page, w->end_page);
}

/* Whether some page the waiter needs is neither present nor claimed any more. */
static bool waiter_orphaned(const block *blk, const block_waiter *w)
{
    for (size_t i = w->first_page; i < w->end_page; i++)
        if (!bit_test(blk->present, i) && !bit_test(blk->inflight, i))
            return true;
    return false;
}

/* Moves the waiters that can be answered now onto fired (the run's error for the orphaned ones). */
static block_waiter *collect_ready_waiters(block *blk, const page_run *run, int error)
{
    block_waiter *fired = NULL;
    int64_t now = error ? monotonic_ns() : 0;
    for (block_waiter **link = &blk->waiters; *link;) {
        block_waiter *w = *link;
        bool satisfied = waiter_satisfied(blk, w);
        if (satisfied || waiter_orphaned(blk, w)) {
            *link = w->next;
            w->registered = false;
            w->result = satisfied ? 0 : error ? error : EIO;
            w->joined_late = !satisfied && error && w->registered_ns - run->claimed_ns > (now - run->claimed_ns) / 2;
            w->next = fired;
            fired = w;
        } else {
            link = &w->next;
        }
    }
    return fired;
}

void block_cache_complete(block_cache *cache, const page_run *run, int error)
{
    block *blk = run->blk;
    if (error && !blk->whole_charge)   /* give back what a failed load may have faulted in */
        (void)madvise(block_run_buffer(run), block_run_length(run), MADV_DONTNEED);
    pthread_mutex_lock(&cache->lock);
    for (size_t i = run->first_page; i < run->end_page; i++) {
        bit_clear(blk->inflight, i);
        if (!error)
            bit_set(blk->present, i);
    }
    size_t pages = run->end_page - run->first_page;
    blk->inflight_count -= pages;
    cache->counters.pages_in_flight -= pages;
    if (error) {
        blk->last_failure = error;
        cache->counters.load_failures++;
        if (!blk->whole_charge) {
            uint64_t bytes = page_bytes(blk, run->first_page, run->end_page);
            blk->charged -= bytes;
            cache->counters.memory_used -= bytes;
        }
    } else {
        blk->present_count += pages;
        cache->counters.unread_bytes += (uint64_t)pages * BLOCK_PAGE_SIZE;
    }
    block_waiter *fired = collect_ready_waiters(blk, run, error);
    blk->pins--;
    if (blk->pins == 0 && blk->present_count == 0)
        destroy_block(cache, blk);
    pthread_mutex_unlock(&cache->lock);
    while (fired) {
        block_waiter *next = fired->next;   /* on_ready may free the waiter */
        fired->on_ready(fired, fired->result);
        fired = next;
    }
}

bool block_cache_has(block_cache *cache, block *blk, size_t from, size_t to)
{
    if (from >= to)
        return true;
    pthread_mutex_lock(&cache->lock);
    bool present = all_set(blk->present, first_page_of(from), end_page_of(to));
    pthread_mutex_unlock(&cache->lock);
    return present;
}

bool block_cache_covered(block_cache *cache, block *blk, size_t from, size_t to)
{
    if (from >= to)
        return true;
    pthread_mutex_lock(&cache->lock);
    bool covered = missing_bytes(blk, first_page_of(from), end_page_of(to)) == 0;
    pthread_mutex_unlock(&cache->lock);
    return covered;
}

int block_cache_wait(block_cache *cache, block *blk, size_t from, size_t to, block_waiter *waiter)
{
    if (to > blk->length)
        to = blk->length;
    int64_t now = monotonic_ns();
    /* Under the lock: a retried waiter may be cancelled from another thread meanwhile. */
    pthread_mutex_lock(&cache->lock);
    waiter->blk = blk;
    waiter->first_page = first_page_of(from);
    waiter->end_page = end_page_of(to);
    waiter->registered = false;
    waiter->joined_late = false;
    waiter->registered_ns = now;
    int result;
    size_t present = count_set(blk->present, waiter->first_page, waiter->end_page);
    if (present == waiter->end_page - waiter->first_page) {
        cache->counters.hits += present;
        result = 1;
    } else if (waiter_orphaned(blk, waiter)) {
        result = -(blk->last_failure ? blk->last_failure : EIO);
    } else {
        cache->counters.hits += present;
        cache->counters.misses += waiter->end_page - waiter->first_page - present;
        waiter->registered = true;
        waiter->next = blk->waiters;
        blk->waiters = waiter;
        result = 0;
    }
    pthread_mutex_unlock(&cache->lock);
    return result;
}

bool block_cache_cancel_wait(block_cache *cache, block_waiter *waiter)
{
    pthread_mutex_lock(&cache->lock);
    bool was_registered = waiter->registered;
    if (was_registered) {
        block_waiter **link = &waiter->blk->waiters;
        while (*link != waiter)
            link = &(*link)->next;
        *link = waiter->next;
        waiter->registered = false;
    }
    pthread_mutex_unlock(&cache->lock);
    return was_registered;
}

void block_cache_mark_served(block_cache *cache, block *blk, size_t from, size_t to)
{
    if (to > blk->length)
        to = blk->length;
    if (from >= to)
        return;
    pthread_mutex_lock(&cache->lock);
    for (size_t i = first_page_of(from); i < end_page_of(to); i++)
        if (bit_test(blk->present, i) && !bit_test(blk->served, i)) {
            bit_set(blk->served, i);
            blk->served_count++;
            cache->counters.unread_bytes -= BLOCK_PAGE_SIZE;
        }
    blk->fully_served = blk->served_count == blk->page_count;
    pthread_mutex_unlock(&cache->lock);
}

size_t block_cache_take_unserved(block_cache *cache, block *blk, size_t from, size_t max)
{
    if (from % BLOCK_PAGE_SIZE || from >= blk->length)
        return 0;
    pthread_mutex_lock(&cache->lock);
    size_t end = from;
    while (end < blk->length && end - from < max && bit_test(blk->present, end / BLOCK_PAGE_SIZE) &&
           !bit_test(blk->served, end / BLOCK_PAGE_SIZE)) {
        bit_set(blk->served, end / BLOCK_PAGE_SIZE);
        blk->served_count++;
        cache->counters.unread_bytes -= BLOCK_PAGE_SIZE;
        end += BLOCK_PAGE_SIZE;
    }
    blk->fully_served = blk->served_count == blk->page_count;
    pthread_mutex_unlock(&cache->lock);
    return (end < blk->length ? end : blk->length) - from;
}

bool block_cache_copy_present(block_cache *cache, uint64_t source_id, uint64_t index, size_t from, size_t to,
                              void *dst)
{
    pthread_mutex_lock(&cache->lock);
    block *blk = find_block(cache, source_id, index);
    bool present = blk && to <= blk->length && from < to &&
                   all_set(blk->present, first_page_of(from), end_page_of(to));
    if (present)
        memcpy(dst, blk->data + from, to - from);
    pthread_mutex_unlock(&cache->lock);
    return present;
}

uint64_t block_cache_present_bytes(block_cache *cache, uint64_t source_id, uint64_t index)
{
    pthread_mutex_lock(&cache->lock);
    block *blk = find_block(cache, source_id, index);
    uint64_t bytes = blk ? (uint64_t)blk->present_count * BLOCK_PAGE_SIZE : 0;
    if (blk && bytes > blk->length)
        bytes = blk->length;
    pthread_mutex_unlock(&cache->lock);
    return bytes;
}

void block_cache_get_counters(block_cache *cache, block_cache_counters *out)
{
    pthread_mutex_lock(&cache->lock);
    *out = cache->counters;
    pthread_mutex_unlock(&cache->lock);
}
