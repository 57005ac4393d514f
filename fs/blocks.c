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
/* Resident pages of buffers that blocks no longer need, kept for new claims: a fresh page costs
 * a fault and a zeroed page, a fifth of a streaming daemon's CPU (measured), and loaders that
 * read tensors out of file order claimed most of their pages fresh (from_pretrained faulted
 * 448k of a 3 GB model's 770k pages). A whole buffer goes to a block with none yet; otherwise
 * pages move under a claim with mremap, a page-table move, not a copy. The pool is charged in
 * memory_used. While claims come it may hold the whole budget: a stream releases and claims
 * blocks in bursts, and a pool of 8 blocks was empty at half of the new blocks and full at
 * many releases (a cold 3 GB cat: 180k daemon page faults, 70k with the budget). Idle for
 * POOL_BUSY_NS, it holds POOL_IDLE_BLOCKS blocks' worth. */
#define POOL_IDLE_BLOCKS 8
#define POOL_BUSY_NS INT64_C(1000000000)
#define POOL_MAX_RUNS 64
#define POOL_MIN_RUN_PAGES 16   /* fewer pages are not worth the mappings they split */
#define MAX_POOL_MOVES 16       /* pool moves one claim carries out */

/* Pages [addr, addr + pages * BLOCK_PAGE_SIZE), resident. A run is one mapping (mremap moves
 * only within one), or a whole block's buffer with the pages where its mappings begin: a
 * buffer assembled from pool moves goes back whole, or streaming would split the pool into ever
 * smaller runs and fault a third of its pages in fresh (measured: 55 of 369 buffers came back
 * whole during a cold 3 GB read, reused pages 62 %). */
typedef struct {
    uint8_t *addr;
    size_t pages;
    uint64_t *mapping_start;   /* NULL: one mapping */
} resident_run;

typedef struct {
    uint8_t *from, *to;
    size_t bytes;
} pool_move;

struct block {
    block_source source;
    uint64_t index;
    size_t length;
    size_t page_count;
    uint8_t *data;               /* mapped at the first claim */
    bool whole_charge;           /* a whole buffer from the pool: charged whole, resident */
    uint64_t charged;            /* bytes of the budget this block holds */
    uint64_t *present, *inflight, *served;   /* one bit per page each */
    uint64_t *mapping_start;     /* pages where a mapping of its own may begin (pool moves) */
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
    resident_run pool[POOL_MAX_RUNS];
    int pool_runs;
    uint64_t idle_pool_cap;
    int64_t last_claim_ns;
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

/* ---- the page pool ------------------------------------------------------------------------ */

static uint64_t pages_to_bytes(size_t pages) { return (uint64_t)pages * BLOCK_PAGE_SIZE; }

static size_t bitmap_bytes(size_t pages) { return (pages + 63) / 64 * sizeof(uint64_t); }

static void pool_remove(block_cache *cache, int i)
{
    cache->counters.pool_bytes -= pages_to_bytes(cache->pool[i].pages);
    free(cache->pool[i].mapping_start);
    cache->pool[i] = cache->pool[--cache->pool_runs];
}

/* Gives the pool's smallest run back to the system. */
static bool pool_drop(block_cache *cache)
{
    if (cache->pool_runs == 0)
        return false;
    int smallest = 0;
    for (int i = 1; i < cache->pool_runs; i++)
        if (cache->pool[i].pages < cache->pool[smallest].pages)
            smallest = i;
    resident_run run = cache->pool[smallest];
    munmap(run.addr, pages_to_bytes(run.pages));
    cache->counters.memory_used -= pages_to_bytes(run.pages);
    pool_remove(cache, smallest);
    return true;
}

static uint64_t pool_cap(const block_cache *cache)
{
    return monotonic_ns() - cache->last_claim_ns < POOL_BUSY_NS ? cache->budget : cache->idle_pool_cap;
}

/* Whether the pool takes a run of this many pages, making a slot by dropping a smaller run. */
static bool pool_makes_room_for(block_cache *cache, size_t pages)
{
    if (pages < POOL_MIN_RUN_PAGES || cache->counters.pool_bytes + pages_to_bytes(pages) > pool_cap(cache))
        return false;
    if (cache->pool_runs < POOL_MAX_RUNS)
        return true;
    for (int i = 0; i < cache->pool_runs; i++)
        if (cache->pool[i].pages < pages)
            return pool_drop(cache);   /* drops the smallest, which is this one or smaller */
    return false;
}

/* Keeps resident pages (no longer charged to a block) in the pool; charges them there. A copy of
 * mapping_start (NULL: one mapping) goes with them. */
static bool pool_add(block_cache *cache, uint8_t *addr, size_t pages, const uint64_t *mapping_start)
{
    uint64_t *starts = NULL;
    if (mapping_start && (starts = malloc(bitmap_bytes(pages))) != NULL)
        memcpy(starts, mapping_start, bitmap_bytes(pages));
    if ((mapping_start && !starts) || !pool_makes_room_for(cache, pages)) {
        free(starts);
        return false;
    }
    cache->pool[cache->pool_runs++] = (resident_run){.addr = addr, .pages = pages, .mapping_start = starts};
    cache->counters.pool_bytes += pages_to_bytes(pages);
    cache->counters.memory_used += pages_to_bytes(pages);
    return true;
}

/* Only whole-size blocks trade pages with the pool: a short last block's final page is partly
 * past the end of the file, where the kernel expects zeros. */
static bool trades_with_pool(const block_cache *cache, const block *blk)
{
    return blk->length == cache->block_size;
}

static void mark_mapping_start(block *blk, size_t page)
{
    if (page < blk->page_count)
        bit_set(blk->mapping_start, page);
}

/* Hands a whole resident buffer from the pool (its charge with it) to a block about to claim
 * its first pages. A stream claims a block a read's worth at a time, so its first claim is
 * small; the buffer comes whole so the stream's next claims find their pages resident too. */
static bool take_whole_buffer(block_cache *cache, block *blk)
{
    if (blk->data || !trades_with_pool(cache, blk))
        return false;
    for (int i = 0; i < cache->pool_runs; i++) {
        if (cache->pool[i].pages != blk->page_count)
            continue;
        blk->data = cache->pool[i].addr;
        if (cache->pool[i].mapping_start)
            memcpy(blk->mapping_start, cache->pool[i].mapping_start, bitmap_bytes(blk->page_count));
        blk->whole_charge = true;
        blk->charged = blk->length;   /* the pool's charge, now the block's */
        pool_remove(cache, i);
        return true;
    }
    return false;
}

/* The pages at the end of a run that lie in one mapping. */
static size_t last_mapping_pages(const resident_run *run)
{
    if (!run->mapping_start)
        return run->pages;
    size_t start = run->pages - 1;
    while (start > 0 && !bit_test(run->mapping_start, start))
        start--;
    return run->pages - start;
}

/* Takes pool pages for pages [first, end) of blk, just claimed (and charged): the moves are
 * carried out after the lock is released (move_pool_pages); the pool's charge for them goes. */
static size_t reserve_pool_pages(block_cache *cache, block *blk, size_t first, size_t end, pool_move *moves,
                                 size_t max_moves)
{
    size_t count = 0;
    while (first < end && cache->pool_runs > 0 && count < max_moves) {
        resident_run *run = &cache->pool[cache->pool_runs - 1];
        size_t tail = last_mapping_pages(run);
        size_t pages = end - first < tail ? end - first : tail;
        run->pages -= pages;
        moves[count++] = (pool_move){.from = run->addr + pages_to_bytes(run->pages),
                                     .to = blk->data + pages_to_bytes(first), .bytes = pages_to_bytes(pages)};
        cache->counters.pool_bytes -= pages_to_bytes(pages);
        cache->counters.memory_used -= pages_to_bytes(pages);
        cache->counters.reused_bytes += pages_to_bytes(pages);
        if (run->pages == 0) {
            free(run->mapping_start);
            cache->pool_runs--;
        }
        mark_mapping_start(blk, first);
        mark_mapping_start(blk, first + pages);
        first += pages;
    }
    return count;
}

static void *map_lazily(void *at, size_t bytes, int flags)
{
    return mmap(at, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | flags, -1, 0);
}

/* ---- huge pages ---------------------------------------------------------------------------- */

/* Claimed spans of whole 2 MiB pages are backed by transparent huge pages: one fault and one
 * zeroing per 2 MiB instead of 512, and the kernel pins them whole where the FUSE reply and the
 * disk cache's O_DIRECT write take them (a cold 3 GB cat: page faults 66k -> 25k, daemon CPU
 * 3-8 % less in alternating runs). Nowhere else: a huge page faulted in for a few claimed pages
 * (or filled in later by khugepaged around pages that stayed) makes up to 2 MiB resident that
 * the budget never charged (from_pretrained with huge pages everywhere: peak RSS 745 MiB at a
 * 224 MiB budget). So a new buffer opts out whatever the system's default, and pages given up
 * opt out again. */
#define HUGE_PAGE_BYTES ((uintptr_t)2 << 20)

static void advise_huge(const page_run *run)
{
    uintptr_t from = (uintptr_t)block_run_buffer(run), to = from + block_run_length(run);
    uintptr_t first = (from + HUGE_PAGE_BYTES - 1) & ~(HUGE_PAGE_BYTES - 1), end = to & ~(HUGE_PAGE_BYTES - 1);
    if (first < end)
        (void)madvise((void *)first, end - first, MADV_HUGEPAGE);
}

/* Pages [first, end) of blk and the rest of the huge pages they share, within the buffer. */
static void advise_small(const block *blk, size_t first, size_t end)
{
    uintptr_t start = (uintptr_t)blk->data, stop = start + blk->length;
    uintptr_t from = (start + pages_to_bytes(first)) & ~(HUGE_PAGE_BYTES - 1);
    uintptr_t to = (start + page_bytes(blk, 0, end) + HUGE_PAGE_BYTES - 1) & ~(HUGE_PAGE_BYTES - 1);
    from = from > start ? from : start;
    to = to < stop ? to : stop;
    (void)madvise((void *)from, to - from, MADV_NOHUGEPAGE);
}

/* A failed move leaves its target to be faulted in fresh and gives its source pages back. A
 * failure may come after the kernel unmapped the target: it is mapped again, never over a
 * mapping another thread made there meanwhile (MAP_FIXED_NOREPLACE: EEXIST when the target
 * was never unmapped). */
static void move_pool_pages(const pool_move *moves, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (mremap(moves[i].from, moves[i].bytes, moves[i].bytes, MREMAP_MAYMOVE | MREMAP_FIXED, moves[i].to) !=
            MAP_FAILED)
            continue;
        munmap(moves[i].from, moves[i].bytes);
        (void)map_lazily(moves[i].to, moves[i].bytes, MAP_FIXED_NOREPLACE);
    }
}

/* Moves the resident pages at [addr, addr + bytes) to a place the kernel picks, leaving their
 * old place mapped and empty in the same step: an unmapped gap, however short, could be taken
 * by another thread's mmap and then be unmapped as the block's. */
static void *move_out(uint8_t *addr, size_t bytes)
{
    return mremap(addr, bytes, bytes, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, NULL);
}

/* Moves resident pages [first, end) of blk, no longer charged to it, into the pool, or gives
 * them back to the system. Their place in the block stays mapped, empty. */
static void give_up_pages(block_cache *cache, block *blk, size_t first, size_t end)
{
    while (first < end) {
        size_t stop = first + 1;
        while (stop < end && !bit_test(blk->mapping_start, stop))
            stop++;
        uint8_t *addr = blk->data + pages_to_bytes(first);
        uint64_t bytes = page_bytes(blk, first, stop);
        advise_small(blk, first, stop);
        void *moved = MAP_FAILED;
        if (trades_with_pool(cache, blk) && pool_makes_room_for(cache, stop - first))
            moved = move_out(addr, bytes);
        if (moved == MAP_FAILED || !pool_add(cache, moved, stop - first, NULL)) {
            if (moved != MAP_FAILED)
                munmap(moved, bytes);
            (void)madvise(addr, bytes, MADV_DONTNEED);
        } else {
            mark_mapping_start(blk, first);
            mark_mapping_start(blk, stop);
        }
        first = stop;
    }
}

/* Whether page i of blk is resident: a buffer from the pool is resident whole; otherwise the
 * pages loaded (pages given up or failed are no longer present). */
static bool page_resident(const block *blk, size_t i)
{
    return blk->whole_charge || bit_test(blk->present, i);
}

static bool all_resident(const block *blk)
{
    for (size_t i = 0; i < blk->page_count; i++)
        if (!page_resident(blk, i))
            return false;
    return true;
}

/* A block's buffer when it goes: to the pool whole when every page is resident, else its
 * resident runs; the rest unmapped. */
static void release_buffer(block_cache *cache, block *blk)
{
    if (!blk->data)
        return;
    if (!trades_with_pool(cache, blk)) {
        munmap(blk->data, blk->length);
        return;
    }
    if (all_resident(blk) && pool_add(cache, blk->data, blk->page_count, blk->mapping_start))
        return;
    for (size_t first = 0; first < blk->page_count;) {
        bool resident = page_resident(blk, first);
        size_t stop = first + 1;
        while (stop < blk->page_count && !bit_test(blk->mapping_start, stop) && page_resident(blk, stop) == resident)
            stop++;
        if (!resident || !pool_add(cache, blk->data + pages_to_bytes(first), stop - first, NULL))
            munmap(blk->data + pages_to_bytes(first), pages_to_bytes(stop - first));
        first = stop;
    }
}

/* Frees a block no one pins (so none of its pages is claimed); its resident pages go to the
 * pool. The lock is held. */
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
    release_buffer(cache, blk);
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

/* Makes room for the bytes blk wants to claim; pool pages it will take need no new room.
 * Evicting a block frees no memory by itself (its pages go to the pool): the claim takes them,
 * else the pool gives its smallest run back. Returns false only when within_budget and it
 * cannot fit. */
static bool make_room(block_cache *cache, block *blk, uint64_t wanted, bool within_budget)
{
    for (;;) {
        uint64_t charge = blk->whole_charge ? 0 : wanted;
        uint64_t from_pool = trades_with_pool(cache, blk) ? cache->counters.pool_bytes : 0;
        from_pool = from_pool < charge ? from_pool : charge;
        if (cache->counters.memory_used + charge - from_pool <= cache->budget)
            return true;
        if (take_whole_buffer(cache, blk) || (from_pool == 0 && pool_drop(cache)) || evict_one(cache, within_budget))
            continue;
        return !within_budget || blk->whole_charge;
    }
}

/* Gives the block its buffer: a whole one from the pool when one fits, else a lazy mapping. */
static int map_buffer(block_cache *cache, block *blk)
{
    if (blk->data || take_whole_buffer(cache, blk))
        return 0;
    void *data = map_lazily(NULL, blk->length, 0);
    if (data == MAP_FAILED)
        return ENOMEM;
    blk->data = data;
    advise_small(blk, 0, blk->page_count);
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
    cache->idle_pool_cap = (uint64_t)POOL_IDLE_BLOCKS * block_size;
    cache->counters.memory_budget = memory_budget;
    return cache;
}

void block_cache_trim_pool(block_cache *cache)
{
    pthread_mutex_lock(&cache->lock);
    while (cache->counters.pool_bytes > pool_cap(cache) && pool_drop(cache)) {
    }
    pthread_mutex_unlock(&cache->lock);
}

void block_cache_free(block_cache *cache)
{
    if (!cache)
        return;
    while (cache->lru_oldest)
        destroy_block(cache, cache->lru_oldest);
    while (pool_drop(cache)) {
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
    uint64_t *bits = blk ? calloc(4 * words, sizeof *bits) : NULL;   /* one allocation, 4 maps */
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
    blk->mapping_start = bits + 3 * words;
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

/* Served pages of an unpinned block go to the pool: the kernel's page cache has them (a reader
 * that comes back finds them there, or refetches a page the kernel dropped). Worth a syscall
 * only from an eighth of a block on: each give-up and each later move of those pages out of the
 * pool is an mremap that flushes every CPU's TLB, and a reader of two places in a tensor (torch's
 * threads) served blocks in 64 KiB steps (from_pretrained of 3 GB: 7,700 mremaps and 22,700 TLB
 * flushes at 16 pages, 4,200 and 11,600 at 256; the daemon's CPU ~8 % lower). The lock is held. */
#define DROP_SERVED_MIN_PAGES 16
static size_t drop_served_min_pages(const block_cache *cache)
{
    size_t eighth = cache->block_size / BLOCK_PAGE_SIZE / 8;
    return eighth > DROP_SERVED_MIN_PAGES ? eighth : DROP_SERVED_MIN_PAGES;
}

/* A whole block whose every page is loaded or on its way is being streamed through: once
 * fully served its buffer goes to the pool whole and the next block takes it, with no moves. */
static bool streamed_whole(const block_cache *cache, const block *blk)
{
    return blk->length == cache->block_size && blk->present_count + blk->inflight_count == blk->page_count;
}

/* A whole buffer from the pool came resident: the pages its block never claimed go with the
 * per-page charge, or they would stay in memory uncounted. The lock is held. */
static void release_unclaimed_pages(block_cache *cache, block *blk)
{
    for (size_t i = 0; i < blk->page_count; i++) {
        if (bit_test(blk->present, i) || bit_test(blk->inflight, i))
            continue;
        size_t end = i + 1;
        while (end < blk->page_count && !bit_test(blk->present, end) && !bit_test(blk->inflight, end))
            end++;
        give_up_pages(cache, blk, i, end);
        i = end;
    }
}

static void drop_served_pages(block_cache *cache, block *blk)
{
    if (blk->served_count < drop_served_min_pages(cache) || blk->fully_served || streamed_whole(cache, blk))
        return;
    if (blk->whole_charge) {   /* from here on charged per page, like a fresh mapping */
        uint64_t kept = (uint64_t)(blk->present_count + blk->inflight_count) * BLOCK_PAGE_SIZE;
        kept = kept < blk->length ? kept : blk->length;
        cache->counters.memory_used -= blk->charged - kept;
        blk->charged = kept;
        blk->whole_charge = false;
        release_unclaimed_pages(cache, blk);
    }
    for (size_t i = 0; i < blk->page_count; i++) {
        if (!bit_test(blk->served, i))
            continue;
        size_t end = i + 1;
        while (end < blk->page_count && bit_test(blk->served, end))
            end++;
        uint64_t bytes = page_bytes(blk, i, end);
        give_up_pages(cache, blk, i, end);
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
    pool_move moves[MAX_POOL_MOVES];
    size_t move_count = 0;
    pthread_mutex_lock(&cache->lock);
    cache->last_claim_ns = monotonic_ns();
    size_t count = 0;
    uint64_t wanted = missing_bytes(blk, first, end);
    bool room = wanted == 0 || blk->whole_charge || make_room(cache, blk, wanted, within_budget);
    if (room && wanted && map_buffer(cache, blk) != 0)
        room = false;
    if (!room)
        cache->counters.ahead_refused += wanted / BLOCK_PAGE_SIZE;
    bool from_pool = !blk->whole_charge && trades_with_pool(cache, blk);
    for (size_t i = first; room && i < end && count < max_runs; i++) {
        if (bit_test(blk->present, i) || bit_test(blk->inflight, i))
            continue;
        size_t run_end = i + 1;
        while (run_end < end && run_end - i < max_pages && !bit_test(blk->present, run_end) &&
               !bit_test(blk->inflight, run_end))
            run_end++;
        claim_pages(cache, blk, i, run_end, &runs[count++]);
        if (from_pool)
            move_count += reserve_pool_pages(cache, blk, i, run_end, moves + move_count, MAX_POOL_MOVES - move_count);
        i = run_end - 1;   /* the loop steps to run_end */
    }
    /* More runs than moves (or a block that takes no pool pages) charged what room counted on
     * the pool for. */
    while (cache->counters.memory_used > cache->budget && pool_drop(cache)) {
    }
    pthread_mutex_unlock(&cache->lock);
    move_pool_pages(moves, move_count);   /* the claimed pages are this caller's alone */
    for (size_t i = 0; i < count; i++)
        advise_huge(&runs[i]);
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

uint64_t block_cache_bytes_over_budget(block_cache *cache)
{
    pthread_mutex_lock(&cache->lock);
    uint64_t over = cache->counters.memory_used > cache->budget ? cache->counters.memory_used - cache->budget : 0;
    pthread_mutex_unlock(&cache->lock);
    return over;
}

void block_cache_get_counters(block_cache *cache, block_cache_counters *out)
{
    pthread_mutex_lock(&cache->lock);
    *out = cache->counters;
    pthread_mutex_unlock(&cache->lock);
}
