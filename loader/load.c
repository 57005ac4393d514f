/* Loading a rank: the plan decides each tensor's slice, the slices are laid out in one
 * arena, and the reads that fill it are cut into bounded jobs for the reader pool. Ranks are
 * counted: a framework's tensors keep theirs (and its target) alive. */
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

int rank_add_tensor_jobs(job_list *list, const loader_model *m, size_t index, const tp_slice *slice,
                         const rank_tensor *rt, size_t chunk, char *err, size_t errlen)
{
    const st_tensor *t = m->tensors[index].st;
    size_t shard_index = m->tensors[index].shard;
    const model_shard *shard = &m->shards[shard_index];
    read_job proto = {.file = shard->file, .path = shard->path, .shard = shard_index};
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

int rank_place_tensor(const loader_model *m, const tp_plan *plan, const loader_options *o,
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

int loader_cuda_device_count(void)
{
    return target_cuda_visible_devices();
}

/* Progress counts bytes as they land on the target, not as they are queued: a target that
 * copies asynchronously (CUDA) says what has landed; for the others what was written has. */
typedef struct landed_progress {
    const loader_options *options;
    load_target *target;
    uint64_t reported;
} landed_progress;

static void report(landed_progress *p, uint64_t landed, uint64_t total)
{
    if (landed <= p->reported) return;
    p->reported = landed;
    p->options->progress(p->options->progress_ctx, landed, total);
}

/* The reader's callback: called with what was written, one call at a time. */
static void report_landed(void *ctx, uint64_t written, uint64_t total)
{
    landed_progress *p = ctx;
    report(p, p->target->landed ? p->target->landed(p->target) : written, total);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The caller's chunk size, else the one the source suits (a high-latency source wants more,
 * smaller reads in flight), else the default. */
static size_t chunk_bytes_of(const loader_model *m, const loader_options *o)
{
    return o->chunk_bytes ? o->chunk_bytes : m->source->chunk_bytes ? m->source->chunk_bytes : DEFAULT_CHUNK_BYTES;
}

int rank_resolve_plan(const loader_model *m, const loader_options *o, tp_plan *plan, char *err,
                      size_t errlen)
{
    cJSON *config;
    if (model_read_config(m, &config, err, errlen) != 0) return -1;
    int resolved = tp_plan_resolve(config, o->plan_path, plan, err, errlen);
    cJSON_Delete(config);
    return resolved;
}

static int build_rank(const loader_model *m, const loader_options *o, loader_rank *r,
                      job_list *jobs, char *err, size_t errlen)
{
    tp_plan plan;
    if (rank_resolve_plan(m, o, &plan, err, errlen) != 0) return -1;
    int rc = 0;
    r->tensors = calloc(m->count ? m->count : 1, sizeof *r->tensors);
    if (!r->tensors) rc = fail(err, errlen, "out of memory");
    for (size_t i = 0; rc == 0 && i < m->count; i++) {
        tp_slice slice;
        rank_tensor *rt = &r->tensors[r->count++];
        rc = rank_place_tensor(m, &plan, o, i, rt, &slice, &r->arena_bytes, err, errlen);
        if (rc == 0)
            rc = rank_add_tensor_jobs(jobs, m, i, &slice, rt, r->owner->chunk_bytes, err, errlen);
        r->payload_bytes += rt->nbytes;
    }
    tp_plan_free(&plan);
    return rc;
}

int rank_target_open(const loader_model *m, const loader_options *o, rank_target **out, char *err,
                     size_t errlen)
{
    int cuda_index;
    *out = NULL;
    if (o->tp_size == 0 || o->rank >= o->tp_size)
        return fail(err, errlen, "rank %u is not in [0, %u): check --rank and --tp", o->rank,
                    o->tp_size);
    if (parse_device(o->device, &cuda_index, err, errlen) != 0) return -1;
    rank_target *owner = calloc(1, sizeof *owner);
    if (!owner) return fail(err, errlen, "out of memory");
    unsigned threads = o->reader_threads        ? o->reader_threads
                       : m->source->reader_threads ? m->source->reader_threads
                                                   : DEFAULT_THREADS;
    owner->threads = threads > MAX_THREADS ? MAX_THREADS : threads;
    owner->chunk_bytes = chunk_bytes_of(m, o);
    atomic_init(&owner->refs, 1);
    /* One staging buffer per reader plus two, so copies of full buffers overlap reads. */
    size_t chunk = owner->chunk_bytes;
    owner->target = cuda_index < 0
                        ? target_host_create(chunk, owner->threads + 2, err, errlen)
                        : target_cuda_create(cuda_index, chunk, owner->threads + 2, err, errlen);
    if (!owner->target) {
        free(owner);
        return -1;
    }
    *out = owner;
    return 0;
}

void rank_target_release(rank_target *owner)
{
    if (!owner || atomic_fetch_sub(&owner->refs, 1) != 1) return;
    owner->target->destroy(owner->target);
    free(owner);
}

loader_rank *rank_new(rank_target *owner, char *err, size_t errlen)
{
    loader_rank *r = calloc(1, sizeof *r);
    if (!r) return fail(err, errlen, "out of memory"), NULL;
    atomic_init(&r->refs, 1);
    atomic_fetch_add(&owner->refs, 1);
    r->owner = owner;
    return r;
}

int rank_fill(loader_rank *r, read_job *jobs, size_t count, const reader_config *config, char *err,
              size_t errlen)
{
    load_target *t = r->owner->target;
    double start = now_seconds();
    for (size_t i = 0; i < count; i++) r->bytes_read += jobs[i].read_bytes;
    int rc = t->alloc_arena(t, r->arena_bytes, err, errlen);
    if (rc == 0) {
        rc = reader_run(jobs, count, t, config, err, errlen);
        r->arena = t->take_arena(t); /* freed with the rank, also when the run failed */
    }
    r->seconds = now_seconds() - start;
    return rc;
}

static int load_rank(const loader_model *m, const loader_options *o, loader_rank *r, char *err,
                     size_t errlen)
{
    job_list jobs = {0};
    int rc = build_rank(m, o, r, &jobs, err, errlen);
    landed_progress progress = {o, r->owner->target, 0};
    reader_config config = {r->owner->threads, o->progress ? report_landed : NULL, &progress,
                            false, NULL};
    if (rc == 0) rc = rank_fill(r, jobs.jobs, jobs.count, &config, err, errlen);
    if (rc == 0 && o->progress) report(&progress, r->payload_bytes, r->payload_bytes); /* all landed */
    free(jobs.jobs);
    return rc;
}

int loader_load(const loader_model *model, const loader_options *options, loader_rank **out,
                char *err, size_t errlen)
{
    *out = NULL;
    rank_target *owner;
    if (rank_target_open(model, options, &owner, err, errlen) != 0) return -1;
    loader_rank *r = rank_new(owner, err, errlen);
    rank_target_release(owner); /* the rank holds it now */
    if (!r) return -1;
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
const char *loader_rank_device(const loader_rank *rank) { return rank->owner->target->device; }
void *loader_rank_data(const loader_rank *rank) { return rank->arena; }

loader_rank *loader_rank_retain(loader_rank *rank)
{
    atomic_fetch_add(&rank->refs, 1);
    return rank;
}

void loader_rank_tensor(const loader_rank *rank, size_t index, loader_tensor_info *out)
{
    const rank_tensor *t = &rank->tensors[index];
    *out = (loader_tensor_info){.name = t->name, .dtype = t->dtype->name, .ndim = t->ndim,
                                .shape = t->shape, .offset = t->arena_offset, .nbytes = t->nbytes};
}

int loader_rank_read(const loader_rank *rank, uint64_t offset, void *dst, size_t len, char *err,
                     size_t errlen)
{
    if (!rank->arena || offset > rank->arena_bytes || len > rank->arena_bytes - offset)
        return fail(err, errlen, "read beyond the rank's %llu bytes",
                    (unsigned long long)rank->arena_bytes);
    load_target *t = rank->owner->target;
    return t->copy_out(t, (const uint8_t *)rank->arena + offset, dst, len, err, errlen);
}

void loader_rank_free(loader_rank *rank)
{
    if (!rank || atomic_fetch_sub(&rank->refs, 1) != 1) return;
    for (size_t i = 0; i < rank->count; i++) {
        free(rank->tensors[i].name);
        free(rank->tensors[i].shape);
    }
    free(rank->tensors);
    load_target *t = rank->owner->target;
    t->free_arena(t, rank->arena, rank->arena_bytes);
    rank_target_release(rank->owner);
    free(rank);
}
