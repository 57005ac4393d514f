/* blocks.h — the in-memory block cache: aligned blocks of remote files, one fetch per block
 * however many readers want it (single flight), LRU eviction, and one memory budget shared by
 * every open file and all read-ahead.
 *
 * A block is identified by (source id, block index). Its bytes are loaded by the load function
 * given at creation, outside any lock of the cache. Readers wait on the block's condition
 * variable while it loads. A block that failed to load is dropped, so a later read retries.
 *
 * Budget rules: read-ahead only takes memory that is free or held by blocks already read; a
 * reader evicts any unpinned block and otherwise waits for pinned blocks to be released. A
 * reader holds at most one pin while it waits, so readers can't deadlock on the budget.
 */
#ifndef HUBFS_BLOCKS_H
#define HUBFS_BLOCKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct block_cache block_cache;
typedef struct block block;

/* Where a block's bytes come from: a remote file of a known size. */
typedef struct block_source {
    uint64_t id;                 /* unique per remote file */
    uint64_t size;               /* file size: the last block is shorter */
    void *context;               /* handed to the load function */
} block_source;

/* Fills buf (len bytes) with block index of the source; returns 0 or an errno value. Called
 * without any lock of the cache held. Sets *fetched when the bytes came from the network, so
 * they should be stored (see block_cache_set_store_hook). */
typedef int (*block_load_fn)(void *context, uint64_t index, void *buf, size_t len, bool *fetched);

/* Loads bytes [from, to) of block index (offsets within the block, block_len bytes long) from
 * the network into block_buf at the same offsets; other bytes of block_buf may be read by other
 * threads meanwhile and must not be touched. When whole is non-NULL the caller owns the whole
 * buffer: the function may instead fill all of it from the persistent cache and set *whole.
 * Returns 0 or an errno value; called without any lock of the cache held. */
typedef int (*block_load_range_fn)(void *context, uint64_t index, uint8_t *block_buf, size_t block_len,
                                   size_t from, size_t to, bool *whole);

/* Called with a freshly fetched block, pinned once more for the hook: its waiters have already
 * been woken; the hook stores it (on another thread) and then releases that pin. */
typedef void (*block_store_hook)(void *hook_context, block *blk);

typedef struct block_cache_counters {
    uint64_t memory_used;        /* bytes of block buffers allocated */
    uint64_t memory_budget;
    uint64_t hits;               /* reads served by a block already present or loading */
    uint64_t misses;             /* reads that had to load the block */
    uint64_t loads_in_flight;
    uint64_t prefetches;         /* read-ahead blocks started */
    uint64_t prefetch_skipped;   /* read-ahead refused for lack of budget */
    uint64_t evictions;
    uint64_t load_failures;
} block_cache_counters;

block_cache *block_cache_new(uint64_t memory_budget, uint32_t block_size, block_load_fn load);
/* All blocks must have been released. */
void block_cache_free(block_cache *cache);

uint32_t block_cache_block_size(const block_cache *cache);

void block_cache_set_store_hook(block_cache *cache, block_store_hook hook, void *hook_context);

/* Enables partial blocks: a block is split in at most BLOCK_MAX_PIECES equal pieces, and
 * block_cache_read_range may fetch only the pieces a read touches (a slice of a tensor read by
 * one tensor-parallel rank would otherwise pull a whole block for a fraction of it). A partial
 * block lives in memory only; once all its pieces are present it is complete, and goes to the
 * store hook like any fetched block. */
#define BLOCK_MAX_PIECES 64
void block_cache_set_range_loader(block_cache *cache, block_load_range_fn load_range);

/* Returns in *out the pinned, loaded block index of source: waits while another thread loads
 * it, or loads it on this thread. Returns 0 or an errno value (EIO when the load failed). */
int block_cache_read(block_cache *cache, const block_source *source, uint64_t index, block **out);

/* Returns in *out the pinned block index of source whose bytes [from, to) (offsets within the
 * block) are present. With partial set (a young stream not reading the whole file) and a range
 * loader, only the pieces covering [from, to) are fetched when the block is absent or partial;
 * otherwise the whole block is loaded (missing pieces of a partial block are fetched). Other
 * bytes of a partial block must not be read. Returns 0 or an errno value. */
int block_cache_read_range(block_cache *cache, const block_source *source, uint64_t index, size_t from,
                           size_t to, bool partial, block **out);

/* The bytes of a loaded, pinned block. */
const uint8_t *block_data(const block *blk);
size_t block_length(const block *blk);
uint64_t block_index(const block *blk);
const block_source *block_source_of(const block *blk);

void block_cache_release(block_cache *cache, block *blk);

/* Read-ahead: when block index is absent and the budget allows it without waiting, inserts it
 * in the loading state, pinned, and returns it: the caller must then call block_cache_load
 * exactly once (typically on a fetch thread). Returns NULL when present or refused. */
block *block_cache_prefetch(block_cache *cache, const block_source *source, uint64_t index);

/* Loads a block returned by block_cache_prefetch, wakes its waiters and drops the pin. */
void block_cache_load(block_cache *cache, block *blk);

/* Gives up a block returned by block_cache_prefetch without loading it (shutdown). */
void block_cache_abandon(block_cache *cache, block *blk);

/* Tells the cache that the reader of block index of source went past it for good (a stream
 * reading the whole file; the kernel's page cache keeps the bytes): when a store hook (the
 * persistent cache) holds the block too, its buffer is reused first, before fresh memory, which
 * the kernel must zero and charge page by page. */
void block_cache_mark_consumed(block_cache *cache, uint64_t source_id, uint64_t index);

/* Whether block index of source is present and loaded (a peek: changes nothing). */
bool block_cache_contains(block_cache *cache, uint64_t source_id, uint64_t index);

void block_cache_get_counters(block_cache *cache, block_cache_counters *out);

#endif
