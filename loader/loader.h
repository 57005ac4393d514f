/* loader.h — inspect safetensors models and load one tensor-parallel rank's slices.
 *
 * A model is a .safetensors file, or a directory holding model.safetensors or a sharded
 * model (model.safetensors.index.json + shards), optionally with config.json (its
 * base_model_tp_plan and attention head counts), read from a source (source.h): local files,
 * or any other place that can list names and read at offsets. Opening reads headers only. Loading streams
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

typedef struct loader_source loader_source; /* source.h: where a model's bytes come from */

/* A model from a local path (a .safetensors file or a model directory). */
int loader_model_open(const char *path, loader_model **out, char *err, size_t errlen);
/* A model from any source: its model.safetensors.index.json and shards, or its
 * model.safetensors, or (file not NULL) that one file of the source. The model owns the source
 * from the call on: it is destroyed with the model, or at once when opening fails. */
int loader_model_open_source(loader_source *source, const char *file, loader_model **out,
                             char *err, size_t errlen);
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
    const char *plan_path;     /* a JSON {"pattern": "style"} file merged over the model's plan */
    unsigned reader_threads;   /* reads in flight; 0: what the source asks for, else 8 */
    size_t chunk_bytes;        /* 0: 8 MiB per read */
    /* Called as chunks land (on the device, for a GPU), with the bytes landed so far, from
     * reader threads and at the end from the calling thread, one call at a time. */
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
/* The arena: host memory for "cpu", device memory of loader_rank_device for "cuda:K"; tensor
 * i's bytes are at its offset in it. Valid while a reference to the rank is held. */
void *loader_rank_data(const loader_rank *rank);
/* Another reference, for tensors that outlive the code that loaded them (loader_dlpack.h):
 * each reference, and the one loader_load gave, is dropped with loader_rank_free, and the last
 * frees the arena, from any thread. */
loader_rank *loader_rank_retain(loader_rank *rank);
void loader_rank_free(loader_rank *rank);

/* Streaming: the rank's tensors one at a time, in file order, each as soon as its bytes have
 * landed, for consumers that take an iterator of weights. Reads run ahead in a background
 * thread through the same reader pool and staging ring as loader_load, a group of consecutive
 * tensors at a time: as many as fill reader_threads × chunk_bytes (64 MiB by default), or one
 * larger tensor. Memory beyond what the caller holds: the staging ring and one group. The
 * whole plan is announced to the source at open (a mount prefetches it), progress is not
 * called, and the model must stay open until the stream is closed. */
typedef struct loader_stream loader_stream;
int loader_stream_open(const loader_model *model, const loader_options *options,
                       loader_stream **out, char *err, size_t errlen);
/* 1: the next tensor is tensor *index of *rank, a reference to a rank holding it (and maybe
 * its neighbours), to drop with loader_rank_free; 0: no more tensors; -1: the load failed. */
int loader_stream_next(loader_stream *stream, loader_rank **rank, size_t *index, char *err,
                       size_t errlen);
/* Stops the reads (a group being read is cut short) and frees the stream; ranks it gave out
 * stay valid. */
void loader_stream_close(loader_stream *stream);

/* The CUDA devices this process sees (after CUDA_VISIBLE_DEVICES); 0 without CUDA. Creates no
 * context. */
int loader_cuda_device_count(void);

#endif
