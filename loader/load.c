/* Loading a rank: the plan decides each tensor's slice, the slices are laid out in one
 * arena, and the reads that fill it are cut into bounded jobs for the reader pool. */
#include "model.h"
#include "plan.h"
#include "rank.h"
#include "reader.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ARENA_ALIGN 256u /* device-friendly alignment of every tensor in the arena */
#define DEFAULT_THREADS 8u
#define DEFAULT_CHUNK_BYTES (8u << 20)
#define MAX_THREADS 64u

typedef struct job_list {
    read_job *jobs;
    size_t count, cap;
} job_list;

static int push_job(job_list *list, read_job job, char *err, size_t errlen)
{
    if (list->count == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 256;
        read_job *grown = realloc(list->jobs, cap * sizeof *grown);
        if (!grown) return fail(err, errlen, "out of memory");
        list->jobs = grown;
        list->cap = cap;
    }
    list->jobs[list->count++] = job;
    return 0;
}

/* Elements after dimension `dim` (the size of one index step of that dimension). */
static uint64_t inner_elements(const st_tensor *t, size_t dim)
{
    uint64_t n = 1;
    for (size_t d = dim + 1; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

/* One contiguous byte range of the file into consecutive arena bytes, in chunks. */
static int add_contiguous(job_list *list, read_job proto, uint64_t file_offset, uint64_t len,
                          uint64_t dst, size_t chunk, char *err, size_t errlen)
{
    for (uint64_t done = 0; done < len;) {
        size_t n = (size_t)(len - done < chunk ? len - done : chunk);
        read_job job = proto;
        job.file_offset = file_offset + done;
        job.read_bytes = n;
        job.copy = (copy_2d){dst + done, 0, n, n, 1};
        job.contiguous = true;
        if (push_job(list, job, err, errlen) != 0) return -1;
        done += n;
    }
    return 0;
}

/* Rows of `row_bytes`, of which the rank wants `piece` bytes at `piece_offset` in each:
 * whole-row spans of up to `chunk` bytes are read once and gathered in staging; rows longer
 * than a chunk are read piece by piece, each piece being large. */
static int add_strided(job_list *list, read_job proto, uint64_t file_offset, uint64_t rows,
                       uint64_t row_bytes, uint64_t piece_offset, uint64_t piece, uint64_t dst,
                       size_t chunk, char *err, size_t errlen)
{
    if (rows == 0 || piece == 0) return 0;
    if (row_bytes > chunk) {
        for (uint64_t r = 0; r < rows; r++)
            if (add_contiguous(list, proto, file_offset + r * row_bytes + piece_offset, piece,
                               dst + r * piece, chunk, err, errlen) != 0)
                return -1;
        return 0;
    }
    uint64_t rows_per_job = chunk / row_bytes;
    for (uint64_t r = 0; r < rows; r += rows_per_job) {
        uint64_t k = rows - r < rows_per_job ? rows - r : rows_per_job;
        read_job job = proto;
        job.file_offset = file_offset + r * row_bytes;
        job.read_bytes = (size_t)(k * row_bytes);
        job.copy = (copy_2d){dst + r * piece, (size_t)piece_offset, (size_t)row_bytes,
                             (size_t)piece, (size_t)k};
        job.contiguous = false;
        if (push_job(list, job, err, errlen) != 0) return -1;
    }
    return 0;
}

static int whole_bytes(const st_tensor *t, uint64_t bits, uint64_t *bytes, char *err, size_t errlen)
{
    if (bits % 8 != 0)
        return fail(err, errlen, "tensor '%s': the %s slice does not start and end on a byte "
                    "boundary", t->name, t->dtype->name);
    *bytes = bits / 8;
    return 0;
}

static int add_tensor_jobs(job_list *list, const model_shard *shard, size_t shard_index,
                           const st_tensor *t, const tp_slice *slice, const rank_tensor *rt,
                           size_t chunk, char *err, size_t errlen)
{
    read_job proto = {.fd = shard->fd, .path = shard->path, .shard = shard_index};
    uint64_t base = shard->header.data_start + t->begin, bits = t->dtype->bits;
    if (slice->dim < 0)
        return add_contiguous(list, proto, base, rt->nbytes, rt->arena_offset, chunk, err, errlen);
    uint64_t step_bits = inner_elements(t, (size_t)slice->dim) * bits, start = 0, piece = 0;
    if (whole_bytes(t, slice->start * step_bits, &start, err, errlen) != 0 ||
        whole_bytes(t, slice->count * step_bits, &piece, err, errlen) != 0)
        return -1;
    if (slice->dim == 0)
        return add_contiguous(list, proto, base + start, piece, rt->arena_offset, chunk, err, errlen);
    uint64_t row_bytes = (inner_elements(t, 0) * bits) / 8;
    return add_strided(list, proto, base, t->shape[0], row_bytes, start, piece, rt->arena_offset,
                       chunk, err, errlen);
}

/* Decides the slice of model tensor `index` and places it in the arena. */
static int plan_tensor(const loader_model *m, const tp_plan *plan, const loader_options *o,
                       size_t index, rank_tensor *rt, tp_slice *slice, uint64_t *arena_end,
                       char *err, size_t errlen)
{
    const st_tensor *t = m->tensors[index].st;
    if (tp_plan_slice(plan, t->name, t->ndim, t->shape, o->tp_size, o->rank, slice, err, errlen) != 0)
        return -1;
    rt->name = strdup(t->name);
    rt->dtype = t->dtype;
    rt->ndim = t->ndim;
    rt->shape = calloc(t->ndim ? t->ndim : 1, sizeof *rt->shape);
    if (!rt->name || !rt->shape) return fail(err, errlen, "out of memory");
    if (t->ndim) memcpy(rt->shape, t->shape, t->ndim * sizeof *rt->shape);
    rt->nbytes = t->end - t->begin;
    if (slice->dim >= 0) {
        rt->shape[slice->dim] = slice->count;
        uint64_t elements = 1;
        for (size_t d = 0; d < rt->ndim; d++) elements *= rt->shape[d];
        if (whole_bytes(t, elements * t->dtype->bits, &rt->nbytes, err, errlen) != 0) return -1;
    }
    rt->arena_offset = (*arena_end + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    *arena_end = rt->arena_offset + rt->nbytes;
    return 0;
}

static int parse_device(const char *device, int *cuda_index, char *err, size_t errlen)
{
    *cuda_index = -1;
    if (!device || strcmp(device, "cpu") == 0) return 0;
    if (strcmp(device, "cuda") == 0) {
        *cuda_index = 0;
        return 0;
    }
    char *end;
    if (strncmp(device, "cuda:", 5) == 0 && device[5] >= '0' && device[5] <= '9') {
        long k = strtol(device + 5, &end, 10);
        if (*end == '\0' && k < 1024) {
            *cuda_index = (int)k;
            return 0;
        }
    }
    return fail(err, errlen, "unknown device '%s' (expected cpu or cuda:K)", device);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int build_rank(const loader_model *m, const loader_options *o, loader_rank *r,
                      job_list *jobs, char *err, size_t errlen)
{
    tp_plan plan;
    cJSON *config;
    if (model_read_config(m, &config, err, errlen) != 0) return -1;
    int resolved = tp_plan_resolve(config, o->plan_path, &plan, err, errlen);
    cJSON_Delete(config);
    if (resolved != 0) return -1;
    size_t chunk = o->chunk_bytes ? o->chunk_bytes : DEFAULT_CHUNK_BYTES;
    int rc = 0;
    r->tensors = calloc(m->count ? m->count : 1, sizeof *r->tensors);
    if (!r->tensors) rc = fail(err, errlen, "out of memory");
    for (size_t i = 0; rc == 0 && i < m->count; i++) {
        tp_slice slice;
        rank_tensor *rt = &r->tensors[r->count++];
        const model_tensor *mt = &m->tensors[i];
        rc = plan_tensor(m, &plan, o, i, rt, &slice, &r->arena_bytes, err, errlen);
        if (rc == 0)
            rc = add_tensor_jobs(jobs, &m->shards[mt->shard], mt->shard, mt->st, &slice, rt, chunk,
                                 err, errlen);
        r->payload_bytes += rt->nbytes;
    }
    tp_plan_free(&plan);
    return rc;
}

static int load_rank(const loader_model *m, const loader_options *o, loader_rank *r, char *err,
                     size_t errlen)
{
    int cuda_index;
    if (o->tp_size == 0 || o->rank >= o->tp_size)
        return fail(err, errlen, "rank %u is not in [0, %u): check --rank and --tp", o->rank,
                    o->tp_size);
    if (parse_device(o->device, &cuda_index, err, errlen) != 0) return -1;
    job_list jobs = {0};
    int rc = build_rank(m, o, r, &jobs, err, errlen);
    unsigned threads = o->reader_threads ? o->reader_threads : DEFAULT_THREADS;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    size_t chunk = o->chunk_bytes ? o->chunk_bytes : DEFAULT_CHUNK_BYTES;
    /* One staging buffer per reader plus two, so copies of full buffers overlap reads. */
    if (rc == 0)
        r->target = cuda_index < 0 ? target_host_create(chunk, threads + 2, err, errlen)
                                   : target_cuda_create(cuda_index, chunk, threads + 2, err, errlen);
    if (rc == 0 && !r->target) rc = -1;
    double start = now_seconds();
    if (rc == 0) rc = r->target->alloc_arena(r->target, r->arena_bytes, err, errlen);
    reader_config config = {threads, o->progress, o->progress_ctx};
    for (size_t i = 0; i < jobs.count; i++) r->bytes_read += jobs.jobs[i].read_bytes;
    if (rc == 0) rc = reader_run(jobs.jobs, jobs.count, r->target, &config, err, errlen);
    r->seconds = now_seconds() - start;
    free(jobs.jobs);
    return rc;
}

int loader_load(const loader_model *model, const loader_options *options, loader_rank **out,
                char *err, size_t errlen)
{
    *out = NULL;
    loader_rank *r = calloc(1, sizeof *r);
    if (!r) return fail(err, errlen, "out of memory");
    if (load_rank(model, options, r, err, errlen) != 0) {
        loader_rank_free(r);
        return -1;
    }
    *out = r;
    return 0;
}

size_t loader_rank_tensor_count(const loader_rank *rank) { return rank->count; }
uint64_t loader_rank_bytes(const loader_rank *rank) { return rank->payload_bytes; }
uint64_t loader_rank_bytes_read(const loader_rank *rank) { return rank->bytes_read; }
double loader_rank_seconds(const loader_rank *rank) { return rank->seconds; }
const char *loader_rank_device(const loader_rank *rank) { return rank->target->device; }

void loader_rank_tensor(const loader_rank *rank, size_t index, loader_tensor_info *out)
{
    const rank_tensor *t = &rank->tensors[index];
    *out = (loader_tensor_info){.name = t->name, .dtype = t->dtype->name, .ndim = t->ndim,
                                .shape = t->shape, .offset = t->arena_offset, .nbytes = t->nbytes};
}

int loader_rank_read(const loader_rank *rank, uint64_t offset, void *dst, size_t len, char *err,
                     size_t errlen)
{
    return rank->target->read_back(rank->target, offset, dst, len, err, errlen);
}

void loader_rank_free(loader_rank *rank)
{
    if (!rank) return;
    for (size_t i = 0; i < rank->count; i++) {
        free(rank->tensors[i].name);
        free(rank->tensors[i].shape);
    }
    free(rank->tensors);
    if (rank->target) rank->target->destroy(rank->target);
    free(rank);
}
