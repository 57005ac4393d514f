/* loader.h — inspect safetensors models and load one tensor-parallel rank's slices.
 *
 * A model is a .safetensors file, or a directory holding model.safetensors or a sharded
 * model (model.safetensors.index.json + shards), optionally with config.json (its
 * base_model_tp_plan and attention head counts). Opening reads headers only. Loading streams
 * the rank's slices through a bounded pool of reader threads into one arena on the target
 * device. Functions return 0 or -1 with a message in (err, errlen); nothing prints. */
#ifndef HUBFS_LOADER_H
#define HUBFS_LOADER_H

#include <stddef.h>
#include <stdint.h>

#define LOADER_ERR_LEN 1024

typedef struct loader_model loader_model;
typedef struct loader_rank loader_rank;

typedef struct loader_tensor_info {
    const char *name;
    const char *dtype;      /* safetensors name: "BF16", "F32", ... */
    size_t ndim;
    const uint64_t *shape;
    const char *shard;      /* model: the shard's file name; rank: NULL */
    uint64_t offset;        /* model: file offset of the data; rank: offset in the arena */
    uint64_t nbytes;
} loader_tensor_info;

int loader_model_open(const char *path, loader_model **out, char *err, size_t errlen);
void loader_model_close(loader_model *model);
size_t loader_model_tensor_count(const loader_model *model);
void loader_model_tensor(const loader_model *model, size_t index, loader_tensor_info *out);
/* The begin/end of a tensor relative to its shard's data buffer (safetensors' data_offsets). */
void loader_model_data_offsets(const loader_model *model, size_t index, uint64_t *begin,
                               uint64_t *end);

typedef struct loader_options {
    unsigned tp_size;          /* world size N >= 1 */
    unsigned rank;             /* 0 <= rank < tp_size */
    const char *device;        /* "cpu" (default) or "cuda:K" */
    const char *plan_path;     /* a JSON {"pattern": "style"} file replacing the model's plan */
    unsigned reader_threads;   /* 0: 8 */
    size_t chunk_bytes;        /* 0: 8 MiB per read */
    /* Called after each chunk lands, from reader threads, one call at a time. */
    void (*progress)(void *ctx, uint64_t done_bytes, uint64_t total_bytes);
    void *progress_ctx;
} loader_options;

int loader_load(const loader_model *model, const loader_options *options, loader_rank **out,
                char *err, size_t errlen);
size_t loader_rank_tensor_count(const loader_rank *rank);
void loader_rank_tensor(const loader_rank *rank, size_t index, loader_tensor_info *out);
uint64_t loader_rank_bytes(const loader_rank *rank);   /* payload bytes loaded */
/* Bytes read from the files: more than the payload where rows are read whole for strided
 * (rowwise) slices. */
uint64_t loader_rank_bytes_read(const loader_rank *rank);
double loader_rank_seconds(const loader_rank *rank);   /* wall time of the load */
const char *loader_rank_device(const loader_rank *rank);
/* Copies arena bytes back to host memory (from the device for a CUDA target). */
int loader_rank_read(const loader_rank *rank, uint64_t offset, void *dst, size_t len, char *err,
                     size_t errlen);
/* Writes the rank's tensors as a safetensors file. */
int loader_rank_save(const loader_rank *rank, const char *path, char *err, size_t errlen);
void loader_rank_free(loader_rank *rank);

#endif
