/* fetcher.h — the threads that load claimed page runs, and those that store fetched runs in the
 * persistent cache.
 *
 * Fairness is the point. Runs wait in one queue per file and priority; a free thread takes the
 * most urgent priority that has a runnable file, and serves those files round robin. A file
 * never runs more than per_file_cap runs at once, so one file on a slow server (or a huge
 * read-ahead) cannot hold every thread and connection while other files wait. A run a reader
 * is waiting for can be promoted to the front (fetcher_promote): a reader never waits behind
 * read-ahead that was queued before it.
 */
#ifndef HUBFS_FETCHER_H
#define HUBFS_FETCHER_H

#include "blocks.h"

typedef enum fetch_priority {
    FETCH_DEMAND,                /* a reader waits for it */
    FETCH_AHEAD,                 /* read-ahead of a stream */
    FETCH_BACKGROUND,            /* hints and whole-tensor prefetch along a learned order */
    FETCH_PRIORITIES
} fetch_priority;

typedef struct fetcher fetcher;

/* Fills a claimed run's bytes (block_run_buffer); 0 or an errno value. Sets *from_network when
 * the bytes came from the Hub (so they are worth storing). */
typedef int (*run_load_fn)(void *source_context, const page_run *run, bool *from_network);
/* Writes a run fetched from the network to the persistent cache. */
typedef void (*run_store_fn)(void *source_context, const page_run *run);

typedef struct fetcher_config {
    int threads;
    int per_file_cap;            /* runs of one file running at once */
    int store_threads;           /* 0 with no store function */
    /* A run completed while the oldest queued store has waited longer than this is not stored
     * (the disk is far behind the network); while the block cache is over its budget, the
     * oldest queued stores are given up, as many bytes as it is over, and the run too when they
     * were fewer. 0: every run from the network is stored. */
    int64_t store_lag_max_ns;
    run_load_fn load;
    run_store_fn store;          /* NULL: nothing is stored */
} fetcher_config;

typedef struct fetcher_counters {
    uint64_t queued[FETCH_PRIORITIES];          /* runs waiting, per priority */
    uint64_t queued_bytes[FETCH_PRIORITIES];    /* ... and the bytes they hold */
    uint64_t running;
    uint64_t promoted;
    uint64_t stores_queued;
    uint64_t stores_skipped_bytes;              /* not stored: the disk lagged, or memory was over */
} fetcher_counters;

fetcher *fetcher_new(block_cache *cache, const fetcher_config *config);

/* Queues a claimed run; the fetcher now owns the claim (it completes the run). */
void fetcher_submit(fetcher *pool, const page_run *run, fetch_priority priority);

/* Moves the queued runs of source that overlap bytes [offset, offset + length) of the file to
 * the demand queue. */
void fetcher_promote(fetcher *pool, uint64_t source_id, uint64_t offset, uint64_t length);

void fetcher_get_counters(fetcher *pool, fetcher_counters *out);

/* Stops: runs still queued complete with ECANCELED, running ones finish (cancel the Hub client
 * first so that they finish soon), pending stores are written. */
void fetcher_free(fetcher *pool);

#endif
