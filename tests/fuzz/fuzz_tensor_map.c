/* Fuzzes the planning view of safetensors headers (fs/tensor_map.c) and the planner on what it
 * yields. Input: 8 bytes little-endian = the data size (taken modulo 1 GiB), then the header
 * JSON, given the length prefix that fits; the whole input is also taken as a file's first bytes,
 * prefix and all. Whatever map comes out must hold the invariants checked here independently;
 * every look-up must answer inside it; planning reads of its tensors must stay inside the file. */
#include "planner.h"
#include "tensor_map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t le64(const uint8_t *bytes)
{
    uint64_t value = 0;
    for (int i = 7; i >= 0; i--)
        value = value << 8 | bytes[i];
    return value;
}

static void check_lookups(const tensor_map *map, uint64_t offset)
{
    size_t found = tensor_map_find(map, offset);
    if (found < map->count && !(map->tensors[found].begin <= offset && offset < map->tensors[found].end))
        abort();
}

static void check_map(const tensor_map *map, uint64_t header_end, uint64_t file_size)
{
    if (map->header_end != header_end)
        abort();
    uint8_t *seen = calloc(map->count ? map->count : 1, 1);
    bool disjoint = true;
    for (size_t i = 0; i < map->count; i++) {
        const tensor_extent *t = &map->tensors[i];
        if (t->begin < header_end || t->begin >= t->end || t->end > file_size || !t->name)
            abort();
        if (i && t->begin < map->tensors[i - 1].begin)
            abort();
        disjoint = disjoint && (i == 0 || t->begin >= map->tensors[i - 1].end);
        if (t->name_rank >= map->count || map->by_name[t->name_rank] != i)
            abort();
        if (t->name_rank && strcmp(map->tensors[map->by_name[t->name_rank - 1]].name, t->name) > 0)
            abort();
        seen[t->name_rank]++;
        size_t named = tensor_map_find_name(map, t->name);
        if (named >= map->count || strcmp(map->tensors[named].name, t->name) != 0)
            abort();
        check_lookups(map, t->begin);
        check_lookups(map, t->end - 1);
        check_lookups(map, t->end);
        if (disjoint && tensor_map_find(map, t->begin) != i)   /* overlaps may answer either */
            abort();
    }
    for (size_t r = 0; r < map->count; r++)
        if (seen[r] != 1)
            abort();
    free(seen);
    check_lookups(map, 0);
    check_lookups(map, header_end ? header_end - 1 : 0);
    check_lookups(map, file_size);
    check_lookups(map, UINT64_MAX);
}

/* A bulk start along the layer pattern the reads taught (the names' numbers, whatever they are):
 * each tensor handed out once, inside the file. */
static void check_bulk(const tensor_map *map, const planner_pattern *pattern, uint64_t file_size)
{
    planner_order order;
    if (planner_order_init(&order, map) != 0)
        return;
    plan_range ranges[64];
    size_t handed = 0;
    for (size_t n; (n = planner_order_bulk(&order, pattern, 4u << 20, ranges, 64)) > 0; handed += n) {
        for (size_t i = 0; i < n; i++)
            if (ranges[i].begin > ranges[i].end || ranges[i].end > file_size)
                abort();
        if (handed + n > map->count)
            abort();   /* a tensor handed out twice */
    }
    planner_order_clear(&order);
}

/* Reads the first tensors whole, each in two reads through its own handle, as a loader would,
 * and a slice of each: what the planner asks for lies in the file. The reads may teach a layer
 * pattern, which a bulk start then follows. */
static void plan_reads(const tensor_map *map, uint64_t file_size)
{
    planner_order order;
    planner_pattern *pattern = calloc(1, sizeof *pattern);
    if (!pattern || planner_order_init(&order, map) != 0) {
        free(pattern);
        return;
    }
    planner_file file = {.size = file_size, .is_safetensors = true, .header_end = map->header_end, .order = &order,
                         .repo_pattern = pattern};
    planner_config config = {.max_ahead = 8u << 20, .header_probe = 64u << 10, .first_prefetch = 1u << 20};
    for (size_t i = 0; i < map->count && i < 64; i++) {
        const tensor_extent *t = &map->tensors[i];
        uint64_t half = (t->end - t->begin + 1) / 2;
        uint64_t reads[3][2] = {{t->begin, half}, {t->begin + half, t->end - t->begin - half}, {t->begin + half / 2, 4096}};
        planner_streams streams;
        planner_streams_init(&streams);
        for (int r = 0; r < 3; r++) {
            if (r == 2)
                planner_streams_init(&streams);
            read_plan plan;
            planner_plan_read(&streams, &file, &config, reads[r][0], reads[r][1], &plan);
            if (plan.demand.end > file_size || plan.ahead.end > file_size || plan.ahead.begin > plan.ahead.end ||
                plan.prefetch_count > PLAN_MAX_PREFETCH)
                abort();
            for (size_t p = 0; p < plan.prefetch_count; p++)
                if (plan.prefetch[p].begin >= plan.prefetch[p].end || plan.prefetch[p].end > file_size)
                    abort();
        }
    }
    planner_order_clear(&order);
    if (pattern->role_count > PLANNER_PATTERN_ROLES)
        abort();
    if (map->count)
        check_bulk(map, pattern, file_size);
    free(pattern);
}

static void build_and_check(const uint8_t *header, uint64_t header_end, uint64_t file_size)
{
    tensor_map *map = tensor_map_build(header, header_end, file_size);
    if (!map)
        return;
    if (header_end < 8 || safetensors_header_end(header, file_size) != header_end)
        abort();   /* a map from a header whose length field does not fit */
    check_map(map, header_end, file_size);
    plan_reads(map, file_size);
    tensor_map_free(map);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    uint64_t data_size = le64(data) % (1ULL << 30);
    size_t json_length = size - 8;
    uint8_t *header = malloc(8 + json_length);
    if (!header)
        return 0;
    for (int i = 0; i < 8; i++)
        header[i] = (uint8_t)((uint64_t)json_length >> (8 * i));
    memcpy(header + 8, data + 8, json_length);
    build_and_check(header, 8 + json_length, 8 + json_length + data_size);
    free(header);

    /* The input as the start of a file of size + data_size bytes. */
    uint64_t header_end = safetensors_header_end(data, size + data_size);
    if (header_end && header_end <= size)
        build_and_check(data, header_end, size + data_size);
    build_and_check(data, size, size + data_size);   /* the prefix mostly disagrees: no map */
    return 0;
}
