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

#define FETCHER_MAX_PARTS 16

/* Reads [offset, offset + len) of something into buf; returns 0 or an errno value. */
typedef int (*range_read_fn)(void *context, uint64_t offset, void *buf, size_t len);

/* Starts fetch_threads fetch threads and, with a store function, store_threads store threads;
 * installs itself as the cache's store hook. NULL on failure. */
fetcher *fetcher_new(block_cache *cache, int fetch_threads, block_store_fn store, int store_threads);

/* Queues a block returned by block_cache_prefetch; the pool now owns its pin. */
void fetcher_submit(fetcher *pool, block *blk);

/* Reads [offset, offset + len) as concurrent ranges of part_size bytes, one on the calling
 * thread and the others on the part threads, so one block's latency isn't one stream's: a
 * reader waiting for a block waits for the slowest part, not for the whole block in series.
 * Returns 0 or the first error. */
int fetcher_read_split(fetcher *pool, range_read_fn read, void *context, uint64_t offset, void *buf,
                       size_t len, size_t part_size);

/* Stops the fetch threads after their current block and abandons the queued ones; then
 * finishes every pending store. */
void fetcher_free(fetcher *pool);

#endif
