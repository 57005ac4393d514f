/* blocks.h — the in-memory block cache: aligned blocks of remote files whose bytes are present
 * page by page, one memory budget shared by every open file, single flight per page, and waiters
 * that are told when the pages they need arrive.
 *
 * Blocks (8 MiB by default) are the unit of bookkeeping, not of fetching: a reader that needs
 * 128 KiB of a block claims just those pages, and the bytes around them stay absent. A claimed
 * run of pages belongs to its claimer until it completes it (present, or failed and absent
 * again); a second reader of the same pages waits for that run instead of fetching it again.
 *
 * Memory: a block's buffer is mapped lazily and charged per page claimed, so the budget tracks
 * what is resident. Claims made for read-ahead fit the budget or are refused; claims a reader
 * waits on evict what they must and may exceed it (a reader is never refused its bytes). Blocks
 * whose every page was served to the kernel (whose page cache now holds them) go first.
 *
 * Thread-safe; no callback runs with the cache's lock held.
 */
#ifndef HUBFS_BLOCKS_H
#define HUBFS_BLOCKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BLOCK_PAGE_SIZE 4096u

typedef struct block_cache block_cache;
typedef struct block block;

/* Where a block's bytes come from: a remote file of a known size. */
typedef struct block_source {
    uint64_t id;                 /* unique per remote file */
    uint64_t size;               /* file size: the last block is shorter */
    void *context;               /* the remote file */
} block_source;

/* A run of pages of one block, claimed for loading: [first_page, end_page). */
typedef struct page_run {
    block *blk;
    size_t first_page, end_page;
    int64_t claimed_ns;          /* monotonic */
} page_run;

/* Someone waiting for bytes of a block. The owner sets on_ready; the rest is the cache's. */
typedef struct block_waiter block_waiter;
struct block_waiter {
    /* Called once, without the cache's lock, when every page waited for is present (error 0)
     * or a page of it failed to load (an errno value). */
    void (*on_ready)(block_waiter *waiter, int error);
    block *blk;
    size_t first_page, end_page;
    bool registered;
    /* Set with a failure when it came in the second half of the failed run's life: most of that
     * run's tries happened before it asked, so the failure need not be its answer. */
    bool joined_late;
    int64_t registered_ns;
    int result;                  /* what on_ready will be told, decided under the lock */
    block_waiter *next;
};

typedef struct block_cache_counters {
    uint64_t memory_used;        /* bytes charged: pages claimed or present, the page pool */
    uint64_t memory_budget;
    uint64_t blocks;
    uint64_t hits;               /* pages a reader found present */
    uint64_t misses;             /* pages a reader had to wait for */
    uint64_t pages_in_flight;
    uint64_t ahead_refused;      /* read-ahead pages refused for lack of budget */
    uint64_t evictions;          /* blocks dropped to make room */
    uint64_t released;           /* blocks dropped once all their pages were served */
    uint64_t served_dropped;     /* bytes of served pages given back from blocks still kept */
    uint64_t unread_bytes;       /* present and not yet served to the kernel: what is ahead */
    uint64_t load_failures;      /* runs completed with an error */
    uint64_t wasted_bytes;       /* evicted pages that were fetched and never served */
    uint64_t pool_bytes;         /* resident pages kept for new claims (charged in memory_used) */
    uint64_t reused_bytes;       /* claimed pages that came resident from the pool, not faulted in */
} block_cache_counters;

block_cache *block_cache_new(uint64_t memory_budget, uint32_t block_size);
/* Every block must have been put back and every run completed. */
void block_cache_free(block_cache *cache);
/* Gives back what the page pool holds beyond its idle size once no claim came for a while;
 * called when fetching has gone quiet. */
void block_cache_trim_pool(block_cache *cache);

uint32_t block_cache_block_size(const block_cache *cache);

/* Pins block index of source, creating it (no page present) when absent. 0 or ENOMEM/EINVAL. */
int block_cache_get(block_cache *cache, const block_source *source, uint64_t index, block **out);
/* Takes one more pin on a block the caller holds pinned (e.g. to store it after a run). */
void block_cache_pin(block_cache *cache, block *blk);
/* Drops a pin taken by block_cache_get or block_cache_pin. */
void block_cache_put(block_cache *cache, block *blk);

/* Claims the pages covering bytes [from, to) of a pinned block that are neither present nor
 * claimed, as at most max_runs runs of at most max_run_bytes each (written to runs; the count
 * is returned). Each run pins the block once more and must be completed with
 * block_cache_complete. With within_budget (read-ahead) only what fits the budget without
 * evicting unread read-ahead is claimed. */
size_t block_cache_claim(block_cache *cache, block *blk, size_t from, size_t to, bool within_budget,
                         size_t max_run_bytes, page_run *runs, size_t max_runs);

/* Where a claimed run's bytes go: [run first byte, run end byte) of the block's buffer. */
uint8_t *block_run_buffer(const page_run *run);
size_t block_run_offset(const page_run *run);   /* byte offset of the run in its block */
size_t block_run_length(const page_run *run);   /* bytes, shorter at the file's end */

/* Completes a claimed run: its pages are present (error 0) or absent again (error); wakes the
 * waiters that now have all their pages, or that needed a page of a failed run. Unpins. */
void block_cache_complete(block_cache *cache, const page_run *run, int error);

/* Whether bytes [from, to) of a pinned block are present. */
bool block_cache_has(block_cache *cache, block *blk, size_t from, size_t to);
/* Whether every page of bytes [from, to) of a pinned block is present or claimed. */
bool block_cache_covered(block_cache *cache, block *blk, size_t from, size_t to);

/* Registers waiter for bytes [from, to) of a pinned block (the caller keeps its pin until
 * on_ready). Returns 0 when registered, 1 when all is present already (not registered), or
 * a negative errno (the latest load failure's) when a page is neither present nor claimed:
 * claim it first, then wait again. */
int block_cache_wait(block_cache *cache, block *blk, size_t from, size_t to, block_waiter *waiter);

/* Withdraws a registered waiter. True when it was still registered (on_ready will never be
 * called); false when on_ready has been or is being called. */
bool block_cache_cancel_wait(block_cache *cache, block_waiter *waiter);

/* Records that bytes [from, to) of a pinned, present range were handed to the kernel. */
void block_cache_mark_served(block_cache *cache, block *blk, size_t from, size_t to);

/* Marks served the pages of a pinned block from page-aligned from on that are present and were
 * never served, up to about max bytes (whole pages; the block's end aside) and the first that is
 * not, and returns their bytes: the caller hands them to the kernel (two callers never get the
 * same page). */
size_t block_cache_take_unserved(block_cache *cache, block *blk, size_t from, size_t max);

/* Copies bytes [from, to) of block index of source into dst when every page of them is present
 * (true); false otherwise. Never creates a block. */
bool block_cache_copy_present(block_cache *cache, uint64_t source_id, uint64_t index, size_t from, size_t to,
                              void *dst);

/* Bytes of the block present in memory (for planning; a peek). */
uint64_t block_cache_present_bytes(block_cache *cache, uint64_t source_id, uint64_t index);

const uint8_t *block_data(const block *blk);
size_t block_length(const block *blk);
uint64_t block_index(const block *blk);
const block_source *block_source_of(const block *blk);

/* How far memory_used exceeds the budget (readers' claims went past it: nothing was evictable). */
uint64_t block_cache_bytes_over_budget(block_cache *cache);

void block_cache_get_counters(block_cache *cache, block_cache_counters *out);

#endif
