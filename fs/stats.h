/* stats.h — the counters shown in /MNT/.hubfs/stats (JSON). Lock-free atomics, bumped on the
 * read path. */
#ifndef HUBFS_STATS_H
#define HUBFS_STATS_H

#include "blocks.h"
#include "disk_cache.h"
#include "fetcher.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fs_stats {
    atomic_uint_fast64_t bytes_fetched;     /* body bytes asked of the network */
    atomic_uint_fast64_t requests;          /* range reads sent to the Hub client */
    atomic_uint_fast64_t fetch_failures;
    atomic_uint_fast64_t disk_hits;         /* blocks served by the persistent cache */
    atomic_uint_fast64_t disk_misses;
    atomic_uint_fast64_t disk_write_failures;
    atomic_uint_fast64_t bytes_served;      /* bytes answered to the kernel's reads, and pushed */
    atomic_uint_fast64_t bytes_pushed;      /* bytes put in the kernel's page cache unasked */
    atomic_uint_fast64_t reads;             /* FUSE reads */
    atomic_uint_fast64_t reads_interrupted; /* reads cancelled by their reader (EINTR) */
    atomic_uint_fast64_t hints;             /* WILLNEED hints received */
    atomic_uint_fast64_t endpoint_failures; /* times the endpoint was found down */
    atomic_uint_fast64_t fallback_requests; /* requests sent to --fallback-endpoint meanwhile */
    atomic_uint_fast64_t passthrough_opens; /* opens the kernel serves from a cached file itself */
    atomic_uint_fast64_t files_open;        /* open handles of files, until their release */
} fs_stats;

typedef struct repo_stats {
    atomic_uint_fast64_t bytes_fetched;
    atomic_uint_fast64_t bytes_served;
    atomic_uint_fast64_t reads;
} repo_stats;

typedef struct repo_stats_view {
    const char *name;            /* "org/name@rev" */
    const repo_stats *stats;
} repo_stats_view;

/* Renders every counter as a JSON object (malloc'd, NUL-terminated); NULL when out of memory.
 * disk may be NULL (no persistent cache). */
char *stats_render_json(const fs_stats *stats, const block_cache_counters *memory, const fetcher_counters *fetches,
                        const disk_cache_counters *disk, const repo_stats_view *repos,
                        size_t repo_count);

#endif
