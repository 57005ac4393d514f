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
    add_number(root, "in_flight", memory->loads_in_flight);
    add_number(root, "memory_hits", memory->hits);
    add_number(root, "memory_misses", memory->misses);
    add_number(root, "prefetches", memory->prefetches);
    add_number(root, "prefetch_skipped", memory->prefetch_skipped);
    add_number(root, "evictions", memory->evictions);
}

static void add_disk(cJSON *root, const fs_stats *stats, const disk_cache_counters *disk)
{
    add_number(root, "disk_hits", atomic_load(&stats->disk_hits));
    add_number(root, "disk_misses", atomic_load(&stats->disk_misses));
    add_number(root, "disk_write_failures", atomic_load(&stats->disk_write_failures));
    add_number(root, "disk_bytes_stored", disk ? disk->bytes_stored : 0);
    add_number(root, "disk_evictions", disk ? disk->evictions : 0);
}

char *stats_render_json(const fs_stats *stats, const block_cache_counters *memory,
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
    add_number(root, "prefix_hits", atomic_load(&stats->prefix_hits));
    add_memory(root, memory);
    add_disk(root, stats, disk);
    cJSON *per_repo = cJSON_AddObjectToObject(root, "repos");
    for (size_t i = 0; per_repo && i < repo_count; i++) {
        cJSON *entry = cJSON_AddObjectToObject(per_repo, repos[i].name);
        if (!entry)
            continue;
        add_number(entry, "bytes_fetched", atomic_load(&repos[i].stats->bytes_fetched));
        add_number(entry, "reads", atomic_load(&repos[i].stats->reads));
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}
