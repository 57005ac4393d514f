/* rank.h — a loaded rank: its tensors' slices in one arena on a target (private).
 *
 * A rank holds a reference to the target its arena came from (a stream's ranks share one,
 * with its staging ring) and is itself counted (loader_rank_retain), so that tensors handed to
 * a framework keep their arena alive however long the loader's caller keeps them. load.c
 * builds and fills ranks; stream.c does it one group of tensors at a time. */
#ifndef HUBFS_LOADER_RANK_H
#define HUBFS_LOADER_RANK_H

#include "loader.h"
#include "model.h"
#include "plan.h"
#include "reader.h"
#include "safetensors.h"
#include "target.h"

#include <stdatomic.h>
#include <stdbool.h>

typedef struct rank_tensor {
    char *name;
    const st_dtype_info *dtype;
    size_t ndim;
    uint64_t *shape;             /* the slice's shape */
    uint64_t arena_offset, nbytes;
} rank_tensor;

/* A target and how many ranks (and the stream) still use it: the last one destroys it. */
typedef struct rank_target {
    load_target *target;
    atomic_uint refs;
    unsigned threads;            /* reads in flight */
    size_t chunk_bytes;          /* bytes per read */
} rank_target;

struct loader_rank {
    rank_target *owner;
    void *arena;                 /* taken from the target once filled; NULL before */
    atomic_uint refs;
    rank_tensor *tensors;
    size_t count;
    uint64_t arena_bytes, payload_bytes, bytes_read;
    double seconds;
};

typedef struct job_list {
    read_job *jobs;
    size_t count, cap;
} job_list;

/* Checks tp, rank and device and makes the target (one reference) with the reads in flight
 * and the chunk size the options and the model's source ask for. */
int rank_target_open(const loader_model *m, const loader_options *o, rank_target **out, char *err,
                     size_t errlen);
void rank_target_release(rank_target *owner);

/* The model's plan (config.json's, else the built-in rules) with the options' plan file over it. */
int rank_resolve_plan(const loader_model *m, const loader_options *o, tp_plan *plan, char *err,
                      size_t errlen);

/* Decides model tensor `index`'s slice and places it at the first aligned offset at or after
 * *arena_end, which it moves past it. */
int rank_place_tensor(const loader_model *m, const tp_plan *plan, const loader_options *o,
                      size_t index, rank_tensor *rt, tp_slice *slice, uint64_t *arena_end,
                      char *err, size_t errlen);

/* Appends the reads that fill rt from model tensor `index`, in file order. */
int rank_add_tensor_jobs(job_list *list, const loader_model *m, size_t index, const tp_slice *slice,
                         const rank_tensor *rt, size_t chunk, char *err, size_t errlen);

/* A rank with no tensors yet, holding a reference to owner. */
loader_rank *rank_new(rank_target *owner, char *err, size_t errlen);

/* Allocates r's arena on its target, runs the jobs into it and takes it (r->arena). */
int rank_fill(loader_rank *r, read_job *jobs, size_t count, const reader_config *config, char *err,
              size_t errlen);

#endif
