/* tensor_map.h — where a safetensors file's tensors lie, for planning fetches (private to fs/).
 *
 * Built from the file's header bytes [0, 8 + N). Only what planning needs is kept: each
 * tensor's absolute byte extent, in file order, and its rank in name order (loaders often visit
 * tensors by name). The header is repo content: the parse is bounded and a header that does not
 * make sense yields no map (the fs then plans without one), never a crash.
 */
#ifndef HUBFS_TENSOR_MAP_H
#define HUBFS_TENSOR_MAP_H

#include <stddef.h>
#include <stdint.h>

/* Headers larger than this are not parsed for planning (cJSON holds several times the text). */
#define TENSOR_MAP_MAX_HEADER (16u << 20)

typedef struct tensor_extent {
    uint64_t begin, end;         /* absolute file offsets */
    uint32_t name_rank;          /* position in the sorted list of names */
    const char *name;            /* in the map's name pool */
} tensor_extent;

typedef struct tensor_map {
    uint64_t header_end;         /* 8 + N: where tensor data starts */
    tensor_extent *tensors;      /* sorted by begin; empty tensors left out */
    uint32_t *by_name;           /* by_name[rank] = index into tensors */
    size_t count;
    char *names;                 /* the pool of names */
} tensor_map;

/* Length of the header prefix (8 + N) from the file's first 8 bytes, or 0 when the length
 * field cannot be right for a file of file_size bytes. */
uint64_t safetensors_header_end(const uint8_t first_bytes[8], uint64_t file_size);

/* Parses header [0, header_end) of a file of file_size bytes. NULL when it cannot be used. */
tensor_map *tensor_map_build(const uint8_t *header, uint64_t header_end, uint64_t file_size);
void tensor_map_free(tensor_map *map);

/* Index of the tensor whose extent holds offset, or map->count when none does. */
size_t tensor_map_find(const tensor_map *map, uint64_t offset);

/* Index of the tensor named name, or map->count when there is none. */
size_t tensor_map_find_name(const tensor_map *map, const char *name);

#endif
