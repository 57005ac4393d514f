/* rank.h — a loaded rank: its tensors' slices in one arena on a target (private). */
#ifndef HUBFS_LOADER_RANK_H
#define HUBFS_LOADER_RANK_H

#include "loader.h"
#include "safetensors.h"
#include "target.h"

typedef struct rank_tensor {
    char *name;
    const st_dtype_info *dtype;
    size_t ndim;
    uint64_t *shape;             /* the slice's shape */
    uint64_t arena_offset, nbytes;
} rank_tensor;

struct loader_rank {
    load_target *target;
    rank_tensor *tensors;
    size_t count;
    uint64_t arena_bytes, payload_bytes, bytes_read;
    double seconds;
};

#endif
