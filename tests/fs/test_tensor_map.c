/* The tensor map: extents of a written header against the layout it was written from, name
 * ranks against an independent sort, look-ups, and hostile headers that must yield no map. */
#include "check.h"
#include "safetensors_builder.h"
#include "tensor_map.h"

#include <stdlib.h>
#include <string.h>

static tensor_map *build(const st_header_bytes *h)
{
    return tensor_map_build(h->bytes, h->header_end, h->file_size);
}

/* A header around json (with the right length prefix) for a file of data_size data bytes. */
static tensor_map *map_of_json(const char *json, uint64_t data_size)
{
    size_t length = strlen(json);
    uint8_t *bytes = malloc(8 + length);
    st_put_le64(bytes, length);
    memcpy(bytes + 8, json, length);
    tensor_map *map = tensor_map_build(bytes, 8 + length, 8 + length + data_size);
    free(bytes);
    return map;
}

static bool yields_no_map(const char *json, uint64_t data_size)
{
    tensor_map *map = map_of_json(json, data_size);
    tensor_map_free(map);
    return map == NULL;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void extents_and_names(void)
{
    model_spec model;
    model_spec_init(&model, 3, LAYOUT_MODULE_ORDER);
    /* An empty tensor is left out of the map; it sits between two others. */
    st_tensor_spec specs[MODEL_MAX_TENSORS + 1];
    memcpy(specs, model.tensors, 3 * sizeof specs[0]);
    specs[3] = (st_tensor_spec){"model.empty", 0};
    memcpy(specs + 4, model.tensors + 3, (model.count - 3) * sizeof specs[0]);
    size_t count = model.count + 1;
    st_header_bytes h;
    CHECK(st_build_header(specs, count, 1, &h));
    tensor_map *map = build(&h);
    CHECK(map != NULL);
    if (!map) {
        free(h.bytes);
        return;
    }
    uint64_t json_length = 0;
    for (int i = 7; i >= 0; i--)
        json_length = json_length << 8 | h.bytes[i];
    CHECK_EQ_INT(map->header_end, 8 + json_length);
    CHECK_EQ_INT(map->count, model.count);

    /* File order, absolute offsets 8 + N + begin, names as written. */
    uint64_t begin = 8 + json_length;
    size_t t = 0;
    for (size_t i = 0; i < count; i++) {
        if (specs[i].size == 0)
            continue;
        CHECK_EQ_INT(map->tensors[t].begin, begin);
        CHECK_EQ_INT(map->tensors[t].end, begin + specs[i].size);
        CHECK(strcmp(map->tensors[t].name, specs[i].name) == 0);
        begin += specs[i].size;
        t++;
    }
    CHECK_EQ_INT(begin, h.file_size);

    /* Name ranks against an independent sort of the names. */
    const char *sorted[MODEL_MAX_TENSORS];
    for (size_t i = 0; i < map->count; i++)
        sorted[i] = model.tensors[i].name;
    qsort(sorted, map->count, sizeof sorted[0], by_name);
    for (size_t rank = 0; rank < map->count; rank++) {
        size_t index = map->by_name[rank];
        CHECK(index < map->count && strcmp(map->tensors[index].name, sorted[rank]) == 0);
        CHECK_EQ_INT(map->tensors[index].name_rank, rank);
    }

    for (size_t i = 0; i < map->count; i++) {
        const tensor_extent *e = &map->tensors[i];
        CHECK_EQ_INT(tensor_map_find(map, e->begin), i);
        CHECK_EQ_INT(tensor_map_find(map, e->end - 1), i);
        CHECK_EQ_INT(tensor_map_find(map, e->begin + (e->end - e->begin) / 2), i);
        CHECK_EQ_INT(tensor_map_find_name(map, e->name), i);
    }
    CHECK_EQ_INT(tensor_map_find(map, 0), map->count);
    CHECK_EQ_INT(tensor_map_find(map, map->header_end - 1), map->count);
    CHECK_EQ_INT(tensor_map_find(map, h.file_size), map->count);
    CHECK_EQ_INT(tensor_map_find(map, UINT64_MAX), map->count);
    CHECK_EQ_INT(tensor_map_find_name(map, "model.empty"), map->count);
    CHECK_EQ_INT(tensor_map_find_name(map, "model.layers.3.mlp.up_proj.weight"), map->count);
    CHECK_EQ_INT(tensor_map_find_name(map, ""), map->count);
    CHECK_EQ_INT(tensor_map_find_name(map, "zzz"), map->count);
    tensor_map_free(map);

    /* Padding: data starts at the aligned offset. */
    free(h.bytes);
    CHECK(st_build_header(model.tensors, model.count, 4096, &h));
    map = build(&h);
    CHECK(map && map->header_end == h.header_end && h.header_end % 4096 == 0 &&
          map->tensors[0].begin == h.header_end);
    tensor_map_free(map);
    free(h.bytes);
}

static void gaps_and_metadata(void)
{
    /* Tensors out of order in the JSON, a gap between them (not ours to reject), metadata of any
     * shape, and a header of tensors only of size 0. */
    tensor_map *map = map_of_json("{\"b\":{\"data_offsets\":[100,200]},\"__metadata__\":[1,{\"x\":null}],"
                                  "\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,40]}}",
                                  200);
    CHECK(map && map->count == 2);
    if (map) {
        uint64_t base = map->header_end;
        CHECK(map->tensors[0].begin == base && map->tensors[0].end == base + 40);
        CHECK(map->tensors[1].begin == base + 100 && map->tensors[1].end == base + 200);
        CHECK_EQ_INT(tensor_map_find(map, base + 40), map->count);
        CHECK_EQ_INT(tensor_map_find(map, base + 99), map->count);
        CHECK_EQ_INT(tensor_map_find(map, base + 100), 1);
        CHECK_EQ_INT(tensor_map_find_name(map, "a"), 0);
    }
    tensor_map_free(map);
    map = map_of_json("{\"a\":{\"data_offsets\":[0,0]}}", 0);
    CHECK(map && map->count == 0);
    if (map)
        CHECK_EQ_INT(tensor_map_find(map, 8), 0);
    tensor_map_free(map);
    map = map_of_json("{}", 0);
    CHECK(map && map->count == 0 && map->header_end == 10);
    tensor_map_free(map);
}

static void header_length(void)
{
    uint8_t first[8];
    st_put_le64(first, 1000);
    CHECK_EQ_INT(safetensors_header_end(first, 1008), 1008);
    CHECK_EQ_INT(safetensors_header_end(first, 5000), 1008);
    CHECK_EQ_INT(safetensors_header_end(first, 1007), 0);   /* longer than the file */
    CHECK_EQ_INT(safetensors_header_end(first, 7), 0);
    st_put_le64(first, 100000001);                          /* over the reference reader's cap */
    CHECK_EQ_INT(safetensors_header_end(first, 1ULL << 40), 0);
    st_put_le64(first, UINT64_MAX);
    CHECK_EQ_INT(safetensors_header_end(first, UINT64_MAX), 0);
}

static void hostile_headers(void)
{
    st_tensor_spec specs[] = {{"a", 4096}, {"b", 100}};
    st_header_bytes h;
    CHECK(st_build_header(specs, 2, 1, &h));
    tensor_map *map = build(&h);
    CHECK(map != NULL);
    tensor_map_free(map);
    /* The length field disagrees with where the caller says the header ends. */
    st_put_le64(h.bytes, h.header_end - 8 + 1);
    CHECK(tensor_map_build(h.bytes, h.header_end, h.file_size) == NULL);
    st_put_le64(h.bytes, h.header_end - 8 - 1);
    CHECK(tensor_map_build(h.bytes, h.header_end, h.file_size) == NULL);
    st_put_le64(h.bytes, h.header_end - 8);
    CHECK(tensor_map_build(h.bytes, h.header_end, h.header_end - 1) == NULL);   /* file too short */
    CHECK(tensor_map_build(h.bytes, h.header_end, h.file_size - 1) == NULL);    /* data past the end */
    CHECK(tensor_map_build(h.bytes, 7, h.file_size) == NULL);
    free(h.bytes);

    CHECK(yields_no_map("{\"a\":{\"data_offsets\":[0,11]}}", 10));                 /* past the file */
    CHECK(yields_no_map("{\"a\":{\"data_offsets\":[8,4]}}", 10));                  /* backwards */
    CHECK(yields_no_map("{\"a\":{\"data_offsets\":[0.5,4]}}", 10));
    CHECK(yields_no_map("{\"a\":{\"data_offsets\":[0,\"4\"]}}", 10));
    CHECK(yields_no_map("{\"a\":{\"data_offsets\":[-1,4]}}", 10));
    CHECK(yields_no_map("{\"a\":{\"data_offsets\":[0,1e300]}}", 10));
    CHECK(yields_no_map("{\"a\":{\"data_offsets\":[0,9007199254740994]}}", 1ULL << 60));
    CHECK(yields_no_map("{\"a\":{\"data_offsets\":[null,4]}}", 10));
    CHECK(yields_no_map("{\"a\":{\"data_offsets\":[0,true]}}", 10));
    CHECK(yields_no_map("{\"a\":{\"data_offsets\":[4]}}", 10));
    CHECK(yields_no_map("{\"a\":{\"data_offsets\":[0,4,8]}}", 10));
    CHECK(yields_no_map("{\"a\":{\"data_offsets\":[]}}", 10));
    CHECK(yields_no_map("{\"a\":{\"data_offsets\":[[0,1],[1,2]]}}", 10));
    CHECK(yields_no_map("{\"a\":{\"data_offsets\":{\"0\":0,\"1\":4}}}", 10));
    CHECK(yields_no_map("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 10));         /* no offsets */
    CHECK(yields_no_map("{\"a\":[{\"data_offsets\":[0,4]}]}", 10));
    CHECK(yields_no_map("{\"a\":4}", 10));
    CHECK(yields_no_map("{\"a\":null}", 10));
    CHECK(yields_no_map("[{\"a\":{\"data_offsets\":[0,4]}}]", 10));
    CHECK(yields_no_map("\"a\"", 10));
    CHECK(yields_no_map("", 10));
    CHECK(yields_no_map("{\"a\":{\"data_offsets\":[0,4]}", 10));                   /* cut short */
    CHECK(yields_no_map("{\"a\":{\"data_offsets\":[0,4]},", 10));

    /* Nesting far deeper than any parser's stack should go. */
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 64);
    size_t n = (size_t)sprintf(deep, "{\"a\":{\"data_offsets\":[0,4],\"junk\":");
    memset(deep + n, '[', depth);
    memset(deep + n + depth, ']', depth);
    strcpy(deep + n + 2 * depth, "}}");
    CHECK(yields_no_map(deep, 10));
    free(deep);
}

static void header_size_cap(void)
{
    /* A header one byte over the cap is not parsed; one at the cap is. */
    uint64_t length = TENSOR_MAP_MAX_HEADER + 1;
    uint8_t *bytes = malloc(8 + length);
    st_put_le64(bytes, length);
    memset(bytes + 8, ' ', length);
    memcpy(bytes + 8, "{\"a\":{\"data_offsets\":[0,4]}}", 28);
    CHECK(tensor_map_build(bytes, 8 + length, 8 + length + 4) == NULL);
    length--;
    st_put_le64(bytes, length);
    tensor_map *map = tensor_map_build(bytes, 8 + length, 8 + length + 4);
    CHECK(map && map->count == 1 && map->tensors[0].begin == 8 + length);
    tensor_map_free(map);
    free(bytes);
}

int main(void)
{
    extents_and_names();
    gaps_and_metadata();
    header_length();
    hostile_headers();
    header_size_cap();
    return check_finish("test_tensor_map");
}
