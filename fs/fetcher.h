/* fetcher.h — the threads that move blocks off the FUSE workers' path: fetch threads load
 * read-ahead blocks (disk cache, then the Hub client, whose own event loop does the transfer),
 * and store threads write freshly fetched blocks to the persistent cache after their readers
 * were served. A block waiting to be stored stays pinned, so a disk slower than the network
 * holds memory within the budget instead of queueing without bound.
 */
#ifndef HUBFS_FETCHER_H
#define HUBFS_FETCHER_H

#include "blocks.h"

typedef struct fetcher fetcher;

/* Writes a fetched block to the persistent cache (failures are the callee's to count). */
typedef void (*block_store_fn)(void *source_context, uint64_t index, const void *data, size_t len);

/* Starts fetch_threads fetch threads and, with a store function, store_threads store threads;
 * installs itself as the cache's store hook. NULL on failure. */
fetcher *fetcher_new(block_cache *cache, int fetch_threads, block_store_fn store, int store_threads);

/* Queues a block returned by block_cache_prefetch; the pool now owns its pin. */
void fetcher_submit(fetcher *pool, block *blk);

/* Stops the fetch threads after their current block and abandons the queued ones; then
 * finishes every pending store. */
void fetcher_free(fetcher *pool);

#endif
