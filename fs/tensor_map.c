/* tensor_map.c — the planning view of a safetensors header. */
#include "tensor_map.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define SAFETENSORS_MAX_HEADER 100000000ULL   /* the reference reader's cap */

uint64_t safetensors_header_end(const uint8_t first_bytes[8], uint64_t file_size)
{
    uint64_t length = 0;
    for (int i = 7; i >= 0; i--)
        length = length << 8 | first_bytes[i];
    if (file_size < 8 || length > SAFETENSORS_MAX_HEADER || length > file_size - 8)
        return 0;
    return 8 + length;
}

/* An exact unsigned integer from a JSON number (cJSON keeps doubles: exact below 2^53). */
static bool json_offset(const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item) || item->valuedouble < 0 || item->valuedouble > 9007199254740992.0 ||
        item->valuedouble != (double)(uint64_t)item->valuedouble)
        return false;
    *out = (uint64_t)item->valuedouble;
    return true;
}

typedef struct named_extent {
    tensor_extent extent;
    const char *name;
    size_t index;                /* in file order, once sorted */
} named_extent;

static int by_begin(const void *a, const void *b)
{
    const named_extent *x = a, *y = b;
    return (x->extent.begin > y->extent.begin) - (x->extent.begin < y->extent.begin);
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(named_extent *const *)a)->name, (*(named_extent *const *)b)->name);
}

/* Collects the non-empty tensors of the parsed header; false when an entry is malformed. */
static bool collect(const cJSON *root, uint64_t header_end, uint64_t file_size, named_extent *out,
                    size_t *count)
{
    *count = 0;
    for (const cJSON *entry = root->child; entry; entry = entry->next) {
        if (strcmp(entry->string, "__metadata__") == 0)
            continue;
        const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
        uint64_t begin, end;
        if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 ||
            !json_offset(offsets->child, &begin) || !json_offset(offsets->child->next, &end) ||
            begin > end || end > file_size - header_end)
            return false;
        if (begin == end)
            continue;
        out[(*count)++] = (named_extent){.extent = {.begin = header_end + begin, .end = header_end + end},
                                         .name = entry->string};
    }
    return true;
}

static tensor_map *assemble(named_extent *all, size_t count, uint64_t header_end)
{
    size_t pool_size = 1;
    for (size_t i = 0; i < count; i++)
        pool_size += strlen(all[i].name) + 1;
    tensor_map *map = calloc(1, sizeof *map);
    named_extent **sorted = calloc(count ? count : 1, sizeof *sorted);
    if (map) {
        map->tensors = calloc(count ? count : 1, sizeof *map->tensors);
        map->by_name = calloc(count ? count : 1, sizeof *map->by_name);
        map->names = malloc(pool_size);
    }
    if (!map || !sorted || !map->tensors || !map->by_name || !map->names) {
        free(sorted);
        tensor_map_free(map);
        return NULL;
    }
    qsort(all, count, sizeof *all, by_begin);
    for (size_t i = 0; i < count; i++) {
        all[i].index = i;
        sorted[i] = &all[i];
    }
    qsort(sorted, count, sizeof *sorted, by_name);
    for (size_t rank = 0; rank < count; rank++) {
        sorted[rank]->extent.name_rank = (uint32_t)rank;
        map->by_name[rank] = (uint32_t)sorted[rank]->index;
    }
    char *pool = map->names;
    for (size_t i = 0; i < count; i++) {
        size_t n = strlen(all[i].name) + 1;
        memcpy(pool, all[i].name, n);
        map->tensors[i] = all[i].extent;
        map->tensors[i].name = pool;
        pool += n;
    }
    map->count = count;
    map->header_end = header_end;
    free(sorted);
    return map;
}

tensor_map *tensor_map_build(const uint8_t *header, uint64_t header_end, uint64_t file_size)
{
    if (header_end < 8 || header_end > 8 + (uint64_t)TENSOR_MAP_MAX_HEADER || header_end > file_size ||
        safetensors_header_end(header, file_size) != header_end)
        return NULL;
    cJSON *root = cJSON_ParseWithLength((const char *)header + 8, (size_t)(header_end - 8));
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return NULL;
    }
    size_t entries = (size_t)cJSON_GetArraySize(root);
    named_extent *all = calloc(entries ? entries : 1, sizeof *all);
    size_t count = 0;
    tensor_map *map = NULL;
    if (all && collect(root, header_end, file_size, all, &count) && count <= UINT32_MAX)
        map = assemble(all, count, header_end);
    free(all);
    cJSON_Delete(root);
    return map;
}

void tensor_map_free(tensor_map *map)
{
    if (!map)
        return;
    free(map->tensors);
    free(map->by_name);
    free(map->names);
    free(map);
}

size_t tensor_map_find(const tensor_map *map, uint64_t offset)
{
    size_t low = 0, high = map->count;
    while (low < high) {   /* first tensor whose end is past offset */
        size_t mid = low + (high - low) / 2;
        if (map->tensors[mid].end <= offset)
            low = mid + 1;
        else
            high = mid;
    }
    return low < map->count && map->tensors[low].begin <= offset ? low : map->count;
}

size_t tensor_map_find_name(const tensor_map *map, const char *name)
{
    size_t low = 0, high = map->count;
    while (low < high) {
        size_t mid = low + (high - low) / 2;
        int order = strcmp(map->tensors[map->by_name[mid]].name, name);
        if (order == 0)
            return map->by_name[mid];
        if (order < 0)
            low = mid + 1;
        else
            high = mid;
    }
    return map->count;
}
