/* stats.c — renders the counters as JSON with cJSON. */
#include "stats.h"

#include <cjson/cJSON.h>

static void add_number(cJSON *object, const char *name, uint64_t value)
{
    cJSON_AddNumberToObject(object, name, (double)value);
}

static void add_memory(cJSON *root, const block_cache_counters *memory)
{
    add_number(root, "memory_used", memory->memory_used);
    add_number(root, "memory_budget", memory->memory_budget);
    add_number(root, "blocks", memory->blocks);
    add_number(root, "pages_in_flight", memory->pages_in_flight);
    add_number(root, "memory_hits", memory->hits);
    add_number(root, "memory_misses", memory->misses);
    add_number(root, "ahead_refused_pages", memory->ahead_refused);
    add_number(root, "evictions", memory->evictions);
    add_number(root, "released_blocks", memory->released);
    add_number(root, "served_bytes_dropped", memory->served_dropped);
    add_number(root, "unread_bytes", memory->unread_bytes);
    add_number(root, "load_failures", memory->load_failures);
    add_number(root, "wasted_bytes", memory->wasted_bytes);
    add_number(root, "page_pool_bytes", memory->pool_bytes);
    add_number(root, "reused_page_bytes", memory->reused_bytes);
}

static void add_disk(cJSON *root, const fs_stats *stats, const disk_cache_counters *disk)
{
    add_number(root, "disk_hits", atomic_load(&stats->disk_hits));
    add_number(root, "disk_misses", atomic_load(&stats->disk_misses));
    add_number(root, "disk_write_failures", atomic_load(&stats->disk_write_failures));
    add_number(root, "disk_bytes_stored", disk ? disk->bytes_stored : 0);
    add_number(root, "disk_evictions", disk ? disk->evictions : 0);
    add_number(root, "hf_blobs_verified", disk ? disk->hf_blobs_verified : 0);
}

static void add_fetches(cJSON *root, const fetcher_counters *fetches)
{
    add_number(root, "runs_queued_demand", fetches->queued[FETCH_DEMAND]);
    add_number(root, "runs_queued_ahead", fetches->queued[FETCH_AHEAD]);
    add_number(root, "runs_queued_background", fetches->queued[FETCH_BACKGROUND]);
    add_number(root, "bytes_queued_background", fetches->queued_bytes[FETCH_BACKGROUND]);
    add_number(root, "runs_running", fetches->running);
    add_number(root, "runs_promoted", fetches->promoted);
    add_number(root, "disk_store_skipped_bytes", fetches->stores_skipped_bytes);
}

char *stats_render_json(const fs_stats *stats, const block_cache_counters *memory, const fetcher_counters *fetches,
                        const disk_cache_counters *disk, const repo_stats_view *repos,
                        size_t repo_count)
{
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return NULL;
    add_number(root, "bytes_fetched", atomic_load(&stats->bytes_fetched));
    add_number(root, "requests", atomic_load(&stats->requests));
    add_number(root, "fetch_failures", atomic_load(&stats->fetch_failures));
    add_number(root, "reads", atomic_load(&stats->reads));
    add_number(root, "bytes_served", atomic_load(&stats->bytes_served));
    add_number(root, "bytes_pushed", atomic_load(&stats->bytes_pushed));
    add_number(root, "reads_interrupted", atomic_load(&stats->reads_interrupted));
    add_number(root, "hints", atomic_load(&stats->hints));
    add_number(root, "endpoint_failures", atomic_load(&stats->endpoint_failures));
    add_number(root, "fallback_requests", atomic_load(&stats->fallback_requests));
    add_number(root, "passthrough_opens", atomic_load(&stats->passthrough_opens));
    add_number(root, "files_open", atomic_load(&stats->files_open));
    add_memory(root, memory);
    add_fetches(root, fetches);
    add_disk(root, stats, disk);
    cJSON *per_repo = cJSON_AddObjectToObject(root, "repos");
    for (size_t i = 0; per_repo && i < repo_count; i++) {
        cJSON *entry = cJSON_AddObjectToObject(per_repo, repos[i].name);
        if (!entry)
            continue;
        add_number(entry, "bytes_fetched", atomic_load(&repos[i].stats->bytes_fetched));
        add_number(entry, "bytes_served", atomic_load(&repos[i].stats->bytes_served));
        add_number(entry, "reads", atomic_load(&repos[i].stats->reads));
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}
